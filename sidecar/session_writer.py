"""Which MediaMTX sessions the sidecar let in, written to SQLite in small batches.

One commit per callback would cost more than the decision, so rows wait in memory for FLUSH_DELAY and go in one
transaction, through a connection of their own (its commits do not look like configuration changes to the
caches). Batches stay small, so writing one holds up the event loop for well under a millisecond; the expensive
part of SQLite's write-ahead log, copying it into the database and syncing it to disk, runs on a thread of its own
every CHECKPOINT_INTERVAL, outside the loop. Whoever is about to read the sessions (revocation, the runOnUnread
hook, shutdown) calls `flush()` first, so nothing it needs is ever only in memory. Until a row is in the database it
is also in this process's journal file (sidecar/session_journal.py), so a crash loses none: the next writer on the
data dir takes over a dead process's journal.

When the database cannot take a batch (a full disk, a lock held too long) the rows stay queued, in order, and the
writer tries again on its own, RETRY_FIRST seconds later and doubling up to RETRY_MAX, writing a backlog CHUNK rows
per turn of the loop once the database is back; a row the database can never take is dropped alone, counted and
logged. At most MAX_PENDING rows are held: beyond that the oldest are dropped, counted in `dropped` and logged (at
most once a DROP_LOG_INTERVAL). `backlog`, `failing_since`, `last_error` and `dropped` say how things stand
(`sidecar/pending.py` puts them in sentences).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sqlite3
import threading
import time
from pathlib import Path

from sidecar.session_journal import SessionJournal
from sidecar.store import SessionRow, Store

log = logging.getLogger("sidecar.sessions")
FLUSH_DELAY = 0.05  # seconds a row may wait for the next batch
CHECKPOINT_INTERVAL = 1.0  # seconds between checkpoints of the write-ahead log
RETRY_FIRST = 0.5  # seconds before a failed batch is tried again; doubles with each failure ...
RETRY_MAX = 30.0  # ... up to this
CHUNK = 2000  # rows per transaction when a backlog is written
MAX_PENDING = 50_000  # rows held while the database cannot take them; beyond this the oldest are dropped
DROP_LOG_INTERVAL = 60.0  # seconds between two warnings about dropped rows
# What a row the database cannot take raises (a lone surrogate, a value SQLite cannot bind), as opposed to the
# database itself failing (full, locked, read-only: sqlite3.OperationalError and the like), which the retry is for.
ROW_ERRORS = (UnicodeError, ValueError, TypeError, OverflowError, sqlite3.InterfaceError, sqlite3.IntegrityError)


class SessionWriter:
    def __init__(self, database: Path) -> None:
        self._store = Store(database, autocheckpoint=False)
        self._pending: list[SessionRow] = []
        self._closed = False
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.Handle | None = None
        self._failures = 0  # failed writes in a row
        self.failing_since: float | None = None  # when the current run of failed writes began
        self.last_error = ""
        self.dropped = 0  # rows dropped beyond MAX_PENDING since the start
        self._dropped_unreported = 0
        self._drop_reported_at = -math.inf
        self._journal = SessionJournal(database.parent)
        self._pending.extend(self._journal.adopt_orphans())
        if self._pending:
            with contextlib.suppress(Exception):  # held, logged by flush, and retried with the next rows
                self.flush()

    @property
    def backlog(self) -> int:
        """Rows not written yet."""
        return len(self._pending)

    def add(self, row: SessionRow) -> None:
        self._journal.append([row])
        self._pending.append(row)
        if len(self._pending) > MAX_PENDING:
            self._drop(len(self._pending) - MAX_PENDING)
        if self._timer is not None:
            return  # a batch (or the retry of a failed one) is already on its way
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (the CLI, plain tests): write at once
            self.flush()
            return
        self._loop = loop
        self._timer = loop.call_later(FLUSH_DELAY, self._flush_logged)
        if self._checkpointer is None:
            self._checkpointer = threading.Thread(target=self._checkpoints, name="sidecar-checkpoint", daemon=True)
            self._checkpointer.start()

    def _flush_logged(self) -> None:
        """The timer's turn: one chunk; the rest of a backlog at the loop's next turn, a failure after a backoff."""
        self._timer = None
        if self._closed:
            return
        try:
            self._write(CHUNK)
        except Exception as error:  # the rows stay queued; the callback path must not see this
            self._failed(error)
            return
        if self._pending and self._loop is not None:
            self._timer = self._loop.call_soon(self._flush_logged)

    def flush(self) -> None:
        """Write everything added so far. If the write fails the rows stay queued, in order, a retry is scheduled,
        and the error is raised to the caller."""
        if self._closed:
            return
        try:
            while self._pending:
                self._write(CHUNK)
        except Exception as error:
            self._failed(error)
            raise

    def _write(self, limit: int) -> None:
        count = min(limit, len(self._pending))
        if not count:
            return
        try:
            self._store.record_sessions(self._pending[:count])
        except ROW_ERRORS:  # not the database failing but a row it cannot take: that row alone must not block
            self._write_one_by_one(count)
        else:
            del self._pending[:count]
        if not self._pending:
            self._journal.written()
        if self._failures:
            log.warning(
                "remembered MediaMTX sessions are written again after %d failed attempts since %s",
                self._failures,
                time.strftime("%H:%M:%S", time.localtime(self.failing_since or time.time())),
            )
            self._failures, self.failing_since, self.last_error = 0, None, ""

    def _write_one_by_one(self, count: int) -> None:
        for _ in range(count):
            try:
                self._store.record_sessions(self._pending[:1])
            except ROW_ERRORS as error:
                self.dropped += 1
                log.warning("dropped a remembered MediaMTX session the database cannot take: %s", error)
            del self._pending[0]

    def _failed(self, error: Exception) -> None:
        """Note a failed write and make sure another is tried after the backoff, whoever asked for this one."""
        self._failures += 1
        self.last_error = " ".join(str(error).split())[:200] or type(error).__name__
        if self.failing_since is None:
            self.failing_since = time.time()
        delay = min(RETRY_MAX, RETRY_FIRST * 2 ** (self._failures - 1))
        log.warning(
            "could not write remembered MediaMTX sessions (%d held: %s); trying again in %.1f s",
            len(self._pending),
            self.last_error,
            delay,
        )
        loop = self._loop
        if loop is None or loop.is_closed() or self._closed:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._retry_in(delay)
        else:  # a flush from another thread: the timer is set on the loop's own thread
            loop.call_soon_threadsafe(self._retry_in, delay)

    def _retry_in(self, delay: float) -> None:
        if self._closed or self._loop is None:
            return
        if self._timer is not None:
            self._timer.cancel()  # the batch timer (or a sooner retry) gives way to the backoff
        self._timer = self._loop.call_later(delay, self._flush_logged)

    def _drop(self, count: int) -> None:
        del self._pending[:count]
        self.dropped += count
        self._dropped_unreported += count
        now = time.monotonic()
        if now - self._drop_reported_at >= DROP_LOG_INTERVAL:
            log.warning(
                "dropped the %d oldest remembered MediaMTX sessions (%d since the start): the database has not taken "
                "them (%s) and at most %d are held in memory; those sessions cannot be kicked on revocation",
                self._dropped_unreported,
                self.dropped,
                self.last_error or "no error yet",
                MAX_PENDING,
            )
            self._dropped_unreported, self._drop_reported_at = 0, now

    def _checkpoints(self) -> None:
        checkpointer = Store(self._store.path)  # a connection of this thread's own: the loop never waits on it
        try:
            while not self._stop.wait(CHECKPOINT_INTERVAL):
                try:
                    checkpointer.checkpoint()
                except Exception as error:  # the next round (or SQLite itself, on close) catches up
                    log.warning("write-ahead log checkpoint failed: %s", error)
        finally:
            checkpointer.close()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            self.flush()
        except Exception as error:
            log.error(
                "%d remembered MediaMTX sessions could not be written before the stop (kept in %s for the next start): "
                "%s",
                self.backlog,
                self._journal.path,
                error,
            )
        self._journal.close()
        self._closed = True
        self._stop.set()
        if self._checkpointer is not None:
            self._checkpointer.join(timeout=5)
        self._store.close()
