"""`sidecar check`: what an operator should fix before going live, one line per check."""

from __future__ import annotations

from sidecar.keys import SECRET_FILES, loose_secret_files, secret_path
from sidecar.pending import pending_work
from sidecar.settings import Settings
from sidecar.storage_errors import open_problem, storage_problem, write_problem
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
    if settings.smtp_host:
        # Mailed links (request confirmations, reviews, passwords) are built from this, never from a request's Host.
        results.append(
            (
                bool(settings.public_url),
                f"public URL for mailed links: {settings.public_url}"
                if settings.public_url
                else "SIDECAR_PUBLIC_URL is required with SIDECAR_SMTP_HOST: without it no mailed link works and "
                "access requests cannot be confirmed by email",
            )
        )
    try:
        results.extend(_storage(settings))
    except Exception as error:  # a storage failure is a finding with what to fix, not a traceback
        problem = storage_problem(error, settings.data_dir, settings.database_path)
        results.append((False, problem.operator if problem else f"database {settings.database_path}: {error}"))
    results.append(_caddy())
    return results


def _storage(settings: Settings) -> list[tuple[bool, str]]:
    """The data dir, its secrets and the database; a storage problem is the sentence `sidecar serve` would stop
    with (or, for a full disk, warn with), and ends the storage checks."""
    results: list[tuple[bool, str]] = []
    if not settings.data_dir.is_dir():
        return [(False, f"data dir {settings.data_dir} is missing: run `sidecar bootstrap`")]
    problem = open_problem(settings, create=False) or write_problem(settings.data_dir, settings.database_path)
    if problem is not None:
        return [(False, problem.operator)]
    for name in SECRET_FILES:
        given = getattr(settings, name) is not None
        present = secret_path(settings, name).exists()
        results.append((given or present, f"{name}: {'from settings' if given else 'file' if present else 'missing'}"))
    for path in loose_secret_files(settings):
        results.append((False, f"{path} is readable by group or others: chmod 600 {path}"))
    store = Store(settings.database_path)
    try:
        results.append((True, f"database {settings.database_path}: {len(store.list_rules())} path rules"))
        if settings.mode == "local":
            admins = store.admin_count(settings.admin_groups)
            results.append(
                (
                    admins > 0,
                    f"{admins} active admin(s)"
                    if admins
                    else "no active admin: run `sidecar bootstrap` (a data dir that never held an account) or "
                    "`sidecar users set-password USERNAME --password-stdin --admin`",
                )
            )
        # Kicks and mail are normally done within seconds: anything still waiting means a dependency is failing.
        results.extend((False, f"waiting: {line}") for line in pending_work(store))
    finally:
        store.close()
    return results
