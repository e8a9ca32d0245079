"""A real `sidecar serve` killed (SIGKILL) between the steps of a change: whatever the point, the person keeps a way
back. Setting a password from a one-time link is the case that stranded people: the link was spent before bcrypt ran,
so a crash during the hash left a spent link and no password."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from sidecar.keys import digest
from sidecar.processes import LoggedProcess
from sidecar.settings import Settings
from sidecar.store import Store
from tests.faults.crash_points import killing_env
from tests.helpers import ADMIN_PASSWORD, API_KEY, callback_body, submit_access_request
from tests.processes_fixtures import Launch, child_env, free_port

SECRET = "s" * 43  # the shape of a real link secret (token_urlsafe(32))
NEW_PASSWORD = "carol-new-password-1"
KEY = {"X-API-Key": API_KEY}


def sidecar_env(data_dir: Path, **values: str) -> dict[str, str]:
    return child_env(SIDECAR_MODE="local", SIDECAR_DATA_DIR=str(data_dir), SIDECAR_LOG_LEVEL="WARNING", **values)


def prepare(data_dir: Path) -> None:
    """A bootstrapped data dir with carol (no password yet) and an unused set-password link for her."""
    env = sidecar_env(data_dir, SIDECAR_BOOTSTRAP_PASSWORD=ADMIN_PASSWORD)
    for argv in (["bootstrap"], ["users", "add", "carol", "--group", "vid_public"]):
        done = subprocess.run(
            [sys.executable, "-m", "sidecar", *argv], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr
    store = Store(Settings(_env_file=None, data_dir=data_dir).database_path)  # type: ignore[call-arg]
    now = time.time()
    with store.transaction() as db:
        store.insert_password_link(db, digest(SECRET), "carol", now, now + 3600)
    store.close()


def serve(launch: Launch, name: str, env: dict[str, str]) -> tuple[str, LoggedProcess]:
    port = free_port()
    env = {**env, "SIDECAR_HOST": "127.0.0.1", "SIDECAR_PORT": str(port)}
    url = f"http://127.0.0.1:{port}"
    return url, launch(name, [sys.executable, "-m", "sidecar", "serve"], env, ready_url=f"{url}/healthz")


def set_password(url: str) -> httpx.Response:
    form = {"password": NEW_PASSWORD, "confirm": NEW_PASSWORD}
    return httpx.post(f"{url}/request-access/set-password/{SECRET}", data=form, headers={"Origin": url}, timeout=30)


@pytest.mark.parametrize(
    "kill_at",
    [
        "bcrypt:hashpw",  # while the password is hashed
        "sidecar.store:Store.use_password_link",  # as the link is spent
        "sidecar.store:Store.set_password_hash",  # link spent in this transaction, password not yet written
        "sidecar.store:Store.audit",  # both written, not yet committed
    ],
)
def test_a_crash_while_a_password_is_set_leaves_the_link_working(kill_at: str, launch: Launch, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    prepare(data_dir)
    arm = tmp_path / "armed"
    env = killing_env(sidecar_env(data_dir), tmp_path / "site", kill_at, arm)
    url, proc = serve(launch, f"crash-{kill_at.replace(':', '-')}", env)
    arm.touch()
    with pytest.raises(httpx.HTTPError):  # no answer: the process died on the way
        set_password(url)
    assert proc.wait(timeout=30) == -9, proc.output_tail()

    url, _ = serve(launch, f"after-{kill_at.replace(':', '-')}", sidecar_env(data_dir))
    page = httpx.get(f"{url}/request-access/set-password/{SECRET}", timeout=30)
    assert page.status_code == 200, "the crash spent the link without setting a password"
    done = set_password(url)
    assert done.status_code == 200, done.text
    signed_in = httpx.post(f"{url}/auth/login", json={"username": "carol", "password": NEW_PASSWORD}, timeout=30)
    assert signed_in.status_code == 200, signed_in.text
    assert httpx.get(f"{url}/request-access/set-password/{SECRET}", timeout=30).status_code == 404  # spent once


def approve(url: str, request_id: int) -> httpx.Response:
    return httpx.post(
        f"{url}/api/v1/access-requests/{request_id}/approve",
        json={"groups": ["vid_public"]},
        headers={"X-API-Key": API_KEY},
        timeout=30,
    )


@pytest.mark.parametrize(
    "kill_at",
    [
        "sidecar.store:Store.mark_user_created",  # the account exists; the request does not know yet
        "sidecar.store:Store.add_membership",  # the account exists, inactive, without its groups
        "sidecar.store:Store.set_active",  # groups given, not yet active
    ],
)
def test_an_approval_killed_after_the_account_was_created_is_finished_by_its_retry(
    kill_at: str, launch: Launch, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    prepare(data_dir)
    arm = tmp_path / "armed"
    env = killing_env(sidecar_env(data_dir, SIDECAR_API_KEY=API_KEY), tmp_path / "site", kill_at, arm)
    url, proc = serve(launch, f"approve-{kill_at.replace(':', '-')}", env)
    assert submit_access_request(url, "dana", group="").status_code == 200
    (request_id,) = [row["id"] for row in httpx.get(f"{url}/api/v1/access-requests", headers=KEY).json()["requests"]]
    arm.touch()
    with pytest.raises(httpx.HTTPError):
        approve(url, request_id)
    assert proc.wait(timeout=30) == -9, proc.output_tail()

    store = Store(Settings(_env_file=None, data_dir=data_dir).database_path)  # type: ignore[call-arg]
    dana = store.get_user("dana")
    assert dana is not None and not dana["is_active"], "an interrupted approval left an account that can sign in"
    store.close()

    url, _ = serve(launch, f"reapprove-{kill_at.replace(':', '-')}", sidecar_env(data_dir, SIDECAR_API_KEY=API_KEY))
    done = approve(url, request_id)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "approved" and "set_password_link" in done.json()
    store = Store(Settings(_env_file=None, data_dir=data_dir).database_path)  # type: ignore[call-arg]
    try:
        dana = store.get_user("dana")
        assert dana is not None and dana["is_active"]
        assert store.user_groups("dana") == ["vid_public"]
        assert [row["username"] for row in store.list_users("dana", 10, 0)[1]] == ["dana"]
    finally:
        store.close()


def test_a_session_let_in_just_before_a_crash_is_remembered_after_it(launch: Launch, tmp_path: Path) -> None:
    """The sidecar answers MediaMTX's callback at once and writes the session it let in a moment later, in a batch;
    killed in that moment, it must still know the session after a restart, or revoking the viewer could not kick it."""
    data_dir = tmp_path / "data"
    prepare(data_dir)
    arm = tmp_path / "armed"
    env = killing_env(
        sidecar_env(data_dir), tmp_path / "site", "sidecar.session_writer:SessionWriter._flush_logged", arm
    )
    url, proc = serve(launch, "crash-session-batch", env)
    with httpx.Client(base_url=url, timeout=30) as admin:
        assert admin.post("/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}).status_code == 200
        csrf = admin.get("/api/v1/me").json()["csrf_token"]
        answer = admin.post(
            "/api/v1/streams/token", json={"path": "live/cam1"}, headers={"origin": url, "x-csrf-token": csrf}
        )
        assert answer.status_code == 200, answer.text
        token = answer.json()["token"]
    session = str(uuid.uuid4())
    arm.touch()
    allowed = httpx.post(f"{url}/mediamtx/auth", json=callback_body(token=token, id=session), timeout=30)
    assert allowed.status_code == 200, allowed.text  # answered before the batch that dies
    assert proc.wait(timeout=30) == -9, proc.output_tail()

    serve(launch, "after-crash-session-batch", sidecar_env(data_dir))  # takes over what the dead one kept
    store = Store(Settings(_env_file=None, data_dir=data_dir).database_path)  # type: ignore[call-arg]
    try:
        assert [row["id"] for row in store.media_sessions("admin")] == [session]
    finally:
        store.close()
    assert not list(data_dir.glob("sessions-*.journal"))[1:], "one journal at most: the live server's own"
