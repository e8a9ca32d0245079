"""Module fixtures for the authentik-mode browser tests: a fake Authentik API and a cookie-driven stand-in outpost,
each served by uvicorn in a thread; the real MediaMTX web editor (with its own login); the real sidecar in authentik
mode with the SSO bridge on; and the real Caddy with the shipped Caddyfile asking the stand-in outpost."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext

from sidecar.processes import stop_process
from tests.fake_authentik import TOKEN, FakeAuthentik
from tests.fake_mediamtx import FakeMediaMTX
from tests.outpost_stand_in import COOKIE, create_outpost
from tests.processes_fixtures import OUTPOST_AUTH_URI, Endpoint, Launch, ServedApp, serve_sidecar
from tests.real_editor import SERVICE_PASSWORD, SERVICE_USER, RealEditor

VID_GROUPS = ("vid_public", "vid_private", "vid_admin")
TAK_GROUPS = ("tak_users", "tak_ROLE_ADMIN")


@dataclass(frozen=True)
class AuthentikStack:
    site: str  # Caddy's site
    authentik: FakeAuthentik
    editor: RealEditor
    data_dir: Path


def seeded_authentik() -> FakeAuthentik:
    """admin (vid_admin), bob (vid_public), carol (only tak_users); the vid_* groups and two tak_* ones."""
    fake = FakeAuthentik()
    for name in (*VID_GROUPS, *TAK_GROUPS):
        fake.add_group(name)
    fake.add_user("admin", "vid_admin", name="Admin", email="admin@example.org")
    fake.add_user("bob", "vid_public", name="Bob", email="bob@example.org")
    fake.add_user("carol", "tak_users", name="Carol", email="carol@example.org")
    return fake


def members(fake: FakeAuthentik, group: str) -> set[str]:
    """The usernames in `group` in the fake's current state."""
    found = fake.group_named(group)
    assert found is not None, group
    return {fake.users[pk].username for pk in found.members}


@pytest.fixture(scope="module")
def authentik_stack(
    launch: Launch,
    start_caddy: Callable[..., Endpoint],
    process_dir: Path,
    fake_mediamtx_http: tuple[FakeMediaMTX, str],
) -> Iterator[AuthentikStack]:
    """The sidecar in authentik mode (SSO bridge to the real MediaMTX web editor) behind the shipped Caddyfile."""
    _, mediamtx_url = fake_mediamtx_http
    fake = seeded_authentik()
    editor = RealEditor(process_dir / "browser-authentik-editor")
    editor.start()
    with (
        ServedApp(fake.app) as authentik,
        ServedApp(create_outpost()) as outpost,
    ):
        data_dir = process_dir / "browser-authentik-data"
        sidecar, proc = serve_sidecar(
            launch,
            "sidecar-authentik",
            data_dir,
            mode="authentik",
            trusted_proxies="127.0.0.0/8,::1/128",
            authentik_url=authentik.endpoint.url,
            authentik_token=TOKEN,
            mediamtx_api_url=mediamtx_url,
            editor_url=editor.url,
            editor_username=SERVICE_USER,
            editor_password=SERVICE_PASSWORD,
        )
        caddy = start_caddy("caddy-authentik", sidecar=sidecar, auth=outpost.endpoint, auth_uri=OUTPOST_AUTH_URI)
        yield AuthentikStack(site=caddy.url, authentik=fake, editor=editor, data_dir=data_dir)
        stop_process(proc)  # before its upstreams go; Caddy, idle, goes at the end of the session
    editor.stop()


def signed_in_as(context: BrowserContext, site: str, username: str) -> BrowserContext:
    """Make the stand-in outpost vouch for `username` on every request this context sends to `site`."""
    context.add_cookies([{"name": COOKIE, "value": username, "url": site}])
    return context
