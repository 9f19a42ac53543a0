"""Checkpoints in safetensors only (never pickle): Hugging Face and Mistral consolidated formats.

Loading builds the model on the meta device, reads each tensor through ``safe_open``
(memory-mapped), checks its shape key by key against the config, fuses q/k/v and gate/up into
our layout, and assigns with ``strict=True``. Saving writes a normal Hugging Face checkpoint
(per-expert ``block_sparse_moe`` names for Mixtral) that transformers loads as is.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from local_backend.config import DType, ModelConfig, normalize_dtype
from local_backend.errors import CheckpointError, CheckpointNotFoundError, ShapeMismatchError
from local_backend.model import Transformer

__all__ = [
    "TORCH_DTYPES",
    "hf_shapes",
    "iter_state",
    "load_transformer",
    "read_checkpoint",
    "save_consolidated",
    "save_pretrained",
    "to_hf_state_dict",
]

logger = logging.getLogger(__name__)

TORCH_DTYPES: dict[DType, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
Format = Literal["hf", "consolidated"]
_PICKLE_SUFFIXES = (".bin", ".pth", ".pt")
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)  # buffers some old HF checkpoints carry


# -- the name/shape contract of a Hugging Face checkpoint (ref §2) ----------------------------


def hf_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a Hugging Face checkpoint of this config holds, with its shape."""
    h, d, i, v = config.dim, config.head_dim, config.hidden_dim, config.vocab_size
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (v, h),
        "model.norm.weight": (h,),
    }
    if not config.tie_embeddings:
        shapes["lm_head.weight"] = (v, h)
    for n in range(config.n_layers):
        p = f"model.layers.{n}."
        shapes[p + "input_layernorm.weight"] = (h,)
        shapes[p + "post_attention_layernorm.weight"] = (h,)
        shapes[p + "self_attn.q_proj.weight"] = (config.n_heads * d, h)
        shapes[p + "self_attn.k_proj.weight"] = (config.n_kv_heads * d, h)
        shapes[p + "self_attn.v_proj.weight"] = (config.n_kv_heads * d, h)
        shapes[p + "self_attn.o_proj.weight"] = (h, config.n_heads * d)
        if config.moe is None:
            shapes[p + "mlp.gate_proj.weight"] = (i, h)
            shapes[p + "mlp.up_proj.weight"] = (i, h)
            shapes[p + "mlp.down_proj.weight"] = (h, i)
            continue
        shapes[p + "block_sparse_moe.gate.weight"] = (config.moe.num_experts, h)
        for e in range(config.moe.num_experts):
            q = f"{p}block_sparse_moe.experts.{e}."
            shapes[q + "w1.weight"] = (i, h)
            shapes[q + "w3.weight"] = (i, h)
            shapes[q + "w2.weight"] = (h, i)
    return shapes


def from_hf_state_dict(get: Callable[[str], Tensor], config: ModelConfig) -> dict[str, Tensor]:
    """Our fused state dict from a getter of Hugging Face tensors (already shape-checked)."""
    out = dict(iter_state(get, config))
    out["output.weight"] = (
        out["tok_embeddings.weight"] if config.tie_embeddings else out["output.weight"]
    )
    return out


def iter_state(get: Callable[[str], Tensor], config: ModelConfig) -> Iterator[tuple[str, Tensor]]:
    """Our fused tensors one at a time (each read when reached), in model order; a tied
    ``output.weight`` is not repeated."""
    yield "tok_embeddings.weight", get("model.embed_tokens.weight")
    for n in range(config.n_layers):
        p, o = f"model.layers.{n}.", f"layers.{n}."
        yield o + "attention_norm.weight", get(p + "input_layernorm.weight")
        yield o + "ffn_norm.weight", get(p + "post_attention_layernorm.weight")
        attn = p + "self_attn."
        yield (
            o + "attention.wqkv.weight",
            torch.cat(
                [
                    get(attn + "q_proj.weight"),
                    get(attn + "k_proj.weight"),
                    get(attn + "v_proj.weight"),
                ]
            ),
        )
        yield o + "attention.wo.weight", get(attn + "o_proj.weight")
        if config.moe is None:
            yield (
                o + "feed_forward.w13.weight",
                torch.cat([get(p + "mlp.gate_proj.weight"), get(p + "mlp.up_proj.weight")]),
            )
            yield o + "feed_forward.w2.weight", get(p + "mlp.down_proj.weight")
            continue
        moe = p + "block_sparse_moe."
        experts = range(config.moe.num_experts)
        yield o + "feed_forward.gate.weight", get(moe + "gate.weight")
        yield (
            o + "feed_forward.w13",
            _stacked(
                get,
                [[f"{moe}experts.{e}.w1.weight", f"{moe}experts.{e}.w3.weight"] for e in experts],
            ),
        )
        yield (
            o + "feed_forward.w2",
            _stacked(get, [[f"{moe}experts.{e}.w2.weight"] for e in experts]),
        )
    yield "norm.weight", get("model.norm.weight")
    if not config.tie_embeddings:
        yield "output.weight", get("lm_head.weight")


def _stacked(get: Callable[[str], Tensor], names: list[list[str]]) -> Tensor:
    """``stack([cat(row) for row in names])`` copied into one preallocated tensor, so loading
    a Mixtral layer never holds its experts twice."""
    first = get(names[0][0])
    rows = first.shape[0] * len(names[0])
    out = torch.empty((len(names), rows, *first.shape[1:]), dtype=first.dtype, device=first.device)
    for e, row in enumerate(names):
        at = 0
        for name in row:
            tensor = first if (e, at) == (0, 0) else get(name)
            out[e, at : at + tensor.shape[0]].copy_(tensor)
            at += tensor.shape[0]
    return out


def to_hf_state_dict(model: Transformer) -> dict[str, Tensor]:
    """Split our fused parameters back into Hugging Face tensor names (views, not copies)."""
    config = model.config
    sd = model.state_dict()
    nh, nkv, d, i = config.n_heads, config.n_kv_heads, config.head_dim, config.hidden_dim
    out = {
        "model.embed_tokens.weight": sd["tok_embeddings.weight"],
        "model.norm.weight": sd["norm.weight"],
    }
    if not config.tie_embeddings:
        out["lm_head.weight"] = sd["output.weight"]
    for n in range(config.n_layers):
        p, o = f"model.layers.{n}.", f"layers.{n}."
        out[p + "input_layernorm.weight"] = sd[o + "attention_norm.weight"]
        out[p + "post_attention_layernorm.weight"] = sd[o + "ffn_norm.weight"]
        q, k, v = sd[o + "attention.wqkv.weight"].split([nh * d, nkv * d, nkv * d])
        out[p + "self_attn.q_proj.weight"], out[p + "self_attn.k_proj.weight"] = q, k
        out[p + "self_attn.v_proj.weight"] = v
        out[p + "self_attn.o_proj.weight"] = sd[o + "attention.wo.weight"]
        if config.moe is None:
            gate, up = sd[o + "feed_forward.w13.weight"].split([i, i])
            out[p + "mlp.gate_proj.weight"], out[p + "mlp.up_proj.weight"] = gate, up
            out[p + "mlp.down_proj.weight"] = sd[o + "feed_forward.w2.weight"]
            continue
        moe = p + "block_sparse_moe."
        out[moe + "gate.weight"] = sd[o + "feed_forward.gate.weight"]
        for e in range(config.moe.num_experts):
            w1, w3 = sd[o + "feed_forward.w13"][e].split([i, i])
            out[f"{moe}experts.{e}.w1.weight"], out[f"{moe}experts.{e}.w3.weight"] = w1, w3
            out[f"{moe}experts.{e}.w2.weight"] = sd[o + "feed_forward.w2"][e]
    return out


# -- Mistral's consolidated format (ref §9) ---------------------------------------------------


def permute_to_hf(w: Tensor, n_heads: int, head_dim: int) -> Tensor:
    """Rows of wq/wk from interleaved-pair RoPE (original) to split-half RoPE (HF)."""
    return w.reshape(n_heads, head_dim // 2, 2, -1).transpose(1, 2).reshape(n_heads * head_dim, -1)


def permute_to_original(w: Tensor, n_heads: int, head_dim: int) -> Tensor:
    """Inverse of :func:`permute_to_hf`."""
    return w.reshape(n_heads, 2, head_dim // 2, -1).transpose(1, 2).reshape(n_heads * head_dim, -1)


def _consolidated_to_hf_name(name: str) -> str | None:
    """HF name of a consolidated tensor; None for the fused old-Mixtral expert layout."""
    fixed = {
        "tok_embeddings.weight": "model.embed_tokens.weight",
        "norm.weight": "model.norm.weight",
        "output.weight": "lm_head.weight",
    }
    if name in fixed:
        return fixed[name]
    parts = name.split(".", 2)
    if len(parts) < 3 or parts[0] != "layers":
        return name
    p, rest = f"model.layers.{parts[1]}.", parts[2]
    table = {
        "attention_norm.weight": "input_layernorm.weight",
        "ffn_norm.weight": "post_attention_layernorm.weight",
        "attention.wq.weight": "self_attn.q_proj.weight",
        "attention.wk.weight": "self_attn.k_proj.weight",
        "attention.wv.weight": "self_attn.v_proj.weight",
        "attention.wo.weight": "self_attn.o_proj.weight",
        "feed_forward.w1.weight": "mlp.gate_proj.weight",
        "feed_forward.w2.weight": "mlp.down_proj.weight",
        "feed_forward.w3.weight": "mlp.up_proj.weight",
        "feed_forward.gate.weight": "block_sparse_moe.gate.weight",
        "block_sparse_moe.gate.weight": "block_sparse_moe.gate.weight",
    }
    if rest in table:
        return p + table[rest]
    if rest.startswith("feed_forward.experts."):
        return p + "block_sparse_moe." + rest.removeprefix("feed_forward.")
    if rest in ("block_sparse_moe.w1", "block_sparse_moe.w2", "block_sparse_moe.w3"):
        return None
    return name


# -- reading tensors --------------------------------------------------------------------------


class _TensorSource:
    """name -> tensor over one or more safetensors files, memory-mapped with ``safe_open``."""

    def __init__(self, files: dict[str, Path], stack: ExitStack) -> None:
        self._handles = {
            f: stack.enter_context(safe_open(str(f), framework="pt", device="cpu"))
            for f in set(files.values())
        }
        self._where = files

    @classmethod
    def open(cls, paths: list[Path], stack: ExitStack) -> _TensorSource:
        where: dict[str, Path] = {}
        for path in paths:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for key in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                    where[key] = path
        return cls(where, stack)

    def names(self) -> list[str]:
        return list(self._where)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._handles[self._where[name]].get_slice(name).get_shape())

    def get(self, name: str) -> Tensor:
        return self._handles[self._where[name]].get_tensor(name)  # type: ignore[no-any-return]


def detect_format(path: Path) -> Format:
    """``hf`` (config.json + model*.safetensors) or ``consolidated`` (params.json + ...).

    Some repositories ship both; the format whose weights are present wins, HF first.
    """
    has_config, has_params = (path / "config.json").is_file(), (path / "params.json").is_file()
    if has_config and any(path.glob("model*.safetensors")):
        return "hf"
    if has_params and any(path.glob("consolidated*.safetensors")):
        return "consolidated"
    if has_config:
        return "hf"  # weight_files() then says what is missing
    if has_params:
        return "consolidated"
    raise CheckpointNotFoundError(
        f"{path} has neither config.json nor params.json: point to a Hugging Face or "
        "Mistral checkpoint folder"
    )


def weight_files(path: Path, fmt: Format) -> list[Path]:
    """The safetensors files of a checkpoint folder; pickle-only checkpoints are refused."""
    if fmt == "hf":
        index = path / "model.safetensors.index.json"
        if index.is_file():
            try:
                weight_map: dict[str, str] = json.loads(index.read_text(encoding="utf-8"))[
                    "weight_map"
                ]
            except (OSError, ValueError, KeyError) as err:
                raise CheckpointError(f"{index} is not a valid safetensors index: {err}") from err
            files = sorted({path / name for name in weight_map.values()})
        else:
            files = (
                [path / "model.safetensors"]
                if (path / "model.safetensors").is_file()
                else sorted(path.glob("model*.safetensors"))
            )
    else:
        files = sorted(path.glob("consolidated*.safetensors"))
    missing = [f for f in files if not f.is_file()]
    if files and not missing:
        return files
    pickles = [p.name for p in path.iterdir() if p.suffix in _PICKLE_SUFFIXES]
    if missing:
        raise CheckpointNotFoundError(
            f"{missing[0]} is missing: the checkpoint's index names it; download it again"
        )
    hint = (
        f"; found only pickle files ({', '.join(sorted(pickles)[:3])}), which are never loaded: "
        "convert them to safetensors"
        if pickles
        else "; expected model.safetensors (or shards with an index) or consolidated.safetensors"
    )
    raise CheckpointNotFoundError(f"no safetensors weights in {path}{hint}")


def _hf_getter(
    source: _TensorSource, config: ModelConfig, fmt: Format
) -> tuple[Callable[[str], Tensor], dict[str, tuple[int, ...]]]:
    """A getter by HF name over either format, and the shapes it serves (for checking)."""
    if fmt == "hf":
        return source.get, {n: source.shape(n) for n in source.names()}
    d = config.head_dim
    names: dict[str, str] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    fused: dict[str, str] = {}
    for name in source.names():
        hf = _consolidated_to_hf_name(name)
        if hf is None:
            fused[name] = name
            continue
        names[hf] = name
        shapes[hf] = source.shape(name)
    i = config.hidden_dim
    n_experts = config.moe.num_experts if config.moe else 0
    for name in fused:  # first Mixtral release: layers.N.block_sparse_moe.w1/w2/w3 as [E*I, H]
        layer, which = name.split(".")[1], name.rsplit(".", 1)[1]
        if source.shape(name) != (n_experts * i, config.dim):
            raise ShapeMismatchError(
                f"{name} has shape {list(source.shape(name))}, but params.json implies "
                f"{[n_experts * i, config.dim]}; the weights and params.json do not match"
            )
        for e in range(n_experts):
            shapes[f"model.layers.{layer}.block_sparse_moe.experts.{e}.{which}.weight"] = (
                (i, config.dim) if which != "w2" else (config.dim, i)
            )

    def get(hf: str) -> Tensor:
        if hf in names:
            w = source.get(names[hf])
            if hf.endswith("q_proj.weight"):
                return permute_to_hf(w, config.n_heads, d)
            if hf.endswith("k_proj.weight"):
                return permute_to_hf(w, config.n_kv_heads, d)
            return w
        layer, e, which = hf.split(".")[2], int(hf.split(".")[5]), hf.split(".")[6]
        block = source.get(f"layers.{layer}.block_sparse_moe.{which}")[e * i : (e + 1) * i]
        return block.t().contiguous() if which == "w2" else block

    return get, shapes


def _check_shapes(found: dict[str, tuple[int, ...]], config: ModelConfig, where: Path) -> None:
    expected = hf_shapes(config)
    for name, shape in expected.items():
        if name not in found:
            raise CheckpointError(
                f"{where}: tensor {name} is missing (expected shape {list(shape)} for this "
                "config); "
                "the weights do not belong to this config"
            )
        if found[name] != shape:
            raise ShapeMismatchError(
                f"{where}: tensor {name} has shape {list(found[name])}, but the config implies "
                f"{list(shape)}; the weights and config.json/params.json do not match"
            )
    extra = [n for n in found if n not in expected and not n.endswith(_IGNORED_SUFFIXES)]
    if config.tie_embeddings:
        extra = [n for n in extra if n != "lm_head.weight"]
    if extra:
        raise CheckpointError(
            f"{where}: unexpected tensor {extra[0]} ({len(extra)} in all): the checkpoint has "
            "more layers or experts than its config says"
        )


@contextmanager
def read_checkpoint(
    path: str | Path, *, dtype: str | None = None, device: str | torch.device = "cpu"
) -> Iterator[tuple[ModelConfig, Callable[[str], Tensor]]]:
    """The config (its dtype set to the one loaded) and a getter of Hugging Face tensors,
    cast to that dtype, shape-checked against the config before anything is read."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointNotFoundError(f"checkpoint folder {path} does not exist: check the path")
    fmt = detect_format(path)
    config = ModelConfig.from_file(path / ("config.json" if fmt == "hf" else "params.json"))
    with ExitStack() as stack:
        source = _TensorSource.open(weight_files(path, fmt), stack)
        if fmt == "consolidated" and dtype is None:
            first = source.get(source.names()[0])
            config = replace(config, dtype=_dtype_name(first.dtype))
        target = normalize_dtype(dtype, default=config.dtype)
        config = replace(config, dtype=target)
        get, shapes = _hf_getter(source, config, fmt)
        _check_shapes(shapes, config, path)
        torch_dtype = TORCH_DTYPES[target]

        def cast(name: str) -> Tensor:
            return get(name).to(device=device, dtype=torch_dtype)

        yield config, cast


def load_transformer(
    path: str | Path, *, dtype: str | None = None, device: str | torch.device = "cpu"
) -> Transformer:
    """Build a :class:`Transformer` from a checkpoint folder; dtype None = the checkpoint's own."""
    with read_checkpoint(path, dtype=dtype, device=device) as (config, get):
        state = from_hf_state_dict(get, config)
        fmt = detect_format(Path(path))
        target = config.dtype
    with torch.device("meta"):
        model = Transformer(config)
    model.load_state_dict(state, strict=True, assign=True)
    if config.tie_embeddings:
        model.output.weight = model.tok_embeddings.weight
    logger.debug("loaded %s checkpoint %s as %s", fmt, path, target)
    return model.eval()


def _dtype_name(dtype: torch.dtype) -> DType:
    for name, value in TORCH_DTYPES.items():
        if value == dtype:
            return name
    raise CheckpointError(
        f"tensors of dtype {dtype} are not supported: use float32, bfloat16 or float16"
    )


# -- writing ----------------------------------------------------------------------------------


def save_pretrained(
    model: Transformer,
    config: ModelConfig | None,
    path: str | Path,
    *,
    dtype: str | None = None,
    max_shard_bytes: int | None = None,
) -> Path:
    """Write a Hugging Face checkpoint (config.json + model.safetensors, or shards + index)."""
    config = config or model.config
    target = normalize_dtype(dtype, default=_dtype_name(model.tok_embeddings.weight.dtype))
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    # copy=True: the split views share storage, which safetensors refuses to write.
    tensors = {
        k: v.detach().to(TORCH_DTYPES[target], copy=True).contiguous()
        for k, v in to_hf_state_dict(model).items()
    }
    _write_json(path / "config.json", replace(config, dtype=target).to_hf_dict())
    shards = list(_shards(tensors, max_shard_bytes))
    if len(shards) == 1:
        save_file(shards[0], str(path / "model.safetensors"), metadata={"format": "pt"})
        return path
    weight_map: dict[str, str] = {}
    for k, shard in enumerate(shards, start=1):
        name = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(path / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    _write_json(
        path / "model.safetensors.index.json",
        {"metadata": {"total_size": total}, "weight_map": weight_map},
    )
    return path


def save_consolidated(model: Transformer, path: str | Path, *, dtype: str | None = None) -> Path:
    """Write Mistral's format: params.json + consolidated.safetensors (q/k rows permuted back)."""
    config = model.config
    target = normalize_dtype(dtype, default=_dtype_name(model.tok_embeddings.weight.dtype))
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    hf_to_original = {}
    for name in _consolidated_names(config):
        hf = _consolidated_to_hf_name(name)
        assert hf is not None
        hf_to_original[hf] = name
    tensors: dict[str, Tensor] = {}
    for hf, w in to_hf_state_dict(model).items():
        if hf.endswith("q_proj.weight"):
            w = permute_to_original(w, config.n_heads, config.head_dim)
        elif hf.endswith("k_proj.weight"):
            w = permute_to_original(w, config.n_kv_heads, config.head_dim)
        tensors[hf_to_original[hf]] = w.detach().to(TORCH_DTYPES[target], copy=True).contiguous()
    save_file(tensors, str(path / "consolidated.safetensors"))
    _write_json(path / "params.json", config.to_params_dict())
    return path


def _consolidated_names(config: ModelConfig) -> Iterator[str]:
    yield from ("tok_embeddings.weight", "norm.weight")
    if not config.tie_embeddings:
        yield "output.weight"
    for n in range(config.n_layers):
        p = f"layers.{n}."
        yield from (p + "attention_norm.weight", p + "ffn_norm.weight")
        yield from (p + f"attention.{w}.weight" for w in ("wq", "wk", "wv", "wo"))
        if config.moe is None:
            yield from (p + f"feed_forward.{w}.weight" for w in ("w1", "w2", "w3"))
            continue
        yield p + "feed_forward.gate.weight"
        for e in range(config.moe.num_experts):
            yield from (p + f"feed_forward.experts.{e}.{w}.weight" for w in ("w1", "w2", "w3"))


def _shards(tensors: dict[str, Tensor], max_bytes: int | None) -> Iterator[dict[str, Tensor]]:
    shard: dict[str, Tensor] = {}
    size = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shard and max_bytes is not None and size + nbytes > max_bytes:
            yield shard
            shard, size = {}, 0
        shard[name] = t
        size += nbytes
    yield shard


def _write_json(path: Path, body: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
