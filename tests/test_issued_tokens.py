"""The issued-token register: tokens this sidecar signed are recognised by their digest (no second ES256 check),
by the issuing process and by any other on the same database; everything else still goes through the signature
check, and every validity rule (expiry, retired key, revocation, issuer/audience) holds on both paths."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from sidecar.keys import digest
from sidecar.settings import Settings
from sidecar.store import VERSION_POLL_SECONDS, Store
from sidecar.tokens import PURGE_INTERVAL, TokenInvalid, TokenIssuer

PERMISSIONS = [{"action": "read", "path": "live/cam1"}]


class Clock:
    def __init__(self, now: float = 1_900_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Issuers:
    settings: Settings
    clock: Clock
    store: Store
    issuer: TokenIssuer
    signature_checks: list[str]
    opened: list[Store] = field(default_factory=list)

    def other_process(self, **overrides: object) -> TokenIssuer:
        """A second issuer on its own connection to the same database, as a CLI or a restarted server has."""
        settings = self.settings.model_copy(update=overrides)
        store = Store(settings.database_path)
        self.opened.append(store)
        return TokenIssuer(store, settings, clock=self.clock)


@pytest.fixture
def issuers(make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch) -> Iterator[Issuers]:
    settings = make_settings(token_ttl_seconds=600)
    store = Store(settings.database_path)
    clock = Clock()
    issuer = TokenIssuer(store, settings, clock=clock)
    issuer.ensure_key()
    checks: list[str] = []
    original = TokenIssuer._verify_signature

    def counted(self: TokenIssuer, token: str, published: dict[str, object]) -> object:
        checks.append(token)
        return original(self, token, published)  # type: ignore[arg-type]

    monkeypatch.setattr(TokenIssuer, "_verify_signature", counted)
    found = Issuers(settings, clock, store, issuer, checks)
    yield found
    for opened in [*found.opened, store]:
        opened.close()


def issue(issuer: TokenIssuer, subject: str = "bob") -> str:
    return issuer.issue(subject, PERMISSIONS, ["vid_public"]).token


def signed_elsewhere(env: Issuers) -> str:
    """A token signed with the sidecar's own key but never issued through it (so not in the register)."""
    row = env.store.signing_keys()[0]
    kid, key = row["kid"], ECKey.import_key(json.loads(row["private_jwk"]))
    now = int(env.clock())
    claims = {
        "iss": env.settings.jwt_issuer,
        "aud": env.settings.jwt_audience,
        "sub": "mallory",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "groups": ["vid_public"],
        env.settings.jwt_claim_key: PERMISSIONS,
    }
    return jwt.encode({"alg": "ES256", "kid": kid, "typ": "JWT"}, claims, key, algorithms=["ES256"])


def test_a_token_issued_here_is_recognised_without_a_signature_check(issuers: Issuers) -> None:
    token = issue(issuers.issuer)
    assert issuers.issuer.verify(token).subject == "bob"  # the issuing process knows it at once
    claims = issuers.other_process().verify(token)  # another process reads the register
    assert (claims.subject, claims.groups, list(claims.permissions)) == ("bob", ("vid_public",), PERMISSIONS)
    assert issuers.signature_checks == []


def test_a_validly_signed_token_missing_from_the_register_still_passes_the_signature_check(issuers: Issuers) -> None:
    token = signed_elsewhere(issuers)
    assert issuers.issuer.verify(token).subject == "mallory"
    assert issuers.signature_checks == [token]


@pytest.mark.parametrize("position", [-5, 40, -60])  # signature, header, claims
def test_a_tampered_token_is_not_recognised_and_fails_the_signature_check(issuers: Issuers, position: int) -> None:
    token = issue(issuers.issuer)
    replacement = "A" if token[position] != "A" else "B"
    tampered = token[:position] + replacement + token[position + 1 :]
    with pytest.raises(TokenInvalid):
        issuers.other_process().verify(tampered)
    assert issuers.signature_checks == [tampered]


def test_the_register_holds_digests_never_tokens(issuers: Issuers) -> None:
    token = issue(issuers.issuer)
    raw = sqlite3.connect(issuers.settings.database_path)
    try:
        rows = raw.execute("SELECT digest, kid, claims FROM issued_tokens").fetchall()
        dump = "\n".join(raw.iterdump())
    finally:
        raw.close()
    assert [row[0] for row in rows] == [digest(token)]
    assert token not in dump
    assert token.split(".")[2] not in dump  # not even the signature


def test_a_recognised_token_still_expires(issuers: Issuers) -> None:
    token = issue(issuers.issuer)
    verifier = issuers.other_process()
    assert verifier.verify(token).subject == "bob"
    issuers.clock.now += issuers.settings.token_ttl_seconds
    for process in (issuers.issuer, verifier):
        with pytest.raises(TokenInvalid, match="expired"):
            process.verify(token)
    assert issuers.signature_checks == []
    with pytest.raises(TokenInvalid):  # a process started later has no entry for it; the signature check refuses
        issuers.other_process().verify(token)


def test_a_recognised_token_is_refused_after_revocation(issuers: Issuers) -> None:
    token = issue(issuers.issuer)
    verifier = issuers.other_process()
    assert verifier.verify(token).subject == "bob"
    issuers.issuer.revoke("bob", issuers.clock())
    time.sleep(VERSION_POLL_SECONDS * 2)  # another connection's commit shows after the poll interval
    with pytest.raises(TokenInvalid, match="revoked"):
        verifier.verify(token)


def test_a_recognised_token_is_refused_once_its_key_is_no_longer_published(issuers: Issuers) -> None:
    token = issue(issuers.issuer)
    kid = issuers.store.signing_keys()[0]["kid"]
    with issuers.store.transaction() as db:
        issuers.store.retire_signing_keys(db, "another-kid", issuers.clock() - 1)
    assert issuers.store.signing_keys()[0]["kid"] == kid
    with pytest.raises(TokenInvalid, match="unknown kid"):
        issuers.other_process().verify(token)


def test_a_token_from_before_an_issuer_or_audience_change_is_refused(issuers: Issuers) -> None:
    """The register only vouches for tokens naming today's issuer and audience; older ones meet the signature check,
    which refuses them."""
    token = issue(issuers.issuer)
    for changed in ({"jwt_audience": "another-audience"}, {"jwt_issuer": "https://elsewhere.example"}):
        with pytest.raises(TokenInvalid, match="InvalidClaimError"):
            issuers.other_process(**changed).verify(token)
    assert issuers.signature_checks == [token, token]


def test_expired_entries_are_swept_from_the_register(issuers: Issuers) -> None:
    first = issue(issuers.issuer, "first")
    issuers.clock.now += issuers.settings.token_ttl_seconds + PURGE_INTERVAL
    second = issue(issuers.issuer, "second")
    stored = [row[1] for row in issuers.store.issued_tokens_since(0, 0)]
    assert stored == [digest(second)]
    assert digest(first) not in stored


def test_a_running_verifier_learns_tokens_another_process_issues(issuers: Issuers) -> None:
    verifier = issuers.other_process()
    assert verifier.verify(issue(issuers.issuer, "before")).subject == "before"  # read at its first use
    time.sleep(VERSION_POLL_SECONDS * 2)
    later = issue(issuers.issuer, "later")  # committed by the other connection while the verifier runs
    time.sleep(VERSION_POLL_SECONDS * 2)
    assert verifier.verify(later).subject == "later"
    assert issuers.signature_checks == []


async def test_a_token_that_outlives_its_key_is_refused_once_the_key_retires(issuers: Issuers) -> None:
    """A token issued with a longer lifetime than the setting (as the sidecar's own tokens may be) stops working
    when its key leaves the JWKS, even though nothing changed in the database since the keys were read."""
    token = issuers.issuer.issue("bob", PERMISSIONS, ["vid_public"], ttl=100_000).token
    _, sign_from = await issuers.issuer.rotate(None)
    retire_at = sign_from + issuers.settings.token_ttl_seconds
    issuers.clock.now = retire_at - 1
    assert issuers.issuer.verify(token).subject == "bob"
    issuers.clock.now = retire_at
    with pytest.raises(TokenInvalid, match="unknown kid"):
        issuers.issuer.verify(token)
    assert issuers.signature_checks == []
