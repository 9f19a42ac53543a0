"""``models`` and ``doctor``: the registry table, model access from a control plane on
loopback (real boto3 over HTTP), and the findings with their fixes."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import unquote, urlsplit

import pytest

from bedrock_mistral.models import MODELS
from bedrock_mistral.server.runner import serve_in_background
from tests.helpers.cli import fake_aws, run_cli, tiny_checkpoint

pytestmark = pytest.mark.usefixtures("cli_home")

SEVEN_B, MIXTRAL, LARGE = (
    "mistral.mistral-7b-instruct-v0:2",
    "mistral.mixtral-8x7b-instruct-v0:1",
    "mistral.mistral-large-2402-v1:0",
)
AVAILABILITY = {
    SEVEN_B: {
        "authorizationStatus": "AUTHORIZED",
        "entitlementAvailability": "AVAILABLE",
        "regionAvailability": "AVAILABLE",
        "agreementAvailability": {"status": "AVAILABLE"},
    },
    MIXTRAL: {
        "authorizationStatus": "AUTHORIZED",
        "entitlementAvailability": "NOT_AVAILABLE",
        "regionAvailability": "AVAILABLE",
        "agreementAvailability": {"status": "NOT_AVAILABLE"},
    },
}


class ControlPlane(BaseHTTPRequestHandler):
    """The two Bedrock control-plane calls the CLI makes, answered like AWS does."""

    fail_listing: bool = False
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        self.seen.append(parts.path + "?" + parts.query)
        if parts.path == "/foundation-models" and not self.fail_listing:
            summaries = [
                {"modelId": m, "modelLifecycle": {"status": "LEGACY" if m == MIXTRAL else "ACTIVE"}}
                for m in (SEVEN_B, MIXTRAL, LARGE)
            ]
            self._json(200, {"modelSummaries": summaries})
        elif parts.path.startswith("/foundation-model-availability/"):
            model_id = unquote(parts.path.rsplit("/", 1)[1])
            if model_id in AVAILABILITY:
                self._json(200, {"modelId": model_id, **AVAILABILITY[model_id]})
            else:
                self._json(403, {"message": "not allowed"}, error="AccessDeniedException")
        else:
            self._json(500, {"message": "boom"}, error="InternalServerException")

    def _json(self, status: int, body: dict, error: str | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if error:
            self.send_header("x-amzn-ErrorType", error)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def control_plane(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[ControlPlane]]:
    handler = type("Handler", (ControlPlane,), {"seen": [], "fail_listing": False})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake_aws(monkeypatch)
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK", f"http://127.0.0.1:{server.server_address[1]}")
    yield handler
    server.shutdown()
    thread.join()


def test_models_table_lists_every_registry_model_without_credentials() -> None:
    result = run_cli("models")
    assert result.exit_code == 0
    for spec in MODELS:
        assert spec.alias in result.stdout and spec.model_id in result.stdout
    assert "0.15/0.2" in result.stdout  # Mistral 7B, USD per 1M tokens
    assert "access" not in result.stdout.splitlines()[0]
    assert "access not checked: no AWS credentials" in result.stderr


def test_models_json_shows_limits_and_prices() -> None:
    rows = {
        row["alias"]: row for row in json.loads(run_cli("models", "--json", "--no-check").stdout)
    }
    assert rows["mixtral-8x7b"]["max_output_tokens"] == 4096
    assert rows["mistral-7b"]["input_price_per_1m"] == pytest.approx(0.15)
    assert (
        rows["pixtral-large"]["profile_only"] is True
        and rows["mistral-large-2407"]["format"] == "chat"
    )


def test_models_access_from_the_control_plane(control_plane: type[ControlPlane]) -> None:
    result = run_cli("models", "--json")
    access = {row["model_id"]: row["access"] for row in json.loads(result.stdout)}
    assert access[SEVEN_B] == "enabled"
    assert access[MIXTRAL] == "needs access (legacy)"
    assert access[LARGE] == "offered"  # availability refused: listed in the region, access unknown
    assert access["mistral.mistral-small-2402-v1:0"] == "not in region"
    assert "/foundation-models?byProvider=mistral" in control_plane.seen
    table = run_cli("models").stdout
    assert "enabled" in table and "not in region" in table


def test_control_plane_failure_is_a_note_not_an_error(control_plane: type[ControlPlane]) -> None:
    control_plane.fail_listing = True
    result = run_cli("models")
    assert result.exit_code == 0
    assert "access not checked: ListFoundationModels failed" in result.stderr
    assert "mistral-7b" in result.stdout
    # doctor: nothing "above" failed, so the fix names what did.
    with serve_in_background(backend="echo") as url:
        doctor = run_cli("doctor", "--endpoint-url", url)
    assert "! model access" in doctor.stdout
    assert "fix the findings above first" not in doctor.stdout
    assert "bedrock:ListFoundationModels" in doctor.stdout


def test_doctor_without_aws_says_how_to_fix_it() -> None:
    result = run_cli("doctor")
    assert result.exit_code == 1
    out = result.stdout
    assert "✗ credentials" in out and "aws configure" in out and "--backend local" in out
    assert "✗ region" in out and "AWS_REGION" in out
    assert "torch" in out


def test_doctor_all_green(control_plane: type[ControlPlane], tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="needs the local extra: pip install -e '.[local]'")
    checkpoint = tiny_checkpoint(tmp_path / "tiny")
    with serve_in_background(backend="echo") as url:
        result = run_cli(
            "doctor", "--endpoint-url", url, "--local-model", str(checkpoint), "--invoke"
        )
    assert result.exit_code == 0, result.stdout
    out = result.stdout
    for line in (
        "✓ credentials",
        "✓ region       us-east-1",
        "✓ endpoint",
        "✓ model access",
        "mistral-7b (mistral.mistral-7b-instruct-v0:2): enabled",
        "✓ test call",
        "✓ local model",
        "✓ torch",
    ):
        assert line in out
    assert "✗" not in out


def test_doctor_reports_a_missing_local_model_for_the_local_backend(tmp_path: Path) -> None:
    result = run_cli("doctor", "-b", "local", "--local-model", str(tmp_path / "nowhere"))
    assert result.exit_code == 1
    assert "✗ local model" in result.stdout and "no such folder" in result.stdout
    assert "! credentials" in result.stdout  # only a warning when Bedrock is not the backend
