"""The audit log reads as sentences: every action the sidecar records has one, and the API and page show them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from sidecar.audit_text import SENTENCES, describe
from tests.helpers import API_KEY, login

PACKAGE = Path(__file__).resolve().parent.parent / "sidecar"
# Audit actions are `<area>.<verb>` literals (or login/logout); a page template is not one.
ACTION = re.compile(r'"((?:access|editor|group|keys|password|publisher|rule|session|share|source|user)\.[a-z_]+)"')


def recorded_actions() -> set[str]:
    found: set[str] = set()
    for source in PACKAGE.rglob("*.py"):
        if source.name != "audit_text.py":
            found.update(name for name in ACTION.findall(source.read_text()) if not name.endswith(".html"))
    return found | {"login", "logout"}


def test_every_action_the_sidecar_records_reads_as_a_sentence() -> None:
    actions = recorded_actions()
    assert {"group.add", "editor.change", "editor.open", "user.denied", "access.confirm"} <= actions  # the scan works
    assert actions <= set(SENTENCES), sorted(actions - set(SENTENCES))


@pytest.mark.parametrize(
    ("actor", "action", "target", "detail", "sentence"),
    [
        ("alice", "group.add", "bob", {"group": "vid_public"}, "alice added bob to vid_public"),
        ("alice", "rule.set", "live/**", {"groups": []}, "alice made live/** visible to admins only"),
        ("alice", "editor.change", "POST /x", {}, "alice changed the editor's settings (POST /x)"),
        (
            "sidecar",
            "session.kick",
            "bob",
            {"protocol": "hls", "path": "live/cam1", "reason": "removed from vid_public", "kicked": True},
            "bob's hls session on live/cam1 was stopped: removed from vid_public",
        ),
        ("alice", "no.such_action", "x", {}, "alice no.such_action x"),
        ("alice", "group.add", "bob", {"group": ["odd"]}, "alice added bob to ['odd']"),
    ],
)
def test_sentences(actor: str, action: str, target: str, detail: dict[str, object], sentence: str) -> None:
    assert describe(actor, action, target, detail) == sentence


def test_the_audit_api_gives_each_event_its_sentence_and_the_known_actions(client: TestClient) -> None:
    rule = {"pattern": "live/**", "groups": ["vid_public"]}
    assert client.put("/api/v1/rules", json=rule, headers=login(client)).is_success
    answer = client.get("/api/v1/audit", headers={"x-api-key": API_KEY}).json()
    [event] = [e for e in answer["events"] if e["action"] == "rule.set"]
    assert event["text"] == "admin made live/** visible to vid_public"
    assert answer["actions"] == sorted(SENTENCES)
