"""Pure translation between our request and Bedrock's Converse / ConverseStream (no I/O).

Used for requests that carry what only Converse carries (tools, tool turns, images);
everything else keeps InvokeModel (:mod:`.bedrock_wire`). The parameters are boto3's
``converse(**params)`` keyword arguments, which botocore validates against the service
model before sending.

How our turns map to content blocks:

- ``system`` -> ``system=[{"text"}]``;
- ``user`` -> ``{"text"}`` plus one ``{"image": {"format", "source": {"bytes"}}}`` per image;
- ``assistant`` with tool calls -> one ``{"toolUse": {"toolUseId", "name", "input"}}``
  per call, and its text left out (Mistral refuses text and toolUse in one turn);
- consecutive ``tool`` turns -> one user message of ``{"toolResult": {"toolUseId",
  "content": [{"text"}], "status": "success" | "error"}}`` blocks.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bedrock_mistral.errors import APIError
from bedrock_mistral.types import (
    Completion,
    CompletionRequest,
    Message,
    StopReason,
    StreamEnd,
    TextDelta,
    ToolCall,
    Usage,
)

__all__ = [
    "ConverseReply",
    "ConverseTally",
    "converse_params",
    "parse_converse",
    "stream_events",
]

# Converse's stopReason -> ours; anything unknown (guardrails, filters) ends the answer.
_STOP_REASONS: dict[str, StopReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_use",
}
_EMPTY_RESULT = "(no output)"  # Converse refuses a blank text block


@dataclass(frozen=True)
class ConverseReply:
    text: str
    stop_reason: StopReason
    tool_calls: tuple[ToolCall, ...]
    usage: Usage
    latency_ms: float | None

    def completion(self, request: CompletionRequest, backend: str, wall_ms: float) -> Completion:
        """Our :class:`Completion` (``wall_ms`` stands in when Bedrock reports no latency)."""
        return Completion(
            text=self.text,
            stop_reason=self.stop_reason,
            usage=self.usage,
            model_id=request.model_id,
            backend=backend,
            latency_ms=self.latency_ms if self.latency_ms is not None else wall_ms,
            tool_calls=self.tool_calls,
        )


def _user_blocks(message: Message) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [{"text": message.content}] if message.content else []
    blocks += [
        {"image": {"format": image.format, "source": {"bytes": image.data}}}
        for image in message.images
    ]
    return blocks


def _assistant_blocks(message: Message) -> list[dict[str, Any]]:
    if not message.tool_calls:
        return [{"text": message.content}]
    return [
        {"toolUse": {"toolUseId": call.id, "name": call.name, "input": call.arguments}}
        for call in message.tool_calls
    ]


def _result_block(message: Message) -> dict[str, Any]:
    return {
        "toolResult": {
            "toolUseId": message.tool_call_id,
            "content": [{"text": message.content or _EMPTY_RESULT}],
            "status": "error" if message.is_error else "success",
        }
    }


def _messages(turns: Sequence[Message]) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """(system blocks, Converse messages)."""
    system: list[dict[str, str]] = []
    messages: list[dict[str, Any]] = []
    for message in turns:
        if message.role == "system":
            system.append({"text": message.content})
        elif message.role == "tool" and messages and messages[-1]["role"] == "tool":
            messages[-1]["content"].append(_result_block(message))
        elif message.role == "tool":
            messages.append({"role": "tool", "content": [_result_block(message)]})
        elif message.role == "user":
            messages.append({"role": "user", "content": _user_blocks(message)})
        else:
            messages.append({"role": "assistant", "content": _assistant_blocks(message)})
    for block in messages:  # tool results travel in a user turn
        if block["role"] == "tool":
            block["role"] = "user"
    return system, messages


def _tool_config(request: CompletionRequest) -> dict[str, Any]:
    tools = []
    for tool in request.tools:
        spec: dict[str, Any] = {"name": tool.name, "inputSchema": {"json": tool.input_schema}}
        if tool.description:  # ToolSpecification.description: at least one character
            spec["description"] = tool.description
        tools.append({"toolSpec": spec})
    config: dict[str, Any] = {"tools": tools}
    if request.tool_choice is not None:
        config["toolChoice"] = {request.tool_choice: {}}
    return config


def converse_params(request: CompletionRequest, model_id: str) -> dict[str, Any]:
    """boto3 ``converse`` / ``converse_stream`` keyword arguments for ``request``."""
    turns = request.messages or (Message(role="user", content=request.prompt),)
    system, messages = _messages(turns)
    inference: dict[str, Any] = {"maxTokens": request.max_tokens}
    if request.temperature is not None:
        inference["temperature"] = request.temperature
    if request.top_p is not None:
        inference["topP"] = request.top_p
    if request.stop:
        inference["stopSequences"] = list(request.stop)
    params: dict[str, Any] = {
        "modelId": model_id,
        "messages": messages,
        "inferenceConfig": inference,
    }
    if system:
        params["system"] = system
    if request.tools:
        params["toolConfig"] = _tool_config(request)
    if request.top_k is not None:  # Mistral's native field, merged into the model's body
        params["additionalModelRequestFields"] = {"top_k": request.top_k}
    return params


def _stop_reason(value: object) -> StopReason:
    return _STOP_REASONS.get(value, "stop") if isinstance(value, str) else "stop"


def _usage(usage: object) -> Usage:
    if not isinstance(usage, Mapping):
        return Usage()
    return Usage(
        input_tokens=int(usage.get("inputTokens", 0) or 0),
        output_tokens=int(usage.get("outputTokens", 0) or 0),
    )


def _latency(metrics: object) -> float | None:
    value = metrics.get("latencyMs") if isinstance(metrics, Mapping) else None
    return float(value) if isinstance(value, int | float) else None


def parse_converse(response: Mapping[str, Any]) -> ConverseReply:
    """A Converse response (boto3's parsed dict)."""
    try:
        content: Iterable[Mapping[str, Any]] = response["output"]["message"]["content"]
        text = "".join(block["text"] for block in content if "text" in block)
        calls = tuple(
            ToolCall(
                id=block["toolUse"]["toolUseId"],
                name=block["toolUse"]["name"],
                arguments=block["toolUse"].get("input") or {},
            )
            for block in content
            if "toolUse" in block
        )
    except (KeyError, TypeError) as err:
        raise APIError(
            f"Bedrock returned a Converse response this SDK cannot read: {str(response)[:200]}"
        ) from err
    return ConverseReply(
        text=text,
        stop_reason=_stop_reason(response.get("stopReason")),
        tool_calls=calls,
        usage=_usage(response.get("usage")),
        latency_ms=_latency(response.get("metrics")),
    )


class ConverseTally:
    """Reads ConverseStream events (boto3's parsed dicts) one by one; both transports feed it.

    ``reason`` stays None until ``messageStop``: a stream cut before that was interrupted.
    """

    __slots__ = ("latency_ms", "reason", "usage")

    def __init__(self) -> None:
        self.reason: StopReason | None = None
        self.usage = Usage()
        self.latency_ms: float | None = None

    def feed(self, event: Mapping[str, Any]) -> TextDelta | None:
        """One event; the text it carries, if any."""
        if "contentBlockDelta" in event:
            text = event["contentBlockDelta"].get("delta", {}).get("text")
            return TextDelta(text=text) if text else None
        if "messageStop" in event:
            self.reason = _stop_reason(event["messageStop"].get("stopReason"))
        elif "metadata" in event:
            self.usage = _usage(event["metadata"].get("usage"))
            self.latency_ms = _latency(event["metadata"].get("metrics"))
        return None

    def end(self) -> StreamEnd | None:
        """The stream's StreamEnd, or None when no ``messageStop`` arrived."""
        if self.reason is None:
            return None
        return StreamEnd(stop_reason=self.reason, usage=self.usage, latency_ms=self.latency_ms)


def stream_events(events: Iterable[Mapping[str, Any]]) -> Iterator[TextDelta | StreamEnd]:
    """ConverseStream events -> ours; a stream without ``messageStop`` ends without StreamEnd."""
    tally = ConverseTally()
    for event in events:
        delta = tally.feed(event)
        if delta is not None:
            yield delta
    end = tally.end()
    if end is not None:
        yield end
