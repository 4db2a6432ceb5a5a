"""The ``server`` section of the settings tree: what `rag serve` binds, its keys, limits and timeouts."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from rag.settings_sections import Section


class ApiKey(Section):
    """One API key, stored as the SHA-256 of the key (the key itself is shown once, by `rag keys create`)."""

    name: str = Field(min_length=1, max_length=100, description="Label for logs, metrics and the audit log.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Hex SHA-256 of the key.")
    user: str = Field(min_length=1, description="User id: the `user:` ACL token this key's caller holds.")
    groups: list[str] = Field(default_factory=list, description="Groups: the `group:` ACL tokens it holds.")
    role: Literal["employee", "admin"] = Field("employee", description="admin may also use /v1/admin.")


class ServerSettings(Section):
    host: str = Field("127.0.0.1", description="Address `rag serve` binds.")
    port: int = Field(8000, ge=1, le=65535, description="Port `rag serve` binds.")
    api_keys_file: Path | None = Field(
        None,
        description="YAML file of hashed API keys (`rag keys create` writes it); default data_dir/api_keys.yaml. "
        "Re-read when it changes, so a revoked key stops working without a restart.",
    )
    api_keys: list[ApiKey] = Field(
        default_factory=list,
        description="More hashed API keys, e.g. from the environment: RAG_SERVER__API_KEYS='[{...}]'.",
    )
    allow_anonymous: bool = Field(
        False,
        description="Callers without a key get public documents only (a demo). Off: they get 401.",
    )
    rate_limit: str = Field(
        "120/minute", description="Requests per API key (anonymous callers: per address), e.g. 10/second."
    )
    max_body_kb: int = Field(256, ge=1, description="Largest JSON request body; larger ones get 413.")
    max_prompt_tokens: int = Field(
        1024,
        ge=16,
        description="Most tokens a caller's messages may take (question, history), in the model's tokens; 400 above.",
    )
    shutdown_timeout_s: float = Field(
        30.0, ge=0, description="On stop, open streams may finish for this long; then they are cut."
    )
    keep_alive_timeout_s: float = Field(
        5.0,
        gt=0,
        description="A connection that sends nothing, before its first request or between requests, is "
        "closed after this long.",
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="A request's line and headers must arrive within this long of their first byte; "
        "else 408 and the connection is closed.",
    )
    body_timeout_s: float = Field(
        20.0,
        gt=0,
        description="A request body may take this long, plus 1 s for every body_min_bytes_per_s bytes "
        "received: a large upload on a slow line goes on, a trickle gets 408 and is closed.",
    )
    body_min_bytes_per_s: int = Field(
        500,
        ge=0,
        description="The slowest steady body rate accepted past body_timeout_s; 0: the body must arrive "
        "within body_timeout_s whatever its size.",
    )
    max_connections_per_client: int = Field(
        64,
        ge=0,
        description="Open connections one client address may hold; one more gets 429 and is closed. 0: no "
        "cap. Behind a reverse proxy every caller has the proxy's address: raise it or set 0 there.",
    )
    auth_failure_limit: str = Field(
        "30/minute",
        description="Requests without a valid key (401) per client address; past it such requests get "
        "429 with Retry-After. A valid key is never refused by this limit.",
    )
    audit_log: bool = Field(
        True, description="Append who asked, when, and which documents were retrieved and cited to data_dir/audit."
    )
    audit_questions: bool = Field(True, description="Also write the question text into the audit log.")
    log_format: Literal["json", "text"] = Field("json", description="`rag serve` log lines: JSON or plain text.")
    admin_api: bool = Field(
        False,
        description="Serve the /v1/admin routes (ingest jobs, documents) to admin keys.",
    )
    admin_paths: list[Path] = Field(
        default_factory=list, description="Server-side folders an admin ingest job may read; nothing else is allowed."
    )
    max_upload_mb: float = Field(200.0, gt=0, description="Cap on one uploaded file.")
