"""Local-mode logins: 24 h opaque tokens stored hashed, server-side logout, failed-login rate limits."""

from __future__ import annotations

import secrets
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass

from limits import parse

from sidecar.directory.base import User
from sidecar.directory.local import LocalDirectory
from sidecar.errors import BadRequest
from sidecar.keys import digest as token_hash
from sidecar.passwords import check_strength
from sidecar.settings import Settings
from sidecar.store import Store
from sidecar.throttle import Attempt, FailureLimits

THROTTLED = "Too many failed attempts; wait a minute and try again"


@dataclass(frozen=True)
class Login:
    token: str
    expires_at: float
    user: User


class LocalSessions:
    def __init__(self, store: Store, directory: LocalDirectory, settings: Settings) -> None:
        self.store = store
        self.directory = directory
        self.ttl = settings.session_ttl_seconds
        # A person's budget is per client address: guesses from elsewhere never lock them out of their own.
        self.failures = FailureLimits({"ip": parse(settings.login_rate_ip), "user": parse(settings.login_rate_user)})

    def _attempt(self, username: str, ip: str) -> AbstractContextManager[Attempt]:
        return self.failures.attempt(THROTTLED, ip=ip, user=f"{username}\x00{ip}")

    async def login(self, username: str, password: str, ip: str) -> Login:
        with self._attempt(username, ip) as attempt:
            user = await self.directory.authenticate(username, password)
            if user is None:
                attempt.fail()
                raise BadRequest("Invalid password", field="password")
        return self.issue(user)

    def issue(self, user: User) -> Login:
        token = secrets.token_urlsafe(32)
        expires_at = time.time() + self.ttl
        with self.store.transaction() as db:
            self.store.create_session(db, token_hash(token), user.username, expires_at)
            self.store.audit(db, user.username, "login", user.username)
        return Login(token=token, expires_at=expires_at, user=user)

    def logout(self, token: str) -> bool:
        with self.store.transaction() as db:
            username = self.store.delete_session(db, token_hash(token))
            if username is not None:
                self.store.audit(db, username, "logout", username)
        return username is not None

    async def resolve(self, token: str) -> User | None:
        username = self.store.session_user(token_hash(token), time.time())
        if username is None:
            return None
        user = await self.directory.get_user(username)
        return user if user is not None and user.is_active else None

    async def change_password(self, username: str, current: str, new: str, keep_token: str | None, ip: str) -> None:
        check_strength(new)
        with self._attempt(username, ip) as attempt:
            if await self.directory.authenticate(username, current) is None:
                attempt.fail()
                raise BadRequest("Invalid password", field="current_password")
        await self.directory.set_password(username, new)
        with self.store.transaction() as db:
            self.store.delete_user_sessions(db, username, keep=None if keep_token is None else token_hash(keep_token))
            self.store.audit(db, username, "password.change", username)
