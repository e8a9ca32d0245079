"""First run: data dir, secrets, the standard groups and (local mode) the first admin. Safe to run again."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable

from sidecar.directory import User
from sidecar.keys import load_secrets
from sidecar.passwords import check_strength
from sidecar.runtime import build_services
from sidecar.settings import Settings
from sidecar.users import UserAdmin

STANDARD_GROUPS = ("public", "private", "admin")


def admin_group(settings: Settings) -> str:
    """The group the first admin joins: the first admin group with the prefix, else `<prefix>admin`."""
    return next(
        (g for g in settings.admin_groups if g.startswith(settings.group_prefix)), settings.group_prefix + "admin"
    )


def bootstrap(settings: Settings, *, out: Callable[[str], None] = print) -> bool:
    """Bring the data dir to a usable state; True when anything changed, False when all was already there."""
    return asyncio.run(_bootstrap(settings, out))


async def _bootstrap(settings: Settings, out: Callable[[str], None]) -> bool:
    existed = settings.data_dir.exists()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.data_dir.chmod(0o700)
    if not existed:
        out(f"created data directory {settings.data_dir}")
    _, created = load_secrets(settings)
    for name in created:
        out(f"generated {name} in {settings.data_dir / name} (mode 0600)")
    changed = bool(created) or not existed
    services = build_services(settings)
    try:
        if settings.mode != "local":
            out("authentik mode: groups are managed in Authentik; nothing to create here")
            return changed
        groups = [settings.group_prefix + suffix for suffix in STANDARD_GROUPS]
        for group in dict.fromkeys([*groups, admin_group(settings)]):
            if await services.users.create_group(group, actor="bootstrap"):
                out(f"created group {group}")
                changed = True
        assert services.sessions is not None
        if services.sessions.first_admin_open(settings.admin_groups):
            changed = True
            await _first_admin(settings, services.users, out)
        if not changed:
            out("nothing to do: already bootstrapped")
        return changed
    finally:
        await services.aclose()


async def make_first_admin(users: UserAdmin, settings: Settings, username: str, password: str, actor: str) -> User:
    """Create (or revive) the first admin. The password is checked before anything changes."""
    check_strength(password)
    group = admin_group(settings)
    await users.create_group(group, actor=actor)
    if await users.directory.get_user(username) is None:
        await users.add_user(username, [group], password, actor=actor)
    else:
        await users.directory.set_password(username, password)
        await users.set_membership(username, group, True, actor=actor)
        await users.directory.set_active(username, True)
    user = await users.directory.get_user(username)
    assert user is not None
    return user


async def _first_admin(settings: Settings, users: UserAdmin, out: Callable[[str], None]) -> None:
    given = settings.bootstrap_password.get_secret_value() if settings.bootstrap_password else None
    password = given or secrets.token_urlsafe(15)
    user = await make_first_admin(users, settings, settings.initial_admin, password, actor="bootstrap")
    out(f"created first admin {user.username}")
    if given is None:
        out(f"admin password: {password}")
        out("(shown once; change it after logging in)")
