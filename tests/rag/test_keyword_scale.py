"""The array path of the keyword leg (``rag.keyword_scale``), taken by large stores, checked on small ones with the
threshold lowered: it returns what the exact path returns, only the caller's chunks, scored with the caller's
statistics, sees writes of this process and of others, and leaves out words in very many chunks of all."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from rag import keyword_scale
from rag.docstore import DocStore
from rag.keyword_index import KeywordIndex
from tests.rag import test_keyword_statistics
from tests.rag.test_keyword_statistics import add_document

WORDS = "portal leave travel kitchen audit merger badge parking invoice laptop".split()
CALLERS = [{"public"}, {"group:a"}, {"group:b"}, {"user:solo"}, {"public", "group:a", "group:b", "user:solo"}]
QUERIES = ["portal leave", "travel kitchen audit", "merger", "badge parking invoice laptop", "portal zzz", "zzz"]


def acl_of(n: int) -> list[str]:
    """Mixed profiles: public, two groups (overlapping), and one document only ``user:solo`` sees."""
    if n == 7:
        return ["user:solo"]
    return [t for t, keep in (("public", n % 2 == 0), ("group:a", n % 3 == 0), ("group:b", n % 3 != 0)) if keep]


@pytest.fixture
def store(tmp_path: Path) -> DocStore:
    """40 documents of 1-3 chunks, words repeated (tf up to 4) and lengths varied."""
    rng = random.Random(7)
    found = DocStore(tmp_path / "kw.sqlite3")
    for n in range(40):
        doc_id, acl = f"d{n}", acl_of(n)
        chunks = []
        for i in range(rng.randint(1, 3)):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 25))) + f" filler{n} the"
            chunks.append((f"{doc_id}-{i}", doc_id, text, text))
        found.begin(doc_id, f"/docs/{doc_id}.md", acl)
        found.put_chunks(chunks)
        found.commit(
            doc_id, path=f"/docs/{doc_id}.md", title=doc_id, doc_type="md", content_hash=doc_id, size_bytes=1,
            chunk_count=len(chunks), acl=acl,
        )  # fmt: skip
    return found


def search(store: DocStore, fast: bool, *args, **kwargs) -> list[tuple[str, float]]:
    store.SCALE_FROM = 0 if fast else 10**9
    return store.keyword_search(*args, **kwargs)


@pytest.fixture
def calls(monkeypatch) -> list:
    """Records every search the array path answers: a test of it must not pass on the exact path."""
    seen: list = []
    original = keyword_scale.KeywordScale.search

    def spy(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append(args[3])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(keyword_scale.KeywordScale, "search", spy)
    return seen


@pytest.mark.parametrize("text_tf_max", [0, 256])  # tf from the index's occurrences, and from the texts
def test_the_array_path_returns_what_the_exact_path_returns(store, calls, monkeypatch, text_tf_max):
    monkeypatch.setattr(keyword_scale, "TEXT_TF_MAX", text_tf_max)
    for query in QUERIES:
        for caller in CALLERS:
            for top_k in (1, 5, 100):
                exact = search(store, False, query, top_k, caller)
                assert search(store, True, query, top_k, caller) == exact, (query, caller, top_k)
    assert len(calls) == len(QUERIES) * len(CALLERS) * 3
    assert search(store, True, "audit", 3, {"user:solo"})  # the one-document caller finds its document


def test_the_array_path_returns_only_the_callers_chunks(store, calls):
    for caller in CALLERS:
        allowed = set(store.allowed_documents(caller))
        for query in QUERIES:
            for chunk_id, _ in search(store, True, query, 100, caller):
                assert chunk_id.split("-")[0] in allowed, (query, caller, chunk_id)
    assert {c.split("-")[0] for c, _ in search(store, True, "portal leave travel audit", 100, {"user:solo"})} == {"d7"}
    assert calls


def test_scores_of_the_array_path_do_not_depend_on_hidden_documents(tmp_path, calls, monkeypatch):
    monkeypatch.setattr(KeywordIndex, "SCALE_FROM", 0)
    test_keyword_statistics.test_keyword_scores_do_not_depend_on_hidden_documents(tmp_path)
    assert len(calls) >= 7


def test_the_arrays_follow_writes_of_this_process_and_of_others(store, tmp_path, calls):
    assert search(store, True, "quokka", 5, {"public"}) == []
    add_document(store, "new", "quokka portal", ["public"])
    assert [c for c, _ in search(store, True, "quokka", 5, {"public"})] == ["new-0"]
    store.SCALE_FROM = 0
    store.shared = True  # as in server mode: another process's grants are seen
    other = DocStore(tmp_path / "kw.sqlite3")  # another process's connection to the same file
    add_document(other, "far", "quokka quokka wombat", ["public"])
    other.bump_vectors_version()
    assert [c for c, _ in search(store, True, "wombat", 5, {"public"})] == ["far-0"]
    assert [c for c, _ in search(store, True, "quokka", 5, {"public"})] == ["far-0", "new-0"]
    other.delete_chunks(["far-0"])
    other.forget("far")
    other.bump_vectors_version()
    assert search(store, True, "wombat", 5, {"public"}) == []
    assert search(store, True, "quokka", 5, {"public"}) == search(store, False, "quokka", 5, {"public"})
    other.close()
    assert len(calls) >= 5


def test_a_word_in_very_many_chunks_of_all_is_left_out_for_every_caller(store, calls, monkeypatch):
    """``filler7`` is in the solo document only; ``portal`` in many: above COMMON_ANYWHERE it counts for no one,
    even for the caller who sees a single document and for whom it would be rare."""
    portal = sum(1 for _ in store.conn.execute("SELECT 1 FROM chunks_fts WHERE chunks_fts MATCH 'portal'"))
    assert search(store, True, "portal", 100, {"user:solo"})
    monkeypatch.setattr(keyword_scale, "COMMON_ANYWHERE", portal - 1)
    for caller in CALLERS:
        assert search(store, True, "portal", 100, caller) == []
        with_rare = search(store, True, "portal filler7", 100, caller)
        assert with_rare == search(store, True, "filler7", 100, caller)
    assert search(store, True, "filler7", 100, {"user:solo"})
    monkeypatch.setattr(keyword_scale, "COMMON_ANYWHERE", portal)  # at the bar: still read
    assert search(store, True, "portal", 100, {"public"}) == search(store, False, "portal", 100, {"public"})
    assert calls


def test_a_word_only_hidden_documents_hold_does_not_crowd_out_the_callers_words_on_the_array_path(
    tmp_path, calls, monkeypatch
):
    monkeypatch.setattr(KeywordIndex, "SCALE_FROM", 0)
    test_keyword_statistics.test_a_word_only_hidden_documents_hold_does_not_crowd_out_the_callers_words(
        tmp_path, monkeypatch
    )
    assert calls
