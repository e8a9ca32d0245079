"""The `sidecar` command as deploy scripts use it: bootstrap, rules, users, explain, check, settings errors."""

from __future__ import annotations

import gc
import io
import json
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from starlette.testclient import TestClient

from sidecar.cli import main
from sidecar.store import Store

pytestmark = pytest.mark.usefixtures("cheap_bcrypt")

BOB_PASSWORD = "bob-password-1"
SECRET_FILES = ("api_key", "session_secret")
Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean environment: no SIDECAR_* from outside, no .env in the working directory, a fresh data dir path."""
    for name in list(os.environ):
        if name.startswith("SIDECAR_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "data"
    monkeypatch.setenv("SIDECAR_DATA_DIR", str(path))
    return path


@pytest.fixture
def run(data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    def invoke(*argv: str, stdin: str | None = None) -> tuple[int, str, str]:
        capsys.readouterr()
        if stdin is not None:
            monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


@pytest.fixture
def bootstrapped(run: Run) -> str:
    """Bootstrap once; the first admin's password as printed."""
    code, out, _ = run("bootstrap")
    assert code == 0
    match = re.search(r"^admin password: (\S+)$", out, re.MULTILINE)
    assert match, out
    return match.group(1)


def stored_hash(data_dir: Path, username: str) -> str | None:
    store = Store(data_dir / "sidecar.db")
    try:
        row = store.get_user(username)
        return None if row is None else row["password_hash"]
    finally:
        store.close()


def stored_groups(data_dir: Path) -> list[str]:
    store = Store(data_dir / "sidecar.db")
    try:
        return [name for name, _ in store.list_groups()]
    finally:
        store.close()


# --- bootstrap --------------------------------------------------------------------------------------------------


def test_bootstrap_creates_dir_secrets_groups_and_first_admin(run: Run, data_dir: Path) -> None:
    assert not data_dir.exists()
    code, out, err = run("bootstrap")
    assert code == 0, err
    assert data_dir.is_dir()
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    for name in SECRET_FILES:
        secret = data_dir / name
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, name
        assert len(secret.read_text().strip()) >= 32
        assert secret.read_text().strip() not in out  # generated secrets are never printed
    assert {"vid_public", "vid_private", "vid_admin"} <= set(stored_groups(data_dir))
    assert out.count("admin password:") == 1
    password = re.search(r"^admin password: (\S+)$", out, re.MULTILINE)
    assert password is not None
    password_hash = stored_hash(data_dir, "admin")
    assert password_hash is not None
    assert bcrypt.checkpw(password.group(1).encode(), password_hash.encode())

    store = Store(data_dir / "sidecar.db")
    try:
        assert store.user_groups("admin") == ["vid_admin"]
        assert store.admin_count(["vid_admin"]) == 1
    finally:
        store.close()


def test_second_bootstrap_changes_nothing(run: Run, data_dir: Path, bootstrapped: str) -> None:
    secrets_before = {name: (data_dir / name).read_text() for name in SECRET_FILES}
    hash_before = stored_hash(data_dir, "admin")
    code, out, _ = run("bootstrap")
    assert code == 0
    assert "nothing to do" in out
    assert "admin password" not in out
    assert {name: (data_dir / name).read_text() for name in SECRET_FILES} == secrets_before
    assert stored_hash(data_dir, "admin") == hash_before


def test_bootstrap_uses_the_given_password_without_printing_it(
    run: Run, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIDECAR_BOOTSTRAP_PASSWORD", "operator-chosen-pw")
    monkeypatch.setenv("SIDECAR_INITIAL_ADMIN", "root")
    code, out, _ = run("bootstrap")
    assert code == 0
    assert "operator-chosen-pw" not in out and "admin password:" not in out
    root_hash = stored_hash(data_dir, "root")
    assert root_hash is not None and bcrypt.checkpw(b"operator-chosen-pw", root_hash.encode())


# --- rules ------------------------------------------------------------------------------------------------------


def test_rules_set_list_delete(run: Run, bootstrapped: str) -> None:
    assert run("rules", "list")[:2] == (0, "")
    code, out, _ = run("rules", "set", "live/**", "vid_public")
    assert code == 0
    assert "live/**" in out and "vid_public" in out
    run("rules", "set", "/private/*", "vid_private", "vid_admin", "vid_private")
    code, out, _ = run("rules", "list")
    assert code == 0
    assert sorted(out.splitlines()) == ["live/**\tvid_public", "private/*\tvid_admin,vid_private"]
    code, out, _ = run("rules", "delete", "live/**")
    assert code == 0
    assert "live/**" in out
    assert run("rules", "list")[1].splitlines() == ["private/*\tvid_admin,vid_private"]


@pytest.mark.parametrize(
    "argv",
    [
        ("rules", "set", "live/**", "vid_nope"),
        ("rules", "set", "live/**", "tak_admin"),
        ("rules", "set", "a//b", "vid_public"),
        ("rules", "delete", "no/such/rule"),
    ],
)
def test_rules_errors_exit_2_with_error_on_stderr(run: Run, bootstrapped: str, argv: tuple[str, ...]) -> None:
    code, out, err = run(*argv)
    assert code == 2
    assert err.startswith("error:")
    assert "Traceback" not in err
    assert run("rules", "list")[1] == ""


# --- users ------------------------------------------------------------------------------------------------------


def test_users_add_with_password_stdin_then_list(run: Run, data_dir: Path, bootstrapped: str) -> None:
    code, out, err = run("users", "add", "bob", "--group", "vid_public", "--password-stdin", stdin=BOB_PASSWORD + "\n")
    assert code == 0, err
    assert "bob" in out
    assert BOB_PASSWORD not in out
    bob_hash = stored_hash(data_dir, "bob")
    assert bob_hash is not None and bcrypt.checkpw(BOB_PASSWORD.encode(), bob_hash.encode())
    code, out, _ = run("users", "list")
    assert code == 0
    rows = {line.split("\t")[0]: line.split("\t") for line in out.splitlines()}
    assert rows["bob"] == ["bob", "active", "vid_public"]
    assert rows["admin"] == ["admin", "active", "vid_admin"]
    assert run("users", "list", "--search", "bo")[1].splitlines() == ["bob\tactive\tvid_public"]


@pytest.mark.parametrize(
    ("argv", "stdin"),
    [
        (("users", "add", "x", "--group", "tak_admin"), None),
        (("users", "add", "x", "--group", "vid_public", "--group", "tak_admin"), None),
        (("users", "add", "x", "--group", "vid_nope"), None),
        (("users", "add", "x", "--group", "vid_public", "--password-stdin"), "short\n"),
    ],
    ids=["tak-group", "tak-among-others", "unknown-group", "short-password"],
)
def test_users_add_refusals_exit_2_and_create_nobody(
    run: Run, data_dir: Path, bootstrapped: str, argv: tuple[str, ...], stdin: str | None
) -> None:
    code, _, err = run(*argv, stdin=stdin)
    assert code == 2
    assert err.startswith("error:")
    assert stored_hash(data_dir, "x") is None
    assert "x\t" not in run("users", "list")[1]


def test_users_add_in_authentik_mode_exits_2(run: Run, bootstrapped: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_MODE", "authentik")
    code, _, err = run("users", "add", "x", "--group", "vid_public")
    assert code == 2
    assert err.startswith("error:")


# --- explain ----------------------------------------------------------------------------------------------------


@pytest.fixture
def bob_with_rule(run: Run, bootstrapped: str) -> None:
    assert run("rules", "set", "live/**", "vid_public")[0] == 0
    assert run("users", "add", "bob", "--group", "vid_public")[0] == 0


def test_explain_allow_exits_0(run: Run, bob_with_rule: None) -> None:
    code, out, _ = run("explain", "bob", "live/a", "read")
    assert code == 0
    assert out.startswith("ALLOW")
    assert "live/**" in out


def test_explain_deny_exits_3_with_the_reason(run: Run, bob_with_rule: None) -> None:
    code, out, _ = run("explain", "bob", "private/x")
    assert code == 3
    assert out.startswith("DENY")
    why = re.search(r"why:\s+(.+)", out)
    assert why is not None and why.group(1).strip()
    assert run("explain", "bob", "live/a", "publish")[0] == 3


def test_explain_json_output_parses(run: Run, bob_with_rule: None) -> None:
    code, out, _ = run("explain", "bob", "live/a", "--json")
    assert code == 0
    result = json.loads(out)
    assert (result["allowed"], result["user"], result["role"], result["groups"]) == (
        True,
        "bob",
        "viewer",
        ["vid_public"],
    )
    code, out, _ = run("explain", "bob", "private/x", "--json")
    assert code == 3
    assert json.loads(out)["allowed"] is False


def test_explain_group_preview_and_unknown_user(run: Run, bob_with_rule: None) -> None:
    assert run("explain", "nobody", "live/a", "--groups", "vid_public")[0] == 0
    assert run("explain", "nobody", "live/a", "--groups", "vid_private")[0] == 3
    code, _, err = run("explain", "ghost", "live/a")
    assert code == 2
    assert err.startswith("error:")


# --- check ------------------------------------------------------------------------------------------------------


def test_check_passes_on_a_bootstrapped_dir(run: Run, bootstrapped: str) -> None:
    code, out, _ = run("check")
    lines = out.splitlines()
    assert code == 0, out
    assert lines and all(line.startswith("ok") for line in lines), out
    assert any("caddy" in line for line in lines)
    assert any("1 active admin" in line for line in lines)


def test_check_fails_on_a_loose_secret_file(run: Run, data_dir: Path, bootstrapped: str) -> None:
    (data_dir / "api_key").chmod(0o644)
    code, out, _ = run("check")
    assert code == 1
    problems = [line for line in out.splitlines() if line.startswith("PROBLEM")]
    assert len(problems) == 1
    assert "api_key" in problems[0]


def test_check_fails_when_the_data_dir_is_missing(run: Run, data_dir: Path) -> None:
    code, out, _ = run("check")
    assert code == 1
    assert not data_dir.exists()  # checking must not create it
    assert any(line.startswith("PROBLEM") and str(data_dir) in line for line in out.splitlines())


def test_check_fails_without_an_active_admin(run: Run, data_dir: Path, bootstrapped: str) -> None:
    store = Store(data_dir / "sidecar.db")
    try:
        with store.transaction() as db:
            store.set_active(db, "admin", False)
    finally:
        store.close()
    code, out, _ = run("check")
    assert code == 1
    assert any(line.startswith("PROBLEM") and "admin" in line for line in out.splitlines())


# --- settings errors --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SIDECAR_TRUSTED_PROXIES", "not-a-cidr"),
        ("SIDECAR_TRUSTED_PROXIES", "127.0.0.1/8,10.0.0.0/33"),
        ("SIDECAR_MODE", "bogus"),
        ("SIDECAR_PORT", "0"),
        ("SIDECAR_SESSION_TTL_SECONDS", "soon"),
    ],
)
def test_invalid_settings_exit_2_naming_the_variable(
    run: Run, variable: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    for argv in (("check",), ("rules", "list")):
        code, out, err = run(*argv)
        assert code == 2
        assert variable in err
        assert err.startswith("error:")
        assert "Traceback" not in err


def test_settings_come_from_a_dot_env_file(run: Run, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SIDECAR_MODE=bogus\n")
    code, _, err = run("check")
    assert code == 2
    assert "SIDECAR_MODE" in err


def test_serve_runs_the_app_with_startup_objects_frozen_and_proxy_headers_off(
    run: Run, bootstrapped: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve` is the one place the collector is told to leave startup objects alone (tests build many apps)."""
    started: dict[str, Any] = {}

    def fake_run(app: Any, **options: Any) -> None:
        started.update(options)
        with TestClient(app) as client:  # runs the lifespan like uvicorn would
            started["frozen"] = gc.get_freeze_count()
            started["health"] = client.get("/healthz").status_code
        started["after"] = gc.get_freeze_count()

    monkeypatch.setattr("uvicorn.run", fake_run)
    code, _, _ = run("serve")
    assert code == 0
    assert started["frozen"] > 0 and started["health"] == 200
    assert started["after"] == 0  # released again at shutdown
    assert started["proxy_headers"] is False and started["access_log"] is False
