"""A parser seam for isolation tests: files named for a failure mode misbehave for real inside the worker."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from ingest.readers import read_document as real_read_document


def read_document(path: Path, options=None):  # noqa: ANN001, ANN201
    name = path.name
    if name.startswith("hang"):
        time.sleep(3600)
    if name.startswith("segfault"):
        os.kill(os.getpid(), signal.SIGSEGV)
    if name.startswith("exit"):
        os._exit(3)
    if name.startswith("bomb"):
        hog = bytearray(6 * 1024**3)  # past the worker's address-space cap: MemoryError, not a machine swap
        return hog
    if name.startswith("bug"):
        raise ZeroDivisionError("a parser bug")
    return real_read_document(path, options)


def noisy_abort(path: Path, options=None):  # noqa: ANN001, ANN201
    """Like a native library dying: a crash report on stderr (a Rust OOM backtrace, say), then SIGABRT."""
    if path.name.startswith("noisy"):
        os.write(2, b"memory allocation of 2147483648 bytes failed NOISY-MARKER\n")
        os.abort()
    return real_read_document(path, options)
