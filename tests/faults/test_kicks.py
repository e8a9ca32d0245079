"""Kicks, remembered sessions and their log under faults: a kick MediaMTX could not carry out (refused, 500, hanging,
an HTML page instead of its API) is done once MediaMTX is back, survives a restart, is retried by a second share-link
revoke; re-checks over 200,000 remembered sessions leave the event loop free and many changes at once make one
re-check; remembered sessions are forgotten without MediaMTX's API too; a failed batch of the session log is written
later on its own, without any hook."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from sidecar import revocation, session_writer
from sidecar.pending import pending_work
from sidecar.settings import Settings
from sidecar.store import AuditEvent, SessionRow, Store
from tests.fake_mediamtx import FakeMediaMTX
from tests.helpers import count_lookups
from tests.mediamtx_env import KEY, MediaMTXEnv, open_mediamtx_env

pytestmark = pytest.mark.usefixtures("cheap_bcrypt")

TIMEOUT = 0.5  # SIDECAR_UPSTREAM_TIMEOUT here: a hanging MediaMTX costs this much per call
FAULTS = ("refused", "500", "timeout", "html", "404")
HTML = "<!doctype html><html><head><title>Welcome</title></head><body>It works!</body></html>"


class Faulty(httpx.AsyncBaseTransport):
    """The fake MediaMTX, or (while `fault` is set) MediaMTX broken in one of the ways seen in the field: the port
    refuses connections, every call fails with 500, nothing answers, or the URL leads to some web server's page (or
    its 404 for everything)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.fault: str | None = None
        self.faulted = 0  # requests that met a fault

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        fault = self.fault
        if fault is None:
            return await self.inner.handle_async_request(request)
        self.faulted += 1
        if fault == "refused":
            raise httpx.ConnectError("connection refused", request=request)
        if fault == "500":
            return httpx.Response(500, json={"status": "error", "error": "terminated"}, request=request)
        if fault == "timeout":
            await asyncio.sleep(TIMEOUT * 4)  # the call's own deadline ends this first
            raise httpx.ReadTimeout("timed out", request=request)
        if fault == "404":  # a wrong URL (another server, a missing path prefix) knows none of MediaMTX's routes
            return httpx.Response(404, text="404 page not found", request=request)
        assert fault == "html", fault
        return httpx.Response(200, html=HTML, request=request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass(frozen=True)
class Playing:
    kind: str
    id: str


@dataclass
class Env(MediaMTXEnv):
    transport: Faulty

    def play(self, username: str = "bob", path: str = "live/cam1") -> Playing:
        """A viewer starts playing over RTSP: MediaMTX asks the callback (with the session id), then lists it."""
        session_id = str(uuid.uuid4())
        response = self.auth(path=path, protocol="rtsp", id=session_id, token=self.token(path, username))
        assert response.status_code == 200, response.text
        self.fake.add_session("rtspsessions", id=session_id, path=path)
        return Playing("rtspsessions", session_id)

    def remembered(self) -> set[str]:
        self.services.media_auth.sessions.flush()
        return {row["id"] for row in self.services.store.media_sessions()}

    def kick_events(self, session: Playing) -> list[AuditEvent]:
        events = self.services.store.list_audit(limit=1000, action="session.kick")
        return sorted((event for event in events if event.detail["session"] == session.id), key=lambda e: e.id)

    def wait_until(self, what: str, done: Callable[[], bool], seconds: float = 15) -> None:
        deadline = time.monotonic() + seconds
        while not done():
            assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
            time.sleep(0.02)

    def settle_long(self, seconds: float = 120) -> None:
        """Wait for the background re-checks, however long they take (`settle` allows 5 s)."""

        async def idle() -> None:
            await asyncio.wait_for(self.services.revoker.idle(), seconds)

        self.client.portal.call(idle)

    def pending_work(self) -> list[str]:
        return pending_work(self.services.store, self.services.media_auth.sessions)


def faulty(fake: FakeMediaMTX, settings: Settings) -> Faulty:
    return Faulty(httpx.ASGITransport(app=fake.app))


def opening(data_dir: Path, transport: Callable[[FakeMediaMTX, Settings], Faulty] = faulty, **kwargs: Any) -> Any:
    return open_mediamtx_env(Env, data_dir, transport, upstream_timeout=TIMEOUT, **kwargs)


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kicks that wait are tried again after 50 ms, doubling up to 200 ms (a minute at most in production)."""
    monkeypatch.setattr(revocation, "KICK_RETRY_FIRST", 0.05)
    monkeypatch.setattr(revocation, "KICK_RETRY_MAX", 0.2)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with opening(tmp_path / "data") as found:
        yield found


def remove_bob_from_vid_public(env: Env) -> None:
    response = env.client.delete("/api/v1/users/bob/groups/vid_public", headers=env.sign_in())
    assert response.status_code == 200 and response.json()["changed"] is True


# --- item 2: a kick MediaMTX could not carry out is done once it is back ----------------------------------------------


@pytest.mark.parametrize("fault", FAULTS)
def test_a_revoked_viewer_is_kicked_once_mediamtx_is_back(quick_retries: None, env: Env, fault: str) -> None:
    bystander = env.play("admin")
    session = env.play("bob")
    env.transport.fault = fault
    remove_bob_from_vid_public(env)
    env.settle()
    assert env.transport.faulted > 0  # MediaMTX was asked, and failed
    # Nothing happened in MediaMTX, so nothing is forgotten: the session waits for its kick, and says so.
    assert session.id in env.fake.session_ids("rtspsessions")
    assert session.id in env.remembered()
    (first,) = env.kick_events(session)
    assert first.detail["kicked"] is False and first.detail["pending"] is True
    assert first.detail["error"]
    (line,) = env.pending_work()
    assert line.startswith("1 kick waits for MediaMTX since ")

    env.transport.fault = None  # MediaMTX is back: the retry, in the background, kicks bob
    env.wait_until("the waiting kick was done", lambda: (session.kind, session.id) in env.fake.kicked)
    env.wait_until("the kicked session was forgotten", lambda: session.id not in env.remembered())
    assert env.fake.kicked == [(session.kind, session.id)]  # once, and nobody else
    assert bystander.id in env.fake.session_ids("rtspsessions")
    first, done = env.kick_events(session)
    assert done.detail["kicked"] is True and done.detail["attempts"] >= 2
    assert done.detail["reason"] == first.detail["reason"] and "vid_public" in done.detail["reason"]
    assert env.pending_work() == []


def test_a_session_mediamtx_says_is_gone_is_forgotten_on_retry(quick_retries: None, env: Env) -> None:
    session = env.play("bob")
    env.transport.fault = "refused"
    remove_bob_from_vid_public(env)
    env.settle()
    assert session.id in env.remembered()
    with env.fake._lock:  # the viewer left while MediaMTX's API was unreachable (and no runOnUnread came)
        del env.fake.sessions["rtspsessions"][session.id]
    env.transport.fault = None
    env.wait_until("the waiting kick was settled", lambda: session.id not in env.remembered())
    assert env.fake.kicked == []
    _, settled = env.kick_events(session)
    assert settled.detail["kicked"] is False and settled.detail["gone"] is True
    assert env.pending_work() == []


def test_waiting_kicks_survive_a_restart_and_are_done_at_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(revocation, "KICK_RETRY_FIRST", 3600.0)  # only the start-up can try it within this test
    monkeypatch.setattr(revocation, "KICK_RETRY_MAX", 3600.0)
    with opening(tmp_path / "data") as first:
        session = first.play("bob")
        first.transport.fault = "refused"
        remove_bob_from_vid_public(first)
        first.settle()
        fake = first.fake
        inner = first.transport.inner
    assert session.id in fake.session_ids("rtspsessions")
    # The same data dir and the same MediaMTX, now answering; no retry is due for an hour, but a start-up tries
    # every kick that waits.
    with opening(tmp_path / "data", lambda _fake, _settings: Faulty(inner), viewers=()) as second:
        second.wait_until("the kick was done after the restart", lambda: (session.kind, session.id) in fake.kicked)
        second.wait_until("the kicked session was forgotten", lambda: session.id not in second.remembered())
        assert second.pending_work() == []


def test_revoking_a_share_link_again_retries_its_kick(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(revocation, "KICK_RETRY_FIRST", 3600.0)  # no background retry within this test
    monkeypatch.setattr(revocation, "KICK_RETRY_MAX", 3600.0)
    headers = env.sign_in()
    created = env.client.post("/api/v1/share-links", json={"path": "live/cam1", "ttl": "1h"}, headers=headers)
    assert created.status_code == 201
    link = created.json()
    env.client.cookies.clear()
    token = env.client.post(f"{link['url']}/token").json()["token"]
    session_id = str(uuid.uuid4())
    assert env.auth(token=token, id=session_id).status_code == 200
    env.fake.add_session("rtspsessions", id=session_id, path="live/cam1")

    env.transport.fault = "500"
    assert env.client.delete(f"/api/v1/share-links/{link['id']}", headers=env.sign_in()).status_code == 200
    env.settle()
    assert env.fake.kicked == [] and session_id in env.remembered()
    env.transport.fault = None
    assert env.client.delete(f"/api/v1/share-links/{link['id']}", headers=env.sign_in()).status_code == 200
    env.settle()
    assert env.fake.kicked == [("rtspsessions", session_id)]
    assert session_id not in env.remembered()
    assert env.pending_work() == []


# --- item 8: re-checks leave the event loop free; many changes make one re-check --------------------------------------


def remember(store: Store, rows: list[SessionRow]) -> None:
    for start in range(0, len(rows), 20_000):
        store.remember_sessions(rows[start : start + 20_000])


class Ticker:
    """A task on the event loop that notes the longest time between two of its turns."""

    def __init__(self) -> None:
        self.longest = 0.0
        self.ticks = 0
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.002)
            self.longest = max(self.longest, time.perf_counter() - before)
            self.ticks += 1


def test_a_recheck_over_200000_remembered_sessions_does_not_hold_the_loop(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = env.services.store.path
    groups = json.dumps(["vid_public"])
    now = time.time()
    with sqlite3.connect(database) as db:  # as the callback would have remembered them, only quicker
        db.executemany(
            "INSERT INTO media_sessions(id, username, groups, path, action, protocol, kind, allowed_at) "
            "VALUES (?, 'bob', ?, ?, 'read', 'rtsp', 'user', ?)",
            ((str(uuid.uuid4()), groups, f"live/cam{n % 50}", now) for n in range(200_000)),
        )
    db.close()
    looked_up = count_lookups(monkeypatch, env.services.revoker.directory)
    ticker = Ticker()

    async def start() -> None:
        ticker.task = asyncio.get_running_loop().create_task(ticker.run())

    env.client.portal.call(start)
    env.wait_until("the ticker ran", lambda: ticker.ticks > 5)
    # As the server does once warm (`freeze_startup_objects`): what this test process built so far is kept out of
    # the collector's full passes, which would otherwise stall any loop here for as long as they walk it all.
    gc.collect()
    gc.freeze()
    ticker.longest = 0.0
    rule = {"pattern": "live/**", "groups": ["vid_private", "vid_public"]}  # re-decides them all; bob stays
    try:
        assert env.client.put("/api/v1/rules", json=rule, headers=KEY).status_code == 200
        env.settle_long()
    finally:
        gc.unfreeze()

    async def stop() -> None:
        assert ticker.task is not None
        ticker.task.cancel()

    env.client.portal.call(stop)
    assert looked_up == ["bob"]  # the re-check ran (and looked bob up once for all his sessions)
    assert env.fake.kicked == []
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT COUNT(*) FROM media_sessions").fetchone()[0] == 200_000
    db.close()
    # The loop had a turn at least every half second all along, on a busy machine too (it froze for 2-3 s before).
    assert ticker.longest < 0.5, f"the event loop was held for {ticker.longest * 1000:.0f} ms"


def test_many_changes_at_once_make_one_recheck(env: Env) -> None:
    env.play("bob")
    listings = lambda: sum(1 for r in env.fake.requests if r.path == "/v3/rtspsessions/list")  # noqa: E731
    before = listings()

    async def twenty_changes() -> None:
        for number in range(20):
            env.services.revoker.rules_changed(f"change {number}")

    env.client.portal.call(twenty_changes)
    env.settle()
    assert listings() - before == 1  # one round listed MediaMTX's sessions once for all twenty changes


# --- item 8: remembered sessions are forgotten without MediaMTX's API too ---------------------------------------------


def test_without_mediamtxs_api_sessions_not_heard_of_for_a_day_are_forgotten(tmp_path: Path) -> None:
    with opening(tmp_path / "data", mediamtx_api_url="") as env:
        assert env.services.mediamtx is None
        store = env.services.store
        day = revocation.SESSION_MAX_AGE
        old = [(str(uuid.uuid4()), "bob", ["vid_public"], "live/cam1", "read", "rtsp", "user", time.time() - 2 * day)]
        heard_again = str(uuid.uuid4())
        young = str(uuid.uuid4())
        remember(
            store,
            [*old, (heard_again, "bob", ["vid_public"], "live/cam1", "read", "hls", "user", time.time() - 2 * day)],
        )
        # An HLS player's next callback, an hour ago, for the same session: it is still there.
        store.record_sessions(
            [(heard_again, "bob", ["vid_public"], "live/cam1", "read", "hls", "user", time.time() - 3600)]
        )
        remember(store, [(young, "bob", ["vid_public"], "live/cam1", "read", "rtsp", "user", time.time() - 3600)])
        rule = {"pattern": "other/**", "groups": ["vid_private"]}
        assert env.client.put("/api/v1/rules", json=rule, headers=KEY).status_code == 200
        env.settle()
        assert env.remembered() == {heard_again, young}
        assert env.services.store.list_audit(action="session.kick") == []  # housekeeping, not a revocation


# --- item 7: the session log writes a failed batch later on its own ---------------------------------------------------


def test_a_failed_session_batch_is_written_later_without_any_hook(
    env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(session_writer, "RETRY_FIRST", 0.05)
    monkeypatch.setattr(session_writer, "RETRY_MAX", 0.2)
    full = {"disk": True}
    real = {name: getattr(Store, name) for name in ("record_sessions", "remember_sessions") if hasattr(Store, name)}

    def failing(name: str) -> Callable[..., None]:
        def write(self: Store, sessions: list[SessionRow]) -> None:
            if full["disk"]:
                raise sqlite3.OperationalError("database or disk is full")
            real[name](self, sessions)

        return write

    for name in real:
        monkeypatch.setattr(Store, name, failing(name))
    caplog.set_level(logging.WARNING, logger="sidecar.sessions")
    sessions = [env.play("bob") for _ in range(3)]
    env.wait_until("the failed batch was logged", lambda: "could not write remembered MediaMTX sessions" in caplog.text)
    more = [env.play("bob") for _ in range(2)]  # callbacks keep coming while the disk is full
    stored = lambda: {row["id"] for row in env.services.store.media_sessions()}  # noqa: E731 (no flush here)
    assert stored() == set()
    full["disk"] = False  # space again; no hook, no re-check, no flush: the writer retries on its own
    env.wait_until("the held sessions were written", lambda: stored() == {s.id for s in [*sessions, *more]})
    assert json.loads(env.services.store.media_sessions()[0]["groups"]) == ["vid_public"]
