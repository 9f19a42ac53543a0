"""Sampling and the generation loop: pure functions over logits, prefill and decode apart.

``token_stream`` yields token ids one at a time (prefill in chunks, then one decode step per
token, each step under an optional lock so several streams can share one model).
``TextStream`` turns those ids into text deltas, applying stop strings and keeping the stop
reason and token counts for after the loop.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from local_backend.cache import KVCache
from local_backend.decode import decode_step
from local_backend.model import Transformer
from local_backend.tokenizer import IncrementalDecoder, Tokenizer

__all__ = [
    "SamplingParams",
    "StopReason",
    "TextStream",
    "apply_temperature",
    "decode_one",
    "sample",
    "token_stream",
    "top_k_filter",
    "top_p_filter",
]

StopReason = Literal["stop", "length"]
DEFAULT_PREFILL_CHUNK = 1024


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen. ``temperature=0`` is greedy (argmax)."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature} must be >= 0")
        if not 0 <= self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} must be between 0 and 1")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k={self.top_k} must be >= 1 (or None for no limit)")

    def generator(self, device: torch.device | str = "cpu") -> torch.Generator:
        """A private RNG on the logits' device: seeded when ``seed`` is set, so sampling is
        reproducible (on that device type)."""
        gen = torch.Generator(device=device)
        if self.seed is None:
            gen.seed()
        else:
            gen.manual_seed(self.seed)
        return gen


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    return logits / temperature


def top_k_filter(logits: Tensor, k: int | None) -> Tensor:
    """Keep the k largest logits per row; the rest become -inf."""
    if k is None or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Keep the smallest set of likeliest tokens whose probability reaches ``p`` (at least one)."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    drop_sorted = mass_before >= p
    drop_sorted[..., 0] = False  # the likeliest token always stays (top_p=0 is greedy)
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample(
    logits: Tensor, params: SamplingParams, generator: torch.Generator | None = None
) -> Tensor:
    """logits [B, V] -> token ids [B]."""
    if params.temperature == 0:
        return torch.argmax(logits, dim=-1)
    scores = apply_temperature(logits.float(), params.temperature)
    scores = top_p_filter(top_k_filter(scores, params.top_k), params.top_p)
    probs = torch.softmax(scores, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def decode_one(model: Transformer, token: int, cache: KVCache) -> Tensor:
    """One decode step of a batch-1 cache: token id -> next-token logits [1, V]."""
    return decode_step(model, token, cache)[None]


def token_stream(
    model: Transformer,
    prompt: Sequence[int],
    *,
    max_new_tokens: int,
    sampling: SamplingParams,
    stop_ids: frozenset[int] = frozenset(),
    lock: threading.Lock | None = None,
    chunk_size: int = DEFAULT_PREFILL_CHUNK,
) -> Iterator[int]:
    """Yield new token ids until a stop id (yielded too) or ``max_new_tokens``."""
    if not prompt:
        raise ValueError("the prompt is empty: it needs at least one token (e.g. BOS)")
    if max_new_tokens <= 0:
        return
    guard: AbstractContextManager[object] = lock if lock is not None else nullcontext()
    device = model.tok_embeddings.weight.device
    generator = sampling.generator(device) if sampling.temperature > 0 else None
    with torch.inference_mode():
        cache = model.new_cache(1, capacity=len(prompt) + max_new_tokens)
        tokens = torch.tensor([list(prompt)], device=device)
    for start in range(0, tokens.shape[1], chunk_size):  # the lock is released between chunks
        with guard, torch.inference_mode():
            logits = model.forward_last(tokens[:, start : start + chunk_size], cache)
    for produced in range(1, max_new_tokens + 1):
        with torch.inference_mode():
            token = int(sample(logits, sampling, generator)[0])
        yield token
        if token in stop_ids or produced == max_new_tokens:
            return
        with guard, torch.inference_mode():
            logits = decode_one(model, token, cache)


class TextStream:
    """Iterate for text deltas; afterwards ``stop_reason``, ``token_ids`` and the counts are set.

    Stop strings end the text before them (the stop string itself is not emitted), and a delta
    never ends with text that could still turn out to begin a stop string.

    >>> stream = model.stream(prompt_ids, max_new_tokens=50, stop=["\\n\\n"])  # doctest: +SKIP
    >>> text = "".join(stream); stream.stop_reason, stream.completion_tokens    # doctest: +SKIP
    """

    def __init__(
        self,
        tokens: Iterator[int],
        tokenizer: Tokenizer,
        *,
        prompt_tokens: int,
        stop: Sequence[str] = (),
        stop_ids: frozenset[int] = frozenset(),
        context: Sequence[int] = (),
    ) -> None:
        self._tokens = tokens
        self._decoder = IncrementalDecoder(tokenizer, context)
        self._stops = tuple(s for s in stop if s)
        self._stop_ids = stop_ids
        self.prompt_tokens = prompt_tokens
        self.token_ids: list[int] = []
        self.text = ""  # text emitted so far (the final text once the loop ends)
        self.stop_reason: StopReason | None = None
        self._iterator: Generator[str, None, None] = self._run()

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)

    def __iter__(self) -> Iterator[str]:
        return self._iterator

    def __next__(self) -> str:
        return next(self._iterator)

    def close(self) -> None:
        """Stop early; the model's lock is never held between steps, so nothing leaks."""
        self._iterator.close()
        close = getattr(self._tokens, "close", None)
        if close is not None:
            close()

    def _run(self) -> Generator[str, None, None]:
        pending = ""  # decoded but not yet emitted (may start a stop string)
        for token in self._tokens:
            self.token_ids.append(token)
            if token in self._stop_ids:
                pending += self._decoder.flush()
                self.stop_reason = "stop"
                break
            pending += self._decoder.push(token)
            cut = self._find_stop(pending)
            if cut is not None:
                pending = pending[:cut]
                self.stop_reason = "stop"
                break
            safe = len(pending) - self._held_back(pending)
            if safe > 0:
                yield self._emit(pending[:safe])
                pending = pending[safe:]
        else:
            pending += self._decoder.flush()
            cut = self._find_stop(pending)
            if cut is not None:
                pending = pending[:cut]
                self.stop_reason = "stop"
            else:
                self.stop_reason = "length"
        if pending:
            yield self._emit(pending)

    def _emit(self, text: str) -> str:
        self.text += text
        return text

    def _find_stop(self, pending: str) -> int | None:
        """Where the earliest stop string starts in ``pending``.

        Emitted text never ends with the start of a stop string (see ``_held_back``), so a
        stop string always lies wholly inside ``pending``.
        """
        hits = [i for i in (pending.find(s) for s in self._stops) if i >= 0]
        return min(hits) if hits else None

    def _held_back(self, pending: str) -> int:
        """Length of the longest suffix of ``pending`` that is a proper prefix of a stop string."""
        best = 0
        for s in self._stops:
            for n in range(min(len(s) - 1, len(pending)), best, -1):
                if pending.endswith(s[:n]):
                    best = n
                    break
        return best
