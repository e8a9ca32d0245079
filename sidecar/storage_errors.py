"""What to say when the data dir cannot be written or read: one sentence per cause, for clients and for operators.

The causes: a full disk (SQLITE_FULL, ENOSPC, EDQUOT), a read-only filesystem (EROFS, SQLITE_READONLY), files the
sidecar's user may not write (EACCES, EPERM, SQLITE_CANTOPEN), disk I/O errors (SQLITE_IOERR, EIO), a database another
process keeps locked for longer than SQLite waits (SQLITE_BUSY, SQLITE_LOCKED) and a damaged database
(SQLITE_CORRUPT, SQLITE_NOTADB). SQLite reports several of them as a plain "disk I/O error" (a shared-memory file it
could not grow on a full disk, a filesystem the kernel turned read-only after a disk error), so an I/O error is told
apart by looking at the filesystem itself.

What the sidecar does about them (decided here; the web layer, `sidecar serve` and `sidecar check` apply it):

- On a full disk it keeps running and serves everything that only reads: viewers holding a playback token keep
  watching (MediaMTX's callback only reads), pages and lists load. Every write (a playback token, a sign-in, the
  public form, an admin change) answers 503 with `the data disk is full: ...` (JSON for the API, a page for
  browsers) and leaves nothing half-done, since each change is one transaction. It picks up again by itself when
  space is back.
- `/readyz` fails, naming the store, while the data disk has less than MIN_FREE_BYTES free, is read-only, or a
  tiny write (`write_problem`) fails; it passes again by itself.
- It can even start on a full disk: SQLite needs about 32 KiB for its shared-memory file before it can read a
  database nobody has open, so `sidecar serve` keeps a small reserve file (RESERVE_NAME) in the data dir and gives
  it up when opening the database finds no room; the reserve comes back once there is space again.
- A read-only or foreign-owned data dir and a damaged database stop the start instead (they do not fix themselves):
  `sidecar serve` and every other command exit 2 with one line, `error: <sentence>`, and `sidecar check` prints the
  same sentence as a PROBLEM line.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pwd
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from sidecar.keys import SECRET_FILES, load_secrets, secret_path
from sidecar.settings import Settings
from sidecar.store import Store

log = logging.getLogger("sidecar.storage")
T = TypeVar("T")

MIN_FREE_BYTES = 1024 * 1024  # below this the data disk counts as full: /readyz fails before writes start failing
RESERVE_NAME = "space-reserve"
RESERVE_BYTES = 256 * 1024  # what SQLite needs to open the database on a full disk, with room to spare
PROBE_BUSY_SECONDS = 2.0  # how long the readiness write waits for another process's write to finish

FULL, READ_ONLY, NOT_WRITABLE, IO, LOCKED, DAMAGED = "full", "read-only", "not-writable", "io", "locked", "damaged"

# What a client is told: what is wrong and whether to try again, never a path.
PUBLIC = {
    FULL: "the data disk is full: nothing can be saved until space is freed on it; try again later",
    READ_ONLY: "the database is read-only: nothing can be saved until its disk is writable again; try again later",
    NOT_WRITABLE: "the database is read-only: nothing can be saved until its disk is writable again; try again later",
    IO: "the data disk reports I/O errors: nothing can be saved right now; try again later",
    LOCKED: "the database is busy: another process kept it locked for too long; try again shortly",
    DAMAGED: "the database is damaged: nothing can be saved until an operator restores it",
}


@dataclass(frozen=True)
class StorageProblem:
    kind: str
    public: str  # for any client
    operator: str  # for the log, the CLI and `sidecar check`: which path, and what to do about it


class StartupFailure(Exception):
    """Start-up stopped for a reason the operator has to fix, already said in one line: no traceback needed."""


@dataclass(frozen=True)
class _Filesystem:
    read_only: bool
    free: int


def _filesystem(data_dir: Path) -> _Filesystem | None:
    try:
        found = os.statvfs(data_dir)
    except OSError:
        return None
    # root may also use the blocks a filesystem reserves for it (ext4's 5 %), everyone else only what is available.
    blocks = found.f_bfree if os.geteuid() == 0 else found.f_bavail
    return _Filesystem(read_only=bool(found.f_flag & os.ST_RDONLY), free=blocks * found.f_frsize)


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _owner_of(path: Path) -> str | None:
    try:
        return _user(path.stat().st_uid)
    except OSError:
        return None


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK) if path.exists() else True


def _sentence(kind: str, data_dir: Path, database: Path, detail: str, target: Path | None) -> str:
    if kind == FULL:
        return f"the data disk is full (no space left for {data_dir}): free space on it"
    if kind == READ_ONLY:
        return (
            f"the data dir {data_dir} is on a read-only filesystem: mount it read-write (if the kernel made it "
            "read-only after a disk error, check the disk and run fsck first)"
        )
    if kind == NOT_WRITABLE:
        me = _user(os.geteuid())
        # The data dir itself when it is the obstacle, else the one file in it that is.
        where = target if target is not None and os.access(data_dir, os.W_OK | os.X_OK) else data_dir
        owner = _owner_of(where)
        owned = f" (it belongs to {owner})" if owner and owner != me else ""
        instead = f", or run the sidecar as {owner}" if owner and owner != me and where == data_dir else ""
        return (
            f"{where} cannot be written by {me}, the user the sidecar runs as{owned}: `chown -R {me} {data_dir}`"
            f"{instead}"
        )
    if kind == IO:
        return (
            f"the disk holding {data_dir} reports I/O errors ({detail}): check it and the kernel log (dmesg); "
            "the filesystem may need fsck"
        )
    if kind == LOCKED:
        return (
            f"the database {database} stayed locked by another process (another `sidecar serve` or `sidecar` "
            "command) for too long: try again, or stop the process that holds it"
        )
    return (
        f"the database {database} is damaged ({detail}): stop the sidecar and restore it from a backup, or move it "
        "aside to start with an empty one"
    )


def _inside(filename: object, data_dir: Path) -> bool:
    try:
        path = Path(os.fsdecode(filename)).absolute()  # type: ignore[arg-type]
    except TypeError:
        return False
    base = data_dir.absolute()
    return path == base or base in path.parents


def _write_errno(data_dir: Path) -> int | None:
    """What writing one byte to a new file in the data dir fails with, if it does."""
    path = data_dir / f".write-test.{os.getpid()}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)
    except OSError as error:
        return error.errno
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
    return None


def _by_filesystem(data_dir: Path, database: Path, fallback: str) -> str:
    """An error SQLite cannot tell more about (it reports a failed write(2) as an I/O error whatever the errno): what
    the filesystem says, else `fallback`. A filesystem the kernel stopped writing after a disk error (ext4's
    errors=remount-ro) still looks writable to statvfs and access(2); only a write tells."""
    found = _filesystem(data_dir)
    if found is not None and found.read_only:
        return READ_ONLY
    if found is not None and found.free < MIN_FREE_BYTES:
        return FULL
    if not (_writable(data_dir) and _writable(database)):
        return NOT_WRITABLE
    failed = _write_errno(data_dir)
    if failed == errno.EROFS:
        return READ_ONLY
    if failed in (errno.ENOSPC, errno.EDQUOT):
        return FULL
    if failed in (errno.EACCES, errno.EPERM):
        return NOT_WRITABLE
    return fallback


def _kind(error: BaseException, data_dir: Path, database: Path) -> tuple[str, Path | None] | None:
    if isinstance(error, sqlite3.Error):
        name = str(getattr(error, "sqlite_errorname", "") or "")
        text = str(error).lower()
        if name == "SQLITE_FULL" or "disk is full" in text:
            return FULL, None
        if name.startswith("SQLITE_READONLY") or "readonly database" in text:
            return _by_filesystem(data_dir, database, NOT_WRITABLE), database
        if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in text or "not a database" in text:
            return DAMAGED, None
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "database is locked" in text:
            return LOCKED, None
        if name.startswith("SQLITE_IOERR") or "disk i/o error" in text:
            return _by_filesystem(data_dir, database, IO), None
        if name.startswith(("SQLITE_CANTOPEN", "SQLITE_PERM")) or "unable to open database" in text:
            return _by_filesystem(data_dir, database, NOT_WRITABLE), database
        return None
    if isinstance(error, OSError) and not isinstance(error, (ConnectionError, TimeoutError)):
        if error.filename is not None and not _inside(error.filename, data_dir):
            return None
        target = Path(os.fsdecode(error.filename)) if error.filename is not None else None
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            return FULL, target
        if error.errno == errno.EROFS:
            return READ_ONLY, target
        if error.errno in (errno.EACCES, errno.EPERM) and target is not None:
            return _by_filesystem(data_dir, database, NOT_WRITABLE), target
        if error.errno == errno.EIO:
            return _by_filesystem(data_dir, database, IO), target
    return None


def storage_problem(error: BaseException, data_dir: Path, database: Path | None = None) -> StorageProblem | None:
    """The storage problem behind `error` (or an error it was raised from), None when it is not one."""
    database = database or data_dir / "sidecar.db"
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        found = _kind(current, data_dir, database)
        if found is not None:
            kind, target = found
            detail = current.strerror if isinstance(current, OSError) and current.strerror else str(current)
            operator = _sentence(kind, data_dir, database, detail, target)
            return StorageProblem(kind, PUBLIC[kind], operator)
        current = current.__cause__ or current.__context__
    return None


def problem_of_kind(kind: str, data_dir: Path, database: Path | None = None, detail: str = "") -> StorageProblem:
    database = database or data_dir / "sidecar.db"
    return StorageProblem(kind, PUBLIC[kind], _sentence(kind, data_dir, database, detail, None))


# -- readiness ----------------------------------------------------------------------------------------------------
def probe_write(database: Path) -> None:
    """Commit one tiny write through a connection of its own: raises what a real write would raise now.

    It writes a `meta` row no cache reads and leaves the `generation` counter alone, so no process's caches empty
    because of it (their own connections only see that someone committed, read the unchanged generation and move
    on). Its own connection, with a short busy timeout, keeps it from queueing behind the server's connection lock.
    """
    uri = database.absolute().as_uri() + "?mode=rw"  # never creates a database that is not there
    db = sqlite3.connect(uri, uri=True, timeout=PROBE_BUSY_SECONDS, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT INTO meta(key, value) VALUES ('write_probe', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (repr(time.time()),),
            )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    finally:
        db.close()


def write_problem(data_dir: Path, database: Path) -> StorageProblem | None:
    """Why a write to the database would fail now, or None: a read-only or (nearly) full data disk, or a probe
    write that fails. Blocks for up to PROBE_BUSY_SECONDS: call it off the event loop."""
    found = _filesystem(data_dir)
    if found is not None and found.read_only:
        return problem_of_kind(READ_ONLY, data_dir, database)
    if found is not None and found.free < MIN_FREE_BYTES:
        # A small write may still fit into the write-ahead log's old space; what comes next will not.
        return problem_of_kind(FULL, data_dir, database)
    try:
        probe_write(database)
    except (sqlite3.Error, OSError) as error:
        return storage_problem(error, data_dir, database) or problem_of_kind(IO, data_dir, database, str(error))
    return None


# -- the space reserve --------------------------------------------------------------------------------------------
def keep_reserve(data_dir: Path) -> None:
    """Put the space reserve back when it is missing and the disk has room to spare; never fails."""
    path = data_dir / RESERVE_NAME
    if path.exists():
        return
    found = _filesystem(data_dir)
    if found is None or found.read_only or found.free < RESERVE_BYTES + 2 * MIN_FREE_BYTES:
        return
    temporary = data_dir / f".{RESERVE_NAME}.{os.getpid()}.tmp"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            block = b"\0" * 65536
            for _ in range(RESERVE_BYTES // len(block)):
                os.write(fd, block)  # written, not truncated: a sparse file would hold no space at all
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except OSError as error:
        log.info("could not set aside the space reserve in %s: %s", data_dir, error)
        temporary.unlink(missing_ok=True)


def release_reserve(data_dir: Path) -> bool:
    """Give up the space reserve; whether there was one."""
    try:
        (data_dir / RESERVE_NAME).unlink()
    except OSError:
        return False
    return True


def build_or_explain(build: Callable[[], T], data_dir: Path, database: Path | None = None) -> T:
    """Run `build` (which opens the data dir). On a full disk give up the space reserve and try once more. A storage
    problem left over is logged in one line and raised as StartupFailure; anything else propagates as it is."""
    with_reserve = False
    while True:
        try:
            return build()
        except Exception as error:
            problem = storage_problem(error, data_dir, database)
            if problem is None:
                raise
        if with_reserve or problem.kind != FULL or not release_reserve(data_dir):
            log.error("cannot start: %s", problem.operator)
            raise StartupFailure(problem.operator)
        with_reserve = True
        log.warning("%s; started with the space reserve: writes answer 503 until space is freed", problem.operator)


# -- start-up -----------------------------------------------------------------------------------------------------
def open_problem(settings: Settings, *, create: bool = True) -> StorageProblem | None:
    """Why the data dir cannot be opened now, or None: reads the secret files (creating missing ones when `create`,
    as serving does; `sidecar check` only looks) and opens the database, creating or migrating it, and reads it."""
    try:
        if create:
            load_secrets(settings)
        else:
            for name in SECRET_FILES:
                with contextlib.suppress(FileNotFoundError):
                    secret_path(settings, name).read_bytes()
        store = Store(settings.database_path)
        try:
            store.generation()
            store.list_rules()
            store.count_users()
        finally:
            store.close()
    except Exception as error:
        problem = storage_problem(error, settings.data_dir, settings.database_path)
        if problem is None:
            raise
        return problem
    return None


def prepare_to_serve(settings: Settings) -> StorageProblem | None:
    """What stops `sidecar serve` from starting, or None. A full disk does not: the space reserve is given up when
    opening needs it, and the server starts to serve what it already knows (a warning says so)."""
    problem = open_problem(settings)
    if problem is not None and problem.kind == FULL and release_reserve(settings.data_dir):
        log.warning("%s; starting with the space reserve", problem.operator)
        problem = open_problem(settings)
    if problem is not None:
        return problem
    later = write_problem(settings.data_dir, settings.database_path)
    if later is not None:
        log.warning("starting, but nothing can be saved until this is fixed: %s", later.operator)
    else:
        keep_reserve(settings.data_dir)
    return None
