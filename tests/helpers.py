"""Small helpers for tests: principals, sign-in, and the fixed test credentials."""

from __future__ import annotations

from starlette.testclient import TestClient

from sidecar.identity import Principal, RolePolicy

ADMIN_PASSWORD = "admin-password-1"
API_KEY = "test-api-key-0123456789"
TRUSTED_PEER = ("127.0.0.1", 40000)  # inside the default SIDECAR_TRUSTED_PROXIES
UNTRUSTED_PEER = ("203.0.113.7", 40000)


def principal(*groups: str, username: str = "someone", admin_groups: tuple[str, ...] = ("vid_admin",)) -> Principal:
    return RolePolicy(admin_groups=frozenset(admin_groups), prefix="vid_").principal(username, groups, source="proxy")


def login(client: TestClient, username: str = "admin", password: str = ADMIN_PASSWORD) -> dict[str, str]:
    """Sign in; return headers for a same-origin browser write (Origin + X-CSRF-Token)."""
    response = client.post("/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    csrf = client.get("/api/v1/me").json()["csrf_token"]
    return {"origin": "http://testserver", "x-csrf-token": csrf}
