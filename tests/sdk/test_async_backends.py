"""The async adapters: sync backends in worker threads (one at a time per local model),
echo on the loop, stream rules over a scripted backend, cancellation that stops generation."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from bedrock_mistral import AsyncMistralClient, RetryPolicy, errors
from bedrock_mistral.backends.aio import InlineBackend, ThreadedBackend, to_async
from bedrock_mistral.backends.factory import create_async_backend
from bedrock_mistral.types import CompletionRequest, StreamEnd, TextDelta, Usage
from tests.helpers.backends import Drop, Fail, GreedyBackend, SleepRecorder

pytestmark = pytest.mark.asyncio

ANSWER = " alpha beta gamma delta epsilon zeta"


def client_with(backend: object, **policy: object) -> AsyncMistralClient:
    return AsyncMistralClient(backend=backend, retry=RetryPolicy(sleep=SleepRecorder(), **policy))  # type: ignore[arg-type]


async def read(stream: object) -> str:
    return "".join([text async for text in stream])  # type: ignore[attr-defined]


@dataclass
class SlowBackend:
    """Yields a word every ``pause`` seconds; records how many streams run at once."""

    pause: float = 0.02
    words: int = 1000
    name: str = "slow"
    running: int = 0
    peak: int = 0
    started: int = 0
    closed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def complete(self, request: CompletionRequest) -> object:
        raise NotImplementedError

    def stream(self, request: CompletionRequest) -> Iterator[TextDelta | StreamEnd]:
        with self.lock:
            self.started += 1
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            for _ in range(self.words):
                time.sleep(self.pause)
                yield TextDelta(text=" w")
            yield StreamEnd(stop_reason="stop", usage=Usage())
        finally:
            with self.lock:
                self.running -= 1
                self.closed += 1


async def test_the_factory_picks_each_backends_async_face() -> None:
    assert isinstance(create_async_backend("echo"), InlineBackend)
    assert isinstance(create_async_backend(GreedyBackend()), ThreadedBackend)
    native = InlineBackend(GreedyBackend())
    assert create_async_backend(native) is native  # already async: used as is
    assert to_async(native) is native


@pytest.mark.parametrize(
    "failure",
    [Fail(errors.ThrottledError("busy")), Fail(errors.APIConnectionError("reset")), Drop(after=0)],
    ids=["throttled", "reset", "empty-drop"],
)
async def test_failure_before_the_first_delta_is_retried(failure: Fail | Drop) -> None:
    backend = GreedyBackend(answer=ANSWER, script=[failure, failure])
    stream = client_with(backend).stream("q")
    assert await read(stream) == ANSWER
    assert len(backend.calls) == 3 and stream.resumes == 0


@pytest.mark.parametrize(
    ("failure", "cause"),
    [
        (Fail(errors.ModelStreamError("boom"), after=2), errors.ModelStreamError),
        (Drop(after=2), errors.APIConnectionError),
    ],
    ids=["model-stream-error", "no-stop-reason"],
)
async def test_failure_after_text_is_never_restarted_silently(
    failure: Fail | Drop, cause: type[Exception]
) -> None:
    backend = GreedyBackend(answer=ANSWER, script=[failure])
    stream = client_with(backend).stream("q")
    seen: list[str] = []
    with pytest.raises(errors.StreamInterrupted) as info:
        async for text in stream:
            seen.append(text)
    assert seen == [" alpha", " beta"] and info.value.partial_text == " alpha beta"
    assert isinstance(info.value.__cause__, cause)
    assert len(backend.calls) == 1 and stream.completion is None


@pytest.mark.parametrize(
    "script",
    [[Drop(after=1)], [Drop(after=1), Drop(after=2), Drop(after=1)]],
    ids=["drop", "three-drops"],
)
async def test_resume_produces_the_uninterrupted_text(script: list[Fail | Drop]) -> None:
    backend = GreedyBackend(answer=ANSWER, script=script)
    stream = client_with(backend).stream("q", max_tokens=50, resume=True)
    assert await read(stream) == ANSWER
    assert stream.completion is not None and stream.completion.text == ANSWER
    assert stream.resumes == len(script) == len(backend.calls) - 1


async def test_chat_complete_and_conversation_through_a_thread() -> None:
    backend = GreedyBackend()
    client = client_with(backend)
    assert (await client.chat("hello there")).text == " hello there"
    chat = client.conversation(system="Be brief.", max_tokens=20)
    assert (await chat.send("first")).text == " first"
    async with chat.stream("second") as stream:
        assert await read(stream) == " second"
    assert [m.role for m in chat.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert await client.count_tokens("hello there") > 0


async def test_echo_runs_on_the_loop() -> None:
    client = AsyncMistralClient(backend="echo")
    assert isinstance(client.backend, InlineBackend)
    async with client.stream("one two three") as stream:
        assert [text async for text in stream] == ["one", " two", " three"]
    assert stream.completion is not None and stream.completion.backend == "echo"


async def test_cancelling_stops_the_generation_in_its_thread() -> None:
    backend = SlowBackend()
    client = client_with(backend)

    async def consume() -> None:
        async for _ in client.stream("go"):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.2)
    assert backend.running == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert backend.running == 0 and backend.closed == 1  # stopped, its finally ran


async def test_one_generation_at_a_time_per_model_others_queue() -> None:
    backend = SlowBackend(pause=0.005, words=10)
    worker = concurrent.futures.ThreadPoolExecutor(max_workers=1)  # as the local model's
    client = client_with(ThreadedBackend(backend, executor=worker))
    texts = await asyncio.gather(*(read(client.stream(f"q{i}")) for i in range(4)))
    assert texts == [" w" * 10] * 4
    assert backend.peak == 1 and backend.started == 4

    # A queued call that is cancelled before its turn never starts.
    slow = SlowBackend(pause=0.01, words=30)
    client = client_with(ThreadedBackend(slow, executor=worker))
    first = asyncio.create_task(read(client.stream("first")))
    await asyncio.sleep(0.05)
    queued = asyncio.create_task(read(client.stream("queued")))
    await asyncio.sleep(0.05)
    queued.cancel()
    assert await first == " w" * 30
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert slow.started == 1
    worker.shutdown()


async def test_the_local_backend_uses_one_worker_per_model() -> None:
    pytest.importorskip("torch", reason="needs the local extra: pip install -e '.[local]'")
    from bedrock_mistral.backends.local import LocalBackend

    first, second = LocalBackend().async_backend(), LocalBackend().async_backend()
    assert isinstance(first, ThreadedBackend) and isinstance(second, ThreadedBackend)
    assert first._executor is second._executor
