"""Take access away from streams already playing: re-decide remembered sessions and kick the ones now denied.

Kicks are durable. A kick MediaMTX could not carry out (unreachable, hanging, failing, or answering something that
is not its API) stays on the remembered session as a pending kick: the server's housekeeping loop tries it again at
start-up and then with backoff (KICK_RETRY_FIRST doubling up to KICK_RETRY_MAX), and revoking the same subject again
(a share link revoked a second time) tries it at once. A remembered session is forgotten only when MediaMTX confirms
the kick, or confirms the session gone (404 for the kick, absent from its session list, or the runOnUnread hook).
`sidecar/pending.py` says what waits, for `sidecar check` and the admins.

Re-checks stay off the event loop's back: changes arriving together are coalesced into one round (at most one round
runs at a time; everything asked for meanwhile goes into the next one); a round reads the remembered sessions in
batches on a worker thread through a SQLite connection of its own and decides them on the loop in slices of about a
millisecond, with each user's groups and each decision looked up once. While changes keep coming (admins writing in
bulk), a round starts at the earliest four times as long after the previous one ended as that one took (at most
ROUND_REST_MAX): a steady stream of changes then costs the loop at most about a fifth of its time in re-checks, not
all of it, and a session losing access is still kicked within a round and a rest (a second at most). Remembered
sessions MediaMTX no longer lists are forgotten as the round passes them. When MediaMTX's list cannot be had (no API
configured, or it fails), sessions with no auth callback for SESSION_MAX_AGE (a day) are forgotten instead, so the
table cannot grow without bound; a pending kick is never dropped that way while MediaMTX's API is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sidecar.directory import Directory, DirectoryError
from sidecar.identity import RolePolicy
from sidecar.mediamtx import (
    MediaMTXClient,
    MediaMTXError,
    MediaMTXNotFound,
    MediaMTXRejected,
    MediaMTXUnauthorized,
    SessionKind,
)
from sidecar.policy import Matcher
from sidecar.publishers import Publishers
from sidecar.rules import RuleBook
from sidecar.store import Store
from sidecar.tokens import TokenIssuer

log = logging.getLogger("sidecar.revocation")
# MediaMTX lists a session only after its auth callback was answered, so younger rows are never taken for gone.
PRUNE_GRACE = 60.0
PRUNE_INTERVAL = 600.0  # seconds between sweeps of remembered sessions MediaMTX no longer has
# Seconds between two re-checks of every remembered session: what changed outside the sidecar (a membership in
# Authentik itself, a CLI beside the server) is acted on within this time, rule changes or not.
RECHECK_INTERVAL = 60.0
OUTSIDE_CHANGES = "the periodic re-check (changes made outside the sidecar)"
# Without MediaMTX's session list, a remembered session with no auth callback for this long is forgotten.
SESSION_MAX_AGE = 24 * 3600.0
KICK_RETRY_FIRST = 2.0  # seconds before a failed kick is tried again; doubles with each failure ...
KICK_RETRY_MAX = 60.0  # ... up to this; also the longest the housekeeping loop sleeps while kicks wait
KICK_RETRY_BATCH = 200  # pending kicks tried per pass (the loop comes straight back while more are due)
READ_BATCH = 2000  # remembered sessions read per trip to the worker thread
LOOP_SLICE = 0.001  # seconds a re-check may run on the loop before letting everything else have a turn
ROUND_REST_FACTOR = 4.0  # while changes keep coming, a round is followed by a rest this many times as long ...
ROUND_REST_MAX = 1.0  # ... but at most this
USERNAMES_PER_QUERY = 500

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
    pending: bool = False  # MediaMTX could not be asked: the kick is retried until it confirms


class _Outcome(enum.Enum):
    DONE = "done"  # MediaMTX ended the session
    GONE = "gone"  # MediaMTX has no such session (any more)
    NO_API = "no-api"  # no MediaMTX API is configured: nothing can be kicked, the session is only forgotten
    FAILED = "failed"  # MediaMTX did not confirm either: the kick waits


@dataclass(frozen=True)
class _Attempt:
    outcome: _Outcome
    error: str = ""
    # MediaMTX as a whole failed (unreachable, hanging, 5xx, not its API, credentials refused): the rest of the
    # pass is not tried against it but waits for the next attempt.
    wholesale: bool = False


def _backoff(attempts: int) -> float:
    return float(min(KICK_RETRY_MAX, KICK_RETRY_FIRST * 2 ** max(0, attempts - 1)))


def _forgettable(row: sqlite3.Row, live: set[str] | None, now: float, *, kicks_possible: bool) -> bool:
    """Whether a remembered session can go without a decision: MediaMTX's list (when it could be had) no longer has
    it, or (without that list) nothing was heard of it for SESSION_MAX_AGE; a pending kick only goes by the list."""
    if live is not None:
        return row["id"] not in live and float(row["allowed_at"]) < now - PRUNE_GRACE
    if row["kick_reason"] is not None and kicks_possible:
        return False
    return max(float(row["allowed_at"]), float(row["seen_at"] or 0.0)) < now - SESSION_MAX_AGE


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
        # Re-checks asked for and not begun: subject (None: everyone) -> reasons, in order.
        self._requests: dict[str | None, dict[str, None]] = {}
        self._draining = False
        self._changed_patterns: set[str] = set()  # rules changed since the last round began
        self._reader: sqlite3.Connection | None = None  # the rounds' own connection to the remembered sessions
        self._every_path = False  # something changed that may touch any path
        self._lock = asyncio.Lock()  # one round or retry pass at a time, so no session is kicked twice at once
        self._wake = asyncio.Event()  # a kick started waiting: the housekeeping loop looks at its schedule again
        self._slice_ends = 0.0

    def user_lost_access(self, username: str, reason: str) -> None:
        """Tokens issued so far stop working, and the user's live sessions are re-checked in the background (a
        kick of theirs still waiting for MediaMTX is tried again at once)."""
        self.tokens.revoke(username, time.time())
        self._spawn(username, reason)

    def rules_changed(self, reason: str, pattern: str | None = None) -> None:
        """Re-check everyone's sessions; with `pattern` (the rule that changed), only those on paths it could match
        (in any case): a rule that cannot match a path cannot change its decision. Changes made outside the sidecar
        (in Authentik itself, or by another process) are caught by the periodic full re-check instead."""
        if pattern is None:
            self._every_path = True
        else:
            self._changed_patterns.add(pattern)
        self._spawn(None, reason)

    def publisher_revoked(self, name: str, reason: str) -> None:
        self._spawn(name, reason)

    def _spawn(self, username: str | None, reason: str) -> None:
        """Ask for a re-check; requests arriving while one runs are coalesced into the next round."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # outside any event loop: nothing can be playing through this process
            return
        self._requests.setdefault(username, {})[reason] = None
        if not self._draining:
            self._draining = True
            self.background(self._drain())

    async def _drain(self) -> None:
        try:
            while self._requests:
                requests, self._requests = self._requests, {}
                patterns, self._changed_patterns = self._changed_patterns, set()
                every_path, self._every_path = self._every_path or not patterns, False
                paths = None if every_path else Matcher(dict.fromkeys(patterns, ()))
                started = time.monotonic()
                try:
                    await self._round({name: tuple(reasons) for name, reasons in requests.items()}, paths)
                except Exception:
                    log.exception("a background re-check failed")
                if self._requests:  # more came meanwhile: let them gather while everything else has the loop
                    await asyncio.sleep(min(ROUND_REST_MAX, ROUND_REST_FACTOR * (time.monotonic() - started)))
        finally:
            self._draining = False

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

    def close(self) -> None:
        """After `idle()`: the rounds' connection goes."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    # -- sweeping --------------------------------------------------------------------------------------------------

    async def prune(self) -> int:
        """Forget remembered sessions MediaMTX no longer has, so the table, and every re-check, stays the size of
        what is actually playing (without runOnUnread hooks nothing else removes them); when MediaMTX cannot list
        its sessions (or no API is configured), those not heard of for SESSION_MAX_AGE. How many were forgotten.
        The pass runs on a worker thread."""
        live, _ = await self._live_sessions()
        forgotten = await asyncio.to_thread(self._forget_stale, live, time.time())
        if forgotten:
            log.info("forgot %d remembered sessions MediaMTX no longer has", forgotten)
        return forgotten

    def _forget_stale(self, live: set[str] | None, now: float) -> int:
        reader = self.store.session_reader()
        try:
            forgotten, after = 0, 0
            while rows := Store.media_session_page(reader, after, READ_BATCH):
                after = rows[-1]["seq"]
                kicks_possible = self.mediamtx is not None
                stale = [row["id"] for row in rows if _forgettable(row, live, now, kicks_possible=kicks_possible)]
                if stale:
                    forgotten += Store.forget_sessions_in(reader, stale)
            return forgotten
        finally:
            reader.close()

    def recheck_everything(self) -> None:
        """Ask for a re-check of every remembered session on every path (the periodic one)."""
        self.rules_changed(OUTSIDE_CHANGES)  # no pattern: every path

    async def prune_every(self, seconds: float = PRUNE_INTERVAL, recheck: float = RECHECK_INTERVAL) -> None:
        """The server's housekeeping loop: kicks that wait for MediaMTX are tried at once (at start-up) and then as
        their backoff comes due; remembered sessions MediaMTX no longer has are swept every `seconds`; every
        remembered session is re-checked every `recheck` seconds."""
        sweep_at = time.monotonic() + seconds
        recheck_at = time.monotonic() + recheck
        early = True  # at start-up every kick that waits is tried, whatever its backoff
        while True:
            self._wake.clear()
            due_in: float | None = None
            try:
                due_in = await self.retry_kicks(early=early)
                early = False
            except Exception:  # tried again at the next turn
                log.exception("retrying the kicks that wait for MediaMTX failed")
                due_in = KICK_RETRY_MAX
            if time.monotonic() >= sweep_at:
                try:
                    await self.prune()
                except Exception:  # a sweep that fails is tried again at the next interval
                    log.exception("sweeping remembered sessions failed")
                sweep_at = time.monotonic() + seconds
            if time.monotonic() >= recheck_at:
                self.recheck_everything()
                recheck_at = time.monotonic() + recheck
            due = min(sweep_at, recheck_at) - time.monotonic()
            wait = min(due, KICK_RETRY_MAX if due_in is None else due_in)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, wait))

    # -- re-checks -------------------------------------------------------------------------------------------------

    async def recheck(self, username: str | None, reason: str) -> list[Kick]:
        """Re-decide the remembered sessions of `username` (everyone's for None) now, and kick the denied ones."""
        return await self._round({username: (reason,)})

    async def _round(self, requests: Mapping[str | None, tuple[str, ...]], paths: Matcher | None = None) -> list[Kick]:
        """`paths`: when only rules changed, the sessions of people not named in `requests` are re-decided only on
        paths these patterns could match (None: every path)."""
        async with self._lock:
            self._write_remembered()
            live, unlisted = await self._live_sessions()
            # MediaMTX could not even list its sessions: the kicks of this round wait for the retry instead of each
            # waiting out the same failure.
            blocked = None if unlisted is None else _Attempt(_Outcome.FAILED, unlisted, wholesale=True)
            everyone = None in requests
            names = sorted(name for name in requests if name is not None)
            for_everyone = "; ".join(requests.get(None, ()))
            groups_now: dict[str, tuple[str, ...] | None] = {}
            decided: dict[tuple[str, str, str, str], bool] = {}
            kicks: list[Kick] = []
            waiting: list[sqlite3.Row] = []  # kicks of the named subjects still waiting for MediaMTX: tried now
            now = time.time()
            kicks_possible = self.mediamtx is not None
            touched_paths: dict[str, bool] = {}  # many sessions share a path: each is matched once per round

            def touched(path: str) -> bool:
                found = touched_paths.get(path)
                if found is None:
                    found = touched_paths[path] = paths is not None and paths.match_ignoring_case(path) is not None
                return found

            if self._reader is None:  # one connection for every round (they run one at a time): opening costs more
                self._reader = await asyncio.to_thread(self.store.session_reader)
            reader = self._reader
            try:
                for chunk in [None] if everyone else _chunks(names, USERNAMES_PER_QUERY):
                    async for rows in _pages(reader, chunk):
                        stale: list[str] = []
                        for row in rows:
                            await self._share_the_loop()
                            if _forgettable(row, live, now, kicks_possible=kicks_possible):
                                stale.append(row["id"])
                            elif row["kick_reason"] is not None:
                                if row["username"] in requests:
                                    waiting.append(row)
                            elif paths is not None and row["username"] not in requests and not touched(row["path"]):
                                continue  # no changed rule can match this path: its decision stands
                            elif not await self._allowed(row, groups_now, decided):
                                reasons = requests.get(row["username"]) or ()
                                kick, attempt = await self._kick(row, "; ".join(reasons) or for_everyone, blocked)
                                if attempt.wholesale:
                                    blocked = attempt
                                kicks.append(kick)
                        if stale:
                            await asyncio.to_thread(Store.forget_sessions_in, reader, stale)
            except sqlite3.Error:
                self._reader = None  # a fresh connection next round
                await asyncio.to_thread(reader.close)
                raise
            if waiting:
                await self._retry(waiting)
            return kicks

    def _write_remembered(self) -> None:
        if self.before_recheck is None:
            return
        try:
            self.before_recheck()
        except Exception as error:  # what is stored is re-checked; rows the database cannot take yet are not
            log.warning("re-checking only the remembered sessions written so far: %s", error)

    async def _share_the_loop(self) -> None:
        """Let everything else on the loop run every LOOP_SLICE seconds of a long pass."""
        now = time.perf_counter()
        if now >= self._slice_ends:
            await asyncio.sleep(0)
            self._slice_ends = time.perf_counter() + LOOP_SLICE

    async def _live_sessions(self) -> tuple[set[str] | None, str | None]:
        """The ids MediaMTX lists now; (None, why) when it cannot say, (None, None) without an API."""
        if self.mediamtx is None:
            return None, None
        try:
            sessions = await self.mediamtx.list_all_sessions()
        except MediaMTXError as error:
            log.info("remembered sessions kept: MediaMTX could not list its sessions (%s)", error)
            return None, error.message
        if not sessions and (why := await self._mediamtx_itself()):
            log.info("remembered sessions kept: %s", why)
            return None, why
        return {session.id for session in sessions}, None

    async def _mediamtx_itself(self) -> str | None:
        """None when the API URL answers like MediaMTX (its /v3/info names a version), else why not. A 404 for every
        protocol (an empty list, a kick of no such session) settles a session only when MediaMTX itself says it:
        a wrong URL answers 404 to everything. Asked each time: it is needed only for an empty list or a session
        that is gone, and a URL can start leading elsewhere at any moment."""
        if self.mediamtx is None:
            return "no MediaMTX API is configured"
        try:
            info = await self.mediamtx.info()
        except MediaMTXError as error:
            return error.message
        if not info.version:
            return "the MediaMTX API URL does not answer like MediaMTX (its /v3/info names no version)"
        return None

    async def _allowed(
        self,
        row: sqlite3.Row,
        groups_now: dict[str, tuple[str, ...] | None],
        decided: dict[tuple[str, str, str, str], bool],
    ) -> bool:
        name, kind, path, action = row["username"], row["kind"], row["path"], row["action"]
        if kind == "service":
            return True  # the API key and local API clients are not subject to path rules
        key = (kind, name, path, action)
        known = decided.get(key)
        if known is not None:
            return known
        check = next((c for prefix, c in self.subject_checks.items() if name.startswith(prefix)), None)
        if kind == "publisher":
            allowed = self.publishers.covers(name, path)
        elif check is not None:
            allowed = await check(name, path, action)
        else:
            if name not in groups_now:
                groups_now[name] = await self._current_groups(name, tuple(json.loads(row["groups"])))
            groups = groups_now[name]
            principal = self.roles.principal(name, groups or (), source="recheck")
            allowed = groups is not None and self.rules.decide(principal, path, action).allowed
        decided[key] = allowed
        return allowed

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

    # -- kicks -----------------------------------------------------------------------------------------------------

    async def _kick(self, row: sqlite3.Row, reason: str, blocked: _Attempt | None) -> tuple[Kick, _Attempt]:
        """The first attempt at a kick: done, the session gone, or (MediaMTX not confirming) a kick that waits;
        `blocked` is a failure of MediaMTX as a whole earlier in the round, which this kick then shares."""
        attempt = blocked or await self._attempt(row["id"], row["protocol"])
        self._record(row, reason, attempt, first=True)
        done = attempt.outcome is _Outcome.DONE
        kick = Kick(row["id"], row["username"], row["path"], reason, done, attempt.outcome is _Outcome.FAILED)
        return kick, attempt

    async def _attempt(self, session_id: str, protocol: str) -> _Attempt:
        if self.mediamtx is None:
            return _Attempt(_Outcome.NO_API)
        kinds = KINDS_BY_PROTOCOL.get(protocol, ())
        for kind in kinds:
            try:
                await self.mediamtx.kick_session(kind, session_id)
            except MediaMTXNotFound:
                continue  # not in this list (or the protocol is off): look in the next one
            except MediaMTXError as error:
                log.warning("could not kick %s session %s: %s", kind, session_id, error)
                wholesale = isinstance(error, MediaMTXUnauthorized) or not isinstance(error, MediaMTXRejected)
                return _Attempt(_Outcome.FAILED, error.message, wholesale)
            return _Attempt(_Outcome.DONE)
        if kinds and (why := await self._mediamtx_itself()):
            return _Attempt(_Outcome.FAILED, why, wholesale=True)
        return _Attempt(_Outcome.GONE)

    def _record(self, row: sqlite3.Row, reason: str, attempt: _Attempt, *, first: bool) -> None:
        """Forget the session once MediaMTX has settled it (and audit that); otherwise keep it with its kick due
        again after the backoff. Only the first failure of a kick is audited; the retries are counted."""
        session_id = row["id"]
        detail: dict[str, Any] = {"session": session_id, "path": row["path"], "protocol": row["protocol"]}
        detail["reason"] = reason
        now = time.time()
        attempts = int(row["kick_attempts"] or 0) + 1
        with self.store.transaction(invalidates=False) as db:
            if attempt.outcome is _Outcome.FAILED:
                if not self.store.defer_kick(db, session_id, reason, attempt.error, now, now + _backoff(attempts)):
                    return  # forgotten meanwhile (runOnUnread, a sweep): MediaMTX no longer has it
                if first:
                    detail.update(kicked=False, pending=True, error=attempt.error)
                    self.store.audit(db, "sidecar", "session.kick", row["username"], detail)
            else:
                self.store.forget_session(db, session_id)
                detail["kicked"] = attempt.outcome is _Outcome.DONE
                if attempt.outcome is _Outcome.GONE:
                    detail["gone"] = True
                if not first:
                    detail["attempts"] = attempts
                    detail["waited"] = round(now - float(row["kick_since"] or now))
                self.store.audit(db, "sidecar", "session.kick", row["username"], detail)
        if attempt.outcome is _Outcome.FAILED:
            self._wake.set()

    async def retry_kicks(self, usernames: list[str] | None = None, *, early: bool = False) -> float | None:
        """Try the kicks that wait for MediaMTX: the ones due now; all of `usernames`', or (`early`, at start-up)
        every one, whether its backoff has run out or not. Seconds until the next one is due (0 when more are due
        already); None when no kick waits."""
        async with self._lock:
            due_by = None if early or usernames is not None else time.time()
            rows = self.store.pending_kicks(due_by, usernames, KICK_RETRY_BATCH)
            if rows:
                await self._retry(rows)
        count, _, next_at, _ = self.store.pending_kick_summary()
        if not count or next_at is None:
            return None
        return max(0.0, next_at - time.time())

    async def _retry(self, rows: Sequence[sqlite3.Row]) -> None:
        blocked: _Attempt | None = None
        failed = 0
        for row in rows:
            attempt = blocked or await self._attempt(row["id"], row["protocol"])
            if attempt.wholesale:
                blocked = attempt
            if attempt.outcome is _Outcome.FAILED:
                failed += 1
            self._record(row, str(row["kick_reason"]), attempt, first=False)
        if failed:
            log.info("%d kicks still wait for MediaMTX: %s", failed, (blocked.error if blocked else "") or "see above")


async def _pages(reader: sqlite3.Connection, usernames: list[str] | None) -> AsyncIterator[list[sqlite3.Row]]:
    """The remembered sessions (of `usernames`, when given), READ_BATCH at a time, each read on a worker thread."""
    after = 0
    while rows := await asyncio.to_thread(Store.media_session_page, reader, after, READ_BATCH, usernames):
        yield rows
        if len(rows) < READ_BATCH:
            return
        after = rows[-1]["seq"]


def _chunks(names: list[str], size: int) -> list[list[str] | None]:
    return [names[start : start + size] for start in range(0, len(names), size)]
