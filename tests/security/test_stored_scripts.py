"""Stored scripts (stored XSS) in the browser.

An outsider plants markup and script in every value the sidecar later shows to an admin or a viewer: the fields of
the public access-request form, stream path names MediaMTX reports (a publisher picks them), source names and URLs
in MediaMTX's configuration, group names (created over the API, or in Authentik by whoever manages it there), the
usernames, names and emails of directory users, share-link creators, audit details, `next=` parameters and the paths
and query strings of error pages. Then a real chromium (Playwright, through the real Caddy with the shipped
Caddyfile) opens every page that shows them: /users (people, groups, access requests), /streams (admin and viewer:
toggles, rules, sources, share links, "Preview as"), /audit, /request-access, the set-password page, a share page,
the sign-in page, error pages, and the editor with the overlay.

Every payload calls `__x(n)` (a function the test exposes in every frame), `alert()`, sets `document.title` to
"XSS" or `window.__xss`, or carries a `--xss` CSS custom property. After each page settles the test checks that
nothing was called, no dialog opened, no element the payloads would create exists (no `img`/`svg`/`iframe`, no
`on*` attribute, no inline script, no `javascript:` URL, no `--xss` style), that the server-rendered HTML holds no
raw payload markup, and that the payload text is shown literally (so the value was really rendered).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Dialog, Page, Response, expect

from sidecar.processes import free_port, stop_process
from sidecar.runtime import run_with_services
from tests.browser_authentik_fixtures import AuthentikStack, signed_in_as
from tests.browser_fixtures import CHROMIUM, sign_in
from tests.fake_mediamtx import FakeMediaMTX, create_fake_mediamtx
from tests.helpers import ADMIN_PASSWORD, API_KEY, bootstrapped_settings, cheapen_bcrypt
from tests.outpost_stand_in import COOKIE, PEOPLE
from tests.processes_fixtures import VIEWER_PASSWORD, VIEWER_USER, Endpoint, Launch, ServedApp, serve_sidecar

pytestmark = [
    pytest.mark.browser,
    pytest.mark.caddy,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} is missing: `make browser` installs it"),
]

# --- payloads -------------------------------------------------------------------------------------------------------

# Group names the API accepts (prefix, at most 80 characters, no `|`, no `/`, no control characters).
G_IMG = "vid_<img src=x onerror=__x(1)>"
G_SVG = 'vid_"><svg onload=__x(2)>'
G_SCRIPT = "vid_<script>__x(3)<!--"
G_TPL = "vid_{{7*7}}{%raw%}${7*7}#{7*7}"
G_ATTR = "vid_' autofocus onfocus='__x(4)' x='"
G_CSS = 'vid_" style="--xss:1;display:none'
G_TITLE = "vid_<img src=x onerror=\"document.title='XSS'\">"
HOSTILE_GROUPS = (G_IMG, G_SVG, G_SCRIPT, G_TPL, G_ATTR, G_CSS, G_TITLE)
BROAD_GROUPS = ["vid_public", G_IMG, G_SVG, G_SCRIPT]  # live/**
EXACT_GROUPS = [G_TPL, G_ATTR, G_CSS, G_TITLE]  # live/cam2
UI_GROUP = "vid_<iframe src=javascript:__x(5)>"  # typed into the "New group" form

# Stream paths the fake MediaMTX reports as live. The sidecar refuses the hostile ones as malformed paths;
# `javascript:__x` is a valid path name and is shown (to admins: no rule covers it).
CAM1, CAM2 = "live/cam1", "live/cam2"
JS_PATH = "javascript:__x"
HOSTILE_PATHS = (
    "live/<img src=x onerror=__x(11)>",
    'live/"><svg onload=__x(12)>',
    "</script><script>__x(13)</script>",
    "live/{{7*7}}",
    'live/" autofocus onfocus="__x(14)',
)

# Path configurations (stream sources): two seeded as if in mediamtx.yml, one added through the sidecar's API.
SRC_NAME, SRC_URL = "<img src=x onerror=__x(21)>", 'rtsp://cam.example/"><svg onload=__x(22)>'
JS_SRC_NAME, JS_SRC_URL = "live/js-source", "javascript:__x(23)"
API_SRC_NAME, API_SRC_URL = "live/hostile-host", "rtsp://<svg onload=__x(24)>/live"
SOURCES = {SRC_NAME: SRC_URL, JS_SRC_NAME: JS_SRC_URL, API_SRC_NAME: API_SRC_URL}

# Access requests sent anonymously through the public form (no SMTP: they go straight to the admins' queue).
MALLORY = {  # approved: becomes a directory user with this name and email
    "name": "<img src=x onerror=__x(31)> Mallory",
    "username": "mallory",
    "email": "{{7*7}}'mallory@evil.example",
    "org": '" autofocus onfocus="__x(32)',
    "reason": "</textarea></script><script>__x(33)</script>\n{{7*7}} {%raw%} ${7*7}",
    "group": G_SVG,
}
TRUDY = {  # rejected, with a message
    "name": "Trudy <i onmouseover=__x(34)>",  # (bidi controls such as U+202E are refused in one-line fields)
    "username": "trudy",
    "email": "trudy@evil.example",
    "org": "</script><script>window.__xss=(window.__xss||0)+1</script>",
    "reason": "<svg onload=__x(35)>\n<style>:root{--xss:1}body{display:none}</style>",
    "group": G_SCRIPT,
}
REJECTION = "<img src=x onerror=__x(36)>"
EVE = {  # left pending
    "name": "<svg onload=__x(37)>",
    "username": "eve",
    "email": "eve+{{7*7}}@evil.example",
    "org": "javascript:__x(38)",
    "reason": '" style="--xss:1;display:none',
    "group": G_IMG,
}
NINA = {  # typed into the form in the browser
    "name": '" autofocus onfocus="__x(41)" x="',
    "username": "nina",
    "email": "nina{{7*7}}@evil.example",
    "org": "<img src=x onerror=alert(42)>",
    "reason": "</textarea><svg onload=__x(43)>\n<script>document.title='XSS'</script>",
    "group": G_IMG,
}
BAD_USERNAME = "nina<svg onload=__x(44)>"  # refused by the server: the form comes back with every value

# Typed by an admin into the page's own forms: the error messages repeat them.
PREVIEW_USER = "<img src=x onerror=__x(61)>"
PREVIEW_GROUPS = "vid_public|<svg onload=__x(62)>"
RULE_PATTERN = "live/<img src=x onerror=__x(63)>"

NEXT_MARKUP = '/"><svg/onload=__x(71)>'  # no whitespace: the sign-in page refuses any in `next`
LOGIN_USERNAME = "<img src=x onerror=__x(72)>"

# Authentik mode: people and groups in the (fake) Authentik directory; the first three can also sign in.
AK_ADMIN = "<svg/onload=__x(101)>"
AK_VIEWER = "<img/src/onerror=__x(102)>"
AK_NOBODY = "{{7*7}}<svg/onload=__x(103)>"
AK_LISTED = '"><svg onload=__x(104)>'
G_AK = "vid_<svg onload=__x(105)>"
TAK_HOSTILE = "tak_<img src=x onerror=__x(106)>"
AK_USERS: dict[str, tuple[tuple[str, ...], str, str]] = {  # username → (groups, name, email)
    AK_ADMIN: (("vid_admin",), "<img src=x onerror=__x(107)>", "ak-admin@evil.example"),
    AK_VIEWER: (("vid_public", G_AK), '" autofocus onfocus="__x(108)', "{{7*7}}@evil.example"),
    AK_NOBODY: (("tak_users",), "</script><script>__x(109)</script>", "nobody@evil.example"),
    AK_LISTED: (("vid_public", TAK_HOSTILE), "Listed \u202egnp.exe\u202c", 'x"><svg onload=__x(110)>@evil.example'),
}
AK_SIGN_IN = (AK_ADMIN, AK_VIEWER, AK_NOBODY)

# Markup that must never appear unescaped in an HTML page the server renders.
RAW_MARKUP = (
    "<img src=x",
    "<img/src",
    "<svg onload",
    "<svg/onload",
    "<script>__x",
    "<script>window",
    "<script>document",
    "</textarea><svg",
    "</textarea></script",
    "<style>:root",
    "<iframe",
    'onfocus="__x',
    "onfocus='__x",
    'style="--xss',
)

# --- detecting execution ------------------------------------------------------------------------------------------

SETTLE_MS = 200  # lets a planted onerror/onload run before the page is examined (the DOM scan needs no wait)
SCAN = r"""(strict) => {
  const marked = /__x|xss|alert/i;
  const bad = [];
  for (const node of document.querySelectorAll("*")) {
    for (const attr of node.attributes) {
      const name = attr.name.toLowerCase();
      if (name.startsWith("on") && (strict || marked.test(attr.value))) bad.push(`${node.localName} ${name}`);
      if (name === "style" && attr.value.includes("--xss")) bad.push(`${node.localName} style`);
      const urlish = ["href", "src", "action", "formaction", "srcdoc", "xlink:href"].includes(name);
      if (urlish && /^\s*javascript:|__x/i.test(attr.value)) bad.push(`${node.localName} ${name}=${attr.value}`);
    }
  }
  const created = "img, svg, iframe, frame, object, embed, base, math, meta[http-equiv]";
  // Off strict (a page of the editor's own, with its images and scripts), only what carries a payload's marks.
  const planted = /__x|--xss|title\s*=\s*['"]XSS/i;
  for (const node of document.querySelectorAll(created)) {
    // The overlay's own drawn icon (no event attributes; the attribute scan above covers it too) is not planted.
    if (node.localName === "svg" && node.classList.contains("sidecar-icon")) continue;
    if (strict || planted.test(node.outerHTML)) bad.push(`<${node.localName}>`);
  }
  for (const node of document.querySelectorAll("script:not([src])")) {
    if (strict ? true : planted.test(node.textContent)) bad.push(`inline script ${node.textContent.slice(0, 60)}`);
  }
  for (const node of document.querySelectorAll("style")) {
    if (node.textContent.includes("--xss")) bad.push("<style> with --xss");
  }
  return { bad, title: document.title, count: window.__xss || 0 };
}"""


@dataclass
class Visitor:
    """One browser context (one role) with a page; `hits` records every payload that ran, in any frame."""

    context: BrowserContext
    page: Page
    hits: list[str] = field(default_factory=list)

    def begin(self) -> Page:
        self.hits.clear()
        return self.page

    def open(self, url: str) -> Response:
        response = self.page.goto(url)
        assert response is not None, url
        return response


def visitor(browser: Browser, width: int = 1200) -> Visitor:
    context = browser.new_context(viewport={"width": width, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    found = Visitor(context, page)
    context.expose_function("__x", lambda *args: found.hits.append(f"__x{args}"))

    def on_dialog(dialog: Dialog) -> None:
        found.hits.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    return found


def assert_inert(who: Visitor, *, strict: bool = True) -> None:
    """Nothing planted ran, and no element or attribute a payload would create is in the document."""
    who.page.wait_for_timeout(SETTLE_MS)
    scan: dict[str, Any] = who.page.evaluate(SCAN, strict)
    where = who.page.url
    assert scan["bad"] == [], f"planted markup was parsed on {where}: {scan['bad']}"
    assert "XSS" not in scan["title"], f"a payload set the title on {where}"
    assert scan["count"] == 0, f"a payload set window.__xss on {where}"
    assert who.hits == [], f"planted script ran on {where}: {who.hits}"


def assert_no_raw_markup(response: Response) -> None:
    """The server escaped every value it put into this HTML page."""
    if "text/html" not in response.headers.get("content-type", ""):
        return
    body = response.text()
    raw = [marker for marker in RAW_MARKUP if marker in body]
    assert not raw, f"{response.url} holds unescaped markup {raw}"


# --- the stack: fake MediaMTX, sidecar (local mode), Caddy ----------------------------------------------------------


@pytest.fixture(scope="module")
def fake_mediamtx_http() -> Iterator[tuple[FakeMediaMTX, str]]:
    """This module's own fake MediaMTX (it overrides the session one, also for `authentik_stack`): two cameras,
    the hostile paths a publisher could name, and path configurations with hostile names and URLs."""
    fake = create_fake_mediamtx()
    for path in (CAM1, CAM2, JS_PATH, *HOSTILE_PATHS):
        fake.add_path(path, ready=True)
    fake.add_config_path(SRC_NAME, source=SRC_URL)
    fake.add_config_path(JS_SRC_NAME, source=JS_SRC_URL)
    with ServedApp(fake.app) as served:
        yield fake, served.url


@dataclass(frozen=True)
class LocalStack:
    site: str
    set_password_link: str  # mallory's, from the approval (no SMTP: the admin hands it over)


def _ok(response: httpx.Response) -> Any:
    assert response.status_code in (200, 201), f"{response.request.method} {response.request.url}: {response.text}"
    return response.json()


def submit_request(site: str, values: dict[str, str]) -> None:
    """What an anonymous outsider does: fetch the public form for its signed token, post it back."""
    with httpx.Client(base_url=site, timeout=15) as client:
        form = client.get("/request-access")
        token = re.search(r'name="form_token" value="([^"]+)"', form.text)
        assert token, "the form page has no form_token"
        answer = client.post(
            "/request-access",
            data={**values, "form_token": token.group(1), "website": ""},
            headers={"Origin": site},
        )
    assert answer.status_code == 200 and "Request received" in answer.text, answer.text


def _seed_local(site: str) -> str:
    with httpx.Client(base_url=site, headers={"X-API-Key": API_KEY}, timeout=15) as api:
        for group in HOSTILE_GROUPS:
            _ok(api.post("/api/v1/groups", json={"name": group}))
        _ok(api.put(f"/api/v1/users/{VIEWER_USER}/groups/{quote(G_IMG, safe='')}"))
        _ok(api.put("/api/v1/rules", json={"pattern": "live/**", "groups": BROAD_GROUPS}))
        _ok(api.put("/api/v1/rules", json={"pattern": CAM2, "groups": EXACT_GROUPS}))
        _ok(api.post("/api/v1/sources", json={"name": API_SRC_NAME, "source": API_SRC_URL}))
        for values in (MALLORY, TRUDY, EVE):
            submit_request(site, values)
        ids = {item["username"]: item["id"] for item in _ok(api.get("/api/v1/access-requests"))["requests"]}
        approved = _ok(
            api.post(f"/api/v1/access-requests/{ids['mallory']}/approve", json={"groups": ["vid_public", G_IMG]})
        )
        _ok(api.post(f"/api/v1/access-requests/{ids['trudy']}/reject", json={"message": REJECTION}))
    link = approved.get("set_password_link")
    assert isinstance(link, str) and "/request-access/set-password/" in link, approved
    return link


def _prepare_data_dir(data_dir: Path, errors: list[BaseException]) -> None:
    """`sidecar bootstrap` and `sidecar users add bob`, in-process with cheap bcrypt hashes (checking one costs
    almost a second on the slow machines otherwise). In a thread of its own: the services run their own event
    loop, which must not meet the one Playwright keeps open in the main thread."""
    try:
        settings = bootstrapped_settings(data_dir, mode="local")
        with pytest.MonkeyPatch.context() as patch:
            cheapen_bcrypt(patch)
            run_with_services(
                settings, lambda services: services.users.add_user(VIEWER_USER, ["vid_public"], VIEWER_PASSWORD, "test")
            )
    except BaseException as error:  # reported by the fixture in the main thread
        errors.append(error)


@pytest.fixture(scope="module")
def local_stack(
    launch: Launch,
    start_caddy: Any,
    echo_editor: Endpoint,
    process_dir: Path,
    fake_mediamtx_http: tuple[FakeMediaMTX, str],
) -> Iterator[LocalStack]:
    """A bootstrapped local-mode sidecar (admin; bob in vid_public) behind the shipped Caddyfile, then seeded
    with hostile groups, rules, a source and access requests, through Caddy like anyone else would."""
    _, fake_url = fake_mediamtx_http
    data_dir = process_dir / "stored-scripts-local"
    prepare = threading.Thread(target=_prepare_data_dir, args=(data_dir, errors := []))
    prepare.start()
    prepare.join(60)
    assert not prepare.is_alive() and not errors, f"bootstrap failed: {errors}"
    sidecar, proc = serve_sidecar(
        launch,
        "sidecar-stored-scripts",
        data_dir,
        api_key=API_KEY,
        mediamtx_api_url=fake_url,
        hls_url=f"http://127.0.0.1:{free_port()}",
        editor_url=echo_editor.url,
    )
    caddy = start_caddy("caddy-stored-scripts", sidecar=sidecar, auth=sidecar, auth_uri="/auth/verify")
    link = _seed_local(caddy.url)
    yield LocalStack(site=caddy.url, set_password_link=link)
    stop_process(proc)


# --- one browser context per role -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def anonymous(browser: Browser, local_stack: LocalStack) -> Iterator[Visitor]:
    found = visitor(browser)
    yield found
    found.context.close()


@pytest.fixture(scope="module")
def local_admin(browser: Browser, local_stack: LocalStack) -> Iterator[Visitor]:
    found = visitor(browser)
    sign_in(found.page, local_stack.site, "admin", ADMIN_PASSWORD, target="/users")
    yield found
    found.context.close()


@pytest.fixture(scope="module")
def local_viewer(browser: Browser, local_stack: LocalStack) -> Iterator[Visitor]:
    found = visitor(browser)
    sign_in(found.page, local_stack.site, VIEWER_USER, VIEWER_PASSWORD)
    yield found
    found.context.close()


# --- helpers for the pages ------------------------------------------------------------------------------------------

FORM_VALUES = """() => Object.fromEntries(
  [...document.querySelectorAll('form[action="/request-access"] [name]')].map((node) => [node.name, node.value]))"""


def fill_request(page: Page, values: dict[str, str]) -> None:
    page.get_by_label("Full name").fill(values["name"])
    page.get_by_label("Username").fill(values["username"])
    page.get_by_label("Email").fill(values["email"])
    page.get_by_label("Organisation or unit").fill(values["org"])
    page.get_by_label("Streams you need").select_option(values["group"])
    page.get_by_label("Reason").fill(values["reason"])


def send_request_form(page: Page) -> Response:
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Send request").click()
    return navigation.value


def assert_echoed(page: Page, values: dict[str, str]) -> None:
    shown = page.evaluate(FORM_VALUES)
    for key in ("name", "username", "email", "org", "reason", "group"):
        assert shown[key] == values[key], f"{key}: {shown[key]!r} != {values[key]!r}"


def stream(page: Page, path: str) -> Any:
    return page.locator(f'#stream-list li.stream[data-path="{path}"]')


def shown_paths(page: Page) -> set[str]:
    paths: list[str] = page.locator("#stream-list li.stream").evaluate_all("nodes => nodes.map((n) => n.dataset.path)")
    return set(paths)


# --- local mode: the public form ------------------------------------------------------------------------------------


def test_request_access_form_shows_hostile_group_names_and_echoes_hostile_values_as_text(
    local_stack: LocalStack, anonymous: Visitor
) -> None:
    site = local_stack.site
    page = anonymous.begin()

    first = anonymous.open(site + "/request-access")
    assert_no_raw_markup(first)
    options = page.locator('select[name="group"] option').evaluate_all(
        "nodes => nodes.map((n) => [n.value, n.textContent])"
    )
    for group in HOSTILE_GROUPS:
        assert [group, group] in options, f"{group!r} is not offered literally: {options}"
    assert_inert(anonymous)

    # Refused by the server (a username with markup; the browser's own check switched off): the page comes back
    # with every value in the form, where an unescaped quote would break out of the attribute or the textarea.
    refused = {**NINA, "username": BAD_USERNAME}
    fill_request(page, refused)
    page.locator('form[action="/request-access"]').evaluate("form => { form.noValidate = true; }")
    answer = send_request_form(page)
    assert answer.status == 400
    assert_no_raw_markup(answer)
    expect(page.get_by_role("alert")).to_contain_text("username")
    assert_echoed(page, refused)
    assert_inert(anonymous)

    # Refused for a forged form token: the values come back the same way.
    page.get_by_label("Username").fill(NINA["username"])
    page.locator('input[name="form_token"]').evaluate("node => { node.value = 'forged'; }")
    answer = send_request_form(page)
    assert answer.status == 403
    assert_no_raw_markup(answer)
    assert_echoed(page, NINA)
    assert_inert(anonymous)

    # Accepted, and stored exactly as typed.
    anonymous.open(site + "/request-access")
    fill_request(page, NINA)
    done = send_request_form(page)
    assert done.status == 200
    expect(page.get_by_role("heading", name="Request received")).to_be_visible()
    assert_inert(anonymous)
    with httpx.Client(base_url=site, headers={"X-API-Key": API_KEY}, timeout=15) as api:
        stored = {item["username"]: item for item in _ok(api.get("/api/v1/access-requests"))["requests"]}
    nina = stored["nina"]
    assert (nina["name"], nina["email"], nina["org"], nina["reason"], nina["requested_group"]) == (
        NINA["name"],
        NINA["email"],
        NINA["org"],
        NINA["reason"].replace("\n", "\r\n"),  # a browser submits a textarea's newlines as CRLF
        NINA["group"],
    )


# --- local mode: the admin's pages ----------------------------------------------------------------------------------

USERS_PAGE = """() => {
  const text = (node) => (node ? node.textContent : null);
  const card = (li) => ({
    username: li.dataset.username,
    status: li.dataset.status,
    name: text(li.querySelector(".request-name")),
    facts: [...li.querySelectorAll(".request-facts dt")].map((dt) => [dt.textContent, text(dt.nextElementSibling)]),
    reason: text(li.querySelector(".request-reason")),
    groups: [...li.querySelectorAll("input.request-group")].map((box) => [box.dataset.group, box.checked]),
    labels: [...li.querySelectorAll("label.toggle span")].map(text),
  });
  return {
    pending: [...document.querySelectorAll("#request-list li.request-card")].map(card),
    decided: [...document.querySelectorAll("#decided-list li.request-card")].map(card),
    people: [...document.querySelectorAll("#user-list li.user-card")].map((li) => ({
      username: li.dataset.username,
      heading: text(li.querySelector(".user-name")),
      facts: text(li.querySelector(".user-facts")),
      toggles: [...li.querySelectorAll("input.group-toggle")].map((box) => [box.dataset.group, box.checked]),
      labels: [...li.querySelectorAll("label.toggle span")].map(text),
    })),
    groups: [...document.querySelectorAll("#groups-body tr")].map((tr) =>
      [tr.dataset.group, text(tr.querySelector("code"))]),
  };
}"""


def open_users_page(who: Visitor, site: str, expected_groups: int) -> dict[str, Any]:
    response = who.open(site + "/users")
    assert response.status == 200
    assert_no_raw_markup(response)
    who.page.wait_for_function(
        "n => document.querySelectorAll('#groups-body tr').length >= n"
        " && document.querySelectorAll('#user-list li.user-card').length > 0"
        " && document.getElementById('requests-loading').hidden",
        arg=expected_groups,
    )
    shown: dict[str, Any] = who.page.evaluate(USERS_PAGE)
    return shown


def facts_of(card: dict[str, Any]) -> dict[str, str]:
    return {term: value for term, value in card["facts"]}


def shows_email(text: str, email: str) -> bool:
    """The address exactly as typed, alone or followed by whether the requester confirmed it."""
    return text == email or text.startswith(email + " (")


def test_users_page_shows_planted_requests_people_and_groups_as_text(
    local_stack: LocalStack, local_admin: Visitor
) -> None:
    page = local_admin.begin()
    shown = open_users_page(local_admin, local_stack.site, expected_groups=3 + len(HOSTILE_GROUPS))

    # Groups panel: every hostile name, as the row's data attribute and as text.
    for group in HOSTILE_GROUPS:
        assert [group, group] in shown["groups"], f"{group!r} not listed literally: {shown['groups']}"

    # The pending request: every field as text; the requested group ticked; all groups offered with their names.
    eve = next(card for card in shown["pending"] if card["username"] == "eve")
    assert eve["name"] == EVE["name"]
    assert eve["reason"] == EVE["reason"]
    facts = facts_of(eve)
    assert shows_email(facts["Email"], EVE["email"])
    assert (facts["Organisation"], facts["Requested group"]) == (EVE["org"], EVE["group"])
    assert [G_IMG, True] in eve["groups"]
    assert {group for group, _ in eve["groups"]} >= set(HOSTILE_GROUPS)
    assert set(eve["labels"]) >= set(HOSTILE_GROUPS)

    # Decided requests: the approved one and the rejected one with the admin's message.
    decided = {card["username"]: card for card in shown["decided"]}
    mallory, trudy = decided["mallory"], decided["trudy"]
    assert (mallory["status"], mallory["name"], mallory["reason"]) == ("approved", MALLORY["name"], MALLORY["reason"])
    assert shows_email(facts_of(mallory)["Email"], MALLORY["email"])
    assert facts_of(mallory)["Organisation"] == MALLORY["org"]
    assert (trudy["status"], trudy["name"], trudy["reason"]) == ("rejected", TRUDY["name"], TRUDY["reason"])
    assert (facts_of(trudy)["Organisation"], facts_of(trudy)["Message"]) == (TRUDY["org"], REJECTION)

    # People: the approved requester is a directory user now, with the name (and, if kept, the email) as typed.
    person = next(card for card in shown["people"] if card["username"] == "mallory")
    assert person["heading"] == "mallory"
    assert person["facts"] in (MALLORY["name"], f"{MALLORY['name']} · {MALLORY['email']}"), person["facts"]
    assert {group for group, checked in person["toggles"] if checked} == {"vid_public", G_IMG}
    assert set(person["labels"]) >= set(HOSTILE_GROUPS)
    assert_inert(local_admin)

    # The admin's own "New group" form: the confirmation repeats the name, and the new row shows it as text.
    page.locator("#group-name").fill(UI_GROUP)
    page.locator("#group-submit").click()
    expect(page.locator("#status")).to_have_text(f"Group {UI_GROUP} created.")
    expect(page.locator("#groups-body code").filter(has_text=UI_GROUP)).to_have_count(1)
    assert_inert(local_admin)


STREAMS_ADMIN = """() => {
  const text = (node) => (node ? node.textContent : null);
  const item = (li) => ({
    path: li.dataset.path,
    name: text(li.querySelector(".stream-name")),
    rule: text(li.querySelector(".rule-info")),
    toggles: [...li.querySelectorAll("fieldset.visibility label.toggle")].map((label) => [
      label.querySelector("input").value, text(label.querySelector("span")), label.querySelector("input").checked]),
  });
  return {
    streams: [...document.querySelectorAll("#stream-list li.stream")].map(item),
    rules: [...document.querySelectorAll("#rules-body tr.rule-row")].map((tr) => [
      tr.dataset.pattern, text(tr.querySelector("code")), [...tr.querySelectorAll(".chip")].map(text)]),
    sources: [...document.querySelectorAll("#sources-body tr.source-row")].map((tr) => [
      tr.dataset.name, text(tr.querySelector("td code")), text(tr.querySelector(".source-url-cell code"))]),
    ruleForm: [...document.querySelectorAll("#rule-groups label.toggle")].map((label) => [
      label.querySelector("input").value, text(label.querySelector("span"))]),
  };
}"""


def test_admin_streams_page_shows_hostile_paths_groups_rules_and_sources_as_text(
    local_stack: LocalStack, local_admin: Visitor
) -> None:
    site = local_stack.site
    page = local_admin.begin()
    response = local_admin.open(site + "/streams")
    assert_no_raw_markup(response)
    expect(stream(page, CAM2).locator(".rule-info")).to_contain_text("own rule")
    expect(page.locator("#sources-body tr.source-row")).to_have_count(len(SOURCES))
    expect(page.locator("#rules-body tr.rule-row")).to_have_count(2)
    shown = page.evaluate(STREAMS_ADMIN)

    # Paths: the valid odd one is shown as text; the ones with markup are refused as malformed, never shown.
    items = {item["path"]: item for item in shown["streams"]}
    assert {CAM1, CAM2, JS_PATH} <= set(items)
    assert items[JS_PATH]["name"] == JS_PATH
    assert not set(HOSTILE_PATHS) & set(items)

    # Group toggles on a stream and in the rule form: value and label are the exact names.
    for path in (CAM1, CAM2):
        toggles = {value: (label, checked) for value, label, checked in items[path]["toggles"]}
        for group in HOSTILE_GROUPS:
            assert toggles[group][0] == group
        ticked = {value for value, (_, checked) in toggles.items() if checked}
        assert ticked == set(BROAD_GROUPS if path == CAM1 else EXACT_GROUPS)
    assert {value for value, label in shown["ruleForm"] if value == label} >= set(HOSTILE_GROUPS)

    # Which rule decides, with the hostile group names in the sentence.
    broad = ", ".join(sorted(BROAD_GROUPS))
    assert items[CAM1]["rule"] == (
        f"Decided by the broader pattern live/** → {broad}. A toggle here adds a rule for this path only."
    )
    assert items[CAM2]["rule"] == f"Decided by its own rule {CAM2} → {', '.join(sorted(EXACT_GROUPS))}."
    rules = {pattern: (code, chips) for pattern, code, chips in shown["rules"]}
    assert rules["live/**"] == ("live/**", sorted(BROAD_GROUPS))
    assert rules[CAM2] == (CAM2, sorted(EXACT_GROUPS))

    # Sources: hostile names and URLs (javascript: included) are text in the table, and in the edit form.
    assert {name: (code, url) for name, code, url in shown["sources"]} == {
        name: (name, url) for name, url in SOURCES.items()
    }
    row = [name for name, _, _ in shown["sources"]].index(SRC_NAME)
    page.locator("#sources-body tr.source-row").nth(row).locator(".source-edit").click()
    expect(page.locator("#source-form-title")).to_have_text(f"Edit source {SRC_NAME}")
    expect(page.locator("#source-name")).to_have_value(SRC_NAME)
    expect(page.locator("#source-url")).to_have_value(SRC_URL)
    page.locator("#source-cancel").click()
    assert_inert(local_admin)

    # "Preview as" and the rule form repeat what was typed in their answers and errors.
    cam1 = stream(page, CAM1)
    cam1.locator(".preview-input").fill(PREVIEW_USER)
    cam1.locator(".preview-button").click()
    expect(cam1.locator(".preview-result")).to_contain_text(PREVIEW_USER)
    cam1.locator(".preview-input").fill(PREVIEW_GROUPS)
    cam1.locator(".preview-button").click()
    expect(cam1.locator(".preview-result")).to_have_text(
        f"Allowed for groups {PREVIEW_GROUPS} on {CAM1}: group vid_public is allowed by rule live/**"
    )
    page.locator("#rule-pattern").fill(RULE_PATTERN)
    page.locator("#rule-submit").click()
    expect(page.locator("#status")).to_contain_text(f"Rule {RULE_PATTERN} was not saved")
    assert_inert(local_admin)


AUDIT_ROWS = """() => [...document.querySelectorAll("#audit-body tr")].map((tr) =>
  [...tr.querySelectorAll("td")].slice(1).map((td) => td.textContent))"""


def test_audit_page_shows_planted_targets_and_details_as_text(local_stack: LocalStack, local_admin: Visitor) -> None:
    page = local_admin.begin()
    response = local_admin.open(local_stack.site + "/audit")
    assert_no_raw_markup(response)
    expect(page.locator("#audit-count")).to_contain_text("event")
    rows = page.evaluate(AUDIT_ROWS)
    created = {target for _, action, target, _ in rows if action == "group.create"}
    assert created >= set(HOSTILE_GROUPS)
    assert any(action == "rule.set" and target == CAM2 and G_TPL in detail for _, action, target, detail in rows)
    assert any(
        action == "source.add" and target == API_SRC_NAME and "rtsp://<svg onload=__x(24)>" in detail
        for _, action, target, detail in rows
    ), rows
    assert any(action == "access.request" and EVE["email"] in detail for _, action, _, detail in rows)
    assert_inert(local_admin)

    # The client-side filter takes hostile text too.
    page.locator("#audit-target").fill("<img src=x onerror")
    expect(page.locator("#audit-count")).to_contain_text(" of ")
    targets = page.locator("#audit-body td.audit-target").all_text_contents()
    assert targets and all("<img src=x onerror" in target for target in targets)
    assert G_IMG in targets
    assert_inert(local_admin)


# --- local mode: the viewer, the share page, sign-in, set-password and error pages -----------------------------------


def test_viewer_streams_page_runs_nothing_from_hostile_paths_or_groups(
    local_stack: LocalStack, local_viewer: Visitor
) -> None:
    page = local_viewer.begin()
    response = local_viewer.open(local_stack.site + "/streams")
    assert_no_raw_markup(response)
    expect(stream(page, CAM1)).to_have_count(1)
    paths = shown_paths(page)
    assert CAM1 in paths
    assert not paths & {CAM2, JS_PATH, *HOSTILE_PATHS}
    expect(page.locator("#streams-app")).to_have_attribute("data-is-admin", "false")
    assert_inert(local_viewer)


FETCH_JSON = """async ([method, url, body]) => {
  const csrf = document.querySelector("[data-csrf-token]").dataset.csrfToken;
  const response = await fetch(url, {
    method,
    credentials: "same-origin",
    headers: { Accept: "application/json", "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: await response.json().catch(() => null) };
}"""


def test_share_page_for_a_javascript_named_stream_is_inert(
    local_stack: LocalStack, local_admin: Visitor, anonymous: Visitor
) -> None:
    site = local_stack.site
    admin = local_admin.begin()
    local_admin.open(site + "/streams")
    created = admin.evaluate(FETCH_JSON, ["POST", "/api/v1/share-links", {"path": JS_PATH, "ttl": "1h"}])
    assert created["status"] == 201, created
    page = anonymous.begin()
    response = anonymous.open(site + created["body"]["url"])
    assert response.status == 200
    assert_no_raw_markup(response)
    expect(page.get_by_role("heading", level=1)).to_have_text(JS_PATH)
    expect(page.locator("video")).to_have_attribute("data-path", JS_PATH)
    assert page.title() == f"{JS_PATH} · MediaMTX"
    assert_inert(anonymous)


def test_sign_in_page_keeps_a_hostile_next_and_username_as_text(
    local_stack: LocalStack, anonymous: Visitor, browser: Browser
) -> None:
    site = local_stack.site
    page = anonymous.begin()
    hidden_next = page.locator('input[name="next"]')

    response = anonymous.open(f"{site}/auth/login?next={quote(NEXT_MARKUP, safe='')}")
    assert_no_raw_markup(response)
    expect(hidden_next).to_have_value(NEXT_MARKUP)
    assert_inert(anonymous)

    # A failed sign-in with markup as the username: the page comes back with the error and the same next.
    page.get_by_label("Username").fill(LOGIN_USERNAME)
    page.get_by_label("Password").fill("not-the-password-123")
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Sign in").click()
    assert navigation.value.status == 400
    assert_no_raw_markup(navigation.value)
    expect(page.get_by_role("alert")).to_have_text("Invalid password")
    expect(hidden_next).to_have_value(NEXT_MARKUP)
    assert_inert(anonymous)

    # A javascript: target is never kept.
    anonymous.open(f"{site}/auth/login?next={quote('javascript:__x(73)', safe='')}")
    expect(hidden_next).to_have_value("/")
    assert_inert(anonymous)

    # Signing in with a tampered next (javascript:, then markup) lands on a page of the site, and nothing runs.
    bob = visitor(browser)
    try:
        for target in ("javascript:__x(74)", NEXT_MARKUP):
            bob.open(site + "/auth/login")
            bob.page.locator('input[name="next"]').evaluate("(node, value) => { node.value = value; }", target)
            bob.page.get_by_label("Username").fill(VIEWER_USER)
            bob.page.get_by_label("Password").fill(VIEWER_PASSWORD)
            with bob.page.expect_navigation(url=f"{site}/streams"):
                bob.page.get_by_role("button", name="Sign in").click()
            expect(bob.page.locator("#streams-app")).to_be_visible()
            assert_inert(bob)
    finally:
        bob.context.close()


def test_set_password_page_of_a_hostile_request_is_inert(local_stack: LocalStack, anonymous: Visitor) -> None:
    page = anonymous.begin()
    response = anonymous.open(local_stack.set_password_link)
    assert response.status == 200
    assert_no_raw_markup(response)
    expect(page.locator("main strong")).to_have_text("mallory")
    page.get_by_label("New password").fill("a-long-password-1")
    page.get_by_label("Repeat it").fill("another-password-2")
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Set password").click()
    assert navigation.value.status == 400
    assert_no_raw_markup(navigation.value)
    expect(page.get_by_role("alert")).to_have_text("the two passwords differ")
    assert_inert(anonymous)


ANONYMOUS_ERRORS = (
    "/share/%3Csvg%20onload%3D__x(81)%3E",
    "/share/" + "A" * 43 + "?x=%22%3E%3Cimg%20src%3Dx%20onerror%3D__x(82)%3E",
    "/request-access/set-password/%3Cimg%20src%3Dx%20onerror%3D__x(83)%3E",
    "/request-access/review/%22%3E%3Csvg%20onload%3D__x(84)%3E" + "B" * 40,
    "/overlay/%3Cimg%20src%3Dx%20onerror%3D__x(85)%3E.css",
    "/%3Cscript%3E__x(86)%3C/script%3E?%3Csvg%20onload%3D__x(87)%3E",
    "/users?q=%22%3E%3Csvg%20onload%3D__x(88)%3E",
    "/request-access?name=%22%3E%3Csvg%20onload%3D__x(89)%3E",
)
VIEWER_ERRORS = (
    "/users?q=%22%3E%3Csvg%20onload%3D__x(91)%3E",
    "/audit/%3Cimg%20src%3Dx%20onerror%3D__x(92)%3E",
    "/api/v1/explain?path=%3Csvg%20onload%3D__x(93)%3E",
    "/request-access/review/%3Cimg%20src%3Dx%20onerror%3D__x(94)%3E",
)


def test_error_pages_do_not_reflect_markup_from_the_path_or_query(
    local_stack: LocalStack, anonymous: Visitor, local_viewer: Visitor
) -> None:
    for who, urls in ((anonymous, ANONYMOUS_ERRORS), (local_viewer, VIEWER_ERRORS)):
        who.begin()
        for url in urls:
            response = who.open(local_stack.site + url)
            assert response.status < 500, f"{url}: {response.status}"
            assert_no_raw_markup(response)
            assert_inert(who)
    # The viewer's refusal is the sidecar's page (not a bare error), so the template really rendered.
    local_viewer.open(local_stack.site + VIEWER_ERRORS[0])
    expect(local_viewer.page.get_by_role("heading", name="No access")).to_be_visible()


# --- authentik mode -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ak_site(authentik_stack: AuthentikStack) -> Iterator[str]:
    """The Authentik directory holds hostile names; the stand-in outpost vouches for three of them; the hostile
    admin sets a rule and creates a share link (so the audit and the share list name them)."""
    fake = authentik_stack.authentik
    site = authentik_stack.site
    fake.add_group(G_AK)
    fake.add_group(TAK_HOSTILE)
    for username, (groups, name, email) in AK_USERS.items():
        fake.add_user(username, *groups, name=name, email=email)
    with pytest.MonkeyPatch.context() as patch:
        for username in AK_SIGN_IN:
            patch.setitem(PEOPLE, username, AK_USERS[username][0])
        cookie = {"Cookie": f"{COOKIE}={AK_ADMIN}", "Origin": site}
        with httpx.Client(base_url=site, headers=cookie, timeout=15) as hostile_admin:
            csrf = _ok(hostile_admin.get("/api/v1/me"))["csrf_token"]
            headers = {"X-CSRF-Token": csrf}
            _ok(
                hostile_admin.put(
                    "/api/v1/rules", json={"pattern": "live/**", "groups": ["vid_public", G_AK]}, headers=headers
                )
            )
            _ok(hostile_admin.post("/api/v1/share-links", json={"path": CAM1, "ttl": "1h"}, headers=headers))
        yield site


@pytest.fixture(scope="module")
def ak_visitors(browser: Browser, ak_site: str) -> Iterator[dict[str, Visitor]]:
    found = {username: visitor(browser) for username in ("admin", *AK_SIGN_IN)}
    for username, who in found.items():
        signed_in_as(who.context, ak_site, username)
    yield found
    for who in found.values():
        who.context.close()


def test_authentik_directory_names_render_as_text_for_the_admin(ak_site: str, ak_visitors: dict[str, Visitor]) -> None:
    admin = ak_visitors["admin"]
    page = admin.begin()
    shown = open_users_page(admin, ak_site, expected_groups=4)
    people = {card["username"]: card for card in shown["people"]}
    for username, (groups, name, email) in AK_USERS.items():
        card = people[username]
        assert card["heading"] == username
        assert card["facts"] == f"{name} · {email}"
        assert {group for group, checked in card["toggles"] if checked} == {g for g in groups if g.startswith("vid_")}
        assert G_AK in card["labels"]
        assert TAK_HOSTILE not in card["labels"]
    assert [G_AK, G_AK] in shown["groups"]
    assert TAK_HOSTILE not in {name for name, _ in shown["groups"]}
    assert_inert(admin)

    # /streams: the hostile group as a toggle, the hostile admin as a share link's creator, "Preview as" a
    # hostile username from the directory.
    response = admin.open(ak_site + "/streams")
    assert_no_raw_markup(response)
    cam1 = stream(page, CAM1)
    expect(cam1.locator(".share-link-facts")).to_contain_text(f"by {AK_ADMIN}")
    toggles = cam1.locator("fieldset.visibility input.group-toggle")
    assert G_AK in toggles.evaluate_all("boxes => boxes.map((box) => box.value)")
    expect(cam1.locator("fieldset.visibility label.toggle span").filter(has_text=G_AK)).to_have_count(1)
    cam1.locator(".preview-input").fill(AK_VIEWER)
    cam1.locator(".preview-button").click()
    expect(cam1.locator(".preview-result")).to_have_text(
        f"Allowed for {AK_VIEWER} on {CAM1}: group {G_AK} is allowed by rule live/**"
    )
    assert_inert(admin)

    # /audit: the hostile admin's username as the actor of their changes.
    response = admin.open(ak_site + "/audit")
    assert_no_raw_markup(response)
    expect(page.locator("#audit-body td.audit-actor").filter(has_text=AK_ADMIN)).not_to_have_count(0)
    rows = page.evaluate(AUDIT_ROWS)
    assert {action for actor, action, _, _ in rows if actor == AK_ADMIN} >= {"rule.set", "share.create"}
    assert_inert(admin)


def test_authentik_hostile_usernames_in_the_top_bar_and_the_editor_overlay_are_inert(
    ak_site: str, ak_visitors: dict[str, Visitor]
) -> None:
    roles = {AK_ADMIN: "admin", AK_VIEWER: "viewer", AK_NOBODY: "none"}
    for username, role in roles.items():
        who = ak_visitors[username]
        page = who.begin()
        response = who.open(ak_site + "/streams")
        assert response.status == (403 if role == "none" else 200)
        assert_no_raw_markup(response)
        expect(page.locator("header .who")).to_have_text(f"{username} ({role})")
        if role == "none":
            expect(page.get_by_role("heading", name="No access")).to_be_visible()
        else:
            expect(stream(page, CAM1)).to_have_count(1)
        assert_inert(who)

    # The editor behind the SSO bridge, with the overlay added, for the hostile admin.
    who = ak_visitors[AK_ADMIN]
    page = who.begin()
    response = who.open(ak_site + "/")
    assert response.status == 200
    assert_no_raw_markup(response)
    expect(page.locator("#group-access button.sidebar-item")).to_have_text(["Users", "Stream access", "Audit"])
    # The real editor's header now names the person: the hostile name as text.
    expect(page.locator(".header-user [data-sidecar-person]")).to_have_text(AK_USERS[AK_ADMIN][1])
    assert_inert(who, strict=False)  # the editor's own page has images, inline script and onclick handlers
