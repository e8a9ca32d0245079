"""Attack class: becoming the first admin, and leaving the site without one.

Through the real Caddy with the shipped Caddyfile (local mode), each against a sidecar process and data dir of its
own, an outsider tries to take the site over the way the old first-admin step allowed:

- the last active admin removes their own `vid_admin` membership or deactivates themselves (with a session, with
  the automation key, with re-encoded paths and loose JSON), and two admins demote/deactivate each other with many
  parallel requests, so that no active admin would be left (on one sidecar process, and on two processes sharing
  the data dir, as several instances behind one Caddy would);
- on a data dir whose admin group was renamed (`SIDECAR_ADMIN_GROUPS=vid_boss`, so nobody is an admin), an anonymous
  `PUT /auth/password` names an existing user (with and without a guessed, empty, planted or leftover setup secret,
  as JSON and as a form) to set their password, make them admin and reactivate them; the sign-in page must not
  offer the step, and `sidecar bootstrap --setup-secret` must not reopen it;
- on a fresh data dir prepared with `sidecar bootstrap --setup-secret`: wrong, altered and mistyped secrets; many
  simultaneous claims with the right secret (exactly one may win); a replay after the claim; and the step must be
  closed as soon as any account exists (`sidecar users add` first), so no existing account can be claimed;
- and the operator's way back: `sidecar users set-password USERNAME --password-stdin --admin` on the renamed-group
  data dir makes the locked-out owner an active admin again (from the shell only).

State is read from the data dir's SQLite file after each attack: password hashes, admin memberships, active flags
and the number of accounts must be exactly what they were.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from sidecar.bootstrap import bootstrap
from sidecar.processes import free_port
from sidecar.runtime import Services, run_with_services
from sidecar.settings import Settings
from tests import raw_http
from tests.helpers import cheapen_bcrypt
from tests.processes_fixtures import Endpoint, Launch, child_env
from tests.raw_http import Reply
from tests.security.parallel_stacks import build_each, ready

pytestmark = pytest.mark.caddy

JSON = "application/json"
BROWSER = "text/html,application/xhtml+xml,*/*;q=0.8"
OWNER, OWNER_PASSWORD = "admin", "owner-password-for-first-admin-tests"
CAROL, CAROL_PASSWORD = "carol", "carol-password-for-first-admin-tests"
BOB, BOB_PASSWORD = "bob", "bob-password-for-first-admin-tests"
TAKEOVER_PASSWORD = "attacker-chose-this-password"
RECOVERED_PASSWORD = "recovered-from-the-shell-1"
RENAMED_ADMIN_GROUP = "vid_boss"
LAST_ADMIN = "last active admin"
FIRST_ADMIN_MARKERS = ("first-admin", "setup_secret", "Create the first admin", "Set the first admin password")
CLI = [sys.executable, "-m", "sidecar"]


# --- raw HTTP through Caddy -----------------------------------------------------------------------------------------


def send(
    endpoint: Endpoint,
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]] = (),
    *,
    body: bytes | None = None,
    accept: str = JSON,
) -> Reply:
    return raw_http.send(endpoint, target, headers, method=method, body=body, accept=accept)


def send_json(
    endpoint: Endpoint, method: str, target: str, payload: Any, headers: Sequence[tuple[str, str]] = ()
) -> Reply:
    return send(endpoint, method, target, [("Content-Type", JSON), *headers], body=json.dumps(payload).encode())


def assert_json_error(reply: Reply, statuses: Sequence[int]) -> dict[str, Any]:
    """A refusal in the API's shape: one of `statuses`, a JSON object with an `error` string, no session cookie."""
    assert reply.status in statuses, (reply.status, reply.body[:300])
    body = reply.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body
    assert not reply.sets_session, reply.headers
    return body


Request = tuple[Endpoint, str, str, bytes | None, list[tuple[str, str]]]  # where, method, target, body, headers


def _raw_request(
    endpoint: Endpoint, method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes | None
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {endpoint.hostport}", f"Accept: {JSON}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def all_at_once(requests: Sequence[Request]) -> list[Reply]:
    """Send every request on its own connection, all but the last byte first, then the last bytes together (released
    by a barrier), so the servers start on them at the same moment; the replies in the same order."""
    barrier = threading.Barrier(len(requests))

    def fire(request: Request) -> Reply:
        endpoint, method, target, body, headers = request
        raw = _raw_request(endpoint, method, target, headers, body)
        with socket.create_connection(("127.0.0.1", endpoint.port), timeout=30) as sock:
            sock.sendall(raw[:-1])
            barrier.wait(timeout=30)
            sock.sendall(raw[-1:])
            response = http.client.HTTPResponse(sock)
            response.begin()
            return Reply(response.status, response.getheaders(), response.read())

    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        return list(pool.map(fire, requests))


# --- the stacks: a data dir, its sidecar, and Caddy in front ----------------------------------------------------------


@dataclass
class Stack:
    """One local-mode sidecar process with its own data dir, behind its own Caddy."""

    name: str
    data_dir: Path
    env: dict[str, str]
    printed_secret: str = ""
    caddy: Endpoint = field(default_factory=lambda: Endpoint("unset", 0))
    replicas: list[Endpoint] = field(default_factory=list)  # more sidecar instances on this data dir, own Caddy each
    instances: int = 1
    broken: str = ""  # why this stack could not be prepared or started (only its own tests fail then)

    @property
    def site(self) -> str:
        return self.caddy.url

    @property
    def database(self) -> Path:
        return self.data_dir / "sidecar.db"

    @property
    def setup_secret_file(self) -> Path:
        return self.data_dir / "setup_secret"

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=10)
        try:
            return [tuple(row) for row in db.execute(sql, tuple(params)).fetchall()]
        finally:
            db.close()

    def accounts(self) -> dict[str, tuple[str, int, tuple[str, ...]]]:
        """username -> (password hash, is_active, sorted groups), read from the data dir itself."""
        found: dict[str, tuple[str, int, tuple[str, ...]]] = {}
        for username, password_hash, active in self.rows("SELECT username, password_hash, is_active FROM users"):
            groups = self.rows("SELECT group_name FROM memberships WHERE username = ? ORDER BY group_name", (username,))
            found[username] = (str(password_hash or ""), int(active), tuple(str(g[0]) for g in groups))
        return found

    def active_admins(self, group: str = "vid_admin") -> list[str]:
        rows = self.rows(
            "SELECT DISTINCT m.username FROM memberships m JOIN users u ON u.username = m.username "
            "WHERE u.is_active = 1 AND m.group_name = ? ORDER BY m.username",
            (group,),
        )
        return [str(row[0]) for row in rows]

    def api_key(self) -> str:
        return (self.data_dir / "api_key").read_text().strip()

    def cli(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """`sidecar ARGS` as the operator runs it on the server: same environment and data dir as the service."""
        return subprocess.run(
            [*CLI, *args],
            env=self.env,
            cwd=self.data_dir.parent,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )


def _env(data_dir: Path, **values: str) -> dict[str, str]:
    return child_env(SIDECAR_MODE="local", SIDECAR_DATA_DIR=str(data_dir), SIDECAR_LOG_LEVEL="WARNING", **values)


def _prepare_in_process(
    data_dir: Path, people: Sequence[tuple[str, str, Sequence[str]]], inactive: Sequence[str] = ()
) -> None:
    """`sidecar bootstrap` (owner `admin`) and more people, with cheap bcrypt hashes so sign-ins stay fast."""
    settings = Settings(_env_file=None, data_dir=data_dir, bootstrap_password=OWNER_PASSWORD)  # type: ignore[call-arg]

    async def add(services: Services) -> None:
        for username, password, groups in people:
            await services.users.add_user(username, list(groups), password, "test-setup")

    with pytest.MonkeyPatch.context() as patch:
        cheapen_bcrypt(patch)
        bootstrap(settings, out=lambda line: None)
        if people:
            run_with_services(settings, add)
    if inactive:
        db = sqlite3.connect(data_dir / "sidecar.db")
        try:
            with db:
                db.executemany("UPDATE users SET is_active = 0 WHERE username = ?", [(u,) for u in inactive])
        finally:
            db.close()


def _prepare_with_cli(stack: Stack, add_bob: bool) -> None:
    """`sidecar bootstrap --setup-secret` (and, for one stack, `sidecar users add bob` right after)."""
    done = stack.cli("bootstrap", "--setup-secret")
    assert done.returncode == 0, f"bootstrap --setup-secret failed:\n{done.stdout}\n{done.stderr}"
    printed = [line.split(":", 1)[1].strip() for line in done.stdout.splitlines() if line.startswith("setup secret:")]
    assert len(printed) == 1 and printed[0], done.stdout
    stack.printed_secret = printed[0]
    if add_bob:
        added = stack.cli("users", "add", BOB, "--group", "vid_public", "--password-stdin", stdin=BOB_PASSWORD + "\n")
        assert added.returncode == 0, f"users add failed:\n{added.stdout}\n{added.stderr}"


def _serve(launch: Launch, start_caddy: Callable[..., Endpoint], stack: Stack) -> None:
    base_env = stack.env
    for index in range(stack.instances):
        port = free_port()
        env = {**base_env, "SIDECAR_HOST": "127.0.0.1", "SIDECAR_PORT": str(port)}
        name = f"first-admin-{stack.name}-{index}"
        launch(name, [*CLI, "serve"], env, ready_url=f"http://127.0.0.1:{port}/healthz")
        sidecar = Endpoint(name, port)
        caddy = start_caddy(f"caddy-{name}", sidecar=sidecar, auth=sidecar, auth_uri="/auth/verify")
        if index == 0:
            stack.env, stack.caddy = env, caddy
        else:
            stack.replicas.append(caddy)


@pytest.fixture(scope="module")
def stacks(launch: Launch, start_caddy: Callable[..., Endpoint], process_dir: Path) -> dict[str, Stack]:
    """Every stack of this module, prepared and started in parallel (the CLI and the interpreter start slowly)."""
    root = process_dir / "first-admin"
    root.mkdir(exist_ok=True)

    def stack(name: str, **env: str) -> Stack:
        return Stack(name, root / name, _env(root / name, **env))

    found = {
        # (a) one admin (the owner) and a viewer
        "lone": stack("lone"),
        # (a) two admins who demote each other
        "pair": stack("pair"),
        # (a) the same, served by two sidecar instances sharing the data dir
        "replicas": stack("replicas"),
        # (b) the admin group renamed on an existing data dir: nobody is an admin any more
        "renamed": stack("renamed", SIDECAR_ADMIN_GROUPS=RENAMED_ADMIN_GROUP),
        # (d) the same, with the owner deactivated too, recovered from the shell
        "recover": stack("recover", SIDECAR_ADMIN_GROUPS=RENAMED_ADMIN_GROUP),
        # (c) fresh data dirs prepared with `sidecar bootstrap --setup-secret`
        "fresh-wrong": stack("fresh-wrong"),
        "fresh-race": stack("fresh-race"),
        "fresh-user": stack("fresh-user"),
    }
    in_process = {
        "lone": ([(BOB, BOB_PASSWORD, ["vid_public"])], []),
        "pair": ([(CAROL, CAROL_PASSWORD, ["vid_admin"])], []),
        "replicas": ([(CAROL, CAROL_PASSWORD, ["vid_admin"])], []),
        "renamed": ([(BOB, BOB_PASSWORD, ["vid_public"])], []),
        "recover": ([(BOB, BOB_PASSWORD, ["vid_public"])], [OWNER]),
    }
    found["replicas"].instances = 2
    found["fresh-race"].instances = 2  # the claims race across two processes on one data dir
    for name, (people, inactive) in in_process.items():
        try:
            _prepare_in_process(found[name].data_dir, people, inactive)
        except Exception as error:  # noqa: BLE001 (reported by that stack's own tests)
            found[name].broken = f"{type(error).__name__}: {error}"

    def build(each: Stack) -> None:
        if each.name.startswith("fresh-"):
            _prepare_with_cli(each, add_bob=each.name == "fresh-user")
        _serve(launch, start_caddy, each)

    build_each(found, build)
    return found


@dataclass(frozen=True)
class Session:
    username: str
    token: str
    csrf: str
    site: str

    def headers(self) -> list[tuple[str, str]]:
        """What the sidecar's own page sends on a write: the cookie, the site's Origin and the CSRF token."""
        return [("Cookie", f"sidecar_session={self.token}"), ("Origin", self.site), ("X-CSRF-Token", self.csrf)]


def sign_in(stack: Stack, username: str, password: str, via: Endpoint | None = None) -> tuple[Session, str]:
    """Sign in through Caddy (the stack's, or `via`); the session and the role the sidecar answered with."""
    caddy = via or stack.caddy
    reply = send_json(caddy, "POST", "/auth/login", {"username": username, "password": password})
    assert reply.status == 200, (reply.status, reply.body[:300])
    token, role = reply.json()["token"], reply.json()["role"]
    me = send(caddy, "GET", "/api/v1/me", [("Cookie", f"sidecar_session={token}")])
    assert me.status == 200, (me.status, me.body[:300])
    return Session(username, token, me.json()["csrf_token"], caddy.url), role


def claim(stack: Stack, payload: dict[str, Any], *, origin: bool = True) -> Reply:
    """The first-admin step as login.js sends it: anonymous `PUT /auth/password` with a JSON body."""
    headers = [("Origin", stack.site)] if origin else []
    return send_json(stack.caddy, "PUT", "/auth/password", payload, headers)


def login_page(stack: Stack) -> str:
    reply = send(stack.caddy, "GET", "/auth/login", accept=BROWSER)
    assert reply.status == 200, reply.status
    return reply.body.decode()


def offers_first_admin_step(page: str) -> bool:
    return any(marker in page for marker in FIRST_ADMIN_MARKERS)


# --- (a) the last admin stays -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lone(stacks: dict[str, Stack]) -> Stack:
    return ready(stacks, "lone")


@pytest.fixture(scope="module")
def pair(stacks: dict[str, Stack]) -> Stack:
    return ready(stacks, "pair")


def assert_owner_still_the_admin(stack: Stack, before: dict[str, tuple[str, int, tuple[str, ...]]]) -> None:
    assert stack.accounts() == before
    assert stack.active_admins() == [OWNER]
    _, role = sign_in(stack, OWNER, OWNER_PASSWORD)
    assert role == "admin"


@pytest.mark.parametrize(
    "target",
    [
        "/api/v1/users/admin/groups/vid_admin",
        "/api/v1/users/%61dmin/groups/vid%5Fadmin",
        "/api/v1/users/admin/groups/vid%5fadmin?member=false",
    ],
)
def test_last_admin_cannot_remove_their_own_admin_group_through_caddy(lone: Stack, target: str) -> None:
    before = lone.accounts()
    session, _ = sign_in(lone, OWNER, OWNER_PASSWORD)
    reply = send(lone.caddy, "DELETE", target, session.headers())
    body = assert_json_error(reply, (409,))
    assert LAST_ADMIN in body["error"] and body.get("field") == "username", body
    assert_owner_still_the_admin(lone, before)


def test_last_admin_cannot_deactivate_themselves_through_caddy(lone: Stack) -> None:
    before = lone.accounts()
    session, _ = sign_in(lone, OWNER, OWNER_PASSWORD)
    for target in ("/api/v1/users/admin", "/api/v1/users/%61dmin"):
        reply = send_json(lone.caddy, "PATCH", target, {"is_active": False}, session.headers())
        body = assert_json_error(reply, (409,))
        assert LAST_ADMIN in body["error"] and body.get("field") == "username", body
    assert_owner_still_the_admin(lone, before)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"is_active": false, "is_active": false}',
        b'{"is_active": 0}',
        b'{"is_active": "false"}',
        b'{"is_active": null}',
        b'{"is_active": false, "is_active": true, "is_active": false}',
        b'{"is_active": false}\n{"is_active": true}',
    ],
    ids=["duplicate key", "zero", "string", "null", "last of three keys", "two documents"],
)
def test_last_admin_cannot_deactivate_themselves_with_loose_json(lone: Stack, raw: bytes) -> None:
    before = lone.accounts()
    session, _ = sign_in(lone, OWNER, OWNER_PASSWORD)
    reply = send(lone.caddy, "PATCH", "/api/v1/users/admin", [*session.headers(), ("Content-Type", JSON)], body=raw)
    assert_json_error(reply, (400, 409))
    assert_owner_still_the_admin(lone, before)


def test_automation_key_cannot_remove_or_deactivate_the_last_admin(lone: Stack) -> None:
    before = lone.accounts()
    key = [("X-API-Key", lone.api_key())]
    removed = send(lone.caddy, "DELETE", "/api/v1/users/admin/groups/vid_admin", key)
    assert LAST_ADMIN in assert_json_error(removed, (409,))["error"]
    deactivated = send_json(lone.caddy, "PATCH", "/api/v1/users/admin", {"is_active": False}, key)
    assert LAST_ADMIN in assert_json_error(deactivated, (409,))["error"]
    assert_owner_still_the_admin(lone, before)


def _restore_pair(pair: Stack) -> None:
    """Both carol and the owner active members of vid_admin again (with the automation key)."""
    key = [("X-API-Key", pair.api_key())]
    for username in (OWNER, CAROL):
        assert send(pair.caddy, "PUT", f"/api/v1/users/{username}/groups/vid_admin", key).status == 200
        assert send_json(pair.caddy, "PATCH", f"/api/v1/users/{username}", {"is_active": True}, key).status == 200
    assert pair.active_admins() == [OWNER, CAROL]


def _removal(via: Endpoint, session: Session, victim: str, how: str) -> Request:
    if how == "group":
        return via, "DELETE", f"/api/v1/users/{victim}/groups/vid_admin", None, session.headers()
    body = json.dumps({"is_active": False}).encode()
    return via, "PATCH", f"/api/v1/users/{victim}", body, [*session.headers(), ("Content-Type", JSON)]


@pytest.mark.parametrize("mix", ["group", "active", "mixed"])
def test_two_admins_demoting_each_other_at_once_leave_an_active_admin(pair: Stack, mix: str) -> None:
    _restore_pair(pair)
    owner, _ = sign_in(pair, OWNER, OWNER_PASSWORD)
    carol, _ = sign_in(pair, CAROL, CAROL_PASSWORD)
    hows = ["group", "active"] if mix == "mixed" else [mix]
    requests: list[Request] = []
    for round_ in range(6):
        how = hows[round_ % len(hows)]
        # each demotes the other and themselves, in every order
        requests += [
            _removal(pair.caddy, owner, CAROL, how),
            _removal(pair.caddy, carol, OWNER, how),
            _removal(pair.caddy, owner, OWNER, how),
            _removal(pair.caddy, carol, CAROL, how),
        ]
    replies = all_at_once(requests)
    statuses = sorted(reply.status for reply in replies)
    assert set(statuses) <= {200, 401, 403, 409}, statuses
    for reply in replies:
        if reply.status != 200:
            assert_json_error(reply, (401, 403, 409))
    survivors = pair.active_admins()
    assert len(survivors) >= 1, f"no active admin left after {statuses}"
    password = {OWNER: OWNER_PASSWORD, CAROL: CAROL_PASSWORD}
    _, role = sign_in(pair, survivors[0], password[survivors[0]])
    assert role == "admin"


@pytest.fixture(scope="module")
def replicas(stacks: dict[str, Stack]) -> Stack:
    stack = ready(stacks, "replicas")
    assert len(stack.replicas) == 1
    return stack


def test_two_admins_demoting_each_other_on_two_sidecar_instances_leave_an_active_admin(replicas: Stack) -> None:
    """The owner works through one instance, carol through another (both on the same data dir, as several instances
    behind one Caddy would be): each removes the other at the same moment. The race is retried until it either
    leaves no active admin or has been run often enough to say the guard holds."""
    other = replicas.replicas[0]
    key = [("X-API-Key", replicas.api_key())]
    owner, _ = sign_in(replicas, OWNER, OWNER_PASSWORD)
    carol, _ = sign_in(replicas, CAROL, CAROL_PASSWORD, via=other)
    statuses: list[list[int]] = []
    for _ in range(300):
        for username in (OWNER, CAROL):
            assert send(replicas.caddy, "PUT", f"/api/v1/users/{username}/groups/vid_admin", key).status == 200
        assert replicas.active_admins() == [OWNER, CAROL]
        requests = [_removal(replicas.caddy, owner, CAROL, "group"), _removal(other, carol, OWNER, "group")]
        statuses.append(sorted(reply.status for reply in all_at_once(requests)))
        if not replicas.active_admins():
            break
    assert replicas.active_admins(), f"no active admin left after round {len(statuses)}: {statuses[-1]}"


# --- (b) no admin left: the anonymous password step is closed ---------------------------------------------------------


@pytest.fixture(scope="module")
def renamed(stacks: dict[str, Stack]) -> Stack:
    stack = ready(stacks, "renamed")
    assert stack.active_admins(RENAMED_ADMIN_GROUP) == [] and stack.active_admins("vid_admin") == [OWNER]
    return stack


TAKEOVERS: dict[str, dict[str, Any]] = {
    "owner, no secret": {"username": OWNER, "password": TAKEOVER_PASSWORD},
    "owner, guessed secret": {"username": OWNER, "password": TAKEOVER_PASSWORD, "setup_secret": "guess"},
    "owner, empty secret": {"username": OWNER, "password": TAKEOVER_PASSWORD, "setup_secret": ""},
    "owner, secret null": {"username": OWNER, "password": TAKEOVER_PASSWORD, "setup_secret": None},
    "owner, secret true": {"username": OWNER, "password": TAKEOVER_PASSWORD, "setup_secret": True},
    "no username (initial admin)": {"password": TAKEOVER_PASSWORD, "setup_secret": "x" * 43},
    "viewer bob": {"username": BOB, "password": TAKEOVER_PASSWORD, "setup_secret": "guess"},
    "owner, with current_password guess": {
        "username": OWNER,
        "password": TAKEOVER_PASSWORD,
        "current_password": "admin",
        "setup_secret": "admin",
    },
    "new account": {"username": "mallory", "password": TAKEOVER_PASSWORD, "setup_secret": "guess"},
    "owner, other case": {"username": "ADMIN", "password": TAKEOVER_PASSWORD},
}


def assert_nothing_taken_over(stack: Stack, before: dict[str, tuple[str, int, tuple[str, ...]]]) -> None:
    assert stack.accounts() == before, "an account changed"
    assert stack.active_admins(RENAMED_ADMIN_GROUP) == []
    assert stack.rows("SELECT username FROM memberships WHERE group_name = ?", (RENAMED_ADMIN_GROUP,)) == []
    _, role = sign_in(stack, OWNER, OWNER_PASSWORD)  # the real owner's password still works
    assert role != "admin"


@pytest.mark.parametrize("origin", [True, False], ids=["browser", "script"])
@pytest.mark.parametrize("payload", list(TAKEOVERS.values()), ids=list(TAKEOVERS))
def test_anonymous_password_put_cannot_take_over_an_account_when_no_admin_exists(
    renamed: Stack, payload: dict[str, Any], origin: bool
) -> None:
    before = renamed.accounts()
    reply = claim(renamed, payload, origin=origin)
    assert_json_error(reply, (400, 401, 403))
    assert_nothing_taken_over(renamed, before)


def test_anonymous_password_form_cannot_take_over_an_account_when_no_admin_exists(renamed: Stack) -> None:
    before = renamed.accounts()
    form = urlencode({"username": OWNER, "password": TAKEOVER_PASSWORD, "setup_secret": "guess"}).encode()
    headers = [("Content-Type", "application/x-www-form-urlencoded"), ("Origin", renamed.site)]
    reply = send(renamed.caddy, "PUT", "/auth/password", headers, body=form)
    assert_json_error(reply, (400, 401, 403))
    assert_nothing_taken_over(renamed, before)


def test_sign_in_page_offers_no_first_admin_step_when_no_admin_exists(renamed: Stack) -> None:
    page = login_page(renamed)
    assert 'action="/auth/login"' in page
    assert not offers_first_admin_step(page), page


def test_a_planted_setup_secret_does_not_reopen_the_first_admin_step(renamed: Stack) -> None:
    """A `setup_secret` file on a data dir that has had accounts (left over, or written by someone with file access
    but no admin) opens nothing: neither the owner's account nor a new one can be claimed with it."""
    before = renamed.accounts()
    planted = "planted-setup-secret-0123456789abcdefghijk"
    renamed.setup_secret_file.write_text(planted + "\n")
    os.chmod(renamed.setup_secret_file, 0o600)
    try:
        assert not offers_first_admin_step(login_page(renamed))
        for username in (OWNER, BOB, "mallory"):
            reply = claim(renamed, {"username": username, "password": TAKEOVER_PASSWORD, "setup_secret": planted})
            assert_json_error(reply, (403,))
    finally:
        renamed.setup_secret_file.unlink(missing_ok=True)
    assert_nothing_taken_over(renamed, before)


def test_bootstrap_setup_secret_on_a_used_data_dir_writes_no_secret(renamed: Stack) -> None:
    before = renamed.accounts()
    done = renamed.cli("bootstrap", "--setup-secret")
    assert done.returncode == 0, done.stderr
    assert "setup secret:" not in done.stdout and "set-password" in done.stdout, done.stdout
    assert not renamed.setup_secret_file.exists()
    assert not offers_first_admin_step(login_page(renamed))
    assert_nothing_taken_over(renamed, before)


# --- (d) the way back is the shell --------------------------------------------------------------------------------


def test_shell_recovery_makes_the_locked_out_owner_an_active_admin_again(stacks: dict[str, Stack]) -> None:
    stack = ready(stacks, "recover")
    assert stack.accounts()[OWNER][1] == 0 and stack.active_admins(RENAMED_ADMIN_GROUP) == []
    refused = send_json(stack.caddy, "POST", "/auth/login", {"username": OWNER, "password": OWNER_PASSWORD})
    assert refused.status == 400  # deactivated: the right password does not sign in
    done = stack.cli("users", "set-password", OWNER, "--password-stdin", "--admin", stdin=RECOVERED_PASSWORD + "\n")
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert stack.active_admins(RENAMED_ADMIN_GROUP) == [OWNER]
    session, role = sign_in(stack, OWNER, RECOVERED_PASSWORD)
    assert role == "admin"
    users = send(stack.caddy, "GET", "/api/v1/users", [("Cookie", f"sidecar_session={session.token}")])
    assert users.status == 200 and OWNER in {u["username"] for u in users.json()["users"]}
    old = send_json(stack.caddy, "POST", "/auth/login", {"username": OWNER, "password": OWNER_PASSWORD})
    assert old.status == 400
    assert stack.accounts()[BOB][2] == ("vid_public",)  # nobody else changed


# --- (c) a fresh data dir: only the setup secret, only once, only a new account ------------------------------------


@pytest.fixture(scope="module")
def fresh_wrong(stacks: dict[str, Stack]) -> Stack:
    return ready(stacks, "fresh-wrong")


def test_setup_secret_file_is_private_and_is_what_bootstrap_printed(fresh_wrong: Stack) -> None:
    path = fresh_wrong.setup_secret_file
    assert path.stat().st_mode & 0o777 == 0o600
    assert fresh_wrong.data_dir.stat().st_mode & 0o777 == 0o700
    assert path.read_text().strip() == fresh_wrong.printed_secret
    assert fresh_wrong.printed_secret not in login_page(fresh_wrong)


def _wrong_secrets(secret: str) -> dict[str, tuple[Any, tuple[int, ...]]]:
    return {
        "guess": ("guess", (403,)),
        "empty": ("", (401,)),
        "one character short": (secret[:-1], (403,)),
        "one character more": (secret + "A", (403,)),
        "trailing newline": (secret + "\n", (403,)),
        "leading space": (" " + secret, (403,)),
        "other case": (secret.swapcase(), (403,)),
        "as a list": ([secret], (400,)),
        "as an object": ({"secret": secret}, (400,)),
    }


@pytest.mark.parametrize("label", list(_wrong_secrets("x" * 10)))
def test_wrong_setup_secret_is_refused_and_creates_no_one(fresh_wrong: Stack, label: str) -> None:
    secret, statuses = _wrong_secrets(fresh_wrong.printed_secret)[label]
    reply = claim(fresh_wrong, {"username": "root", "password": TAKEOVER_PASSWORD, "setup_secret": secret})
    assert_json_error(reply, statuses)
    assert fresh_wrong.accounts() == {}
    assert fresh_wrong.setup_secret_file.exists()
    assert offers_first_admin_step(login_page(fresh_wrong))


@dataclass(frozen=True)
class Race:
    stack: Stack
    secret: str
    replies: dict[tuple[str, str], Reply]  # (username, password) -> answer


@pytest.fixture(scope="module")
def race(stacks: dict[str, Stack]) -> Race:
    """Many simultaneous claims with the right secret, through two sidecar processes on the same data dir: distinct
    names, and several for the same name."""
    stack = ready(stacks, "fresh-race")
    secret = stack.setup_secret_file.read_text().strip()
    assert offers_first_admin_step(login_page(stack)) and stack.accounts() == {}
    # ten distinct names, and four claims for the same name with different passwords
    claims = [(f"root{i}", f"first-admin-password-{i}") for i in range(10)]
    claims += [("root", f"first-admin-password-root-{i}") for i in range(4)]
    body = {"setup_secret": secret}
    sites = [stack.caddy, *stack.replicas]  # alternately through either sidecar instance
    requests: list[Request] = [
        (
            sites[number % len(sites)],
            "PUT",
            "/auth/password",
            json.dumps({**body, "username": name, "password": password}).encode(),
            [("Content-Type", JSON), ("Origin", sites[number % len(sites)].url)],
        )
        for number, (name, password) in enumerate(claims)
    ]
    replies = dict(zip(claims, all_at_once(requests), strict=True))
    return Race(stack, secret, replies)


def test_concurrent_claims_with_the_right_secret_make_exactly_one_admin(race: Race) -> None:
    won = [claimed for claimed, reply in race.replies.items() if reply.status == 200]
    assert len(won) == 1, {claimed[0]: reply.status for claimed, reply in race.replies.items()}
    for claimed, reply in race.replies.items():
        if claimed not in won:
            error = assert_json_error(reply, (403,))
            assert "cross-origin" not in error["error"]  # refused as a claim, whichever process it reached
    winner = won[0][0]
    accounts = race.stack.accounts()
    assert list(accounts) == [winner], accounts
    assert accounts[winner][1:] == (1, ("vid_admin",))
    assert race.stack.active_admins() == [winner]
    token = race.replies[won[0]].json()["token"]
    me = send(race.stack.caddy, "GET", "/api/v1/me", [("Cookie", f"sidecar_session={token}")])
    assert me.status == 200 and (me.json()["username"], me.json()["role"]) == (winner, "admin")


def test_the_setup_secret_is_spent_and_a_replay_is_refused(race: Race) -> None:
    assert not race.stack.setup_secret_file.exists()
    assert not offers_first_admin_step(login_page(race.stack))
    before = race.stack.accounts()
    (winner,) = before
    for username in (winner, "mallory", "root"):
        reply = claim(race.stack, {"username": username, "password": TAKEOVER_PASSWORD, "setup_secret": race.secret})
        assert_json_error(reply, (403,))
    assert race.stack.accounts() == before
    password = next(claimed[1] for claimed, reply in race.replies.items() if reply.status == 200)
    _, role = sign_in(race.stack, winner, password)
    assert role == "admin"


def test_setup_step_is_closed_once_any_account_exists(stacks: dict[str, Stack]) -> None:
    """`sidecar users add` after `bootstrap --setup-secret`: the secret no longer opens anything, so an existing
    account can never be claimed (nor a new admin made) with it."""
    stack = ready(stacks, "fresh-user")
    before = stack.accounts()
    assert list(before) == [BOB] and before[BOB][1:] == (1, ("vid_public",))
    assert not offers_first_admin_step(login_page(stack))
    secret = stack.setup_secret_file.read_text().strip() if stack.setup_secret_file.exists() else stack.printed_secret
    for username in (BOB, "mallory", ""):
        reply = claim(stack, {"username": username, "password": TAKEOVER_PASSWORD, "setup_secret": secret})
        assert_json_error(reply, (403,))
    assert stack.accounts() == before
    assert stack.active_admins() == []
    _, role = sign_in(stack, BOB, BOB_PASSWORD)
    assert role == "viewer"
