"""Directory groups (serving.directory) against Debian's real slapd, and end to end: nginx signs users in, the
app reads their groups from slapd, and /v1/retrieve shows only those groups' documents."""

from __future__ import annotations

import json
import logging
import threading
import time

import httpx
import pytest

from rag.errors import ConfigError
from rag.settings_auth import LdapSettings
from serving.app import create_app
from serving.directory import Directory, DirectoryUnavailableError, directory
from serving.observability import AuditLog
from tests.fixtures.nginx import PROXY_ADDRESS, running_nginx
from tests.fixtures.slapd import running_slapd
from tests.serving.server import free_port, running
from tests.serving.test_proxy_auth import QUERY, acl_container, audit_lines, seen


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def ldap():
    """One slapd with the default tree for the tests that only read it."""
    with running_slapd() as server:
        yield server


@pytest.mark.integration
def test_nested_groups_are_resolved_and_invalid_names_skipped(ldap, caplog):
    caplog.set_level(logging.WARNING, "serving.directory")
    groups = Directory(LdapSettings(**ldap.settings())).groups
    assert groups("ann") == {"hr", "all-staff"}  # hr directly, all-staff through hr; "Payroll Team" skipped
    assert groups("bob") == {"engineering", "all-staff"}
    assert groups("eve") == {"hr", "all-staff", "night-shift"}  # through "ops (night)": its DN is escaped
    assert groups("nobody") == frozenset()  # not in the directory: no directory groups
    assert "'Payroll Team' is not a valid access-group name" in caplog.text and "group_map" in caplog.text


@pytest.mark.integration
def test_nesting_can_be_off_or_limited(ldap):
    assert Directory(LdapSettings(**ldap.settings(nested=False))).groups("ann") == {"hr"}
    assert Directory(LdapSettings(**ldap.settings(max_depth=1))).groups("ann") == {"hr"}
    assert Directory(LdapSettings(**ldap.settings(max_depth=2))).groups("ann") == {"hr", "all-staff"}


@pytest.mark.integration
def test_a_membership_cycle_ends(ldap):
    assert Directory(LdapSettings(**ldap.settings(max_depth=100))).groups("dan") == {"loop-a", "loop-b"}


@pytest.mark.integration
def test_group_map_and_mapped_only(ldap):
    mapping = {"Payroll Team": "payroll", "hr": "people-ops"}
    mapped = Directory(LdapSettings(**ldap.settings(group_map=mapping))).groups("ann")
    assert mapped == {"payroll", "people-ops", "all-staff"}
    only = Directory(LdapSettings(**ldap.settings(group_map=mapping, mapped_only=True))).groups("ann")
    assert only == {"payroll", "people-ops"}


@pytest.mark.integration
@pytest.mark.parametrize("user", ["*", "ann)(uid=*", "a*", "ann\\", "ann\x00"])
def test_filter_characters_in_a_user_name_are_escaped(ldap, user):
    assert Directory(LdapSettings(**ldap.settings())).groups(user) == frozenset()


@pytest.mark.integration
def test_concurrent_first_requests_read_the_directory_once(ldap):
    directory_ = Directory(LdapSettings(**ldap.settings()))
    reads = []
    read = directory_.read
    directory_.read = lambda user: reads.append(user) or read(user)  # type: ignore[method-assign]
    results = []
    threads = [threading.Thread(target=lambda: results.append(directory_.groups("bob"))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [{"engineering", "all-staff"}] * 8 and reads == ["bob"]


@pytest.mark.integration
def test_a_removed_member_loses_the_group_after_the_ttl_and_the_change_is_audited(tmp_path):
    clock, audit = Clock(), AuditLog(tmp_path / "audit.jsonl")
    with running_slapd() as ldap:
        groups = Directory(LdapSettings(**ldap.settings(cache_ttl_s=60)), audit, clock).groups
        assert groups("ann") == {"hr", "all-staff"}
        ldap.remove_member("hr", "ann")
        clock.now += 59
        assert groups("ann") == {"hr", "all-staff"}  # cached: within the TTL
        clock.now += 2
        assert groups("ann") == frozenset()
        ldap.add_member("engineering", "ann")
        clock.now += 61
        assert groups("ann") == {"engineering", "all-staff"}
    audit.close()
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(e["user"], e["route"], e["outcome"], e["added"], e["removed"]) for e in lines] == [
        ("ann", "directory", "groups changed", [], ["all-staff", "hr"]),
        ("ann", "directory", "groups changed", ["all-staff", "engineering"], []),
    ]
    assert lines[1]["groups"] == ["all-staff", "engineering"]


@pytest.mark.integration
def test_an_unreachable_directory_keeps_the_last_groups_for_the_grace_time_only(caplog):
    clock = Clock()
    with running_slapd() as ldap:
        settings = LdapSettings(**ldap.settings(cache_ttl_s=60, stale_grace_s=120, timeout_s=2))
        groups = Directory(settings, clock=clock).groups
        assert groups("ann") == {"hr", "all-staff"}
    clock.now += 170  # slapd is gone; within TTL + grace
    assert groups("ann") == {"hr", "all-staff"}
    assert "keeps the groups read before" in caplog.text
    clock.now += 11
    with pytest.raises(DirectoryUnavailableError) as past:
        groups("ann")
    assert past.value.status == 503 and "auth.ldap" in past.value.message and ldap.url not in past.value.message
    assert f"the directory {ldap.url} cannot be read" in caplog.text  # the address is for the admin's log
    with pytest.raises(DirectoryUnavailableError):
        groups("bob")  # never read: unknown groups are an error, not "no groups"


@pytest.mark.integration
def test_a_wrong_bind_password_grants_nothing(ldap):
    groups = Directory(LdapSettings(**ldap.settings(bind_password="wrong"))).groups
    with pytest.raises(DirectoryUnavailableError, match="auth.ldap"):
        groups("ann")


@pytest.mark.integration
def test_start_tls_and_ldaps_check_the_directorys_certificate(caplog):
    with running_slapd(tls=True) as ldap:
        for tls in ({"start_tls": True}, {"url": ldap.ldaps_url}):
            with_ca = Directory(LdapSettings(**ldap.settings(ca_file=ldap.ca_file, **tls)))
            assert with_ca.groups("ann") == {"hr", "all-staff"}, tls
            with pytest.raises(DirectoryUnavailableError):  # the system's CAs do not know the test CA
                Directory(LdapSettings(**ldap.settings(**tls))).groups("ann")
        other_name = ldap.settings(url=ldap.url.replace("127.0.0.1", "localhost"), start_tls=True, ca_file=ldap.ca_file)
        with pytest.raises(DirectoryUnavailableError):  # the certificate is for 127.0.0.1 only
            Directory(LdapSettings(**other_name)).groups("ann")
    failures = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 3 and all("certificate" in f.lower() for f in failures), failures


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"url": "http://127.0.0.1"}, "is not an LDAP URL"),
        ({"url": "ldap://127.0.0.1:notaport"}, "invalid port"),
        ({"url": "ldaps://127.0.0.1", "start_tls": True}, "start_tls is for ldap://"),
        ({"url": "ldap://127.0.0.1", "user_filter": "(uid=%s)"}, "user_filter must contain {user}"),
        ({"url": "ldap://127.0.0.1", "group_filter": "(member=*)"}, "group_filter must contain {dn}"),
        ({"url": "ldap://127.0.0.1", "user_filter": "uid={user}"}, "user_filter 'uid={user}' is not an LDAP filter"),
        ({"url": "ldap://127.0.0.1", "group_filter": "(|(member={dn})"}, "is not an LDAP filter"),
        ({"url": "ldap://127.0.0.1", "group_map": {"Payroll": "pay roll"}}, "invalid group names ['pay roll']"),
    ],
)
def test_bad_settings_are_config_errors(settings, message):
    with pytest.raises(ConfigError) as raised:
        Directory(LdapSettings(**settings))
    assert message in raised.value.message
    assert directory(LdapSettings()) is None  # off without a URL


@pytest.mark.integration
def test_the_directory_decides_what_a_proxy_signed_user_sees(tmp_path):
    """ann signs in at nginx (no groups from the proxy); her groups come from slapd; after her removal from hr in
    the directory and the TTL, hr's and all-staff's documents are gone, while the cached read still shows them."""
    with running_slapd() as ldap:
        sections = {"auth": {"proxy": {"trusted": [PROXY_ADDRESS]}, "ldap": ldap.settings(cache_ttl_s=1)}}
        container = acl_container(tmp_path, **sections)
        passwords = {"ann": "ann-pw", "bob": "bob-pw", "zed": "zed-pw"}
        with running(create_app(container=container)) as url, running_nginx(url + "/", passwords) as proxy:

            def retrieve(user: str) -> set[str]:
                return seen(httpx.post(proxy.url + "/v1/retrieve", json=QUERY, auth=(user, f"{user}-pw")))

            assert retrieve("ann") == {"hr", "all-staff"}
            assert retrieve("bob") == {"engineering", "all-staff"}
            assert retrieve("zed") == set()  # signed in at the proxy, unknown to the directory
            ldap.remove_member("hr", "ann")
            assert retrieve("ann") == {"hr", "all-staff"}  # within the TTL
            time.sleep(1.2)
            assert retrieve("ann") == set()
        container.store.close()
    changed = [e for e in audit_lines(container) if e["outcome"] == "groups changed"]
    assert [(e["user"], e["removed"]) for e in changed] == [("ann", ["all-staff", "hr"])]


@pytest.mark.integration
def test_a_directory_that_is_down_at_first_sign_in_is_a_503(tmp_path):
    dead = {"url": f"ldap://127.0.0.1:{free_port()}", "timeout_s": 2}
    container = acl_container(tmp_path, auth={"proxy": {"trusted": [PROXY_ADDRESS]}, "ldap": dead})
    with running(create_app(container=container)) as url, running_nginx(url + "/", {"ann": "ann-pw"}) as proxy:
        response = httpx.post(proxy.url + "/v1/retrieve", json=QUERY, auth=("ann", "ann-pw"))
    container.store.close()
    assert response.status_code == 503 and response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "directory_unavailable" and response.headers["retry-after"] == "30"
