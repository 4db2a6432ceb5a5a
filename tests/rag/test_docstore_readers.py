"""Searches read the registry through their own read-only connections: they see the last commit and never wait
for a write in progress."""

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rag.docstore import DocStore
from tests.rag.test_keyword_statistics import add_document as _add


def test_searches_see_the_last_commit_without_waiting_for_a_write(tmp_path: Path):
    store = DocStore(tmp_path / "registry.sqlite3")
    _add(store, "handbook", "the holiday allowance is 25 days", ["public"])
    generation = store.access_generation
    inside, release = threading.Event(), threading.Event()

    def slow_write() -> None:  # holds the write connection and an open transaction that grants more
        with store._transaction() as conn:
            conn.execute("INSERT INTO doc_acl(doc_id, token) VALUES('secret', 'public')")
            inside.set()
            release.wait(10)

    with ThreadPoolExecutor(1) as pool:
        writing = pool.submit(slow_write)
        assert inside.wait(10)
        # Not blocked by the open transaction, and it sees only what was committed.
        assert store.allowed_documents({"public"}) == ["handbook"]
        assert [cid for cid, _ in store.keyword_search("holiday allowance", 5, {"public"})] == ["handbook-0"]
        assert store.access_generation == generation
        release.set()
        writing.result()
    assert sorted(store.allowed_documents({"public"})) == ["handbook", "secret"]

    store.close()  # the read connections go with it; the store reopens on next use
    assert store.allowed_documents({"public", "group:hr"}, None)
    _add(store, "pay", "salary bands are reviewed in april", ["group:hr"])
    assert store.access_generation > generation
    assert store.allowed_documents({"group:hr"}) == ["pay"]
    assert store.keyword_search("salary", 5, {"public"}) == []
    store.close()
