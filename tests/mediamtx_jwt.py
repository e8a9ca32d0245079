"""A JWT verifier that decides the way MediaMTX does in `authMethod: jwt` mode (v1.20.1, `internal/auth/manager.go`).

Like MediaMTX it pulls the JWKS lazily, keeps it (MediaMTX for an hour) and fetches it again only after
`POST /v3/auth/jwks/refresh` (`refresh()` here) — never because a token names a `kid` it does not know. Tokens are
checked independently of the sidecar's own JWT library: the ES256 signature with `cryptography`, `exp`/`nbf` when
present (golang-jwt's defaults), `iss`/`aud` when configured (`authJWTIssuer`/`authJWTAudience`), then the permissions
claim is matched with MediaMTX's `matchesPermission`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PATH_ACTIONS = frozenset({"publish", "read", "playback"})


class Rejected(Exception):
    """MediaMTX would refuse the token; the message says why."""


def b64url_decode(segment: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as error:
        raise Rejected("bad base64url") from error


def rfc7638_thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 thumbprint of an EC public key: SHA-256 over the required members, sorted, no whitespace."""
    required = {name: jwk[name] for name in ("crv", "kty", "x", "y")}
    digest = hashes.Hash(hashes.SHA256())
    digest.update(json.dumps(required, sort_keys=True, separators=(",", ":")).encode())
    return base64.urlsafe_b64encode(digest.finalize()).rstrip(b"=").decode()


def _public_key(jwk: Mapping[str, Any]) -> ec.EllipticCurvePublicKey:
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise Rejected("only EC P-256 keys are used for ES256")
    x = int.from_bytes(b64url_decode(jwk["x"]), "big")
    y = int.from_bytes(b64url_decode(jwk["y"]), "big")
    return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()


def matches_permission(permissions: list[dict[str, Any]], action: str, path: str) -> bool:
    """MediaMTX's `matchesPermission`: for publish/read/playback `""` is any path, `~…` a regular expression,
    anything else equality; other actions match on the action alone."""
    for permission in permissions:
        if permission.get("action") != action:
            continue
        if action not in PATH_ACTIONS:
            return True
        wanted = permission.get("path", "")
        if wanted == "":
            return True
        if wanted.startswith("~"):
            # MediaMTX compiles an RE2 expression and calls MatchString, which is an unanchored search; Python's
            # `re.search` has the same semantics for the RE2 subset the sidecar emits.
            try:
                if re.search(wanted[1:], path):
                    return True
            except re.error:
                continue
        elif wanted == path:
            return True
    return False


class MediaMTXJWT:
    """MediaMTX's JWT check against a JWKS fetched with `fetch_jwks` (which returns the parsed JWKS document)."""

    def __init__(
        self,
        fetch_jwks: Callable[[], Mapping[str, Any]],
        *,
        issuer: str = "",
        audience: str = "",
        claim_key: str = "mediamtx_permissions",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fetch_jwks = fetch_jwks
        self.issuer = issuer
        self.audience = audience
        self.claim_key = claim_key
        self.clock = clock
        self.fetches = 0
        self._keys: dict[str, tuple[ec.EllipticCurvePublicKey, str]] | None = None

    def refresh(self) -> None:
        """What `POST /v3/auth/jwks/refresh` does in MediaMTX: forget the cached set, fetch it on the next request."""
        self._keys = None

    def _keyset(self) -> dict[str, tuple[ec.EllipticCurvePublicKey, str]]:
        if self._keys is None:
            document = self._fetch_jwks()
            self.fetches += 1
            keys: dict[str, tuple[ec.EllipticCurvePublicKey, str]] = {}
            for jwk in document["keys"]:
                keys[jwk["kid"]] = (_public_key(jwk), jwk.get("alg", ""))
            self._keys = keys
        return self._keys

    def known_kids(self) -> set[str]:
        return set(self._keyset())

    def claims(self, token: str) -> dict[str, Any]:
        """The verified claims, or Rejected."""
        keys = self._keyset()
        parts = token.split(".")
        if len(parts) != 3:
            raise Rejected("not a compact JWS")
        try:
            header = json.loads(b64url_decode(parts[0]))
            claims = json.loads(b64url_decode(parts[1]))
        except ValueError as error:
            raise Rejected("undecodable header or claims") from error
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise Rejected("header and claims must be objects")
        kid = header.get("kid")
        if not isinstance(kid, str) or kid not in keys:
            raise Rejected("unknown kid")  # MediaMTX does not refetch on an unknown kid
        key, key_alg = keys[kid]
        if header.get("alg") != "ES256" or key_alg not in ("", "ES256"):
            raise Rejected("alg must be ES256")
        signature = b64url_decode(parts[2])
        if len(signature) != 64:
            raise Rejected("an ES256 signature is 64 bytes")
        der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
        try:
            key.verify(der, f"{parts[0]}.{parts[1]}".encode(), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature as error:
            raise Rejected("bad signature") from error
        now = self.clock()
        if "exp" in claims and not (isinstance(claims["exp"], int | float) and now < claims["exp"]):
            raise Rejected("expired")
        if "nbf" in claims and not (isinstance(claims["nbf"], int | float) and now >= claims["nbf"]):
            raise Rejected("not valid yet")
        if self.issuer and claims.get("iss") != self.issuer:
            raise Rejected("wrong issuer")
        if self.audience:
            audience = claims.get("aud")
            audiences = audience if isinstance(audience, list) else [audience]
            if self.audience not in audiences:
                raise Rejected("wrong audience")
        return claims

    def permissions(self, claims: Mapping[str, Any]) -> list[dict[str, Any]]:
        raw = claims.get(self.claim_key)
        if isinstance(raw, str):  # MediaMTX also accepts a string holding the JSON list
            raw = json.loads(raw)
        if not isinstance(raw, list):
            raise Rejected("no permissions claim")
        return [entry for entry in raw if isinstance(entry, dict)]

    def allows(self, token: str, action: str, path: str) -> bool:
        try:
            claims = self.claims(token)
            return matches_permission(self.permissions(claims), action, path)
        except Rejected:
            return False


class RelayJWKSRefresh:
    """Wraps a (fake) MediaMTX control API: a `POST /v3/auth/jwks/refresh` it receives also refreshes `verifier`,
    as the real MediaMTX's handler clears its own JWKS cache."""

    def __init__(self, app: ASGIApp, verifier: MediaMTXJWT) -> None:
        self.app = app
        self.verifier = verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/v3/auth/jwks/refresh"):
            await self.app(scope, receive, send)
            return

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start" and 200 <= message["status"] < 300:
                self.verifier.refresh()
            await send(message)

        await self.app(scope, receive, watch)
