"""The optional cross-encoder reranker in retrieval, on a tiny BERT cross-encoder with random weights
(``tiny_cross_encoder``: no reranker weights ship offline): it loads from a local folder, scores only the caller's
permitted chunks, drops those under the threshold and orders the rest by its score. The reranker's own contract:
tests/contracts/test_reranker.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.acl import Identity
from rag.errors import ConfigError
from rag.rerank import CrossEncoderReranker
from rag.retrieval import Retriever
from rag.settings import RetrievalSettings


def test_reranker_orders_filters_and_keeps_to_permitted_chunks(fake_container, tmp_path: Path, tiny_cross_encoder):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(6):
        (docs / f"p{i}.md").write_text(f"# Policy {i}\n\nThe travel policy rule number {i} covers trains.\n")
    (docs / "secret.md").write_text("# Secret\n\nThe travel policy for the board covers private jets.\n")
    service = fake_container.ingest_service()
    service.ingest_paths([docs / f"p{i}.md" for i in range(6)], acl=["public"])
    service.ingest_paths([docs / "secret.md"], acl=["group:board"])

    keep_all = CrossEncoderReranker(tiny_cross_encoder, threshold=float("-inf"))
    retriever = Retriever(fake_container.embedder, fake_container.store, RetrievalSettings(), keep_all)
    ranked = retriever.retrieve("travel policy", 4)
    assert len(ranked) == 4 and all(c.rerank is not None for c in ranked)
    assert [c.rerank for c in ranked] == sorted((c.rerank for c in ranked), reverse=True)
    assert all(not c.metadata["source"].endswith("secret.md") for c in ranked)  # anonymous: never scored
    board = retriever.retrieve("travel policy", 7, identity=Identity.of("ceo", ["board"]))
    assert any(c.metadata["source"].endswith("secret.md") for c in board)

    middle = sorted(c.rerank for c in retriever.retrieve("travel policy", 6))[3]
    strict = CrossEncoderReranker(tiny_cross_encoder, threshold=middle)
    kept = Retriever(fake_container.embedder, fake_container.store, RetrievalSettings(), strict).retrieve(
        "travel policy", 6
    )
    assert kept and all(c.rerank >= middle for c in kept) and len(kept) < 6  # weak chunks dropped

    assert strict.model_sha256 and len(strict.model_sha256) == 64


def test_a_reranker_setting_that_is_not_a_model_folder_is_refused(tmp_path: Path):
    with pytest.raises(ConfigError, match="not a model folder"):
        CrossEncoderReranker(tmp_path, 0.0).load()
