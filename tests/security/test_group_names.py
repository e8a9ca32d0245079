"""Roles smuggled through group names, and group names leaking into tokens, in authentik mode through the real Caddy.

The outpost joins a person's Authentik group names with `|` into `X-Authentik-Groups`, so a group literally named
`tak_ops|vid_admin` reads there as `tak_ops` and `vid_admin`. Its members must get no admin role and no streams; such
names (and `/` or control characters) must never be created, accepted in rules, listed, offered or managed. Playback
and share-link tokens must carry only `vid_*`/admin groups in their `groups` claim (never `tak_*`). Groups come from
Authentik's API: a change made on the Users page applies on the person's next request, and one made in Authentik
itself (including deactivating someone whose outpost session lives on) within `SIDECAR_GROUP_CACHE_SECONDS`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fake_authentik import FakeAuthentik, FakeUser
from tests.processes_fixtures import Endpoint, Launch
from tests.security.authentik_site import Site, authentik_site, is_json_error, jwt_claims

pytestmark = pytest.mark.caddy

STREAMS = ("live/cam1", "live/cam2")
RULE = {"pattern": "live/**", "groups": ["vid_public"]}
SAFE_GROUPS = ("vid_admin", "vid_public", "vid_private", "tak_ops", "tak_users")
# Names Authentik allows but the sidecar must treat as nothing at all.
PIPE_GROUPS = ("tak_ops|vid_admin", "x|vid_public", "vid_public|vid_admin", "|vid_admin", "vid_admin|", "|vid_public|")
ODD_GROUPS = ("vid_cams/north", "vid_bell\x07", "vid_tab\tx")
# Members of exactly one `|` group each: username -> group.
PIPE_PEOPLE = {f"pipe{i}": group for i, group in enumerate(PIPE_GROUPS)}
SETTLE_SECONDS = 15.0


def seeded() -> FakeAuthentik:
    fake = FakeAuthentik()
    fake.add_group("authentik Admins", superuser=True)
    for name in (*SAFE_GROUPS, *PIPE_GROUPS, *ODD_GROUPS):
        fake.add_group(name)
    fake.add_user("admin", "vid_admin", "tak_ops", name="Admin", email="admin@example.org")
    fake.add_user("bob", "vid_public", "tak_ops", name="Bob", email="bob@example.org")
    fake.add_user("mixed", "vid_public", "tak_ops|vid_admin", name="Mixed", email="mixed@example.org")
    for username in ("dan", "erin", "frank"):
        fake.add_user(username, "vid_public", name=username.title(), email=f"{username}@example.org")
    for username, group in PIPE_PEOPLE.items():
        fake.add_user(username, group, name=username.title(), email=f"{username}@example.org")
    return fake


@pytest.fixture(scope="module")
def fake() -> FakeAuthentik:
    return seeded()


def _started(name: str, fake: FakeAuthentik, cache: str, **fixtures: Any) -> Iterator[Site]:
    with authentik_site(name, fake, stream_paths=STREAMS, group_cache_seconds=cache, **fixtures) as found:
        with found.service() as api:
            answer = api.put("/api/v1/rules", json=RULE)
        assert answer.status_code == 200, answer.text
        yield found


@pytest.fixture(scope="module")
def site(
    fake: FakeAuthentik, launch: Launch, start_caddy: Callable[..., Endpoint], process_dir: Path
) -> Iterator[Site]:
    """A long group cache: only the sidecar's own changes can make a person's next request see new groups."""
    fixtures = {"launch": launch, "start_caddy": start_caddy, "process_dir": process_dir}
    yield from _started("names", fake, "600", **fixtures)


@pytest.fixture(scope="module")
def quick(
    fake: FakeAuthentik, launch: Launch, start_caddy: Callable[..., Endpoint], process_dir: Path
) -> Iterator[Site]:
    """A second sidecar on the same Authentik, reading it again after one second."""
    fixtures = {"launch": launch, "start_caddy": start_caddy, "process_dir": process_dir}
    yield from _started("names-quick", fake, "1", **fixtures)


def me(site: Site, username: str) -> httpx.Response:
    with site.client(username) as client:
        return client.get("/api/v1/me")


def token_for(site: Site, username: str, path: str = "live/cam1") -> httpx.Response:
    with site.client(username) as client:
        return site.write(client, "POST", "/api/v1/streams/token", {"path": path})


def rules(site: Site) -> list[dict[str, Any]]:
    with site.service() as api:
        answer = api.get("/api/v1/rules")
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["rules"]
    return found


def user(fake: FakeAuthentik, username: str) -> FakeUser:
    found = fake.user_named(username)
    assert found is not None, username
    return found


def join(fake: FakeAuthentik, username: str, group: str, member: bool = True) -> None:
    found = fake.group_named(group)
    assert found is not None, group
    (found.members.add if member else found.members.discard)(user(fake, username).pk)


def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + SETTLE_SECONDS
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


# --- `|` inside one group name -----------------------------------------------------------------------------------


@pytest.mark.parametrize("username", sorted(PIPE_PEOPLE))
def test_member_of_a_pipe_group_gets_no_admin_role_and_no_streams(site: Site, username: str) -> None:
    writes, editor_calls, rules_before = len(site.authentik.writes()), site.editor.count(), rules(site)
    try:
        attack_as_pipe_member(site, username)
    finally:
        rules_after = rules(site)
        restore_rules(site, rules_before)  # so one successful attack does not spoil the tests after it
    assert rules_after == rules_before
    assert site.editor.count() == editor_calls
    assert len(site.authentik.writes()) == writes


def restore_rules(site: Site, wanted: list[dict[str, Any]]) -> None:
    with site.service() as api:
        for rule in rules(site):
            if rule not in wanted:
                assert api.delete("/api/v1/rules", params={"pattern": rule["pattern"]}).status_code == 200
        for rule in wanted:
            assert api.put("/api/v1/rules", json=rule).status_code == 200


def attack_as_pipe_member(site: Site, username: str) -> None:
    with site.client(username) as client:
        who = client.get("/api/v1/me")
        assert who.status_code in (200, 403), who.text
        csrf = None
        if who.status_code == 200:
            assert who.json()["role"] != "admin", who.json()
            assert not {"vid_admin", "vid_public"} & set(who.json()["groups"]), who.json()
            csrf = who.json()["csrf_token"]
        else:
            assert is_json_error(who, 403)

        assert is_json_error(client.get("/api/v1/users"), 403)
        assert is_json_error(client.get("/api/v1/rules"), 403)
        for body in ({"pattern": "live/**", "groups": ["vid_private"]}, {"pattern": "**", "groups": []}):
            assert is_json_error(site.write(client, "PUT", "/api/v1/rules", body, csrf=csrf), 403)
        assert is_json_error(site.write(client, "POST", "/api/v1/groups", {"name": "vid_evil"}, csrf=csrf), 403)
        for path in STREAMS:
            assert is_json_error(site.write(client, "POST", "/api/v1/streams/token", {"path": path}, csrf=csrf), 403)
        created = site.write(client, "POST", "/api/v1/share-links", {"path": "live/cam1", "ttl": "1h"}, csrf=csrf)
        assert is_json_error(created, 403)
        streams = client.get("/api/v1/streams")
        assert is_json_error(streams, 403) or (streams.status_code == 200 and streams.json()["streams"] == [])

        # The editor is for admins only: nothing this person sends may reach it.
        as_api = client.get("/config/paths/list")
        assert is_json_error(as_api, 403), (as_api.status_code, as_api.text)
        as_page = client.get("/", headers={"Accept": "text/html"})
        assert as_page.status_code in (302, 403), as_page.status_code
        if as_page.status_code == 302:
            assert as_page.headers["location"] == "/streams"


def test_the_editor_check_above_can_see_an_admin_get_through(site: Site) -> None:
    """Control: a real `vid_admin` does reach the editor stand-in, so a count that stays put means something."""
    before = site.editor.count()
    with site.client("admin") as client:
        answer = client.get("/config/paths/list")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"editor": True, "path": "/config/paths/list"}
    assert site.editor.count() == before + 1


def test_viewer_also_in_a_pipe_group_stays_a_viewer(site: Site) -> None:
    """`mixed` is in vid_public and in `tak_ops|vid_admin`: the header reads `tak_ops|vid_admin|vid_public`."""
    who = me(site, "mixed")
    assert who.status_code == 200, who.text
    assert who.json()["role"] == "viewer"
    assert who.json()["groups"] == ["vid_public"]
    with site.client("mixed") as client:
        assert is_json_error(client.get("/api/v1/users"), 403)
        assert is_json_error(site.write(client, "PUT", "/api/v1/rules", {"pattern": "**", "groups": []}), 403)
    answer = token_for(site, "mixed")
    assert answer.status_code == 200, answer.text
    assert jwt_claims(answer.json()["token"])["groups"] == ["vid_public"]


# --- unsafe names are never created, accepted, listed, offered or managed -----------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "vid_public|vid_admin",
        "vid_x|",
        "vid_|x",
        "vid_a/b",
        "vid_a/../admin",
        "vid_nul\x00",
        "vid_nl\nX-Authentik-Groups: vid_admin",
        "vid_cr\r",
        "vid_tab\tx",
        "vid_del\x7f",
        "vid_esc\x1b[0m",
        "vid_nel\x85",
        "vid_ls\u2028",
    ],
)
def test_group_with_separator_slash_or_control_character_is_never_created(site: Site, name: str) -> None:
    writes, groups = len(site.authentik.writes()), sorted(g.name for g in site.authentik.groups.values())
    with site.client("admin") as client:
        answer = site.write(client, "POST", "/api/v1/groups", {"name": name})
    assert is_json_error(answer, 400), (answer.status_code, answer.text)
    assert answer.json().get("field") == "name"
    assert sorted(g.name for g in site.authentik.groups.values()) == groups
    assert len(site.authentik.writes()) == writes


@pytest.mark.parametrize("group", [*[g for g in PIPE_GROUPS if g.startswith("vid_")], *ODD_GROUPS])
def test_rule_naming_an_unsafe_group_is_refused_even_though_authentik_has_it(site: Site, group: str) -> None:
    before = rules(site)
    answers = []
    try:
        for body in (
            {"pattern": "live/cam1", "groups": [group]},
            {"pattern": "live/**", "groups": ["vid_public", group]},
        ):
            with site.service() as api:
                answers.append(api.put("/api/v1/rules", json=body))
            with site.client("admin") as client:
                answers.append(site.write(client, "PUT", "/api/v1/rules", body))
    finally:
        after = rules(site)
        restore_rules(site, before)
    for answer in answers:
        assert is_json_error(answer, 400), (answer.status_code, answer.text)
        assert answer.json().get("field") == "groups"
    assert after == before


def test_group_listings_never_show_unsafe_names(site: Site) -> None:
    with site.client("admin") as client:
        groups = client.get("/api/v1/groups")
        streams = client.get("/api/v1/streams")
    assert groups.status_code == 200, groups.text
    assert sorted(g["name"] for g in groups.json()["groups"]) == ["vid_admin", "vid_private", "vid_public"]
    assert streams.status_code == 200, streams.text
    assert sorted(streams.json()["groups"]) == ["vid_admin", "vid_private", "vid_public"]
    # The public request form offers only safe, non-admin groups.
    with site.client() as anonymous:
        form = anonymous.get("/request-access", headers={"Accept": "text/html"})
    assert form.status_code == 200, form.text
    assert 'value="vid_public"' in form.text
    for name in (*PIPE_GROUPS, *ODD_GROUPS):
        assert f'value="{name}"' not in form.text, name


@pytest.mark.parametrize(
    "group", ["vid_public%7Cvid_admin", "%7Cvid_admin", "vid_admin%7C", "vid_bell%07", "vid_tab%09x"]
)
def test_membership_of_an_unsafe_group_cannot_be_toggled(site: Site, group: str) -> None:
    """Authentik has these groups; putting someone into one would make them an admin wherever `|` is split."""
    before = len(site.authentik.writes())
    with site.client("admin") as client:
        csrf = site.csrf(client)
        answers = [
            site.write(client, method, f"/api/v1/users/{target}/groups/{group}", csrf=csrf)
            for method in ("PUT", "POST", "DELETE")
            for target in ("bob", "pipe2")
        ]
    for answer in answers:
        if "%0" in group:  # a control character in the path: Caddy itself answers a plain 400
            assert answer.status_code == 400, (answer.status_code, answer.text)
        else:
            assert is_json_error(answer, 403), (answer.status_code, answer.text)
    assert len(site.authentik.writes()) == before


# --- what tokens carry ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("username", "granting"), [("bob", ["vid_public"]), ("admin", ["vid_admin"])])
def test_playback_token_carries_only_granting_groups(site: Site, username: str, granting: list[str]) -> None:
    answer = token_for(site, username)
    assert answer.status_code == 200, answer.text
    claims = jwt_claims(answer.json()["token"])
    assert claims["groups"] == granting
    assert "tak_" not in json.dumps(claims)


def test_share_link_token_carries_only_granting_groups(site: Site) -> None:
    """The admin is also in tak_ops; the link and its tokens must not say so."""
    with site.client("admin") as client:
        created = site.write(client, "POST", "/api/v1/share-links", {"path": "live/cam1", "ttl": "1h"})
    assert created.status_code == 201, created.text
    assert "tak_" not in created.text
    with site.client() as anonymous:
        answer = anonymous.post(created.json()["url"] + "/token")
    assert answer.status_code == 200, answer.text
    claims = jwt_claims(answer.json()["token"])
    assert claims["groups"] == ["vid_admin"]
    assert "tak_" not in json.dumps(claims)
    with site.client("admin") as client:
        listed = client.get("/api/v1/share-links")
    assert listed.status_code == 200, listed.text
    assert "tak_" not in listed.text


# --- where groups come from, and when a change applies --------------------------------------------------------------


def test_users_page_change_applies_on_the_next_request(site: Site) -> None:
    """With a 10-minute cache, only the sidecar forgetting what it cached can make this immediate."""
    assert token_for(site, "dan").status_code == 200  # dan's groups are now cached
    try:
        with site.client("admin") as admin:
            removed = site.write(admin, "DELETE", "/api/v1/users/dan/groups/vid_public")
        assert removed.status_code == 200, removed.text
        assert removed.json()["changed"] is True
        with site.client("dan") as dan:
            assert is_json_error(dan.get("/api/v1/streams"), 403)
        assert is_json_error(token_for(site, "dan"), 403)

        with site.client("admin") as admin:
            assert site.write(admin, "PUT", "/api/v1/users/dan/groups/vid_public").status_code == 200
        assert token_for(site, "dan").status_code == 200
    finally:
        join(site.authentik, "dan", "vid_public")


def test_group_removed_in_authentik_applies_within_the_cache_time(quick: Site) -> None:
    assert token_for(quick, "erin").status_code == 200
    join(quick.authentik, "erin", "vid_public", member=False)
    try:
        eventually(lambda: is_json_error(token_for(quick, "erin"), 403), "erin kept her stream after losing vid_public")
    finally:
        join(quick.authentik, "erin", "vid_public")
    eventually(lambda: token_for(quick, "erin").status_code == 200, "erin never got her stream back")


def test_deactivated_in_authentik_is_refused_while_the_outpost_session_lives_on(quick: Site) -> None:
    """The outpost still vouches for frank with his groups; Authentik's API says he is inactive."""
    assert token_for(quick, "frank").status_code == 200
    user(quick.authentik, "frank").is_active = False
    try:
        eventually(lambda: is_json_error(me(quick, "frank"), 403), "a deactivated person kept their role")
        assert is_json_error(token_for(quick, "frank"), 403)
        with quick.client("frank") as frank:
            link = quick.write(frank, "POST", "/api/v1/share-links", {"path": "live/cam1", "ttl": "1h"})
            assert is_json_error(link, 403)
            assert is_json_error(frank.get("/api/v1/streams"), 403)
    finally:
        user(quick.authentik, "frank").is_active = True
    eventually(lambda: token_for(quick, "frank").status_code == 200, "frank never got his stream back")


def test_pipe_group_joined_in_authentik_never_makes_an_admin(quick: Site) -> None:
    """erin joins `tak_ops|vid_admin` (and, as a marker that the sidecar read Authentik again, vid_private)."""
    fake = quick.authentik
    join(fake, "erin", "tak_ops|vid_admin")
    join(fake, "erin", "vid_private")
    try:
        eventually(lambda: "vid_private" in me(quick, "erin").json().get("groups", []), "erin's groups never updated")
        who = me(quick, "erin").json()
        assert who["role"] == "viewer"
        assert who["groups"] == ["vid_private", "vid_public"]
        with quick.client("erin") as client:
            assert is_json_error(client.get("/api/v1/users"), 403)
            assert is_json_error(quick.write(client, "PUT", "/api/v1/rules", {"pattern": "**", "groups": []}), 403)
        claims = jwt_claims(token_for(quick, "erin").json()["token"])
        assert claims["groups"] == ["vid_private", "vid_public"]
    finally:
        join(fake, "erin", "tak_ops|vid_admin", member=False)
        join(fake, "erin", "vid_private", member=False)
