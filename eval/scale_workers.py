"""Two API workers on one Chroma server, and a write between them (`make bench-scale --workers`, issue 16): the
memory a second worker adds for the search index, and how soon one worker's search finds another process's write.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from eval import scale_corpus as corpus
from eval.bench_scale import generate
from eval.scale_store import SEED, K, command, memory, open_store


def worker(folder: Path, kind: str, server: tuple[str, int], n: int, cache: Path) -> None:
    """One API worker on the shared Chroma server: load the index, search, report memory; then, on request, time
    how long until another process's write is found by its search. Talks in lines on stdin and stdout."""
    before = memory()
    started = time.perf_counter()
    store = open_store(folder, kind, server)
    store.load_index()
    loaded = time.perf_counter() - started
    queries = np.load(generate(n, SEED, cache) / f"q_{corpus.SELECTIVITIES[1]}.npy")[:50]
    allowed = store.allowed_documents({"group:s10"})
    for q in queries:
        store.dense_search(q, K, allowed)
    print("LOADED " + json.dumps({"load_s": round(loaded, 2), "before": before, "after": memory()}), flush=True)
    for line in sys.stdin:
        if not line.startswith("FIND "):
            break
        chunk_id, doc, vector = json.loads(line[len("FIND ") :])
        asked, searches = time.perf_counter(), 1
        while not any(cid == chunk_id for cid, _ in store.dense_search(vector, K, [doc])):
            time.sleep(0.005)
            searches += 1
        found = {"visible_after_s": round(time.perf_counter() - asked, 3), "searches": searches}
        print("FOUND " + json.dumps(found | {"deltas": store.keeper.deltas}), flush=True)
    store.close()


def run_workers(args: argparse.Namespace, folder: Path) -> dict:
    """Two workers on a ``chroma run`` server over the store; this process writes 1,000 chunks of a new document
    and the second worker times how long until its search finds them."""
    from rag.schemas import ChunkRecord

    port = _free_port()
    chroma = shutil.which("chroma", path=str(Path(sys.executable).parent)) or "chroma"
    server = subprocess.Popen(
        [chroma, "run", "--path", str(folder / "chroma"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
    )  # fmt: skip
    workers: list[subprocess.Popen] = []
    try:
        _wait_for(port, server)
        result: dict = {}
        for name in ("worker1", "worker2"):  # one after the other: the second finds the first's pages cached
            line = [*command(args, "worker"), f"--server=127.0.0.1:{port}"]
            workers.append(subprocess.Popen(line, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
            result[name] = _reply(workers[-1], "LOADED ")
            print(f"  {name}: {json.dumps(result[name])}", flush=True)
        w1, w2 = result["worker1"], result["worker2"]
        index_mb = w1["after"]["rss_mb"] - w1["before"]["rss_mb"]
        added_mb = w2["after"]["private_mb"] - w2["before"]["private_mb"]
        result["second_worker_adds"] = {"index_rss_mb": index_mb, "added_private_mb": added_mb}
        result["second_worker_adds"]["ratio"] = round(added_mb / max(1, index_mb), 3)
        store = open_store(folder, args.index, ("127.0.0.1", port))
        rng = np.random.default_rng(7)
        doc = f"delta-{int(time.time())}"
        vectors = rng.standard_normal((1000, 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        records = [
            ChunkRecord(id=f"{doc}-{i}", text=f"delta chunk {i}", embed_text=f"delta chunk {i}",
                        metadata={"doc_id": doc, "chunk_index": i, "source": "bench"})
            for i in range(1000)
        ]  # fmt: skip
        store.docstore.begin(doc, f"/bench/{doc}.txt", ["group:all"])
        started = time.perf_counter()
        store.upsert(records, vectors.tolist())
        result["write_1000_s"] = round(time.perf_counter() - started, 2)
        store.docstore.commit(
            doc, path=f"/bench/{doc}.txt", title=doc, doc_type="text", content_hash=doc, size_bytes=0,
            chunk_count=1000, acl=["group:all"],
        )  # fmt: skip
        workers[1].stdin.write("FIND " + json.dumps([records[-1].id, doc, vectors[-1].tolist()]) + "\n")
        workers[1].stdin.flush()
        result["delta"] = _reply(workers[1], "FOUND ")
        print(f"  delta: write {result['write_1000_s']} s, {json.dumps(result['delta'])}", flush=True)
        store.delete([r.id for r in records])
        store.docstore.forget(doc)
        store.close()
        return result
    finally:
        for process in workers:
            if process.stdin:
                process.stdin.close()
            process.wait(60)
        server.terminate()
        server.wait(30)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(port: int, server: subprocess.Popen) -> None:
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("chroma run did not start")


def _reply(process: subprocess.Popen, prefix: str) -> dict:
    for line in process.stdout:
        if line.startswith(prefix):
            return json.loads(line[len(prefix) :])
        print(line, end="", flush=True)
    raise RuntimeError(f"a worker stopped before its {prefix.strip()} line")
