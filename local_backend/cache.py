"""KV cache: a rolling buffer of W slots with a sliding window, a growing buffer without one.

Keys are stored already rotated (RoPE at their own absolute position), so the order of slots
never matters to attention; only *which* positions are visible does.

Worked example, window W = 4, a 6-token prompt then one decode step::

    prefill positions 0..5      -> keys 2..5 are kept: slot = position mod 4
                                   slots [0, 1, 2, 3] hold positions [4, 5, 2, 3]
    decode position 6           -> written to slot 6 mod 4 = 2 (position 2 leaves)
                                   slots hold [4, 5, 6, 3]: exactly keys 3..6, W keys incl. self

A chunk of several tokens after a non-empty cache attends over the cached slots plus its own
keys, masked per key by the absolute position it holds (ref §7/§8), and is written afterwards.
The buffer grows by doubling until it reaches W slots (windowed) or the needed length
(no window); ``reserve`` preallocates so a generation loop never allocates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["KVCache", "LayerKV", "StepPlan", "window_mask"]


def window_mask(q_pos: Tensor, k_pos: Tensor, window: int | None) -> Tensor:
    """Bool mask [S, T], True where query at ``q_pos[i]`` may see key at ``k_pos[j]``.

    ``j <= i`` and, with a window, ``j > i - W``: exactly W keys including the query itself.
    Negative key positions mark empty slots and are never visible.
    """
    q = q_pos[:, None]
    k = k_pos[None, :]
    allowed = (k <= q) & (k >= 0)
    if window is not None:
        allowed &= k > q - window
    return allowed


@dataclass
class StepPlan:
    """How one forward call reads and writes every layer's cache (the same for all layers)."""

    start: int  # absolute position of the chunk's first token
    length: int  # tokens in the chunk
    n_prev: int  # cached slots read before writing (chunk after a non-empty cache)
    n_after: int  # slots read after writing (single-token decode); 0 = not this mode
    writes: tuple[tuple[int, int, int], ...]  # (chunk_from, chunk_to, slot_from) copies
    mask: Tensor | None  # [S, T] bool for SDPA, None = every key visible
    is_causal: bool  # plain causal mask over the chunk only (first chunk, no window)


class LayerKV:
    """One layer's key and value buffers, [batch, n_kv_heads, slots, head_dim]."""

    def __init__(self, k: Tensor, v: Tensor) -> None:
        self.k = k
        self.v = v

    def update(self, k: Tensor, v: Tensor, plan: StepPlan) -> tuple[Tensor, Tensor]:
        """Store the chunk's keys/values ([B, nkv, S, d]) and return those attention should read."""
        if plan.n_after:  # decode: write first, then every filled slot is a visible key
            for src, dst_end, slot in plan.writes:
                self.k[:, :, slot : slot + dst_end - src].copy_(k[:, :, src:dst_end])
                self.v[:, :, slot : slot + dst_end - src].copy_(v[:, :, src:dst_end])
            return self.k[:, :, : plan.n_after], self.v[:, :, : plan.n_after]
        keys, values = k, v
        if plan.n_prev:  # read the old slots before this chunk overwrites them
            keys = torch.cat([self.k[:, :, : plan.n_prev], k], dim=2)
            values = torch.cat([self.v[:, :, : plan.n_prev], v], dim=2)
        for src, src_end, slot in plan.writes:
            self.k[:, :, slot : slot + src_end - src].copy_(k[:, :, src:src_end])
            self.v[:, :, slot : slot + src_end - src].copy_(v[:, :, src:src_end])
        return keys, values


class KVCache:
    """Per-layer KV buffers for a batch of sequences that advance together.

    >>> cache = model.new_cache(batch_size=1)     # doctest: +SKIP
    >>> logits = model.forward(prompt, cache)     # prefill; cache.seq_len == prompt length
    >>> logits = model.forward(next_tok, cache)   # one decode step
    """

    def __init__(
        self,
        *,
        n_layers: int,
        batch_size: int,
        n_kv_heads: int,
        head_dim: int,
        window: int | None,
        dtype: torch.dtype,
        device: torch.device | str = "cpu",
        capacity: int = 0,
    ) -> None:
        self.window = window
        self.batch_size = batch_size
        self.seq_len = 0  # tokens seen so far (the next token's absolute position)
        self._shape = (batch_size, n_kv_heads, 0, head_dim)
        self._dtype = dtype
        self._device = torch.device(device)
        self.layers = [LayerKV(*self._alloc(0)) for _ in range(n_layers)]
        self.reserve(capacity)

    @property
    def capacity(self) -> int:
        return self.layers[0].k.shape[2] if self.layers else 0

    @property
    def nbytes(self) -> int:
        """Bytes held by all key and value buffers."""
        return sum(
            t.numel() * t.element_size() for layer in self.layers for t in (layer.k, layer.v)
        )

    def reserve(self, n_positions: int) -> None:
        """Make room for ``n_positions`` positions (capped at the window), keeping the data."""
        want = n_positions if self.window is None else min(n_positions, self.window)
        if want <= self.capacity:
            return
        kept = min(self.seq_len, self.capacity)
        for layer in self.layers:
            k, v = self._alloc(want)
            k[:, :, :kept].copy_(layer.k[:, :, :kept])
            v[:, :, :kept].copy_(layer.v[:, :, :kept])
            layer.k, layer.v = k, v

    def slot_positions(self) -> Tensor:
        """Absolute position held by each filled slot (``-1`` = empty), in slot order."""
        n = self.seq_len
        slots = torch.arange(self.capacity, device=self._device)
        if self.window is None or n <= self.window:
            return torch.where(slots < n, slots, -1)
        return (n - 1) - torch.remainder((n - 1) - slots, self.window)

    def plan(self, length: int) -> StepPlan:
        """Grow if needed and describe where a chunk of ``length`` tokens reads and writes."""
        start, end = self.seq_len, self.seq_len + length
        if self.capacity < min(end, self.window or end):
            self.reserve(max(end, 2 * self.capacity))
        writes = self._writes(start, end)
        if length == 1:
            n_after = min(end, self.capacity)
            return StepPlan(start, 1, 0, n_after, writes, None, False)
        q_pos = torch.arange(start, end, device=self._device)
        if start == 0:
            if self.window is None or length <= self.window:
                return StepPlan(start, length, 0, 0, writes, None, True)
            return StepPlan(
                start, length, 0, 0, writes, window_mask(q_pos, q_pos, self.window), False
            )
        n_prev = min(start, self.capacity)
        k_pos = torch.cat([self.slot_positions()[:n_prev], q_pos])
        return StepPlan(
            start, length, n_prev, 0, writes, window_mask(q_pos, k_pos, self.window), False
        )

    def advance(self, length: int) -> None:
        self.seq_len += length

    def _writes(self, start: int, end: int) -> tuple[tuple[int, int, int], ...]:
        """Contiguous copies placing positions start..end-1 (the last W of them) at pos mod W."""
        if self.window is None:
            return ((0, end - start, start),)
        first = max(start, end - self.window)
        out = []
        pos = first
        while pos < end:
            slot = pos % self.window
            run = min(end - pos, self.window - slot)
            out.append((pos - start, pos - start + run, slot))
            pos += run
        return tuple(out)

    def _alloc(self, slots: int) -> tuple[Tensor, Tensor]:
        b, h, _, d = self._shape
        shape = (b, h, slots, d)
        return (
            torch.zeros(shape, dtype=self._dtype, device=self._device),
            torch.zeros(shape, dtype=self._dtype, device=self._device),
        )
