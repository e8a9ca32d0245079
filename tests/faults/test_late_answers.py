"""Authentik writes that happened but were answered too late (authentik mode): the sidecar reads the person back and
treats the write as done — answered, audited and acted on (revocation included) — and a retry after a late answer
finishes the job instead of refusing it for ever."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from sidecar.app import create_app
from sidecar.directory.authentik import AuthentikDirectory
from sidecar.runtime import Services
from sidecar.settings import Settings
from tests.fake_authentik import BASE, TOKEN, FakeAuthentik, FakeUser, SplitTransport, create_fake_authentik
from tests.fake_mediamtx import FakeMediaMTX, create_fake_mediamtx
from tests.helpers import API_KEY, TRUSTED_PEER, callback_body

KEY = {"x-api-key": API_KEY}
ALICE = {"x-authentik-username": "alice", "x-authentik-groups": "vid_admin"}
BOB = {"x-authentik-username": "bob", "x-authentik-groups": "vid_public|tak_ops"}
VERA = {"x-authentik-username": "vera", "x-authentik-groups": "vid_public"}  # only in video groups
MEDIAMTX = "mediamtx.test"


class LateAnswers(httpx.AsyncBaseTransport):
    """Authentik that performs what it is asked, but for the requests `late` picks the answer never arrives; with
    `then_down`, Authentik is unreachable from that moment on (so reading back fails too). The requests `refused`
    picks never reach it."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.late: Callable[[httpx.Request], bool] = lambda request: False
        self.refused: Callable[[httpx.Request], bool] = lambda request: False
        self.then_down = False
        self.down = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.down or self.refused(request):
            raise httpx.ConnectError("connection refused", request=request)
        response = await self.inner.handle_async_request(request)
        if self.late(request):
            await response.aread()
            self.down = self.then_down
            raise httpx.ReadTimeout("the answer never came", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def writes_to(suffix: str, method: str = "POST") -> Callable[[httpx.Request], bool]:
    return lambda request: request.method == method and request.url.path.endswith(suffix)


@dataclass
class Site:
    client: TestClient
    authentik: FakeAuthentik
    mediamtx: FakeMediaMTX
    wire: LateAnswers

    @property
    def services(self) -> Services:
        found: Services = self.client.app.state.services  # type: ignore[attr-defined]
        return found

    def write(self, identity: dict[str, str], method: str, path: str, body: Any = None) -> httpx.Response:
        csrf = self.client.get("/api/v1/me", headers=identity).json()["csrf_token"]
        headers = {**identity, "x-csrf-token": csrf, "origin": "http://testserver"}
        return self.client.request(method, path, json=body, headers=headers)

    def play(self, viewer: dict[str, str] = BOB, path: str = "live/cam1") -> tuple[str, str]:
        """The viewer starts playing `path` over RTSP: (their token, the session id MediaMTX knows)."""
        answer = self.write(viewer, "POST", "/api/v1/streams/token", {"path": path})
        assert answer.status_code == 200, answer.text
        token: str = answer.json()["token"]
        session = str(uuid.uuid4())
        assert self.callback(token, session, path).status_code == 200
        self.mediamtx.add_session("rtspsessions", id=session, path=path, user="")
        return token, session

    def callback(self, token: str, session: str | None = None, path: str = "live/cam1") -> httpx.Response:
        return self.client.post("/mediamtx/auth", json=callback_body(token=token, id=session, path=path))

    def settle(self) -> None:
        self.client.portal.call(self.services.revoker.idle)

    def audit(self, action: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = self.client.get(f"/api/v1/audit?action={action}", headers=KEY).json()["events"]
        return events

    def user(self, username: str) -> FakeUser:
        found = self.authentik.user_named(username)
        assert found is not None
        return found

    def groups(self, username: str) -> list[str]:
        return sorted(group.name for group in self.authentik.groups_of(self.user(username)))


@pytest.fixture
def site(make_settings: Callable[..., Settings]) -> Iterator[Site]:
    settings = make_settings(
        mode="authentik",
        authentik_url=BASE,
        authentik_token=TOKEN,
        bootstrap_password=None,
        mediamtx_api_url=f"http://{MEDIAMTX}",
    )
    authentik = create_fake_authentik()
    authentik.add_user("vera", "vid_public", name="Vera", email="vera@example.org")
    mediamtx = create_fake_mediamtx()
    mediamtx.add_path("live/cam1", ready=True)
    wire = LateAnswers(httpx.ASGITransport(app=authentik.app))
    split = SplitTransport({MEDIAMTX: httpx.ASGITransport(app=mediamtx.app)}, wire)
    with TestClient(create_app(settings, transport=split), client=TRUSTED_PEER, base_url="http://testserver") as client:
        found = Site(client, authentik, mediamtx, wire)
        directory = found.services.directory
        assert isinstance(directory, AuthentikDirectory)
        directory.client._retry_backoff = (0.0,)  # one quick retry instead of waiting a second per read
        rule = {"pattern": "live/**", "groups": ["vid_public"]}
        assert client.put("/api/v1/rules", json=rule, headers=KEY).status_code == 200
        yield found
        found.settle()


def test_a_removal_answered_late_is_done_audited_and_revoked(site: Site) -> None:
    token, session = site.play()
    site.wire.late = writes_to("/remove_user/")
    answer = site.write(ALICE, "DELETE", "/api/v1/users/bob/groups/vid_public")
    assert answer.status_code == 200, answer.text
    assert answer.json()["changed"] is True
    site.settle()
    assert site.groups("bob") == ["tak_ops"]
    assert [event["target"] for event in site.audit("group.remove")] == ["bob"]
    assert site.callback(token).status_code == 401  # the old token stops working at once
    assert ("rtspsessions", session) in site.mediamtx.kicked


def test_a_retried_removal_that_finds_the_person_already_out_still_revokes(site: Site) -> None:
    """The first attempt's answer and the read-back both fail (Authentik went away right after the write): the admin
    sees a 503 and retries once Authentik is back; the retry finds bob already out, and his access must still go."""
    token, session = site.play()
    site.wire.late = writes_to("/remove_user/")
    site.wire.then_down = True
    first = site.write(ALICE, "DELETE", "/api/v1/users/bob/groups/vid_public")
    assert first.status_code == 503, first.text
    assert site.groups("bob") == ["tak_ops"]  # Authentik did it all the same
    site.wire.down = False
    site.wire.late = lambda request: False
    retry = site.write(ALICE, "DELETE", "/api/v1/users/bob/groups/vid_public")
    assert retry.status_code == 200, retry.text
    site.settle()
    assert [event["target"] for event in site.audit("group.remove")] == ["bob"]
    assert site.callback(token).status_code == 401
    assert ("rtspsessions", session) in site.mediamtx.kicked
    # Once revoked, a further retry is quiet: nothing more to record.
    again = site.write(ALICE, "DELETE", "/api/v1/users/bob/groups/vid_public")
    assert again.status_code == 200 and again.json()["changed"] is False
    assert len(site.audit("group.remove")) == 1


def test_an_addition_answered_late_is_reported_as_done_and_audited(site: Site) -> None:
    site.wire.late = writes_to("/add_user/")
    answer = site.write(ALICE, "PUT", "/api/v1/users/bob/groups/vid_private")
    assert answer.status_code == 200, answer.text
    assert answer.json()["changed"] is True
    assert "vid_private" in site.groups("bob")
    assert [event["detail"] for event in site.audit("group.add")] == [{"group": "vid_private"}]


def test_a_deactivation_answered_late_is_done_and_revoked(site: Site) -> None:
    token, session = site.play(VERA)
    site.wire.late = writes_to(f"/core/users/{site.user('vera').pk}/", "PATCH")
    answer = site.write(ALICE, "PATCH", "/api/v1/users/vera", {"is_active": False})
    assert answer.status_code == 200, answer.text
    site.settle()
    assert site.user("vera").is_active is False
    assert [event["target"] for event in site.audit("user.deactivate")] == ["vera"]
    assert site.callback(token).status_code == 401
    assert ("rtspsessions", session) in site.mediamtx.kicked


def test_a_write_that_really_failed_is_still_a_503_and_changes_nothing(site: Site) -> None:
    """The read-back is no licence to claim success: Authentik refused before doing anything."""
    site.wire.refused = writes_to("/remove_user/")
    answer = site.write(ALICE, "DELETE", "/api/v1/users/bob/groups/vid_public")
    assert answer.status_code == 503
    assert site.groups("bob") == ["tak_ops", "vid_public"]
    assert site.audit("group.remove") == []
