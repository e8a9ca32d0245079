"""Access-request integrity: strangers on the public form against someone else's request and mail.

An attacker who can only reach the anonymous `/request-access` form tries to take over, rewrite or block another
person's (the victim's) request: a second submission naming the victim's username or email (in either order, with
case, whitespace and Unicode look-alike variants, and with other details), guessed, altered, replayed, borrowed,
cross-origin and scanner-driven confirmation links, approval of a request nobody confirmed, junk requests naming
the victim's address from another client IP (per-IP limits, forged `X-Forwarded-For`), line breaks of every kind in
the fields that end up in the admin's notification mail (fake "Review it" lines, header and recipient injection),
and a flood of anonymous form views that would each cost an Authentik call. Mail goes through a real SMTP server
(aiosmtpd) and is judged by its SMTP envelope; the core takeover is also replayed end to end through the real
Caddy with the shipped Caddyfile and a real `sidecar serve` process.

Every attack must fail and the victim's own flow (confirm, approval mail with the set-password link, password,
sign-in) must still work. Per-address cap, documented here: one address gets at most 10 confirmation mails an hour
(3 for one username there),
whoever typed it in; submissions are limited per client IP (5 an hour), never per address.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from starlette.testclient import TestClient

from sidecar.app import create_app
from sidecar.keys import digest
from sidecar.processes import LoggedProcess, caddy_binary, free_port, repo_caddyfile, start_process, stop_process
from sidecar.runtime import Services
from sidecar.settings import Settings
from tests.fake_authentik import BASE, TOKEN, FakeAuthentik, create_fake_authentik
from tests.helpers import API_KEY, TRUSTED_PEER, UNTRUSTED_PEER, form_token
from tests.processes_fixtures import child_env

OWN = "http://testserver"
ORIGIN = {"origin": OWN}
KEY = {"x-api-key": API_KEY}
PUBLIC_URL = "https://video.example.org"
ADMIN_MAIL = "admin@example.org"
VICTIM_MAIL = "alice@example.org"
ATTACKER_MAIL = "mallory@evil.example"
VICTIM_IP = "203.0.113.10"
ATTACKER_IP = "198.51.100.66"
VICTIM_PASSWORD = "alice-own-password-1"
VICTIM: dict[str, str] = {
    "name": "Alice Liddell",
    "username": "alice",
    "email": VICTIM_MAIL,
    "org": "Survey unit",
    "reason": "I fly the survey drone and need its feed.",
    "group": "vid_public",
}
DETAILS = ("username", "email", "name", "org", "reason", "requested_group")
VICTIM_ROW = {
    "username": "alice",
    "email": VICTIM_MAIL,
    "name": VICTIM["name"],
    "org": VICTIM["org"],
    "reason": VICTIM["reason"],
    "requested_group": VICTIM["group"],
}
CONFIRM_PATH = re.compile(r"/request-access/confirm/[A-Za-z0-9_-]+")
SET_PASSWORD_PATH = re.compile(r"/request-access/set-password/[A-Za-z0-9_-]+")
REVIEW_PATH = re.compile(r"/request-access/review/[A-Za-z0-9_-]+")
URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
QUOTE = "  | "
MAIL_HEADERS = {"from", "to", "subject", "content-type", "content-transfer-encoding", "mime-version"}
CONFIRM_MAILS_PER_HOUR = 10  # the documented per-address cap on confirmation mails
CONFIRM_MAILS_PER_USERNAME = 3  # and per username at one address


# --- a real SMTP server ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivered:
    """One message as the SMTP server received it: the envelope recipients decide where it really went."""

    rcpt: tuple[str, ...]
    raw: bytes
    message: Message

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def body(self) -> str:
        payload = self.message.get_payload(decode=True)
        assert isinstance(payload, bytes)
        return payload.decode(self.message.get_content_charset() or "utf-8")


class Receiver:
    """The aiosmtpd handler of an Inbox: keeps every message with its envelope."""

    def __init__(self, delivered: list[Delivered]) -> None:
        self.delivered = delivered

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        assert isinstance(envelope.content, bytes)
        rcpt = tuple(address.lower() for address in envelope.rcpt_tos)
        self.delivered.append(Delivered(rcpt, envelope.content, message_from_bytes(envelope.content)))
        return "250 OK"


class Inbox:
    """What the SMTP server received (aiosmtpd gets `handler`). The sidecar's outbox worker sends mail after the
    request is answered, so every read first runs `settle`, which waits for what is queued to be sent."""

    def __init__(self) -> None:
        self._delivered: list[Delivered] = []
        self.handler = Receiver(self._delivered)
        self.settle: Callable[[], object] = lambda: None

    @property
    def delivered(self) -> list[Delivered]:
        self.settle()
        return self._delivered

    def to(self, address: str, subject: str = "") -> list[Delivered]:
        return [d for d in self.delivered if address.lower() in d.rcpt and subject in d.subject]

    def confirm_paths(self, address: str) -> list[str]:
        """Confirmation links mailed to `address`, oldest first."""
        return [path for d in self.to(address) for path in CONFIRM_PATH.findall(d.body)]


@contextlib.contextmanager
def smtp_server() -> Iterator[tuple[Controller, Inbox]]:
    inbox = Inbox()
    controller = Controller(inbox.handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller, inbox
    finally:
        with contextlib.suppress(AssertionError):
            controller.stop()


# --- one local-mode app in process, with mail ----------------------------------------------------------------------


@dataclass
class Site:
    client: TestClient
    inbox: Inbox

    @property
    def services(self) -> Services:
        found: Services = self.client.app.state.services  # type: ignore[attr-defined]
        return found

    def submit(self, ip: str, **fields: str) -> Any:
        """The public form, filled in from client address `ip` (behind the trusted proxy), as a browser sends it."""
        form = {**VICTIM, "website": "", **fields, "form_token": form_token(self.client)}
        return self.client.post("/request-access", data=form, headers={**ORIGIN, "x-forwarded-for": ip})

    def deliver(self) -> None:
        """Send what the requests so far queued: one round of the outbox on the app's loop (after any round the
        worker is in)."""
        assert self.client.portal is not None
        self.client.portal.call(self.services.mailer.flush)

    def rows(self) -> list[dict[str, Any]]:
        return [dict(row) for row in self.services.store._read("SELECT * FROM access_requests ORDER BY id")]

    def row(self, request_id: int) -> dict[str, Any]:
        [found] = [row for row in self.rows() if row["id"] == request_id]
        return found

    def only_row(self, **match: str) -> dict[str, Any]:
        [found] = [row for row in self.rows() if all(row[key] == value for key, value in match.items())]
        return found

    def admin_view(self) -> list[dict[str, Any]]:
        answer = self.client.get("/api/v1/access-requests", headers=KEY)
        assert answer.status_code == 200, answer.text
        rows: list[dict[str, Any]] = answer.json()["requests"]
        return [row for row in rows if row["status"] == "pending"]

    def confirm(self, path: str, headers: dict[str, str] | None = None) -> Any:
        return self.client.post(path, headers=ORIGIN if headers is None else headers)

    def approve(self, request_id: int, groups: list[str]) -> Any:
        return self.client.post(f"/api/v1/access-requests/{request_id}/approve", json={"groups": groups}, headers=KEY)

    def reject(self, request_id: int) -> Any:
        return self.client.post(f"/api/v1/access-requests/{request_id}/reject", json={"message": "no"}, headers=KEY)

    def user(self, username: str) -> dict[str, Any] | None:
        found = self.services.store.get_user(username)
        return None if found is None else dict(found)

    def audit(self, action: str) -> list[Any]:
        return list(self.services.store.list_audit(action=action))


@pytest.fixture
def site(settings: Settings, cheap_bcrypt: None) -> Iterator[Site]:
    """A bootstrapped local-mode app whose admin has an email, mailing through a real SMTP server; server errors
    come back as responses (a 500 is an answer the attacker sees, so tests can assert on it)."""
    with smtp_server() as (controller, inbox):
        mailing = settings.model_copy(
            update={
                "smtp_host": "127.0.0.1",
                "smtp_port": controller.port,
                "smtp_starttls": False,
                "public_url": PUBLIC_URL,
            }
        )
        app = create_app(mailing)
        with TestClient(app, client=TRUSTED_PEER, base_url=OWN, raise_server_exceptions=False) as client:
            found = Site(client, inbox)
            inbox.settle = found.deliver
            with found.services.store.transaction() as db:
                db.execute("UPDATE users SET email = ? WHERE username = 'admin'", (ADMIN_MAIL,))
            yield found


def _details(row: dict[str, Any]) -> dict[str, Any]:
    return {key: row[key] for key in DETAILS}


def _victim_submits_and_confirms(site: Site) -> dict[str, Any]:
    assert site.submit(VICTIM_IP).status_code == 200
    victim = site.only_row(email=VICTIM_MAIL, username="alice")
    [link] = site.inbox.confirm_paths(VICTIM_MAIL)
    assert site.confirm(link).status_code == 200
    return victim


def _assert_only_the_victim_gets_the_password_link(site: Site, request_id: int) -> str:
    """Approve the victim's request; the set-password link goes to her confirmed address and nowhere else."""
    answer = site.approve(request_id, ["vid_public"])
    assert answer.status_code == 200, answer.text
    assert answer.json()["emailed"] is True and "set_password_link" not in answer.json()
    with_link = [d for d in site.inbox.delivered if SET_PASSWORD_PATH.search(d.body)]
    assert [d.rcpt for d in with_link] == [(VICTIM_MAIL,)], [d.rcpt for d in with_link]
    created = site.user("alice")
    assert created is not None and created["email"] == VICTIM_MAIL
    found = SET_PASSWORD_PATH.search(with_link[0].body)
    assert found is not None
    return found.group(0)


def _victim_sets_password_and_signs_in(site: Site, link: str) -> None:
    page = site.client.get(link)
    assert page.status_code == 200 and "alice" in page.text
    done = site.client.post(link, data={"password": VICTIM_PASSWORD, "confirm": VICTIM_PASSWORD}, headers=ORIGIN)
    assert done.status_code == 200, done.text
    signed_in = site.client.post("/auth/login", json={"username": "alice", "password": VICTIM_PASSWORD})
    assert signed_in.status_code == 200, signed_in.text
    me = site.client.get("/api/v1/me").json()
    assert me["username"] == "alice" and "vid_public" in me["groups"]
    site.client.cookies.clear()


def _nothing_of_the_victims_reached(site: Site, address: str) -> None:
    for delivered in site.inbox.to(address):
        assert not SET_PASSWORD_PATH.search(delivered.body), delivered.body
        assert VICTIM["reason"] not in delivered.body


# --- 3: a second submission never takes over the first ------------------------------------------------------------


def test_later_request_for_the_victims_username_with_another_email_cannot_take_over_hers(site: Site) -> None:
    assert site.submit(VICTIM_IP).status_code == 200
    victim = site.only_row(username="alice")
    attack = {"email": ATTACKER_MAIL, "name": "Alice L.", "reason": "Send it here", "group": "vid_private"}
    assert site.submit(ATTACKER_IP, **attack).status_code == 200
    assert _details(site.row(victim["id"])) == _details(victim)  # not merged: the victim's address stays hers
    [link] = site.inbox.confirm_paths(VICTIM_MAIL)
    assert site.confirm(link).status_code == 200
    assert site.submit(ATTACKER_IP, **{**attack, "reason": "Second try"}).status_code == 200  # while hers is pending
    assert _details(site.row(victim["id"])) == _details(victim)
    assert [(r["id"], r["email"]) for r in site.admin_view()] == [(victim["id"], VICTIM_MAIL)]
    attacker, second = [row for row in site.rows() if row["email"] == ATTACKER_MAIL]  # each try is its own request
    assert victim["id"] not in (attacker["id"], second["id"]) and second["reason"] == "Second try"

    # The attacker owns his mailbox and confirms his first request: admins now see two claims on "alice", flagged.
    own = site.inbox.confirm_paths(ATTACKER_MAIL)[0]
    assert site.confirm(own).status_code == 200
    view = {row["id"]: row for row in site.admin_view()}
    assert view[victim["id"]]["email"] == VICTIM_MAIL and view[attacker["id"]]["email"] == ATTACKER_MAIL
    assert view[victim["id"]]["same_username"] == 1 and view[attacker["id"]]["same_username"] == 1

    link = _assert_only_the_victim_gets_the_password_link(site, victim["id"])
    late = site.approve(attacker["id"], ["vid_public"])  # the name is taken now: no second "alice", no mail
    assert late.status_code == 409 and "error" in late.json()
    _nothing_of_the_victims_reached(site, ATTACKER_MAIL)
    assert (site.user("alice") or {}).get("email") == VICTIM_MAIL and site.user("Alice") is None
    _victim_sets_password_and_signs_in(site, link)


def test_later_request_naming_the_victims_email_under_another_username_never_reaches_admins(site: Site) -> None:
    assert site.submit(VICTIM_IP).status_code == 200
    victim = site.only_row(username="alice")
    attack = {"username": "mallory", "email": "ALICE@Example.ORG", "name": "Mallory", "reason": "Me too"}
    assert site.submit(ATTACKER_IP, **attack).status_code == 200
    assert _details(site.row(victim["id"])) == _details(victim)  # not merged into hers by the shared address
    assert site.confirm(site.inbox.confirm_paths(VICTIM_MAIL)[0]).status_code == 200  # she confirms her own
    attacker = site.only_row(username="mallory")
    assert attacker["email"] == VICTIM_MAIL  # its only confirmation link went to the victim, not to the attacker
    assert site.inbox.to(ATTACKER_MAIL) == [] and len(site.inbox.confirm_paths(VICTIM_MAIL)) == 2
    assert [row["id"] for row in site.admin_view()] == [victim["id"]]
    assert len(site.inbox.to(ADMIN_MAIL, "New access request")) == 1
    for refused in (site.approve(attacker["id"], ["vid_public"]), site.reject(attacker["id"])):
        assert refused.status_code == 409 and "error" in refused.json()
    assert site.user("mallory") is None
    link = _assert_only_the_victim_gets_the_password_link(site, victim["id"])
    _victim_sets_password_and_signs_in(site, link)


@pytest.mark.parametrize(
    "variant",
    [
        {"reason": "Make me an admin", "name": "Mallory", "org": "Evil", "group": "vid_private"},
        {"email": "ALICE@EXAMPLE.ORG", "reason": "Upper-case address", "group": "vid_private"},
        {"email": "  Alice@Example.org\t", "username": " alice ", "reason": "Padded", "name": "Mallory"},
    ],
    ids=["changed-details", "upper-case-email", "padded-username-and-email"],
)
def test_same_username_and_email_with_other_details_never_changes_hers(site: Site, variant: dict[str, str]) -> None:
    assert site.submit(VICTIM_IP).status_code == 200
    victim = site.only_row(username="alice")
    assert site.submit(ATTACKER_IP, **variant).status_code == 200  # before she confirmed
    assert site.row(victim["id"]) == victim
    [other] = [row for row in site.rows() if row["id"] != victim["id"]]  # a request of its own, unconfirmed
    assert other["status"] == "unconfirmed" and other["email"] == VICTIM_MAIL
    mine, caused = site.inbox.confirm_paths(VICTIM_MAIL)  # both links go to her: only she could confirm either
    assert variant["reason"] in site.client.get(caused).text  # the page shows what a link would confirm
    assert VICTIM["reason"] in site.client.get(mine).text
    assert site.confirm(mine).status_code == 200
    mails = len(site.inbox.delivered)
    assert site.submit(ATTACKER_IP, **variant).status_code == 200  # and after: the same form again
    assert site.row(victim["id"])["status"] == "pending" and _details(site.row(victim["id"])) == _details(victim)
    assert len(site.rows()) == 2
    assert len(site.inbox.delivered) == mails  # its link is still valid: a repeat mails nobody
    [seen] = site.admin_view()
    assert (seen["reason"], seen["name"], seen["requested_group"]) == (VICTIM["reason"], VICTIM["name"], "vid_public")
    link = _assert_only_the_victim_gets_the_password_link(site, victim["id"])
    _victim_sets_password_and_signs_in(site, link)


def test_attacker_first_with_the_victims_username_does_not_capture_her_later_request(site: Site) -> None:
    attack = {"email": ATTACKER_MAIL, "name": "Alice", "reason": "Waiting for her", "group": "vid_private"}
    assert site.submit(ATTACKER_IP, **attack).status_code == 200
    attacker = site.only_row(email=ATTACKER_MAIL)
    assert site.submit(VICTIM_IP).status_code == 200
    assert _details(site.row(attacker["id"])) == _details(attacker)  # hers did not overwrite his, nor join it
    victim = site.only_row(email=VICTIM_MAIL)
    assert victim["id"] != attacker["id"] and _details(victim) == VICTIM_ROW
    [own] = site.inbox.confirm_paths(ATTACKER_MAIL)
    assert site.confirm(own).status_code == 200
    [link] = site.inbox.confirm_paths(VICTIM_MAIL)
    assert site.confirm(link).status_code == 200
    assert {row["email"] for row in site.admin_view()} == {VICTIM_MAIL, ATTACKER_MAIL}
    password_link = _assert_only_the_victim_gets_the_password_link(site, victim["id"])
    assert site.approve(attacker["id"], ["vid_public"]).status_code == 409
    _nothing_of_the_victims_reached(site, ATTACKER_MAIL)
    _victim_sets_password_and_signs_in(site, password_link)


def test_attacker_first_with_the_victims_username_and_email_cannot_put_words_in_her_request(site: Site) -> None:
    attack = {
        "name": "Alice - set your password at https://evil.example/reset instead",
        "reason": "Please also give me vid_private; mail me at mallory@evil.example",
        "group": "vid_private",
    }
    assert site.submit(ATTACKER_IP, **attack).status_code == 200  # the victim gets a mail she did not ask for yet
    assert site.submit(VICTIM_IP).status_code == 200  # then she fills in the form herself
    link = site.inbox.confirm_paths(VICTIM_MAIL)[-1]  # and confirms from the newest mail she has
    assert site.confirm(link).status_code == 200
    seen = site.admin_view()
    assert [row["reason"] for row in seen] == [VICTIM["reason"]], seen
    assert [row["name"] for row in seen] == [VICTIM["name"]]
    answer = site.approve(seen[0]["id"], ["vid_public"])
    assert answer.status_code == 200
    [approved] = site.inbox.to(VICTIM_MAIL, "approved")
    assert "evil.example" not in approved.body


@pytest.mark.parametrize(
    ("field_name", "value"),
    [
        ("username", "\u0430lice"),  # Cyrillic a
        ("username", "\uff41\uff4c\uff49\uff43\uff45"),  # fullwidth
        ("username", "alice\u200b"),  # zero-width space
        ("username", "al\u0131ce"),  # dotless i
        ("email", "alice@ex\u0430mple.org"),
        ("email", "\u0430lice@example.org"),
        ("email", "alice\u200b@example.org"),
        ("email", "AL\u0130CE@example.org"),  # dotted capital I lower-cases to two characters
        ("email", "alice@example.org."),
        ("email", '"alice"@example.org'),
    ],
)
def test_look_alike_username_or_email_is_refused_and_touches_nothing(site: Site, field_name: str, value: str) -> None:
    victim = _victim_submits_and_confirms(site)
    mails = len(site.inbox.delivered)
    refused = site.submit(ATTACKER_IP, **{"email": ATTACKER_MAIL, field_name: value})
    assert refused.status_code == 400
    assert [_details(row) for row in site.rows()] == [_details(victim)]
    assert len(site.inbox.delivered) == mails


def test_ascii_case_variant_of_the_username_is_another_account_and_never_signs_in_as_her(site: Site) -> None:
    victim = _victim_submits_and_confirms(site)
    assert site.submit(ATTACKER_IP, username="ALICE", email=ATTACKER_MAIL, name="Alice").status_code == 200
    assert _details(site.row(victim["id"])) == _details(victim)
    [own] = site.inbox.confirm_paths(ATTACKER_MAIL)
    assert site.confirm(own).status_code == 200
    attacker = site.only_row(username="ALICE")
    link = _assert_only_the_victim_gets_the_password_link(site, victim["id"])
    _victim_sets_password_and_signs_in(site, link)
    assert site.approve(attacker["id"], ["vid_public"]).status_code == 200  # an admin may approve "ALICE" too
    [mail] = site.inbox.to(ATTACKER_MAIL, "approved")
    found = SET_PASSWORD_PATH.search(mail.body)
    assert found is not None
    assert site.client.get(found.group(0)).text.count("ALICE") >= 1
    own_password = "mallory-password-1"
    done = site.client.post(found.group(0), data={"password": own_password, "confirm": own_password}, headers=ORIGIN)
    assert done.status_code == 200
    wrong = site.client.post("/auth/login", json={"username": "alice", "password": own_password})
    assert wrong.status_code in (400, 401) and "token" not in wrong.json(), wrong.text
    assert site.client.post("/auth/login", json={"username": "ALICE", "password": own_password}).status_code == 200
    assert site.client.get("/api/v1/me").json()["username"] == "ALICE"
    assert (site.user("alice") or {}).get("email") == VICTIM_MAIL


# --- the confirmation link: only the secret from the mail, once, same-origin, by POST -----------------------------


def _victim_link(site: Site) -> tuple[dict[str, Any], str]:
    assert site.submit(VICTIM_IP).status_code == 200
    victim = site.only_row(username="alice")
    [link] = site.inbox.confirm_paths(VICTIM_MAIL)
    return victim, link


def _still_unconfirmed(site: Site, victim: dict[str, Any]) -> None:
    assert site.row(victim["id"])["status"] == "unconfirmed"
    assert site.admin_view() == [] and site.inbox.to(ADMIN_MAIL) == []


def test_guessed_or_altered_confirmation_secrets_confirm_nothing(site: Site) -> None:
    victim, link = _victim_link(site)
    secret = link.rsplit("/", 1)[1]
    other = "B" if secret[-1] != "B" else "C"
    guesses = [
        secrets.token_urlsafe(32),
        "A" * 43,
        secret.swapcase(),
        secret[:-1],
        secret[:-1] + other,
        secret + "A",
        secret[1:],
        digest(secret),  # what the database keeps
        str(victim["id"]),
        "1" * 32,
        secret + "%00",
        secret + "%0a",
        "%2e%2e%2f" + secret,
    ]
    for guess in guesses:
        path = f"/request-access/confirm/{guess}"
        assert site.client.get(path).status_code in (400, 404), guess
        answer = site.confirm(path)
        assert answer.status_code in (400, 404), (guess, answer.status_code)
    for path in ("/request-access/confirm/", "/request-access/confirm", f"/request-access/confirm/{secret}/x"):
        assert site.confirm(path).status_code in (404, 405)
    _still_unconfirmed(site, victim)
    assert site.confirm(link).status_code == 200  # the real one still works
    assert [row["id"] for row in site.admin_view()] == [victim["id"]]


def test_a_spent_confirmation_link_cannot_be_replayed(site: Site) -> None:
    victim, link = _victim_link(site)
    assert site.confirm(link).status_code == 200
    for _ in range(3):
        assert site.confirm(link).status_code == 404
        assert site.client.get(link).status_code == 404
    assert [row["id"] for row in site.admin_view()] == [victim["id"]]
    assert len(site.inbox.to(ADMIN_MAIL, "New access request")) == 1  # admins were told once
    assert len(site.audit("access.confirm")) == 1


def test_one_requests_links_cannot_confirm_another(site: Site) -> None:
    victim, _ = _victim_link(site)
    assert site.submit(ATTACKER_IP, username="mallory", email=ATTACKER_MAIL, name="Mallory").status_code == 200
    [own] = site.inbox.confirm_paths(ATTACKER_MAIL)
    borrowed = site.client.post(
        f"{own}?id={victim['id']}&request={victim['id']}",
        data={"id": str(victim["id"]), "username": "alice", "email": VICTIM_MAIL},
        headers=ORIGIN,
    )
    assert borrowed.status_code == 200  # it confirms the attacker's own request, and only that
    assert site.confirm(f"{own}/{victim['id']}").status_code in (404, 405)
    assert site.row(victim["id"])["status"] == "unconfirmed"
    assert [row["username"] for row in site.admin_view()] == ["mallory"]
    # Other secrets the attacker can hold are not confirmation secrets: the review link of his own request.
    [notice] = site.inbox.to(ADMIN_MAIL, "New access request")
    review = REVIEW_PATH.search(notice.body)
    assert review is not None
    as_confirm = review.group(0).replace("/review/", "/confirm/")
    assert site.confirm(as_confirm).status_code == 404
    assert site.row(victim["id"])["status"] == "unconfirmed"


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "https://evil.example"},
        {"origin": "null"},
        {"origin": "http://testserver.evil.example"},
        {"origin": "https://testserver"},
        {"origin": "http://testserver:8080"},
        {"referer": "https://evil.example/mail"},
        {},
    ],
    ids=["foreign", "null", "look-alike", "other-scheme", "other-port", "foreign-referer-only", "no-origin"],
)
def test_cross_origin_confirmation_confirms_nothing(site: Site, headers: dict[str, str]) -> None:
    victim, link = _victim_link(site)
    answer = site.confirm(link, headers)
    assert answer.status_code == 403
    _still_unconfirmed(site, victim)
    assert site.confirm(link).status_code == 200  # the refusal did not spend the link


def test_mail_scanners_following_the_link_confirm_nothing(site: Site) -> None:
    victim, link = _victim_link(site)
    page = site.client.get(link)
    assert page.status_code == 200 and 'method="post"' in page.text
    assert site.client.head(link).status_code in (200, 405)
    assert site.client.get(f"{link}?confirm=1&action=confirm").status_code == 200
    assert site.client.get(link, headers={"purpose": "prefetch", "sec-purpose": "prefetch"}).status_code == 200
    assert site.client.options(link).status_code in (200, 204, 405)
    _still_unconfirmed(site, victim)
    assert site.confirm(link).status_code == 200


def test_an_expired_confirmation_link_confirms_nothing(site: Site) -> None:
    requests = site.services.access_requests
    requests.clock = lambda: 1_000_000.0
    victim, link = _victim_link(site)
    requests.clock = lambda: 1_000_000.0 + 24 * 3600 + 1
    assert site.client.get(link).status_code == 404
    assert site.confirm(link).status_code == 404
    _still_unconfirmed(site, victim)


def test_an_unconfirmed_request_cannot_be_approved_or_rejected(site: Site) -> None:
    victim, link = _victim_link(site)
    for refused in (site.approve(victim["id"], ["vid_public"]), site.reject(victim["id"])):
        assert refused.status_code == 409 and set(refused.json()) >= {"error"}
    assert site.user("alice") is None
    assert [d.rcpt for d in site.inbox.delivered] == [(VICTIM_MAIL,)]  # only her confirmation mail
    _still_unconfirmed(site, victim)
    assert site.confirm(link).status_code == 200
    _victim_sets_password_and_signs_in(site, _assert_only_the_victim_gets_the_password_link(site, victim["id"]))


# --- 10a: junk requests naming the victim's address from elsewhere ------------------------------------------------


def _junk(site: Site, count: int, ip: str = ATTACKER_IP) -> None:
    """`count` junk requests naming the victim's address, five per client address (the per-IP limit)."""
    for number in range(count):
        junk = {"username": f"junk{number}", "name": "Junk", "reason": "spam", "group": ""}
        sender = ip if number < 5 else f"198.51.100.{number // 5}"
        assert site.submit(sender, **junk).status_code == 200


def test_junk_requests_with_the_victims_email_from_another_ip_leave_her_flow_working(site: Site) -> None:
    _junk(site, CONFIRM_MAILS_PER_HOUR - 1)
    assert site.submit(VICTIM_IP).status_code == 200
    victim = site.only_row(username="alice")
    mine = [d for d in site.inbox.to(VICTIM_MAIL, "Confirm") if "the user alice." in d.body]
    assert len(mine) == 1
    [link] = CONFIRM_PATH.findall(mine[0].body)
    assert site.confirm(link).status_code == 200
    assert [row["id"] for row in site.admin_view()] == [victim["id"]]  # junk nobody confirmed stays out of sight
    _victim_sets_password_and_signs_in(site, _assert_only_the_victim_gets_the_password_link(site, victim["id"]))


def test_five_junk_requests_with_the_victims_email_do_not_refuse_hers(site: Site) -> None:
    _junk(site, 5)  # all one client address may send in an hour
    answer = site.submit(VICTIM_IP)
    assert answer.status_code == 200, answer.text  # not 429: no per-address submission limit
    victim = site.only_row(username="alice")
    assert _details(victim) == VICTIM_ROW
    mine = [d for d in site.inbox.to(VICTIM_MAIL, "Confirm") if "the user alice." in d.body]
    assert len(mine) == 1  # one sender's junk cannot use up the address's confirmation mails
    assert site.audit("access.confirm_capped") == []
    assert site.submit(ATTACKER_IP, username="junk9", reason="spam", group="").status_code == 429  # per IP


def test_the_per_address_cap_holds_against_several_senders(site: Site) -> None:
    _junk(site, CONFIRM_MAILS_PER_HOUR + 2)  # from three client addresses
    assert len(site.inbox.to(VICTIM_MAIL)) == CONFIRM_MAILS_PER_HOUR
    assert len(site.audit("access.confirm_capped")) == 2


def test_one_username_at_an_address_gets_at_most_three_confirmation_mails(site: Site) -> None:
    for number in range(CONFIRM_MAILS_PER_USERNAME + 1):  # each with other words: requests of their own
        assert site.submit(ATTACKER_IP, reason=f"attempt {number}").status_code == 200
    assert len(site.inbox.to(VICTIM_MAIL)) == CONFIRM_MAILS_PER_USERNAME
    assert len(site.audit("access.confirm_capped")) == 1


def test_victim_capped_by_junk_gets_her_confirmation_once_the_hour_is_over(site: Site) -> None:
    requests = site.services.access_requests
    requests.clock = lambda: 2_000_000.0
    _junk(site, CONFIRM_MAILS_PER_HOUR)
    assert site.submit(VICTIM_IP).status_code == 200  # capped: no mail for her request this hour
    requests.clock = lambda: 2_000_000.0 + 3601
    assert site.submit(VICTIM_IP).status_code == 200  # she tries again an hour later
    mine = [d for d in site.inbox.to(VICTIM_MAIL, "Confirm") if "the user alice." in d.body]
    assert len(mine) == 1
    [link] = CONFIRM_PATH.findall(mine[0].body)
    assert site.confirm(link).status_code == 200
    assert [row["username"] for row in site.admin_view()] == ["alice"]


def test_forged_forwarded_for_does_not_escape_the_per_ip_limit(site: Site) -> None:
    for number in range(5):
        forged = f"10.9.{number}.1, {ATTACKER_IP}"  # client-sent hops before the one the proxy appended
        answer = site.client.post(
            "/request-access",
            data={**VICTIM, "username": f"bulk{number}", "website": "", "form_token": form_token(site.client)},
            headers={**ORIGIN, "x-forwarded-for": forged},
        )
        assert answer.status_code == 200
    count = len(site.rows())
    sixth = site.submit(f"10.9.9.9, {ATTACKER_IP}", username="bulk9")
    assert sixth.status_code == 429 and len(site.rows()) == count
    assert site.submit(VICTIM_IP).status_code == 200  # another client is not affected


def test_forwarded_for_from_an_untrusted_peer_does_not_escape_the_per_ip_limit(settings: Settings) -> None:
    with (
        smtp_server() as (controller, _),
        TestClient(
            create_app(
                settings.model_copy(
                    update={"smtp_host": "127.0.0.1", "smtp_port": controller.port, "smtp_starttls": False}
                )
            ),
            client=UNTRUSTED_PEER,
            base_url=OWN,
            raise_server_exceptions=False,
        ) as client,
    ):
        codes = []
        for number in range(7):
            form = {**VICTIM, "username": f"bulk{number}", "website": "", "form_token": form_token(client)}
            headers = {**ORIGIN, "x-forwarded-for": f"192.0.2.{number}", "x-real-ip": f"192.0.2.{number}"}
            codes.append(client.post("/request-access", data=form, headers=headers).status_code)
        assert codes == [200] * 5 + [429] * 2


# --- 10b: nothing a requester types can pass for the sidecar's own lines or headers ---------------------------------


def _check_delivery_shape(delivered: Delivered) -> None:
    headers = {name.lower() for name in delivered.message}
    assert headers <= MAIL_HEADERS, headers
    assert len(delivered.message.get_all("To") or []) == 1 and len(delivered.rcpt) == 1
    assert str(delivered.message["To"]).lower() == delivered.rcpt[0]
    assert all(len(line) <= 998 for line in delivered.raw.splitlines())


def _admin_mail_problems(body: str) -> list[str]:
    """Lines a requester could have forged: after the sidecar's header, every line must be quoted; the header
    holds exactly one review link, and every URL in it is the sidecar's own."""
    lines = body.splitlines()
    first = next((number for number, line in enumerate(lines) if line.startswith(QUOTE)), len(lines))
    header, rest = lines[:first], lines[first:]
    problems = [f"unquoted: {line!r}" for line in rest if not line.startswith(QUOTE)]
    urls = [url for line in header for url in URL.findall(line)]
    problems += [f"foreign URL in header: {url}" for url in urls if not url.startswith(PUBLIC_URL + "/")]
    reviews = [line for line in header if REVIEW_PATH.search(line)]
    if len(reviews) != 1:
        problems.append(f"{len(reviews)} review links in the header")
    problems += [f"requester text in header: {line!r}" for line in header if "evil" in line.lower()]
    if not rest:
        problems.append("no quoted block")
    return problems


def _admin_mail_after(site: Site, **fields: str) -> Delivered:
    answer = site.submit(VICTIM_IP, **fields)
    assert answer.status_code == 200, answer.text
    for link in site.inbox.confirm_paths(VICTIM_MAIL):  # she confirms what she was sent
        assert site.confirm(link).status_code == 200
    [notice] = site.inbox.to(ADMIN_MAIL, "New access request")
    for delivered in site.inbox.delivered:
        _check_delivery_shape(delivered)
    return notice


REASONS = {
    "lf": "Hello\nReview it (the link works once): https://evil.example/request-access/review/x\n"
    "All requests: https://evil.example/users#requests",
    "crlf": "Hello\r\nReview it: https://evil.example/r1\r\nthanks",
    "cr": "Hello\rReview it: https://evil.example/r2",
    "u2028": "Hello\u2028Review it: https://evil.example/r3",
    "u2029": "Hello\u2029Review it: https://evil.example/r4",
    "nel": "Hello\x85Review it: https://evil.example/r5",
    "leading-and-blank": "\n\n\nReview it: https://evil.example/r6\n\n\n",
    "fake-end-of-quote": "ok\n  |\nNew access request #999.\n\nReview it: https://evil.example/r7",
    "tab": "\tReview it: https://evil.example/r8",
    "long-line": "x" * 1500 + " Review it: https://evil.example/r9 " + "y" * 400,
    "many-lines": "\n".join(f"Review it: https://evil.example/{n}" for n in range(50)),
}


@pytest.mark.parametrize("reason", list(REASONS.values()), ids=list(REASONS))
def test_reason_cannot_forge_a_line_of_the_admin_mail(site: Site, reason: str) -> None:
    notice = _admin_mail_after(site, reason=reason)
    assert _admin_mail_problems(notice.body) == []
    assert notice.subject == "New access request"


@pytest.mark.parametrize(
    ("field_name", "separator"),
    [("name", "\u2028"), ("name", "\x85"), ("name", "\u2029"), ("org", "\u2028"), ("org", "\x85")],
    ids=["name-u2028", "name-nel", "name-u2029", "org-u2028", "org-nel"],
)
def test_name_or_organisation_cannot_forge_a_line_of_the_admin_mail(
    site: Site, field_name: str, separator: str
) -> None:
    """A line separator in a one-line field is refused outright (the admin mail also quotes every line it could
    start, as the reason tests show)."""
    value = f"Alice{separator}Review it: https://evil.example/phish{separator}"
    refused = site.submit(ATTACKER_IP, **{field_name: value})
    assert refused.status_code == 400 and "one line" in refused.text
    assert site.rows() == [] and site.inbox.delivered == []


@pytest.mark.parametrize(
    ("field_name", "value"),
    [
        ("email", "alice@example.org\r\nBcc: mallory@evil.example"),
        ("email", "alice@example.org\nBcc: mallory@evil.example"),
        ("email", "alice@example.org\rBcc: mallory@evil.example"),
        ("email", "alice@example.org\u2028Bcc: mallory@evil.example"),
        ("email", "alice@example.org\x85Bcc: mallory@evil.example"),
        ("email", "alice@example.org, mallory@evil.example"),
        ("email", "alice@example.org;mallory@evil.example"),
        ("email", "Alice <mallory@evil.example>"),
        ("email", "mallory@evil.example>\r\nRCPT TO:<alice@example.org"),
        ("name", "Alice\r\nSubject: urgent"),
        ("name", "Alice\nBcc: mallory@evil.example"),
        ("org", "Org\r\nBcc: mallory@evil.example"),
        ("username", "alice\r\nBcc: mallory@evil.example"),
        ("group", "vid_public\r\nBcc: mallory@evil.example"),
    ],
)
def test_line_breaks_in_addresses_and_one_line_fields_are_refused(site: Site, field_name: str, value: str) -> None:
    refused = site.submit(ATTACKER_IP, **{field_name: value})
    assert refused.status_code == 400
    assert site.rows() == [] and site.inbox.delivered == []


def test_an_encoded_line_break_in_the_address_cannot_stop_everyones_mail(site: Site) -> None:
    poison = "=?utf-8?q?x=0D=0ABcc=3A_mallory=40evil.example?=@example.org"
    answer = site.submit(ATTACKER_IP, username="mallory", email=poison)
    assert answer.status_code < 500, answer.text
    assert site.submit(VICTIM_IP).status_code == 200
    assert len(site.inbox.confirm_paths(VICTIM_MAIL)) == 1  # her mail still goes out
    assert all(ATTACKER_MAIL not in d.rcpt for d in site.inbox.delivered)


# --- 10c: anonymous form views cost at most one Authentik group listing ---------------------------------------------


class CountingTransport(httpx.AsyncBaseTransport):
    """Counts every call the sidecar makes to Authentik; can fail group listings or hold the first one."""

    def __init__(self, fake: FakeAuthentik) -> None:
        self.inner = httpx.ASGITransport(app=fake.app)
        self.calls: list[tuple[str, str]] = []
        self.fail_groups = False
        self.hold_first_listing = False
        self._second: asyncio.Event | None = None

    def listings(self) -> int:
        return sum(1 for method, path in self.calls if method == "GET" and path == "/api/v3/core/groups/")

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls.append((request.method, request.url.path))
        if request.url.path == "/api/v3/core/groups/":
            if self.fail_groups:
                return httpx.Response(503, json={"detail": "overloaded"}, request=request)
            if self.hold_first_listing:
                if self._second is None:
                    # Keep the first listing in flight until a second one arrives (or 3 s pass): a burst of views
                    # then shows whether they each ask Authentik or wait for the one answer.
                    self._second = asyncio.Event()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._second.wait(), 3.0)
                else:
                    self._second.set()
        return await self.inner.handle_async_request(request)


@pytest.fixture
def sso(make_settings: Callable[..., Settings]) -> Iterator[tuple[TestClient, CountingTransport]]:
    settings = make_settings(mode="authentik", authentik_url=BASE, authentik_token=TOKEN, bootstrap_password=None)
    transport = CountingTransport(create_fake_authentik())
    with TestClient(create_app(settings, transport=transport), client=TRUSTED_PEER, base_url=OWN) as client:
        directory = client.app.state.services.directory  # type: ignore[attr-defined]
        with contextlib.suppress(AttributeError):
            directory.client._retry_backoff = (0.0, 0.0)  # keep the retries, not their waits
        yield client, transport


def test_anonymous_form_views_list_authentik_groups_once(sso: tuple[TestClient, CountingTransport]) -> None:
    client, transport = sso
    for number in range(50):
        page = client.get("/request-access", headers={"x-forwarded-for": f"198.51.100.{number}"})
        assert page.status_code == 200 and 'value="vid_public"' in page.text
        assert 'value="tak_ops"' not in page.text and 'value="vid_admin"' not in page.text
    assert transport.listings() <= 1 and len(transport.calls) <= 1, transport.calls


def test_anonymous_form_posts_reuse_the_cached_groups(sso: tuple[TestClient, CountingTransport]) -> None:
    client, transport = sso
    token = form_token(client)
    for number in range(20):
        headers = {**ORIGIN, "x-forwarded-for": f"198.51.100.{number}"}
        forged = client.post("/request-access", data={**VICTIM, "form_token": "x.y.z"}, headers=headers)
        assert forged.status_code == 403
        wrong = client.post(
            "/request-access", data={**VICTIM, "group": "tak_ops", "form_token": token}, headers=headers
        )
        assert wrong.status_code == 400
    codes = []
    for number in range(8):
        form = {**VICTIM, "username": f"user{number}", "form_token": token}
        codes.append(client.post("/request-access", data=form, headers={**ORIGIN, "x-forwarded-for": ATTACKER_IP}))
    assert [answer.status_code for answer in codes] == [200] * 5 + [429] * 3
    assert transport.listings() <= 1, transport.calls


def test_a_burst_of_concurrent_anonymous_views_lists_groups_once(sso: tuple[TestClient, CountingTransport]) -> None:
    client, transport = sso
    transport.hold_first_listing = True

    def view(number: int) -> int:
        return client.get("/request-access", headers={"x-forwarded-for": f"198.51.100.{number}"}).status_code

    with ThreadPoolExecutor(max_workers=25) as pool:
        codes = list(pool.map(view, range(50)))
    assert codes == [200] * 50
    assert transport.listings() <= 1, transport.listings()


def test_anonymous_views_while_authentik_fails_do_not_each_call_it(sso: tuple[TestClient, CountingTransport]) -> None:
    client, transport = sso
    transport.fail_groups = True
    for number in range(20):
        page = client.get("/request-access", headers={"x-forwarded-for": f"198.51.100.{number}"})
        assert page.status_code == 200
    assert transport.listings() <= 3, transport.listings()  # one listing and its retries, not one per view


# --- end to end through the real Caddy and a real `sidecar serve` ---------------------------------------------------

E2E_ADMIN_PASSWORD = "admin-password-for-requests-e2e"
SETTLE = 10.0  # how long the server's outbox worker may take to send what was queued


@dataclass
class Stack:
    site: str
    database: Path
    inbox: Inbox
    http: httpx.Client
    admin: dict[str, str] = field(default_factory=dict)

    def submit(self, **fields: str) -> httpx.Response:
        page = self.http.get("/request-access")
        found = re.search(r'name="form_token" value="([^"]+)"', page.text)
        assert page.status_code == 200 and found, page.text
        form = {**VICTIM, "website": "", **fields, "form_token": found.group(1)}
        return self.http.post("/request-access", data=form, headers={"origin": self.site})

    def deliver(self) -> None:
        """Wait (at most SETTLE seconds) until the server's outbox worker has sent what the requests so far queued."""
        ends = time.monotonic() + SETTLE
        while time.monotonic() < ends:
            with contextlib.closing(sqlite3.connect(self.database)) as db:
                if db.execute("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0] == 0:
                    return
            time.sleep(0.05)

    def rows(self) -> list[dict[str, Any]]:
        with contextlib.closing(sqlite3.connect(self.database)) as db:
            db.row_factory = sqlite3.Row
            return [dict(row) for row in db.execute("SELECT * FROM access_requests ORDER BY id")]

    def only_row(self, **match: Any) -> dict[str, Any]:
        [found] = [row for row in self.rows() if all(row[key] == value for key, value in match.items())]
        return found

    def confirm(self, address: str, username: str) -> None:
        """Confirm from the mail to `address` about `username`, as its owner would: a full URL on the Caddy site."""
        mails = [d for d in self.inbox.to(address, "Confirm") if f"as the user {username}." in d.body]
        [url] = [url for d in mails for url in re.findall(r"https?://\S+/request-access/confirm/\S+", d.body)]
        assert url.startswith(self.site + "/"), url
        answer = self.http.post(url.removeprefix(self.site), headers={"origin": self.site})
        assert answer.status_code == 200, answer.text

    def sign_in(self, username: str, password: str) -> tuple[dict[str, str], dict[str, Any]]:
        body = {"username": username, "password": password}
        done = self.http.post("/auth/login", json=body, headers={"origin": self.site})
        assert done.status_code == 200, done.text
        self.http.cookies.clear()
        cookie = {"cookie": f"sidecar_session={done.json()['token']}"}
        me = self.http.get("/api/v1/me", headers=cookie)
        assert me.status_code == 200 and me.json()["username"] == username, me.text
        return {**cookie, "origin": self.site, "x-csrf-token": me.json()["csrf_token"]}, me.json()

    def admin_view(self) -> list[dict[str, Any]]:
        answer = self.http.get("/api/v1/access-requests", headers=self._admin())
        assert answer.status_code == 200, answer.text
        return [row for row in answer.json()["requests"] if row["status"] == "pending"]

    def approve(self, request_id: int) -> httpx.Response:
        body = {"groups": ["vid_public"]}
        return self.http.post(f"/api/v1/access-requests/{request_id}/approve", json=body, headers=self._admin())

    def _admin(self) -> dict[str, str]:
        if not self.admin:
            self.admin, _ = self.sign_in("admin", E2E_ADMIN_PASSWORD)
        return self.admin

    def victim_finishes(self, username: str, address: str) -> None:
        """The set-password link of `username` went to `address` alone; she sets her password and signs in."""
        approved = f"as {username} was approved"
        with_link = [d for d in self.inbox.delivered if SET_PASSWORD_PATH.search(d.body) and approved in d.body]
        assert [d.rcpt for d in with_link] == [(address,)], [d.rcpt for d in with_link]
        assert all(not SET_PASSWORD_PATH.search(d.body) for d in self.inbox.to(ATTACKER_MAIL))
        found = SET_PASSWORD_PATH.search(with_link[0].body)
        assert found is not None and f"{self.site}{found.group(0)}" in with_link[0].body
        form = {"password": VICTIM_PASSWORD, "confirm": VICTIM_PASSWORD}
        done = self.http.post(found.group(0), data=form, headers={"origin": self.site})
        assert done.status_code == 200, done.text
        _, me = self.sign_in(username, VICTIM_PASSWORD)
        assert "vid_public" in me["groups"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Caddy (shipped Caddyfile) in front of `sidecar serve` (local mode) mailing through a real SMTP server, with
    SIDECAR_PUBLIC_URL set to the Caddy site and an admin who has an email address."""
    root = tmp_path_factory.mktemp("request-integrity")
    data_dir = root / "data"
    base_env = child_env(SIDECAR_MODE="local", SIDECAR_DATA_DIR=str(data_dir), SIDECAR_LOG_LEVEL="WARNING")
    bootstrap = subprocess.run(
        [sys.executable, "-m", "sidecar", "bootstrap"],
        env={**base_env, "SIDECAR_BOOTSTRAP_PASSWORD": E2E_ADMIN_PASSWORD},
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bootstrap.returncode == 0, bootstrap.stdout + bootstrap.stderr
    database = Settings(_env_file=None, data_dir=data_dir).database_path
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.execute("UPDATE users SET email = ? WHERE username = 'admin'", (ADMIN_MAIL,))
        db.commit()
    caddy_port, sidecar_port = free_port(), free_port()
    site = f"http://127.0.0.1:{caddy_port}"
    started: list[LoggedProcess] = []
    with smtp_server() as (controller, inbox):
        try:
            serve_env = {
                **base_env,
                "SIDECAR_HOST": "127.0.0.1",
                "SIDECAR_PORT": str(sidecar_port),
                "SIDECAR_TRUSTED_PROXIES": "127.0.0.0/8,::1/128",
                "SIDECAR_SMTP_HOST": "127.0.0.1",
                "SIDECAR_SMTP_PORT": str(controller.port),
                "SIDECAR_SMTP_STARTTLS": "false",
                "SIDECAR_PUBLIC_URL": site,
            }
            started.append(
                start_process(
                    [sys.executable, "-m", "sidecar", "serve"],
                    serve_env,
                    ready_url=f"http://127.0.0.1:{sidecar_port}/healthz",
                    cwd=root,
                    log_path=root / "sidecar.log",
                )
            )
            caddy_env = child_env(
                SITE_ADDRESS=site,
                SIDECAR_UPSTREAM=f"127.0.0.1:{sidecar_port}",
                AUTH_UPSTREAM=f"127.0.0.1:{sidecar_port}",
                AUTH_URI="/auth/verify",
                CADDY_ADMIN="off",
                XDG_CONFIG_HOME=str(root / "caddy"),
                XDG_DATA_HOME=str(root / "caddy"),
            )
            argv = [str(caddy_binary()), "run", "--config", str(repo_caddyfile()), "--adapter", "caddyfile"]
            started.append(start_process(argv, caddy_env, ready_port=caddy_port, cwd=root, log_path=root / "caddy.log"))
            with httpx.Client(base_url=site, timeout=20) as http:
                found = Stack(site, database, inbox, http)
                inbox.settle = found.deliver
                yield found
        finally:
            for process in reversed(started):
                stop_process(process)


# Through Caddy every submission comes from 127.0.0.1, which may send 5 an hour: these two tests use 2 + 3.


@pytest.mark.caddy
def test_hijack_by_a_later_submission_fails_through_caddy(stack: Stack) -> None:
    """Victim first: the attacker's same-username and same-email submissions neither merge into hers nor receive
    anything of hers; the admin's approval mails the set-password link to her confirmed address only."""
    assert stack.submit(username="carol", email="carol@example.org", name="Carol").status_code == 200
    victim = stack.only_row(username="carol")
    attack = stack.submit(username="carol", email=ATTACKER_MAIL, name="Carol", reason="mine", group="vid_private")
    assert attack.status_code == 200
    assert _details(stack.only_row(id=victim["id"])) == _details(victim)  # the merge that was the hijack
    lookalike = stack.submit(username="carol2", email="CAROL@Example.org", name="Carol", reason="also mine")
    assert lookalike.status_code == 200
    assert _details(stack.only_row(id=victim["id"])) == _details(victim)
    stack.confirm("carol@example.org", "carol")  # the victim confirms hers
    stack.confirm(ATTACKER_MAIL, "carol")  # the attacker confirms his own claim on "carol"
    pending = {row["id"]: row for row in stack.admin_view()}
    unconfirmed = stack.only_row(username="carol2")
    assert unconfirmed["id"] not in pending and unconfirmed["status"] == "unconfirmed"
    assert pending[victim["id"]]["email"] == "carol@example.org"
    refused = stack.approve(unconfirmed["id"])
    assert refused.status_code == 409 and "error" in refused.json()
    approved = stack.approve(victim["id"])
    assert approved.status_code == 200 and approved.json()["emailed"] is True, approved.text
    [attacker] = [row for row in pending.values() if row["email"] == ATTACKER_MAIL]
    assert stack.approve(attacker["id"]).status_code == 409
    stack.victim_finishes("carol", "carol@example.org")


@pytest.mark.caddy
def test_hijack_by_an_earlier_submission_fails_through_caddy(stack: Stack) -> None:
    """Attacker first: he asks for "dinah" with his own address (and confirms it); her later request is her own,
    and the approval of hers mails only her."""
    first = stack.submit(username="dinah", email=ATTACKER_MAIL, name="Dinah", reason="hers soon", group="vid_private")
    assert first.status_code == 200
    attacker = stack.only_row(username="dinah", email=ATTACKER_MAIL)
    assert stack.submit(username="dinah", email="dinah@example.org", name="Dinah").status_code == 200
    assert _details(stack.only_row(id=attacker["id"])) == _details(attacker)  # hers neither joined nor replaced his
    victim = stack.only_row(username="dinah", email="dinah@example.org")
    assert victim["id"] != attacker["id"]
    stack.confirm(ATTACKER_MAIL, "dinah")
    stack.confirm("dinah@example.org", "dinah")
    approved = stack.approve(victim["id"])
    assert approved.status_code == 200 and approved.json()["emailed"] is True, approved.text
    assert stack.approve(attacker["id"]).status_code == 409
    stack.victim_finishes("dinah", "dinah@example.org")


def test_guessed_confirmation_links_cost_no_directory_call_and_are_throttled(
    sso: tuple[TestClient, CountingTransport],
) -> None:
    """A confirmation is checked before anything else is asked of Authentik (whose user list it would read to find
    the admins to notify), and one client cannot hammer the public route."""
    client, transport = sso
    answers = [
        client.post(f"/request-access/confirm/{'A' * 42}{number % 10}", headers={"origin": OWN}).status_code
        for number in range(35)
    ]
    assert transport.calls == []
    assert answers[:30] == [404] * 30 and set(answers[30:]) == {429}
