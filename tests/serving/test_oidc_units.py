"""The OIDC pieces without node: settings checks, the token shape, the provider's keys kept and fetched again (an
httpx mock transport stands in for the provider, a fake clock for time), and session lifetimes in real SQLite."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from rag.errors import AuthenticationError, ConfigError, IdentityProviderUnavailableError
from rag.settings_auth import OidcSettings, SessionSettings
from serving.auth import Principal
from serving.oidc import OpenIdProvider, TokenVerifier
from serving.sessions import SessionStore

ISSUER = "https://id.example.org"


class FakeProvider:
    """Discovery and JWKS answers, counted; ``up`` False makes every request fail to connect."""

    def __init__(self) -> None:
        self.keys = {"k1": rsa.generate_private_key(public_exponent=65537, key_size=2048)}
        self.fetches = 0
        self.up = True

    def handle(self, request: httpx.Request) -> httpx.Response:
        if not self.up:
            raise httpx.ConnectError("refused", request=request)
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json={"issuer": ISSUER, "jwks_uri": f"{ISSUER}/jwks"})
        self.fetches += 1
        jwks = [
            {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(k.public_key())), "kid": kid}
            for kid, k in self.keys.items()
        ]
        return httpx.Response(200, json={"keys": jwks})

    def token(self, kid: str, **claims) -> str:  # noqa: ANN003
        body = {"iss": ISSUER, "aud": "rag", "sub": "alice", "iat": int(time.time()), "exp": int(time.time()) + 60}
        return jwt.encode({**body, **claims}, self.keys[kid], algorithm="RS256", headers={"kid": kid})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def provider(fake: FakeProvider, clock: Clock, **settings) -> OpenIdProvider:  # noqa: ANN003
    oidc = OidcSettings(issuer=ISSUER, client_id="rag", jwks_min_refresh_s=10, jwks_cache_s=300, **settings)
    return OpenIdProvider(oidc, transport=httpx.MockTransport(fake.handle), clock=clock)


def test_settings_that_cannot_work_are_refused_at_start_saying_what_to_fix():
    for settings, says in [
        ({"issuer": "id.example.org"}, "is not a URL"),
        ({"issuer": "http://id.example.org"}, "must be https://"),
        ({"issuer": ISSUER, "client_id": ""}, "client_id is empty"),
        ({"issuer": ISSUER, "public_url": "rag.example.org"}, "is not this server's address"),
        ({"issuer": ISSUER, "algorithms": ["RS256", "HS256"]}, "asymmetric algorithms only"),
    ]:
        with pytest.raises(ConfigError, match=says):
            OpenIdProvider(OidcSettings(**{"client_id": "rag", **settings}))
    OpenIdProvider(OidcSettings(issuer="http://127.0.0.1:8080", client_id="rag")).close()  # loopback: tests


def test_only_jwt_shaped_bearers_are_taken_for_tokens_and_api_keys_never_are():
    verifier = TokenVerifier(OpenIdProvider(OidcSettings(issuer=ISSUER, client_id="rag")))
    assert verifier.looks_like_token("eyJh.eyJz.c2ln")
    assert not verifier.looks_like_token("rag-abc.def.ghi")
    assert not verifier.looks_like_token("plain-key")
    assert not verifier.looks_like_token("a.b.")
    assert verifier.audience == ["rag"]  # the client id, unless auth.oidc.audience says otherwise


def test_keys_are_kept_and_an_unknown_key_id_fetches_them_again_at_most_once_per_min_refresh():
    fake, clock = FakeProvider(), Clock()
    oidc = provider(fake, clock)
    assert oidc.claims(fake.token("k1"), ["rag"])["sub"] == "alice"
    assert oidc.claims(fake.token("k1"), ["rag"])["sub"] == "alice" and fake.fetches == 1  # kept
    fake.keys["k2"] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    clock.now += 5  # within jwks_min_refresh_s of the last fetch: not fetched again
    with pytest.raises(AuthenticationError, match="unknown key id"):
        oidc.claims(fake.token("k2"), ["rag"])
    assert fake.fetches == 1
    clock.now += 5
    assert oidc.claims(fake.token("k2"), ["rag"])["sub"] == "alice" and fake.fetches == 2
    clock.now += 301  # past jwks_cache_s: fetched again even for a known key
    oidc.claims(fake.token("k1"), ["rag"])
    assert fake.fetches == 3


def test_a_provider_that_goes_down_keeps_the_keys_fetched_before_and_one_never_reached_is_a_503():
    fake, clock = FakeProvider(), Clock()
    oidc = provider(fake, clock)
    oidc.claims(fake.token("k1"), ["rag"])
    fake.up, clock.now = False, clock.now + 1000
    assert oidc.claims(fake.token("k1"), ["rag"])["sub"] == "alice"  # the keys fetched before stay in use

    down = provider(fake, Clock())
    with pytest.raises(IdentityProviderUnavailableError, match="did not answer"):
        down.claims(fake.token("k1"), ["rag"])
    fake.up = True  # asked again only after jwks_min_refresh_s, not on every request
    with pytest.raises(IdentityProviderUnavailableError):
        down.claims(fake.token("k1"), ["rag"])


def test_user_groups_and_email_come_from_the_configured_claims():
    fake, clock = FakeProvider(), Clock()
    verifier = TokenVerifier(provider(fake, clock, user_claim="preferred_username", groups_claim="roles"))
    token = fake.token("k1", preferred_username="a.smith", roles=["hr", 7, ""], email="a@example.org")
    assert verifier.principal(token) == Principal(
        "a.smith", "a.smith", frozenset({"hr"}), via="oidc", email="a@example.org"
    )
    with pytest.raises(AuthenticationError, match="no 'preferred_username' claim"):
        verifier.principal(fake.token("k1"))


def sessions(tmp_path: Path, **settings) -> SessionStore:  # noqa: ANN003
    return SessionStore(tmp_path / "auth" / "sessions.sqlite3", SessionSettings(**settings))


def test_a_session_ends_after_its_lifetime_or_when_idle_and_is_then_deleted(tmp_path: Path):
    store = sessions(tmp_path, lifetime_h=8, idle_h=2)
    alice = Principal("alice", "alice", frozenset({"hr"}), via="session", email="a@example.org")
    fresh, idle, old = store.create(alice), store.create(alice), store.create(alice)
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE sessions SET seen = seen - 3 * 3600 WHERE rowid = 2")
        conn.execute("UPDATE sessions SET created = created - 9 * 3600 WHERE rowid = 3")
    assert store.find(fresh).principal() == alice
    assert store.find(idle) is None and store.find(old) is None
    assert store.count() == 1
    assert store.find("a guessed id") is None
    assert (store.path.stat().st_mode & 0o777) == 0o600
    store.close()


def test_a_sign_in_is_used_once_and_only_by_the_browser_that_began_it(tmp_path: Path):
    store = sessions(tmp_path)
    begun = store.start_sign_in("/admin")
    assert store.take_sign_in(begun.state, "another browser") is None
    begun = store.start_sign_in("/admin")
    taken = store.take_sign_in(begun.state, begun.browser)
    assert taken is not None and (taken.nonce, taken.verifier, taken.next) == (begun.nonce, begun.verifier, "/admin")
    assert store.take_sign_in(begun.state, begun.browser) is None
    store.close()
