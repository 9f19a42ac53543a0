"""The small random Mixtral shape that local-backend, server and CLI tests build checkpoints of."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from local_backend.config import ModelConfig, MoeConfig

SMALL_MOE = ModelConfig(
    dim=32,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    hidden_dim=48,
    vocab_size=64,
    sliding_window=8,
    moe=MoeConfig(num_experts=4, num_experts_per_tok=2),
)


def small_moe(**changes: Any) -> ModelConfig:
    """:data:`SMALL_MOE` with ``changes`` (vocabulary, window, context length, ...)."""
    return replace(SMALL_MOE, **changes)


# The random configs the quantisation tests share: MoE with K=48 (not a whole int4 group:
# padded), dense with head_dim 24 and one KV head, and a tied MoE.
QUANT_CONFIGS = {
    "moe": small_moe(),
    "dense": ModelConfig(
        dim=64, n_layers=2, n_heads=4, n_kv_heads=1, head_dim=24, hidden_dim=96, vocab_size=80
    ),
    "tied-moe": small_moe(dim=64, hidden_dim=128, tie_embeddings=True, sliding_window=None),
}
