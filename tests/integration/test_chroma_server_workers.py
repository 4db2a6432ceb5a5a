"""Chroma server mode with real processes: while this process serves from the store, another process (the
`rag` command line) ingests into it and deletes from it. With an embedded store that second process would be
refused; here both work, and this process's search sees each change on its next query."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rag.acl import Identity
from rag.container import build_store
from rag.retrieval import Retriever
from rag.settings import load_settings

pytestmark = [pytest.mark.integration]


def test_a_second_process_ingests_and_deletes_while_this_one_searches(real_container, chroma_server, tmp_path):
    data_dir = tmp_path / "data"
    chroma = {"mode": "server", "host": chroma_server[0], "port": chroma_server[1]}
    settings = load_settings(data_dir=data_dir, collection="workers", chroma=chroma)
    store = build_store(settings)
    retriever = Retriever(real_container.embedder, store, settings.retrieval)
    env = {
        **os.environ,
        "RAG_CHROMA__MODE": "server",
        "RAG_CHROMA__PORT": str(chroma_server[1]),
        "RAG_COLLECTION": "workers",
    }

    def rag(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "serving.cli", "--data-dir", str(data_dir), *args],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip

    question = "Where do the zebras graze at dawn?"
    assert retriever.retrieve(question, 3, identity=Identity.of("ann", ["hr"])) == []  # empty store, held open
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "zebras.md").write_text("# Zebras\n\nZebras graze in the savanna at dawn, in herds.\n")
    ingested = rag("ingest", str(docs), "--group", "hr")
    assert ingested.returncode == 0, ingested.stdout + ingested.stderr

    found = retriever.retrieve(question, 3, identity=Identity.of("ann", ["hr"]))
    assert found and "savanna" in found[0].text  # the other process's write, on this process's next query
    assert retriever.retrieve(question, 3, identity=Identity.of("bob", ["finance"])) == []  # its ACL too

    doc_id = str(found[0].metadata["doc_id"])
    deleted = rag("docs", "delete", doc_id)
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    assert retriever.retrieve(question, 3, identity=Identity.of("ann", ["hr"])) == []
    store.close()
    assert Path(data_dir / "chroma").exists() is False  # server mode: no embedded Chroma directory was made
