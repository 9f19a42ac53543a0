"""Engines that speak the OpenAI API (vLLM, Ollama, llama.cpp's server, LM Studio, TGI).

A translation layer and nothing more, like the Bedrock backend: our request -> an OpenAI
body (:mod:`.openai_wire`), the engine's answer or server-sent events -> our types,
HTTP and transport errors -> our tree (:mod:`.openai_errors`). It never retries: the
client's one retry policy does.

Transport: one ``httpx.Client`` (one connection pool) per backend, created on the first
call and closed by ``close()`` (``MistralClient.close()``). httpx rather than the
``openai`` package: the package is itself a layer over httpx that brings its own
retries (which would multiply with ours), pydantic models for every chunk and a slower
import, and it has no words for the engines' extensions (``top_k``, ``/tokenize``).

Timeouts: ``read_timeout`` bounds a whole non-streamed answer; for a stream, httpx's
read timeout is set to ``stream_idle_timeout``, so it bounds the gap between two reads
and a stalled engine ends as an error instead of hanging.

>>> backend = OpenAIBackend(base_url="http://localhost:8000/v1", prompt_mode="raw")
>>> backend = OllamaBackend()      # http://localhost:11434/v1, Ollama's model names
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import urlsplit

from bedrock_mistral.backends.openai_presets import (
    ENV_BASE_URL,
    PRESETS,
    EnginePreset,
    engine_model_spec,
)
from bedrock_mistral.backends.openai_wire import PromptMode, build_body
from bedrock_mistral.errors import Arg, BedrockMistralError, ConfigurationError, Fix
from bedrock_mistral.types import (
    Completion,
    CompletionRequest,
    StopReason,
    StreamEnd,
    TextDelta,
    Usage,
)

if TYPE_CHECKING:
    import httpx

    from bedrock_mistral.backends.openai_errors import CallContext
    from bedrock_mistral.models import ModelSpec

__all__ = [
    "LlamaCppBackend",
    "OllamaBackend",
    "OpenAIBackend",
    "TokenCount",
    "VLLMBackend",
]

logger = logging.getLogger(__name__)

DEFAULT_READ_TIMEOUT = 900.0
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_STREAM_IDLE_TIMEOUT = 60.0
DEFAULT_MAX_POOL_CONNECTIONS = 64
_PROMPT_MODES = ("chat", "raw")


@dataclass(frozen=True)
class TokenCount:
    """A prompt's token count and who counted: the engine, our tokenizer, or an estimate."""

    tokens: int
    source: Literal["engine", "tokenizer", "estimate"]


def _positive(name: str, value: float | int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigurationError(f"{name}={value!r} is not allowed: a positive number")


def _first_env(names: tuple[str, ...]) -> str | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


class OpenAIBackend:
    """Any server with ``/v1/chat/completions`` and ``/v1/completions``. Thread-safe.

    ``base_url``: the API root, ending in ``/v1`` (default: ``$BEDROCK_MISTRAL_BASE_URL``,
    then the preset's). ``api_key``: sent as a bearer token (default:
    ``$BEDROCK_MISTRAL_OPENAI_API_KEY``, then the preset's variable; none for Ollama).
    ``engine_model``: the name the engine serves the model under; without it, the
    preset's name for the client's registry model, or the client's model name as given.
    ``prompt_mode``: ``"chat"`` (the engine applies its chat template) or ``"raw"`` (our
    ``[INST]`` prompt, byte for byte what Bedrock gets, to ``/v1/completions``).
    """

    name: ClassVar[str] = "openai"
    preset: ClassVar[EnginePreset] = PRESETS["openai"]

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        engine_model: str | None = None,
        prompt_mode: PromptMode = "chat",
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        stream_idle_timeout: float = DEFAULT_STREAM_IDLE_TIMEOUT,
        max_pool_connections: int = DEFAULT_MAX_POOL_CONNECTIONS,
    ) -> None:
        for option, value in (
            ("read_timeout", read_timeout),
            ("connect_timeout", connect_timeout),
            ("stream_idle_timeout", stream_idle_timeout),
            ("max_pool_connections", max_pool_connections),
        ):
            _positive(option, value)
        if prompt_mode not in _PROMPT_MODES:
            raise ConfigurationError(
                f"prompt_mode={prompt_mode!r} is not allowed: 'chat' (the engine's template) "
                "or 'raw' (our [INST] prompt to /v1/completions)"
            )
        self.base_url = self._resolve_base_url(base_url)
        self.api_key = api_key or _first_env(self.preset.key_variables)
        self.engine_model = engine_model or None
        self.prompt_mode: PromptMode = prompt_mode
        self.read_timeout = float(read_timeout)
        self.connect_timeout = float(connect_timeout)
        self.stream_idle_timeout = float(stream_idle_timeout)
        self.max_pool_connections = int(max_pool_connections)
        self._lock = threading.Lock()
        self._http: httpx.Client | None = None

    def _resolve_base_url(self, given: str | None) -> str:
        url = given or _first_env((ENV_BASE_URL, *self.preset.base_url_env)) or self.preset.base_url
        fix = Fix("pass {}, e.g. http://localhost:8000/v1, or set " + ENV_BASE_URL, Arg("base_url"))
        if not url:
            raise ConfigurationError(f"backend {self.name!r} needs the engine's URL", fix=fix)
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(f"base_url={url!r} is not an http(s) URL", fix=fix)
        return url.strip().rstrip("/")

    @staticmethod
    def unavailable_reason() -> str | None:
        if importlib.util.find_spec("httpx") is None:
            return 'httpx is not installed: pip install "bedrock-mistral[openai]"'
        return None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base_url={self.base_url!r}, "
            f"engine_model={self.engine_model!r}, prompt_mode={self.prompt_mode!r})"
        )

    # -- models ----------------------------------------------------------------------------

    def model_spec(self, name: str) -> ModelSpec:
        """The spec for a model name the registry does not list: the engine's own name."""
        return engine_model_spec(name)

    def engine_name(self, spec: ModelSpec) -> str:
        """The ``model`` sent for ``spec``: ``engine_model``, else the preset's name for it."""
        return self.engine_model or self.preset.engine_name(spec)

    def list_models(self) -> list[str]:
        """The ids the engine serves (``GET /v1/models``)."""
        ctx = self._context(model="(listing)", streaming=False)
        data = self._get_json("/models", ctx)
        return [str(item["id"]) for item in data.get("data") or [] if isinstance(item, dict)]

    def _served(self) -> list[str] | None:
        try:
            return self.list_models()
        except BedrockMistralError as err:
            logger.debug("could not list the engine's models: %s", err)
            return None

    # -- HTTP ------------------------------------------------------------------------------

    def _client(self) -> httpx.Client:
        http = self._http
        if http is not None:
            return http
        with self._lock:
            if self._http is None:
                self._http = self._create_client()
            return self._http

    def _create_client(self) -> httpx.Client:
        import httpx

        from bedrock_mistral import __version__

        headers = {"User-Agent": f"bedrock-mistral/{__version__}"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        pool = self.max_pool_connections
        return httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(self.read_timeout, connect=self.connect_timeout),
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
        )

    def close(self) -> None:
        """Close the connection pool; the backend opens a new one if used again."""
        with self._lock:
            http, self._http = self._http, None
        if http is not None:
            http.close()

    def _context(
        self, *, model: str, streaming: bool, request: CompletionRequest | None = None
    ) -> CallContext:
        from bedrock_mistral.backends.openai_errors import CallContext

        return CallContext(
            preset=self.preset,
            base_url=self.base_url,
            model=model,
            key_sent=bool(self.api_key),
            streaming=streaming,
            read_timeout=self.read_timeout,
            stream_idle_timeout=self.stream_idle_timeout,
            max_tokens=request.max_tokens if request is not None else 0,
            served=self._served,
        )

    def _get_json(self, path: str, ctx: CallContext) -> dict[str, Any]:
        from bedrock_mistral.backends.openai_errors import TRANSPORT_ERRORS, map_transport

        try:
            response = self._client().get(path)
            self._raise_for_status(response, ctx)
            data = response.json()
        except BedrockMistralError:
            raise
        except TRANSPORT_ERRORS as err:
            raise map_transport(err, ctx) from err
        return data if isinstance(data, dict) else {}

    @staticmethod
    def _raise_for_status(response: httpx.Response, ctx: CallContext) -> None:
        if response.status_code < 400:
            return
        from bedrock_mistral.backends.openai_errors import map_status

        raise map_status(response.status_code, response.read(), response.headers, ctx)

    # -- calls -----------------------------------------------------------------------------

    def _body(
        self, request: CompletionRequest, model: str, *, stream: bool
    ) -> tuple[str, dict[str, Any]]:
        return build_body(
            request,
            model=model,
            mode=self.prompt_mode,
            stream=stream,
            engine_bos=self.preset.engine_bos,
            extra=self.preset.extra_body,
        )

    def complete(self, request: CompletionRequest) -> Completion:
        from bedrock_mistral.backends.openai_errors import TRANSPORT_ERRORS, map_transport
        from bedrock_mistral.backends.openai_wire import parse_response

        model = self.engine_name(request.spec)
        path, body = self._body(request, model, stream=False)
        ctx = self._context(model=model, streaming=False, request=request)
        started = time.perf_counter()
        try:
            response = self._client().post(path, json=body)
            self._raise_for_status(response, ctx)
            parsed = parse_response(response.json())
        except BedrockMistralError:
            raise
        except TRANSPORT_ERRORS as err:
            raise map_transport(err, ctx) from err
        return Completion(
            text=parsed.text,
            stop_reason=parsed.stop_reason or "stop",
            usage=parsed.usage or Usage(),
            model_id=request.model_id,
            backend=self.name,
            latency_ms=(time.perf_counter() - started) * 1000.0,
        )

    def stream(self, request: CompletionRequest) -> Iterator[TextDelta | StreamEnd]:
        """Events of one streamed call; without a finish reason (a cut) it just stops."""
        import httpx

        from bedrock_mistral.backends.openai_errors import TRANSPORT_ERRORS, map_transport

        model = self.engine_name(request.spec)
        path, body = self._body(request, model, stream=True)
        ctx = self._context(model=model, streaming=True, request=request)
        timeout = httpx.Timeout(self.stream_idle_timeout, connect=self.connect_timeout)
        started = time.perf_counter()
        state = _StreamState()
        try:
            with self._client().stream("POST", path, json=body, timeout=timeout) as response:
                self._raise_for_status(response, ctx)
                yield from _events(response, ctx, state)
        except BedrockMistralError:
            raise
        except TRANSPORT_ERRORS as err:
            if state.reason is None:
                raise map_transport(err, ctx) from err
            # The answer was complete (finish reason seen); only the tail failed.
            logger.debug("stream failed after its finish reason (%s); answer kept", err)
        if state.reason is None:
            logger.debug("stream from %s ended without a finish reason", self.base_url)
            return
        elapsed = (time.perf_counter() - started) * 1000.0
        yield StreamEnd(
            stop_reason=state.reason,
            usage=state.usage or Usage(),
            latency_ms=elapsed,
            first_byte_latency_ms=state.first_ms,
        )

    # -- token counts ----------------------------------------------------------------------

    def token_count(self, prompt: str, spec: ModelSpec | None = None) -> TokenCount:
        """Tokens of ``prompt``: the engine's own count where it has ``/tokenize`` (vLLM,
        llama.cpp), else our tokenizer or our estimate for ``spec``, labelled as such."""
        from bedrock_mistral.models import resolve_model
        from bedrock_mistral.tokens import PromptCounter

        spec = spec or resolve_model("mistral-7b")
        counted = self._engine_count(prompt, self.engine_name(spec))
        if counted is not None:
            return TokenCount(counted, "engine")
        counter = PromptCounter(spec, None)
        return TokenCount(
            counter.count_prompt(prompt), "tokenizer" if counter.exact else "estimate"
        )

    def _engine_count(self, prompt: str, model: str) -> int | None:
        from bedrock_mistral.backends.openai_errors import TRANSPORT_ERRORS
        from bedrock_mistral.backends.openai_wire import raw_prompt

        root = self.base_url.removesuffix("/v1")
        text = raw_prompt(prompt, self.preset.engine_bos)  # what raw mode would send
        # vLLM reads "prompt" and answers "count"; llama-server reads "content" and answers
        # "tokens"; llama-cpp-python's server reads "input" and answers "count".
        body: dict[str, Any] = {"model": model, "prompt": text, "content": text, "input": text}
        body["add_special"] = True  # llama-server: count the BOS it adds, as the others do
        for path in self.preset.tokenize_paths:
            try:
                response = self._client().post(root + path, json=body)
                data = response.json() if response.status_code < 400 else None
            except TRANSPORT_ERRORS as err:
                logger.debug("the engine cannot count tokens at %s (%s)", path, err)
                continue
            if not isinstance(data, dict):
                continue
            if isinstance(data.get("count"), int):
                return int(data["count"])
            tokens = data.get("tokens")
            if isinstance(tokens, list):
                return len(tokens)
        return None


@dataclass
class _StreamState:
    reason: StopReason | None = None
    usage: Usage | None = None
    first_ms: float | None = None


def _events(
    response: httpx.Response, ctx: CallContext, state: _StreamState
) -> Iterator[TextDelta | StreamEnd]:
    from bedrock_mistral.backends.openai_errors import map_status
    from bedrock_mistral.backends.openai_wire import parse_chunk, sse_data

    started = time.perf_counter()
    for data in sse_data(response.iter_lines()):
        if data is None:  # [DONE]
            state.reason = state.reason or "stop"
            return
        if "error" in data:  # an engine failing mid-stream (vLLM sends it as an event)
            error = map_status(500, _json_bytes(data), {}, ctx)
            raise error
        chunk = parse_chunk(data)
        if chunk.text:
            if state.first_ms is None:
                state.first_ms = (time.perf_counter() - started) * 1000.0
            yield TextDelta(text=chunk.text)
        state.reason = chunk.stop_reason or state.reason
        state.usage = chunk.usage or state.usage


def _json_bytes(data: dict[str, Any]) -> bytes:
    import json

    return json.dumps(data).encode()


class OllamaBackend(OpenAIBackend):
    """Ollama's OpenAI API: http://localhost:11434/v1, ``mistral:7b-instruct`` for mistral-7b."""

    name = "ollama"
    preset = PRESETS["ollama"]


class VLLMBackend(OpenAIBackend):
    """vLLM's server: http://localhost:8000/v1, Hugging Face repo ids as model names."""

    name = "vllm"
    preset = PRESETS["vllm"]


class LlamaCppBackend(OpenAIBackend):
    """llama.cpp's ``llama-server``: http://localhost:8080/v1 (it serves the model it loaded)."""

    name = "llamacpp"
    preset = PRESETS["llamacpp"]
