"""The request-access flow in a real browser, through the real Caddy, against the real sidecar in local mode.

A stranger asks for access, the admin approves it on /users#requests and hands over the one-time set-password
link (mail is off in this stack), the stranger sets a password, signs in and sees the public streams.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import BrowserContext, expect

from tests.browser_fixtures import ADMIN_USER, CHROMIUM, PUBLIC_PATHS, BrowserStack, screenshot, sign_in
from tests.processes_fixtures import ADMIN_PASSWORD

pytestmark = [
    pytest.mark.browser,
    pytest.mark.caddy,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} is missing: `make browser` installs it"),
]

NewContext = Callable[..., BrowserContext]
NEWBIE = "newbie"
NEWBIE_PASSWORD = "a-long-new-password-42"


def test_a_stranger_requests_access_is_approved_sets_a_password_and_watches(
    browser_stack: BrowserStack, new_context: NewContext
) -> None:
    stack = browser_stack

    # The stranger: no sign-in, the public form.
    stranger = new_context().new_page()
    stranger.goto(f"{stack.site}/request-access")
    stranger.get_by_label("Full name").fill("Nina Newbie")
    stranger.get_by_label("Username").fill(NEWBIE)
    stranger.get_by_label("Email").fill("nina@example.org")
    stranger.get_by_label("Organisation or unit").fill("Field unit 7")
    stranger.get_by_label("Streams you need").select_option("vid_public")
    stranger.get_by_label("Reason").fill("I watch the public cameras for the night shift.")
    screenshot(stranger, "request-access")
    stranger.get_by_role("button", name="Send request").click()
    expect(stranger.get_by_role("heading", name="Request received")).to_be_visible()

    # The admin: the badge, the request with vid_public ticked, Approve, the set-password link.
    admin = new_context().new_page()
    sign_in(admin, stack.site, ADMIN_USER, ADMIN_PASSWORD, target="/users")
    admin.goto(f"{stack.site}/users#requests")
    expect(admin.locator("#nav-requests-badge")).to_be_visible()
    expect(admin.locator("#nav-requests-badge")).to_contain_text("1")
    expect(admin.locator("#requests-count")).to_have_text("1")
    card = admin.locator(f'#request-list li.request-card[data-username="{NEWBIE}"]')
    expect(card).to_be_visible()
    expect(card).to_contain_text("nina@example.org")
    expect(card).to_contain_text("Field unit 7")
    expect(card).to_contain_text("night shift")
    expect(card.locator('input.request-group[data-group="vid_public"]')).to_be_checked()
    expect(card.locator('input.request-group[data-group="vid_private"]')).not_to_be_checked()
    card.get_by_role("button", name="Approve").click()

    done = admin.locator(f'#decided-list li.request-card[data-username="{NEWBIE}"]')
    expect(done).to_have_attribute("data-status", "approved")
    field = done.locator("input.set-password-link")
    expect(field).to_be_visible()
    expect(field).to_be_focused()
    link = field.input_value()
    assert link.startswith(f"{stack.site}/request-access/set-password/"), link
    expect(admin.locator("#status")).to_contain_text("Approved")
    expect(admin.locator("#requests-count")).to_be_hidden()
    expect(admin.locator("#nav-requests-badge")).to_be_hidden()
    newbie = admin.locator(f'#user-list li.user-card[data-username="{NEWBIE}"]')
    expect(newbie).to_be_visible()
    # Local mode has no password recovery, so its buttons are not offered (the API would refuse them).
    expect(newbie.locator(".user-recovery-link, .user-reset-email")).to_have_count(0)
    expect(newbie.locator(".user-activate")).to_be_visible()
    screenshot(admin, "users-requests")

    # The stranger sets a password with the link, signs in and sees the public streams.
    stranger.goto(link)
    stranger.get_by_label("New password").fill(NEWBIE_PASSWORD)
    stranger.get_by_label("Repeat it").fill(NEWBIE_PASSWORD)
    stranger.get_by_role("button", name="Set password").click()
    expect(stranger.get_by_role("heading", name="Password set")).to_be_visible()

    stranger.goto(f"{stack.site}/auth/login")
    stranger.get_by_label("Username").fill(NEWBIE)
    stranger.get_by_label("Password").fill(NEWBIE_PASSWORD)
    stranger.get_by_role("button", name="Sign in").click()
    expect(stranger).to_have_url(f"{stack.site}/streams")
    expect(stranger.locator("#stream-list li.stream")).to_have_count(len(PUBLIC_PATHS))
    for path in PUBLIC_PATHS:
        expect(stranger.locator(f'#stream-list li.stream[data-path="{path}"]')).to_be_visible()

    # The link worked once.
    again = stranger.goto(link)
    assert again is not None and again.status == 404
