"""kill -9 of a real `rag ingest` at random moments, then a rerun: the store must hold exactly the right chunks.

Each round changes the corpus (edits, a deletion, an addition) so the killed run has real work in flight:
parsing, embedding, Chroma writes, stale-chunk deletion or registry commits. After the rerun the test checks:

- the chunk ids in Chroma and in the text store are exactly the ids the chunker gives for the files now on disk
  (no duplicates, no orphans, nothing missing);
- every chunk is findable: a query with its own vector returns it, with its text;
- every registry row is ``indexed`` at the file's current hash.

The seed is printed, so a failing round can be replayed with RAG_TEST_KILL_SEED.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest.chunking import Chunker, document_id
from ingest.discovery import file_sha256
from ingest.readers import read_document
from rag.container import build_embedder, build_store
from rag.settings import load_settings
from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KILLS = 10  # kill points; rounds whose run ends before its kill point don't count (but are still checked)
MAX_ROUNDS = 25
WORDS = (
    "policy leave travel expense laptop badge office server backup incident audit budget invoice contract "
    "supplier training safety canteen parking payroll pension holiday approval manager report quarter "
    "security password network printer meeting visitor delivery warehouse forecast customer support"
).split()


def paragraph(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 90))).capitalize() + "."


def write_doc(path: Path, rng: random.Random) -> None:
    sections = [f"## Section {i}\n\n" + "\n\n".join(paragraph(rng) for _ in range(3)) for i in range(rng.randint(2, 5))]
    if path.suffix == ".html":
        body = "".join(f"<h2>Part {i}</h2><p>{paragraph(rng)}</p><p>{paragraph(rng)}</p>" for i in range(3))
        path.write_text(f"<html><head><title>{path.stem}</title></head><body><h1>{path.stem}</h1>{body}</body></html>")
    elif path.suffix == ".txt":
        path.write_text("\n\n".join(paragraph(rng) for _ in range(6)))
    else:
        path.write_text(f"# {path.stem}\n\n" + "\n\n".join(sections))


def run_ingest(data_dir: Path, corpus: Path, kill_after: float | None) -> tuple[int, str]:
    env = dict(os.environ, RAG_DATA_DIR=str(data_dir))
    command = [sys.executable, "-m", "serving.cli", "ingest", str(corpus), "--prune"]
    proc = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    if kill_after is not None:
        try:
            out, _ = proc.communicate(timeout=kill_after)
            return proc.returncode, out.decode(errors="replace")  # finished before the kill point
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its parse workers, mid-flight
            out, _ = proc.communicate()
            return -9, out.decode(errors="replace")
    out, _ = proc.communicate(timeout=600)
    return proc.returncode, out.decode(errors="replace")


def expected_ids(chunker: Chunker, corpus: Path) -> dict[str, set[str]]:
    """doc id -> chunk ids, computed from the files on disk without embedding anything."""
    expected = {}
    for path in sorted(p.resolve() for p in corpus.iterdir()):
        doc_id = document_id(path)
        records = chunker.chunk(
            read_document(path), doc_id=doc_id, source=str(path), file_hash="", extra_metadata={"acl": "public"}
        )
        expected[doc_id] = {r.id for r in records}
    return expected


def test_kill_9_at_random_points_then_rerun_leaves_exactly_the_right_chunks(tmp_path: Path):
    seed = int(os.environ.get("RAG_TEST_KILL_SEED", random.randrange(1_000_000)))
    print(f"kill test seed {seed}")
    rng = random.Random(seed)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    names = [f"doc-{i:02d}{rng.choice(['.md', '.md', '.html', '.txt'])}" for i in range(36)]
    for name in names:
        write_doc(corpus / name, rng)
    data_dir = tmp_path / "data"

    started = time.monotonic()
    code, out = run_ingest(data_dir, corpus, kill_after=None)
    full_run = time.monotonic() - started
    assert code == 0, out
    check_in_subprocess(data_dir, corpus)

    started = time.monotonic()
    code, out = run_ingest(data_dir, corpus, kill_after=None)  # nothing changed: start-up and hashing only
    startup = time.monotonic() - started
    assert code == 0 and "nothing new to embed" in out, out
    print(f"full run {full_run:.2f}s, no-op run {startup:.2f}s")

    killed = 0
    # Kill points fall after start-up, while a round's work (about half the files changed) is in flight.
    window = max(startup + 0.5, startup + 0.7 * (full_run - startup))
    next_doc = len(names)
    for round_no in range(MAX_ROUNDS):
        if killed == KILLS:
            break
        files = sorted(corpus.iterdir())
        for path in rng.sample(files, k=len(files) // 2):
            write_doc(path, rng)  # new content: new chunks to embed, old ones to delete
        rng.choice(files).unlink()
        write_doc(corpus / f"doc-{next_doc:02d}.md", rng)
        next_doc += 1
        kill_after = rng.uniform(0.8 * startup, window)
        code, out = run_ingest(data_dir, corpus, kill_after=kill_after)
        if code == -9:
            killed += 1
            print(f"round {round_no}: killed after {kill_after:.2f}s")
        else:
            window = max(startup, 0.9 * kill_after)  # the run was quicker than the window: aim earlier
            print(f"round {round_no}: finished before {kill_after:.2f}s")
        code, out = run_ingest(data_dir, corpus, kill_after=None)
        assert code == 0, f"round {round_no} (seed {seed}) rerun failed:\n{out}"
        check_in_subprocess(data_dir, corpus, f"round {round_no} (seed {seed})")
    assert killed == KILLS, f"only {killed} of {MAX_ROUNDS} rounds were killed mid-flight (seed {seed})"


def check_in_subprocess(data_dir: Path, corpus: Path, context: str = "first run") -> None:
    """Check in a fresh process, like an admin would after the rerun.

    Embedded Chroma supports one process per store path (each process keeps its own in-memory copy of the index).
    Keeping a client open in this process between CLI runs would make the test a second process on the store,
    and the store lock now refuses that anyway.
    """
    proc = subprocess.run(
        [sys.executable, "-m", "tests.integration.test_kill_ingest", str(data_dir), str(corpus)],
        cwd=REPO,
        env=dict(os.environ, RAG_DATA_DIR=str(data_dir)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"{context}: the store check failed:\n{proc.stdout}{proc.stderr}"


def check_store(data_dir: Path, corpus: Path) -> None:
    settings = load_settings(data_dir=data_dir)
    embedder = build_embedder(settings)
    embedder.load()
    chunker = Chunker(embedder.tokenize, settings.chunking.chunk_tokens, settings.chunking.overlap_tokens)
    store = build_store(settings)
    try:
        expected = expected_ids(chunker, corpus)
        wanted = set().union(*expected.values())
        in_chroma = store.all_ids()
        assert len(in_chroma) == store.count()
        assert in_chroma == wanted, f"missing {len(wanted - in_chroma)}, orphans {len(in_chroma - wanted)} in Chroma"
        assert store.docstore.chunk_ids() == wanted, "the text store disagrees with Chroma"
        records = {r.doc_id: r for r in store.docstore.documents()}
        assert set(records) == set(expected)
        for path in corpus.iterdir():
            record = records[document_id(path.resolve())]
            assert record.status == "indexed" and record.content_hash == file_sha256(path)
            assert record.chunk_count == len(expected[record.doc_id])
        store.docstore.check_keyword_index()  # raises if the BM25 index disagrees with the chunk texts
        got = store.collection.get(include=["embeddings"])
        for chunk_id, vector in zip(got["ids"], got["embeddings"], strict=True):
            hits = store.query(list(vector), top_k=3)
            assert chunk_id in {h.id for h in hits}, f"{chunk_id} is stored but not findable by a query"
            assert all(h.text for h in hits)

    finally:
        store.docstore.close()


if __name__ == "__main__":
    check_store(Path(sys.argv[1]), Path(sys.argv[2]))
    print("store check passed")
