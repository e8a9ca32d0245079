"""People administration over the Directory, limited server-side to groups with the configured prefix, to accounts
the sidecar may manage, and to changes that leave at least one active admin."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Protocol, runtime_checkable

from sidecar.directory import Directory, Group, User, UserPage
from sidecar.directory.base import InvalidName, LastActive
from sidecar.errors import BadRequest, ConflictError, Forbidden, NotFoundError
from sidecar.identity import Principal, RolePolicy, group_name_problem
from sidecar.locks import ProcessLock
from sidecar.passwords import check_strength
from sidecar.store import Store

MAX_PAGE_SIZE = 100
NO_RECOVERY = (
    "local mode has no password-recovery flow yet: set a password with `sidecar users set-password USERNAME "
    "--password-stdin`; once signed in, people change their own password"
)
# Authentik's own administrators' group; its members are superusers there and never managed from here.
AUTHENTIK_ADMINS = "authentik Admins"

# Who asks for a change: a signed-in person or the API key (a Principal, whose rights are checked), or the name of
# an operator-side caller on the server itself (the CLI, bootstrap, an approval the sidecar carries out).
Actor = Principal | str


def actor_name(by: Actor) -> str:
    return by if isinstance(by, str) else by.username


@runtime_checkable
class Recovery(Protocol):
    """A directory that can let people set a new password themselves (Authentik's recovery flow)."""

    async def recovery_link(self, username: str) -> str: ...

    async def send_recovery_email(self, username: str, email_stage: str) -> None: ...


class UserAdmin:
    """Shared by the HTTP API, the pages and the CLI. Non-prefixed groups (tak_*, ...) are never shown or touched."""

    def __init__(self, store: Store, directory: Directory, roles: RolePolicy, admin_lock: ProcessLock) -> None:
        self.store = store
        self.directory = directory
        self.roles = roles
        self.on_lost_access: Callable[[str, str], None] | None = None  # revocation (set by the wiring)
        self.on_changed: Callable[[str], None] | None = None  # forgets cached groups of that person (wiring)
        self.grants_still: Callable[[str, str], bool] = lambda username, group: False  # a token naming it (wiring)
        # Changes that could remove the last admin, one at a time across the processes on this data dir (Authentik
        # has no transaction to make the count and the change one step; the local directory also uses its own).
        self._admin_change = admin_lock

    def _visible(self, user: User) -> User:
        return replace(user, groups=tuple(self.roles.managed(user.groups)))

    def _denied(self, by: Actor, action: str, target: str, detail: dict[str, object]) -> None:
        with self.store.transaction() as db:
            self.store.audit(db, actor_name(by), action, target, detail)

    async def managed_group(self, name: str, actor: Actor) -> Group:
        """The group named exactly `name`, if it may be managed here; an attempt on another group is audited."""
        if group_name_problem(name, self.roles.prefix) is not None:
            self._denied(actor, "group.denied", name, {})
            raise Forbidden(f"only groups starting with {self.roles.prefix} can be managed here")
        group = await self.directory.get_group(name)
        if group is None:
            raise NotFoundError(f"unknown group {name!r}", field="group")
        if group.superuser:
            # Joining it would make a directory administrator: more than stream access.
            self._denied(actor, "group.denied", name, {"reason": "superuser group"})
            raise Forbidden(f"{name} makes its members directory administrators; manage it in the directory itself")
        return group

    def account_refusal(self, user: User, by: Actor) -> str | None:
        """Why `by` may not act on `user`'s account (activation, password, recovery), or None.

        A video admin manages stream access, not accounts in general: directory administrators and the directory's
        machine accounts are never managed from here; someone who also belongs to groups outside the prefix (a TAK
        user), or to no group at all (an account of the directory, not of the video site), only by a directory admin.
        """
        directory_admins = self.roles.directory_admin_groups() | {AUTHENTIK_ADMINS}
        if user.superuser or directory_admins & set(user.groups):
            return f"{user.username} administers the directory; change this account in the directory itself"
        if user.service:
            return f"{user.username} is a service account of the directory; change it in the directory itself"
        directory_admin = isinstance(by, str) or by.directory_admin
        outside = [group for group in user.groups if not group.startswith(self.roles.prefix)]
        if outside and not directory_admin:
            return (
                f"{user.username} also belongs to groups outside {self.roles.prefix}; "
                "only a directory administrator may change this account"
            )
        if not user.groups and not directory_admin:
            return (
                f"{user.username} is in no {self.roles.prefix} group, so not one of the video site's people; "
                "only a directory administrator may change this account"
            )
        return None

    async def _account(self, username: str, by: Actor, action: str) -> User:
        """The person behind `username` if `by` may act on their account; refusals are audited."""
        user = await self.directory.get_user(username)
        if user is None:
            raise NotFoundError(f"no user {username}", field="username")
        refusal = self.account_refusal(user, by)
        if refusal is not None:
            self._denied(by, "user.denied", username, {"action": action, "reason": refusal})
            raise Forbidden(refusal)
        return user

    async def list_users(self, search: str = "", page: int = 1, page_size: int = 50) -> UserPage:
        found, _ = await self.list_people(search, page, page_size, None)
        return found

    async def list_people(
        self, search: str, page: int, page_size: int, by: Actor | None
    ) -> tuple[UserPage, dict[str, str]]:
        """A page of people (only their managed groups shown) and, when `by` is given, why `by` may not act on
        some of their accounts (username -> reason), so a page offers only what would be allowed."""
        if page < 1:
            raise BadRequest("page must be 1 or more", field="page")
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise BadRequest(f"page_size must be 1 to {MAX_PAGE_SIZE}", field="page_size")
        found = await self.directory.list_users(search, page, page_size)
        refusals: dict[str, str] = {}
        if by is not None:
            for user in found.users:
                refusal = self.account_refusal(user, by)
                if refusal is not None:
                    refusals[user.username] = refusal
        return replace(found, users=[self._visible(user) for user in found.users]), refusals

    async def list_groups(self) -> list[Group]:
        return [
            group
            for group in await self.directory.list_groups()
            if group_name_problem(group.name, self.roles.prefix) is None and not group.superuser
        ]

    async def create_group(self, name: str, actor: Actor) -> bool:
        problem = group_name_problem(name, self.roles.prefix)
        if problem is not None:
            raise BadRequest(problem, field="name")
        created = await self.directory.create_group(name)
        if created:
            with self.store.transaction() as db:
                self.store.audit(db, actor_name(actor), "group.create", name)
        return created

    async def add_user(self, username: str, groups: list[str], password: str | None, actor: Actor) -> User:
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
            self.store.audit(
                db, actor_name(actor), "user.create", username, {"groups": [group.name for group in checked]}
            )
        return replace(user, groups=tuple(group.name for group in checked))

    async def set_membership(self, username: str, group: str, member: bool, actor: Actor) -> bool:
        checked = await self.managed_group(group, actor)
        if member:
            changed = await self._add_without_promoting(username, checked, actor)
        else:
            async with self._admin_change.held(), self._last_admin():
                await self._still_admin(actor)
                changed = await self.directory.remove_from_group(
                    username, checked.name, keep_one_of=sorted(self.roles.admin_groups)
                )
        self._changed(username)
        # A removal the directory made but answered too late, retried, finds the person already out: when a token
        # still names the group, the removal did happen (unrecorded), so it is audited and acted on now.
        happened = changed or (not member and self.grants_still(username, checked.name))
        if happened:
            with self.store.transaction() as db:
                self.store.audit(
                    db, actor_name(actor), "group.add" if member else "group.remove", username, {"group": group}
                )
        if happened and not member:
            self._lost_access(username, f"removed from {group}")
        return changed

    async def _add_without_promoting(self, username: str, group: Group, actor: Actor) -> bool:
        """Add the membership, unless it made the person a directory superuser (a group can inherit that from a
        parent group in Authentik): then it is taken back, refused and audited."""
        before = await self.directory.get_user(username)
        changed = await self.directory.add_to_group(username, group.name)
        after = await self.directory.get_user(username)
        if changed and after is not None and after.superuser and not (before is not None and before.superuser):
            await self.directory.remove_from_group(username, group.name)
            self._denied(actor, "group.denied", group.name, {"reason": "makes its members directory administrators"})
            raise Forbidden(f"{group.name} makes its members directory administrators; manage it in the directory")
        return changed

    async def set_active(self, username: str, active: bool, actor: Actor) -> None:
        async with self._admin_change.held(), self._last_admin():
            await self._still_admin(actor)
            await self._account(username, actor, "activate" if active else "deactivate")
            await self.directory.set_active(username, active, keep_one_of=sorted(self.roles.admin_groups))
        self._changed(username)
        with self.store.transaction() as db:
            self.store.audit(db, actor_name(actor), "user.activate" if active else "user.deactivate", username)
        if not active:
            self._lost_access(username, "deactivated")

    async def set_password(self, username: str, password: str, actor: Actor) -> None:
        check_strength(password)
        await self._account(username, actor, "password")
        await self.directory.set_password(username, password)
        with self.store.transaction() as db:
            self.store.audit(db, actor_name(actor), "password.set", username)

    def _recovery(self) -> Recovery:
        if not isinstance(self.directory, Recovery):
            raise BadRequest(NO_RECOVERY)
        return self.directory

    async def recovery_link(self, username: str, actor: Actor) -> str:
        """A one-time link that lets the user set a password; the link itself is never written to the audit log."""
        directory = self._recovery()
        await self._account(username, actor, "recovery_link")
        link = await directory.recovery_link(username)
        with self.store.transaction() as db:
            self.store.audit(db, actor_name(actor), "user.recovery_link", username)
        return link

    async def send_recovery_email(self, username: str, email_stage: str | None, actor: Actor) -> None:
        directory = self._recovery()
        if not email_stage:
            raise BadRequest(
                "no email stage to send the reset email with: pass email_stage (the UUID of an Authentik email stage)",
                field="email_stage",
            )
        await self._account(username, actor, "recovery_email")
        await directory.send_recovery_email(username, email_stage)
        with self.store.transaction() as db:
            self.store.audit(db, actor_name(actor), "user.recovery_email", username, {"email_stage": email_stage})

    async def _still_admin(self, by: Actor) -> None:
        """Decided when the request arrived; checked again once its turn came (another admin's change may have
        taken the rights away meanwhile)."""
        if isinstance(by, str) or by.source not in ("proxy", "session"):
            return  # the shell, and the API key, whose rights no directory change takes away
        user = await self.directory.get_user(by.username)
        if user is None or not user.is_active or not set(self.roles.admin_groups) & set(user.groups):
            raise Forbidden("you are no longer an admin")

    @staticmethod
    @asynccontextmanager
    async def _last_admin() -> AsyncIterator[None]:
        """A change the directory refused because it would leave no active admin: 409, naming the person."""
        try:
            yield
        except LastActive as error:
            raise ConflictError(str(error), field="username") from error

    def _changed(self, username: str) -> None:
        if self.on_changed is not None:
            self.on_changed(username)

    def _lost_access(self, username: str, reason: str) -> None:
        if self.on_lost_access is not None:
            self.on_lost_access(username, reason)
