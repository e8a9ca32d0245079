"""Stream sources over the API: MediaMTX path configurations through the fake MediaMTX, admins only."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from starlette.testclient import TestClient

from sidecar.app import create_app
from sidecar.settings import Settings
from tests.fake_mediamtx import FakeMediaMTX, create_fake_mediamtx
from tests.helpers import API_KEY, TRUSTED_PEER, bootstrapped_settings, login

pytestmark = pytest.mark.usefixtures("cheap_bcrypt")
VIEWER = {"x-authentik-username": "vic", "x-authentik-groups": "vid_public"}
KEY = {"x-api-key": API_KEY}


@pytest.fixture
def fake() -> FakeMediaMTX:
    return create_fake_mediamtx()


@pytest.fixture
def client(make_settings: Callable[..., Settings], fake: FakeMediaMTX) -> Iterator[TestClient]:
    settings = bootstrapped_settings(make_settings().data_dir, mediamtx_api_url="http://mediamtx.test")
    with TestClient(create_app(settings, transport=httpx.ASGITransport(app=fake.app)), client=TRUSTED_PEER) as c:
        yield c


def test_admin_adds_changes_lists_and_deletes_a_source(client: TestClient, fake: FakeMediaMTX) -> None:
    headers = login(client)
    body = {"name": "live/drone1", "source": "rtsp://cam:secret@10.0.0.5:554/stream", "source_on_demand": True}
    assert client.post("/api/v1/sources", json=body, headers=headers).status_code == 201
    assert fake.config_paths["live/drone1"]["source"] == body["source"]
    assert fake.config_paths["live/drone1"]["sourceOnDemand"] is True
    listed = client.get("/api/v1/sources").json()["sources"]
    assert {"name": "live/drone1", "source": body["source"], "source_on_demand": True, "record": False} in listed

    changed = client.patch("/api/v1/sources/live/drone1", json={"source_on_demand": False}, headers=headers)
    assert changed.status_code == 200, changed.text
    assert fake.config_paths["live/drone1"]["sourceOnDemand"] is False

    assert client.delete("/api/v1/sources/live/drone1", headers=headers).status_code == 200
    assert "live/drone1" not in fake.config_paths
    actions = [event["action"] for event in client.get("/api/v1/audit", headers=KEY).json()["events"]]
    assert {"source.add", "source.change", "source.delete"} <= set(actions)


def test_source_credentials_never_reach_the_audit_log(client: TestClient) -> None:
    headers = login(client)
    body = {"name": "live/cam9", "source": "rtsp://operator:hunter2-secret@10.1.1.1/x"}
    assert client.post("/api/v1/sources", json=body, headers=headers).status_code == 201
    audit = client.get("/api/v1/audit", params={"action": "source.add"}, headers=KEY).text
    assert "hunter2-secret" not in audit and "operator" not in audit
    assert "rtsp://10.1.1.1" in audit


def test_mediamtx_rejection_is_shown_plainly_to_the_admin(client: TestClient, fake: FakeMediaMTX) -> None:
    headers = login(client)
    fake.add_config_path("live/taken", source="publisher")
    answer = client.post("/api/v1/sources", json={"name": "live/taken", "source": "publisher"}, headers=headers)
    assert answer.status_code == 400
    assert answer.json()["error"] == "MediaMTX: path already exists"
    missing = client.delete("/api/v1/sources/live/nowhere", headers=headers)
    assert missing.status_code == 404 and "MediaMTX" in missing.json()["error"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "live/*", "source": "publisher"}, "name"),
        ({"name": "live/../x", "source": "publisher"}, "name"),
        ({"name": "", "source": "publisher"}, "name"),
        ({"name": "live/x", "source": "file:///etc/passwd"}, "source"),
        ({"name": "live/x", "source": "javascript:alert(1)"}, "source"),
        ({"name": "live/x"}, "source"),
        ({"name": "live/x", "source": "publisher", "source_on_demand": "yes"}, "source_on_demand"),
    ],
)
def test_bad_source_input_is_a_400_naming_the_field(client: TestClient, body: dict[str, object], field: str) -> None:
    answer = client.post("/api/v1/sources", json=body, headers=login(client))
    assert answer.status_code == 400
    assert answer.json()["field"] == field


def test_viewers_cannot_touch_sources(client: TestClient, fake: FakeMediaMTX) -> None:
    assert client.get("/api/v1/sources", headers=VIEWER).status_code == 403
    answer = client.post("/api/v1/sources", json={"name": "live/x", "source": "publisher"}, headers=VIEWER)
    assert answer.status_code == 403
    assert "live/x" not in fake.config_paths


def test_source_changes_need_csrf_from_a_browser(client: TestClient, fake: FakeMediaMTX) -> None:
    login(client)
    answer = client.post(
        "/api/v1/sources", json={"name": "live/x", "source": "publisher"}, headers={"origin": "http://testserver"}
    )
    assert answer.status_code == 403
    assert "live/x" not in fake.config_paths


def test_sources_without_mediamtx_configured_say_so(make_settings: Callable[..., Settings]) -> None:
    settings = bootstrapped_settings(make_settings().data_dir)
    with TestClient(create_app(settings), client=TRUSTED_PEER) as client:
        answer = client.get("/api/v1/sources", headers=KEY)
    assert answer.status_code == 503
    assert "SIDECAR_MEDIAMTX_API_URL" in answer.json()["error"]
