"""``AsyncMistralClient``: :class:`~bedrock_mistral.client.MistralClient` for asyncio.

>>> client = AsyncMistralClient(model="mixtral-8x7b")                  # doctest: +SKIP
>>> reply = await client.chat("Name three rivers.", max_tokens=200)      # doctest: +SKIP
>>> async with client.stream("Tell me a joke") as stream:               # doctest: +SKIP
...     async for text in stream:
...         print(text, end="")

The same constructor, methods and types as the sync client. Everything that does not
touch the network is the sync client's own code, run on a private ``MistralClient``:
model resolution, the backend factory, parameter and conversation validation, prompt
formatting and the context-window check (``prepare`` stays sync: it sends nothing),
the checks on tools, and the non-I/O halves of ``parse`` (:class:`~.structured.StructuredAsk`)
and ``run_tools`` (:class:`~.tool_turns.ToolRounds`), which this client drives with ``await``.
What differs is how requests go out: through an
:class:`~bedrock_mistral.backends.aio.AsyncBackend` (Bedrock natively over aiohttp, echo
on the loop, the local model and other backends in worker threads), under the same
:class:`~bedrock_mistral.retry.RetryPolicy` with ``await``-ed waits.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from bedrock_mistral.astreaming import AsyncStream
from bedrock_mistral.backends.aio import ThreadedBackend
from bedrock_mistral.client import DEFAULT_MAX_ROUNDS, Messages, MistralClient, Tools, _messages
from bedrock_mistral.conversation import ConversationState, TrimCallback
from bedrock_mistral.retry import RetryPolicy, acall_with_retry
from bedrock_mistral.structured import MAX_ATTEMPTS, StructuredAsk
from bedrock_mistral.tool_turns import ToolRounds, ToolRun
from bedrock_mistral.types import Completion, CompletionRequest, ToolChoice

if TYPE_CHECKING:
    from bedrock_mistral.backends.aio import AsyncBackend
    from bedrock_mistral.backends.base import Backend
    from bedrock_mistral.batch.arunner import AsyncBatchRun
    from bedrock_mistral.models import ModelSpec
    from bedrock_mistral.prompt import MessageLike
    from bedrock_mistral.tokens import PromptCounter

__all__ = ["AsyncConversation", "AsyncMistralClient", "AsyncStream"]

T = TypeVar("T")


class AsyncMistralClient:
    """Mistral chat completions for asyncio; arguments as :class:`MistralClient`'s.

    ``backend`` also takes an object implementing
    :class:`~bedrock_mistral.backends.aio.AsyncBackend`. One client is safe to share
    between the tasks of one event loop.
    """

    def __init__(
        self,
        model: str | ModelSpec | None = None,
        backend: str | Backend | AsyncBackend | None = None,
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
        from bedrock_mistral.backends.factory import create_async_backend

        # Validation and request building are the sync client's; it never sends anything.
        self._core = MistralClient(
            model,
            backend,  # type: ignore[arg-type]  # an async object passes the factory as is
            region=region,
            profile=profile,
            endpoint_url=endpoint_url,
            max_attempts=max_attempts,
            retry=retry,
            local_model=local_model,
            strict_prompts=strict_prompts,
            stream_idle_timeout=stream_idle_timeout,
            **backend_options,
        )
        self.retry: RetryPolicy = self._core.retry
        self.backend: AsyncBackend = create_async_backend(self._core.backend)
        # Backends in worker threads may block while preparing (the local model loads and
        # tokenizes): their preparation runs off the loop too.
        self._prepare_off_loop = isinstance(self.backend, ThreadedBackend)

    def __repr__(self) -> str:
        return f"AsyncMistralClient(model={self.model_id!r}, backend={self.backend.name!r})"

    async def __aenter__(self) -> AsyncMistralClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Release the backend's connections (when it has any)."""
        aclose = getattr(self.backend, "aclose", None)
        if callable(aclose):
            await aclose()
        self._core.close()

    @property
    def model(self) -> ModelSpec:
        return self._core.model

    @property
    def counter(self) -> PromptCounter:
        return self._core.counter

    @property
    def strict_prompts(self) -> bool:
        return self._core.strict_prompts

    @property
    def model_id(self) -> str:
        return self._core.model_id

    # -- requests (no I/O: the sync client's code) -----------------------------------------

    def prepare(
        self,
        messages: Messages,
        *,
        continue_final: bool = False,
        tools: Tools | None = None,
        tool_choice: ToolChoice | None = None,
        **params: Any,
    ) -> CompletionRequest:
        """Validate and format a conversation into the request a backend receives. Sends nothing."""
        return self._core.prepare(
            messages, continue_final=continue_final, tools=tools, tool_choice=tool_choice, **params
        )

    def prepare_prompt(self, prompt: str, **params: Any) -> CompletionRequest:
        """Like :meth:`prepare` for a raw, already formatted prompt string."""
        return self._core.prepare_prompt(prompt, **params)

    def check_context_window(self, request: CompletionRequest) -> int:
        """Raise :class:`ContextWindowError` unless prompt + max_tokens fit."""
        return self._core.check_context_window(request)

    async def count_tokens(self, messages: Messages) -> int:
        """Prompt tokens of a conversation (exact when a tokenizer is available)."""
        return await self._off_loop(lambda: self._core.count_tokens(messages))

    async def _off_loop(self, work: Callable[[], T]) -> T:
        if self._prepare_off_loop:
            return await asyncio.to_thread(work)
        return work()

    # -- calls -----------------------------------------------------------------------------

    async def chat(
        self,
        messages: Messages,
        *,
        continue_final: bool = False,
        tools: Tools | None = None,
        tool_choice: ToolChoice | None = None,
        **params: Any,
    ) -> Completion:
        """Send a conversation; return the reply (arguments as :meth:`MistralClient.chat`)."""
        request = await self._off_loop(
            lambda: self.prepare(
                messages,
                continue_final=continue_final,
                tools=tools,
                tool_choice=tool_choice,
                **params,
            )
        )
        return await self.invoke(request)

    async def parse(self, messages: Messages, schema: type[T], **params: Any) -> T:
        """Ask for JSON fitting ``schema`` and return it validated (as :meth:`MistralClient.parse`).

        Raises :class:`~bedrock_mistral.errors.ParseError` when the answer still does
        not fit after one repair request.
        """
        ask = StructuredAsk(schema, self.model)
        turns = ask.first_turns(_messages(messages))
        for _ in range(MAX_ATTEMPTS):
            completion = await self.chat(turns, continue_final=ask.continue_final, **params)
            outcome = ask.read(completion.text)
            if outcome.ok:
                return outcome.value  # type: ignore[return-value]  # ok: validated
            turns = ask.repair_turns(turns, outcome)
        raise ask.failure(outcome)

    async def run_tools(
        self,
        messages: Messages,
        tools: Tools,
        *,
        max_rounds: int = DEFAULT_MAX_ROUNDS,
        tool_choice: ToolChoice | None = None,
        **params: Any,
    ) -> ToolRun:
        """Chat, run the functions the model calls, send their results; repeat.

        As :meth:`MistralClient.run_tools`; an ``async def`` tool is awaited, a sync one
        runs in a worker thread, so a slow tool never blocks the loop. The calls of one
        reply run one after the other, in the reply's order.
        """
        rounds = ToolRounds(_messages(messages), tools, max_rounds)
        for _ in range(max_rounds):
            completion = await self.chat(
                rounds.transcript, tools=rounds.toolset, tool_choice=tool_choice, **params
            )
            if (run := rounds.reply(completion)) is not None:
                return run
            for call in completion.tool_calls:
                rounds.transcript.append(await rounds.toolset.arun(call))
        raise rounds.exhausted()

    async def complete(self, prompt: str, **params: Any) -> Completion:
        """Send a raw prompt string as is (you write the ``[INST]`` format yourself)."""
        request = await self._off_loop(lambda: self.prepare_prompt(prompt, **params))
        return await self.invoke(request)

    def stream(
        self,
        messages: Messages,
        *,
        resume: bool = False,
        continue_final: bool = False,
        tools: Tools | None = None,
        tool_choice: ToolChoice | None = None,
        **params: Any,
    ) -> AsyncStream:
        """Stream the reply: ``async with client.stream(...) as s: async for text in s``.

        Validated here, like the sync client; nothing is sent until you iterate.
        ``resume=True`` continues an interrupted stream instead of raising
        :class:`~bedrock_mistral.errors.StreamInterrupted`. ``tools`` are refused here,
        before sending, as by :meth:`MistralClient.stream`.
        """
        request = self._core._prepare(messages, continue_final, tools, tool_choice, True, params)
        return self.invoke_stream(request, resume=resume)

    async def invoke(self, request: CompletionRequest) -> Completion:
        """Send a prepared request under the retry policy."""
        completion = await acall_with_retry(
            self.retry,
            lambda: self.backend.complete(request),
            operation=f"{self.backend.name} complete",
        )
        return self._core._finish(completion, request)

    def invoke_stream(
        self,
        request: CompletionRequest,
        *,
        resume: bool = False,
        on_complete: Callable[[Completion], None] | None = None,
    ) -> AsyncStream:
        """Stream a prepared request. Nothing is sent until you start iterating."""
        return AsyncStream(
            backend=self.backend,
            request=request,
            policy=self.retry,
            counter=self.counter,
            resume=resume,
            finish=lambda completion: self._core._finish(completion, request),
            on_complete=on_complete,
        )

    def batch(self, records: Iterable[Any], **options: Any) -> AsyncBatchRun:
        """Run many records concurrently: ``await`` it for every result, or ``async for``
        each as it completes. Options as :meth:`MistralClient.batch`, plus ``output``: a
        JSONL file results are appended to as they finish; records already in it are
        skipped, so running the same call again resumes."""
        from bedrock_mistral.batch.arunner import arun_batch

        return arun_batch(self, records, **options)

    def conversation(self, system: str | None = None, **params: Any) -> AsyncConversation:
        """An :class:`AsyncConversation` on this client; ``params`` apply to every turn."""
        return AsyncConversation(self, system=system, **params)


class AsyncConversation(ConversationState):
    """A :class:`~bedrock_mistral.conversation.Conversation` whose turns are awaited."""

    client: AsyncMistralClient

    def __init__(
        self,
        client: AsyncMistralClient,
        *,
        system: str | None = None,
        messages: Sequence[MessageLike] = (),
        on_trim: TrimCallback | None = None,
        **params: Any,
    ) -> None:
        super().__init__(client, system=system, messages=messages, on_trim=on_trim, **params)

    async def send(self, text: str, **params: Any) -> Completion:
        """Add a user turn, get the reply, keep both in the history."""
        request, dropped, user = await self.client._off_loop(lambda: self._plan(text, params))
        completion = await self.client.invoke(request)
        self._commit(dropped, user, completion)
        return completion

    def stream(self, text: str, *, resume: bool = False, **params: Any) -> AsyncStream:
        """Like :meth:`send`, streamed; the history is updated once the stream completes."""
        request, dropped, user = self._plan(text, params)
        return self.client.invoke_stream(
            request,
            resume=resume,
            on_complete=lambda completion: self._commit(dropped, user, completion),
        )
