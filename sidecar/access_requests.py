"""Requests for access from the public form: stored first, decided once by an admin, answered by email."""

from __future__ import annotations

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
from sidecar.mailer import Mailer
from sidecar.passwords import check_strength
from sidecar.settings import Settings
from sidecar.store import Store
from sidecar.users import Recovery, UserAdmin

RATE_PER_IP = "5/hour"
STALE_APPROVAL_SECONDS = 300  # an approval still "approving" after this was interrupted
RATE_PER_EMAIL = "5/hour"
LINK_TTL_SECONDS = 72 * 3600
REVIEW_TTL_SECONDS = 7 * 24 * 3600
ADMIN_SCAN_PAGES = 50  # at most 50 pages of 100 directory users are read to find the admins' addresses
LIMITS = {"name": 200, "username": 150, "email": 254, "org": 200, "reason": 2000}
REQUIRED = ("name", "username", "email", "reason")
PUBLIC_ACTOR = "public"
_EMAIL = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)
_SECRET = re.compile(r"[A-Za-z0-9_-]{32,128}")
log = logging.getLogger("sidecar.access_requests")


def valid_email(value: str) -> bool:
    local, _, _ = value.partition("@")
    return len(value) <= LIMITS["email"] and len(local) <= 64 and _EMAIL.fullmatch(value) is not None


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
        self.per_email = parse(RATE_PER_EMAIL)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    async def requestable_groups(self) -> list[str]:
        """Prefixed groups someone may ask for (never admin groups); empty when the directory cannot say."""
        try:
            groups = await self.users.list_groups()
        except DirectoryError:
            return []
        admin = set(self.settings.admin_groups)
        return [group.name for group in groups if group.name not in admin]

    async def check(self, form: dict[str, str]) -> Submission:
        values = {key: form.get(key, "").strip() for key in (*LIMITS, "group")}
        for key in REQUIRED:
            if not values[key]:
                raise BadRequest(f"{key} is required", field=key)
        for key, limit in LIMITS.items():
            if len(values[key]) > limit or any(ord(char) < 32 and char not in "\r\n\t" for char in values[key]):
                raise BadRequest(f"{key} must be at most {limit} characters of text", field=key)
            if key != "reason" and any(char in "\r\n" for char in values[key]):
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

    def throttle(self, ip: str, email: str) -> None:
        """Count one submission; refuse once the IP or the email address has sent too many."""
        allowed_ip = self._limiter.hit(self.per_ip, "ip", ip)
        allowed_email = self._limiter.hit(self.per_email, "email", email.lower())
        if not (allowed_ip and allowed_email):
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

    async def submit(self, found: Submission, ip: str) -> int:
        """Store (or merge into the pending request of the same username or email) and queue the emails."""
        admins = await self.admin_emails() if self.mailer.configured else []
        base = self.settings.public_url.rstrip("/")
        # Links come from SIDECAR_PUBLIC_URL only, never from the Host header of this anonymous request: a forged
        # Host must not put someone else's address (with a review secret in it) into an admin's mailbox.
        with self.store.transaction() as db:
            request_id, merged = self.store.upsert_access_request(
                db,
                username=found.username,
                email=found.email,
                name=found.name,
                org=found.org,
                reason=found.reason,
                requested_group=found.requested_group,
                now=self.clock(),
            )
            detail = {"id": request_id, "email": found.email, "ip": ip, "merged": merged}
            self.store.audit(db, PUBLIC_ACTOR, "access.request", found.username, detail)
            self.mailer.enqueue(
                db,
                found.email,
                "Your access request was received",
                f"Hello {found.name},\n\nyour request for stream access as {found.username} was received. "
                "An administrator will review it; you will get another email with the decision.\n",
            )
            if not self.mailer.configured:
                return request_id
            now = self.clock()
            for admin in admins:
                # One review link per admin email: 256 random bits, stored as a digest, one use, 7 days.
                secret = secrets.token_urlsafe(32)
                self.store.insert_review_link(db, digest(secret), request_id, admin, now, now + REVIEW_TTL_SECONDS)
                self.mailer.enqueue(
                    db,
                    admin,
                    "New access request",
                    f"New access request #{request_id}\n\nName: {found.name}\nUsername: {found.username}\n"
                    f"Email: {found.email}\nOrganisation: {found.org}\nGroup: {found.requested_group or '-'}\n"
                    f"Reason:\n{found.reason}\n\nReview it (the link works once, for 7 days, and only for a "
                    f"signed-in admin): {base}/request-access/review/{secret}\n"
                    f"All requests: {base}/users#requests\n",
                )
        return request_id

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
            row = db.execute("SELECT username FROM access_requests WHERE id = ?", (request_id,)).fetchone()
            target = "" if row is None else str(row[0])
            self.store.audit(db, admin, "access.review", target, {"id": request_id})
        return request_id

    def list(self) -> list[dict[str, Any]]:
        return [_row(row) for row in self.store.access_requests()]

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
        if row["status"] == "approving" and (row["decided_at"] or 0) < self.clock() - STALE_APPROVAL_SECONDS:
            # An approval that never finished (the process stopped half-way) may be taken up again; the
            # user_created mark keeps the retry from creating the account twice.
            with self.store.transaction() as db:
                self.store.move_access_request(db, request_id, "approving", "pending")
            row = self._get(request_id)
        if row["status"] == "approved":
            return {"id": request_id, "status": "approved", "username": row["username"], "already": True}
        checked = [await self.users.managed_group(group, actor) for group in sorted(set(groups))]
        with self.store.transaction() as db:
            if not self.store.move_access_request(db, request_id, "pending", "approving", decided_at=self.clock()):
                raise Conflict("this request is not pending (already decided or being approved)")
        try:
            # A retry after the directory failed half-way must not create the account twice (nor adopt someone
            # else's existing account: without the mark, an existing username is a conflict).
            if not row["user_created"]:
                await self.users.directory.create_user(
                    row["username"], email=row["email"], name=row["name"], active=True
                )
                with self.store.transaction() as db:
                    self.store.mark_user_created(db, request_id)
            for group in checked:
                await self.users.directory.add_to_group(row["username"], group.name)
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
        link, note = await self._password_step(row["username"], actor, base_url)
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
            emailed = self.mailer.enqueue(db, row["email"], "Your access request was approved", body)
        if link and not emailed:
            answer["set_password_link"] = link
        if note:
            answer["note"] = note
        answer["emailed"] = emailed
        await self.mailer.flush()
        return answer

    async def _password_step(self, username: str, actor: str, base_url: str) -> tuple[str | None, str | None]:
        """A set-password link (local mode) or Authentik's recovery link or email; (link, note for the person)."""
        directory = self.users.directory
        if isinstance(directory, Recovery):
            stage = self.settings.authentik_recovery_email_stage
            try:
                if stage:
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
            emailed = self.mailer.enqueue(db, row["email"], "Your access request was declined", body)
        await self.mailer.flush()
        return {"id": request_id, "status": "rejected", "emailed": emailed}

    # -- set-password links -----------------------------------------------------------------------------------
    def link_user(self, secret: str) -> str | None:
        if not _SECRET.fullmatch(secret):
            return None
        return self.store.password_link_user(digest(secret), self.clock())

    async def set_password(self, secret: str, password: str) -> str:
        """Use the link once: the password is checked first, then the link is spent, then the password set."""
        if self.link_user(secret) is None:
            raise NotFoundError("This link does not exist, has expired or was already used.")
        check_strength(password)
        with self.store.transaction() as db:
            username = self.store.use_password_link(db, digest(secret), self.clock())
            if username is None:
                raise NotFoundError("This link does not exist, has expired or was already used.")
            self.store.audit(db, username, "password.set_by_link", username)
        await self.users.directory.set_password(username, password)
        return username
