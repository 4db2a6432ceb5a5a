"""The `rag` command line: ingest (admins), ask (anyone at a shell), serve (the HTTP API)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

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
    if_empty: Annotated[bool, typer.Option(help="Do nothing when the store already holds chunks.")] = False,
) -> None:
    """Read, chunk, embed and store documents. Exit status 1 when any file failed."""
    from ingest.pipeline import IngestService, discover
    from rag.container import build_embedder, build_store

    settings = settings_of(ctx)
    store = build_store(settings)
    if if_empty and store.count() > 0:
        console.print(f"The store at {settings.data_dir} already holds {store.count()} chunks; nothing to do.")
        return
    embedder = build_embedder(settings)
    with console.status("Loading the embedding model…"):
        embedder.load()
    service = IngestService(embedder, store, settings.chunking)
    total = len(discover(paths)[0])
    columns = [
        TextColumn("[bold]Ingesting"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("files"),
        TextColumn("{task.fields[chunks]} chunks · {task.fields[rate]:.1f} chunks/s"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("ingest", total=total, chunks=0, rate=0.0)
        counts = {"chunks": 0}

        def on_file(result) -> None:  # noqa: ANN001
            counts["chunks"] += result.embedded
            elapsed = progress.tasks[0].elapsed or 1e-9
            progress.update(task, advance=1, chunks=counts["chunks"], rate=counts["chunks"] / elapsed)

        report = service.ingest_paths(paths, progress=on_file)
    for result in report.failed:
        console.print(f"[red]failed[/red] {result.path}: {result.error}")
    console.print(report.summary(), soft_wrap=True)
    console.print(f"The store now holds {store.count()} chunks.")
    raise typer.Exit(0 if report.ok else 1)


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
