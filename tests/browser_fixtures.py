"""Session fixtures for the browser tests: a fake MediaMTX control API, the real sidecar and the real Caddy on
loopback, and one Debian chromium driven by Playwright. Every page the browser loads goes through Caddy."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, sync_playwright

from sidecar.processes import free_port
from tests.fake_mediamtx import FakeMediaMTX, create_fake_mediamtx
from tests.processes_fixtures import (
    ADMIN_PASSWORD,
    VIEWER_PASSWORD,
    VIEWER_USER,
    Endpoint,
    Launch,
    ServedApp,
    child_env,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
ADMIN_USER = "admin"
# Live paths the fake MediaMTX reports, and who may see them under the rules seeded below.
PUBLIC_PATHS = ("live/cam1", "live/cam2")  # live/** → vid_public
PRIVATE_PATH = "live/private/cam3"  # live/private/* → vid_private
UNRULED_PATH = "ops/secret"  # no rule: admins only
RULES = (("live/**", "vid_public"), ("live/private/*", "vid_private"))
SCREENSHOTS = os.environ.get("SIDECAR_SCREENSHOTS") == "1"
DOCS = Path(__file__).resolve().parent.parent / "docs"
# A media playlist hls.js accepts; its segment is answered with 404, which hls.js retries for a while.
PLAYLIST = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:2.0,\nsegment0.ts\n"
# The HLS server is another origin than the page: hls.js's requests are CORS requests (with a preflight, since
# they carry Authorization), so the answers must allow the page's origin like MediaMTX does.
CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Headers": "Authorization"}


@dataclass(frozen=True)
class BrowserStack:
    """What the browser tests talk to."""

    site: str  # Caddy's site, e.g. http://127.0.0.1:PORT
    hls: str  # the HLS base URL the pages use; nothing listens there, tests answer it with page routes
    fake: FakeMediaMTX
    data_dir: Path


@dataclass(frozen=True)
class HlsRequest:
    url: str
    method: str
    headers: dict[str, str]

    @property
    def bearer(self) -> str | None:
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        return token if scheme == "Bearer" and token else None


@dataclass
class HlsStandIn:
    """Answers the HLS origin inside one browser context and remembers every request the player made."""

    base: str
    requests: list[HlsRequest] = field(default_factory=list)

    def attach(self, context: BrowserContext) -> None:
        context.route(f"{self.base}/**", self._answer)

    def _answer(self, route: Route) -> None:
        request = route.request
        self.requests.append(HlsRequest(request.url, request.method, request.all_headers()))
        if request.method == "OPTIONS":  # Chromium's CORS preflight, when Playwright does not answer it itself
            route.fulfill(status=204, headers={**CORS, "Access-Control-Allow-Methods": "GET"})
        elif request.url.endswith("/index.m3u8"):
            route.fulfill(status=200, headers={**CORS, "Content-Type": "application/vnd.apple.mpegurl"}, body=PLAYLIST)
        else:
            route.fulfill(status=404, headers=CORS, body="")

    def playlist_url(self, path: str) -> str:
        return f"{self.base}/{path}/index.m3u8"

    def playlist_requests(self, path: str) -> list[HlsRequest]:
        return [r for r in self.requests if r.url == self.playlist_url(path) and r.method == "GET"]


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, read without verifying it (the sidecar's own tests verify signatures)."""
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return decoded


def sign_in(page: Page, site: str, username: str, password: str, target: str = "/streams") -> None:
    """Open `target` through Caddy, get sent to the sign-in page, sign in, and land on `target`."""
    page.goto(site + target)
    assert page.url.startswith(f"{site}/auth/login"), page.url
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    with page.expect_navigation(url=site + target):
        page.get_by_role("button", name="Sign in").click()


def screenshot(page: Page, name: str, *, full_page: bool = True) -> None:
    """Write docs/<name>.png, only when SIDECAR_SCREENSHOTS=1 (so ordinary runs never rewrite tracked files)."""
    if SCREENSHOTS:
        page.screenshot(path=str(DOCS / f"{name}.png"), full_page=full_page, animations="disabled", caret="initial")


@pytest.fixture(scope="session")
def fake_mediamtx_http() -> Iterator[tuple[FakeMediaMTX, str]]:
    """The fake MediaMTX control API served by uvicorn in a thread, seeded with four ready paths."""
    fake = create_fake_mediamtx()
    for path in (*PUBLIC_PATHS, PRIVATE_PATH, UNRULED_PATH):
        fake.add_path(path, ready=True)
    with ServedApp(fake.app) as served:
        yield fake, served.url


@pytest.fixture(scope="session")
def browser_stack(
    launch: Launch,
    start_caddy: Callable[..., Endpoint],
    echo_editor: Endpoint,
    process_dir: Path,
    fake_mediamtx_http: tuple[FakeMediaMTX, str],
) -> BrowserStack:
    """A bootstrapped local-mode sidecar (admin, viewer bob in vid_public, two rules) behind the shipped Caddyfile."""
    fake, fake_url = fake_mediamtx_http
    data_dir = process_dir / "browser-sidecar-data"
    port = free_port()
    hls = f"http://127.0.0.1:{free_port()}"
    env = child_env(
        SIDECAR_MODE="local",
        SIDECAR_DATA_DIR=str(data_dir),
        SIDECAR_LOG_LEVEL="WARNING",
        SIDECAR_BOOTSTRAP_PASSWORD=ADMIN_PASSWORD,
        SIDECAR_HOST="127.0.0.1",
        SIDECAR_PORT=str(port),
        SIDECAR_MEDIAMTX_API_URL=fake_url,
        SIDECAR_HLS_URL=hls,
        SIDECAR_EDITOR_URL=echo_editor.url,
    )
    cli = [sys.executable, "-m", "sidecar"]
    steps: list[tuple[list[str], str]] = [
        ([*cli, "bootstrap"], ""),
        ([*cli, "users", "add", VIEWER_USER, "--group", "vid_public", "--password-stdin"], VIEWER_PASSWORD + "\n"),
        *(([*cli, "rules", "set", pattern, group], "") for pattern, group in RULES),
    ]
    for argv, stdin in steps:
        done = subprocess.run(argv, env=env, cwd=process_dir, input=stdin, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{' '.join(argv[2:])} failed:\n{done.stdout}\n{done.stderr}"
    launch("sidecar-browser", [*cli, "serve"], env, ready_url=f"http://127.0.0.1:{port}/healthz")
    sidecar = Endpoint("sidecar-browser", port)
    caddy = start_caddy("caddy-browser", sidecar=sidecar, auth=sidecar, auth_uri="/auth/verify")
    return BrowserStack(site=caddy.url, hls=hls, fake=fake, data_dir=data_dir)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Debian chromium (never a downloaded browser) for the browser tests, which live in one module.

    Module scope on purpose: while Playwright's sync API is open its event loop counts as running in this thread,
    so it must be closed before the rest of the suite calls asyncio.run().
    """
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium")
    with sync_playwright() as playwright:
        found = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield found
        found.close()


@pytest.fixture
def new_context(browser: Browser) -> Iterator[Callable[..., BrowserContext]]:
    """Fresh browser contexts (own cookies) for one test, 1100 px wide unless told otherwise; closed afterwards."""
    opened: list[BrowserContext] = []

    def factory(width: int = 1100, height: int = 800, **options: Any) -> BrowserContext:
        context = browser.new_context(viewport={"width": width, "height": height}, **options)
        context.set_default_timeout(10_000)
        opened.append(context)
        return context

    yield factory
    for context in opened:
        context.close()
