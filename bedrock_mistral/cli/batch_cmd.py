"""``bedrock-mistral batch``: many prompts, adaptive concurrency, resumable output.

Only click is imported at module level; the SDK, boto3 and rich load when the command runs.
"""

from __future__ import annotations

from typing import Any

import click

__all__ = ["batch"]

_JOB_HELP = "(--mode job)"
_MAX_PROBLEMS_SHOWN = 20


def _parse_params(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> list[tuple[str, Any]]:
    """``PARAM=VALUE`` flags, checked by the shared CLI parser (imported only when used)."""
    from bedrock_mistral.cli.options import ParamAssignment

    return [ParamAssignment().convert(value, param, ctx) for value in values]


@click.command("batch", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, writable=True),
    help="Results file (JSONL), appended as records finish; rerun to resume.",
)
@click.option("-m", "--model", default=None, help="Model alias or Bedrock model id (see `models`).")
@click.option(
    "-b",
    "--backend",
    default=None,
    metavar="bedrock|local|echo|openai|ollama|vllm|llamacpp",
    help="Where replies come from (default: BEDROCK_MISTRAL_BACKEND, config, bedrock).",
)
@click.option("--region", default=None, help="AWS region (default: AWS_REGION, config, profile).")
@click.option("--profile", default=None, help="AWS profile name (default: AWS_PROFILE).")
@click.option(
    "--endpoint-url",
    default=None,
    help="Bedrock runtime endpoint (default: AWS_ENDPOINT_URL_BEDROCK_RUNTIME), e.g. a "
    "`bedrock-mistral serve` URL.",
)
@click.option(
    "--local-model",
    default=None,
    type=click.Path(),
    help="Local model: a weights folder, a GGUF file, or ollama:NAME[:TAG].",
)
@click.option(
    "--quantize",
    type=click.Choice(["int8", "int4"]),
    default=None,
    help="Quantise the local model's weights as it loads.",
)
@click.option(
    "--device",
    default=None,
    metavar="cpu|cuda[:N]",
    help="Where the local model runs (default: cuda when available, else cpu).",
)
@click.option(
    "--base-url",
    default=None,
    help="URL of an OpenAI-compatible engine (--backend openai|ollama|vllm|llamacpp).",
)
@click.option(
    "--api-key", default=None, help="That engine's key (or BEDROCK_MISTRAL_OPENAI_API_KEY)."
)
@click.option(
    "--prompt-mode",
    type=click.Choice(["chat", "raw"]),
    default=None,
    help="chat: the engine's template; raw: our [INST] prompt, as Bedrock gets it.",
)
@click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="PARAM=VALUE",
    callback=_parse_params,
    help="Default generation parameter for every record, repeatable (a record's own wins): "
    "max_tokens, temperature, top_p, top_k, stop.",
)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    envvar="BEDROCK_MISTRAL_BATCH_CONCURRENCY",
    help="Most requests in flight; the adaptive limit stays at or below it.",
)
@click.option(
    "--adaptive/--fixed",
    default=True,
    show_default=True,
    help="Adapt the in-flight limit to throttling (AIMD), or keep --concurrency in flight.",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    default=None,
    envvar="BEDROCK_MISTRAL_MAX_ATTEMPTS",
    help="Attempts per record for transient errors (default 5; throttles are retried "
    "for up to 120 s).",
)
@click.option(
    "--input-format",
    type=click.Choice(["auto", "jsonl", "text"]),
    default="auto",
    show_default=True,
    help="JSONL records, or text with one prompt per line (auto: by extension/content).",
)
@click.option(
    "--retry-failed", is_flag=True, help="Drop failed records from OUTPUT and run them again."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option(
    "--mode",
    type=click.Choice(["online", "job"]),
    default="online",
    show_default=True,
    help="online: call the model now; job: a Bedrock batch inference job over S3.",
)
@click.option(
    "--role-arn", default=None, help=f"IAM role Bedrock assumes to read/write S3 {_JOB_HELP}."
)
@click.option(
    "--s3-input", default=None, help=f"s3://bucket/prefix/ for the job's input {_JOB_HELP}."
)
@click.option("--s3-output", default=None, help=f"s3://bucket/prefix/ for its output {_JOB_HELP}.")
@click.option("--job-name", default=None, help=f"Job name (default: from OUTPUT) {_JOB_HELP}.")
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0.01),
    default=30.0,
    show_default=True,
    help=f"Seconds between job status checks {_JOB_HELP}.",
)
@click.option(
    "--timeout-hours",
    type=click.IntRange(24, 168),
    default=None,
    help=f"Job timeout, 24-168 hours {_JOB_HELP}.",
)
def batch(**flags: Any) -> None:
    """Run every record of INPUT and append the results to OUTPUT.

    \b
    INPUT is JSONL, one record a line:
      {"id": "q1", "prompt": "Translate to French: cheese"}
      {"id": "q2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 50}
    or a text file with one prompt per line (the id is the line number).

    \b
    Each OUTPUT line: id, text, stop_reason, usage, latency_ms, error, attempts.
    Killed or interrupted? Run the same command again: finished ids are skipped,
    and every id ends up in OUTPUT exactly once.

    \b
      bedrock-mistral batch prompts.txt -o answers.jsonl -m mixtral-8x7b -c 32
      bedrock-mistral batch data.jsonl -o out.jsonl --mode job \\
          --role-arn arn:aws:iam::123456789012:role/BedrockBatch \\
          --s3-input s3://my-bucket/in/ --s3-output s3://my-bucket/out/

    Exit codes: 0 every record succeeded, 1 some records failed (see their error),
    2 bad input (duplicate ids, bad flags), 3 setup/access, 130 interrupted.
    """
    from bedrock_mistral.batch.records import check_unique, read_input
    from bedrock_mistral.cli.options import current_env, settings_from

    env = current_env()
    settings = settings_from(
        **{
            key: flags[key]
            for key in (
                "model",
                "backend",
                "region",
                "profile",
                "endpoint_url",
                "base_url",
                "api_key",
                "prompt_mode",
                "quantize",
                "device",
            )
        },
        local_model=flags["local_model"],
        options=flags["params"],
    )
    parsed = read_input(flags["input_path"], input_format=flags["input_format"])
    check_unique(parsed)  # duplicate ids: refuse before anything is sent or written
    if flags["mode"] == "job":
        summary = _run_job(env, settings, parsed, flags)
    else:
        summary = _run_online(env, settings, parsed, flags)
    _finish(env, summary, flags)


class _FailureLog:
    """Show the first failures as they happen, with the input line to fix; count the rest."""

    def __init__(self, env: Any) -> None:
        self._env = env
        self.count = 0

    def __call__(self, result: Any) -> None:
        if result.ok:
            return
        self.count += 1
        if self.count <= _MAX_PROBLEMS_SHOWN:
            self._env.warn(f"{result.where}: {result.error.type}: {result.error.message}")

    def close(self) -> None:
        hidden = self.count - _MAX_PROBLEMS_SHOWN
        if hidden > 0:
            self._env.warn(f"... and {hidden} more failed records (see their error in the output)")


def _make_client(settings: Any, concurrency: int) -> Any:
    from bedrock_mistral.cli.clients import make_client

    # One pooled connection per request in flight, or boto3 queues them.
    return make_client(settings, max_pool_connections=max(concurrency, 10))


def _run_online(env: Any, settings: Any, parsed: Any, flags: dict[str, Any]) -> dict[str, Any]:
    from bedrock_mistral.batch import ResultWriter, run_batch
    from bedrock_mistral.batch.progress import make_progress

    output = flags["output"]
    with ResultWriter(output) as writer:
        if flags["retry_failed"]:
            env.note(
                f"{writer.drop_failed()} failed records dropped from {output}; running them again"
            )
        _warn_foreign(env, writer.scan, parsed, output)
        with _make_client(settings, flags["concurrency"]) as client:
            run = run_batch(
                client,
                parsed,
                concurrency=flags["concurrency"],
                adaptive=flags["adaptive"],
                max_attempts=flags["max_attempts"],
                params=settings.params,
                skip=writer.scan.done,
                skip_lines=writer.scan.done_lines,
            )
            if run.stats.skipped:
                env.note(f"resuming: {run.stats.skipped} records already in {output}")
            failures = _FailureLog(env)
            try:
                with make_progress(env.err, total=run.stats.total) as bar:
                    for result in run:
                        writer.write(result.to_dict())
                        failures(result)
                        bar.update(run.stats, limit=run.limiter.limit)
            except KeyboardInterrupt:
                run.close()
                env.note(
                    f"interrupted: {run.stats.finished} results written to {output}; "
                    "run the same command again to resume"
                )
                raise click.exceptions.Exit(130) from None
            finally:
                run.close()
                failures.close()
    summary = run.stats.to_dict()
    summary["limit"] = {
        "final": run.limiter.limit,
        "mean": round(run.limiter.mean_limit(), 2),
        "cuts": run.limiter.cuts,
        "throttles": run.limiter.throttles,
        "history": [[round(c.seconds, 3), c.limit] for c in run.limiter.history],
    }
    return summary


def _warn_foreign(env: Any, scan: Any, parsed: Any, output: str) -> None:
    known = {entry.key for entry in [*parsed.records, *parsed.problems] if entry.key is not None}
    foreign = scan.done - known
    if foreign:
        env.warn(
            f"{output} holds {len(foreign)} ids that are not in the input; is -o the right "
            "file for this input?"
        )


def _run_job(env: Any, settings: Any, parsed: Any, flags: dict[str, Any]) -> dict[str, Any]:
    from bedrock_mistral.batch.job import JobOptions, run_job

    missing = [name for name in ("role_arn", "s3_input", "s3_output") if not flags[name]]
    if missing:
        names = ", ".join("--" + name.replace("_", "-") for name in missing)
        raise click.UsageError(f"--mode job needs {names}")
    options = JobOptions(
        role_arn=flags["role_arn"],
        s3_input=flags["s3_input"],
        s3_output=flags["s3_output"],
        job_name=flags["job_name"],
        poll_interval=flags["poll_interval"],
        timeout_hours=flags["timeout_hours"],
        retry_failed=flags["retry_failed"],
        region=settings.region,
        profile=settings.profile,
    )
    if settings.backend != "bedrock":
        env.warn(f"--mode job always runs on Amazon Bedrock; ignoring backend {settings.backend!r}")
    failures = _FailureLog(env)
    # The client only validates and formats here; the job itself runs on Bedrock.
    with _make_client(settings.replace(backend="bedrock"), 1) as client:
        try:
            return run_job(
                client,
                parsed,
                flags["output"],
                options,
                params=settings.params,
                console=env.err,
                notify=env.note,
                on_result=failures,
            )
        except KeyboardInterrupt:
            env.note(
                "interrupted: a submitted job keeps running on Bedrock; run the same command "
                "again to wait for it and collect its results"
            )
            raise click.exceptions.Exit(130) from None
        finally:
            failures.close()


def _finish(env: Any, summary: dict[str, Any], flags: dict[str, Any]) -> None:
    import json

    from bedrock_mistral.batch.output import scan_output
    from bedrock_mistral.batch.progress import summary_line

    scan = scan_output(flags["output"])
    summary["output"] = {
        "path": flags["output"],
        "results": scan.lines,
        "failed": len(scan.failed) + len(scan.done_lines),
    }
    env.note(summary_line(summary), style="")
    if flags["as_json"]:
        env.write(json.dumps(summary) + "\n")
    failed = summary["output"]["failed"]
    if failed:
        env.warn(
            f"{failed} records in {flags['output']} have an error; fix their input or rerun "
            "with --retry-failed to try them again"
        )
        raise click.exceptions.Exit(1)
