"""Request access in Authentik mode: a real SMTP server, the fake Authentik behind a switch that takes it down."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from starlette.testclient import TestClient

from sidecar.app import create_app
from sidecar.directory.authentik import AuthentikDirectory
from sidecar.runtime import Services
from sidecar.settings import Settings
from tests.authentik_schema import CheckedTransport, require_contract
from tests.fake_authentik import BASE, TOKEN, FakeAuthentik, create_fake_authentik
from tests.helpers import API_KEY, TRUSTED_PEER, form_token
from tests.test_access_requests import Inbox, _free_port, _text, confirm_link, deliver

ORIGIN = {"origin": "http://testserver"}
KEY = {"x-api-key": API_KEY}
PUBLIC_URL = "https://video.example.org"


class Switch(httpx.AsyncBaseTransport):
    """Authentik on or off: while down (or for the requests `fails` picks) the connection is refused. The requests
    `late` picks are performed but their answer never comes; with `then_down`, Authentik goes down right after."""

    def __init__(self, inner: CheckedTransport) -> None:
        self.inner = inner
        self.down = False
        self.fails: Callable[[httpx.Request], bool] = lambda request: False
        self.late: Callable[[httpx.Request], bool] = lambda request: False
        self.then_down = False
        self.violations: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.down or self.fails(request):
            raise httpx.ConnectError("connection refused", request=request)
        try:
            response = await self.inner.handle_async_request(request)
        except AssertionError as error:  # a request or answer outside Authentik's schema
            self.violations.append(str(error))
            raise
        if self.late(request):
            await response.aread()
            self.down = self.then_down
            raise httpx.ReadTimeout("the answer never came", request=request)
        return response


class Site:
    def __init__(self, client: TestClient, fake: FakeAuthentik, switch: Switch, inbox: Inbox) -> None:
        self.client = client
        self.fake = fake
        self.switch = switch
        self.inbox = inbox

    @property
    def services(self) -> Services:
        found: Services = self.client.app.state.services  # type: ignore[attr-defined]
        return found

    def submit(self, **overrides: str) -> Any:
        form = {
            "name": "Ada Lovelace",
            "username": "ada",
            "email": "ada@example.org",
            "org": "Analytical unit",
            "reason": "I need to watch the drills.",
            "group": "",
            "website": "",
        }
        form.update(overrides)
        form["form_token"] = form_token(self.client)
        response = self.client.post("/request-access", data=form, headers=ORIGIN)
        link = confirm_link(self.client, form["email"])  # the requester confirms from the mailed link
        if response.status_code == 200 and link is not None:
            assert self.client.post(link, headers=ORIGIN).status_code in (200, 404)
        return response

    def pending(self) -> list[dict[str, Any]]:
        answer = self.client.get("/api/v1/access-requests", headers=KEY).json()["requests"]
        return [row for row in answer if row["status"] == "pending"]

    def approve(self, request_id: int, groups: list[str]) -> Any:
        return self.client.post(f"/api/v1/access-requests/{request_id}/approve", json={"groups": groups}, headers=KEY)

    def mail(self, address: str, subject: str) -> list[str]:
        return [_text(m) for m in self.inbox.to(address) if subject in str(m["Subject"])]


@pytest.fixture
def make_site(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Site]]:
    require_contract()
    opened: list[tuple[TestClient, Controller]] = []

    def factory(**overrides: Any) -> Site:
        inbox = Inbox()
        controller = Controller(inbox.handler, hostname="127.0.0.1", port=_free_port())
        controller.start()
        settings = make_settings(
            mode="authentik",
            authentik_url=BASE + "/",
            authentik_token=TOKEN,
            smtp_host="127.0.0.1",
            smtp_port=controller.port,
            smtp_starttls=False,
            public_url=PUBLIC_URL,
            **overrides,
        )
        fake = create_fake_authentik()
        switch = Switch(CheckedTransport(httpx.ASGITransport(app=fake.app), require_contract()))
        client = TestClient(create_app(settings, transport=switch), client=TRUSTED_PEER, base_url="http://testserver")
        client.__enter__()
        opened.append((client, controller))
        site = Site(client, fake, switch, inbox)
        inbox.settle = lambda: deliver(client)
        directory = site.services.directory
        assert isinstance(directory, AuthentikDirectory)
        directory.client._retry_backoff = (0.0,)  # one quick retry instead of waiting a second per read
        return site

    yield factory
    for client, controller in opened:
        client.__exit__(None, None, None)
        with contextlib.suppress(AssertionError):
            controller.stop()


def _assert_one_active_ada(site: Site, groups: list[str]) -> None:
    found = [user for user in site.fake.users.values() if user.username == "ada"]
    assert len(found) == 1 and found[0].is_active
    assert sorted(group.name for group in site.fake.groups_of(found[0])) == groups
    assert site.fake.requests and site.switch.violations == []


def test_request_while_authentik_is_down_then_approval_once_it_is_back(make_site: Callable[..., Site]) -> None:
    site = make_site()
    site.switch.down = True
    assert site.submit().status_code == 200
    [pending] = site.pending()
    assert site.mail("ada@example.org", "Confirm your request")
    assert site.mail("alice@example.org", "New access request") == []  # the directory could not be asked

    refused = site.approve(pending["id"], ["vid_public"])
    assert refused.status_code == 503, refused.text
    assert "Authentik is unreachable" in refused.text
    assert [row["id"] for row in site.pending()] == [pending["id"]]
    assert site.fake.user_named("ada") is None

    site.switch.down = False
    approved = site.approve(pending["id"], ["vid_public", "vid_private"])
    assert approved.status_code == 200, approved.text
    assert approved.json()["groups"] == ["vid_private", "vid_public"]
    again = site.approve(pending["id"], ["vid_public"])
    assert again.status_code == 200 and again.json()["already"] is True
    _assert_one_active_ada(site, ["vid_private", "vid_public"])
    [body] = site.mail("ada@example.org", "approved")
    assert f"{BASE}/if/flow/recovery/?flow_token=" in body
    assert site.fake.recovery_emails == []
    assert site.pending() == []


def test_recovery_email_stage_sends_authentik_recovery_email(make_site: Callable[..., Site]) -> None:
    stage = str(uuid.uuid4())
    site = make_site(authentik_recovery_email_stage=stage)
    site.submit(group="vid_public")
    [pending] = site.pending()
    assert site.approve(pending["id"], ["vid_public"]).status_code == 200
    _assert_one_active_ada(site, ["vid_public"])
    assert site.fake.recovery_emails == [("ada", stage)]
    [body] = site.mail("ada@example.org", "approved")
    assert "flow_token" not in body and "separate email" in body


def test_approval_interrupted_after_the_account_was_created_is_retried_without_a_second_account(
    make_site: Callable[..., Site],
) -> None:
    site = make_site()
    site.submit()
    [pending] = site.pending()
    site.switch.fails = lambda request: request.url.path.endswith("/add_user/")
    assert site.approve(pending["id"], ["vid_public"]).status_code == 503
    assert [row["id"] for row in site.pending()] == [pending["id"]]
    site.switch.fails = lambda request: False
    assert site.approve(pending["id"], ["vid_public"]).status_code == 200
    _assert_one_active_ada(site, ["vid_public"])


def _creates_a_user(request: httpx.Request) -> bool:
    return request.method == "POST" and request.url.path.endswith("/core/users/")


def test_an_account_created_but_answered_late_is_read_back_and_the_approval_finishes(
    make_site: Callable[..., Site],
) -> None:
    site = make_site()
    site.submit()
    [pending] = site.pending()
    site.switch.late = _creates_a_user
    answer = site.approve(pending["id"], ["vid_public"])
    assert answer.status_code == 200, answer.text
    _assert_one_active_ada(site, ["vid_public"])
    assert [row["status"] for row in site.client.get("/api/v1/access-requests", headers=KEY).json()["requests"]] == [
        "approved"
    ]


def test_an_approval_cut_off_after_authentik_created_the_account_is_finished_by_its_retry(
    make_site: Callable[..., Site],
) -> None:
    """Authentik made the account and then went away (the answer and the read-back both lost): the retry adopts the
    account its own attempt created instead of answering 409 for ever, and meanwhile nobody could sign in with it."""
    site = make_site()
    site.submit()
    [pending] = site.pending()
    site.switch.late = _creates_a_user
    site.switch.then_down = True
    assert site.approve(pending["id"], ["vid_public"]).status_code == 503
    ada = site.fake.user_named("ada")
    assert ada is not None and not ada.is_active and site.fake.groups_of(ada) == []
    site.switch.down = False
    site.switch.late = lambda request: False
    retried = site.approve(pending["id"], ["vid_public"])
    assert retried.status_code == 200, retried.text
    _assert_one_active_ada(site, ["vid_public"])


def test_an_account_another_approval_created_is_not_adopted(make_site: Callable[..., Site]) -> None:
    """Two requests for one username: the second approval finds the first one's account, made with another claim."""
    site = make_site()
    site.submit()
    site.submit(email="someone-else@example.org", name="Not Ada")
    first, second = sorted(site.pending(), key=lambda row: int(row["id"]))
    assert site.approve(first["id"], ["vid_public"]).status_code == 200
    refused = site.approve(second["id"], ["vid_private"])
    assert refused.status_code == 409, refused.text
    _assert_one_active_ada(site, ["vid_public"])


def test_existing_directory_account_is_not_adopted(make_site: Callable[..., Site]) -> None:
    site = make_site()
    site.submit(username="bob", email="other@example.org")
    [pending] = site.pending()
    assert site.approve(pending["id"], ["vid_private"]).status_code == 409
    bob = site.fake.user_named("bob")
    assert bob is not None and "vid_private" not in [group.name for group in site.fake.groups_of(bob)]


def test_directory_admins_are_notified_with_a_review_link_that_leads_to_the_users_page(
    make_site: Callable[..., Site],
) -> None:
    site = make_site()
    site.fake.add_user("zed", "vid_admin", name="Zed", email="zed@example.org", is_active=False)
    site.fake.add_user("tak", "tak_admin", name="Tak", email="tak@example.org")
    assert site.submit().status_code == 200
    [pending] = site.pending()
    [body] = site.mail("alice@example.org", "New access request")
    assert {m["To"] for m in site.inbox.messages} == {"ada@example.org", "alice@example.org"}
    assert f"{PUBLIC_URL}/request-access/review/" in body
    secret = body.split("/request-access/review/", 1)[1].split()[0]
    for _ in range(2):  # no admin identity on this public path: it only leads on, and is not spent
        response = site.client.get(f"/request-access/review/{secret}", follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == f"/users#request-{pending['id']}"
    gone = site.client.get("/request-access/review/" + "B" * 43, follow_redirects=False)
    assert gone.status_code == 404
    assert site.switch.violations == []
