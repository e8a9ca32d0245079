"""Small helpers for tests: principals, sign-in, and the fixed test credentials."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
from starlette.testclient import TestClient

from sidecar import passwords
from sidecar.bootstrap import bootstrap
from sidecar.identity import Principal, RolePolicy
from sidecar.settings import Settings

ADMIN_PASSWORD = "admin-password-1"
API_KEY = "test-api-key-0123456789"
TRUSTED_PEER = ("127.0.0.1", 40000)  # inside the default SIDECAR_TRUSTED_PROXIES
UNTRUSTED_PEER = ("203.0.113.7", 40000)


def principal(*groups: str, username: str = "someone", admin_groups: tuple[str, ...] = ("vid_admin",)) -> Principal:
    return RolePolicy(admin_groups=frozenset(admin_groups), prefix="vid_").principal(username, groups, source="proxy")


def login(client: TestClient, username: str = "admin", password: str = ADMIN_PASSWORD) -> dict[str, str]:
    """Sign in; return headers for a same-origin browser write (Origin + X-CSRF-Token)."""
    response = client.post("/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    csrf = client.get("/api/v1/me").json()["csrf_token"]
    return {"origin": "http://testserver", "x-csrf-token": csrf}


def cheapen_bcrypt(patch: pytest.MonkeyPatch) -> None:
    """Cheap bcrypt work factor for hashes made in tests (the checks themselves stay real bcrypt)."""
    real_gensalt = bcrypt.gensalt
    patch.setattr(bcrypt, "gensalt", lambda rounds=4, prefix=b"2b": real_gensalt(4, prefix))
    patch.setattr(passwords, "_DUMMY_HASH", bcrypt.hashpw(b"placeholder", real_gensalt(4)).decode())


def bootstrapped_settings(data_dir: Path, **overrides: object) -> Settings:
    """Settings for a bootstrapped local-mode data dir with the test credentials."""
    values: dict[str, object] = {"data_dir": data_dir, "api_key": API_KEY, "bootstrap_password": ADMIN_PASSWORD}
    values.update(overrides)
    found = Settings(_env_file=None, **values)  # type: ignore[arg-type]
    with pytest.MonkeyPatch.context() as patch:
        cheapen_bcrypt(patch)
        bootstrap(found, out=lambda line: None)
    return found


CALLBACK_FIELDS = ("ip", "user", "password", "token", "action", "path", "protocol", "id", "query", "userAgent")


def callback_body(**fields: Any) -> dict[str, Any]:
    """MediaMTX's auth callback body: every field is always present; `id` is a UUID string or null."""
    body: dict[str, Any] = {
        "ip": "192.0.2.10",
        "user": "",
        "password": "",
        "token": "",
        "action": "read",
        "path": "live/cam1",
        "protocol": "rtsp",
        "id": None,
        "query": "",
        "userAgent": "LibVLC/3.0.20 (LIVE555 Streaming Media v2016.11.28)",
    }
    body.update(fields)
    assert set(body) == set(CALLBACK_FIELDS), "MediaMTX sends exactly these fields"
    return body


def form_token(client: TestClient | httpx.Client, path: str = "/request-access") -> str:
    """The signed token a public form page embeds, as a browser would send it back."""
    page = client.get(path)
    found = re.search(r'name="form_token" value="([^"]+)"', page.text)
    assert found, "the form page has no form_token"
    return found.group(1)


def streamed_answer(
    chunks: int, size: int = 1, pause: float = 0.0
) -> tuple[Callable[[httpx.Request], httpx.Response], list[int]]:
    """A handler for httpx.MockTransport: a 200 JSON answer streamed in `chunks` pieces of `size` bytes (no
    Content-Length), `pause` seconds apart; the list counts the pieces sent."""
    sent: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        for _ in range(chunks):
            if pause:
                await asyncio.sleep(pause)
            sent.append(size)
            yield b" " * size

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "application/json"}, content=body())

    return handler, sent


def access_request_form(username: str, token: str, **fields: str) -> dict[str, str]:
    """The public request-access form as a person fills it in (`fields` changes any of it)."""
    return {
        "name": username.title(),
        "username": username,
        "email": f"{username}@example.org",
        "org": "Analytical unit",
        "reason": "I need to watch the drills.",
        "group": "vid_public",
        "website": "",
        "form_token": token,
        **fields,
    }


def submit_access_request(
    url: str, username: str, headers: dict[str, str] | None = None, **fields: str
) -> httpx.Response:
    """Send the form to a running sidecar at `url` as a browser would: load the page, post it back."""
    with httpx.Client(base_url=url, timeout=15, headers=headers) as browser:
        data = access_request_form(username, form_token(browser), **fields)
        return browser.post("/request-access", data=data, headers={"origin": url})


def count_lookups(monkeypatch: pytest.MonkeyPatch, directory: Any) -> list[str]:
    """The usernames `directory.get_user` is asked for from now on, in order (the lookups still happen)."""
    looked_up: list[str] = []
    original = directory.get_user

    async def counted(username: str) -> Any:
        looked_up.append(username)
        return await original(username)

    monkeypatch.setattr(directory, "get_user", counted)
    return looked_up
