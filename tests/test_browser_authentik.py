"""Authentik mode in a real browser, through the real Caddy: the editor behind the SSO bridge with the overlay's
Users entry, people managed in (a fake) Authentik, `tak_*` groups out of reach, and viewers kept out.

Caddy's forward_auth asks a stand-in outpost (tests/outpost_stand_in.py) that vouches for whoever the context's
`stand_in_user` cookie names: `admin` (vid_admin), `bob` (vid_public).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser_authentik_fixtures import AuthentikStack, members, signed_in_as
from tests.browser_fixtures import CHROMIUM, screenshot

pytestmark = [
    pytest.mark.browser,
    pytest.mark.caddy,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} is missing: `make browser` installs it"),
]

NewContext = Callable[..., BrowserContext]
SIDEBAR = "nav.sidebar#sidebar"
# A change the browser makes must reach the fake Authentik within this long.
SETTLE_SECONDS = 5.0

FETCH = """async ([method, url, csrf]) => {
  const headers = { Accept: "application/json" };
  if (csrf) headers["X-CSRF-Token"] = csrf;
  const response = await fetch(url, { method, headers, credentials: "same-origin" });
  return { status: response.status, body: await response.json().catch(() => null) };
}"""


def page_as(new_context: NewContext, stack: AuthentikStack, username: str, **options: object) -> Page:
    return signed_in_as(new_context(**options), stack.site, username).new_page()


def call(page: Page, method: str, path: str, csrf: str | None = None) -> dict[str, Any]:
    """A same-origin fetch from the page, with the page's cookies (and a CSRF token when given)."""
    answer: dict[str, Any] = page.evaluate(FETCH, [method, path, csrf])
    return answer


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + SETTLE_SECONDS
    while not condition():
        assert time.monotonic() < deadline, "the fake Authentik never showed the change"
        time.sleep(0.05)


def open_editor(new_context: NewContext, stack: AuthentikStack, **options: object) -> Page:
    """The admin opens the site's root and lands in the editor (signed in by the bridge), with the overlay."""
    page = page_as(new_context, stack, "admin", **options)
    page.goto(stack.site + "/")
    expect(page.locator(SIDEBAR)).to_be_visible()
    expect(page.locator("#group-access.collapsed")).to_be_attached()  # like the editor's own groups
    page.locator("#group-access-label").click()  # one click opens it
    expect(page.locator("#group-access button.sidebar-item", has_text="Users")).to_be_visible()
    return page


def test_admin_reaches_the_editor_without_its_login_and_manages_bob_from_the_users_entry(
    authentik_stack: AuthentikStack, new_context: NewContext
) -> None:
    stack = authentik_stack
    page = open_editor(new_context, stack)
    assert page.url == stack.site + "/"
    expect(page.locator("form.login")).to_have_count(0)  # the editor's own login never showed
    # The editor's header names the person, not the service account the sidecar signs in with.
    expect(page.locator(".header-user [data-sidecar-person]")).to_have_text("Admin")
    # The bridge's editor session stays with the sidecar: the browser never holds the editor's cookie.
    assert "session" not in {cookie["name"] for cookie in page.context.cookies()}
    access = page.locator("#group-access")
    expect(access.locator("button.sidebar-item")).to_have_text(["Users", "Stream access", "Audit"])

    with page.expect_navigation(url=stack.site + "/users"):
        access.get_by_role("button", name="Users").click()
    expect(page.locator("#users-app")).to_have_attribute("data-mode", "authentik")
    page.locator("#user-search-input").fill("bob")
    page.locator("#user-search-submit").click()
    cards = page.locator("#user-list > li.user-card")
    expect(cards).to_have_count(1)
    bob = cards.first
    expect(bob).to_have_attribute("data-username", "bob")
    expect(bob.locator(".user-recovery-link")).to_be_visible()  # recovery is Authentik's, offered here only
    expect(bob.locator(".user-reset-email")).to_be_visible()
    # Only vid_* groups are offered; bob's tak_* memberships (none here) and tak groups never show.
    toggles = bob.locator('input.group-toggle[data-username="bob"]')
    expect(toggles).to_have_count(3)
    expect(bob.locator('input.group-toggle[data-group^="tak_"]')).to_have_count(0)
    expect(bob.locator('input.group-toggle[data-group="vid_public"]')).to_be_checked()
    private = bob.locator('input.group-toggle[data-group="vid_private"]')
    expect(private).not_to_be_checked()
    assert "bob" not in members(stack.authentik, "vid_private")

    private.check()
    expect(page.locator("#membership-note")).to_be_visible()
    expect(page.locator("#membership-note")).to_contain_text("Takes effect at the person's next request")
    wait_for(lambda: "bob" in members(stack.authentik, "vid_private"))
    assert members(stack.authentik, "vid_public") == {"bob"}
    expect(private).to_be_enabled()
    expect(private).to_be_checked()
    # Tall enough for the whole page, so the status bar (fixed at the bottom) covers none of it.
    page.set_viewport_size({"width": 1100, "height": 1250})
    screenshot(page, "users-admin-desktop")

    # Back to the state the other tests expect.
    private.uncheck()
    wait_for(lambda: "bob" not in members(stack.authentik, "vid_private"))


@pytest.mark.parametrize(
    ("method", "username", "group"),
    [("PUT", "bob", "tak_ROLE_ADMIN"), ("POST", "bob", "tak_ROLE_ADMIN"), ("DELETE", "carol", "tak_users")],
    ids=["put-bob-into-tak_ROLE_ADMIN", "post-bob-into-tak_ROLE_ADMIN", "delete-carol-from-tak_users"],
)
def test_a_crafted_membership_change_of_a_tak_group_is_refused_and_audited(
    authentik_stack: AuthentikStack, new_context: NewContext, method: str, username: str, group: str
) -> None:
    stack = authentik_stack
    page = open_editor(new_context, stack)
    me = call(page, "GET", "/api/v1/me")
    assert me["status"] == 200 and me["body"]["role"] == "admin", me
    before = members(stack.authentik, group)
    writes = len(stack.authentik.writes())

    answer = call(page, method, f"/api/v1/users/{username}/groups/{group}", me["body"]["csrf_token"])

    assert answer["status"] == 403, answer
    assert "vid_" in answer["body"]["error"], answer
    assert members(stack.authentik, group) == before
    assert len(stack.authentik.writes()) == writes  # nothing was written to Authentik at all
    audit = call(page, "GET", "/api/v1/audit?action=group.denied&actor=admin")
    assert audit["status"] == 200, audit
    assert group in [event["target"] for event in audit["body"]["events"]]


def test_a_viewer_never_sees_the_editor_or_the_users_entry(
    authentik_stack: AuthentikStack, new_context: NewContext
) -> None:
    stack = authentik_stack
    page = page_as(new_context, stack, "bob")
    page.goto(stack.site + "/")
    assert page.url == stack.site + "/streams"
    expect(page.locator("#streams-app")).to_be_visible()
    expect(page.locator(SIDEBAR)).to_have_count(0)
    expect(page.locator("#group-access")).to_have_count(0)
    expect(page.get_by_role("button", name="Users")).to_have_count(0)

    response = page.goto(stack.site + "/users")
    assert response is not None and response.status == 403
    expect(page.get_by_role("heading", name="No access")).to_be_visible()
    expect(page.locator("#users-app")).to_have_count(0)

    assert call(page, "GET", "/api/v1/users")["status"] == 403
    assert call(page, "GET", "/api/v1/users?search=bob")["status"] == 403


def test_a_person_without_a_vid_group_gets_no_access(authentik_stack: AuthentikStack, new_context: NewContext) -> None:
    """carol is in Authentik (and in tak_users) but in no vid_* group: no editor, no pages, no API."""
    stack = authentik_stack
    page = page_as(new_context, stack, "carol")
    response = page.goto(stack.site + "/")
    assert response is not None and response.status == 403
    expect(page.locator(SIDEBAR)).to_have_count(0)
    for path in ("/users", "/streams"):
        response = page.goto(stack.site + path)
        assert response is not None and response.status == 403, path
        expect(page.get_by_role("heading", name="No access")).to_be_visible()
    assert call(page, "GET", "/api/v1/users")["status"] == 403


def test_a_person_without_a_vid_group_opening_the_root_sees_the_no_access_page(
    authentik_stack: AuthentikStack, new_context: NewContext
) -> None:
    stack = authentik_stack
    page = page_as(new_context, stack, "carol")
    page.goto(stack.site + "/")
    expect(page.get_by_role("heading", name="No access")).to_be_visible(timeout=2000)


def test_without_identity_a_page_never_sends_the_browser_to_a_missing_login(
    authentik_stack: AuthentikStack, new_context: NewContext
) -> None:
    """The outpost answers 200 without identity (Authentik's unauthenticated paths): the sidecar must refuse, but
    never by sending the browser to a page that does not exist in this mode."""
    stack = authentik_stack
    page = new_context().new_page()
    response = page.goto(stack.site + "/users")
    assert response is not None
    assert call(page, "GET", "/api/v1/users")["status"] == 401
    assert not page.url.startswith(stack.site + "/auth/login"), page.url
    assert response.status != 404
