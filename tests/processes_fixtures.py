"""Session fixtures that run real processes on loopback: Caddy with the shipped Caddyfile, the sidecar, stand-ins."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from sidecar.processes import LoggedProcess, caddy_binary, free_port, repo_caddyfile, start_process, stop_process

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
ADMIN_PASSWORD = "admin-password-for-tests"
VIEWER_USER, VIEWER_PASSWORD = "bob", "bob-password-for-tests"
OUTPOST_AUTH_URI = "/outpost.goauthentik.io/auth/caddy"


@dataclass(frozen=True)
class Endpoint:
    """A started process listening on 127.0.0.1."""

    name: str
    port: int

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.hostport}"


@dataclass(frozen=True)
class SidecarInstance:
    endpoint: Endpoint
    data_dir: Path


Launch = Callable[..., LoggedProcess]


class ServedApp:
    """An ASGI app served by uvicorn in a thread of this process, on a loopback socket bound before it starts."""

    def __init__(self, app: Any) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", 0))
        self.port: int = self.socket.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint("served", self.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServedApp:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert time.monotonic() < deadline, "a stand-in server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.socket.close()


def child_env(**values: str) -> dict[str, str]:
    """The test runner's environment without anything that configures the sidecar or the Caddyfile."""
    caddy_vars = {"SITE_ADDRESS", "SIDECAR_UPSTREAM", "AUTH_UPSTREAM", "AUTH_URI", "CADDY_ADMIN"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_") and k not in caddy_vars}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env.update(values)
    return env


@pytest.fixture(scope="session")
def process_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("processes")


@pytest.fixture(scope="session")
def launch(process_dir: Path) -> Iterator[Launch]:
    """Starts a process (logging to `<name>.log` in process_dir) and stops everything it started at session end."""
    started: list[LoggedProcess] = []

    def _launch(
        name: str, argv: list[str], env: dict[str, str], *, ready_url: str | None = None, ready_port: int | None = None
    ) -> LoggedProcess:
        log_path = process_dir / f"{name}.log"
        proc = start_process(argv, env, ready_url=ready_url, ready_port=ready_port, cwd=process_dir, log_path=log_path)
        started.append(proc)
        return proc

    yield _launch
    for proc in reversed(started):
        stop_process(proc)


def _stand_in(launch: Launch, app: str, name: str) -> Endpoint:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "--app-dir", str(TESTS), f"stand_ins:{app}"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    launch(name, argv, child_env(STAND_IN_NAME=name), ready_port=port)
    return Endpoint(name, port)


@pytest.fixture(scope="session")
def echo_sidecar(launch: Launch) -> Endpoint:
    """Stands in for the sidecar where a test needs to see exactly which headers Caddy forwarded."""
    return _stand_in(launch, "echo", "sidecar")


@pytest.fixture(scope="session")
def echo_editor(launch: Launch) -> Endpoint:
    """Stands in for the vanilla editor and reports the headers it received."""
    return _stand_in(launch, "echo", "editor")


@pytest.fixture(scope="session")
def outpost_alice(launch: Launch) -> Endpoint:
    return _stand_in(launch, "outpost_alice", "outpost-alice")


@pytest.fixture(scope="session")
def outpost_anonymous(launch: Launch) -> Endpoint:
    return _stand_in(launch, "outpost_anonymous", "outpost-anonymous")


def _sidecar_env(data_dir: Path, **values: str) -> dict[str, str]:
    defaults = {"SIDECAR_MODE": "local", "SIDECAR_DATA_DIR": str(data_dir), "SIDECAR_LOG_LEVEL": "WARNING"}
    return child_env(**{**defaults, **values})


@pytest.fixture(scope="session")
def sidecar_data(process_dir: Path) -> Path:
    """A bootstrapped local-mode data dir with the admin `admin` and the viewer `bob` (vid_public)."""
    data_dir = process_dir / "sidecar-data"
    env = _sidecar_env(data_dir, SIDECAR_BOOTSTRAP_PASSWORD=ADMIN_PASSWORD)
    cli = [sys.executable, "-m", "sidecar"]
    for argv, stdin in (
        ([*cli, "bootstrap"], ""),
        ([*cli, "users", "add", VIEWER_USER, "--group", "vid_public", "--password-stdin"], VIEWER_PASSWORD + "\n"),
    ):
        done = subprocess.run(argv, env=env, cwd=process_dir, input=stdin, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{' '.join(argv[2:])} failed:\n{done.stdout}\n{done.stderr}"
    return data_dir


def serve_sidecar(launch: Launch, name: str, data_dir: Path, **settings: str) -> tuple[Endpoint, LoggedProcess]:
    """`sidecar serve` on a free loopback port for `data_dir` (local mode unless `mode=` says otherwise); the
    other keyword arguments are settings by field name (`editor_url=...` is SIDECAR_EDITOR_URL)."""
    port = free_port()
    values = {f"SIDECAR_{key.upper()}": value for key, value in settings.items()}
    env = _sidecar_env(data_dir, **{"SIDECAR_HOST": "127.0.0.1", "SIDECAR_PORT": str(port), **values})
    argv = [sys.executable, "-m", "sidecar", "serve"]
    proc = launch(name, argv, env, ready_url=f"http://127.0.0.1:{port}/healthz")
    return Endpoint(name, port), proc


def _start_sidecar(
    launch: Launch, name: str, data_dir: Path, trusted_proxies: str, editor: Endpoint
) -> SidecarInstance:
    endpoint, _ = serve_sidecar(launch, name, data_dir, trusted_proxies=trusted_proxies, editor_url=editor.url)
    return SidecarInstance(endpoint, data_dir)


@pytest.fixture(scope="session")
def sidecar(launch: Launch, sidecar_data: Path, echo_editor: Endpoint) -> SidecarInstance:
    """The real sidecar in local mode, trusting identity headers from loopback (where Caddy connects from), with
    the echo as its editor."""
    return _start_sidecar(launch, "sidecar-local", sidecar_data, "127.0.0.0/8,::1/128", echo_editor)


@pytest.fixture(scope="session")
def sidecar_untrusting(launch: Launch, sidecar_data: Path, echo_editor: Endpoint) -> SidecarInstance:
    """The same sidecar, but trusting only a range the tests never connect from."""
    return _start_sidecar(launch, "sidecar-untrusting", sidecar_data, "192.0.2.0/24", echo_editor)


@pytest.fixture(scope="session")
def start_caddy(launch: Launch, process_dir: Path) -> Callable[..., Endpoint]:
    """Runs the shipped Caddyfile with the given upstreams (the editor sits behind the sidecar); returns the site."""
    binary = str(caddy_binary())

    def _start(name: str, *, sidecar: Endpoint, auth: Endpoint, auth_uri: str) -> Endpoint:
        port = free_port()
        state = process_dir / name
        env = child_env(
            SITE_ADDRESS=f"http://127.0.0.1:{port}",
            SIDECAR_UPSTREAM=sidecar.hostport,
            AUTH_UPSTREAM=auth.hostport,
            AUTH_URI=auth_uri,
            CADDY_ADMIN="off",
            XDG_CONFIG_HOME=str(state),
            XDG_DATA_HOME=str(state),
        )
        argv = [binary, "run", "--config", str(repo_caddyfile()), "--adapter", "caddyfile"]
        launch(name, argv, env, ready_port=port)
        return Endpoint(name, port)

    return _start


@pytest.fixture(scope="session")
def caddy_local(start_caddy: Callable[..., Endpoint], sidecar: SidecarInstance) -> Endpoint:
    """Local mode: the sidecar is Caddy's forward-auth target; the editor behind it is an echo."""
    ep = sidecar.endpoint
    return start_caddy("caddy-local", sidecar=ep, auth=ep, auth_uri="/auth/verify")


@pytest.fixture(scope="session")
def caddy_alice(start_caddy: Callable[..., Endpoint], sidecar: SidecarInstance, outpost_alice: Endpoint) -> Endpoint:
    """Authentik mode, with an outpost that vouches for alice (vid_public) on every request."""
    return start_caddy("caddy-alice", sidecar=sidecar.endpoint, auth=outpost_alice, auth_uri=OUTPOST_AUTH_URI)


@pytest.fixture(scope="session")
def caddy_anonymous(
    start_caddy: Callable[..., Endpoint], sidecar: SidecarInstance, outpost_anonymous: Endpoint
) -> Endpoint:
    """Authentik mode, with an outpost that answers 200 without identity (Authentik's unauthenticated paths)."""
    return start_caddy("caddy-anonymous", sidecar=sidecar.endpoint, auth=outpost_anonymous, auth_uri=OUTPOST_AUTH_URI)


@pytest.fixture(scope="session", params=["outpost-alice", "outpost-anonymous"])
def caddy_echo(
    request: pytest.FixtureRequest, start_caddy: Callable[..., Endpoint], echo_sidecar: Endpoint
) -> tuple[Endpoint, Endpoint]:
    """Authentik mode with an echo as the sidecar, so every forwarded header is visible; (caddy, outpost)."""
    outpost: Endpoint = request.getfixturevalue(request.param.replace("-", "_"))
    caddy = start_caddy(f"caddy-echo-{request.param}", sidecar=echo_sidecar, auth=outpost, auth_uri=OUTPOST_AUTH_URI)
    return caddy, outpost
