"""The `rag` command line: ingest (admins), ask (anyone at a shell), serve (the HTTP API).

`rag eval` is added by ``eval.cli``, which assembles the whole `rag` command (the console script's entry point).
"""

from __future__ import annotations

import json
import os
import sys
from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from rag.errors import ConfigError, RagError
from rag.settings import Settings, load_settings
from rag.storage import check_writable, disk_fault
from serving.cli_output import console, ingest_with_progress, print_report, print_sources
from serving.feedback_cli import feedback_app

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Private RAG on a local open-source LLM.")


def settings_of(ctx: typer.Context) -> Settings:
    return ctx.obj


@app.callback()
def main_options(
    ctx: typer.Context,
    data_dir: Annotated[Path | None, typer.Option(help="Where the store lives (env RAG_DATA_DIR).")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML settings profile (env RAG_CONFIG).")] = None,
) -> None:
    # ctx.obj comes in as the settings tree's class that main() was given (the `rag` command's has eval's section).
    ctx.obj = load_settings(config, root=ctx.obj or Settings, data_dir=data_dir)


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
    user: Annotated[
        list[str] | None, typer.Option("--user", "-u", help="ACL user that may see these documents (repeatable).")
    ] = None,
    public: Annotated[
        bool, typer.Option("--public", help="Anyone may see these documents (anonymous callers included).")
    ] = False,
    acl_map: Annotated[
        Path | None, typer.Option(help="YAML file of folder globs to ACL tokens, for files without --group/--user.")
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", "-t", help="Tag these documents, for search filters (repeatable).")
    ] = None,
) -> None:
    """Read, chunk, embed and store documents. Exit status 1 when any file failed.

    Access: --group/--user/--public for every file; otherwise a sidecar file <file>.acl (tokens such as
    group:hr, user:bob, public), then --acl-map, then what the registry already holds, then ingest.default_access
    (group:admins unless set: not public)."""
    from rag.acl import AclMap, tokens_from
    from rag.container import build_embedder, build_ingest_service, build_store

    settings = settings_of(ctx)
    check_writable(settings.data_dir)  # a read-only or full disk: one line with the fix, before any work
    acl = tokens_from(group or [], user or [], public)
    mapping = AclMap.load(acl_map) if acl_map else None
    store = build_store(settings)
    if if_empty and already_ingested(settings, store):
        return
    embedder = build_embedder(settings)
    service = build_ingest_service(settings, embedder=embedder, store=store)
    service.warm()  # parse workers start while the model loads
    with console.status("Loading the embedding model…"):
        embedder.load()
    try:
        report = ingest_with_progress(service, paths, acl=acl, acl_map=mapping, tags=tag, prune=prune)
    finally:
        service.close()
    print_report(report)
    console.print(f"The store now holds {store.count()} chunks.")
    raise typer.Exit(0 if report.ok else 1)


def already_ingested(settings: Settings, store) -> bool:  # noqa: ANN001 - ChromaStore
    # The registry, not Chroma's count: a store written before the registry existed gets its texts filled in.
    if not store.docstore.documents("indexed"):
        return False
    console.print(f"The store at {settings.data_dir} already holds {store.count()} chunks; nothing to do.")
    return True


docs_app = typer.Typer(no_args_is_help=True, help="List and delete ingested documents.")
app.add_typer(docs_app, name="docs")


_ONE_LINE = str.maketrans({"\t": " ", "\n": " ", "\r": " "})  # a field never splits a line or a column


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
    columns = ("id", "status", "v", "chunks", "access", "ingested", "path")
    rows = [
        (
            r.doc_id,
            r.status + (f" ({r.error})" if r.error else ""),
            str(r.version),
            str(r.chunk_count),
            ",".join(r.acl),
            r.ingested_at or "",
            r.path,
        )
        for r in records
    ]
    if not sys.stdout.isatty():
        # Piped or redirected: whole values, one tab-separated line each (a table would cut them to the width of
        # a terminal there is none of), so an admin can pass an id on to `rag docs delete`.
        for row in (columns, *rows):
            print("\t".join(value.translate(_ONE_LINE) for value in row))
    else:
        table = Table(show_edge=False)
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*row)
        Console().print(table)
    console.print(f"{len(records)} documents")


@docs_app.command("delete")
def docs_delete(
    ctx: typer.Context,
    doc_ids: Annotated[list[str], typer.Argument(help="Document ids, as `rag docs list` shows them.")],
) -> None:
    """Remove documents: their vectors, metadata and text leave the store."""
    from rag.container import build_ingest_service

    settings = settings_of(ctx)
    service = build_ingest_service(settings)
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
    user: Annotated[str | None, typer.Option(help="Ask as this user (their documents and public ones).")] = None,
    group: Annotated[
        list[str] | None, typer.Option("--group", "-g", help="Ask as a member of this group (repeatable).")
    ] = None,
    path_prefix: Annotated[str | None, typer.Option(help="Only documents whose path starts with this.")] = None,
    path_glob: Annotated[str | None, typer.Option(help="Only documents whose path matches this glob.")] = None,
    doc_type: Annotated[list[str] | None, typer.Option(help="Only these document types (repeatable).")] = None,
    title: Annotated[str | None, typer.Option(help="Only documents whose title contains this.")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Only documents with any of these tags.")] = None,
) -> None:
    """Answer a question from the ingested documents, with citations. Without --user/--group: public documents
    only."""
    from rag.acl import Identity
    from rag.answering import final_answer
    from rag.container import Container
    from rag.schemas import SearchFilters

    identity = Identity.of(user, group or []) if user or group else None
    given = {"path_prefix": path_prefix, "path_glob": path_glob, "doc_type": doc_type, "title": title, "tags": tag}
    filters = SearchFilters(**given) if any(given.values()) else None
    container = Container.from_settings(settings_of(ctx))
    with console.status("Loading the models…"):
        container.load()
    params = container.answers.params(max_tokens)
    stream = container.answers.stream(question, top_k=top_k, params=params, identity=identity, filters=filters)
    final = final_answer(stream, on_text=None if as_json else partial(print, end="", flush=True))
    if as_json:
        print(json.dumps(final.model_dump(mode="json"), indent=2))
        return
    print()
    print_sources(final)


keys_app = typer.Typer(no_args_is_help=True, help="API keys: create, list and revoke (stored hashed).")
app.add_typer(keys_app, name="keys")
app.add_typer(feedback_app, name="feedback")  # rag feedback export


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    user: Annotated[str, typer.Option("--user", "-u", help="User id: the caller's user: ACL token.")],
    group: Annotated[
        list[str] | None, typer.Option("--group", "-g", help="Group the caller belongs to (repeatable).")
    ] = None,
    role: Annotated[str, typer.Option(help="employee, or admin (may also use /v1/admin).")] = "employee",
    name: Annotated[str | None, typer.Option(help="Label for logs and the audit log (default: the user).")] = None,
) -> None:
    """Create a key and print it once; only its SHA-256 is stored, in the keys file. A running server picks it up."""
    from rag.acl import Identity
    from rag.settings import ApiKey
    from serving.auth import hash_key, keys_file, new_key, read_keys_file, write_keys_file

    settings = settings_of(ctx)
    Identity.of(user, group or [])  # names are checked now, as ACL tokens
    path = keys_file(settings)
    keys = read_keys_file(path)
    label = name or user
    if any(k.name == label for k in [*keys, *settings.server.api_keys]):
        raise ConfigError(f"a key named {label!r} exists: pick another --name, or revoke it first")
    key = new_key()
    try:
        entry = ApiKey(name=label, sha256=hash_key(key), user=user, groups=group or [], role=role)
    except ValidationError as exc:
        raise ConfigError(f"invalid key settings: {exc.errors()[0]['msg']} (role is employee or admin)") from exc
    write_keys_file(path, [*keys, entry])
    console.print(f"created key {label!r} for user {user} ({role}) in {path}; it is shown once:")
    print(key)


@keys_app.command("list")
def keys_list(ctx: typer.Context) -> None:
    """The configured keys: name, user, groups and role (never the keys)."""
    from serving.auth import keys_file, read_keys_file

    settings = settings_of(ctx)
    for key in [*settings.server.api_keys, *read_keys_file(keys_file(settings))]:
        print(f"{key.name}\tuser={key.user}\tgroups={','.join(key.groups) or '-'}\trole={key.role}")


@keys_app.command("revoke")
def keys_revoke(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The key's name.")]) -> None:
    """Remove a key from the keys file; a running server refuses it from its next request."""
    from serving.auth import keys_file, read_keys_file, write_keys_file

    path = keys_file(settings_of(ctx))
    keys = read_keys_file(path)
    kept = [k for k in keys if k.name != name]
    if len(kept) == len(keys):
        raise ConfigError(f"no key named {name!r} in {path}: `rag keys list` shows them")
    write_keys_file(path, kept)
    console.print(f"revoked key {name!r}")


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Bind address (default from settings: 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from settings: 8000).")] = None,
    allow_anonymous: Annotated[
        bool,
        typer.Option(
            "--allow-anonymous",
            help="Callers without an API key get public documents only (a demo; server.allow_anonymous).",
        ),
    ] = False,
) -> None:
    """Serve the OpenAI-compatible and native HTTP API with uvicorn.

    Callers need an API key (`rag keys create`) unless --allow-anonymous. On stop (Ctrl-C, SIGTERM) open streams
    may finish for server.shutdown_timeout_s, then the model and the store are closed."""
    import uvicorn

    from serving.app import create_app
    from serving.connections import connection_options
    from serving.observability import configure_logging

    settings = settings_of(ctx)
    check_writable(settings.data_dir)  # the store, audit log and uploads live there: refuse early, in one line
    if allow_anonymous:  # a copy: the settings the context holds stay as they were read
        settings = settings.model_copy(update={"server": settings.server.model_copy(update={"allow_anonymous": True})})
    configure_logging("INFO", settings.server.log_format)
    uvicorn.run(
        create_app(settings),
        host=host or settings.server.host,
        port=port or settings.server.port,
        log_config=None,  # our handlers: JSON lines with the request id
        access_log=False,  # the app logs one line per request, with its id, route, status and key
        **connection_options(settings.server, bool(settings.auth.proxy.trusted)),  # timeouts, connection caps, peers
    )


def main(root: type[Settings] = Settings) -> None:
    """Run the command line, loading settings as ``root`` (``eval.cli.main`` passes the tree with eval's section).

    This module alone is the engine's and the server's commands; the `rag` command is assembled by ``eval.cli``,
    which adds `rag eval` (serving/ does not import eval/)."""
    try:
        app(obj=root)
    except RagError as exc:
        console.print(f"[red]error[/red] ({exc.code}): {exc.message}", soft_wrap=True)  # one line, for logs too
        sys.exit(2)
    except OSError as exc:  # a disk that fills up or turns read-only mid-run: one line with the fix, no traceback
        fault = disk_fault(exc, Path(exc.filename).parent if exc.filename else os.environ.get("RAG_DATA_DIR", "."))
        if fault is None:
            raise
        console.print(f"[red]error[/red] ({fault.code}): {fault.message}", soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
