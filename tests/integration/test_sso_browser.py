"""Single sign-on in a real browser: Debian's chromium (Playwright) signs in through a real OpenID Provider
(oidc-provider under node), the user's groups come from a real directory (Debian's slapd, nested groups), and the
answers come from the real embedder and SmolLM2 over documents with group ACLs.

The test removes the user from a group in the directory while she is signed in: within the cache TTL her next
answer no longer cites that group's document, and her saved conversation shows the earlier citation as "no longer
available". Signing out ends the session on the server: the cookie the browser held no longer works. Screenshots of
the provider's sign-in and of the conversation list go to test-artifacts/ (or RAG_TEST_ARTIFACTS)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from rag.container import Container
from rag.settings import load_settings
from rag.store import ChromaStore
from serving.app import create_app
from tests.fakes import TEST_KEYS, api_key_settings, auth
from tests.fixtures.oidc import WEB_CLIENT, WEB_SECRET, running_provider, web_client
from tests.fixtures.slapd import running_slapd
from tests.integration.test_web_page import ARTIFACTS, browser  # noqa: F401 - the module's browser fixture
from tests.serving.server import free_port, running

pytestmark = [pytest.mark.integration]

TTL_S = 3.0
# ann is in finance and hr, and through hr in all-staff; engineering is bob's alone.
DIRECTORY = {
    "hr": ["ann", "eve"],
    "finance": ["ann", "bob"],
    "engineering": ["bob"],
    "all-staff": ["hr", "engineering"],
}
EXPENSES = "How many days do I have to file an expense claim?"
PROVIDER_USERS = {"ann": {"password": "ann-pw", "claims": {"email": "ann@example.org", "name": "Ann"}}}
DOCUMENTS = {
    "finance": ("expenses.md", "# Expense claims\n\nExpense claims must be filed within 30 days of the purchase.\n"),
    "engineering": ("deploys.md", "# Deploy freeze\n\nProduction deploys are frozen on Fridays after 14:00.\n"),
    "all-staff": ("office.md", "# Office hours\n\nThe office is open from 7:30 to 19:00 on weekdays.\n"),
}


def app_for(real_container, tmp_path: Path, issuer: str, ldap: dict):  # noqa: ANN001, ANN201
    settings = load_settings(
        data_dir=tmp_path / "data",
        server={"api_keys": api_key_settings(), "admin_api": True},
        auth={
            "oidc": {"issuer": issuer, "client_id": WEB_CLIENT, "client_secret": WEB_SECRET},
            "ldap": ldap,
        },
    )
    store = ChromaStore(tmp_path / "chroma", "sso")
    container = Container(settings, real_container.embedder, real_container.engine, store)
    container.load()
    for group, (name, text) in DOCUMENTS.items():
        folder = tmp_path / "docs" / group
        folder.mkdir(parents=True)
        (folder / name).write_text(text)
        container.ingest_service().ingest_paths([folder], acl=[f"group:{group}"])
    return create_app(container=container)


def ask(page, question: str) -> list[str]:  # noqa: ANN001
    """Ask on the page; the titles of the answer's citation chips, once it has finished."""
    before = page.locator("#turns li.assistant").count()
    page.get_by_label("Your question").fill(question)
    page.get_by_role("button", name="Ask").click()
    answer = page.locator("#turns li.assistant").nth(before)
    answer.locator(".feedback").wait_for(timeout=120_000)  # added when the answer is complete and saved
    return [chip.inner_text() for chip in answer.locator("button.citation").all()]


def test_sign_in_directory_groups_removal_conversations_and_sign_out(real_container, browser, tmp_path):  # noqa: F811
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (
        running_slapd(groups=DIRECTORY) as ldap,
        running_provider(users=PROVIDER_USERS, clients=[web_client(url)]) as provider,
    ):
        app = app_for(real_container, tmp_path, provider.issuer, ldap.settings(cache_ttl_s=TTL_S))
        with running(app, port=port):
            context = browser.new_context(viewport={"width": 1100, "height": 900})
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))

            # Sign in through the provider: the page sends the browser there and back (code flow with PKCE).
            page.goto(url + "/")
            page.screenshot(path=str(ARTIFACTS / "sso-sign-in-page.png"), full_page=True)
            page.get_by_role("link", name="Sign in with single sign-on").click()
            page.locator("input[name=login]").wait_for()
            assert page.url.startswith(provider.issuer)
            page.locator("input[name=login]").fill("ann")
            page.locator("input[name=password]").fill("ann-pw")
            page.screenshot(path=str(ARTIFACTS / "sso-sign-in.png"), full_page=True)
            page.locator("button[type=submit]").click()
            page.locator("#chat").wait_for(state="visible")
            assert page.url.startswith(url)
            who = page.locator("#who").inner_text()
            assert "ann" in who and "finance" in who and "all-staff" in who  # all-staff through the nested hr
            cookie = next(c for c in context.cookies(url) if c["name"] == "rag_session")
            assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Lax"

            # Only the documents of her directory groups: finance's and all-staff's, never engineering's.
            assert any("Expense claims" in title for title in ask(page, EXPENSES))
            assert any("Office hours" in title for title in ask(page, "When is the office open on weekdays?"))
            rated = page.locator("#turns li.assistant").nth(1)
            rated.get_by_role("button", name="Helpful", exact=True).click()
            rated.get_by_label("Comment (optional)").fill("Right, and quick.")
            rated.get_by_role("button", name="Send comment").click()
            rated.get_by_role("status").filter(has_text="Thank you for the comment").wait_for()
            assert not any("Deploy freeze" in t for t in ask(page, "Are production deploys frozen on Fridays?"))

            # Removed from finance in the directory: within the TTL the next answer no longer cites its document.
            ldap.remove_member("finance", "ann")
            time.sleep(TTL_S + 0.5)
            assert not any("Expense claims" in t for t in ask(page, EXPENSES))
            page.locator("#who").filter(has_not_text="finance").wait_for()  # the bar follows the directory too
            assert "hr" in page.locator("#who").inner_text()

            # The conversation is saved; reopened, the citation she may no longer see shows no text.
            page.get_by_role("button", name="New conversation").click()
            saved = page.locator("#conversation-list li .open")
            saved.first.wait_for()
            assert saved.count() == 1
            saved.first.click()
            page.locator("#turns li.assistant").nth(3).wait_for()
            first = page.locator("#turns li.assistant").first
            assert "no longer available" in first.locator("button.citation").first.inner_text()
            assert "withheld" in (first.get_attribute("class") or "")
            assert "30 days" not in page.locator("#turns").inner_text()
            page.screenshot(path=str(ARTIFACTS / "sso-conversations.png"), full_page=True)

            # The rating reached the admins' view, with the question and answer it rates.
            rated = httpx.get(url + "/v1/admin/feedback", headers=auth("admin")).json()["data"]
            assert [(f["user"], f["rating"], f["comment"]) for f in rated] == [("ann", "up", "Right, and quick.")]
            assert rated[0]["question"] == "When is the office open on weekdays?" and "7:30" in rated[0]["answer"]
            admin = context.new_page()
            admin.goto(url + "/admin")
            admin.get_by_label("API key").fill(TEST_KEYS["admin"][0])
            admin.get_by_role("button", name="Sign in").click()
            row = admin.locator("#feedback tbody tr").filter(has_text="Right, and quick.")
            row.wait_for()
            assert "ann" in row.inner_text() and "Helpful" in row.inner_text()
            admin.close()

            # Sign out: the session is deleted on the server, not only forgotten by the browser.
            page.get_by_role("button", name="Sign out").click()
            page.locator("#sign-in").wait_for(state="visible")
            gone = httpx.get(url + "/auth/me", headers={"Cookie": f"rag_session={cookie['value']}"})
            assert gone.status_code == 401 and gone.headers["content-type"].startswith("application/problem+json")
            # And at the provider, when she follows the offer: signing in again then asks for her password.
            page.get_by_role("link", name="Also sign out at your identity provider").click()
            page.get_by_role("button", name="Yes, sign me out").click()
            page.locator("#sign-in").wait_for(state="visible")
            assert page.url.startswith(url)
            page.get_by_role("link", name="Sign in with single sign-on").click()
            page.locator("input[name=password]").wait_for()
            assert errors == []
            context.close()

    audit = [json.loads(line) for line in (tmp_path / "data" / "audit" / "audit.jsonl").read_text().splitlines()]
    outcomes = [entry["outcome"] for entry in audit]
    assert "signed in" in outcomes and "signed out" in outcomes
    changed = next(e for e in audit if e["outcome"] == "groups changed")
    assert changed["user"] == "ann" and changed["removed"] == ["finance"]
    app.state.container.store.close()
