"""Checks of the bundled evaluation set (eval/datasets/sample_eval.jsonl) against the sample corpus; no models."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from bs4 import BeautifulSoup
from pypdf import PdfReader

from eval.dataset import load_dataset
from eval.metrics import normalize

REPO = Path(__file__).resolve().parents[2]
SAMPLE_CORPUS = REPO / "ingest" / "sample_corpus"
DATASET = REPO / "eval" / "datasets" / "sample_eval.jsonl"


@cache
def document_text(name: str) -> str:
    path = SAMPLE_CORPUS / name
    if path.suffix == ".pdf":
        return "\n".join(page.extract_text() or "" for page in PdfReader(path).pages)
    text = path.read_text(encoding="utf-8")
    if path.suffix in {".html", ".htm"}:
        return BeautifulSoup(text, "html.parser").get_text(" ")
    return text


def test_bundled_set_shape():
    items = load_dataset(DATASET)
    assert len(items) == 60
    assert len({item.id for item in items}) == len(items)
    unanswerable = [item for item in items if not item.answerable]
    assert len(unanswerable) >= 12
    for item in unanswerable:
        assert item.reference_answer is None, item.id
        assert item.gold_sources == [], item.id


def test_gold_sources_exist_and_cover_the_corpus():
    items = load_dataset(DATASET)
    corpus = {path.name for path in SAMPLE_CORPUS.iterdir() if path.is_file()}
    used: set[str] = set()
    for item in items:
        for source in item.gold_sources:
            assert source in corpus, f"{item.id}: {source} is not in the sample corpus"
            used.add(source)
    assert used == corpus


def test_answerable_references_appear_in_a_gold_document():
    items = load_dataset(DATASET)
    for item in items:
        if not item.answerable:
            continue
        assert item.reference_answer is not None, item.id
        assert item.gold_sources, item.id
        texts = [document_text(source) for source in item.gold_sources]
        if item.reference_text is not None:
            reference = normalize(item.reference_text)
            assert reference, item.id
            assert any(reference in normalize(text) for text in texts), f"{item.id}: {item.reference_text!r} not found"
        else:
            pattern = item.reference_regex
            assert any(re.search(pattern, text, re.I) for text in texts), f"{item.id}: /{pattern}/ matches nothing"
