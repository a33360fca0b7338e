"""The web console: static files in ``hydra/gateway/ui/`` served at ``/ui``.

The console is plain HTML, CSS and JavaScript with no build step and no
dependency: the browser calls the HTTP API itself (``/streams``, ``/all``,
``/subscribe/all``, ``/health``), sending the bearer token the user typed in
(kept in the tab's sessionStorage) when tokens are on. The files are public;
everything they show comes through the API's own checks.

Responses carry a Content-Security-Policy that allows only the console's own
scripts and styles and connections to this server: event data shown in the
page cannot run as script even if a bug put it into the document.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

_HEADERS = (
    (b"content-security-policy",
     b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    # Small files that change with the server version: revalidate every time.
    (b"cache-control", b"no-cache"),
)


class _ConsoleFiles:
    """StaticFiles with the console's security headers on every response."""

    def __init__(self) -> None:
        self._files = StaticFiles(packages=[("hydra.gateway", "ui")], html=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_HEADERS]
            await send(message)

        await self._files(scope, receive, send_with_headers)


async def _to_index(request: Request) -> Response:
    return RedirectResponse("/ui/", status_code=308)


def console_routes() -> list[BaseRoute]:
    """``/ui`` (redirects to ``/ui/``) and the files under it."""
    return [Route("/ui", _to_index, methods=["GET"]), Mount("/ui", app=_ConsoleFiles())]
