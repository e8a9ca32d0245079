"""Shared factories: settings and apps per test, principals, and clients that appear to come from a given peer."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.testclient import TestClient

from sidecar.app import create_app
from sidecar.bootstrap import bootstrap
from sidecar.settings import Settings
from tests.helpers import ADMIN_PASSWORD, API_KEY, TRUSTED_PEER, cheapen_bcrypt


def _import_anyio_now() -> None:
    """anyio is a pytest plugin, so pytest compiles its modules through the assertion rewriter, and anyio imports
    most of them lazily: the first static file a test server sends imports `anyio._core._fileio` on the server's
    thread. CPython 3.11 can fail there with "SystemError: AST constructor recursion depth mismatch" (seen once in
    a full run: a 200 whose body never came). Importing them all here, once, on the main thread avoids it."""
    for module in pkgutil.walk_packages(anyio.__path__, "anyio."):
        if "pytest" not in module.name and "trio" not in module.name:
            importlib.import_module(module.name)


_import_anyio_now()


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "api_key": API_KEY,
            "bootstrap_password": ADMIN_PASSWORD,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return factory


@pytest.fixture
def cheap_bcrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    cheapen_bcrypt(monkeypatch)


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    found = make_settings()
    with pytest.MonkeyPatch.context() as patch:
        cheapen_bcrypt(patch)
        bootstrap(found, out=lambda line: None)
    return found


@pytest.fixture
def make_client(settings: Settings) -> Iterator[Callable[..., TestClient]]:
    """Clients for one bootstrapped local-mode app; `peer` picks the TCP peer address the app sees."""
    opened: list[TestClient] = []

    def factory(peer: tuple[str, int] = TRUSTED_PEER, app_settings: Settings | None = None) -> TestClient:
        client = TestClient(create_app(app_settings or settings), client=peer, base_url="http://testserver")
        client.__enter__()
        opened.append(client)
        return client

    yield factory
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


# Real-process fixtures (Caddy, the sidecar, stand-in upstreams) for tests marked `caddy`.
pytest_plugins = [
    "tests.processes_fixtures",
    "tests.browser_fixtures",
    "tests.browser_authentik_fixtures",
    "tests.real_editor_fixtures",
]
