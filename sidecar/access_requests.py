"""Requests for access from the public form: stored first, decided once by an admin, answered by email."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from sidecar.directory.base import Conflict, DirectoryError, InvalidName, validate_username
from sidecar.errors import BadRequest, NotFoundError, TooManyRequests
from sidecar.keys import digest
from sidecar.mailer import Mailer, valid_email
from sidecar.passwords import hash_password
from sidecar.settings import Settings
from sidecar.store import Store
from sidecar.users import Recovery, UserAdmin

RATE_PER_IP = "5/hour"
STALE_APPROVAL_SECONDS = 300  # an approval still "approving" after this was interrupted
# This server process: an approval another process began and never finished was interrupted by its stop (one server
# per data dir), so it may be taken up again at once.
INSTANCE = secrets.token_hex(8)
# Confirmation mails an address gets an hour, whoever typed it in, and for one username at that address: enough that
# a stranger with one address (5 submissions an hour) cannot use up the address's share, few enough not to flood it.
CONFIRM_MAILS_PER_HOUR = 10
CONFIRM_MAILS_PER_USERNAME = 3
RATE_CONFIRM_PER_IP = "30/hour"
CONFIRM_TTL_SECONDS = 24 * 3600
GROUPS_CACHE_SECONDS = 60.0
GROUPS_FAILURE_SECONDS = 10.0
LINK_TTL_SECONDS = 72 * 3600
REVIEW_TTL_SECONDS = 7 * 24 * 3600
ADMIN_SCAN_PAGES = 50  # at most 50 pages of 100 directory users are read to find the admins' addresses
LIMITS = {"name": 200, "username": 150, "email": 254, "org": 200, "reason": 2000}
REQUIRED = ("name", "username", "email", "reason")
PUBLIC_ACTOR = "public"
_SECRET = re.compile(r"[A-Za-z0-9_-]{32,128}")
log = logging.getLogger("sidecar.access_requests")


def _lines(value: object) -> list[str]:
    return str(value).splitlines() or [""]


@dataclass(frozen=True)
class Submission:
    name: str
    username: str
    email: str
    org: str
    reason: str
    requested_group: str


def _row(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "username": row["username"],
        "email": row["email"],
        "name": row["name"],
        "org": row["org"],
        "reason": row["reason"],
        "requested_group": row["requested_group"],
        "status": row["status"],
        "created_at": int(row["created_at"]),
        "updated_at": int(row["updated_at"]),
        "decided_by": row["decided_by"],
        "decided_at": None if row["decided_at"] is None else int(row["decided_at"]),
        "message": row["message"],
        "email_confirmed": bool(row["email_confirmed"]),
    }


class AccessRequests:
    def __init__(
        self,
        store: Store,
        users: UserAdmin,
        mailer: Mailer,
        settings: Settings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.users = users
        self.mailer = mailer
        self.settings = settings
        self.clock = clock
        self.per_ip = parse(RATE_PER_IP)
        self.per_ip_confirm = parse(RATE_CONFIRM_PER_IP)
        self._groups: tuple[float, list[str]] | None = None  # (valid until, names)
        self._groups_lock = asyncio.Lock()
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    async def requestable_groups(self) -> list[str]:
        """Prefixed groups someone may ask for (never admin groups); empty when the directory cannot say.

        The public form reads this on every view: one directory call at a time fills the answer, which is reused for
        `GROUPS_CACHE_SECONDS` (a failure for `GROUPS_FAILURE_SECONDS`), so anonymous page loads, however many and
        however concurrent, cannot turn into a stream of directory calls.
        """
        async with self._groups_lock:
            now = time.monotonic()
            if self._groups is None or now >= self._groups[0]:
                try:
                    groups = await self.users.list_groups()
                except DirectoryError:
                    self._groups = (time.monotonic() + GROUPS_FAILURE_SECONDS, [])
                else:
                    admin = set(self.settings.admin_groups)
                    names = [group.name for group in groups if group.name not in admin]
                    self._groups = (time.monotonic() + GROUPS_CACHE_SECONDS, names)
            return self._groups[1]

    async def check(self, form: dict[str, str]) -> Submission:
        values = {key: form.get(key, "").strip() for key in (*LIMITS, "group")}
        for key in REQUIRED:
            if not values[key]:
                raise BadRequest(f"{key} is required", field=key)
        for key, limit in LIMITS.items():
            if len(values[key]) > limit or any(ord(char) < 32 and char not in "\r\n\t" for char in values[key]):
                raise BadRequest(f"{key} must be at most {limit} characters of text", field=key)
            # Any line break (U+2028, U+0085 too) or invisible control in a one-line field would start a line of its
            # own in the admins' email.
            if key != "reason" and not values[key].isprintable():
                raise BadRequest(f"{key} must be one line", field=key)
        try:
            validate_username(values["username"])
        except InvalidName as error:
            raise BadRequest(str(error), field="username") from error
        if not valid_email(values["email"]):
            raise BadRequest("email must be a valid email address", field="email")
        if values["group"] and values["group"] not in await self.requestable_groups():
            raise BadRequest("choose one of the listed groups", field="group")
        return Submission(
            name=values["name"],
            username=values["username"],
            email=values["email"].lower(),
            org=values["org"],
            reason=values["reason"],
            requested_group=values["group"],
        )

    def throttle_confirmations(self, ip: str) -> None:
        """Confirmation links are random and single-use; this only keeps a script from hammering the route."""
        if not self._limiter.hit(self.per_ip_confirm, "confirm", ip):
            raise TooManyRequests("Too many requests; please try again later")

    def throttle(self, ip: str) -> None:
        """Count one submission; refuse once the IP has sent too many. There is no limit per email address on
        submissions (five junk requests naming someone's address must not block theirs); the confirmation mails
        an address can receive are capped instead (`CONFIRM_MAILS_PER_HOUR`)."""
        if not self._limiter.hit(self.per_ip, "ip", ip):
            raise TooManyRequests("Too many requests; please try again later")

    async def admin_emails(self) -> list[str]:
        """Where new requests are announced: active admins with an address, locally and in the directory.

        In Authentik mode the directory is read (members of the admin groups with the managed prefix); when it
        cannot be reached the request is still stored and the requester still answered, only those admins miss
        this one notification (the request waits on the Users page all the same).
        """
        found = set(self.store.admin_emails(self.settings.admin_groups))
        if self.settings.mode == "local":
            return sorted(found)
        admin = {group for group in self.settings.admin_groups if group.startswith(self.settings.group_prefix)}
        if not admin:
            return sorted(found)
        try:
            for number in range(1, ADMIN_SCAN_PAGES + 1):
                page = await self.users.directory.list_users("", number, 100)
                found.update(
                    user.email for user in page.users if user.is_active and user.email and admin & set(user.groups)
                )
                if number * 100 >= page.total or not page.users:
                    break
        except DirectoryError as error:
            log.warning("admins in the directory not notified of a new access request: %s", error)
        return sorted(found)

    @property
    def confirming(self) -> bool:
        """Whether requesters confirm their address by mail. Mailed links are built from SIDECAR_PUBLIC_URL only;
        without it no confirmation link could work, so requests then reach the admins unconfirmed, as without SMTP
        (`sidecar check` reports the missing URL)."""
        return self.mailer.configured and bool(self.settings.public_url)

    def _base(self) -> str:
        # Links come from SIDECAR_PUBLIC_URL only, never from the Host header of an anonymous request: a forged
        # Host must not put someone else's address (with a secret in it) into a mailbox.
        return self.settings.public_url.rstrip("/")

    async def submit(self, found: Submission, ip: str) -> int:
        """Store the request and, with SMTP configured, mail the requester a confirmation link: admins see a request
        only once the requester has shown the address is theirs. Without SMTP the request goes to the admins at
        once, marked unconfirmed, and no mail ever goes to its address.

        A submission never changes another: the same form sent again is the same request (with a fresh link if
        none is still valid), anything else is a request of its own, even for the same username and email.
        """
        confirming = self.confirming
        now = self.clock()
        with self.store.transaction() as db:
            fields = {
                "username": found.username,
                "email": found.email,
                "name": found.name,
                "org": found.org,
                "reason": found.reason,
                "requested_group": found.requested_group,
            }
            same = self.store.same_open_access_request(db, **fields)
            if same is not None:
                request_id = int(same["id"])
                detail = {"id": request_id, "email": found.email, "ip": ip}
                self.store.audit(db, PUBLIC_ACTOR, "access.request_repeated", found.username, detail)
                if same["status"] == "unconfirmed" and not self.store.confirm_link_outstanding(db, request_id, now):
                    self._send_confirmation(db, request_id, found, now)  # the first never came, or expired
                return request_id
            request_id = self.store.insert_access_request(
                db, **fields, status="unconfirmed" if confirming else "pending", now=now
            )
            detail = {"id": request_id, "email": found.email, "ip": ip, "confirming": confirming}
            self.store.audit(db, PUBLIC_ACTOR, "access.request", found.username, detail)
            if confirming:
                self._send_confirmation(db, request_id, found, now)
        return request_id

    def _send_confirmation(self, db: sqlite3.Connection, request_id: int, found: Submission, now: float) -> None:
        """A confirmation link for the request, unless its address had its share of them this hour."""
        sent_to_address = self.store.confirm_links_sent(db, found.email, now - 3600)
        sent_for_name = self.store.confirm_links_sent(db, found.email, now - 3600, username=found.username)
        if sent_to_address >= CONFIRM_MAILS_PER_HOUR or sent_for_name >= CONFIRM_MAILS_PER_USERNAME:
            self.store.audit(db, PUBLIC_ACTOR, "access.confirm_capped", found.username, {"id": request_id})
            return
        secret = secrets.token_urlsafe(32)
        self.store.insert_confirm_link(db, digest(secret), request_id, found.email, now, now + CONFIRM_TTL_SECONDS)
        self.mailer.enqueue(
            db,
            found.email,
            "Confirm your request for stream access",
            "Someone asked for stream access with this email address, as the user "
            f"{found.username}.\n\nIf that was you, open this link (it works once, for 24 hours), check that the "
            "request shown there is yours and confirm it; only then is it sent to the administrators:\n"
            f"{self._base()}/request-access/confirm/{secret}\n\n"
            "If it was not you, ignore this email: nothing happens without the confirmation.\n",
        )

    def confirmable(self, secret: str) -> dict[str, Any] | None:
        """What a valid confirmation link would confirm, to show before the requester confirms it."""
        request_id = self.confirm_target(secret)
        row = None if request_id is None else self.store.access_request(request_id)
        return None if row is None else _row(row)

    def confirm_target(self, secret: str) -> int | None:
        """The request a confirmation link points at, if the link is valid (unknown, used and expired look alike)."""
        if not _SECRET.fullmatch(secret):
            return None
        return self.store.confirm_link_request(digest(secret), self.clock())

    async def confirm(self, secret: str) -> int | None:
        """Spend a confirmation link: the request's email is proven and it goes to the admins (emailed, with
        review links). None when the link is unknown, used or expired."""
        if self.confirm_target(secret) is None:
            return None  # before anything costs a directory call: the route is public
        admins = await self.admin_emails()
        now = self.clock()
        with self.store.transaction() as db:
            request_id = self.store.use_confirm_link(db, digest(secret), now)
            if request_id is None:
                return None
            row = self.store.access_request_in(db, request_id)
            self.store.audit(db, PUBLIC_ACTOR, "access.confirm", row["username"], {"id": request_id})
            for admin in admins:
                # One review link per admin email: 256 random bits, stored as a digest, one use, 7 days.
                review = secrets.token_urlsafe(32)
                self.store.insert_review_link(db, digest(review), request_id, admin, now, now + REVIEW_TTL_SECONDS)
                self.mailer.enqueue(db, admin, "New access request", self._admin_mail(row, review))
        return request_id

    def _admin_mail(self, row: sqlite3.Row, review: str) -> str:
        """The sidecar's own lines first (the only links it sends), then the requester's words, each line quoted,
        so nothing a stranger typed can pass for one of the sidecar's lines."""
        typed = {
            "Name": row["name"],
            "Username": row["username"],
            "Email (confirmed by the requester)": row["email"],
            "Organisation": row["org"],
            "Group asked for": row["requested_group"] or "-",
        }
        # Every line of every typed value is quoted, whatever separates lines in it (U+2028 and NEL included).
        quoted = "\n".join(f"  | {label}: {line}" for label, value in typed.items() for line in _lines(value))
        reason = "\n".join(f"  | {line}" for line in _lines(row["reason"]))
        base = self._base()
        return (
            f"New access request #{row['id']}.\n\n"
            "Review it (the link works once, for 7 days, and only for a signed-in admin):\n"
            f"{base}/request-access/review/{review}\n"
            f"All requests: {base}/users#requests\n\n"
            "What the requester typed (not checked; links in it do not come from this site):\n"
            f"{quoted}\n  | Reason:\n{reason}\n"
        )

    def review_target(self, secret: str) -> int | None:
        """The request a review link points at, if the link is valid (unknown, used and expired look the same)."""
        if not _SECRET.fullmatch(secret):
            return None
        return self.store.review_link_request(digest(secret), self.clock())

    def use_review_link(self, secret: str, admin: str) -> int | None:
        """Spend a review link for `admin` (the caller checked the admin session); the request id, or None."""
        if not _SECRET.fullmatch(secret):
            return None
        with self.store.transaction() as db:
            request_id = self.store.use_review_link(db, digest(secret), admin, self.clock())
            if request_id is None:
                return None
            target = self.store.access_request_username(db, request_id)
            self.store.audit(db, admin, "access.review", target, {"id": request_id})
        return request_id

    def list(self) -> list[dict[str, Any]]:
        """Every request admins may decide or have decided; `same_username` counts the other pending requests
        naming the same username (someone may be claiming another person's name)."""
        rows = [_row(row) for row in self.store.access_requests()]
        pending: dict[str, int] = {}
        for row in rows:
            if row["status"] == "pending":
                pending[row["username"]] = pending.get(row["username"], 0) + 1
        for row in rows:
            mine = 1 if row["status"] == "pending" else 0
            row["same_username"] = pending.get(row["username"], 0) - mine
        return rows

    def _get(self, request_id: int) -> sqlite3.Row:
        row = self.store.access_request(request_id)
        if row is None:
            raise NotFoundError("no access request with this id", field="id")
        return row

    async def approve(self, request_id: int, groups: object, actor: str, base_url: str) -> dict[str, Any]:
        """Create the user with exactly `groups`, once; a second approval answers what the first did."""
        if not isinstance(groups, list) or not all(isinstance(group, str) for group in groups):
            raise BadRequest("groups must be a list of group names", field="groups")
        row = self._get(request_id)
        interrupted = row["approving_instance"] != INSTANCE
        if row["status"] == "approving" and (
            interrupted or (row["decided_at"] or 0) < self.clock() - STALE_APPROVAL_SECONDS
        ):
            # An approval that never finished (the process stopped half-way) may be taken up again; the claim
            # below lets the retry adopt the account it may have created.
            with self.store.transaction() as db:
                self.store.move_access_request(db, request_id, "approving", "pending")
            row = self._get(request_id)
        if row["status"] == "approved":
            return {"id": request_id, "status": "approved", "username": row["username"], "already": True}
        if row["status"] == "unconfirmed":
            raise Conflict("this request waits for the requester to confirm their email address")
        # Only an address the requester proved is given to the account or sent anything.
        confirmed = bool(row["email_confirmed"])
        checked = [await self.users.managed_group(group, actor) for group in sorted(set(groups))]
        with self.store.transaction() as db:
            if not self.store.move_access_request(db, request_id, "pending", "approving", decided_at=self.clock()):
                raise Conflict("this request is not pending (already decided or being approved)")
            # The account is created carrying this secret claim: a retry adopts the account its own interrupted
            # attempt created (a late answer, a crash before the mark below), and refuses anyone else's.
            self.store.set_request_claim(db, request_id, secrets.token_urlsafe(24), INSTANCE)
        claim = self._get(request_id)["claim"]
        directory = self.users.directory
        try:
            # Inactive until it holds its groups: an interruption never leaves an account that can sign in with
            # none of what was approved.
            if not row["user_created"]:
                email = row["email"] if confirmed else ""
                await directory.create_user(row["username"], email=email, name=row["name"], active=False, claim=claim)
                with self.store.transaction() as db:
                    self.store.mark_user_created(db, request_id)
            for group in checked:
                await directory.add_to_group(row["username"], group.name)
            await directory.set_active(row["username"], True)
        except BaseException:
            with self.store.transaction() as db:
                self.store.move_access_request(db, request_id, "approving", "pending")
            raise
        answer: dict[str, Any] = {
            "id": request_id,
            "status": "approved",
            "username": row["username"],
            "groups": [group.name for group in checked],
        }
        link, note = await self._password_step(row["username"], actor, base_url, by_email=confirmed)
        with self.store.transaction() as db:
            self.store.move_access_request(
                db, request_id, "approving", "approved", decided_by=actor, decided_at=self.clock()
            )
            detail = {"id": request_id, "groups": answer["groups"]}
            self.store.audit(db, actor, "user.create", row["username"], {"groups": answer["groups"]})
            self.store.audit(db, actor, "access.approve", row["username"], detail)
            body = f"Hello {row['name']},\n\nyour request for stream access as {row['username']} was approved.\n"
            if link:
                body += f"\nSet your password here (the link works once, for 72 hours):\n{link}\n"
            elif note:
                body += f"\n{note}\n"
            emailed = confirmed and self.mailer.enqueue(db, row["email"], "Your access request was approved", body)
        if link and not emailed:
            answer["set_password_link"] = link
        if not confirmed:
            note = "The email address was never confirmed, so nothing was sent to it and the account has none: "
            note += "give the person the password link yourself."
        if note:
            answer["note"] = note
        answer["emailed"] = emailed
        return answer

    async def _password_step(
        self, username: str, actor: str, base_url: str, *, by_email: bool
    ) -> tuple[str | None, str | None]:
        """A set-password link (local mode) or Authentik's recovery link or email (only to a confirmed address);
        (link, note for the person)."""
        directory = self.users.directory
        if isinstance(directory, Recovery):
            stage = self.settings.authentik_recovery_email_stage
            try:
                if stage and by_email:
                    await self.users.send_recovery_email(username, stage, actor)
                    return None, "A separate email lets you set your password."
                return await self.users.recovery_link(username, actor), None
            except DirectoryError as error:
                return None, f"Ask an administrator for a password link ({error})."
        if self.settings.mode != "local":
            return None, None
        secret = secrets.token_urlsafe(32)
        now = self.clock()
        with self.store.transaction() as db:
            self.store.insert_password_link(db, digest(secret), username, now, now + LINK_TTL_SECONDS)
        return f"{base_url.rstrip('/')}/request-access/set-password/{secret}", None

    async def reject(self, request_id: int, message: object, actor: str) -> dict[str, Any]:
        if message is None:
            message = ""
        if not isinstance(message, str) or len(message) > LIMITS["reason"]:
            raise BadRequest(f"message must be text of at most {LIMITS['reason']} characters", field="message")
        row = self._get(request_id)
        with self.store.transaction() as db:
            moved = self.store.move_access_request(
                db, request_id, "pending", "rejected", decided_by=actor, decided_at=self.clock(), message=message
            )
            if not moved:
                raise Conflict("this request is not pending (already decided or being approved)")
            self.store.audit(db, actor, "access.reject", row["username"], {"id": request_id})
            body = f"Hello {row['name']},\n\nyour request for stream access as {row['username']} was declined.\n"
            if message:
                body += f"\nMessage from the administrator:\n{message}\n"
            confirmed = bool(row["email_confirmed"])
            emailed = confirmed and self.mailer.enqueue(db, row["email"], "Your access request was declined", body)
        return {"id": request_id, "status": "rejected", "emailed": emailed}

    # -- set-password links -----------------------------------------------------------------------------------
    def link_user(self, secret: str) -> str | None:
        if not _SECRET.fullmatch(secret):
            return None
        return self.store.password_link_user(digest(secret), self.clock())

    async def set_password(self, secret: str, password: str) -> str:
        """Use the link once. The slow part (bcrypt) comes first; spending the link and setting the password are then
        one transaction, so a crash at any point leaves either both done or neither (the link still works)."""
        if self.link_user(secret) is None:
            raise NotFoundError("This link does not exist, has expired or was already used.")
        password_hash = await hash_password(password)  # checks the strength first
        with self.store.transaction() as db:
            username = self.store.use_password_link(db, digest(secret), self.clock())
            if username is None:
                raise NotFoundError("This link does not exist, has expired or was already used.")
            if not self.store.set_password_hash(db, username, password_hash):
                raise NotFoundError("This link does not exist, has expired or was already used.")
            self.store.audit(db, username, "password.set_by_link", username)
        return username
