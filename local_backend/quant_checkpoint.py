"""Quantised models: quantise a checkpoint while loading it, and our quantised checkpoint format.

The format is one safetensors file, ``quantized.safetensors``, in a folder that also holds the
source's tokenizer and a ``config.json`` for other tools (with a ``quantization_config``; the
loader does not read it). The file's header metadata carries one JSON value under
``bedrock_mistral``, the one source of truth::

    {"format": "bedrock-mistral-quantized", "format_version": 1, "scheme": "int4",
     "group_size": 64, "config": {... config.json body ...}}

Tensors use our fused names (``layers.0.attention.wqkv.weight``, per layer ``feed_forward.w13``
[E, 2I, H] for experts). A quantised matrix ``NAME`` is stored as ``NAME.q``, ``NAME.scale``
and, for int4, ``NAME.zero`` in the portable layout of :mod:`local_backend.quant`; the other
tensors (embedding, norms, router) are stored as they are. A file whose ``format_version`` is
newer than this code's is refused before any tensor is read.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from local_backend.checkpoint import TORCH_DTYPES, iter_state, read_checkpoint
from local_backend.config import ModelConfig, normalize_dtype
from local_backend.errors import CheckpointError, ShapeMismatchError, UnsupportedFormatVersionError
from local_backend.kernels import Kernel, to_kernel
from local_backend.model import Transformer
from local_backend.quant import (
    GROUP_SIZES,
    SCHEMES,
    QuantData,
    QuantizedLinear,
    QuantizedWeight,
    QuantSpec,
    portable_shapes,
    quantize,
)
from local_backend.quant_device import to_device

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "QUANTIZED_FILE",
    "is_quantized",
    "kernel_counts",
    "load_quantized",
    "load_quantizing",
    "quantized_weights",
    "read_quantized",
    "read_spec",
    "save_quantized",
]

FORMAT_NAME = "bedrock-mistral-quantized"
FORMAT_VERSION = 1
QUANTIZED_FILE = "quantized.safetensors"
_META_KEY = "bedrock_mistral"
_TOKENIZER_FILES = ("tokenizer.model", "tokenizer.model.v1")

Matrices = dict[str, tuple[tuple[int, ...], int, int]]  # name -> (lead dims, N, K)


def matrices(config: ModelConfig) -> Matrices:
    """Every quantised matrix of ``config``: our fused name -> (expert axis or (), N, K)."""
    h, d, i = config.dim, config.head_dim, config.hidden_dim
    out: Matrices = {"output.weight": ((), config.vocab_size, h)}
    for n in range(config.n_layers):
        o = f"layers.{n}."
        out[o + "attention.wqkv.weight"] = ((), (config.n_heads + 2 * config.n_kv_heads) * d, h)
        out[o + "attention.wo.weight"] = ((), h, config.n_heads * d)
        if config.moe is None:
            out[o + "feed_forward.w13.weight"] = ((), 2 * i, h)
            out[o + "feed_forward.w2.weight"] = ((), h, i)
        else:
            lead = (config.moe.num_experts,)
            out[o + "feed_forward.w13"] = (lead, 2 * i, h)
            out[o + "feed_forward.w2"] = (lead, h, i)
    return out


def quantize_state(
    items: Iterable[tuple[str, Tensor]], config: ModelConfig, spec: QuantSpec
) -> Iterator[tuple[str, Tensor | QuantData]]:
    """Quantise the matrices of a stream of fused tensors one at a time (the full-precision
    tensor is dropped as soon as its quantised form exists); a tied head is quantised from
    the embedding."""
    targets = matrices(config)
    for name, tensor in items:
        if name == "tok_embeddings.weight" and config.tie_embeddings:
            yield "output.weight", quantize(tensor, spec.head)
        if name in targets:
            yield name, quantize(tensor, spec.head if name == "output.weight" else spec)
        else:
            yield name, _owned(tensor)


def _owned(tensor: Tensor) -> Tensor:
    """A copy in memory of its own: safetensors hands out views of the file's mapping, and one
    kept view (the embedding) would keep every page of the file resident."""
    return tensor.clone()


Kernels = QuantizedWeight | list[QuantizedWeight]  # one matrix, or one per expert


def build(
    config: ModelConfig,
    items: Iterable[tuple[str, Tensor | QuantData | Kernels]],
    kernel: Kernel = "auto",
    *,
    device: torch.device | None = None,
) -> Transformer:
    """A :class:`Transformer` whose matrices are quantised kernels, built without ever
    allocating its full-precision weights (meta device, then swap in or assign). A matrix
    comes in its portable form (moved to ``device`` one matrix or expert at a time, then
    repacked there) or already in its kernel form (one weight, or a list with one per expert,
    as the GGUF loader makes them, on ``device``). The other tensors move to ``device`` one
    by one; a tensor that comes twice (a plain tied head) moves once."""
    targets = matrices(config)
    where = device or torch.device("cpu")
    with torch.device("meta"):
        model = Transformer(config)
    rest: dict[str, Tensor] = {}
    moved: dict[int, Tensor] = {}
    for name, value in items:
        if isinstance(value, QuantData):
            _place(model, name, _kernels(value, targets[name], kernel, where))
        elif isinstance(value, (QuantizedWeight, list)):
            _place(model, name, value)
        else:
            if id(value) not in moved:
                moved[id(value)] = value.to(where)
            rest[name] = moved[id(value)]
        del value  # the portable form goes now, not after the next tensor is converted
    model.load_state_dict(rest, strict=True, assign=True)  # what is left: embedding, norms, router
    return model.eval()


def _kernels(
    data: QuantData, dims: tuple[tuple[int, ...], int, int], kernel: Kernel, device: torch.device
) -> Kernels:
    """The kernel form of a matrix, or of each expert of a stack, made on ``device``."""
    lead, n, k = dims
    if not lead:
        return to_kernel(to_device(data, device), out_features=n, in_features=k, kernel=kernel)
    return [
        to_kernel(to_device(data.expert(e), device), out_features=n, in_features=k, kernel=kernel)
        for e in range(lead[0])
    ]


def quantized_weights(model: Transformer) -> Iterator[QuantizedWeight]:
    """Every quantised matrix of ``model`` (experts one by one)."""
    for module in model.modules():
        for value in (getattr(module, name, None) for name in ("weight", "w13", "w2")):
            for w in value if isinstance(value, list) else [value]:
                if isinstance(w, QuantizedWeight):
                    yield w


def kernel_counts(model: Transformer) -> dict[str, int]:
    """How many quantised matrices (experts one by one) each kernel form serves."""
    counts: dict[str, int] = {}
    for w in quantized_weights(model):
        counts[w.kernel] = counts.get(w.kernel, 0) + 1
    return counts


def _place(model: Transformer, name: str, weights: Kernels) -> None:
    """Swap the quantised ``name`` in: an nn.Linear becomes a QuantizedLinear; an expert
    stack parameter becomes a list with one kernel weight per expert."""
    parent_name, _, attr = name.removesuffix(".weight").rpartition(".")
    parent = model.get_submodule(parent_name)
    if isinstance(weights, QuantizedWeight):
        setattr(parent, attr, QuantizedLinear(weights))
        return
    delattr(parent, attr)  # the [E, N, K] parameter; expert() indexes the list the same way
    object.__setattr__(parent, attr, weights)


def load_quantizing(
    path: str | Path,
    spec: QuantSpec,
    *,
    dtype: str | None = None,
    kernel: Kernel = "auto",
    device: torch.device | None = None,
) -> Transformer:
    """Load a full-precision checkpoint folder and quantise it on the way in (on the CPU, one
    tensor at a time; each quantised matrix then moves to ``device``)."""
    with read_checkpoint(path, dtype=dtype) as (config, get):
        items = quantize_state(iter_state(get, config), config, spec)
        return build(config, items, kernel, device=device)


# -- the file format --------------------------------------------------------------------------


def is_quantized(path: Path) -> bool:
    """Whether the folder holds one of our quantised checkpoints."""
    return (path / QUANTIZED_FILE).is_file()


def save_quantized(
    src: str | Path, dst: str | Path, spec: QuantSpec, *, dtype: str | None = None
) -> Path:
    """Quantise the checkpoint folder ``src`` into ``dst`` (tensor by tensor) with its tokenizer.

    ``dtype`` is the dtype the unquantised tensors are stored in (default: the checkpoint's).
    """
    dst = Path(dst)
    if dst.is_dir() and any(
        p.name.startswith(("model", "consolidated")) for p in dst.glob("*.safetensors")
    ):
        raise CheckpointError(
            f"{dst} already holds a full-precision checkpoint: write the quantised one to a new "
            "folder"
        )
    tensors: dict[str, Tensor] = {}
    with read_checkpoint(src, dtype=dtype) as (config, get):
        for name, value in quantize_state(iter_state(get, config), config, spec):
            if isinstance(value, QuantData):
                tensors.update({f"{name}.{k}": t.contiguous() for k, t in value.tensors().items()})
            else:
                tensors[name] = value.contiguous()
    quantization: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "scheme": spec.scheme,
        "group_size": spec.group_size if spec.scheme == "int4" else None,
    }
    header = {**quantization, "config": config.to_hf_dict()}
    dst.mkdir(parents=True, exist_ok=True)
    tmp = dst / (QUANTIZED_FILE + ".tmp")
    try:
        save_file(tensors, str(tmp), metadata={"format": "pt", _META_KEY: json.dumps(header)})
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(dst / QUANTIZED_FILE)
    # For other tools (and people) looking at the folder; the loader reads the header only.
    described = {**config.to_hf_dict(), "quantization_config": quantization}
    (dst / "config.json").write_text(json.dumps(described, indent=2) + "\n", encoding="utf-8")
    for name in _TOKENIZER_FILES:
        if (Path(src) / name).is_file():
            shutil.copyfile(Path(src) / name, dst / name)
    return dst


def read_spec(path: Path) -> tuple[QuantSpec, ModelConfig]:
    """The scheme and model config of a quantised checkpoint, from its header alone."""
    file = path / QUANTIZED_FILE
    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
    except (OSError, ValueError, RuntimeError) as err:  # safetensors raises its own SafetensorError
        raise CheckpointError(f"{file} is not a readable safetensors file: {err}") from err
    return _parse_header(meta.get(_META_KEY), file)


def _parse_header(raw: str | None, file: Path) -> tuple[QuantSpec, ModelConfig]:
    try:
        header: dict[str, Any] = json.loads(raw or "")
        name, version = header["format"], int(header["format_version"])
    except (ValueError, TypeError, KeyError) as err:
        raise CheckpointError(
            f"{file} has no bedrock-mistral quantisation header: it was not written by "
            "`bedrock-mistral local quantize`"
        ) from err
    if name != FORMAT_NAME:
        raise CheckpointError(f"{file} is in format {name!r}, not {FORMAT_NAME!r}")
    if version > FORMAT_VERSION:
        raise UnsupportedFormatVersionError(
            f"{file} is quantised checkpoint format version {version}, but this bedrock-mistral "
            f"reads versions up to {FORMAT_VERSION}: upgrade bedrock-mistral "
            "(pip install -U bedrock-mistral), or quantise the source checkpoint again with "
            "this version",
            found=version,
            supported=FORMAT_VERSION,
        )
    scheme, group = header.get("scheme"), header.get("group_size")
    if scheme not in SCHEMES or (scheme == "int4" and group not in GROUP_SIZES):
        raise CheckpointError(f"{file}: unknown quantisation {scheme!r} (group size {group})")
    spec = QuantSpec.parse(scheme, group)
    return spec, ModelConfig.from_hf_dict(header["config"])


def load_quantized(
    path: str | Path,
    *,
    dtype: str | None = None,
    kernel: Kernel = "auto",
    device: torch.device | None = None,
) -> Transformer:
    """Load a folder written by :func:`save_quantized`; every shape is checked against the
    header's config before any tensor is read, and the matrices are moved to ``device`` and
    repacked there for the kernels."""
    with read_quantized(path, dtype=dtype) as (config, items):
        return build(config, items, kernel, device=device)


@contextmanager
def read_quantized(
    path: str | Path, *, dtype: str | None = None
) -> Iterator[tuple[ModelConfig, Iterator[tuple[str, Tensor | QuantData]]]]:
    """The config (dtype set to the one read) and the stored tensors in their portable form,
    one at a time; every shape is checked against the header's config first."""
    path = Path(path)
    spec, config = read_spec(path)
    file = path / QUANTIZED_FILE
    with ExitStack() as stack:
        f = stack.enter_context(safe_open(str(file), framework="pt", device="cpu"))
        expected = _expected_shapes(config, spec)
        found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
        _check(found, expected, file)
        target = normalize_dtype(dtype, default=config.dtype)
        config = replace(config, dtype=target)
        yield config, _read(f, config, spec, TORCH_DTYPES[target])


def _read(
    f: Any, config: ModelConfig, spec: QuantSpec, dtype: torch.dtype
) -> Iterator[tuple[str, Tensor | QuantData]]:
    targets = matrices(config)
    for name in _plain_names(config):
        yield name, _owned(f.get_tensor(name).to(dtype))
    for name in targets:
        s = spec.head if name == "output.weight" else spec
        zero = f.get_tensor(name + ".zero") if s.scheme == "int4" else None
        yield (
            name,
            QuantData(
                s.scheme,
                f.get_tensor(name + ".q"),
                f.get_tensor(name + ".scale"),
                zero,
                s.group_size,
            ),
        )


def _plain_names(config: ModelConfig) -> list[str]:
    names = ["tok_embeddings.weight", "norm.weight"]
    for n in range(config.n_layers):
        names += [f"layers.{n}.attention_norm.weight", f"layers.{n}.ffn_norm.weight"]
        if config.moe is not None:
            names.append(f"layers.{n}.feed_forward.gate.weight")
    return names


def _expected_shapes(config: ModelConfig, spec: QuantSpec) -> dict[str, tuple[int, ...]]:
    h = config.dim
    out: dict[str, tuple[int, ...]] = {}
    for name in _plain_names(config):
        if name == "tok_embeddings.weight":
            out[name] = (config.vocab_size, h)
        elif name.endswith("gate.weight"):
            out[name] = (config.moe.num_experts if config.moe else 0, h)
        else:
            out[name] = (h,)
    for name, (lead, n, k) in matrices(config).items():
        s = spec.head if name == "output.weight" else spec
        for suffix, shape in portable_shapes(s, lead, n, k).items():
            out[f"{name}.{suffix}"] = shape
    return out


def _check(
    found: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]], file: Path
) -> None:
    for name, shape in expected.items():
        if name not in found:
            raise CheckpointError(f"{file}: tensor {name} is missing; the file is incomplete")
        if found[name] != shape:
            raise ShapeMismatchError(
                f"{file}: tensor {name} has shape {list(found[name])}, but the header's config "
                f"implies {list(shape)}"
            )
    extra = sorted(set(found) - set(expected))
    if extra:
        raise CheckpointError(f"{file}: unexpected tensor {extra[0]} ({len(extra)} in all)")
