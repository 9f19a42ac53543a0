"""The model registry: every Mistral model on Bedrock, with its limits, defaults and prices.

This module is the single source of truth for those facts (from Bedrock's model catalogue,
its Mistral inference-parameter pages and its pricing page). Prices are on-demand
list prices in USD per 1,000 tokens for us-east-1 / us-west-2 and change over time.

>>> resolve_model("mixtral-8x7b").model_id
'mistral.mixtral-8x7b-instruct-v0:1'
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from bedrock_mistral.errors import ValidationError

if TYPE_CHECKING:  # types.py imports this module: CompletionRequest carries a ModelSpec
    from bedrock_mistral.types import Usage

Dialect = Literal["text", "chat"]

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "Dialect",
    "ModelSpec",
    "known_aliases",
    "resolve_model",
]


@dataclass(frozen=True)
class ModelSpec:
    """Facts about one model. ``model_id`` is what goes on the wire.

    ``canonical_id`` is the registry's bare foundation-model id; it differs from
    ``model_id`` when the caller used an inference profile or an ARN.
    """

    model_id: str
    alias: str
    name: str
    dialect: Dialect
    context_window: int
    max_output_tokens: int
    default_max_tokens: int
    default_temperature: float
    default_top_p: float
    default_top_k: int | None
    input_price_per_1k: float | None
    output_price_per_1k: float | None
    converse_system: bool = True
    converse_tools: bool = True
    supports_images: bool = False  # image content blocks through Converse (Pixtral)
    profile_only: bool = False
    # Geographies (``us``, ``eu``) of the model's cross-region inference profiles:
    # () when it has none, None when unknown (then any profile prefix is taken on trust).
    profile_geos: tuple[str, ...] | None = None
    known: bool = True
    canonical_id: str = ""

    def __post_init__(self) -> None:
        if not self.canonical_id:
            object.__setattr__(self, "canonical_id", self.model_id)

    @property
    def supports_top_k(self) -> bool:
        # The chat body (messages) has no top_k field; the text body does.
        return self.dialect == "text"

    @property
    def supports_stop(self) -> bool:
        return self.dialect == "text"

    @property
    def supports_tools(self) -> bool:
        """Tool use through Converse (Large 2407, Large 3, Ministral 3, Pixtral, Magistral).

        Mistral 7B and Mixtral take no tools; Bedrock refuses the request.
        """
        return self.converse_tools

    def cost_usd(self, usage: Usage) -> float | None:
        """On-demand list price of ``usage``; None when the price is unknown."""
        if self.input_price_per_1k is None or self.output_price_per_1k is None:
            return None
        return (
            usage.input_tokens * self.input_price_per_1k
            + usage.output_tokens * self.output_price_per_1k
        ) / 1000.0

    def with_model_id(self, model_id: str) -> ModelSpec:
        return dataclasses.replace(self, model_id=model_id, canonical_id=self.canonical_id)


def _text(
    model_id: str,
    alias: str,
    name: str,
    *,
    max_out: int,
    default_max: int,
    temperature: float,
    top_p: float,
    top_k: int | None,
    price: tuple[float, float],
    system: bool,
    tools: bool,
) -> ModelSpec:
    return ModelSpec(
        model_id=model_id,
        alias=alias,
        name=name,
        dialect="text",
        context_window=32_000,
        max_output_tokens=max_out,
        default_max_tokens=default_max,
        default_temperature=temperature,
        default_top_p=top_p,
        default_top_k=top_k,
        input_price_per_1k=price[0],
        output_price_per_1k=price[1],
        converse_system=system,
        converse_tools=tools,
        profile_geos=(),  # ref section 1: no inference profiles
    )


def _chat(
    model_id: str,
    alias: str,
    name: str,
    *,
    context: int,
    max_out: int,
    price: tuple[float | None, float | None],
    profile_only: bool = False,
    profile_geos: tuple[str, ...] | None = None,
    images: bool = False,
) -> ModelSpec:
    return ModelSpec(
        model_id=model_id,
        alias=alias,
        name=name,
        dialect="chat",
        context_window=context,
        max_output_tokens=max_out,
        default_max_tokens=min(max_out, 8_192),
        default_temperature=0.7,
        default_top_p=1.0,
        default_top_k=None,
        input_price_per_1k=price[0],
        output_price_per_1k=price[1],
        profile_only=profile_only,
        profile_geos=profile_geos,
        supports_images=images,
    )


MODELS: tuple[ModelSpec, ...] = (
    _text(
        "mistral.mistral-7b-instruct-v0:2",
        "mistral-7b",
        "Mistral 7B Instruct",
        max_out=8_192,
        default_max=512,
        temperature=0.5,
        top_p=0.9,
        top_k=50,
        price=(0.00015, 0.0002),
        system=False,
        tools=False,
    ),
    _text(
        "mistral.mixtral-8x7b-instruct-v0:1",
        "mixtral-8x7b",
        "Mixtral 8x7B Instruct",
        max_out=4_096,
        default_max=512,
        temperature=0.5,
        top_p=0.9,
        top_k=50,
        price=(0.00045, 0.0007),
        system=False,
        tools=False,
    ),
    _text(
        "mistral.mistral-small-2402-v1:0",
        "mistral-small",
        "Mistral Small (24.02)",
        max_out=8_192,
        default_max=8_192,
        temperature=0.7,
        top_p=1.0,
        top_k=None,
        price=(0.001, 0.003),
        system=True,
        tools=True,
    ),
    _text(
        "mistral.mistral-large-2402-v1:0",
        "mistral-large",
        "Mistral Large (24.02)",
        max_out=8_192,
        default_max=8_192,
        temperature=0.7,
        top_p=1.0,
        top_k=None,
        price=(0.004, 0.012),
        system=True,
        tools=True,
    ),
    _chat(
        "mistral.mistral-large-2407-v1:0",
        "mistral-large-2407",
        "Mistral Large 2 (24.07)",
        context=128_000,
        max_out=8_192,
        price=(0.002, 0.006),
    ),
    _chat(
        "mistral.pixtral-large-2502-v1:0",
        "pixtral-large",
        "Pixtral Large (25.02)",
        context=128_000,
        max_out=16_384,
        price=(0.002, 0.006),
        profile_only=True,
        profile_geos=("us", "eu"),
        images=True,
    ),
    _chat(
        "mistral.mistral-large-3-675b-instruct",
        "mistral-large-3",
        "Mistral Large 3",
        context=256_000,
        max_out=32_768,
        price=(0.0005, 0.0015),
    ),
    _chat(
        "mistral.magistral-small-2509",
        "magistral-small",
        "Magistral Small (25.09)",
        context=128_000,
        max_out=40_000,
        price=(0.0005, 0.0015),
    ),
    _chat(
        "mistral.ministral-3-14b-instruct",
        "ministral-14b",
        "Ministral 3 14B",
        context=128_000,
        max_out=8_192,
        price=(0.0002, 0.0002),
    ),
    _chat(
        "mistral.ministral-3-8b-instruct",
        "ministral-8b",
        "Ministral 3 8B",
        context=128_000,
        max_out=8_192,
        price=(0.00015, 0.00015),
    ),
    _chat(
        "mistral.ministral-3-3b-instruct",
        "ministral-3b",
        "Ministral 3 3B",
        context=128_000,
        max_out=8_192,
        price=(0.0001, 0.0001),
    ),
    _chat(
        "mistral.devstral-2-123b",
        "devstral-2",
        "Devstral 2 123B",
        context=256_000,
        max_out=32_768,
        price=(0.0004, 0.002),
    ),
    _chat(
        "mistral.voxtral-mini-3b-2507",
        "voxtral-mini",
        "Voxtral Mini 3B",
        context=32_000,
        max_out=8_192,
        price=(0.00004, 0.00004),
    ),
    _chat(
        "mistral.voxtral-small-24b-2507",
        "voxtral-small",
        "Voxtral Small 24B",
        context=32_000,
        max_out=8_192,
        price=(0.0001, 0.0003),
    ),
)

DEFAULT_MODEL = "mistral-7b"

_BY_ID = {spec.model_id: spec for spec in MODELS}
_BY_ALIAS = {spec.alias: spec for spec in MODELS}
_PROFILE_PREFIX = re.compile(r"^(?:us|eu|apac|global|us-gov|ca|jp|au)\.")
_ARN = re.compile(r"^arn:aws[a-z-]*:bedrock:[^:]*:[^:]*:(?P<kind>[a-z-]+)/(?P<rest>.+)$")
_TEXT_DIALECT_PREFIXES = (
    "mistral.mistral-7b",
    "mistral.mixtral",
    "mistral.mistral-small-2402",
    "mistral.mistral-large-2402",
)


def known_aliases() -> list[str]:
    return [spec.alias for spec in MODELS]


def _base_id(model: str) -> str | None:
    """The bare foundation-model id behind a profile id or ARN, when one can be read off."""
    match = _ARN.match(model)
    if match:
        if match.group("kind") not in ("foundation-model", "inference-profile"):
            return None
        model = match.group("rest")
    return _PROFILE_PREFIX.sub("", model)


def _passthrough(model: str, base: str | None) -> ModelSpec:
    """A model the registry does not list: conservative limits, price unknown."""
    dialect: Dialect = "text" if base and base.startswith(_TEXT_DIALECT_PREFIXES) else "chat"
    return ModelSpec(
        model_id=model,
        alias=model,
        name=model,
        dialect=dialect,
        context_window=32_000,
        max_output_tokens=8_192,
        default_max_tokens=512,
        default_temperature=0.5,
        default_top_p=0.9 if dialect == "text" else 1.0,
        default_top_k=None,
        input_price_per_1k=None,
        output_price_per_1k=None,
        known=False,
        canonical_id=base or model,
    )


def resolve_model(model: str) -> ModelSpec:
    """Find a model by alias, Bedrock id, inference-profile id or ARN.

    Ids the registry does not list pass through with conservative limits, so a new
    Bedrock model works before this registry learns about it. A bare word that is
    neither an alias nor an id is an error listing the known aliases.
    """
    if not isinstance(model, str) or not model.strip():
        raise ValidationError.out_of_range(
            "model", model, f"one of {', '.join(known_aliases())}, or a Bedrock model id"
        )
    model = model.strip()
    alias_hit = _BY_ALIAS.get(model.lower())
    if alias_hit is not None:
        return alias_hit
    if model in _BY_ID:
        return _BY_ID[model]
    base = _base_id(model)
    if base is not None and base in _BY_ID:
        return _BY_ID[base].with_model_id(model)
    if model.startswith("arn:") or "." in model:
        return _passthrough(model, base)
    raise ValidationError(
        f"unknown model {model!r}; known aliases: {', '.join(known_aliases())} "
        "(or pass a full Bedrock model id, inference-profile id or ARN)",
        field="model",
        value=model,
        allowed=", ".join(known_aliases()),
    )
