"""Playback tokens: ES256 JWTs in MediaMTX's permission format, the JWKS that publishes their keys, rotation."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, NamedTuple

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet
from joserfc.jwt import JWTClaimsRegistry

from sidecar.keys import digest
from sidecar.settings import Settings
from sidecar.store import Store

ALGORITHM = "ES256"
log = logging.getLogger("sidecar.tokens")
# MediaMTX caches the JWKS for an hour; a new key only signs once MediaMTX has it (refresh, or this long).
JWKS_CACHE_SECONDS = 3600
PURGE_INTERVAL = 60.0  # seconds between sweeps of expired entries in the issued-token register


class TokenInvalid(Exception):
    """The token is not one of ours, or no longer valid; the message says why (for logs, not for clients)."""


@dataclass(frozen=True)
class Issued:
    token: str
    expires_at: int


class Claims(NamedTuple):
    """A tuple of plain values, so the thousands of them in the verified-token cache cost the garbage collector
    nothing (it stops tracking such tuples)."""

    subject: str
    groups: tuple[str, ...]
    permissions: tuple[dict[str, str], ...]
    issued_at: int
    expires_at: int
    not_before: int = 0
    service: bool = False


def thumbprint(key: ECKey) -> str:
    """RFC 7638 JWK thumbprint, used as `kid`."""
    return str(key.thumbprint())


class TokenIssuer:
    CACHE_SIZE = 20_000

    def __init__(self, store: Store, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self._cache_version = -1
        self._keys: list[tuple[str, ECKey, float, float | None]] = []
        self._revoked: dict[str, float] = {}
        # Tokens that passed the signature check (those the register below does not know), by their text: MediaMTX
        # asks again for every connection with the same token, and an ECDSA check costs far more than the rest of a
        # decision. Expiry, the key still being published and revocation are checked again on every hit.
        self._verified: OrderedDict[str, tuple[str, Claims]] = OrderedDict()
        self._next_purge = 0.0
        # The issued-token register (digest -> kid, claims), mirrored from SQLite: tokens issued here are added as
        # they are signed, those another process signed are read when the database changes.
        self._issued: dict[str, tuple[str, Claims]] = {}
        self._issued_seq = 0
        self._published: dict[str, ECKey] = {}
        self._published_for: tuple[list[Any], float] = ([], -math.inf)  # (keys it was built from, valid until)
        self._registry = JWTClaimsRegistry(
            now=lambda: int(self.clock()),
            iss={"essential": True, "value": settings.jwt_issuer},
            aud={"essential": True, "value": settings.jwt_audience},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
        )

    # -- keys -------------------------------------------------------------------------------------------------
    def _load(self) -> list[tuple[str, ECKey, float, float | None]]:
        """Signing keys and revocations, read again only when the database changed."""
        version = self.store.generation()
        if version != self._cache_version or not self._keys:
            rows = self.store.signing_keys()
            self._keys = [
                (row["kid"], ECKey.import_key(json.loads(row["private_jwk"])), row["sign_from"], row["retire_at"])
                for row in rows
            ]
            self._revoked = self.store.revocations()
            self._read_issued()
            self._cache_version = version
        return self._keys

    def _read_issued(self) -> None:
        fresh = self.store.issued_tokens_since(self._issued_seq, self.clock())
        for seq, token_digest, kid, payload, _ in fresh:
            self._issued_seq = seq
            claims = json.loads(payload)
            # Signed for another issuer or audience (the settings changed since): only the signature check decides.
            if claims.get("iss") == self.settings.jwt_issuer and claims.get("aud") == self.settings.jwt_audience:
                self._issued[token_digest] = (kid, self._claims(claims))

    def _published_keys(self, now: float) -> dict[str, ECKey]:
        """kid -> key of every key still published, rebuilt when the keys change or one of them retires."""
        keys = self._load()
        built_from, valid_until = self._published_for
        if keys is not built_from or now >= valid_until:
            self._published = {kid: key for kid, key, _, retire in keys if retire is None or retire > now}
            retiring = [retire for _, _, _, retire in keys if retire is not None and retire > now]
            self._published_for = (keys, min(retiring, default=math.inf))
        return self._published

    def _invalidate(self) -> None:
        self._keys = []

    def still_grants(self, subject: str, group: str) -> bool:
        """Whether a token this sidecar signed for `subject`, unexpired and not revoked, still names `group`."""
        self._load()
        now = self.clock()
        revoked = self._revoked.get(subject)
        before = -math.inf if revoked is None else int(revoked)
        return any(
            claims.subject == subject
            and group in claims.groups
            and claims.expires_at > now
            and claims.issued_at > before
            for _, claims in self._issued.values()
        )

    def revoke(self, username: str, before: float) -> None:
        """Tokens issued to `username` up to `before` stop working (also those already verified).

        `iat` has whole seconds, so a token from the revocation's own second counts as revoked; one issued in
        any later second works.
        """
        with self.store.transaction() as db:
            self.store.revoke_tokens(db, username, before)
        if self._keys:  # loaded: follow the change in memory rather than reading keys and registers again
            self._revoked[username] = max(self._revoked.get(username, before), before)
        else:
            self._invalidate()

    def ensure_key(self) -> str | None:
        """Create the first signing key when there is none; its kid, or None when keys existed."""
        if self.store.signing_keys():
            return None
        return self._add_key(sign_from=self.clock())

    def _add_key(self, sign_from: float) -> str:
        key = ECKey.generate_key("P-256", private=True)
        kid = thumbprint(key)
        with self.store.transaction() as db:
            self.store.insert_signing_key(db, kid, json.dumps(key.as_dict(private=True)), sign_from, self.clock())
        self._invalidate()
        return kid

    def _signing_key(self) -> tuple[str, ECKey]:
        now = self.clock()
        usable = [(kid, key) for kid, key, sign_from, retire in self._load() if sign_from <= now and retire is None]
        if not usable:
            # Before a rotated key may sign, the previous one keeps signing (it is retired only afterwards).
            usable = [(kid, key) for kid, key, sign_from, retire in self._load() if sign_from <= now]
        if not usable:
            self.ensure_key()
            return self._signing_key()
        return usable[-1]

    def jwks(self) -> dict[str, Any]:
        now = self.clock()
        keys = []
        for kid, key, _, retire in self._load():
            if retire is not None and retire <= now:
                continue
            public = key.as_dict(private=False)
            public.update(kid=kid, use="sig", alg=ALGORITHM)
            keys.append(public)
        return {"keys": keys}

    def jwks_etag(self, body: bytes) -> str:
        return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'

    async def rotate(self, refresh: Callable[[], Awaitable[None]] | None) -> tuple[str, float]:
        """Add a key; old keys stay published until the last token they signed has expired.

        The new key signs at once only when `refresh` returned, i.e. MediaMTX confirmed it refetched the JWKS with
        its own answer (`MediaMTXClient.refresh_jwks` raises on anything else, an HTML 200 from a wrong URL
        included); otherwise after MediaMTX's cache time, so MediaMTX never sees a `kid` it does not know.
        """
        now = self.clock()
        kid = self._add_key(sign_from=now + JWKS_CACHE_SECONDS)
        refreshed = False
        detail: dict[str, Any] = {}
        if refresh is not None:
            try:
                await refresh()
                refreshed = True
            except Exception as error:  # any failure just means waiting for MediaMTX's cache to expire
                refreshed = False
                detail["refresh_error"] = " ".join(str(error).split())[:200] or type(error).__name__
                log.warning("MediaMTX did not confirm the JWKS refresh (%s); the old key keeps signing for now", error)
        sign_from = now if refreshed else now + JWKS_CACHE_SECONDS
        detail.update(sign_from=sign_from, refreshed=refreshed)
        with self.store.transaction() as db:
            db.execute("UPDATE signing_keys SET sign_from = ? WHERE kid = ?", (sign_from, kid))
            self.store.retire_signing_keys(db, kid, sign_from + self.settings.token_ttl_seconds)
            self.store.delete_retired_keys(db, now)
            self.store.audit(db, "rotate-keys", "keys.rotate", kid, detail)
        self._invalidate()
        return kid, sign_from

    # -- tokens -----------------------------------------------------------------------------------------------
    def issue(
        self,
        subject: str,
        permissions: list[dict[str, str]],
        groups: list[str],
        *,
        service: bool = False,
        ttl: int | None = None,
    ) -> Issued:
        now = int(self.clock())
        expires_at = now + (ttl or self.settings.token_ttl_seconds)
        claims: dict[str, Any] = {
            "iss": self.settings.jwt_issuer,
            "aud": self.settings.jwt_audience,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": expires_at,
            "groups": sorted(groups),
            self.settings.jwt_claim_key: permissions,
        }
        if service:
            claims["svc"] = True
        kid, key = self._signing_key()
        token = jwt.encode({"alg": ALGORITHM, "kid": kid, "typ": "JWT"}, claims, key, algorithms=[ALGORITHM])
        self._remember_issued(token, kid, claims, expires_at)
        return Issued(token=token, expires_at=expires_at)

    def _remember_issued(self, token: str, kid: str, claims: dict[str, Any], expires_at: int) -> None:
        """Keep the digest of every token signed here, so a callback recognises it without a signature check."""
        now = self.clock()
        purge_before = None
        if now >= self._next_purge:
            purge_before, self._next_purge = now, now + PURGE_INTERVAL
            self._issued = {key: entry for key, entry in self._issued.items() if entry[1].expires_at > now}
        token_digest = digest(token)
        self.store.remember_issued_token(token_digest, kid, json.dumps(claims), expires_at, purge_before)
        self._issued[token_digest] = (kid, self._claims(claims))

    def verify(self, token: str) -> Claims:
        now = self.clock()
        published = self._published_keys(now)
        found = self._verified.get(token)
        if found is not None:
            self._verified.move_to_end(token)
        else:
            found = self._recognise(token)
            if found is None:  # not signed here: the signature decides, once
                found = self._verified[token] = self._verify_signature(token, published)
                if len(self._verified) > self.CACHE_SIZE:
                    self._verified.popitem(last=False)
        kid, claims = found
        if kid not in published:
            raise TokenInvalid("unknown kid")
        if not claims.not_before <= now < claims.expires_at:
            raise TokenInvalid("expired or not yet valid")
        if claims.issued_at <= int(self._revoked.get(claims.subject, 0.0)):
            raise TokenInvalid("revoked")
        return claims

    def _recognise(self, token: str) -> tuple[str, Claims] | None:
        """A token signed here, found by its digest: the exact text this issuer signed, so its claims are known
        without checking the signature again (about a tenth of the cost). Anything else goes to the signature check.
        """
        return self._issued.get(digest(token))

    def _verify_signature(self, token: str, published: dict[str, ECKey]) -> tuple[str, Claims]:
        if not published:
            raise TokenInvalid("no signing keys")
        try:
            decoded = jwt.decode(token, KeySet(list[Any](published.values())), algorithms=[ALGORITHM])
            self._registry.validate(decoded.claims)
        except Exception as error:  # untrusted input: joserfc raises more than JoseError on odd headers
            raise TokenInvalid(type(error).__name__) from error
        kid = decoded.header.get("kid")
        if kid not in published:
            raise TokenInvalid("unknown kid")
        return str(kid), self._claims(decoded.claims)

    def _claims(self, claims: dict[str, Any]) -> Claims:
        permissions = claims.get(self.settings.jwt_claim_key)
        groups = claims.get("groups", [])
        if not isinstance(permissions, list) or not isinstance(groups, list):
            raise TokenInvalid("malformed claims")
        issued_at = int(claims["iat"])
        return Claims(
            subject=str(claims["sub"]),
            groups=tuple(str(group) for group in groups),
            permissions=tuple(p for p in permissions if isinstance(p, dict)),
            issued_at=issued_at,
            expires_at=int(claims["exp"]),
            not_before=int(claims.get("nbf", issued_at)),
            service=claims.get("svc") is True,
        )


class ServiceTokenAuth(httpx.Auth):
    """Authenticates the sidecar to MediaMTX's control API with a short-lived token of its own (`api` only).

    MediaMTX passes a bearer token to the HTTP callback (which verifies it like any playback token) or, in JWT
    mode, checks it against the JWKS itself, so one mechanism works in both modes.
    """

    TTL = 60

    def __init__(self, tokens: TokenIssuer) -> None:
        self.tokens = tokens

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        issued = self.tokens.issue("sidecar", [{"action": "api", "path": ""}], [], service=True, ttl=self.TTL)
        request.headers["Authorization"] = f"Bearer {issued.token}"
        yield request
