"""The /users and /audit pages and the people API behind them: frames with data attributes for users.js and
audit.js, admins only, recovery in each mode, the prefix guard, and no `tak_*` group in any answer."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from sidecar.app import create_app
from sidecar.runtime import Services, run_with_services
from sidecar.settings import Settings
from sidecar.users import NO_RECOVERY
from tests.fake_authentik import BASE, TOKEN, FakeAuthentik, create_fake_authentik
from tests.helpers import API_KEY, TRUSTED_PEER, login

pytestmark = pytest.mark.usefixtures("cheap_bcrypt")

ClientFactory = Callable[..., TestClient]
KEY = {"x-api-key": API_KEY}
HTML = {"accept": "text/html"}
BOB_PASSWORD = "bob-password-1"
STATIC = Path(__file__).resolve().parent.parent / "sidecar" / "overlay_static"
ADMIN = {"X-Authentik-Username": "alice", "X-Authentik-Groups": "vid_admin", "origin": "http://testserver"}
VIEWER = {"X-Authentik-Username": "bob", "X-Authentik-Groups": "vid_public|tak_ops", "origin": "http://testserver"}


class Elements(HTMLParser):
    """Every start tag's attributes, by id."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.ids: dict[str, dict[str, str]] = {}
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if "id" in found:
            self.ids[found["id"]] = found


def add_viewer(settings: Settings) -> None:
    async def work(services: Services) -> None:
        await services.users.add_user("bob", ["vid_public"], BOB_PASSWORD, actor="test")

    run_with_services(settings, work)


@pytest.fixture
def local(settings: Settings, client: TestClient) -> TestClient:
    add_viewer(settings)
    return client


# --- local mode ---------------------------------------------------------------------------------------------------


def test_admin_gets_the_users_frame_with_its_data_attributes(local: TestClient) -> None:
    login(local)
    response = local.get("/users", headers=HTML)
    assert response.status_code == 200
    ids = Elements(response.text).ids
    app = ids["users-app"]
    assert app["data-mode"] == "local"
    assert app["data-prefix"] == "vid_"
    assert app["data-csrf-token"] == local.get("/api/v1/me").json()["csrf_token"]
    for element in ("status", "user-list", "user-search", "users-pager", "groups-body", "group-form"):
        assert element in ids, element
    assert ids["group-name"]["value"] == "vid_"
    assert ids["status"]["aria-live"] == "polite"
    assert '<script type="module" src="/overlay/users.js"></script>' in response.text
    assert 'href="/audit"' in response.text
    # People are not rendered on the server: users.js reads them from the API.
    assert "bob" not in response.text


def test_admin_gets_the_audit_frame(local: TestClient) -> None:
    login(local)
    response = local.get("/audit", headers=HTML)
    assert response.status_code == 200
    ids = Elements(response.text).ids
    assert ids["audit-app"]["data-csrf-token"]
    for element in ("audit-filters", "audit-action", "audit-actions", "audit-actor", "audit-target", "audit-body"):
        assert element in ids, element
    assert '<script type="module" src="/overlay/audit.js"></script>' in response.text


@pytest.mark.parametrize("path", ["/users", "/audit"])
def test_a_viewer_gets_the_403_page(local: TestClient, path: str) -> None:
    login(local, "bob", BOB_PASSWORD)
    response = local.get(path, headers=HTML)
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")
    assert "No access" in response.text
    assert 'href="/audit"' not in response.text and 'href="/users"' not in response.text


@pytest.mark.parametrize("path", ["/users", "/audit"])
def test_anonymous_is_sent_to_sign_in(local: TestClient, path: str) -> None:
    response = local.get(path, headers=HTML, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == f"/auth/login?next={path}"


@pytest.mark.parametrize("kind", ["recovery-link", "recovery-email"])
def test_local_mode_has_no_recovery_and_says_so(local: TestClient, kind: str) -> None:
    headers = login(local)
    response = local.post(f"/api/v1/users/bob/{kind}", json={}, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"] == NO_RECOVERY
    assert "local mode" in NO_RECOVERY and "sidecar users" in NO_RECOVERY
    assert local.get("/api/v1/audit?action=user.recovery_link", headers=KEY).json()["events"] == []


def test_audit_filters_by_actor_and_target(local: TestClient) -> None:
    headers = login(local)
    assert local.put("/api/v1/users/bob/groups/vid_private", headers=headers).status_code == 200
    assert local.delete("/api/v1/users/bob/groups/vid_private", headers=KEY).status_code == 200
    by_admin = local.get("/api/v1/audit?actor=admin&target=bob", headers=KEY).json()["events"]
    assert [(e["action"], e["detail"]) for e in by_admin] == [("group.add", {"group": "vid_private"})]
    removed = local.get("/api/v1/audit?action=group.remove&target=bob", headers=KEY).json()["events"]
    assert [e["actor"] for e in removed] == ["api-key"]
    assert local.get("/api/v1/audit?target=nobody", headers=KEY).json()["events"] == []
    everything = local.get("/api/v1/audit?limit=1000", headers=KEY).json()["events"]
    assert [e["id"] for e in everything] == sorted((e["id"] for e in everything), reverse=True)


def test_group_form_errors_are_plain(local: TestClient) -> None:
    headers = login(local)
    response = local.post("/api/v1/groups", json={"name": "ops"}, headers=headers)
    assert response.status_code == 400
    assert response.json() == {
        "error": "group name must start with vid_",
        "field": "name",
    }


# --- authentik mode -----------------------------------------------------------------------------------------------


@pytest.fixture
def fake() -> FakeAuthentik:
    found = create_fake_authentik()
    found.add_group("tak_ROLE_ADMIN")
    found.add_user("erin", "vid_public", "tak_ROLE_ADMIN", "tak_ops", name="Erin", email="erin@example.org")
    found.add_user("vera", "vid_public", name="Vera", email="vera@example.org")  # only in video groups
    return found


@pytest.fixture
def sso(make_settings: Callable[..., Settings], fake: FakeAuthentik) -> Iterator[TestClient]:
    settings = make_settings(mode="authentik", authentik_url=BASE, authentik_token=TOKEN, bootstrap_password=None)
    app = create_app(settings, transport=httpx.ASGITransport(app=fake.app))
    with TestClient(app, client=TRUSTED_PEER, base_url="http://testserver") as client:
        yield client


def csrf(client: TestClient, identity: dict[str, str]) -> dict[str, str]:
    token = client.get("/api/v1/me", headers=identity).json()["csrf_token"]
    return {**identity, "x-csrf-token": token}


def test_authentik_admin_page_names_the_mode(sso: TestClient) -> None:
    response = sso.get("/users", headers={**ADMIN, **HTML})
    assert response.status_code == 200
    assert Elements(response.text).ids["users-app"]["data-mode"] == "authentik"


def test_recovery_link_is_returned_and_audited(sso: TestClient, fake: FakeAuthentik) -> None:
    response = sso.post("/api/v1/users/vera/recovery-link", json={}, headers=csrf(sso, ADMIN))
    assert response.status_code == 200, response.text
    vera = fake.user_named("vera")
    assert vera is not None
    assert response.json() == {"link": f"{BASE}/if/flow/recovery/?flow_token=token-{vera.pk}"}
    events = sso.get("/api/v1/audit?action=user.recovery_link", headers=KEY).json()["events"]
    assert [(e["actor"], e["target"], e["detail"]) for e in events] == [("alice", "vera", {})]
    assert "flow_token" not in sso.get("/api/v1/audit", headers=KEY).text


def test_recovery_email_is_sent_and_audited(sso: TestClient, fake: FakeAuthentik) -> None:
    body = {"email_stage": "0b8f4b7e-3f55-4f0e-9d2a-1f1c5a3d9e10"}
    response = sso.post("/api/v1/users/vera/recovery-email", json=body, headers=csrf(sso, ADMIN))
    assert response.status_code == 200, response.text
    assert response.json() == {"sent": True}
    assert fake.recovery_emails == [("vera", body["email_stage"])]
    events = sso.get("/api/v1/audit?action=user.recovery_email", headers=KEY).json()["events"]
    assert [(e["actor"], e["target"]) for e in events] == [("alice", "vera")]


def test_recovery_email_without_a_stage_says_what_is_missing(sso: TestClient, fake: FakeAuthentik) -> None:
    response = sso.post("/api/v1/users/bob/recovery-email", json={}, headers=csrf(sso, ADMIN))
    assert response.status_code == 400
    assert response.json()["field"] == "email_stage"
    assert fake.recovery_emails == []


@pytest.mark.parametrize("kind", ["recovery-link", "recovery-email"])
def test_recovery_needs_csrf_and_an_admin(sso: TestClient, fake: FakeAuthentik, kind: str) -> None:
    body = {"email_stage": "stage"}
    no_token = sso.post(f"/api/v1/users/bob/{kind}", json=body, headers=ADMIN)
    assert no_token.status_code == 403 and "CSRF" in no_token.json()["error"]
    foreign = {**csrf(sso, ADMIN), "origin": "https://evil.example"}
    assert sso.post(f"/api/v1/users/bob/{kind}", json=body, headers=foreign).status_code == 403
    viewer = sso.post(f"/api/v1/users/bob/{kind}", json=body, headers=csrf(sso, VIEWER))
    assert viewer.status_code == 403
    assert fake.writes() == [] and fake.recovery_emails == []
    assert not [s for s in fake.requests if "recovery" in s.path]


def test_a_crafted_tak_membership_is_refused_and_audited(sso: TestClient, fake: FakeAuthentik) -> None:
    headers = csrf(sso, ADMIN)
    for method in ("PUT", "DELETE"):
        response = sso.request(method, "/api/v1/users/bob/groups/tak_ROLE_ADMIN", headers=headers)
        assert response.status_code == 403
    assert fake.writes() == []
    bob = fake.user_named("bob")
    assert bob is not None and [g.name for g in fake.groups_of(bob)] == ["tak_ops", "vid_public"]
    events = sso.get("/api/v1/audit?action=group.denied", headers=KEY).json()["events"]
    assert [(e["actor"], e["target"]) for e in events] == [("alice", "tak_ROLE_ADMIN")] * 2


def test_no_tak_group_in_any_answer(sso: TestClient) -> None:
    headers = csrf(sso, ADMIN)
    assert sso.put("/api/v1/users/erin/groups/vid_private", headers=headers).status_code == 200
    answers = [
        sso.get("/users", headers={**ADMIN, **HTML}),
        sso.get("/audit", headers={**ADMIN, **HTML}),
        sso.get("/api/v1/users", headers=ADMIN),
        sso.get("/api/v1/users?search=erin", headers=ADMIN),
        sso.get("/api/v1/groups", headers=ADMIN),
        sso.get("/api/v1/me", headers=VIEWER),
    ]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert "tak_" not in answer.text
    erin = next(u for u in answers[2].json()["users"] if u["username"] == "erin")
    assert erin["groups"] == ["vid_private", "vid_public"]


# --- the modules --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["users.js", "audit.js"])
def test_modules_parse_and_are_served(client: TestClient, module: str) -> None:
    source = (STATIC / module).read_text()
    assert "innerHTML" not in source and "onclick" not in source
    assert client.get(f"/overlay/{module}").status_code == 200
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    result = subprocess.run(  # noqa: S603
        [node, "--input-type=module", "--check"], input=source, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
