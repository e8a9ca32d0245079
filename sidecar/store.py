"""What is remembered: one SQLite (WAL) database with one writer connection; every change is one transaction."""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = [
    """
    CREATE TABLE rules (
        pattern TEXT PRIMARY KEY,
        groups TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE users (
        username TEXT PRIMARY KEY,
        email TEXT NOT NULL DEFAULT '',
        name TEXT NOT NULL DEFAULT '',
        password_hash TEXT,
        is_active INTEGER NOT NULL DEFAULT 1,
        created_at REAL NOT NULL
    );
    CREATE TABLE groups (
        name TEXT PRIMARY KEY,
        created_at REAL NOT NULL
    );
    CREATE TABLE memberships (
        username TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
        group_name TEXT NOT NULL REFERENCES groups(name) ON DELETE CASCADE,
        PRIMARY KEY (username, group_name)
    );
    CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        username TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX sessions_user ON sessions(username);
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    """
    CREATE TABLE signing_keys (
        kid TEXT PRIMARY KEY,
        private_jwk TEXT NOT NULL,
        created_at REAL NOT NULL,
        sign_from REAL NOT NULL,
        retire_at REAL
    );
    CREATE TABLE publishers (
        name TEXT PRIMARY KEY,
        pattern TEXT NOT NULL,
        secret_hash TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE revocations (
        username TEXT PRIMARY KEY,
        before REAL NOT NULL
    );
    CREATE TABLE media_sessions (
        id TEXT PRIMARY KEY,
        username TEXT NOT NULL,
        groups TEXT NOT NULL,
        path TEXT NOT NULL,
        action TEXT NOT NULL,
        protocol TEXT NOT NULL,
        allowed_at REAL NOT NULL
    );
    CREATE INDEX media_sessions_user ON media_sessions(username);
    """,
    """
    ALTER TABLE media_sessions ADD COLUMN kind TEXT NOT NULL DEFAULT 'user';
    """,
    """
    CREATE TABLE share_links (
        id TEXT PRIMARY KEY,
        secret_hash TEXT NOT NULL UNIQUE,
        path TEXT NOT NULL,
        groups TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL,
        revoked_at REAL,
        uses INTEGER NOT NULL DEFAULT 0,
        last_used_at REAL
    );
    CREATE INDEX share_links_creator ON share_links(created_by);
    """,
    """
    CREATE TABLE access_requests (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        username TEXT NOT NULL,
        email TEXT NOT NULL,
        name TEXT NOT NULL,
        org TEXT NOT NULL,
        reason TEXT NOT NULL,
        requested_group TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL DEFAULT 'pending',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        decided_by TEXT NOT NULL DEFAULT '',
        decided_at REAL,
        message TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX access_requests_status ON access_requests(status);
    CREATE TABLE password_links (
        secret_hash TEXT PRIMARY KEY,
        username TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        used_at REAL
    );
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        recipient TEXT NOT NULL,
        subject TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        sent_at REAL,
        last_error TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX outbox_pending ON outbox(sent_at, next_attempt_at);
    """,
    """
    CREATE TABLE review_links (
        secret_hash TEXT PRIMARY KEY,
        request_id INTEGER NOT NULL,
        recipient TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        used_at REAL,
        used_by TEXT NOT NULL DEFAULT ''
    );
    ALTER TABLE access_requests ADD COLUMN user_created INTEGER NOT NULL DEFAULT 0;
    """,
    """
    CREATE TABLE issued_tokens (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        digest TEXT NOT NULL UNIQUE,
        kid TEXT NOT NULL,
        claims TEXT NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX issued_tokens_expiry ON issued_tokens(expires_at);
    INSERT INTO meta(key, value) VALUES ('generation', '0');
    """,
    """
    ALTER TABLE access_requests ADD COLUMN email_confirmed INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE confirm_links (
        secret_hash TEXT PRIMARY KEY,
        request_id INTEGER NOT NULL,
        email TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        used_at REAL
    );
    CREATE INDEX confirm_links_email ON confirm_links(email, created_at);
    """,
    """
    ALTER TABLE media_sessions ADD COLUMN seen_at REAL NOT NULL DEFAULT 0;
    ALTER TABLE media_sessions ADD COLUMN kick_reason TEXT;
    ALTER TABLE media_sessions ADD COLUMN kick_since REAL;
    ALTER TABLE media_sessions ADD COLUMN kick_attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE media_sessions ADD COLUMN kick_next_at REAL;
    ALTER TABLE media_sessions ADD COLUMN kick_error TEXT NOT NULL DEFAULT '';
    CREATE INDEX media_sessions_kicks ON media_sessions(kick_next_at) WHERE kick_reason IS NOT NULL;
    """,
    # An approval's secret claim, given to the account it creates, so its retry adopts that account (and no other).
    """
    ALTER TABLE access_requests ADD COLUMN claim TEXT NOT NULL DEFAULT '';
    ALTER TABLE users ADD COLUMN created_for TEXT NOT NULL DEFAULT '';
    """,
    # Which running server is approving a request: one that is no longer running cannot finish it.
    """
    ALTER TABLE access_requests ADD COLUMN approving_instance TEXT NOT NULL DEFAULT '';
    """,
    # A group's members counted without reading everyone's (a rule or membership change looks its group up).
    """
    CREATE INDEX memberships_group ON memberships(group_name);
    """,
]


VERSION_POLL_SECONDS = 0.01
# (id, username, groups, path, action, protocol, kind, allowed_at); kind is user, publisher or service
SessionRow = tuple[str, str, list[str], str, str, str, str, float]


@dataclass(frozen=True)
class AuditEvent:
    id: int
    ts: float
    actor: str
    action: str
    target: str
    detail: dict[str, Any]


class Store:
    """The single home of SQL. Callers get plain Python values, never cursors."""

    def __init__(self, path: Path, *, autocheckpoint: bool = True) -> None:
        """`autocheckpoint=False` for a connection that commits often on the event loop: SQLite would otherwise
        copy the write-ahead log into the database (and fsync) inside one of its commits; `checkpoint()` on
        another connection, on a thread, does that instead."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)  # password hashes and sessions live here; WAL files inherit the mode
        path.chmod(0o600)
        self.path = path
        self._lock = threading.RLock()
        self._data_version, self._generation, self._version_read_at = -1, 0, -math.inf
        self._own_changes = 0  # generation steps this connection made itself (see `generation`)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA synchronous=NORMAL")
        if not autocheckpoint:
            self._db.execute("PRAGMA wal_autocheckpoint=0")
        self._migrate()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _migrate(self) -> None:
        with self.transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(SCHEMA[version:], start=version + 1):
                for statement in script.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version={number}")

    @contextmanager
    def transaction(self, *, invalidates: bool = True) -> Iterator[sqlite3.Connection]:
        """One atomic change; concurrent writers (a CLI beside the server) wait on SQLite's lock.

        `invalidates=False` only for writes no cache depends on (the session log): every other change moves the
        generation on, which is how another process learns that its caches are stale.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                if invalidates:
                    self._db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            if invalidates:
                self._generation += 1
                self._own_changes += 1

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def checkpoint(self) -> None:
        """Copy the write-ahead log into the database without waiting for readers or writers (PASSIVE)."""
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def ping(self) -> bool:
        return bool(self._read("SELECT 1")[0][0] == 1)

    def generation(self) -> int:
        """Moves on when another connection (a CLI run beside the server) commits a change caches depend on.

        This connection's own changes do not move it: whoever makes a change here brings its own cache up to date
        at once (the rule matcher is changed in place, the token issuer reloads), and every other cache of this
        process would otherwise be emptied by every admin write.

        Polled at most once per VERSION_POLL_SECONDS: MediaMTX callbacks arrive by the thousand per second and each
        consults several caches, while another process's change only has to show within that time. SQLite's
        data_version tells cheaply whether anyone else committed; only then is the generation itself read, so the
        server's own session log (written through a connection of its own) does not empty the caches.
        """
        now = time.monotonic()
        if now - self._version_read_at >= VERSION_POLL_SECONDS:
            self._version_read_at = now
            data_version = int(self._read("PRAGMA data_version")[0][0])
            if data_version != self._data_version:
                rows = self._read("SELECT value FROM meta WHERE key = 'generation'")
                self._generation = int(rows[0][0]) if rows else 0
                self._data_version = data_version
        return self._generation - self._own_changes

    # -- path rules -------------------------------------------------------------------------------------------
    def list_rules(self) -> dict[str, list[str]]:
        rows = self._read("SELECT pattern, groups FROM rules ORDER BY pattern")
        return {row["pattern"]: json.loads(row["groups"]) for row in rows}

    def put_rule(self, db: sqlite3.Connection, pattern: str, groups: list[str]) -> None:
        db.execute(
            "INSERT INTO rules(pattern, groups, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT(pattern) DO UPDATE SET groups=excluded.groups, updated_at=excluded.updated_at",
            (pattern, json.dumps(sorted(set(groups))), time.time()),
        )

    def delete_rule(self, db: sqlite3.Connection, pattern: str) -> bool:
        return db.execute("DELETE FROM rules WHERE pattern = ?", (pattern,)).rowcount > 0

    # -- audit ------------------------------------------------------------------------------------------------
    def audit(
        self, db: sqlite3.Connection, actor: str, action: str, target: str, detail: dict[str, Any] | None = None
    ) -> None:
        db.execute(
            "INSERT INTO audit(ts, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
            (time.time(), actor, action, target, json.dumps(detail or {}, sort_keys=True)),
        )

    def list_audit(
        self, limit: int = 100, action: str | None = None, *, actor: str | None = None, target: str | None = None
    ) -> list[AuditEvent]:
        """Newest first; each given filter is an exact match."""
        # The column names are fixed here; only the values come from the caller, as parameters.
        given = (("action", action), ("actor", actor), ("target", target))
        chosen = [(column, value) for column, value in given if value]
        where = " AND ".join(f"{column} = ?" for column, _ in chosen)
        sql = "SELECT * FROM audit" + (f" WHERE {where}" if where else "")  # noqa: S608
        rows = self._read(sql + " ORDER BY id DESC LIMIT ?", (*(value for _, value in chosen), limit))
        return [
            AuditEvent(row["id"], row["ts"], row["actor"], row["action"], row["target"], json.loads(row["detail"]))
            for row in rows
        ]

    # -- local directory --------------------------------------------------------------------------------------
    def get_user(self, username: str) -> sqlite3.Row | None:
        rows = self._read("SELECT * FROM users WHERE username = ?", (username,))
        return rows[0] if rows else None

    def user_groups(self, username: str) -> list[str]:
        rows = self._read("SELECT group_name FROM memberships WHERE username = ? ORDER BY group_name", (username,))
        return [row[0] for row in rows]

    def list_users(self, search: str, limit: int, offset: int) -> tuple[int, list[sqlite3.Row]]:
        like = f"%{search}%"
        where = "WHERE username LIKE ? OR email LIKE ? OR name LIKE ?"
        total = self._read(f"SELECT COUNT(*) FROM users {where}", (like, like, like))[0][0]  # noqa: S608
        rows = self._read(
            f"SELECT * FROM users {where} ORDER BY username LIMIT ? OFFSET ?",  # noqa: S608
            (like, like, like, limit, offset),
        )
        return int(total), rows

    def memberships_for(self, usernames: list[str]) -> dict[str, list[str]]:
        if not usernames:
            return {}
        marks = ",".join("?" for _ in usernames)
        rows = self._read(
            f"SELECT username, group_name FROM memberships WHERE username IN ({marks}) ORDER BY group_name",  # noqa: S608
            tuple(usernames),
        )
        found: dict[str, list[str]] = {name: [] for name in usernames}
        for row in rows:
            found[row[0]].append(row[1])
        return found

    def count_users(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM users")[0][0])

    def list_groups(self) -> list[tuple[str, int]]:
        rows = self._read(
            "SELECT g.name, COUNT(m.username) FROM groups g LEFT JOIN memberships m ON m.group_name = g.name "
            "GROUP BY g.name ORDER BY g.name"
        )
        return [(row[0], int(row[1])) for row in rows]

    def group_member_count(self, name: str) -> int | None:
        """How many members the group has; None when there is no such group (exact name)."""
        rows = self._read(
            "SELECT (SELECT COUNT(*) FROM memberships WHERE group_name = g.name) FROM groups g WHERE g.name = ?",
            (name,),
        )
        return int(rows[0][0]) if rows else None

    def group_exists(self, name: str) -> bool:
        return bool(self._read("SELECT 1 FROM groups WHERE name = ?", (name,)))

    def admin_count(self, admin_groups: list[str]) -> int:
        if not admin_groups:
            return 0
        marks = ",".join("?" for _ in admin_groups)
        sql = (
            "SELECT COUNT(DISTINCT m.username) FROM memberships m JOIN users u ON u.username = m.username "  # noqa: S608 (placeholders only)
            "WHERE u.is_active = 1 AND m.group_name IN (" + marks + ")"
        )
        rows = self._read(sql, tuple(admin_groups))
        return int(rows[0][0])

    # -- local sessions ---------------------------------------------------------------------------------------
    def session_user(self, token_hash: str, now: float) -> str | None:
        rows = self._read("SELECT username FROM sessions WHERE token_hash = ? AND expires_at > ?", (token_hash, now))
        return str(rows[0][0]) if rows else None

    def create_session(self, db: sqlite3.Connection, token_hash: str, username: str, expires_at: float) -> None:
        now = time.time()
        db.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
        db.execute(
            "INSERT INTO sessions(token_hash, username, created_at, expires_at) VALUES (?, ?, ?, ?)",
            (token_hash, username, now, expires_at),
        )

    def delete_session(self, db: sqlite3.Connection, token_hash: str) -> str | None:
        row = db.execute("DELETE FROM sessions WHERE token_hash = ? RETURNING username", (token_hash,)).fetchone()
        return None if row is None else str(row[0])

    def delete_user_sessions(self, db: sqlite3.Connection, username: str, keep: str | None = None) -> int:
        return db.execute("DELETE FROM sessions WHERE username = ? AND token_hash IS NOT ?", (username, keep)).rowcount

    # -- local directory writes -------------------------------------------------------------------------------
    def insert_user(
        self,
        db: sqlite3.Connection,
        username: str,
        *,
        email: str,
        name: str,
        password_hash: str | None,
        active: bool,
        created_for: str = "",
    ) -> None:
        db.execute(
            "INSERT INTO users(username, email, name, password_hash, is_active, created_at, created_for) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (username, email, name, password_hash, int(active), time.time(), created_for),
        )

    def set_password_hash(self, db: sqlite3.Connection, username: str, password_hash: str) -> bool:
        cursor = db.execute("UPDATE users SET password_hash = ? WHERE username = ?", (password_hash, username))
        return cursor.rowcount > 0

    def set_active(self, db: sqlite3.Connection, username: str, active: bool) -> bool:
        return db.execute("UPDATE users SET is_active = ? WHERE username = ?", (int(active), username)).rowcount > 0

    def insert_group(self, db: sqlite3.Connection, name: str) -> bool:
        cursor = db.execute("INSERT OR IGNORE INTO groups(name, created_at) VALUES (?, ?)", (name, time.time()))
        return cursor.rowcount > 0

    def add_membership(self, db: sqlite3.Connection, username: str, group: str) -> bool:
        cursor = db.execute("INSERT OR IGNORE INTO memberships(username, group_name) VALUES (?, ?)", (username, group))
        return cursor.rowcount > 0

    def remove_membership(self, db: sqlite3.Connection, username: str, group: str) -> bool:
        cursor = db.execute("DELETE FROM memberships WHERE username = ? AND group_name = ?", (username, group))
        return cursor.rowcount > 0

    # -- key/value --------------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, db: sqlite3.Connection, key: str, value: str) -> None:
        db.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, value),
        )

    def claim_meta(self, db: sqlite3.Connection, key: str) -> bool:
        """Set `key` once: True for the one transaction that set it, False for every later one."""
        return db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES (?, '1')", (key,)).rowcount > 0

    def delete_meta(self, db: sqlite3.Connection, key: str) -> None:
        db.execute("DELETE FROM meta WHERE key = ?", (key,))

    # -- signing keys -----------------------------------------------------------------------------------------
    def signing_keys(self) -> list[sqlite3.Row]:
        return self._read("SELECT * FROM signing_keys ORDER BY sign_from, created_at")

    def insert_signing_key(
        self, db: sqlite3.Connection, kid: str, private_jwk: str, sign_from: float, created_at: float
    ) -> None:
        db.execute(
            "INSERT INTO signing_keys(kid, private_jwk, created_at, sign_from, retire_at) VALUES (?, ?, ?, ?, NULL)",
            (kid, private_jwk, created_at, sign_from),
        )

    def retire_signing_keys(self, db: sqlite3.Connection, except_kid: str, retire_at: float) -> None:
        db.execute(
            "UPDATE signing_keys SET retire_at = ? WHERE kid != ? AND (retire_at IS NULL OR retire_at > ?)",
            (retire_at, except_kid, retire_at),
        )

    def delete_retired_keys(self, db: sqlite3.Connection, now: float) -> int:
        return db.execute("DELETE FROM signing_keys WHERE retire_at IS NOT NULL AND retire_at <= ?", (now,)).rowcount

    def remember_issued_token(
        self, digest: str, kid: str, claims: str, expires_at: float, purge_before: float | None
    ) -> None:
        """Note a token this sidecar signed (by digest, never the token itself); drop expired ones when asked."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO issued_tokens(digest, kid, claims, expires_at) VALUES (?, ?, ?, ?)",
                (digest, kid, claims, expires_at),
            )
            if purge_before is not None:
                db.execute("DELETE FROM issued_tokens WHERE expires_at <= ?", (purge_before,))

    def issued_tokens_since(self, seq: int, now: float) -> list[tuple[int, str, str, str, float]]:
        """(seq, digest, kid, claims JSON, expires_at) of unexpired tokens noted after `seq`, oldest first."""
        rows = self._read(
            "SELECT seq, digest, kid, claims, expires_at FROM issued_tokens WHERE seq > ? AND expires_at > ? "
            "ORDER BY seq",
            (seq, now),
        )
        return [(row[0], row[1], row[2], row[3], row[4]) for row in rows]

    # -- publisher credentials --------------------------------------------------------------------------------
    def publishers(self) -> list[sqlite3.Row]:
        return self._read("SELECT name, pattern, created_by, created_at FROM publishers ORDER BY name")

    def publisher(self, name: str) -> sqlite3.Row | None:
        rows = self._read("SELECT * FROM publishers WHERE name = ?", (name,))
        return rows[0] if rows else None

    def insert_publisher(
        self, db: sqlite3.Connection, name: str, pattern: str, secret_hash: str, created_by: str
    ) -> bool:
        cursor = db.execute(
            "INSERT OR IGNORE INTO publishers(name, pattern, secret_hash, created_by, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (name, pattern, secret_hash, created_by, time.time()),
        )
        return cursor.rowcount > 0

    def delete_publisher(self, db: sqlite3.Connection, name: str) -> bool:
        return db.execute("DELETE FROM publishers WHERE name = ?", (name,)).rowcount > 0

    # -- revocation -------------------------------------------------------------------------------------------
    def revocations(self) -> dict[str, float]:
        """username -> tokens issued up to this time no longer count."""
        return {row[0]: float(row[1]) for row in self._read("SELECT username, before FROM revocations")}

    def revoke_tokens(self, db: sqlite3.Connection, username: str, before: float) -> None:
        db.execute(
            "INSERT INTO revocations(username, before) VALUES (?, ?) "
            "ON CONFLICT(username) DO UPDATE SET before = max(before, excluded.before)",
            (username, before),
        )

    # -- media sessions the sidecar allowed (for revocation) ---------------------------------------------------
    def remember_sessions(self, sessions: list[SessionRow]) -> None:
        """Store (id, username, groups, path, action, protocol, kind, allowed_at) rows in one transaction."""
        with self.transaction(invalidates=False) as db:
            db.executemany(
                "INSERT INTO media_sessions(id, username, groups, path, action, protocol, kind, allowed_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET username=excluded.username, "
                "groups=excluded.groups, path=excluded.path, action=excluded.action, protocol=excluded.protocol, "
                "kind=excluded.kind",
                [(i, u, json.dumps(sorted(g)), p, a, pr, k, t) for i, u, g, p, a, pr, k, t in sessions],
            )

    def remember_session(
        self,
        session_id: str,
        username: str,
        groups: list[str],
        path: str,
        action: str,
        protocol: str,
        kind: str = "user",
    ) -> None:
        self.remember_sessions([(session_id, username, groups, path, action, protocol, kind, time.time())])

    def media_sessions(self, username: str | None = None) -> list[sqlite3.Row]:
        if username is None:
            return self._read("SELECT * FROM media_sessions ORDER BY allowed_at")
        return self._read("SELECT * FROM media_sessions WHERE username = ? ORDER BY allowed_at", (username,))

    def forget_stale_sessions(self, live: set[str], allowed_before: float) -> int:
        """Forget remembered sessions allowed before `allowed_before` whose id is not in `live`; how many."""
        with self.transaction(invalidates=False) as db:
            old = db.execute("SELECT id FROM media_sessions WHERE allowed_at < ?", (allowed_before,)).fetchall()
            stale = [(row[0],) for row in old if row[0] not in live]
            db.executemany("DELETE FROM media_sessions WHERE id = ?", stale)
        return len(stale)

    def forget_session(self, db: sqlite3.Connection, session_id: str) -> bool:
        return db.execute("DELETE FROM media_sessions WHERE id = ?", (session_id,)).rowcount > 0

    # -- share links ------------------------------------------------------------------------------------------
    # Every column but the secret's digest, which only the lookup by secret ever reads.
    SHARE_LINK_COLUMNS = "id, path, groups, created_by, created_at, expires_at, revoked_at, uses, last_used_at"

    def insert_share_link(
        self,
        db: sqlite3.Connection,
        link_id: str,
        secret_hash: str,
        path: str,
        groups: list[str],
        created_by: str,
        created_at: float,
        expires_at: float | None,
    ) -> None:
        db.execute(
            "INSERT INTO share_links(id, secret_hash, path, groups, created_by, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (link_id, secret_hash, path, json.dumps(sorted(groups)), created_by, created_at, expires_at),
        )

    def share_link(self, link_id: str) -> sqlite3.Row | None:
        rows = self._read(f"SELECT {self.SHARE_LINK_COLUMNS} FROM share_links WHERE id = ?", (link_id,))  # noqa: S608
        return rows[0] if rows else None

    def share_link_by_secret(self, secret_hash: str) -> sqlite3.Row | None:
        sql = f"SELECT {self.SHARE_LINK_COLUMNS} FROM share_links WHERE secret_hash = ?"  # noqa: S608
        rows = self._read(sql, (secret_hash,))
        return rows[0] if rows else None

    def share_links(self, created_by: str | None = None) -> list[sqlite3.Row]:
        """All links (or one creator's), newest first."""
        sql = f"SELECT {self.SHARE_LINK_COLUMNS} FROM share_links"  # noqa: S608
        if created_by is None:
            return self._read(sql + " ORDER BY created_at DESC, id")
        return self._read(sql + " WHERE created_by = ? ORDER BY created_at DESC, id", (created_by,))

    def revoke_share_link(self, db: sqlite3.Connection, link_id: str, at: float) -> bool:
        """Mark the link revoked; False when it was revoked already."""
        cursor = db.execute("UPDATE share_links SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (at, link_id))
        return cursor.rowcount > 0

    def use_share_link(self, db: sqlite3.Connection, link_id: str, at: float) -> int:
        """Count one use; the number of uses so far."""
        row = db.execute(
            "UPDATE share_links SET uses = uses + 1, last_used_at = ? WHERE id = ? RETURNING uses", (at, link_id)
        ).fetchone()
        return 0 if row is None else int(row[0])

    # -- access requests ----------------------------------------------------------------------------------------
    def access_requests(self, limit: int = 200) -> list[sqlite3.Row]:
        """Pending first, then newest first; requests whose email is still being confirmed are not shown."""
        return self._read(
            "SELECT * FROM access_requests WHERE status != 'unconfirmed' "
            "ORDER BY status != 'pending', updated_at DESC, id DESC LIMIT ?",
            (limit,),
        )

    def access_request_in(self, db: sqlite3.Connection, request_id: int) -> sqlite3.Row:
        row: sqlite3.Row = db.execute("SELECT * FROM access_requests WHERE id = ?", (request_id,)).fetchone()
        return row

    def access_request(self, request_id: int) -> sqlite3.Row | None:
        rows = self._read("SELECT * FROM access_requests WHERE id = ?", (request_id,))
        return rows[0] if rows else None

    def same_open_access_request(
        self,
        db: sqlite3.Connection,
        *,
        username: str,
        email: str,
        name: str,
        org: str,
        reason: str,
        requested_group: str,
    ) -> sqlite3.Row | None:
        """An undecided request (confirmed or not) asking exactly this: a resubmission of the same form."""
        row: sqlite3.Row | None = db.execute(
            "SELECT * FROM access_requests WHERE status IN ('unconfirmed', 'pending') AND username = ? AND email = ? "
            "AND name = ? AND org = ? AND reason = ? AND requested_group = ? ORDER BY id LIMIT 1",
            (username, email, name, org, reason, requested_group),
        ).fetchone()
        return row

    def insert_access_request(
        self,
        db: sqlite3.Connection,
        *,
        username: str,
        email: str,
        name: str,
        org: str,
        reason: str,
        requested_group: str,
        status: str,
        now: float,
    ) -> int:
        """A new request; an earlier one is never changed by a later submission (it may be someone else's)."""
        cursor = db.execute(
            "INSERT INTO access_requests(username, email, name, org, reason, requested_group, status, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (username, email, name, org, reason, requested_group, status, now, now),
        )
        return int(cursor.lastrowid or 0)

    def access_request_username(self, db: sqlite3.Connection, request_id: int) -> str:
        row = db.execute("SELECT username FROM access_requests WHERE id = ?", (request_id,)).fetchone()
        return "" if row is None else str(row[0])

    # -- email confirmation links (sent to the requester before admins see a request) --------------------------
    def insert_confirm_link(
        self, db: sqlite3.Connection, secret_hash: str, request_id: int, email: str, now: float, expires_at: float
    ) -> None:
        db.execute(
            "INSERT INTO confirm_links(secret_hash, request_id, email, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
            (secret_hash, request_id, email, now, expires_at),
        )

    def confirm_link_outstanding(self, db: sqlite3.Connection, request_id: int, now: float) -> bool:
        row = db.execute(
            "SELECT 1 FROM confirm_links WHERE request_id = ? AND used_at IS NULL AND expires_at > ? LIMIT 1",
            (request_id, now),
        ).fetchone()
        return row is not None

    def confirm_links_sent(
        self, db: sqlite3.Connection, email: str, since: float, *, username: str | None = None
    ) -> int:
        """Confirmation links mailed to `email` since `since` (for requests naming `username`, when given)."""
        if username is None:
            row = db.execute(
                "SELECT COUNT(*) FROM confirm_links WHERE email = ? AND created_at > ?", (email, since)
            ).fetchone()
        else:
            row = db.execute(
                "SELECT COUNT(*) FROM confirm_links c JOIN access_requests r ON r.id = c.request_id "
                "WHERE c.email = ? AND c.created_at > ? AND r.username = ?",
                (email, since, username),
            ).fetchone()
        return int(row[0])

    def confirm_link_request(self, secret_hash: str, now: float) -> int | None:
        found = self._link_target("confirm_links", secret_hash, now)
        return None if found is None else int(found)

    def use_confirm_link(self, db: sqlite3.Connection, secret_hash: str, now: float) -> int | None:
        """Spend the link and mark its request's email confirmed (unconfirmed -> pending); the request id."""
        found = self._spend_link(db, "confirm_links", secret_hash, now)
        if found is None:
            return None
        request_id = int(found)
        moved = db.execute(
            "UPDATE access_requests SET status = 'pending', email_confirmed = 1, updated_at = ? "
            "WHERE id = ? AND status = 'unconfirmed'",
            (now, request_id),
        ).rowcount
        return request_id if moved else None

    def move_access_request(
        self,
        db: sqlite3.Connection,
        request_id: int,
        before: str,
        after: str,
        *,
        decided_by: str = "",
        decided_at: float | None = None,
        message: str = "",
    ) -> bool:
        """Change the status only if it still is `before`: the step that makes a decision happen once."""
        cursor = db.execute(
            "UPDATE access_requests SET status = ?, decided_by = ?, decided_at = ?, message = ? "
            "WHERE id = ? AND status = ?",
            (after, decided_by, decided_at, message, request_id, before),
        )
        return cursor.rowcount > 0

    def admin_emails(self, admin_groups: list[str]) -> list[str]:
        """Email addresses of active local admins."""
        if not admin_groups:
            return []
        marks = ",".join("?" for _ in admin_groups)
        sql = (
            "SELECT DISTINCT u.email FROM users u JOIN memberships m ON m.username = u.username "  # noqa: S608
            "WHERE u.is_active = 1 AND u.email != '' AND m.group_name IN (" + marks + ") ORDER BY u.email"
        )
        return [str(row[0]) for row in self._read(sql, tuple(admin_groups))]

    def set_request_claim(self, db: sqlite3.Connection, request_id: int, claim: str, instance: str) -> None:
        """The approval's claim (set once, kept by every retry) and the server now approving it."""
        db.execute(
            "UPDATE access_requests SET claim = CASE claim WHEN '' THEN ? ELSE claim END, approving_instance = ? "
            "WHERE id = ?",
            (claim, instance, request_id),
        )

    def mark_user_created(self, db: sqlite3.Connection, request_id: int) -> None:
        """The directory account of this request exists: a retried approval must not create it again."""
        db.execute("UPDATE access_requests SET user_created = 1 WHERE id = ?", (request_id,))

    # -- review links (in the admins' notification emails) ------------------------------------------------------
    def insert_review_link(
        self, db: sqlite3.Connection, secret_hash: str, request_id: int, recipient: str, now: float, expires_at: float
    ) -> None:
        db.execute(
            "INSERT INTO review_links(secret_hash, request_id, recipient, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (secret_hash, request_id, recipient, now, expires_at),
        )

    def review_link_request(self, secret_hash: str, now: float) -> int | None:
        """The request id of an unused, unexpired review link."""
        found = self._link_target("review_links", secret_hash, now)
        return None if found is None else int(found)

    def use_review_link(self, db: sqlite3.Connection, secret_hash: str, by: str, now: float) -> int | None:
        """Spend the link once; its request id, or None when it is unknown, used or expired."""
        found = self._spend_link(db, "review_links", secret_hash, now)
        if found is None:
            return None
        db.execute("UPDATE review_links SET used_by = ? WHERE secret_hash = ?", (by, secret_hash))
        return int(found)

    # -- set-password links -----------------------------------------------------------------------------------
    def insert_password_link(
        self, db: sqlite3.Connection, secret_hash: str, username: str, now: float, expires_at: float
    ) -> None:
        db.execute(
            "INSERT INTO password_links(secret_hash, username, created_at, expires_at) VALUES (?, ?, ?, ?)",
            (secret_hash, username, now, expires_at),
        )

    def password_link_user(self, secret_hash: str, now: float) -> str | None:
        found = self._link_target("password_links", secret_hash, now)
        return None if found is None else str(found)

    def use_password_link(self, db: sqlite3.Connection, secret_hash: str, now: float) -> str | None:
        found = self._spend_link(db, "password_links", secret_hash, now)
        return None if found is None else str(found)

    # -- one-time links (confirmation, review, set-password): unused, unexpired, spent once --------------------
    # The table names are fixed here; only values come from callers, as parameters.
    _LINK_TARGETS = {"confirm_links": "request_id", "review_links": "request_id", "password_links": "username"}

    def _link_target(self, table: str, secret_hash: str, now: float) -> int | str | None:
        target = self._LINK_TARGETS[table]
        sql = f"SELECT {target} FROM {table} WHERE secret_hash = ? AND used_at IS NULL AND expires_at > ?"  # noqa: S608
        rows = self._read(sql, (secret_hash, now))
        return rows[0][0] if rows else None

    def _spend_link(self, db: sqlite3.Connection, table: str, secret_hash: str, now: float) -> int | str | None:
        target = self._LINK_TARGETS[table]
        sql = (
            f"UPDATE {table} SET used_at = ? WHERE secret_hash = ? AND used_at IS NULL AND expires_at > ? "  # noqa: S608
            f"RETURNING {target}"
        )
        row = db.execute(sql, (now, secret_hash, now)).fetchone()
        return None if row is None else row[0]

    # -- remembered sessions: passes off the loop, kicks that wait for MediaMTX, the age limit (revocation.py) ----
    # The session columns a pass reads; `seq` (the rowid) orders and pages them.
    SESSION_FIELDS_READ = (
        "rowid AS seq, id, username, groups, path, action, protocol, kind, allowed_at, seen_at, kick_reason, "
        "kick_since, kick_attempts, kick_error"
    )

    def record_sessions(self, sessions: list[SessionRow]) -> None:
        """`remember_sessions`, and each row's time is also when its session was last heard of (`seen_at`): a
        callback for an id already remembered moves only that. The age limit counts from there."""
        with self.transaction(invalidates=False) as db:
            db.executemany(
                "INSERT INTO media_sessions(id, username, groups, path, action, protocol, kind, allowed_at, seen_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET username=excluded.username, "
                "groups=excluded.groups, path=excluded.path, action=excluded.action, protocol=excluded.protocol, "
                "kind=excluded.kind, seen_at=max(seen_at, excluded.seen_at)",
                [(i, u, json.dumps(sorted(g)), p, a, pr, k, t, t) for i, u, g, p, a, pr, k, t in sessions],
            )

    def session_reader(self) -> sqlite3.Connection:
        """A connection of its own (the caller closes it) for a pass over many remembered sessions on a worker
        thread: neither this store's lock nor the event loop waits while it reads or forgets."""
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    @classmethod
    def media_session_page(
        cls, db: sqlite3.Connection, after: int, limit: int, usernames: list[str] | None = None
    ) -> list[sqlite3.Row]:
        """Up to `limit` remembered sessions (of `usernames` only, when given) stored after `seq` `after`."""
        sql = f"SELECT {cls.SESSION_FIELDS_READ} FROM media_sessions WHERE rowid > ?"  # noqa: S608
        if usernames is None:
            return db.execute(sql + " ORDER BY rowid LIMIT ?", (after, limit)).fetchall()
        marks = ",".join("?" for _ in usernames)
        sql += f" AND username IN ({marks}) ORDER BY rowid LIMIT ?"
        return db.execute(sql, (after, *usernames, limit)).fetchall()

    @staticmethod
    def forget_sessions_in(db: sqlite3.Connection, ids: list[str]) -> int:
        """Forget these remembered sessions in one transaction of `db` (a `session_reader` connection); how many."""
        db.execute("BEGIN IMMEDIATE")
        try:
            count = db.executemany("DELETE FROM media_sessions WHERE id = ?", [(i,) for i in ids]).rowcount
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return max(0, count)

    def defer_kick(
        self, db: sqlite3.Connection, session_id: str, reason: str, error: str, now: float, next_attempt_at: float
    ) -> bool:
        """Keep the session remembered with its kick still to do (its first reason and time kept, attempts counted);
        False when the session is no longer remembered."""
        cursor = db.execute(
            "UPDATE media_sessions SET kick_reason = COALESCE(kick_reason, ?), kick_since = COALESCE(kick_since, ?), "
            "kick_attempts = kick_attempts + 1, kick_next_at = ?, kick_error = ? WHERE id = ?",
            (reason, now, next_attempt_at, error[:500], session_id),
        )
        return cursor.rowcount > 0

    def pending_kicks(
        self, due_by: float | None = None, usernames: list[str] | None = None, limit: int = 200
    ) -> list[sqlite3.Row]:
        """Remembered sessions whose kick waits for MediaMTX, the soonest due first: those due by `due_by` unless it
        is None, those of `usernames` only when given."""
        sql = f"SELECT {self.SESSION_FIELDS_READ} FROM media_sessions WHERE kick_reason IS NOT NULL"  # noqa: S608
        params: list[Any] = []
        if due_by is not None:
            sql += " AND kick_next_at <= ?"
            params.append(due_by)
        if usernames is not None:
            sql += f" AND username IN ({','.join('?' for _ in usernames)})"
            params.extend(usernames)
        return self._read(sql + " ORDER BY kick_next_at LIMIT ?", (*params, limit))

    def pending_kick_summary(self) -> tuple[int, float | None, float | None, str]:
        """(how many kicks wait, since when the oldest one, when the next attempt is due, the latest error)."""
        row = self._read(
            "SELECT COUNT(*), MIN(kick_since), MIN(kick_next_at) FROM media_sessions WHERE kick_reason IS NOT NULL"
        )[0]
        if not row[0]:
            return 0, None, None, ""
        latest = self._read(
            "SELECT kick_error FROM media_sessions WHERE kick_reason IS NOT NULL ORDER BY kick_next_at DESC LIMIT 1"
        )
        return int(row[0]), row[1], row[2], str(latest[0][0]) if latest else ""

    # -- outbox -----------------------------------------------------------------------------------------------
    def enqueue_mail(self, db: sqlite3.Connection, recipient: str, subject: str, body: str, now: float) -> None:
        db.execute(
            "INSERT INTO outbox(recipient, subject, body, created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?)",
            (recipient, subject, body, now, now),
        )

    def pending_mail(self, due_by: float | None, limit: int = 100) -> list[sqlite3.Row]:
        """Unsent mail, oldest first; only what is due by `due_by` unless that is None."""
        if due_by is None:
            return self._read("SELECT * FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT ?", (limit,))
        return self._read(
            "SELECT * FROM outbox WHERE sent_at IS NULL AND next_attempt_at <= ? ORDER BY id LIMIT ?", (due_by, limit)
        )

    def pending_mail_summary(self) -> tuple[int, float | None, str]:
        """(how many messages wait to be sent, since when the oldest one, the latest error)."""
        row = self._read("SELECT COUNT(*), MIN(created_at) FROM outbox WHERE sent_at IS NULL")[0]
        if not row[0]:
            return 0, None, ""
        latest = self._read(
            "SELECT last_error FROM outbox WHERE sent_at IS NULL AND last_error != '' ORDER BY id DESC LIMIT 1"
        )
        return int(row[0]), row[1], str(latest[0][0]) if latest else ""

    def mail_sent(self, db: sqlite3.Connection, mail_id: int, now: float) -> None:
        db.execute(
            "UPDATE outbox SET sent_at = ?, attempts = attempts + 1, last_error = '' WHERE id = ?", (now, mail_id)
        )

    def mail_given_up(self, db: sqlite3.Connection, mail_id: int, error: str, now: float) -> None:
        """No longer pending (it can never be sent); `last_error` says why."""
        db.execute("UPDATE outbox SET sent_at = ?, last_error = ? WHERE id = ?", (now, error[:500], mail_id))

    def mail_failed(self, db: sqlite3.Connection, mail_id: int, error: str, next_attempt_at: float) -> None:
        db.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? WHERE id = ?",
            (error[:500], next_attempt_at, mail_id),
        )
