"""Which MediaMTX sessions the sidecar let in, written to SQLite in small batches.

One commit per callback would cost more than the decision, so rows wait in memory for FLUSH_DELAY and go in one
transaction, through a connection of their own (its commits do not look like configuration changes to the
caches). Batches stay small, so writing one holds up the event loop for well under a millisecond; the expensive
part of SQLite's write-ahead log, copying it into the database and syncing it to disk, runs on a thread of its own
every CHECKPOINT_INTERVAL, outside the loop. Whoever is about to read the sessions (revocation, the runOnUnread
hook, shutdown) calls `flush()` first, so nothing it needs is ever only in memory.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

from sidecar.store import SessionRow, Store

log = logging.getLogger("sidecar.sessions")
FLUSH_DELAY = 0.05  # seconds a row may wait for the next batch
CHECKPOINT_INTERVAL = 1.0  # seconds between checkpoints of the write-ahead log


class SessionWriter:
    def __init__(self, database: Path) -> None:
        self._store = Store(database, autocheckpoint=False)
        self._pending: list[SessionRow] = []
        self._closed = False
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None

    def add(self, row: SessionRow) -> None:
        self._pending.append(row)
        if len(self._pending) > 1:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (the CLI, plain tests): write at once
            self.flush()
            return
        loop.call_later(FLUSH_DELAY, self._flush_logged)
        if self._checkpointer is None:
            self._checkpointer = threading.Thread(target=self._checkpoints, name="sidecar-checkpoint", daemon=True)
            self._checkpointer.start()

    def _flush_logged(self) -> None:
        try:
            self.flush()
        except Exception as error:  # the rows stay queued for the next flush; the callback path must not see this
            log.warning("could not write remembered MediaMTX sessions yet: %s", error)

    def flush(self) -> None:
        """Write everything added so far. If the write fails the rows stay queued, in order, and the error is
        raised to the caller."""
        batch, self._pending = self._pending, []
        if not batch or self._closed:
            return
        try:
            self._store.remember_sessions(batch)
        except Exception:
            self._pending[:0] = batch
            raise

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
        self.flush()
        self._closed = True
        self._stop.set()
        if self._checkpointer is not None:
            self._checkpointer.join(timeout=5)
        self._store.close()
