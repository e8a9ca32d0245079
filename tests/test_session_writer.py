"""Remembered MediaMTX sessions: batched through their own connection, never lost (an explicit flush writes
everything, a failed write keeps the rows queued and is tried again on its own with backoff, a backlog goes in chunks),
held in bounded memory (the oldest dropped, counted and logged), with the write-ahead log checkpointed on a thread of
its own."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar import session_writer
from sidecar.pending import pending_work
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
    original = Store.record_sessions

    def spy(self: Store, sessions: list[SessionRow]) -> None:
        batches.append(len(sessions))
        original(self, sessions)

    monkeypatch.setattr(Store, "record_sessions", spy)
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
    original = Store.record_sessions
    monkeypatch.setattr(Store, "record_sessions", failing)
    writer.add(row("first"))
    with pytest.raises(sqlite3.OperationalError):
        writer.flush()
    writer.add(row("second"))
    monkeypatch.setattr(Store, "record_sessions", original)
    writer.flush()
    assert stored(store) == ["first", "second"]  # nothing lost, order kept


async def test_a_failed_batch_is_logged_not_raised_into_the_loop(
    store: Store, writer: SessionWriter, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    original = Store.record_sessions
    monkeypatch.setattr(Store, "record_sessions", failing)
    writer.add(row("kept"))
    deadline = time.monotonic() + FLUSH_DELAY + 5
    while "could not write remembered MediaMTX sessions" not in caplog.text:
        assert time.monotonic() < deadline, "the failed batch was not logged"
        await asyncio.sleep(0.01)
    monkeypatch.setattr(Store, "record_sessions", original)
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


async def test_a_failed_batch_is_tried_again_on_its_own_with_backoff(
    store: Store, writer: SessionWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_writer, "RETRY_FIRST", 0.02)
    monkeypatch.setattr(session_writer, "RETRY_MAX", 0.08)
    original = Store.record_sessions
    attempts: list[int] = []

    def full(self: Store, sessions: list[SessionRow]) -> None:
        attempts.append(len(sessions))
        if len(attempts) <= 4:
            raise sqlite3.OperationalError("database or disk is full")
        original(self, sessions)

    monkeypatch.setattr(Store, "record_sessions", full)
    writer.add(row("a"))
    for number in range(50):  # more callbacks while the disk is full do not write (or try to) each time
        writer.add(row(f"b{number}"))
    deadline = time.monotonic() + 5
    while len(stored(store)) < 51:
        assert time.monotonic() < deadline, "the held rows were not written on their own"
        await asyncio.sleep(0.01)
    assert stored(store) == ["a", *(f"b{number}" for number in range(50))]
    assert len(attempts) == 5  # four failures, each followed by one retry after its backoff, whatever else came
    assert writer.backlog == 0 and writer.failing_since is None and writer.last_error == ""


async def test_a_backlog_is_written_a_chunk_per_turn_of_the_loop(
    store: Store, writer: SessionWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_writer, "RETRY_FIRST", 0.01)
    monkeypatch.setattr(session_writer, "CHUNK", 10)
    original = Store.record_sessions
    batches: list[int] = []
    broken = {"yes": True}

    def spy(self: Store, sessions: list[SessionRow]) -> None:
        if broken["yes"]:
            raise sqlite3.OperationalError("database is locked")
        batches.append(len(sessions))
        original(self, sessions)

    monkeypatch.setattr(Store, "record_sessions", spy)
    for number in range(35):
        writer.add(row(f"s{number:02d}"))
    await asyncio.sleep(session_writer.FLUSH_DELAY + 0.02)
    broken["yes"] = False
    deadline = time.monotonic() + 5
    while writer.backlog:
        assert time.monotonic() < deadline, "the backlog was not written"
        await asyncio.sleep(0.01)
    assert batches == [10, 10, 10, 5]  # no one transaction of the whole backlog on the loop
    assert stored(store) == [f"s{number:02d}" for number in range(35)]


async def test_memory_is_bounded_the_oldest_rows_dropped_with_a_counted_warning(
    store: Store, writer: SessionWriter, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(session_writer, "MAX_PENDING", 10)
    original = Store.record_sessions
    monkeypatch.setattr(Store, "record_sessions", failing)
    for number in range(25):
        writer.add(row(f"s{number:02d}"))
    assert writer.backlog == 10 and writer.dropped == 15
    drops = [record for record in caplog.records if "dropped the" in record.getMessage()]
    assert len(drops) == 1  # one warning a minute, not one per row
    assert drops[0].levelno == logging.WARNING
    monkeypatch.setattr(Store, "record_sessions", original)
    writer.flush()
    assert stored(store) == [f"s{number:02d}" for number in range(15, 25)]  # the newest were kept, in order
    (line,) = pending_work(store, writer)
    assert line.startswith("15 remembered MediaMTX sessions were dropped")


async def test_pending_work_says_how_many_rows_wait_since_when(
    store: Store, writer: SessionWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Store, "record_sessions", failing)
    writer.add(row("a"))
    writer.add(row("b"))
    with pytest.raises(sqlite3.OperationalError):
        writer.flush()
    (line,) = pending_work(store, writer)
    assert line.startswith("2 remembered MediaMTX sessions wait to be written since ")
    assert line.endswith("(last error: database is locked)")


def test_close_reports_rows_it_cannot_write_instead_of_raising(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    writer = SessionWriter(store.path)
    monkeypatch.setattr(Store, "record_sessions", failing)

    async def serve() -> None:
        writer.add(row("lost"))

    asyncio.run(serve())
    writer.close()
    assert "1 remembered MediaMTX sessions could not be written before the stop" in caplog.text
