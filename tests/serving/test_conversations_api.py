"""Saved conversations and feedback over HTTP: a real uvicorn server on loopback, real SQLite and Chroma on disk,
the official openai client, the fake models (HashEmbedder, EchoEngine). API keys come from the keys file, which
the server re-reads when it changes: that is how a user loses a group here."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import openai
import pytest

from rag.container import Container
from rag.settings import ApiKey, Settings, load_settings
from rag.store import ChromaStore
from serving.app import create_app
from serving.auth import hash_key, write_keys_file
from tests.fakes import TEST_KEYS, EchoEngine, HashEmbedder, api_key_settings, auth
from tests.serving.server import running

pytestmark = pytest.mark.integration

HR_DOC = "# Leave policy\n\nStaff get 26 days of annual leave. Carry-over of five days needs approval.\n"
PUBLIC_DOC = "# IT security\n\nPassphrases must be at least 14 characters long.\n"


def write_keys(settings: Settings, alice_groups: list[str]) -> None:
    keys = [
        ApiKey(name=n, sha256=hash_key(k), user=u, groups=alice_groups if n == "alice" else g, role=r)
        for n, (k, u, g, r) in TEST_KEYS.items()
    ]
    write_keys_file(settings.data_dir / "api_keys.yaml", keys)


def make_container(settings: Settings) -> Container:
    container = Container(settings, HashEmbedder(), EchoEngine(), ChromaStore(settings.data_dir / "chroma", "test"))
    container.load()
    return container


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = load_settings(
        data_dir=tmp_path / "data", chunking={"chunk_tokens": 60, "overlap_tokens": 8}, server={"allow_anonymous": True}
    )
    write_keys(settings, ["hr"])
    return settings


@pytest.fixture
def container(settings: Settings, tmp_path: Path) -> Container:
    container = make_container(settings)
    for name, text, acl in (("hr", HR_DOC, "group:hr"), ("it", PUBLIC_DOC, "public")):
        folder = tmp_path / name
        folder.mkdir()
        (folder / f"{name}.md").write_text(text)
        assert container.ingest_service().ingest_paths([folder], acl=[acl]).ok
    return container


@pytest.fixture
def client(container: Container):
    app = create_app(container=container)
    app.state.keyring.recheck_s = 0  # the keys file is looked at on every request, not once a second
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        yield http


def ask(client: httpx.Client, question: str, conversation_id: str, who: str = "alice") -> dict:
    reply = client.post("/v1/query", json={"question": question, "conversation_id": conversation_id}, headers=auth(who))
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_create_list_rename_and_delete_are_each_users_own(client: httpx.Client):
    made = client.post("/v1/conversations", json={"title": "  Leave questions "}, headers=auth("alice"))
    assert made.status_code == 201 and made.json()["title"] == "Leave questions"
    cid = made.json()["id"]
    untitled = client.post("/v1/conversations", headers=auth("alice")).json()
    listed = client.get("/v1/conversations", headers=auth("alice")).json()["data"]
    assert [c["id"] for c in listed] == [untitled["id"], cid] and listed[0]["message_count"] == 0
    assert client.get("/v1/conversations", headers=auth("bob")).json()["data"] == []
    for method in ("GET", "PATCH", "DELETE"):  # bob cannot tell alice's conversation from a missing one
        theirs = client.request(method, f"/v1/conversations/{cid}", json={"title": "x"}, headers=auth("bob"))
        missing = client.request(method, "/v1/conversations/conv_missing", json={"title": "x"}, headers=auth("bob"))
        assert theirs.status_code == missing.status_code == 404
        assert theirs.json()["detail"].replace(cid, "?") == missing.json()["detail"].replace("conv_missing", "?")
    renamed = client.patch(f"/v1/conversations/{cid}", json={"title": "Annual leave"}, headers=auth("alice"))
    assert renamed.status_code == 200 and renamed.json()["title"] == "Annual leave"
    for bad in ({"title": "  "}, {"title": "a\nb"}, {"title": "x" * 201}, {}, {"title": "ok", "owner": "bob"}):
        refused = client.patch(f"/v1/conversations/{cid}", json=bad, headers=auth("alice"))
        assert refused.status_code == 400, bad
    assert client.delete(f"/v1/conversations/{cid}", headers=auth("alice")).status_code == 204
    assert client.get(f"/v1/conversations/{cid}", headers=auth("alice")).status_code == 404
    assert client.delete(f"/v1/conversations/{cid}", headers=auth("alice")).status_code == 404
    anonymous = client.get("/v1/conversations")
    assert anonymous.status_code == 401 and "signed-in user" in anonymous.json()["detail"]


def test_asking_in_a_conversation_saves_both_turns_and_the_audit_line_holds_no_question(
    client: httpx.Client, container: Container
):
    cid = client.post("/v1/conversations", headers=auth("alice")).json()["id"]
    calls = len(container.engine.calls)
    for foreign in ("conv_missing", client.post("/v1/conversations", headers=auth("bob")).json()["id"]):
        refused = client.post(
            "/v1/query", json={"question": "Leave?", "conversation_id": foreign}, headers=auth("alice")
        )
        assert refused.status_code == 404
    assert len(container.engine.calls) == calls  # refused before any model work
    said = ask(client, "How many days of annual leave do staff get?", cid)
    assert "26 days" in said["answer"] and said["conversation_id"] == cid
    follow_up = ask(client, "And how many can be carried over?", cid)  # the stored turns are its history
    assert "annual" in follow_up["retrieval_query"]
    got = client.get(f"/v1/conversations/{cid}", headers=auth("alice")).json()
    assert got["title"] == "How many days of annual leave do staff get?"
    assert [m["role"] for m in got["messages"]] == ["user", "assistant"] * 2
    answer = got["messages"][1]
    assert answer["id"] == said["message_id"] and answer["content"] == said["answer"] and not answer["withheld"]
    assert [c | {"available": True} for c in said["citations"]] == answer["citations"]
    assert (
        answer["model"] == "echo" and answer["model_sha256"] == "0" * 64 and len(answer["settings_fingerprint"]) == 16
    )
    lines = [json.loads(x) for x in (container.settings.data_dir / "audit" / "audit.jsonl").read_text().splitlines()]
    asked = [x for x in lines if x.get("conversation") == cid and x["outcome"] == "answered"]
    assert len(asked) == 2 and all(len(x["question_sha256"]) == 64 for x in asked)
    assert not any("annual leave" in json.dumps(x) for x in lines)
    plain = client.post("/v1/query", json={"question": "How long must passphrases be?"}, headers=auth("bob"))
    assert plain.json()["conversation_id"] is None
    assert any(x.get("question") == "How long must passphrases be?" for x in _audit(container))  # as before


def _audit(container: Container) -> list[dict]:
    path = container.settings.data_dir / "audit" / "audit.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_the_openai_client_asks_in_a_conversation_streamed_and_not(client: httpx.Client, container: Container):
    cid = client.post("/v1/conversations", headers=auth("alice")).json()["id"]
    ai = openai.OpenAI(base_url=str(client.base_url) + "/v1", api_key=TEST_KEYS["alice"][0], max_retries=0)
    question = [{"role": "user", "content": "How long must passphrases be?"}]
    whole = ai.chat.completions.create(model="echo", messages=question, extra_body={"conversation_id": cid})
    assert whole.model_extra["conversation_id"] == cid
    chunks = list(
        ai.chat.completions.create(model="echo", messages=question, stream=True, extra_body={"conversation_id": cid})
    )
    last = chunks[-1].model_extra
    assert last["conversation_id"] == cid and last["message_id"] != whole.model_extra["message_id"]
    got = client.get(f"/v1/conversations/{cid}", headers=auth("alice")).json()["messages"]
    assert [m["id"] for m in got[1::2]] == [whole.model_extra["message_id"], last["message_id"]]
    assert got[3]["content"] == "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
    with pytest.raises(openai.NotFoundError):
        ai.chat.completions.create(model="echo", messages=question, extra_body={"conversation_id": "conv_nope"})
    asked = [x for x in _audit(container) if x.get("conversation") == cid]
    assert len(asked) == 2 and not any("passphrases" in json.dumps(x) for x in _audit(container))


def test_conversations_survive_a_restart(settings: Settings, container: Container):
    app = create_app(container=container)
    with running(app) as url:
        cid = httpx.post(url + "/v1/conversations", headers=auth("alice")).json()["id"]
        said = httpx.post(
            url + "/v1/query",
            json={"question": "How long must passphrases be?", "conversation_id": cid},
            headers=auth("alice"),
        ).json()
    container.store.close()
    with running(create_app(container=make_container(settings))) as url:
        got = httpx.get(f"{url}/v1/conversations/{cid}", headers=auth("alice")).json()
    assert got["messages"][1]["id"] == said["message_id"] and got["messages"][1]["content"] == said["answer"]


def test_deleting_leaves_no_trace_of_the_conversation_anywhere_in_the_data_dir(
    client: httpx.Client, settings: Settings
):
    cid = client.post("/v1/conversations", json={"title": "Okapizorn plans"}, headers=auth("alice")).json()["id"]
    said = ask(client, "Does Okapizorn change the annual leave?", cid)
    client.post(
        "/v1/feedback",
        json={"message_id": said["message_id"], "rating": "down", "comment": "Okapizorn!"},
        headers=auth("alice"),
    )
    kept = client.post("/v1/conversations", headers=auth("alice")).json()["id"]
    ask(client, "Is Wombatique about leave?", kept)

    def grep(phrase: str) -> list[str]:
        found = subprocess.run(
            ["grep", "-r", "-l", "-a", phrase, str(settings.data_dir)], capture_output=True, text=True
        )
        return found.stdout.split()

    assert grep("Okapizorn") and grep("Wombatique")  # stored: the search below can find it
    assert client.delete(f"/v1/conversations/{cid}", headers=auth("alice")).status_code == 204
    assert client.get(f"/v1/conversations/{cid}", headers=auth("alice")).status_code == 404
    assert grep("Okapizorn") == []
    assert grep("Wombatique")  # the other conversation is untouched
    deleted = [x for x in _audit_of(settings) if x["outcome"] == "conversation deleted"]
    assert deleted == [deleted[0] | {"conversation": cid, "user": "alice"}]


def _audit_of(settings: Settings) -> list[dict]:
    return [json.loads(x) for x in (settings.data_dir / "audit" / "audit.jsonl").read_text().splitlines()]


def test_reopening_after_losing_access_shows_no_longer_available_and_no_text(
    client: httpx.Client, settings: Settings, container: Container
):
    cid = client.post("/v1/conversations", headers=auth("alice")).json()["id"]
    leave = ask(client, "How many days of annual leave do staff get?", cid)
    public = ask(client, "How many characters long must IT passphrases be?", cid)
    assert leave["citations"] and {c["title"] for c in public["citations"]} == {"IT security"}
    write_keys(settings, ["engineering"])  # alice leaves HR
    got = client.get(f"/v1/conversations/{cid}", headers=auth("alice")).json()
    hidden, shown = got["messages"][1], got["messages"][3]
    assert hidden["withheld"] is True and hidden["citations"][0] == {
        "index": 1,
        "available": False,
        "note": "no longer available",
    }
    assert "26 days" not in json.dumps(got) and "Leave policy" not in json.dumps(got)
    assert shown["withheld"] is False and shown["citations"][0]["available"] is True
    before = len(container.engine.calls)
    ask(client, "What else?", cid)  # the stored history it takes is re-checked too
    assert "26 days" not in json.dumps(container.engine.calls[before:])
    [doc] = [d for d in container.ingest_service().registry.documents() if d.path.endswith("it.md")]
    container.ingest_service().delete_document(doc.doc_id)
    got = client.get(f"/v1/conversations/{cid}", headers=auth("alice")).json()
    assert got["messages"][3]["withheld"] is True and "14 characters" not in json.dumps(got)


def test_feedback_counts_and_shows_to_admins_only(client: httpx.Client):
    cid = client.post("/v1/conversations", headers=auth("alice")).json()["id"]
    said = ask(client, "How long must passphrases be?", cid)
    mid = said["message_id"]
    rate = {"message_id": mid, "rating": "up"}
    for bad in ({**rate, "rating": "meh"}, {**rate, "comment": "x" * 2001}, {"rating": "up"}):
        assert client.post("/v1/feedback", json=bad, headers=auth("alice")).status_code == 400
    assert client.post("/v1/feedback", json=rate, headers=auth("bob")).status_code == 404  # not bob's answer
    before = _counter(client, "up")
    first = client.post("/v1/feedback", json={**rate, "rating": "down"}, headers=auth("alice"))
    again = client.post("/v1/feedback", json={**rate, "comment": "clear"}, headers=auth("alice"))
    assert first.status_code == again.status_code == 201 and _counter(client, "up") == before + 1
    assert client.get("/v1/admin/feedback", headers=auth("alice")).status_code == 403
    view = client.get("/v1/admin/feedback", params={"rating": "up"}, headers=auth("admin")).json()["data"]
    assert [(r["id"], r["rating"], r["comment"], r["user"]) for r in view] == [
        (first.json()["id"], "up", "clear", "alice")
    ]
    assert view[0]["question"] == "How long must passphrases be?" and view[0]["answer"] == said["answer"]
    assert view[0]["citations"] == said["citations"] and view[0]["model_sha256"] == "0" * 64
    assert client.get("/v1/admin/feedback", params={"rating": "down"}, headers=auth("admin")).json()["data"] == []


def _counter(client: httpx.Client, rating: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'rag_feedback_total{{rating="{rating}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_with_conversations_off_the_routes_and_the_field_say_so(tmp_path: Path):
    settings = load_settings(
        data_dir=tmp_path / "off", conversations={"enabled": False}, server={"api_keys": api_key_settings()}
    )
    with running(create_app(container=make_container(settings))) as url, httpx.Client(base_url=url) as http:
        listed = http.get("/v1/conversations", headers=auth("alice"))
        assert listed.status_code == 404 and "conversations.enabled: false" in listed.json()["detail"]
        asked = http.post("/v1/query", json={"question": "Leave?", "conversation_id": "conv_x"}, headers=auth("alice"))
        assert asked.status_code == 400 and "conversations.enabled: false" in asked.json()["detail"]
    assert not (settings.data_dir / "conversations").exists()
