"""The chat page in a real browser: Debian's chromium, headless, driven by Playwright (no browser download), against
a real uvicorn server with the real embedder and SmolLM2. Screenshots go to test-artifacts/ (or RAG_TEST_ARTIFACTS)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from rag.container import Container
from rag.settings import load_settings
from rag.store import ChromaStore
from serving.app import create_app
from tests.fakes import TEST_KEYS, EchoEngine, api_key_settings
from tests.serving.server import running

pytestmark = [pytest.mark.integration]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("RAG_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    # Script errors, and console errors other than the refused sign-ins the tests make on purpose (401, 403).
    expected = ("status of 401", "status of 403")
    page.on(
        "console",
        lambda m: errors.append(m.text) if m.type == "error" and not any(e in m.text for e in expected) else None,
    )
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors
    yield page
    context.close()


def sign_in(page, url: str, key: str) -> None:
    page.goto(url + "/")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def test_sign_in_ask_stream_and_open_a_citation(real_container, page):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with running(create_app(container=real_container)) as url:
        response = page.goto(url + "/")
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp

        sign_in(page, url, "rag-wrong-key")  # a rejected sign-in says so and stays on the form
        error = page.locator("#sign-in-error")
        error.wait_for(state="visible")
        assert "Sign-in refused" in error.inner_text() and "not valid" in error.inner_text()
        assert page.locator("#chat").is_hidden()

        sign_in(page, url, TEST_KEYS["alice"][0])
        page.locator("#chat").wait_for(state="visible")
        page.get_by_label("Your question").fill("How quickly must a SEV1 page be acknowledged?")
        page.keyboard.press("Enter")  # keyboard only
        answer = page.locator("#turns li.assistant").last
        answer.locator(".text").filter(has_text=" ").wait_for(timeout=60_000)  # text arrives while streaming
        chip = answer.locator("button.citation").first
        chip.wait_for(timeout=120_000)
        assert "5 minutes" in answer.locator(".text").inner_text()  # the runbook's answer, not another deadline
        page.screenshot(path=str(ARTIFACTS / "chat-answer.png"), full_page=True)

        chip.focus()
        page.keyboard.press("Enter")
        passage = page.locator("#passage")
        passage.wait_for(state="visible")
        assert page.locator("#passage-title").inner_text().strip()
        assert page.locator("#passage-text").inner_text().strip()
        # The supporting quote is highlighted inside the passage, as text.
        assert page.locator("#passage-text mark.quote").inner_text() == "- Acknowledge the page within 5 minutes."
        with page.expect_download() as download:
            page.get_by_role("button", name="Open the original file").click()
        assert download.value.suggested_filename
        page.screenshot(path=str(ARTIFACTS / "chat-citation.png"), full_page=True)

        page.reload()  # the conversation is kept in the browser session
        page.locator("#turns li.assistant button.citation").first.wait_for()

        # A question the documents do not answer looks different from an answer: its own style and label.
        page.get_by_label("Your question").fill("What is the CEO's annual salary?")
        page.get_by_role("button", name="Ask").click()
        declined = page.locator("#turns li.assistant.not-found").last
        declined.wait_for(timeout=60_000)
        label = page.evaluate("e => getComputedStyle(e, '::before').content", declined.element_handle())
        assert "Not found in the documents" in label and declined.locator("button.citation").count() == 0

        # Readable at 200% zoom: half the CSS width, and nothing needs scrolling sideways.
        page.set_viewport_size({"width": 550, "height": 900})
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        page.screenshot(path=str(ARTIFACTS / "chat-zoom-200.png"), full_page=True)
        assert page.errors == []


def test_prompt_injection_in_a_document_renders_as_inert_text(real_container, page, tmp_path: Path):
    """The echo engine repeats the document's text as the answer: the page must show it as text."""
    settings = load_settings(data_dir=tmp_path / "data", server={"api_keys": api_key_settings()})
    container = Container(settings, real_container.embedder, EchoEngine(), ChromaStore(tmp_path / "c", "inject"))
    container.load()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "notice.md").write_text(
        "# Notice\n\nThe canteen opens at <script>window.pwned = 1</script> eight "
        '<img src="/static/x.png" onerror="window.pwned = 2"> and closes at four.\n'
    )
    container.ingest_service().ingest_paths([docs], acl=["public"])
    with running(create_app(container=container)) as url:
        sign_in(page, url, TEST_KEYS["alice"][0])
        page.get_by_label("Your question").fill("When does the canteen open?")
        page.get_by_role("button", name="Ask").click()
        answer = page.locator("#turns li.assistant").last
        answer.locator("button.citation").first.wait_for(timeout=60_000)
        text = answer.locator(".text").inner_text()
        assert "<script>" in text or "<img" in text  # shown as characters
        assert page.locator("#turns img, #turns script").count() == 0
        answer.locator("button.citation").first.click()  # the highlighted quote is inert text too
        assert "<script>" in page.locator("#passage-text mark.quote").inner_text()
        assert page.locator("#passage img, #passage script").count() == 0
        assert page.evaluate("window.pwned") is None
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "chat-injection.png"), full_page=True)
    container.store.close()


def test_admin_uploads_watches_the_job_sees_errors_and_deletes(real_container, page, tmp_path: Path):
    settings = load_settings(
        data_dir=tmp_path / "data",
        ingest={"parse_workers": 1},
        server={"api_keys": api_key_settings(), "admin_api": True},
    )
    container = Container(settings, real_container.embedder, EchoEngine(), ChromaStore(tmp_path / "c", "admin"))
    container.load()
    files = tmp_path / "upload"
    files.mkdir()
    (files / "parking.md").write_text("# Parking\n\nThe car park closes at 22:00 on weekdays.\n")
    (files / "broken.pdf").write_bytes(b"%PDF-1.4 this is not a pdf")
    page.on("dialog", lambda dialog: dialog.accept())
    with running(create_app(container=container)) as url:
        page.goto(url + "/admin")
        page.get_by_label("API key").fill(TEST_KEYS["alice"][0])  # an employee key is refused here
        page.get_by_role("button", name="Sign in").click()
        page.locator("#sign-in-error").wait_for(state="visible")
        assert "not an admin" in page.locator("#sign-in-error").inner_text()

        page.get_by_label("API key").fill(TEST_KEYS["admin"][0])
        page.get_by_role("button", name="Sign in").click()
        page.locator("#admin").wait_for(state="visible")
        page.get_by_label("Files to upload").set_input_files([str(files / "parking.md"), str(files / "broken.pdf")])
        page.get_by_label("Who may see them").fill("group:facilities")
        page.get_by_role("button", name="Upload and ingest").click()
        job = page.locator("#jobs li.job").first
        job.wait_for()
        page.locator("#jobs li.job.succeeded, #jobs li.job.failed").first.wait_for(timeout=120_000)
        assert "2 of 2 files" in job.inner_text()
        assert "broken.pdf:" in job.locator(".failed-file").first.inner_text()  # the per-file error, with why
        row = page.locator("#documents tbody tr").filter(has_text="Parking")
        row.wait_for()
        assert "group:facilities" in row.inner_text() and "indexed" in row.inner_text()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "admin.png"), full_page=True)
        row.get_by_role("button", name="Delete Parking").click()
        page.locator("#documents tbody tr").filter(has_text="Parking").wait_for(state="detached")
        assert page.errors == []
    container.store.close()
