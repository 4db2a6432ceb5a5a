"""kill -9 of a real writer process while it writes vectors and saves its search index, then a reopen: the saved
copy must never serve results that differ from a fresh rebuild from Chroma. One kill lands at a random moment (in a
Chroma write, a save, or between them), one exactly between a Chroma write and the version bump that logs it,
which no version counter can see: the writer's marker must make the next start rebuild (issue 16, item 3).

The writer runs this module (``python -m tests.integration.test_index_kill``), like test_kill_ingest's checks; it
is killed with its process group, as test_kill_ingest's ``run_ingest`` does.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.rag.test_persisted_index import fill, rebuilt, records, searches, vectors

pytestmark = [pytest.mark.integration]

BATCH = 200


def writer(data_dir: Path, stall_at: int) -> None:
    """Write batches forever, saving after each, printing each batch's number; batch ``stall_at`` stalls between
    its Chroma write and its version bump."""
    from rag.store import ChromaStore

    store = ChromaStore(data_dir / "chroma", "persist")
    store.load_index()
    store.keeper.save_every, store.keeper.save_cost_share = 0.0, 0
    bump = store.docstore.bump_vectors_version

    def stalling_bump(added=(), removed=(), payloads=()):  # noqa: ANN001, ANN202
        if added and added[0] == f"w{stall_at}-0":
            print("stalled", flush=True)
            time.sleep(60)
        return bump(added, removed, payloads)

    store.docstore.bump_vectors_version = stalling_bump
    for n in range(10_000):
        store.upsert(records(f"w{n}", BATCH), vectors(BATCH, 1000 + n))
        print(n, flush=True)


def run_and_kill(data_dir: Path, stall_at: int, kill_when: str, delay: float) -> list[str]:
    """Start the writer, wait for the line ``kill_when``, sleep ``delay``, kill -9 its process group."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.test_index_kill", str(data_dir), str(stall_at)],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line.strip())
            if line.strip() == kill_when:
                time.sleep(delay)
                break
        else:
            pytest.fail(f"the writer ended before {kill_when!r}: {lines[-20:]}")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()  # reaped: a zombie would still look alive to the next start
    return lines


def reopened_equals_a_rebuild(data_dir: Path) -> object:
    from rag.store import ChromaStore

    store = ChromaStore(data_dir / "chroma", "persist")
    try:
        assert store.load_index() == store.count()
        assert searches(store) == searches(rebuilt(store))
        assert not list((data_dir / "index" / "persist").glob("writer-*.mark"))
        return store.keeper.opened_from
    finally:
        store.close()


def seeded(tmp_path: Path) -> Path:
    from rag.store import ChromaStore

    data_dir = tmp_path / "data"
    store = ChromaStore(data_dir / "chroma", "persist")
    fill(store)
    store.load_index()
    store.close()
    return data_dir


def test_kill_9_between_a_chroma_write_and_its_version_bump_makes_the_next_start_rebuild(tmp_path, caplog):
    data_dir = seeded(tmp_path)
    run_and_kill(data_dir, stall_at=3, kill_when="stalled", delay=0.2)
    with caplog.at_level(logging.WARNING, logger="rag.index_keeper"):
        assert reopened_equals_a_rebuild(data_dir) == "store"
    assert any("a writer stopped mid-write" in r.message for r in caplog.records)
    assert reopened_equals_a_rebuild(data_dir) == "disk"  # the rebuild was saved


def test_kill_9_at_random_moments_never_leaves_a_saved_index_that_differs_from_chroma(tmp_path):
    seed = int(os.environ.get("RAG_TEST_KILL_SEED", random.randrange(1_000_000)))
    print(f"index kill test seed {seed}")
    rng = random.Random(seed)
    data_dir = seeded(tmp_path)
    for _ in range(3):
        run_and_kill(data_dir, stall_at=-1, kill_when=str(rng.randrange(1, 4)), delay=rng.uniform(0, 0.3))
        reopened_equals_a_rebuild(data_dir)


if __name__ == "__main__":
    writer(Path(sys.argv[1]), int(sys.argv[2]))
