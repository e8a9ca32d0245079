"""Account takeover by a video admin in authentik mode, through the real Caddy and the real sidecar.

A plain `vid_admin` manages stream access, not accounts: it must not get a recovery link for, mail a recovery email
to, deactivate or reactivate an Authentik superuser (a member of `authentik Admins`, or of any group Authentik marks
superuser), nor anyone who is also in `tak_*` groups. Every attempt, one at a time or in a concurrent burst, must be
a 403 JSON error audited as `user.denied` and must leave the fake Authentik exactly as it was. A directory admin may
act on a TAK user but never on a superuser. The last active admin can neither step down nor be deactivated (409),
even when two admins race to step down at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fake_authentik import FakeAuthentik
from tests.processes_fixtures import Endpoint, Launch
from tests.security.authentik_site import EMAIL_STAGE, Site, authentik_site, is_json_error

pytestmark = pytest.mark.caddy

ATTACKER = "mallory"  # in vid_admin only: a plain video admin
DIRECTORY_ADMIN = "akadmin"  # in `authentik Admins`: an Authentik superuser, and an admin here by default
VIEWER = "viewer"
PLAIN = "plain"  # only in vid_public: someone the sidecar may manage
TAK = "tak"  # only in tak_* groups
MIXED = "mixed"  # vid_public and tak_ops
PEOPLE: dict[str, tuple[tuple[str, ...], bool]] = {  # username -> (groups, active)
    ATTACKER: (("vid_admin",), True),
    DIRECTORY_ADMIN: (("authentik Admins",), True),
    "root": (("authentik Admins",), True),
    "dormant": (("authentik Admins",), False),  # a disabled superuser: reactivating it is a takeover too
    "supervid": (("authentik Admins", "vid_public"), True),
    "flagsuper": (("vid_ops",), True),  # superuser through a superuser group that carries the prefix
    TAK: (("tak_ops", "tak_users"), True),
    MIXED: (("vid_public", "tak_ops"), True),
    PLAIN: (("vid_public",), True),
    VIEWER: (("vid_public",), True),
}
SUPERUSERS = ("root", "dormant", "supervid", "flagsuper")
TAK_PEOPLE = (TAK, MIXED)
ACTIONS = ("recovery_link", "recovery_email", "deactivate", "activate")
SETTLE_SECONDS = 10.0


# Accounts of the directory that are not the video site's people: no group at all, or a machine account.
LONER, SLEEPER, OUTPOST = "loner", "sleeper", "ak-outpost-1a2b"


def seeded() -> FakeAuthentik:
    fake = FakeAuthentik()
    fake.add_group("authentik Admins", superuser=True)
    fake.add_group("vid_ops", superuser=True)
    for name in ("vid_admin", "vid_public", "vid_private", "tak_ops", "tak_users"):
        fake.add_group(name)
    fake.add_group("vid_inherits", parent="authentik Admins")  # superuser only through its parent
    for username, (groups, active) in PEOPLE.items():
        fake.add_user(username, *groups, name=username.title(), email=f"{username}@example.org", is_active=active)
    fake.add_user(LONER, name="Loner", email="loner@example.org")
    fake.add_user(SLEEPER, name="Sleeper", email="sleeper@example.org", is_active=False)
    fake.add_user(OUTPOST, name="Outpost", type="internal_service_account")
    return fake


@pytest.fixture(scope="module")
def site(launch: Launch, start_caddy: Callable[..., Endpoint], process_dir: Path) -> Iterator[Site]:
    with authentik_site(
        "scope", seeded(), launch=launch, start_caddy=start_caddy, process_dir=process_dir, group_cache_seconds="1"
    ) as found:
        yield found


@dataclass(frozen=True)
class Snapshot:
    """What a refused attempt must leave untouched in the fake Authentik."""

    writes: int
    active: dict[str, bool]
    groups: dict[str, tuple[str, ...]]
    emails: int

    @classmethod
    def of(cls, fake: FakeAuthentik) -> Snapshot:
        users = list(fake.users.values())
        return cls(
            writes=len(fake.writes()),
            active={u.username: u.is_active for u in users},
            groups={u.username: tuple(g.name for g in fake.groups_of(u)) for u in users},
            emails=len(fake.recovery_emails),
        )


def attempt(site: Site, client: httpx.Client, action: str, target: str, csrf: str | None) -> httpx.Response:
    if action == "recovery_link":
        return site.write(client, "POST", f"/api/v1/users/{target}/recovery-link", csrf=csrf)
    if action == "recovery_email":
        body = {"email_stage": EMAIL_STAGE}
        return site.write(client, "POST", f"/api/v1/users/{target}/recovery-email", body, csrf=csrf)
    return site.write(client, "PATCH", f"/api/v1/users/{target}", {"is_active": action == "activate"}, csrf=csrf)


def assert_refused(answer: httpx.Response, status: int | tuple[int, ...] = 403) -> None:
    assert is_json_error(answer, status), (answer.status_code, answer.text)
    assert "link" not in answer.json()
    assert "flow_token" not in answer.text


def denials_since(site: Site, since: int, actor: str) -> list[dict[str, Any]]:
    return [e for e in site.audit("user.denied", actor=actor) if int(e["id"]) > since]


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + SETTLE_SECONDS
    while not condition():
        assert time.monotonic() < deadline, "the sidecar never saw the change made in Authentik"
        time.sleep(0.1)


def role_of(site: Site, username: str) -> str | None:
    with site.client(username) as client:
        answer = client.get("/api/v1/me")
    return str(answer.json()["role"]) if answer.status_code == 200 else None


def listing(site: Site, caller: str) -> dict[str, dict[str, Any]]:
    """`GET /api/v1/users` as `caller`: username -> the row the Users page gets."""
    with site.client(caller) as client:
        answer = client.get("/api/v1/users", params={"page_size": "100"})
    assert answer.status_code == 200, answer.text
    return {user["username"]: user for user in answer.json()["users"]}


# --- a plain video admin against directory superusers and TAK users ------------------------------------------


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("target", [*SUPERUSERS, *TAK_PEOPLE])
def test_video_admin_cannot_take_over_superuser_or_tak_account(site: Site, target: str, action: str) -> None:
    before, since = Snapshot.of(site.authentik), site.last_audit_id()
    with site.client(ATTACKER) as client:
        answer = attempt(site, client, action, target, site.csrf(client))
    assert_refused(answer)
    assert Snapshot.of(site.authentik) == before
    denied = denials_since(site, since, ATTACKER)
    assert [(e["target"], e["detail"]["action"]) for e in denied] == [(target, action)]
    assert denied[0]["detail"]["reason"]


def test_concurrent_burst_of_takeover_attempts_is_refused_every_time(site: Site) -> None:
    """Many requests at once (so refusals and cache reads interleave): not one of them may get through."""
    assert role_of(site, ATTACKER) == "admin"  # the attacker really is a video admin
    before, since = Snapshot.of(site.authentik), site.last_audit_id()
    targets = ("root", "supervid", TAK, MIXED)
    jobs = [(action, target) for action in ACTIONS for target in targets] * 3
    with site.client(ATTACKER) as first:
        csrf = site.csrf(first)

    def one(job: tuple[str, str]) -> httpx.Response:
        with site.client(ATTACKER) as client:
            return attempt(site, client, job[0], job[1], csrf)

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(one, jobs))
    for answer in answers:
        assert_refused(answer)
    assert Snapshot.of(site.authentik) == before
    denied = denials_since(site, since, ATTACKER)
    assert sorted((e["detail"]["action"], e["target"]) for e in denied) == sorted(jobs)


def test_api_key_cannot_take_over_a_superuser(site: Site) -> None:
    before, since = Snapshot.of(site.authentik), site.last_audit_id()
    with site.service() as api:
        answers = [
            api.post("/api/v1/users/root/recovery-link"),
            api.post("/api/v1/users/supervid/recovery-email", json={"email_stage": EMAIL_STAGE}),
            api.patch("/api/v1/users/root", json={"is_active": False}),
            api.patch("/api/v1/users/dormant", json={"is_active": True}),
        ]
    for answer in answers:
        assert_refused(answer)
    assert Snapshot.of(site.authentik) == before
    assert len(denials_since(site, since, "api-key")) == len(answers)


@pytest.mark.parametrize("spelling", ["%72oot", "r%6F%6Ft", "ROOT", "root%20", "%20root", "root.", "ro%2Aot"])
def test_encoded_or_lookalike_username_does_not_slip_past_the_account_check(site: Site, spelling: str) -> None:
    """Caddy and Starlette decode the path; whatever name the sidecar ends up with, a superuser stays untouchable."""
    before = Snapshot.of(site.authentik)
    with site.client(ATTACKER) as client:
        csrf = site.csrf(client)
        answers = [
            site.write(client, "POST", f"/api/v1/users/{spelling}/recovery-link", csrf=csrf),
            site.write(client, "PATCH", f"/api/v1/users/{spelling}", {"is_active": False}, csrf=csrf),
        ]
    for answer in answers:
        assert_refused(answer, status=(400, 403, 404))
    assert Snapshot.of(site.authentik) == before


# --- what a directory admin may do ---------------------------------------------------------------------------


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("target", [*SUPERUSERS, DIRECTORY_ADMIN])
def test_directory_admin_cannot_take_over_a_superuser(site: Site, target: str, action: str) -> None:
    before, since = Snapshot.of(site.authentik), site.last_audit_id()
    with site.client(DIRECTORY_ADMIN) as client:
        answer = attempt(site, client, action, target, site.csrf(client))
    assert_refused(answer)
    assert Snapshot.of(site.authentik) == before
    denied = denials_since(site, since, DIRECTORY_ADMIN)
    assert [(e["target"], e["detail"]["action"]) for e in denied] == [(target, action)]


def test_directory_admin_may_manage_a_tak_users_account(site: Site) -> None:
    """Control: `authentik Admins` members administer the directory, TAK users included."""
    fake = site.authentik
    tak = fake.user_named(TAK)
    assert tak is not None
    try:
        with site.client(DIRECTORY_ADMIN) as client:
            csrf = site.csrf(client)
            link = attempt(site, client, "recovery_link", TAK, csrf)
            assert link.status_code == 200, link.text
            assert f"flow_token=token-{tak.pk}" in link.json()["link"]
            assert attempt(site, client, "deactivate", TAK, csrf).status_code == 200
            assert tak.is_active is False
            assert attempt(site, client, "activate", TAK, csrf).status_code == 200
            assert tak.is_active is True
    finally:
        tak.is_active = True


# --- controls: what a video admin may still do -----------------------------------------------------------------


def test_video_admin_may_manage_someone_only_in_video_groups(site: Site) -> None:
    fake = site.authentik
    plain = fake.user_named(PLAIN)
    assert plain is not None
    emails = len(fake.recovery_emails)
    try:
        with site.client(ATTACKER) as client:
            csrf = site.csrf(client)
            link = attempt(site, client, "recovery_link", PLAIN, csrf)
            assert link.status_code == 200, link.text
            assert f"flow_token=token-{plain.pk}" in link.json()["link"]
            mail = attempt(site, client, "recovery_email", PLAIN, csrf)
            assert mail.status_code == 200, mail.text
            assert fake.recovery_emails[emails:] == [(PLAIN, EMAIL_STAGE)]
            assert attempt(site, client, "deactivate", PLAIN, csrf).status_code == 200
            assert plain.is_active is False
            assert attempt(site, client, "activate", PLAIN, csrf).status_code == 200
            assert plain.is_active is True
    finally:
        plain.is_active = True


def test_video_admin_may_still_toggle_video_groups_on_a_tak_user(site: Site) -> None:
    """Stream access for TAK users is the product's job: only the account itself is out of reach."""
    fake = site.authentik
    tak = fake.user_named(TAK)
    assert tak is not None
    try:
        with site.client(ATTACKER) as client:
            csrf = site.csrf(client)
            added = site.write(client, "PUT", f"/api/v1/users/{TAK}/groups/vid_public", csrf=csrf)
            assert added.status_code == 200, added.text
            assert [g.name for g in fake.groups_of(tak)] == ["tak_ops", "tak_users", "vid_public"]
            removed = site.write(client, "DELETE", f"/api/v1/users/{TAK}/groups/vid_public", csrf=csrf)
            assert removed.status_code == 200, removed.text
            assert [g.name for g in fake.groups_of(tak)] == ["tak_ops", "tak_users"]
    finally:
        group = fake.group_named("vid_public")
        assert group is not None
        group.members.discard(tak.pk)


@pytest.mark.parametrize(
    ("username", "group"),
    [
        (ATTACKER, "authentik%20Admins"),
        (PLAIN, "authentik%20Admins"),
        ("root", "authentik%20Admins"),
        (TAK, "tak_ops"),
    ],
)
def test_video_admin_cannot_grant_or_strip_directory_admin_groups(site: Site, username: str, group: str) -> None:
    before = Snapshot.of(site.authentik)
    with site.client(ATTACKER) as client:
        csrf = site.csrf(client)
        answers = [
            site.write(client, method, f"/api/v1/users/{username}/groups/{group}", csrf=csrf)
            for method in ("PUT", "POST", "DELETE")
        ]
    for answer in answers:
        assert_refused(answer)
    assert Snapshot.of(site.authentik) == before


def test_video_admin_cannot_make_itself_superuser_through_a_prefixed_superuser_group(site: Site) -> None:
    """`vid_ops` carries the prefix but Authentik makes its members superusers: joining it is an account takeover
    of the whole directory (and makes the attacker a directory admin here, able to act on TAK users)."""
    fake = site.authentik
    mallory, group = fake.user_named(ATTACKER), fake.group_named("vid_ops")
    assert mallory is not None and group is not None
    before = Snapshot.of(fake)
    try:
        with site.client(ATTACKER) as client:
            csrf = site.csrf(client)
            answers = [
                site.write(client, "PUT", f"/api/v1/users/{ATTACKER}/groups/vid_ops", csrf=csrf),
                site.write(client, "PUT", f"/api/v1/users/{PLAIN}/groups/vid_ops", csrf=csrf),
                site.write(client, "DELETE", "/api/v1/users/flagsuper/groups/vid_ops", csrf=csrf),
            ]
        for answer in answers:
            assert_refused(answer)
        assert Snapshot.of(fake) == before
    finally:
        flagsuper, plain = fake.user_named("flagsuper"), fake.user_named(PLAIN)
        assert flagsuper is not None and plain is not None
        group.members.discard(mallory.pk)
        group.members.discard(plain.pk)
        group.members.add(flagsuper.pk)
        # Until the sidecar reads Authentik again, it still takes the attacker for a superuser.
        wait_until(lambda: listing(site, ATTACKER)[TAK].get("account_actions") is not True)


# --- what the Users page is told ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("caller", "refused"),
    [
        (ATTACKER, {DIRECTORY_ADMIN, *SUPERUSERS, *TAK_PEOPLE}),
        (DIRECTORY_ADMIN, {DIRECTORY_ADMIN, *SUPERUSERS}),
    ],
)
def test_users_list_offers_account_actions_exactly_where_allowed(site: Site, caller: str, refused: set[str]) -> None:
    listed = listing(site, caller)
    assert set(PEOPLE) <= set(listed)
    for username in PEOPLE:
        user = listed[username]
        assert user.get("account_actions") is (username not in refused), user
        if username in refused:
            assert isinstance(user.get("account_note"), str) and user["account_note"], user
        else:
            assert "account_note" not in user, user
        # Only video groups are ever shown.
        assert all(group.startswith("vid_") for group in user["groups"]), user


# --- callers who are not admins at all -------------------------------------------------------------------------


@pytest.mark.parametrize(("caller", "status"), [(VIEWER, 403), (None, 401)])
def test_viewer_and_anonymous_reach_no_account_action(site: Site, caller: str | None, status: int) -> None:
    before = Snapshot.of(site.authentik)
    with site.client(caller) as client:
        csrf = site.csrf(client)
        if caller is not None:
            assert csrf is not None  # the viewer is signed in and has a token: only the role may stop them
        answers = [attempt(site, client, action, target, csrf) for action in ACTIONS for target in (PLAIN, "root", TAK)]
        answers.append(site.write(client, "PUT", f"/api/v1/users/{TAK}/groups/vid_admin", csrf=csrf))
        answers.append(client.get("/api/v1/users"))
    for answer in answers:
        assert_refused(answer, status)
    assert Snapshot.of(site.authentik) == before


# --- the last admin ----------------------------------------------------------------------------------------------

SOLO = "solo"
SECOND = "second"


def lone_admin_authentik() -> FakeAuthentik:
    """`solo` is the only *active* member of any admin group; a former superuser and a former admin are disabled."""
    fake = FakeAuthentik()
    fake.add_group("authentik Admins", superuser=True)
    for name in ("vid_admin", "vid_public", "tak_ops"):
        fake.add_group(name)
    fake.add_user(SOLO, "vid_admin", name="Solo", email="solo@example.org")
    fake.add_user("retired", "authentik Admins", name="Retired", email="retired@example.org", is_active=False)
    fake.add_user("former", "vid_admin", name="Former", email="former@example.org", is_active=False)
    fake.add_user(VIEWER, "vid_public", name="Viewer", email="viewer@example.org")
    return fake


@pytest.fixture(scope="module")
def lone(launch: Launch, start_caddy: Callable[..., Endpoint], process_dir: Path) -> Iterator[Site]:
    with authentik_site(
        "lone-admin",
        lone_admin_authentik(),
        launch=launch,
        start_caddy=start_caddy,
        process_dir=process_dir,
        group_cache_seconds="1",
    ) as found:
        yield found


@pytest.fixture
def solo_restored(lone: Site) -> Iterator[Site]:
    """Each last-admin attack starts with `solo` the lone active admin, and leaves it so whatever happened."""
    yield lone
    fake = lone.authentik
    solo, admin_group = fake.user_named(SOLO), fake.group_named("vid_admin")
    assert solo is not None and admin_group is not None
    second = fake.user_named(SECOND)
    if second is not None:
        for group in fake.groups.values():
            group.members.discard(second.pk)
        del fake.users[second.pk]
    admin_group.members.add(solo.pk)
    solo.is_active = True


def active_admins(fake: FakeAuthentik) -> set[str]:
    return {
        user.username
        for user in fake.users.values()
        if user.is_active and {g.name for g in fake.groups_of(user)} & {"vid_admin", "authentik Admins"}
    }


def assert_last_admin_refusal(answer: httpx.Response) -> None:
    assert is_json_error(answer, 409), (answer.status_code, answer.text)
    assert "last active admin" in answer.json()["error"]
    assert answer.json().get("field") == "username"


def test_lone_video_admin_cannot_remove_their_own_admin_group(solo_restored: Site) -> None:
    lone = solo_restored
    wait_until(lambda: role_of(lone, SOLO) == "admin")
    before = Snapshot.of(lone.authentik)
    with lone.client(SOLO) as client:
        csrf = lone.csrf(client)
        for _ in range(2):  # and again: the refusal changed nothing to retry against
            assert_last_admin_refusal(lone.write(client, "DELETE", f"/api/v1/users/{SOLO}/groups/vid_admin", csrf=csrf))
    with lone.service() as api:
        assert_last_admin_refusal(api.delete(f"/api/v1/users/{SOLO}/groups/vid_admin"))
    assert Snapshot.of(lone.authentik) == before
    assert active_admins(lone.authentik) == {SOLO}
    assert role_of(lone, SOLO) == "admin"


def test_lone_video_admin_cannot_deactivate_themselves(solo_restored: Site) -> None:
    """`solo` is only in vid_admin, so the account scope allows the action: the last-admin rule must refuse it."""
    lone = solo_restored
    wait_until(lambda: role_of(lone, SOLO) == "admin")
    before = Snapshot.of(lone.authentik)
    with lone.client(SOLO) as client:
        assert_last_admin_refusal(lone.write(client, "PATCH", f"/api/v1/users/{SOLO}", {"is_active": False}))
    with lone.service() as api:
        assert_last_admin_refusal(api.patch(f"/api/v1/users/{SOLO}", json={"is_active": False}))
    assert Snapshot.of(lone.authentik) == before
    assert active_admins(lone.authentik) == {SOLO}


def test_two_admins_racing_to_step_down_leave_an_active_admin(solo_restored: Site) -> None:
    """Both admins leave the admin group and deactivate themselves at the same moment, many times over."""
    lone = solo_restored
    fake = lone.authentik
    fake.add_user(SECOND, "vid_admin", name="Second", email="second@example.org")
    wait_until(lambda: role_of(lone, SOLO) == "admin" and role_of(lone, SECOND) == "admin")
    with lone.client(SOLO) as solo_client, lone.client(SECOND) as second_client:
        tokens = {SOLO: lone.csrf(solo_client), SECOND: lone.csrf(second_client)}

    def step_down(job: tuple[str, str]) -> httpx.Response:
        who, how = job
        with lone.client(who) as client:
            if how == "leave":
                return lone.write(client, "DELETE", f"/api/v1/users/{who}/groups/vid_admin", csrf=tokens[who])
            return lone.write(client, "PATCH", f"/api/v1/users/{who}", {"is_active": False}, csrf=tokens[who])

    jobs = [(who, how) for who in (SOLO, SECOND) for how in ("leave", "deactivate")] * 4
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        answers = list(pool.map(step_down, jobs))
    statuses = [answer.status_code for answer in answers]
    assert set(statuses) <= {200, 403, 409}, [(a.status_code, a.text) for a in answers]
    assert 409 in statuses
    assert len(active_admins(fake)) >= 1, "both admins stepped down: nobody is left to administer the site"


@pytest.mark.parametrize("target", [LONER, SLEEPER, OUTPOST])
@pytest.mark.parametrize("action", ACTIONS)
def test_video_admin_cannot_touch_accounts_outside_the_video_site(site: Site, target: str, action: str) -> None:
    """Accounts in no group (another app's people, someone an Authentik admin disabled) and the directory's machine
    accounts (an outpost's: disabling it takes single sign-on down) are not the video site's people."""
    before = Snapshot.of(site.authentik)
    since = max((int(e["id"]) for e in site.audit("user.denied")), default=0)
    with site.client(ATTACKER) as client:
        csrf = client.get("/api/v1/me").json()["csrf_token"]
        assert_refused(attempt(site, client, action, target, csrf))
    assert Snapshot.of(site.authentik) == before
    assert len(denials_since(site, since, ATTACKER)) == 1


def test_a_directory_admin_may_act_on_an_account_in_no_group_but_never_on_a_machine_account(site: Site) -> None:
    with site.client(DIRECTORY_ADMIN) as client:
        csrf = client.get("/api/v1/me").json()["csrf_token"]
        assert attempt(site, client, "recovery_link", LONER, csrf).status_code == 200
        before = Snapshot.of(site.authentik)
        assert_refused(attempt(site, client, "deactivate", OUTPOST, csrf))
    assert Snapshot.of(site.authentik) == before


def test_a_group_that_inherits_superuser_from_its_parent_cannot_be_joined(site: Site) -> None:
    before = Snapshot.of(site.authentik)
    with site.client(ATTACKER) as client:
        csrf = client.get("/api/v1/me").json()["csrf_token"]
        answer = site.write(client, "PUT", f"/api/v1/users/{PLAIN}/groups/vid_inherits", csrf=csrf)
    assert_refused(answer)
    assert Snapshot.of(site.authentik).groups == before.groups  # taken back at once
    plain = site.authentik.user_named(PLAIN)
    assert plain is not None and "vid_inherits" not in [g.name for g in site.authentik.groups_of(plain)]
