"""Path rules and people administration as services: validation, audit, live matcher and prefix limits."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import bcrypt
import pytest

from sidecar.bootstrap import bootstrap
from sidecar.errors import BadRequest, Forbidden, NotFoundError
from sidecar.identity import Role
from sidecar.runtime import Services, build_services
from sidecar.settings import Settings
from sidecar.store import VERSION_POLL_SECONDS
from tests.helpers import principal


@pytest.fixture
def settings(make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Bootstrapped local-mode settings, with the cheapest bcrypt cost: these tests are about rules, not hashing."""
    real_gensalt = bcrypt.gensalt
    monkeypatch.setattr(bcrypt, "gensalt", lambda rounds=4, prefix=b"2b": real_gensalt(4, prefix))
    found = make_settings()
    bootstrap(found, out=lambda line: None)
    return found


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    built = build_services(settings)
    yield built
    await built.aclose()


async def add_viewer(services: Services, username: str = "viewer", groups: tuple[str, ...] = ("vid_public",)) -> None:
    await services.users.add_user(username, list(groups), None, actor="test")


# -- RuleBook.set -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["live/**x", "a//b", "../x", "live/../x", "%", "", "live/x?y", None, 3, ["live/*"]])
async def test_set_rejects_invalid_pattern(services: Services, pattern: object) -> None:
    with pytest.raises(BadRequest) as caught:
        await services.rules.set(pattern, ["vid_public"], actor="admin")
    assert caught.value.field == "pattern"
    assert caught.value.status == 400
    assert services.rules.all() == {}
    assert services.store.list_audit(action="rule.set") == []


@pytest.mark.parametrize(
    "groups",
    [
        ["tak_admin"],
        ["vid_nonexistent"],
        ["vid_a|vid_b"],
        ["vid_public|vid_admin"],
        ["vid_public", "tak_admin"],
        "vid_public",
        None,
        [None],
        ["vid_public", 3],
        {"vid_public": True},
        ["VID_PUBLIC"],
        ["authentik Admins"],
    ],
)
async def test_set_rejects_invalid_groups(services: Services, groups: object) -> None:
    with pytest.raises(BadRequest) as caught:
        await services.rules.set("live/*", groups, actor="admin")
    assert caught.value.field == "groups"
    assert services.rules.all() == {}
    assert services.store.list_audit(action="rule.set") == []


async def test_set_stores_normalised_rule_writes_audit_and_updates_matcher_at_once(services: Services) -> None:
    rules = services.rules
    assert rules.matcher().match("live/cam1") is None
    assert not rules.decide(principal("vid_public"), "live/cam1", "read").allowed

    stored = await rules.set("/live/*", ["vid_public", "vid_private", "vid_public"], actor="boss")

    assert stored == ("live/*", ["vid_private", "vid_public"])
    assert rules.all() == {"live/*": ["vid_private", "vid_public"]}
    found = rules.matcher().match("live/cam1")
    assert found is not None
    assert found.pattern == "live/*"
    assert rules.decide(principal("vid_public"), "live/cam1", "read").allowed
    events = services.store.list_audit(action="rule.set")
    assert [(e.actor, e.target, e.detail) for e in events] == [
        ("boss", "live/*", {"groups": ["vid_private", "vid_public"]})
    ]


async def test_replacing_a_rule_takes_access_away_at_once(services: Services) -> None:
    rules = services.rules
    await rules.set("live/*", ["vid_public"], actor="boss")
    assert rules.decide(principal("vid_public"), "live/cam1", "read").allowed
    await rules.set("live/*", ["vid_private"], actor="boss")
    assert not rules.decide(principal("vid_public"), "live/cam1", "read").allowed
    assert rules.decide(principal("vid_private"), "live/cam1", "read").allowed


async def test_rule_change_by_a_second_process_is_seen_without_restart(services: Services, settings: Settings) -> None:
    viewer = principal("vid_public")
    assert not services.rules.decide(viewer, "live/cam1", "read").allowed
    cached = services.rules.matcher()

    cli = build_services(settings)
    try:
        await cli.rules.set("live/**", ["vid_public"], actor="cli")
        time.sleep(VERSION_POLL_SECONDS * 2)  # another process's commit shows once the poll interval is over
        assert services.rules.matcher() is not cached
        assert services.rules.decide(viewer, "live/cam1", "read").allowed

        cli.rules.delete("live/**", actor="cli")
        time.sleep(VERSION_POLL_SECONDS * 2)
        assert not services.rules.decide(viewer, "live/cam1", "read").allowed
    finally:
        await cli.aclose()


async def test_matcher_is_not_recompiled_without_a_change(services: Services) -> None:
    await services.rules.set("live/*", ["vid_public"], actor="boss")
    first = services.rules.matcher()
    assert services.rules.matcher() is first


# -- RuleBook.delete --------------------------------------------------------------------------------------------


async def test_delete_removes_rule_audits_and_updates_matcher(services: Services) -> None:
    await services.rules.set("live/*", ["vid_public"], actor="boss")
    assert services.rules.matcher().match("live/x") is not None
    services.rules.delete("/live/*", actor="boss")
    assert services.rules.all() == {}
    assert services.rules.matcher().match("live/x") is None
    assert [(e.actor, e.target) for e in services.store.list_audit(action="rule.delete")] == [("boss", "live/*")]


async def test_delete_of_unknown_pattern_is_not_found(services: Services) -> None:
    await services.rules.set("live/*", ["vid_public"], actor="boss")
    with pytest.raises(NotFoundError) as caught:
        services.rules.delete("live/**", actor="boss")
    assert caught.value.status == 404
    assert services.rules.all() == {"live/*": ["vid_public"]}
    assert services.store.list_audit(action="rule.delete") == []


async def test_delete_of_invalid_pattern_is_bad_request(services: Services) -> None:
    with pytest.raises(BadRequest) as caught:
        services.rules.delete("live/../x", actor="boss")
    assert caught.value.field == "pattern"


# -- explain ----------------------------------------------------------------------------------------------------


async def test_explain_for_a_user_names_rule_and_hides_unmanaged_groups(services: Services) -> None:
    await services.rules.set("live/**", ["vid_public"], actor="boss")
    await services.rules.set("live/private/*", ["vid_private"], actor="boss")
    await services.users.create_group("vid_pilots", actor="boss")
    await add_viewer(services, groups=("vid_public",))
    await services.directory.create_group("tak_users")
    await services.directory.add_to_group("viewer", "tak_users")

    allowed = await services.rules.explain("live/cam1", "read", username="viewer")
    assert allowed["allowed"] is True
    assert allowed["role"] == "viewer"
    assert allowed["groups"] == ["vid_public"]
    assert allowed["rule"] == {"pattern": "live/**", "groups": ["vid_public"]}

    denied = await services.rules.explain("live/private/x", "read", username="viewer")
    assert denied["allowed"] is False
    assert denied["rule"] == {"pattern": "live/private/*", "groups": ["vid_private"]}

    assert (await services.rules.explain("live/cam1", "publish", username="viewer"))["allowed"] is False
    admin = await services.rules.explain("live/private/x", "publish", username="admin")
    assert admin["allowed"] is True
    assert admin["role"] == "admin"


async def test_explain_for_a_group_preview(services: Services) -> None:
    await services.rules.set("live/private/*", ["vid_private"], actor="boss")
    preview = await services.rules.explain("live/private/x", "read", groups=["vid_private"])
    assert preview["allowed"] is True
    assert preview["user"] == "(preview)"
    assert preview["role"] == "viewer"
    other = await services.rules.explain("live/private/x", "read", groups=["vid_public"])
    assert other["allowed"] is False
    nothing = await services.rules.explain("live/private/x", "read", groups=[])
    assert nothing["allowed"] is False
    assert nothing["role"] == "none"


async def test_explain_for_unknown_user_is_not_found(services: Services) -> None:
    with pytest.raises(NotFoundError) as caught:
        await services.rules.explain("live/x", "read", username="ghost")
    assert caught.value.field == "user"


async def test_explain_without_user_or_groups_is_bad_request(services: Services) -> None:
    with pytest.raises(BadRequest) as caught:
        await services.rules.explain("live/x", "read")
    assert caught.value.field == "user"


async def test_explain_for_an_inactive_user_is_denied(services: Services) -> None:
    await services.rules.set("live/*", ["vid_public"], actor="boss")
    await add_viewer(services)
    assert (await services.rules.explain("live/x", "read", username="viewer"))["allowed"] is True
    await services.directory.set_active("viewer", False)
    explained = await services.rules.explain("live/x", "read", username="viewer")
    assert explained["allowed"] is False
    assert explained["role"] == Role.NONE.value


async def test_explain_for_an_inactive_admin_is_denied(services: Services) -> None:
    await services.directory.set_active("admin", False)
    explained = await services.rules.explain("live/x", "read", username="admin")
    assert explained["allowed"] is False


# -- visible ----------------------------------------------------------------------------------------------------


# -- UserAdmin --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("group", ["tak_admin", "tak_users", "authentik Admins", "VID_PUBLIC", "xvid_public"])
async def test_managing_a_non_prefixed_group_is_forbidden_and_audited(services: Services, group: str) -> None:
    with pytest.raises(Forbidden):
        await services.users.managed_group(group, actor="boss")
    events = services.store.list_audit(action="group.denied")
    assert [(e.actor, e.target) for e in events] == [("boss", group)]


async def test_group_name_with_separator_is_forbidden_and_audited(services: Services) -> None:
    with pytest.raises(Forbidden):
        await services.users.managed_group("vid_public|tak_admin", actor="boss")
    assert [e.target for e in services.store.list_audit(action="group.denied")] == ["vid_public|tak_admin"]


async def test_adding_a_user_to_a_tak_group_is_forbidden(services: Services) -> None:
    await services.directory.create_group("tak_admin")
    await add_viewer(services)
    with pytest.raises(Forbidden):
        await services.users.set_membership("viewer", "tak_admin", True, actor="boss")
    user = await services.directory.get_user("viewer")
    assert user is not None
    assert "tak_admin" not in user.groups
    assert len(services.store.list_audit(action="group.denied")) == 1


async def test_managed_group_unknown_prefixed_group_is_not_found(services: Services) -> None:
    with pytest.raises(NotFoundError):
        await services.users.managed_group("vid_nonexistent", actor="boss")
    assert (await services.users.managed_group("vid_public", actor="boss")).name == "vid_public"


async def test_list_users_never_shows_non_prefixed_groups(services: Services) -> None:
    await add_viewer(services)
    await services.directory.create_group("tak_users")
    await services.directory.add_to_group("viewer", "tak_users")
    raw = await services.directory.get_user("viewer")
    assert raw is not None
    assert set(raw.groups) == {"vid_public", "tak_users"}

    page = await services.users.list_users()
    listed = {user.username: user.groups for user in page.users}
    assert listed["viewer"] == ("vid_public",)
    assert all(group.startswith("vid_") for groups in listed.values() for group in groups)
    assert "tak_users" not in [group.name for group in await services.users.list_groups()]


async def test_list_users_rejects_bad_paging(services: Services) -> None:
    for page, size in ((0, 10), (1, 0), (1, 101)):
        with pytest.raises(BadRequest):
            await services.users.list_users(page=page, page_size=size)


@pytest.mark.parametrize("name", ["tak_admin", "public", "VID_x", "authentik Admins", "vid_a|vid_b", "vid_" + "x" * 80])
async def test_create_group_refuses_unprefixed_or_separator_names(services: Services, name: str) -> None:
    with pytest.raises(BadRequest) as caught:
        await services.users.create_group(name, actor="boss")
    assert caught.value.field == "name"
    assert name not in [group.name for group in await services.directory.list_groups()]


async def test_create_group_creates_once_and_audits(services: Services) -> None:
    assert await services.users.create_group("vid_pilots", actor="boss") is True
    assert await services.users.create_group("vid_pilots", actor="boss") is False
    assert "vid_pilots" in [group.name for group in await services.users.list_groups()]
    events = services.store.list_audit(action="group.create")
    assert [e.target for e in events if e.actor == "boss"] == ["vid_pilots"]


async def test_empty_groups_make_a_path_admins_only_under_a_broader_rule(services: Services) -> None:
    await services.rules.set("live/**", ["vid_public"], actor="test")
    await services.rules.set("live/mission", [], actor="test")
    viewer = services.roles.principal("v", ["vid_public"], source="test")
    admin = services.roles.principal("a", ["vid_admin"], source="test")
    assert services.rules.decide(viewer, "live/other", "read").allowed
    assert not services.rules.decide(viewer, "live/mission", "read").allowed
    assert services.rules.decide(admin, "live/mission", "read").allowed
