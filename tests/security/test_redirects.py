"""Attack class: open redirects.

Every redirect the sidecar builds from input is attacked through the real Caddy with the shipped Caddyfile (local
mode): the `next` the sign-in page renders (the form's hidden field, and the first-admin form's `data-next` that
login.js navigates to), the `303` after a form sign-in (successful and failed), the `/auth/verify` redirect Caddy
passes on for a signed-out browser, the editor proxy's redirect to sign in, and the access-request review link's.
The hostile targets are the ones browsers turn into another host: tabs and newlines (which the WHATWG URL parser
deletes, so `/\\t/evil.example` becomes `//evil.example`), backslashes (read as `/`), doubled and encoded slashes,
schemes with and without slashes, `javascript:`, spaces, NULs, dot segments, and Unicode spaces and slashes.

Each Location and each rendered `next` is resolved the way a browser would: tabs and newlines removed, leading and
trailing C0 controls and spaces trimmed, `\\` read as `/` before the query, then `urljoin` against the site's
origin; the result must be on the site's own scheme and host. Two Chromium tests (Debian chromium, every request to
another host blocked and recorded) sign in, and create the first admin with the setup secret, from a sign-in page
opened with `next=/%09/evil.example/path`, and must end on the site itself.
"""

from __future__ import annotations

import hashlib
import html
import re
import secrets
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import SplitResult, urljoin, urlsplit, urlunsplit

import pytest
from playwright.sync_api import Browser, Page, Route, sync_playwright

from sidecar.bootstrap import bootstrap
from sidecar.processes import free_port
from sidecar.runtime import Services, run_with_services
from sidecar.settings import Settings
from tests import raw_http
from tests.browser_fixtures import CHROMIUM, CHROMIUM_ARGS
from tests.helpers import cheapen_bcrypt
from tests.processes_fixtures import Endpoint, Launch, child_env
from tests.raw_http import Reply
from tests.security.parallel_stacks import build_each, ready

JSON = "application/json"
BROWSER = "text/html,application/xhtml+xml,*/*;q=0.8"
FORM = "application/x-www-form-urlencoded"
OWNER, OWNER_PASSWORD = "admin", "owner-password-for-redirect-tests"
BOB, BOB_PASSWORD = "bob", "bob-password-for-redirect-tests"
FIRST_ADMIN, FIRST_ADMIN_PASSWORD = "root", "first-admin-password-for-redirects"
CLI = [sys.executable, "-m", "sidecar"]
REVIEW_LINKS = 3
# What a browser deletes anywhere in a URL, and what it trims from both ends (WHATWG URL standard, basic URL parser).
TAB_OR_NEWLINE = re.compile(r"[\t\n\r]")
C0_CONTROL_OR_SPACE = "".join(chr(code) for code in range(0x21))

# `next` values as an attacker writes them into a link's query string (or a form body): percent-encoded already.
HOSTILE_NEXT = [
    "/%09/evil.example/x",
    "/%0a/evil.example",
    "/%0d/evil.example",
    "/%0d%0a/evil.example",
    "%09//evil.example",
    "/%09%09/evil.example",
    "/%5cevil.example",
    "/%5c%5cevil.example",
    "%5c%5cevil.example",
    "/%09%5cevil.example",
    "/%5c%09evil.example",
    "//evil.example",
    "///evil.example",
    "/%2f/evil.example",
    "%2f%2fevil.example",
    "https:evil.example",
    "https://evil.example/x",
    "HTTPS:%2f%2fevil.example",
    "http:evil.example",
    "/.%2e/",
    "/.%2e/%2e%2e//evil.example",
    "javascript:alert(1)",
    "%20javascript:alert(1)",
    "/javascript:alert(1)",
    "/%20/evil.example",
    "/+/evil.example",
    "/%00/evil.example",
    "/%0b/evil.example",
    "/%1f/evil.example",
    "/%7f/evil.example",
    "/%E2%80%A8/evil",
    "/%C2%A0/evil.example",
    "/%E3%80%80/evil.example",
    "/%EF%BC%8F%EF%BC%8Fevil.example",
    "%EF%BC%8F%EF%BC%8Fevil.example",
    "/%E2%88%95evil.example",
    "/%E2%81%84evil.example",
    "/%EF%BC%BCevil.example",
    "/%EF%B9%A8evil.example",
    "/%2509/evil.example",
    "/%255c/evil.example",
]


# --- how a browser reads a URL ----------------------------------------------------------------------------------------


def as_browser_reads(value: str, base: str) -> SplitResult:
    """The URL a browser goes to for `value` on a page of `base` (for the parts that decide scheme and host)."""
    cleaned = TAB_OR_NEWLINE.sub("", value.strip(C0_CONTROL_OR_SPACE))
    cut = min([i for i in (cleaned.find("?"), cleaned.find("#")) if i >= 0] or [len(cleaned)])
    cleaned = cleaned[:cut].replace("\\", "/") + cleaned[cut:]  # special schemes read `\` as `/` before the query
    return urlsplit(urljoin(base + "/", cleaned))


def assert_stays_on_site(value: str, site: str) -> None:
    own = urlsplit(site)
    lands = as_browser_reads(value, site)
    assert (lands.scheme, lands.netloc) == (own.scheme, own.netloc), f"{value!r} takes a browser to {urlunsplit(lands)}"


# --- raw HTTP through Caddy -----------------------------------------------------------------------------------------


def send(
    endpoint: Endpoint,
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]] = (),
    *,
    body: bytes | None = None,
    accept: str = BROWSER,
) -> Reply:
    return raw_http.send(endpoint, target, headers, method=method, body=body, accept=accept)


def rendered_next(page: str, attribute: str) -> list[str]:
    """Every `next` the page carries: the hidden field's value, or the first-admin form's data-next."""
    if attribute == "hidden":
        found = re.findall(r'<input[^>]*name="next"[^>]*value="([^"]*)"', page)
    else:
        found = re.findall(r'data-next="([^"]*)"', page)
    return [html.unescape(value) for value in found]


# --- the stacks ---------------------------------------------------------------------------------------------------


@dataclass
class Stack:
    name: str
    data_dir: Path
    env: dict[str, str]
    caddy: Endpoint = field(default_factory=lambda: Endpoint("unset", 0))
    review_secrets: list[str] = field(default_factory=list)
    setup_secret: str = ""
    broken: str = ""  # why this stack could not be prepared or started (only its own tests fail then)

    @property
    def site(self) -> str:
        return self.caddy.url

    def sign_in_form(self, next_value: str, *, password: str = OWNER_PASSWORD, username: str = OWNER) -> Reply:
        """The sign-in form as a browser posts it (already form-encoded `next` inserted as is)."""
        body = f"username={username}&password={password}&next={next_value}".encode()
        headers = [("Content-Type", FORM), ("Origin", self.site)]
        return send(self.caddy, "POST", "/auth/login", headers, body=body)


def _env(data_dir: Path, **values: str) -> dict[str, str]:
    # Failed sign-ins are part of these attacks; the failure limits are tested elsewhere.
    return child_env(
        SIDECAR_MODE="local",
        SIDECAR_DATA_DIR=str(data_dir),
        SIDECAR_LOG_LEVEL="WARNING",
        SIDECAR_LOGIN_RATE_IP="10000/minute",
        SIDECAR_LOGIN_RATE_USER="10000/minute",
        **values,
    )


def _prepare_site(stack: Stack) -> None:
    """Bootstrapped (owner `admin`), viewer bob, and access requests with review links whose secrets we know."""
    settings = Settings(_env_file=None, data_dir=stack.data_dir, bootstrap_password=OWNER_PASSWORD)  # type: ignore[call-arg]

    async def add(services: Services) -> None:
        await services.users.add_user(BOB, ["vid_public"], BOB_PASSWORD, "test-setup")

    with pytest.MonkeyPatch.context() as patch:
        cheapen_bcrypt(patch)
        bootstrap(settings, out=lambda line: None)
        run_with_services(settings, add)
    now = time.time()
    db = sqlite3.connect(stack.data_dir / "sidecar.db")
    try:
        with db:
            for index in range(REVIEW_LINKS):
                cursor = db.execute(
                    "INSERT INTO access_requests(username, email, name, org, reason, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (f"asker{index}", f"asker{index}@example.org", "Asker", "Org", "please", now, now),
                )
                secret = secrets.token_urlsafe(32)
                db.execute(
                    "INSERT INTO review_links(secret_hash, request_id, recipient, created_at, expires_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (
                        hashlib.sha256(secret.encode()).hexdigest(),
                        cursor.lastrowid,
                        "admin@example.org",
                        now,
                        now + 3600,
                    ),
                )
                stack.review_secrets.append(secret)
    finally:
        db.close()


def _prepare_fresh(stack: Stack) -> None:
    done = subprocess.run(
        [*CLI, "bootstrap", "--setup-secret"],
        env=stack.env,
        cwd=stack.data_dir.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"bootstrap --setup-secret failed:\n{done.stdout}\n{done.stderr}"
    stack.setup_secret = (stack.data_dir / "setup_secret").read_text().strip()


def _serve(launch: Launch, start_caddy: Callable[..., Endpoint], stack: Stack) -> None:
    port = free_port()
    stack.env = {**stack.env, "SIDECAR_HOST": "127.0.0.1", "SIDECAR_PORT": str(port)}
    name = f"redirects-{stack.name}"
    launch(name, [*CLI, "serve"], stack.env, ready_url=f"http://127.0.0.1:{port}/healthz")
    sidecar = Endpoint(name, port)
    stack.caddy = start_caddy(f"caddy-{name}", sidecar=sidecar, auth=sidecar, auth_uri="/auth/verify")


@pytest.fixture(scope="module")
def stacks(
    launch: Launch, start_caddy: Callable[..., Endpoint], process_dir: Path, echo_editor: Endpoint
) -> dict[str, Stack]:
    """A bootstrapped site (with the echo stand-in as its editor), and two fresh data dirs with a setup secret: one
    whose first-admin page is only read, one whose first admin Chromium creates. Started in parallel."""
    root = process_dir / "redirects"
    root.mkdir(exist_ok=True)
    found = {
        name: Stack(name, root / name, _env(root / name, **extra))
        for name, extra in (
            ("site", {"SIDECAR_EDITOR_URL": echo_editor.url}),
            ("first-page", {}),
            ("first-browser", {}),
        )
    }

    try:
        _prepare_site(found["site"])  # in process, on this thread (it runs asyncio)
    except Exception as error:  # noqa: BLE001 (reported by that stack's own tests)
        found["site"].broken = f"{type(error).__name__}: {error}"

    def build(stack: Stack) -> None:
        if stack.name != "site":
            _prepare_fresh(stack)
        _serve(launch, start_caddy, stack)

    build_each(found, build)
    return found


@pytest.fixture(scope="module")
def site(stacks: dict[str, Stack]) -> Stack:
    return ready(stacks, "site")


def follow_on_site(stack: Stack, reply: Reply, cookie: str | None = None, hops: int = 4) -> list[str]:
    """Follow a redirect chain inside the site, checking every Location and every `next` a page renders on the
    way; the Locations seen."""
    seen: list[str] = []
    for _ in range(hops):
        if reply.status in (301, 302, 303, 307, 308):
            location = reply.header("location")
            assert location is not None, reply.headers
            assert_stays_on_site(location, stack.site)
            seen.append(location)
            target = urlsplit(urljoin(stack.site + "/", location))
            path = urlunsplit(("", "", target.path, target.query, ""))
            reply = send(stack.caddy, "GET", path, [("Cookie", cookie)] if cookie else [])
            continue
        if reply.status == 200 and "text/html" in (reply.header("content-type") or ""):
            for value in rendered_next(reply.text, "hidden") + rendered_next(reply.text, "data"):
                assert_stays_on_site(value, stack.site)
        break
    return seen


# --- the sign-in page and the form sign-in ------------------------------------------------------------------------


@pytest.mark.caddy
@pytest.mark.parametrize("hostile", HOSTILE_NEXT)
def test_sign_in_page_never_renders_an_off_site_next(site: Stack, hostile: str) -> None:
    reply = send(site.caddy, "GET", f"/auth/login?next={hostile}")
    assert reply.status == 200, reply.status
    values = rendered_next(reply.text, "hidden")
    assert len(values) == 1, reply.text
    assert_stays_on_site(values[0], site.site)


@pytest.mark.caddy
@pytest.mark.parametrize("hostile", ["/\\evil.example", "/\\\\evil.example", "/%5C/evil.example", "//\\evil.example"])
def test_sign_in_page_with_a_raw_backslash_in_the_link_never_renders_an_off_site_next(
    site: Stack, hostile: str
) -> None:
    reply = send(site.caddy, "GET", f"/auth/login?next={hostile}")
    assert reply.status in (200, 400), reply.status
    if reply.status == 200:
        for value in rendered_next(reply.text, "hidden"):
            assert_stays_on_site(value, site.site)


@pytest.mark.caddy
@pytest.mark.parametrize("hostile", [*HOSTILE_NEXT, "/\\evil.example", "/ /evil.example", "\t//evil.example"])
def test_form_sign_in_never_redirects_off_site(site: Stack, hostile: str) -> None:
    reply = site.sign_in_form(hostile)
    assert reply.status == 303, (reply.status, reply.text[:300])
    cookie = reply.cookie()
    assert cookie is not None
    follow_on_site(site, reply, cookie)


@pytest.mark.caddy
@pytest.mark.parametrize("hostile", ["/%09/evil.example/x", "/%5cevil.example", "//evil.example", "https:evil.example"])
def test_failed_form_sign_in_never_renders_an_off_site_next(site: Stack, hostile: str) -> None:
    reply = site.sign_in_form(hostile, password="not-the-password")
    assert reply.status == 400, reply.status
    values = rendered_next(reply.text, "hidden")
    assert len(values) == 1, reply.text
    assert_stays_on_site(values[0], site.site)


@pytest.mark.caddy
@pytest.mark.parametrize("hostile", HOSTILE_NEXT)
def test_first_admin_page_never_renders_an_off_site_next(stacks: dict[str, Stack], hostile: str) -> None:
    stack = ready(stacks, "first-page")
    reply = send(stack.caddy, "GET", f"/auth/login?next={hostile}")
    assert reply.status == 200, reply.status
    values = rendered_next(reply.text, "data")
    assert len(values) == 1, "the first-admin step is not offered on a fresh data dir with a setup secret"
    assert_stays_on_site(values[0], stack.site)


# --- redirects to sign in ---------------------------------------------------------------------------------------------

SIGNED_OUT_TARGETS = [
    "//evil.example/x",
    "///evil.example",
    "/\\evil.example",
    "/%5cevil.example",
    "/%5C%5Cevil.example",
    "/%2f/evil.example",
    "/%2F%2Fevil.example",
    "/%09/evil.example/x",
    "/%0a/evil.example",
    "//%09/evil.example",
    "/.%2e/evil.example",
    "/%E2%80%A8/evil",
    "/%EF%BC%8F%EF%BC%8Fevil.example",
    "/streams?next=//evil.example",
    "/streams?%0d%0aLocation:%20//evil.example",
    "/users?x=/%09/evil.example",
    "/?//evil.example",
    "/;//evil.example",
    "//evil.example/%2e%2e",
]


@pytest.mark.caddy
@pytest.mark.parametrize("target", SIGNED_OUT_TARGETS)
def test_signed_out_redirect_to_sign_in_never_points_off_site(site: Stack, target: str) -> None:
    """Caddy asks /auth/verify, which sends a signed-out browser to sign in with `next` built from the URI."""
    reply = send(site.caddy, "GET", target)
    assert reply.status in (302, 303, 400, 404), reply.status
    seen = follow_on_site(site, reply)
    if reply.status in (302, 303):
        assert seen and seen[0].startswith("/auth/login?next="), seen


@pytest.mark.caddy
@pytest.mark.parametrize("spelling", ["X-Forwarded-Uri", "x-forwarded-uri", "X-FORWARDED-URI"])
@pytest.mark.parametrize("uri", ["/\t/evil.example", "//evil.example", "/\\evil.example", "https://evil.example/"])
def test_spoofed_forwarded_uri_on_public_verify_never_points_off_site(site: Stack, spelling: str, uri: str) -> None:
    reply = send(site.caddy, "GET", "/auth/verify", [(spelling, uri)])
    assert reply.status == 302, reply.status
    assert follow_on_site(site, reply)[0] == "/auth/login?next=/"


EDITOR_PROXY_TARGETS = [
    "/AUTH/x?next=//evil.example",
    "/Auth/x?next=/%09/evil.example",
    "/SHARE//evil.example",
    "/Share/%2f%2fevil.example",
    "/OVERLAY/%5cevil.example",
    "/Request-Access/%09x",
    "/HEALTHZ?/%09/evil.example",
    "/VERSION?//evil.example",
]


@pytest.mark.caddy
def test_precondition_a_public_prefix_in_other_case_reaches_the_editor_proxy_signed_out(site: Stack) -> None:
    """Caddy's public matcher ignores case and the sidecar's routes do not: `/AUTH/x` is the editor proxy's, which
    sends a signed-out browser to sign in. This is how the proxy's redirect is reached through Caddy."""
    reply = send(site.caddy, "GET", "/AUTH/x?y=1")
    assert reply.status == 302, reply.status
    assert reply.header("location") == "/auth/login?next=/AUTH/x%3Fy%3D1", reply.header("location")


@pytest.mark.caddy
@pytest.mark.parametrize("target", EDITOR_PROXY_TARGETS)
def test_editor_proxy_redirect_to_sign_in_never_points_off_site(site: Stack, target: str) -> None:
    reply = send(site.caddy, "GET", target)
    assert reply.status in (302, 303, 400, 404), reply.status
    follow_on_site(site, reply)


@pytest.mark.caddy
@pytest.mark.parametrize(
    ("index", "suffix"), [(0, ""), (1, "?next=//evil.example"), (2, "?next=/%09/evil.example&x=%5c%5cevil.example")]
)
def test_review_link_redirect_stays_on_site_through_sign_in(site: Stack, index: int, suffix: str) -> None:
    """A signed-out admin opens the review link from the mail, signs in and lands on the request: every hop stays
    on the site, whatever was appended to the link."""
    secret = site.review_secrets[index]
    reply = send(site.caddy, "GET", f"/request-access/review/{secret}{suffix}")
    assert reply.status == 302, reply.status
    seen = follow_on_site(site, reply)
    assert seen == [f"/auth/login?next=/request-access/review/{secret}"], seen
    signed_in = site.sign_in_form(f"/request-access/review/{secret}")
    assert signed_in.status == 303 and signed_in.header("location") == f"/request-access/review/{secret}"
    chain = follow_on_site(site, signed_in, signed_in.cookie())
    assert chain[-1].startswith("/users#request-"), chain


# --- in Chromium ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium(stacks: dict[str, Stack]) -> Iterator[Browser]:
    """Debian's chromium, headless; started after the stacks (their setup runs asyncio, which Playwright's sync API
    forbids while it is open)."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class Guarded:
    """A page whose every request to another host is blocked and recorded."""

    page: Page
    foreign: list[str]
    navigated: list[str]


@pytest.fixture
def guarded(chromium: Browser) -> Iterator[Callable[[str], Guarded]]:
    contexts = []

    def open_page(site: str) -> Guarded:
        own = urlsplit(site).netloc
        context = chromium.new_context()
        context.set_default_timeout(15_000)
        contexts.append(context)
        foreign: list[str] = []

        def gate(route: Route) -> None:
            if urlsplit(route.request.url).netloc == own:
                route.continue_()
            else:
                foreign.append(route.request.url)
                route.abort()

        context.route("**/*", gate)
        page = context.new_page()
        navigated: list[str] = []
        page.on("framenavigated", lambda frame: navigated.append(frame.url) if frame == page.main_frame else None)
        return Guarded(page, foreign, navigated)

    yield open_page
    for context in contexts:
        context.close()


def wait_to_leave_sign_in(guarded: Guarded) -> None:
    """Until the page has left /auth/login or tried to reach another host (polling, no timing assertion)."""
    for _ in range(150):
        if guarded.foreign or "/auth/login" not in guarded.page.url:
            break
        guarded.page.wait_for_timeout(100)
    guarded.page.wait_for_load_state()


def assert_ended_on_site(guarded: Guarded, site: str) -> None:
    assert guarded.foreign == [], f"the browser tried to leave the site: {guarded.foreign}"
    assert urlsplit(guarded.page.url).netloc == urlsplit(site).netloc, guarded.page.url
    assert all(url.startswith(site) for url in guarded.navigated if url != "about:blank"), guarded.navigated


@pytest.mark.caddy
@pytest.mark.browser
def test_first_admin_form_with_hostile_next_lands_on_this_site_in_chromium(
    stacks: dict[str, Stack], guarded: Callable[[str], Guarded]
) -> None:
    stack = ready(stacks, "first-browser")
    tab = guarded(stack.site)
    tab.page.goto(f"{stack.site}/auth/login?next=/%09/evil.example/path")
    form = tab.page.locator("#first-admin")
    form.get_by_label("Setup secret").fill(stack.setup_secret)
    form.get_by_label("Username").fill(FIRST_ADMIN)
    form.get_by_label("New password").fill(FIRST_ADMIN_PASSWORD)
    form.get_by_role("button").click()
    wait_to_leave_sign_in(tab)
    assert_ended_on_site(tab, stack.site)
    me = tab.page.request.get(f"{stack.site}/api/v1/me")
    assert me.status == 200 and (me.json()["username"], me.json()["role"]) == (FIRST_ADMIN, "admin")


@pytest.mark.caddy
@pytest.mark.browser
@pytest.mark.parametrize(
    "hostile", ["/%09/evil.example/path", "/%5cevil.example", "//evil.example", "/%0a/evil.example"]
)
def test_sign_in_with_hostile_next_lands_on_this_site_in_chromium(
    site: Stack, guarded: Callable[[str], Guarded], hostile: str
) -> None:
    tab = guarded(site.site)
    tab.page.goto(f"{site.site}/auth/login?next={hostile}")
    tab.page.get_by_label("Username").fill(OWNER)
    tab.page.get_by_label("Password").fill(OWNER_PASSWORD)
    tab.page.get_by_role("button", name="Sign in").click()
    wait_to_leave_sign_in(tab)
    assert_ended_on_site(tab, site.site)
    me = tab.page.request.get(f"{site.site}/api/v1/me")
    assert me.status == 200 and me.json()["username"] == OWNER
