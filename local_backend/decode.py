"""One decode step for one sequence, on 1-D vectors: the same math as ``Transformer.forward``
with a cache, in about half the tensor calls.

At batch 1 and one token per step the cost of a small model is the number of tensor calls,
not arithmetic, so this path drops the batch and sequence axes: every projection is a single
matrix-vector call (``torch.mv`` or ``F.linear``, whichever :mod:`local_backend.matvec` found
faster for the dtype), RoPE for q and k of all heads is one ``[nh+nkv, d] @ [d, d]`` product with a
rotation matrix built once per step, and the new key/value go straight into their cache slot.
``tests/local/test_parity.py`` checks it against transformers through ``generate``.

**Threads.** The step runs on one thread except for the calls that read enough memory to gain
from more (:func:`local_backend.matvec.parallel_min_bytes`, 512 KiB): a product with a large
weight, or attention over a long cache, gets all of torch's threads for that call. Every
OpenMP region costs a barrier; on two cores shared with other work a barrier waits for a
descheduled peer, and a 20-row RoPE product or a 40-key attention measured 0.1-0.8 ms with two
threads against 0.02-0.06 ms with one. ``torch.set_num_threads`` only sets the calling
thread's OpenMP count (0.2 us), and the step restores the caller's count when it returns.
Off the CPU (CUDA) the step leaves torch's thread count alone: it launches kernels, and its
few CPU calls (``tolist`` of the router logits) are tiny.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from local_backend.cache import KVCache, LayerKV
from local_backend.matvec import parallel_min_bytes
from local_backend.model import (
    Attention,
    FeedForward,
    MoeFeedForward,
    RMSNorm,
    Transformer,
    Weight,
    addmv,
    mv,
    route_one,
)

__all__ = ["decode_step"]


def _work(weight: Weight) -> int:
    """The bytes a float32 copy of ``weight`` would read: a bf16/f16 product on the CPU widens
    as it goes and is compute bound, so it gains from threads at the shapes float32 does."""
    if isinstance(weight, Tensor):
        return weight.numel() * 4
    return weight.nbytes


class _Threads:
    """The thread count a large call gets and the size that makes a call large."""

    __slots__ = ("min_bytes", "n")

    def __init__(self, n: int, min_bytes: int) -> None:
        self.n, self.min_bytes = n, min_bytes

    def _call(self, work: int, fn: Callable[..., Tensor], *args: Any, **kwargs: Any) -> Tensor:
        """``fn(*args, **kwargs)``, on all threads when it reads at least ``min_bytes``."""
        if self.n == 1 or work < self.min_bytes:
            return fn(*args, **kwargs)
        torch.set_num_threads(self.n)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(1)

    def mv(self, weight: Weight, x: Tensor) -> Tensor:
        return self._call(_work(weight), mv, weight, x)

    def addmv(self, residual: Tensor, weight: Weight, x: Tensor, alpha: float = 1.0) -> Tensor:
        return self._call(_work(weight), addmv, residual, weight, x, alpha)

    def expert(self, ff: MoeFeedForward, e: int, h: Tensor, x: Tensor, alpha: float) -> Tensor:
        """``x + alpha * expert_e(h)``, threaded as a whole when its gate/up weight is large."""
        return self._call(_work(ff.w13[e]), ff.expert, e, h, residual=x, alpha=alpha)

    def attention(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return self._call(2 * _work(k), F.scaled_dot_product_attention, q, k, v)


def rms_norm(x: Tensor, norm: RMSNorm) -> Tensor:
    """RMSNorm of a vector [H], as :class:`RMSNorm` (float32 statistics)."""
    if x.dtype == torch.float32:  # one fused call; same products as RMSNorm in float32
        return F.rms_norm(x, norm.weight.shape, norm.weight, norm.eps)
    # as RMSNorm.forward (normalise in float32, round, then scale), in three calls
    return norm.weight * F.rms_norm(x.float(), norm.weight.shape, None, norm.eps).to(x.dtype)


def attention_step(
    attn: Attention,
    x: Tensor,
    h: Tensor,
    rot: Tensor,
    kv: LayerKV,
    slot: int,
    n: int,
    threads: _Threads,
) -> Tensor:
    """Residual x [H] + attention of the normed h [H]; writes this position's key/value."""
    nh, nkv, d = attn.n_heads, attn.n_kv_heads, attn.head_dim
    qk, v = torch.split(threads.mv(attn.wqkv.weight, h).view(nh + 2 * nkv, d), [nh + nkv, nkv])
    q, k = torch.split(torch.mm(qk, rot), [nh, nkv])  # RoPE at this position for q and k
    kv.k[0, :, slot].copy_(k)
    kv.v[0, :, slot].copy_(v)
    q = q.view(1, nkv, nh // nkv, d)  # query head j = kv head j // g, row j % g
    out = threads.attention(q, kv.k[:, :, :n], kv.v[:, :, :n])  # [1, nkv, g, d]
    return threads.addmv(x, attn.wo.weight, out.view(nh * d))


def ffn_step(ff: FeedForward | MoeFeedForward, x: Tensor, h: Tensor, threads: _Threads) -> Tensor:
    """Residual x [H] + feed-forward of the normed h [H] (dense, or the routed experts only)."""
    if isinstance(ff, MoeFeedForward):
        for e, weight in route_one(threads.mv(ff.gate.weight, h).tolist(), ff.top_k):
            x = threads.expert(ff, e, h, x, weight)
        return x
    gate, up = threads.mv(ff.w13.weight, h).chunk(2)
    return threads.addmv(x, ff.w2.weight, F.silu(gate) * up)


def decode_step(model: Transformer, token: int, cache: KVCache) -> Tensor:
    """Feed one token of a batch-1 cache; return the next-token logits [V]."""
    if cache.batch_size != 1:
        raise ValueError(f"decode_step runs one sequence; this cache holds {cache.batch_size}")
    n_threads, min_bytes = torch.get_num_threads(), parallel_min_bytes()
    if n_threads == 1 or min_bytes is None or model.tok_embeddings.weight.is_cuda:
        return _step(model, token, cache, _Threads(1, 0))
    torch.set_num_threads(1)
    try:
        return _step(model, token, cache, _Threads(n_threads, min_bytes))
    finally:
        torch.set_num_threads(n_threads)


def _step(model: Transformer, token: int, cache: KVCache, threads: _Threads) -> Tensor:
    plan = cache.plan(1)
    (_, _, slot), n = plan.writes[0], plan.n_after
    x = model.tok_embeddings.weight[token]  # [H]
    rot = model.rotary.matrix(plan.start, x.dtype, x.device)
    for layer, kv in zip(model.blocks, cache.layers, strict=True):
        h = rms_norm(x, layer.attention_norm)
        x = attention_step(layer.attention, x, h, rot, kv, slot, n, threads)
        x = ffn_step(layer.feed_forward, x, rms_norm(x, layer.ffn_norm), threads)
    cache.advance(1)
    return threads.mv(model.output.weight, rms_norm(x, model.norm))
