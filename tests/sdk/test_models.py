"""Model registry resolution: aliases, ids, inference profiles, ARNs, unknown names."""

from __future__ import annotations

import pytest

from bedrock_mistral.errors import ValidationError
from bedrock_mistral.models import MODELS, known_aliases, resolve_model
from bedrock_mistral.types import Usage


@pytest.mark.parametrize(
    ("given", "model_id", "canonical"),
    [
        ("mistral-7b", "mistral.mistral-7b-instruct-v0:2", "mistral.mistral-7b-instruct-v0:2"),
        (
            "Mixtral-8x7B",
            "mistral.mixtral-8x7b-instruct-v0:1",
            "mistral.mixtral-8x7b-instruct-v0:1",
        ),
        ("mistral-small", "mistral.mistral-small-2402-v1:0", "mistral.mistral-small-2402-v1:0"),
        ("mistral-large", "mistral.mistral-large-2402-v1:0", "mistral.mistral-large-2402-v1:0"),
        (
            "mistral-large-2407",
            "mistral.mistral-large-2407-v1:0",
            "mistral.mistral-large-2407-v1:0",
        ),
        (
            "mistral.mixtral-8x7b-instruct-v0:1",
            "mistral.mixtral-8x7b-instruct-v0:1",
            "mistral.mixtral-8x7b-instruct-v0:1",
        ),
        (
            "us.mistral.pixtral-large-2502-v1:0",
            "us.mistral.pixtral-large-2502-v1:0",
            "mistral.pixtral-large-2502-v1:0",
        ),
        (
            "eu.mistral.pixtral-large-2502-v1:0",
            "eu.mistral.pixtral-large-2502-v1:0",
            "mistral.pixtral-large-2502-v1:0",
        ),
        (
            "arn:aws:bedrock:us-west-2::foundation-model/mistral.mistral-7b-instruct-v0:2",
            "arn:aws:bedrock:us-west-2::foundation-model/mistral.mistral-7b-instruct-v0:2",
            "mistral.mistral-7b-instruct-v0:2",
        ),
        (
            "arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.mistral.pixtral-large-2502-v1:0",
            "arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.mistral.pixtral-large-2502-v1:0",
            "mistral.pixtral-large-2502-v1:0",
        ),
    ],
)
def test_known_models_resolve(given: str, model_id: str, canonical: str) -> None:
    spec = resolve_model(given)
    assert spec.model_id == model_id  # what goes on the wire is what the caller chose
    assert spec.canonical_id == canonical
    assert spec.known


def test_registry_dialects_follow_the_reference() -> None:
    assert resolve_model("mistral-7b").dialect == "text"
    assert resolve_model("mixtral-8x7b").dialect == "text"
    assert resolve_model("mistral-large-2407").dialect == "chat"
    assert resolve_model("mixtral-8x7b").max_output_tokens == 4096
    assert resolve_model("mistral-large-2407").context_window == 128_000


def test_unknown_alias_lists_the_known_ones() -> None:
    with pytest.raises(ValidationError) as info:
        resolve_model("mistral-huge")
    message = str(info.value)
    for alias in known_aliases():
        assert alias in message
    assert info.value.field == "model"


@pytest.mark.parametrize(
    ("given", "dialect"),
    [
        ("mistral.mistral-7b-instruct-v0:3", "text"),
        ("mistral.some-future-model-v9:0", "chat"),
        ("us.mistral.mistral-large-2512-v1:0", "chat"),
        ("arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc123", "chat"),
    ],
)
def test_unknown_full_ids_pass_through(given: str, dialect: str) -> None:
    spec = resolve_model(given)
    assert spec.model_id == given
    assert not spec.known
    assert spec.dialect == dialect
    assert spec.cost_usd(Usage(input_tokens=1000, output_tokens=1000)) is None  # price unknown


@pytest.mark.parametrize("bad", ["", "   "])
def test_empty_model_is_refused(bad: str) -> None:
    with pytest.raises(ValidationError):
        resolve_model(bad)


def test_every_alias_is_unique_and_resolves_to_itself() -> None:
    aliases = [spec.alias for spec in MODELS]
    assert len(aliases) == len(set(aliases))
    for spec in MODELS:
        assert resolve_model(spec.alias) is spec
        assert resolve_model(spec.model_id) is spec
