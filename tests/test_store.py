"""What is remembered: migrations, file mode, transactions, rules, audit, sessions and cross-process changes."""

from __future__ import annotations

import sqlite3
import stat
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from sidecar.store import SCHEMA, VERSION_POLL_SECONDS, Store


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "sidecar.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    opened = Store(db_path)
    yield opened
    opened.close()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def add_user(store: Store, username: str = "alice") -> None:
    with store.transaction() as db:
        store.insert_user(db, username, email="", name="", password_hash=None, active=True)


# -- migrations and file ----------------------------------------------------------------------------------------


def test_migrations_are_idempotent(db_path: Path) -> None:
    first = Store(db_path)
    with first.transaction() as db:
        first.put_rule(db, "live/*", ["vid_public"])
    first.close()
    second = Store(db_path)
    try:
        assert second.list_rules() == {"live/*": ["vid_public"]}
        with closing(sqlite3.connect(db_path)) as raw:
            assert raw.execute("PRAGMA user_version").fetchone()[0] == len(SCHEMA)
    finally:
        second.close()
    third = Store(db_path)
    third.close()


def test_second_store_on_the_same_file_opens_while_the_first_is_open(store: Store, db_path: Path) -> None:
    other = Store(db_path)
    try:
        assert other.ping()
        assert other.list_rules() == {}
    finally:
        other.close()


def test_database_file_is_private(store: Store, db_path: Path) -> None:
    with store.transaction() as db:
        store.put_rule(db, "live/*", ["vid_public"])
    assert mode(db_path) == 0o600
    for suffix in ("-wal", "-shm"):
        sidecar_file = db_path.with_name(db_path.name + suffix)
        assert sidecar_file.exists(), sidecar_file
        assert mode(sidecar_file) & 0o077 == 0, sidecar_file


def test_world_readable_database_file_is_tightened_on_open(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.touch()
    db_path.chmod(0o644)
    opened = Store(db_path)
    try:
        assert mode(db_path) == 0o600
    finally:
        opened.close()


def test_wal_mode_and_foreign_keys_are_on(store: Store) -> None:
    with store.transaction() as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        with pytest.raises(sqlite3.IntegrityError):
            store.add_membership(db, "nobody", "vid_public")


# -- transactions -----------------------------------------------------------------------------------------------


def test_exception_inside_a_transaction_leaves_no_partial_change(store: Store) -> None:
    with store.transaction() as db:
        store.put_rule(db, "keep/*", ["vid_public"])
    with pytest.raises(RuntimeError, match="boom"), store.transaction() as db:
        store.put_rule(db, "live/*", ["vid_public"])
        store.put_rule(db, "keep/*", ["vid_changed"])
        store.audit(db, "alice", "rule.set", "live/*")
        raise RuntimeError("boom")
    assert store.list_rules() == {"keep/*": ["vid_public"]}
    assert store.list_audit() == []


def test_failed_statement_rolls_back_the_earlier_ones(store: Store) -> None:
    with pytest.raises(sqlite3.IntegrityError), store.transaction() as db:
        store.insert_group(db, "vid_public")
        store.insert_user(db, "alice", email="", name="", password_hash=None, active=True)
        store.insert_user(db, "alice", email="", name="", password_hash=None, active=True)
    assert store.get_user("alice") is None
    assert not store.group_exists("vid_public")


def test_store_is_usable_after_a_rolled_back_transaction(store: Store) -> None:
    with pytest.raises(ValueError), store.transaction():
        raise ValueError
    with store.transaction() as db:
        store.put_rule(db, "live/*", ["vid_public"])
    assert store.list_rules() == {"live/*": ["vid_public"]}


def test_rolled_back_change_is_invisible_to_a_second_store(store: Store, db_path: Path) -> None:
    other = Store(db_path)
    try:
        with pytest.raises(RuntimeError), store.transaction() as db:
            store.put_rule(db, "live/*", ["vid_public"])
            raise RuntimeError
        assert other.list_rules() == {}
    finally:
        other.close()


# -- rules ------------------------------------------------------------------------------------------------------


def test_rules_put_list_delete(store: Store) -> None:
    with store.transaction() as db:
        store.put_rule(db, "live/**", ["vid_public", "vid_b", "vid_public"])
        store.put_rule(db, "cams/*", ["vid_private"])
    assert store.list_rules() == {"cams/*": ["vid_private"], "live/**": ["vid_b", "vid_public"]}
    with store.transaction() as db:
        store.put_rule(db, "live/**", ["vid_other"])
    assert store.list_rules()["live/**"] == ["vid_other"]
    with store.transaction() as db:
        assert store.delete_rule(db, "live/**") is True
        assert store.delete_rule(db, "live/**") is False
        assert store.delete_rule(db, "nothing/*") is False
    assert store.list_rules() == {"cams/*": ["vid_private"]}


def test_rule_pattern_is_stored_verbatim(store: Store) -> None:
    with store.transaction() as db:
        store.put_rule(db, "live/%'; DROP TABLE rules; --", ["vid_public"])
    assert list(store.list_rules()) == ["live/%'; DROP TABLE rules; --"]


# -- audit ------------------------------------------------------------------------------------------------------


def test_audit_insert_and_list_with_action_filter(store: Store) -> None:
    before = time.time()
    with store.transaction() as db:
        store.audit(db, "alice", "rule.set", "live/*", {"groups": ["vid_public"]})
        store.audit(db, "bob", "group.add", "carol", {"group": "vid_private"})
        store.audit(db, "alice", "rule.set", "cams/*")
    events = store.list_audit()
    assert [event.target for event in events] == ["cams/*", "carol", "live/*"]
    assert events[0].ts >= before
    assert events[-1].detail == {"groups": ["vid_public"]}
    assert events[0].detail == {}
    only_rules = store.list_audit(action="rule.set")
    assert [(event.actor, event.target) for event in only_rules] == [("alice", "cams/*"), ("alice", "live/*")]
    assert store.list_audit(action="nothing") == []
    assert [event.target for event in store.list_audit(limit=1)] == ["cams/*"]


def test_audit_action_filter_is_exact_not_a_pattern(store: Store) -> None:
    with store.transaction() as db:
        store.audit(db, "alice", "rule.set", "a")
        store.audit(db, "alice", "rule.delete", "b")
    assert store.list_audit(action="rule.%") == []
    assert store.list_audit(action="rule.set' OR '1'='1") == []


# -- sessions ---------------------------------------------------------------------------------------------------


def test_expired_session_has_no_user(store: Store) -> None:
    add_user(store)
    now = time.time()
    with store.transaction() as db:
        store.create_session(db, "expired", "alice", now - 1)
        store.create_session(db, "live", "alice", now + 3600)
    assert store.session_user("expired", now) is None
    assert store.session_user("live", now) == "alice"
    assert store.session_user("live", now + 3601) is None
    assert store.session_user("unknown", now) is None


def test_creating_a_session_purges_expired_ones(store: Store) -> None:
    add_user(store)
    now = time.time()
    with store.transaction() as db:
        store.create_session(db, "old", "alice", now - 10)
    with store.transaction() as db:
        store.create_session(db, "new", "alice", now + 60)
        remaining = {row[0] for row in db.execute("SELECT token_hash FROM sessions")}
    assert remaining == {"new"}


def test_deleting_sessions(store: Store) -> None:
    add_user(store)
    add_user(store, "bob")
    later = time.time() + 3600
    with store.transaction() as db:
        for token in ("a1", "a2", "a3"):
            store.create_session(db, token, "alice", later)
        store.create_session(db, "b1", "bob", later)
    with store.transaction() as db:
        assert store.delete_session(db, "a1") == "alice"
        assert store.delete_session(db, "a1") is None
        assert store.delete_user_sessions(db, "alice", keep="a2") == 1
    now = time.time()
    assert store.session_user("a2", now) == "alice"
    assert store.session_user("a3", now) is None
    assert store.session_user("b1", now) == "bob"


# -- another process --------------------------------------------------------------------------------------------


def test_generation_changes_when_a_second_store_commits(store: Store, db_path: Path) -> None:
    other = Store(db_path)
    try:
        before = store.generation()
        assert store.generation() == before
        with other.transaction() as db:
            other.put_rule(db, "live/*", ["vid_public"])
        time.sleep(VERSION_POLL_SECONDS * 2)
        after = store.generation()
        assert after != before
        assert store.list_rules() == {"live/*": ["vid_public"]}
        with other.transaction() as db:
            other.audit(db, "cli", "rule.set", "x")
        time.sleep(VERSION_POLL_SECONDS * 2)
        assert store.generation() != after
    finally:
        other.close()


def test_generation_is_unchanged_by_a_rolled_back_change_elsewhere(store: Store, db_path: Path) -> None:
    other = Store(db_path)
    try:
        before = store.generation()
        with pytest.raises(RuntimeError), other.transaction() as db:
            other.put_rule(db, "live/*", ["vid_public"])
            raise RuntimeError
        assert store.generation() == before
    finally:
        other.close()


def test_the_session_log_written_elsewhere_leaves_the_generation_alone(store: Store, db_path: Path) -> None:
    """The server writes remembered MediaMTX sessions through a second connection many times a second; that
    must not look like a configuration change to its own caches."""
    other = Store(db_path)
    try:
        before = store.generation()
        other.remember_session("s1", "bob", ["vid_public"], "live/cam1", "read", "rtsp")
        time.sleep(VERSION_POLL_SECONDS * 2)
        assert store.generation() == before
        assert [row["id"] for row in store.media_sessions()] == ["s1"]
        with other.transaction() as db:
            other.put_rule(db, "live/*", ["vid_public"])
        time.sleep(VERSION_POLL_SECONDS * 2)
        assert store.generation() != before
    finally:
        other.close()


# -- meta -------------------------------------------------------------------------------------------------------


def test_meta_set_get_overwrite(store: Store) -> None:
    assert store.get_meta("k") is None
    with store.transaction() as db:
        store.set_meta(db, "k", "1")
        store.set_meta(db, "k", "2")
    assert store.get_meta("k") == "2"


def test_generation_is_read_from_sqlite_at_most_once_per_poll_interval(
    store: Store, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One callback consults several caches; they share one PRAGMA read, and the next interval sees the change."""
    clock = [1000.0]
    monkeypatch.setattr("sidecar.store.time.monotonic", lambda: clock[0])
    other = Store(db_path)
    try:
        before = store.generation()
        with other.transaction() as db:
            other.put_rule(db, "live/*", ["vid_public"])
        clock[0] += VERSION_POLL_SECONDS / 2
        assert store.generation() == before  # within the interval: the value already read
        clock[0] += VERSION_POLL_SECONDS
        assert store.generation() != before
    finally:
        other.close()


def test_the_generation_moves_for_other_connections_changes_only(tmp_path: Path) -> None:
    """Caches follow the generation to learn of another process's changes; this connection's own changes are
    applied by whoever makes them, so they must not empty every cache of the process."""
    import time as clock

    own, other = Store(tmp_path / "g.db"), Store(tmp_path / "g.db")
    try:
        before = own.generation()
        with own.transaction() as db:
            own.put_rule(db, "live/**", ["vid_public"])
        clock.sleep(0.02)  # past the polling interval
        assert own.generation() == before
        with other.transaction() as db:
            other.put_rule(db, "live/private", ["vid_private"])
        clock.sleep(0.02)
        assert own.generation() == before + 1
        with own.transaction() as db:
            own.delete_rule(db, "live/**")
        clock.sleep(0.02)
        assert own.generation() == before + 1
    finally:
        own.close()
        other.close()
