"""Share links: who may create, list and revoke them; the public page and token URL; tokens that play one stream and
follow the current rules; expiry, revocation (refused at once, live sessions kicked), audit, and hostile input."""

from __future__ import annotations

import base64
import re
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from limits import parse
from starlette.testclient import TestClient

from sidecar.app import create_app
from tests.fake_mediamtx import create_fake_mediamtx
from tests.helpers import TRUSTED_PEER, bootstrapped_settings, login
from tests.mediamtx_env import KEY, MediaMTXEnv, fake_transport, open_mediamtx_env

pytestmark = pytest.mark.usefixtures("cheap_bcrypt")

CADDY_ROUTES = Path(__file__).resolve().parent.parent / "caddy" / "sidecar-routes.caddy"
HLS_URL = "https://video.example.org:8888"


@dataclass
class Env(MediaMTXEnv):
    def create(self, username: str, path: str = "live/cam1", ttl: str = "1h") -> httpx.Response:
        headers = self.sign_in(username)
        return self.client.post("/api/v1/share-links", json={"path": path, "ttl": ttl}, headers=headers)

    def share(self, username: str = "admin", path: str = "live/cam1", ttl: str = "1h") -> dict[str, Any]:
        response = self.create(username, path, ttl)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def listed(self, username: str = "admin") -> list[dict[str, Any]]:
        response = self.client.get("/api/v1/share-links", headers=self.sign_in(username))
        assert response.status_code == 200, response.text
        links: list[dict[str, Any]] = response.json()["links"]
        return links

    def revoke(self, link_id: str, username: str = "admin") -> httpx.Response:
        return self.client.delete(f"/api/v1/share-links/{link_id}", headers=self.sign_in(username))

    def page(self, url: str) -> httpx.Response:
        self.client.cookies.clear()  # the public side: nobody is signed in
        return self.client.get(url, headers={"accept": "text/html"})

    def link_token(self, url: str, **headers: str) -> httpx.Response:
        self.client.cookies.clear()
        return self.client.post(f"{url}/token", headers=headers)

    def remembered(self, username: str) -> set[str]:
        self.services.media_auth.sessions.flush()
        return {row["id"] for row in self.services.store.media_sessions(username)}

    def audit(self, action: str) -> list[dict[str, Any]]:
        response = self.client.get("/api/v1/audit", params={"action": action, "limit": "1000"}, headers=KEY)
        assert response.status_code == 200
        events: list[dict[str, Any]] = response.json()["events"]
        return events

    def shift_clock(self, seconds: float) -> None:
        """Move the share links' clock (and only theirs) forward."""
        self.services.share_links.clock = lambda: time.time() + seconds


@pytest.fixture
def make_env(tmp_path: Path) -> Iterator[Callable[..., Env]]:
    opened: list[Env] = []

    with ExitStack() as stack:

        def factory(**overrides: Any) -> Env:
            data_dir = tmp_path / f"data{len(opened)}"
            values: dict[str, Any] = {"hls_url": HLS_URL, **overrides}
            opening = open_mediamtx_env(
                Env, data_dir, fake_transport, viewers=("bob", "carol"), raise_server_exceptions=True, **values
            )
            opened.append(stack.enter_context(opening))
            return opened[-1]

        yield factory


@pytest.fixture
def env(make_env: Callable[..., Env]) -> Env:
    return make_env()


@pytest.fixture
def viewers_share(make_env: Callable[..., Env]) -> Env:
    return make_env(viewer_share_links=True)


def secret_of(url: str) -> str:
    match = re.fullmatch(r"/share/([A-Za-z0-9_-]+)", url)
    assert match, url
    return match.group(1)


# --- admins: create, list, revoke ------------------------------------------------------------------------------------


def test_admin_creates_lists_and_revokes_a_link(env: Env) -> None:
    before = time.time()
    created = env.share("admin", "live/cam1", "1h")
    assert set(created) == {"id", "url", "path", "expires_at", "created_by"}
    assert created["path"] == "live/cam1" and created["created_by"] == "admin"
    assert created["url"].startswith("/share/")
    assert before + 3600 - 2 <= created["expires_at"] <= time.time() + 3600

    links = env.listed()
    assert links == [
        {
            "id": created["id"],
            "path": "live/cam1",
            "expires_at": created["expires_at"],
            "created_by": "admin",
            "created_at": links[0]["created_at"],
            "revoked": False,
            "uses": 0,
        }
    ]
    assert before - 1 <= links[0]["created_at"] <= time.time()

    response = env.revoke(created["id"])
    assert response.status_code == 200
    assert response.json() == {"revoked": created["id"]}
    assert env.listed()[0]["revoked"] is True
    # Revoking again is harmless; the audit keeps one revocation.
    assert env.revoke(created["id"]).status_code == 200
    assert len(env.audit("share.revoke")) == 1


@pytest.mark.parametrize(("ttl", "seconds"), [("1h", 3600), ("4h", 4 * 3600), ("24h", 24 * 3600), ("never", None)])
def test_each_lifetime(env: Env, ttl: str, seconds: int | None) -> None:
    now = time.time()
    created = env.share(ttl=ttl)
    if seconds is None:
        assert created["expires_at"] is None
    else:
        assert now + seconds - 2 <= created["expires_at"] <= time.time() + seconds


def test_revoking_an_unknown_link_is_404(env: Env) -> None:
    response = env.revoke("0123456789abcdef")
    assert response.status_code == 404
    assert response.json()["field"] == "id"


def test_the_api_key_lists_and_revokes_but_does_not_create(env: Env) -> None:
    created = env.share()
    response = env.client.post("/api/v1/share-links", json={"path": "live/cam1", "ttl": "1h"}, headers=KEY)
    assert response.status_code == 403
    assert [link["id"] for link in env.client.get("/api/v1/share-links", headers=KEY).json()["links"]] == [
        created["id"]
    ]
    assert env.client.delete(f"/api/v1/share-links/{created['id']}", headers=KEY).status_code == 200


def test_writes_need_the_csrf_token_and_reads_need_a_login(env: Env) -> None:
    headers = env.sign_in()
    response = env.client.post(
        "/api/v1/share-links", json={"path": "live/cam1", "ttl": "1h"}, headers={"origin": headers["origin"]}
    )
    assert response.status_code == 403
    env.client.cookies.clear()
    assert env.client.get("/api/v1/share-links").status_code == 401
    assert env.client.post("/api/v1/share-links", json={"path": "live/cam1", "ttl": "1h"}).status_code == 401


# --- viewers ---------------------------------------------------------------------------------------------------------


def test_viewer_may_not_create_links_unless_the_setting_allows(env: Env) -> None:
    response = env.create("bob", "live/cam1")
    assert response.status_code == 403
    assert response.json()["error"]
    assert env.listed("bob") == []
    assert env.audit("share.create") == []


def test_viewer_shares_only_streams_they_may_watch(viewers_share: Env) -> None:
    env = viewers_share
    bobs = env.share("bob", "live/cam1")
    assert bobs["created_by"] == "bob"
    for path in ("live/private/x", "other/cam"):  # a rule for other groups; no rule at all (admins only)
        response = env.create("bob", path)
        assert response.status_code == 403
        # The same words either way: nothing about which rule or groups guard the path.
        assert response.json() == {"error": "you may not share this stream"}
    carols = env.share("carol", "live/private/x")

    assert [link["id"] for link in env.listed("bob")] == [bobs["id"]]
    assert [link["id"] for link in env.listed("carol")] == [carols["id"]]
    assert {link["id"] for link in env.listed("admin")} == {bobs["id"], carols["id"]}

    # Someone else's link answers like an unknown one.
    assert env.revoke(carols["id"], "bob").status_code == 404
    assert env.listed("carol")[0]["revoked"] is False
    assert env.revoke(bobs["id"], "bob").status_code == 200
    assert env.revoke(carols["id"], "admin").status_code == 200


# --- the public page and token URL -----------------------------------------------------------------------------------


def test_the_page_plays_the_stream_without_login(env: Env) -> None:
    created = env.share()
    response = env.page(created["url"])
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["referrer-policy"] == "same-origin"
    assert response.headers["cache-control"] == "no-store"
    html = response.text
    assert "<h1>live/cam1</h1>" in html
    assert '<script type="module" src="/overlay/player.js"></script>' in html
    video = re.search(r"<video[^>]*>", html)
    assert video is not None
    assert 'data-path="live/cam1"' in video.group(0)
    assert f'data-token-url="{created["url"]}/token"' in video.group(0)
    assert f'data-hls-url="{HLS_URL}"' in video.group(0)
    assert "/streams" not in html  # no navigation for people who are not signed in


def test_the_link_token_plays_that_stream_only(env: Env) -> None:
    created = env.share()
    response = env.link_token(created["url"])
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"token", "expires_at", "path"}
    assert body["path"] == "live/cam1"
    assert body["expires_at"] <= time.time() + env.services.settings.token_ttl_seconds
    assert response.headers["cache-control"] == "no-store"

    claims = env.services.tokens.verify(body["token"])
    assert claims.subject == f"share:{created['id']}"
    assert claims.groups == ("vid_admin",)
    assert {p["path"] for p in claims.permissions} == {"live/cam1"}

    token = body["token"]
    assert env.auth(token=token).status_code == 200
    assert env.auth(token=token, action="playback").status_code == 200
    assert env.auth(query=f"token={token}", protocol="hls").status_code == 200
    assert env.auth(token=token, path="live/cam2").status_code == 401
    assert env.auth(token=token, path="live/private/x").status_code == 401
    assert env.auth(token=token, action="publish").status_code == 401
    assert env.auth(token=token, action="api", path="").status_code == 401


def test_a_viewers_link_token_carries_only_granting_groups(viewers_share: Env) -> None:
    env = viewers_share
    with env.services.store.transaction() as db:
        env.services.store.insert_group(db, "tak_ops")
        env.services.store.add_membership(db, "carol", "tak_ops")
    created = env.share("carol", "live/private/x")
    token = env.link_token(created["url"]).json()["token"]
    assert env.services.tokens.verify(token).groups == ("vid_private", "vid_public")
    assert env.auth(token=token, path="live/private/x").status_code == 200


def test_the_token_never_outlives_the_link(env: Env) -> None:
    created = env.share(ttl="1h")
    env.shift_clock(3600 - 100)  # 100 seconds of the link left
    response = env.link_token(created["url"])
    assert response.status_code == 200
    assert time.time() + 95 <= response.json()["expires_at"] <= time.time() + 100


def test_the_link_follows_the_current_rules(viewers_share: Env) -> None:
    env = viewers_share
    created = env.share("bob", "live/cam1")
    token = env.link_token(created["url"]).json()["token"]
    assert env.auth(token=token).status_code == 200

    # bob's groups no longer see the path: the token already handed out stops working, and no new one is issued.
    rule = {"pattern": "live/**", "groups": ["vid_private"]}
    assert env.client.put("/api/v1/rules", json=rule, headers=KEY).status_code == 200
    env.settle()
    assert env.auth(token=token).status_code == 401
    assert env.link_token(created["url"]).status_code == 404
    assert env.page(created["url"]).status_code == 404

    rule = {"pattern": "live/**", "groups": ["vid_public"]}
    assert env.client.put("/api/v1/rules", json=rule, headers=KEY).status_code == 200
    env.settle()
    assert env.auth(token=token).status_code == 200
    assert env.link_token(created["url"]).status_code == 200


def test_unknown_expired_and_revoked_links_look_the_same(env: Env) -> None:
    expired, revoked, live = env.share(), env.share(), env.share(ttl="never")
    assert env.revoke(revoked["id"]).status_code == 200
    env.shift_clock(3601)
    unknown = "/share/" + "A" * 43
    pages = [env.page(url) for url in (unknown, expired["url"], revoked["url"], "/share/short")]
    assert [page.status_code for page in pages] == [404] * 4
    assert len({page.text for page in pages}) == 1
    assert pages[0].headers["content-type"].startswith("text/html")
    assert "live/cam1" not in pages[1].text

    tokens = [env.link_token(url) for url in (unknown, expired["url"], revoked["url"], "/share/short")]
    assert [token.status_code for token in tokens] == [404] * 4
    assert len({token.text for token in tokens}) == 1
    assert tokens[0].headers["content-type"].startswith("application/json")
    assert tokens[0].json()["error"]

    # A link without an end still works a long time after.
    env.shift_clock(10 * 365 * 86400)
    assert env.page(live["url"]).status_code == 200
    assert env.link_token(live["url"]).status_code == 200


def test_revoking_stops_what_is_already_playing(env: Env) -> None:
    created, other = env.share(), env.share()
    subject = f"share:{created['id']}"
    token = env.link_token(created["url"]).json()["token"]
    other_token = env.link_token(other["url"]).json()["token"]
    session_id = str(uuid.uuid4())
    assert env.auth(token=token, id=session_id).status_code == 200
    env.fake.add_session("rtspsessions", id=session_id, path="live/cam1", user="")
    other_session = str(uuid.uuid4())
    assert env.auth(token=other_token, id=other_session, protocol="hls", query="").status_code == 200
    env.fake.add_session("hlssessions", id=other_session, path="live/cam1", user="")
    assert env.remembered(subject) == {session_id}

    assert env.revoke(created["id"]).status_code == 200
    env.settle()

    assert env.fake.kicked == [("rtspsessions", session_id)]
    assert env.remembered(subject) == set()
    kicks = env.audit("session.kick")
    assert [(event["target"], event["detail"]["session"]) for event in kicks] == [(subject, session_id)]
    assert kicks[0]["detail"]["reason"] == "share link revoked"
    assert env.auth(token=token).status_code == 401
    assert env.link_token(created["url"]).status_code == 404
    # The other link plays on.
    assert env.auth(token=other_token).status_code == 200
    assert other_session in env.fake.session_ids("hlssessions")


def test_still_plays_answers_for_live_session_rechecks(viewers_share: Env) -> None:
    env = viewers_share
    links = env.services.share_links
    created = env.share("bob", "live/cam1")
    subject = f"share:{created['id']}"

    def still_plays(subject: str, path: str, action: str) -> bool:
        found: bool = env.client.portal.call(links.still_plays, subject, path, action)
        return found

    assert still_plays(subject, "live/cam1", "read")
    assert still_plays(subject, "/live/cam1", "playback")
    assert not still_plays(subject, "live/cam2", "read")
    assert not still_plays(subject, "live/cam1", "publish")
    assert not still_plays("share:0123456789abcdef", "live/cam1", "read")
    assert not still_plays("bob", "live/cam1", "read")
    rule = {"pattern": "live/**", "groups": ["vid_private"]}
    assert env.client.put("/api/v1/rules", json=rule, headers=KEY).status_code == 200
    assert not still_plays(subject, "live/cam1", "read")
    rule = {"pattern": "live/**", "groups": ["vid_public"]}
    assert env.client.put("/api/v1/rules", json=rule, headers=KEY).status_code == 200
    env.shift_clock(3601)
    assert not still_plays(subject, "live/cam1", "read")
    env.shift_clock(0)
    assert still_plays(subject, "live/cam1", "read")
    assert env.revoke(created["id"], "bob").status_code == 200
    assert not still_plays(subject, "live/cam1", "read")


# --- audit and secrets -----------------------------------------------------------------------------------------------


def test_create_use_and_revoke_are_audited_with_uses_coalesced(env: Env) -> None:
    created = env.share()
    for _ in range(3):
        assert env.link_token(created["url"]).status_code == 200
    assert env.listed()[0]["uses"] == 3
    assert env.revoke(created["id"]).status_code == 200

    (create,) = env.audit("share.create")
    assert (create["actor"], create["target"]) == ("admin", created["id"])
    assert create["detail"] == {"path": "live/cam1", "ttl": "1h", "expires_at": created["expires_at"]}
    # One use event per link and minute; its count says how many uses it stands for so far.
    (use,) = env.audit("share.use")
    assert (use["actor"], use["target"]) == (f"share:{created['id']}", created["id"])
    assert use["detail"]["path"] == "live/cam1" and use["detail"]["uses"] == 1
    assert use["detail"]["ip"] == TRUSTED_PEER[0]
    (revoke,) = env.audit("share.revoke")
    assert (revoke["actor"], revoke["target"]) == ("admin", created["id"])


def test_a_use_a_minute_later_is_audited_again(env: Env) -> None:
    created = env.share(ttl="never")
    assert env.link_token(created["url"]).status_code == 200
    assert env.link_token(created["url"]).status_code == 200
    env.shift_clock(61)
    assert env.link_token(created["url"]).status_code == 200
    assert [event["detail"]["uses"] for event in env.audit("share.use")] == [3, 1]


def test_the_secret_appears_nowhere_but_in_the_creation_answer(env: Env) -> None:
    created = env.share()
    secret = secret_of(created["url"])
    assert env.link_token(created["url"]).status_code == 200
    assert env.revoke(created["id"]).status_code == 200
    env.settle()

    listing = env.client.get("/api/v1/share-links", headers=KEY).text
    audit = env.client.get("/api/v1/audit", params={"limit": "1000"}, headers=KEY).text
    assert created["id"] in listing and created["id"] in audit
    assert secret not in listing and secret not in audit
    database = sqlite3.connect(env.services.settings.database_path)
    try:
        dump = "\n".join(database.iterdump())
    finally:
        database.close()
    assert created["id"] in dump
    assert secret not in dump  # only its digest is stored


def test_secrets_are_at_least_128_bits_of_randomness(env: Env) -> None:
    secrets = [secret_of(env.share()["url"]) for _ in range(5)]
    assert len(set(secrets)) == 5
    for secret in secrets:
        raw = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
        assert len(raw) * 8 >= 128
    ids = [link["id"] for link in env.listed()]
    assert not set(ids) & set(secrets)


# --- abuse -----------------------------------------------------------------------------------------------------------


def test_token_requests_are_rate_limited_per_link(env: Env) -> None:
    env.services.share_links.token_rate = parse("3/minute")
    busy, quiet = env.share(), env.share()
    assert [env.link_token(busy["url"]).status_code for _ in range(4)] == [200, 200, 200, 429]
    assert env.link_token(busy["url"]).json()["error"]
    assert env.link_token(quiet["url"]).status_code == 200


def test_the_default_rate_is_sixty_a_minute(env: Env) -> None:
    created = env.share()
    statuses = [env.link_token(created["url"]).status_code for _ in range(61)]
    assert statuses == [200] * 60 + [429]


def test_cross_origin_token_requests_are_refused(env: Env) -> None:
    created = env.share()
    assert env.link_token(created["url"], origin="https://evil.example").status_code == 403
    assert env.link_token(created["url"], origin="null").status_code == 403
    assert env.link_token(created["url"], origin="http://testserver").status_code == 200
    assert env.link_token(created["url"]).status_code == 200  # players outside a browser send no Origin


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"path": "live/cam1", "ttl": "2h"}, "ttl"),
        ({"path": "live/cam1", "ttl": "1H"}, "ttl"),
        ({"path": "live/cam1", "ttl": 3600}, "ttl"),
        ({"path": "live/cam1", "ttl": None}, "ttl"),
        ({"path": "live/cam1", "ttl": ["1h"]}, "ttl"),
        ({"path": "live/cam1"}, "ttl"),
        ({"path": "live/../private/x", "ttl": "1h"}, "path"),
        ({"path": "live/./cam1", "ttl": "1h"}, "path"),
        ({"path": "live//cam1", "ttl": "1h"}, "path"),
        ({"path": "live/cam1/", "ttl": "1h"}, "path"),
        ({"path": "live/%2e%2e/x", "ttl": "1h"}, "path"),
        ({"path": "live/*", "ttl": "1h"}, "path"),
        ({"path": "live/**", "ttl": "1h"}, "path"),
        ({"path": "~^live/.*$", "ttl": "1h"}, "path"),
        ({"path": "", "ttl": "1h"}, "path"),
        ({"path": "x" * 600, "ttl": "1h"}, "path"),
        ({"path": 7, "ttl": "1h"}, "path"),
        ({"path": {"a": 1}, "ttl": "1h"}, "path"),
        ({"ttl": "1h"}, "path"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(env: Env, body: dict[str, Any], field: str) -> None:
    response = env.client.post("/api/v1/share-links", json=body, headers=env.sign_in())
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field
    assert env.audit("share.create") == []


@pytest.mark.parametrize("raw", [b"[]", b'"x"', b"{", b"null"])
def test_a_body_that_is_not_an_object_is_a_400(env: Env, raw: bytes) -> None:
    headers = {**env.sign_in(), "content-type": "application/json"}
    response = env.client.post("/api/v1/share-links", content=raw, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]


def test_odd_secrets_are_plain_404s(env: Env) -> None:
    for url in ("/share/" + "a" * 5000, "/share/%2e%2e", "/share/..%2fapi"):
        assert env.page(url).status_code == 404
        assert env.link_token(url).status_code in (404, 405)
    # Control characters are refused before any route is chosen.
    assert env.page("/share/" + "%00" * 40).status_code == 400
    assert env.link_token("/share/" + "%00" * 40 + "/token").status_code == 400


# --- Caddy -----------------------------------------------------------------------------------------------------------


def test_caddy_serves_share_links_without_forward_auth() -> None:
    (line,) = [line for line in CADDY_ROUTES.read_text().splitlines() if line.startswith("@public ")]
    assert "/share/*" in line.split()


def test_an_unrelated_rule_change_does_not_kick_a_share_link_session(make_settings: Any) -> None:
    fake = create_fake_mediamtx()
    settings = bootstrapped_settings(make_settings().data_dir, mediamtx_api_url="http://mediamtx.test")
    with TestClient(create_app(settings, transport=httpx.ASGITransport(app=fake.app)), client=TRUSTED_PEER) as client:
        headers = login(client)
        assert client.put("/api/v1/rules", json={"pattern": "live/**", "groups": ["vid_public"]}, headers=headers)
        link = client.post("/api/v1/share-links", json={"path": "live/cam1", "ttl": "1h"}, headers=headers).json()
        token = client.post(link["url"] + "/token", headers={"origin": "http://testserver"}).json()["token"]
        session = fake.add_session("rtspsessions", path="live/cam1")
        body = {
            "ip": "10.0.0.9",
            "user": "",
            "password": "",
            "token": token,
            "action": "read",
            "path": "live/cam1",
            "protocol": "rtsp",
            "id": session,
            "query": "",
            "userAgent": "",
        }
        assert client.post("/mediamtx/auth", json=body).status_code == 200
        services = client.app.state.services  # type: ignore[attr-defined]
        services.media_auth.sessions.flush()
        client.put("/api/v1/rules", json={"pattern": "other/*", "groups": ["vid_private"]}, headers=headers)
        client.portal.call(services.revoker.idle)
        assert session not in fake.kicked
