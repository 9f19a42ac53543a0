"""``--mode job``: S3 in moto, the Bedrock control plane emulated over real HTTP on loopback.

moto has no model-invocation jobs, so :class:`ControlPlane` implements the four calls we
use (Create/Get/List, plus Stop) with Bedrock's paths, bodies and error shapes. A job
moves one status per GetModelInvocationJob call (Submitted, Validating, InProgress,
then its end state); when it finishes it reads the input JSONL from (moto) S3, answers
every record with the echo backend, and writes ``<output>/<job id>/<input>.jsonl.out``
and ``manifest.json.out`` back to S3, as Bedrock does.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import boto3
import pytest
from click.testing import CliRunner
from moto import mock_aws

from bedrock_mistral.backends.echo import EchoBackend
from bedrock_mistral.batch.job import BatchJobError, JobOptions, run_job
from bedrock_mistral.batch.jobaws import JobAWS
from bedrock_mistral.batch.jobfiles import JobState, state_path
from bedrock_mistral.batch.records import read_input
from bedrock_mistral.cli import cli
from bedrock_mistral.client import MistralClient
from bedrock_mistral.types import CompletionRequest

BUCKET = "batch-test-bucket"
ROLE = "arn:aws:iam::123456789012:role/BedrockBatch"
ACCOUNT_ARN = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/"
TEXT_KEYS = frozenset({"prompt", "max_tokens", "temperature", "top_p", "top_k", "stop"})
PROGRESSION = ("Submitted", "Validating", "InProgress")


@dataclass
class Job:
    id: str
    request: dict[str, Any]
    polls: int = 0
    status: str = "Submitted"
    message: str | None = None
    counts: dict[str, int] = field(default_factory=dict)


class ControlPlane:
    """The batch-job calls of the ``bedrock`` service, backed by S3 for input and output."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.fail_with: str | None = None  # next jobs end Failed with this message
        self.create_calls = 0
        self._lock = threading.Lock()

    # -- the API ------------------------------------------------------------------------

    def create(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.create_calls += 1
        for key in ("jobName", "roleArn", "modelId", "inputDataConfig", "outputDataConfig"):
            if key not in body:
                return _error(
                    400, "ValidationException", f"1 validation error detected: '{key}' is required"
                )
        if not re.fullmatch(r"[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9\+\-\.]){0,63}", body["jobName"]):
            return _error(400, "ValidationException", "jobName does not match the required pattern")
        with self._lock:
            token = body.get("clientRequestToken")
            for job in self.jobs.values():  # idempotency: same token, same job
                if token and job.request.get("clientRequestToken") == token:
                    return 200, {"jobArn": ACCOUNT_ARN + job.id}
            job = Job(id=secrets.token_hex(6), request=body)
            self.jobs[job.id] = job
        return 200, {"jobArn": ACCOUNT_ARN + job.id}

    def get(self, identifier: str) -> tuple[int, dict[str, Any]]:
        job = self.jobs.get(identifier.rsplit("/", 1)[-1])
        if job is None:
            return _error(404, "ResourceNotFoundException", f"Job {identifier} not found")
        with self._lock:
            job.polls += 1
            if job.status in PROGRESSION:
                index = PROGRESSION.index(job.status)
                if index + 1 < len(PROGRESSION):
                    job.status = PROGRESSION[index + 1]
                else:
                    self._finish(job)
        return 200, self._describe(job)

    def list(self, name_contains: str) -> tuple[int, dict[str, Any]]:
        summaries = [
            self._describe(job)
            for job in self.jobs.values()
            if name_contains in job.request["jobName"]
        ]
        return 200, {"invocationJobSummaries": summaries}

    def _describe(self, job: Job) -> dict[str, Any]:
        request = job.request
        described = {
            "jobArn": ACCOUNT_ARN + job.id,
            "jobName": request["jobName"],
            "modelId": request["modelId"],
            "roleArn": request["roleArn"],
            "clientRequestToken": request.get("clientRequestToken"),
            "status": job.status,
            "submitTime": "2025-01-01T00:00:00Z",
            "inputDataConfig": request["inputDataConfig"],
            "outputDataConfig": request["outputDataConfig"],
            **job.counts,
        }
        if job.message:
            described["message"] = job.message
        return described

    # -- running a job ------------------------------------------------------------------

    def _finish(self, job: Job) -> None:
        if self.fail_with is not None:
            job.status, job.message = "Failed", self.fail_with
            return
        s3 = boto3.client("s3", region_name="us-east-1")
        source = job.request["inputDataConfig"]["s3InputDataConfig"]["s3Uri"]
        bucket, key = source[5:].split("/", 1)
        lines = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode().splitlines()
        outputs, manifest = [], {"inputTokenCount": 0, "outputTokenCount": 0}
        for raw in lines:
            record = json.loads(raw)
            outputs.append(self._answer(job, record, manifest))
        errors = sum(1 for line in outputs if "error" in line)
        target = job.request["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"]
        out_bucket, _, prefix = target[5:].partition("/")
        base = f"{prefix.rstrip('/')}/{job.id}/" if prefix.strip("/") else f"{job.id}/"
        body = "".join(json.dumps(line) + "\n" for line in outputs).encode()
        s3.put_object(Bucket=out_bucket, Key=base + key.rsplit("/", 1)[-1] + ".out", Body=body)
        job.counts = {
            "totalRecordCount": len(outputs),
            "processedRecordCount": len(outputs),
            "successRecordCount": len(outputs) - errors,
            "errorRecordCount": errors,
        }
        manifest.update({k: v for k, v in job.counts.items() if k != "processedRecordCount"})
        s3.put_object(
            Bucket=out_bucket, Key=base + "manifest.json.out", Body=json.dumps(manifest).encode()
        )
        job.status = "PartiallyCompleted" if errors else "Completed"

    @staticmethod
    def _answer(job: Job, record: dict[str, Any], manifest: dict[str, int]) -> dict[str, Any]:
        body = record["modelInput"]
        line: dict[str, Any] = {"recordId": record["recordId"], "modelInput": body}
        extra = sorted(set(body) - TEXT_KEYS)
        if extra or "prompt" not in body:
            problem = (
                f"extraneous key [{extra[0]}] is not permitted"
                if extra
                else "required key [prompt] not found"
            )
            line["error"] = {
                "errorCode": 400,
                "errorMessage": f"Malformed input request: #: {problem}",
            }
            return line
        if "please fail" in body["prompt"]:
            line["error"] = {
                "errorCode": 424,
                "errorMessage": "Received server error (500) from model.",
            }
            return line
        request = CompletionRequest(
            model_id=job.request["modelId"],
            stop=tuple(body.get("stop", ())),
            **{k: body[k] for k in body if k != "stop"},
        )
        reply = EchoBackend().complete(request)
        manifest["inputTokenCount"] += reply.usage.input_tokens
        manifest["outputTokenCount"] += reply.usage.output_tokens
        line["modelOutput"] = {"outputs": [{"text": reply.text, "stop_reason": reply.stop_reason}]}
        return line


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"__error__": code, "message": message}


class _Handler(BaseHTTPRequestHandler):
    plane: ControlPlane

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        code = payload.pop("__error__", None)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if code:
            self.send_header(
                "x-amzn-ErrorType", f"{code}:http://internal.amazon.com/coral/com.amazon.bedrock/"
            )
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path == "/model-invocation-job":
            self._reply(*self.plane.create(body))
        else:
            self._reply(*_error(404, "UnknownOperationException", self.path))

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path.startswith("/model-invocation-job/"):
            self._reply(*self.plane.get(unquote(url.path.split("/", 2)[2])))
        elif url.path == "/model-invocation-jobs":
            self._reply(*self.plane.list(parse_qs(url.query).get("nameContains", [""])[0]))
        else:
            self._reply(*_error(404, "UnknownOperationException", self.path))

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def plane(monkeypatch: pytest.MonkeyPatch) -> Iterator[ControlPlane]:
    """The emulator on a loopback port, S3 mocked by moto, endpoint set as users would."""
    control = ControlPlane()
    handler = type("Handler", (_Handler,), {"plane": control})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK", f"http://127.0.0.1:{server.server_port}")
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield control
    server.shutdown()
    server.server_close()


def write_input(path: Path, count: int) -> Path:
    lines = [json.dumps({"id": f"q{i}", "prompt": f"question {i}"}) for i in range(count)]
    lines.append(
        json.dumps(
            {
                "id": "chat",
                "messages": [{"role": "user", "content": "hello there"}],
                "max_tokens": 1,
            }
        )
    )
    lines.append(json.dumps({"id": "boom", "prompt": "please fail"}))
    lines.append("{broken")
    lines.append(json.dumps({"id": "too-long", "prompt": "x", "max_tokens": 99_999}))
    path.write_text("\n".join(lines) + "\n")
    return path


def s3_text(key: str) -> str:
    return (
        boto3.client("s3", region_name="us-east-1")
        .get_object(Bucket=BUCKET, Key=key)["Body"]
        .read()
        .decode()
    )


def job_flags(*extra: str) -> list[str]:
    return [
        "--mode", "job", "--role-arn", ROLE,
        "--s3-input", f"s3://{BUCKET}/in", "--s3-output", f"s3://{BUCKET}/out/",
        "--poll-interval", "0.01", "--json", *extra,
    ]  # fmt: skip


def test_cli_job_round_trip(plane: ControlPlane, tmp_path: Path) -> None:
    source = write_input(tmp_path / "in.jsonl", 150)
    out = tmp_path / "out.jsonl"

    result = CliRunner().invoke(
        cli, ["batch", str(source), "-o", str(out), "--job-name", "nightly-1", *job_flags()]
    )

    assert result.exit_code == 1, result.output  # "boom", the broken line and "too-long" failed
    (job,) = plane.jobs.values()
    assert job.status == "PartiallyCompleted"
    assert job.request["modelId"] == "mistral.mistral-7b-instruct-v0:2"
    assert job.request["roleArn"] == ROLE
    assert job.request["inputDataConfig"]["s3InputDataConfig"] == {
        "s3Uri": f"s3://{BUCKET}/in/nightly-1.jsonl",
        "s3InputFormat": "JSONL",
    }
    uploaded = [json.loads(line) for line in s3_text("in/nightly-1.jsonl").splitlines()]
    assert len(uploaded) == 152  # the broken line and "too-long" never leave the machine
    assert uploaded[0] == {
        "recordId": "R0000000000",
        "modelInput": {
            "prompt": "<s> [INST] question 0 [/INST]",
            "max_tokens": 512,
            "temperature": 0.5,
            "top_p": 0.9,
            "top_k": 50,
        },
    }
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 154
    results = {line["id"]: line for line in lines}
    assert results[None]["line"] == 153 and results[None]["error"]["type"] == "InputError"
    assert all(results[f"q{i}"]["text"] == f"question {i}" for i in range(150))
    assert results["chat"]["text"] == "hello" and results["chat"]["stop_reason"] == "length"
    assert results["boom"]["error"] == {
        "type": "ModelError",
        "message": "Received server error (500) from model.",
        "status_code": 424,
    }
    assert results["too-long"]["error"]["type"] == "ValidationError"
    summary = json.loads(result.stdout)
    assert (summary["done"], summary["failed"]) == (151, 3)
    assert summary["job"]["status"] == "PartiallyCompleted"
    assert summary["input_tokens"] > 0 and summary["output_tokens"] == 150 * 2 + 1
    expected_cost = (
        0.5 * (summary["input_tokens"] * 0.00015 + summary["output_tokens"] * 0.0002) / 1000
    )
    assert summary["cost_usd"] == pytest.approx(expected_cost, abs=1e-6)
    assert not state_path(out).exists()
    assert "line 153: InputError" in result.stderr


class Crash(Exception):
    """Stands in for kill -9: the run stops wherever it is."""


def options(**changes: Any) -> JobOptions:
    values: dict[str, Any] = {
        "role_arn": ROLE,
        "s3_input": f"s3://{BUCKET}/in/",
        "s3_output": f"s3://{BUCKET}/out",
        "poll_interval": 0.0,
        "region": "us-east-1",
    }
    values.update(changes)
    return JobOptions(**values)


def crash(seconds: float) -> None:
    raise Crash()


def test_a_run_killed_while_polling_resumes_the_same_job(
    plane: ControlPlane, tmp_path: Path
) -> None:
    parsed = read_input(write_input(tmp_path / "in.jsonl", 20))
    out = tmp_path / "out.jsonl"
    client = MistralClient(backend="echo")
    with pytest.raises(Crash):
        run_job(client, parsed, out, options(), sleep=crash)
    state = JobState.load(state_path(out))
    assert state is not None and state.job_arn is not None and len(state.records) == 22

    summary = run_job(client, parsed, out, options())

    assert len(plane.jobs) == 1 and plane.create_calls == 1
    ids = [str(json.loads(line)["id"]) for line in out.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 24  # 20 prompts + chat + boom + too-long + the broken line
    assert summary["job"]["arn"] == state.job_arn
    assert not state_path(out).exists()


def test_a_crash_between_create_and_saving_the_arn_does_not_make_a_second_job(
    plane: ControlPlane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed = read_input(write_input(tmp_path / "in.jsonl", 5))
    out = tmp_path / "out.jsonl"
    client = MistralClient(backend="echo")
    real_save = JobState.save

    def save_then_die(self: JobState, path: Path) -> None:
        if self.job_arn is not None:
            raise Crash()
        real_save(self, path)

    monkeypatch.setattr(JobState, "save", save_then_die)
    with pytest.raises(Crash):
        run_job(client, parsed, out, options())
    monkeypatch.setattr(JobState, "save", real_save)
    assert JobState.load(state_path(out)).job_arn is None  # type: ignore[union-attr]

    run_job(client, parsed, out, options())

    assert len(plane.jobs) == 1
    assert len(out.read_text().splitlines()) == 9


def test_a_failed_job_is_an_error_and_the_rerun_submits_a_new_one(
    plane: ControlPlane, tmp_path: Path
) -> None:
    parsed = read_input(write_input(tmp_path / "in.jsonl", 5))
    out = tmp_path / "out.jsonl"
    client = MistralClient(backend="echo")
    plane.fail_with = (
        "Amazon Bedrock cannot access the input S3 location; check the role's permissions"
    )

    with pytest.raises(BatchJobError, match="ended Failed: Amazon Bedrock cannot access"):
        run_job(client, parsed, out, options())
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(written) == 2 and all(
        line["error"]["type"] in ("InputError", "ValidationError") for line in written
    )
    assert not state_path(out).exists()

    plane.fail_with = None
    run_job(client, parsed, out, options())
    assert len(plane.jobs) == 2
    assert len(out.read_text().splitlines()) == 9


def test_nothing_left_to_do_creates_no_job(plane: ControlPlane, tmp_path: Path) -> None:
    parsed = read_input(write_input(tmp_path / "in.jsonl", 3))
    out = tmp_path / "out.jsonl"
    client = MistralClient(backend="echo")
    run_job(client, parsed, out, options())
    summary = run_job(client, parsed, out, options())
    assert plane.create_calls == 1
    assert summary["skipped"] == 7 and summary["done"] == 0


def test_control_plane_errors_are_typed(plane: ControlPlane, tmp_path: Path) -> None:
    aws = JobAWS(region="us-east-1")
    from bedrock_mistral.errors import ServiceValidationError

    with pytest.raises(ServiceValidationError, match="jobName does not match"):
        aws.create_job(
            {
                "jobName": "bad name!",
                "roleArn": ROLE,
                "modelId": "m",
                "inputDataConfig": {"s3InputDataConfig": {"s3Uri": "s3://b/k"}},
                "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://b/o/"}},
            }
        )
