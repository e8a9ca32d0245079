"""The admin work gate: state-changing `/api/v1` requests run their Python one at a time, first come first served.

The sidecar has one event loop, and MediaMTX's auth callback and `/healthz` share it with every admin. Local
directory calls and SQLite writes run on the loop without yielding, so 200 admin writes at once queue that much work
ahead of every callback: each callback then waits behind the writes that happen to be ready. Behind the gate, the
loop holds at most one write's work (plus what is waiting for it), so a callback waits for at most one short
stretch of it. Between two turns the gate rests four times as long as the last one was held (SHARE, at most
MAX_REST), so what arrived meanwhile runs first instead of taking turns with the next write step by step: gated
writes get at most about a fifth of the loop's time (a lone write waits at most MAX_REST for the rest of the one
before it). Admins are people: a fifth of the loop is still well over a hundred changes a second.

Waiting on others never holds the gate:
- `released()` gives the turn back while a request waits on an upstream (`sidecar.outbound.fetch`, the one place
  every Authentik and MediaMTX call goes through), so a hung Authentik makes each write wait its own deadline, not
  the sum of everyone's before it. Coming back, the request carries on at once (it never queues a second time, so
  it cannot wait for a turn held by a request that waits for it), and no new write starts until it is done.
- A turn held for longer than `LEASE_SECONDS` lapses: only a request waiting on something (a lock another request
  holds, a worker thread, another process) can hold it that long, since the loop runs nothing else meanwhile.

Reads (GET, HEAD, OPTIONS), a viewer's playback token, and everything outside `/api/v1/` (the callback, `/healthz`,
sign-in, the pages) are never gated.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.types import ASGIApp, Receive, Scope, Send

GATED_PREFIX = "/api/v1/"
GATED_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Writes viewers make to watch (a playback token): they never queue behind admins' work.
UNGATED = frozenset({"/api/v1/streams/token"})
SLOTS = 1  # gated requests whose Python may run at once
LEASE_SECONDS = 0.1  # a turn held this long without finishing lapses (its holder is waiting on something)
# The share of the loop's time gated work may take while others wait: after a turn held for t seconds, the next
# starts t * (1 - SHARE) / SHARE later (at most MAX_REST), so the callbacks and health checks that arrived meanwhile
# run before it instead of interleaving with it step by step.
SHARE = 0.2
MAX_REST = 0.05


class Gate:
    """A FIFO gate of `slots` turns; see the module docstring."""

    def __init__(self, slots: int = SLOTS, lease: float = LEASE_SECONDS, share: float = SHARE) -> None:
        self.slots = slots
        self.lease = lease
        self.share = share
        self.active = 0  # turns held now (a request back from an upstream may make it exceed `slots` briefly)
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._rest_until = 0.0  # loop time before which no new turn starts
        self._wake: asyncio.TimerHandle | None = None

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold a turn for the body; the current task's `released()` calls give it back meanwhile."""
        await self._acquire()
        turn = _Turn(self)
        token = _current.set(turn)
        try:
            yield
        finally:
            _current.reset(token)
            turn.end()

    async def _acquire(self) -> None:
        loop = asyncio.get_running_loop()
        if self.active < self.slots and not self._waiting and loop.time() >= self._rest_until:
            self.active += 1
            return
        future = loop.create_future()
        self._waiting.append(future)
        self._hand_on()  # resting ended without anyone waiting: nobody else would wake this one
        try:
            await future  # `_hand_on` counted the turn as ours before waking us
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release()  # handed the turn just as we were cancelled: pass it on (no rest: it did nothing)
            elif future in self._waiting:
                self._waiting.remove(future)
            raise

    def _release(self, held: float = 0.0) -> None:
        """A turn held for `held` seconds ends: the next starts after its rest."""
        self.active -= 1
        if self.share < 1.0:
            rest = min(MAX_REST, held * (1.0 - self.share) / self.share)
            self._rest_until = max(self._rest_until, asyncio.get_running_loop().time() + rest)
        self._hand_on()

    def _hand_on(self) -> None:
        loop = asyncio.get_running_loop()
        if self._waiting and self.active < self.slots and loop.time() < self._rest_until:
            if self._wake is None:
                self._wake = loop.call_at(self._rest_until, self._woken)
            return
        while self.active < self.slots and self._waiting:
            future = self._waiting.popleft()
            if future.done():  # cancelled, its task not yet told
                continue
            self.active += 1
            future.set_result(None)

    def _woken(self) -> None:
        self._wake = None
        self._hand_on()


class _Turn:
    """One request's turn: held, given back around waits, lapsed after the lease, ended with the request."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.owner = asyncio.current_task()  # background work the request starts inherits the context, not the turn
        self.holding = False
        self.ended = False
        self._since = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._hold()  # `Gate._acquire` counted it already

    def _hold(self) -> None:
        self.holding = True
        loop = asyncio.get_running_loop()
        self._since = loop.time()
        self._timer = loop.call_later(self.gate.lease, self._lapse)

    def _lapse(self) -> None:
        self._timer = None
        self._let_go()

    def _let_go(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.holding:
            self.holding = False
            self.gate._release(asyncio.get_running_loop().time() - self._since)

    def come_back(self) -> None:
        """Back from a wait: carry on at once, counted again, so no new request starts until this one is done."""
        if not self.ended and not self.holding:
            self.gate.active += 1
            self._hold()

    def end(self) -> None:
        self.ended = True
        self._let_go()


_current: contextvars.ContextVar[_Turn | None] = contextvars.ContextVar("sidecar_admin_gate_turn", default=None)


@asynccontextmanager
async def released() -> AsyncIterator[None]:
    """Give the current request's turn back while the body waits (outbound I/O); a no-op outside a turn, and in
    background tasks that merely inherited the request's context."""
    turn = _current.get()
    if turn is None or turn.ended or not turn.holding or turn.owner is not asyncio.current_task():
        yield
        return
    turn._let_go()
    try:
        yield
    finally:
        turn.come_back()


def gated(scope: Scope) -> bool:
    return (
        scope["type"] == "http"
        and scope["method"] in GATED_METHODS
        and scope["path"].startswith(GATED_PREFIX)
        and scope["path"] not in UNGATED
    )


class AdminGate:
    """ASGI middleware: state-changing `/api/v1/` requests take a turn of the gate; everything else passes."""

    def __init__(self, app: ASGIApp, slots: int = SLOTS, lease: float = LEASE_SECONDS) -> None:
        self.app = app
        self.gate = Gate(slots, lease)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not gated(scope):
            await self.app(scope, receive, send)
            return
        async with self.gate.turn():
            await self.app(scope, receive, send)
