"""`sidecar demo` as a person runs it (`make run`): a real process in an empty working directory, checked through
the demo's own Caddy. The first start makes a viewer and the demo rules and prints both passwords once; every start
announces the demo paths through the runOn* hook; the rules decide who sees which; a second start changes nothing;
Ctrl-C (SIGTERM here) leaves no child behind."""

from __future__ import annotations

import re
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from sidecar.processes import LoggedProcess, free_port, start_process, stop_process
from tests.processes_fixtures import child_env

pytestmark = pytest.mark.caddy

PUBLIC = ["demo/public/gate", "demo/public/lobby"]
ALL = ["demo/ops/drone1", "demo/private/briefing", *PUBLIC]
READY_LINE = "Press Ctrl-C to stop."


@dataclass
class Demo:
    proc: LoggedProcess
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_demo(workdir: Path, name: str) -> Demo:
    """`sidecar demo --port N` in `workdir`, once it has printed its walk-through (Caddy answers before that)."""
    port = free_port()
    log = workdir / f"{name}.log"
    env = child_env(SIDECAR_DATA_DIR=str(workdir / "data"), SIDECAR_LOG_LEVEL="WARNING")
    argv = [sys.executable, "-m", "sidecar", "demo", "--port", str(port)]
    proc = start_process(argv, env, ready_port=port, timeout=60, cwd=workdir, log_path=log)
    demo = Demo(proc, port, log)
    deadline = time.monotonic() + 30
    while READY_LINE not in demo.output():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            pytest.fail(f"the demo did not finish starting:\n{demo.output()}")
        time.sleep(0.1)
    return demo


def password_of(output: str, who: str) -> str:
    found = re.findall(rf"^{who} password: (\S+)$", output, re.MULTILINE)
    assert len(found) == 1, output
    return str(found[0])


def sign_in(demo: Demo, username: str, password: str) -> httpx.Client:
    """A client signed in through the demo's Caddy, with the session cookie, like a browser."""
    client = httpx.Client(base_url=demo.base, timeout=15)
    reply = client.post("/auth/login", json={"username": username, "password": password})
    assert reply.status_code == 200, reply.text
    assert client.cookies.get("sidecar_session")
    return client


def stream_names(client: httpx.Client) -> list[str]:
    reply = client.get("/api/v1/streams")
    assert reply.status_code == 200, reply.text
    return sorted(stream["name"] for stream in reply.json()["streams"])


def stop_and_check(demo: Demo) -> tuple[int, list[int], str]:
    """SIGTERM, as `timeout` or a service manager sends; the exit code, the children it had, and its output."""
    children = [child.pid for child in psutil.Process(demo.proc.pid).children(recursive=True)]
    demo.proc.send_signal(signal.SIGTERM)
    code = demo.proc.wait(30)
    output = demo.output()
    stop_process(demo.proc)
    return code, children, output


def still_running(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo")


@pytest.fixture(scope="module")
def first(workdir: Path) -> Iterator[Demo]:
    demo = start_demo(workdir, "first")
    yield demo
    stop_process(demo.proc)


@pytest.fixture(scope="module")
def passwords(first: Demo) -> dict[str, str]:
    output = first.output()
    return {"admin": password_of(output, "admin"), "viewer": password_of(output, "viewer")}


@pytest.fixture(scope="module")
def admin(first: Demo, passwords: dict[str, str]) -> Iterator[httpx.Client]:
    client = sign_in(first, "admin", passwords["admin"])
    yield client
    client.close()


@pytest.fixture(scope="module")
def viewer(first: Demo, passwords: dict[str, str]) -> Iterator[httpx.Client]:
    client = sign_in(first, "viewer", passwords["viewer"])
    yield client
    client.close()


@pytest.fixture(scope="module")
def ticked(first: Demo, admin: httpx.Client) -> httpx.Response:
    """The admin ticks vid_public on demo/private/briefing, as the streams page does (exact rule, CSRF, Origin)."""
    csrf = admin.get("/api/v1/me").json()["csrf_token"]
    return admin.put(
        "/api/v1/rules",
        json={"pattern": "demo/private/briefing", "groups": ["vid_private", "vid_public"]},
        headers={"Origin": first.base, "X-CSRF-Token": csrf},
    )


@dataclass
class Stopped:
    code: int
    children: list[int]
    output: str
    rules: object
    users: object


@pytest.fixture(scope="module")
def stopped_first(first: Demo, admin: httpx.Client, ticked: httpx.Response) -> Stopped:
    rules, users = admin.get("/api/v1/rules").json(), admin.get("/api/v1/users").json()
    code, children, output = stop_and_check(first)
    return Stopped(code, children, output, rules, users)


@pytest.fixture(scope="module")
def second(workdir: Path, stopped_first: Stopped) -> Iterator[Demo]:
    demo = start_demo(workdir, "second")
    yield demo
    stop_process(demo.proc)


def test_first_start_prints_both_passwords_once_and_what_to_try(first: Demo, passwords: dict[str, str]) -> None:
    output = first.output()
    assert passwords["admin"] != passwords["viewer"]
    assert "created demo viewer viewer in vid_public" in output
    assert output.index("admin password:") < output.index("viewer password:") < output.index("Demo running at")
    walkthrough = output[output.index("Try this") :]
    for expected in ("sign in as viewer", "tick vid_public", "demo/private/briefing", "needs a real MediaMTX"):
        assert expected in walkthrough
    assert "warning" not in output


def test_the_demos_streams_page_says_playback_needs_mediamtx(viewer: httpx.Client) -> None:
    page = viewer.get("/streams", headers={"Accept": "text/html"})
    assert page.status_code == 200 and 'id="demo-note"' in page.text and "needs a real MediaMTX" in page.text


def test_viewer_sees_exactly_the_public_demo_paths(viewer: httpx.Client) -> None:
    assert stream_names(viewer) == PUBLIC


def test_admin_sees_all_four_demo_paths_and_the_rules_that_decide(admin: httpx.Client) -> None:
    reply = admin.get("/api/v1/streams")
    assert reply.status_code == 200
    deciding = {s["name"]: (s["rule"] or {}).get("pattern") for s in reply.json()["streams"]}
    assert deciding == {
        "demo/public/lobby": "demo/public/**",
        "demo/public/gate": "demo/public/**",
        "demo/private/briefing": "demo/private/**",
        "demo/ops/drone1": None,  # no rule: admins only
    }
    rules = {r["pattern"]: r["groups"] for r in admin.get("/api/v1/rules").json()["rules"]}
    assert rules == {"demo/public/**": ["vid_public"], "demo/private/**": ["vid_private"]}


def test_ticking_vid_public_on_the_briefing_shows_it_to_the_viewer(
    viewer: httpx.Client, ticked: httpx.Response
) -> None:
    assert ticked.status_code == 200, ticked.text
    assert ticked.json() == {"pattern": "demo/private/briefing", "groups": ["vid_private", "vid_public"]}
    assert stream_names(viewer) == sorted([*PUBLIC, "demo/private/briefing"])


def test_demo_stops_cleanly_and_leaves_no_child(first: Demo, stopped_first: Stopped) -> None:
    assert stopped_first.code == 0, stopped_first.output
    assert len(stopped_first.children) >= 3  # the demo editor, the sidecar and Caddy
    assert still_running(stopped_first.children) == []
    assert stopped_first.output.rstrip().endswith("stopping")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{first.base}/healthz", timeout=2)


def test_second_start_changes_nothing_and_prints_no_password(
    second: Demo, stopped_first: Stopped, passwords: dict[str, str]
) -> None:
    output = second.output()
    assert "password:" not in output
    assert "created" not in output
    assert "nothing to do: already bootstrapped" in output
    admin, viewer = sign_in(second, "admin", passwords["admin"]), sign_in(second, "viewer", passwords["viewer"])
    try:
        # The admin's own change survives, and nothing was added or reset.
        assert admin.get("/api/v1/rules").json() == stopped_first.rules
        assert admin.get("/api/v1/users").json() == stopped_first.users
        assert stream_names(admin) == ALL  # announced again: live paths are kept in memory only
        assert stream_names(viewer) == sorted([*PUBLIC, "demo/private/briefing"])
    finally:
        admin.close()
        viewer.close()
    code, children, _ = stop_and_check(second)
    assert code == 0
    assert still_running(children) == []
