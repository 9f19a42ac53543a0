"""Any checkpoint we load, written as a GGUF file that llama.cpp runs: ``export_gguf``.

Sources: the bundled model (``None``), a Hugging Face or Mistral safetensors folder, a folder
written by ``bedrock-mistral local quantize`` (dequantised first), or a GGUF file / ``ollama:``
reference (its blocks decoded). Each yields our fused tensors one at a time as floats; they are
split into llama.cpp's tensors as its converter (``convert_hf_to_gguf.py``) names and lays them
out: q and k rows permuted back to interleaved rotary pairs, experts merged into
``blk.N.ffn_{gate,up,down}_exps.weight``, norms and the MoE router in F32, a matrix whose rows
are not a whole number of 32-value blocks in F16, and no ``output.weight`` when the head is tied
to the embedding. The hyperparameters and the SentencePiece vocabulary go into the metadata.

llama.cpp's ``llama`` architecture has no sliding-window attention: we write
``llama.attention.sliding_window`` (our loader reads it) but llama.cpp attends over the whole
context, so its output agrees with ours only while the context fits the window.

>>> export_gguf(None, "bundled-q8_0.gguf", file_type="q8_0")   # doctest: +SKIP
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import sentencepiece as spm
import torch
from torch import Tensor

from local_backend import protowire
from local_backend import quant_checkpoint as qc
from local_backend.checkpoint import iter_state, permute_to_original, read_checkpoint
from local_backend.config import ModelConfig
from local_backend.errors import CheckpointError, CheckpointNotFoundError, TokenizerError
from local_backend.gguf_writer import ENCODED_TYPES, TensorSpec, write_gguf
from local_backend.quant import QuantData, dequantize
from local_backend.tokenizer import find_tokenizer

__all__ = ["FILE_TYPES", "ExportSummary", "FileType", "export_gguf", "llama_tensor_specs"]

FileType = Literal["f32", "f16", "q8_0", "q4_0"]
FILE_TYPES: tuple[FileType, ...] = ("f32", "f16", "q8_0", "q4_0")
_LLAMA_FTYPE = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 7}  # llama.cpp's llama_ftype
_NORMAL, _UNKNOWN, _CONTROL, _UNUSED, _BYTE = 1, 2, 3, 5, 6  # SentencePiece piece types

Fused = Iterator[tuple[str, Tensor]]


@dataclass(frozen=True)
class ExportSummary:
    """What was written: the file, its size, how many tensors of each GGML type."""

    path: Path
    nbytes: int
    types: dict[str, int]
    sliding_window: int | None

    @property
    def tensors(self) -> int:
        return sum(self.types.values())


# -- the tensor table -------------------------------------------------------------------------


def llama_tensor_specs(config: ModelConfig, file_type: FileType) -> list[TensorSpec]:
    """llama.cpp's tensors for ``config``, each with the type the converter gives it."""
    h, d, i, v = config.dim, config.head_dim, config.hidden_dim, config.vocab_size
    shapes: dict[str, tuple[int, ...]] = {"token_embd.weight": (v, h), "output_norm.weight": (h,)}
    if not config.tie_embeddings:
        shapes["output.weight"] = (v, h)
    for n in range(config.n_layers):
        b = f"blk.{n}."
        shapes[b + "attn_norm.weight"] = (h,)
        shapes[b + "ffn_norm.weight"] = (h,)
        shapes[b + "attn_q.weight"] = (config.n_heads * d, h)
        shapes[b + "attn_k.weight"] = (config.n_kv_heads * d, h)
        shapes[b + "attn_v.weight"] = (config.n_kv_heads * d, h)
        shapes[b + "attn_output.weight"] = (h, config.n_heads * d)
        if config.moe is None:
            shapes.update({b + "ffn_gate.weight": (i, h), b + "ffn_up.weight": (i, h)})
            shapes[b + "ffn_down.weight"] = (h, i)
            continue
        e = config.moe.num_experts
        shapes[b + "ffn_gate_inp.weight"] = (e, h)
        shapes.update({b + "ffn_gate_exps.weight": (e, i, h), b + "ffn_up_exps.weight": (e, i, h)})
        shapes[b + "ffn_down_exps.weight"] = (e, h, i)
    return [
        TensorSpec(name, shape, _type_for(name, shape, file_type)) for name, shape in shapes.items()
    ]


def _type_for(name: str, shape: tuple[int, ...], file_type: FileType) -> Any:
    if len(shape) == 1 or "ffn_gate_inp" in name:
        return ENCODED_TYPES["F32"]
    t = ENCODED_TYPES[file_type.upper()]
    return t if shape[-1] % t.block_values == 0 else ENCODED_TYPES["F16"]


def llama_tensors(fused: Fused, config: ModelConfig) -> Fused:
    """Our fused tensors -> llama.cpp's names and layouts (views where possible)."""
    nh, nkv, d, i = config.n_heads, config.n_kv_heads, config.head_dim, config.hidden_dim
    plain = {
        "tok_embeddings.weight": "token_embd.weight",
        "norm.weight": "output_norm.weight",
        "output.weight": "output.weight",
        "attention_norm.weight": "attn_norm.weight",
        "ffn_norm.weight": "ffn_norm.weight",
        "attention.wo.weight": "attn_output.weight",
        "feed_forward.w2.weight": "ffn_down.weight",
        "feed_forward.gate.weight": "ffn_gate_inp.weight",
        "feed_forward.w2": "ffn_down_exps.weight",
    }
    for name, t in fused:
        if name == "output.weight" and config.tie_embeddings:
            continue
        layer, _, rest = name.removeprefix("layers.").partition(".")
        b = f"blk.{layer}." if name.startswith("layers.") else ""
        rest = rest if b else name
        if rest in plain:
            yield b + plain[rest], t
        elif rest == "attention.wqkv.weight":
            q, k, v = torch.split(t, [nh * d, nkv * d, nkv * d])
            yield b + "attn_q.weight", permute_to_original(q, nh, d)
            yield b + "attn_k.weight", permute_to_original(k, nkv, d)
            yield b + "attn_v.weight", v
        elif rest in ("feed_forward.w13.weight", "feed_forward.w13"):
            suffix = "_exps.weight" if rest == "feed_forward.w13" else ".weight"
            yield b + "ffn_gate" + suffix, t[..., :i, :]
            yield b + "ffn_up" + suffix, t[..., i:, :]
        else:
            raise CheckpointError(f"tensor {name} has no place in a llama.cpp file")


# -- metadata ---------------------------------------------------------------------------------


def model_metadata(config: ModelConfig, name: str, file_type: FileType) -> dict[str, Any]:
    """The ``general.*`` and ``llama.*`` keys llama.cpp's converter writes for this model."""
    meta: dict[str, Any] = {
        "general.architecture": "llama",
        "general.name": name,
        "general.file_type": _LLAMA_FTYPE[file_type],
        "general.alignment": 32,
        "llama.context_length": config.max_seq_len,
        "llama.embedding_length": config.dim,
        "llama.block_count": config.n_layers,
        "llama.feed_forward_length": config.hidden_dim,
        "llama.attention.head_count": config.n_heads,
        "llama.attention.head_count_kv": config.n_kv_heads,
        "llama.rope.freq_base": float(config.rope_theta),
        "llama.attention.layer_norm_rms_epsilon": float(config.norm_eps),
        "llama.rope.dimension_count": config.head_dim,
        "llama.vocab_size": config.vocab_size,
    }
    if config.head_dim != config.dim // config.n_heads:
        meta["llama.attention.key_length"] = config.head_dim
        meta["llama.attention.value_length"] = config.head_dim
    if config.moe is not None:
        meta["llama.expert_count"] = config.moe.num_experts
        meta["llama.expert_used_count"] = config.moe.num_experts_per_tok
    if config.sliding_window is not None:
        meta["llama.attention.sliding_window"] = config.sliding_window
    return meta


def sentencepiece_metadata(model_file: Path, vocab_size: int) -> dict[str, Any]:
    """``tokenizer.ggml.*`` from a SentencePiece model, padded to the model's vocabulary with
    unused ``[PAD{n}]`` pieces as the converter pads.

    A BPE model (Mistral's) becomes llama.cpp's ``llama`` vocabulary (its SPM tokenizer merges
    pieces by score, as BPE does). A unigram model (the bundled one) becomes ``t5``, llama.cpp's
    unigram (UGM) tokenizer, which segments by Viterbi as SentencePiece does: its SPM tokenizer
    can only build pieces whose every prefix pair is also a piece, so on the bundled vocabulary
    it splits most words into characters (measured: 0 of 130 evaluation prompts tokenized as
    ours, against 120 with ``t5``; the other 10 hold ``</s>``, which is special text).
    """
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    n = sp.get_piece_size()
    if n > vocab_size:
        raise TokenizerError(
            f"{model_file} has {n} pieces but the model's vocabulary is {vocab_size}: the "
            "tokenizer belongs to another model"
        )
    spec = _spm_spec(sp.serialized_model_proto())
    pieces = [sp.id_to_piece(t) for t in range(n)]
    scores = [sp.get_score(t) for t in range(n)]
    types = [_piece_type(sp, t) for t in range(n)]
    pieces += [f"[PAD{k}]" for k in range(1, vocab_size - n + 1)]
    scores += [-1000.0] * (vocab_size - n)
    types += [_UNUSED] * (vocab_size - n)
    meta: dict[str, Any] = {
        "tokenizer.ggml.model": "t5" if spec.unigram else "llama",
        "tokenizer.ggml.tokens": pieces,
        "tokenizer.ggml.scores": np.asarray(scores, dtype="<f4"),
        "tokenizer.ggml.token_type": np.asarray(types, dtype="<i4"),
        "tokenizer.ggml.bos_token_id": sp.bos_id(),
        "tokenizer.ggml.eos_token_id": sp.eos_id(),
        "tokenizer.ggml.unknown_token_id": sp.unk_id(),
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.add_eos_token": False,
        "tokenizer.ggml.add_space_prefix": spec.add_dummy_prefix,
    }
    if spec.unigram:
        meta["tokenizer.ggml.remove_extra_whitespaces"] = spec.remove_extra_whitespaces
        if spec.charsmap:
            meta["tokenizer.ggml.precompiled_charsmap"] = np.frombuffer(spec.charsmap, np.uint8)
    return meta


@dataclass(frozen=True)
class _SpmSpec:
    unigram: bool
    add_dummy_prefix: bool
    remove_extra_whitespaces: bool
    charsmap: bytes


def _spm_spec(proto: bytes) -> _SpmSpec:
    """The few settings of a serialized SentencePiece ``ModelProto`` that matter here, read
    from the protobuf wire format (no protobuf package needed): ``trainer_spec`` (field 2)
    ``model_type`` (3: 1 unigram, 2 BPE), ``normalizer_spec`` (field 3)
    ``precompiled_charsmap`` (2), ``add_dummy_prefix`` (3), ``remove_extra_whitespaces`` (4)."""
    top = _wanted(proto, {2, 3})
    trainer = _wanted(top.get(2, b""), {3})
    norm = _wanted(top.get(3, b""), {2, 3, 4})
    return _SpmSpec(
        unigram=trainer.get(3, 1) == 1,  # protobuf default: UNIGRAM
        add_dummy_prefix=bool(norm.get(3, 1)),
        remove_extra_whitespaces=bool(norm.get(4, 1)),
        charsmap=bytes(norm.get(2, b"")),
    )


def _wanted(message: Any, numbers: set[int]) -> dict[int, Any]:
    """The ``numbers`` fields of a protobuf message (the last of each, as protobuf reads)."""
    assert isinstance(message, bytes)
    return {n: value for n, _, value, _ in protowire.fields(message) if n in numbers}


def _piece_type(sp: spm.SentencePieceProcessor, t: int) -> int:
    if sp.is_unknown(t):
        return _UNKNOWN
    if sp.is_control(t):
        return _CONTROL
    if sp.is_unused(t):
        return _UNUSED
    return _BYTE if sp.is_byte(t) else _NORMAL


# -- sources ----------------------------------------------------------------------------------


@dataclass
class _Source:
    config: ModelConfig
    name: str
    tokenizer: dict[str, Any]
    tensors: Callable[[], Fused]


@contextmanager
def _open_source(source: str | Path | None) -> Iterator[_Source]:
    # runtime's resolver: a .gguf path, a file with GGUF's magic, or an ollama: reference
    from local_backend.runtime import BUNDLED_WEIGHTS, gguf_path

    gguf_file = gguf_path(source)
    if gguf_file is not None:
        with _gguf_source(gguf_file) as src:
            yield src
        return
    root = BUNDLED_WEIGHTS if source is None else Path(source).expanduser()
    if not root.is_dir():
        raise CheckpointNotFoundError(
            f"{root} is neither a checkpoint folder nor a GGUF file: check the path"
        )
    name = "bedrock-mistral bundled" if source is None else root.resolve().name
    if qc.is_quantized(root):
        with qc.read_quantized(root) as (config, items):
            yield _Source(
                config, name, _folder_tokenizer(root, config), lambda: _dequantized(items, config)
            )
        return
    with read_checkpoint(root) as (config, get):
        yield _Source(
            config, name, _folder_tokenizer(root, config), lambda: iter_state(get, config)
        )


def _folder_tokenizer(root: Path, config: ModelConfig) -> dict[str, Any]:
    tokenizer = find_tokenizer(root, config.vocab_size)
    assert tokenizer.path is not None  # find_tokenizer reads a file
    return sentencepiece_metadata(tokenizer.path, config.vocab_size)


def _dequantized(items: Iterator[tuple[str, Tensor | QuantData]], config: ModelConfig) -> Fused:
    matrices = qc.matrices(config)
    for name, value in items:
        if isinstance(value, QuantData):
            yield name, dequantize(value, matrices[name][2])
        else:
            yield name, value


@contextmanager
def _gguf_source(path: Path) -> Iterator[_Source]:
    """A GGUF file's tensors, decoded to float32 one of our tensors at a time."""
    # the loader's plan and checks, so a file exports exactly when it loads
    from local_backend import gguf as gg
    from local_backend.gguf_file import GGUFFile

    f = GGUFFile(path)
    try:
        embd = f.tensors.get("token_embd.weight")
        if embd is None or len(embd.shape) != 2:
            raise CheckpointError(f"{f.path}: tensor token_embd.weight is missing or not 2-D")
        config = gg.config_from_metadata(f.metadata, embd.shape[0], str(path))
        config = replace(config, tie_embeddings="output.weight" not in f.tensors)
        plan = gg.checked_plan(f, config)
        tokenizer = {k: v for k, v in f.metadata.items() if k.startswith("tokenizer.")}
        if tokenizer.get("tokenizer.ggml.model") is None:
            raise TokenizerError(f"{path} has no tokenizer in its metadata (tokenizer.ggml.model)")
        tokenizer.setdefault("tokenizer.ggml.add_bos_token", True)
        tokenizer.setdefault("tokenizer.ggml.add_eos_token", False)
        name = str(f.metadata.get("general.name") or path.stem)

        def tensors() -> Fused:
            matrices = qc.matrices(config)
            for fused, experts in plan.items():
                if fused == "output.weight" and config.tie_embeddings:
                    continue  # the embedding again
                mats = [gg.decode_part(f, ps) for ps in experts]
                if fused not in matrices:
                    yield fused, mats[0].reshape(experts[0][0].shape)
                else:
                    yield fused, torch.stack(mats) if matrices[fused][0] else mats[0]

        yield _Source(config, name, tokenizer, tensors)
    finally:
        f.close()


# -- entry point ------------------------------------------------------------------------------


def export_gguf(
    source: str | Path | None,
    out: str | Path,
    *,
    file_type: FileType = "f16",
    force: bool = False,
) -> ExportSummary:
    """Write ``source`` (None = the bundled model) to the GGUF file ``out`` as ``file_type``."""
    if file_type not in FILE_TYPES:
        raise CheckpointError(
            f"unknown GGUF type {file_type!r}: use one of {', '.join(FILE_TYPES)}"
        )
    out = Path(out).expanduser()
    if not out.parent.is_dir():
        raise FileNotFoundError(f"the folder {out.parent} does not exist")
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists: choose another name, or overwrite it with --force")
    with _open_source(source) as src:
        specs = llama_tensor_specs(src.config, file_type)
        meta = {**model_metadata(src.config, src.name, file_type), **src.tokenizer}
        write_gguf(out, meta, specs, llama_tensors(src.tensors(), src.config), force=force)
    types = Counter(spec.type.name for spec in specs)
    return ExportSummary(out, out.stat().st_size, dict(types), src.config.sliding_window)
