"""`rag docs list` as an admin pipes it: a real process whose output is not a terminal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_docs_list_piped_prints_whole_ids_and_paths(fake_container, tmp_path: Path):
    folder = tmp_path / "a-folder-with-a-rather-long-name" / "and-another-level-below-it"
    folder.mkdir(parents=True)
    (folder / "travel-and-expenses-policy-2027.md").write_text("# Travel\n\nBook trains at least a week ahead.\n")
    service = fake_container.ingest_service()
    assert service.ingest_paths([folder], acl=["group:travel-desk"]).ok
    [record] = service.registry.documents()
    env = {**os.environ, "RAG_COLLECTION": "test"}  # the fake container's collection
    listed = subprocess.run(
        [sys.executable, "-m", "serving.cli", "--data-dir", str(fake_container.settings.data_dir), "docs", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split("\t") == ["id", "status", "v", "chunks", "access", "ingested", "path"]
    fields = row.split("\t")
    assert fields[0] == record.doc_id and fields[-1] == record.path and fields[4] == "group:travel-desk"
