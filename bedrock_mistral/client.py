"""``MistralClient``: validate, format, send with retries; the same code for every backend.

>>> client = MistralClient(model="mixtral-8x7b")                  # Amazon Bedrock
>>> reply = client.chat([{"role": "user", "content": "Name three rivers."}], max_tokens=200)
>>> reply.text, reply.usage, reply.cost_usd
>>> for text in client.stream("Tell me a joke"):                   # a str is one user turn
...     print(text, end="")
>>> MistralClient(model="mixtral-8x7b", backend="local")            # same calls, offline

Everything is checked before the network: parameters against the model's limits, the
conversation against the prompt template, prompt plus ``max_tokens`` against the
context window. One client is safe to share between threads.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from bedrock_mistral.backends.base import Backend
from bedrock_mistral.conversation import Conversation
from bedrock_mistral.errors import ConfigurationError, ContextWindowError, Fix, ValidationError
from bedrock_mistral.models import DEFAULT_MODEL, ModelSpec, resolve_model
from bedrock_mistral.prompt import MessageLike, format_prompt, to_messages
from bedrock_mistral.retry import DEFAULT_MAX_ATTEMPTS, RetryPolicy, call_with_retry
from bedrock_mistral.streaming import Stream
from bedrock_mistral.structured import MAX_ATTEMPTS, StructuredAsk
from bedrock_mistral.tokens import PromptCounter
from bedrock_mistral.tool_turns import ToolRounds, ToolRun, offer_tools, text_view
from bedrock_mistral.tools import ToolLike, Toolset
from bedrock_mistral.types import Completion, CompletionRequest, Message, ToolChoice
from bedrock_mistral.validation import check_conversation, resolve_values

if TYPE_CHECKING:
    from bedrock_mistral.batch import BatchRun

__all__ = ["Conversation", "MistralClient", "Stream", "ToolRun"]

T = TypeVar("T")
DEFAULT_MAX_ROUNDS = 5

logger = logging.getLogger(__name__)

ENV_MODEL = "BEDROCK_MISTRAL_MODEL"
ENV_BACKEND = "BEDROCK_MISTRAL_BACKEND"
ENV_LOCAL_MODEL = "BEDROCK_MISTRAL_LOCAL_MODEL"
DEFAULT_BACKEND = "bedrock"

Messages = str | Sequence[MessageLike]
Tools = Toolset | Sequence[ToolLike]


_TOO_LONG = Fix(
    "shorten the conversation, lower max_tokens, or use a Conversation, which drops the "
    "oldest turns for you",
    cli="shorten the prompt, or lower max_tokens (-o max_tokens=N)",
)


def _messages(messages: Messages) -> list[Message]:
    if isinstance(messages, str):
        return [Message(role="user", content=messages)]
    if isinstance(messages, Mapping | Message):
        raise ValidationError(
            "messages must be a list of messages (or a str for one user turn), "
            "not a single message",
            field="messages",
            value=messages,
            allowed="a list of {'role', 'content'} dicts or Message objects",
        )
    if not isinstance(messages, Iterable):
        raise ValidationError(
            f"messages must be a list of messages or a str, not {type(messages).__name__}",
            field="messages",
            value=messages,
            allowed="a list of {'role', 'content'} dicts or Message objects",
        )
    return to_messages(messages)


class MistralClient:
    """Mistral chat completions on Bedrock, the local model, or any backend object.

    ``model``: an alias (``mistral-7b``, ``mixtral-8x7b``, ...), a Bedrock model id, an
    inference-profile id or an ARN (default: ``$BEDROCK_MISTRAL_MODEL`` or mistral-7b).
    ``backend``: ``"bedrock"``, ``"local"``, ``"echo"``, a name an installed plugin
    registers (entry-point group ``bedrock_mistral.backends``), ``package.module:attribute``,
    or an object implementing :class:`~bedrock_mistral.backends.base.Backend` (default:
    ``$BEDROCK_MISTRAL_BACKEND`` or bedrock); see
    :func:`~bedrock_mistral.backends.factory.create_backend`. Options that do not apply to
    the chosen backend are ignored, so switching backend is a one-argument change.
    """

    def __init__(
        self,
        model: str | ModelSpec | None = None,
        backend: str | Backend | None = None,
        *,
        region: str | None = None,
        profile: str | None = None,
        endpoint_url: str | None = None,
        max_attempts: int | None = None,
        retry: RetryPolicy | None = None,
        local_model: str | os.PathLike[str] | None = None,
        strict_prompts: bool = False,
        stream_idle_timeout: float | None = None,
        **backend_options: Any,
    ) -> None:
        name = None if isinstance(model, ModelSpec) else (model or os.environ.get(ENV_MODEL))
        registry, unknown = _registry_model(model if isinstance(model, ModelSpec) else name)
        self.retry = _retry_policy(retry, max_attempts)
        self.strict_prompts = strict_prompts
        self.backend: Backend = _backend(
            backend,
            {
                "region": region,
                "profile": profile,
                "endpoint_url": endpoint_url,
                "stream_idle_timeout": stream_idle_timeout,
                "model_path": local_model or os.environ.get(ENV_LOCAL_MODEL) or None,
                **backend_options,
            },
        )
        self.model: ModelSpec = _model_for(self.backend, name, registry, unknown)
        self.counter = PromptCounter(self.model, self.backend)

    def __repr__(self) -> str:
        return f"MistralClient(model={self.model.model_id!r}, backend={self.backend.name!r})"

    def __enter__(self) -> MistralClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the backend's connections (when it has any)."""
        close = getattr(self.backend, "close", None)
        if callable(close):
            close()

    @property
    def model_id(self) -> str:
        return self.model.model_id

    # -- requests --------------------------------------------------------------------------

    def prepare(
        self,
        messages: Messages,
        *,
        continue_final: bool = False,
        tools: Tools | None = None,
        tool_choice: ToolChoice | None = None,
        **params: Any,
    ) -> CompletionRequest:
        """Validate and format a conversation into the request a backend receives. Sends nothing.

        ``tools`` (and tool turns, images) are checked against the model here; the prompt
        string is then the conversation's text view (:mod:`bedrock_mistral.tool_turns`).
        """
        return self._prepare(messages, continue_final, tools, tool_choice, False, params)

    def _prepare(
        self,
        messages: Messages,
        continue_final: bool,
        tools: Tools | None,
        tool_choice: ToolChoice | None,
        streaming: bool,
        params: Mapping[str, Any],
    ) -> CompletionRequest:
        turns = _messages(messages)
        offer = offer_tools(
            self.model, self.backend, turns, tools, tool_choice, streaming=streaming
        )
        view = text_view(turns)
        check_conversation(view, continue_final=continue_final)
        prompt = format_prompt(view, strict=self.strict_prompts, continue_final=continue_final)
        return offer.apply(self._request(prompt, params, turns))

    def prepare_prompt(self, prompt: str, **params: Any) -> CompletionRequest:
        """Like :meth:`prepare` for a raw, already formatted prompt string."""
        if not isinstance(prompt, str) or not prompt:
            raise ValidationError.out_of_range("prompt", prompt, "a non-empty string")
        # A raw prompt is one user turn only for chat-body models; for text models it is
        # already a whole conversation, and the prompt alone describes it.
        turns = [Message(role="user", content=prompt)] if self.model.dialect == "chat" else None
        return self._request(prompt, params, turns)

    def _request(
        self, prompt: str, params: Mapping[str, Any], turns: list[Message] | None
    ) -> CompletionRequest:
        resolved = resolve_values(self.model, params)
        request = CompletionRequest(
            model_id=self.model.model_id,
            prompt=prompt,
            max_tokens=resolved["max_tokens"],
            temperature=resolved["temperature"],
            top_p=resolved["top_p"],
            top_k=resolved["top_k"],
            stop=tuple(resolved["stop"]),
            # Kept for every model: chat-body models send them, and backends that answer
            # from the conversation (echo) need not parse the prompt back.
            messages=tuple(turns) if turns is not None else None,
            model=self.model,  # the dialect and limits travel with the request
        )
        self.check_context_window(request)
        return request

    def check_context_window(self, request: CompletionRequest) -> int:
        """Raise :class:`ContextWindowError` unless prompt + max_tokens fit.

        Returns the prompt's token count, or an upper bound of it when that bound already
        fits: counting exactly costs a tokenizer pass, which most requests do not need.
        """
        window = self.counter.context_window
        bound = self.counter.upper_bound(request.prompt)
        if bound is not None and bound + request.max_tokens <= window:
            return bound
        prompt_tokens = self.counter.count_prompt(request.prompt)
        if prompt_tokens + request.max_tokens > window:
            how = (
                ""
                if self.counter.exact
                else " (estimated; install bedrock-mistral[local] for exact counts)"
            )
            raise ContextWindowError(
                f"prompt ({prompt_tokens} tokens{how}) + max_tokens ({request.max_tokens}) = "
                f"{prompt_tokens + request.max_tokens} tokens does not fit the {window}-token "
                f"context window of {self.model.model_id}",
                prompt_tokens=prompt_tokens,
                max_tokens=request.max_tokens,
                context_window=window,
                fix=_TOO_LONG,
            )
        return prompt_tokens

    def count_tokens(self, messages: Messages) -> int:
        """Prompt tokens of a conversation (exact when a tokenizer is available)."""
        turns = _messages(messages)
        return self.counter.count_prompt(format_prompt(turns, strict=self.strict_prompts))

    # -- calls -----------------------------------------------------------------------------

    def chat(
        self,
        messages: Messages,
        *,
        continue_final: bool = False,
        tools: Tools | None = None,
        tool_choice: ToolChoice | None = None,
        **params: Any,
    ) -> Completion:
        """Send a conversation; return the reply.

        ``params``: max_tokens, temperature, top_p, top_k, stop.

        ``continue_final=True`` continues a final assistant message instead of answering.
        ``tools``: pydantic models, typed functions or JSON-schema dicts the model may
        call (Converse; ``reply.tool_calls``); ``tool_choice``: ``"auto"`` or ``"any"``.
        """
        request = self.prepare(
            messages,
            continue_final=continue_final,
            tools=tools,
            tool_choice=tool_choice,
            **params,
        )
        return self.invoke(request)

    def parse(self, messages: Messages, schema: type[T], **params: Any) -> T:
        """Ask for JSON fitting ``schema`` and return it validated (see :mod:`.structured`).

        >>> class City(BaseModel):
        ...     capital: str
        >>> client.parse("What is the capital of France?", schema=City).capital

        Raises :class:`~bedrock_mistral.errors.ParseError` when the answer still does
        not fit after one repair request.
        """
        ask = StructuredAsk(schema, self.model)
        turns = ask.first_turns(_messages(messages))
        for _ in range(MAX_ATTEMPTS):
            completion = self.chat(turns, continue_final=ask.continue_final, **params)
            outcome = ask.read(completion.text)
            if outcome.ok:
                return outcome.value  # type: ignore[return-value]  # ok: validated
            turns = ask.repair_turns(turns, outcome)
        raise ask.failure(outcome)

    def run_tools(
        self,
        messages: Messages,
        tools: Tools,
        *,
        max_rounds: int = DEFAULT_MAX_ROUNDS,
        tool_choice: ToolChoice | None = None,
        **params: Any,
    ) -> ToolRun:
        """Chat, run the Python functions the model calls, send their results; repeat.

        Returns the first reply without tool calls and the whole transcript. A call whose
        arguments do not fit its tool's schema is not run: the error goes back to the
        model as that call's result. :class:`~bedrock_mistral.errors.ToolRoundsError`
        after ``max_rounds`` replies that all called tools.
        """
        rounds = ToolRounds(_messages(messages), tools, max_rounds)
        for _ in range(max_rounds):
            completion = self.chat(
                rounds.transcript, tools=rounds.toolset, tool_choice=tool_choice, **params
            )
            if (run := rounds.reply(completion)) is not None:
                return run
            rounds.transcript.extend(rounds.toolset.run(call) for call in completion.tool_calls)
        raise rounds.exhausted()

    def complete(self, prompt: str, **params: Any) -> Completion:
        """Send a raw prompt string as is (you write the ``[INST]`` format yourself)."""
        return self.invoke(self.prepare_prompt(prompt, **params))

    def stream(
        self,
        messages: Messages,
        *,
        resume: bool = False,
        continue_final: bool = False,
        tools: Tools | None = None,
        tool_choice: ToolChoice | None = None,
        **params: Any,
    ) -> Stream:
        """Stream the reply. Iterate for text; ``.completion`` holds the result afterwards.

        ``resume=True`` continues an interrupted stream instead of raising
        :class:`~bedrock_mistral.errors.StreamInterrupted`. ``tools`` are refused here,
        before sending: no Mistral model on Bedrock takes tools in a stream.
        """
        request = self._prepare(messages, continue_final, tools, tool_choice, True, params)
        return self.invoke_stream(request, resume=resume)

    def invoke(self, request: CompletionRequest) -> Completion:
        """Send a prepared request under the retry policy."""
        completion = call_with_retry(
            self.retry,
            lambda: self.backend.complete(request),
            operation=f"{self.backend.name} complete",
        )
        return self._finish(completion, request)

    def invoke_stream(
        self,
        request: CompletionRequest,
        *,
        resume: bool = False,
        on_complete: Callable[[Completion], None] | None = None,
    ) -> Stream:
        """Stream a prepared request. Nothing is sent until you start iterating."""
        return Stream(
            backend=self.backend,
            request=request,
            policy=self.retry,
            counter=self.counter,
            resume=resume,
            finish=lambda completion: self._finish(completion, request),
            on_complete=on_complete,
        )

    def batch(self, records: Iterable[Any], **options: Any) -> BatchRun:
        """Run many records concurrently; iterate the result for each as it completes.

        ``records``: dicts like batch JSONL lines (``{"id", "prompt" | "messages", ...}``)
        or prompt strings. ``options``: ``concurrency``, ``adaptive``, ``max_attempts``,
        ``params``, ``skip`` (see :func:`bedrock_mistral.batch.run_batch`).
        """
        from bedrock_mistral.batch import run_batch

        return run_batch(self, records, **options)

    def conversation(self, system: str | None = None, **params: Any) -> Conversation:
        """A :class:`Conversation` on this client; ``params`` apply to every turn."""
        return Conversation(self, system=system, **params)

    def _finish(self, completion: Completion, request: CompletionRequest) -> Completion:
        update: dict[str, Any] = {"model_id": request.model_id}
        if completion.cost_usd is None and self.backend.name == "bedrock":
            update["cost_usd"] = self.model.cost_usd(completion.usage)
        return completion.model_copy(update=update)


def _retry_policy(retry: RetryPolicy | None, max_attempts: int | None) -> RetryPolicy:
    if retry is None:
        return RetryPolicy(
            max_attempts=DEFAULT_MAX_ATTEMPTS if max_attempts is None else max_attempts
        )
    if not isinstance(retry, RetryPolicy):
        raise ConfigurationError(f"retry={retry!r} is not allowed: a RetryPolicy or None")
    if max_attempts is not None and max_attempts != retry.max_attempts:
        raise ConfigurationError(
            f"max_attempts={max_attempts} conflicts with retry=RetryPolicy(max_attempts="
            f"{retry.max_attempts}); pass only one of them"
        )
    return retry


def _registry_model(
    model: str | ModelSpec | None,
) -> tuple[ModelSpec | None, ValidationError | None]:
    """The registry's spec for ``model``, or the error saying it has none (kept for later:
    a backend that serves models by its own names may know it)."""
    if isinstance(model, ModelSpec):
        return model, None
    try:
        return resolve_model(model or DEFAULT_MODEL), None
    except ValidationError as err:
        return None, err


def _model_for(
    backend: Backend,
    name: str | None,
    registry: ModelSpec | None,
    unknown: ValidationError | None,
) -> ModelSpec:
    """The client's model: the registry's spec; for a name the registry does not list,
    the backend's own (``model_spec(name)``: an engine serving ``mistral:7b-instruct``)."""
    if registry is not None and (registry.known or name is None):
        return registry
    model_spec = getattr(backend, "model_spec", None)
    if name is not None and callable(model_spec):
        spec: ModelSpec = model_spec(name)
        return spec
    if registry is not None:
        return registry  # a Bedrock id the registry does not list yet: passed through
    assert unknown is not None
    raise unknown


def _backend(backend: str | Backend | None, options: dict[str, Any]) -> Backend:
    from bedrock_mistral.backends.factory import create_backend

    return create_backend(backend or os.environ.get(ENV_BACKEND) or DEFAULT_BACKEND, options)
