"""Service endpoints: health, readiness with its upstream checks, version, auth status and Prometheus metrics."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

import sidecar
from sidecar.app import create_app
from sidecar.settings import Settings
from tests.helpers import API_KEY, TRUSTED_PEER, UNTRUSTED_PEER, callback_body

pytestmark = pytest.mark.usefixtures("cheap_bcrypt")

ClientFactory = Callable[..., TestClient]
SettingsFactory = Callable[..., Settings]
ADMIN = {"x-authentik-username": "ann", "x-authentik-groups": "vid_admin"}
VIEWER = {"x-authentik-username": "vic", "x-authentik-groups": "vid_public"}
MEDIAMTX = "http://mediamtx.test:9997"
AUTHENTIK = "https://sso.test"
UPSTREAM_SECRET = "upstream-body-must-not-leak"


class Upstreams:
    """An httpx transport standing in for MediaMTX and Authentik; each host can be up, failing or unreachable."""

    def __init__(self) -> None:
        self.state = {"mediamtx.test": "up", "sso.test": "up"}
        self.seen: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(str(request.url))
        state = self.state.get(request.url.host, "down")
        if state == "down":
            raise httpx.ConnectError("connection refused", request=request)
        if state == "timeout":
            raise httpx.ConnectTimeout("timed out", request=request)
        if state == "error":
            return httpx.Response(500, text=UPSTREAM_SECRET)
        return httpx.Response(200, json={"items": []})


@pytest.fixture
def upstreams() -> Upstreams:
    return Upstreams()


@pytest.fixture
def with_upstreams(settings: Settings, make_settings: SettingsFactory, upstreams: Upstreams) -> Iterator[TestClient]:
    configured = make_settings(mediamtx_api_url=MEDIAMTX, authentik_url=AUTHENTIK + "/")
    app = create_app(configured, transport=httpx.MockTransport(upstreams))
    with TestClient(app, client=TRUSTED_PEER) as client:
        yield client


def sample(metrics_text: str, name: str, labels: dict[str, str]) -> float:
    """The value of one sample (0 when the labelled series does not exist yet)."""
    for family in text_string_to_metric_families(metrics_text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return float(found.value)
    return 0.0


# --- health, version, auth status --------------------------------------------------------------------------------


def test_healthz_is_ok_for_anyone(make_client: ClientFactory) -> None:
    response = make_client(peer=UNTRUSTED_PEER).get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_version_reports_the_package_version(client: TestClient) -> None:
    response = client.get("/version")
    assert response.status_code == 200
    assert response.json() == {"version": sidecar.__version__}


def test_auth_status_reports_local_mode(client: TestClient) -> None:
    assert client.get("/auth/status").json() == {"auth_enabled": True, "mode": "local"}


def test_auth_status_reports_authentik_mode(make_client: ClientFactory, make_settings: SettingsFactory) -> None:
    client = make_client(app_settings=make_settings(mode="authentik"))
    assert client.get("/auth/status").json() == {"auth_enabled": True, "mode": "authentik"}


def test_health_endpoints_leak_no_secret(client: TestClient, settings: Settings) -> None:
    session_secret = (settings.data_dir / "session_secret").read_text().strip()
    for path in ("/healthz", "/readyz", "/version", "/auth/status"):
        text = client.get(path).text
        assert API_KEY not in text and session_secret not in text, path
        assert str(settings.data_dir) not in text, path


# --- readiness --------------------------------------------------------------------------------------------------


def test_readyz_local_mode_checks_store_and_directory(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"store": "ok", "directory": "ok"}}


def test_readyz_with_reachable_upstreams_is_ready(with_upstreams: TestClient, upstreams: Upstreams) -> None:
    response = with_upstreams.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"] == {"store": "ok", "directory": "ok", "mediamtx": "ok", "authentik": "ok"}
    assert f"{MEDIAMTX}/v3/paths/list" in upstreams.seen
    assert f"{AUTHENTIK}/-/health/ready/" in upstreams.seen


@pytest.mark.parametrize(("host", "check"), [("mediamtx.test", "mediamtx"), ("sso.test", "authentik")])
@pytest.mark.parametrize("failure", ["down", "timeout"])
def test_readyz_with_an_unreachable_upstream_is_503_naming_it(
    with_upstreams: TestClient, upstreams: Upstreams, host: str, check: str, failure: str
) -> None:
    upstreams.state[host] = failure
    response = with_upstreams.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["checks"][check].startswith("unreachable")
    healthy = {name: value for name, value in body["checks"].items() if name != check}
    assert set(healthy.values()) == {"ok"}


def test_readyz_with_an_upstream_error_is_503_without_its_body(
    with_upstreams: TestClient, upstreams: Upstreams
) -> None:
    upstreams.state["mediamtx.test"] = "error"
    response = with_upstreams.get("/readyz")
    assert response.status_code == 503
    assert "500" in response.json()["checks"]["mediamtx"]
    assert UPSTREAM_SECRET not in response.text


def test_readyz_recovers_when_the_upstream_comes_back(with_upstreams: TestClient, upstreams: Upstreams) -> None:
    upstreams.state["mediamtx.test"] = "down"
    assert with_upstreams.get("/readyz").status_code == 503
    upstreams.state["mediamtx.test"] = "up"
    assert with_upstreams.get("/readyz").status_code == 200


def test_readyz_reports_a_failing_store_as_503(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_error() -> bool:
        raise sqlite3.OperationalError("disk I/O error")

    with TestClient(create_app(settings), client=TRUSTED_PEER, raise_server_exceptions=False) as client:
        monkeypatch.setattr(client.app.state.services.store, "ping", disk_error)  # type: ignore[attr-defined]
        response = client.get("/readyz")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "not ready"
        assert body["checks"]["store"].startswith("failed")


# --- metrics ----------------------------------------------------------------------------------------------------


def test_metrics_needs_admin_or_api_key(make_client: ClientFactory) -> None:
    client = make_client()
    anonymous = client.get("/metrics")
    assert anonymous.status_code == 401
    assert anonymous.json() == {"error": "Unauthorized"}
    viewer = client.get("/metrics", headers=VIEWER)
    assert viewer.status_code == 403
    assert "error" in viewer.json()
    assert (
        client.get("/metrics", headers={"x-authentik-username": "t", "x-authentik-groups": "tak_x"}).status_code == 403
    )
    assert client.get("/metrics", headers={"x-api-key": "wrong-key"}).status_code == 401
    assert make_client(peer=UNTRUSTED_PEER).get("/metrics", headers=ADMIN).status_code == 401
    assert client.get("/metrics", headers=ADMIN).status_code == 200
    assert client.get("/metrics", headers={"x-api-key": API_KEY}).status_code == 200


def test_metrics_is_prometheus_text_with_decisions_and_latency(client: TestClient) -> None:
    client.get("/healthz")
    response = client.get("/metrics", headers={"x-api-key": API_KEY})
    assert response.headers["content-type"].startswith("text/plain")
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    assert families["sidecar_decisions"].type == "counter"
    assert families["sidecar_request_seconds"].type == "histogram"
    assert sample(response.text, "sidecar_request_seconds_count", {"area": "healthz", "method": "GET"}) >= 1


def test_decision_counter_counts_each_mediamtx_callback_once(client: TestClient) -> None:
    """Every answer to MediaMTX's auth callback is counted once, by result and action, whichever step decided it;
    the callback's latency shows under its own area."""
    key = {"x-api-key": API_KEY}
    client.put("/api/v1/rules", json={"pattern": "live/**", "groups": ["vid_public"]}, headers=key)
    allow = {"result": "allow", "action": "read"}
    deny = {"result": "deny", "action": "publish"}
    before = client.get("/metrics", headers=key).text
    # The API key reaches the rule book; no credentials are refused before it.
    assert client.post("/mediamtx/auth", json=callback_body(password=API_KEY, path="live/a")).status_code == 200
    assert client.post("/mediamtx/auth", json=callback_body(action="publish", path="live/a")).status_code == 401
    after = client.get("/metrics", headers=key).text
    assert sample(after, "sidecar_decisions_total", allow) == sample(before, "sidecar_decisions_total", allow) + 1
    assert sample(after, "sidecar_decisions_total", deny) == sample(before, "sidecar_decisions_total", deny) + 1
    latency = {"area": "mediamtx", "method": "POST"}
    assert sample(after, "sidecar_request_seconds_count", latency) == 2


def test_metrics_labels_do_not_grow_with_random_paths(client: TestClient) -> None:
    for n in range(5):
        client.get(f"/random-{n}")
    text = client.get("/metrics", headers={"x-api-key": API_KEY}).text
    assert "random-" not in text
    assert sample(text, "sidecar_request_seconds_count", {"area": "other", "method": "GET"}) >= 5
