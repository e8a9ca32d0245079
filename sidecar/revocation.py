"""Take access away from streams already playing: re-decide remembered sessions and kick the ones now denied."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from sidecar.directory import Directory, DirectoryError
from sidecar.identity import RolePolicy
from sidecar.mediamtx import MediaMTXClient, MediaMTXError, MediaMTXNotFound, SessionKind
from sidecar.publishers import Publishers
from sidecar.rules import RuleBook
from sidecar.store import Store
from sidecar.tokens import TokenIssuer

log = logging.getLogger("sidecar.revocation")
# MediaMTX lists a session only after its auth callback was answered, so younger rows are never taken for gone.
PRUNE_GRACE = 60.0
PRUNE_INTERVAL = 600.0  # seconds between sweeps of remembered sessions MediaMTX no longer has

# The callback's `protocol` names the family; the encrypted variant lives in its own MediaMTX list.
KINDS_BY_PROTOCOL: dict[str, tuple[SessionKind, ...]] = {
    "rtsp": (SessionKind.RTSP, SessionKind.RTSPS),
    "rtsps": (SessionKind.RTSPS,),
    "rtmp": (SessionKind.RTMP, SessionKind.RTMPS),
    "rtmps": (SessionKind.RTMPS,),
    "hls": (SessionKind.HLS,),
    "webrtc": (SessionKind.WEBRTC,),
    "srt": (SessionKind.SRT,),
    "moq": (SessionKind.MOQ,),
}


@dataclass(frozen=True)
class Kick:
    session_id: str
    username: str
    path: str
    reason: str
    kicked: bool


class Revoker:
    """Runs after every change that can take access away (rules, memberships, deactivation)."""

    def __init__(
        self,
        store: Store,
        rules: RuleBook,
        directory: Directory,
        roles: RolePolicy,
        mediamtx: MediaMTXClient | None,
        tokens: TokenIssuer,
        publishers: Publishers,
    ) -> None:
        self.tokens = tokens
        self.publishers = publishers
        self.before_recheck: Callable[[], None] | None = None  # writes sessions still held in memory
        # Token subjects that are not directory users (share links: `share:<id>`) and how to re-decide them.
        self.subject_checks: dict[str, Callable[[str, str, str], Awaitable[bool]]] = {}
        self.store = store
        self.rules = rules
        self.directory = directory
        self.roles = roles
        self.mediamtx = mediamtx
        self._tasks: set[asyncio.Task[Any]] = set()

    def user_lost_access(self, username: str, reason: str) -> None:
        """Tokens issued so far stop working, and the user's live sessions are re-checked in the background."""
        self.tokens.revoke(username, time.time())
        self._spawn(username, reason)

    def rules_changed(self, reason: str) -> None:
        self._spawn(None, reason)

    def publisher_revoked(self, name: str, reason: str) -> None:
        self._spawn(name, reason)

    def _spawn(self, username: str | None, reason: str) -> None:
        self.background(self.recheck(username, reason))

    def background(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run a follow-up of a change (re-checks, kicks) after the change's answer; `idle()` waits for it."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside any event loop: nothing can be playing through this process
            work.close()
            return
        task = loop.create_task(self._logged(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _logged(work: Coroutine[Any, Any, Any]) -> Any:
        try:
            return await work
        except Exception:
            log.exception("a background re-check failed")
            return None

    async def idle(self) -> None:
        """Wait for background re-checks (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def prune(self) -> int:
        """Forget remembered sessions MediaMTX no longer has, so the table, and every re-check, stays the size of
        what is actually playing (without runOnUnread hooks nothing else removes them). How many were forgotten;
        none when MediaMTX cannot be asked."""
        if self.mediamtx is None:
            return 0
        try:
            live = {session.id for session in await self.mediamtx.list_all_sessions()}
        except MediaMTXError as error:
            log.info("remembered sessions kept: MediaMTX could not list its sessions (%s)", error)
            return 0
        forgotten = self.store.forget_stale_sessions(live, time.time() - PRUNE_GRACE)
        if forgotten:
            log.info("forgot %d remembered sessions MediaMTX no longer has", forgotten)
        return forgotten

    async def prune_every(self, seconds: float = PRUNE_INTERVAL) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.prune()
            except Exception:  # a sweep that fails is tried again at the next interval
                log.exception("sweeping remembered sessions failed")

    async def recheck(self, username: str | None, reason: str) -> list[Kick]:
        if self.before_recheck is not None:
            self.before_recheck()
        await self.prune()  # only sessions that may still be playing are re-decided (and their users looked up)
        groups_now: dict[str, tuple[str, ...] | None] = {}
        kicks: list[Kick] = []
        for row in self.store.media_sessions(username):
            name, kind = row["username"], row["kind"]
            if kind == "service":
                continue  # the API key and local API clients are not subject to path rules
            check = next((c for prefix, c in self.subject_checks.items() if name.startswith(prefix)), None)
            if kind == "publisher":
                if self.publishers.covers(name, row["path"]):
                    continue
            elif check is not None:
                if await check(name, row["path"], row["action"]):
                    continue
            else:
                if name not in groups_now:
                    groups_now[name] = await self._current_groups(name, tuple(json.loads(row["groups"])))
                groups = groups_now[name]
                principal = self.roles.principal(name, groups or (), source="recheck")
                if groups is not None and self.rules.decide(principal, row["path"], row["action"]).allowed:
                    continue
            kicks.append(await self._kick(row["id"], name, row["path"], row["protocol"], reason))
        return kicks

    async def _current_groups(self, username: str, remembered: tuple[str, ...]) -> tuple[str, ...] | None:
        """The user's groups now; None when the user is gone or inactive. When the directory cannot say, the
        groups remembered from the token decide (rule changes still apply)."""
        try:
            user = await self.directory.get_user(username)
        except DirectoryError:
            return remembered
        if user is None or not user.is_active:
            return None
        return user.groups

    async def _kick(self, session_id: str, username: str, path: str, protocol: str, reason: str) -> Kick:
        kicked = False
        if self.mediamtx is not None:
            for kind in KINDS_BY_PROTOCOL.get(protocol, ()):
                try:
                    await self.mediamtx.kick_session(kind, session_id)
                except MediaMTXNotFound:
                    continue
                except MediaMTXError as error:
                    log.warning("could not kick %s session %s: %s", kind, session_id, error)
                    break
                kicked = True
                break
        with self.store.transaction() as db:
            self.store.forget_session(db, session_id)
            detail = {"session": session_id, "path": path, "protocol": protocol, "reason": reason, "kicked": kicked}
            self.store.audit(db, "sidecar", "session.kick", username, detail)
        return Kick(session_id, username, path, reason, kicked)
