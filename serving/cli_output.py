"""What the `rag` command line prints besides plain results: progress bars, the ingest summary, an answer's sources.

One stderr console for all of it, so stdout carries only what a script may read (ids, JSON, the answer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

console = Console(stderr=True)


def progress_bar(verb: str, fields: str) -> Progress:
    """The bar `rag ingest` and `rag eval` show: ``verb``, the bar, done/total, ``fields``, ETA and time taken."""
    columns = [
        TextColumn(f"[bold]{verb}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(fields),
        TimeRemainingColumn(),
        TimeElapsedColumn(),
    ]
    return Progress(*columns, console=console, transient=False)


def ingest_with_progress(service, paths: list[Path], **options) -> Any:  # noqa: ANN001, ANN003, ANN401
    """``service.ingest_paths`` under a progress bar of files, chunks and chunks per second."""
    with progress_bar(
        "Ingesting", "files · {task.fields[chunks]} chunks · {task.fields[rate]:.1f} chunks/s · ETA"
    ) as bar:
        task = bar.add_task("ingest", total=None, chunks=0, rate=0.0)
        counts = {"chunks": 0}

        def on_file(result) -> None:  # noqa: ANN001
            counts["chunks"] += result.embedded
            elapsed = bar.tasks[0].elapsed or 1e-9
            advance = 0 if result.status == "removed" else 1
            bar.update(task, advance=advance, chunks=counts["chunks"], rate=counts["chunks"] / elapsed)

        return service.ingest_paths(paths, progress=on_file, on_total=lambda n: bar.update(task, total=n), **options)


def print_report(report) -> None:  # noqa: ANN001 - IngestReport
    table = Table(title="Ingest summary", show_edge=False)
    for column in (
        "added",
        "updated",
        "unchanged",
        "removed",
        "failed",
        "chunks embedded",
        "tokens",
        "seconds",
        "chunks/s",
    ):
        table.add_column(column, justify="right")
    rate = report.chunks_embedded / report.seconds if report.seconds else 0.0
    table.add_row(
        *(str(report.count(s)) for s in ("added", "updated", "unchanged", "removed", "failed")),
        str(report.chunks_embedded),
        str(report.tokens_embedded),
        f"{report.seconds:.1f}",
        f"{rate:.1f}",
    )
    console.print(table)
    if report.failed:
        failures = Table(title="Failed files", show_edge=False)
        failures.add_column("file")
        failures.add_column("reason")
        for result in report.failed:
            failures.add_row(str(result.path), result.error or "")
        console.print(failures)
    for result in report.files:
        if result.status == "removed":
            console.print(f"removed {result.path} (file gone)")
    console.print(report.summary(), soft_wrap=True)


def print_sources(final) -> None:  # noqa: ANN001 - Answer
    """What follows the answer's text in `rag ask`: its citations, how well the sources support it, its timings."""
    for c in final.citations:
        where = f"page {c.page}" if c.page else c.heading
        print(f"[{c.index}] {c.title} — {where} ({c.source}) score {c.score:.2f}")
        if c.quote:
            print(f"    “{' '.join(c.quote.split())}”")
    if final.found:
        failed = f"; not in the sources: {', '.join(final.failed_claims)}" if final.failed_claims else ""
        repair = f"; {final.repair}" if final.repair != "none" else ""
        console.print(f"[dim]support: {final.support}{repair}{failed}[/dim]")
    elif final.declined:
        console.print(f"[dim]declined: {final.declined}[/dim]")
    t = final.timings
    speed = f", {final.tokens_per_second:.1f} tokens/s" if final.tokens_per_second else ""
    console.print(
        f"[dim]retrieval {t.retrieval_ms:.0f} ms, generation {t.generation_ms:.0f} ms{speed}, model {final.model}[/dim]"
    )
