"""Request access: the public form, the admin decision, set-password links and email through a real SMTP server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from email import message_from_bytes
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from limits import parse
from starlette.testclient import TestClient

from sidecar import access_requests as access_requests_module
from sidecar.processes import free_port
from sidecar.runtime import Services
from sidecar.settings import Settings
from tests.helpers import API_KEY, form_token, login

ORIGIN = {"origin": "http://testserver"}
KEY = {"x-api-key": API_KEY}


class Receiver:
    """The aiosmtpd handler of an Inbox."""

    def __init__(self, messages: list[Message]) -> None:
        self.messages = messages

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        assert isinstance(envelope.content, bytes)
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


class Inbox:
    """What the SMTP server received (aiosmtpd gets `handler`). The sidecar's outbox worker sends mail after the
    request is answered, so every read first runs `settle` (set once the app exists): it waits for what is queued."""

    def __init__(self) -> None:
        self._messages: list[Message] = []
        self.handler = Receiver(self._messages)
        self.settle: Callable[[], object] = lambda: None

    @property
    def messages(self) -> list[Message]:
        self.settle()
        return self._messages

    def to(self, address: str) -> list[Message]:
        return [message for message in self.messages if message["To"] == address]


def deliver(client: TestClient) -> None:
    """Send what the requests so far queued: one round of the outbox, on the app's loop (it waits for a round the
    worker may be in)."""
    assert client.portal is not None
    client.portal.call(_services(client).mailer.flush)


def _text(message: Message) -> str:
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode()


def _free_port() -> int:
    return free_port()


@pytest.fixture
def smtp() -> Iterator[tuple[Controller, Inbox]]:
    inbox = Inbox()
    controller = Controller(inbox.handler, hostname="127.0.0.1", port=_free_port())
    controller.start()
    yield controller, inbox
    with contextlib.suppress(AssertionError):  # already stopped by the test
        controller.stop()


@pytest.fixture
def app_client(
    settings: Settings, smtp: tuple[Controller, Inbox], make_client: Callable[..., TestClient]
) -> TestClient:
    controller, inbox = smtp
    mailing = settings.model_copy(
        update={
            "smtp_host": "127.0.0.1",
            "smtp_port": controller.port,
            "smtp_starttls": False,
            "public_url": "http://testserver",
        }
    )
    client = make_client(app_settings=mailing)
    inbox.settle = lambda: deliver(client)
    svc = _services(client)
    with svc.store.transaction() as db:
        for group in ("vid_public", "vid_ops"):
            svc.store.insert_group(db, group)
        svc.store.insert_group(db, "tak_ops")
        db.execute("UPDATE users SET email = 'admin@example.org' WHERE username = 'admin'")
    return client


def _services(client: TestClient) -> Services:
    found: Services = client.app.state.services  # type: ignore[attr-defined]
    return found


def _form(**overrides: str) -> dict[str, str]:
    values = {
        "name": "Ada Lovelace",
        "username": "ada",
        "email": "ada@example.org",
        "org": "Analytical unit",
        "reason": "I need to watch the drills.",
        "group": "vid_public",
        "website": "",
    }
    values.update(overrides)
    return values


def _submit_unconfirmed(client: TestClient, **overrides: str) -> Any:
    data = {"form_token": form_token(client), **_form(**overrides)}
    return client.post("/request-access", data=data, headers=ORIGIN)


def confirm_link(client: TestClient, address: str) -> str | None:
    """The path of the newest confirmation link mailed to `address` (read from the outbox, sent or not)."""
    rows = _services(client).store._read(
        "SELECT body FROM outbox WHERE recipient = ? AND subject LIKE 'Confirm%' ORDER BY id DESC LIMIT 1", (address,)
    )
    if not rows:
        return None
    return "/request-access/confirm/" + str(rows[0][0]).split("/request-access/confirm/", 1)[1].split()[0]


def _submit(client: TestClient, **overrides: str) -> Any:
    """Submit the form and confirm the request from the mailed link, as the requester would."""
    response = _submit_unconfirmed(client, **overrides)
    if response.status_code == 200:
        link = confirm_link(client, _form(**overrides)["email"].lower())
        if link is not None:
            assert client.post(link, headers=ORIGIN).status_code in (200, 404)
    return response


def _pending(client: TestClient) -> list[dict[str, Any]]:
    return [
        r for r in client.get("/api/v1/access-requests", headers=KEY).json()["requests"] if r["status"] == "pending"
    ]


def test_form_lists_only_prefixed_non_admin_groups(app_client: TestClient) -> None:
    page = app_client.get("/request-access")
    assert page.status_code == 200
    assert 'value="vid_public"' in page.text and 'value="vid_ops"' in page.text
    assert "tak_ops" not in page.text and 'value="vid_admin"' not in page.text
    assert 'name="website"' in page.text


def test_request_reaches_admins_only_once_the_requester_confirmed_the_email(
    app_client: TestClient, smtp: tuple[Controller, Inbox]
) -> None:
    _, inbox = smtp
    response = _submit_unconfirmed(app_client)
    assert response.status_code == 200
    assert "Request received" in response.text and "Check your email" in response.text
    assert _pending(app_client) == []  # admins do not see it yet
    assert inbox.to("admin@example.org") == []
    [confirmation] = inbox.to("ada@example.org")
    assert confirmation["Subject"] == "Confirm your request for stream access"
    link = confirm_link(app_client, "ada@example.org")
    assert link is not None and link in _text(confirmation)

    page = app_client.get(link)  # a mail scanner following the link confirms nothing
    assert page.status_code == 200 and "Confirm my request" in page.text
    assert _pending(app_client) == []
    done = app_client.post(link, headers=ORIGIN)
    assert done.status_code == 200 and "Request confirmed" in done.text
    [stored] = _pending(app_client)
    assert (stored["username"], stored["email"], stored["requested_group"]) == ("ada", "ada@example.org", "vid_public")
    assert stored["email_confirmed"] is True
    [admin_mail] = inbox.to("admin@example.org")
    body = _text(admin_mail)
    assert isinstance(body, str) and "ada" in body and "/users#requests" in body
    assert app_client.post(link, headers=ORIGIN).status_code == 404  # once
    svc = _services(app_client)
    assert svc.store.list_audit(action="access.request")[0].target == "ada"
    assert svc.store.list_audit(action="access.confirm")[0].target == "ada"


def test_a_cross_origin_confirmation_confirms_nothing(app_client: TestClient) -> None:
    _submit_unconfirmed(app_client)
    link = confirm_link(app_client, "ada@example.org")
    assert link is not None
    assert app_client.post(link, headers={"origin": "https://evil.example"}).status_code == 403
    assert _pending(app_client) == []


def test_without_smtp_requests_go_to_admins_unconfirmed_and_nothing_is_mailed(
    settings: Settings, make_client: Callable[..., TestClient]
) -> None:
    client = make_client()
    assert _submit_unconfirmed(client).status_code == 200
    [stored] = _pending(client)
    assert stored["email_confirmed"] is False
    svc = _services(client)
    assert svc.store._read("SELECT COUNT(*) FROM outbox")[0][0] == 0
    answer = _approve(client, stored["id"], ["vid_public"], KEY).json()
    assert answer["emailed"] is False and answer["set_password_link"].startswith("http://testserver/")
    assert "never confirmed" in answer["note"]
    created = svc.store.get_user("ada")
    assert created is not None and created["email"] == ""  # an unproven address is not given to the account


def test_existing_username_gets_the_same_answer(app_client: TestClient) -> None:
    new = _submit(app_client, username="newcomer", email="new@example.org")
    existing = _submit(app_client, username="admin", email="someone@example.org")
    assert (new.status_code, new.text) == (existing.status_code, existing.text)


def test_honeypot_pretends_success_and_stores_nothing(app_client: TestClient, smtp: tuple[Controller, Inbox]) -> None:
    response = _submit(app_client, website="http://spam.example")
    assert response.status_code == 200 and "Request received" in response.text
    assert _pending(app_client) == []
    assert smtp[1].messages == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("email", "not-an-email"),
        ("email", "a@b.c\r\nBcc: x@y.z"),
        ("username", "bad name"),
        ("name", ""),
        ("group", "tak_ops"),
        ("group", "vid_admin"),
        ("name", "x" * 201),
    ],
)
def test_invalid_input_is_refused_and_not_stored(app_client: TestClient, field: str, value: str) -> None:
    response = _submit(app_client, **{field: value})
    assert response.status_code == 400
    assert _pending(app_client) == []


def test_cross_origin_submission_is_refused(app_client: TestClient) -> None:
    response = app_client.post("/request-access", data=_form(), headers={"origin": "https://evil.example"})
    assert response.status_code == 403
    assert _pending(app_client) == []


def test_rate_limit_per_ip(app_client: TestClient) -> None:
    requests = _services(app_client).access_requests
    requests.per_ip = parse("2/hour")
    assert _submit(app_client).status_code == 200
    assert _submit(app_client, username="bob", email="bob@example.org").status_code == 200
    assert _submit(app_client, username="cy", email="cy@example.org").status_code == 429  # third from the IP


def test_an_address_gets_at_most_ten_confirmation_mails_an_hour_and_three_for_one_username(
    app_client: TestClient, smtp: tuple[Controller, Inbox]
) -> None:
    requests = _services(app_client).access_requests
    requests.per_ip = parse("100/hour")
    for number in range(4):
        assert _submit_unconfirmed(app_client, reason=f"attempt {number}").status_code == 200
    assert len(smtp[1].to("ada@example.org")) == 3  # one username at the address
    for number in range(10):
        assert _submit_unconfirmed(app_client, username=f"ada{number}").status_code == 200
    assert len(smtp[1].to("ada@example.org")) == 10  # the whole address
    assert len(_services(app_client).store.list_audit(action="access.confirm_capped")) == 4


def test_a_repeated_submission_changes_nothing(app_client: TestClient) -> None:
    _submit(app_client)
    _submit(app_client, email="ADA@example.org")  # the same form again
    [kept] = _pending(app_client)
    assert len(_services(app_client).store.list_audit(action="access.request_repeated")) == 1
    _submit(app_client, reason="Second thoughts")  # not the same: a request of its own, the first one unchanged
    first, second = sorted(_pending(app_client), key=lambda row: row["id"])
    assert first == {**kept, "same_username": 1}
    assert second["reason"] == "Second thoughts" and second["same_username"] == 1


def test_pages_escape_user_input(app_client: TestClient) -> None:
    response = _submit(app_client, name="<script>alert(1)</script>", email="bad")
    assert response.status_code == 400
    assert "<script>alert(1)</script>" not in response.text
    assert "&lt;script&gt;" in response.text


def _approve(client: TestClient, request_id: int, groups: list[str], headers: dict[str, str]) -> Any:
    return client.post(f"/api/v1/access-requests/{request_id}/approve", json={"groups": groups}, headers=headers)


def test_approve_creates_one_active_user_with_the_groups_and_a_password_link(
    app_client: TestClient, smtp: tuple[Controller, Inbox]
) -> None:
    _submit(app_client)
    [pending] = _pending(app_client)
    headers = login(app_client)
    first = _approve(app_client, pending["id"], ["vid_public", "vid_ops"], headers)
    assert first.status_code == 200, first.text
    assert first.json()["groups"] == ["vid_ops", "vid_public"] and first.json()["emailed"] is True
    again = _approve(app_client, pending["id"], ["vid_public"], headers)
    assert again.status_code == 200 and again.json()["already"] is True
    svc = _services(app_client)
    assert svc.store.user_groups("ada") == ["vid_ops", "vid_public"]
    created = svc.store.get_user("ada")
    assert created is not None and created["is_active"] == 1
    assert len(svc.store.list_audit(action="access.approve")) == 1
    [mail] = [m for m in smtp[1].to("ada@example.org") if "approved" in m["Subject"]]
    body = _text(mail)
    assert isinstance(body, str) and "http://testserver/request-access/set-password/" in body
    secret = body.split("/request-access/set-password/", 1)[1].split()[0]

    page = app_client.get(f"/request-access/set-password/{secret}")
    assert page.status_code == 200 and "ada" in page.text
    done = app_client.post(
        f"/request-access/set-password/{secret}",
        data={"password": "a-new-password-1", "confirm": "a-new-password-1"},
        headers=ORIGIN,
    )
    assert done.status_code == 200 and "Password set" in done.text
    app_client.post("/auth/logout", headers=headers)
    login(app_client, "ada", "a-new-password-1")
    assert app_client.get(f"/request-access/set-password/{secret}").status_code == 404
    reuse = app_client.post(
        f"/request-access/set-password/{secret}",
        data={"password": "another-password-2", "confirm": "another-password-2"},
        headers=ORIGIN,
    )
    assert reuse.status_code == 404


def test_concurrent_approvals_create_one_user(app_client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    _submit(app_client)
    [pending] = _pending(app_client)
    results: list[int] = []
    directory = _services(app_client).users.directory
    create_user = directory.create_user

    async def slow_create(username: str, **fields: Any) -> Any:
        await asyncio.sleep(0.2)  # the other approvals arrive while this one is creating the user
        return await create_user(username, **fields)

    monkeypatch.setattr(directory, "create_user", slow_create)

    def approve() -> None:
        results.append(_approve(app_client, pending["id"], ["vid_public"], KEY).status_code)

    threads = [threading.Thread(target=approve) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 409 in results and set(results) <= {200, 409}
    svc = _services(app_client)
    assert len(svc.store.list_audit(action="access.approve")) == 1
    assert svc.store.get_user("ada") is not None


def test_approving_with_a_foreign_group_is_refused_and_audited(app_client: TestClient) -> None:
    _submit(app_client)
    [pending] = _pending(app_client)
    response = _approve(app_client, pending["id"], ["vid_public", "tak_ops"], KEY)
    assert response.status_code == 403
    assert _services(app_client).store.list_audit(action="group.denied")[0].target == "tak_ops"
    assert _services(app_client).store.get_user("ada") is None
    assert _pending(app_client)[0]["id"] == pending["id"]


def test_reject_sends_the_message(app_client: TestClient, smtp: tuple[Controller, Inbox]) -> None:
    _submit(app_client)
    [pending] = _pending(app_client)
    response = app_client.post(
        f"/api/v1/access-requests/{pending['id']}/reject", json={"message": "Not this time"}, headers=KEY
    )
    assert response.status_code == 200 and response.json()["status"] == "rejected"
    assert _pending(app_client) == []
    [mail] = [m for m in smtp[1].to("ada@example.org") if "declined" in m["Subject"]]
    assert "Not this time" in _text(mail)
    assert _approve(app_client, pending["id"], ["vid_public"], KEY).status_code == 409
    assert _services(app_client).store.list_audit(action="access.reject")[0].target == "ada"


def test_expired_set_password_link_is_404(app_client: TestClient, settings: Settings) -> None:
    svc = _services(app_client)
    svc.access_requests.clock = lambda: 1000.0
    _submit(app_client)
    [pending] = _pending(app_client)
    svc.mailer.settings = svc.mailer.settings.model_copy(update={"smtp_host": None})
    answer = _approve(app_client, pending["id"], ["vid_public"], KEY).json()
    link = answer["set_password_link"]
    secret = link.rsplit("/", 1)[1]
    svc.access_requests.clock = lambda: 1000.0 + 72 * 3600 + 1
    assert app_client.get(f"/request-access/set-password/{secret}").status_code == 404
    response = app_client.post(
        f"/request-access/set-password/{secret}",
        data={"password": "a-new-password-1", "confirm": "a-new-password-1"},
        headers=ORIGIN,
    )
    assert response.status_code == 404


def test_mail_waits_in_the_outbox_while_smtp_is_down(app_client: TestClient, smtp: tuple[Controller, Inbox]) -> None:
    controller, inbox = smtp
    controller.stop()
    assert _submit(app_client).status_code == 200  # submitted and confirmed while the mail server is down
    assert len(_pending(app_client)) == 1
    svc = _services(app_client)
    deliver(app_client)
    waiting = svc.store.pending_mail(None)
    assert {row["recipient"] for row in waiting} == {"ada@example.org", "admin@example.org"}
    assert all(row["attempts"] >= 1 and row["last_error"] for row in waiting)

    restarted = Controller(inbox.handler, hostname="127.0.0.1", port=controller.port)
    restarted.start()
    try:
        assert _submit(app_client, username="bob", email="bob@example.org").status_code == 200
        deliver(app_client)
    finally:
        restarted.stop()
    assert svc.store.pending_mail(None) == []
    assert {m["To"] for m in inbox.messages} == {"ada@example.org", "bob@example.org", "admin@example.org"}


def test_admin_api_refuses_viewers_anonymous_and_missing_csrf(app_client: TestClient) -> None:
    _submit(app_client)
    [pending] = _pending(app_client)
    assert app_client.get("/api/v1/access-requests").status_code == 401
    svc = _services(app_client)
    with svc.store.transaction() as db:
        svc.store.insert_user(db, "viewer", email="", name="", password_hash=None, active=True)
        svc.store.add_membership(db, "viewer", "vid_public")
    app_client.cookies.clear()
    viewer = {"x-authentik-username": "viewer", "x-authentik-groups": "vid_public"}
    assert app_client.get("/api/v1/access-requests", headers=viewer).status_code == 403
    headers = login(app_client)
    no_csrf = _approve(app_client, pending["id"], ["vid_public"], {"origin": "http://testserver"})
    assert no_csrf.status_code == 403
    assert _approve(app_client, pending["id"], ["vid_public"], headers).status_code == 200


def _review_secret(inbox: Inbox, address: str = "admin@example.org") -> str:
    [mail] = [m for m in inbox.to(address) if m["Subject"] == "New access request"]
    return _text(mail).split("/request-access/review/", 1)[1].split()[0]


def test_review_link_is_random_single_use_for_admins_only_and_audited(
    app_client: TestClient, smtp: tuple[Controller, Inbox]
) -> None:
    _submit(app_client)
    [pending] = _pending(app_client)
    secret = _review_secret(smtp[1])
    assert len(base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))) * 8 >= 128
    svc = _services(app_client)
    stored = [row[0] for row in svc.store._read("SELECT secret_hash FROM review_links")]
    assert stored and secret not in stored  # only a digest is kept
    url = f"/request-access/review/{secret}"

    anonymous = app_client.get(url, follow_redirects=False)
    assert anonymous.status_code == 302 and anonymous.headers["location"].startswith("/auth/login?next=")
    with svc.store.transaction() as db:
        svc.store.insert_user(db, "viewer", email="", name="", password_hash=None, active=True)
        svc.store.add_membership(db, "viewer", "vid_public")
    viewer = {"x-authentik-username": "viewer", "x-authentik-groups": "vid_public"}
    assert app_client.get(url, headers=viewer, follow_redirects=False).status_code == 403
    assert svc.store.list_audit(action="access.review") == []

    login(app_client)
    used = app_client.get(url, follow_redirects=False)
    assert used.status_code == 303 and used.headers["location"] == f"/users#request-{pending['id']}"
    [event] = svc.store.list_audit(action="access.review")
    assert (event.actor, event.target) == ("admin", "ada")
    again = app_client.get(url, follow_redirects=False)
    assert again.status_code == 404
    unknown = app_client.get("/request-access/review/" + "A" * 43, follow_redirects=False)
    assert (unknown.status_code, unknown.text) == (404, again.text)
    assert app_client.get("/request-access/review/short", follow_redirects=False).status_code == 404


def test_review_link_expires_after_seven_days(app_client: TestClient, smtp: tuple[Controller, Inbox]) -> None:
    svc = _services(app_client)
    svc.access_requests.clock = lambda: 1000.0
    _submit(app_client)
    secret = _review_secret(smtp[1])
    login(app_client)
    svc.access_requests.clock = lambda: 1000.0 + 7 * 24 * 3600 + 1
    expired = app_client.get(f"/request-access/review/{secret}", follow_redirects=False)
    assert expired.status_code == 404
    assert svc.store.list_audit(action="access.review") == []
    svc.access_requests.clock = lambda: 1000.0 + 7 * 24 * 3600 - 1
    assert app_client.get(f"/request-access/review/{secret}", follow_redirects=False).status_code == 303


def test_each_admin_gets_an_own_review_link(app_client: TestClient, smtp: tuple[Controller, Inbox]) -> None:
    svc = _services(app_client)
    with svc.store.transaction() as db:
        svc.store.insert_user(db, "second", email="second@example.org", name="", password_hash=None, active=True)
        svc.store.add_membership(db, "second", "vid_admin")
    _submit(app_client)
    assert _review_secret(smtp[1]) != _review_secret(smtp[1], "second@example.org")


def test_a_post_without_the_forms_signed_token_stores_nothing(app_client: TestClient) -> None:
    answer = app_client.post("/request-access", data=_form(username="forged"), headers=ORIGIN)
    assert answer.status_code == 403
    assert "form" in answer.text
    forged = app_client.post(
        "/request-access", data={**_form(username="forged2"), "form_token": "x.y.z"}, headers=ORIGIN
    )
    assert forged.status_code == 403
    listed = app_client.get("/api/v1/access-requests", headers={"x-api-key": API_KEY}).json()["requests"]
    assert not any(r["username"] in ("forged", "forged2") for r in listed)


def test_an_approval_interrupted_half_way_is_taken_up_again_without_a_second_account(app_client: TestClient) -> None:
    _submit(app_client)
    [pending] = _pending(app_client)
    svc = _services(app_client)
    headers = login(app_client)
    # The process stopped after creating the account but before finishing: status stuck at "approving".
    asyncio.run(svc.directory.create_user("ada", email="ada@example.org", name="Ada", active=True))
    with svc.store.transaction() as db:
        svc.store.mark_user_created(db, pending["id"])
        db.execute("UPDATE access_requests SET status = 'approving', decided_at = 0 WHERE id = ?", (pending["id"],))
    resumed = _approve(app_client, pending["id"], ["vid_public"], headers)
    assert resumed.status_code == 200, resumed.text
    assert svc.store.user_groups("ada") == ["vid_public"]
    assert svc.store.count_users() == 2  # admin and ada: no second account


def test_an_approval_in_progress_is_not_taken_over(app_client: TestClient) -> None:
    _submit(app_client)
    [pending] = _pending(app_client)
    svc = _services(app_client)
    with svc.store.transaction() as db:  # this server is approving it right now
        db.execute(
            "UPDATE access_requests SET status = 'approving', decided_at = ?, approving_instance = ? WHERE id = ?",
            (time.time(), access_requests_module.INSTANCE, pending["id"]),
        )
    answer = _approve(app_client, pending["id"], ["vid_public"], login(app_client))
    assert answer.status_code == 409
    assert svc.store.get_user("ada") is None


def test_an_approval_a_stopped_server_began_is_taken_up_at_once(app_client: TestClient) -> None:
    _submit(app_client)
    [pending] = _pending(app_client)
    svc = _services(app_client)
    with svc.store.transaction() as db:  # begun a moment ago by a server that has since stopped
        db.execute(
            "UPDATE access_requests SET status = 'approving', decided_at = ?, approving_instance = 'gone' WHERE id = ?",
            (time.time(), pending["id"]),
        )
    answer = _approve(app_client, pending["id"], ["vid_public"], login(app_client))
    assert answer.status_code == 200, answer.text
    assert svc.store.user_groups("ada") == ["vid_public"]


def test_without_a_public_url_no_confirmation_is_mailed_and_requests_reach_admins_unconfirmed(
    app_client: TestClient, smtp: tuple[Controller, Inbox]
) -> None:
    svc = _services(app_client)
    svc.access_requests.settings = svc.access_requests.settings.model_copy(update={"public_url": ""})
    assert _submit_unconfirmed(app_client).status_code == 200
    [stored] = _pending(app_client)  # a link built without SIDECAR_PUBLIC_URL could not work: nothing to confirm
    assert stored["email_confirmed"] is False
    assert smtp[1].to("ada@example.org") == []
