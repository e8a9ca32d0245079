"""`sidecar check`: what an operator should fix before going live, one line per check."""

from __future__ import annotations

from sidecar.keys import SECRET_FILES, loose_secret_files, secret_path
from sidecar.settings import Settings
from sidecar.store import Store

MIN_CADDY = (2, 11, 4)


def _caddy() -> tuple[bool, str]:
    from sidecar.processes import caddy_version

    try:
        found = caddy_version()
    except (OSError, RuntimeError, ValueError) as error:
        return False, f"caddy: not usable ({error})"
    wanted = ".".join(map(str, MIN_CADDY))
    have = ".".join(map(str, found))
    if found < MIN_CADDY:
        return False, f"caddy {have} is too old: {wanted} or newer is required (identity headers leak in older ones)"
    return True, f"caddy {have} (>= {wanted})"


def run_checks(settings: Settings) -> list[tuple[bool, str]]:
    results: list[tuple[bool, str]] = [(True, f"mode {settings.mode}")]
    if settings.mode == "authentik":
        results.append(
            (
                bool(settings.authentik_url),
                "SIDECAR_AUTHENTIK_URL is set"
                if settings.authentik_url
                else "SIDECAR_AUTHENTIK_URL is required in authentik mode",
            )
        )
        results.append(
            (
                settings.authentik_token is not None,
                "SIDECAR_AUTHENTIK_TOKEN is set"
                if settings.authentik_token
                else "SIDECAR_AUTHENTIK_TOKEN is required in authentik mode",
            )
        )
    results.append(
        (bool(settings.trusted_proxies), f"trusted proxies: {', '.join(settings.trusted_proxies) or 'none'}")
    )
    results.append((bool(settings.admin_groups), f"admin groups: {', '.join(settings.admin_groups) or 'none'}"))
    if not settings.data_dir.is_dir():
        results.append((False, f"data dir {settings.data_dir} is missing: run `sidecar bootstrap`"))
        results.append(_caddy())
        return results
    for name in SECRET_FILES:
        given = getattr(settings, name) is not None
        present = secret_path(settings, name).exists()
        results.append((given or present, f"{name}: {'from settings' if given else 'file' if present else 'missing'}"))
    for path in loose_secret_files(settings):
        results.append((False, f"{path} is readable by group or others: chmod 600 {path}"))
    try:
        store = Store(settings.database_path)
    except Exception as error:  # report any storage failure as a finding, not a traceback
        results.append((False, f"database {settings.database_path}: {error}"))
    else:
        try:
            results.append((True, f"database {settings.database_path}: {len(store.list_rules())} path rules"))
            if settings.mode == "local":
                admins = store.admin_count(settings.admin_groups)
                results.append(
                    (
                        admins > 0,
                        f"{admins} active admin(s)"
                        if admins
                        else "no active admin: run `sidecar bootstrap` or set one at /auth/login",
                    )
                )
        finally:
            store.close()
    results.append(_caddy())
    return results
