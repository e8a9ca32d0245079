"""Module fixtures for browser tests against the REAL, unmodified editor from ../shared/editor/: the editor as a
process (tests/real_editor.py), the real sidecar (`sidecar serve`, local mode) in front of it with the SSO bridge
signing in as the editor's service account, and the real Caddy with the shipped Caddyfile in front of both.

The data dir has the bootstrapped admin (tests/helpers.ADMIN_PASSWORD) and the viewer bob in vid_public. Browser
contexts made here send nothing off the machine: every request to another host than the site (the editor's CDN
fonts and icons) is aborted and recorded, and every uncaught script error of every page is recorded too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Error, Page, Route, ViewportSize

from sidecar.processes import stop_process
from sidecar.runtime import run_with_services
from tests import real_editor
from tests.fake_mediamtx import FakeMediaMTX
from tests.helpers import bootstrapped_settings, cheapen_bcrypt
from tests.processes_fixtures import VIEWER_PASSWORD, VIEWER_USER, Endpoint, Launch, serve_sidecar

DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}


@dataclass(frozen=True)
class RealEditorStack:
    """What the tests talk to: Caddy's site, and the editor process and data dir behind it."""

    site: str  # Caddy's site, e.g. http://127.0.0.1:PORT
    editor: real_editor.RealEditor
    sidecar: Endpoint
    data_dir: Path

    @property
    def api_key(self) -> str:
        """The automation key `sidecar serve` generated into the data dir (no SIDECAR_API_KEY is set)."""
        return (self.data_dir / "api_key").read_text().strip()

    def audit(self, **filters: str) -> list[dict[str, Any]]:
        """The sidecar's audit log, newest first, read through Caddy with the API key."""
        response = httpx.get(
            f"{self.site}/api/v1/audit",
            params={"limit": "1000", **filters},
            headers={"X-API-Key": self.api_key, "Accept": "application/json"},
            timeout=15,
        )
        assert response.status_code == 200, response.text
        events: list[dict[str, Any]] = response.json()["events"]
        return events


@dataclass(frozen=True)
class PageError:
    page_url: str
    message: str
    stack: str

    @property
    def from_overlay(self) -> bool:
        return "/overlay/" in self.stack or "/overlay/" in self.message


@dataclass
class EditorBrowser:
    """Browser contexts for one test: each blocks and records requests to other hosts and records page errors."""

    browser: Browser
    stack: RealEditorStack
    blocked: list[str] = field(default_factory=list)
    page_errors: list[PageError] = field(default_factory=list)
    contexts: list[BrowserContext] = field(default_factory=list)

    def context(self, viewport: ViewportSize | None = None, **options: Any) -> BrowserContext:
        context = self.browser.new_context(viewport=viewport or DESKTOP, **options)
        context.set_default_timeout(10_000)
        site = self.stack.site

        def elsewhere(url: str) -> bool:
            return not (url == site or url.startswith(site + "/"))

        def block(route: Route) -> None:
            self.blocked.append(route.request.url)
            route.abort("blockedbyclient")

        context.route(elsewhere, block)
        context.on("page", self._watch)
        self.contexts.append(context)
        return context

    def page(self, viewport: ViewportSize | None = None, **options: Any) -> Page:
        return self.context(viewport, **options).new_page()

    def _watch(self, page: Page) -> None:
        def record(error: Error) -> None:
            self.page_errors.append(PageError(page.url, error.message, error.stack or ""))

        page.on("pageerror", record)

    def overlay_errors(self) -> list[PageError]:
        return [error for error in self.page_errors if error.from_overlay]

    def close(self) -> None:
        for context in self.contexts:
            context.close()
        self.contexts.clear()


@pytest.fixture(scope="module")
def real_editor_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[real_editor.RealEditor]:
    """The real editor, unmodified but for its two install prefixes, on a loopback port picked at runtime."""
    editor = real_editor.RealEditor(tmp_path_factory.mktemp("real-editor"))
    editor.start()
    yield editor
    editor.stop()


@pytest.fixture(scope="module")
def real_editor_stack(
    launch: Launch,
    start_caddy: Callable[..., Endpoint],
    process_dir: Path,
    fake_mediamtx_http: tuple[FakeMediaMTX, str],
    real_editor_process: real_editor.RealEditor,
) -> Iterator[RealEditorStack]:
    """`sidecar serve` (local mode, SSO bridge on as the editor's service account) behind the shipped Caddyfile.

    Request it before `browser`: making the data dir runs asyncio.run(), which Playwright's open sync API forbids.
    """
    _, mediamtx_url = fake_mediamtx_http
    data_dir = process_dir / "real-editor-sidecar-data"
    settings = bootstrapped_settings(data_dir)
    with pytest.MonkeyPatch.context() as patch:
        cheapen_bcrypt(patch)
        run_with_services(settings, lambda s: s.users.add_user(VIEWER_USER, ["vid_public"], VIEWER_PASSWORD, "tests"))
    sidecar, proc = serve_sidecar(
        launch,
        "sidecar-real-editor",
        data_dir,
        trusted_proxies="127.0.0.0/8,::1/128",
        mediamtx_api_url=mediamtx_url,
        editor_url=real_editor_process.url,
        editor_username=real_editor.SERVICE_USER,
        editor_password=real_editor.SERVICE_PASSWORD,
    )
    caddy = start_caddy("caddy-real-editor", sidecar=sidecar, auth=sidecar, auth_uri="/auth/verify")
    yield RealEditorStack(site=caddy.url, editor=real_editor_process, sidecar=sidecar, data_dir=data_dir)
    stop_process(proc)  # before the editor goes; Caddy, idle, goes at the end of the session


@pytest.fixture
def editor_browser(real_editor_stack: RealEditorStack, browser: Browser) -> Iterator[EditorBrowser]:
    """Contexts for one test (the stack is set up before the browser, see `real_editor_stack`); closed after."""
    found = EditorBrowser(browser, real_editor_stack)
    yield found
    found.close()
