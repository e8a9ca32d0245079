"""`sidecar demo`: local mode on one machine — Caddy in front of the sidecar and a stand-in MediaMTX editor, with a
demo viewer, demo rules (first start only) and demo paths announced as live (every start), see sidecar/demo_seed.py."""

from __future__ import annotations

import os
import secrets
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from sidecar import demo_seed
from sidecar.bootstrap import bootstrap
from sidecar.keys import load_secrets
from sidecar.processes import (
    MIN_CADDY_VERSION,
    LoggedProcess,
    ProcessStartError,
    caddy_binary,
    caddy_version,
    free_port,
    repo_caddyfile,
    start_process,
    stop_process,
)
from sidecar.settings import Settings


class _Stop(Exception):
    """SIGTERM, turned into an exception so the same cleanup runs as for Ctrl-C."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def _say(line: str = "") -> None:
    # Flushed line by line: the passwords must reach a pipe or a log (`make run | tee`) while the demo runs.
    print(line, flush=True)


def _child_env(**values: str) -> dict[str, str]:
    env = dict(os.environ)
    # `python -m sidecar` must work from any directory, installed or not.
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    env.update(values)
    return env


def run_demo(port: int = 8080) -> int:
    """Bootstrap, start the demo editor, the sidecar and Caddy on `port`, and run until Ctrl-C or SIGTERM."""
    caddy = caddy_binary()
    version = caddy_version(caddy)
    if version < MIN_CADDY_VERSION:
        wanted = ".".join(map(str, MIN_CADDY_VERSION))
        print(f"error: {caddy} is Caddy {'.'.join(map(str, version))}; the demo needs >= {wanted}", file=sys.stderr)
        return 2
    settings = Settings().model_copy(update={"mode": "local"})
    data_dir = settings.data_dir.resolve()
    first_start = demo_seed.never_held_account(settings)
    bootstrap(settings, out=_say)
    if first_start:
        demo_seed.seed(settings, out=_say)
    api_key = load_secrets(settings)[0].api_key
    logs = data_dir / "logs"
    logs.mkdir(exist_ok=True)

    editor_port, sidecar_port = free_port(), free_port()
    editor_password = secrets.token_urlsafe(12)
    sidecar = f"127.0.0.1:{sidecar_port}"
    children: list[LoggedProcess] = []
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        children.append(
            start_process(
                [sys.executable, "-m", "sidecar.demo_editor", "--port", str(editor_port)],
                _child_env(DEMO_EDITOR_USERNAME="admin", DEMO_EDITOR_PASSWORD=editor_password),
                ready_url=f"http://127.0.0.1:{editor_port}/api/status",
                log_path=logs / "demo-editor.log",
            )
        )
        children.append(
            start_process(
                [sys.executable, "-m", "sidecar", "serve"],
                _child_env(
                    SIDECAR_MODE="local",
                    SIDECAR_DATA_DIR=str(data_dir),
                    SIDECAR_HOST="127.0.0.1",
                    SIDECAR_PORT=str(sidecar_port),
                    # Caddy reaches the sidecar over loopback; nothing else may vouch for an identity.
                    SIDECAR_TRUSTED_PROXIES="127.0.0.0/8,::1/128",
                    # The demo itself calls the runOn* hooks from loopback, as a MediaMTX beside the sidecar would.
                    SIDECAR_MEDIAMTX_ALLOWED_IPS="127.0.0.0/8,::1/128",
                    SIDECAR_DEMO="true",
                    # Only the sidecar talks to the editor: admins reach it through its proxy, with the overlay,
                    # signed in as the editor's own admin, so its login page never shows.
                    SIDECAR_EDITOR_URL=f"http://127.0.0.1:{editor_port}",
                    SIDECAR_EDITOR_USERNAME="admin",
                    SIDECAR_EDITOR_PASSWORD=editor_password,
                ),
                ready_url=f"http://{sidecar}/healthz",
                log_path=logs / "sidecar.log",
            )
        )
        problems = demo_seed.announce(f"http://{sidecar}", api_key)
        for problem in problems:
            print(f"warning: demo path not announced: {problem}", file=sys.stderr, flush=True)
        children.append(
            start_process(
                [str(caddy), "run", "--config", str(repo_caddyfile()), "--adapter", "caddyfile"],
                _child_env(
                    SITE_ADDRESS=f"http://127.0.0.1:{port}",
                    SIDECAR_UPSTREAM=sidecar,
                    AUTH_UPSTREAM=sidecar,
                    AUTH_URI="/auth/verify",
                    # No admin API, so the demo never clashes with a Caddy already running on this machine,
                    # and Caddy's own state stays inside the demo's data directory.
                    CADDY_ADMIN="off",
                    XDG_CONFIG_HOME=str(data_dir / "caddy"),
                    XDG_DATA_HOME=str(data_dir / "caddy"),
                ),
                ready_port=port,
                log_path=logs / "caddy.log",
            )
        )
        admin, viewer = settings.initial_admin, demo_seed.VIEWER
        lines = [
            "",
            f"Demo running at http://127.0.0.1:{port}/",
            f"  sign in as {admin} or {viewer} (passwords: printed above on the first start, or the ones you set);",
            "  /users manages people, /streams is what viewers see; admins land in the stand-in editor at / without",
            "  its own login (the sidecar signs in for them)",
            f"  logs: {logs}",
            "",
            *demo_seed.try_this(settings, port),
            "",
            "Press Ctrl-C to stop.",
        ]
        for line in lines:
            _say(line)
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        dead = next(child for child in children if child.poll() is not None)
        print(f"error: {dead.argv[0]} {' '.join(dead.argv[1:3])} exited:\n{dead.output_tail()}", file=sys.stderr)
        return 1
    except ProcessStartError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, _Stop):
        print("\nstopping")
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        for child in reversed(children):
            stop_process(child)
