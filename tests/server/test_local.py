"""The server in front of the real local backend (a tiny random checkpoint): the torch
model runs in worker threads while boto3 clients stream concurrently."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from bedrock_mistral.server import serve_in_background  # noqa: E402
from tests.helpers.server import MIXTRAL, prompt, runtime_client  # noqa: E402

BODY = {"prompt": prompt("Write a haiku about the sea"), "max_tokens": 12, "temperature": 0.0}


@pytest.fixture(scope="module")
def local_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from bedrock_mistral.backends.local import LocalBackend
    from local_backend.checkpoint import save_pretrained
    from local_backend.model import Transformer
    from tests.helpers.configs import small_moe

    config = small_moe(vocab_size=32000, sliding_window=16, max_seq_len=128)
    torch.manual_seed(0)
    path: Path = tmp_path_factory.mktemp("server-local-ckpt")
    save_pretrained(Transformer(config), config, path)
    backend = LocalBackend(path, dtype="float32")
    with serve_in_background(backend, workers=4) as url:
        yield url


def stream_text(client: Any) -> tuple[str, dict[str, Any]]:
    response = client.invoke_model_with_response_stream(modelId=MIXTRAL, body=json.dumps(BODY))
    chunks = [json.loads(event["chunk"]["bytes"]) for event in response["body"]]
    return "".join(c["outputs"][0]["text"] for c in chunks), chunks[-1]


def test_local_model_invoke_and_stream_agree(local_server: Any) -> None:
    client = runtime_client(local_server, read_timeout=60)
    response = client.invoke_model(modelId=MIXTRAL, body=json.dumps(BODY))
    reply = json.loads(response["body"].read())["outputs"][0]
    headers = response["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amzn-bedrock-output-token-count"] == "12"
    assert reply["stop_reason"] == "length"
    text, last = stream_text(client)
    assert text == reply["text"]
    metrics = last["amazon-bedrock-invocationMetrics"]
    assert metrics["outputTokenCount"] == 12
    assert str(metrics["inputTokenCount"]) == headers["x-amzn-bedrock-input-token-count"]
    counted = client.count_tokens(
        modelId=MIXTRAL, input={"invokeModel": {"body": json.dumps(BODY).encode()}}
    )
    assert counted["inputTokens"] == metrics["inputTokenCount"]


def test_local_model_serves_concurrent_streams(local_server: Any) -> None:
    client = runtime_client(local_server, read_timeout=60)
    expected, _ = stream_text(client)
    with ThreadPoolExecutor(max_workers=4) as pool:
        replies = list(pool.map(lambda _: stream_text(client)[0], range(4)))
    assert replies == [expected] * 4
    assert local_server.stats.peak_in_flight >= 2
