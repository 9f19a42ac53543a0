"""Batch runs: many records through one client, adaptive concurrency, resumable output.

- :func:`run_batch` (also ``MistralClient.batch``) yields results as they complete.
- :func:`read_input` parses JSONL or one-prompt-per-line text files.
- :class:`ResultWriter` appends results crash-safely and tells a rerun what is done.
- :mod:`bedrock_mistral.batch.job` drives Bedrock batch inference jobs over S3.

Nothing here imports boto3 at module level.
"""

from __future__ import annotations

from bedrock_mistral.batch.limiter import AdaptiveLimiter, LimitChange
from bedrock_mistral.batch.output import OutputScan, OutputStateError, ResultWriter, scan_output
from bedrock_mistral.batch.records import (
    BatchRecord,
    DuplicateIdError,
    InputProblem,
    ParsedInput,
    check_unique,
    parse_items,
    read_input,
)
from bedrock_mistral.batch.result import BatchResult, BatchStats, RecordError
from bedrock_mistral.batch.runner import DEFAULT_CONCURRENCY, BatchRun, run_batch

__all__ = [
    "DEFAULT_CONCURRENCY",
    "AdaptiveLimiter",
    "BatchRecord",
    "BatchResult",
    "BatchRun",
    "BatchStats",
    "DuplicateIdError",
    "InputProblem",
    "LimitChange",
    "OutputScan",
    "OutputStateError",
    "ParsedInput",
    "RecordError",
    "ResultWriter",
    "check_unique",
    "parse_items",
    "read_input",
    "run_batch",
    "scan_output",
]
