"""The Authentik directory: users, groups and memberships live in Authentik, reached through `AuthentikClient`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from sidecar.authentik import AuthentikClient, AuthentikGroup, AuthentikRejected, AuthentikUnavailable, AuthentikUser
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

# Authentik's machine accounts (outposts, API tokens): disabling one can take single sign-on down for everyone.
SERVICE_TYPES = frozenset({"service_account", "internal_service_account"})


def _user(found: AuthentikUser) -> User:
    return User(
        username=found.username,
        email=found.email,
        name=found.name,
        is_active=found.is_active,
        groups=found.groups,
        uid=str(found.pk),
        superuser=found.is_superuser,
        service=found.type in SERVICE_TYPES,
        claim=found.claim,
    )


class AuthentikDirectory(Directory):
    """Groups are always found by exact name; `group_search` narrows the listing (callers still filter names)."""

    def __init__(self, client: AuthentikClient, *, group_search: str = "") -> None:
        self.client = client
        self.group_search = group_search

    async def get_user(self, username: str) -> User | None:
        found = await self.client.get_user(username)
        return None if found is None else _user(found)

    async def list_users(self, search: str = "", page: int = 1, page_size: int = 50) -> UserPage:
        found = await self.client.list_users(search, page, page_size)
        return UserPage(users=[_user(user) for user in found.users], total=found.total, page=page, page_size=page_size)

    async def list_groups(self) -> list[Group]:
        found = await self.client.list_groups(self.group_search)
        return [Group(group.name, group.member_count, group.is_superuser) for group in found]

    async def get_group(self, name: str) -> Group | None:
        found = await self.client.get_group(name)
        return None if found is None else Group(found.name, found.member_count, found.is_superuser)

    async def create_group(self, name: str) -> bool:
        if await self.client.get_group(name) is not None:
            return False
        try:
            await self.client.create_group(name)
        except AuthentikRejected as error:
            # Someone created it between the lookup and the write: the same outcome as finding it.
            if error.mentions("name", "unique") or error.mentions("name", "exists"):
                return False
            raise
        return True

    async def create_user(
        self, username: str, *, email: str = "", name: str = "", active: bool = True, claim: str = ""
    ) -> User:
        validate_username(username)
        existing = await self.client.get_user(username)
        if existing is not None:
            return self._adopted(existing, claim)
        try:
            created = await self.client.create_user(username, name=name, email=email, is_active=active, claim=claim)
        except AuthentikUnavailable:
            # The account may exist although the answer never came: read it back before calling it a failure.
            now = await self._read_back(username)
            if now is None or not claim or now.claim != claim:
                raise
            return _user(now)
        except AuthentikRejected as error:
            if error.mentions("username", "unique") or error.mentions("username", "exists"):
                now = await self._read_back(username)
                if now is not None:
                    return self._adopted(now, claim)
                raise Conflict(f"user {username} already exists") from error
            raise
        return _user(created)

    @staticmethod
    def _adopted(existing: AuthentikUser, claim: str) -> User:
        """An existing account is answered as created only when this same claim created it."""
        if claim and existing.claim == claim:
            return _user(existing)
        raise Conflict(f"user {existing.username} already exists")

    async def _read_back(self, username: str) -> AuthentikUser | None:
        try:
            return await self.client.get_user(username)
        except DirectoryError:
            return None

    async def add_to_group(self, username: str, group: str) -> bool:
        user, found = await self._require(username, group)
        if found.name in user.groups:
            return False
        await self._despite_a_late_answer(
            self.client.add_user_to_group(found.pk, user.pk), lambda now: found.name in now.groups, username
        )
        return True

    async def remove_from_group(self, username: str, group: str, *, keep_one_of: Sequence[str] = ()) -> bool:
        user, found = await self._require(username, group)
        if found.name not in user.groups:
            return False
        await self._keep_one(user, keep_one_of, leaving=found.name)
        await self._despite_a_late_answer(
            self.client.remove_user_from_group(found.pk, user.pk), lambda now: found.name not in now.groups, username
        )
        return True

    async def set_active(self, username: str, active: bool, *, keep_one_of: Sequence[str] = ()) -> None:
        user = await self._user(username)
        if not active:
            await self._keep_one(user, keep_one_of, leaving=None)
        await self._despite_a_late_answer(
            self.client.set_user_active(user.pk, active), lambda now: now.is_active == active, username
        )

    async def _despite_a_late_answer(
        self, write: Awaitable[object], happened: Callable[[AuthentikUser], bool], username: str
    ) -> None:
        """A write whose answer never came may still have happened: read the person back before calling it a
        failure, so what really changed is answered, audited and acted on (revocation included)."""
        try:
            await write
        except AuthentikUnavailable:
            now = await self._read_back(username)
            if now is None or not happened(now):
                raise

    async def _keep_one(self, user: AuthentikUser, keep_one_of: Sequence[str], leaving: str | None) -> None:
        """Authentik has no transaction to do this in: the count is read just before the change (the caller
        serialises changes within this process)."""
        keep = set(keep_one_of)
        held = keep & set(user.groups)
        if not user.is_active or not held or (leaving is not None and held - {leaving}):
            return  # not one of them now, or still one afterwards
        if await self.count_active_members(sorted(keep)) <= 1:
            raise LastActive(f"{user.username} is the last active admin; make someone else an admin first")

    async def set_password(self, username: str, password: str) -> None:
        await self.client.set_password((await self._user(username)).pk, password)

    async def recovery_link(self, username: str) -> str:
        """A one-time link that lets the user set a password through Authentik's recovery flow."""
        return await self.client.recovery_link((await self._user(username)).pk)

    async def send_recovery_email(self, username: str, email_stage: str) -> None:
        await self.client.send_recovery_email((await self._user(username)).pk, email_stage)

    async def count_active_members(self, groups: Sequence[str]) -> int:
        return await self.client.count_users(groups_by_name=groups, is_active=True) if groups else 0

    async def ping(self) -> None:
        await self.client.ping()

    async def _user(self, username: str) -> AuthentikUser:
        found = await self.client.get_user(username)
        if found is None:
            raise NotFound(f"no user {username}")
        return found

    async def _require(self, username: str, group: str) -> tuple[AuthentikUser, AuthentikGroup]:
        user = await self._user(username)
        found = await self.client.get_group(group)
        if found is None:
            raise NotFound(f"no group {group}")
        return user, found
