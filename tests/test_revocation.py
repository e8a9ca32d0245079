"""Taking access away from streams already playing: membership removal, deactivation and rule changes kick exactly the
sessions that are now denied (through the fake MediaMTX's control API), with an audit event each; MediaMTX being
down or no longer knowing a session is no error; `tak_*` groups stay out of reach."""

from __future__ import annotations

import asyncio
import functools
import time
import types
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from sidecar import revocation as revocation_module
from sidecar.pending import pending_work
from sidecar.settings import Settings
from sidecar.store import AuditEvent, Store
from tests.fake_mediamtx import FakeMediaMTX
from tests.helpers import API_KEY, count_lookups
from tests.mediamtx_env import KEY, MediaMTXEnv, open_mediamtx_env

pytestmark = pytest.mark.usefixtures("cheap_bcrypt")

# The callback's `protocol` and the MediaMTX list its sessions live in.
KINDS = {
    "rtsp": "rtspsessions",
    "hls": "hlssessions",
    "webrtc": "webrtcsessions",
    "rtmp": "rtmpconns",
    "srt": "srtconns",
}


class Switchable(httpx.AsyncBaseTransport):
    """The fake MediaMTX, or (when `down`) a refused connection, as if MediaMTX had stopped."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.down = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass(frozen=True)
class Playing:
    kind: str
    id: str
    username: str
    path: str


@dataclass
class Env(MediaMTXEnv):
    transport: Switchable

    def play(self, username: str, path: str, protocol: str, *, known_to_mediamtx: bool = True) -> Playing:
        """A viewer starts playing: MediaMTX asks the callback (with the session id), then lists the session."""
        session_id = str(uuid.uuid4())
        token = self.token(path, username)
        carrier = {"token": token} if protocol in ("rtsp", "rtmp", "srt") else {"query": f"token={token}"}
        response = self.auth(path=path, protocol=protocol, id=session_id, **carrier)
        assert response.status_code == 200, response.text
        kind = KINDS[protocol]
        if known_to_mediamtx:
            self.fake.add_session(kind, id=session_id, path=path, user="")
        return Playing(kind, session_id, username, path)

    def kicked(self) -> set[tuple[str, str]]:
        return set(self.fake.kicked)

    def kick_events(self) -> list[AuditEvent]:
        return self.services.store.list_audit(limit=1000, action="session.kick")

    def remembered(self, username: str | None = None) -> set[str]:
        return {row["id"] for row in self.services.store.media_sessions(username)}

    def wait_until_remembered(self, *sessions: Playing) -> None:
        """Wait (at most 5 s) until these sessions are remembered: they may be written a moment after the answer."""
        deadline = time.monotonic() + 5
        while not {session.id for session in sessions} <= self.remembered():
            assert time.monotonic() < deadline, "allowed sessions were not remembered within 5 s"
            time.sleep(0.02)


def keys(*sessions: Playing) -> set[tuple[str, str]]:
    return {(session.kind, session.id) for session in sessions}


def switchable(fake: FakeMediaMTX, settings: Settings) -> Switchable:
    return Switchable(httpx.ASGITransport(app=fake.app))


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with open_mediamtx_env(Env, tmp_path / "data", switchable, viewers=("bob", "carol")) as found:
        yield found


@pytest.fixture
def bob_everywhere(env: Env) -> list[Playing]:
    """bob watching live/cam1 over every protocol."""
    return [env.play("bob", "live/cam1", protocol) for protocol in KINDS]


@pytest.fixture
def carol_playing(env: Env) -> dict[str, Playing]:
    return {"cam1": env.play("carol", "live/cam1", "rtsp"), "private": env.play("carol", "live/private/x", "hls")}


# --- (a) removal from a group -----------------------------------------------------------------------------------------


def test_removing_the_group_kicks_every_session_of_the_user(
    env: Env, bob_everywhere: list[Playing], carol_playing: dict[str, Playing]
) -> None:
    old_token = env.token("live/cam1", "bob")
    assert env.auth(token=old_token).status_code == 200
    headers = env.sign_in()
    response = env.client.delete("/api/v1/users/bob/groups/vid_public", headers=headers)
    assert response.status_code == 200
    assert response.json()["changed"] is True
    env.settle()

    assert env.kicked() == keys(*bob_everywhere)
    assert env.remembered("bob") == set()
    assert env.remembered("carol") == {session.id for session in carol_playing.values()}
    for session in carol_playing.values():
        assert session.id in env.fake.session_ids(session.kind)

    events = env.kick_events()
    assert sorted(event.detail["session"] for event in events) == sorted(s.id for s in bob_everywhere)
    for event in events:
        assert event.target == "bob" and event.actor == "sidecar"
        assert event.detail["kicked"] is True and event.detail["path"] == "live/cam1"
        assert "vid_public" in event.detail["reason"]
    assert {event.detail["protocol"] for event in events} == set(KINDS)
    listed = env.client.get("/api/v1/audit", params={"action": "session.kick"}, headers=env.sign_in())
    assert listed.status_code == 200
    assert sorted(event["detail"]["session"] for event in listed.json()["events"]) == sorted(
        s.id for s in bob_everywhere
    )
    # The user's earlier tokens stop working at once.
    assert env.auth(token=old_token).status_code == 401


def test_removing_one_of_two_groups_kicks_only_what_is_no_longer_allowed(
    env: Env, carol_playing: dict[str, Playing]
) -> None:
    headers = env.sign_in()
    assert env.client.delete("/api/v1/users/carol/groups/vid_private", headers=headers).status_code == 200
    env.settle()
    assert env.kicked() == keys(carol_playing["private"])
    assert env.remembered("carol") == {carol_playing["cam1"].id}
    assert carol_playing["cam1"].id in env.fake.session_ids("rtspsessions")
    assert [event.detail["session"] for event in env.kick_events()] == [carol_playing["private"].id]


def test_removing_a_group_the_user_is_not_in_changes_nothing(env: Env, bob_everywhere: list[Playing]) -> None:
    env.wait_until_remembered(*bob_everywhere)
    headers = env.sign_in()
    response = env.client.delete("/api/v1/users/bob/groups/vid_private", headers=headers)
    assert response.status_code == 200 and response.json()["changed"] is False
    env.settle()
    assert env.kicked() == set() and env.kick_events() == []
    assert env.remembered("bob") == {session.id for session in bob_everywhere}


# --- (b) deactivation -------------------------------------------------------------------------------------------------


def test_deactivating_the_user_kicks_every_session(
    env: Env, bob_everywhere: list[Playing], carol_playing: dict[str, Playing]
) -> None:
    old_token = env.token("live/cam1", "bob")
    headers = env.sign_in()
    response = env.client.patch("/api/v1/users/bob", json={"is_active": False}, headers=headers)
    assert response.status_code == 200
    env.settle()
    assert env.kicked() == keys(*bob_everywhere)
    assert {event.target for event in env.kick_events()} == {"bob"}
    assert len(env.kick_events()) == len(bob_everywhere)
    assert all(event.detail["reason"] == "deactivated" for event in env.kick_events())
    assert env.remembered("carol") == {session.id for session in carol_playing.values()}
    assert env.auth(token=old_token).status_code == 401


# --- (c) rule changes -------------------------------------------------------------------------------------------------


def test_changing_a_rules_groups_kicks_the_sessions_it_no_longer_shows(
    env: Env, bob_everywhere: list[Playing], carol_playing: dict[str, Playing]
) -> None:
    headers = env.sign_in()
    rule = {"pattern": "live/**", "groups": ["vid_private"]}
    assert env.client.put("/api/v1/rules", json=rule, headers=headers).status_code == 200
    env.settle()
    # bob (vid_public only) loses live/cam1; carol (also vid_private) keeps both of hers.
    assert env.kicked() == keys(*bob_everywhere)
    assert env.remembered("carol") == {session.id for session in carol_playing.values()}
    assert {event.target for event in env.kick_events()} == {"bob"}
    assert all("live/**" in event.detail["reason"] for event in env.kick_events())


def test_deleting_a_rule_kicks_viewers_of_the_paths_it_covered(
    env: Env, bob_everywhere: list[Playing], carol_playing: dict[str, Playing]
) -> None:
    headers = env.sign_in()
    assert env.client.delete("/api/v1/rules", params={"pattern": "live/**"}, headers=headers).status_code == 200
    env.settle()
    # live/cam1 has no rule now (admins only); live/private/x still has its own.
    assert env.kicked() == keys(*bob_everywhere, carol_playing["cam1"])
    assert env.remembered() == {carol_playing["private"].id}


def test_an_unrelated_rule_change_kicks_nobody(
    env: Env, bob_everywhere: list[Playing], carol_playing: dict[str, Playing]
) -> None:
    headers = env.sign_in()
    rule = {"pattern": "other/**", "groups": ["vid_private"]}
    assert env.client.put("/api/v1/rules", json=rule, headers=headers).status_code == 200
    env.settle()
    assert env.kicked() == set() and env.kick_events() == []
    assert len(env.remembered()) == len(bob_everywhere) + len(carol_playing)


def test_a_publishers_stream_survives_an_unrelated_rule_change(env: Env) -> None:
    headers = env.sign_in()
    created = env.client.post("/api/v1/publishers", json={"name": "drone1", "pattern": "drones/**"}, headers=headers)
    assert created.status_code == 201
    secret = created.json()["secret"]
    session_id = str(uuid.uuid4())
    fields = {"user": "drone1", "password": secret, "token": secret, "action": "publish", "path": "drones/d1"}
    assert env.auth(id=session_id, **fields).status_code == 200
    env.fake.add_session("rtspsessions", id=session_id, path="drones/d1", state="publish")
    env.wait_until_remembered(Playing("rtspsessions", session_id, "drone1", "drones/d1"))
    rule = {"pattern": "other/**", "groups": ["vid_private"]}
    assert env.client.put("/api/v1/rules", json=rule, headers=headers).status_code == 200
    env.settle()
    assert env.kicked() == set()


def test_an_api_key_session_survives_an_unrelated_rule_change(env: Env) -> None:
    session_id = str(uuid.uuid4())
    fields = {"password": API_KEY, "token": API_KEY, "path": "live/private/x", "protocol": "rtsp"}
    assert env.auth(id=session_id, **fields).status_code == 200
    env.fake.add_session("rtspsessions", id=session_id, path="live/private/x")
    env.wait_until_remembered(Playing("rtspsessions", session_id, "api-key", "live/private/x"))
    headers = env.sign_in()
    rule = {"pattern": "other/**", "groups": ["vid_private"]}
    assert env.client.put("/api/v1/rules", json=rule, headers=headers).status_code == 200
    env.settle()
    assert env.kicked() == set()


def test_a_token_issued_well_after_a_revocation_works(
    env: Env, carol_playing: dict[str, Playing], monkeypatch: pytest.MonkeyPatch
) -> None:
    now = {"t": float(int(env.services.tokens.clock())) + 0.2}
    clock = types.SimpleNamespace(time=lambda: now["t"], monotonic=time.monotonic, perf_counter=time.perf_counter)
    monkeypatch.setattr(revocation_module, "time", clock)
    monkeypatch.setattr(env.services.tokens, "clock", clock.time)
    headers = env.sign_in()
    assert env.client.delete("/api/v1/users/carol/groups/vid_private", headers=headers).status_code == 200
    env.settle()
    now["t"] += 1.5  # carol, still in vid_public, opens live/cam1 one and a half seconds later
    token = env.token("live/cam1", "carol")
    assert env.auth(token=token).status_code == 200


# --- MediaMTX no longer knows the session, or is down -----------------------------------------------------------------


def test_a_session_mediamtx_no_longer_knows_is_forgotten_without_error(env: Env) -> None:
    gone_rtsp = env.play("bob", "live/cam1", "rtsp", known_to_mediamtx=False)
    gone_hls = env.play("bob", "live/cam1", "hls", known_to_mediamtx=False)
    live = env.play("bob", "live/cam1", "webrtc")
    headers = env.sign_in()
    response = env.client.delete("/api/v1/users/bob/groups/vid_public", headers=headers)
    assert response.status_code == 200
    env.settle()
    assert env.kicked() == keys(live)
    assert env.remembered("bob") == set()
    outcome = {event.detail["session"]: event.detail["kicked"] for event in env.kick_events()}
    assert outcome == {gone_rtsp.id: False, gone_hls.id: False, live.id: True}
    # An RTSP id is looked for in the RTSP and RTSPS lists before giving up.
    kick_paths = [r.path for r in env.fake.requests if "/kick/" in r.path]
    assert f"/v3/rtspsessions/kick/{gone_rtsp.id}" in kick_paths
    assert f"/v3/rtspssessions/kick/{gone_rtsp.id}" in kick_paths


def test_mediamtx_down_is_no_500_and_the_audit_says_not_kicked(
    env: Env, bob_everywhere: list[Playing], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(revocation_module, "KICK_RETRY_FIRST", 3600.0)  # no retry in the background meanwhile
    headers = env.sign_in()
    env.transport.down = True
    response = env.client.delete("/api/v1/users/bob/groups/vid_public", headers=headers)
    assert response.status_code == 200
    env.settle()
    assert env.kicked() == set()
    events = env.kick_events()
    assert sorted(event.detail["session"] for event in events) == sorted(s.id for s in bob_everywhere)
    assert all(event.detail["kicked"] is False and event.detail["pending"] is True for event in events)
    assert all("unreachable" in event.detail["error"] for event in events)
    # Nothing is forgotten: each session keeps its kick, which waits for MediaMTX.
    assert env.remembered("bob") == {session.id for session in bob_everywhere}
    (line,) = pending_work(env.services.store)
    assert line.startswith(f"{len(bob_everywhere)} kicks wait for MediaMTX since ") and "unreachable" in line
    # MediaMTX could not even list its sessions, so the kicks waited for the retry instead of each failing in turn.
    assert not [request for request in env.fake.requests if "/kick/" in request.path]
    env.transport.down = False
    env.client.portal.call(env.services.revoker.retry_kicks)  # what the server's housekeeping does once due
    assert env.kicked() == set()  # not due yet: the first retry comes KICK_RETRY_FIRST (here an hour) later
    env.client.portal.call(functools.partial(env.services.revoker.retry_kicks, early=True))
    assert env.kicked() == keys(*bob_everywhere)
    assert env.remembered("bob") == set() and pending_work(env.services.store) == []
    done = [event for event in env.kick_events() if event.detail["kicked"]]
    assert sorted(event.detail["session"] for event in done) == sorted(s.id for s in bob_everywhere)
    assert all(event.detail["attempts"] == 2 for event in done)


def test_revoking_the_user_again_retries_their_waiting_kicks_at_once(
    env: Env, bob_everywhere: list[Playing], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(revocation_module, "KICK_RETRY_FIRST", 3600.0)  # no retry in the background meanwhile
    env.transport.down = True
    assert env.client.patch("/api/v1/users/bob", json={"is_active": False}, headers=env.sign_in()).status_code == 200
    env.settle()
    assert env.kicked() == set()
    env.transport.down = False
    env.client.portal.call(functools.partial(run_lost_access, env, "bob"))
    env.settle()
    assert env.kicked() == keys(*bob_everywhere)
    assert env.remembered("bob") == set()


async def run_lost_access(env: Env, username: str) -> None:
    env.services.revoker.user_lost_access(username, "deactivated")


def test_mediamtx_failing_is_no_500_and_the_audit_says_not_kicked(env: Env, bob_everywhere: list[Playing]) -> None:
    headers = env.sign_in()
    env.fake.fail_next(500, times=100)  # every request: the session listing before the re-check, and each kick
    response = env.client.patch("/api/v1/users/bob", json={"is_active": False}, headers=headers)
    assert response.status_code == 200
    env.settle()
    assert env.kicked() == set()
    assert [event.detail["kicked"] for event in env.kick_events()] == [False] * len(bob_everywhere)
    assert env.remembered("bob") == {session.id for session in bob_everywhere}  # their kicks wait


def test_pending_work_says_how_many_kicks_wait_since_when(env: Env) -> None:
    store = env.services.store
    assert pending_work(store) == []
    ids = [remember_old(env, "bob", 10) for _ in range(3)]
    since = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
    with store.transaction() as db:
        for number, session_id in enumerate(ids):
            store.defer_kick(db, session_id, "removed from vid_public", f"error {number}", since + number, since + 60)
    (line,) = pending_work(store, now=since + 3600)
    assert line.startswith("3 kicks wait for MediaMTX since 22:13 UTC (last error: ")
    (line,) = pending_work(store, now=since + 3 * 86400)
    assert line.startswith("3 kicks wait for MediaMTX since 2023-11-14 22:13 UTC")


# --- sessions MediaMTX no longer has are swept ------------------------------------------------------------------------


def remember_old(env: Env, username: str, age: float) -> str:
    """A session the sidecar let in `age` seconds ago (written as the callback would have)."""
    session_id = str(uuid.uuid4())
    row = (session_id, username, ["vid_public"], "live/cam1", "read", "rtsp", "user", time.time() - age)
    env.services.store.remember_sessions([row])
    return session_id


def prune(env: Env) -> int:
    forgotten: int = env.client.portal.call(env.services.revoker.prune)
    return forgotten


def test_remembered_sessions_mediamtx_no_longer_has_are_forgotten_after_a_grace(env: Env) -> None:
    gone = remember_old(env, "bob", revocation_module.PRUNE_GRACE + 60)
    still_playing = remember_old(env, "bob", revocation_module.PRUNE_GRACE + 60)
    env.fake.add_session("rtspsessions", id=still_playing, path="live/cam1", user="")
    just_allowed = remember_old(env, "bob", 1)  # MediaMTX may not list it yet
    assert prune(env) == 1
    assert env.remembered("bob") == {still_playing, just_allowed}
    assert gone not in env.remembered()
    assert env.kick_events() == [] and env.kicked() == set()  # housekeeping, not a revocation


def test_nothing_is_forgotten_while_mediamtx_cannot_list_its_sessions(env: Env) -> None:
    old = remember_old(env, "bob", revocation_module.PRUNE_GRACE + 60)
    env.transport.down = True
    assert prune(env) == 0
    env.fake.fail_next(500, times=20)
    env.transport.down = False
    assert prune(env) == 0
    assert env.remembered("bob") == {old}


def test_while_mediamtx_cannot_list_its_sessions_a_day_of_silence_is_the_limit_but_not_for_a_waiting_kick(
    env: Env,
) -> None:
    too_old = remember_old(env, "bob", revocation_module.SESSION_MAX_AGE + 60)
    kick_waits = remember_old(env, "bob", revocation_module.SESSION_MAX_AGE + 60)
    recent = remember_old(env, "bob", revocation_module.SESSION_MAX_AGE - 3600)
    with env.services.store.transaction() as db:
        env.services.store.defer_kick(db, kick_waits, "deactivated", "unreachable", time.time(), time.time() + 60)
    env.transport.down = True
    assert prune(env) == 1
    assert env.remembered("bob") == {kick_waits, recent}
    env.transport.down = False
    env.fake.add_session("rtspsessions", id=recent, path="live/cam1")
    assert prune(env) == 1  # MediaMTX's list decides again: the waiting kick's session is gone, so is its kick
    assert env.remembered("bob") == {recent}
    assert too_old not in env.remembered()


def test_a_rule_change_re_decides_only_what_may_still_be_playing(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without runOnUnread hooks old rows pile up; a re-check must not look each of their users up or try to kick
    them, only sweep them."""
    stale = [remember_old(env, f"ghost{n}", revocation_module.PRUNE_GRACE + 60) for n in range(5)]
    live = env.play("bob", "live/cam1", "rtsp")
    env.wait_until_remembered(live)
    looked_up = count_lookups(monkeypatch, env.services.revoker.directory)
    rule = {"pattern": "live/**", "groups": ["vid_private"]}
    assert env.client.put("/api/v1/rules", json=rule, headers=KEY).status_code == 200
    env.settle()
    assert looked_up == ["bob"]
    assert env.kicked() == keys(live)
    assert not set(stale) & env.remembered()
    assert [event.detail["session"] for event in env.kick_events()] == [live.id]


def test_a_rule_change_re_decides_only_the_paths_its_pattern_could_match(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = env.play("bob", "live/cam1", "rtsp")
    env.wait_until_remembered(live)
    looked_up = count_lookups(monkeypatch, env.services.revoker.directory)
    elsewhere = {"pattern": "elsewhere/**", "groups": ["vid_private"]}
    assert env.client.put("/api/v1/rules", json=elsewhere, headers=KEY).status_code == 200
    env.settle()
    assert looked_up == [] and env.kicked() == set()  # nothing on elsewhere/ plays: nobody to re-decide
    # A pattern matching the path only in another case still makes it ambiguous, which denies: re-decided, kicked.
    other_case = {"pattern": "LIVE/cam1", "groups": ["vid_private"]}
    assert env.client.put("/api/v1/rules", json=other_case, headers=KEY).status_code == 200
    env.settle()
    assert looked_up == ["bob"]
    assert env.kicked() == keys(live)


def test_the_periodic_re_check_acts_on_a_change_made_outside_the_sidecar(env: Env) -> None:
    live = env.play("bob", "live/cam1", "rtsp")
    env.wait_until_remembered(live)
    elsewhere = Store(env.services.store.path)  # another process on the same database: the sidecar is not told
    try:
        with elsewhere.transaction() as db:
            assert elsewhere.set_active(db, "bob", False)
    finally:
        elsewhere.close()
    assert env.kicked() == set()
    env.client.portal.call(env.services.revoker.recheck_everything)
    env.settle()
    assert env.kicked() == keys(live)
    (event,) = env.kick_events()
    assert event.detail["reason"] == revocation_module.OUTSIDE_CHANGES


def test_the_housekeeping_loop_re_checks_everything_on_its_own(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[float] = []
    monkeypatch.setattr(revocation_module.Revoker, "recheck_everything", lambda self: asked.append(time.monotonic()))

    async def run_briefly() -> None:
        task = asyncio.ensure_future(env.services.revoker.prune_every(3600.0, recheck=0.01))
        await asyncio.sleep(0.2)
        task.cancel()

    env.client.portal.call(run_briefly)
    assert len(asked) >= 2


def test_the_server_sweeps_remembered_sessions_on_a_timer(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    running = env.client.portal.call(lambda: [task.get_name() for task in asyncio.all_tasks()])
    assert "sidecar-session-sweep" in running  # started with the app, as MediaMTX's API is configured
    calls: list[float] = []

    async def sweep(self: object) -> int:
        calls.append(time.monotonic())
        return 0

    monkeypatch.setattr(revocation_module.Revoker, "prune", sweep)
    started: list[asyncio.Task[None]] = []  # a list, not the task: the portal would wait for an awaitable

    async def start() -> list[asyncio.Task[None]]:
        started.append(asyncio.ensure_future(env.services.revoker.prune_every(0.01)))
        return started

    env.client.portal.call(start)
    deadline = time.monotonic() + 5
    while len(calls) < 3:
        assert time.monotonic() < deadline, "the sweep did not repeat"
        time.sleep(0.01)
    env.client.portal.call(started[0].cancel)


# --- tak_* groups are out of reach ------------------------------------------------------------------------------------


@pytest.mark.parametrize("group", ["tak_ops", "tak_admin", "TAK_ops", "vid_public|tak_ops", "authentik Admins"])
@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_foreign_groups_cannot_be_touched_through_the_membership_api(
    env: Env, bob_everywhere: list[Playing], method: str, group: str
) -> None:
    bob_token = env.token("live/cam1", "bob")
    headers = env.sign_in()
    for how in (headers, KEY):
        response = env.client.request(method, f"/api/v1/users/bob/groups/{group}", headers=how)
        assert response.status_code == 403, response.text
        assert isinstance(response.json()["error"], str)
    denied = env.services.store.list_audit(action="group.denied")
    assert [event.target for event in denied] == [group, group]
    assert {event.actor for event in denied} == {"admin", "api-key"}
    env.settle()
    assert env.kicked() == set() and env.kick_events() == []
    assert env.auth(token=bob_token).status_code == 200  # nothing was revoked either
    bob = env.client.portal.call(env.services.directory.get_user, "bob")
    assert bob is not None and list(bob.groups) == ["vid_public"]
