"""Keyword scores tell a caller nothing about documents hidden from them: BM25's statistics (how many chunks hold
a word, how many chunks there are, their mean length) are those of the caller's chunks only. Checked on the real
SQLite keyword index, and through hybrid retrieval over real Chroma, with and without a hidden document."""

from __future__ import annotations

from pathlib import Path

from ingest.pipeline import IngestService
from rag.acl import Identity
from rag.docstore import DocStore
from rag.retrieval import Retriever
from rag.settings import load_settings
from rag.store import ChromaStore
from tests.fakes import HashEmbedder

PUBLIC = {
    "leave": "Annual leave is booked in the portal. Managers approve leave within a week.",
    "travel": "Travel is booked in TripDesk. Rail travel is preferred for trips under four hours.",
    "kitchen": "The kitchen closes at six. Leave the portal kiosk switched on overnight.",
}
# Holds both query words, many times: FTS5's bm25() over all chunks weighs them differently once it exists.
HIDDEN = "Merger notes: portal portal portal migration, leave freeze, leave leave portal audit for the board."


def registry(path: Path, with_hidden: bool) -> DocStore:
    store = DocStore(path)
    docs = [(name, text, ["public"]) for name, text in PUBLIC.items()]
    if with_hidden:
        docs.append(("merger", HIDDEN, ["group:board"]))
    for doc_id, text, acl in docs:
        add_document(store, doc_id, text, acl)
    return store


def add_document(store: DocStore, doc_id: str, text: str, acl: list[str]) -> None:
    """One document of one chunk, committed to the registry and the keyword index."""
    store.begin(doc_id, f"/docs/{doc_id}.md", acl)
    store.put_chunks([(f"{doc_id}-0", doc_id, text, text)])
    store.commit(
        doc_id, path=f"/docs/{doc_id}.md", title=doc_id, doc_type="md", content_hash=doc_id, size_bytes=1,
        chunk_count=1, acl=acl,
    )  # fmt: skip


def test_keyword_scores_do_not_depend_on_hidden_documents(tmp_path: Path):
    without = registry(tmp_path / "without.sqlite3", with_hidden=False)
    with_hidden = registry(tmp_path / "with.sqlite3", with_hidden=True)
    for query in ("portal leave", "leave", "portal"):
        seen = without.keyword_search(query, 10, {"public"})
        assert seen and seen == with_hidden.keyword_search(query, 10, {"public"}), query
    # The board sees the hidden document, scored among its own chunks; the others' scores change for them only.
    board = with_hidden.keyword_search("portal leave", 10, {"public", "group:board"})
    assert board[0][0] == "merger-0"
    assert dict(board)["leave-0"] != dict(without.keyword_search("portal leave", 10, {"public"}))["leave-0"]


def test_fused_scores_of_a_public_caller_do_not_depend_on_hidden_documents(tmp_path: Path):
    public, hidden = tmp_path / "public", tmp_path / "hidden"
    public.mkdir()
    hidden.mkdir()
    for name, text in PUBLIC.items():
        (public / f"{name}.md").write_text(f"# {name.title()}\n\n{text}\n")
    (hidden / "merger.md").write_text(f"# Merger\n\n{HIDDEN}\n")
    results = []
    for name, folders in (("without", [public]), ("with", [public, hidden])):
        settings = load_settings(data_dir=tmp_path / name, retrieval={"fusion": "dbsf", "mode": "hybrid"})
        store = ChromaStore(settings.data_dir / "chroma", "test")
        service = IngestService(HashEmbedder(), store, settings.chunking, settings.ingest)
        service.ingest_paths([public], acl=["public"])
        if hidden in folders:
            service.ingest_paths([hidden], acl=["group:board"])
        retriever = Retriever(HashEmbedder(), store, settings.retrieval)
        chunks = retriever.retrieve("portal leave booked", 10, identity=Identity.anonymous())
        results.append([(c.id, c.fused, c.ranks, c.score) for c in chunks])
        store.close()
    assert len(results[0]) >= 2
    assert results[0] == results[1]


def test_counting_common_words_only_up_to_the_limit_changes_no_result(tmp_path: Path, monkeypatch):
    """A word common in the whole index is counted among the caller's chunks only until it is known to be too
    common for them; the results equal those of exact counts, including when every word is too common (the two
    rarest are then kept) and when a common word is absent from the caller's chunks."""
    from rag import keyword_index

    store = DocStore(tmp_path / "many.sqlite3")
    words = ["portal", "leave", "travel", "kitchen", "audit"]
    for n in range(60):
        doc_id, acl = f"d{n}", ["public"] if n % 3 else ["group:board"]
        text = " ".join(w for i, w in enumerate(words) if n % (i + 2) == 0 or i == n % 5) + f" item{n}"
        add_document(store, doc_id, text, acl)
    queries = ["portal leave item7", "portal leave travel", "audit kitchen", "leave", "portal item0"]
    callers = [{"public"}, {"group:board"}, {"public", "group:board"}]
    monkeypatch.setattr(keyword_index, "COMMON_FLOOR", 4)  # every word but itemN is common here
    capped = [store.keyword_search(q, 20, c, common_share=0.01) for q in queries for c in callers]
    exact_count = keyword_index.KeywordIndex._visible_count
    monkeypatch.setattr(
        keyword_index.KeywordIndex,
        "_visible_count",
        staticmethod(lambda conn, w, v, p, cap=None: exact_count(conn, w, v, p)),
    )
    exact = [store.keyword_search(q, 20, c, common_share=0.01) for q in queries for c in callers]
    assert capped == exact
    assert sum(1 for found in capped if found) >= len(capped) - 3  # a caller may not see item7's document


def test_counting_words_in_all_chunks_only_up_to_the_limit_changes_no_result(tmp_path: Path, monkeypatch):
    """How many chunks of all hold a word is counted only up to the limit (fts5vocab reads the whole list of a
    word's chunks); the results equal those of fts5vocab's exact counts, for words above and below the limit."""
    from rag import keyword_index

    store = DocStore(tmp_path / "many.sqlite3")
    words = ["portal", "leave", "travel", "kitchen", "audit"]
    for n in range(60):
        text = " ".join(w for i, w in enumerate(words) if n % (i + 2) == 0 or i == n % 5) + f" item{n}"
        add_document(store, f"d{n}", text, ["public"] if n % 3 else ["group:board"])
    queries = ["portal leave item7", "portal leave travel", "audit kitchen", "leave", "portal item0", "absent"]
    callers = [{"public"}, {"group:board"}, {"public", "group:board"}]
    monkeypatch.setattr(keyword_index, "COMMON_FLOOR", 4)
    capped = [store.keyword_search(q, 20, c, common_share=0.01) for q in queries for c in callers]

    def exact(conn, word, cap):  # noqa: ANN001, ANN202 - fts5vocab's count, the way before
        row = conn.execute("SELECT doc FROM chunks_vocab WHERE term = ?", (word,)).fetchone()
        return row[0] if row else 0

    monkeypatch.setattr(keyword_index.KeywordIndex, "_global_count", staticmethod(exact))
    assert capped == [store.keyword_search(q, 20, c, common_share=0.01) for q in queries for c in callers]
    assert sum(1 for found in capped if found) >= len(capped) - 6


def test_a_word_only_hidden_documents_hold_does_not_crowd_out_the_callers_words(tmp_path: Path, monkeypatch):
    """When every word the caller can see is too common for them, the two rarest are searched. A rarer word that
    only a hidden document holds must not take their place: the caller would get nothing, and so learn that hidden
    documents hold it. The results are those of the same index without the hidden document."""
    from rag import keyword_index

    monkeypatch.setattr(keyword_index, "COMMON_FLOOR", 4)  # portal and leave are common among 60 chunks
    stores = []
    for name, with_hidden in (("without", False), ("with", True)):
        store = DocStore(tmp_path / f"{name}.sqlite3")
        for n in range(60):
            add_document(store, f"d{n}", f"portal leave notes {'travel' if n % 2 else 'kitchen'}", ["public"])
        if with_hidden:
            add_document(store, "secret", "zephyrgram portal", ["group:board"])
        stores.append(store)
    query = "portal leave zephyrgram"
    seen = stores[0].keyword_search(query, 10, {"public"}, common_share=0.01)
    assert len(seen) == 10
    assert stores[1].keyword_search(query, 10, {"public"}, common_share=0.01) == seen
    assert stores[1].keyword_search(query, 10, {"group:board"}, common_share=0.01)[0][0] == "secret-0"
