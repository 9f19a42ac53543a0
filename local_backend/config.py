"""Model configuration, named after Mistral's own ``params.json`` so no translation table is needed.

Readers for both on-disk formats live here: a Hugging Face ``config.json``
(``MistralForCausalLM`` / ``MixtralForCausalLM``, transformers 4.x or 5.x spelling) and Mistral's
``params.json``. ``to_hf_dict`` writes a ``config.json`` that transformers loads as is.

>>> cfg = ModelConfig(dim=256, n_layers=4, n_heads=8, n_kv_heads=2, hidden_dim=512,
...                   vocab_size=2048, moe=MoeConfig(num_experts=4, num_experts_per_tok=2))
>>> cfg.head_dim, cfg.architecture
(32, 'MixtralForCausalLM')
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from local_backend.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    UnsupportedArchitectureError,
)

__all__ = ["DTYPES", "PRESETS", "DType", "ModelConfig", "MoeConfig"]

DType = Literal["float32", "bfloat16", "float16"]
DTYPES: tuple[DType, ...] = ("float32", "bfloat16", "float16")
_DTYPE_ALIASES: dict[str, DType] = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}

Architecture = Literal["MistralForCausalLM", "MixtralForCausalLM"]
_MODEL_TYPES: dict[str, Architecture] = {
    "mistral": "MistralForCausalLM",
    "mixtral": "MixtralForCausalLM",
}

# transformers' class defaults for fields a config.json may leave out (ref §6).
_HF_DEFAULTS: dict[Architecture, dict[str, Any]] = {
    "MistralForCausalLM": {"rope_theta": 10000.0, "rms_norm_eps": 1e-6, "sliding_window": 4096},
    "MixtralForCausalLM": {"rope_theta": 1e6, "rms_norm_eps": 1e-5, "sliding_window": None},
}
_HF_MAX_POSITIONS = 4096 * 32


def normalize_dtype(name: str | None, *, default: DType = "float32") -> DType:
    """``"bf16"``, ``"torch.bfloat16"``, ``"bfloat16"`` -> ``"bfloat16"``; None -> default."""
    if name is None:
        return default
    key = str(name).removeprefix("torch.").lower()
    if key not in _DTYPE_ALIASES:
        raise CheckpointError(f"dtype {name!r} is not supported: use one of {', '.join(DTYPES)}")
    return _DTYPE_ALIASES[key]


@dataclass(frozen=True)
class MoeConfig:
    """Present on a config = the feed-forward is a sparse mixture of experts (Mixtral)."""

    num_experts: int
    num_experts_per_tok: int

    def __post_init__(self) -> None:
        if not 1 <= self.num_experts_per_tok <= self.num_experts:
            raise CheckpointError(
                f"num_experts_per_tok={self.num_experts_per_tok} must be between 1 and "
                f"num_experts={self.num_experts}"
            )


@dataclass(kw_only=True)
class ModelConfig:
    """Shape and numerics of one Mistral/Mixtral model.

    ``head_dim`` and ``n_kv_heads`` left at 0 (or None) are derived: ``dim // n_heads`` and
    ``n_heads``. ``sliding_window=None`` is full causal attention; ``moe=None`` a dense SwiGLU.
    """

    dim: int
    n_layers: int
    n_heads: int
    hidden_dim: int
    vocab_size: int
    head_dim: int = 0
    n_kv_heads: int = 0
    norm_eps: float = 1e-5
    rope_theta: float = 1e6
    sliding_window: int | None = None
    tie_embeddings: bool = False
    moe: MoeConfig | None = None
    max_seq_len: int = _HF_MAX_POSITIONS
    dtype: DType = "float32"
    bos_token_id: int = 1
    eos_token_id: int = 2

    def __post_init__(self) -> None:
        if not self.head_dim:
            self.head_dim = self.dim // self.n_heads
        if not self.n_kv_heads:
            self.n_kv_heads = self.n_heads
        if isinstance(self.moe, dict):
            self.moe = MoeConfig(**self.moe)
        self.dtype = normalize_dtype(self.dtype)
        if self.n_heads % self.n_kv_heads:
            raise CheckpointError(
                f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads}"
            )
        if self.head_dim % 2:
            raise CheckpointError(f"head_dim={self.head_dim} must be even for rotary embeddings")
        if self.sliding_window is not None and self.sliding_window < 1:
            raise CheckpointError(f"sliding_window={self.sliding_window} must be >= 1 or null")

    @property
    def architecture(self) -> Architecture:
        return "MixtralForCausalLM" if self.moe is not None else "MistralForCausalLM"

    @property
    def n_rep(self) -> int:
        """Query heads per KV head (g in the reference)."""
        return self.n_heads // self.n_kv_heads

    # -- Hugging Face config.json ------------------------------------------------------------

    @classmethod
    def from_hf_dict(cls, raw: dict[str, Any]) -> ModelConfig:
        """Read a transformers ``config.json`` (4.x or 5.x field spelling)."""
        arch = _hf_architecture(raw)
        defaults = _HF_DEFAULTS[arch]
        try:
            n_heads = int(raw["num_attention_heads"])
            dim = int(raw["hidden_size"])
            moe = None
            if arch == "MixtralForCausalLM":
                moe = MoeConfig(
                    num_experts=int(raw.get("num_local_experts", 8)),
                    num_experts_per_tok=int(raw.get("num_experts_per_tok", 2)),
                )
            window = raw.get("sliding_window", defaults["sliding_window"])
            return cls(
                dim=dim,
                n_layers=int(raw["num_hidden_layers"]),
                n_heads=n_heads,
                n_kv_heads=int(raw.get("num_key_value_heads") or n_heads),
                head_dim=int(raw.get("head_dim") or dim // n_heads),
                hidden_dim=int(raw["intermediate_size"]),
                vocab_size=int(raw["vocab_size"]),
                norm_eps=float(raw.get("rms_norm_eps", defaults["rms_norm_eps"])),
                rope_theta=_hf_rope_theta(raw, defaults["rope_theta"]),
                sliding_window=None if window is None else int(window),
                tie_embeddings=bool(raw.get("tie_word_embeddings", False)),
                moe=moe,
                max_seq_len=int(raw.get("max_position_embeddings") or _HF_MAX_POSITIONS),
                dtype=normalize_dtype(raw.get("dtype") or raw.get("torch_dtype")),
                bos_token_id=_first_id(raw.get("bos_token_id"), 1),
                eos_token_id=_first_id(raw.get("eos_token_id"), 2),
            )
        except KeyError as err:
            raise CheckpointError(
                f"config.json lacks the field {err.args[0]!r}: is it a complete {arch} config?"
            ) from err

    def to_hf_dict(self) -> dict[str, Any]:
        """A ``config.json`` body that transformers' Mistral/Mixtral classes load as is."""
        out: dict[str, Any] = {
            "architectures": [self.architecture],
            "model_type": "mixtral" if self.moe is not None else "mistral",
            "vocab_size": self.vocab_size,
            "hidden_size": self.dim,
            "intermediate_size": self.hidden_dim,
            "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": self.max_seq_len,
            "initializer_range": 0.02,
            "rms_norm_eps": self.norm_eps,
            "rope_theta": self.rope_theta,
            "rope_parameters": {"rope_theta": self.rope_theta, "rope_type": "default"},
            "sliding_window": self.sliding_window,
            "tie_word_embeddings": self.tie_embeddings,
            "attention_dropout": 0.0,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "use_cache": True,
            "dtype": self.dtype,
            "torch_dtype": self.dtype,
        }
        if self.moe is not None:
            out["num_local_experts"] = self.moe.num_experts
            out["num_experts_per_tok"] = self.moe.num_experts_per_tok
            out["router_aux_loss_coef"] = 0.02
            out["router_jitter_noise"] = 0.0
            out["output_router_logits"] = False
        return out

    # -- Mistral params.json -----------------------------------------------------------------

    @classmethod
    def from_params_json(cls, raw: dict[str, Any]) -> ModelConfig:
        """Read Mistral's ``params.json`` (consolidated checkpoints)."""
        try:
            moe_raw = raw.get("moe")
            moe = (
                MoeConfig(int(moe_raw["num_experts"]), int(moe_raw["num_experts_per_tok"]))
                if moe_raw
                else None
            )
            window = raw.get("sliding_window")
            return cls(
                dim=int(raw["dim"]),
                n_layers=int(raw["n_layers"]),
                n_heads=int(raw["n_heads"]),
                n_kv_heads=int(raw.get("n_kv_heads") or raw["n_heads"]),
                head_dim=int(raw.get("head_dim") or 0),
                hidden_dim=int(raw["hidden_dim"]),
                vocab_size=int(raw["vocab_size"]),
                norm_eps=float(raw.get("norm_eps", 1e-5)),
                rope_theta=_params_rope_theta(raw),
                sliding_window=None if window is None else int(window),
                tie_embeddings=bool(raw.get("tied_embeddings", raw.get("tie_embeddings", False))),
                moe=moe,
                max_seq_len=int(raw.get("max_seq_len") or _HF_MAX_POSITIONS),
                dtype=normalize_dtype(raw.get("dtype")),
            )
        except KeyError as err:
            raise CheckpointError(f"params.json lacks the field {err.args[0]!r}") from err

    def to_params_dict(self) -> dict[str, Any]:
        """A Mistral ``params.json`` body."""
        out: dict[str, Any] = {
            "dim": self.dim,
            "n_layers": self.n_layers,
            "head_dim": self.head_dim,
            "hidden_dim": self.hidden_dim,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "norm_eps": self.norm_eps,
            "vocab_size": self.vocab_size,
            "rope_theta": self.rope_theta,
        }
        if self.sliding_window is not None:
            out["sliding_window"] = self.sliding_window
        if self.tie_embeddings:
            out["tied_embeddings"] = True
        if self.moe is not None:
            out["moe"] = asdict(self.moe)
        return out

    @classmethod
    def from_file(cls, path: str | Path) -> ModelConfig:
        """Read ``config.json`` or ``params.json``, or the one found in a checkpoint folder."""
        path = Path(path)
        if path.is_dir():
            for name in ("config.json", "params.json"):
                if (path / name).is_file():
                    return cls.from_file(path / name)
            raise CheckpointNotFoundError(
                f"{path} has neither config.json nor params.json: point to a Hugging Face or "
                "Mistral checkpoint folder"
            )
        if not path.is_file():
            raise CheckpointNotFoundError(f"{path} does not exist: check the checkpoint path")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{path} is not readable JSON: {err}") from err
        if not isinstance(raw, dict):
            raise CheckpointError(f"{path} must hold a JSON object")
        if path.name == "params.json" or ("dim" in raw and "hidden_size" not in raw):
            return cls.from_params_json(raw)
        return cls.from_hf_dict(raw)


PRESETS: dict[str, ModelConfig] = {
    # The model shipped in local_backend/weights (a test holds the two equal).
    "bundled": ModelConfig(
        dim=256,
        n_layers=4,
        n_heads=8,
        n_kv_heads=2,
        hidden_dim=384,
        vocab_size=636,
        rope_theta=10000.0,
        sliding_window=64,
        tie_embeddings=True,
        moe=MoeConfig(num_experts=4, num_experts_per_tok=2),
        max_seq_len=4096,
        dtype="float16",
    ),
    # A random Mixtral big enough for decode to be bound by memory bandwidth (benchmarks).
    "medium": ModelConfig(
        dim=1024,
        n_layers=8,
        n_heads=16,
        n_kv_heads=4,
        hidden_dim=3584,
        vocab_size=32000,
        moe=MoeConfig(num_experts=8, num_experts_per_tok=2),
    ),
    "mistral-7b-v0.1": ModelConfig(
        dim=4096,
        n_layers=32,
        n_heads=32,
        n_kv_heads=8,
        hidden_dim=14336,
        vocab_size=32000,
        rope_theta=10000.0,
        sliding_window=4096,
        dtype="bfloat16",
        max_seq_len=32768,
    ),
    "mixtral-8x7b": ModelConfig(
        dim=4096,
        n_layers=32,
        n_heads=32,
        n_kv_heads=8,
        hidden_dim=14336,
        vocab_size=32000,
        moe=MoeConfig(num_experts=8, num_experts_per_tok=2),
        dtype="bfloat16",
        max_seq_len=32768,
    ),
}


def _hf_architecture(raw: dict[str, Any]) -> Architecture:
    archs = raw.get("architectures") or []
    for arch in archs:
        if arch in _HF_DEFAULTS:
            return arch  # type: ignore[no-any-return]
    model_type = raw.get("model_type")
    if not archs and model_type in _MODEL_TYPES:
        return _MODEL_TYPES[model_type]
    found = ", ".join(archs) if archs else f"model_type={model_type!r}"
    raise UnsupportedArchitectureError(
        f"unsupported architecture {found}: local_backend runs MistralForCausalLM and "
        "MixtralForCausalLM checkpoints only"
    )


def _hf_rope_theta(raw: dict[str, Any], default: float) -> float:
    scaling = raw.get("rope_scaling")
    if isinstance(scaling, dict) and scaling.get("rope_type", scaling.get("type")) not in (
        None,
        "default",
    ):
        raise UnsupportedArchitectureError(
            f"rope_scaling {scaling!r} is not supported: only the default RoPE is implemented"
        )
    if raw.get("rope_theta") is not None:
        return float(raw["rope_theta"])
    params = raw.get("rope_parameters") or {}
    if isinstance(params, dict):
        rope_type = params.get("rope_type", "default")
        if rope_type not in ("default", None):
            raise UnsupportedArchitectureError(
                f"rope_type {rope_type!r} is not supported: only the default RoPE is implemented"
            )
        if params.get("rope_theta") is not None:
            return float(params["rope_theta"])
    return default


def _params_rope_theta(raw: dict[str, Any]) -> float:
    """params.json's theta; when absent, 10000 for a windowed model, else 1e6.

    mistral-inference falls back to 1e6, but Mistral 7B v0.1 (the released model with a
    sliding window, whose params.json has no rope_theta) was trained with 10000 (ref §9).
    """
    if raw.get("rope_theta") is not None:
        return float(raw["rope_theta"])
    return 10000.0 if raw.get("sliding_window") is not None else 1e6


def _first_id(value: Any, default: int) -> int:
    if isinstance(value, list):
        value = value[0] if value else None
    return default if value is None else int(value)
