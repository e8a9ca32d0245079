"""What waits to be done is visible: kicks MediaMTX has not confirmed and mail not sent yet are named, with since
when and the latest error, to admins (`GET /api/v1/pending-work`) and operators (`sidecar check`), and to nobody
else."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import pytest
from starlette.testclient import TestClient

from sidecar.app import create_app
from sidecar.bootstrap import bootstrap
from sidecar.mailer import Mailer
from sidecar.processes import free_port
from sidecar.settings import Settings
from sidecar.store import Store
from tests.helpers import API_KEY, TRUSTED_PEER, cheapen_bcrypt, login
from tests.processes_fixtures import child_env

KEY = {"x-api-key": API_KEY}
VIEWER_PASSWORD = "vic-password-for-pending"


def wait_for_kick_and_mail(store: Store, mailer: Mailer | None = None) -> None:
    """A kick MediaMTX never confirmed, and a mail queued (through the server's `mailer`, which sends it at once,
    when given)."""
    session = str(uuid.uuid4())
    store.remember_session(session, "bob", ["vid_public"], "live/cam1", "read", "rtsp")
    now = time.time()
    with store.transaction() as db:
        store.defer_kick(db, session, "removed from vid_public", "MediaMTX is unreachable", now, now + 3600)
        if mailer is None:
            store.enqueue_mail(db, "ada@example.org", "Your access request was approved", "Hello", now)
        else:
            assert mailer.enqueue(db, "ada@example.org", "Your access request was approved", "Hello")


@pytest.fixture
def smtp_refused(make_settings: Callable[..., Settings]) -> Settings:
    settings = make_settings(smtp_host="127.0.0.1", smtp_port=free_port(), public_url="https://video.example.org")
    with pytest.MonkeyPatch.context() as patch:
        cheapen_bcrypt(patch)
        bootstrap(settings, out=lambda line: None)
    return settings


def test_admins_see_what_waits_and_nobody_else_does(smtp_refused: Settings) -> None:
    with TestClient(create_app(smtp_refused), client=TRUSTED_PEER) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        assert client.get("/api/v1/pending-work", headers=KEY).json() == {"pending": []}
        wait_for_kick_and_mail(services.store, services.mailer)
        assert client.get("/api/v1/pending-work").status_code == 401
        deadline = time.monotonic() + 30
        while True:  # the worker tries the mail at once; the SMTP server refuses it
            lines = client.get("/api/v1/pending-work", headers=KEY).json()["pending"]
            if any("last error" in line for line in lines if "email" in line) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        kicks, mail = lines
        assert kicks.startswith("1 kick waits for MediaMTX since ") and "MediaMTX is unreachable" in kicks
        assert mail.startswith("1 email waits to be sent since ") and "last error" in mail
        login(client)
        assert client.get("/api/v1/pending-work").json()["pending"] == lines  # the signed-in admin too


def test_viewers_do_not_see_what_waits(settings: Settings, make_client: Callable[..., TestClient]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sidecar", "users", "add", "vic", "--group", "vid_public", "--password-stdin"],
        input=VIEWER_PASSWORD + "\n",
        env=child_env(SIDECAR_DATA_DIR=str(settings.data_dir), SIDECAR_API_KEY=API_KEY),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    client = make_client()
    wait_for_kick_and_mail(client.app.state.services.store)  # type: ignore[attr-defined]
    login(client, "vic", VIEWER_PASSWORD)
    answer = client.get("/api/v1/pending-work")
    assert answer.status_code == 403 and "error" in answer.json()


def test_sidecar_check_names_what_waits(settings: Settings) -> None:
    store = Store(settings.database_path)
    try:
        wait_for_kick_and_mail(store)
    finally:
        store.close()
    env = child_env(SIDECAR_DATA_DIR=str(settings.data_dir), SIDECAR_API_KEY=API_KEY)
    done = subprocess.run(
        [sys.executable, "-m", "sidecar", "check"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1, done.stdout + done.stderr
    waiting = [line for line in done.stdout.splitlines() if "waiting:" in line]
    assert [line.split("waiting: ", 1)[1].split(" since ")[0] for line in waiting] == [
        "1 kick waits for MediaMTX",
        "1 email waits to be sent",
    ]
    assert all(line.startswith("PROBLEM") for line in waiting)
