"""Which operation and which model a request is for, read off the raw path.

botocore percent-encodes the model id as one path segment, so an ARN arrives as
``arn%3Aaws%3A...%3Afoundation-model%2Fmistral...``. We match on the raw path and only
then decode the segment; a decoded ``/`` never splits the route (ref section 5.1).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal, get_args
from urllib.parse import unquote

from bedrock_mistral.errors import ValidationError
from bedrock_mistral.models import MODELS, ModelSpec, resolve_model
from bedrock_mistral.server.errors import BedrockError, invalid_model

__all__ = ["OPERATIONS", "STREAMING", "ModelCatalog", "Operation", "match_route"]

Operation = Literal[
    "invoke", "invoke-with-response-stream", "converse", "converse-stream", "count-tokens"
]
OPERATIONS: tuple[Operation, ...] = get_args(Operation)
_OPERATION_NAMES: dict[str, Operation] = {name: name for name in OPERATIONS}
STREAMING: frozenset[str] = frozenset(("invoke-with-response-stream", "converse-stream"))
_ROUTE = re.compile(rb"^/model/([^/]+)/([a-z-]+)/?$")
_MAX_MODEL_ID = 2048
_ARN = re.compile(r"^arn:aws[a-z-]*:bedrock:[^:]*:[^:]*:[a-z-]+/(?P<rest>.+)$")


def match_route(raw_path: bytes) -> tuple[str, Operation] | None:
    """``(model_id, operation)`` for ``/model/{modelId}/{operation}``, else None."""
    match = _ROUTE.match(raw_path.split(b"?", 1)[0])
    if match is None or match.group(2).decode() not in OPERATIONS:
        return None
    segment = match.group(1).decode("latin-1")
    return unquote(segment, errors="replace"), _OPERATION_NAMES[match.group(2).decode()]


class ModelCatalog:
    """The model ids this server answers, looked up the way Bedrock does.

    An entry is a model id, or a :class:`ModelSpec` for a model the registry does not
    list (a custom or imported model): the server then uses that spec's dialect and limits.
    """

    def __init__(self, model_ids: Sequence[str | ModelSpec] | None = None) -> None:
        entries = [spec.model_id for spec in MODELS] if model_ids is None else list(model_ids)
        self._allowed = {
            entry.canonical_id
            if isinstance(entry, ModelSpec)
            else resolve_model(entry).canonical_id
            for entry in entries
        }
        self._given = {e.canonical_id: e for e in entries if isinstance(e, ModelSpec)}

    @property
    def model_ids(self) -> list[str]:
        return sorted(self._allowed)

    def aliases(self) -> list[tuple[str, list[str]]]:
        """Each served id with the aliases that name it (what ``GET /v1/models`` lists)."""
        names: dict[str, list[str]] = {model_id: [] for model_id in self.model_ids}
        for spec in [*MODELS, *self._given.values()]:
            known = names.get(spec.canonical_id)
            if known is not None and spec.alias not in known and spec.alias != spec.model_id:
                known.append(spec.alias)
        return list(names.items())

    def find(self, name: str) -> ModelSpec | None:
        """The served model an alias, id, profile id or ARN names, read as the SDK reads it.

        Unlike :meth:`lookup` (Bedrock's rules: ids only) this takes aliases, so an
        OpenAI client's ``model="mixtral-8x7b"`` means what ``MistralClient`` means by it.
        """
        for given in self._given.values():
            if name in (given.alias, given.model_id):
                return given
        try:
            spec = resolve_model(name)
        except ValidationError:
            return None
        if spec.canonical_id not in self._allowed:
            return None
        given_spec = self._given.get(spec.canonical_id)
        if given_spec is not None:
            return given_spec.with_model_id(spec.model_id)
        return spec

    def lookup(self, model_id: str) -> ModelSpec:
        """The spec behind an id, profile id or ARN; Bedrock's error when there is none."""
        if (
            not 1 <= len(model_id) <= _MAX_MODEL_ID
            or model_id != model_id.strip()
            or not (model_id.startswith("arn:") or "." in model_id)
        ):
            # Bedrock knows no aliases: "mistral-7b" is not a model id.
            raise invalid_model()
        try:
            spec = resolve_model(model_id)
        except ValidationError as err:
            raise invalid_model() from err
        if spec.canonical_id not in self._allowed:
            raise invalid_model()
        given = self._given.get(spec.canonical_id)
        if given is not None:  # the caller's facts win over the registry's guess
            spec = given if given.model_id == model_id else given.with_model_id(model_id)
        on_demand, geo = _invocation_form(model_id, spec.canonical_id)
        if geo is not None and spec.profile_geos is not None and geo not in spec.profile_geos:
            # No such inference profile (Mistral 7B has none; Pixtral has no global.).
            raise invalid_model()
        if spec.profile_only and on_demand:
            raise BedrockError(
                "ValidationException",
                f"Invocation of model ID {model_id} with on-demand throughput isn\u2019t "
                "supported. Retry your request with the ID or ARN of an inference profile that "
                "contains this model.",
            )
        return spec


def _invocation_form(model_id: str, canonical_id: str) -> tuple[bool, str | None]:
    """(on-demand?, profile geography) of an id that resolved to ``canonical_id``.

    The bare id and its foundation-model ARN invoke on demand; ``us.<id>`` and its
    inference-profile ARN go through the ``us`` profile.
    """
    match = _ARN.match(model_id)
    ident = match.group("rest") if match else model_id
    if ident == canonical_id:
        return True, None
    if ident.endswith("." + canonical_id):
        return False, ident[: -len(canonical_id) - 1]
    return False, None
