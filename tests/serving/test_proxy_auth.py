"""Identity headers from a trusted reverse proxy (serving.proxy_auth), with Debian's real nginx in front.

nginx connects to the app from 127.0.0.2 (the trusted address); test clients connect directly from 127.0.0.1,
so the distinction is a real TCP one, not a header."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest

from rag.container import Container
from rag.errors import ConfigError
from rag.settings import load_settings
from rag.settings_auth import ProxySettings
from rag.store import ChromaStore
from serving.app import create_app
from serving.proxy_auth import ProxyIdentity, proxy_identity, trusted_networks
from tests.fakes import EchoEngine, HashEmbedder, api_key_settings, auth
from tests.fixtures.nginx import PROXY_ADDRESS, running_nginx
from tests.serving.server import running

DOCS = {
    "hr": "Holiday policy: hr staff book leave in the portal.",
    "engineering": "Deploy policy: engineering ships on Tuesdays.",
    "all-staff": "Canteen policy: everyone eats lunch at noon.",
}
QUERY = {"query": "policy", "top_k": 20}


def acl_container(tmp: Path, docs: Mapping[str, str] = DOCS, **sections: object) -> Container:
    """A loaded container (fakes) with one document per group, readable by that group only (group:NAME)."""
    settings = load_settings(
        data_dir=tmp / "data",
        server={"api_keys": api_key_settings(), "rate_limit": "100000/minute"},
        **sections,
    )
    container = Container(settings, HashEmbedder(), EchoEngine(), ChromaStore(tmp / "data" / "chroma", "acl"))
    container.load()
    for group, text in docs.items():
        folder = tmp / "docs" / group
        folder.mkdir(parents=True)
        (folder / f"{group}.md").write_text(f"# {group}\n\n{text}\n")
        assert container.ingest_service().ingest_paths([folder], acl=[f"group:{group}"]).ok
    return container


def seen(response: httpx.Response) -> set[str]:
    """The documents (file stems) in a /v1/retrieve answer."""
    assert response.status_code == 200, response.text
    return {Path(c["metadata"]["source"]).stem for c in response.json()["chunks"]}


def audit_lines(container: Container) -> list[dict]:
    path = container.settings.data_dir / "audit" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_trusted_addresses_and_networks():
    proxy = ProxyIdentity(ProxySettings(trusted=["127.0.0.2", "10.0.0.0/24", "fd00::/8", " 192.0.2.7 "]))
    assert proxy.trusts("127.0.0.2") and proxy.trusts("10.0.0.7") and proxy.trusts("192.0.2.7")
    assert proxy.trusts("::ffff:10.0.0.9") and proxy.trusts("fd00::1") and proxy.trusts("[fd00::2]")
    for outsider in ("127.0.0.1", "10.0.1.7", "::1", "fe80::1", "testclient", "", None):
        assert not proxy.trusts(outsider), outsider
    assert trusted_networks(["10.0.0.5/24"])[0].with_prefixlen == "10.0.0.0/24"  # host bits set: the network
    assert proxy_identity(ProxySettings()) is None  # off while trusted is empty


@pytest.mark.parametrize("entry", ["localhost", "10.0.0.0/33", "10.0.0", ""])
def test_a_trusted_entry_that_is_no_address_is_a_config_error(entry):
    with pytest.raises(ConfigError, match="auth.proxy.trusted") as raised:
        trusted_networks(["127.0.0.1", entry])
    assert repr(entry) in raised.value.message and "CIDR" in raised.value.message


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    """The app (proxy trusted at 127.0.0.2) and nginx in front of it: ann (hr), bob (engineering), cy (no groups)."""
    tmp = tmp_path_factory.mktemp("proxy")
    container = acl_container(tmp, auth={"proxy": {"trusted": [PROXY_ADDRESS]}})
    passwords = {"ann": "ann-pw", "bob": "bob-pw", "cy": "cy-pw"}
    groups = {"ann": ["hr"], "bob": ["engineering", "all-staff"]}
    with (
        running(create_app(container=container)) as app_url,
        running_nginx(app_url + "/", passwords, groups=groups, emails={"ann": "ann@example.org"}) as proxy,
    ):
        yield app_url, proxy, container
    container.store.close()


@pytest.mark.integration
def test_users_signed_in_by_nginx_see_their_groups_documents(proxied):
    _, proxy, container = proxied
    assert seen(httpx.post(proxy.url + "/v1/retrieve", json=QUERY, auth=("ann", "ann-pw"))) == {"hr"}
    assert seen(httpx.post(proxy.url + "/v1/retrieve", json=QUERY, auth=("bob", "bob-pw"))) == {
        "engineering",
        "all-staff",
    }
    assert seen(httpx.post(proxy.url + "/v1/retrieve", json=QUERY, auth=("cy", "cy-pw"))) == set()
    wrong = httpx.post(proxy.url + "/v1/retrieve", json=QUERY, auth=("ann", "bob-pw"))
    assert wrong.status_code == 401 and "nginx" in wrong.text  # nginx refuses it: the app never sees it
    entry = [e for e in audit_lines(container) if e["user"] == "ann"][-1]
    assert (entry["key"], entry["groups"], entry["outcome"]) == ("proxy ann", ["hr"], "retrieved")


@pytest.mark.integration
def test_nginx_overwrites_identity_headers_its_client_sent(proxied):
    _, proxy, _ = proxied
    forged = {"X-Remote-User": "ann", "X-Remote-Groups": "hr,engineering,all-staff", "X-Remote-Email": "x@y"}
    response = httpx.post(proxy.url + "/v1/retrieve", json=QUERY, auth=("cy", "cy-pw"), headers=forged)
    assert seen(response) == set()  # cy, with cy's (no) groups, whatever cy claimed


@pytest.mark.integration
@pytest.mark.parametrize(
    "headers",
    [
        {"X-Remote-User": "ann"},
        {"X-Remote-Groups": "hr"},
        {"X-Remote-Email": "ann@example.org"},
        {"X-Remote-User": "ann", "X-Forwarded-For": PROXY_ADDRESS},  # uvicorn must not take the peer from here
        {"X-Remote-User": "ann", **auth("bob")},  # a valid API key does not make forged headers acceptable
    ],
)
def test_identity_headers_sent_directly_are_a_401(proxied, headers):
    app_url, _, container = proxied
    response = httpx.post(app_url + "/v1/retrieve", json=QUERY, headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    detail = response.json()["detail"]
    assert "auth.proxy.trusted" in detail and "127.0.0.1" in detail
    entry = audit_lines(container)[-1]
    assert entry["outcome"] == "sign-in failed" and entry["key"] == "address 127.0.0.1"


@pytest.mark.integration
def test_without_identity_headers_keys_work_as_before(proxied):
    app_url, _, _ = proxied
    assert seen(httpx.post(app_url + "/v1/retrieve", json=QUERY, headers=auth("alice"))) == {"hr"}
    assert httpx.post(app_url + "/v1/retrieve", json=QUERY).status_code == 401  # no key, no anonymous access


@pytest.mark.integration
def test_the_trusted_address_itself(proxied):
    """A request from the proxy's address: headers are believed, invalid names are a 401 naming them, and a
    request without the user header falls through to API keys."""
    app_url, _, _ = proxied
    with httpx.Client(transport=httpx.HTTPTransport(local_address=PROXY_ADDRESS), base_url=app_url) as client:
        direct = client.post("/v1/retrieve", json=QUERY, headers={"X-Remote-User": "eve", "X-Remote-Groups": "hr, ,"})
        assert seen(direct) == {"hr"}
        bad = client.post(
            "/v1/retrieve", json=QUERY, headers={"X-Remote-User": "eve", "X-Remote-Groups": "hr,pay roll"}
        )
        assert bad.status_code == 401 and "invalid group name 'pay roll'" in bad.json()["detail"]
        bad_user = client.post("/v1/retrieve", json=QUERY, headers={"X-Remote-User": "eve/../root"})
        assert bad_user.status_code == 401 and "invalid user name" in bad_user.json()["detail"]
        assert seen(client.post("/v1/retrieve", json=QUERY, headers=auth("bob"))) == {"engineering"}
        assert client.post("/v1/retrieve", json=QUERY, headers={"X-Remote-Groups": "hr"}).status_code == 401
