"""Mistral / Mixtral transformer in plain PyTorch, numerically matching transformers' eager path.

Parameters are stored fused for speed (``wqkv`` = q, k, v rows stacked; ``w13`` = gate and up
rows stacked, per expert ``[E, 2I, H]``); :mod:`local_backend.checkpoint` maps them to and from
the Hugging Face tensor names. The same module trains (autograd runs through the sparse MoE) and
serves (with a :class:`~local_backend.cache.KVCache`).
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from local_backend import native
from local_backend.cache import KVCache, LayerKV, StepPlan, window_mask
from local_backend.config import ModelConfig
from local_backend.matvec import LINEAR_DTYPES, NATIVE_DTYPES
from local_backend.quant import QuantizedWeight

__all__ = [
    "Attention",
    "FeedForward",
    "MoeFeedForward",
    "RMSNorm",
    "Transformer",
    "TransformerBlock",
    "Weight",
    "addmv",
    "linear",
    "mv",
    "route_one",
    "select_experts",
]


Weight = Tensor | QuantizedWeight  # a matrix [N, K]: plain, or packed by local_backend.quant


class Linear(nn.Linear):
    """``nn.Linear`` without bias whose init is skipped on the meta device, where a checkpoint
    fills it: there torch's init runs through decompositions that import ``torch._dynamo``
    and sympy (~1 s of start-up). Built for real, it draws its init as before (same seeds,
    same weights), before :meth:`Transformer.init_weights` overwrites it."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features, bias=False)

    def reset_parameters(self) -> None:
        if not self.weight.is_meta:
            super().reset_parameters()


class Embedding(nn.Embedding):
    """``nn.Embedding`` whose init is skipped on the meta device, as for :class:`Linear`."""

    def reset_parameters(self) -> None:
        if not self.weight.is_meta:
            super().reset_parameters()


def linear(x: Tensor, weight: Weight) -> Tensor:
    """``F.linear`` without bias, except that a single row (a decode step) goes through
    ``torch.mv`` or our bf16 kernel where that is the faster product for the weight's dtype on
    this machine (:mod:`local_backend.matvec` measures it at load). A quantised weight runs its
    kernel."""
    if not isinstance(weight, Tensor):
        return weight.linear(x)
    if weight.dtype in LINEAR_DTYPES:
        return F.linear(x, weight)
    if weight.dtype in NATIVE_DTYPES:
        if x.numel() != weight.shape[1]:
            return F.linear(x, weight)  # prefill: the GEMM
        return native.dense_mv(weight, x.reshape(-1)).view(*x.shape[:-1], weight.shape[0])
    if x.dim() == 1:
        return torch.mv(weight, x)
    if x.numel() == weight.shape[1]:
        return torch.mv(weight, x.reshape(-1)).view(*x.shape[:-1], weight.shape[0])
    return F.linear(x, weight)


def mv(weight: Weight, x: Tensor) -> Tensor:
    """``weight @ x`` for a vector x [K] -> [N]."""
    if not isinstance(weight, Tensor):
        return weight.mv(x)
    if weight.dtype in LINEAR_DTYPES:
        return F.linear(x, weight)
    if weight.dtype in NATIVE_DTYPES:
        return native.dense_mv(weight, x)
    return torch.mv(weight, x)


def addmv(residual: Tensor, weight: Weight, x: Tensor, alpha: float = 1.0) -> Tensor:
    """``residual + alpha * weight @ x`` for vectors (one fused call on the ``mv`` path)."""
    if not isinstance(weight, Tensor):
        return weight.addmv(residual, x, alpha)
    if weight.dtype in LINEAR_DTYPES:
        return torch.add(residual, F.linear(x, weight), alpha=alpha)
    if weight.dtype in NATIVE_DTYPES:
        return native.dense_mv(weight, x, residual, alpha)
    return torch.addmv(residual, weight, x, alpha=alpha)


class RMSNorm(nn.Module):
    """``w * (x / sqrt(mean(x^2) + eps))``, the normalisation done in float32 (as transformers)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


class RotaryTable:
    """cos and signed-sin tables by absolute position, computed as transformers does and grown
    on demand, so a decode step only slices them.

    ``sin`` is stored as ``cat(-sin, sin)`` over the two halves: then
    ``rotate_half(x) * sin == swap_halves(x) * signed_sin`` and the rotation is three ops.
    """

    def __init__(self, head_dim: int, theta: float) -> None:
        self.head_dim, self.theta = head_dim, theta
        self._tables: dict[tuple[torch.dtype, torch.device], tuple[Tensor, Tensor]] = {}
        self._swaps: dict[tuple[torch.dtype, torch.device], Tensor] = {}

    def get(
        self, start: int, length: int, dtype: torch.dtype, device: torch.device
    ) -> tuple[Tensor, Tensor]:
        """cos, signed sin [S, 1, d] for positions start .. start+length-1."""
        end = start + length
        cos, sin = self._tables.get((dtype, device), (None, None))
        if cos is None or sin is None or cos.shape[0] < end:
            cos, sin = self._build(
                max(end, 2 * (0 if cos is None else cos.shape[0]), 256), dtype, device
            )
            self._tables[(dtype, device)] = (cos, sin)
        return cos[start:end], sin[start:end]

    def matrix(self, position: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        """[d, d] rotation R with ``x @ R`` = RoPE of row vector x at ``position``.

        R[j, j] = cos_j and R[swap(j), j] = signed_sin_j, swap exchanging the two halves.
        """
        cos, sin = self.get(position, 1, dtype, device)
        return torch.diag(cos.view(-1)).addcmul_(self._swap(dtype, device), sin.view(1, -1))

    def _swap(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        key = (dtype, device)
        if key not in self._swaps:
            half = self.head_dim // 2
            eye = torch.eye(self.head_dim, dtype=dtype, device=device)
            self._swaps[key] = torch.cat([eye[half:], eye[:half]])  # row i has its 1 at swap(i)
        return self._swaps[key]

    def _build(self, n: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
        # Built on the CPU explicitly: the model may be constructed under torch.device("meta").
        exponent = torch.arange(0, self.head_dim, 2, dtype=torch.int64, device="cpu").float()
        inv_freq = 1.0 / (self.theta ** (exponent / self.head_dim))  # [d/2], float32 as in HF
        angle = torch.arange(n, dtype=torch.float32, device="cpu")[:, None] * inv_freq[None, :]
        cos, sin = angle.cos(), angle.sin()
        cos_full = torch.cat([cos, cos], dim=-1)
        sin_signed = torch.cat([-sin, sin], dim=-1)
        return (
            cos_full[:, None, :].to(device=device, dtype=dtype),
            sin_signed[:, None, :].to(device=device, dtype=dtype),
        )


def apply_rope(x: Tensor, cos: Tensor, sin_signed: Tensor) -> Tensor:
    """Rotate ``x`` [B, S, n, d] by tables [S, 1, d]: element r pairs with r + d/2."""
    half = x.shape[-1] // 2
    swapped = x.view(*x.shape[:-1], 2, half).flip(-2).view(x.shape)  # [x2, x1]
    return torch.addcmul(x * cos, swapped, sin_signed)


class Attention(nn.Module):
    """Grouped-query attention: K/V computed (and cached) once per KV head."""

    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, head_dim: int) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.wqkv = Linear(dim, (n_heads + 2 * n_kv_heads) * head_dim)
        self.wo = Linear(n_heads * head_dim, dim)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, plan: StepPlan, kv: LayerKV | None
    ) -> Tensor:
        # x: [B, S, H]; cos/sin: [S, d]
        bsz, seqlen, _ = x.shape
        nh, nkv, d = self.n_heads, self.n_kv_heads, self.head_dim
        qkv = linear(x, self.wqkv.weight).view(bsz, seqlen, nh + 2 * nkv, d)
        qk = apply_rope(
            qkv[:, :, : nh + nkv], cos, sin
        )  # [B, S, nh+nkv, d], one rotation for q and k
        q = qk[:, :, :nh].transpose(1, 2)  # [B, nh, S, d]
        k = qk[:, :, nh:].transpose(1, 2)  # [B, nkv, S, d]
        v = qkv[:, :, nh + nkv :].transpose(1, 2)  # [B, nkv, S, d]
        if kv is not None:
            k, v = kv.update(k, v, plan)  # [B, nkv, T, d]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=plan.mask, is_causal=plan.is_causal, enable_gqa=nkv != nh
        )  # [B, nh, S, d]; query head j reads KV head j // (nh / nkv)
        result: Tensor = linear(out.transpose(1, 2).reshape(bsz, seqlen, nh * d), self.wo.weight)
        return result


class FeedForward(nn.Module):
    """Dense SwiGLU: ``w2(silu(gate x) * up x)`` with gate and up fused in ``w13``."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.w13 = Linear(dim, 2 * hidden_dim)
        self.w2 = Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        gate, up = linear(x, self.w13.weight).chunk(2, dim=-1)
        return linear(F.silu(gate) * up, self.w2.weight), None


def select_experts(router_logits: Tensor, top_k: int) -> tuple[Tensor, Tensor]:
    """Mixtral routing: softmax over all experts in float32, top-k, renormalised over the k.

    router_logits [T, E] -> weights [T, k] (float32, rows sum to 1), expert ids [T, k].
    """
    probs = torch.softmax(router_logits.float(), dim=-1)
    weights, experts = torch.topk(probs, top_k, dim=-1)
    return weights / weights.sum(dim=-1, keepdim=True), experts


def route_one(logits: list[float], top_k: int) -> list[tuple[int, float]]:
    """Mixtral routing of one token in Python: (expert, weight) of the ``top_k`` experts.

    Top-k of the logits picks the same experts as top-k of the softmax, and the softmax over
    the k chosen logits equals the renormalised top-k probabilities (ref §5); over E floats
    plain Python is cheaper than the tensor calls :func:`select_experts` makes.
    """
    chosen = sorted(range(len(logits)), key=logits.__getitem__, reverse=True)[:top_k]
    top = logits[chosen[0]]
    scores = [math.exp(logits[e] - top) for e in chosen]
    total = sum(scores)
    return [(e, score / total) for e, score in zip(chosen, scores, strict=True)]


class MoeFeedForward(nn.Module):
    """Sparse mixture of SwiGLU experts; each expert runs only on the tokens routed to it.

    Routing as Mixtral: softmax over all experts in float32, top-k, renormalise over the k.
    """

    def __init__(
        self, dim: int, hidden_dim: int, num_experts: int, num_experts_per_tok: int
    ) -> None:
        super().__init__()
        self.num_experts, self.top_k, self.hidden_dim = num_experts, num_experts_per_tok, hidden_dim
        self.gate = Linear(dim, num_experts)
        self.w13 = nn.Parameter(torch.empty(num_experts, 2 * hidden_dim, dim))  # [E, 2I, H]
        self.w2 = nn.Parameter(torch.empty(num_experts, dim, hidden_dim))  # [E, H, I]

    def route(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [T, H] -> router logits [T, E], weights [T, k] (float32), expert ids [T, k]."""
        logits = linear(x, self.gate.weight)
        return (logits, *select_experts(logits, self.top_k))

    def expert(
        self, e: int, x: Tensor, *, residual: Tensor | None = None, alpha: float = 1.0
    ) -> Tensor:
        """Expert ``e`` on its tokens x [n, H] -> [n, H].

        With ``residual`` (one token, x [H]): ``residual + alpha * expert(x)`` in one fused
        call, which is how a decode step adds the routed experts to the residual stream.
        """
        gate, up = linear(x, self.w13[e]).chunk(2, dim=-1)
        act = F.silu(gate) * up
        if residual is not None:
            return addmv(residual, self.w2[e], act, alpha)
        return linear(act, self.w2[e])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        # x: [B, S, H] -> out [B, S, H], router logits [B*S, E]
        shape = x.shape
        flat = x.reshape(-1, shape[-1])  # [T, H]
        if flat.shape[0] == 1 and not torch.is_grad_enabled():
            logits = linear(flat, self.gate.weight)  # [1, E]
            token = flat.view(-1)
            out = self.decode_one(token, logits[0].tolist(), torch.zeros_like(token))
            return out.view(shape), logits
        logits, weights, experts = self.route(flat)
        return self._dispatch(flat, weights, experts).view(shape), logits

    def decode_one(self, x: Tensor, logits: list[float], residual: Tensor) -> Tensor:
        """``residual`` + the routed experts' mix for one token x [H] with router ``logits``
        (picked by :func:`route_one`); only those k experts run."""
        out = residual
        for e, weight in route_one(logits, self.top_k):
            out = self.expert(e, x, residual=out, alpha=weight)
        return out

    def _dispatch(self, flat: Tensor, weights: Tensor, experts: Tensor) -> Tensor:
        """Group (token, choice) pairs by expert, run each expert once, scatter-add back."""
        choice = experts.reshape(-1)  # [T*k]
        order = torch.argsort(choice, stable=True)
        token_of = order // self.top_k  # token index of each sorted pair
        counts = torch.bincount(choice, minlength=self.num_experts).tolist()
        routed = flat.index_select(0, token_of)  # [T*k, H]
        pieces = []
        start = 0
        for e, n in enumerate(counts):
            if n:
                pieces.append(self.expert(e, routed[start : start + n]))
                start += n
        scale = weights.reshape(-1).index_select(0, order)[:, None]  # [T*k, 1] float32
        contrib = (torch.cat(pieces) * scale).to(flat.dtype)
        return torch.zeros_like(flat).index_add_(0, token_of, contrib)


class TransformerBlock(nn.Module):
    """Pre-norm attention + feed-forward (dense or MoE), each with a residual."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(config.dim, config.norm_eps)
        self.attention = Attention(config.dim, config.n_heads, config.n_kv_heads, config.head_dim)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)
        self.feed_forward: FeedForward | MoeFeedForward
        if config.moe is None:
            self.feed_forward = FeedForward(config.dim, config.hidden_dim)
        else:
            self.feed_forward = MoeFeedForward(
                config.dim,
                config.hidden_dim,
                config.moe.num_experts,
                config.moe.num_experts_per_tok,
            )

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, plan: StepPlan, kv: LayerKV | None
    ) -> tuple[Tensor, Tensor | None]:
        x = x + self.attention(self.attention_norm(x), cos, sin, plan, kv)
        out, router_logits = self.feed_forward(self.ffn_norm(x))
        return x + out, router_logits


class Transformer(nn.Module):
    """The whole causal LM: ``forward(tokens [B, S]) -> logits [B, S, V]`` at every position.

    >>> model = Transformer(PRESETS["bundled"])                 # doctest: +SKIP
    >>> model(torch.tensor([[1, 733, 16289]])).shape          # doctest: +SKIP
    torch.Size([1, 3, 2048])
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings = Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(TransformerBlock(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.output = Linear(config.dim, config.vocab_size)
        self.rotary = RotaryTable(config.head_dim, config.rope_theta)
        if config.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        if self.output.weight.device.type != "meta":
            self.init_weights()

    @property
    def blocks(self) -> list[TransformerBlock]:
        """The layers, typed."""
        return cast(list[TransformerBlock], list(self.layers))

    def init_weights(self, std: float = 0.02) -> None:
        """Normal(0, std) for every matrix, ones for the norms (transformers' scheme)."""
        for name, param in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(param)
            else:
                nn.init.normal_(param, mean=0.0, std=std)

    def new_cache(self, batch_size: int = 1, *, capacity: int = 0) -> KVCache:
        """An empty cache for ``batch_size`` sequences; ``capacity`` preallocates positions."""
        param = self.tok_embeddings.weight
        return KVCache(
            n_layers=self.config.n_layers,
            batch_size=batch_size,
            n_kv_heads=self.config.n_kv_heads,
            head_dim=self.config.head_dim,
            window=self.config.sliding_window,
            dtype=param.dtype,
            device=param.device,
            capacity=capacity,
        )

    def forward(self, tokens: Tensor, cache: KVCache | None = None) -> Tensor:
        return self._run(tokens, cache, keep_router_logits=False, last_only=False)[0]

    def forward_last(self, tokens: Tensor, cache: KVCache | None = None) -> Tensor:
        """Logits of the last position only, [B, V]: what generation needs, V times cheaper."""
        return self._run(tokens, cache, keep_router_logits=False, last_only=True)[0][:, -1]

    def forward_with_router_logits(
        self, tokens: Tensor, cache: KVCache | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        """Logits plus, per MoE layer, the router logits [B*S, E] (for the balancing loss)."""
        return self._run(tokens, cache, keep_router_logits=True, last_only=False)

    def _run(
        self, tokens: Tensor, cache: KVCache | None, *, keep_router_logits: bool, last_only: bool
    ) -> tuple[Tensor, list[Tensor]]:
        # tokens: [B, S] -> logits [B, S, V]
        seqlen = tokens.shape[1]
        plan = (
            cache.plan(seqlen)
            if cache is not None
            else self._plan_without_cache(seqlen, tokens.device)
        )
        x = self.tok_embeddings(tokens)  # [B, S, H]
        cos, sin = self.rotary.get(plan.start, seqlen, x.dtype, x.device)
        router_logits: list[Tensor] = []
        for i, layer in enumerate(self.layers):
            x, logits = layer(x, cos, sin, plan, cache.layers[i] if cache is not None else None)
            if keep_router_logits and logits is not None:
                router_logits.append(logits)
        if cache is not None:
            cache.advance(seqlen)
        if last_only:
            x = x[:, -1:]
        return linear(self.norm(x), self.output.weight), router_logits

    def _plan_without_cache(self, seqlen: int, device: torch.device) -> StepPlan:
        window = self.config.sliding_window
        if window is None or seqlen <= window:
            return StepPlan(0, seqlen, 0, 0, (), None, True)
        pos = torch.arange(seqlen, device=device)
        return StepPlan(0, seqlen, 0, 0, (), window_mask(pos, pos, window), False)

    def matvec_weights(self) -> list[Tensor]:
        """The dense matrices one decode step multiplies by, from the first layer and the
        head (quantised ones left out): what :func:`local_backend.matvec.choose` times."""
        layer = self.blocks[0]
        ff = layer.feed_forward
        if isinstance(ff, FeedForward):
            ffn = [ff.w13.weight, ff.w2.weight]
        else:
            ffn = [ff.w13[0], ff.w2[0]]  # one expert
        found = [layer.attention.wqkv.weight, layer.attention.wo.weight, *ffn, self.output.weight]
        return [w for w in found if isinstance(w, Tensor) and w.dim() == 2]

    def num_parameters(self, *, active: bool = False) -> int:
        """Parameter count; ``active=True`` counts only the experts one token uses."""
        total = sum(p.numel() for p in self.parameters())
        moe = self.config.moe
        if active and moe is not None:
            per_expert = 3 * self.config.dim * self.config.hidden_dim
            total -= self.config.n_layers * (moe.num_experts - moe.num_experts_per_tok) * per_expert
        return total
