"""The overlay on the REAL, unmodified editor (../shared/editor/) in a real browser, through the real Caddy with the
shipped Caddyfile and the real sidecar (local mode, SSO bridge on as the editor's service account).

Covers the overlay's DOM contract on the editor's own page: the Access group in the editor's collapsed and expanded
sidebar and in its phone layout (mouse and keyboard), the person in the header, the editor's people management
pointing to the sidecar's Users page, the note on the Users & Auth tab, and the fallback box on an editor page
without the sidebar; and around it: the sign-in never showing the editor's login, the editor's actions answering
through the proxy as the editor does, writes audited with the admin's name, viewers kept away from the editor, and
the bridge signing in again after the editor restarts. Requests to other hosts (the editor's CDN fonts) are
blocked and recorded; script errors are collected on every page and none may come from the overlay.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import BrowserContext, Locator, Page, ViewportSize, expect

from tests import real_editor
from tests.browser_fixtures import ADMIN_USER, CHROMIUM, SCREENSHOTS, screenshot, sign_in
from tests.helpers import ADMIN_PASSWORD
from tests.processes_fixtures import VIEWER_PASSWORD, VIEWER_USER
from tests.real_editor_fixtures import PHONE, EditorBrowser, RealEditorStack

pytestmark = [
    pytest.mark.browser,
    pytest.mark.caddy,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} is missing: `make browser` installs it"),
]

EDITOR_GROUPS = ("group-status", "group-streaming", "group-config", "group-system", "group-admin")
ACCESS_ITEMS = (("Users", "/users"), ("Stream access", "/streams"), ("Audit", "/audit"))
STRIP_PX = 52  # the editor's collapsed sidebar


# --- helpers ---------------------------------------------------------------------------------------------------


def api_sign_in(context: BrowserContext, site: str, username: str, password: str) -> None:
    """Sign in with the sidecar's JSON login (the browser flow itself is test 1); the context keeps the cookie."""
    response = context.request.post(f"{site}/auth/login", data={"username": username, "password": password})
    assert response.status == 200, response.text()


def open_editor(browser: EditorBrowser, viewport: ViewportSize | None = None, **options: object) -> Page:
    """An admin's page on the editor's dashboard, once the overlay has added its group."""
    site = browser.stack.site
    page = browser.page(viewport, **options)
    api_sign_in(page.context, site, ADMIN_USER, ADMIN_PASSWORD)
    page.goto(f"{site}/")
    assert page.url == f"{site}/", page.url
    expect(page.locator("nav.sidebar#sidebar")).to_be_attached()
    expect(page.locator("#group-access")).to_be_attached()
    return page


def sidebar(page: Page) -> Locator:
    return page.locator("nav.sidebar#sidebar")


def access_item(page: Page, label: str) -> Locator:
    return page.locator("#group-access-items button.sidebar-item", has_text=label)


def editor_item(page: Page, group: str, tab: str) -> Locator:
    return page.locator(f"#{group} button.sidebar-item[onclick*=\"'{tab}'\"]")


# Whether the Access items show: the editor hides its items with `display: none` in the collapsed sidebar, and
# in the expanded one clips a collapsed group's items to nothing (`max-height: 0; overflow: hidden`), which
# Playwright still calls visible. Shown means laid out, inside the items box and inside the sidebar.
ITEMS_SHOWN = """() => {
  const box = document.getElementById("group-access-items");
  const nav = document.getElementById("sidebar");
  if (!box || !nav) return false;
  const outer = box.getBoundingClientRect(), side = nav.getBoundingClientRect();
  const items = [...box.querySelectorAll("button.sidebar-item")];
  return items.length === 3 && items.every((item) => {
    const r = item.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && r.top >= outer.top - 1 && r.bottom <= outer.bottom + 1
      && r.left >= side.left - 1 && r.right <= side.right + 1;
  });
}"""
ITEMS_HIDDEN = """() => {
  const box = document.getElementById("group-access-items");
  const items = [...box.querySelectorAll("button.sidebar-item")];
  return box.getBoundingClientRect().height === 0 || items.every((item) => item.getBoundingClientRect().height === 0);
}"""


def expect_access_open(page: Page) -> None:
    group, label = page.locator("#group-access"), page.locator("#group-access-label")
    expect(group).not_to_have_class(_has("collapsed"))
    expect(label).to_have_attribute("aria-expanded", "true")
    expect(sidebar(page)).to_have_class(_has("expanded"))
    for text, href in ACCESS_ITEMS:
        item = access_item(page, text)
        expect(item).to_be_visible()
        expect(item).to_have_attribute("data-href", href)
    page.wait_for_function(ITEMS_SHOWN, timeout=5000)


def expect_access_closed(page: Page) -> None:
    expect(page.locator("#group-access")).to_have_class(_has("collapsed"))
    expect(page.locator("#group-access-label")).to_have_attribute("aria-expanded", "false")
    page.wait_for_function(ITEMS_HIDDEN, timeout=5000)


def _has(css_class: str) -> re.Pattern[str]:
    """A regex matching a class attribute that contains `css_class` as a whole word."""
    return re.compile(rf"(^|\s){re.escape(css_class)}(\s|$)")


def tab_until_focused(page: Page, target: Locator, presses: int = 40) -> None:
    for _ in range(presses):
        page.keyboard.press("Tab")
        if target.evaluate("node => node === document.activeElement"):
            break
    expect(target).to_be_focused()


def docs_screenshot(page: Page, name: str) -> None:
    """docs/<name>.png of the editor's page (only with SIDECAR_SCREENSHOTS=1), once its dashboard shows figures."""
    if SCREENSHOTS:
        expect(page.locator("#active-streams-count")).not_to_have_text("-")
        screenshot(page, name, full_page=False)


def no_overlay_errors(browser: EditorBrowser) -> None:
    assert browser.overlay_errors() == [], browser.overlay_errors()


def settled_request_count(stack: RealEditorStack, quiet_s: float = 1.0, limit_s: float = 15.0) -> int:
    """How many requests the editor has logged, once nothing new has arrived for `quiet_s` (a closed page of an
    earlier test may still have had a poll in flight)."""
    count, quiet_since, deadline = len(stack.editor.requests()), time.monotonic(), time.monotonic() + limit_s
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = len(stack.editor.requests())
        if now != count:
            count, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            break
    return count


@contextmanager
def editor_directly(stack: RealEditorStack) -> Iterator[httpx.Client]:
    """A client signed in to the editor itself (not through the sidecar), to compare its answers with the proxy's."""
    with httpx.Client(base_url=stack.editor.url, timeout=15) as client:
        form = {"username": real_editor.SERVICE_USER, "password": real_editor.SERVICE_PASSWORD}
        response = client.post("/login", data=form)
        assert response.status_code == 302 and "session" in client.cookies, response.text[:300]
        yield client


# --- 1. sign-in lands on the real dashboard --------------------------------------------------------------------


def test_admin_signs_in_on_the_sidecar_page_and_lands_on_the_real_editor_dashboard(
    editor_browser: EditorBrowser,
) -> None:
    site = editor_browser.stack.site
    page = editor_browser.page()
    navigations: list[str] = []
    page.on("request", lambda request: navigations.append(request.url) if request.is_navigation_request() else None)
    sign_in(page, site, ADMIN_USER, ADMIN_PASSWORD, target="/")

    expect(sidebar(page)).to_be_visible()
    for group in EDITOR_GROUPS:
        expect(page.locator(f"nav.sidebar#sidebar > div.sidebar-group#{group}")).to_be_attached()
    expect(page.locator("#dashboard")).to_be_visible()
    expect(page.locator("#dashboard")).to_have_class(_has("active"))
    expect(page.locator("#group-access")).to_be_attached()
    # Never the editor's own login page: every page the browser loaded was the sidecar's sign-in or the editor's /.
    paths = [urlsplit(url).path for url in navigations]
    assert "/login" not in paths, navigations
    assert paths[0] == "/" and "/auth/login" in paths, navigations
    expect(page.locator('form[action="/login"]')).to_have_count(0)
    # The bridge's editor session stays with the sidecar.
    names = {cookie["name"] for cookie in page.context.cookies()}
    assert "session" not in names, names
    assert "sidecar_session" in names, names
    # The editor's CDN stylesheet was asked for and stopped here; nothing else left the machine unrecorded.
    assert editor_browser.blocked, "the editor's page asked for no CDN resource: the blocking is untested"
    assert all(not url.startswith(site) for url in editor_browser.blocked)
    no_overlay_errors(editor_browser)


# --- 2. collapsed sidebar (the default, desktop) ---------------------------------------------------------------


@pytest.mark.parametrize(("label", "href"), ACCESS_ITEMS, ids=[href.strip("/") for _, href in ACCESS_ITEMS])
def test_in_the_collapsed_sidebar_one_click_opens_access_and_one_more_opens_the_page(
    editor_browser: EditorBrowser, label: str, href: str
) -> None:
    site = editor_browser.stack.site
    page = open_editor(editor_browser)
    nav, group, group_label = sidebar(page), page.locator("#group-access"), page.locator("#group-access-label")
    # The default: a 52 px strip, every group collapsed, the Access label (its icon) visible inside the strip.
    expect(nav).not_to_have_class(_has("expanded"))
    expect(group).to_have_class(_has("collapsed"))
    expect(group_label).to_have_attribute("aria-expanded", "false")
    expect(group_label).to_be_visible()
    expect(group_label).to_be_in_viewport()
    strip, box = nav.bounding_box(), group_label.bounding_box()
    assert strip is not None and box is not None
    assert strip["width"] == STRIP_PX, strip
    assert strip["x"] <= box["x"] and box["x"] + box["width"] <= strip["x"] + strip["width"], (strip, box)
    # The icon: Material Symbols' `group`, or, as here where the editor's CDN font cannot load, a drawn icon the
    # overlay puts instead of the word (a word would be cut off); either way inside the strip.
    symbol = page.locator("#group-access-label .sidebar-icon > :first-child")
    expect(symbol).to_be_visible()
    font = page.locator("#group-access-label .sidebar-icon .material-symbols-outlined")
    if font.count():
        expect(font).to_have_text("group")
    else:
        expect(page.locator("#group-access-label .sidebar-icon svg.sidecar-icon")).to_have_count(1)
    glyph = symbol.bounding_box()
    assert glyph is not None and glyph["x"] + glyph["width"] <= strip["x"] + strip["width"], (strip, glyph)
    expect(page.locator("#group-access-label .sidebar-label")).to_have_text("Access")
    expect_access_closed(page)
    if href == "/users":
        docs_screenshot(page, "editor-access-collapsed")

    group_label.click()  # ONE click
    expect_access_open(page)
    if href == "/users":
        docs_screenshot(page, "editor-access-expanded")

    with page.expect_navigation(url=site + href):
        access_item(page, label).click()
    assert page.url == site + href
    expect(page.locator("nav.sidebar#sidebar")).to_have_count(0)  # the sidecar's own page, not the editor
    no_overlay_errors(editor_browser)


def test_the_access_label_opens_with_enter_and_closes_with_space(editor_browser: EditorBrowser) -> None:
    page = open_editor(editor_browser)
    group_label = page.locator("#group-access-label")
    expect(group_label).to_have_attribute("role", "button")
    expect(group_label).to_have_attribute("tabindex", "0")
    expect(group_label).to_have_attribute("aria-controls", "group-access-items")
    expect(page.locator("#group-access-items")).to_be_attached()
    tab_until_focused(page, group_label)

    page.keyboard.press("Enter")
    expect_access_open(page)
    expect(group_label).to_be_focused()

    page.keyboard.press("Space")
    expect_access_closed(page)
    expect(sidebar(page)).not_to_have_class(_has("expanded"))  # no group open: the editor collapses its sidebar
    expect(group_label).to_be_focused()
    assert page.url == f"{editor_browser.stack.site}/"
    no_overlay_errors(editor_browser)


# --- 3. expanded sidebar ---------------------------------------------------------------------------------------


def test_with_an_editor_group_already_open_access_still_opens_and_its_items_navigate(
    editor_browser: EditorBrowser,
) -> None:
    site = editor_browser.stack.site
    page = open_editor(editor_browser)
    page.locator("#group-config > .sidebar-group-label").click()  # the editor's own toggleGroup('group-config')
    expect(sidebar(page)).to_have_class(_has("expanded"))
    expect(page.locator("#group-config")).not_to_have_class(_has("collapsed"))
    expect(editor_item(page, "group-config", "basic")).to_be_visible()
    expect_access_closed(page)

    page.locator("#group-access-label").click()
    expect_access_open(page)
    expect(page.locator("#group-config")).not_to_have_class(_has("collapsed"))  # the editor's group stays open

    with page.expect_navigation(url=f"{site}/audit"):
        access_item(page, "Audit").click()
    no_overlay_errors(editor_browser)


# --- 4. phone layout -------------------------------------------------------------------------------------------


def test_on_a_phone_the_editors_menu_button_then_access_then_users_opens_users(editor_browser: EditorBrowser) -> None:
    site = editor_browser.stack.site
    page = open_editor(editor_browser, PHONE, is_mobile=True, has_touch=True)
    nav, button = sidebar(page), page.locator("#sidebar-mobile-btn")
    expect(button).to_be_visible()
    expect(nav).not_to_be_in_viewport()  # off-screen until the editor's round button opens it
    button.click()  # the editor's toggleMobileSidebar()
    expect(nav).to_have_class(_has("open"))
    group_label = page.locator("#group-access-label")
    expect(group_label).to_be_in_viewport()
    expect_access_closed(page)

    group_label.click()
    expect_access_open(page)
    for text, _ in ACCESS_ITEMS:
        expect(access_item(page, text)).to_be_in_viewport()
    docs_screenshot(page, "editor-access-phone")

    with page.expect_navigation(url=f"{site}/users"):
        access_item(page, "Users").click()
    no_overlay_errors(editor_browser)


# --- 5. the editor's own actions through the proxy -------------------------------------------------------------


def test_the_editors_validate_and_user_list_answer_through_the_proxy_as_the_editor_does(
    editor_browser: EditorBrowser,
) -> None:
    stack = editor_browser.stack
    context = editor_browser.context()
    api_sign_in(context, stack.site, ADMIN_USER, ADMIN_PASSWORD)
    origin = {"Origin": stack.site}
    with editor_directly(stack) as editor:
        # /validate_yaml: the editor's "Validate Only" form (form field yaml_content). Valid YAML: a redirect to
        # its page with a success message on the Advanced tab.
        form: dict[str, str | float | bool] = {
            "yaml_content": "paths:\n  live/cam9:\n    source: publisher\n",
            "current_tab": "advanced",
        }
        direct = editor.post("/validate_yaml", data=form)
        proxied = context.request.post(f"{stack.site}/validate_yaml", form=form, headers=origin, max_redirects=0)
        assert direct.status_code == 302, direct.text[:300]
        assert "message_type=success" in direct.headers["location"] and "tab=advanced" in direct.headers["location"]
        assert proxied.status == 302, proxied.text()[:300]
        assert proxied.headers["location"] == direct.headers["location"]
        # Invalid YAML: this editor puts the parser's multi-line message into its redirect, which Werkzeug refuses,
        # so it answers 500 (its own bug); through the proxy the same.
        form = {"yaml_content": "paths: [unclosed\n", "current_tab": "advanced"}
        direct = editor.post("/validate_yaml", data=form)
        proxied = context.request.post(f"{stack.site}/validate_yaml", form=form, headers=origin, max_redirects=0)
        assert direct.status_code == 500
        assert proxied.status == direct.status_code, proxied.text()[:300]
        assert proxied.body() == direct.content

        direct_users = editor.get("/api/webeditor/users")
        proxied_users = context.request.get(f"{stack.site}/api/webeditor/users")
        assert direct_users.status_code == 200
        assert proxied_users.status == 200, proxied_users.text()[:300]
        assert proxied_users.json() == direct_users.json()
        names = {user["username"] for user in proxied_users.json()["users"]}
        assert {real_editor.SERVICE_USER, "other-admin"} <= names
        assert all("password" not in user for user in proxied_users.json()["users"])
    no_overlay_errors(editor_browser)


def test_validate_only_in_the_editors_own_form_works_through_the_proxy(editor_browser: EditorBrowser) -> None:
    site = editor_browser.stack.site
    page = open_editor(editor_browser)
    page.locator("#group-config > .sidebar-group-label").click()
    editor_item(page, "group-config", "advanced").click()
    expect(page.locator("#advanced")).to_be_visible()
    expect(page.locator("#yaml-textarea")).to_contain_text("live/cam1")
    with page.expect_navigation(url=lambda url: urlsplit(url).path == "/" and "tab=advanced" in url):
        page.locator('#yaml-form button[formaction="/validate_yaml"]').click()
    expect(page.locator("#flash-message")).to_contain_text("YAML syntax is valid")
    expect(page.locator("#advanced")).to_be_visible()
    assert page.url.startswith(f"{site}/?"), page.url
    no_overlay_errors(editor_browser)


def test_an_editor_write_is_made_and_audited_with_the_admins_username(editor_browser: EditorBrowser) -> None:
    stack = editor_browser.stack
    context = editor_browser.context()
    api_sign_in(context, stack.site, ADMIN_USER, ADMIN_PASSWORD)
    newcomer = {"username": "editor-newcomer", "email": "n@example.org", "password": "newcomer-pw-1", "role": "viewer"}
    response = context.request.post(
        f"{stack.site}/api/webeditor/users/add", data=newcomer, headers={"Origin": stack.site}
    )
    assert response.status == 200, response.text()
    assert response.json() == {"success": True}
    written = {user["username"]: user["role"] for user in stack.editor.files.users()}
    assert written.get("editor-newcomer") == "viewer"  # the editor really wrote its users.json

    target = "POST /api/webeditor/users/add"
    entries = [event for event in stack.audit(actor=ADMIN_USER) if event["target"] == target]
    assert len(entries) == 1, stack.audit()[:10]
    assert entries[0]["action"].startswith("editor.") and entries[0]["action"] != "editor.denied", entries[0]
    assert not [event for event in stack.audit(target=target) if event["actor"] != ADMIN_USER]
    no_overlay_errors(editor_browser)


# --- 6. viewers never reach the editor -------------------------------------------------------------------------


def test_a_viewer_opening_the_root_is_sent_to_streams_and_the_editor_never_hears_of_him(
    editor_browser: EditorBrowser,
) -> None:
    stack = editor_browser.stack
    before = settled_request_count(stack)

    page = editor_browser.page()
    page.goto(f"{stack.site}/")
    assert page.url.startswith(f"{stack.site}/auth/login"), page.url
    page.get_by_label("Username").fill(VIEWER_USER)
    page.get_by_label("Password").fill(VIEWER_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{stack.site}/streams")
    expect(page.locator("#streams-app")).to_be_visible()
    page.goto(f"{stack.site}/")  # again, signed in: still the stream list
    assert page.url == f"{stack.site}/streams", page.url
    expect(page.locator("#streams-app")).to_be_visible()
    expect(page.locator("nav.sidebar#sidebar")).to_have_count(0)
    expect(page.locator("#group-access")).to_have_count(0)
    # The editor's API and forms are refused before the editor too.
    listed = page.context.request.get(f"{stack.site}/api/webeditor/users")
    assert listed.status == 403, listed.text()[:300]
    assert "error" in listed.json()
    posted = page.context.request.post(
        f"{stack.site}/validate_yaml", form={"yaml_content": "a: 1\n"}, headers={"Origin": stack.site}, max_redirects=0
    )
    assert posted.status == 403, posted.text()[:300]
    page.context.close()

    assert settled_request_count(stack) == before, stack.editor.requests()[before:]
    # The count is live: an admin's request right after reaches the editor and shows up.
    admin = editor_browser.context()
    api_sign_in(admin, stack.site, ADMIN_USER, ADMIN_PASSWORD)
    assert admin.request.get(f"{stack.site}/api/webeditor/users").status == 200
    assert any(r.target == "/api/webeditor/users" for r in stack.editor.requests()[before:])
    no_overlay_errors(editor_browser)


# --- 8. header, people management, Users & Auth note -----------------------------------------------------------


def test_the_header_shows_the_admin_and_the_editors_people_management_points_to_users(
    editor_browser: EditorBrowser,
) -> None:
    site = editor_browser.stack.site
    page = open_editor(editor_browser)
    person = page.locator(".header-user [data-sidecar-person]")
    expect(person).to_have_count(1)
    expect(person).to_have_text(ADMIN_USER)  # a local admin has no name: the username
    expect(person).to_have_attribute("data-sidecar-person", ADMIN_USER)
    expect(page.locator(".header-user")).not_to_contain_text(real_editor.SERVICE_USER)
    person.click()
    expect(page.locator("#password-modal")).to_be_hidden()  # no longer the editor's password change

    for tab in ("webusers", "account"):
        expect(editor_item(page, "group-admin", tab)).to_have_attribute("hidden", "")
    pointer = page.locator('#group-admin button.sidebar-item.sidecar-pointer[data-href="/users"]')
    expect(pointer).to_have_count(1)
    expect(pointer).to_have_text("Users")
    for tab in ("webusers", "account"):
        panel = page.locator(f"#{tab} div.sidecar-pointer-panel")
        expect(panel).to_have_count(1)
        expect(panel.locator('a[href="/users"]')).to_have_count(1)

    # The Users & Auth tab, opened the editor's own way: Configuration, then "Users & Auth".
    page.locator("#group-config > .sidebar-group-label").click()
    editor_item(page, "group-config", "users").click()
    expect(page.locator("#users")).to_be_visible()
    banner = page.locator("#users > div#sidecar-auth-banner.sidecar-banner")
    expect(banner).to_be_visible()
    assert banner.evaluate("node => node.parentElement.firstElementChild === node")
    text = banner.inner_text().lower()
    assert "sidecar" in text and "internal users" in text and "public access" in text, text

    # In the open Admin group only the pointer shows, and it opens the sidecar's Users page.
    page.locator("#group-admin > .sidebar-group-label").click()
    expect(pointer).to_be_visible()
    for tab in ("webusers", "account"):
        expect(editor_item(page, "group-admin", tab)).to_be_hidden()
    expect(editor_item(page, "group-admin", "styling")).to_be_visible()
    with page.expect_navigation(url=f"{site}/users"):
        pointer.click()
    no_overlay_errors(editor_browser)


# --- 9. the fallback on an editor page without the sidebar -----------------------------------------------------


def test_on_an_editor_page_without_the_sidebar_the_overlay_adds_its_box(editor_browser: EditorBrowser) -> None:
    """The real editor's /get_yaml answers its YAML as text/html, so the proxy adds the overlay to a page that has
    none of the editor's layout."""
    site = editor_browser.stack.site
    context = editor_browser.context()
    api_sign_in(context, site, ADMIN_USER, ADMIN_PASSWORD)
    page = context.new_page()
    response = page.goto(f"{site}/get_yaml")
    assert response is not None and response.status == 200
    assert response.headers["content-type"].startswith("text/html")
    expect(page.locator("body")).to_contain_text("live/cam1")
    expect(page.locator("nav.sidebar#sidebar")).to_have_count(0)
    box = page.locator("nav#group-access.sidecar-access-box")
    expect(box).to_be_visible()
    assert box.evaluate("node => getComputedStyle(node).position") == "fixed"
    links = box.locator("a")
    expect(links).to_have_count(len(ACCESS_ITEMS))
    for index, (text, href) in enumerate(ACCESS_ITEMS):
        expect(links.nth(index)).to_have_text(text)
        expect(links.nth(index)).to_have_attribute("href", href)
    assert editor_browser.page_errors == [], editor_browser.page_errors
    with page.expect_navigation(url=f"{site}/streams"):
        links.nth(1).click()
    assert editor_browser.page_errors == [], editor_browser.page_errors


# --- 7. the bridge after an editor restart (last: it replaces the editor process) ------------------------------


def test_after_the_editor_restarts_the_admins_next_page_load_still_shows_the_dashboard(
    editor_browser: EditorBrowser,
) -> None:
    stack = editor_browser.stack
    page = open_editor(editor_browser)
    expect(page.locator("#dashboard")).to_be_visible()
    stack.editor.restart()  # same port, new process, new secret key: the sidecar's editor session is void

    page.reload()
    assert page.url == f"{stack.site}/", page.url
    expect(sidebar(page)).to_be_visible()
    expect(page.locator("#dashboard")).to_be_visible()
    expect(page.locator("#group-access")).to_be_attached()
    expect(page.locator('form[action="/login"]')).to_have_count(0)
    # The new editor process saw the bridge sign in again, then served the page.
    after = stack.editor.requests(start=stack.editor.starts)
    logins = [i for i, r in enumerate(after) if r.method == "POST" and r.target == "/login" and r.status == 302]
    assert logins, after
    assert any(r.method == "GET" and r.target == "/" and r.status == 200 for r in after[logins[0] :]), after
    assert "session" not in {cookie["name"] for cookie in page.context.cookies()}
    no_overlay_errors(editor_browser)
