"""GGUF files (llama.cpp, Ollama) for the llama-architecture Mistral and Mixtral models.

``load_gguf(path)`` reads the container ourselves (:mod:`local_backend.gguf_file`), the
hyperparameters from ``llama.*`` metadata, the tokenizer from ``tokenizer.ggml.*``
(:mod:`local_backend.gguf_tokenizer`) and the tensors by llama.cpp's names, checking all of it
before any weight is decoded, so a bad file fails with one error and nothing half-built.

Each of our matrices is converted once, one at a time (no full-precision copy of the model):

* all parts F32/F16/BF16 -> a plain tensor in the model dtype (or quantised with ``quantize=``);
* all parts Q4_0/Q4_1/Q4_K -> our int4, group 32, keeping the file's own 4-bit codes: only the
  scale and zero of each group are rounded to bfloat16 (relative error <= 2^-9 of a step size);
* anything else (Q8_0, Q5_K, Q6_K, or a fused matrix whose parts mix types, as q/k/v do in
  Q4_K_M files) -> our int8 per output channel, re-quantised from the dequantised rows. Q8_0's
  per-32 scales and Q6_K's per-16 scales cannot be carried by a per-channel int8: the
  re-quantisation adds at most half an int8 step (row max / 254) per weight. int8, not int4,
  because 5- and 6-bit values would lose more than that at 4 bits.

llama.cpp's converter permutes the rows of q and k (HF split-half rotary layout to the
interleaved-pair one); the rows are permuted back here, on the raw blocks, before decoding.

Memory: a load holds the model it builds and little else (``benchmarks/bench_gguf_memory.py``:
peak at most ~1.4x the file on 4-bit files). Bytes are read one tensor (or expert) at a time,
converted in row chunks into tensors allocated at their final size, and a quantised matrix
goes straight into its kernel form, expert by expert; freed temporaries are handed back to the
system as the load goes (:mod:`local_backend.heap`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from local_backend import heap
from local_backend import quant_checkpoint as qc
from local_backend.checkpoint import TORCH_DTYPES, permute_to_hf
from local_backend.config import DType, ModelConfig, MoeConfig, normalize_dtype
from local_backend.errors import (
    CheckpointError,
    ShapeMismatchError,
    TokenizerError,
    UnsupportedArchitectureError,
    UnsupportedBlockTypeError,
)
from local_backend.gguf_blocks import (
    BLOCK_TYPES,
    FLOAT_TYPES,
    INT4_TYPES,
    U8,
    BlockType,
    decode,
    int4_packed,
)
from local_backend.gguf_file import GGUFFile
from local_backend.gguf_tokenizer import tokenizer_from_metadata
from local_backend.kernels import Kernel, to_kernel
from local_backend.model import Transformer
from local_backend.quant import SCALE_DTYPE, QuantData, QuantSpec, quantize
from local_backend.quant_device import to_device
from local_backend.tokenizer import Tokenizer

__all__ = [
    "SUPPORTED_TYPES",
    "Part",
    "Plan",
    "checked_plan",
    "config_from_metadata",
    "decode_part",
    "load_gguf",
]

SUPPORTED_TYPES = tuple(t.name for t in BLOCK_TYPES.values())
ARCHITECTURES = ("llama",)
_VALUES = 1 << 20  # values decoded at a time: 4 MB as float32 (measured as fast as 16 MB)
_MIN_FREE = 16 << 20  # freed bytes a load may keep: this, or an eighth of the file (heap.py)
_INT8 = QuantSpec("int8")


# -- hyperparameters ------------------------------------------------------------------------


def config_from_metadata(meta: dict[str, Any], vocab_size: int, where: str) -> ModelConfig:
    """Our :class:`ModelConfig` from a GGUF file's metadata; a combination our model cannot
    run (rope scaling, per-layer head counts, partial rotary, k/v head sizes that differ)
    raises :class:`CheckpointError` naming the key."""
    arch = meta.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"{where} is a {arch!r} model; we run the llama architecture (Mistral and Mixtral "
            "files from llama.cpp's converter and Ollama) only"
        )

    def get(key: str, default: Any = None, *, required: bool = False) -> Any:
        value = meta.get(f"{arch}.{key}", default)
        if required and value is None:
            raise CheckpointError(f"{where} lacks the metadata key {arch}.{key}")
        if isinstance(value, (list, np.ndarray)):
            raise CheckpointError(
                f"{where}: {arch}.{key} differs between layers; our model needs one value"
            )
        return value

    dim, n_heads = (
        int(get("embedding_length", required=True)),
        int(get("attention.head_count", required=True)),
    )
    head_dim = int(get("attention.key_length", dim // n_heads))
    if int(get("attention.value_length", head_dim)) != head_dim:
        raise CheckpointError(f"{where}: key and value head sizes differ; our model needs one")
    if int(get("rope.dimension_count", head_dim)) != head_dim:
        raise CheckpointError(
            f"{where}: {arch}.rope.dimension_count={get('rope.dimension_count')} rotates part of "
            f"each head ({head_dim}); our model rotates whole heads"
        )
    scaling = get("rope.scaling.type", "none")
    if scaling not in ("none", None):
        raise CheckpointError(f"{where}: rope scaling {scaling!r} is not implemented")
    experts = int(get("expert_count", 0) or 0)
    moe = None
    if experts:
        moe = MoeConfig(experts, int(get("expert_used_count", required=True)))
    window = get("attention.sliding_window")
    try:
        return ModelConfig(
            dim=dim,
            n_layers=int(get("block_count", required=True)),
            n_heads=n_heads,
            n_kv_heads=int(get("attention.head_count_kv", n_heads)),
            head_dim=head_dim,
            hidden_dim=int(get("feed_forward_length", required=True)),
            vocab_size=vocab_size,
            norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
            rope_theta=float(get("rope.freq_base", 10000.0)),
            sliding_window=int(window) if window else None,
            moe=moe,
            max_seq_len=int(get("context_length", 4096)),
            bos_token_id=int(meta.get("tokenizer.ggml.bos_token_id", 1)),
            eos_token_id=int(meta.get("tokenizer.ggml.eos_token_id", 2)),
        )
    except CheckpointError as err:
        raise CheckpointError(
            f"{where}: our model cannot run these hyperparameters: {err}"
        ) from err


# -- the tensor plan: our fused names from llama.cpp's tensors ------------------------------


@dataclass(frozen=True)
class Part:
    """Rows of one of our tensors taken from the GGUF tensor ``name`` of shape ``shape`` (numpy
    order), or from expert ``expert`` of a merged [E, ...] one."""

    name: str
    shape: tuple[int, ...]
    expert: int | None = None
    heads: int = 0  # > 0: undo llama.cpp's rotary row permutation with this many heads


Plan = dict[str, list[list[Part]]]  # our name -> parts, one list per expert (one if dense)


def _plan(f: GGUFFile, config: ModelConfig) -> Plan:
    """Every tensor of our model and where its rows come from."""
    h, d, i, v = config.dim, config.head_dim, config.hidden_dim, config.vocab_size
    nh, nkv = config.n_heads, config.n_kv_heads
    embd = Part("token_embd.weight", (v, h))
    plan: Plan = {
        "tok_embeddings.weight": [[embd]],
        "norm.weight": [[Part("output_norm.weight", (h,))]],
    }
    for n in range(config.n_layers):
        b, o = f"blk.{n}.", f"layers.{n}."
        plan[o + "attention_norm.weight"] = [[Part(b + "attn_norm.weight", (h,))]]
        plan[o + "ffn_norm.weight"] = [[Part(b + "ffn_norm.weight", (h,))]]
        plan[o + "attention.wqkv.weight"] = [
            [
                Part(b + "attn_q.weight", (nh * d, h), heads=nh),
                Part(b + "attn_k.weight", (nkv * d, h), heads=nkv),
                Part(b + "attn_v.weight", (nkv * d, h)),
            ]
        ]
        plan[o + "attention.wo.weight"] = [[Part(b + "attn_output.weight", (h, nh * d))]]
        if config.moe is None:
            plan[o + "feed_forward.w13.weight"] = [
                [Part(b + "ffn_gate.weight", (i, h)), Part(b + "ffn_up.weight", (i, h))]
            ]
            plan[o + "feed_forward.w2.weight"] = [[Part(b + "ffn_down.weight", (h, i))]]
            continue
        ne = config.moe.num_experts
        plan[o + "feed_forward.gate.weight"] = [[Part(b + "ffn_gate_inp.weight", (ne, h))]]
        merged = b + "ffn_gate_exps.weight" in f.tensors

        plan[o + "feed_forward.w13"] = [
            [
                _expert(b, "ffn_gate", e, (ne, i, h), merged),
                _expert(b, "ffn_up", e, (ne, i, h), merged),
            ]
            for e in range(ne)
        ]
        plan[o + "feed_forward.w2"] = [
            [_expert(b, "ffn_down", e, (ne, h, i), merged)] for e in range(ne)
        ]
    head = Part("output.weight", (v, h))
    plan["output.weight"] = [[head if "output.weight" in f.tensors else embd]]  # absent = tied
    return plan


def _expert(b: str, kind: str, e: int, shape: tuple[int, int, int], merged: bool) -> Part:
    """Expert ``e``'s matrix: llama.cpp's current layout has one [E, N, K] tensor per kind,
    older files one tensor per expert."""
    if merged:
        return Part(f"{b}{kind}_exps.weight", shape, expert=e)
    return Part(f"{b}{kind}.{e}.weight", shape[1:])


def _check(f: GGUFFile, plan: Plan) -> None:
    """Every tensor present, of a type we decode, with the shape the metadata implies, and no
    tensor left over; raised before anything is decoded."""
    expected = {p.name: p.shape for experts in plan.values() for parts in experts for p in parts}
    for name, shape in expected.items():
        info = f.tensors.get(name)
        if info is None:
            raise CheckpointError(f"{f.path}: tensor {name} is missing; the file is incomplete")
        if info.type_id not in BLOCK_TYPES:
            raise UnsupportedBlockTypeError(
                f"{f.path}: tensor {name} is stored as {info.type_name}, a block type we do not "
                f"decode; we support {', '.join(SUPPORTED_TYPES)}",
                tensor=name,
                block_type=info.type_name,
            )
        if info.shape != shape:
            raise ShapeMismatchError(
                f"{f.path}: tensor {name} has shape {list(info.shape)} (numpy order: rows "
                f"first), but the metadata implies {list(shape)}"
            )
    extra = sorted(set(f.tensors) - set(expected))
    if extra:
        raise CheckpointError(
            f"{f.path}: tensor {extra[0]} is not part of a Mistral/Mixtral model ({len(extra)} "
            "unexpected tensors in all): the file holds something our model cannot run"
        )


def checked_plan(f: GGUFFile, config: ModelConfig) -> Plan:
    """The plan of ``f`` after every check a load makes, so whatever reads a file through it
    (an export) accepts exactly the files that load."""
    plan = _plan(f, config)
    _check(f, plan)
    return plan


def decode_part(f: GGUFFile, parts: list[Part], dtype: torch.dtype = torch.float32) -> Tensor:
    """The rows of ``parts`` (one tensor of the plan: one expert, or a dense matrix) decoded
    into one [N, K] tensor of ``dtype``, q/k rows in the HF order."""
    return _floats([_rows(f, p) for p in parts], dtype)


# -- converting one tensor ------------------------------------------------------------------


def _rows(f: GGUFFile, p: Part) -> tuple[U8, BlockType]:
    """The part's raw rows [N, row_bytes], read from the file (only the part's expert of a
    merged tensor), with q/k rows back in the HF order."""
    raw = f.raw(p.name, p.expert)
    if raw.ndim == 1:
        raw = raw[None]
    if p.heads:
        order = permute_to_hf(torch.arange(raw.shape[0])[:, None], p.heads, raw.shape[0] // p.heads)
        raw = raw[order[:, 0].numpy()]
    return raw, BLOCK_TYPES[f.tensors[p.name].type_id]


def _chunks(raw: U8, t: BlockType) -> Iterator[U8]:
    """Row chunks of ``raw`` of about :data:`_VALUES` values: what one decoding step's float32
    temporaries are sized by."""
    k = raw.shape[1] // t.block_bytes * t.block_values
    step = max(1, _VALUES // k)
    for s in range(0, raw.shape[0], step):
        yield raw[s : s + step]


def _floats(pieces: list[tuple[U8, BlockType]], dtype: torch.dtype) -> Tensor:
    """Rows of every piece decoded into one [N, K] tensor, a chunk of rows at a time, so no
    float32 copy of a large tensor is ever whole."""
    t0 = pieces[0][1]
    k = pieces[0][0].shape[1] // t0.block_bytes * t0.block_values
    out = torch.empty(sum(raw.shape[0] for raw, _ in pieces), k, dtype=dtype)
    at = 0
    for raw, t in pieces:
        for rows in _chunks(raw, t):
            chunk = torch.from_numpy(decode(rows, t))
            out[at : at + chunk.shape[0]].copy_(chunk)
            at += chunk.shape[0]
    return out


def _convert_rows(rows: U8, t: BlockType, mode: str, spec: QuantSpec | None) -> dict[str, Tensor]:
    """A chunk of rows in the form ``mode`` says: ``{"w": floats}`` or a :class:`QuantData`'s
    tensors (``q``, ``scale``, ``zero``), each [rows, ...]."""
    if mode == "int4":
        q, scale, zero = (torch.from_numpy(a) for a in int4_packed(rows, t))
        return {"q": q, "scale": scale.to(SCALE_DTYPE), "zero": zero.to(SCALE_DTYPE)}
    w = torch.from_numpy(decode(rows, t))
    if mode == "int8":
        return quantize(w, _INT8).tensors()
    return quantize(w, spec).tensors() if spec is not None else {"w": w}


def _matrix(
    f: GGUFFile,
    experts: list[list[Part]],
    mode: str,
    dtype: torch.dtype,
    spec: QuantSpec | None,
    stacked: bool,
) -> Tensor | QuantData:
    """One of our tensors [N, K] from its parts (stacked along N), or a stack of experts
    [E, N, K], written chunk by chunk into tensors allocated once at their final size: the
    only other memory in use is one part's raw bytes and one chunk's temporaries."""
    n = sum(p.shape[-2] if len(p.shape) > 1 else 1 for p in experts[0])
    lead = (len(experts),) if stacked else ()
    out: dict[str, Tensor] = {}
    for e, parts in enumerate(experts):
        at = 0
        for p in parts:
            raw, t = _rows(f, p)
            for rows in _chunks(raw, t):
                for key, chunk in _convert_rows(rows, t, mode, spec).items():
                    if key not in out:
                        kind = dtype if key == "w" else chunk.dtype
                        out[key] = torch.empty(*lead, n, *chunk.shape[1:], dtype=kind)
                    dest = out[key][e] if stacked else out[key]
                    dest[at : at + len(rows)].copy_(chunk)
                at += len(rows)
            del raw  # before the next part is read
    if "w" in out:
        return out["w"]
    if mode == "int4":
        return QuantData("int4", out["q"], out["scale"], out["zero"], 32)
    scheme = spec.scheme if mode == "float" and spec is not None else "int8"
    group = spec.group_size if scheme == "int4" and spec is not None else 0
    return QuantData(scheme, out["q"], out["scale"], out.get("zero"), group)


def _mode(f: GGUFFile, experts: list[list[Part]]) -> str:
    """float, int4 (every part has 4-bit codes) or int8 (anything else): see the module doc."""
    names = {f.tensors[p.name].type_name for parts in experts for p in parts}
    if names <= FLOAT_TYPES:
        return "float"
    return "int4" if names <= INT4_TYPES else "int8"


def _tensors(
    f: GGUFFile,
    config: ModelConfig,
    plan: Plan,
    dtype: torch.dtype,
    spec: QuantSpec | None,
    kernel: Kernel = "auto",
    device: torch.device | None = None,
) -> Iterator[tuple[str, Tensor | qc.Kernels]]:
    """Our tensors one at a time, each converted once from the file's blocks (on the CPU); a
    quantised matrix straight into its kernel form on ``device``, one expert at a time."""
    where = device or torch.device("cpu")
    matrices = qc.matrices(config)
    embedding: Tensor | None = None
    budget = max(_MIN_FREE, f.size // 8)  # freed memory the allocator may keep meanwhile
    for name, experts in plan.items():
        heap.release(budget)
        if name not in matrices:  # embedding, norms, router: plain, in the model dtype
            p = experts[0][0]
            value = _matrix(f, experts, "float", dtype, None, stacked=False)
            assert isinstance(value, Tensor)
            value = value.reshape(p.shape)
            embedding = value if name == "tok_embeddings.weight" else embedding
            yield name, value
            continue
        mode = _mode(f, experts)
        tied = experts[0][0].name == "token_embd.weight"
        if tied and mode == "float" and spec is None and embedding is not None:
            yield name, embedding  # a plain tied head is the embedding itself
            continue
        lead, n, k = matrices[name]
        if mode == "float" and spec is None:
            plain = _matrix(f, experts, mode, dtype, spec, stacked=bool(lead))
            assert isinstance(plain, Tensor)
            yield name, plain
            continue
        kernels = []
        for parts in experts:  # each expert's portable form goes as soon as its kernel exists
            data = _matrix(f, [parts], mode, dtype, spec, stacked=False)
            assert isinstance(data, QuantData)
            data = to_device(data, where)
            kernels.append(to_kernel(data, out_features=n, in_features=k, kernel=kernel))
            del data
            heap.release(budget)
        yield name, kernels if lead else kernels[0]


# -- entry point ----------------------------------------------------------------------------


def _default_dtype(f: GGUFFile) -> DType:
    """float32 for an all-F32 file, else bfloat16: half float32's memory for the embedding and
    the KV cache (pass dtype="float32" for a faster decode, see docs/gguf.md)."""
    types = {info.type_name for info in f.tensors.values() if len(info.shape) > 1}
    return "float32" if types <= {"F32"} else "bfloat16"


def load_gguf(
    path: str | Path,
    dtype: str | None = None,
    *,
    quantize: str | None = None,
    group_size: int | None = None,
    kernel: Kernel = "auto",
    device: torch.device | None = None,
) -> tuple[Transformer, Tokenizer | TokenizerError]:
    """The model and tokenizer of a GGUF file (the tokenizer, or the error to raise on use);
    blocks are decoded on the CPU and each finished tensor moves to ``device``."""
    if quantize is None and group_size is not None:
        raise CheckpointError("group_size needs quantize='int4'")
    spec = QuantSpec.parse(quantize, group_size) if quantize is not None else None
    f = GGUFFile(path)
    try:
        embd = f.tensors.get("token_embd.weight")
        if embd is None or len(embd.shape) != 2:
            raise CheckpointError(f"{f.path}: tensor token_embd.weight is missing or not 2-D")
        config = config_from_metadata(f.metadata, embd.shape[0], str(f.path))
        if "output.weight" not in f.tensors:
            config.tie_embeddings = True
        plan = _plan(f, config)
        _check(f, plan)
        target = normalize_dtype(dtype, default=_default_dtype(f))
        config.dtype = target
        try:
            tokenizer: Tokenizer | TokenizerError = tokenizer_from_metadata(f.metadata, str(f.path))
        except TokenizerError as err:
            tokenizer = err
        items = _tensors(f, config, plan, TORCH_DTYPES[target], spec, kernel, device)
        model = qc.build(config, items, device=device)
        heap.release(0)
        return model, tokenizer
    finally:
        f.close()
