"""`rag feedback export`: rated answers as a `rag eval` dataset (see ``rag.feedback`` for what each item holds)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from rag.errors import InvalidRequestError
from serving.cli_output import console

feedback_app = typer.Typer(no_args_is_help=True, help="Feedback on answers: export it as an eval dataset.")


@feedback_app.command("export")
def feedback_export(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="The JSONL dataset to write (replaced if it exists).")],
    rating: Annotated[Literal["up", "down", "all"], typer.Option(help="Which ratings to export.")] = "all",
    since: Annotated[str | None, typer.Option(help="Only ratings given on or after this ISO date or time.")] = None,
) -> None:
    """Write one eval item per rated question; run it with `rag eval --dataset FILE`. Thumbs-down items come
    without a reference answer: a comment line above each says what to fill in."""
    from rag.conversations import ConversationStore
    from rag.feedback import since_iso, write_dataset

    settings = ctx.obj
    store = ConversationStore.for_settings(settings)
    if not store.path.is_file():
        raise InvalidRequestError(f"no conversations at {store.path}: nothing has been rated on this data dir")
    try:
        rows = store.feedback(None if rating == "all" else rating, since_iso(since))
    finally:
        store.close()
    if not rows:
        raise InvalidRequestError(f"no {'' if rating == 'all' else rating + ' '}ratings to export: rate answers first")
    written = write_dataset(rows, out)
    console.print(f"wrote {written} questions to {out}; run them with: rag eval --dataset {out}")
