"""A prompt longer than the model's context is refused as Bedrock refuses it, even when it
is one huge "word" that the echo backend's word count would call a single token."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from bedrock_mistral import MistralClient, errors
from bedrock_mistral.tokens import MAX_CHARS_PER_TOKEN, min_tokens, v1_tokenizer
from tests.helpers.server import MISTRAL_7B, runtime_client, text_body

ONE_HUGE_WORD = "a" * 12_000_000  # 12M characters, no whitespace, for a 32K-token model


def test_a_12m_character_one_word_prompt_is_too_long_over_boto3(echo_server: Any) -> None:
    client = runtime_client(echo_server, read_timeout=60)
    with pytest.raises(ClientError) as info:
        client.invoke_model(modelId=MISTRAL_7B, body=text_body(ONE_HUGE_WORD))
    error = info.value.response["Error"]
    assert error["Code"] == "ValidationException"
    assert "too long" in error["Message"]


def test_normal_prompts_still_work_and_count_words(echo_server: Any) -> None:
    client = runtime_client(echo_server)
    response = client.invoke_model(modelId=MISTRAL_7B, body=text_body("short and sweet " * 50))
    assert json.loads(response["body"].read())["outputs"][0]["stop_reason"] == "stop"
    headers = response["ResponseMetadata"]["HTTPHeaders"]
    assert (
        int(headers["x-amzn-bedrock-input-token-count"]) == 150 + 3
    )  # words, and <s> [INST] [/INST]


def test_the_sdk_refuses_it_before_sending() -> None:
    with pytest.raises(errors.ContextWindowError):
        MistralClient(backend="echo").chat(ONE_HUGE_WORD)


def test_the_floor_is_the_longest_piece_of_the_v1_tokenizer() -> None:
    processor = v1_tokenizer()
    if processor is None:
        pytest.skip("needs the local extra (mistral-common, sentencepiece)")
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    assert max(len(piece) for piece in pieces) == MAX_CHARS_PER_TOKEN
    for text in ("=" * 4000, " " * 999, "straightforward " * 300, ONE_HUGE_WORD[:50_000]):
        assert min_tokens(text) <= len(processor.encode(text))
