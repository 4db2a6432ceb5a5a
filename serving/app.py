"""The FastAPI application. Models load in the background so /healthz answers at once and /readyz tells when."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI

from rag.container import Container
from rag.settings import Settings
from serving import conversations_api, native_api, openai_api, signin, web_ui
from serving.auth import KeyRing, RateLimiter
from serving.deps import valid_unicode
from serving.directory import directory
from serving.middleware import BodyLimitMiddleware
from serving.observability import AuditLog, ObservabilityMiddleware
from serving.problems import install_error_handlers
from serving.proxy_auth import proxy_identity

if TYPE_CHECKING:
    from starlette.types import Lifespan

    from ingest.jobs import JobManager

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, container: Container | None = None) -> FastAPI:
    """Build the app; pass a ``container`` to reuse already loaded components (tests, embedding in a host)."""
    owns_container = container is None
    container = container or Container.from_settings(settings or Settings())
    if owns_container:
        # Now, not when the models load in the background: a second server on an embedded store another process
        # holds fails at start, naming that process, instead of serving "not ready" for good.
        container.store.hold()
    jobs = container.job_manager() if container.settings.server.admin_api else None

    app = FastAPI(
        title="Private RAG",
        version="0.1.0",
        lifespan=_lifespan(container, jobs, owns_container),
        description="Answers from your own documents with a local LLM, with citations.",
        dependencies=[Depends(valid_unicode)],  # a lone surrogate in any JSON body: 400, not a 500 further on
    )
    server = container.settings.server
    audit = (
        AuditLog(container.settings.data_dir / "audit" / "audit.jsonl", server.audit_questions)
        if server.audit_log
        else None
    )
    app.state.container = container
    app.state.keyring = KeyRing(container.settings)
    app.state.rate_limiter = RateLimiter(server.rate_limit)
    app.state.auth_failures = RateLimiter(server.auth_failure_limit, "server.auth_failure_limit")
    app.state.audit = audit
    # Identity sources besides API keys, each None until configured (settings `auth`): see serving.auth.
    app.state.proxy_identity = proxy_identity(container.settings.auth.proxy, audit)  # auth.proxy: trusted headers
    app.state.oidc = None  # auth.oidc: bearer access tokens checked against the provider's JWKS
    app.state.sessions = None  # auth.oidc: the web page's server-side sessions after sign-in
    app.state.directory = directory(container.settings.auth.ldap, audit)  # auth.ldap: a signed-in user's groups
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=server.max_body_kb * 1024, max_upload_mb=server.max_upload_mb)
    app.add_middleware(ObservabilityMiddleware)  # added last: outermost, so it sees every response
    app.include_router(openai_api.router)
    app.include_router(native_api.router)
    conversations_api.install(app, container.settings)  # settings `conversations`; routes say so when off
    signin.install(app, container.settings)  # auth.oidc: app.state.oidc and app.state.sessions, /auth routes
    web_ui.install(app)
    if jobs is not None:
        # Admin keys only (403 for employees); absent (404) unless server.admin_api is true.
        from serving import admin_api

        app.state.jobs = jobs
        app.include_router(admin_api.router)
    return app


def _lifespan(container: Container, jobs: JobManager | None, owns_container: bool) -> Lifespan[FastAPI]:
    """Load the models in the background at startup; at shutdown stop the jobs, the engine (if ours), the store and
    the audit log."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not container.ready:
            threading.Thread(target=_load, args=(container,), name="load-models", daemon=True).start()
        try:
            yield
        finally:
            if jobs is not None:  # cancel queued ingest jobs, stop the running one after its current file
                await asyncio.to_thread(jobs.shutdown)
            if owns_container:  # streams were drained first (server.shutdown_timeout_s)
                await asyncio.to_thread(container.engine.close)
            container.store.close()  # let go of the embedded store: another process may open it now
            if app.state.conversations is not None:
                app.state.conversations.close()
            if app.state.audit is not None:
                app.state.audit.close()
            signin.close(app)

    return lifespan


def _load(container: Container) -> None:
    try:
        container.load()
        log.info("ready: model %s, %d chunks in the store", container.engine.model_id, container.store.count())
    except BaseException:
        log.exception("loading the models failed; /readyz reports it")
