"""The JSON API under /api/v1/: shapes, roles, CSRF, input validation, and the OpenAPI document kept true."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from sidecar.app import create_app
from sidecar.runtime import Services, run_with_services
from sidecar.settings import Settings
from tests.helpers import API_KEY, TRUSTED_PEER, bootstrapped_settings, login

pytestmark = pytest.mark.usefixtures("cheap_bcrypt")

T = TypeVar("T")
ClientFactory = Callable[..., TestClient]
KEY = {"x-api-key": API_KEY}
BOB_PASSWORD = "bob-password-1"
RULE = {"pattern": "live/**", "groups": ["vid_public"]}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@pytest.fixture
def bob(settings: Settings) -> str:
    async def work(services: Services) -> None:
        await services.users.add_user("bob", ["vid_public"], BOB_PASSWORD, actor="test")

    run_with_services(settings, work)
    return "bob"


@pytest.fixture
def lenient(settings: Settings) -> Iterator[TestClient]:
    """A client that shows server errors as the browser would see them (a 500 response) instead of raising."""
    with TestClient(create_app(settings), client=TRUSTED_PEER, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One app for the many input-validation cases (each case must leave no rule or group behind)."""
    found = bootstrapped_settings(tmp_path_factory.mktemp("api") / "data")
    with TestClient(create_app(found), client=TRUSTED_PEER, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def admin_headers(client: TestClient) -> dict[str, str]:
    """The admin signed in through the session cookie; headers for a same-origin browser write."""
    return login(client)


def rule_patterns(client: TestClient) -> list[str]:
    return [rule["pattern"] for rule in client.get("/api/v1/rules", headers=KEY).json()["rules"]]


# --- /api/v1/me -------------------------------------------------------------------------------------------------


def test_me_shape_shows_only_prefixed_groups(client: TestClient, settings: Settings) -> None:
    async def give_tak_admin(services: Services) -> None:
        await services.directory.create_group("tak_admin")
        await services.directory.add_to_group("admin", "tak_admin")

    run_with_services(settings, give_tak_admin)
    login(client)
    me = client.get("/api/v1/me")
    assert me.status_code == 200
    body = me.json()
    assert body["username"] == "admin"
    assert body["role"] == "admin"
    assert body["groups"] == ["vid_admin"]
    assert isinstance(body["csrf_token"], str) and body["csrf_token"]
    assert "tak_admin" not in me.text
    verify = client.get("/auth/verify", headers={"x-forwarded-uri": "/"})
    assert "tak_admin" in verify.headers["x-authentik-groups"]  # the membership is real, only hidden


def test_me_for_a_proxy_identity_hides_foreign_groups(client: TestClient) -> None:
    headers = {"x-authentik-username": "ann", "x-authentik-groups": "tak_admin|vid_private|vid_public"}
    body = client.get("/api/v1/me", headers=headers).json()
    assert (body["username"], body["role"], body["groups"]) == ("ann", "viewer", ["vid_private", "vid_public"])


def test_anonymous_gets_401_unauthorized_everywhere(client: TestClient) -> None:
    requests = [
        ("GET", "/api/v1/me"),
        ("GET", "/api/v1/rules"),
        ("PUT", "/api/v1/rules"),
        ("DELETE", "/api/v1/rules?pattern=live/**"),
        ("GET", "/api/v1/explain?path=live/a&groups=vid_public"),
        ("GET", "/api/v1/users"),
        ("GET", "/api/v1/groups"),
        ("POST", "/api/v1/groups"),
    ]
    for method, path in requests:
        response = client.request(method, path, json=RULE if method in ("PUT", "POST") else None)
        assert response.status_code == 401, (method, path)
        assert response.json() == {"error": "Unauthorized"}
        assert response.headers["www-authenticate"].startswith("Bearer")


# --- rules ------------------------------------------------------------------------------------------------------


def test_rules_get_put_delete_as_admin_with_login_headers(client: TestClient, admin_headers: dict[str, str]) -> None:
    put = client.put(
        "/api/v1/rules", json={"pattern": "/live/**", "groups": ["vid_public", "vid_private"]}, headers=admin_headers
    )
    assert put.status_code == 200
    assert put.json() == {"pattern": "live/**", "groups": ["vid_private", "vid_public"]}
    assert {"pattern": "live/**", "groups": ["vid_private", "vid_public"]} in client.get("/api/v1/rules").json()[
        "rules"
    ]

    replaced = client.put("/api/v1/rules", json=RULE, headers=admin_headers)
    assert replaced.json() == RULE
    assert client.get("/api/v1/rules").json()["rules"] == [RULE]

    deleted = client.delete("/api/v1/rules", params={"pattern": "live/**"}, headers=admin_headers)
    assert deleted.status_code == 200
    assert deleted.json() == {"deleted": "live/**"}
    assert client.get("/api/v1/rules").json()["rules"] == []

    again = client.delete("/api/v1/rules", params={"pattern": "live/**"}, headers=admin_headers)
    assert again.status_code == 404
    assert again.json()["field"] == "pattern"


def test_rules_get_put_delete_with_api_key(client: TestClient) -> None:
    assert client.put("/api/v1/rules", json=RULE, headers=KEY).json() == RULE
    assert rule_patterns(client) == ["live/**"]
    assert client.delete("/api/v1/rules?pattern=live/**", headers=KEY).status_code == 200
    assert rule_patterns(client) == []


def test_viewer_gets_403_on_admin_routes(client: TestClient, bob: str) -> None:
    headers = login(client, bob, BOB_PASSWORD)
    me = client.get("/api/v1/me").json()
    assert (me["username"], me["role"], me["groups"]) == ("bob", "viewer", ["vid_public"])
    requests = [
        ("GET", "/api/v1/rules", None),
        ("PUT", "/api/v1/rules", RULE),
        ("DELETE", "/api/v1/rules?pattern=live/**", None),
        ("GET", "/api/v1/explain?path=live/a&groups=vid_public", None),
        ("GET", "/api/v1/users", None),
        ("GET", "/api/v1/groups", None),
        ("POST", "/api/v1/groups", {"name": "vid_bobs"}),
    ]
    for method, path, body in requests:
        response = client.request(method, path, json=body, headers=headers)
        assert response.status_code == 403, (method, path)
        assert "error" in response.json()
    assert rule_patterns(client) == []
    assert "vid_bobs" not in client.get("/api/v1/groups", headers=KEY).text


# --- CSRF (SECURITY.md 14) --------------------------------------------------------------------------------------


def test_put_without_csrf_token_is_403(client: TestClient, admin_headers: dict[str, str]) -> None:
    response = client.put("/api/v1/rules", json=RULE, headers={"origin": admin_headers["origin"]})
    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]
    assert rule_patterns(client) == []


@pytest.mark.parametrize("token", ["garbage", "", "admin"], ids=["garbage", "empty", "bare-username"])
def test_put_with_a_forged_csrf_token_is_403(client: TestClient, admin_headers: dict[str, str], token: str) -> None:
    response = client.put("/api/v1/rules", json=RULE, headers={**admin_headers, "x-csrf-token": token})
    assert response.status_code == 403
    assert rule_patterns(client) == []


def test_put_with_a_tampered_csrf_token_is_403(client: TestClient, admin_headers: dict[str, str]) -> None:
    payload, timestamp, signature = admin_headers["x-csrf-token"].split(".")
    middle = len(signature) // 2
    flipped = signature[:middle] + ("A" if signature[middle] != "A" else "B") + signature[middle + 1 :]
    for tampered in (f"{payload}.{timestamp}.{flipped}", f"{payload}x.{timestamp}.{signature}"):
        response = client.put("/api/v1/rules", json=RULE, headers={**admin_headers, "x-csrf-token": tampered})
        assert response.status_code == 403
    assert rule_patterns(client) == []


def test_put_with_a_csrf_token_minted_for_another_user_is_403(
    make_client: ClientFactory, client: TestClient, admin_headers: dict[str, str], bob: str
) -> None:
    bobs_token = login(make_client(), bob, BOB_PASSWORD)["x-csrf-token"]
    response = client.put("/api/v1/rules", json=RULE, headers={**admin_headers, "x-csrf-token": bobs_token})
    assert response.status_code == 403
    assert rule_patterns(client) == []


@pytest.mark.parametrize(
    "origin",
    ["https://evil.example", "http://testserver.evil.example", "null", "https://testserver", "http://evil.example"],
)
def test_put_with_a_foreign_origin_is_403(client: TestClient, admin_headers: dict[str, str], origin: str) -> None:
    response = client.put("/api/v1/rules", json=RULE, headers={**admin_headers, "origin": origin})
    assert response.status_code == 403
    assert "origin" in response.json()["error"].lower()
    assert rule_patterns(client) == []


def test_put_with_neither_origin_nor_referer_is_403(client: TestClient, admin_headers: dict[str, str]) -> None:
    response = client.put("/api/v1/rules", json=RULE, headers={"x-csrf-token": admin_headers["x-csrf-token"]})
    assert response.status_code == 403
    assert rule_patterns(client) == []


def test_put_with_the_referer_of_the_own_site_is_accepted(client: TestClient, admin_headers: dict[str, str]) -> None:
    headers = {"x-csrf-token": admin_headers["x-csrf-token"], "referer": "http://testserver/users?page=2"}
    assert client.put("/api/v1/rules", json=RULE, headers=headers).status_code == 200
    foreign = {"x-csrf-token": admin_headers["x-csrf-token"], "referer": "https://evil.example/http://testserver/"}
    assert client.delete("/api/v1/rules?pattern=live/**", headers=foreign).status_code == 403
    assert rule_patterns(client) == ["live/**"]


def test_configured_extra_origin_is_accepted(
    make_client: ClientFactory, make_settings: Callable[..., Settings]
) -> None:
    client = make_client(app_settings=make_settings(allowed_origins=["https://video.example.org"]))
    headers = {**login(client), "origin": "https://video.example.org"}
    assert client.put("/api/v1/rules", json=RULE, headers=headers).status_code == 200


def test_csrf_applies_to_every_write(client: TestClient, admin_headers: dict[str, str]) -> None:
    client.put("/api/v1/rules", json=RULE, headers=admin_headers)
    origin_only = {"origin": admin_headers["origin"]}
    assert client.delete("/api/v1/rules?pattern=live/**", headers=origin_only).status_code == 403
    assert client.post("/api/v1/groups", json={"name": "vid_csrf"}, headers=origin_only).status_code == 403
    assert rule_patterns(client) == ["live/**"]
    assert "vid_csrf" not in client.get("/api/v1/groups").text


# --- input validation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b"not json", None),
        (b"[]", None),
        (b'["live/**", ["vid_public"]]', None),
        (b'"live/**"', None),
        (b"{", None),
        (b'{"groups": ["vid_public"]}', "pattern"),
        (b'{"pattern": 7, "groups": ["vid_public"]}', "pattern"),
        (b'{"pattern": "live/**", "groups": "vid_public"}', "groups"),
        (b'{"pattern": "live/**", "groups": [1]}', "groups"),
        (b'{"pattern": "live/**"}', "groups"),
        (b'{"pattern": "live/**", "groups": ["tak_admin"]}', "groups"),
        (b'{"pattern": "live/**", "groups": ["vid_nope"]}', "groups"),
        (b'{"pattern": "live/**", "groups": ["vid_public|vid_admin"]}', "groups"),
        (b'{"pattern": "a//b", "groups": ["vid_public"]}', "pattern"),
        (b'{"pattern": "live/../x", "groups": ["vid_public"]}', "pattern"),
        (b'{"pattern": "live/**x", "groups": ["vid_public"]}', "pattern"),
        (b'{"pattern": "live/%2e", "groups": ["vid_public"]}', "pattern"),
        (b'{"pattern": "", "groups": ["vid_public"]}', "pattern"),
    ],
)
def test_malformed_rule_body_is_400_with_the_field(shared: TestClient, content: bytes, field: str | None) -> None:
    response = shared.put("/api/v1/rules", content=content, headers={**KEY, "content-type": "application/json"})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"]
    if field is not None:
        assert body["field"] == field
    assert rule_patterns(shared) == []


@pytest.mark.parametrize(
    ("content", "field"),
    [(b"nope", None), (b"[]", None), (b"{}", "name"), (b'{"name": 5}', "name"), (b'{"name": ["vid_x"]}', "name")],
)
def test_malformed_group_body_is_400(shared: TestClient, content: bytes, field: str | None) -> None:
    response = shared.post("/api/v1/groups", content=content, headers={**KEY, "content-type": "application/json"})
    assert response.status_code == 400, response.text
    if field is not None:
        assert response.json()["field"] == field


def test_oversized_body_with_content_length_is_413_json(client: TestClient) -> None:
    big = b'{"pattern": "live/**", "groups": ["vid_public"], "pad": "' + b"x" * (64 * 1024) + b'"}'
    response = client.put("/api/v1/rules", content=big, headers={**KEY, "content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]


def test_oversized_chunked_body_is_413_json(client: TestClient) -> None:
    big = b'{"pattern": "live/**", "groups": ["vid_public"], "pad": "' + b"x" * (64 * 1024) + b'"}'
    response = client.put(
        "/api/v1/rules", content=iter([big[:1000], big[1000:]]), headers={**KEY, "content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert response.json()["error"]
    assert rule_patterns(client) == []


def test_body_just_under_the_limit_is_accepted(client: TestClient) -> None:
    body = b'{"pattern": "live/**", "groups": ["vid_public"], "pad": "'
    body += b"x" * (64 * 1024 - len(body) - 2) + b'"}'
    assert len(body) == 64 * 1024
    response = client.put("/api/v1/rules", content=body, headers={**KEY, "content-type": "application/json"})
    assert response.status_code == 200


# --- explain ----------------------------------------------------------------------------------------------------


def test_explain_for_a_user_and_for_a_group_preview(client: TestClient, bob: str) -> None:
    client.put("/api/v1/rules", json=RULE, headers=KEY)

    def explain(**params: str) -> Any:
        response = client.get("/api/v1/explain", params=params, headers=KEY)
        assert response.status_code == 200, response.text
        return response.json()

    allowed = explain(user="bob", path="live/cam1")
    assert allowed["allowed"] is True
    assert (allowed["user"], allowed["role"], allowed["groups"]) == ("bob", "viewer", ["vid_public"])
    assert allowed["rule"]
    assert explain(user="bob", path="private/x")["allowed"] is False
    assert explain(user="bob", path="live/cam1", action="publish")["allowed"] is False
    assert explain(user="admin", path="private/x")["allowed"] is True

    preview = explain(groups="vid_public", path="live/cam1")
    assert (preview["allowed"], preview["role"]) == (True, "viewer")
    assert explain(groups="vid_private", path="live/cam1")["allowed"] is False
    denied = explain(groups="tak_admin|tak_users", path="live/cam1")
    assert (denied["allowed"], denied["role"], denied["groups"]) == (False, "none", [])
    assert explain(groups="vid_admin", path="anything/else")["allowed"] is True


def test_explain_input_errors(client: TestClient) -> None:
    no_path = client.get("/api/v1/explain", params={"user": "admin"}, headers=KEY)
    assert (no_path.status_code, no_path.json()["field"]) == (400, "path")
    unknown = client.get("/api/v1/explain", params={"user": "ghost", "path": "live/a"}, headers=KEY)
    assert (unknown.status_code, unknown.json()["field"]) == (404, "user")
    nobody = client.get("/api/v1/explain", params={"path": "live/a"}, headers=KEY)
    assert (nobody.status_code, nobody.json()["field"]) == (400, "user")


# --- users ------------------------------------------------------------------------------------------------------


def test_users_list_pages_and_searches(client: TestClient, bob: str) -> None:
    everyone = client.get("/api/v1/users", headers=KEY).json()
    assert everyone["total"] == 2
    assert {user["username"] for user in everyone["users"]} == {"admin", "bob"}
    bob_row = next(user for user in everyone["users"] if user["username"] == "bob")
    assert (bob_row["is_active"], bob_row["groups"]) == (True, ["vid_public"])
    assert "password" not in str(everyone).lower()

    second = client.get("/api/v1/users", params={"page": "2", "page_size": "1"}, headers=KEY).json()
    assert (second["page"], second["page_size"], second["total"], len(second["users"])) == (2, 1, 2, 1)
    first = client.get("/api/v1/users", params={"page": "1", "page_size": "1"}, headers=KEY).json()
    assert first["users"] != second["users"]

    found = client.get("/api/v1/users", params={"search": "bo"}, headers=KEY).json()
    assert [user["username"] for user in found["users"]] == ["bob"]


@pytest.mark.parametrize(
    "params",
    [
        {"page": "0"},
        {"page": "abc"},
        {"page": "-1"},
        {"page": "1.5"},
        {"page": "9999999"},
        {"page_size": "1000"},
        {"page_size": "0"},
        {"page_size": "abc"},
    ],
)
def test_users_paging_params_are_validated(shared: TestClient, params: dict[str, str]) -> None:
    response = shared.get("/api/v1/users", params=params, headers=KEY)
    assert response.status_code == 400
    body = response.json()
    assert body["error"]
    assert body["field"] in ("page", "page_size")


@pytest.mark.parametrize("value", ["1000", "0"])
def test_users_page_size_error_names_page_size(shared: TestClient, value: str) -> None:
    response = shared.get("/api/v1/users", params={"page_size": value}, headers=KEY)
    assert response.status_code == 400
    assert response.json()["field"] == "page_size"


@pytest.mark.parametrize("value", ["\u00b2", "\u2460"])
def test_users_page_with_a_non_ascii_digit_is_400(shared: TestClient, value: str) -> None:
    response = shared.get("/api/v1/users", params={"page": value}, headers=KEY)
    assert response.status_code == 400
    assert response.json()["field"] == "page"


# --- groups -----------------------------------------------------------------------------------------------------


def test_groups_create_prefixed_group(client: TestClient, admin_headers: dict[str, str]) -> None:
    created = client.post("/api/v1/groups", json={"name": "vid_new"}, headers=admin_headers)
    assert created.status_code == 201
    assert created.json() == {"name": "vid_new", "created": True}
    names = {group["name"] for group in client.get("/api/v1/groups").json()["groups"]}
    assert names == {"vid_admin", "vid_private", "vid_public", "vid_new"}
    again = client.post("/api/v1/groups", json={"name": "vid_new"}, headers=admin_headers)
    assert again.status_code == 200
    assert again.json()["created"] is False


@pytest.mark.parametrize("name", ["tak_x", "VID_x", "authentik Admins", "vid_a|vid_admin", "vid_" + "x" * 80, ""])
def test_groups_create_refuses_names_outside_the_prefix(shared: TestClient, name: str) -> None:
    response = shared.post("/api/v1/groups", json={"name": name}, headers=KEY)
    assert response.status_code in (400, 403)
    assert "error" in response.json()
    services: Services = shared.app.state.services  # type: ignore[attr-defined]
    assert name not in {group.name for group in shared.portal.call(services.directory.list_groups)}


def test_groups_list_hides_foreign_groups_and_counts_members(client: TestClient, settings: Settings, bob: str) -> None:
    async def add_tak(services: Services) -> None:
        await services.directory.create_group("tak_users")
        await services.directory.add_to_group("bob", "tak_users")

    run_with_services(settings, add_tak)
    groups = {
        group["name"]: group["member_count"] for group in client.get("/api/v1/groups", headers=KEY).json()["groups"]
    }
    assert groups == {"vid_admin": 1, "vid_private": 0, "vid_public": 1}


# --- documentation kept true ------------------------------------------------------------------------------------


def _route_methods(settings: Settings) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for route in create_app(settings).routes:
        if isinstance(route, Route) and route.path.startswith("/api/v1/"):
            path = re.sub(r"\{(\w+):[^}]+\}", r"{\1}", route.path)
            found.setdefault(path, set()).update(method.lower() for method in route.methods or ())
    return {path: methods - {"head"} for path, methods in found.items()}


def test_openapi_documents_every_api_route_and_nothing_else(client: TestClient, settings: Settings) -> None:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    documented = {
        path: {method for method in operations if method in HTTP_METHODS}
        for path, operations in document["paths"].items()
    }
    routes = _route_methods(settings)
    assert routes, "no /api/v1/ routes found"
    assert documented == routes


def test_openapi_operations_describe_errors_and_path_parameters(client: TestClient) -> None:
    document = client.get("/api/v1/openapi.json").json()
    assert "Error" in document["components"]["schemas"]
    for path, operations in document["paths"].items():
        declared = set(re.findall(r"\{(\w+)\}", path))
        for method, operation in operations.items():
            if method not in HTTP_METHODS:
                continue
            assert "200" in operation["responses"] or "201" in operation["responses"], (method, path)
            in_path = {p["name"] for p in operation.get("parameters", []) if p.get("in") == "path"}
            in_path |= {p["name"] for p in operations.get("parameters", []) if p.get("in") == "path"}
            assert in_path == declared, (method, path)


# --- errors -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/nope", "/api/v1/", "/api/v2/rules", "/nope", "/api/v1/rules/extra"])
def test_unknown_route_is_404_json(shared: TestClient, path: str) -> None:
    response = shared.get(path, headers=KEY)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]


def test_wrong_method_is_405_json(client: TestClient) -> None:
    response = client.patch("/api/v1/rules", json=RULE, headers=KEY)
    assert response.status_code == 405
    assert response.json()["error"]


def test_no_response_body_contains_a_traceback(lenient: TestClient, bob: str) -> None:
    headers = {**KEY, "content-type": "application/json"}
    requests: list[tuple[str, str, bytes | None, Any]] = [
        ("PUT", "/api/v1/rules", b"{", headers),
        ("PUT", "/api/v1/rules", b'{"pattern": null, "groups": null}', headers),
        ("PUT", "/api/v1/rules", b'{"pattern": {"a": 1}, "groups": [[]]}', headers),
        ("PUT", "/api/v1/rules", b"\xff\xfe", headers),
        ("DELETE", "/api/v1/rules?pattern=", None, KEY),
        ("DELETE", "/api/v1/rules?pattern=%00", None, KEY),
        ("GET", "/api/v1/explain?path=%00&user=bob", None, KEY),
        ("GET", "/api/v1/explain?path=live/a&user=%00", None, KEY),
        ("GET", "/api/v1/explain?path=live/a&groups=&action=%ff", None, KEY),
        ("GET", "/api/v1/users?page=%C2%B2", None, KEY),
        ("GET", "/api/v1/users?search=%25%27%22", None, KEY),
        ("POST", "/api/v1/groups", b'{"name": "vid_\\u0000"}', headers),
        ("POST", "/auth/login", b"{", {"content-type": "application/json"}),
        ("POST", "/auth/login", b"username=a&password=%ff", {"content-type": "application/x-www-form-urlencoded"}),
        ("PUT", "/auth/password", b"[1]", {"content-type": "application/json"}),
        ("GET", "/api/v1/me", None, [(b"x-authentik-username", b"\xff"), (b"x-authentik-groups", b"vid_\xff")]),
        ("GET", "/users?page=x", None, {**KEY, "accept": "text/html"}),
        ("GET", "/streams", None, {"accept": "text/html"}),
    ]
    for method, path, content, extra in requests:
        response = lenient.request(method, path, content=content, headers=extra)
        assert "Traceback" not in response.text, (method, path)
        assert 'File "' not in response.text, (method, path)
        assert "sidecar/" not in response.text, (method, path)
        assert response.status_code < 600
