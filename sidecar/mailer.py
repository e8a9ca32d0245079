"""Plain-text email through an outbox: every message is committed first, then a worker sends it; failures wait and
retry. No request ever talks to the SMTP server: queueing wakes the worker, which sends in the background, one
conversation at a time, each within a total deadline."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import smtplib
import socket
import sqlite3
import ssl
import time
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any, Literal

from sidecar.settings import Settings
from sidecar.store import Store

log = logging.getLogger("sidecar.mail")
SMTP_TIMEOUT = 10.0  # the longest any one step (connect, one read, one write) may take
# The whole conversation (connect, greeting, STARTTLS, login, sending) ends within this many upstream timeouts
# (`SIDECAR_UPSTREAM_TIMEOUT`): 20 s by default.
DEADLINE_FACTOR = 4.0
# How much longer than its deadline the worker waits for a conversation's thread before moving on without it (only a
# name lookup can outlast the deadline; the thread then sends nothing, as every socket step checks the deadline).
DEADLINE_GRACE = 2.0
MAX_BACKOFF = 3600.0
FIRST_BACKOFF = 30.0
SERVER_DOWN_AFTER = 2  # conversations in a row that fail (not for their message's sake) before a round stops
MIN_IDLE = 1.0  # the worker looks at the outbox at most this often on its own (queueing wakes it at once)


_EMAIL = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)
EMAIL_LIMIT = 254
# Failures that concern one message (its recipient or content), not the server: the round goes on with the next.
MESSAGE_ERRORS = (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError, smtplib.SMTPSenderRefused, ValueError)
Outcome = Literal["sent", "failed", "down"]


def valid_email(value: str) -> bool:
    """A plain address: no display name, no comments, and no RFC 2047 encoded word (`=?utf-8?q?...?=`), which
    email libraries decode when the address becomes a header, line breaks and all."""
    local, _, _ = value.partition("@")
    if len(value) > EMAIL_LIMIT or len(local) > 64 or "=?" in value or "?=" in value:
        return False
    return _EMAIL.fullmatch(value) is not None


def header_safe(value: str, limit: int = 200) -> str:
    """A header value with no line breaks or other control characters (no header injection), cut to `limit`."""
    return "".join(" " if ord(char) < 32 or ord(char) == 127 else char for char in value)[:limit].strip()


def backoff(attempts: int) -> float:
    """Seconds to wait after `attempts` failed attempts."""
    return float(min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** max(0, attempts - 1)))


class Deadline:
    """The end of one SMTP conversation. smtplib's timeout applies to each socket step, so a server that trickles a
    byte now and then could hold a conversation for ever; every step here waits at most what is left."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.ends = time.monotonic() + seconds

    def left(self) -> float:
        """Seconds the next step may take; TimeoutError once the deadline has passed."""
        left = self.ends - time.monotonic()
        if left <= 0:
            raise self.error()
        return min(left, SMTP_TIMEOUT)

    def passed(self) -> bool:
        return time.monotonic() >= self.ends

    def error(self) -> TimeoutError:
        return TimeoutError(f"the SMTP conversation took longer than {self.seconds:g} s in all")


class _BoundedSocket(socket.socket):
    """A plain socket whose every read and write waits at most what is left of the conversation's deadline."""

    deadline: Deadline

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        self.settimeout(self.deadline.left())
        return super().recv_into(buffer, nbytes, flags)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self.settimeout(self.deadline.left())
        return super().recv(bufsize, flags)

    def sendall(self, data: Any, flags: int = 0) -> None:
        self.settimeout(self.deadline.left())  # a timeout bounds all of sendall, not each chunk
        super().sendall(data, flags)


class _BoundedSSLSocket(ssl.SSLSocket):
    """The same after STARTTLS (the TLS handshake included); `deadline` is set on a subclass per conversation."""

    deadline: Deadline

    def do_handshake(self, block: bool = False) -> None:
        self.settimeout(self.deadline.left())
        super().do_handshake(block)

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        self.settimeout(self.deadline.left())
        return super().recv_into(buffer, nbytes, flags)

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        self.settimeout(self.deadline.left())
        return super().recv(buflen, flags)

    def send(self, data: Any, flags: int = 0) -> int:  # sendall sends through this, piece by piece
        self.settimeout(self.deadline.left())
        return super().send(data, flags)


class _BoundedSMTP(smtplib.SMTP):
    """smtplib.SMTP whose connection attempts and socket steps all end by one deadline."""

    def __init__(self, host: str, port: int, deadline: Deadline) -> None:
        self.deadline = deadline
        super().__init__(host, port, timeout=deadline.left())

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        """Like socket.create_connection, but every address tried shares the deadline."""
        error: OSError = OSError(f"{host} has no address")
        for family, kind, proto, _, address in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
            sock = _BoundedSocket(family, kind, proto)
            sock.deadline = self.deadline
            try:
                sock.settimeout(self.deadline.left())
                sock.connect(address)
                return sock
            except OSError as failed:
                sock.close()
                error = failed
        raise error

    def tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        context.sslsocket_class = type("_ConversationSSLSocket", (_BoundedSSLSocket,), {"deadline": self.deadline})
        return context


class Mailer:
    def __init__(self, store: Store, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self._lock = asyncio.Lock()
        self._told_off = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._down_rounds = 0  # rounds in a row that found the server unreachable

    @property
    def configured(self) -> bool:
        return bool(self.settings.smtp_host)

    @property
    def deadline(self) -> float:
        """Seconds one SMTP conversation may take in all."""
        return DEADLINE_FACTOR * self.settings.upstream_timeout

    def enqueue(self, db: sqlite3.Connection, recipient: str, subject: str, body: str) -> bool:
        """Queue one email in the caller's transaction and wake the worker; False (and nothing queued) when no SMTP
        server is set. Nothing here talks to the SMTP server."""
        if not self.configured:
            if not self._told_off:
                self._told_off = True
                log.info("SIDECAR_SMTP_HOST is not set: emails are skipped")
            return False
        if not valid_email(recipient):
            log.warning("an email to an address that is not a plain address was not queued")
            return False
        self.store.enqueue_mail(db, recipient, header_safe(subject), body, self.clock())
        self._wake_worker()
        return True

    def _wake_worker(self) -> None:
        """Wake the worker once the caller's transaction is over. enqueue runs inside that (synchronous) transaction,
        so the wake is scheduled on the worker's loop rather than run: on the loop's own thread it comes after the
        caller's block and its commit; from another thread, the worker's read of the outbox waits on the store's lock
        until that commit. A wake that finds nothing (a transaction rolled back) costs one empty read."""
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return  # no worker in this process (a CLI): the server's worker finds the mail on its next round
        with contextlib.suppress(RuntimeError):  # the loop has closed meanwhile
            loop.call_soon_threadsafe(wake.set)

    async def flush(self, *, everything: bool = False) -> int:
        """Send what is due (or, with `everything`, all that is unsent), oldest first. One message whose conversation
        fails may be its recipient's doing (a server that hangs on one address), so the round goes on; a second
        failure in a row says the server is unreachable and ends it (the rest waits for the next round rather than
        each costing a deadline). Once one send succeeds the server is back, so everything unsent is tried at once
        too, except what failed while it was working."""
        if not self.configured:
            return 0
        async with self._lock:
            failed_while_working: set[int] = set()
            sent, reachable = await self._round(None if everything else self.clock(), failed_while_working)
            if sent and reachable:
                more, reachable = await self._round(None, failed_while_working)
                sent += more
            self._down_rounds = 0 if reachable else self._down_rounds + 1
        return sent

    async def _round(self, due_by: float | None, failed_while_working: set[int]) -> tuple[int, bool]:
        """Try each unsent message (due by `due_by`, or all) once, except those in `failed_while_working`, which
        gains those that fail after one was sent; (how many were sent, whether the server was reachable)."""
        sent = failures_in_a_row = 0
        tried = set(failed_while_working)
        while rows := [row for row in self.store.pending_mail(due_by) if row["id"] not in tried]:
            for row in rows:
                tried.add(row["id"])
                outcome = await self._send(row)
                if outcome == "sent":
                    sent += 1
                elif sent:
                    failed_while_working.add(row["id"])
                failures_in_a_row = failures_in_a_row + 1 if outcome == "down" else 0
                if failures_in_a_row >= SERVER_DOWN_AFTER:
                    return sent, False
        return sent, failures_in_a_row == 0

    async def _send(self, row: sqlite3.Row) -> Outcome:
        try:
            message = EmailMessage()
            message["From"] = header_safe(self.settings.smtp_from, 254)
            message["To"] = header_safe(row["recipient"], 254)
            message["Subject"] = header_safe(row["subject"])
            message.set_content(row["body"])
        except ValueError as error:
            # A message that cannot even be built never will be: set it aside, so it cannot hold up the rest.
            with self.store.transaction() as db:
                self.store.mail_given_up(db, row["id"], f"cannot be built: {error}", self.clock())
            log.warning("email %s set aside: it cannot be built (%s)", row["id"], error)
            return "failed"
        deadline = self.deadline
        # The conversation runs on a thread; the worker waits for it at most its deadline (and a little more).
        work = asyncio.ensure_future(asyncio.to_thread(self._deliver, message, Deadline(deadline)))
        work.add_done_callback(_collect)
        try:
            await asyncio.wait({work}, timeout=deadline + DEADLINE_GRACE)
        except asyncio.CancelledError:
            # Shut down mid-conversation: let it end (it cannot outlast its deadline) and record what happened, so a
            # message the server took is not sent again after the restart.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({work}, timeout=deadline + DEADLINE_GRACE)
            self._record(row, work)
            raise
        return self._record(row, work)

    def _record(self, row: sqlite3.Row, work: asyncio.Future[None]) -> Outcome:
        if work.done() and not work.cancelled() and work.exception() is None:
            with self.store.transaction() as db:
                self.store.mail_sent(db, row["id"], self.clock())
            return "sent"
        error: BaseException
        if not work.done() or work.cancelled():
            error = TimeoutError(f"the SMTP conversation did not end within {self.deadline:g} s")
        else:
            error = work.exception() or RuntimeError("no outcome")
        attempts = int(row["attempts"]) + 1
        with self.store.transaction() as db:
            reason = f"{type(error).__name__}: {error}"
            self.store.mail_failed(db, row["id"], reason, self.clock() + backoff(attempts))
        log.warning("email %s not sent (attempt %d, next in %g s): %s", row["id"], attempts, backoff(attempts), error)
        return "failed" if isinstance(error, MESSAGE_ERRORS) else "down"

    def _deliver(self, message: EmailMessage, deadline: Deadline) -> None:
        """One SMTP conversation (on a thread); every step ends by `deadline`."""
        settings = self.settings
        if settings.smtp_host is None:
            raise ValueError("SIDECAR_SMTP_HOST is not set")
        try:
            smtp = _BoundedSMTP(settings.smtp_host, settings.smtp_port, deadline)
            try:
                if settings.smtp_starttls:
                    smtp.starttls(context=smtp.tls_context())
                if settings.smtp_username and settings.smtp_password is not None:
                    smtp.login(settings.smtp_username, settings.smtp_password.get_secret_value())
                smtp.send_message(message)
                with contextlib.suppress(OSError):  # the message was taken; a server that does not say goodbye is fine
                    smtp.quit()
            finally:
                smtp.close()
        except OSError as error:  # smtplib reports a step cut short as "Connection unexpectedly closed: timed out"
            if deadline.passed() and not isinstance(error, MESSAGE_ERRORS):
                raise deadline.error() from error
            raise

    async def run(self, interval: float = 60.0) -> None:
        """The worker (the app's lifespan runs it in the background): sends as soon as mail is queued, and retries
        failed mail once its backoff is over (looking at least every `interval` seconds)."""
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        everything = True  # after a start, whatever waits is tried at once: a restart often follows a fixed setting
        try:
            while True:
                self._wake.clear()  # a wake during the round below makes the next one start at once
                try:
                    await self.flush(everything=everything)
                    everything = False
                except Exception:  # noqa: BLE001 - the loop must outlive one bad round
                    log.exception("outbox round failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._idle(interval))
        finally:
            self._loop = self._wake = None

    def _idle(self, interval: float) -> float:
        """Seconds until the earliest retry is due, within [MIN_IDLE, interval]; while the server is unreachable, the
        server's own backoff (mail queued meanwhile still wakes the worker, which is how it learns the server is back).
        """
        if self._down_rounds:
            return max(MIN_IDLE, min(interval, backoff(self._down_rounds)))
        try:
            due = [float(row["next_attempt_at"]) for row in self.store.pending_mail(None)]
        except sqlite3.Error:
            return interval
        return max(MIN_IDLE, min([interval, *(at - self.clock() for at in due)]))


def _collect(work: asyncio.Future[None]) -> None:
    """Retrieve a finished conversation's error, so one the worker stopped waiting for is not logged as lost."""
    if not work.cancelled():
        work.exception()
