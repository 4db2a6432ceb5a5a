"""Peak resident memory of a process tree, sampled in a thread: the benchmarks' one RSS sampler.

`make bench-ingest` and `make bench-big-pdf` sample this process (parse workers included); `make load-test`
samples the `rag serve` process it started.
"""

from __future__ import annotations

import os
import threading

import psutil


def tree_rss(process: psutil.Process) -> int:
    """RSS of ``process`` and its children (recursive), in bytes; a process that is gone counts 0."""
    try:
        tree = [process, *process.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for proc in tree:
        try:
            total += proc.memory_info().rss
        except psutil.Error:  # exited, a zombie, or not ours to read
            continue
    return total


class RssSampler:
    """Peak RSS of a process (default: this one) plus its children, sampled every ``interval`` seconds while the
    ``with`` block runs, and once at each end."""

    def __init__(self, pid: int | None = None, interval: float = 0.1) -> None:
        self.interval = interval
        self._process = psutil.Process(os.getpid() if pid is None else pid)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.start_bytes = 0
        self.peak_bytes = 0
        self.max_children = 0

    def _sample(self) -> None:
        self.peak_bytes = max(self.peak_bytes, tree_rss(self._process))
        try:
            self.max_children = max(self.max_children, len(self._process.children(recursive=True)))
        except psutil.Error:  # a child exiting mid-walk is not an error worth surfacing
            pass

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> RssSampler:
        self.start_bytes = tree_rss(self._process)
        self.peak_bytes = self.start_bytes
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
