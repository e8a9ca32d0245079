"""Password guessing through the real Caddy: sign-in, password change and the first-admin setup secret.

The limits are 5 failures a minute per (username, client address) and 20 per client address, shared by sign-in and
password change. The attacks: a burst of 30 or 100 simultaneous wrong passwords for one person (does every one get
its bcrypt check before the first failure is counted?); rotating `X-Forwarded-For` to look like many addresses;
guessing across many usernames from one address; 30 simultaneous wrong `current_password`s on `PUT /auth/password`
with a stolen session; mixing sign-in and password-change failures; and locking the real person out by failing on
purpose (their own sign-in from another address must work at once). A fresh data dir bootstrapped with
`--setup-secret` is guessed at too. Each attacker uses its own loopback address (Caddy appends the real peer to
`X-Forwarded-For`; the sidecar trusts only Caddy), so the module runs its own sidecar and Caddy and the shared
sidecar's budgets stay untouched. Every check is counted by its answer (400 "Invalid password", 403 "wrong setup
secret"); nothing is timed.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from sidecar.directory.local import LocalDirectory
from sidecar.identity import RolePolicy
from sidecar.locks import ProcessLock
from sidecar.processes import LoggedProcess, caddy_binary, free_port, repo_caddyfile, start_process, stop_process
from sidecar.store import Store
from sidecar.users import UserAdmin
from tests.helpers import API_KEY, bootstrapped_settings, cheapen_bcrypt
from tests.processes_fixtures import child_env

pytestmark = pytest.mark.caddy

PER_USER = 5  # SIDECAR_LOGIN_RATE_USER's default: failures per username and client address a minute
PER_IP = 20  # SIDECAR_LOGIN_RATE_IP's default: failures per client address a minute
THROTTLED = "Too many failed attempts"
# Targets of simultaneous guesses keep bcrypt's normal cost, so each check takes long enough for a burst to overlap
# it; the rest have cheap hashes (the checks stay real bcrypt either way).
BURST_TARGETS = ("uma", "vic", "yuri", "pat")
PEOPLE = ("wes", "xena", "zoe", "quinn")
SPRAYED = tuple(f"spray{i:02d}" for i in range(30))  # real usernames a password sprayer tries one guess each on
NEW_PASSWORD = "a-new-password-for-pat-1"  # noqa: S105 (a test password)


def password_of(username: str) -> str:
    return f"{username}-right-password-1"


# Every attacker and every victim has its own loopback address (Linux routes all of 127.0.0.0/8 to lo).
ATTACKER_30, VICTIM_30 = "127.0.0.11", "127.0.0.12"
ATTACKER_100, VICTIM_100 = "127.0.0.13", "127.0.0.14"
SERIAL_ATTACKER, SERIAL_VICTIM = "127.0.0.15", "127.0.0.16"
SPRAYER, SPRAY_VICTIM = "127.0.0.17", "127.0.0.18"
SPOOFER, SPOOF_VICTIM = "127.0.0.19", "127.0.0.20"
THIEF, OWNER = "127.0.0.21", "127.0.0.22"
MIXER, MIX_VICTIM = "127.0.0.23", "127.0.0.24"
REGULAR = "127.0.0.25"
SECRET_GUESSER, OPERATOR = "127.0.0.31", "127.0.0.32"


@dataclass(frozen=True)
class Site:
    caddy: str  # http://127.0.0.1:port of the real Caddy
    sidecar: str  # the sidecar itself, for reading the audit log with the API key
    data_dir: Path


def _caddy(name: str, sidecar_port: int, state: Path) -> tuple[LoggedProcess, str]:
    port = free_port()
    env = child_env(
        SITE_ADDRESS=f"http://127.0.0.1:{port}",
        SIDECAR_UPSTREAM=f"127.0.0.1:{sidecar_port}",
        AUTH_UPSTREAM=f"127.0.0.1:{sidecar_port}",
        AUTH_URI="/auth/verify",
        CADDY_ADMIN="off",
        XDG_CONFIG_HOME=str(state),
        XDG_DATA_HOME=str(state),
    )
    argv = [str(caddy_binary()), "run", "--config", str(repo_caddyfile()), "--adapter", "caddyfile"]
    proc = start_process(argv, env, ready_port=port, cwd=state, log_path=state / f"{name}.log")
    return proc, f"http://127.0.0.1:{port}"


def _sidecar(name: str, data_dir: Path, state: Path) -> tuple[LoggedProcess, int]:
    port = free_port()
    env = child_env(
        SIDECAR_MODE="local",
        SIDECAR_DATA_DIR=str(data_dir),
        SIDECAR_LOG_LEVEL="WARNING",
        SIDECAR_HOST="127.0.0.1",
        SIDECAR_PORT=str(port),
        SIDECAR_API_KEY=API_KEY,
        SIDECAR_TRUSTED_PROXIES="127.0.0.1/32",  # Caddy connects from 127.0.0.1; the attackers never do
    )
    argv = [sys.executable, "-m", "sidecar", "serve"]
    proc = start_process(
        argv, env, ready_url=f"http://127.0.0.1:{port}/healthz", cwd=state, log_path=state / f"{name}.log"
    )
    return proc, port


def _run(processes: list[LoggedProcess], start: Callable[[], tuple[LoggedProcess, Any]]) -> Any:
    proc, value = start()
    processes.append(proc)
    return value


def _seed(data_dir: Path) -> None:
    """The admin (bootstrap) and the people under attack, each in vid_public."""
    settings = bootstrapped_settings(data_dir)
    store = Store(settings.database_path)
    try:
        roles = RolePolicy(admin_groups=frozenset(settings.admin_groups), prefix=settings.group_prefix)
        users = UserAdmin(store, LocalDirectory(store), roles, ProcessLock(data_dir / "admin-change.lock"))

        async def add_all(names: tuple[str, ...]) -> None:
            for username in names:
                await users.add_user(username, ["vid_public"], password_of(username), "test")

        asyncio.run(add_all(BURST_TARGETS))
        with pytest.MonkeyPatch.context() as patch:
            cheapen_bcrypt(patch)
            asyncio.run(add_all(PEOPLE + SPRAYED))
    finally:
        store.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    state = tmp_path_factory.mktemp("rate-limits")
    data_dir = state / "data"
    _seed(data_dir)
    processes: list[LoggedProcess] = []
    try:
        port = _run(processes, lambda: _sidecar("sidecar-rate-limits", data_dir, state))
        caddy = _run(processes, lambda: _caddy("caddy-rate-limits", port, state))
        yield Site(caddy, f"http://127.0.0.1:{port}", data_dir)
    finally:
        for proc in reversed(processes):
            stop_process(proc)


@pytest.fixture(scope="module")
def fresh_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, str]]:
    """A data dir that never had an account, bootstrapped with `--setup-secret` by the real CLI; and the secret."""
    state = tmp_path_factory.mktemp("rate-limits-setup")
    data_dir = state / "data"
    env = child_env(SIDECAR_MODE="local", SIDECAR_DATA_DIR=str(data_dir), SIDECAR_API_KEY=API_KEY)
    argv = [sys.executable, "-m", "sidecar", "bootstrap", "--setup-secret"]
    done = subprocess.run(argv, env=env, cwd=state, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"bootstrap --setup-secret failed:\n{done.stdout}\n{done.stderr}"
    secret = (data_dir / "setup_secret").read_text().strip()
    assert secret and secret in done.stdout
    processes: list[LoggedProcess] = []
    try:
        port = _run(processes, lambda: _sidecar("sidecar-rate-limits-setup", data_dir, state))
        caddy = _run(processes, lambda: _caddy("caddy-rate-limits-setup", port, state))
        yield Site(caddy, f"http://127.0.0.1:{port}", data_dir), secret
    finally:
        for proc in reversed(processes):
            stop_process(proc)


# --- clients bound to one source address --------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any

    @property
    def throttled(self) -> bool:
        """Refused by the limit: 429 with the JSON error shape (the wording is checked in `tally`)."""
        return self.status == 429 and isinstance(self.body, dict) and isinstance(self.body.get("error"), str)


def _answer(response: httpx.Response) -> Answer:
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return Answer(response.status_code, body)


Request = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


def burst(site: Site, address: str, count: int, request: Request) -> list[Answer]:
    """`count` requests from `address`, all sent at once (one connection each) through Caddy."""

    async def run() -> list[Answer]:
        transport = httpx.AsyncHTTPTransport(
            local_address=address, limits=httpx.Limits(max_connections=count, max_keepalive_connections=0)
        )
        async with httpx.AsyncClient(transport=transport, base_url=site.caddy, timeout=120) as http:
            responses = await asyncio.gather(*(request(http, i) for i in range(count)))
        return [_answer(response) for response in responses]

    return asyncio.run(run())


def one(site: Site, address: str, method: str, path: str, **kwargs: Any) -> Answer:
    with httpx.Client(transport=httpx.HTTPTransport(local_address=address), base_url=site.caddy, timeout=60) as http:
        return _answer(http.request(method, path, **kwargs))


def sign_in(site: Site, address: str, username: str, password: str) -> Answer:
    return one(site, address, "POST", "/auth/login", json={"username": username, "password": password})


def session_token(site: Site, address: str, username: str) -> str:
    answer = sign_in(site, address, username, password_of(username))
    assert answer.status == 200, answer
    token: str = answer.body["token"]
    return token


def change_password(site: Site, address: str, token: str, current: str, new: str = NEW_PASSWORD) -> Answer:
    body = {"current_password": current, "password": new}
    return one(site, address, "PUT", "/auth/password", json=body, headers={"cookie": f"sidecar_session={token}"})


def wrong_sign_ins(username: str) -> Request:
    def request(http: httpx.AsyncClient, i: int) -> Awaitable[httpx.Response]:
        return http.post("/auth/login", json={"username": username, "password": f"wrong-guess-{i:04d}-xyz"})

    return request


def invalid(answer: Answer, field: str = "password") -> bool:
    """A password that was checked and found wrong."""
    return answer.status == 400 and answer.body == {"error": "Invalid password", "field": field}


def tally(answers: list[Answer], field: str = "password") -> tuple[int, int]:
    """(checked and wrong, refused by the limit); anything else fails the test."""
    checked = sum(invalid(answer, field) for answer in answers)
    throttled = sum(answer.throttled for answer in answers)
    assert checked + throttled == len(answers), [a for a in answers if not (invalid(a, field) or a.throttled)]
    assert all(answer.body["error"].startswith(THROTTLED) for answer in answers if answer.throttled)
    return checked, throttled


def logins(site: Site, username: str) -> int:
    """Successful sign-ins of `username` in the audit log."""
    response = httpx.get(
        f"{site.sidecar}/api/v1/audit",
        params={"action": "login", "target": username, "limit": "1000"},
        headers={"x-api-key": API_KEY},
    )
    assert response.status_code == 200, response.text
    return len(response.json()["events"])


# --- sign-in -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "username", "attacker", "victim"),
    [(30, "uma", ATTACKER_30, VICTIM_30), (100, "vic", ATTACKER_100, VICTIM_100)],
)
def test_a_burst_of_simultaneous_wrong_passwords_gets_no_more_checks_than_the_limit(
    site: Site, count: int, username: str, attacker: str, victim: str
) -> None:
    answers = burst(site, attacker, count, wrong_sign_ins(username))
    checked, throttled = tally(answers)
    assert checked == PER_USER, f"{checked} of {count} simultaneous guesses were checked"
    assert throttled == count - PER_USER

    # The attacker's address stays limited for this person, even with the right password (by design: the limit
    # cannot tell the person from the attacker on one address).
    assert sign_in(site, attacker, username, password_of(username)).throttled
    assert logins(site, username) == 0
    # The person, anywhere else, signs in at once.
    assert sign_in(site, victim, username, password_of(username)).status == 200
    assert logins(site, username) == 1


def test_five_wrong_passwords_from_one_address_do_not_lock_the_person_out_elsewhere(site: Site) -> None:
    answers = [sign_in(site, SERIAL_ATTACKER, "wes", f"wrong-guess-{i}-abcdef") for i in range(PER_USER + 2)]
    assert [invalid(answer) for answer in answers] == [True] * PER_USER + [False, False]
    assert all(answer.throttled for answer in answers[PER_USER:])

    # The person signs in from their own address at once: failures elsewhere never lock them out.
    answer = sign_in(site, SERIAL_VICTIM, "wes", password_of("wes"))
    assert answer.status == 200, answer
    assert answer.body["username"] == "wes"
    # From the attacker's address the right password is refused while it is limited (by design).
    refused = sign_in(site, SERIAL_ATTACKER, "wes", password_of("wes"))
    assert refused.throttled
    assert refused.body["error"].startswith(THROTTLED)
    assert logins(site, "wes") == 1


def test_rotating_x_forwarded_for_through_caddy_buys_no_more_guesses(site: Site) -> None:
    """Caddy replaces a client's X-Forwarded-For with the real peer: 30 invented addresses are still one."""

    def spoofed(http: httpx.AsyncClient, i: int) -> Awaitable[httpx.Response]:
        body = {"username": "yuri", "password": f"wrong-guess-{i:04d}-xyz"}
        headers = {"x-forwarded-for": f"198.51.100.{i + 1}", "x-real-ip": f"198.51.100.{i + 1}"}
        return http.post("/auth/login", json=body, headers=headers)

    checked, _ = tally(burst(site, SPOOFER, 30, spoofed))
    assert checked == PER_USER
    headers = {"x-forwarded-for": "198.51.100.250"}
    right = {"username": "yuri", "password": password_of("yuri")}
    assert one(site, SPOOFER, "POST", "/auth/login", json=right, headers=headers).throttled
    assert sign_in(site, SPOOF_VICTIM, "yuri", password_of("yuri")).status == 200


def test_guessing_across_many_usernames_from_one_address_stops_at_the_address_limit(site: Site) -> None:
    def sprayed(http: httpx.AsyncClient, i: int) -> Awaitable[httpx.Response]:
        return http.post("/auth/login", json={"username": SPRAYED[i], "password": "wrong-guess-abcdef"})

    checked, throttled = tally(burst(site, SPRAYER, 30, sprayed))
    assert checked == PER_IP, f"{checked} of 30 guesses over 30 usernames were checked"
    assert throttled == 30 - PER_IP

    # Further usernames, and the real person, from that address: refused while the address is limited.
    assert sign_in(site, SPRAYER, "nobody-at-all", "wrong-guess-abcdef").throttled
    assert sign_in(site, SPRAYER, "wes", "wrong-guess-abcdef").throttled
    assert sign_in(site, SPRAYER, "xena", password_of("xena")).throttled
    assert logins(site, "xena") == 0
    assert sign_in(site, SPRAY_VICTIM, "xena", password_of("xena")).status == 200


def test_successful_sign_ins_do_not_use_up_the_failure_budget(site: Site) -> None:
    results = [sign_in(site, REGULAR, "zoe", f"wrong-guess-{i}-abcdef") for i in range(PER_USER - 1)]
    results += [sign_in(site, REGULAR, "zoe", password_of("zoe")) for _ in range(10)]
    results += [sign_in(site, REGULAR, "zoe", "wrong-guess-last-abcdef") for _ in range(2)]
    statuses = [answer.status for answer in results]
    assert statuses == [400] * (PER_USER - 1) + [200] * 10 + [400, 429]
    assert logins(site, "zoe") == 10


# --- password change ---------------------------------------------------------------------------------------------


def test_a_burst_of_wrong_current_passwords_on_password_change_gets_no_more_checks_than_the_limit(
    site: Site,
) -> None:
    token = session_token(site, THIEF, "pat")  # a stolen session: the thief does not know the password

    def guess(http: httpx.AsyncClient, i: int) -> Awaitable[httpx.Response]:
        body = {"current_password": f"wrong-guess-{i:04d}-xyz", "password": f"thiefs-password-{i:04d}"}
        return http.put("/auth/password", json=body, headers={"cookie": f"sidecar_session={token}"})

    checked, throttled = tally(burst(site, THIEF, 30, guess), field="current_password")
    assert checked == PER_USER, f"{checked} of 30 simultaneous current-password guesses were checked"
    assert throttled == 30 - PER_USER
    # Sequential guesses after the burst: refused too.
    assert change_password(site, THIEF, token, "wrong-guess-again-xyz").throttled

    # The password is unchanged; from the thief's address even the right one is refused for now.
    assert change_password(site, THIEF, token, password_of("pat")).throttled
    assert sign_in(site, OWNER, "pat", NEW_PASSWORD).status == 400
    # The owner, from their own address, changes it at once.
    own = session_token(site, OWNER, "pat")
    answer = change_password(site, OWNER, own, password_of("pat"))
    assert answer.status == 200, answer
    assert answer.body == {"status": "password changed"}
    assert sign_in(site, OWNER, "pat", NEW_PASSWORD).status == 200


def test_sign_in_and_password_change_failures_share_one_budget(site: Site) -> None:
    token = session_token(site, MIXER, "quinn")
    answers = [sign_in(site, MIXER, "quinn", f"wrong-guess-{i}-abcdef") for i in range(3)]
    changes = [change_password(site, MIXER, token, f"wrong-guess-{i}-uvwxyz") for i in range(2)]
    assert all(invalid(answer) for answer in answers)
    assert all(invalid(answer, "current_password") for answer in changes)

    assert sign_in(site, MIXER, "quinn", "wrong-guess-9-abcdef").throttled
    assert change_password(site, MIXER, token, "wrong-guess-9-uvwxyz").throttled
    assert sign_in(site, MIXER, "quinn", password_of("quinn")).throttled
    assert sign_in(site, MIX_VICTIM, "quinn", password_of("quinn")).status == 200


# --- the first-admin setup secret --------------------------------------------------------------------------------


def test_setup_secret_guesses_are_limited_per_address(fresh_site: tuple[Site, str]) -> None:
    site, secret = fresh_site

    def guess(http: httpx.AsyncClient, i: int) -> Awaitable[httpx.Response]:
        body = {"username": "root", "password": "root-password-for-tests", "setup_secret": f"guess-{i:04d}-{secret}"}
        return http.put("/auth/password", json=body)

    answers = burst(site, SECRET_GUESSER, 30, guess)
    wrong = sum(answer.status == 403 and answer.body == {"error": "wrong setup secret"} for answer in answers)
    throttled = sum(answer.throttled for answer in answers)
    assert (wrong, throttled) == (PER_IP, 30 - PER_IP), answers

    right = {"username": "root", "password": "root-password-for-tests", "setup_secret": secret}
    # Even the right secret is refused from the guessing address while it is limited; the step stays open.
    assert one(site, SECRET_GUESSER, "PUT", "/auth/password", json=right).throttled
    assert (site.data_dir / "setup_secret").exists()
    # The operator, from another address, claims the first admin at once.
    claimed = one(site, OPERATOR, "PUT", "/auth/password", json=right)
    assert claimed.status == 200, claimed
    assert claimed.body["username"] == "root"
    assert not (site.data_dir / "setup_secret").exists()
