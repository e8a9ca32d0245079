"""SMTP faults (issue 12, item 5): mail leaves the request path. The public form, the confirmation, an approval and a
rejection only queue mail; a worker sends it, each SMTP conversation within one total deadline (derived from
SIDECAR_UPSTREAM_TIMEOUT). Real loopback stand-ins play the SMTP server: one that accepts and never greets, one that
greets and then trickles a byte at a time, a port where nothing listens, and a relay to a healthy aiosmtpd server
that can hold one recipient's conversation for ever. Once SMTP works again every queued mail is delivered exactly
once, and mail queued before a restart is sent after it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from email import message_from_bytes
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from starlette.testclient import TestClient

from sidecar.mailer import DEADLINE_FACTOR
from sidecar.processes import free_port
from sidecar.runtime import Services
from sidecar.settings import Settings
from tests.helpers import API_KEY, access_request_form, form_token

ORIGIN = {"origin": "http://testserver"}
KEY = {"x-api-key": API_KEY}
UPSTREAM_TIMEOUT = 0.75
DEADLINE = DEADLINE_FACTOR * UPSTREAM_TIMEOUT  # one SMTP conversation, in all
PROMPT = 2.0  # a request that waited for even one SMTP conversation would take longer than this
SETTLE = 20.0  # how long the worker gets to deliver once the server works


class Inbox:
    """The healthy server behind the stand-in: keeps every message; refuses the recipients in `refused`."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.refused: set[str] = set()

    async def handle_RCPT(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refused:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        assert isinstance(envelope.content, bytes)
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    def delivered(self) -> list[tuple[str, str]]:
        return sorted((str(m["To"]), str(m["Subject"])) for m in self.messages)


class StandIn:
    """A loopback SMTP server whose behaviour for new connections is `mode`: "hang" (accepts, never greets),
    "trickle" (greets, then answers EHLO one byte at a time, never ending the line), "refuse" (nothing listens on
    the port) or "relay" (passes the conversation to the healthy server, except that a conversation naming one of
    `hold` as a recipient is held for ever at that point)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.mode = "hang"
        self.hold: set[str] = set()
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="smtp-stand-in", daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> StandIn:
        self._thread.start()
        self._call(self._listen())
        return self

    def switch(self, mode: str) -> None:
        if mode == "refuse":
            self._call(self._close())
        elif self._server is None:
            self._call(self._listen())
        self.mode = mode

    def stop(self) -> None:
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(5)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _shutdown(self) -> None:
        await self._close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            if self.mode == "hang":
                await reader.read()  # until the client gives up
            elif self.mode == "trickle":
                writer.write(b"220 stand-in ESMTP\r\n")
                await reader.readline()
                while True:
                    writer.write(b"2")
                    await writer.drain()
                    await asyncio.sleep(0.1)
            else:
                await self._relay(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def outbound() -> None:
            while line := await reader.readline():
                if line[:4].upper() == b"RCPT" and any(address.encode() in line for address in self.hold):
                    await reader.read()  # held: nothing more reaches the server, nothing comes back
                    return
                up_writer.write(line)
                await up_writer.drain()

        async def inbound() -> None:
            while data := await up_reader.read(65536):
                writer.write(data)
                await writer.drain()

        directions = [asyncio.ensure_future(outbound()), asyncio.ensure_future(inbound())]
        try:
            await asyncio.wait(directions, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for direction in directions:
                direction.cancel()
            await asyncio.gather(*directions, return_exceptions=True)
            up_writer.close()


@pytest.fixture
def smtp() -> Iterator[tuple[StandIn, Inbox]]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    stand_in = StandIn(controller.port).start()
    try:
        yield stand_in, inbox
    finally:
        stand_in.stop()
        controller.stop()


@pytest.fixture
def mailing(settings: Settings, smtp: tuple[StandIn, Inbox]) -> Settings:
    return settings.model_copy(
        update={
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp[0].port,
            "smtp_starttls": False,
            "public_url": "http://testserver",
            "upstream_timeout": UPSTREAM_TIMEOUT,
        }
    )


def _services(client: TestClient) -> Services:
    found: Services = client.app.state.services  # type: ignore[attr-defined]
    return found


def _prepare(client: TestClient) -> None:
    svc = _services(client)
    with svc.store.transaction() as db:
        svc.store.insert_group(db, "vid_public")
        db.execute("UPDATE users SET email = 'admin@example.org' WHERE username = 'admin'")


@pytest.fixture
def app(mailing: Settings, make_client: Callable[..., TestClient]) -> TestClient:
    client = make_client(app_settings=mailing)
    _prepare(client)
    return client


def _timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    answer = call()
    return answer, time.monotonic() - started


def _outbox(client: TestClient) -> list[dict[str, Any]]:
    rows = _services(client).store._read("SELECT * FROM outbox ORDER BY id")
    return [dict(row) for row in rows]


def _confirm_path(client: TestClient, address: str) -> str:
    [body] = [row["body"] for row in _outbox(client) if row["recipient"] == address and row["subject"][:7] == "Confirm"]
    return "/request-access/confirm/" + str(body).split("/request-access/confirm/", 1)[1].split()[0]


def _eventually(check: Callable[[], bool], within: float) -> bool:
    ends = time.monotonic() + within
    while time.monotonic() < ends:
        if check():
            return True
        time.sleep(0.05)
    return check()


def _submit(client: TestClient, username: str) -> float:
    """Submit the public form and confirm it from the queued link; the longest of the two answers' times."""
    token = form_token(client)
    answer, submitting = _timed(
        lambda: client.post("/request-access", data=access_request_form(username, token), headers=ORIGIN)
    )
    assert answer.status_code == 200 and "error" not in answer.text.lower(), answer.text
    link = _confirm_path(client, f"{username}@example.org")
    answer, confirming = _timed(lambda: client.post(link, headers=ORIGIN))
    assert answer.status_code == 200, answer.text
    return max(submitting, confirming)


def _pending_id(client: TestClient, username: str) -> int:
    requests = client.get("/api/v1/access-requests", headers=KEY).json()["requests"]
    [found] = [r["id"] for r in requests if r["username"] == username and r["status"] == "pending"]
    return int(found)


def _state(client: TestClient, inbox: Inbox) -> tuple[list[tuple[Any, ...]], list[tuple[str, str]]]:
    """What to show when delivery did not settle: the outbox rows without bodies, and what arrived."""
    keys = ("id", "recipient", "subject", "attempts", "sent_at", "last_error")
    return [tuple(row[key] for key in keys) for row in _outbox(client)], inbox.delivered()


def _delivered_once(client: TestClient, inbox: Inbox) -> bool:
    rows = _outbox(client)
    return all(row["sent_at"] is not None for row in rows) and inbox.delivered() == sorted(
        (row["recipient"], row["subject"]) for row in rows
    )


def test_form_confirmation_approval_and_rejection_answer_at_once_while_smtp_never_greets(
    app: TestClient, smtp: tuple[StandIn, Inbox]
) -> None:
    stand_in, inbox = smtp
    assert _submit(app, "ada") < PROMPT
    assert _submit(app, "bob") < PROMPT
    approved, approving = _timed(
        lambda: app.post(f"/api/v1/access-requests/{_pending_id(app, 'ada')}/approve", json={"groups": []}, headers=KEY)
    )
    assert approved.status_code == 200 and approved.json()["emailed"] is True, approved.text
    rejected, rejecting = _timed(
        lambda: app.post(f"/api/v1/access-requests/{_pending_id(app, 'bob')}/reject", json={}, headers=KEY)
    )
    assert rejected.status_code == 200 and rejected.json()["emailed"] is True, rejected.text
    assert approving < PROMPT and rejecting < PROMPT

    # The worker did try, and each try ended at its deadline with the reason kept; nothing was delivered.
    assert _eventually(lambda: any("Timeout" in row["last_error"] for row in _outbox(app)), DEADLINE + 5)
    assert stand_in.connections >= 1 and inbox.messages == []
    assert all(row["sent_at"] is None for row in _outbox(app))

    # The server works again: the next mail queued wakes the worker, which sends everything, each message once.
    stand_in.switch("relay")
    assert _submit(app, "cleo") < PROMPT
    assert _eventually(lambda: _delivered_once(app, inbox), SETTLE), _state(app, inbox)
    subjects = [subject for _, subject in inbox.delivered()]
    assert len(inbox.messages) == 8 and subjects.count("New access request") == 3
    assert {"Your access request was approved", "Your access request was declined"} <= set(subjects)
    assert all(row["attempts"] >= 1 for row in _outbox(app))


def test_three_strangers_at_once_are_all_answered_at_once_while_smtp_never_greets(
    app: TestClient, smtp: tuple[StandIn, Inbox]
) -> None:
    token = form_token(app)

    def stranger(username: str) -> tuple[int, float]:
        answer, took = _timed(
            lambda: app.post("/request-access", data=access_request_form(username, token), headers=ORIGIN)
        )
        return answer.status_code, took

    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(stranger, ["ada", "bob", "cleo"]))
    assert [status for status, _ in answers] == [200, 200, 200]
    assert max(took for _, took in answers) < PROMPT, answers
    assert sorted(row["recipient"] for row in _outbox(app)) == [
        "ada@example.org",
        "bob@example.org",
        "cleo@example.org",
    ]
    assert smtp[1].messages == []


def test_a_server_that_greets_then_trickles_costs_one_deadline_per_try(
    app: TestClient, smtp: tuple[StandIn, Inbox]
) -> None:
    stand_in, inbox = smtp
    stand_in.switch("trickle")
    token = form_token(app)
    answer, took = _timed(lambda: app.post("/request-access", data=access_request_form("ada", token), headers=ORIGIN))
    assert answer.status_code == 200 and took < PROMPT
    # smtplib's own timeout applies per read, and every read gets a byte: only a total deadline ends the try.
    assert _eventually(lambda: "took longer than" in _outbox(app)[0]["last_error"], DEADLINE + 5), _outbox(app)
    [row] = _outbox(app)
    assert row["sent_at"] is None and row["attempts"] == 1 and row["next_attempt_at"] > time.time()

    stand_in.switch("relay")  # the worker is free again: the next mail goes, and the waiting one with it
    answer = app.post("/request-access", data=access_request_form("bob", token), headers=ORIGIN)
    assert answer.status_code == 200
    assert _eventually(lambda: _delivered_once(app, inbox), SETTLE), _state(app, inbox)
    assert inbox.delivered() == [
        ("ada@example.org", "Confirm your request for stream access"),
        ("bob@example.org", "Confirm your request for stream access"),
    ]


def test_a_recipient_the_server_refuses_or_holds_does_not_hold_back_the_others(
    app: TestClient, smtp: tuple[StandIn, Inbox]
) -> None:
    stand_in, inbox = smtp
    stand_in.switch("relay")
    inbox.refused.add("ada@example.org")
    stand_in.hold.add("bob@example.org")
    token = form_token(app)
    for username in ("ada", "bob", "cleo"):
        data = access_request_form(username, token)
        answer, took = _timed(lambda: app.post("/request-access", data=data, headers=ORIGIN))  # noqa: B023
        assert answer.status_code == 200 and took < PROMPT

    def settled() -> bool:
        rows = {row["recipient"]: row for row in _outbox(app)}
        return (
            rows["cleo@example.org"]["sent_at"] is not None
            and "550" in rows["ada@example.org"]["last_error"]
            and "took longer than" in rows["bob@example.org"]["last_error"]
        )

    assert _eventually(settled, SETTLE), _outbox(app)
    assert inbox.delivered() == [("cleo@example.org", "Confirm your request for stream access")]
    waiting = [row for row in _outbox(app) if row["sent_at"] is None]
    assert sorted(row["recipient"] for row in waiting) == ["ada@example.org", "bob@example.org"]


def test_mail_queued_before_a_restart_is_sent_once_after_it(
    mailing: Settings, smtp: tuple[StandIn, Inbox], make_client: Callable[..., TestClient]
) -> None:
    stand_in, inbox = smtp
    stand_in.switch("refuse")
    first = make_client(app_settings=mailing)
    _prepare(first)
    assert _submit(first, "ada") < PROMPT
    assert _eventually(lambda: all("Refused" in row["last_error"] for row in _outbox(first)), DEADLINE + 5)
    queued = _outbox(first)
    assert len(queued) == 2 and all(row["sent_at"] is None for row in queued)  # to ada and to the admin
    first.__exit__(None, None, None)

    stand_in.switch("relay")  # the mail settings were fixed and the sidecar restarted
    second = make_client(app_settings=mailing)
    assert _eventually(lambda: _delivered_once(second, inbox), SETTLE), _state(second, inbox)
    assert [row["id"] for row in _outbox(second)] == [row["id"] for row in queued]
    assert inbox.delivered() == [
        ("ada@example.org", "Confirm your request for stream access"),
        ("admin@example.org", "New access request"),
    ]
