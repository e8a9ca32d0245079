"""Who may read what waits to be done (`GET /api/v1/pending-work`), through the real Caddy with the shipped
Caddyfile: the sentences name people's sessions being kicked and the mail queued for them, so only admins may see
them. Anonymous visitors, a signed-in viewer and a client sending identity headers of its own are refused, alone and
all at once, while an admin signed in through the same Caddy reads the list."""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from sidecar.settings import Settings
from sidecar.store import Store
from tests.processes_fixtures import (
    ADMIN_PASSWORD,
    VIEWER_PASSWORD,
    VIEWER_USER,
    Endpoint,
    Launch,
    child_env,
    serve_sidecar,
)

pytestmark = pytest.mark.caddy
PATH = "/api/v1/pending-work"
SECRET_WORDS = ("kick", "email", "MediaMTX")
SPOOFED = {"X-Authentik-Username": "admin", "X-Authentik-Groups": "vid_admin", "X-Authentik-Email": "a@example.org"}


@pytest.fixture(scope="module")
def site(launch: Launch, process_dir: Path, start_caddy: Callable[..., Endpoint]) -> Endpoint:
    """A sidecar of its own (admin, and bob in vid_public) with a kick and a mail waiting, behind the real Caddy."""
    data_dir = process_dir / "waiting-work-data"
    env = child_env(SIDECAR_MODE="local", SIDECAR_DATA_DIR=str(data_dir), SIDECAR_BOOTSTRAP_PASSWORD=ADMIN_PASSWORD)
    cli = [sys.executable, "-m", "sidecar"]
    for argv, stdin in (
        ([*cli, "bootstrap"], ""),
        ([*cli, "users", "add", VIEWER_USER, "--group", "vid_public", "--password-stdin"], VIEWER_PASSWORD + "\n"),
    ):
        done = subprocess.run(argv, env=env, input=stdin, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    store = Store(Settings(_env_file=None, data_dir=data_dir).database_path)  # type: ignore[call-arg]
    try:
        session, now = str(uuid.uuid4()), time.time()
        store.remember_session(session, VIEWER_USER, ["vid_public"], "live/cam1", "read", "rtsp")
        with store.transaction() as db:
            store.defer_kick(db, session, "removed from vid_public", "MediaMTX is unreachable", now, now + 3600)
            store.enqueue_mail(db, "ada@example.org", "Your access request was approved", "Hello", now)
    finally:
        store.close()
    sidecar, _ = serve_sidecar(launch, "sidecar-waiting-work", data_dir, trusted_proxies="127.0.0.0/8,::1/128")
    return start_caddy("caddy-waiting-work", sidecar=sidecar, auth=sidecar, auth_uri="/auth/verify")


def signed_in(site: Endpoint, username: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=site.url, timeout=30)
    answer = client.post("/auth/login", json={"username": username, "password": password})
    assert answer.status_code == 200, answer.text
    return client


def refused(answer: httpx.Response) -> bool:
    return answer.status_code in (302, 401, 403) and not any(word in answer.text for word in SECRET_WORDS)


def test_anonymous_visitors_viewers_and_forged_identities_cannot_read_waiting_work(site: Endpoint) -> None:
    with httpx.Client(base_url=site.url, timeout=30) as anonymous:
        assert refused(anonymous.get(PATH))
        assert refused(anonymous.get(PATH, headers=SPOOFED))  # Caddy strips them; the sidecar would not trust them
        assert refused(anonymous.get(PATH, headers={"accept": "text/html"}))
    viewer = signed_in(site, VIEWER_USER, VIEWER_PASSWORD)
    try:
        answer = viewer.get(PATH, headers=SPOOFED)
    finally:
        viewer.close()
    assert answer.status_code == 403 and "error" in answer.json(), answer.text
    assert refused(answer)


def test_only_the_admin_reads_it_when_everyone_asks_at_once(site: Endpoint) -> None:
    viewer = signed_in(site, VIEWER_USER, VIEWER_PASSWORD)
    admin = signed_in(site, "admin", ADMIN_PASSWORD)
    anonymous = httpx.Client(base_url=site.url, timeout=30)
    askers = [anonymous, viewer, admin] * 8
    try:
        with concurrent.futures.ThreadPoolExecutor(len(askers)) as pool:
            answers = list(pool.map(lambda client: client.get(PATH, headers=SPOOFED), askers))
    finally:
        for client in (viewer, admin, anonymous):
            client.close()
    for client, answer in zip(askers, answers, strict=True):
        if client is admin:
            assert answer.status_code == 200, answer.text
            kicks, mail = answer.json()["pending"]
            assert kicks.startswith("1 kick waits for MediaMTX") and mail.startswith("1 email waits")
        else:
            assert refused(answer), (answer.status_code, answer.text)
