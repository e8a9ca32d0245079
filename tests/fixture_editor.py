"""The editor behind the injection proxy in tests: the demo editor's login and sidebar, plus probe routes.

The demo editor (sidecar/demo_editor.py) already reproduces the real editor's `/login` form, `session` cookie,
redirects and `nav.sidebar#sidebar` markup (its index page names the signed-in user); the routes added here give
tests answers of every shape to compare byte for byte, and one that reports the headers the editor received.
`restart()` replaces the demo editor with a new one (a new signing key), as restarting the real editor does.
"""

from __future__ import annotations

import asyncio
import gzip
import threading
from collections.abc import AsyncIterator, Iterator

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from sidecar import demo_editor

USERNAME, PASSWORD = "editor-admin", "editor-password"
PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Probe</title></head>\n"
    b"<BODY><p>first</p><!-- a stray </body> inside --></Body>\n<p>tail</p></BODY >\n</html>\n"
)
NO_BODY_PAGE = b"<p>a fragment without a body element</p>"
BLOB = bytes(range(256)) * 64
STREAM_CHUNK = b"x" * 65536
STREAM_CHUNKS = 64  # 4 MiB in all
CSP_BLOCKING = "default-src 'none'; img-src data:; frame-ancestors 'none'"
CSP_SCRIPT_ONLY = "script-src https://cdn.example; object-src 'none'"
CSP_FINE = "default-src 'self'; frame-ancestors 'none'"
CSPS = {"blocking": CSP_BLOCKING, "script": CSP_SCRIPT_ONLY, "fine": CSP_FINE}


class FixtureEditor:
    """The app plus an event the slow stream waits on, so a test can prove the proxy does not buffer."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.login_posts = 0
        self._editor = demo_editor.create_app(USERNAME, PASSWORD)
        self.app = self._build()

    def restart(self) -> None:
        """A new editor process, in effect: a new signing key, so every session it gave out is void."""
        self._editor = demo_editor.create_app(USERNAME, PASSWORD)

    async def _current_editor(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/login":
            self.login_posts += 1
        await self._editor(scope, receive, send)

    def _build(self) -> Starlette:

        async def echo(request: Request) -> Response:
            body = await request.body()
            seen = {
                "method": request.method,
                "raw_path": request.scope["raw_path"].decode("latin-1"),
                "query": request.scope["query_string"].decode("latin-1"),
                "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.headers.raw],
                "body_length": len(body),
                "body_head": body[:64].decode("latin-1"),
            }
            return JSONResponse(seen)

        async def page(request: Request) -> Response:
            return Response(PAGE, media_type="text/html", headers={"ETag": '"page-1"', **demo_editor.NO_STORE})

        async def fragment(request: Request) -> Response:
            return Response(NO_BODY_PAGE, media_type="text/html")

        async def gzipped(request: Request) -> Response:
            # Compressed whatever the client asked for, as some servers do.
            headers = {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
            return Response(gzip.compress(PAGE), media_type="text/html; charset=utf-8", headers=headers)

        async def csp(request: Request) -> Response:
            policy = CSPS[request.path_params["kind"]]
            return Response(PAGE, media_type="text/html", headers={"Content-Security-Policy": policy})

        async def blob(request: Request) -> Response:
            headers = {"Cache-Control": "max-age=60", "X-Probe": "blob"}
            return Response(BLOB, media_type="application/octet-stream", headers=headers)

        async def missing(request: Request) -> Response:
            return Response(b"<html><body>gone</body></html>", status_code=404, media_type="text/html")

        async def cookies(request: Request) -> Response:
            response = JSONResponse({"ok": True})
            response.set_cookie("first", "1", httponly=True)
            response.set_cookie("second", "2", path="/api")
            return response

        async def signed_in_echo(request: Request) -> Response:
            # Like the editor's own forms: only with a valid session, else a redirect to its login page.
            transport = httpx.ASGITransport(app=self._current_editor)
            async with httpx.AsyncClient(transport=transport, base_url="http://editor") as editor:
                status = await editor.get("/api/status", headers={"cookie": request.headers.get("cookie", "")})
            if status.status_code != 200:
                return RedirectResponse("/login", status_code=302)
            return JSONResponse({"body_length": len(await request.body())})

        async def session_cookie(request: Request) -> Response:
            # As an editor does when it refreshes its session: the bridge must keep this from the browser.
            response = JSONResponse({"ok": True})
            response.set_cookie("session", "from-the-editor", httponly=True)
            response.set_cookie("theme", "dark")
            return response

        async def absolute_redirect(request: Request) -> Response:
            origin = f"{request.url.scheme}://{request.headers['host']}"
            return Response(status_code=302, headers={"Location": f"{origin}/login?from=absolute"})

        async def stream(request: Request) -> Response:
            async def chunks() -> AsyncIterator[bytes]:
                yield STREAM_CHUNK
                # The rest only once the test has received the first chunk through the proxy.
                for _ in range(200):
                    if self.release.is_set():
                        break
                    await asyncio.sleep(0.05)
                for _ in range(STREAM_CHUNKS - 1):
                    yield STREAM_CHUNK

            return StreamingResponse(chunks(), media_type="application/octet-stream")

        probes = [
            Route("/probe/echo", echo, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
            Route("/probe/page", page),
            Route("/probe/fragment", fragment),
            Route("/probe/gzip", gzipped),
            Route("/probe/csp/{kind}", csp),
            Route("/probe/blob.bin", blob),
            Route("/probe/missing", missing),
            Route("/probe/cookies", cookies),
            Route("/probe/session-cookie", session_cookie),
            Route("/probe/signed-in-echo", signed_in_echo, methods=["POST"]),
            Route("/probe/absolute-redirect", absolute_redirect),
            Route("/probe/stream", stream),
        ]
        return Starlette(routes=[*probes, Mount("", app=self._current_editor)])


def stream_body() -> Iterator[bytes]:
    """What /probe/stream sends, for comparing."""
    for _ in range(STREAM_CHUNKS):
        yield STREAM_CHUNK
