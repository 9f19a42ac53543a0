"""The batch progress bar (rate, ETA, tokens, cost, concurrency) on a terminal; nothing elsewhere.

rich is imported only when a bar is actually shown.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from bedrock_mistral.batch.result import BatchStats

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["BatchProgress", "make_progress", "money", "tokens"]


def money(value: float | None) -> str:
    if value is None:
        return "cost n/a"
    return f"${value:.4f}" if value < 1 else f"${value:,.2f}"


def tokens(count: int) -> str:
    return f"{count / 1000:.1f}k" if count >= 10_000 else str(count)


class BatchProgress(Protocol):
    def __enter__(self) -> BatchProgress: ...

    def __exit__(self, *exc: object) -> None: ...

    def update(
        self, stats: BatchStats, *, limit: int | None = None, status: str | None = None
    ) -> None: ...


class _Quiet:
    """Not a terminal: say nothing while running; the summary comes at the end."""

    def __enter__(self) -> _Quiet:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(
        self, stats: BatchStats, *, limit: int | None = None, status: str | None = None
    ) -> None:
        return None


class _RichBar:
    def __init__(self, console: Console, *, total: int, description: str) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}", markup=False),
            TimeElapsedColumn(),
            TextColumn("eta", markup=False),
            TimeRemainingColumn(),
            TextColumn("{task.fields[detail]}", markup=False),
            console=console,
            transient=False,
            refresh_per_second=4,
        )
        self._task = self._progress.add_task(description, total=total, rate="", detail="")

    def __enter__(self) -> _RichBar:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(
        self, stats: BatchStats, *, limit: int | None = None, status: str | None = None
    ) -> None:
        parts = [f"{tokens(stats.input_tokens)}/{tokens(stats.output_tokens)} tok"]
        parts.append(money(stats.cost_usd if stats.cost_known else None))
        if stats.failed:
            parts.append(f"{stats.failed} failed")
        if limit is not None:
            parts.append(f"in flight ≤{limit}")
        fields: dict[str, Any] = {
            "rate": f"{stats.records_per_second:.1f}/s",
            "detail": " · ".join(parts),
        }
        if status is not None:
            fields["description"] = status
        self._progress.update(self._task, completed=stats.finished, **fields)


def make_progress(
    console: Console | None, *, total: int, description: str = "batch"
) -> BatchProgress:
    """A live bar on ``console`` when it is a capable terminal, otherwise silence."""
    if console is None or not console.is_terminal or console.is_dumb_terminal:
        return _Quiet()
    return _RichBar(console, total=total, description=description)


def summary_line(summary: dict[str, Any]) -> str:
    """One line for the end of a run: what was done, what it cost, how fast."""
    elapsed = summary.get("elapsed_s") or 0.0
    parts = [
        f"done {summary['done']:,}",
        f"failed {summary['failed']:,}",
    ]
    if summary.get("skipped"):
        parts.append(f"skipped {summary['skipped']:,} (already done)")
    parts.append(f"tokens {summary['input_tokens']:,} in / {summary['output_tokens']:,} out")
    parts.append(money(summary.get("cost_usd")))
    rate = summary.get("records_per_s") or 0.0
    token_rate = summary.get("output_tokens_per_s") or 0.0
    parts.append(f"{elapsed:.1f} s ({rate:.1f} records/s, {token_rate:,.0f} tokens/s out)")
    limit = summary.get("limit")
    if isinstance(limit, dict):
        parts.append(f"concurrency mean {limit['mean']:.1f}, final {limit['final']}")
    output = summary.get("output")
    if isinstance(output, dict):
        parts.append(f"{output['path']} holds {output['results']:,} results")
    return " · ".join(parts)
