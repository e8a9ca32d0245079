"""`sidecar bootstrap --authentik [--recovery]` against the fake Authentik, every exchange held to its schema."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from sidecar import authentik_bootstrap
from sidecar.authentik import AuthentikError
from sidecar.authentik_bootstrap import PREFIX, bootstrap_authentik
from sidecar.cli import main
from sidecar.settings import Settings
from tests.authentik_schema import CheckedTransport, Contract, require_contract
from tests.fake_authentik import BASE, TOKEN, FakeAuthentik, Seen, create_fake_authentik

STAGE_ORDER = [
    ("identification", f"{PREFIX}-identification"),
    ("email", f"{PREFIX}-email"),
    ("prompt/stages", f"{PREFIX}-password"),
    ("user_write", f"{PREFIX}-user-write"),
    ("user_login", f"{PREFIX}-user-login"),
]
Run = Callable[..., tuple[bool, list[str], CheckedTransport]]


@pytest.fixture
def contract() -> Contract:
    return require_contract()


@pytest.fixture
def fake() -> FakeAuthentik:
    fake = create_fake_authentik()
    for name in ("vid_private", "vid_public"):  # a site that so far only has the admin group
        group = fake.group_named(name)
        assert group is not None
        del fake.groups[group.pk]
    return fake


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(mode="authentik", authentik_url=BASE, authentik_token=TOKEN)


@pytest.fixture
def run(fake: FakeAuthentik, contract: Contract, settings: Settings) -> Run:
    def invoke(**options: Any) -> tuple[bool, list[str], CheckedTransport]:
        lines: list[str] = []
        transport = CheckedTransport(httpx.ASGITransport(app=fake.app), contract)
        changed = bootstrap_authentik(settings, out=lines.append, transport=transport, **options)
        return changed, lines, transport

    return invoke


def _tak_state(fake: FakeAuthentik) -> list[tuple[str, str, set[int]]]:
    return [(g.pk, g.name, set(g.members)) for g in fake.groups.values() if g.name.startswith("tak_")]


def _writes_since(fake: FakeAuthentik, count: int) -> list[Seen]:
    return [seen for seen in fake.requests[count:] if seen.method != "GET"]


# --- groups -------------------------------------------------------------------------------------------------------


def test_groups_are_created_once_and_tak_groups_are_untouched(fake: FakeAuthentik, run: Run) -> None:
    tak_before = _tak_state(fake)
    changed, lines, _ = run()

    assert changed is True
    assert lines == ["created group vid_public", "created group vid_private", "group vid_admin already present"]
    assert {g.name for g in fake.groups.values()} >= {"vid_public", "vid_private", "vid_admin"}
    assert [(seen.path, seen.body) for seen in fake.writes()] == [
        ("/api/v3/core/groups/", {"name": "vid_public"}),
        ("/api/v3/core/groups/", {"name": "vid_private"}),
    ]
    assert _tak_state(fake) == tak_before
    assert [flow.slug for flow in fake.flows.values()] == ["default-authentication-flow"]

    changed, lines, _ = run()
    assert changed is False
    assert lines[:3] == [f"group {name} already present" for name in ("vid_public", "vid_private", "vid_admin")]
    assert lines[-1] == "nothing to do: Authentik already bootstrapped"
    assert len(fake.writes()) == 2


# --- the recovery flow --------------------------------------------------------------------------------------------


def test_first_run_builds_the_recovery_flow_and_binds_it_to_the_default_brand(fake: FakeAuthentik, run: Run) -> None:
    login = fake.flow_named("default-authentication-flow")
    assert login is not None
    login_bindings = fake.bindings_of(login)
    tak_before = _tak_state(fake)

    changed, lines, transport = run(recovery=True)

    assert changed is True
    flow = fake.flow_named(PREFIX)
    assert flow is not None and flow.designation == "recovery" and flow.name.startswith(PREFIX)
    stages = [fake.stage_named(name) for _, name in STAGE_ORDER]
    assert all(stage is not None for stage in stages)
    assert [(s.kind, s.name) for s in stages if s is not None] == STAGE_ORDER
    bindings = fake.bindings_of(flow)
    assert [b.stage for b in bindings] == [s.pk for s in stages if s is not None]
    assert [b.order for b in bindings] == sorted({b.order for b in bindings}) and len(bindings) == 5

    identification, email, prompt_stage, user_write, _ = (s for s in stages if s is not None)
    assert identification.values["user_fields"] == ["username", "email"]
    assert email.values["template"] == "email/password_reset.html" and email.values["use_global_settings"] is True
    prompts = {p.name: p for p in fake.prompts.values()}
    assert set(prompts) == {f"{PREFIX}-password", f"{PREFIX}-password-repeat"}
    assert [prompts[n].values["field_key"] for n in sorted(prompts)] == ["password", "password_repeat"]
    assert all(p.values["type"] == "password" for p in prompts.values())
    assert prompt_stage.values["fields"] == [prompts[f"{PREFIX}-password"].pk, prompts[f"{PREFIX}-password-repeat"].pk]
    assert user_write.values["user_creation_mode"] == "never_create"

    brand = fake.default_brand()
    assert brand is not None and brand.flow_recovery == flow.pk
    (patch,) = [seen for seen in fake.writes() if seen.method == "PATCH"]
    assert patch.path == f"/api/v3/core/brands/{brand.pk}/" and patch.body == {"flow_recovery": flow.pk}

    # Everything created carries the prefix; what was there before is as it was.
    created = [seen.body for seen in fake.writes() if seen.method == "POST" and "name" in (seen.body or {})]
    assert all(body["name"].startswith((PREFIX, "vid_")) for body in created)
    assert fake.bindings_of(login) == login_bindings and _tak_state(fake) == tak_before
    assert {s.name for s in fake.stages.values()} == {
        "default-authentication-identification",
        *dict(STAGE_ORDER).values(),
    }

    assert f"created flow {PREFIX}" in lines
    assert f"created prompt {PREFIX}-password" in lines and f"created stage {PREFIX}-user-login" in lines
    assert [line for line in lines if line.startswith("bound ")] == [
        f"bound {name} to {PREFIX} (order {10 * n})" for n, (_, name) in enumerate(STAGE_ORDER, start=1)
    ]
    assert lines[-1] == f"set {PREFIX} as the recovery flow of brand authentik-default"
    # Every request and every answer went through the schema check.
    paths = {request.url.path for request in transport.requests}
    assert {"/api/v3/flows/instances/", "/api/v3/flows/bindings/", "/api/v3/stages/prompt/prompts/"} <= paths
    assert f"/api/v3/core/brands/{brand.pk}/" in paths


def test_second_run_finds_every_piece_and_writes_nothing(fake: FakeAuthentik, run: Run) -> None:
    run(recovery=True)
    before = len(fake.requests)

    changed, lines, transport = run(recovery=True)

    assert changed is False
    assert _writes_since(fake, before) == []
    assert all(request.method == "GET" for request in transport.requests)
    assert lines[-1] == "nothing to do: Authentik already bootstrapped"
    pieces = lines[:-1]
    assert pieces and all(line.endswith("already present") for line in pieces)
    assert f"flow {PREFIX} already present" in pieces
    assert f"stage {PREFIX}-email already present" in pieces
    assert f"prompt {PREFIX}-password-repeat already present" in pieces
    assert f"binding of {PREFIX}-user-login to {PREFIX} already present" in pieces
    assert "recovery flow of brand authentik-default already present" in pieces


def test_a_brand_with_another_recovery_flow_is_left_alone(fake: FakeAuthentik, run: Run) -> None:
    theirs = fake.add_flow("default-recovery-flow", "recovery")
    brand = fake.default_brand()
    assert brand is not None
    brand.flow_recovery = theirs.pk

    changed, lines, _ = run(recovery=True)

    assert changed is True  # the flow itself was created
    assert brand.flow_recovery == theirs.pk
    assert not [seen for seen in fake.writes() if seen.method == "PATCH"]
    assert lines[-1].startswith("brand authentik-default already has another recovery flow; left as it is")
    assert fake.bindings_of(theirs) == []

    before = len(fake.requests)
    changed, lines, _ = run(recovery=True)
    assert changed is False and _writes_since(fake, before) == []
    assert "brand authentik-default already has another recovery flow" in lines[-2]

    changed, lines, _ = run(recovery=True, force_brand=True)
    ours = fake.flow_named(PREFIX)
    assert changed is True and ours is not None and brand.flow_recovery == ours.pk
    assert lines[-1] == f"set {PREFIX} as the recovery flow of brand authentik-default"


def test_missing_pieces_are_added_to_an_existing_flow_without_touching_the_rest(fake: FakeAuthentik, run: Run) -> None:
    run(recovery=True)
    flow = fake.flow_named(PREFIX)
    assert flow is not None
    last = fake.bindings_of(flow)[-1]
    del fake.bindings[last.pk]
    before = len(fake.requests)

    changed, lines, _ = run(recovery=True)

    assert changed is True
    writes = _writes_since(fake, before)
    assert [(seen.method, seen.path) for seen in writes] == [("POST", "/api/v3/flows/bindings/")]
    assert writes[0].body == {"target": flow.pk, "stage": last.stage, "order": last.order}
    assert f"bound {PREFIX}-user-login to {PREFIX} (order 50)" in lines


def test_a_flow_with_the_slug_that_is_not_for_recovery_is_refused(fake: FakeAuthentik, run: Run) -> None:
    fake.add_flow(PREFIX, "authentication")
    with pytest.raises(AuthentikError, match="not a recovery flow"):
        run(recovery=True)
    assert [seen.path for seen in fake.writes()] == ["/api/v3/core/groups/", "/api/v3/core/groups/"]


# --- the command ----------------------------------------------------------------------------------------------------


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SIDECAR_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SIDECAR_DATA_DIR", str(tmp_path / "data"))


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, ["SIDECAR_AUTHENTIK_URL", "SIDECAR_AUTHENTIK_TOKEN"]),
        ({"SIDECAR_AUTHENTIK_URL": BASE}, ["SIDECAR_AUTHENTIK_TOKEN"]),
        ({"SIDECAR_AUTHENTIK_TOKEN": TOKEN}, ["SIDECAR_AUTHENTIK_URL"]),
    ],
)
def test_command_without_url_or_token_exits_2_naming_the_variable(
    env: dict[str, str], named: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["bootstrap", "--authentik", "--recovery"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ")
    assert all(name in err for name in named)
    assert not (Path.cwd() / "data").exists()


@pytest.mark.usefixtures("clean_env")
def test_recovery_without_authentik_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bootstrap", "--recovery"]) == 2
    assert "--authentik" in capsys.readouterr().err


@pytest.mark.usefixtures("clean_env")
def test_command_runs_against_authentik(
    fake: FakeAuthentik, contract: Contract, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SIDECAR_MODE", "authentik")
    monkeypatch.setenv("SIDECAR_AUTHENTIK_URL", BASE)
    monkeypatch.setenv("SIDECAR_AUTHENTIK_TOKEN", TOKEN)
    transport = CheckedTransport(httpx.ASGITransport(app=fake.app), contract)
    monkeypatch.setattr(
        authentik_bootstrap, "bootstrap_authentik", functools.partial(bootstrap_authentik, transport=transport)
    )

    assert main(["bootstrap", "--authentik", "--recovery"]) == 0
    first = capsys.readouterr().out
    assert "created group vid_public" in first and f"created flow {PREFIX}" in first
    assert main(["bootstrap", "--authentik", "--recovery"]) == 0
    assert "nothing to do: Authentik already bootstrapped" in capsys.readouterr().out
    assert not (Path.cwd() / "data").exists()
