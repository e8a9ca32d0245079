"""MediaMTX's runOn* webhooks (`POST /mediamtx/hooks/{event}`): the API key, the events, JSON and form bodies, the live
stream view they feed, and forgetting a remembered session when its reader goes away."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from sidecar.app import create_app
from sidecar.runtime import Services
from sidecar.settings import Settings
from tests.helpers import API_KEY, TRUSTED_PEER, UNTRUSTED_PEER, bootstrapped_settings

KEY = {"x-api-key": API_KEY}


@dataclass
class Env:
    client: TestClient
    settings: Settings

    @property
    def services(self) -> Services:
        found: Services = self.client.app.state.services  # type: ignore[attr-defined]
        return found

    def hook(self, event: str, body: dict[str, Any], *, headers: dict[str, str] | None = None) -> httpx.Response:
        """What deploy/mediamtx.yml's curl sends: a JSON object with X-API-Key."""
        return self.client.post(f"/mediamtx/hooks/{event}", json=body, headers=KEY if headers is None else headers)

    def live(self) -> dict[str, dict[str, str]]:
        return {stream.path: dict(stream.readers) for stream in self.services.live.ready()}

    def allow_session(self, path: str = "live/cam1") -> str:
        """A reader let in by the auth callback (with the API key as password), remembered under its session id."""
        session_id = str(uuid.uuid4())
        body = {
            "ip": "192.0.2.10",
            "user": "",
            "password": API_KEY,
            "token": API_KEY,
            "action": "read",
            "path": path,
            "protocol": "hls",
            "id": session_id,
            "query": "",
            "userAgent": "",
        }
        assert self.client.post("/mediamtx/auth", json=body).status_code == 200
        return session_id

    def remembered(self) -> set[str]:
        return {row["id"] for row in self.services.store.media_sessions()}

    def wait_until_remembered(self, session_id: str) -> set[str]:
        """The remembered ids once `session_id` is among them (sessions may be written a moment after the answer)."""
        deadline = time.monotonic() + 5
        while session_id not in (found := self.remembered()):
            assert time.monotonic() < deadline, "the allowed session was not remembered within 5 s"
            time.sleep(0.02)
        return found


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    found = bootstrapped_settings(tmp_path / "data")
    with TestClient(create_app(found), client=TRUSTED_PEER, raise_server_exceptions=False) as client:
        yield Env(client, found)


def ready_body(path: str = "live/cam1", **extra: str) -> dict[str, str]:
    return {"path": path, "query": "", "source_type": "rtspSession", "source_id": str(uuid.uuid4()), **extra}


def reader_body(path: str, reader_id: str, reader_type: str = "hlsSession") -> dict[str, str]:
    return {"path": path, "query": "", "reader_type": reader_type, "reader_id": reader_id}


# --- the API key ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"x-api-key": ""}, {"x-api-key": "wrong-key-0123456789"}, {"x-api-key": API_KEY + "x"}],
    ids=["missing", "empty", "wrong", "longer"],
)
def test_a_hook_without_the_api_key_is_401(env: Env, headers: dict[str, str]) -> None:
    response = env.hook("ready", ready_body(), headers=headers)
    assert response.status_code == 401
    assert isinstance(response.json()["error"], str)
    assert env.live() == {}


def test_a_hook_does_not_accept_a_session_or_identity_headers_instead_of_the_key(env: Env) -> None:
    headers = {"x-authentik-username": "admin", "x-authentik-groups": "vid_admin", "authorization": f"Bearer {API_KEY}"}
    assert env.hook("ready", ready_body(), headers=headers).status_code == 401
    assert env.live() == {}


def test_a_hook_from_outside_the_allowed_ips_is_403(env: Env) -> None:
    with TestClient(create_app(env.settings), client=UNTRUSTED_PEER, raise_server_exceptions=False) as outsider:
        response = outsider.post("/mediamtx/hooks/ready", json=ready_body(), headers=KEY)
        assert response.status_code == 403


# --- events ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("event", ["start", "READY", "Ready", "ready ", "kick", "unpublish", "ready.json", "not_ready"])
def test_an_unknown_event_is_400(env: Env, event: str) -> None:
    response = env.hook(event, ready_body())
    assert response.status_code == 400
    assert response.json().get("field") == "event"
    assert env.live() == {}


def test_ready_and_not_ready_update_the_live_streams(env: Env) -> None:
    assert env.hook("ready", ready_body("live/cam1")).status_code == 204
    assert env.hook("ready", ready_body("live/cam2", source_type="webRTCSession")).status_code == 204
    streams = {stream.path: stream for stream in env.services.live.ready()}
    assert sorted(streams) == ["live/cam1", "live/cam2"]
    assert streams["live/cam2"].source_type == "webRTCSession"
    assert env.hook("not-ready", ready_body("live/cam1")).status_code == 204
    assert sorted(env.live()) == ["live/cam2"]
    assert env.hook("notready", ready_body("live/cam2")).status_code == 204
    assert env.live() == {}
    # A stream that was never ready going away is no error.
    assert env.hook("not-ready", ready_body("live/never")).status_code == 204


def test_form_encoded_hooks_work_like_json(env: Env) -> None:
    form = {"path": "live/cam1", "source_type": "rtmpConn", "source_id": "x"}
    assert env.client.post("/mediamtx/hooks/ready", data=form, headers=KEY).status_code == 204
    assert [stream.source_type for stream in env.services.live.ready()] == ["rtmpConn"]
    reader = {"path": "live/cam1", "reader_type": "rtspSession", "reader_id": "r1"}
    assert env.client.post("/mediamtx/hooks/read", data=reader, headers=KEY).status_code == 204
    assert env.live() == {"live/cam1": {"r1": "rtspSession"}}
    assert env.client.post("/mediamtx/hooks/notready", data={"path": "live/cam1"}, headers=KEY).status_code == 204
    assert env.live() == {}


def test_read_and_unread_track_readers(env: Env) -> None:
    assert env.hook("ready", ready_body("live/cam1")).status_code == 204
    assert env.hook("read", reader_body("live/cam1", "r1")).status_code == 204
    assert env.hook("read", reader_body("live/cam1", "r2", "webRTCSession")).status_code == 204
    assert env.live() == {"live/cam1": {"r1": "hlsSession", "r2": "webRTCSession"}}
    assert env.hook("unread", reader_body("live/cam1", "r1")).status_code == 204
    assert env.live() == {"live/cam1": {"r2": "webRTCSession"}}
    # A reader on a stream the sidecar does not know as ready is ignored, not an error.
    assert env.hook("read", reader_body("live/other", "r3")).status_code == 204
    assert "live/other" not in env.live()


def test_unread_forgets_that_remembered_session_only(env: Env) -> None:
    leaving, staying = env.allow_session(), env.allow_session()
    env.wait_until_remembered(leaving)
    assert {leaving, staying} <= env.wait_until_remembered(staying)
    assert env.hook("unread", reader_body("live/cam1", leaving)).status_code == 204
    assert leaving not in env.remembered()
    assert staying in env.remembered()
    # Forgetting an id the sidecar never remembered is no error.
    assert env.hook("unread", reader_body("live/cam1", str(uuid.uuid4()))).status_code == 204
    assert staying in env.remembered()


def test_unread_right_after_the_read_callback_leaves_no_remembered_session(env: Env) -> None:
    # A reader that leaves at once: MediaMTX's unread hook follows the callback closely.
    leaving = env.allow_session()
    assert env.hook("unread", reader_body("live/cam1", leaving)).status_code == 204
    later = env.allow_session()
    assert leaving not in env.wait_until_remembered(later)


# --- bad bodies -------------------------------------------------------------------------------------------------------

BAD_JSON: dict[str, Any] = {
    "path is a number": {"path": 5},
    "path is a list": {"path": ["live/cam1"]},
    "path missing": {"source_type": "rtspSession"},
    "path empty": {"path": ""},
    "path null": {"path": None},
    "reader_id is a list": {"path": "live/cam1", "reader_id": ["r1"]},
    "query is an object": {"path": "live/cam1", "query": {"a": "b"}},
    "source_type is a boolean": {"path": "live/cam1", "source_type": True},
    "a field is too long": {"path": "live/" + "c" * 2000},
}


@pytest.mark.parametrize("body", list(BAD_JSON.values()), ids=list(BAD_JSON))
@pytest.mark.parametrize("event", ["ready", "unread"])
def test_bad_field_types_are_400(env: Env, event: str, body: dict[str, Any]) -> None:
    response = env.hook(event, body)
    assert response.status_code == 400, response.text
    assert isinstance(response.json()["error"], str)
    assert env.live() == {}


@pytest.mark.parametrize(
    "content",
    [b"[]", b'"live/cam1"', b"null", b"{", b"not json", b"\xff\xfe", b"[" * 5000 + b"]" * 5000],
    ids=["list", "string", "null", "truncated", "not JSON", "not UTF-8", "deeply nested"],
)
def test_malformed_json_bodies_are_400(env: Env, content: bytes) -> None:
    headers = {**KEY, "content-type": "application/json"}
    response = env.client.post("/mediamtx/hooks/ready", content=content, headers=headers)
    assert response.status_code == 400, response.text
    assert isinstance(response.json()["error"], str)


def test_a_file_upload_is_not_a_field(env: Env) -> None:
    files = {"path": ("path.txt", b"live/cam1", "text/plain")}
    response = env.client.post("/mediamtx/hooks/ready", files=files, headers=KEY)
    assert response.status_code == 400
    assert env.live() == {}


def test_unknown_fields_are_ignored(env: Env) -> None:
    body = {**ready_body("live/cam1"), "extra": {"nested": [1, 2]}, "n": 5}
    assert env.hook("ready", body).status_code == 204
    assert sorted(env.live()) == ["live/cam1"]


def test_hook_errors_never_echo_the_body(env: Env) -> None:
    marker = "marker-" + uuid.uuid4().hex
    response = env.client.post(
        "/mediamtx/hooks/ready",
        content=json.dumps({"path": 1, "query": marker}).encode(),
        headers={**KEY, "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert marker not in response.text
