"""Parse files in worker processes, each file under a time limit and an address-space limit.

What workers print (warnings, tracebacks, a native library's crash report) goes to a log file, never to the
admin's terminal; a crash report names that file.

A parser that hangs is killed at its deadline; one that crashes (segfault, OOM kill) or exhausts its memory
cap takes only its own worker down. Either way that one file fails with a clear reason, a fresh worker
takes its place, and the job goes on. Results come back on a queue filled by a dispatcher thread, so
parsing runs while the main thread embeds.
"""

from __future__ import annotations

import importlib
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from rag.errors import DocumentError, ParseLimitError

log = logging.getLogger(__name__)

DEFAULT_PARSER = "ingest.readers:read_document"
MAX_LOG_BYTES = 10 * 1024 * 1024  # the workers' log is moved to <name>.1 beyond this, when a pool opens it


def default_log_path() -> Path:
    """Where workers write when the pool is given no log file (the ingest service gives data_dir/logs)."""
    return Path(tempfile.gettempdir()) / f"rag-parse-workers-{os.getuid()}.log"


def load_callable(spec: str) -> Callable[..., Any]:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _limit_memory(memory_mb: int) -> None:
    import resource

    cap = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def _preload() -> None:
    """Import the heavy parsing and splitting modules up front: a warmed worker's first file is not slow."""
    for module in ("bs4", "lxml.etree", "pypdf", "tokenizers", "llama_index.core.node_parser"):
        try:
            importlib.import_module(module)
        except ImportError:  # pragma: no cover - optional speed-up only
            pass


def _worker_main(conn: Connection) -> None:
    """Loop: receive a path (and how to chunk it), parse it, send back ("ok", doc, chunks, token counts) or
    ("error", code, message). Chunking here, with the embedder's tokenizer, keeps it off the embedding thread."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    parser_spec, options, memory_mb = conn.recv()
    _limit_memory(memory_mb)
    parse = load_callable(parser_spec)
    _preload()
    chunkers: dict[Any, Any] = {}
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        path, chunk_args, chunk_spec = Path(task[0]), task[1], task[2]
        try:
            document = parse(path, options)
            if chunk_spec is None or chunk_args is None:
                conn.send(("ok", document, None, None))
                continue
            if chunk_spec not in chunkers:
                chunkers[chunk_spec] = chunk_spec.build()
            chunker = chunkers[chunk_spec]
            try:
                records = chunker.chunk(document, **chunk_args)
            except (ValueError, RuntimeError) as exc:
                raise DocumentError(f"{path.name}: cannot split the text: {exc}") from exc
            counts = [chunker.count_tokens(r.embed_text) for r in records]
            document.sections = []  # the chunks carry the text now; don't ship it twice
            conn.send(("ok", document, records, counts))
        except DocumentError as exc:
            conn.send(("error", exc.code, exc.message))
        except MemoryError:
            conn.send(("error", ParseLimitError.code, f"{path.name}: parsing needed more than {memory_mb} MB"))
            return  # the heap may be in a bad state: start afresh
        except Exception as exc:  # a parser bug on one odd file must not end the worker's job
            detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
            conn.send(("error", "document_unreadable", f"{path.name}: the parser failed: {detail}"))


@dataclass
class ParseOutcome:
    path: Path
    document: Any = None
    error: DocumentError | None = None
    seconds: float = 0.0
    records: list | None = None  # chunks, when the pool was given a ChunkSpec and chunk arguments
    token_counts: list[int] | None = None


class _Worker:
    """A fresh interpreter (not a fork of this process and its model threads) talking over a socket pair."""

    def __init__(self, parser: str, options: Any, memory_mb: int, log: int) -> None:
        mine, theirs = socket.socketpair()
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([p for p in sys.path if p]))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ingest.workers", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,  # a parser's prints, warnings and crash reports (a Rust OOM backtrace) go to the log
            stderr=log,
        )
        theirs.close()
        self.conn = Connection(mine.detach())
        self.conn.send((parser, options, memory_mb))
        self.path: Path | None = None
        self.started = 0.0

    def alive(self) -> bool:
        return self.process.poll() is None

    def exitcode(self) -> int | None:
        try:
            return self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return None

    def assign(self, path: Path, chunk_args: dict | None, chunk_spec: Any) -> None:
        self.path = path
        self.started = time.monotonic()
        self.conn.send((str(path), chunk_args, chunk_spec))

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
        self.process.wait()
        if not self.conn.closed:
            self.conn.close()

    def stop(self) -> None:
        if self.conn.closed:
            return
        try:
            self.conn.send(None)
            self.process.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


class ParsePool:
    """``parse(paths)`` yields one ParseOutcome per path, in completion order.

    Workers outlive a ``parse`` call, so a server's jobs and a CLI run don't pay interpreter start-up per job;
    ``warm()`` starts them early (the CLI does it while the embedding model loads); ``close()`` ends them.
    """

    def __init__(
        self,
        *,
        workers: int,
        timeout_s: float,
        memory_mb: int,
        options: Any = None,
        parser: str = DEFAULT_PARSER,
        max_ready: int = 8,
        chunk_spec: Any = None,
        log_path: Path | None = None,
    ) -> None:
        self.workers = workers
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.options = options
        self.parser = parser
        self.max_ready = max_ready  # parsed documents waiting for the embedder: bounds memory
        self.chunk_spec = chunk_spec
        self.log_path = Path(log_path) if log_path else default_log_path()
        self._log: int | None = None
        self._spawned: list[_Worker] = []
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()

    def warm(self) -> None:
        """Start the worker processes now (non-blocking: they import in the background)."""
        with self._lock:
            self._idle = [w for w in self._idle if w.alive()]
            while len(self._idle) < self.workers:
                self._idle.append(self._spawn())

    def close(self) -> None:
        with self._lock:
            for worker in self._spawned:
                worker.stop()
            self._spawned, self._idle = [], []
            if self._log is not None:
                os.close(self._log)
                self._log = None

    def _log_fd(self) -> int:
        """The workers' shared output file, opened once (owner-only: a traceback may quote a document)."""
        if self._log is None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            try:
                if self.log_path.stat().st_size > MAX_LOG_BYTES:
                    self.log_path.replace(self.log_path.with_name(self.log_path.name + ".1"))
            except FileNotFoundError:
                pass
            self._log = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return self._log

    def _note(self, text: str) -> None:
        """A line in the workers' log, so that what a crashed worker printed can be told apart from the rest."""
        try:
            os.write(self._log_fd(), f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {text}\n".encode(errors="replace"))
        except OSError:
            pass

    def parse(self, paths: Iterable[Path], chunk_args: Callable[[Path], dict] | None = None) -> Iterator[ParseOutcome]:
        """Parse (and, given a ChunkSpec and ``chunk_args(path)``, chunk) every path."""
        self._chunk_args = chunk_args
        pending = deque(paths)
        if not pending:
            return
        results: queue.Queue[ParseOutcome | BaseException | None] = queue.Queue(maxsize=self.max_ready)
        self._results = results
        stop = threading.Event()
        thread = threading.Thread(
            target=self._dispatch, args=(pending, results, stop), name="rag-parse-dispatch", daemon=True
        )
        thread.start()
        try:
            while True:
                item = results.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while thread.is_alive():  # unblock a dispatcher waiting on a full queue
                try:
                    results.get_nowait()
                except queue.Empty:
                    pass
                thread.join(timeout=0.1)

    def ready(self) -> int:
        """Parsed files waiting to be consumed (0: the consumer would block on the next one)."""
        results = getattr(self, "_results", None)
        return results.qsize() if results is not None else 0

    def _dispatch(self, pending: deque[Path], results: queue.Queue, stop: threading.Event) -> None:
        busy: dict[Connection, _Worker] = {}
        with self._lock:
            idle, self._idle = [w for w in self._idle if w.alive()], []
        try:
            while len(idle) < min(self.workers, len(pending)):
                idle.append(self._spawn())
            while (pending or busy) and not stop.is_set():
                while idle and pending:
                    worker = idle.pop()
                    if not worker.alive():
                        worker = self._replace(worker)
                    path = pending.popleft()
                    args = self._chunk_args(path) if self._chunk_args and self.chunk_spec else None
                    worker.assign(path, args, self.chunk_spec)
                    busy[worker.conn] = worker
                deadline = min(w.started + self.timeout_s for w in busy.values())
                # A worker that dies closes its socket, so its connection turns readable (EOF) too.
                ready = wait(list(busy), timeout=max(0.0, deadline - time.monotonic()))
                now = time.monotonic()
                finished: set[_Worker] = set()
                for handle in ready:
                    worker = busy[handle]
                    finished.add(worker)
                    outcome, healthy = self._collect(worker, now)
                    self._put(results, outcome, stop)
                    del busy[worker.conn]
                    idle.append(worker if healthy else self._replace(worker))
                for worker in list(busy.values()):
                    if worker not in finished and now - worker.started >= self.timeout_s:
                        assert worker.path is not None
                        worker.kill()
                        message = (
                            f"{worker.path.name}: parsing took longer than {self.timeout_s:g} s and was stopped: "
                            "check the file, or raise ingest.parse_timeout_s"
                        )
                        self._put(results, ParseOutcome(worker.path, error=ParseLimitError(message)), stop)
                        del busy[worker.conn]
                        idle.append(self._replace(worker))
            self._put(results, None, stop)
        except BaseException as exc:  # surface dispatcher bugs in the consumer, never hang it
            self._put(results, exc, stop)
        finally:
            for worker in busy.values():  # stopped mid-file (the consumer went away): its result is unwanted
                worker.kill()
            with self._lock:
                self._idle.extend(w for w in idle if w.alive())

    def _collect(self, worker: _Worker, now: float) -> tuple[ParseOutcome, bool]:
        """Read one result; a worker that died instead gets its file a crash report."""
        assert worker.path is not None
        seconds = now - worker.started
        try:
            if worker.conn.poll():
                message = worker.conn.recv()
                if message[0] == "ok":
                    _, document, records, counts = message
                    outcome = ParseOutcome(worker.path, document, seconds=seconds, records=records, token_counts=counts)
                    return outcome, True
                _, code, text = message
                error = ParseLimitError(text) if code == ParseLimitError.code else DocumentError(text)
                error.code = code
                return ParseOutcome(worker.path, error=error, seconds=seconds), code != ParseLimitError.code
        except (EOFError, OSError):
            pass
        code = worker.exitcode()
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        hint = " (killed: probably out of memory)" if code == -signal.SIGKILL else ""
        self._note(f"parse worker pid {worker.process.pid} crashed ({how}) on {worker.path.name}: its output is above")
        message = (
            f"{worker.path.name}: the parser crashed ({how}{hint}); the file was skipped: check or repair it "
            f"(the worker's output is in {self.log_path})"
        )
        return ParseOutcome(worker.path, error=ParseLimitError(message), seconds=seconds), False

    def _replace(self, worker: _Worker) -> _Worker:
        worker.kill()
        return self._spawn()

    def _spawn(self) -> _Worker:
        worker = _Worker(self.parser, self.options, self.memory_mb, self._log_fd())
        self._spawned = [w for w in self._spawned if not w.conn.closed] + [worker]
        return worker

    @staticmethod
    def _put(results: queue.Queue, item: Any, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                results.put(item, timeout=0.2)
                return
            except queue.Full:
                continue


if __name__ == "__main__":
    import rag  # noqa: F401  - offline switches, as in the parent

    _worker_main(Connection(int(sys.argv[1])))
