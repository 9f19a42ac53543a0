"""The files of a Bedrock batch-inference job, without I/O: input lines, output lines, state.

Input (one line per record): ``{"recordId": "R0000000007", "modelInput": {<the exact
InvokeModel body>}}``. Output (``<input name>.jsonl.out``): the same plus
``"modelOutput": {<InvokeModel response body>}`` or ``"error": {"errorCode",
"errorMessage"}``. recordIds are 11 alphanumeric characters (what older Bedrock docs
require); the state file maps them back to our ids.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bedrock_mistral.backends.bedrock_wire import parse_response
from bedrock_mistral.batch.records import RecordId
from bedrock_mistral.batch.result import RecordError
from bedrock_mistral.errors import APIError, ConfigurationError
from bedrock_mistral.types import Usage

__all__ = ["JobLine", "JobState", "input_line", "parse_output_line", "record_id_for", "state_path"]

STATE_VERSION = 1

# Bedrock's per-record errorCode is an HTTP status; name it the way our error tree does.
_ERROR_TYPES: Mapping[int, str] = {
    400: "ServiceValidationError",
    403: "AccessDeniedError",
    404: "ModelNotFoundError",
    408: "ModelTimeoutError",
    424: "ModelError",
    429: "ThrottledError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}


def record_id_for(index: int) -> str:
    return f"R{index:010d}"


def input_line(record_id: str, body: Mapping[str, Any]) -> bytes:
    line = {"recordId": record_id, "modelInput": body}
    return (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


@dataclass(frozen=True)
class JobLine:
    """One parsed output line: the answer, or the error Bedrock recorded for it."""

    record_id: str
    text: str | None = None
    stop_reason: str | None = None
    usage: Usage | None = None
    error: RecordError | None = None


def parse_output_line(raw: bytes) -> JobLine | None:
    """A ``.jsonl.out`` line; None for a line without a recordId (nothing to map it to)."""
    try:
        line = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(line, dict) or not isinstance(line.get("recordId"), str):
        return None
    record_id = line["recordId"]
    failure = line.get("error")
    if isinstance(failure, dict):
        code = failure.get("errorCode")
        status = code if isinstance(code, int) else None
        kind = _ERROR_TYPES.get(status or 0, "ModelInvocationError")
        return JobLine(
            record_id, error=RecordError(kind, str(failure.get("errorMessage", "")), status)
        )
    output = line.get("modelOutput")
    try:
        parsed = parse_response(json.dumps(output).encode("utf-8"))
    except APIError as err:
        return JobLine(record_id, error=RecordError("APIError", str(err)))
    return JobLine(record_id, text=parsed.text, stop_reason=parsed.stop_reason, usage=parsed.usage)


def state_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".job.json")


@dataclass
class JobState:
    """What a rerun needs to find the job again instead of starting a second one.

    Written before the job is created (``token`` makes the create call idempotent) and
    again once its ARN is known; removed after the results are merged.
    """

    token: str
    job_name: str
    model_id: str
    role_arn: str
    input_uri: str
    output_uri: str
    records: dict[str, list[RecordId | int | None]] = field(
        default_factory=dict
    )  # recordId -> [id, line]
    job_arn: str | None = None
    version: int = STATE_VERSION

    @property
    def job_id(self) -> str:
        if self.job_arn is None:
            raise ValueError("the job has no ARN yet")
        return self.job_arn.rsplit("/", 1)[-1]

    def save(self, path: Path) -> None:
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(asdict(self), handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> JobState | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise ConfigurationError(
                f"{path} (the state of an earlier batch job) cannot be read ({err}); if that job "
                "is finished or unwanted, delete the file and rerun"
            ) from err
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ConfigurationError(
                f"{path} is not a batch job state file this version can resume"
            )
        return cls(**data)
