"""A whole authentik-mode site for the attack modules, driven through the real Caddy.

A fake Authentik API (tests/fake_authentik.py), a fake MediaMTX control API, a recording stand-in for the editor and
a stand-in outpost are served by uvicorn in threads of the test process; the real `sidecar serve` runs in authentik
mode against them; the real Caddy with the shipped Caddyfile asks the stand-in outpost.

The stand-in outpost works like Authentik's: it vouches for the person the `stand_in_user` cookie names (a stale
session: even once deactivated) and builds `X-Authentik-Groups` by joining that person's *current* group names in the
fake Authentik with `|`, so a group named `tak_ops|vid_admin` arrives as `tak_ops|vid_admin`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sidecar.processes import stop_process
from tests.fake_authentik import TOKEN, FakeAuthentik
from tests.fake_mediamtx import FakeMediaMTX, create_fake_mediamtx
from tests.processes_fixtures import OUTPOST_AUTH_URI, Endpoint, Launch, ServedApp, serve_sidecar

COOKIE = "stand_in_user"
EMAIL_STAGE = "6f1c1c3e-3a52-4b0e-9a57-1b7f5c2c0e11"  # any string: the fake records what it is given
FORWARD_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def create_outpost(fake: FakeAuthentik) -> Starlette:
    """Caddy's forward_auth target: identity for the cookie's person, groups joined with `|` like the outpost."""

    async def forward_auth(request: Request) -> Response:
        parsed: SimpleCookie = SimpleCookie()
        try:
            parsed.load(request.headers.get("cookie", ""))
        except CookieError:
            return Response(status_code=200)
        morsel = parsed.get(COOKIE)
        user = fake.user_named(morsel.value) if morsel is not None else None
        if user is None:
            return Response(status_code=200)  # Authentik's answer on a path it leaves unauthenticated
        headers = {
            "X-Authentik-Username": user.username,
            "X-Authentik-Groups": "|".join(group.name for group in fake.groups_of(user)),
            "X-Authentik-Email": user.email,
            "X-Authentik-Name": user.name,
            "X-Authentik-Uid": f"uid-{user.pk}",
        }
        return Response(status_code=200, headers=headers)

    return Starlette(routes=[Route(OUTPOST_AUTH_URI, forward_auth, methods=FORWARD_METHODS)])


@dataclass
class RecordingEditor:
    """Stands in for the vanilla editor: answers everything and remembers what reached it."""

    seen: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def app(self) -> Starlette:
        async def anything(request: Request) -> Response:
            with self.lock:
                self.seen.append((request.method, request.url.path))
            return JSONResponse({"editor": True, "path": request.url.path})

        return Starlette(routes=[Route("/{path:path}", anything, methods=FORWARD_METHODS)])

    def count(self) -> int:
        with self.lock:
            return len(self.seen)


@dataclass(frozen=True)
class Site:
    url: str  # Caddy's site
    authentik: FakeAuthentik
    mediamtx: FakeMediaMTX
    editor: RecordingEditor
    data_dir: Path
    api_key: str

    def client(self, username: str | None = None) -> httpx.Client:
        """A client whose requests the outpost vouches for as `username` (anonymous when None)."""
        headers = {"Accept": "application/json"}
        if username is not None:
            headers["Cookie"] = f"{COOKIE}={username}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0, follow_redirects=False)

    def service(self) -> httpx.Client:
        """Automation with the API key (through Caddy, like any other client)."""
        return httpx.Client(base_url=self.url, headers={"X-API-Key": self.api_key}, timeout=30.0)

    def csrf(self, client: httpx.Client) -> str | None:
        """The caller's CSRF token from `GET /api/v1/me`, or None when /me refuses them."""
        answer = client.get("/api/v1/me")
        return str(answer.json()["csrf_token"]) if answer.status_code == 200 else None

    def write(
        self, client: httpx.Client, method: str, path: str, body: Any = None, *, csrf: str | None = None
    ) -> httpx.Response:
        """A same-origin state change with the caller's CSRF token (fetched when not given)."""
        token = csrf if csrf is not None else self.csrf(client)
        headers = {"Origin": self.url}
        if token is not None:
            headers["X-CSRF-Token"] = token
        content = None if body is None else json.dumps(body).encode()
        if content is not None:
            headers["Content-Type"] = "application/json"
        return client.request(method, path, content=content, headers=headers)

    def audit(self, action: str | None = None, **filters: str) -> list[dict[str, Any]]:
        params = {"limit": "1000", **({"action": action} if action else {}), **filters}
        with self.service() as api:
            answer = api.get("/api/v1/audit", params=params)
        assert answer.status_code == 200, answer.text
        events: list[dict[str, Any]] = answer.json()["events"]
        return events

    def last_audit_id(self) -> int:
        events = self.audit()
        return max((int(e["id"]) for e in events), default=0)


def is_json_error(answer: httpx.Response, status: int | tuple[int, ...]) -> bool:
    """The product's error shape: the given status with a JSON `{"error": "..."}` body."""
    statuses = status if isinstance(status, tuple) else (status,)
    if answer.status_code not in statuses:
        return False
    try:
        body = answer.json()
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("error"), str) and bool(body["error"])


def jwt_claims(token: str) -> dict[str, Any]:
    """A JWT's payload, read without verifying anything."""
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return decoded


@contextlib.contextmanager
def authentik_site(
    name: str,
    fake: FakeAuthentik,
    *,
    launch: Launch,
    start_caddy: Callable[..., Endpoint],
    process_dir: Path,
    stream_paths: tuple[str, ...] = (),
    **settings: str,
) -> Iterator[Site]:
    """The real sidecar (authentik mode, `settings` as extra SIDECAR_* variables) behind the real Caddy."""
    mediamtx = create_fake_mediamtx()
    for path in stream_paths:
        mediamtx.add_path(path, ready=True)
    editor = RecordingEditor()
    with (
        ServedApp(fake.app) as authentik,
        ServedApp(mediamtx.app) as mediamtx_server,
        ServedApp(editor.app) as editor_server,
        ServedApp(create_outpost(fake)) as outpost,
    ):
        data_dir = process_dir / f"{name}-data"
        sidecar, proc = serve_sidecar(
            launch,
            name,
            data_dir,
            mode="authentik",
            trusted_proxies="127.0.0.0/8,::1/128",
            authentik_url=authentik.endpoint.url,
            authentik_token=TOKEN,
            mediamtx_api_url=mediamtx_server.endpoint.url,
            editor_url=editor_server.endpoint.url,
            **settings,
        )
        caddy = start_caddy(f"caddy-{name}", sidecar=sidecar, auth=outpost.endpoint, auth_uri=OUTPOST_AUTH_URI)
        api_key = (data_dir / "api_key").read_text().strip()
        yield Site(caddy.url, fake, mediamtx, editor, data_dir, api_key)
        stop_process(proc)  # before its upstreams go; Caddy, idle, goes at the end of the session
