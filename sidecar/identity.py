"""Who is asking: identity headers from trusted proxies only, exact-token groups, and the role they grant."""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

IDENTITY_PREFIX = "x-authentik-"
IDENTITY_FIELDS = ("username", "groups", "email", "name", "uid")
GROUP_SEPARATOR = "|"


class Role(enum.StrEnum):
    ADMIN = "admin"
    VIEWER = "viewer"
    NONE = "none"
    SERVICE = "service"


class DuplicateIdentityHeader(ValueError):
    """The same identity header arrived more than once; merging would let a client add groups."""

    def __init__(self, name: str) -> None:
        super().__init__(f"duplicate identity header {name}")
        self.header = name


@dataclass(frozen=True)
class Principal:
    username: str
    groups: frozenset[str] = frozenset()
    role: Role = Role.NONE
    email: str = ""
    name: str = ""
    uid: str = ""
    source: str = "anonymous"
    # May act on any account the directory holds (Authentik superusers and `authentik Admins`; every local admin):
    # only such a caller may touch the account of someone who is also in groups outside the prefix (TAK users).
    directory_admin: bool = False

    @property
    def authenticated(self) -> bool:
        return self.source != "anonymous"

    @property
    def is_admin(self) -> bool:
        return self.role in (Role.ADMIN, Role.SERVICE)


ANONYMOUS = Principal(username="", source="anonymous")


@dataclass(frozen=True)
class RolePolicy:
    """Maps group sets to roles. Comparison is by exact, case-sensitive group name."""

    admin_groups: frozenset[str]
    prefix: str

    def role_for(self, groups: Iterable[str]) -> Role:
        group_set = frozenset(groups)
        if group_set & self.admin_groups:
            return Role.ADMIN
        if any(group.startswith(self.prefix) for group in group_set):
            return Role.VIEWER
        return Role.NONE

    def managed(self, groups: Iterable[str]) -> list[str]:
        """The groups this sidecar shows and manages; everything else (tak_*, ...) stays invisible."""
        return sorted(group for group in groups if group.startswith(self.prefix))

    def granting(self, groups: Iterable[str]) -> list[str]:
        """The groups that can grant anything here (prefixed ones and the admin groups): all a playback token or a
        share link ever carries, so `tak_*` and other names never reach browsers, MediaMTX or URLs."""
        return sorted(group for group in groups if group.startswith(self.prefix) or group in self.admin_groups)

    def directory_admin_groups(self) -> frozenset[str]:
        """Admin groups outside the prefix (`authentik Admins`): their members administer the directory itself."""
        return frozenset(group for group in self.admin_groups if not group.startswith(self.prefix))

    def principal(
        self,
        username: str,
        groups: Iterable[str],
        *,
        source: str,
        email: str = "",
        name: str = "",
        uid: str = "",
        directory_admin: bool = False,
    ) -> Principal:
        group_set = frozenset(groups)
        return Principal(
            username=username,
            groups=group_set,
            role=self.role_for(group_set),
            email=email,
            name=name,
            uid=uid,
            source=source,
            directory_admin=directory_admin,
        )


def group_name_problem(name: str, prefix: str) -> str | None:
    """Why `name` cannot be a managed group, or None. The outpost joins a person's groups with `|` into one header,
    so a name holding `|` (or anything a header cannot carry) would read as several groups there."""
    if not name.startswith(prefix):
        return f"group name must start with {prefix}"
    if len(name) > 80:
        return "group name must be at most 80 characters"
    if GROUP_SEPARATOR in name or "/" in name or not name.isprintable():
        # `/` would also break the API's /users/{username}/groups/{group} paths.
        return "group name must not contain |, / or control characters"
    if name != name.strip():
        return "group name must not start or end with a space"
    return None


def split_groups(value: str) -> frozenset[str]:
    """`a|b|c` → exact tokens; empty tokens are dropped, nothing is trimmed or case-folded."""
    return frozenset(token for token in value.split(GROUP_SEPARATOR) if token)


@dataclass(frozen=True)
class TrustedProxies:
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def parse(cls, cidrs: Sequence[str]) -> TrustedProxies:
        return cls(tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs))

    def contains(self, host: str | None) -> bool:
        return _contains(self.networks, host)


@lru_cache(maxsize=4096)
def _contains(networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], host: str | None) -> bool:
    """Cached: every request asks about the same few peers, and parsing an address costs more than a lookup."""
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def identity_header_values(raw_headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Collect `X-Authentik-*` values by field; a repeated header raises instead of being merged.

    Only hyphenated names count: underscore spellings (`X_Authentik_Groups`) are never read, because proxies and
    WSGI servers disagree on whether they are the same header.
    """
    values: dict[str, str] = {}
    for raw_name, raw_value in raw_headers:
        name = raw_name.decode("latin-1").lower()
        if not name.startswith(IDENTITY_PREFIX):
            continue
        field_name = name[len(IDENTITY_PREFIX) :]
        if field_name not in IDENTITY_FIELDS:
            continue
        if field_name in values:
            raise DuplicateIdentityHeader(raw_name.decode("latin-1"))
        values[field_name] = raw_value.decode("utf-8", errors="replace")
    return values


def principal_from_headers(raw_headers: Iterable[tuple[bytes, bytes]], roles: RolePolicy) -> Principal | None:
    """The principal named by identity headers, or None when there is no (non-empty) username."""
    values = identity_header_values(raw_headers)
    username = values.get("username", "")
    if not username:
        return None
    return roles.principal(
        username,
        split_groups(values.get("groups", "")),
        source="proxy",
        email=values.get("email", ""),
        name=values.get("name", ""),
        uid=values.get("uid", ""),
    )
