"""First run: data dir, secrets, the standard groups and (local mode) the first admin. Safe to run again."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable

from sidecar.first_admin import admin_group, make_first_admin, never_had_admin, write_setup_secret
from sidecar.keys import load_secrets
from sidecar.runtime import build_services
from sidecar.settings import Settings
from sidecar.users import UserAdmin

STANDARD_GROUPS = ("public", "private", "admin")


def bootstrap(settings: Settings, *, out: Callable[[str], None] = print, setup_secret: bool = False) -> bool:
    """Bring the data dir to a usable state; True when anything changed, False when all was already there.

    With `setup_secret`, the first admin is not created here: a one-time secret is written instead, with which the
    first admin is claimed on the sign-in page.
    """
    return asyncio.run(_bootstrap(settings, out, setup_secret))


async def _bootstrap(settings: Settings, out: Callable[[str], None], setup_secret: bool) -> bool:
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
        if never_had_admin(services.store):
            changed = True
            if setup_secret:
                secret = write_setup_secret(settings)
                out(f"setup secret: {secret}")
                out("(one use: open /auth/login on the site and enter it to create the first admin)")
            else:
                await _first_admin(settings, services.users, out)
        elif services.store.admin_count(settings.admin_groups) == 0:
            out(
                "no active admin: make one with "
                "`sidecar users set-password USERNAME --password-stdin --admin` (nothing else was changed)"
            )
        if not changed:
            out("nothing to do: already bootstrapped")
        return changed
    finally:
        await services.aclose()


async def _first_admin(settings: Settings, users: UserAdmin, out: Callable[[str], None]) -> None:
    given = settings.bootstrap_password.get_secret_value() if settings.bootstrap_password else None
    password = given or secrets.token_urlsafe(15)
    user = await make_first_admin(users, settings, settings.initial_admin, password, actor="bootstrap")
    out(f"created first admin {user.username}")
    if given is None:
        out(f"admin password: {password}")
        out("(shown once; change it after logging in)")
