"""The web page's server-side sessions after an OIDC sign-in (``app.state.sessions``), and the sign-ins under way.

Kept in SQLite (data_dir/auth/sessions.sqlite3, owner-only), so they survive a restart and are shared by workers.
The cookie holds a random id; the file holds only its SHA-256, the user's name, e-mail and the groups the provider
sent (the directory's are added per request), and the session's CSRF token. A session ends ``auth.session.lifetime_h``
after sign-in, after ``idle_h`` without a request, or at sign-out.

State-changing requests (POST, PUT, PATCH, DELETE) that rely on the cookie must send the CSRF token
(``X-CSRF-Token``, from GET /auth/me) and, when the browser sends an Origin, come from this server's own origin.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import Request, Response

from rag.errors import AuthenticationError, CsrfError, StoreError
from rag.settings_auth import SessionSettings
from rag.sqlite_file import SQLiteFile
from rag.storage import disk_fault
from serving.auth import Principal

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSRF_HEADER = "X-CSRF-Token"
SIGN_IN_TTL_S = 600.0  # a sign-in started must come back from the provider within this


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Session:
    user: str
    groups: tuple[str, ...]
    email: str | None
    csrf_token: str
    created: float
    seen: float

    def principal(self) -> Principal:
        return Principal(self.user, self.user, frozenset(self.groups), via="session", email=self.email)


@dataclass(frozen=True)
class SignIn:
    """A sign-in sent to the provider: what its callback must match (state, nonce, PKCE verifier) and where to go."""

    state: str
    nonce: str
    verifier: str
    next: str
    browser: str  # the random value of the sign-in cookie: the callback must come back to the same browser


class SessionStore(SQLiteFile):
    """Sessions and sign-ins under way, in one SQLite file."""

    def __init__(self, path: Path, settings: SessionSettings, public_url: str | None = None) -> None:
        super().__init__(path)
        self.settings = settings
        self.public_url = public_url
        self.lifetime_s = settings.lifetime_h * 3600
        self.idle_s = settings.idle_h * 3600
        self.touch_s = min(60.0, self.idle_s / 10)  # `seen` is written at most this often per session

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS sessions (id_sha256 TEXT PRIMARY KEY, user TEXT NOT NULL, groups TEXT NOT NULL,"
            " email TEXT, csrf_token TEXT NOT NULL, created REAL NOT NULL, seen REAL NOT NULL)"
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS sign_ins (state_sha256 TEXT PRIMARY KEY, browser_sha256 TEXT NOT NULL,"
            " nonce TEXT NOT NULL, verifier TEXT NOT NULL, next TEXT NOT NULL, created REAL NOT NULL)"
        )

    def _fault(self, exc: BaseException) -> StoreError:
        return disk_fault(exc, self.path.parent) or StoreError(f"cannot use the session store {self.path}: {exc}")

    # Sessions

    def create(self, principal: Principal) -> str:
        """A new session for a signed-in user; returns the cookie's value (the only place the id is kept)."""
        session_id, now = secrets.token_urlsafe(32), time.time()
        with self._transaction() as conn:
            self._forget_ended(conn, now)
            conn.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    _hash(session_id),
                    principal.user,
                    json.dumps(sorted(principal.groups)),
                    principal.email,
                    secrets.token_urlsafe(32),
                    now,
                    now,
                ),
            )
        return session_id

    def find(self, session_id: str) -> Session | None:
        """The live session with this id (its idle clock restarted), or None when unknown, expired or idle."""
        with self._reader() as conn:
            row = conn.execute(
                "SELECT user, groups, email, csrf_token, created, seen FROM sessions WHERE id_sha256 = ?",
                (_hash(session_id),),
            ).fetchone()
        if row is None:
            return None
        session, now = Session(row[0], tuple(json.loads(row[1])), *row[2:]), time.time()
        if now - session.created > self.lifetime_s or now - session.seen > self.idle_s:
            self.delete(session_id)
            return None
        if now - session.seen > self.touch_s:
            self._write("UPDATE sessions SET seen = ? WHERE id_sha256 = ?", (now, _hash(session_id)))
        return session

    def delete(self, session_id: str) -> bool:
        with self._transaction() as conn:
            return conn.execute("DELETE FROM sessions WHERE id_sha256 = ?", (_hash(session_id),)).rowcount > 0

    def count(self) -> int:
        with self._reader() as conn:
            return conn.execute("SELECT count(*) FROM sessions").fetchone()[0]

    def _forget_ended(self, conn: sqlite3.Connection, now: float) -> None:
        conn.execute("DELETE FROM sessions WHERE created < ? OR seen < ?", (now - self.lifetime_s, now - self.idle_s))
        conn.execute("DELETE FROM sign_ins WHERE created < ?", (now - SIGN_IN_TTL_S,))

    # The identity chain (serving.auth) and the cookie

    def principal(self, request: Request) -> Principal | None:
        """The signed-in user of the session cookie, None without one; unsafe methods must pass the CSRF check."""
        session_id = request.cookies.get(self.settings.cookie_name)
        if not session_id:
            return None
        session = self.find(session_id)
        if session is None:
            raise AuthenticationError("your session has ended (signed out, expired or idle): sign in again")
        if request.method in UNSAFE_METHODS:
            self.check_csrf(request, session)
        request.state.csrf_token = session.csrf_token
        return session.principal()

    def check_csrf(self, request: Request, session: Session) -> None:
        origin = request.headers.get("origin")
        if origin is not None and origin != self.origin(request):
            raise CsrfError(
                f"the request comes from another site ({origin[:100]}): the session cookie only works from "
                f"{self.origin(request)} (behind a proxy, set auth.oidc.public_url)"
            )
        sent = request.headers.get(CSRF_HEADER, "").encode("utf-8")
        if not hmac.compare_digest(sent, session.csrf_token.encode("utf-8")):
            raise CsrfError(
                f"{'a wrong' if sent else 'no'} {CSRF_HEADER} header: with the session cookie, send the "
                "csrf_token of GET /auth/me in that header"
            )

    def origin(self, request: Request) -> str:
        """This server's origin as browsers see it: auth.oidc.public_url's, else the request's."""
        parts = urlsplit(self.public_url or str(request.base_url))
        return f"{parts.scheme}://{parts.netloc}"

    def set_cookie(self, response: Response, session_id: str) -> None:
        response.set_cookie(
            self.settings.cookie_name,
            session_id,
            max_age=int(self.lifetime_s),
            path="/",
            secure=self.settings.secure_cookie,
            httponly=True,
            samesite=self.settings.same_site,
        )

    def clear_cookie(self, response: Response) -> None:
        response.delete_cookie(
            self.settings.cookie_name,
            path="/",
            secure=self.settings.secure_cookie,
            httponly=True,
            samesite=self.settings.same_site,
        )

    # Sign-ins under way

    def start_sign_in(self, next_path: str) -> SignIn:
        sign_in = SignIn(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            verifier=secrets.token_urlsafe(48),  # 64 characters: RFC 7636 asks for 43 to 128
            next=next_path,
            browser=secrets.token_urlsafe(32),
        )
        with self._transaction() as conn:
            self._forget_ended(conn, time.time())
            conn.execute(
                "INSERT INTO sign_ins VALUES (?, ?, ?, ?, ?, ?)",
                (
                    _hash(sign_in.state),
                    _hash(sign_in.browser),
                    sign_in.nonce,
                    sign_in.verifier,
                    sign_in.next,
                    time.time(),
                ),
            )
        return sign_in

    def take_sign_in(self, state: str, browser: str) -> SignIn | None:
        """The sign-in this callback answers, used up; None if unknown, too old or started in another browser."""
        with self._transaction() as conn:
            row = conn.execute(
                "DELETE FROM sign_ins WHERE state_sha256 = ? RETURNING browser_sha256, nonce, verifier, next, created",
                (_hash(state),),
            ).fetchone()
        if row is None or time.time() - row[4] > SIGN_IN_TTL_S:
            return None
        if not hmac.compare_digest(row[0], _hash(browser)):
            return None
        return SignIn(state, row[1], row[2], row[3], browser)
