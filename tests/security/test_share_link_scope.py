"""Share links outliving, or outgrowing, their creator's access.

A share link is a bearer capability: whoever holds its URL plays one stream without signing in. These attacks keep
such a URL after its creator lost the access it was made with and try to go on playing: a viewer's `never` link to
a private stream after the viewer is removed from `vid_private` and/or deactivated (through the API, and directly in
the directory behind the sidecar's back: the local store as another process would change it, Authentik itself); an
admin's link to a path no rule covers (admins only) after the admin is demoted; a link whose creator later gains
groups or admin rights, or swaps one group for another; and many token requests racing the removal, in local mode
and against an Authentik whose answers are slow. After a change the share page and the token URL must be 404, a
token issued before the change refused by the MediaMTX callback (HTTP mode) and the sessions it was playing kicked.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from sidecar.app import create_app
from sidecar.settings import Settings
from sidecar.store import Store
from tests.fake_authentik import BASE, TOKEN, FakeAuthentik, create_fake_authentik
from tests.fake_mediamtx import FakeMediaMTX, create_fake_mediamtx
from tests.helpers import API_KEY, TRUSTED_PEER, callback_body, cheapen_bcrypt, login
from tests.mediamtx_env import KEY, MEDIAMTX_API_URL, RULES, MediaMTXEnv, fake_transport, open_mediamtx_env

pytestmark = pytest.mark.usefixtures("cheap_bcrypt")

PRIVATE = "live/private/x"  # rule live/private/* -> vid_private
PUBLIC = "live/cam1"  # rule live/** -> vid_public
UNRULED = "other/cam"  # no rule: admins only
DANA_PASSWORD = "dana-password-for-scope-1"
OWN = "http://testserver"
CHANGES = ("removed", "deactivated", "removed_then_deactivated", "deactivated_then_removed")


# --- local mode --------------------------------------------------------------------------------------------------


@dataclass
class Env(MediaMTXEnv):
    def sign_in(self, username: str = "admin", password: str | None = None) -> dict[str, str]:
        if username == "dana":
            self.client.cookies.clear()
            return login(self.client, "dana", DANA_PASSWORD)
        return super().sign_in(username, password)

    def share(self, username: str, path: str, ttl: str = "never") -> dict[str, Any]:
        headers = self.sign_in(username)
        response = self.client.post("/api/v1/share-links", json={"path": path, "ttl": ttl}, headers=headers)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def as_admin(self, method: str, url: str, body: dict[str, Any] | None = None, who: str = "admin") -> Any:
        headers = self.sign_in(who)
        response = self.client.request(method, url, json=body, headers=headers)
        assert response.status_code == 200, response.text
        return response.json()

    def remove(self, username: str, group: str, who: str = "admin") -> None:
        assert self.as_admin("DELETE", f"/api/v1/users/{username}/groups/{group}", who=who)["changed"] is True

    def add(self, username: str, group: str) -> None:
        self.as_admin("PUT", f"/api/v1/users/{username}/groups/{group}")

    def set_active(self, username: str, active: bool) -> None:
        self.as_admin("PATCH", f"/api/v1/users/{username}", {"is_active": active})

    def page(self, url: str) -> int:
        self.client.cookies.clear()  # the public side: nobody is signed in
        return self.client.get(url, headers={"accept": "text/html"}).status_code

    def link_token(self, url: str) -> httpx.Response:
        self.client.cookies.clear()
        return self.client.post(f"{url}/token")

    def token_of(self, url: str) -> str:
        response = self.link_token(url)
        assert response.status_code == 200, response.text
        token: str = response.json()["token"]
        return token

    def play(self, token: str, path: str, **fields: Any) -> int:
        """MediaMTX asks whether this token may read `path` (RTSP, or HLS with the token in the query)."""
        return self.auth(token=token, path=path, **fields).status_code

    def start_session(self, url: str, path: str) -> tuple[str, str]:
        """A player opens the link: a token, the callback letting an RTSP reader in, MediaMTX listing it."""
        token = self.token_of(url)
        session = str(uuid.uuid4())
        assert self.play(token, path, id=session) == 200
        self.fake.add_session("rtspsessions", id=session, path=path, user="")
        self.services.media_auth.sessions.flush()
        return token, session

    def audit(self, action: str) -> list[dict[str, Any]]:
        response = self.client.get("/api/v1/audit", params={"action": action, "limit": "1000"}, headers=KEY)
        assert response.status_code == 200
        events: list[dict[str, Any]] = response.json()["events"]
        return events

    def link(self, link_id: str) -> dict[str, Any]:
        links = self.client.get("/api/v1/share-links", headers=KEY).json()["links"]
        (found,) = [link for link in links if link["id"] == link_id]
        return found

    def later_tokens(self, seconds: float = 2.0) -> None:
        """Move the token issuer's clock on: a token from a revocation's own second counts as revoked."""
        self.services.tokens.clock = lambda: time.time() + seconds


@pytest.fixture
def make_env(tmp_path: Path) -> Iterator[Callable[..., Env]]:
    with ExitStack() as stack:
        count = 0

        def factory(**overrides: Any) -> Env:
            nonlocal count
            count += 1
            opening = open_mediamtx_env(
                Env,
                tmp_path / f"data{count}",
                fake_transport,
                viewers=("bob", "carol"),
                raise_server_exceptions=True,
                **{"viewer_share_links": True, **overrides},
            )
            return stack.enter_context(opening)

        yield factory


@pytest.fixture
def env(make_env: Callable[..., Env]) -> Env:
    return make_env()


def change(env: Env, how: str, username: str = "carol", group: str = "vid_private") -> None:
    """Take `group` and/or the account away from `username` through the API, in the order `how` names."""
    steps = {
        "removed": [lambda: env.remove(username, group)],
        "deactivated": [lambda: env.set_active(username, False)],
        "removed_then_deactivated": [lambda: env.remove(username, group), lambda: env.set_active(username, False)],
        "deactivated_then_removed": [lambda: env.set_active(username, False), lambda: env.remove(username, group)],
    }[how]
    for step in steps:
        step()
    env.settle()


def assert_dead(env: Env, link: dict[str, Any], path: str, token: str, session: str | None) -> None:
    """The link's page and token URL are gone, its earlier token no longer plays, its session was kicked."""
    assert env.page(link["url"]) == 404
    response = env.link_token(link["url"])
    assert response.status_code == 404
    assert response.json()["error"]
    assert env.play(token, path) == 401
    assert env.play(token, path, action="playback") == 401
    assert env.play(token, path, protocol="hls", query=f"token={token}") == 401
    if session is not None:
        assert ("rtspsessions", session) in env.fake.kicked
        kicks = [event for event in env.audit("session.kick") if event["detail"]["session"] == session]
        assert [event["target"] for event in kicks] == [f"share:{link['id']}"]
        assert session not in env.fake.session_ids("rtspsessions")


@pytest.mark.parametrize("how", CHANGES)
def test_viewers_never_link_dies_when_the_viewer_loses_the_private_group_or_the_account(env: Env, how: str) -> None:
    link = env.share("carol", PRIVATE)
    bystander = env.share("bob", PUBLIC)
    token, session = env.start_session(link["url"], PRIVATE)
    other_token, other_session = env.start_session(bystander["url"], PUBLIC)

    change(env, how)

    assert_dead(env, link, PRIVATE, token, session)
    # Nobody else's link is touched.
    assert env.page(bystander["url"]) == 200
    assert env.play(other_token, PUBLIC) == 200
    assert ("rtspsessions", other_session) not in env.fake.kicked


@pytest.mark.parametrize("how", ["deactivated", "removed_then_deactivated", "deactivated_then_removed"])
def test_a_deactivated_creators_links_stay_revoked_when_the_account_comes_back(env: Env, how: str) -> None:
    link = env.share("carol", PRIVATE)
    public = env.share("carol", PUBLIC, ttl="24h")  # a link the removal from vid_private alone would not stop
    token, _ = env.start_session(link["url"], PRIVATE)

    change(env, how)

    revokes = {event["target"]: event for event in env.audit("share.revoke")}
    assert set(revokes) == {link["id"], public["id"]}
    for event in revokes.values():
        assert event["actor"] == "sidecar"
        assert "carol" in event["detail"]["reason"]
    assert env.link(link["id"])["revoked"] is True and env.link(public["id"])["revoked"] is True

    env.set_active("carol", True)
    if how != "deactivated":
        env.add("carol", "vid_private")
    env.settle()
    env.later_tokens()
    for created in (link, public):
        assert env.page(created["url"]) == 404
        assert env.link_token(created["url"]).status_code == 404
    assert env.play(token, PRIVATE) == 401
    assert len(env.audit("share.revoke")) == 2
    # carol herself plays again: only her links were taken for good.
    assert env.play(env.token(PRIVATE, "carol"), PRIVATE) == 200


def test_a_link_whose_creator_was_only_removed_from_a_group_plays_again_when_the_group_is_given_back(
    env: Env,
) -> None:
    """As designed: removal from a group stops the link (tokens revoked, sessions kicked) without revoking it; the
    link follows its creator's current groups, so giving the group back makes it play again. Tokens issued before
    the removal stay refused."""
    link = env.share("carol", PRIVATE)
    token, session = env.start_session(link["url"], PRIVATE)
    change(env, "removed")
    assert_dead(env, link, PRIVATE, token, session)
    assert env.audit("share.revoke") == []

    env.add("carol", "vid_private")
    env.settle()
    env.later_tokens()
    assert env.page(link["url"]) == 200
    assert env.link(link["id"])["revoked"] is False
    fresh = env.token_of(link["url"])
    assert env.play(fresh, PRIVATE) == 200
    assert env.play(token, PRIVATE) == 401


@pytest.mark.parametrize("how", ["removed", "deactivated"])
def test_a_change_made_in_the_local_store_behind_the_sidecars_back_stops_the_link(env: Env, how: str) -> None:
    """The change another process (the CLI, a script on the same database) makes: the sidecar is not told. New
    tokens stop at once (local mode reads its directory on every request), and the periodic re-check of every
    remembered session kicks what the link is playing."""
    link = env.share("carol", PRIVATE)
    token, session = env.start_session(link["url"], PRIVATE)
    elsewhere = Store(env.settings.database_path)
    try:
        with elsewhere.transaction() as db:
            if how == "removed":
                assert elsewhere.remove_membership(db, "carol", "vid_private")
            else:
                assert elsewhere.set_active(db, "carol", False)
    finally:
        elsewhere.close()

    assert env.page(link["url"]) == 404
    assert env.link_token(link["url"]).status_code == 404
    assert ("rtspsessions", session) not in env.fake.kicked

    env.client.portal.call(env.services.revoker.recheck_everything)  # the periodic re-check
    env.settle()
    assert ("rtspsessions", session) in env.fake.kicked
    assert env.page(link["url"]) == 404


def test_an_admins_link_to_an_admins_only_path_dies_when_the_admin_is_demoted(env: Env) -> None:
    with pytest.MonkeyPatch.context() as patch:
        cheapen_bcrypt(patch)
        env.client.portal.call(env.services.users.add_user, "dana", ["vid_admin"], DANA_PASSWORD, "test")
    link = env.share("admin", UNRULED)
    bystander = env.share("dana", UNRULED)
    token, session = env.start_session(link["url"], UNRULED)
    assert env.services.tokens.verify(token).groups == ("vid_admin",)

    env.remove("admin", "vid_admin", who="dana")  # dana remains an admin
    env.settle()

    assert_dead(env, link, UNRULED, token, session)
    assert env.page(bystander["url"]) == 200  # the admin who remains keeps theirs


def test_a_link_never_plays_more_than_its_creator_could_at_creation(env: Env) -> None:
    link = env.share("bob", PUBLIC)  # bob: vid_public only
    token = env.token_of(link["url"])
    assert env.services.tokens.verify(token).groups == ("vid_public",)

    # bob gains the private group and admin rights afterwards: the link's tokens do not.
    env.add("bob", "vid_private")
    env.add("bob", "vid_admin")
    env.settle()
    later = env.token_of(link["url"])
    assert env.services.tokens.verify(later).groups == ("vid_public",)
    for path in (PRIVATE, UNRULED, "live/cam2"):
        assert env.play(later, path) == 401

    # The stream now needs vid_private, which bob holds (and he is an admin): the link was not made with it.
    rule = {"pattern": "live/**", "groups": ["vid_private"]}
    assert env.client.put("/api/v1/rules", json=rule, headers=KEY).status_code == 200
    env.settle()
    assert env.play(env.token(PUBLIC, "bob"), PUBLIC) == 200  # bob himself may watch it
    assert env.page(link["url"]) == 404
    assert env.link_token(link["url"]).status_code == 404
    assert env.play(later, PUBLIC) == 401

    # No rule at all any more: admins only. bob is one now; his viewer-made link still is not.
    assert env.client.delete("/api/v1/rules", params={"pattern": "live/**"}, headers=KEY).status_code == 200
    env.settle()
    assert env.page(link["url"]) == 404
    assert env.link_token(link["url"]).status_code == 404


def test_swapping_the_creators_group_for_another_that_sees_the_stream_does_not_keep_the_link(env: Env) -> None:
    rule = {"pattern": "live/**", "groups": ["vid_public", "vid_private"]}
    assert env.client.put("/api/v1/rules", json=rule, headers=KEY).status_code == 200
    link = env.share("bob", PUBLIC)
    token, session = env.start_session(link["url"], PUBLIC)

    env.add("bob", "vid_private")
    env.remove("bob", "vid_public")
    env.settle()
    env.later_tokens()

    assert env.play(env.token(PUBLIC, "bob"), PUBLIC) == 200  # bob may still watch, through vid_private
    assert_dead(env, link, PUBLIC, token, session)


def test_token_requests_racing_the_removal_never_yield_a_token_that_plays_afterwards(env: Env) -> None:
    link = env.share("carol", PRIVATE)
    admin = env.sign_in("admin")
    cookies = dict(env.client.cookies)
    env.client.cookies.clear()
    app = env.client.app

    async def race() -> tuple[list[httpx.Response], httpx.Response, list[httpx.Response]]:
        transport = httpx.ASGITransport(app=app, client=TRUSTED_PEER)  # type: ignore[arg-type]
        async with (
            httpx.AsyncClient(transport=transport, base_url=OWN) as public,
            httpx.AsyncClient(transport=transport, base_url=OWN, cookies=cookies) as signed_in,
        ):

            async def removal() -> httpx.Response:
                await asyncio.sleep(0)
                return await signed_in.delete("/api/v1/users/carol/groups/vid_private", headers=admin)

            before = [public.post(f"{link['url']}/token") for _ in range(30)]
            racing = await asyncio.gather(*before[:15], removal(), *before[15:])
            removed = racing[15]
            after = [await public.post(f"{link['url']}/token") for _ in range(10)]
            return [*racing[:15], *racing[16:]], removed, after

    during, removed, after = env.client.portal.call(race)
    assert removed.status_code == 200, removed.text
    assert [response.status_code for response in after] == [404] * 10
    env.settle()
    tokens = [response.json()["token"] for response in during if response.status_code == 200]
    assert {response.status_code for response in during} <= {200, 404}
    assert [env.play(token, PRIVATE) for token in tokens] == [401] * len(tokens)
    assert env.link_token(link["url"]).status_code == 404


# --- authentik mode ----------------------------------------------------------------------------------------------


class ByHost(httpx.AsyncBaseTransport):
    """Requests for Authentik's host go to `authentik`, everything else (MediaMTX's API) to `other`."""

    def __init__(self, authentik: httpx.AsyncBaseTransport, other: httpx.AsyncBaseTransport) -> None:
        self.authentik = authentik
        self.other = other

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        chosen = self.authentik if request.url.host == httpx.URL(BASE).host else self.other
        return await chosen.handle_async_request(request)

    async def aclose(self) -> None:
        await self.authentik.aclose()
        await self.other.aclose()


class GatedTransport(httpx.AsyncBaseTransport):
    """Talks to the fake Authentik, but can hold back the answer to one lookup of a person: the fake answers at
    once (what Authentik held then), the answer reaches the sidecar only when released, as over a slow network."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.hold_user: str | None = None
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        hold = self.hold_user
        url = request.url
        if (
            hold
            and request.method == "GET"
            and url.path == "/api/v3/core/users/"
            and url.params.get("username") == hold
        ):
            self.hold_user = None
            await response.aread()
            self.held.set()
            await self.release.wait()
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class Sso:
    client: TestClient
    authentik: FakeAuthentik
    fake: FakeMediaMTX
    gate: GatedTransport

    @property
    def services(self) -> Any:
        return self.client.app.state.services  # type: ignore[attr-defined]

    def who(self, username: str) -> dict[str, str]:
        # The outpost names the person and, in its |-joined header, the groups they had at sign-in.
        person = self.authentik.user_named(username)
        assert person is not None
        groups = "|".join(group.name for group in self.authentik.groups_of(person))
        identity = {"X-Authentik-Username": username, "X-Authentik-Groups": groups, "origin": OWN}
        csrf = self.client.get("/api/v1/me", headers=identity).json()["csrf_token"]
        return {**identity, "x-csrf-token": csrf}

    def share(self, username: str, path: str) -> dict[str, Any]:
        response = self.client.post(
            "/api/v1/share-links", json={"path": path, "ttl": "never"}, headers=self.who(username)
        )
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def link_token(self, url: str) -> httpx.Response:
        return self.client.post(f"{url}/token")

    def play(self, token: str, path: str, **fields: Any) -> int:
        return self.client.post("/mediamtx/auth", json=callback_body(token=token, path=path, **fields)).status_code

    def start_session(self, url: str, path: str) -> tuple[str, str]:
        response = self.link_token(url)
        assert response.status_code == 200, response.text
        token: str = response.json()["token"]
        session = str(uuid.uuid4())
        assert self.play(token, path, id=session) == 200
        self.fake.add_session("rtspsessions", id=session, path=path, user="")
        self.services.media_auth.sessions.flush()
        return token, session

    def settle(self) -> None:
        async def idle() -> None:
            await asyncio.wait_for(self.services.revoker.idle(), 5)

        self.client.portal.call(idle)

    def cache_expired(self) -> None:
        """Let the sidecar's cached answers from Authentik age past SIDECAR_GROUP_CACHE_SECONDS."""
        lookup = getattr(self.services, "group_lookup", None)
        if lookup is None:  # a sidecar that never asks Authentik (it took the outpost's header at its word)
            return
        lookup.clock = lambda: time.monotonic() + 3 * lookup.ttl + 1


@pytest.fixture
def sso(tmp_path: Path) -> Iterator[Sso]:
    authentik = create_fake_authentik()
    authentik.add_user("vera", "vid_public", "vid_private", name="Vera", email="vera@example.org")
    fake = create_fake_mediamtx()
    gate = GatedTransport(httpx.ASGITransport(app=authentik.app))
    wire = ByHost(gate, httpx.ASGITransport(app=fake.app))
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        mode="authentik",
        data_dir=tmp_path / "sso",
        api_key=API_KEY,
        authentik_url=BASE,
        authentik_token=TOKEN,
        mediamtx_api_url=MEDIAMTX_API_URL,
        viewer_share_links=True,
        group_cache_seconds=5,
    )
    with TestClient(create_app(settings, transport=wire), client=TRUSTED_PEER, base_url=OWN) as client:
        for rule in RULES:
            assert client.put("/api/v1/rules", json=rule, headers=KEY).status_code == 200
        found = Sso(client, authentik, fake, gate)
        # The gate's events belong to the app's event loop.
        gate.held, gate.release = client.portal.call(_events)
        yield found
        found.settle()


async def _events() -> tuple[asyncio.Event, asyncio.Event]:
    return asyncio.Event(), asyncio.Event()


def sso_assert_dead(sso: Sso, link: dict[str, Any], token: str, session: str) -> None:
    assert sso.client.get(link["url"], headers={"accept": "text/html"}).status_code == 404
    assert sso.link_token(link["url"]).status_code == 404
    assert sso.play(token, PRIVATE) == 401
    assert ("rtspsessions", session) in sso.fake.kicked


@pytest.mark.parametrize("how", ["removed", "deactivated"])
def test_authentik_viewers_link_dies_when_an_admin_removes_or_deactivates_the_viewer(sso: Sso, how: str) -> None:
    link = sso.share("vera", PRIVATE)
    token, session = sso.start_session(link["url"], PRIVATE)
    alice = sso.who("alice")
    if how == "removed":
        response = sso.client.delete("/api/v1/users/vera/groups/vid_private", headers=alice)
    else:
        response = sso.client.patch("/api/v1/users/vera", json={"is_active": False}, headers=alice)
    assert response.status_code == 200, response.text
    sso.settle()
    sso_assert_dead(sso, link, token, session)


@pytest.mark.parametrize("how", ["removed", "deactivated"])
def test_authentik_link_stops_once_a_change_made_in_authentik_itself_is_read(sso: Sso, how: str) -> None:
    link = sso.share("vera", PRIVATE)
    token, session = sso.start_session(link["url"], PRIVATE)
    vera = sso.authentik.user_named("vera")
    group = sso.authentik.group_named("vid_private")
    assert vera is not None and group is not None
    if how == "removed":
        group.members.discard(vera.pk)
    else:
        vera.is_active = False

    sso.cache_expired()
    assert sso.client.get(link["url"], headers={"accept": "text/html"}).status_code == 404
    assert sso.link_token(link["url"]).status_code == 404
    # The periodic re-check of every remembered session kicks what the link plays.
    sso.client.portal.call(sso.services.revoker.recheck_everything)
    sso.settle()
    assert ("rtspsessions", session) in sso.fake.kicked


LATE_ANSWER = (
    "a viewer's own POST /api/v1/streams/token whose Authentik lookup was in flight when an admin removed her from "
    "vid_private acts on the old groups when the answer arrives: issued in a later second than the removal's "
    "revocation, the token plays the private stream until it expires (token_ttl_seconds)"
)


def race_removal(
    sso: Sso, first: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]], answer_late_by: float = 0.0
) -> httpx.Response:
    """`first` (a request that looks vera up in Authentik) starts; Authentik answers it while vera is still in
    vid_private, but the answer reaches the sidecar only after alice's removal of vera from vid_private was answered
    and its follow-up started (a slow network or a slow Authentik). With `answer_late_by`, the follow-up has
    finished and that many seconds have passed (on the token issuer's clock) when the answer arrives. Returns
    `first`'s answer, after everything settled."""
    alice = sso.who("alice")
    services = sso.services
    gate = sso.gate
    app = sso.client.app

    async def race() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app, client=TRUSTED_PEER)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url=OWN) as http:
            services.group_lookup.forget("vera")  # the cached answer has aged out
            gate.hold_user = "vera"
            pending = asyncio.ensure_future(first(http))
            await asyncio.wait_for(gate.held.wait(), 5)  # Authentik answered: vera is still in vid_private
            removed = await http.delete("/api/v1/users/vera/groups/vid_private", headers=alice)
            for _ in range(20):
                await asyncio.sleep(0)  # let the removal's follow-up start
            if answer_late_by:
                with contextlib.suppress(TimeoutError):  # a follow-up waiting for the held answer never ends
                    await asyncio.wait_for(services.revoker.idle(), 1)
                services.tokens.clock = lambda: time.time() + answer_late_by
            gate.release.set()
            return await asyncio.wait_for(pending, 5), removed

    raced, removed = sso.client.portal.call(race)
    assert removed.status_code == 200, removed.text
    assert removed.json()["changed"] is True
    sso.settle()
    return raced


def test_authentik_link_token_request_in_flight_during_the_removal_leaves_no_token_that_plays(sso: Sso) -> None:
    """Once the removal has answered and its follow-up settled, no token of the link may play and no new one may
    be issued, whatever order the directory's answers arrived in (the late answer is neither joined by the follow-up
    nor cached)."""
    link = sso.share("vera", PRIVATE)
    raced = race_removal(sso, lambda http: http.post(f"{link['url']}/token"))
    if raced.status_code == 200:
        assert sso.play(raced.json()["token"], PRIVATE) == 401
    after = sso.link_token(link["url"])
    assert after.status_code == 404, "a token issued after the removal answered: " + after.text
    assert sso.client.get(link["url"], headers={"accept": "text/html"}).status_code == 404


def test_authentik_viewer_lookup_in_flight_during_the_removal_is_not_kept(sso: Sso) -> None:
    """The same race without a share link: vera's own request was in flight; after the removal she must get no
    token for the private stream (a later second, so the revocation of her earlier tokens is not what refuses)."""
    vera = sso.who("vera")
    raced = race_removal(sso, lambda http: http.get("/api/v1/me", headers=vera))
    assert raced.status_code == 200
    sso.services.tokens.clock = lambda: time.time() + 2
    response = sso.client.post("/api/v1/streams/token", json={"path": PRIVATE}, headers=vera)
    assert response.status_code == 403, "vera still gets a private token after the removal: " + response.text


def test_authentik_link_token_whose_directory_answer_arrives_seconds_after_the_removal_does_not_play(
    sso: Sso,
) -> None:
    """The late answer arrives after the follow-up revoked the link's tokens, in a later second: a token issued on
    it would escape that revocation, so none may be issued that plays."""
    link = sso.share("vera", PRIVATE)
    raced = race_removal(sso, lambda http: http.post(f"{link['url']}/token"), answer_late_by=2)
    assert sso.link_token(link["url"]).status_code == 404
    if raced.status_code == 200:
        token = raced.json()["token"]
        assert sso.play(token, PRIVATE) == 401, "a link token issued on the old groups plays after the removal"


def test_authentik_viewer_token_whose_directory_answer_arrives_seconds_after_the_removal_does_not_play(
    sso: Sso,
) -> None:
    """The same late answer for vera's own token request (no share link involved)."""
    vera = sso.who("vera")
    body = {"path": PRIVATE}
    raced = race_removal(sso, lambda http: http.post("/api/v1/streams/token", json=body, headers=vera), 2)
    if raced.status_code == 200:
        token = raced.json()["token"]
        assert sso.play(token, PRIVATE) == 401, "vera's token issued on her old groups plays after the removal"
