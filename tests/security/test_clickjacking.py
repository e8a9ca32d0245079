"""Clickjacking: a page of another site framing the sidecar's pages (or the editor behind it) to dress a button of ours
as something else. Every answer through the real Caddy forbids framing."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.processes_fixtures import ADMIN_PASSWORD, Endpoint

pytestmark = pytest.mark.caddy

PAGES = ("/auth/login", "/request-access", "/streams", "/users", "/audit", "/share/" + "a" * 43, "/", "/no-such-page")


@pytest.fixture(scope="module")
def admin(caddy_local: Endpoint) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=caddy_local.url, timeout=20) as client:
        signed_in = client.post("/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        assert signed_in.status_code == 200, signed_in.text
        yield client


def assert_unframeable(response: httpx.Response) -> None:
    assert response.headers.get("x-frame-options") == "DENY", (response.request.url, dict(response.headers))
    policies = response.headers.get_list("content-security-policy")
    assert any("frame-ancestors 'none'" in policy for policy in policies), policies
    assert response.headers.get("x-content-type-options") == "nosniff"


@pytest.mark.parametrize("path", PAGES)
def test_no_page_can_be_framed_by_another_site_when_signed_in(admin: httpx.Client, path: str) -> None:
    # "/" is the editor behind the sidecar (an echo here): its answers are refused to frames as well.
    assert_unframeable(admin.get(path, headers={"Accept": "text/html", "Sec-Fetch-Dest": "iframe"}))


@pytest.mark.parametrize("path", PAGES)
def test_no_page_can_be_framed_by_another_site_when_anonymous(caddy_local: Endpoint, path: str) -> None:
    response = httpx.get(caddy_local.url + path, headers={"Accept": "text/html"}, timeout=20)
    assert_unframeable(response)


def test_api_answers_and_errors_cannot_be_framed_either(admin: httpx.Client) -> None:
    for response in (admin.get("/api/v1/me"), admin.get("/api/v1/nothing-here"), admin.post("/api/v1/rules")):
        assert_unframeable(response)
