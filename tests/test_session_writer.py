"""Remembered MediaMTX sessions: batched through their own connection, never lost (an explicit flush writes
everything, a failed write keeps the rows queued), with the write-ahead log checkpointed on a thread of its own."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar import session_writer
from sidecar.session_writer import FLUSH_DELAY, SessionWriter
from sidecar.store import SessionRow, Store


def row(session_id: str) -> SessionRow:
    return (session_id, "bob", ["vid_public"], "live/cam1", "read", "rtsp", "user", time.time())


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "sidecar.db")
    yield opened
    opened.close()


@pytest.fixture
def writer(store: Store) -> Iterator[SessionWriter]:
    opened = SessionWriter(store.path)
    yield opened
    opened.close()


def stored(store: Store) -> list[str]:
    return [found["id"] for found in store.media_sessions()]


def failing(self: Store, sessions: list[SessionRow]) -> None:
    raise sqlite3.OperationalError("database is locked")


async def test_rows_wait_for_one_batch(store: Store, writer: SessionWriter, monkeypatch: pytest.MonkeyPatch) -> None:
    batches: list[int] = []
    original = Store.remember_sessions

    def spy(self: Store, sessions: list[SessionRow]) -> None:
        batches.append(len(sessions))
        original(self, sessions)

    monkeypatch.setattr(Store, "remember_sessions", spy)
    for number in range(5):
        writer.add(row(f"s{number}"))
    assert stored(store) == []  # the answer to MediaMTX did not wait for SQLite
    deadline = time.monotonic() + FLUSH_DELAY + 5
    while len(stored(store)) < 5:
        assert time.monotonic() < deadline, "the batch was not written"
        await asyncio.sleep(0.01)
    assert stored(store) == [f"s{number}" for number in range(5)]
    assert batches == [5]


async def test_flush_writes_everything_waiting_at_once(store: Store, writer: SessionWriter) -> None:
    writer.add(row("a"))
    writer.add(row("b"))
    writer.flush()
    assert stored(store) == ["a", "b"]


def test_without_an_event_loop_rows_are_written_at_once(store: Store, writer: SessionWriter) -> None:
    writer.add(row("cli"))
    assert stored(store) == ["cli"]


async def test_a_failed_write_keeps_the_rows_for_the_next_flush(
    store: Store, writer: SessionWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Store.remember_sessions
    monkeypatch.setattr(Store, "remember_sessions", failing)
    writer.add(row("first"))
    with pytest.raises(sqlite3.OperationalError):
        writer.flush()
    writer.add(row("second"))
    monkeypatch.setattr(Store, "remember_sessions", original)
    writer.flush()
    assert stored(store) == ["first", "second"]  # nothing lost, order kept


async def test_a_failed_batch_is_logged_not_raised_into_the_loop(
    store: Store, writer: SessionWriter, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    original = Store.remember_sessions
    monkeypatch.setattr(Store, "remember_sessions", failing)
    writer.add(row("kept"))
    deadline = time.monotonic() + FLUSH_DELAY + 5
    while "could not write remembered MediaMTX sessions" not in caplog.text:
        assert time.monotonic() < deadline, "the failed batch was not logged"
        await asyncio.sleep(0.01)
    monkeypatch.setattr(Store, "remember_sessions", original)
    writer.flush()
    assert stored(store) == ["kept"]


async def test_the_write_ahead_log_is_checkpointed_on_another_thread(
    store: Store, writer: SessionWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_writer, "CHECKPOINT_INTERVAL", 0.01)
    threads: list[int] = []
    original = Store.checkpoint

    def spy(self: Store) -> None:
        threads.append(threading.get_ident())
        original(self)

    monkeypatch.setattr(Store, "checkpoint", spy)
    writer.add(row("a"))  # the first row seen inside a running loop starts the checkpoints
    deadline = time.monotonic() + 5
    while not threads:
        assert time.monotonic() < deadline, "no checkpoint ran"
        await asyncio.sleep(0.01)
    assert threading.get_ident() not in threads


def test_the_writers_own_commits_never_checkpoint(store: Store, writer: SessionWriter) -> None:
    """A commit on the loop's connection must not copy the log into the database (and fsync) itself."""
    for number in range(3000):  # far past SQLite's default of 1000 pages before an automatic checkpoint
        writer.add(row(f"s{number:05d}"))
    raw = sqlite3.connect(store.path)
    try:
        busy, frames, checkpointed = raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        raw.close()
    assert frames > 1000  # everything the writer committed was still only in the log
    assert checkpointed == frames


def test_close_writes_what_is_waiting_and_stops_the_checkpoints(store: Store) -> None:
    writer = SessionWriter(store.path)

    async def serve() -> None:
        writer.add(row("last"))  # inside a loop: queued for the next batch

    asyncio.run(serve())
    writer.close()
    assert stored(store) == ["last"]
    assert not any(thread.name == "sidecar-checkpoint" for thread in threading.enumerate())
