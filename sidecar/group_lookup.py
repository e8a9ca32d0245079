"""A person's groups and standing as the directory holds them now, cached briefly.

In authentik mode the outpost's `X-Authentik-Groups` header only says who signed in: it joins group names with `|`,
so a group named `tak_ops|vid_admin` reads as two groups there. Roles and streams are therefore granted from the
groups Authentik's API lists for that person (exact names), reused for `SIDECAR_GROUP_CACHE_SECONDS` and forgotten
as soon as the sidecar itself changes that person. Share links use the same lookup for their creator.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from sidecar.directory import Directory, DirectoryError
from sidecar.errors import Unavailable
from sidecar.identity import Principal, RolePolicy

log = logging.getLogger("sidecar.group_lookup")
# While the directory cannot be reached, what it said within this long still counts; after that, nothing does.
STALE_SECONDS = 3600.0
MAX_ENTRIES = 20_000


@dataclass(frozen=True)
class Standing:
    """What the directory says about one person right now."""

    groups: tuple[str, ...]
    active: bool
    superuser: bool
    email: str = ""
    name: str = ""


class GroupLookup:
    def __init__(
        self,
        directory: Directory,
        roles: RolePolicy,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.roles = roles
        self.ttl = ttl
        self.clock = clock
        self._cache: OrderedDict[str, tuple[float, Standing | None]] = OrderedDict()
        self._pending: dict[str, asyncio.Future[Standing | None]] = {}
        self._changes: dict[str, int] = {}  # how often the sidecar changed each person (bounded by the people)

    def forget(self, username: str) -> None:
        """The sidecar changed this person: their next request reads the directory again (and an answer already on
        its way, read before the change, is not kept)."""
        self._cache.pop(username, None)
        self._pending.pop(username, None)
        self._changes[username] = self._changes.get(username, 0) + 1

    async def standing(self, username: str) -> Standing | None:
        """The person's current groups and state; None when the directory has no such person."""
        while True:
            now = self.clock()
            cached = self._cache.get(username)
            if cached is not None and now - cached[0] < self.ttl:
                return cached[1]
            changes = self._changes.get(username, 0)
            pending = self._pending.get(username)
            if pending is None:
                # One directory call for a burst of requests by the same person, run as a task of its own so that a
                # caller who gives up (a closed connection) does not cancel it for the others.
                pending = asyncio.ensure_future(self._read(username, cached, now))
                self._pending[username] = pending
                pending.add_done_callback(self._settled(username))
            found = await asyncio.shield(pending)
            if self._changes.get(username, 0) == changes:
                return found
            # The sidecar changed this person while the answer was on its way: it may predate the change (a token
            # issued from it would outlive the revocation), so read again.

    def _settled(self, username: str) -> Callable[[asyncio.Future[Standing | None]], None]:
        def settled(done: asyncio.Future[Standing | None]) -> None:
            if self._pending.get(username) is done:
                del self._pending[username]
            if not done.cancelled():
                done.exception()  # retrieved, whoever still waits for it

        return settled

    async def _read(self, username: str, cached: tuple[float, Standing | None] | None, now: float) -> Standing | None:
        changes = self._changes.get(username, 0)
        try:
            user = await self.directory.get_user(username)
        except DirectoryError as error:
            if cached is not None and now - cached[0] < STALE_SECONDS:
                log.warning("using %s's groups from %.0f s ago: %s", username, now - cached[0], error)
                return cached[1]
            raise Unavailable(f"your groups cannot be confirmed right now ({error}); try again shortly") from error
        found = None
        if user is not None:
            found = Standing(user.groups, user.is_active, user.superuser, user.email, user.name)
        if self._changes.get(username, 0) == changes:  # else the sidecar changed them meanwhile: read again next time
            self._cache[username] = (self.clock(), found)
            self._cache.move_to_end(username)
            while len(self._cache) > MAX_ENTRIES:
                self._cache.popitem(last=False)
        return found

    async def confirm(self, claimed: Principal) -> Principal:
        """The principal the outpost named, with the groups, name and email the directory holds for them (none
        when the directory does not know them or they are inactive)."""
        standing = await self.standing(claimed.username)
        if standing is None or not standing.active:
            return self.roles.principal(claimed.username, (), source=claimed.source, uid=claimed.uid)
        groups = frozenset(standing.groups)
        return self.roles.principal(
            claimed.username,
            groups,
            source=claimed.source,
            email=standing.email or claimed.email,
            name=standing.name or claimed.name,
            uid=claimed.uid,
            directory_admin=standing.superuser or bool(groups & self.roles.directory_admin_groups()),
        )
