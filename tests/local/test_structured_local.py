"""client.parse on the bundled model: what it can fill, and what it cannot.

The bundled model was trained to answer short questions with bare values (sums, capitals,
counts), never JSON. A number *is* a JSON value, so an integer schema is one it fills; an
object schema such as ``{"capital": str}`` it cannot (after the prefilled ``{`` it stops),
and parse says so with a ParseError after its one repair request.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="needs the local extra: pip install -e '.[local]'")

from pydantic import BaseModel  # noqa: E402

from bedrock_mistral import MistralClient, ParseError  # noqa: E402
from training.data import heldout  # noqa: E402


class City(BaseModel):
    capital: str


@pytest.fixture(scope="module")
def client() -> MistralClient:
    return MistralClient(backend="local")


def test_the_bundled_model_fills_an_integer_schema(client: MistralClient) -> None:
    samples = heldout("add2", 6)
    got = [
        client.parse([dict(m) for m in s.prompt_messages], schema=int, temperature=0, max_tokens=8)
        for s in samples
    ]
    assert sum(g == int(s.answer) for g, s in zip(got, samples, strict=True)) >= 5, got


def test_an_object_schema_it_cannot_fill_is_a_parse_error_with_the_raw_text(
    client: MistralClient,
) -> None:
    with pytest.raises(ParseError) as caught:
        client.parse("What is the capital of France?", schema=City, temperature=0, max_tokens=16)
    assert caught.value.raw_text.startswith("{")
    assert caught.value.errors
