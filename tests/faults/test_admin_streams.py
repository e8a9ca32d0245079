"""Admins' stream list does not depend on the directory (authentik mode): with Authentik failing, `/api/v1/streams`
still lists the streams and their rules for admins; only the group list for the toggles is missing, and says why."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from starlette.testclient import TestClient

from sidecar.app import create_app
from sidecar.settings import Settings
from tests.fake_authentik import BASE, TOKEN, SplitTransport, create_fake_authentik
from tests.fake_mediamtx import create_fake_mediamtx
from tests.helpers import API_KEY, TRUSTED_PEER

ALICE = {"x-authentik-username": "alice", "x-authentik-groups": "vid_admin"}
BOB = {"x-authentik-username": "bob", "x-authentik-groups": "vid_public|tak_ops"}


class Failing(httpx.AsyncBaseTransport):
    """The fake Authentik until `failing`; then every request gets a 500, or a refused connection (`refuse`)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, refuse: bool) -> None:
        self.inner = inner
        self.refuse = refuse
        self.failing = False
        self.failed = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.failing:
            return await self.inner.handle_async_request(request)
        self.failed += 1
        if self.refuse:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(500, text="<html>Server Error</html>", request=request)


@pytest.mark.parametrize("refuse", [True, False], ids=["refused", "500"])
def test_admins_see_streams_and_rules_while_authentik_fails(
    make_settings: Callable[..., Settings], refuse: bool
) -> None:
    settings = make_settings(
        mode="authentik",
        authentik_url=BASE,
        authentik_token=TOKEN,
        bootstrap_password=None,
        mediamtx_api_url="http://mediamtx.test",
    )
    mediamtx = create_fake_mediamtx()
    mediamtx.add_path("live/cam1", ready=True)
    authentik = Failing(httpx.ASGITransport(app=create_fake_authentik().app), refuse)
    split = SplitTransport({"mediamtx.test": httpx.ASGITransport(app=mediamtx.app)}, authentik)
    with TestClient(create_app(settings, transport=split), client=TRUSTED_PEER, base_url="http://testserver") as client:
        rule = {"pattern": "live/**", "groups": ["vid_public"]}
        assert client.put("/api/v1/rules", json=rule, headers={"x-api-key": API_KEY}).status_code == 200
        for person in (ALICE, BOB):  # signed in before the fault: the directory confirmed their groups
            assert client.get("/api/v1/me", headers=person).status_code == 200
        authentik.failing = True
        admin = client.get("/api/v1/streams", headers=ALICE)
        viewer = client.get("/api/v1/streams", headers=BOB)
    assert admin.status_code == 200, admin.text
    body = admin.json()
    assert [(s["name"], s["rule"]) for s in body["streams"]] == [
        ("live/cam1", {"pattern": "live/**", "groups": ["vid_public"]})
    ]
    assert "groups" not in body
    assert "group list could not be read" in body["groups_error"]
    assert authentik.failed > 0  # the directory was asked, and failed
    assert viewer.status_code == 200 and [s["name"] for s in viewer.json()["streams"]] == ["live/cam1"]
