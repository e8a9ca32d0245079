"""Plain-text email through an outbox: every message is committed first, then sent; failures wait and retry."""

from __future__ import annotations

import asyncio
import logging
import re
import smtplib
import sqlite3
import ssl
import time
from collections.abc import Callable
from email.message import EmailMessage

from sidecar.settings import Settings
from sidecar.store import Store

log = logging.getLogger("sidecar.mail")
SMTP_TIMEOUT = 10.0
MAX_BACKOFF = 3600.0
FIRST_BACKOFF = 30.0


_EMAIL = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)
EMAIL_LIMIT = 254


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


class Mailer:
    def __init__(self, store: Store, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self._lock = asyncio.Lock()
        self._told_off = False

    @property
    def configured(self) -> bool:
        return bool(self.settings.smtp_host)

    def enqueue(self, db: sqlite3.Connection, recipient: str, subject: str, body: str) -> bool:
        """Queue one email in the caller's transaction; False (and nothing queued) when no SMTP server is set."""
        if not self.configured:
            if not self._told_off:
                self._told_off = True
                log.info("SIDECAR_SMTP_HOST is not set: emails are skipped")
            return False
        if not valid_email(recipient):
            log.warning("an email to an address that is not a plain address was not queued")
            return False
        self.store.enqueue_mail(db, recipient, header_safe(subject), body, self.clock())
        return True

    async def flush(self) -> int:
        """Send what is due; once one send succeeds the server is back, so the rest is tried at once too."""
        if not self.configured:
            return 0
        sent = 0
        async with self._lock:
            for row in self.store.pending_mail(self.clock()):
                sent += await self._send(row)
            if sent:
                for row in self.store.pending_mail(None):
                    sent += await self._send(row)
        return sent

    async def _send(self, row: sqlite3.Row) -> int:
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
            return 0
        try:
            await asyncio.to_thread(self._deliver, message)
        except (OSError, smtplib.SMTPException, ValueError) as error:
            attempts = int(row["attempts"]) + 1
            with self.store.transaction() as db:
                reason = f"{type(error).__name__}: {error}"
                self.store.mail_failed(db, row["id"], reason, self.clock() + backoff(attempts))
            log.warning("email %s not sent (attempt %d): %s", row["id"], attempts, error)
            return 0
        with self.store.transaction() as db:
            self.store.mail_sent(db, row["id"], self.clock())
        return 1

    def _deliver(self, message: EmailMessage) -> None:
        settings = self.settings
        assert settings.smtp_host is not None
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=SMTP_TIMEOUT) as smtp:
            if settings.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.smtp_username and settings.smtp_password is not None:
                smtp.login(settings.smtp_username, settings.smtp_password.get_secret_value())
            smtp.send_message(message)

    async def run(self, interval: float = 60.0) -> None:
        """Retry the outbox now and then (the app's lifespan runs this in the background)."""
        while True:
            try:
                await self.flush()
            except Exception:  # noqa: BLE001 - the loop must outlive one bad round
                log.exception("outbox round failed")
            await asyncio.sleep(interval)
