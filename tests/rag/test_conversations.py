"""The conversation store on a real SQLite file: owners, order, rename, delete that leaves no bytes behind,
retention, the per-user cap, feedback, the re-check of citations, and the export to an eval dataset."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

import pytest

from eval.dataset import load_dataset
from rag.conversations import WITHHELD, ConversationStore, recheck, settings_fingerprint
from rag.errors import InvalidRequestError, NotFoundError
from rag.feedback import since_iso, write_dataset
from rag.settings import load_settings

CITATION = {
    "index": 1,
    "document_id": "doc-a",
    "source": "/docs/leave.md",
    "title": "Leave policy",
    "quote": "Staff get 26 days of annual leave.",
    "text": "Staff get 26 days of annual leave. Carry-over needs approval.",
}


def answer(text: str = "Staff get 26 days of annual leave [1].", **fields: object) -> dict:
    return {"content": text, "citations": [CITATION], "found": True, "model": "echo", **fields}


@pytest.fixture
def store(tmp_path: Path):
    store = ConversationStore(tmp_path / "conversations" / "conversations.sqlite3")
    yield store
    store.close()


def test_each_owner_sees_only_their_own_conversations(store: ConversationStore):
    mine = store.create("alice", "Leave")
    theirs = store.create("bob")
    assert [c["id"] for c in store.list("alice")] == [mine["id"]]
    with pytest.raises(NotFoundError) as refused:
        store.get("alice", theirs["id"])
    with pytest.raises(NotFoundError) as missing:
        store.get("alice", "conv_nonexistent")
    assert refused.value.message.replace(theirs["id"], "X") == missing.value.message.replace("conv_nonexistent", "X")
    for attempt in (
        lambda: store.rename("alice", theirs["id"], "mine now"),
        lambda: store.delete("alice", theirs["id"]),
        lambda: store.append("alice", theirs["id"], "q", answer()),
        lambda: store.check_owner("alice", theirs["id"]),
    ):
        with pytest.raises(NotFoundError):
            attempt()
    assert store.get("bob", theirs["id"])["title"] == ""  # untouched
    assert mine["id"] != theirs["id"] and len(mine["id"]) > 20


def test_messages_keep_their_order_and_the_answer_fields_and_the_list_is_newest_first(store: ConversationStore):
    first, second = store.create("alice"), store.create("alice", "Second")
    question_id, answer_id = store.append(
        "alice", first["id"], "How much   leave do I get?", answer(support="verified")
    )
    store.append("alice", first["id"], "And carry-over?", answer("Carry-over needs approval [1]."))
    listed = store.list("alice")
    assert [c["id"] for c in listed] == [first["id"], second["id"]]  # the one just updated first
    assert listed[0]["message_count"] == 4 and listed[1]["message_count"] == 0
    got = store.get("alice", first["id"])
    assert got["title"] == "How much leave do I get?"  # named after its first question
    assert [m["role"] for m in got["messages"]] == ["user", "assistant", "user", "assistant"]
    assert got["messages"][0] == {**got["messages"][0], "id": question_id, "content": "How much   leave do I get?"}
    said = got["messages"][1]
    assert said["id"] == answer_id and said["citations"] == [CITATION] and said["support"] == "verified"
    assert store.rename("alice", first["id"], "Annual leave")["title"] == "Annual leave"


def test_delete_removes_every_byte_of_the_conversation_and_its_feedback(store: ConversationStore):
    keep = store.create("alice", "Keep me")
    store.append("alice", keep["id"], "What about Kestrelvale?", answer("Kestrelvale is fine."))
    gone = store.create("alice", "Platypusfjord plans")
    _, answer_id = store.append("alice", gone["id"], "Where is Platypusfjord?", answer("Platypusfjord is north."))
    store.rate("alice", answer_id, "down", "Platypusfjord was wrong")
    store.delete("alice", gone["id"])
    with pytest.raises(NotFoundError):
        store.get("alice", gone["id"])
    assert store.feedback() == []
    assert store.get("alice", keep["id"])["messages"][1]["content"] == "Kestrelvale is fine."
    folder = store.path.parent
    for path in folder.iterdir():  # the database, and its write-ahead log and shared memory while open
        assert b"Platypusfjord" not in path.read_bytes(), path.name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    assert any(b"Kestrelvale" in p.read_bytes() for p in folder.iterdir())  # the search does find what is kept


def test_retention_sweeps_conversations_not_updated_for_the_set_days(tmp_path: Path):
    store = ConversationStore(tmp_path / "c.sqlite3", retention_days=30)
    old, fresh = store.create("alice", "old"), store.create("alice", "fresh")
    with sqlite3.connect(store.path) as conn:  # as if it had last been updated 31 days ago
        conn.execute("UPDATE conversations SET updated = '2000-01-01T00:00:00+00:00' WHERE id = ?", (old["id"],))
    assert store.sweep() == 0  # swept at create: not again within the hour
    assert store.sweep(force=True) == 1
    assert [c["id"] for c in store.list("alice")] == [fresh["id"]]
    store.close()
    assert ConversationStore(tmp_path / "c.sqlite3").sweep(force=True) == 0  # retention 0: kept until deleted


def test_past_max_per_user_the_least_recently_updated_conversation_goes(tmp_path: Path):
    store = ConversationStore(tmp_path / "c.sqlite3", max_per_user=2)
    a, b = store.create("alice", "a"), store.create("alice", "b")
    store.append("alice", a["id"], "q", answer())  # a is now the most recently updated
    others = store.create("bob", "bob's")
    c = store.create("alice", "c")
    assert {x["id"] for x in store.list("alice")} == {a["id"], c["id"]}
    assert [x["id"] for x in store.list("bob")] == [others["id"]]  # another user's cap is their own
    with pytest.raises(NotFoundError):
        store.get("alice", b["id"])


def test_a_rating_copies_the_stored_answer_and_a_second_one_replaces_it(store: ConversationStore):
    conversation = store.create("alice")
    question_id, answer_id = store.append(
        "alice", conversation["id"], "How much leave?", answer(model_sha256="f" * 64, settings_fingerprint="abc")
    )
    with pytest.raises(NotFoundError):
        store.rate("bob", answer_id, "up")  # not bob's conversation
    with pytest.raises(NotFoundError):
        store.rate("alice", question_id, "up")  # a question is not an answer
    assert store.get("alice", conversation["id"])["messages"][1]["rating"] is None
    first = store.rate("alice", answer_id, "down", "too vague")
    second = store.rate("alice", answer_id, "up")
    assert store.get("alice", conversation["id"])["messages"][1]["rating"] == "up"
    [row] = store.feedback()
    assert second["id"] == first["id"] == row["id"]
    assert row["rating"] == "up" and row["comment"] == "" and row["user"] == "alice"
    assert row["question"] == "How much leave?" and row["answer"] == "Staff get 26 days of annual leave [1]."
    assert row["citations"] == [CITATION] and row["model_sha256"] == "f" * 64 and row["settings_fingerprint"] == "abc"
    assert store.feedback(rating="down") == [] and store.feedback(since="2999-01-01") == []


def test_recheck_withholds_answers_whose_documents_are_out_of_sight():
    conversation = {
        "messages": [
            {"role": "user", "content": "How much leave?"},
            {"role": "assistant", "content": "26 days [1].", "citations": [CITATION], "retrieval_query": "leave"},
        ]
    }
    seen = recheck(conversation, {"doc-a"})["messages"][1]
    assert seen["withheld"] is False and seen["citations"] == [{**CITATION, "available": True}]
    hidden = recheck(conversation, set())["messages"][1]
    assert hidden["withheld"] is True and hidden["content"] == WITHHELD and hidden["retrieval_query"] == ""
    assert hidden["citations"] == [{"index": 1, "available": False, "note": "no longer available"}]
    assert "26 days" not in json.dumps(hidden)


def test_the_settings_fingerprint_changes_with_what_shapes_answers_only(tmp_path: Path):
    base = load_settings(data_dir=tmp_path / "a")
    assert settings_fingerprint(base) == settings_fingerprint(load_settings(data_dir=tmp_path / "b"))
    assert settings_fingerprint(base) != settings_fingerprint(load_settings(data_dir=tmp_path, retrieval={"top_k": 3}))


def test_the_export_is_an_eval_dataset_with_references_from_thumbs_up_only(store: ConversationStore, tmp_path: Path):
    conversation = store.create("alice")
    _, up = store.append("alice", conversation["id"], "How much leave?", answer())
    _, down = store.append("alice", conversation["id"], "Who approves carry-over?", answer("Nobody [1]."))
    _, declined = store.append("alice", conversation["id"], "Lunch menu?", answer("Not found.", found=False))
    store.rate("alice", up, "up")
    store.rate("alice", down, "down", 'says "nobody"\nbut HR does')
    store.rate("alice", declined, "up")
    out = tmp_path / "export.jsonl"
    assert write_dataset(store.feedback(), out) == 3
    items = {i.question: i for i in load_dataset(out)}
    assert items["How much leave?"].reference_answer == CITATION["quote"]
    assert items["How much leave?"].gold_sources == ["/docs/leave.md"]
    assert items["Who approves carry-over?"].reference_answer is None
    assert items["Who approves carry-over?"].gold_sources == [] and items["Who approves carry-over?"].answerable
    assert items["Lunch menu?"].answerable is False
    assert "# fb_" in out.read_text() and 'says \\"nobody\\"\\nbut HR does' in out.read_text()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_since_takes_iso_dates_and_times_and_refuses_anything_else():
    assert since_iso("2026-06-01") == "2026-06-01T00:00:00.000000+00:00"
    assert since_iso("2026-06-01T09:30:00+02:00") == "2026-06-01T07:30:00.000000+00:00"
    with pytest.raises(InvalidRequestError, match="not an ISO date"):
        since_iso("last week")


def test_two_stores_on_one_file_as_two_server_processes_see_each_others_writes(tmp_path: Path):
    path = tmp_path / "conversations.sqlite3"
    first, second = ConversationStore(path), ConversationStore(path)
    made = first.create("alice", "Shared")
    _, answer_id = second.append("alice", made["id"], "Where is Gnuquill?", answer("Gnuquill is here."))
    assert first.get("alice", made["id"])["messages"][1]["id"] == answer_id
    first.list("alice")  # the first store's connection has read the pages too
    second.delete("alice", made["id"])
    with pytest.raises(NotFoundError):
        first.get("alice", made["id"])
    assert not any(b"Gnuquill" in p.read_bytes() for p in tmp_path.iterdir())
    first.close()
    second.close()
