"""The local backend: Bedrock's text-completion request served by our PyTorch model, offline.

Importing this module is cheap; torch and ``local_backend`` are imported when a model is first
needed. A model is loaded once per process for each (path, dtype, quantisation, device) and
shared by every client;
its forward calls are serialised one decode step at a time, so concurrent streams interleave.

>>> from bedrock_mistral.validation import check_device
from bedrock_mistral.types import CompletionRequest
>>> backend = LocalBackend()                                              # doctest: +SKIP
>>> backend.complete(CompletionRequest(model_id="local", prompt="<s> [INST] Hi [/INST]",
...                                    max_tokens=20)).text                # doctest: +SKIP
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from bedrock_mistral.errors import (
    Arg,
    BackendUnavailableError,
    ContextWindowError,
    Fix,
    ValidationError,
    install_extra,
)
from bedrock_mistral.types import Completion, CompletionRequest, StreamEnd, TextDelta, Usage
from bedrock_mistral.validation import check_device

if TYPE_CHECKING:
    from bedrock_mistral.backends.aio import ThreadedBackend
    from local_backend.generate import TextStream
    from local_backend.runtime import LocalModel

__all__ = ["LocalBackend", "shared_model"]

_INSTALL = install_extra("local")
_REQUIRED = ("torch", "safetensors", "sentencepiece")

# (path, dtype, quantize, group_size, device): one loaded model each.
ModelKey = tuple[str, str | None, str | None, int | None, str | None]
_models: dict[ModelKey, LocalModel] = {}
_registry_lock = threading.Lock()
_load_locks: dict[ModelKey, threading.Lock] = {}
_workers: dict[ModelKey, concurrent.futures.ThreadPoolExecutor] = {}


def unavailable_reason() -> str | None:
    """None when the local extra is installed; else what is missing and how to install it."""
    missing = [name for name in _REQUIRED if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return f"needs {', '.join(missing)}, which is not installed: {_INSTALL.render('cli')}"


def _check_installed() -> None:
    missing = [name for name in _REQUIRED if importlib.util.find_spec(name) is None]
    if missing:
        raise BackendUnavailableError(
            f"the local backend needs {', '.join(missing)}, which is not installed", fix=_INSTALL
        )


def shared_model(
    model_path: str | Path | None,
    dtype: str | None,
    quantize: str | None = None,
    group_size: int | None = None,
    device: str | None = None,
) -> LocalModel:
    """The process-wide model for these load options, loaded on first use (thread-safe)."""
    key = _key(model_path, dtype, quantize, group_size, device)
    with _registry_lock:
        if key in _models:
            return _models[key]
        load_lock = _load_locks.setdefault(key, threading.Lock())
    with load_lock:  # one loader per key; other keys load in parallel
        if key not in _models:
            model = _load(key, model_path)
            with _registry_lock:
                _models[key] = model
    return _models[key]


def _key(
    model_path: str | Path | None,
    dtype: str | None,
    quantize: str | None = None,
    group_size: int | None = None,
    device: str | None = None,
) -> ModelKey:
    where = "<bundled>"
    if model_path:
        text = str(model_path)
        where = text if ":" in text and not Path(text).exists() else str(Path(text).resolve())
    return (where, dtype, quantize, group_size, device)


def model_worker(
    model_path: str | Path | None,
    dtype: str | None,
    quantize: str | None = None,
    group_size: int | None = None,
    device: str | None = None,
) -> concurrent.futures.ThreadPoolExecutor:
    """The one thread that runs the async client's generations for this model, in turn."""
    key = _key(model_path, dtype, quantize, group_size, device)
    with _registry_lock:
        worker = _workers.get(key)
        if worker is None:
            worker = _workers[key] = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="bedrock-mistral-local"
            )
        return worker


def _load(key: ModelKey, model_path: str | Path | None) -> LocalModel:
    _, dtype, quantize, group_size, device = key
    _check_installed()
    try:
        import local_backend
        from local_backend.errors import DeviceError, LocalBackendError
    except ImportError as err:
        raise BackendUnavailableError(
            f"the local backend cannot start: {err}", fix=_INSTALL
        ) from err
    try:
        return local_backend.load(
            model_path, dtype=dtype, quantize=quantize, group_size=group_size, device=device
        )
    except LocalBackendError as err:
        fix: Fix | None = None
        if isinstance(err, DeviceError):
            fix = Fix("pass {} (or leave the device unset)", Arg("device", "cpu"))
        elif not model_path:
            fix = Fix("pass {} or set BEDROCK_MISTRAL_LOCAL_MODEL", Arg("local_model"))
        raise BackendUnavailableError(f"the local model cannot be loaded: {err}", fix=fix) from err


class LocalBackend:
    """:class:`~bedrock_mistral.backends.base.Backend` over ``local_backend`` (also a TokenCounter).

    ``temperature``/``top_p``/``top_k`` left as None mean greedy decoding over the full
    vocabulary; ``stop`` strings end the text before them.
    """

    name = "local"
    unavailable_reason = staticmethod(unavailable_reason)  # the factory's optional check

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        dtype: str | None = None,
        quantize: str | None = None,
        group_size: int | None = None,
        device: str | None = None,
    ) -> None:
        if quantize not in (None, "int8", "int4"):
            raise ValidationError.out_of_range("quantize", quantize, "int8 or int4")
        if device is not None:
            device = check_device(device)
        _check_installed()
        self.model_path = model_path
        self.dtype = dtype
        # int8 / int4 weights, quantised at load (a checkpoint from `local quantize` is
        # already quantised and needs neither).
        self.quantize = quantize
        self.group_size = group_size
        self.device = device  # "cpu", "cuda[:N]"; None = CUDA when available, else the CPU

    @property
    def model(self) -> LocalModel:
        """The shared loaded model (loads it on first use)."""
        return shared_model(*self._load_options())

    def _load_options(
        self,
    ) -> tuple[str | Path | None, str | None, str | None, int | None, str | None]:
        return self.model_path, self.dtype, self.quantize, self.group_size, self.device

    def async_backend(self) -> ThreadedBackend:
        """For the async client: generations run off the loop in this model's one worker
        thread, one at a time (others queue), tokens handed to the loop as they come."""
        from bedrock_mistral.backends.aio import ThreadedBackend

        worker = model_worker(*self._load_options())
        return ThreadedBackend(self, executor=worker)

    # -- TokenCounter -----------------------------------------------------------------------

    def count_tokens(self, prompt: str) -> int:
        return len(self._encode(prompt))

    @property
    def context_window(self) -> int | None:
        return self.model.context_window

    # -- Backend ----------------------------------------------------------------------------

    def complete(self, request: CompletionRequest) -> Completion:
        started = time.perf_counter()
        stream = self._start(request)
        text = "".join(stream)
        return Completion(
            text=text,
            stop_reason=stream.stop_reason or "length",
            usage=Usage(input_tokens=stream.prompt_tokens, output_tokens=stream.completion_tokens),
            model_id=request.model_id,
            backend=self.name,
            latency_ms=(time.perf_counter() - started) * 1000.0,
        )

    def stream(self, request: CompletionRequest) -> Iterator[TextDelta | StreamEnd]:
        started = time.perf_counter()
        stream = self._start(request)
        first: float | None = None
        try:
            for delta in stream:
                if delta:
                    first = first if first is not None else time.perf_counter()
                    yield TextDelta(text=delta)
        finally:
            stream.close()
        done = time.perf_counter()
        yield StreamEnd(
            stop_reason=stream.stop_reason or "length",
            usage=Usage(input_tokens=stream.prompt_tokens, output_tokens=stream.completion_tokens),
            latency_ms=(done - started) * 1000.0,
            first_byte_latency_ms=((first or done) - started) * 1000.0,
        )

    # -- internals --------------------------------------------------------------------------

    def _encode(self, prompt: str) -> list[int]:
        model = self.model
        from local_backend.errors import TokenizerError

        try:
            return model.tokenizer.encode_prompt(prompt)
        except TokenizerError as err:
            raise BackendUnavailableError(
                f"the local model has no usable tokenizer: {err}"
            ) from err

    def _start(self, request: CompletionRequest) -> TextStream:
        model = self.model
        ids = self._encode(request.prompt)
        window = model.context_window
        if len(ids) + request.max_tokens > window:
            raise ContextWindowError(
                f"the prompt ({len(ids)} tokens) plus max_tokens={request.max_tokens} does not fit "
                f"the local model's context of {window} tokens: shorten the conversation "
                "or lower max_tokens",
                prompt_tokens=len(ids),
                max_tokens=request.max_tokens,
                context_window=window,
            )
        try:
            return model.stream(
                ids,
                request.max_tokens,
                temperature=request.temperature or 0.0,
                top_p=request.top_p if request.top_p is not None else 1.0,
                top_k=request.top_k or None,
                stop=list(request.stop),
            )
        except ValueError as err:
            raise ValidationError(f"the local backend refused the request: {err}") from err
