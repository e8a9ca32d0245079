"""The Directory interface pages and policy use; they never know which implementation is behind it."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

USERNAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@+-")


class DirectoryError(Exception):
    """Base of directory failures; the message is safe to show to an admin."""


class NotFound(DirectoryError):
    pass


class Conflict(DirectoryError):
    pass


class InvalidName(DirectoryError):
    pass


class LastActive(Conflict):
    """The change would leave nobody active in the groups that must keep someone (the last admin)."""


@dataclass(frozen=True)
class User:
    username: str
    email: str = ""
    name: str = ""
    is_active: bool = True
    groups: tuple[str, ...] = ()
    uid: str = ""
    superuser: bool = False  # administers the directory itself (Authentik's is_superuser); never managed here
    service: bool = False  # a machine account of the directory (an outpost's, an API token's); never managed here
    claim: str = ""  # set by the sidecar on an account it created for an access request (see `create_user`)


@dataclass(frozen=True)
class Group:
    name: str
    member_count: int = 0
    superuser: bool = False  # its members administer the directory (an Authentik superuser group)


@dataclass(frozen=True)
class UserPage:
    users: list[User]
    total: int
    page: int
    page_size: int


def validate_username(username: str) -> str:
    if not 1 <= len(username) <= 150 or not set(username) <= USERNAME_CHARS:
        raise InvalidName("username must be 1-150 characters of letters, digits and . _ @ + -")
    return username


class Directory(abc.ABC):
    """Users, groups and memberships. Group names are exact; callers enforce which groups may be touched."""

    @abc.abstractmethod
    async def get_user(self, username: str) -> User | None: ...

    @abc.abstractmethod
    async def list_users(self, search: str = "", page: int = 1, page_size: int = 50) -> UserPage: ...

    @abc.abstractmethod
    async def list_groups(self) -> list[Group]: ...

    @abc.abstractmethod
    async def get_group(self, name: str) -> Group | None: ...

    @abc.abstractmethod
    async def create_group(self, name: str) -> bool:
        """Create the group; False when it already existed."""

    @abc.abstractmethod
    async def create_user(
        self, username: str, *, email: str = "", name: str = "", active: bool = True, claim: str = ""
    ) -> User:
        """Create the account; Conflict when the username is taken. With `claim` (an approval's secret), an
        account already created with that same claim is answered as created: an approval interrupted after the
        directory made the account (a late answer, a crash) is finished by its retry, never refused for ever."""

    @abc.abstractmethod
    async def add_to_group(self, username: str, group: str) -> bool:
        """Add a membership; False when it was already there."""

    @abc.abstractmethod
    async def remove_from_group(self, username: str, group: str, *, keep_one_of: Sequence[str] = ()) -> bool:
        """Remove a membership; False when there was none. With `keep_one_of`, raise LastActive instead of leaving
        nobody active in those groups when someone was."""

    @abc.abstractmethod
    async def set_active(self, username: str, active: bool, *, keep_one_of: Sequence[str] = ()) -> None:
        """Activate or deactivate; `keep_one_of` as for `remove_from_group`."""

    @abc.abstractmethod
    async def set_password(self, username: str, password: str) -> None: ...

    @abc.abstractmethod
    async def count_active_members(self, groups: Sequence[str]) -> int:
        """How many active people belong to at least one of `groups` (the admins, when given the admin groups)."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise DirectoryError when the directory cannot be reached."""
