"""Bedrock batch inference (``--mode job``): S3 in, one model invocation job, S3 out, merged.

1. Records not yet in the output are validated and formatted exactly as online
   (``MistralClient.prepare``); each becomes ``{"recordId", "modelInput": <InvokeModel
   body>}`` in one JSONL file uploaded under ``--s3-input``.
2. A state file next to the output (``OUTPUT.job.json``) is written *before* the job is
   created, holding a fresh idempotency token and the recordId -> id map, so a run killed
   at any point resumes the same job instead of paying for a second one.
3. ``CreateModelInvocationJob``, then ``GetModelInvocationJob`` every ``poll_interval``
   seconds until the job ends.
4. ``<output prefix>/<job id>/*.jsonl.out`` is read back and merged into the output in
   the same schema as online runs, keyed by id (so a merge interrupted halfway resumes
   without duplicates); then the state file is removed.

Bedrock's batch output has no per-record token counts for the text dialect; the job's
``manifest.json.out`` totals are used for tokens and the estimated cost.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bedrock_mistral.backends.bedrock_wire import request_body
from bedrock_mistral.batch.jobaws import JobAWS, parse_s3_uri
from bedrock_mistral.batch.jobfiles import (
    JobLine,
    JobState,
    input_line,
    parse_output_line,
    record_id_for,
    state_path,
)
from bedrock_mistral.batch.output import ResultWriter
from bedrock_mistral.batch.progress import make_progress
from bedrock_mistral.batch.records import BatchRecord, ParsedInput, record_key
from bedrock_mistral.batch.result import BatchResult, BatchStats, RecordError
from bedrock_mistral.errors import BedrockMistralError
from bedrock_mistral.types import Usage

if TYPE_CHECKING:
    from rich.console import Console

    from bedrock_mistral.client import MistralClient

__all__ = ["BatchJobError", "JobOptions", "run_job"]

logger = logging.getLogger(__name__)

TERMINAL = frozenset({"Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired"})
FINISHED = frozenset({"Completed", "PartiallyCompleted"})
# Batch inference is billed at about half the on-demand price (ref §8); an estimate.
BATCH_PRICE_FACTOR = 0.5
MIN_JOB_RECORDS = 100  # Bedrock's default quota "Minimum number of records per batch job"


class BatchJobError(BedrockMistralError):
    """The batch job ended without results for every record."""


@dataclass(frozen=True)
class JobOptions:
    role_arn: str
    s3_input: str
    s3_output: str
    job_name: str | None = None
    poll_interval: float = 30.0
    timeout_hours: int | None = None
    retry_failed: bool = False
    region: str | None = None
    profile: str | None = None
    bedrock_endpoint_url: str | None = None
    s3_endpoint_url: str | None = None


@dataclass
class _Sink:
    """Where results go: the output file, the totals, and the caller's callback."""

    writer: ResultWriter
    stats: BatchStats
    on_result: Callable[[BatchResult], None]

    def write(self, result: BatchResult) -> None:
        self.writer.write(result.to_dict())
        self.stats.add(result)
        self.on_result(result)


def default_job_name(output: Path, now: float | None = None) -> str:
    stem = re.sub(r"[^A-Za-z0-9]+", "-", output.stem).strip("-")[:30] or "batch"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    return f"bm-{stem}-{stamp}"


def run_job(
    client: MistralClient,
    parsed: ParsedInput,
    output: str | Path,
    options: JobOptions,
    *,
    params: Mapping[str, Any] | None = None,
    console: Console | None = None,
    notify: Callable[[str], None] = logger.info,
    on_result: Callable[[BatchResult], None] = lambda result: None,
    sleep: Callable[[float], None] = time.sleep,
    aws: JobAWS | None = None,
) -> dict[str, Any]:
    """Run ``parsed`` as a Bedrock batch job and merge its results into ``output``; a summary.

    ``on_result`` sees every result as it is written (input problems first, the job's
    results after it ends).
    """
    output = Path(output)
    path = state_path(output)
    stats = BatchStats()
    aws = aws or JobAWS(
        region=options.region,
        profile=options.profile,
        bedrock_endpoint_url=options.bedrock_endpoint_url,
        s3_endpoint_url=options.s3_endpoint_url,
    )
    with ResultWriter(output) as writer:
        sink = _Sink(writer, stats, on_result)
        state = JobState.load(path)
        if options.retry_failed and state is not None:
            notify("a submitted job is pending: collecting it first; use --retry-failed after")
        elif options.retry_failed:
            dropped = writer.drop_failed()
            notify(f"{dropped} failed records dropped from {output}; submitting them again")
        if state is None:
            state = _submit(client, parsed, sink, options, aws, path, dict(params or {}), notify)
            if state is None:
                stats.ended = time.monotonic()
                return stats.to_dict()
        else:
            notify(f"resuming batch job {state.job_arn or state.job_name} (from {path})")
            stats.skipped = len(writer.scan.done)
            if state.job_arn is None:
                state.job_arn = _find_or_create(aws, state, options)
                state.save(path)
        job = _wait(aws, state, options.poll_interval, console, sleep, notify)
        missing = _merge(aws, state, job, sink)
        _manifest_totals(client, aws, state, stats)
    path.unlink(missing_ok=True)
    stats.ended = time.monotonic()
    summary = stats.to_dict()
    summary["job"] = {
        "arn": state.job_arn,
        "status": job.get("status"),
        "message": job.get("message"),
    }
    if missing and job.get("status") not in FINISHED:
        reason = job.get("message") or "no reason given"
        raise BatchJobError(
            f"batch job {state.job_arn} ended {job.get('status')}: {reason}; "
            f"{missing} records have no result. Fix the cause and rerun the same command to submit "
            "them in a new job"
        )
    return summary


def _submit(
    client: MistralClient,
    parsed: ParsedInput,
    sink: _Sink,
    options: JobOptions,
    aws: JobAWS,
    path: Path,
    params: dict[str, Any],
    notify: Callable[[str], None],
) -> JobState | None:
    """Write what cannot be sent, upload the rest, create the job; None if nothing to send."""
    bodies = _prepare(client, parsed, sink, params)
    if not bodies:
        notify("nothing to submit: every record already has a result")
        return None
    source = parse_s3_uri(options.s3_input, flag="--s3-input")
    target = parse_s3_uri(options.s3_output, flag="--s3-output")
    name = options.job_name or default_job_name(path.with_name(path.name.removesuffix(".job.json")))
    key = source.key(f"{name}.jsonl")
    state = JobState(
        token=uuid.uuid4().hex,
        job_name=name,
        model_id=client.model.model_id,
        role_arn=options.role_arn,
        input_uri=source.uri(key),
        output_uri=target.uri(),
        records={record_id_for(i): [r.id, r.line] for i, (r, _) in enumerate(bodies)},
    )
    data = b"".join(input_line(record_id_for(i), body) for i, (_, body) in enumerate(bodies))
    if len(bodies) < MIN_JOB_RECORDS:
        notify(
            f"note: {len(bodies)} records; Bedrock may refuse jobs under {MIN_JOB_RECORDS} records"
        )
    state.save(path)  # before anything exists on AWS: a rerun finds this job, never makes two
    aws.upload(source, key, data)
    state.job_arn = _create(aws, state, options)
    state.save(path)
    notify(f"submitted batch job {state.job_arn}: {len(bodies)} records from {state.input_uri}")
    return state


def _prepare(
    client: MistralClient,
    parsed: ParsedInput,
    sink: _Sink,
    params: dict[str, Any],
) -> list[tuple[BatchRecord, dict[str, Any]]]:
    done, done_lines = sink.writer.scan.done, sink.writer.scan.done_lines
    for problem in parsed.problems:
        written = problem.key in done if problem.key is not None else problem.line in done_lines
        if written:
            sink.stats.skipped += 1
        else:
            sink.write(BatchResult.input_problem(problem))
    bodies: list[tuple[BatchRecord, dict[str, Any]]] = []
    for record in parsed.records:
        if record.key in done:
            sink.stats.skipped += 1
            continue
        conversation: Any = list(record.messages) if record.messages is not None else record.prompt
        try:
            request = client.prepare(conversation, **{**params, **record.params})
        except BedrockMistralError as error:
            refused = BatchResult.failure(record, RecordError.from_exception(error), attempts=0)
            sink.write(refused)
            continue
        bodies.append((record, json.loads(request_body(request, client.model.dialect))))
    return bodies


def _create(aws: JobAWS, state: JobState, options: JobOptions) -> str:
    request: dict[str, Any] = {
        "jobName": state.job_name,
        "roleArn": state.role_arn,
        "modelId": state.model_id,
        "clientRequestToken": state.token,
        "inputDataConfig": {
            "s3InputDataConfig": {"s3Uri": state.input_uri, "s3InputFormat": "JSONL"}
        },
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": state.output_uri}},
    }
    if options.timeout_hours is not None:
        request["timeoutDurationInHours"] = options.timeout_hours
    return aws.create_job(request)


def _find_or_create(aws: JobAWS, state: JobState, options: JobOptions) -> str:
    """After a crash between create and save: the job with our name *and* token, else create."""
    arn = aws.find_job(state.job_name)
    if arn is not None and aws.get_job(arn).get("clientRequestToken") == state.token:
        return arn
    return _create(aws, state, options)


def _wait(
    aws: JobAWS,
    state: JobState,
    poll_interval: float,
    console: Console | None,
    sleep: Callable[[float], None],
    notify: Callable[[str], None],
) -> dict[str, Any]:
    assert state.job_arn is not None
    seen = BatchStats(total=len(state.records))
    last = None
    with make_progress(console, total=len(state.records), description="job") as bar:
        while True:
            job = aws.get_job(state.job_arn)
            status = str(job.get("status", "Unknown"))
            seen.done = int(job.get("successRecordCount") or 0)
            seen.failed = int(job.get("errorRecordCount") or 0)
            bar.update(seen, status=f"job {status}")
            if status != last:
                notify(
                    f"batch job {state.job_id}: {status}"
                    + (f" ({job['message']})" if job.get("message") else "")
                )
                last = status
            if status in TERMINAL:
                return job
            sleep(poll_interval)


def _merge(aws: JobAWS, state: JobState, job: Mapping[str, Any], sink: _Sink) -> int:
    """Append every output line not yet in the file; return how many records got nothing."""
    target = parse_s3_uri(state.output_uri, flag="--s3-output")
    seen: set[str] = set()
    for key in aws.output_keys(target, state.job_id):
        if not key.endswith(".jsonl.out"):
            continue
        for raw in aws.read_lines(target, key):
            line = parse_output_line(raw)
            if line is None or line.record_id not in state.records or line.record_id in seen:
                continue
            seen.add(line.record_id)
            _write_line(sink, state, line)
    missing = [rid for rid in state.records if rid not in seen]
    if job.get("status") in FINISHED:
        for rid in missing:  # finished, yet no line: say so rather than lose the record
            error = RecordError(
                "BatchJobError", f"no result for this record in the output of job {state.job_id}"
            )
            _write_line(sink, state, JobLine(rid, error=error))
    return len(missing)


def _write_line(sink: _Sink, state: JobState, line: JobLine) -> None:
    record_id, input_line_number = state.records[line.record_id]
    assert record_id is not None and not isinstance(input_line_number, str)
    if record_key(record_id) in sink.writer.scan.done:
        return  # merged before an interruption
    result = BatchResult(
        id=record_id,
        text=line.text,
        stop_reason=line.stop_reason,
        usage=line.usage,
        error=line.error,
        attempts=1,
        line=input_line_number,
    )
    sink.write(result)


def _manifest_totals(
    client: MistralClient, aws: JobAWS, state: JobState, stats: BatchStats
) -> None:
    """Tokens and estimated cost from the job's manifest.json.out, when Bedrock wrote one."""
    target = parse_s3_uri(state.output_uri, flag="--s3-output")
    keys = [
        key for key in aws.output_keys(target, state.job_id) if key.endswith("manifest.json.out")
    ]
    if not keys:
        stats.cost_known = False
        return
    manifest = json.loads(aws.read(target, keys[0]))
    usage = Usage(
        input_tokens=int(manifest.get("inputTokenCount") or 0),
        output_tokens=int(manifest.get("outputTokenCount") or 0),
    )
    stats.input_tokens, stats.output_tokens = usage.input_tokens, usage.output_tokens
    cost = client.model.cost_usd(usage)
    stats.cost_known = cost is not None
    stats.cost_usd = (cost or 0.0) * BATCH_PRICE_FACTOR
