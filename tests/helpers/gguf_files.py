"""GGUF test files written with the ``gguf`` package (llama.cpp's gguf-py), as llama.cpp's
converter lays them out: its tensor names, its q/k row permutation, merged expert tensors,
1-D tensors and the MoE router in F32, and F16 where a row is not a whole number of blocks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
from gguf import GGMLQuantizationType as QT
from gguf import quants

from local_backend.config import ModelConfig

Arrays = dict[str, np.ndarray]


def llama_permute(w: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """llama.cpp's ``LlamaModel.permute`` (convert_hf_to_gguf.py), copied as it is written."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def gguf_arrays(hf: dict[str, torch.Tensor], config: ModelConfig, *, merged: bool = True) -> Arrays:
    """Hugging Face tensors -> llama.cpp's names and layouts (float32, numpy order)."""

    def a(name: str) -> np.ndarray:
        return hf[name].detach().float().numpy().copy()

    out: Arrays = {"token_embd.weight": a("model.embed_tokens.weight")}
    out["output_norm.weight"] = a("model.norm.weight")
    if "lm_head.weight" in hf and not config.tie_embeddings:
        out["output.weight"] = a("lm_head.weight")
    for n in range(config.n_layers):
        p, b = f"model.layers.{n}.", f"blk.{n}."
        out[b + "attn_norm.weight"] = a(p + "input_layernorm.weight")
        out[b + "ffn_norm.weight"] = a(p + "post_attention_layernorm.weight")
        out[b + "attn_q.weight"] = llama_permute(
            a(p + "self_attn.q_proj.weight"), config.n_heads, config.n_heads
        )
        out[b + "attn_k.weight"] = llama_permute(
            a(p + "self_attn.k_proj.weight"), config.n_heads, config.n_kv_heads
        )
        out[b + "attn_v.weight"] = a(p + "self_attn.v_proj.weight")
        out[b + "attn_output.weight"] = a(p + "self_attn.o_proj.weight")
        if config.moe is None:
            out[b + "ffn_gate.weight"] = a(p + "mlp.gate_proj.weight")
            out[b + "ffn_up.weight"] = a(p + "mlp.up_proj.weight")
            out[b + "ffn_down.weight"] = a(p + "mlp.down_proj.weight")
            continue
        moe = p + "block_sparse_moe."
        out[b + "ffn_gate_inp.weight"] = a(moe + "gate.weight")
        experts = range(config.moe.num_experts)
        for kind, w in (("ffn_gate", "w1"), ("ffn_up", "w3"), ("ffn_down", "w2")):
            per = [a(f"{moe}experts.{e}.{w}.weight") for e in experts]
            if merged:
                out[f"{b}{kind}_exps.weight"] = np.stack(per)
            else:
                for e, x in enumerate(per):
                    out[f"{b}{kind}.{e}.weight"] = x
    return out


def converter_type(name: str, array: np.ndarray, kind: str) -> QT:
    """The type llama.cpp's converter gives a tensor when asked for ``kind``."""
    qt = QT[kind]
    if array.ndim == 1 or "ffn_gate_inp" in name:
        return QT.F32
    block = gguf.GGML_QUANT_SIZES[qt][0]
    return qt if array.shape[-1] % block == 0 else QT.F16


def write_gguf(
    path: Path,
    config: ModelConfig,
    arrays: Arrays,
    kind: str | dict[str, str] = "F32",
    *,
    raw: dict[str, tuple[np.ndarray, QT]] | None = None,
    metadata: dict[str, Any] | None = None,
    tokenizer: dict[str, Any] | None = None,
    arch: str = "llama",
) -> Path:
    """Write ``arrays`` (float, quantised to ``kind`` or the per-name kinds) and ``raw``
    (ready-made blocks) with ``config``'s hyperparameters."""
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("test")
    w.add_context_length(config.max_seq_len)
    w.add_embedding_length(config.dim)
    w.add_block_count(config.n_layers)
    w.add_feed_forward_length(config.hidden_dim)
    w.add_head_count(config.n_heads)
    w.add_head_count_kv(config.n_kv_heads)
    w.add_rope_freq_base(config.rope_theta)
    w.add_layer_norm_rms_eps(config.norm_eps)
    w.add_rope_dimension_count(config.head_dim)
    if config.head_dim != config.dim // config.n_heads:
        w.add_key_length(config.head_dim)
        w.add_value_length(config.head_dim)
    if config.sliding_window is not None:
        w.add_sliding_window(config.sliding_window)
    if config.moe is not None:
        w.add_expert_count(config.moe.num_experts)
        w.add_expert_used_count(config.moe.num_experts_per_tok)
    w.add_vocab_size(config.vocab_size)
    for key, value in (metadata or {}).items():
        w.add_key_value(key, value[0], value[1])
    if tokenizer is not None:
        w.add_tokenizer_model("llama")
        w.add_token_list(tokenizer["tokens"])
        w.add_token_scores(tokenizer["scores"])
        w.add_token_types(tokenizer["types"])
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
    for name, array in arrays.items():
        want = kind if isinstance(kind, str) else kind.get(name, "F32")
        qt = converter_type(name, array, want)
        if qt == QT.F32:
            w.add_tensor(name, array.astype(np.float32))
        elif qt == QT.F16:
            w.add_tensor(name, array.astype(np.float16))
        else:
            w.add_tensor(name, quants.quantize(array.astype(np.float32), qt), raw_dtype=qt)
    for name, (blocks, qt) in (raw or {}).items():
        w.add_tensor(name, blocks, raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def random_blocks(shape: tuple[int, ...], qt: QT, seed: int = 0) -> np.ndarray:
    """Random but well-formed blocks of ``qt`` for a tensor of ``shape`` (a test-side encoder
    for the types gguf-py cannot quantise: random codes, small float16 scales)."""
    rng = np.random.default_rng(seed)
    values, size = gguf.GGML_QUANT_SIZES[qt]
    lead, k = shape[:-1], shape[-1]
    data = rng.integers(0, 256, (*lead, k // values, size), dtype=np.uint8)

    def put(at: int, lo: float, hi: float) -> None:
        scale = rng.uniform(lo, hi, data.shape[:-1]).astype(np.float16)
        data[..., at : at + 2] = scale[..., None].view(np.uint8)

    if qt in (QT.Q4_K, QT.Q5_K):
        put(0, 1e-4, 4e-4)  # d
        put(2, 1e-4, 4e-4)  # dmin
    elif qt == QT.Q6_K:
        put(208, 1e-4, 3e-4)
    else:
        put(0, 2e-3, 8e-3)  # d
        if qt == QT.Q4_1:
            put(2, -0.05, 0.05)  # m
    return data.reshape(*lead, k // values * size)


def v1_tokenizer_metadata() -> dict[str, Any]:
    """mistral-common's v1 vocabulary (tokenizer.model.v1) as llama.cpp's converter writes it:
    pieces, scores and SentencePiece piece types."""
    from local_backend.tokenizer import Tokenizer, bundled_v1_path

    path = bundled_v1_path()
    assert path is not None, "mistral-common ships tokenizer.model.v1"
    sp = Tokenizer.from_file(path)._sp
    n = sp.get_piece_size()
    types = [
        2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else 1
        for i in range(n)
    ]
    return {
        "tokens": [sp.id_to_piece(i) for i in range(n)],
        "scores": [sp.get_score(i) for i in range(n)],
        "types": types,
    }


def ollama_store(root: Path, blob_source: Path, name: str, tag: str = "latest") -> Path:
    """A fake Ollama store at ``root`` holding ``blob_source`` as model NAME:TAG."""
    import json
    import shutil

    digest = "sha256-" + "ab" * 32
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(blob_source, root / "blobs" / digest)
    manifest = root / "manifests" / "registry.ollama.ai" / "library" / name / tag
    manifest.parent.mkdir(parents=True)
    layers = [
        {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "cd" * 32},
        {"mediaType": "application/vnd.ollama.image.model", "digest": digest.replace("-", ":")},
    ]
    manifest.write_text(json.dumps({"schemaVersion": 2, "layers": layers}))
    return root


# llama.cpp's mixes (llama-quantize's ftypes, simplified): the GGML type of each kind of
# tensor; a kind absent here (norms, router) is F32. "Q4_K_M" gives v and ffn_down Q6_K on
# every other layer (Q4_K on the rest) and Q6_K to the head, as llama-quantize does.
_MATRICES = (
    "token_embd",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
)
MIXES: dict[str, dict[str, QT]] = {
    "Q4_0": dict.fromkeys((*_MATRICES, "output"), QT.Q4_0),
    "Q8_0": dict.fromkeys((*_MATRICES, "output"), QT.Q8_0),
    "Q4_K_M": {
        **dict.fromkeys(_MATRICES, QT.Q4_K),
        "output": QT.Q6_K,
        "attn_v.odd": QT.Q6_K,
        "ffn_down.odd": QT.Q6_K,
    },
}


def tensor_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """llama.cpp's tensor names and shapes (numpy order) for ``config``, merged experts, with
    an output head of its own (the export's table)."""
    from local_backend.gguf_export import llama_tensor_specs

    untied = replace(config, tie_embeddings=False)
    return {spec.name: spec.shape for spec in llama_tensor_specs(untied, "f32")}


def write_random_gguf(path: Path, config: ModelConfig, mix: str, seed: int = 0) -> Path:
    """A whole model file of random well-formed blocks in llama.cpp's ``mix`` (see
    :data:`MIXES`), fast to write at any size: no weights are quantised, only drawn."""
    types = MIXES[mix]
    rng = np.random.default_rng(seed)
    plain: Arrays = {}
    raw: dict[str, tuple[np.ndarray, QT]] = {}
    for k, (name, shape) in enumerate(tensor_shapes(config).items()):
        parts = name.split(".")
        kind = (parts[2] if name.startswith("blk.") else parts[0]).removesuffix("_exps")
        odd = name.startswith("blk.") and int(parts[1]) % 2 == 1
        qt = types.get(f"{kind}.odd" if odd else kind, types.get(kind))
        if qt is None or len(shape) == 1:
            plain[name] = rng.standard_normal(shape, dtype=np.float32) * 0.02 + (
                1.0 if len(shape) == 1 else 0.0
            )
        else:
            raw[name] = (random_blocks(shape, qt, seed=seed + k), qt)
    return write_gguf(path, config, plain, raw=raw)
