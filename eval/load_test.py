"""Load test of the chat endpoint at 1x, 2x and 5x its capacity, on loopback only, bounded in count and time.

Starts `rag serve` in a subprocess (the real embedded model, a fresh data dir with the sample corpus, one API
key), with ``llm.max_batch`` = capacity and ``llm.max_queue`` = capacity. For each load level it runs
capacity x level clients at once; each sends streaming chat completions through the official openai client
(no retries) until the level's time or request budget is spent, backing off for ``Retry-After`` (at most 1 s)
after a 429 or 503. It prints, per level: requests by status, p50/p95 latency and time to first token of the
successful ones, tokens/s, and the server's peak RSS (sampled every 0.2 s). It checks that at 5x only 200, 429
and 503 came back and that the peak RSS stayed within 10% of the 1x run; exit status 1 if not.

    python -m eval.load_test [--capacity 4] [--levels 1,2,5] [--seconds 40] [--max-requests 400]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import openai

from eval.bench_retrieval import percentile
from eval.memory import RssSampler

REPO = Path(__file__).resolve().parents[1]
SAMPLE_CORPUS = REPO / "ingest" / "sample_corpus"
DATASET = REPO / "eval" / "datasets" / "sample_eval.jsonl"


def questions() -> list[str]:
    rows = [json.loads(line) for line in DATASET.read_text().splitlines() if line.strip()]
    return [r["question"] for r in rows if r.get("answerable", True)]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rag(data_dir: Path, *args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:  # noqa: ANN003
    command = [sys.executable, "-m", "serving.cli", "--data-dir", str(data_dir), *args]
    return subprocess.run(command, check=True, capture_output=True, text=True, env=env, **kwargs)


def wait_ready(url: str, server: subprocess.Popen, timeout: float) -> bool:
    """Until the server's /readyz says 200; False if it exits first or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    return False


def run_level(url: str, key: str, clients: int, seconds: float, max_requests: int, max_tokens: int) -> dict:
    asked = questions()
    results: list[tuple[int, float, float | None, int]] = []  # status, latency, ttft, tokens
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    sent = {"n": 0}

    def client(index: int) -> None:
        api = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=300)
        n = index
        while time.monotonic() < deadline:
            with lock:
                if sent["n"] >= max_requests:
                    return
                sent["n"] += 1
            question = asked[n % len(asked)]
            n += clients
            started = time.perf_counter()
            first = None
            tokens = 0
            try:
                stream = api.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": question}], stream=True, max_tokens=max_tokens
                )
                for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content and first is None:
                        first = time.perf_counter() - started
                    usage = getattr(chunk, "usage", None)
                    if usage:
                        tokens = usage.completion_tokens
                status, wait = 200, 0.0
            except openai.APIStatusError as exc:
                status = exc.status_code
                wait = min(float(exc.response.headers.get("retry-after", "1")), 1.0)
            except openai.APIConnectionError:
                status, wait = -1, 0.5
            with lock:
                results.append((status, time.perf_counter() - started, first, tokens))
            if wait:
                time.sleep(wait)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ok = [r for r in results if r[0] == 200]
    return {
        "statuses": Counter(r[0] for r in results),
        "p50": percentile([r[1] for r in ok], 50) if ok else float("nan"),
        "p95": percentile([r[1] for r in ok], 95) if ok else float("nan"),
        "ttft50": percentile([r[2] for r in ok if r[2]], 50) if ok else float("nan"),
        "ttft95": percentile([r[2] for r in ok if r[2]], 95) if ok else float("nan"),
        "tok_s": sum(r[3] for r in ok) / wall,
        "wall": wall,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capacity", type=int, default=4, help="llm.max_batch, and llm.max_queue")
    parser.add_argument("--levels", default="1,2,5", help="multiples of the capacity, comma separated")
    parser.add_argument("--seconds", type=float, default=40.0, help="time budget per level")
    parser.add_argument("--max-requests", type=int, default=400, help="request budget per level")
    parser.add_argument("--max-tokens", type=int, default=48, help="max_tokens per request")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a temporary one")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",")]

    with tempfile.TemporaryDirectory(prefix="rag-load-") as tmp:
        data_dir = args.data_dir or Path(tmp) / "data"
        env = {
            **os.environ,
            "RAG_LLM__MAX_BATCH": str(args.capacity),
            "RAG_LLM__MAX_QUEUE": str(args.capacity),
            "RAG_SERVER__RATE_LIMIT": "100000/minute",
            "RAG_SERVER__LOG_FORMAT": "text",
            "RAG_PROMPT__ANSWER": "generate",  # measures the generating path (the default quotes, in ~0.1 s)
        }
        rag(data_dir, "ingest", "--if-empty", "--public", str(SAMPLE_CORPUS), env=env)
        key = rag(data_dir, "keys", "create", "--user", "loadtest", "--name", f"load-{os.getpid()}", env=env)
        key = key.stdout.strip().splitlines()[-1]
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = open(Path(tmp) / "serve.log", "w")  # noqa: SIM115
        server = subprocess.Popen(
            [sys.executable, "-m", "serving.cli", "--data-dir", str(data_dir), "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            if not wait_ready(url, server, 300):
                print((Path(tmp) / "serve.log").read_text()[-3000:], file=sys.stderr)
                return 2
            print(
                f"load_test: capacity {args.capacity} (llm.max_batch, and as many queue places), levels {levels}x, "
                f"{args.seconds:.0f} s or {args.max_requests} requests per level, max_tokens {args.max_tokens}; "
                f"server pid {server.pid} on {url}"
            )
            run_level(url, key, 1, 5, 2, args.max_tokens)  # warm-up
            rows = []
            for level in levels:
                with RssSampler(server.pid, interval=0.2) as sampler:
                    result = run_level(
                        url, key, args.capacity * level, args.seconds, args.max_requests, args.max_tokens
                    )
                result["rss"] = sampler.peak_bytes
                rows.append((level, result))
        finally:
            server.terminate()
            server.wait(60)
            log.close()

    print(
        f"\n  {'load':>5} {'clients':>7}  {'statuses':<26} {'p50 s':>6} {'p95 s':>6} {'TTFT p50':>9} "
        f"{'TTFT p95':>9} {'tokens/s':>9} {'peak RSS':>10}"
    )
    for level, r in rows:
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(r["statuses"].items()))
        print(
            f"  {level:>4}x {args.capacity * level:>7}  {statuses:<26} {r['p50']:>6.2f} {r['p95']:>6.2f} "
            f"{r['ttft50'] * 1000:>7.0f}ms {r['ttft95'] * 1000:>7.0f}ms {r['tok_s']:>9.1f} {r['rss'] / 2**20:>7.0f} MiB"
        )
    by_level = dict(rows)
    ok = True
    if 5 in by_level:
        unexpected = {s: n for s, n in by_level[5]["statuses"].items() if s not in (200, 429, 503)}
        print(f"\n  at 5x, statuses other than 200/429/503: {unexpected or 'none'}")
        ok &= not unexpected
        if 1 in by_level:
            ratio = by_level[5]["rss"] / by_level[1]["rss"]
            print(f"  peak RSS at 5x / at 1x: {ratio:.3f} (limit 1.10)")
            ok &= ratio <= 1.10
    print(f"  {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
