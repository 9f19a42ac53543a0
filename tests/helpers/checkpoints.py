"""Tiny random Mistral/Mixtral checkpoints written by transformers, for the local_backend tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from transformers import MistralConfig, MistralForCausalLM, MixtralConfig, MixtralForCausalLM


@dataclass(frozen=True)
class Case:
    """One reference architecture: which class, which config fields, how to save it."""

    name: str
    moe: bool
    fields: dict[str, Any]
    shard: str | None = None  # max_shard_size for a sharded save


CASES = [
    # Mixtral with grouped-query heads (8 query / 2 KV) and a window shorter than the tests.
    Case(
        "mixtral-gqa-window",
        True,
        {
            "num_attention_heads": 8,
            "num_key_value_heads": 2,
            "sliding_window": 5,
            "rope_theta": 5000.0,
            "num_local_experts": 4,
            "num_experts_per_tok": 2,
        },
    ),
    # Dense Mistral, no window, explicit head_dim that is not hidden/heads, one KV head; sharded.
    Case(
        "mistral-nowindow-headdim",
        False,
        {
            "num_attention_heads": 4,
            "num_key_value_heads": 1,
            "head_dim": 24,
            "sliding_window": None,
            "rope_theta": 1e6,
        },
        shard="40KB",
    ),
    # Tied embeddings, plain multi-head attention, window 6, top-1 of 3 experts.
    Case(
        "mixtral-tied-mha",
        True,
        {
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "sliding_window": 6,
            "tie_word_embeddings": True,
            "num_local_experts": 3,
            "num_experts_per_tok": 1,
            "rms_norm_eps": 1e-6,
        },
    ),
]

VOCAB = 96


def build_reference(
    case: Case, path: Path, *, vocab_size: int = VOCAB, seed: int = 0
) -> torch.nn.Module:
    """Save a random transformers model for ``case`` into ``path``; return it (eager, eval)."""
    torch.manual_seed(seed)
    common = {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 80,
        "num_hidden_layers": 2,
        "max_position_embeddings": 256,
    }
    if case.moe:
        model: Any = MixtralForCausalLM(MixtralConfig(**common, **case.fields))
    else:
        model = MistralForCausalLM(MistralConfig(**common, **case.fields))
    kwargs = {"max_shard_size": case.shard} if case.shard else {}
    model.save_pretrained(path, **kwargs)
    cls = MixtralForCausalLM if case.moe else MistralForCausalLM
    reference = cls.from_pretrained(path, attn_implementation="eager").eval()
    reference.generation_config.eos_token_id = None  # generate stops at eos otherwise (ref §11)
    return reference


def to_original(w: torch.Tensor, n: int, head_dim: int) -> torch.Tensor:
    """HF rows -> Mistral's interleaved-pair rows (ref §9), written independently of the loader."""
    return w.view(n, 2, head_dim // 2, w.shape[1]).transpose(1, 2).reshape(n * head_dim, w.shape[1])


def write_consolidated(reference: Any, path: Path, *, fused_experts: bool = False) -> None:
    """The reference's weights in Mistral's format: params.json + consolidated.safetensors.

    ``fused_experts``: the first Mixtral release's layout, per layer
    ``block_sparse_moe.w1``/``w3`` [E*I, H] and ``w2`` [E*I, H] (each expert's w2 transposed).
    """
    cfg = reference.config
    head_dim = cfg.head_dim or cfg.hidden_size // cfg.num_attention_heads
    sd = {k: v.detach().clone().contiguous() for k, v in _hf_tensors(reference).items()}
    out = {
        "tok_embeddings.weight": sd["model.embed_tokens.weight"],
        "norm.weight": sd["model.norm.weight"],
    }
    if "lm_head.weight" in sd and not cfg.tie_word_embeddings:
        out["output.weight"] = sd["lm_head.weight"]
    for n in range(cfg.num_hidden_layers):
        p, o = f"model.layers.{n}.", f"layers.{n}."
        out[o + "attention_norm.weight"] = sd[p + "input_layernorm.weight"]
        out[o + "ffn_norm.weight"] = sd[p + "post_attention_layernorm.weight"]
        out[o + "attention.wq.weight"] = to_original(
            sd[p + "self_attn.q_proj.weight"], cfg.num_attention_heads, head_dim
        )
        out[o + "attention.wk.weight"] = to_original(
            sd[p + "self_attn.k_proj.weight"], cfg.num_key_value_heads, head_dim
        )
        out[o + "attention.wv.weight"] = sd[p + "self_attn.v_proj.weight"]
        out[o + "attention.wo.weight"] = sd[p + "self_attn.o_proj.weight"]
        if hasattr(cfg, "num_local_experts") and fused_experts:
            moe = p + "block_sparse_moe."
            experts = range(cfg.num_local_experts)
            out[o + "block_sparse_moe.gate.weight"] = sd[moe + "gate.weight"]
            for w in ("w1", "w3"):
                out[f"{o}block_sparse_moe.{w}"] = torch.cat(
                    [sd[f"{moe}experts.{e}.{w}.weight"] for e in experts]
                )
            out[f"{o}block_sparse_moe.w2"] = torch.cat(
                [sd[f"{moe}experts.{e}.w2.weight"].t() for e in experts]
            )
        elif hasattr(cfg, "num_local_experts"):
            out[o + "feed_forward.gate.weight"] = sd[p + "block_sparse_moe.gate.weight"]
            for e in range(cfg.num_local_experts):
                for w in ("w1", "w2", "w3"):
                    out[f"{o}feed_forward.experts.{e}.{w}.weight"] = sd[
                        f"{p}block_sparse_moe.experts.{e}.{w}.weight"
                    ]
        else:
            for w, hf in (("w1", "gate_proj"), ("w2", "down_proj"), ("w3", "up_proj")):
                out[f"{o}feed_forward.{w}.weight"] = sd[f"{p}mlp.{hf}.weight"]
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in out.items()}, str(path / "consolidated.safetensors"))
    params: dict[str, Any] = {
        "dim": cfg.hidden_size,
        "n_layers": cfg.num_hidden_layers,
        "head_dim": head_dim,
        "hidden_dim": cfg.intermediate_size,
        "n_heads": cfg.num_attention_heads,
        "n_kv_heads": cfg.num_key_value_heads,
        "norm_eps": cfg.rms_norm_eps,
        "vocab_size": cfg.vocab_size,
        "rope_theta": cfg.rope_parameters["rope_theta"],
    }
    if cfg.sliding_window is not None:
        params["sliding_window"] = cfg.sliding_window
    if hasattr(cfg, "num_local_experts"):
        params["moe"] = {
            "num_experts": cfg.num_local_experts,
            "num_experts_per_tok": cfg.num_experts_per_tok,
        }
    if cfg.tie_word_embeddings:
        params["tied_embeddings"] = True
    (path / "params.json").write_text(json.dumps(params))


def _hf_tensors(reference: Any) -> dict[str, torch.Tensor]:
    """The per-expert tensor names transformers writes, read back from its own save."""
    import tempfile

    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory() as tmp:
        reference.save_pretrained(tmp)
        files = sorted(Path(tmp).glob("*.safetensors"))
        out: dict[str, torch.Tensor] = {}
        for f in files:
            out.update(load_file(str(f)))
        return out


def random_checkpoints(factory: Any, configs: dict[str, Any], seed: int = 0) -> dict[str, Path]:
    """One folder per config holding a randomly initialised model (``factory`` is pytest's
    ``tmp_path_factory``, so module-scoped fixtures can share them)."""
    from local_backend.checkpoint import save_pretrained
    from local_backend.model import Transformer

    paths = {}
    for name, config in configs.items():
        torch.manual_seed(seed)
        paths[name] = factory.mktemp(name)
        save_pretrained(Transformer(config), None, paths[name])
    return paths
