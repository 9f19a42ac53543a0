"""Tools a model can call: from a pydantic model, a typed function or a JSON schema.

Each becomes a :class:`Tool`: the :class:`~bedrock_mistral.types.ToolSpec` the wire
carries (name, description, JSON schema) plus what checks a call's arguments against
that schema, and for a function, the function. A tool whose schema cannot be derived
(an untyped parameter, a type with no JSON schema) is refused here, when the request is
prepared, naming the parameter.

>>> def get_weather(city: str, unit: str = "C") -> str:
...     '''The current weather in a city.
...
...     Args:
...         city: the city's English name
...     '''
...     return f"18 {unit} and sunny in {city}"
>>> tool = to_tool(get_weather)
>>> tool.spec.input_schema["required"], tool.spec.description
(['city'], 'The current weather in a city.')
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Union, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, PydanticUserError, TypeAdapter, create_model
from pydantic import ValidationError as PydanticValidationError

from bedrock_mistral.errors import ToolCallError, ToolSchemaError
from bedrock_mistral.types import Message, ToolCall, ToolSpec

__all__ = ["Tool", "ToolLike", "Toolset", "error_lines", "to_tool"]

ToolLike = Union["Tool", type[BaseModel], Callable[..., Any], Mapping[str, Any]]
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # Converse's ToolSpecification.name
_ARGS_HEADER = re.compile(r"^\s*(Args|Arguments|Parameters):\s*$")
_ARG_LINE = re.compile(r"^\s+(\*{0,2}\w+)(?:\s*\([^)]*\))?:\s*(.+)$")


def error_lines(err: PydanticValidationError) -> list[str]:
    """Pydantic's errors as ``where: what`` lines (what a model can act on)."""
    return [
        f"{'.'.join(str(part) for part in item['loc']) or '(root)'}: {item['msg']}"
        for item in err.errors()
    ]


@dataclass(frozen=True)
class Tool:
    """One callable tool: its wire spec, its argument checker and (optionally) a function."""

    spec: ToolSpec
    check_arguments: Callable[[dict[str, Any]], dict[str, Any]]
    function: Callable[..., Any] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def arguments(self, call: ToolCall) -> dict[str, Any]:
        """The call's arguments, checked against the schema; :class:`ToolCallError` if off."""
        try:
            return self.check_arguments(call.arguments)
        except _ArgumentsOff as err:
            raise ToolCallError(
                f"the arguments of tool call {call.id} do not fit the schema of tool "
                f"{call.name!r}: {'; '.join(err.errors)}",
                call=call,
                errors=err.errors,
            ) from err.__cause__


class _ArgumentsOff(Exception):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def _model_checker(model: type[BaseModel]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def check(arguments: dict[str, Any]) -> dict[str, Any]:
        try:
            instance = model.model_validate(arguments)
        except PydanticValidationError as err:
            raise _ArgumentsOff(error_lines(err)) from err
        return {name: getattr(instance, name) for name in type(instance).model_fields}

    return check


def _schema_checker(schema: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    import jsonschema  # type: ignore[import-untyped]  # no stubs; a plain dependency

    validator_class = jsonschema.validators.validator_for(schema)
    try:
        validator_class.check_schema(schema)
    except jsonschema.SchemaError as err:
        raise ToolSchemaError(
            f"the tool's JSON schema is not valid: {err.message}", field="input_schema"
        ) from err
    validator = validator_class(schema)

    def check(arguments: dict[str, Any]) -> dict[str, Any]:
        found = sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path))
        if found:
            raise _ArgumentsOff(
                [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in found]
            )
        return dict(arguments)

    return check


def _checked_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ToolSchemaError(
            f"tool name {name!r} ({what}) is not allowed: 1 to 64 of a-z, A-Z, 0-9, _ and -",
            field="name",
            value=name,
            allowed="[a-zA-Z0-9_-]{1,64}",
        )
    return name


def _docstring(function: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """(description, {parameter: description}) from a Google-style docstring."""
    doc = inspect.getdoc(function) or ""
    summary = doc.split("\n\n")[0]
    if _ARGS_HEADER.match(summary.split("\n")[0]):
        summary = ""
    params: dict[str, str] = {}
    in_args = False
    for line in doc.splitlines():
        if _ARGS_HEADER.match(line):
            in_args = True
        elif in_args and line and not line[0].isspace():
            in_args = False  # the next section (Returns:, ...)
        elif in_args and (match := _ARG_LINE.match(line)):
            params[match.group(1).lstrip("*")] = match.group(2).strip()
    return " ".join(line.strip() for line in summary.splitlines()), params


def _function_model(function: Callable[..., Any], name: str) -> type[BaseModel]:
    """A pydantic model of the function's parameters, refusing what has no JSON schema."""
    try:
        hints = get_type_hints(function)
    except (NameError, TypeError) as err:
        raise ToolSchemaError(
            f"tool {name!r}: the type hints cannot be resolved ({err})", field=name
        ) from err
    _, described = _docstring(function)
    fields: dict[str, Any] = {}
    for param in inspect.signature(function).parameters.values():
        where = f"{name}.{param.name}"
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ToolSchemaError(
                f"tool {name!r}: parameter {param.name!r} is *args/**kwargs; a tool takes "
                "named, typed parameters only",
                field=where,
            )
        if param.name not in hints:
            raise ToolSchemaError(
                f"tool {name!r}: parameter {param.name!r} has no type annotation, so its "
                "JSON schema cannot be derived; annotate it (for example `: str`)",
                field=where,
            )
        annotation = hints[param.name]
        try:
            TypeAdapter(annotation).json_schema()
        except PydanticUserError as err:
            raise ToolSchemaError(
                f"tool {name!r}: parameter {param.name!r} has type {annotation!r}, which has "
                "no JSON schema; use str, int, float, bool, lists, dicts, Literal, enums or "
                "pydantic models",
                field=where,
                value=annotation,
            ) from err
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (annotation, Field(default, description=described.get(param.name)))
    return create_model(name, __config__=ConfigDict(extra="forbid"), **fields)


def _from_function(function: Callable[..., Any]) -> Tool:
    name = _checked_name(getattr(function, "__name__", None), "the function's name")
    model = _function_model(function, name)
    description, _ = _docstring(function)
    schema = model.model_json_schema()
    schema.pop("title", None)
    return Tool(
        ToolSpec(name=name, description=description, input_schema=schema),
        _model_checker(model),
        function,
    )


def _from_model(model: type[BaseModel]) -> Tool:
    name = _checked_name(model.__name__, "the model's class name")
    try:
        schema = model.model_json_schema()
    except PydanticUserError as err:
        raise ToolSchemaError(f"tool {name!r}: no JSON schema ({err})", field=name) from err
    description = (inspect.getdoc(model) or "").split("\n\n")[0].replace("\n", " ")
    return Tool(
        ToolSpec(name=name, description=description, input_schema=schema), _model_checker(model)
    )


def _from_dict(tool: Mapping[str, Any]) -> Tool:
    """``{"name", "description"?, "parameters" | "input_schema": {...}}``."""
    name = _checked_name(tool.get("name"), "the dict's 'name'")
    schema = tool.get("parameters", tool.get("input_schema"))
    if not isinstance(schema, dict):
        raise ToolSchemaError(
            f"tool {name!r}: a JSON-schema tool needs 'parameters' (or 'input_schema'), "
            "a JSON schema object",
            field=f"{name}.parameters",
            value=schema,
        )
    description = tool.get("description", "")
    return Tool(
        ToolSpec(name=name, description=str(description), input_schema=schema),
        _schema_checker(schema),
    )


def to_tool(tool: ToolLike) -> Tool:
    """A :class:`Tool` from a pydantic model class, a typed function or a JSON-schema dict."""
    if isinstance(tool, Tool):
        return tool
    if isinstance(tool, type) and issubclass(tool, BaseModel):
        return _from_model(tool)
    if isinstance(tool, Mapping):
        return _from_dict(tool)
    if callable(tool):
        return _from_function(tool)
    raise ToolSchemaError(
        f"{tool!r} is not a tool: pass a pydantic model class, a typed function or a "
        "JSON-schema dict",
        field="tools",
        value=tool,
    )


class Toolset:
    """Tools by name; runs the calls of a reply and words the results as tool turns."""

    def __init__(self, tools: Iterable[ToolLike]) -> None:
        self.tools: dict[str, Tool] = {}
        for item in tools:
            tool = to_tool(item)
            if tool.name in self.tools:
                raise ToolSchemaError(
                    f"two tools are named {tool.name!r}; tool names must be unique",
                    field="tools",
                    value=tool.name,
                )
            self.tools[tool.name] = tool

    @property
    def specs(self) -> tuple[ToolSpec, ...]:
        return tuple(tool.spec for tool in self.tools.values())

    def arguments(self, call: ToolCall) -> dict[str, Any]:
        """The checked arguments of ``call``; :class:`ToolCallError` for no tool or bad ones."""
        tool = self.tools.get(call.name)
        if tool is None:
            raise ToolCallError(
                f"tool call {call.id} names no offered tool {call.name!r} "
                f"(offered: {', '.join(self.tools)})",
                call=call,
                errors=[f"unknown tool {call.name!r}"],
            )
        return tool.arguments(call)

    def _bound(self, call: ToolCall) -> tuple[Callable[..., Any], dict[str, Any]] | Message:
        """The function and checked arguments for ``call``, or the error result to send."""
        try:
            arguments = self.arguments(call)
        except ToolCallError as err:
            return Message(role="tool", tool_call_id=call.id, content=str(err), is_error=True)
        function = self.tools[call.name].function
        if function is None:
            raise ToolSchemaError(
                f"tool {call.name!r} has no Python function to run; run_tools runs "
                "function tools only",
                field=call.name,
            )
        return function, arguments

    def run(self, call: ToolCall) -> Message:
        """Run one call; a call that cannot run comes back as an error result, not raised.

        Exceptions the function itself raises propagate: they are bugs or outages for
        the caller to see, not answers for the model. An ``async def`` tool needs
        :meth:`arun` (``AsyncMistralClient.run_tools``).
        """
        bound = self._bound(call)
        if isinstance(bound, Message):
            return bound
        function, arguments = bound
        if inspect.iscoroutinefunction(function):
            raise ToolSchemaError(
                f"tool {call.name!r} is an async function, which a sync run cannot await; "
                "use AsyncMistralClient.run_tools",
                field=call.name,
            )
        return Message(
            role="tool", tool_call_id=call.id, content=result_text(function(**arguments))
        )

    async def arun(self, call: ToolCall) -> Message:
        """:meth:`run` for asyncio: an ``async def`` tool is awaited, a sync one runs in a
        worker thread (``asyncio.to_thread``), so a slow tool never blocks the loop."""
        bound = self._bound(call)
        if isinstance(bound, Message):
            return bound
        function, arguments = bound
        if inspect.iscoroutinefunction(function):
            value = await function(**arguments)
        else:
            value = await asyncio.to_thread(function, **arguments)
            if inspect.isawaitable(value):  # a callable object returning a coroutine
                value = await value
        return Message(role="tool", tool_call_id=call.id, content=result_text(value))


def result_text(value: Any) -> str:
    """A function's return value as tool-result text: str as is, models and JSON as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    return json.dumps(value, ensure_ascii=False, default=str)
