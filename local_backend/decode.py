"""One decode step for one sequence, on 1-D vectors: the same math as ``Transformer.forward``
with a cache, in about half the tensor calls.

At batch 1 and one token per step the cost of a small model is the number of tensor calls,
not arithmetic, so this path drops the batch and sequence axes: every projection is a single
matrix-vector call (``torch.mv`` or ``F.linear``, whichever :mod:`local_backend.matvec` found
faster for the dtype), RoPE for q and k of all heads is one ``[nh+nkv, d] @ [d, d]`` product with a
rotation matrix built once per step, and the new key/value go straight into their cache slot.
``tests/local/test_parity.py`` checks it against transformers through ``generate``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from local_backend.cache import KVCache, LayerKV
from local_backend.model import (
    Attention,
    FeedForward,
    MoeFeedForward,
    RMSNorm,
    Transformer,
    addmv,
    mv,
)

__all__ = ["decode_step"]


def rms_norm(x: Tensor, norm: RMSNorm) -> Tensor:
    """RMSNorm of a vector [H], as :class:`RMSNorm` (float32 statistics)."""
    if x.dtype == torch.float32:  # one fused call; same products as RMSNorm in float32
        return F.rms_norm(x, norm.weight.shape, norm.weight, norm.eps)
    x32 = x.float()  # as RMSNorm.forward, without the module call
    return norm.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + norm.eps)).to(
        x.dtype
    )


def attention_step(
    attn: Attention, x: Tensor, h: Tensor, rot: Tensor, kv: LayerKV, slot: int, n: int
) -> Tensor:
    """Residual x [H] + attention of the normed h [H]; writes this position's key/value."""
    nh, nkv, d = attn.n_heads, attn.n_kv_heads, attn.head_dim
    qk, v = torch.split(mv(attn.wqkv.weight, h).view(nh + 2 * nkv, d), [nh + nkv, nkv])
    q, k = torch.split(torch.mm(qk, rot), [nh, nkv])  # RoPE at this position for q and k
    kv.k[0, :, slot].copy_(k)
    kv.v[0, :, slot].copy_(v)
    q = q.view(1, nkv, nh // nkv, d)  # query head j = kv head j // g, row j % g
    out = F.scaled_dot_product_attention(q, kv.k[:, :, :n], kv.v[:, :, :n])  # [1, nkv, g, d]
    return addmv(x, attn.wo.weight, out.view(nh * d))


def ffn_step(ff: FeedForward | MoeFeedForward, x: Tensor, h: Tensor) -> Tensor:
    """Residual x [H] + feed-forward of the normed h [H] (dense, or the routed experts only)."""
    if isinstance(ff, MoeFeedForward):
        return ff.decode_one(h, mv(ff.gate.weight, h).tolist(), x)
    gate, up = mv(ff.w13.weight, h).chunk(2)
    return addmv(x, ff.w2.weight, F.silu(gate) * up)


def decode_step(model: Transformer, token: int, cache: KVCache) -> Tensor:
    """Feed one token of a batch-1 cache; return the next-token logits [V]."""
    if cache.batch_size != 1:
        raise ValueError(f"decode_step runs one sequence; this cache holds {cache.batch_size}")
    plan = cache.plan(1)
    (_, _, slot), n = plan.writes[0], plan.n_after
    x = model.tok_embeddings.weight[token]  # [H]
    rot = model.rotary.matrix(plan.start, x.dtype, x.device)
    for layer, kv in zip(model.blocks, cache.layers, strict=True):
        x = attention_step(layer.attention, x, rms_norm(x, layer.attention_norm), rot, kv, slot, n)
        x = ffn_step(layer.feed_forward, x, rms_norm(x, layer.ffn_norm))
    cache.advance(1)
    return mv(model.output.weight, rms_norm(x, model.norm))
