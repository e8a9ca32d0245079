"""People administration over the Directory, limited server-side to groups with the configured prefix."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Protocol, runtime_checkable

from sidecar.directory import Directory, Group, User, UserPage
from sidecar.directory.base import InvalidName
from sidecar.errors import BadRequest, Forbidden, NotFoundError
from sidecar.identity import GROUP_SEPARATOR, RolePolicy
from sidecar.passwords import check_strength
from sidecar.store import Store

MAX_PAGE_SIZE = 100
NO_RECOVERY = (
    "local mode has no password-recovery flow yet: set a password with `sidecar users add USERNAME --password-stdin` "
    "when adding the person; once signed in, people change their own password"
)


@runtime_checkable
class Recovery(Protocol):
    """A directory that can let people set a new password themselves (Authentik's recovery flow)."""

    async def recovery_link(self, username: str) -> str: ...

    async def send_recovery_email(self, username: str, email_stage: str) -> None: ...


class UserAdmin:
    """Shared by the HTTP API, the pages and the CLI. Non-prefixed groups (tak_*, ...) are never shown or touched."""

    def __init__(self, store: Store, directory: Directory, roles: RolePolicy) -> None:
        self.store = store
        self.directory = directory
        self.roles = roles
        self.on_lost_access: Callable[[str, str], None] | None = None  # revocation (set by the wiring)

    def _visible(self, user: User) -> User:
        return replace(user, groups=tuple(self.roles.managed(user.groups)))

    async def managed_group(self, name: str, actor: str) -> Group:
        """The group named exactly `name`, if it may be managed here; an attempt on another group is audited."""
        if not name.startswith(self.roles.prefix) or GROUP_SEPARATOR in name:
            with self.store.transaction() as db:
                self.store.audit(db, actor, "group.denied", name)
            raise Forbidden(f"only groups starting with {self.roles.prefix} can be managed here")
        group = await self.directory.get_group(name)
        if group is None:
            raise NotFoundError(f"unknown group {name!r}", field="group")
        return group

    async def list_users(self, search: str = "", page: int = 1, page_size: int = 50) -> UserPage:
        if page < 1:
            raise BadRequest("page must be 1 or more", field="page")
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise BadRequest(f"page_size must be 1 to {MAX_PAGE_SIZE}", field="page_size")
        found = await self.directory.list_users(search, page, page_size)
        return replace(found, users=[self._visible(user) for user in found.users])

    async def list_groups(self) -> list[Group]:
        return [group for group in await self.directory.list_groups() if group.name.startswith(self.roles.prefix)]

    async def create_group(self, name: str, actor: str) -> bool:
        if not name.startswith(self.roles.prefix) or GROUP_SEPARATOR in name or len(name) > 80:
            raise BadRequest(
                f"group name must start with {self.roles.prefix}, be at most 80 characters and not contain |",
                field="name",
            )
        created = await self.directory.create_group(name)
        if created:
            with self.store.transaction() as db:
                self.store.audit(db, actor, "group.create", name)
        return created

    async def add_user(self, username: str, groups: list[str], password: str | None, actor: str) -> User:
        checked = [await self.managed_group(group, actor) for group in groups]
        if password is not None:
            check_strength(password)
        try:
            user = await self.directory.create_user(username)
        except InvalidName as error:
            raise BadRequest(str(error), field="username") from error
        for group in checked:
            await self.directory.add_to_group(username, group.name)
        if password is not None:
            await self.directory.set_password(username, password)
        with self.store.transaction() as db:
            self.store.audit(db, actor, "user.create", username, {"groups": [group.name for group in checked]})
        return replace(user, groups=tuple(group.name for group in checked))

    async def set_membership(self, username: str, group: str, member: bool, actor: str) -> bool:
        checked = await self.managed_group(group, actor)
        if member:
            changed = await self.directory.add_to_group(username, checked.name)
        else:
            changed = await self.directory.remove_from_group(username, checked.name)
        if changed:
            with self.store.transaction() as db:
                self.store.audit(db, actor, "group.add" if member else "group.remove", username, {"group": group})
            if not member:
                self._lost_access(username, f"removed from {group}")
        return changed

    async def set_active(self, username: str, active: bool, actor: str) -> None:
        await self.directory.set_active(username, active)
        with self.store.transaction() as db:
            self.store.audit(db, actor, "user.activate" if active else "user.deactivate", username)
        if not active:
            self._lost_access(username, "deactivated")

    def _recovery(self) -> Recovery:
        if not isinstance(self.directory, Recovery):
            raise BadRequest(NO_RECOVERY)
        return self.directory

    async def recovery_link(self, username: str, actor: str) -> str:
        """A one-time link that lets the user set a password; the link itself is never written to the audit log."""
        link = await self._recovery().recovery_link(username)
        with self.store.transaction() as db:
            self.store.audit(db, actor, "user.recovery_link", username)
        return link

    async def send_recovery_email(self, username: str, email_stage: str | None, actor: str) -> None:
        directory = self._recovery()
        if not email_stage:
            raise BadRequest(
                "no email stage to send the reset email with: pass email_stage (the UUID of an Authentik email stage)",
                field="email_stage",
            )
        await directory.send_recovery_email(username, email_stage)
        with self.store.transaction() as db:
            self.store.audit(db, actor, "user.recovery_email", username, {"email_stage": email_stage})

    def _lost_access(self, username: str, reason: str) -> None:
        if self.on_lost_access is not None:
            self.on_lost_access(username, reason)
