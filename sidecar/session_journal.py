"""The sessions the callback let in, kept in a file until SQLite has them, so a crash loses none.

The session writer batches rows for FLUSH_DELAY before one SQLite commit; a process killed in that window (or while
the database cannot take them) would forget sessions MediaMTX is already playing, and a later revocation could not
kick them. Each row is therefore first appended to a journal file of this process's own (one `write`: the kernel
keeps it whatever happens to the process; a power loss is SQLite's `synchronous=NORMAL` trade too), and the journal
is emptied whenever every row written to it is in the database.

A process holds an exclusive `flock` on its journal while it lives. Any journal whose lock can be taken belongs to a
process that has died: its rows are taken over by the next writer (`adopt_orphans`), written with its own, and the
dead process's file removed.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
from pathlib import Path

from sidecar.store import SessionRow

log = logging.getLogger("sidecar.sessions")
PATTERN = "sessions-*.journal"


def _row(line: bytes) -> SessionRow | None:
    try:
        i, u, g, p, a, pr, k, t = json.loads(line)
        return (str(i), str(u), [str(x) for x in g], str(p), str(a), str(pr), str(k), float(t))
    except (ValueError, TypeError):  # a line cut short by the crash, or not ours
        return None


class SessionJournal:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path: Path | None = None
        self._fd: int | None = None
        self._failing = False
        self._held = 0  # rows appended since the journal was last emptied

    def _open(self) -> int:
        path = self.directory / PATTERN.replace("*", secrets.token_hex(8))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else holds it
        self.path, self._fd = path, fd
        return fd

    def append(self, rows: list[SessionRow]) -> bool:
        """Keep `rows` in the file; False (and one log line per run of failures) when the disk cannot take them:
        they are then held in memory only, like before there was a journal."""
        data = b"".join(json.dumps(row, separators=(",", ":")).encode() + b"\n" for row in rows)
        try:
            fd = self._fd if self._fd is not None else self._open()
            os.write(fd, data)
        except OSError as error:
            if not self._failing:
                log.warning("cannot keep allowed MediaMTX sessions in the journal (%s); they wait in memory", error)
            self._failing = True
            return False
        if self._failing:
            log.warning("allowed MediaMTX sessions are kept in the journal again")
        self._failing = False
        self._held += len(rows)
        return True

    def written(self) -> None:
        """Every row appended so far is in the database."""
        if self._fd is None or not self._held:
            return
        try:
            os.ftruncate(self._fd, 0)  # O_APPEND: later rows go to the new end
        except OSError as error:  # rows written twice are harmless: replaying them changes nothing
            log.warning("could not empty the sessions journal: %s", error)
            return
        self._held = 0

    def adopt_orphans(self) -> list[SessionRow]:
        """The rows of journals left by processes that died, now in this journal (so they survive this process too);
        their files are removed."""
        rows: list[SessionRow] = []
        for path in sorted(self.directory.glob(PATTERN)):
            if path == self.path:
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue  # removed meanwhile by another adopter
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its process is alive
                with os.fdopen(os.dup(fd), "rb") as file:
                    found = [row for row in map(_row, file.read().splitlines()) if row is not None]
                if found and not self.append(found):
                    continue  # keep the orphan until its rows have a safe place
                rows += found
                path.unlink(missing_ok=True)
            finally:
                os.close(fd)
        if rows:
            log.warning("took over %d allowed MediaMTX sessions a stopped sidecar had not written", len(rows))
        return rows

    def close(self) -> None:
        """Only once every row is in the database: the file goes with the process."""
        if self._fd is None:
            return
        if not self._held and self.path is not None:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None
