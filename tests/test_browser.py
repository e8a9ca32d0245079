"""The /streams page and share links in a real browser, through the real Caddy, against the real sidecar.

The fake MediaMTX reports live/cam1, live/cam2 (vid_public), live/private/cam3 (vid_private) and ops/secret (no
rule: admins only). Nothing serves HLS: each context answers the HLS origin itself and records what the player
asked for, so the tests see the exact URL and the Bearer token a real MediaMTX would get.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import BrowserContext, Locator, Page, Response, expect

from sidecar.share_links import GONE
from tests.browser_fixtures import (
    ADMIN_USER,
    CHROMIUM,
    PRIVATE_PATH,
    PUBLIC_PATHS,
    UNRULED_PATH,
    BrowserStack,
    HlsStandIn,
    jwt_claims,
    screenshot,
    sign_in,
)
from tests.processes_fixtures import ADMIN_PASSWORD, VIEWER_PASSWORD, VIEWER_USER

pytestmark = [
    pytest.mark.browser,
    pytest.mark.caddy,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} is missing: `make browser` installs it"),
]

HIDDEN = (PRIVATE_PATH, UNRULED_PATH)
CAM1, CAM2 = PUBLIC_PATHS
# How soon a viewer's list must follow an admin's change (the page polls every 3 s).
WITHIN_5_S = 5000

NewContext = Callable[..., BrowserContext]


def stream(page: Page, path: str) -> Locator:
    return page.locator(f'#stream-list li.stream[data-path="{path}"]')


def open_streams(new_context: NewContext, stack: BrowserStack, username: str, password: str, **options: object) -> Page:
    context = new_context(**options)
    page = context.new_page()
    sign_in(page, stack.site, username, password)
    expect(page.locator("#streams-app")).to_be_visible()
    return page


def viewer_page(new_context: NewContext, stack: BrowserStack, **options: object) -> Page:
    page = open_streams(new_context, stack, VIEWER_USER, VIEWER_PASSWORD, **options)
    expect(page.locator("#stream-list li.stream")).to_have_count(len(PUBLIC_PATHS))
    return page


def admin_page(new_context: NewContext, stack: BrowserStack, **options: object) -> Page:
    page = open_streams(new_context, stack, ADMIN_USER, ADMIN_PASSWORD, **options)
    expect(page.locator("#stream-list li.stream")).to_have_count(len(PUBLIC_PATHS) + len(HIDDEN))
    expect(page.locator("#streams-app")).to_have_attribute("data-is-admin", "true")
    return page


def with_hls(page: Page, stack: BrowserStack) -> HlsStandIn:
    hls = HlsStandIn(stack.hls)
    hls.attach(page.context)
    return hls


def played_token(page: Page, hls: HlsStandIn, path: str, start: Callable[[], None]) -> str:
    """Run `start` and return the Bearer token of the playlist request the player then makes for `path`."""
    # Waiting for the response means the route handler has run and recorded the request.
    with page.expect_response(hls.playlist_url(path)):
        start()
    requests = hls.playlist_requests(path)
    assert requests, f"no playlist request for {path}: {[r.url for r in hls.requests]}"
    token = requests[0].bearer
    assert token, f"the playlist request carried no Bearer token: {requests[0].headers}"
    return token


def tab_until_focused(page: Page, target: Locator, presses: int = 25) -> None:
    """Press Tab until `target` has the focus (or give up after `presses`)."""
    for _ in range(presses):
        page.keyboard.press("Tab")
        if target.evaluate("node => node === document.activeElement"):
            break
    expect(target).to_be_focused()


def permitted_paths(claims: dict[str, object]) -> set[str]:
    permissions = claims["mediamtx_permissions"]
    assert isinstance(permissions, list) and permissions
    return {entry["path"] for entry in permissions}


# --- 1. a viewer sees only the streams their groups may watch, and plays one with a Bearer token ----------------


def test_viewer_sees_only_their_streams_and_plays_one_with_a_bearer_token(
    browser_stack: BrowserStack, new_context: NewContext
) -> None:
    stack = browser_stack
    context = new_context(width=1100)
    page = context.new_page()
    hls = with_hls(page, stack)
    api: list[Response] = []
    documents: list[Response] = []

    def record(response: Response) -> None:
        if 300 <= response.status < 400:
            return  # a redirect has no body
        if "/api/v1/" in response.url:
            api.append(response)
        elif response.url == f"{stack.site}/streams":
            documents.append(response)

    page.on("response", record)
    sign_in(page, stack.site, VIEWER_USER, VIEWER_PASSWORD)

    items = page.locator("#stream-list li.stream")
    expect(items).to_have_count(2)
    assert items.evaluate_all("nodes => nodes.map(node => node.dataset.path)") == list(PUBLIC_PATHS)
    expect(page.locator("#stream-list li.stream[data-ready=true]")).to_have_count(2)
    expect(page.locator("#stream-list .stream-name")).to_have_text(list(PUBLIC_PATHS))
    # A viewer gets no admin controls at all.
    expect(page.locator("#streams-app")).to_have_attribute("data-is-admin", "false")
    expect(page.locator("fieldset.visibility, form.share-form, #rules-section, #sources-section")).to_have_count(0)
    screenshot(page, "streams-viewer-desktop")

    token = played_token(page, hls, CAM1, stream(page, CAM1).locator("button.play-button").click)
    expect(page.locator("video#player")).to_have_attribute("data-playing", CAM1)
    expect(page.locator("#player-title")).to_have_text(CAM1)
    expect(page.locator("#status")).to_have_text(f"Playing {CAM1}.")
    claims = jwt_claims(token)
    assert claims["sub"] == VIEWER_USER
    assert permitted_paths(claims) == {CAM1}

    # Neither the HTML nor any JSON the page received ever named a stream bob may not see.
    assert any(r.url.endswith("/api/v1/streams") for r in api)
    bodies = [page.content()] + [r.text() for r in documents + api]
    for hidden in HIDDEN:
        assert page.get_by_text(hidden).count() == 0
        leaks = [r.url for r, body in zip(documents + api, bodies[1:], strict=True) if hidden in body]
        assert hidden not in bodies[0] and not leaks, f"{hidden} reached the viewer in {leaks}"


# --- 2. an admin's toggle reaches the viewer's list within 5 s ---------------------------------------------------


def test_admin_toggle_hides_a_stream_from_the_viewer_within_5_s(
    browser_stack: BrowserStack, new_context: NewContext
) -> None:
    viewer = viewer_page(new_context, browser_stack)
    admin = admin_page(new_context, browser_stack, width=1100, height=1000)
    status = admin.locator("#status")
    cam2 = stream(admin, CAM2)
    toggle = cam2.locator("input.group-toggle[value=vid_public]")
    expect(toggle).to_be_checked()
    expect(cam2.locator(".rule-info")).to_contain_text("live/**")
    try:
        toggle.click()
        expect(status).to_have_text(f"{CAM2} is now visible to admins only")
        expect(toggle).not_to_be_checked()
        expect(cam2).to_have_attribute("data-exact-rule", "true")
        expect(stream(viewer, CAM2)).to_have_count(0, timeout=WITHIN_5_S)
        expect(stream(viewer, CAM1)).to_have_count(1)
        # What the admin sees: the first two streams' panels, and the confirmation in the status bar at the bottom.
        admin.evaluate("window.scrollTo(0, 0)")
        screenshot(admin, "streams-admin-desktop", full_page=False)

        toggle.click()
        expect(status).to_have_text(f"{CAM2} is now visible to vid_public")
        expect(stream(viewer, CAM2)).to_have_count(1, timeout=WITHIN_5_S)
        expect(stream(viewer, CAM1)).to_have_count(1)
    finally:
        # Leave the rules as they were for the other tests: the path's own rule goes, live/** decides again.
        clear = cam2.locator(".clear-rule")
        if clear.is_visible():
            clear.click()
            expect(status).to_contain_text(f"{CAM2} no longer has its own rule")
    expect(cam2).to_have_attribute("data-exact-rule", "false")
    expect(toggle).to_be_checked()


# --- 3. share links play without signing in, until revoked ------------------------------------------------------


def test_share_link_plays_without_login_until_revoked(browser_stack: BrowserStack, new_context: NewContext) -> None:
    stack = browser_stack
    admin = admin_page(new_context, stack)
    cam1 = stream(admin, CAM1)
    cam1.locator("select.share-ttl").select_option("1h")
    cam1.locator(".share-create").click()
    expect(admin.locator("#status")).to_contain_text(f"Share link for {CAM1} created (expires ")
    url = cam1.locator(".share-result input.share-url").input_value()
    assert url.startswith(f"{stack.site}/share/"), url
    links = cam1.locator("ul.share-links > li.share-link")
    expect(links).to_have_count(1)
    link_id = links.get_attribute("data-id")

    guest_context = new_context(width=1100)
    guest = guest_context.new_page()
    hls = with_hls(guest, stack)
    with guest.expect_response(hls.playlist_url(CAM1)):
        opened = guest.goto(url)
    assert opened is not None and opened.status == 200
    assert guest.url == url, "the share link sent its guest somewhere else (a sign-in page?)"
    assert guest_context.cookies() == []
    expect(guest.get_by_role("heading", level=1)).to_have_text(CAM1)
    token = hls.playlist_requests(CAM1)[0].bearer
    assert token
    claims = jwt_claims(token)
    assert str(claims["sub"]).startswith("share:")
    assert permitted_paths(claims) == {CAM1}
    screenshot(guest, "share-link")

    admin.locator(f'li.share-link[data-id="{link_id}"] .share-revoke').click()
    expect(admin.locator("#status")).to_have_text(f"Share link for {CAM1} revoked")
    expect(links).to_have_count(0)

    reloaded = guest.reload()
    assert reloaded is not None and reloaded.status == 404
    expect(guest.locator("main")).to_contain_text(GONE)
    expect(guest.locator("video")).to_have_count(0)
    token_answer = guest_context.request.post(f"{url}/token", data={})
    assert token_answer.status == 404


# --- 4. keyboard only ------------------------------------------------------------------------------------------


def test_keyboard_tab_reaches_the_first_play_button_and_enter_plays(
    browser_stack: BrowserStack, new_context: NewContext
) -> None:
    page = viewer_page(new_context, browser_stack)
    hls = with_hls(page, browser_stack)
    first_play = page.locator("#stream-list li.stream").first.locator("button.play-button")
    tab_until_focused(page, first_play)
    expect(first_play).to_have_accessible_name(f"Play {CAM1}")

    played_token(page, hls, CAM1, lambda: page.keyboard.press("Enter"))
    video = page.locator("video#player")
    expect(video).to_have_attribute("data-playing", CAM1)
    expect(page.locator("#status")).to_have_text(f"Playing {CAM1}.")

    # Stopping works from the keyboard too, and focus goes back to the stream's Play button.
    tab_until_focused(page, page.locator("#player-stop"))
    page.keyboard.press("Enter")
    expect(page.locator("#player-panel")).to_be_hidden()
    expect(video).not_to_have_attribute("data-playing", CAM1)
    expect(first_play).to_be_focused()


# --- 5. a phone-sized viewport ---------------------------------------------------------------------------------


def test_viewer_page_fits_a_phone(browser_stack: BrowserStack, new_context: NewContext) -> None:
    page = viewer_page(new_context, browser_stack, width=360, height=740, is_mobile=True, has_touch=True)
    expect(page.locator("#stream-list button.play-button")).to_have_count(2)
    for button in page.locator("#stream-list button.play-button").all():
        expect(button).to_be_in_viewport()
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px at 360px"
    screenshot(page, "streams-viewer-phone")
