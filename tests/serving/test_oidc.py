"""Single sign-on against a real OpenID Provider (oidc-provider under node, tests/fixtures/oidc.py) and a real
uvicorn server over fakes (HashEmbedder, EchoEngine): bearer access tokens on the API, key rotation, the web
sign-in (code flow with PKCE), the session cookie and its CSRF check, sign-out."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from rag.container import Container
from rag.settings import load_settings
from rag.settings_auth import SessionSettings
from rag.store import ChromaStore
from serving.app import create_app
from serving.sessions import SessionStore
from tests.fakes import EchoEngine, HashEmbedder, api_key_settings, auth
from tests.fixtures.oidc import (
    API,
    WEB_CLIENT,
    WEB_SECRET,
    RunningProvider,
    SigningKey,
    finish_sign_in,
    running_provider,
    sign_in,
    sign_out_at_provider,
    web_client,
)
from tests.serving.server import free_port, running

pytestmark = pytest.mark.integration


def oidc_app(data_dir: Path, issuer: str, **oidc):  # noqa: ANN201
    settings = load_settings(
        data_dir=data_dir,
        server={"api_keys": api_key_settings()},
        auth={
            "oidc": {
                "issuer": issuer,
                "client_id": WEB_CLIENT,
                "client_secret": WEB_SECRET,
                "audience": [API],
                "jwks_min_refresh_s": 0,
                **oidc,
            },
            "session": {"secure_cookie": False},  # httpx sends no Secure cookie over http (browsers do, to 127.0.0.1)
            "admin_groups": ["it-ops"],
        },
    )
    container = Container(settings, HashEmbedder(), EchoEngine(), ChromaStore(data_dir / "chroma", "test"))
    container.load()
    return create_app(container=container)


class Setup:
    def __init__(self, provider: RunningProvider, url: str, data_dir: Path) -> None:
        self.provider, self.url, self.data_dir = provider, url, data_dir

    def audit(self) -> list[dict]:
        lines = (self.data_dir / "audit" / "audit.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """One provider and one server for the tests that neither restart nor reconfigure them."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data_dir = tmp_path_factory.mktemp("oidc") / "data"
    with running_provider(clients=[web_client(url, claims={"groups": ["it-ops", "search"]})]) as provider:
        with running(oidc_app(data_dir, provider.issuer), port=port):
            yield Setup(provider, url, data_dir)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_an_access_token_from_the_provider_opens_the_api_as_its_subject_with_its_groups(setup: Setup):
    token = setup.provider.client_credentials()  # a JWT for the API (resource indicator), from the real provider
    assert httpx.get(f"{setup.url}/v1/models", headers=bearer(token)).status_code == 200
    me = httpx.get(f"{setup.url}/auth/me", headers=bearer(token)).json()
    assert me == {
        "name": WEB_CLIENT,
        "user": WEB_CLIENT,
        "email": None,
        "groups": ["it-ops", "search"],
        "role": "admin",  # it-ops is in auth.admin_groups
        "via": "oidc",
        "csrf_token": None,
    }
    retrieved = httpx.post(f"{setup.url}/v1/retrieve", headers=bearer(token), json={"query": "holidays"})
    assert retrieved.status_code == 200, retrieved.text  # a bearer token needs no CSRF token
    assert httpx.get(f"{setup.url}/v1/models", headers=auth("alice")).status_code == 200  # API keys still work


@pytest.mark.parametrize(
    ("case", "why"),
    [
        ("expired", "has expired"),
        ("foreign key, same key id", "bad signature"),
        ("foreign key, unknown key id", "unknown key id"),
        ("other audience", "another audience"),
        ("other issuer", "another issuer"),
        ("no expiry", "lacks a required claim"),
        ("symmetric algorithm", "algorithm not allowed"),
    ],
)
def test_a_bad_token_is_a_401_problem_that_names_the_failure_and_not_the_token(setup: Setup, case: str, why: str):
    provider = setup.provider
    token = {
        "expired": lambda: provider.mint(ttl=-3600),
        "foreign key, same key id": lambda: provider.mint(key=SigningKey.new(provider.keys[0].kid)),
        "foreign key, unknown key id": lambda: provider.mint(key=SigningKey.new()),
        "other audience": lambda: provider.mint(aud="urn:another-api"),
        "other issuer": lambda: provider.mint(iss="http://127.0.0.1:9"),
        "no expiry": lambda: provider.mint(exp=None),
        "symmetric algorithm": lambda: jwt.encode(provider.claims(provider.mint()), "a shared secret" * 3),
    }[case]()
    answer = httpx.get(f"{setup.url}/v1/models", headers=bearer(token))
    assert answer.status_code == 401, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert why in answer.json()["detail"]
    assert token not in answer.text and token.split(".")[1] not in answer.text
    assert httpx.get(f"{setup.url}/v1/models", headers=bearer(provider.mint())).status_code == 200  # minted right


def test_the_web_sign_in_sets_a_session_that_me_shows_and_sign_out_ends(setup: Setup):
    with httpx.Client() as browser:
        callback = sign_in(browser, setup.url, "alice", "alice-pw", next_path="/admin?tab=jobs")
        assert callback.status_code == 302 and callback.headers["location"] == "/admin?tab=jobs"
        cookie = next(h for h in callback.headers.get_list("set-cookie") if h.startswith("rag_session="))
        assert "HttpOnly" in cookie and "Path=/" in cookie and "SameSite=lax" in cookie and "Max-Age=28800" in cookie
        session_id = browser.cookies["rag_session"]
        me = browser.get(f"{setup.url}/auth/me").json()
        assert (me["user"], me["groups"], me["email"], me["via"]) == ("alice", ["hr"], "alice@example.org", "session")
        assert me["role"] == "employee" and len(me["csrf_token"]) > 20
        assert browser.get(f"{setup.url}/v1/models").status_code == 200

        refused = browser.post(f"{setup.url}/auth/logout")
        assert refused.status_code == 403 and "X-CSRF-Token" in refused.json()["detail"]
        out = browser.post(f"{setup.url}/auth/logout", headers={"X-CSRF-Token": me["csrf_token"]})
        assert out.status_code == 200 and out.json()["signed_out"] is True
        end = httpx.URL(out.json()["end_session_url"])
        assert str(end.copy_with(query=None)) == f"{setup.provider.issuer}/session/end"
        assert end.params["post_logout_redirect_uri"] == f"{setup.url}/"
        assert "rag_session" not in browser.cookies
        back = sign_out_at_provider(browser, str(end))  # the provider takes this client's post-logout address
        assert back.is_redirect and back.headers["location"] == f"{setup.url}/"
    stale = httpx.get(f"{setup.url}/auth/me", headers={"Cookie": f"rag_session={session_id}"})
    assert stale.status_code == 401 and "session has ended" in stale.json()["detail"]
    outcomes = [(e["outcome"], e["user"]) for e in setup.audit() if e["route"].startswith("/auth/")]
    assert ("signed in", "alice") in outcomes and ("signed out", "alice") in outcomes


def test_a_session_cookie_needs_the_csrf_token_and_this_origin_on_unsafe_methods(setup: Setup):
    with httpx.Client() as browser:
        sign_in(browser, setup.url, "bob", "bob-pw")
        csrf = browser.get(f"{setup.url}/auth/me").json()["csrf_token"]
        query = {"query": "holidays"}
        for headers, why in [
            ({}, "no X-CSRF-Token header"),
            ({"X-CSRF-Token": csrf[::-1]}, "a wrong X-CSRF-Token header"),
            ({"X-CSRF-Token": csrf, "Origin": "https://evil.example"}, "comes from another site"),
        ]:
            answer = browser.post(f"{setup.url}/v1/retrieve", json=query, headers=headers)
            assert answer.status_code == 403, answer.text
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["code"] == "csrf_failed" and why in answer.json()["detail"]
        for headers in [{"X-CSRF-Token": csrf}, {"X-CSRF-Token": csrf, "Origin": setup.url}]:
            assert browser.post(f"{setup.url}/v1/retrieve", json=query, headers=headers).status_code == 200


def test_a_callback_that_this_browser_did_not_start_fails_and_is_audited(setup: Setup):
    with httpx.Client() as browser:
        started = browser.get(f"{setup.url}/auth/login")
        state = httpx.URL(started.headers["location"]).params["state"]
    with httpx.Client() as other:  # the same state from another browser (no sign-in cookie): a login CSRF
        answer = other.get(f"{setup.url}/auth/callback", params={"code": "x", "state": state})
    assert answer.status_code == 302 and answer.headers["location"] == "/?sign_in_error=bad_state"
    denied = httpx.get(f"{setup.url}/auth/callback", params={"error": "access_denied", "state": state})
    assert denied.headers["location"] == "/?sign_in_error=provider_error"
    failed = [e for e in setup.audit() if e["outcome"] == "sign-in failed"]
    assert any("another browser" in e["reason"] for e in failed) and any("access_denied" in e["reason"] for e in failed)


def test_an_id_token_for_another_sign_in_nonce_is_refused(setup: Setup):
    with httpx.Client() as browser:
        started = browser.get(f"{setup.url}/auth/login")
        to_provider = httpx.URL(started.headers["location"]).copy_merge_params({"nonce": "another-sign-in"})
        answer = finish_sign_in(browser, browser.get(to_provider), "alice", "alice-pw")
        assert answer.headers["location"] == "/?sign_in_error=token_check_failed"
        assert "rag_session" not in browser.cookies
    assert any("nonce" in e.get("reason", "") for e in setup.audit() if e["outcome"] == "sign-in failed")


def test_login_refuses_a_next_that_leaves_the_site_and_asks_the_provider_with_pkce(setup: Setup):
    for bad in ["https://evil.example/", "//evil.example/x", "/\\evil.example", "admin"]:
        answer = httpx.get(f"{setup.url}/auth/login", params={"next": bad})
        assert answer.status_code == 400 and "next must be a path on this server" in answer.json()["detail"]
    answer = httpx.get(f"{setup.url}/auth/login")
    target = httpx.URL(answer.headers["location"])
    assert str(target.copy_with(query=None)) == f"{setup.provider.issuer}/auth"
    assert target.params["code_challenge_method"] == "S256" and target.params["redirect_uri"].startswith(setup.url)
    assert len(target.params["state"]) > 20 and len(target.params["nonce"]) > 20
    assert httpx.get(f"{setup.url}/auth/config").json()["sso"] is True


def test_keys_rotated_at_the_provider_are_fetched_again_without_a_server_restart(tmp_path: Path):
    old, new = SigningKey.new("old"), SigningKey.new("new")
    with running_provider(clients=[web_client("http://127.0.0.1:9")], keys=[old]) as provider:
        with running(oidc_app(tmp_path / "data", provider.issuer)) as url:
            before = provider.client_credentials()
            assert httpx.get(f"{url}/v1/models", headers=bearer(before)).status_code == 200
            provider.restart(keys=[new, old])  # new key first (it signs), old one still published
            after = provider.client_credentials()
            assert httpx.get(f"{url}/v1/models", headers=bearer(after)).status_code == 200
            assert httpx.get(f"{url}/v1/models", headers=bearer(before)).status_code == 200
            provider.restart(keys=[new])  # old key dropped: its tokens stop working once the keys are fetched
            assert httpx.get(f"{url}/v1/models", headers=bearer(provider.mint(key=SigningKey.new()))).status_code == 401
            refused = httpx.get(f"{url}/v1/models", headers=bearer(before))
            assert refused.status_code == 401 and "unknown key id" in refused.json()["detail"]
            assert httpx.get(f"{url}/v1/models", headers=bearer(after)).status_code == 200


def test_an_unknown_key_fetches_the_keys_again_at_most_once_per_jwks_min_refresh_s(tmp_path: Path):
    old, new = SigningKey.new("old"), SigningKey.new("new")
    with running_provider(clients=[web_client("http://127.0.0.1:9")], keys=[old]) as provider:
        with running(oidc_app(tmp_path / "data", provider.issuer, jwks_min_refresh_s=3600)) as url:
            assert httpx.get(f"{url}/v1/models", headers=bearer(provider.client_credentials())).status_code == 200
            provider.restart(keys=[new, old])
            refused = httpx.get(f"{url}/v1/models", headers=bearer(provider.client_credentials()))
            assert refused.status_code == 401 and "unknown key id" in refused.json()["detail"]


def test_the_server_starts_while_the_provider_is_down_and_says_so_with_a_503(tmp_path: Path):
    issuer = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with running(oidc_app(tmp_path / "data", issuer, timeout_s=2)) as url:
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert httpx.get(f"{url}/v1/models", headers=auth("alice")).status_code == 200
        token = SigningKey.new().sign({"iss": issuer, "aud": API, "sub": "alice", "exp": 2**31, "iat": 0})
        for answer in [httpx.get(f"{url}/v1/models", headers=bearer(token)), httpx.get(f"{url}/auth/login")]:
            assert answer.status_code == 503, answer.text
            assert answer.headers["content-type"] == "application/problem+json" and "Retry-After" in answer.headers
            assert answer.json()["code"] == "identity_provider_unavailable"
            assert "did not answer" in answer.json()["detail"]


def test_sessions_are_kept_in_an_owner_only_file_that_another_worker_or_a_restart_reads(setup: Setup):
    with httpx.Client() as browser:
        sign_in(browser, setup.url, "alice", "alice-pw")
        session_id = browser.cookies["rag_session"]
    path = setup.data_dir / "auth" / "sessions.sqlite3"
    assert path.stat().st_mode & 0o777 == 0o600
    assert session_id not in path.read_bytes().decode("latin-1")  # only its hash is kept
    other = SessionStore(path, SessionSettings())
    try:
        found = other.find(session_id)
    finally:
        other.close()
    assert found is not None and found.principal().user == "alice" and found.groups == ("hr",)


def test_without_oidc_api_keys_work_and_a_jwt_is_just_an_unknown_key(fake_container):
    with running(create_app(container=fake_container)) as url:
        assert httpx.get(f"{url}/v1/models", headers=auth("bob")).status_code == 200
        token = SigningKey.new().sign({"sub": "alice", "exp": 2**31})
        answer = httpx.get(f"{url}/v1/models", headers=bearer(token))
        assert answer.status_code == 401 and "API key is not valid" in answer.json()["detail"]
        assert httpx.get(f"{url}/auth/config").json()["sso"] is False
        assert httpx.get(f"{url}/auth/login").status_code == 404
        assert httpx.get(f"{url}/auth/me", headers=auth("bob")).json()["via"] == "key"
