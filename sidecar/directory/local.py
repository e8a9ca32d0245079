"""The embedded directory: users, groups, memberships and bcrypt hashes in the sidecar's SQLite store."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from sidecar import passwords
from sidecar.directory.base import (
    Conflict,
    Directory,
    DirectoryError,
    Group,
    LastActive,
    NotFound,
    User,
    UserPage,
    validate_username,
)
from sidecar.store import Store


class LocalDirectory(Directory):
    def __init__(self, store: Store) -> None:
        self.store = store

    def _user(self, row: sqlite3.Row, groups: list[str]) -> User:
        return User(
            username=row["username"],
            email=row["email"],
            name=row["name"],
            is_active=bool(row["is_active"]),
            groups=tuple(groups),
            uid=row["username"],
            claim=row["created_for"],
        )

    async def get_user(self, username: str) -> User | None:
        row = self.store.get_user(username)
        return None if row is None else self._user(row, self.store.user_groups(username))

    async def list_users(self, search: str = "", page: int = 1, page_size: int = 50) -> UserPage:
        total, rows = self.store.list_users(search, page_size, (page - 1) * page_size)
        groups = self.store.memberships_for([row["username"] for row in rows])
        users = [self._user(row, groups[row["username"]]) for row in rows]
        return UserPage(users=users, total=total, page=page, page_size=page_size)

    async def list_groups(self) -> list[Group]:
        return [Group(name, count) for name, count in self.store.list_groups()]

    async def get_group(self, name: str) -> Group | None:
        count = self.store.group_member_count(name)
        return None if count is None else Group(name, count)

    async def create_group(self, name: str) -> bool:
        with self.store.transaction() as db:
            return self.store.insert_group(db, name)

    async def create_user(
        self, username: str, *, email: str = "", name: str = "", active: bool = True, claim: str = ""
    ) -> User:
        validate_username(username)
        with self.store.transaction() as db:
            existing = self.store.get_user(username)
            if existing is not None:
                if claim and existing["created_for"] == claim:
                    return self._user(existing, self.store.user_groups(username))
                raise Conflict(f"user {username} already exists")
            self.store.insert_user(
                db, username, email=email, name=name, password_hash=None, active=active, created_for=claim
            )
        return User(username=username, email=email, name=name, is_active=active, uid=username, claim=claim)

    async def add_to_group(self, username: str, group: str) -> bool:
        with self.store.transaction() as db:
            self._require(username, group)
            return self.store.add_membership(db, username, group)

    async def remove_from_group(self, username: str, group: str, *, keep_one_of: Sequence[str] = ()) -> bool:
        with self.store.transaction() as db:
            self._require(username, group)
            before = self.store.admin_count(list(keep_one_of))
            removed = self.store.remove_membership(db, username, group)
            self._keep_one(keep_one_of, before, username)
            return removed

    def _require(self, username: str, group: str | None = None) -> None:
        if self.store.get_user(username) is None:
            raise NotFound(f"no user {username}")
        if group is not None and not self.store.group_exists(group):
            raise NotFound(f"no group {group}")

    async def set_active(self, username: str, active: bool, *, keep_one_of: Sequence[str] = ()) -> None:
        with self.store.transaction() as db:
            before = self.store.admin_count(list(keep_one_of))
            if not self.store.set_active(db, username, active):
                raise NotFound(f"no user {username}")
            if not active:
                self._keep_one(keep_one_of, before, username)
                self.store.delete_user_sessions(db, username)

    def _keep_one(self, keep_one_of: Sequence[str], before: int, username: str) -> None:
        """Inside the change's own transaction (which another process's change waits for): counted after it."""
        if keep_one_of and before > 0 and self.store.admin_count(list(keep_one_of)) == 0:
            raise LastActive(f"{username} is the last active admin; make someone else an admin first")

    async def set_password(self, username: str, password: str) -> None:
        password_hash = await passwords.hash_password(password)
        with self.store.transaction() as db:
            if not self.store.set_password_hash(db, username, password_hash):
                raise NotFound(f"no user {username}")

    async def authenticate(self, username: str, password: str) -> User | None:
        """The active user whose password matches, else None, after the same bcrypt work either way."""
        row = self.store.get_user(username)
        password_hash = row["password_hash"] if row is not None else None
        ok = await passwords.verify_password(password, password_hash)
        if not ok or row is None or not row["is_active"]:
            return None
        return self._user(row, self.store.user_groups(username))

    async def count_active_members(self, groups: Sequence[str]) -> int:
        return self.store.admin_count(list(groups))

    async def ping(self) -> None:
        try:
            self.store.ping()
        except sqlite3.Error as error:
            raise DirectoryError(f"the local directory's database failed: {type(error).__name__}") from error
