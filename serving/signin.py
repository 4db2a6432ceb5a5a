"""Sign-in on the web page with the OpenID Provider (``auth.oidc``): the authorization code flow with PKCE (S256),
``state`` and ``nonce``, as a confidential client; then a server-side session (serving.sessions).

Routes: GET /auth/config (public: is single sign-on on), GET /auth/login?next=/ (to the provider), GET /auth/callback
(back from it: the code is exchanged, the ID token checked, the session cookie set), GET /auth/me (who am I, and the
CSRF token of a session) and POST /auth/logout. A failed sign-in is audited and sends the browser to
``/?sign_in_error=<reason>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse

from rag.errors import AuthenticationError, IdentityProviderUnavailableError, InvalidRequestError, NotFoundError
from rag.settings import Settings
from serving.auth import ANONYMOUS, PrincipalDep
from serving.oidc import OpenIdProvider, TokenVerifier, principal_from_claims
from serving.sessions import CSRF_HEADER, SIGN_IN_TTL_S, SessionStore, SignIn

router = APIRouter(prefix="/auth", tags=["sign-in"])
_OAUTH_ERROR = re.compile(r"^[a-z_]{1,40}$")


class SignInFailed(Exception):
    """A sign-in that cannot go on: ``reason`` goes to the page, ``detail`` to the audit log."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def install(app: FastAPI, settings: Settings) -> None:
    """The routes always (GET /auth/config says whether sign-in is on); the verifier and sessions with an issuer."""
    if settings.auth.oidc.issuer:
        app.state.oidc = TokenVerifier(OpenIdProvider(settings.auth.oidc))
        app.state.sessions = SessionStore(
            settings.data_dir / "auth" / "sessions.sqlite3", settings.auth.session, settings.auth.oidc.public_url
        )
    app.include_router(router)


def close(app: FastAPI) -> None:
    for part in (app.state.oidc, app.state.sessions):
        if part is not None:
            part.close()


def _sso(request: Request) -> tuple[OpenIdProvider, SessionStore]:
    state = request.app.state
    if state.oidc is None or state.sessions is None:
        raise NotFoundError("single sign-on is off: an admin sets auth.oidc.issuer and client_id to turn it on")
    return state.oidc.provider, state.sessions


def _sign_in_cookie(sessions: SessionStore) -> str:
    return sessions.settings.cookie_name + "_sign_in"


def _base_url(request: Request, provider: OpenIdProvider) -> str:
    """This server's address as browsers reach it, without the last slash."""
    return (provider.settings.public_url or str(request.base_url)).rstrip("/")


def _redirect_uri(request: Request, provider: OpenIdProvider) -> str:
    return _base_url(request, provider) + "/auth/callback"


def _same_site_path(next_path: str) -> str:
    parts = urlsplit(next_path)
    if (
        not next_path.startswith("/")
        or next_path.startswith("//")
        or "\\" in next_path
        or parts.scheme
        or parts.netloc
        or len(next_path) > 2000
        or any(ord(c) < 32 for c in next_path)
    ):
        raise InvalidRequestError("next must be a path on this server, such as / or /admin", detail={"param": "next"})
    return next_path


@router.get("/config")
def config(request: Request) -> dict[str, Any]:
    """What the page needs before anyone signs in."""
    sso = request.app.state.oidc is not None
    return {
        "sso": sso,
        "login_url": "/auth/login" if sso else None,
        "logout_url": "/auth/logout" if sso else None,
        "csrf_header": CSRF_HEADER,
        "anonymous": request.app.state.container.settings.server.allow_anonymous,
    }


@router.get("/login", include_in_schema=False)
def login(request: Request, next: str = "/") -> RedirectResponse:  # noqa: A002 - the query parameter's name
    provider, sessions = _sso(request)
    sign_in = sessions.start_sign_in(_same_site_path(next))
    challenge = base64.urlsafe_b64encode(hashlib.sha256(sign_in.verifier.encode()).digest()).rstrip(b"=").decode()
    query = {
        "response_type": "code",
        "client_id": provider.settings.client_id,
        "redirect_uri": _redirect_uri(request, provider),
        "scope": " ".join(provider.settings.scopes),
        "state": sign_in.state,
        "nonce": sign_in.nonce,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    authorize = provider.endpoint("authorization_endpoint")
    response = RedirectResponse(f"{authorize}{'&' if '?' in authorize else '?'}{urlencode(query)}", status_code=302)
    response.set_cookie(
        _sign_in_cookie(sessions),
        sign_in.browser,
        max_age=int(SIGN_IN_TTL_S),
        path="/auth/callback",
        secure=sessions.settings.secure_cookie,
        httponly=True,
        samesite="lax",  # the provider sends the browser back here from its own site: a strict cookie would not come
    )
    return response


@router.get("/callback", include_in_schema=False)
def callback(
    request: Request, code: str = "", state: str = "", error: str = "", iss: str | None = None
) -> RedirectResponse:
    provider, sessions = _sso(request)
    audit = request.app.state.audit
    try:
        if error:
            why = error if _OAUTH_ERROR.match(error) else "an error"
            raise SignInFailed("provider_error", f"the provider answered {why} instead of a code")
        sign_in = sessions.take_sign_in(state, request.cookies.get(_sign_in_cookie(sessions), ""))
        if sign_in is None or not code:
            raise SignInFailed("bad_state", "unknown, used or expired state, or a sign-in begun in another browser")
        if iss is not None and iss != provider.issuer:
            raise SignInFailed("bad_state", "the callback names another issuer (iss)")
        claims = _exchange(provider, code, sign_in, _redirect_uri(request, provider))
        principal = principal_from_claims(claims, provider.settings, via="session")
    except (SignInFailed, AuthenticationError, IdentityProviderUnavailableError) as exc:
        reason, detail = _failure(exc)
        if audit is not None:
            audit.record(principal=ANONYMOUS, route="/auth/callback", outcome="sign-in failed", reason=detail)
        response = RedirectResponse(f"/?{urlencode({'sign_in_error': reason})}", status_code=302)
    else:
        if audit is not None:
            audit.record(principal=principal, route="/auth/callback", outcome="signed in")
        response = RedirectResponse(sign_in.next, status_code=302)
        sessions.set_cookie(response, sessions.create(principal))
    response.delete_cookie(_sign_in_cookie(sessions), path="/auth/callback")
    return response


def _failure(exc: Exception) -> tuple[str, str]:
    if isinstance(exc, SignInFailed):
        return exc.reason, exc.detail
    if isinstance(exc, IdentityProviderUnavailableError):
        return "provider_unreachable", exc.message
    return "token_check_failed", exc.message  # type: ignore[attr-defined]


def _exchange(provider: OpenIdProvider, code: str, sign_in: SignIn, redirect_uri: str) -> dict[str, Any]:
    """The code for tokens at the token endpoint; the ID token's claims, checked (signature, iss, aud, nonce)."""
    settings = provider.settings
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    data["code_verifier"] = sign_in.verifier
    secret = settings.client_secret.get_secret_value() if settings.client_secret else None
    methods = provider.metadata().get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    auth = None
    if secret is not None and "client_secret_basic" in methods:  # RFC 6749 2.3.1: both form-encoded first
        auth = (quote(settings.client_id, safe=""), quote(secret, safe=""))
    else:
        data["client_id"] = settings.client_id
        if secret is not None:
            data["client_secret"] = secret
    tokens = provider.post_json(provider.endpoint("token_endpoint"), data, auth)
    if "error" in tokens:
        error = tokens["error"] if _OAUTH_ERROR.match(str(tokens["error"])) else "an error"
        raise SignInFailed("provider_error", f"the token endpoint refused the code: {error}")
    id_token = tokens.get("id_token")
    if not isinstance(id_token, str):
        raise SignInFailed("provider_error", "the token endpoint sent no ID token (is 'openid' in auth.oidc.scopes?)")
    claims = provider.claims(id_token, [settings.client_id], kind="ID token")
    if not hmac.compare_digest(str(claims.get("nonce", "")).encode(), sign_in.nonce.encode()):
        raise SignInFailed("token_check_failed", "the ID token's nonce is not the one this sign-in sent")
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if len(audiences) > 1 and claims.get("azp") != settings.client_id:
        raise SignInFailed("token_check_failed", "the ID token has several audiences and names another party (azp)")
    return claims


@router.get("/me")
def me(request: Request, principal: PrincipalDep) -> dict[str, Any]:
    """Who is calling: the user, groups and role, how they signed in, and a session's CSRF token."""
    return {
        "name": principal.name,
        "user": principal.user,
        "email": principal.email,
        "groups": sorted(principal.groups),
        "role": principal.role,
        "via": principal.via,
        "csrf_token": getattr(request.state, "csrf_token", None) if principal.via == "session" else None,
    }


@router.post("/logout")
def logout(request: Request) -> JSONResponse:
    """Ends the session (CSRF-checked) and clears its cookie; ``end_session_url`` signs out at the provider too."""
    provider, sessions = _sso(request)
    session_id = request.cookies.get(sessions.settings.cookie_name)
    session = sessions.find(session_id) if session_id else None
    if session is not None:
        sessions.check_csrf(request, session)
        sessions.delete(session_id)
        if request.app.state.audit is not None:
            request.app.state.audit.record(principal=session.principal(), route="/auth/logout", outcome="signed out")
    response = JSONResponse({"signed_out": session is not None, "end_session_url": _end_session_url(request)})
    sessions.clear_cookie(response)
    return response


def _end_session_url(request: Request) -> str | None:
    """The provider's sign-out page (RP-initiated logout), back to this server's page after; None if it has none."""
    provider, _ = _sso(request)
    try:
        endpoint = provider.metadata().get("end_session_endpoint")
    except IdentityProviderUnavailableError:
        return None
    if not isinstance(endpoint, str):
        return None
    query = {"client_id": provider.settings.client_id, "post_logout_redirect_uri": _base_url(request, provider) + "/"}
    return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(query)}"
