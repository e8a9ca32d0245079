"""What `sidecar demo` adds so the product's point shows: on a first start a viewer and the demo rules (through the
same services as the CLI and the HTTP API), and at every start a few live paths announced through the runOn* hook
MediaMTX would call."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import httpx

from sidecar.first_admin import never_had_admin
from sidecar.runtime import Services, run_with_services
from sidecar.settings import Settings
from sidecar.store import Store

ACTOR = "demo"
VIEWER = "viewer"
# Public paths for vid_public, the private one for vid_private, and the ops path with no rule: admins only.
PATHS = ("demo/public/lobby", "demo/public/gate", "demo/private/briefing", "demo/ops/drone1")
UNRULED = "demo/ops/**"


def rules(settings: Settings) -> dict[str, list[str]]:
    prefix = settings.group_prefix
    return {"demo/public/**": [prefix + "public"], "demo/private/**": [prefix + "private"]}


def never_held_account(settings: Settings) -> bool:
    """Whether the data dir has never held an account (asked before bootstrap makes the first admin)."""
    if not settings.database_path.exists():
        return True
    store = Store(settings.database_path)
    try:
        return never_had_admin(store)
    finally:
        store.close()


def seed(settings: Settings, out: Callable[[str], None]) -> None:
    """The demo viewer (random password, printed once) and the demo rules; for a data dir bootstrap just set up."""

    async def work(services: Services) -> None:
        if settings.initial_admin == VIEWER:
            out(f"no demo viewer: the first admin is already called {VIEWER}")
        else:
            password = secrets.token_urlsafe(15)
            user = await services.users.add_user(VIEWER, [settings.group_prefix + "public"], password, ACTOR)
            out(f"created demo viewer {user.username} in {', '.join(user.groups)}")
            out(f"viewer password: {password}")
            out("(shown once, like the admin's)")
        for pattern, groups in rules(settings).items():
            normal, saved = await services.rules.set(pattern, groups, ACTOR)
            out(f"demo rule {normal} -> {', '.join(saved)}")
        out(f"no rule for {UNRULED}: admins only")

    run_with_services(settings, work)


def announce(sidecar_url: str, api_key: str, paths: tuple[str, ...] = PATHS) -> list[str]:
    """Tell the sidecar `paths` are live, as MediaMTX's runOnReady hook does; the problems, if any (the sidecar keeps
    live paths in memory only, so this is done at every start)."""
    problems = []
    with httpx.Client(base_url=sidecar_url, timeout=5.0) as client:
        for path in paths:
            try:
                reply = client.post(
                    "/mediamtx/hooks/ready",
                    json={"path": path, "source_type": "demo"},
                    headers={"X-API-Key": api_key},
                )
            except httpx.HTTPError as error:
                problems.append(f"{path}: {error}")
                continue
            if reply.status_code != 204:
                problems.append(f"{path}: HTTP {reply.status_code} {reply.text[:200]}")
    return problems


def try_this(settings: Settings, port: int) -> list[str]:
    """The short walk-through printed after the URLs."""
    public, private = settings.group_prefix + "public", settings.group_prefix + "private"
    base = f"http://127.0.0.1:{port}"
    return [
        f"Try this ({', '.join(PATHS)} are announced as live):",
        f"  1. sign in as {VIEWER} at {base}/streams (a private window keeps the admin signed in elsewhere):",
        f"     only the two demo/public streams are listed ({public}); the private and ops ones are not",
        f"  2. sign in as {settings.initial_admin}, open Stream access ({base}/streams), tick {public} on",
        "     demo/private/briefing, and watch it appear in the viewer's list within a few seconds;",
        f"     demo/private/** is for {private}, and demo/ops/** has no rule, so only admins see demo/ops/drone1",
        "  3. playback needs a real MediaMTX: the demo has none, it only announces the paths the way MediaMTX's",
        "     runOnReady hook would, so Play finds no video",
    ]
