"""Wire-level types shared by the client, every backend, the server and the CLI.

Field names follow Bedrock's Mistral text-completion body (``max_tokens``, ``top_p``,
``top_k``, ``stop``) so nothing needs translating on the way to the wire.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, InstanceOf, model_validator

from bedrock_mistral.models import ModelSpec, resolve_model

Role = Literal["system", "user", "assistant", "tool"]
StopReason = Literal["stop", "length", "tool_use"]
ImageFormat = Literal["png", "jpeg", "gif", "webp"]
ToolChoice = Literal["auto", "any"]
BackendName = str

__all__ = [
    "BackendName",
    "Completion",
    "CompletionRequest",
    "GenerationParams",
    "Image",
    "ImageFormat",
    "Message",
    "Role",
    "StopReason",
    "StreamEnd",
    "StreamEvent",
    "TextDelta",
    "ToolCall",
    "ToolChoice",
    "ToolSpec",
    "Usage",
]


class ToolCall(BaseModel):
    """A model's request to run one tool: Converse's ``toolUse`` block."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(description="toolUseId; a tool result answers it by this id.")
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class Image(BaseModel):
    """Image bytes in a user turn (Converse ``image`` block), for models that read images."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: ImageFormat
    data: bytes = Field(repr=False)


class ToolSpec(BaseModel):
    """A tool as the wire carries it: Converse's ``toolSpec`` (name, description, schema)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = ""
    input_schema: dict[str, Any]


class Message(BaseModel):
    """One turn of a conversation.

    Plain turns are ``role`` + ``content``. Tool use adds three optional fields: an
    assistant turn's ``tool_calls``; a ``"tool"`` turn carrying one call's result
    (``tool_call_id``, ``content``, ``is_error``); and ``images`` in a user turn.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    is_error: bool = False
    images: tuple[Image, ...] = ()

    @model_validator(mode="after")
    def _fields_fit_the_role(self) -> Message:
        if self.tool_calls and self.role != "assistant":
            raise ValueError("tool_calls belong to an assistant turn")
        if (self.role == "tool") != (self.tool_call_id is not None):
            raise ValueError("a 'tool' turn, and only a tool turn, has a tool_call_id")
        if self.images and self.role != "user":
            raise ValueError("images belong to a user turn")
        return self


class GenerationParams(BaseModel):
    """Sampling parameters; ``None`` means "the model's default".

    Bounds are checked against the chosen model by
    :func:`bedrock_mistral.validation.resolve_params`, not here: they differ per model.
    """

    model_config = ConfigDict(extra="forbid")

    max_tokens: int | None = Field(default=None, description="Most tokens to generate (>= 1).")
    temperature: float | None = Field(default=None, description="Randomness, 0 to 1.")
    top_p: float | None = Field(default=None, description="Nucleus sampling mass, 0 to 1.")
    top_k: int | None = Field(
        default=None, description="Sample among the k likeliest tokens, 1 to 200."
    )
    stop: list[str] | None = Field(default=None, description="Up to 10 stop sequences.")


class CompletionRequest(BaseModel):
    """What a backend receives: Bedrock's Mistral text-completion body plus routing facts.

    ``prompt`` is always the full ``[INST]``-formatted string. ``messages`` is kept for
    backends whose wire format is the chat ``messages`` body (Mistral Large 2407).

    ``model`` is the client's :class:`~bedrock_mistral.models.ModelSpec` (a reference,
    not a copy): the body dialect, the limits and the inference-profile facts a backend
    needs, so no backend looks ``model_id`` up again, and a spec the registry does not
    list (``MistralClient(model=ModelSpec(...))``) reaches the wire as given. Backends
    read it through :attr:`spec`, which falls back to the registry for a hand-built
    request.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_id: str
    prompt: str
    max_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: tuple[str, ...] = ()
    messages: tuple[Message, ...] | None = None
    # Tool use (Converse only): the tools offered and how the model may choose among them.
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice | None = None
    # InstanceOf: one isinstance check, no field-by-field copy (a request is built per call).
    model: InstanceOf[ModelSpec] | None = Field(default=None, repr=False, exclude=True)

    @property
    def uses_converse(self) -> bool:
        """Tools, tool turns or images: only Converse carries them, not the text body."""
        return bool(self.tools) or any(
            m.tool_calls or m.images or m.role == "tool" for m in self.messages or ()
        )

    @property
    def spec(self) -> ModelSpec:
        """The model's facts: the spec the request was built with, else the registry's."""
        return self.model if self.model is not None else resolve_model(self.model_id)

    def text_body(self) -> dict[str, object]:
        """The InvokeModel JSON body of the text-completion dialect."""
        body: dict[str, object] = {"prompt": self.prompt, "max_tokens": self.max_tokens}
        for key in ("temperature", "top_p", "top_k"):
            value = getattr(self, key)
            if value is not None:
                body[key] = value
        if self.stop:
            body["stop"] = list(self.stop)
        return body


class Usage(BaseModel):
    """Token counts of one request."""

    model_config = ConfigDict(frozen=True)

    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
        )


class Completion(BaseModel):
    """A finished reply."""

    model_config = ConfigDict(frozen=True)

    text: str
    stop_reason: StopReason
    usage: Usage = Field(default_factory=Usage)
    model_id: str
    backend: BackendName
    latency_ms: float = 0.0
    cost_usd: float | None = Field(
        default=None, description="On-demand list price of this call, if known."
    )
    tool_calls: tuple[ToolCall, ...] = Field(
        default=(), description='Tools the model asked to run (stop_reason "tool_use").'
    )


class TextDelta(BaseModel):
    """A piece of generated text, in order."""

    model_config = ConfigDict(frozen=True)

    type: Literal["text"] = "text"
    text: str


class StreamEnd(BaseModel):
    """The last event of every complete stream."""

    model_config = ConfigDict(frozen=True)

    type: Literal["end"] = "end"
    stop_reason: StopReason
    usage: Usage = Field(default_factory=Usage)
    latency_ms: float | None = None
    first_byte_latency_ms: float | None = None


StreamEvent = Annotated[TextDelta | StreamEnd, Field(discriminator="type")]
