"""The `rag` command line: ingest (admins), ask (anyone at a shell), serve (the HTTP API)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
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

from rag.errors import RagError
from rag.settings import Settings, load_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Private RAG on a local open-source LLM.")
console = Console(stderr=True)


def settings_of(ctx: typer.Context) -> Settings:
    return ctx.obj


@app.callback()
def main_options(
    ctx: typer.Context,
    data_dir: Annotated[Path | None, typer.Option(help="Where the store lives (env RAG_DATA_DIR).")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML settings profile (env RAG_CONFIG).")] = None,
) -> None:
    ctx.obj = load_settings(config, data_dir=data_dir)


@app.command()
def ingest(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Files and folders to ingest.")],
    if_empty: Annotated[bool, typer.Option(help="Do nothing when the store already holds documents.")] = False,
    prune: Annotated[bool, typer.Option(help="Remove documents under the given folders whose files are gone.")] = False,
    group: Annotated[
        list[str] | None,
        typer.Option("--group", "-g", help="ACL group that may see these documents (repeat for several)."),
    ] = None,
) -> None:
    """Read, chunk, embed and store documents. Exit status 1 when any file failed."""
    from ingest.pipeline import IngestService
    from rag.container import build_embedder, build_store

    settings = settings_of(ctx)
    store = build_store(settings)
    # The registry, not Chroma's count: a store written before the registry existed gets its texts filled in.
    if if_empty and store.docstore.documents("indexed"):
        console.print(f"The store at {settings.data_dir} already holds {store.count()} chunks; nothing to do.")
        return
    embedder = build_embedder(settings)
    service = IngestService.from_settings(settings, embedder, store)
    service.warm()  # parse workers start while the model loads
    with console.status("Loading the embedding model…"):
        embedder.load()
    columns = [
        TextColumn("[bold]Ingesting"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("files · {task.fields[chunks]} chunks · {task.fields[rate]:.1f} chunks/s · ETA"),
        TimeRemainingColumn(),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("ingest", total=None, chunks=0, rate=0.0)
        counts = {"chunks": 0}

        def on_file(result) -> None:  # noqa: ANN001
            counts["chunks"] += result.embedded
            elapsed = progress.tasks[0].elapsed or 1e-9
            advance = 0 if result.status == "removed" else 1
            progress.update(task, advance=advance, chunks=counts["chunks"], rate=counts["chunks"] / elapsed)

        try:
            report = service.ingest_paths(
                paths,
                progress=on_file,
                acl_groups=group,
                prune=prune,
                on_total=lambda n: progress.update(task, total=n),
            )
        finally:
            service.close()
    print_report(report)
    console.print(report.summary(), soft_wrap=True)
    console.print(f"The store now holds {store.count()} chunks.")
    raise typer.Exit(0 if report.ok else 1)


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


docs_app = typer.Typer(no_args_is_help=True, help="List and delete ingested documents.")
app.add_typer(docs_app, name="docs")


@docs_app.command("list")
def docs_list(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="Only this status: indexed, failed, indexing, deleting.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every document in the registry, with its id, status, version, chunks and groups."""
    from rag.container import build_store

    records = build_store(settings_of(ctx)).docstore.documents(status)
    if as_json:
        print(json.dumps([r.as_dict() for r in records], indent=2))
        return
    table = Table(show_edge=False)
    for column in ("id", "status", "v", "chunks", "groups", "ingested", "path"):
        table.add_column(column)
    for r in records:
        table.add_row(
            r.doc_id,
            r.status + (f" ({r.error})" if r.error else ""),
            str(r.version),
            str(r.chunk_count),
            ",".join(r.acl_groups),
            r.ingested_at or "",
            r.path,
        )
    Console().print(table)
    console.print(f"{len(records)} documents")


@docs_app.command("delete")
def docs_delete(
    ctx: typer.Context,
    doc_ids: Annotated[list[str], typer.Argument(help="Document ids, as `rag docs list` shows them.")],
) -> None:
    """Remove documents: their vectors, metadata and text leave the store."""
    from ingest.pipeline import IngestService
    from rag.container import build_embedder, build_store

    settings = settings_of(ctx)
    service = IngestService.from_settings(settings, build_embedder(settings), build_store(settings))
    for doc_id in doc_ids:
        record = service.delete_document(doc_id)
        console.print(f"deleted {doc_id} ({record.path}, {record.chunk_count} chunks)")


@app.command()
def ask(
    ctx: typer.Context,
    question: Annotated[str, typer.Argument(help="The question.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole answer as JSON.")] = False,
    top_k: Annotated[int | None, typer.Option(help="Chunks to retrieve.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Cap on generated tokens.")] = None,
) -> None:
    """Answer a question from the ingested documents, with citations."""
    from rag.answering import TextDelta
    from rag.container import Container

    container = Container.from_settings(settings_of(ctx))
    with console.status("Loading the models…"):
        container.load()
    params = container.answers.params(max_tokens)
    final = None
    for event in container.answers.stream(question, top_k=top_k, params=params):
        if isinstance(event, TextDelta):
            if not as_json:
                print(event.text, end="", flush=True)
        else:
            final = event
    assert final is not None
    if as_json:
        print(json.dumps(final.model_dump(mode="json"), indent=2))
        return
    print()
    for c in final.citations:
        where = f"page {c.page}" if c.page else c.heading
        print(f"[{c.index}] {c.title} — {where} ({c.source}) score {c.score:.2f}")
    t = final.timings
    speed = f", {final.tokens_per_second:.1f} tokens/s" if final.tokens_per_second else ""
    console.print(
        f"[dim]retrieval {t.retrieval_ms:.0f} ms, generation {t.generation_ms:.0f} ms{speed}, model {final.model}[/dim]"
    )


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Bind address (default from settings: 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from settings: 8000).")] = None,
) -> None:
    """Serve the OpenAI-compatible and native HTTP API with uvicorn."""
    import uvicorn

    from serving.app import create_app

    settings = settings_of(ctx)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        create_app(settings), host=host or settings.server.host, port=port or settings.server.port, log_level="info"
    )


def main() -> None:
    try:
        app()
    except RagError as exc:
        console.print(f"[red]error[/red] ({exc.code}): {exc.message}")
        sys.exit(2)


if __name__ == "__main__":
    main()
