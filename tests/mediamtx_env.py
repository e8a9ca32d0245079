"""A bootstrapped sidecar wired to a fake MediaMTX, with the streaming rules and viewers the callback tests share:
`open_mediamtx_env` builds it; `MediaMTXEnv` drives it (the callback, sign-in, playback tokens, settling re-checks)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from starlette.testclient import TestClient

from sidecar.app import create_app
from sidecar.runtime import Services
from sidecar.settings import Settings
from tests.fake_mediamtx import FakeMediaMTX, create_fake_mediamtx
from tests.helpers import (
    ADMIN_PASSWORD,
    API_KEY,
    TRUSTED_PEER,
    bootstrapped_settings,
    callback_body,
    cheapen_bcrypt,
    login,
)

KEY = {"x-api-key": API_KEY}
BOB_PASSWORD = "bob-password-1"
CAROL_PASSWORD = "carol-password-1"
PASSWORDS = {"admin": ADMIN_PASSWORD, "bob": BOB_PASSWORD, "carol": CAROL_PASSWORD}
# The viewers `open_mediamtx_env` can add, and their groups.
VIEWER_GROUPS = {"bob": ["vid_public"], "carol": ["vid_public", "vid_private"]}
RULES = ({"pattern": "live/**", "groups": ["vid_public"]}, {"pattern": "live/private/*", "groups": ["vid_private"]})
MEDIAMTX_API_URL = "http://mediamtx.test"


@dataclass
class MediaMTXEnv:
    client: TestClient
    fake: FakeMediaMTX
    settings: Settings
    transport: httpx.AsyncBaseTransport  # what the sidecar's MediaMTX client talks through

    @property
    def services(self) -> Services:
        found: Services = self.client.app.state.services  # type: ignore[attr-defined]
        return found

    def auth(self, **fields: Any) -> httpx.Response:
        """MediaMTX's auth callback, with MediaMTX's exact body."""
        return self.client.post("/mediamtx/auth", json=callback_body(**fields))

    def sign_in(self, username: str = "admin", password: str | None = None) -> dict[str, str]:
        """Sign in afresh (the password defaults to the user's in `PASSWORDS`); return headers for a browser write."""
        self.client.cookies.clear()
        return login(self.client, username, PASSWORDS[username] if password is None else password)

    def request_token(self, path: str, username: str = "bob", password: str | None = None) -> httpx.Response:
        headers = self.sign_in(username, password)
        return self.client.post("/api/v1/streams/token", json={"path": path}, headers=headers)

    def token(self, path: str, username: str = "bob", password: str | None = None) -> str:
        response = self.request_token(path, username, password)
        assert response.status_code == 200, response.text
        token: str = response.json()["token"]
        return token

    def settle(self) -> None:
        """Wait (at most 5 s) for the background re-checks that a change started."""

        async def idle() -> None:
            await asyncio.wait_for(self.services.revoker.idle(), 5)

        self.client.portal.call(idle)


E = TypeVar("E", bound=MediaMTXEnv)
T = TypeVar("T", bound=httpx.AsyncBaseTransport)


def fake_transport(fake: FakeMediaMTX, settings: Settings) -> httpx.AsyncBaseTransport:
    """The sidecar's MediaMTX client talking straight to the fake."""
    return httpx.ASGITransport(app=fake.app)


@contextmanager
def open_mediamtx_env(
    build: Callable[[TestClient, FakeMediaMTX, Settings, T], E],
    data_dir: Path,
    transport: Callable[[FakeMediaMTX, Settings], T],
    *,
    viewers: Iterable[str] = ("bob",),
    raise_server_exceptions: bool = False,
    **overrides: object,
) -> Iterator[E]:
    """A bootstrapped sidecar (settings `overrides` applied) whose MediaMTX client talks to a fake MediaMTX through
    `transport`; `RULES` seeded and `viewers` added (see `VIEWER_GROUPS`); background re-checks settled on the way in
    and out."""
    settings = bootstrapped_settings(data_dir, **{"mediamtx_api_url": MEDIAMTX_API_URL, **overrides})
    fake = create_fake_mediamtx()
    wire = transport(fake, settings)
    app = create_app(settings, transport=wire)
    with TestClient(
        app, client=TRUSTED_PEER, base_url="http://testserver", raise_server_exceptions=raise_server_exceptions
    ) as client:
        env = build(client, fake, settings, wire)
        for rule in RULES:
            assert client.put("/api/v1/rules", json=rule, headers=KEY).status_code == 200
        users = env.services.users
        with pytest.MonkeyPatch.context() as patch:
            cheapen_bcrypt(patch)
            for username in viewers:
                client.portal.call(users.add_user, username, VIEWER_GROUPS[username], PASSWORDS[username], "test")
        env.settle()
        yield env
        env.settle()
