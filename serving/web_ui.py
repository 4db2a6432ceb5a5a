"""The web page, served by the app from the repository's files (serving/web): no CDN, no external font, no build.

Every page response carries a strict Content-Security-Policy: scripts, styles and connections to this origin
only, no inline script, no framing, and images only from here (an answer can never load one: the page puts model
output on screen as text)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

WEB = Path(__file__).parent / "web"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def chat_page() -> FileResponse:
    return FileResponse(WEB / "index.html", headers=SECURITY_HEADERS)


@router.get("/admin")
async def admin_page() -> FileResponse:
    return FileResponse(WEB / "admin.html", headers=SECURITY_HEADERS)


@router.get("/favicon.ico")
async def favicon() -> Response:
    return Response(status_code=204)


class _SecureStatic(StaticFiles):
    async def get_response(self, path, scope):  # noqa: ANN001, ANN201
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/static", _SecureStatic(directory=WEB), name="static")
