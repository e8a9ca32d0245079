"""Playback token (JWT) forgery against MediaMTX's HTTP auth callback (`POST /mediamtx/auth`).

The outsider holds at most a viewer's own playback token (bob's, for `live/cam1`) and everything the sidecar publishes
(its JWKS). Every token below is forged, spliced, re-encoded or mixed up on the way in, and the callback must deny it:
401 (`{"error": "Unauthorized"}`), or 400 for a malformed body, never 200 and never 500. Each token is tried on every
channel MediaMTX uses: the `token` field (bearer or password), `?token=` in the query (HLS/WebRTC, read by the sidecar
itself) and the legacy `?jwt=` (RTMP).

Where an attack aims at the claim checks rather than at the signature (`nbf`, `iat`, `exp`, `aud`, `iss`, duplicate
members, an unknown `crit` extension, a `kid` spelt differently), the test signs with the sidecar's real key, as only
a key holder could, so that nothing but the check under test can refuse it. Controls show that the same tokens with
sane claims are allowed, and that each forged claim edit would grant access had the sidecar signed it.

Goes beyond tests/test_tokens.py: every spelling of `alg: none`, HMAC keyed with every encoding of the public key,
foreign algorithms, `jwk`/`jku`/`x5u`/`x5c` headers (and that no URL in them is fetched), `kid` injection, `crit`,
duplicate JSON members, RFC 7797 `b64: false`, the JWS JSON serialisation, JWE and extra segments, the ECDSA zero
signature (CVE-2022-21449), a retired key, signature splicing between real tokens, re-encoded payloads, malleated
signatures, claim edits (groups, permissions, `svc`, a share-link subject) under every forgery method, and token, path
and query confusion.

Decided and documented here: an `aud` list that contains the sidecar's audience among other audiences is accepted.
RFC 7519 §4.1.3 says a recipient must find itself *in* `aud`, MediaMTX's own JWT mode (golang-jwt) accepts such a
list too, only the key holder can sign one, and the issuer never does; lookalikes of the audience are refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID
from joserfc import jwe
from joserfc.jwk import ECKey

from tests.helpers import callback_body, cheapen_bcrypt
from tests.mediamtx_env import MediaMTXEnv, fake_transport, open_mediamtx_env
from tests.mediamtx_jwt import MediaMTXJWT, rfc7638_thumbprint

CAM1 = "live/cam1"  # bob's token is for this stream
CAM2 = "live/cam2"  # the rules let bob watch it, only his token does not name it
PRIVATE = "live/private/x"  # neither the rules nor bob's token let bob watch it
DENIED = {"error": "Unauthorized"}
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
CLAIM_KEY = "mediamtx_permissions"
DROP = object()  # `Kit.claims(name=DROP)` leaves the claim out


# --- encoding and signing, independent of the sidecar's JWT library ---------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def segment(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def raw_segment(text: str) -> str:
    """A header or claims segment from JSON text written by hand (duplicate members, odd numbers)."""
    return b64(text.encode())


def members(*pairs: tuple[str, Any]) -> str:
    """A JSON object's text from (name, value) pairs, duplicates kept in order."""
    return "{" + ",".join(f"{json.dumps(name)}:{json.dumps(value)}" for name, value in pairs) + "}"


def split(token: str) -> tuple[str, str, str]:
    header, payload, signature = token.split(".")
    return header, payload, signature


def payload_text(token: str) -> str:
    return unb64(split(token)[1]).decode()


Signer = Callable[[str], str]


def with_ec(key: ec.EllipticCurvePrivateKey) -> Signer:
    size = (key.curve.key_size + 7) // 8
    digest = {384: hashes.SHA384(), 521: hashes.SHA512()}.get(key.curve.key_size, hashes.SHA256())

    def sign(signing_input: str) -> str:
        r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(digest)))
        return b64(r.to_bytes(size, "big") + s.to_bytes(size, "big"))

    return sign


def with_hmac(alg: str, secret: bytes) -> Signer:
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    return lambda signing_input: b64(hmac.new(secret, signing_input.encode(), digest).digest())


def with_rsa(key: rsa.RSAPrivateKey, alg: str) -> Signer:
    digest = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}[alg[2:]]
    pad: padding.AsymmetricPadding
    if alg.startswith("PS"):
        pad = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
    else:
        pad = padding.PKCS1v15()
    return lambda signing_input: b64(key.sign(signing_input.encode(), pad, digest))


def with_ed25519(key: ed25519.Ed25519PrivateKey) -> Signer:
    return lambda signing_input: b64(key.sign(signing_input.encode()))


def unsigned(signing_input: str) -> str:
    return ""


def compact(header: dict[str, Any] | str, claims: dict[str, Any] | str, sign: Signer) -> str:
    """A compact JWS; a `str` header or claims is an already encoded segment."""
    first = header if isinstance(header, str) else segment(header)
    second = claims if isinstance(claims, str) else segment(claims)
    return f"{first}.{second}.{sign(f'{first}.{second}')}"


def read(path: str) -> list[dict[str, str]]:
    return [{"action": "playback", "path": path}, {"action": "read", "path": path}]  # as the issuer sorts them


# --- the sidecar under attack -----------------------------------------------------------------------------------------


@dataclass
class Attacker:
    """Keys the attacker made, and a web server of theirs that `jku`/`x5u` headers point at."""

    ec: ec.EllipticCurvePrivateKey
    rsa: rsa.RSAPrivateKey
    p384: ec.EllipticCurvePrivateKey
    p521: ec.EllipticCurvePrivateKey
    secp256k1: ec.EllipticCurvePrivateKey
    ed25519: ed25519.Ed25519PrivateKey
    jwk: dict[str, Any]
    certificate: x509.Certificate
    base_url: str
    hits: list[str] = field(default_factory=list)


@dataclass
class Kit:
    env: MediaMTXEnv
    attacker: Attacker
    kid: str
    key: ECKey  # the sidecar's real signing key, for the claim-check cases only
    jwk: dict[str, Any]  # the sidecar's public key as its JWKS serves it
    jwks_body: bytes
    bob: str  # bob's own token for live/cam1: the one thing an outsider really holds
    bob_cam2: str
    carol: str  # carol (vid_private) for live/private/x
    admin: str  # admin for the glob live/**
    share: str  # a share link's token for live/private/x
    share_id: str

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """Bob's claims for live/cam1 as the issuer writes them; `DROP` removes a claim, `None` makes it null."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.env.settings.jwt_issuer,
            "aud": self.env.settings.jwt_audience,
            "sub": "bob",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "groups": ["vid_public"],
            CLAIM_KEY: read(CAM1),
        }
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not DROP}

    def admin_claims(self) -> dict[str, Any]:
        """What an attacker wants: admin, every path."""
        return self.claims(sub="admin", groups=["vid_admin"], **{CLAIM_KEY: read("")})

    def real(self, claims: dict[str, Any] | str, **header: Any) -> str:
        """Signed with the sidecar's own key (what only the sidecar can do)."""
        return compact({"alg": "ES256", "typ": "JWT", "kid": self.kid, **header}, claims, with_ec(self.key.private_key))

    def forged(self, claims: dict[str, Any] | str, **header: Any) -> str:
        """Signed with the attacker's EC key under the sidecar's kid."""
        return compact({"alg": "ES256", "typ": "JWT", "kid": self.kid, **header}, claims, with_ec(self.attacker.ec))


def check_refused(response: httpx.Response) -> None:
    assert response.status_code in (400, 401), (response.status_code, response.text)
    body = response.json()
    if response.status_code == 401:
        assert body == DENIED
    else:
        assert isinstance(body.get("error"), str), body


def channels(token: str, action: str, path: str) -> list[dict[str, Any]]:
    """The token as MediaMTX hands it over: in the `token` field, in `?token=` (HLS), in `?jwt=` (RTMP)."""
    viewing = action in ("read", "playback", "publish")
    encoded = quote(token, safe="")
    return [
        {"token": token, "protocol": "rtsp" if viewing else ""},
        {"query": f"token={encoded}", "protocol": "hls" if viewing else ""},
        {"query": f"jwt={encoded}", "protocol": "rtmp" if viewing else ""},
    ]


def refused_everywhere(kit: Kit, token: str, path: str = CAM1, action: str = "read") -> None:
    for fields in channels(token, action, path):
        check_refused(kit.env.auth(action=action, path=path, **fields))


def allowed_everywhere(kit: Kit, token: str, path: str = CAM1, action: str = "read") -> None:
    for fields in channels(token, action, path):
        response = kit.env.auth(action=action, path=path, **fields)
        assert response.status_code == 200, (fields, response.text)


def raw_callback(kit: Kit, **fields: Any) -> httpx.Response:
    """The callback body as bytes with `\\uXXXX` escapes, as a JSON encoder with ensure_ascii writes it."""
    body = json.dumps(callback_body(**fields)).encode()
    return kit.env.client.post("/mediamtx/auth", content=body, headers={"content-type": "application/json"})


# --- fixtures ---------------------------------------------------------------------------------------------------------


def _self_signed(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mediamtx-access-sidecar")])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def attacker() -> Iterator[Attacker]:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = ECKey.import_key(key).as_dict(private=False)
    jwk["kid"] = rfc7638_thumbprint(jwk)
    certificate = _self_signed(key)
    hits: list[str] = []
    served: dict[str, Any] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            hits.append(self.path)
            body = served.get(self.path, b"")
            self.send_response(200 if body else 404)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    found = Attacker(
        ec=key,
        rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        p384=ec.generate_private_key(ec.SECP384R1()),
        p521=ec.generate_private_key(ec.SECP521R1()),
        secp256k1=ec.generate_private_key(ec.SECP256K1()),
        ed25519=ed25519.Ed25519PrivateKey.generate(),
        jwk=jwk,
        certificate=certificate,
        base_url=f"http://127.0.0.1:{server.server_address[1]}",
        hits=hits,
    )
    served["/cert.pem"] = certificate.public_bytes(serialization.Encoding.PEM)
    served["/jwks"] = json.dumps({"keys": [jwk]}).encode()
    yield found
    server.shutdown()
    server.server_close()
    thread.join(5)


def _share_token(env: MediaMTXEnv, path: str) -> tuple[str, str]:
    headers = env.sign_in("admin")
    created = env.client.post("/api/v1/share-links", json={"path": path, "ttl": "1h"}, headers=headers)
    assert created.status_code == 201, created.text
    env.client.cookies.clear()
    response = env.client.post(created.json()["url"] + "/token")
    assert response.status_code == 200, response.text
    return response.json()["token"], created.json()["id"]


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory, attacker: Attacker) -> Iterator[Kit]:
    data_dir = tmp_path_factory.mktemp("jwt-forgery") / "data"
    with open_mediamtx_env(MediaMTXEnv, data_dir, fake_transport, viewers=("bob", "carol")) as env:
        response = env.client.get("/.well-known/jwks.json")
        assert response.status_code == 200
        (jwk,) = response.json()["keys"]
        row = next(row for row in env.services.store.signing_keys() if row["kid"] == jwk["kid"])
        share, share_id = _share_token(env, PRIVATE)
        yield Kit(
            env=env,
            attacker=attacker,
            kid=jwk["kid"],
            key=ECKey.import_key(json.loads(row["private_jwk"])),
            jwk=jwk,
            jwks_body=response.content,
            bob=env.token(CAM1),
            bob_cam2=env.token(CAM2),
            carol=env.token(PRIVATE, "carol"),
            admin=env.token("live/**", "admin"),
            share=share,
            share_id=share_id,
        )


def test_the_kit_is_sound_real_tokens_pass_and_signing_here_matches_the_sidecar(kit: Kit) -> None:
    """Without this control a broken forge would make every refusal below meaningless."""
    allowed_everywhere(kit, kit.bob, CAM1)
    allowed_everywhere(kit, kit.carol, PRIVATE)
    allowed_everywhere(kit, kit.admin, PRIVATE)
    allowed_everywhere(kit, kit.share, PRIVATE)
    allowed_everywhere(kit, kit.real(kit.claims()), CAM1)  # this module's signer and claims are the issuer's
    allowed_everywhere(kit, kit.real(kit.admin_claims()), PRIVATE)
    refused_everywhere(kit, kit.bob, PRIVATE)
    assert json.loads(payload_text(kit.bob))[CLAIM_KEY] == read(CAM1)


# --- claim edits under every forgery method ---------------------------------------------------------------------------

# What the attacker writes into bob's claims, and the request that only the edited claims would let through.
EDITS: dict[str, tuple[Callable[[Kit], dict[str, Any]], str, str]] = {
    "groups gain vid_admin, permissions any path": (
        lambda k: k.claims(groups=["vid_admin", "vid_public"], **{CLAIM_KEY: read("")}),
        "read",
        PRIVATE,
    ),
    "permissions widened to the empty path": (lambda k: k.claims(**{CLAIM_KEY: read("")}), "read", CAM2),
    "permissions widened to the regex ~.*": (lambda k: k.claims(**{CLAIM_KEY: read("~.*")}), "read", CAM2),
    "permissions widened to a regex on the private tree": (
        lambda k: k.claims(groups=["vid_private"], **{CLAIM_KEY: read("~^live/")}),
        "read",
        PRIVATE,
    ),
    "svc service flag added": (
        lambda k: k.claims(svc=True, **{CLAIM_KEY: [{"action": "api", "path": ""}]}),
        "api",
        "",
    ),
    "subject swapped to admin": (lambda k: k.admin_claims(), "read", PRIVATE),
    "share-link subject forged": (
        lambda k: k.claims(sub=f"share:{k.share_id}", groups=["vid_private"], **{CLAIM_KEY: read(PRIVATE)}),
        "read",
        PRIVATE,
    ),
}


def _keep_signature(source: Callable[[Kit], str]) -> Callable[[Kit, dict[str, Any]], str]:
    def forge(kit: Kit, claims: dict[str, Any]) -> str:
        header, _, signature = split(source(kit))
        return f"{header}.{segment(claims)}.{signature}"

    return forge


FORGERIES: dict[str, Callable[[Kit, dict[str, Any]], str]] = {
    "bob's header and signature kept": _keep_signature(lambda k: k.bob),
    "the share token's header and signature kept": _keep_signature(lambda k: k.share),
    "alg none, no signature": lambda k, c: compact({"alg": "none", "typ": "JWT", "kid": k.kid}, c, unsigned),
    "alg none, bob's signature kept": lambda k, c: compact(
        {"alg": "none", "typ": "JWT", "kid": k.kid}, c, lambda _: split(k.bob)[2]
    ),
    "the attacker's ES256 key under the sidecar's kid": lambda k, c: k.forged(c),
    "HS256 keyed with the published JWK": lambda k, c: compact(
        {"alg": "HS256", "typ": "JWT", "kid": k.kid}, c, with_hmac("HS256", json.dumps(k.jwk).encode())
    ),
    "the attacker's key embedded as jwk under the sidecar's kid": lambda k, c: k.forged(c, jwk=k.attacker.jwk),
}


@pytest.mark.parametrize("edit", list(EDITS), ids=list(EDITS))
def test_each_claim_edit_would_grant_access_had_the_sidecar_signed_it(kit: Kit, edit: str) -> None:
    """The control for the matrix below: the edited claims do open the target, so only the signature refuses them."""
    claims, action, path = EDITS[edit]
    allowed_everywhere(kit, kit.real(claims(kit)), path, action)
    refused_everywhere(kit, kit.bob, path, action)


@pytest.mark.parametrize("forgery", list(FORGERIES), ids=list(FORGERIES))
@pytest.mark.parametrize("edit", list(EDITS), ids=list(EDITS))
def test_edited_claims_are_refused_under_every_forgery(kit: Kit, edit: str, forgery: str) -> None:
    claims, action, path = EDITS[edit]
    refused_everywhere(kit, FORGERIES[forgery](kit, claims(kit)), path, action)


# --- alg none, HMAC with the public key, foreign algorithms -----------------------------------------------------------

NONE_SPELLINGS = ["None", "NONE", "nOnE", "NoNe", " none", "none ", "none\u0000", "", None]


@pytest.mark.parametrize("signature", ["empty", "bob's"])
@pytest.mark.parametrize("alg", NONE_SPELLINGS, ids=[repr(alg) for alg in NONE_SPELLINGS])
def test_alg_none_in_any_spelling_is_refused(kit: Kit, alg: str | None, signature: str) -> None:
    header: dict[str, Any] = {"typ": "JWT", "kid": kit.kid}
    if alg is not None:
        header["alg"] = alg
    sign: Signer = unsigned if signature == "empty" else (lambda _: split(kit.bob)[2])
    refused_everywhere(kit, compact(header, kit.admin_claims(), sign), PRIVATE)
    refused_everywhere(kit, compact(header, split(kit.bob)[1], sign), CAM1)  # even bob's own claims


def _public_encodings(kit: Kit) -> dict[str, bytes]:
    public = kit.key.private_key.public_key()
    x, y = unb64(kit.jwk["x"]), unb64(kit.jwk["y"])
    members = {name: kit.jwk[name] for name in ("crv", "kty", "x", "y")}
    return {
        "JWK JSON as json.dumps writes it": json.dumps(kit.jwk).encode(),
        "JWK JSON compact and sorted": json.dumps(kit.jwk, separators=(",", ":"), sort_keys=True).encode(),
        "RFC 7638 thumbprint input": json.dumps(members, separators=(",", ":"), sort_keys=True).encode(),
        "the whole JWKS document as served": kit.jwks_body,
        "PEM": public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        "PEM without its final newline": public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).strip(),
        "DER SubjectPublicKeyInfo": public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "raw x||y": x + y,
        "uncompressed point 04||x||y": public.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        ),
        "compressed point": public.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
        ),
        "y coordinate text": kit.jwk["y"].encode(),
        "kid text": kit.kid.encode(),
        "empty secret": b"",
    }


ENCODINGS = [
    "JWK JSON as json.dumps writes it",
    "JWK JSON compact and sorted",
    "RFC 7638 thumbprint input",
    "the whole JWKS document as served",
    "PEM",
    "PEM without its final newline",
    "DER SubjectPublicKeyInfo",
    "raw x||y",
    "uncompressed point 04||x||y",
    "compressed point",
    "y coordinate text",
    "kid text",
    "empty secret",
]


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_keyed_with_the_public_key_is_refused(kit: Kit, alg: str, encoding: str) -> None:
    secret = _public_encodings(kit)[encoding]
    token = compact({"alg": alg, "typ": "JWT", "kid": kit.kid}, kit.admin_claims(), with_hmac(alg, secret))
    refused_everywhere(kit, token, PRIVATE)


FOREIGN_ALGORITHMS: dict[str, Callable[[Attacker], Signer]] = {
    "RS256": lambda a: with_rsa(a.rsa, "RS256"),
    "RS384": lambda a: with_rsa(a.rsa, "RS384"),
    "RS512": lambda a: with_rsa(a.rsa, "RS512"),
    "PS256": lambda a: with_rsa(a.rsa, "PS256"),
    "ES256": lambda a: with_ec(a.ec),
    "ES384": lambda a: with_ec(a.p384),
    "ES512": lambda a: with_ec(a.p521),
    "ES256K": lambda a: with_ec(a.secp256k1),
    "EdDSA": lambda a: with_ed25519(a.ed25519),
}


@pytest.mark.parametrize("alg", list(FOREIGN_ALGORITHMS))
def test_a_token_signed_with_an_attacker_key_under_the_sidecars_kid_is_refused(kit: Kit, alg: str) -> None:
    sign = FOREIGN_ALGORITHMS[alg](kit.attacker)
    refused_everywhere(kit, compact({"alg": alg, "typ": "JWT", "kid": kit.kid}, kit.admin_claims(), sign), PRIVATE)
    refused_everywhere(kit, compact({"alg": alg, "typ": "JWT"}, kit.admin_claims(), sign), PRIVATE)


# --- keys named or carried by the header ------------------------------------------------------------------------------


def _embedded(kit: Kit) -> dict[str, str]:
    a = kit.attacker
    der = a.certificate.public_bytes(serialization.Encoding.DER)
    x5c = [base64.b64encode(der).decode()]
    x5t = b64(hashlib.sha256(der).digest())
    attacker_kid = a.jwk["kid"]
    secret = b"attacker-chosen-secret"
    oct_jwk = {"kty": "oct", "k": b64(secret), "kid": kit.kid}
    claims = kit.admin_claims()
    return {
        "jku to the attacker's JWKS, attacker kid": kit.forged(claims, kid=attacker_kid, jku=f"{a.base_url}/jwks"),
        "jku to the attacker's JWKS, sidecar kid": kit.forged(claims, jku=f"{a.base_url}/jwks"),
        "jku to the sidecar's own JWKS": kit.forged(claims, jku="http://testserver/.well-known/jwks.json"),
        "x5u to the attacker's certificate": kit.forged(claims, kid=attacker_kid, x5u=f"{a.base_url}/cert.pem"),
        "x5c with the attacker's self-signed certificate": kit.forged(claims, kid=attacker_kid, x5c=x5c),
        "x5c and x5t#S256 under the sidecar kid": kit.forged(claims, x5c=x5c, **{"x5t#S256": x5t}),
        "jwk, jku, x5u and x5c all at once": kit.forged(
            claims, jwk=a.jwk, jku=f"{a.base_url}/jwks", x5u=f"{a.base_url}/cert.pem", x5c=x5c
        ),
        "jwk holding the sidecar's public key, attacker-signed": kit.forged(claims, jwk=kit.jwk),
        "jwk holding a symmetric key, HS256": compact(
            {"alg": "HS256", "typ": "JWT", "kid": kit.kid, "jwk": oct_jwk}, claims, with_hmac("HS256", secret)
        ),
        "jwk holding an RSA key, RS256": compact(
            {
                "alg": "RS256",
                "kid": kit.kid,
                "jwk": {
                    "kty": "RSA",
                    "n": b64(a.rsa.public_key().public_numbers().n.to_bytes(256, "big")),
                    "e": "AQAB",
                },
            },
            claims,
            with_rsa(a.rsa, "RS256"),
        ),
    }


EMBEDDED = [
    "jku to the attacker's JWKS, attacker kid",
    "jku to the attacker's JWKS, sidecar kid",
    "jku to the sidecar's own JWKS",
    "x5u to the attacker's certificate",
    "x5c with the attacker's self-signed certificate",
    "x5c and x5t#S256 under the sidecar kid",
    "jwk, jku, x5u and x5c all at once",
    "jwk holding the sidecar's public key, attacker-signed",
    "jwk holding a symmetric key, HS256",
    "jwk holding an RSA key, RS256",
]


@pytest.mark.parametrize("case", EMBEDDED)
def test_a_key_carried_or_pointed_at_by_the_header_is_never_used_nor_fetched(kit: Kit, case: str) -> None:
    before = len(kit.attacker.hits)
    refused_everywhere(kit, _embedded(kit)[case], PRIVATE)
    assert kit.attacker.hits[before:] == []  # no jku/x5u fetch (no key confusion, no SSRF)


def test_the_attackers_key_server_works_so_a_fetch_would_have_been_seen(kit: Kit) -> None:
    # Control for the test above: the server answers and records requests.
    before = len(kit.attacker.hits)
    assert httpx.get(f"{kit.attacker.base_url}/cert.pem").text.startswith("-----BEGIN CERTIFICATE-----")
    assert kit.attacker.hits[before:] == ["/cert.pem"]


KIDS: dict[str, Callable[[Kit], Any]] = {
    "path traversal to /dev/null": lambda k: "../../../../../../../../dev/null",
    "path traversal ending in the real kid": lambda k: "../../" + k.kid,
    "SQL tautology": lambda k: "' OR '1'='1' --",
    "SQL union for the private key": lambda k: "x' UNION SELECT private_jwk FROM signing_keys --",
    "2000 characters": lambda k: "k" * 2000,
    "empty": lambda k: "",
    "array holding the real kid": lambda k: [k.kid],
    "object": lambda k: {"$ne": ""},
    "number": lambda k: 0,
    "null": lambda k: None,
    "true": lambda k: True,
    "real kid and a NUL": lambda k: k.kid + "\u0000",
    "real kid upper-cased": lambda k: k.kid.upper(),
    "real kid padded with spaces": lambda k: f" {k.kid} ",
}


@pytest.mark.parametrize("name", list(KIDS))
def test_kid_injection_is_refused(kit: Kit, name: str) -> None:
    kid = KIDS[name](kit)
    admin = kit.admin_claims()
    refused_everywhere(kit, kit.forged(admin, kid=kid), PRIVATE)
    # The classic pairing: a kid that names an empty file, an HMAC keyed with its (empty) contents.
    refused_everywhere(kit, compact({"alg": "HS256", "kid": kid}, admin, with_hmac("HS256", b"")), PRIVATE)
    # Even the sidecar's own signature does not help a kid that is not exactly a published one.
    refused_everywhere(kit, kit.real(kit.claims(), kid=kid), CAM1)


def test_a_token_too_long_for_the_callback_is_a_400_not_a_500(kit: Kit) -> None:
    token = kit.forged(kit.admin_claims(), kid="k" * 5000)
    for fields, name in (({"token": token}, "token"), ({"query": f"token={token}", "protocol": "hls"}, "query")):
        response = kit.env.auth(path=PRIVATE, **fields)
        assert response.status_code == 400, response.text
        assert response.json()["field"] == name


# --- crit, b64: false, duplicate members ------------------------------------------------------------------------------


def test_crit_headers_are_refused(kit: Kit) -> None:
    admin = kit.admin_claims()
    refused_everywhere(kit, kit.forged(admin, crit=["x-widen"], **{"x-widen": True}), PRIVATE)
    refused_everywhere(kit, kit.forged(admin, crit=["exp"]), PRIVATE)
    refused_everywhere(kit, kit.forged(admin, crit="b64", b64=False), PRIVATE)
    refused_everywhere(kit, compact({"alg": "none", "crit": ["alg"]}, admin, unsigned), PRIVATE)
    # RFC 7515 §4.1.11: an extension listed in crit that the recipient does not understand makes the token invalid,
    # even with a good signature.
    unknown = kit.real(kit.claims(), crit=["x-unknown-extension"], **{"x-unknown-extension": 1})
    refused_everywhere(kit, unknown, CAM1)


def test_b64_false_unencoded_payloads_are_refused(kit: Kit) -> None:
    admin_json = json.dumps(kit.admin_claims(), separators=(",", ":"))
    assert "." not in admin_json  # the raw payload stays a single segment
    header = {"alg": "ES256", "typ": "JWT", "kid": kit.kid, "b64": False, "crit": ["b64"]}
    refused_everywhere(kit, compact(header, admin_json, with_ec(kit.attacker.ec)), PRIVATE)
    refused_everywhere(kit, compact({**header, "alg": "none"}, admin_json, unsigned), PRIVATE)
    _, payload, signature = split(kit.bob)
    refused_everywhere(kit, f"{segment(header)}.{payload}.{signature}", CAM1)
    refused_everywhere(kit, f"{segment(header)}.{payload_text(kit.bob)}.{signature}", CAM1)


def _with_members(token: str, extra: str) -> str:
    """The token's claims JSON text with members appended (duplicates of existing ones), as an encoded segment."""
    text = payload_text(token)
    assert text.endswith("}")
    return raw_segment(text[:-1] + "," + extra + "}")


def _duplicates(kit: Kit) -> dict[str, tuple[str, str]]:
    admin_members = f'"sub":"admin","groups":["vid_admin"],"{CLAIM_KEY}":{json.dumps(read(""))}'
    bob_members = f'"sub":"bob","groups":["vid_public"],"{CLAIM_KEY}":{json.dumps(read(CAM1))}'
    common = {k: v for k, v in kit.claims().items() if k not in ("sub", "groups", CLAIM_KEY)}
    common_text = json.dumps(common, separators=(",", ":"))[1:-1]
    widened_first = raw_segment("{" + common_text + "," + admin_members + "," + bob_members + "}")
    widened_last = raw_segment("{" + common_text + "," + bob_members + "," + admin_members + "}")
    _, bob_payload, bob_signature = split(kit.bob)
    kid, attacker_kid = kit.kid, kit.attacker.jwk["kid"]
    es256_then_none = raw_segment(members(("alg", "ES256"), ("typ", "JWT"), ("kid", kid), ("alg", "none")))
    none_then_es256 = raw_segment(members(("alg", "none"), ("typ", "JWT"), ("kid", kid), ("alg", "ES256")))
    attacker_then_real = raw_segment(members(("alg", "ES256"), ("kid", attacker_kid), ("kid", kid)))
    real_then_attacker = raw_segment(members(("alg", "ES256"), ("kid", kid), ("kid", attacker_kid)))
    return {
        "header alg ES256 then none, no signature": (f"{es256_then_none}.{widened_last}.", PRIVATE),
        "header alg none then ES256, bob's signature": (f"{none_then_es256}.{bob_payload}.{bob_signature}", CAM1),
        "header kid attacker's then the sidecar's, attacker-signed": (
            compact(attacker_then_real, widened_last, with_ec(kit.attacker.ec)),
            PRIVATE,
        ),
        "header kid the sidecar's then the attacker's, attacker-signed": (
            compact(real_then_attacker, widened_last, with_ec(kit.attacker.ec)),
            PRIVATE,
        ),
        "bob's claims with admin members appended, bob's signature": (
            f"{split(kit.bob)[0]}.{_with_members(kit.bob, admin_members)}.{bob_signature}",
            PRIVATE,
        ),
        "admin members first, bob's last, attacker-signed (first-wins bait)": (
            compact({"alg": "ES256", "kid": kit.kid}, widened_first, with_ec(kit.attacker.ec)),
            PRIVATE,
        ),
        "bob's members first, admin last, attacker-signed (last-wins bait)": (
            compact({"alg": "ES256", "kid": kit.kid}, widened_last, with_ec(kit.attacker.ec)),
            PRIVATE,
        ),
    }


DUPLICATES = [
    "header alg ES256 then none, no signature",
    "header alg none then ES256, bob's signature",
    "header kid attacker's then the sidecar's, attacker-signed",
    "header kid the sidecar's then the attacker's, attacker-signed",
    "bob's claims with admin members appended, bob's signature",
    "admin members first, bob's last, attacker-signed (first-wins bait)",
    "bob's members first, admin last, attacker-signed (last-wins bait)",
]


@pytest.mark.parametrize("case", DUPLICATES)
def test_duplicate_json_members_are_refused(kit: Kit, case: str) -> None:
    token, path = _duplicates(kit)[case]
    refused_everywhere(kit, token, path)


def test_duplicate_claims_even_when_signed_are_read_last_wins_as_mediamtx_reads_them(kit: Kit) -> None:
    """Go's encoding/json (MediaMTX's JWT mode) keeps the last duplicate member; so must the callback, or one signed
    text would mean two different grants. First: wider grants, last: bob's."""
    common = {k: v for k, v in kit.claims().items() if k not in ("groups", CLAIM_KEY)}
    text = (
        json.dumps(common, separators=(",", ":"))[:-1]
        + f',"groups":["vid_private"],"{CLAIM_KEY}":{json.dumps(read(""))}'
        + f',"groups":["vid_public"],"{CLAIM_KEY}":{json.dumps(read(CAM1))}}}'
    )
    token = kit.real(raw_segment(text))
    allowed_everywhere(kit, token, CAM1)
    refused_everywhere(kit, token, CAM2)
    refused_everywhere(kit, token, PRIVATE)


# --- other serialisations, extra segments, JWE ------------------------------------------------------------------------


def _serialisations(kit: Kit) -> dict[str, tuple[str, str]]:
    header, payload, signature = split(kit.bob)
    attacker_header = segment({"alg": "ES256", "kid": kit.kid})
    admin = segment(kit.admin_claims())
    attacker_signature = with_ec(kit.attacker.ec)(f"{attacker_header}.{admin}")
    public = ECKey.import_key({name: kit.jwk[name] for name in ("kty", "crv", "x", "y")})
    jwe_token = jwe.encrypt_compact(
        {"alg": "ECDH-ES", "enc": "A256GCM", "kid": kit.kid}, json.dumps(kit.admin_claims()).encode(), public
    )
    nested = kit.forged(b64(kit.bob.encode()), cty="JWT")
    return {
        "flattened JSON serialisation of bob's own token": (
            json.dumps({"protected": header, "payload": payload, "signature": signature}),
            CAM1,
        ),
        "flattened JSON, admin payload under bob's signature": (
            json.dumps({"protected": header, "payload": admin, "signature": signature}),
            PRIVATE,
        ),
        "general JSON, an attacker signature beside bob's": (
            json.dumps(
                {
                    "payload": admin,
                    "signatures": [
                        {"protected": attacker_header, "signature": attacker_signature},
                        {"protected": header, "signature": signature},
                    ],
                }
            ),
            PRIVATE,
        ),
        "flattened JSON padded to exactly two dots": (
            json.dumps({"protected": attacker_header, "payload": admin, "signature": attacker_signature, "x": ".."}),
            PRIVATE,
        ),
        "bob's token with a trailing dot": (kit.bob + ".", CAM1),
        "bob's token with a leading dot": ("." + kit.bob, CAM1),
        "bob's token with its signature twice": (f"{kit.bob}.{signature}", CAM1),
        "bob's header twice": (f"{header}.{kit.bob}", CAM1),
        "JWE-shaped five parts around bob's claims": (
            f"{segment({'alg': 'dir', 'enc': 'A128GCM', 'kid': kit.kid})}..{b64(b'0' * 12)}.{payload}.{b64(b'0' * 16)}",
            CAM1,
        ),
        "a real ECDH-ES JWE encrypted to the sidecar's published key": (jwe_token, PRIVATE),
        "a nested JWT (cty JWT) wrapping bob's token": (nested, CAM1),
        "bob's token with its dots percent-encoded": (kit.bob.replace(".", "%2E"), CAM1),
    }


SERIALISATIONS = [
    "flattened JSON serialisation of bob's own token",
    "flattened JSON, admin payload under bob's signature",
    "general JSON, an attacker signature beside bob's",
    "flattened JSON padded to exactly two dots",
    "bob's token with a trailing dot",
    "bob's token with a leading dot",
    "bob's token with its signature twice",
    "bob's header twice",
    "JWE-shaped five parts around bob's claims",
    "a real ECDH-ES JWE encrypted to the sidecar's published key",
    "a nested JWT (cty JWT) wrapping bob's token",
    "bob's token with its dots percent-encoded",
]


@pytest.mark.parametrize("case", SERIALISATIONS)
def test_only_a_three_part_compact_jws_is_a_token(kit: Kit, case: str) -> None:
    token, path = _serialisations(kit)[case]
    refused_everywhere(kit, token, path)


# --- broken ECDSA signatures, malleability ----------------------------------------------------------------------------

PSYCHIC = {
    "r = s = 0 (CVE-2022-21449)": bytes(64),
    "r = s = n": P256_ORDER.to_bytes(32, "big") * 2,
    "r = 0, s = n": bytes(32) + P256_ORDER.to_bytes(32, "big"),
    "r = s = 1": (1).to_bytes(32, "big") * 2,
    "one zero byte": b"\x00",
    "65 zero bytes": bytes(65),
}


@pytest.mark.parametrize("name", list(PSYCHIC))
def test_degenerate_ecdsa_signatures_are_refused(kit: Kit, name: str) -> None:
    signature = b64(PSYCHIC[name])
    header = {"alg": "ES256", "typ": "JWT", "kid": kit.kid}
    refused_everywhere(kit, compact(header, kit.admin_claims(), lambda _: signature), PRIVATE)
    refused_everywhere(kit, f"{split(kit.bob)[0]}.{split(kit.bob)[1]}.{signature}", CAM1)


def _malleated(token: str) -> dict[str, str]:
    """Other texts of the same signature: (r, n - s), and the signature's unused trailing base64 bits set."""
    header, payload, signature = split(token)
    raw = unb64(signature)
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet[alphabet.index(signature[-1]) ^ 0b0011]  # 86 characters carry 512 bits: 4 spare at the end
    assert unb64(signature[:-1] + last) == raw
    return {
        "high S": f"{header}.{payload}.{b64(r.to_bytes(32, 'big') + (P256_ORDER - s).to_bytes(32, 'big'))}",
        "spare base64 bits": f"{header}.{payload}.{signature[:-1]}{last}",
    }


def test_a_malleated_copy_of_a_token_grants_nothing_the_token_does_not_and_dies_with_it(kit: Kit) -> None:
    """ECDSA signatures are malleable and base64 has spare bits, so another text of bob's token may verify (MediaMTX's
    Go verifier accepts both too). Such a copy carries bob's exact claims: it must open no other stream, and
    revoking bob's tokens must end it, although it is not the text the issued-token register knows."""
    env = kit.env
    with pytest.MonkeyPatch.context() as patch:
        cheapen_bcrypt(patch)
        env.client.portal.call(env.services.users.add_user, "dave", ["vid_public"], "dave-password-1", "test")
    token = env.token(CAM1, "dave", "dave-password-1")
    copies = _malleated(token)
    allowed_everywhere(kit, token, CAM1)
    for copy in copies.values():
        assert copy != token
        for fields in channels(copy, "read", CAM1):
            assert env.auth(path=CAM1, **fields).status_code in (200, 401)  # accepted or not: both are fine
        refused_everywhere(kit, copy, CAM2)
        refused_everywhere(kit, copy, PRIVATE)
        refused_everywhere(kit, copy, CAM1, "publish")
    env.services.tokens.revoke("dave", time.time())
    refused_everywhere(kit, token, CAM1)
    for copy in copies.values():
        refused_everywhere(kit, copy, CAM1)


# --- splicing and re-encoding real tokens -----------------------------------------------------------------------------

SPLICES: dict[str, tuple[Callable[[Kit], tuple[str, str, str]], str]] = {
    "carol's claims under bob's header and signature": (lambda k: (k.bob, k.carol, k.bob), PRIVATE),
    "admin's glob claims under bob's signature": (lambda k: (k.bob, k.admin, k.bob), PRIVATE),
    "the share link's claims under bob's signature": (lambda k: (k.bob, k.share, k.bob), PRIVATE),
    "bob's live/cam2 claims under his live/cam1 signature": (lambda k: (k.bob, k.bob_cam2, k.bob), CAM2),
    "bob's claims under carol's signature": (lambda k: (k.bob, k.bob, k.carol), CAM1),
    "carol's header and claims under admin's signature": (lambda k: (k.carol, k.carol, k.admin), PRIVATE),
}


@pytest.mark.parametrize("name", list(SPLICES))
def test_claims_swapped_between_real_tokens_are_refused(kit: Kit, name: str) -> None:
    sources, path = SPLICES[name]
    header_from, claims_from, signature_from = sources(kit)
    token = f"{split(header_from)[0]}.{split(claims_from)[1]}.{split(signature_from)[2]}"
    assert token not in (kit.bob, kit.bob_cam2, kit.carol, kit.admin, kit.share)
    refused_everywhere(kit, token, path)


def _reencodings(kit: Kit) -> dict[str, str]:
    """Bob's claims, byte for byte or as the same JSON, in another encoding of the claims segment."""
    _, payload, _ = split(kit.bob)
    raw = unb64(payload)
    claims = json.loads(raw)
    return {
        "one '=' of padding": payload + "=",
        "two '=' of padding": payload + "==",
        "claims in UTF-16 (json.loads detects it)": b64(raw.decode().encode("utf-16")),
        "slashes escaped": b64(raw.replace(b"/", b"\\/")),
        "JSON pretty-printed": b64(json.dumps(claims, indent=2).encode()),
        "JSON with a leading space": b64(b" " + raw),
        "JSON with a trailing newline": b64(raw + b"\n"),
        "JSON with a byte-order mark": b64(b"\xef\xbb\xbf" + raw),
        "members reordered": b64(json.dumps(dict(reversed(claims.items())), separators=(",", ":")).encode()),
        "subject unicode-escaped": b64(raw.replace(b'"sub":"bob"', b'"sub":"\\u0062ob"')),
        "payload split by a line break": payload[:40] + "\n" + payload[40:],
    }


REENCODINGS = [
    "one '=' of padding",
    "two '=' of padding",
    "claims in UTF-16 (json.loads detects it)",
    "slashes escaped",
    "JSON pretty-printed",
    "JSON with a leading space",
    "JSON with a trailing newline",
    "JSON with a byte-order mark",
    "members reordered",
    "subject unicode-escaped",
    "payload split by a line break",
]


@pytest.mark.parametrize("name", REENCODINGS)
def test_a_valid_token_with_its_claims_reencoded_is_refused(kit: Kit, name: str) -> None:
    header, payload, signature = split(kit.bob)
    reencoded = _reencodings(kit)[name]
    assert reencoded != payload
    refused_everywhere(kit, f"{header}.{reencoded}.{signature}", CAM1)


def test_a_valid_token_with_its_header_reencoded_is_refused(kit: Kit) -> None:
    header, payload, signature = split(kit.bob)
    pretty = b64(json.dumps(json.loads(unb64(header)), indent=1).encode())
    refused_everywhere(kit, f"{pretty}.{payload}.{signature}", CAM1)
    refused_everywhere(kit, f"{header}=.{payload}.{signature}", CAM1)


# --- the claim checks themselves (signed with the real key) -----------------------------------------------------------


def _claim_cases(kit: Kit) -> dict[str, dict[str, Any] | str]:
    now = int(time.time())
    settings = kit.env.settings
    aud, iss = settings.jwt_audience, settings.jwt_issuer

    def text(name: str, literal: str) -> str:
        """Claims with one member written as raw JSON text (NaN and Infinity are no JSON numbers)."""
        others = json.dumps({k: v for k, v in kit.claims().items() if k != name}, separators=(",", ":"))
        return raw_segment(others[:-1] + f',"{name}":{literal}}}')

    return {
        "nbf two seconds ahead": kit.claims(nbf=now + 2),
        "nbf a string in the past": kit.claims(nbf=str(now - 60)),
        "nbf null": kit.claims(nbf=None),
        "nbf true": kit.claims(nbf=True),
        "iat a minute ahead, nbf now": kit.claims(iat=now + 60),
        "iat a string": kit.claims(iat=str(now)),
        "iat null": kit.claims(iat=None),
        "iat missing": kit.claims(iat=DROP),
        "exp a numeric string": kit.claims(exp="9999999999"),
        "exp true": kit.claims(exp=True),
        "exp an object": kit.claims(exp={"$gt": 0}),
        "exp null": kit.claims(exp=None),
        "exp equal to now": kit.claims(exp=now),
        "exp fractional, half a second ago": kit.claims(exp=now - 0.5),
        "exp 1e999 (infinite)": text("exp", "1e999"),
        "exp Infinity": text("exp", "Infinity"),
        "exp NaN": text("exp", "NaN"),
        "exp -Infinity": text("exp", "-Infinity"),
        "aud list without the audience": kit.claims(aud=["other"]),
        "aud empty list": kit.claims(aud=[]),
        "aud upper-cased": kit.claims(aud=aud.upper()),
        "aud with a trailing space": kit.claims(aud=aud + " "),
        "aud nested list": kit.claims(aud=[[aud]]),
        "aud comma-joined with another": kit.claims(aud=f"{aud},other"),
        "aud space-joined with another": kit.claims(aud=f"{aud} other"),
        "aud an object": kit.claims(aud={"aud": aud}),
        "aud list with an upper-cased copy": kit.claims(aud=[aud.upper(), "other"]),
        "aud null": kit.claims(aud=None),
        "iss with a trailing slash": kit.claims(iss=iss + "/"),
        "iss upper-cased": kit.claims(iss=iss.upper()),
        "iss with a leading space": kit.claims(iss=" " + iss),
        "iss with a NUL": kit.claims(iss=iss + "\u0000"),
        "iss with a zero-width space": kit.claims(iss=iss + "\u200b"),
        "iss with a Cyrillic homoglyph": kit.claims(iss=iss.replace("a", "\u0430", 1)),
        "iss as an https URL": kit.claims(iss=f"https://{iss}"),
        "iss as a subdomain lookalike": kit.claims(iss=f"{iss}.attacker.example"),
        "iss with a prefix": kit.claims(iss=f"evil-{iss}"),
        "iss in a list": kit.claims(iss=[iss]),
        "iss null": kit.claims(iss=None),
    }


CLAIM_CASES = [
    "nbf two seconds ahead",
    "nbf a string in the past",
    "nbf null",
    "nbf true",
    "iat a minute ahead, nbf now",
    "iat a string",
    "iat null",
    "iat missing",
    "exp a numeric string",
    "exp true",
    "exp an object",
    "exp null",
    "exp equal to now",
    "exp fractional, half a second ago",
    "exp 1e999 (infinite)",
    "exp Infinity",
    "exp NaN",
    "exp -Infinity",
    "aud list without the audience",
    "aud empty list",
    "aud upper-cased",
    "aud with a trailing space",
    "aud nested list",
    "aud comma-joined with another",
    "aud space-joined with another",
    "aud an object",
    "aud list with an upper-cased copy",
    "aud null",
    "iss with a trailing slash",
    "iss upper-cased",
    "iss with a leading space",
    "iss with a NUL",
    "iss with a zero-width space",
    "iss with a Cyrillic homoglyph",
    "iss as an https URL",
    "iss as a subdomain lookalike",
    "iss with a prefix",
    "iss in a list",
    "iss null",
]


@pytest.mark.parametrize("name", CLAIM_CASES)
def test_bad_time_audience_and_issuer_claims_are_refused_even_when_signed(kit: Kit, name: str) -> None:
    refused_everywhere(kit, kit.real(_claim_cases(kit)[name]), CAM1)


def test_an_aud_list_containing_the_audience_is_accepted_like_mediamtx_accepts_it(kit: Kit) -> None:
    """Decided: accept. RFC 7519 §4.1.3 asks the recipient to find itself in `aud`; MediaMTX's JWT mode does the same,
    so both modes decide alike. The issuer never writes a list and only the key holder can sign one."""
    settings = kit.env.settings
    verifier = MediaMTXJWT(
        lambda: kit.env.client.get("/.well-known/jwks.json").json(),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
    )
    for aud in ([settings.jwt_audience, "other"], ["other", settings.jwt_audience]):
        token = kit.real(kit.claims(aud=aud))
        allowed_everywhere(kit, token, CAM1)
        assert verifier.allows(token, "read", CAM1)
        refused_everywhere(kit, token, CAM2)  # the list widens nothing else
        assert not verifier.allows(token, "read", CAM2)


# --- token, path and query confusion ----------------------------------------------------------------------------------

OTHER_REQUESTS = [
    ("read", CAM2),
    ("playback", CAM2),
    ("read", PRIVATE),
    ("publish", CAM1),
    ("api", ""),
    ("metrics", ""),
    ("read", ""),
    ("read", "live/cam1/"),
    ("read", "live//cam1"),
    ("read", "live/./cam1"),
    ("read", "live/cam1/../cam2"),
    ("read", "live/cam2/../cam1"),
    ("read", "live/cam1%2F..%2Fcam2"),
    ("read", "live/CAM1"),
    ("read", "live/cam1x"),
    ("read", "live/cam"),
    ("read", "live/cam1/sub"),
    ("read", "~live/cam1"),
    ("read", "live/cam1\u0000"),
    ("read", "live/cam1 "),
]


@pytest.mark.parametrize(("action", "path"), OTHER_REQUESTS, ids=[f"{a} {p!r}" for a, p in OTHER_REQUESTS])
def test_a_token_for_one_stream_opens_no_other_request(kit: Kit, action: str, path: str) -> None:
    refused_everywhere(kit, kit.bob, path, action)


def test_the_query_cannot_name_another_path_for_the_token(kit: Kit) -> None:
    bob = quote(kit.bob, safe="")
    for query in (f"token={bob}&path={CAM1}", f"path={CAM1}&jwt={bob}", f"token={bob}#/{CAM1}"):
        check_refused(kit.env.auth(path=CAM2, protocol="hls", query=query))


def _confusions(kit: Kit) -> dict[str, tuple[str, str, str]]:
    forged = quote(kit.forged(kit.admin_claims()), safe="")
    bob, carol = quote(kit.bob, safe=""), quote(kit.carol, safe="")
    return {
        "field bob's, ?jwt= forged": (kit.bob, f"jwt={forged}", PRIVATE),
        "field forged, ?jwt= bob's, for a path bob may not watch": (
            kit.forged(kit.admin_claims()),
            f"jwt={bob}",
            PRIVATE,
        ),
        "field forged, ?jwt= bob's, for bob's own path": (kit.forged(kit.admin_claims()), f"jwt={bob}", CAM1),
        "field bob's, ?jwt= carol's": (kit.bob, f"jwt={carol}", PRIVATE),
        "field bob's, ?token= forged and ?jwt= bob's": (kit.bob, f"token={forged}&jwt={bob}", CAM2),
        "no field, ?token= forged then ?jwt= bob's": ("", f"token={forged}&jwt={bob}", PRIVATE),
        "no field, ?jwt= bob's then ?token= forged": ("", f"jwt={bob}&token={forged}", PRIVATE),
        "no field, ?token= bob's then ?token= forged": ("", f"token={bob}&token={forged}", PRIVATE),
        "no field, ?token= forged then ?token= bob's": ("", f"token={forged}&token={bob}", CAM1),
        "field not a token, ?jwt= forged": ("not-a-token", f"jwt={forged}", PRIVATE),
        "field bob's, query names bob's path": (kit.bob, f"token={bob}&path={CAM1}", CAM2),
    }


CONFUSIONS = [
    "field bob's, ?jwt= forged",
    "field forged, ?jwt= bob's, for a path bob may not watch",
    "field forged, ?jwt= bob's, for bob's own path",
    "field bob's, ?jwt= carol's",
    "field bob's, ?token= forged and ?jwt= bob's",
    "no field, ?token= forged then ?jwt= bob's",
    "no field, ?jwt= bob's then ?token= forged",
    "no field, ?token= bob's then ?token= forged",
    "no field, ?token= forged then ?token= bob's",
    "field not a token, ?jwt= forged",
    "field bob's, query names bob's path",
]


@pytest.mark.parametrize("case", CONFUSIONS)
def test_a_token_field_and_query_tokens_together_cannot_confuse_the_decision(kit: Kit, case: str) -> None:
    token, query, path = _confusions(kit)[case]
    for protocol in ("rtsp", "hls", "rtmp"):
        check_refused(kit.env.auth(token=token, query=query, path=path, protocol=protocol))


# --- odd input that once answered 500 instead of a refusal ---------------------------------------------------------


@pytest.mark.parametrize("where", ["token field", "query token"])
def test_a_token_with_a_lone_surrogate_is_refused_not_a_500(kit: Kit, where: str) -> None:
    token = "\ud800" + kit.bob[1:]
    fields = {"token": token} if where == "token field" else {"query": f"token={token}", "protocol": "hls"}
    check_refused(raw_callback(kit, path=CAM1, **fields))


@pytest.mark.parametrize("path", [None, 5, ["live/cam1"], "~("], ids=["null", "number", "list", "broken regex"])
def test_a_signed_token_with_a_malformed_permission_is_refused_not_a_500(kit: Kit, path: Any) -> None:
    token = kit.real(kit.claims(**{CLAIM_KEY: [{"action": "read", "path": path}]}))
    refused_everywhere(kit, token, CAM1)


# --- a retired key ----------------------------------------------------------------------------------------------------


@dataclass
class Rotated:
    env: MediaMTXEnv
    old_kid: str
    old_key: ECKey
    new_kid: str
    issued_before: str  # bob's token signed by the old key before it retired


@pytest.fixture(scope="module")
def rotated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rotated]:
    """A sidecar that rotated its key (MediaMTX confirmed the refresh) and whose old key has since retired."""
    data_dir = tmp_path_factory.mktemp("jwt-retired") / "data"
    with open_mediamtx_env(MediaMTXEnv, data_dir, fake_transport) as env:
        ((old_kid, old_jwk),) = [(row["kid"], row["private_jwk"]) for row in env.services.store.signing_keys()]
        issued_before = env.token(CAM1)
        assert env.auth(token=issued_before).status_code == 200

        async def refreshed() -> None:
            return None

        new_kid, _ = env.client.portal.call(env.services.tokens.rotate, refreshed)
        # What `rotate` schedules for when the old key's last token has expired, brought forward.
        with env.services.store.transaction() as db:
            env.services.store.retire_signing_keys(db, new_kid, time.time() - 1)
        yield Rotated(env, old_kid, ECKey.import_key(json.loads(old_jwk)), new_kid, issued_before)


def test_a_token_signed_by_a_retired_key_is_refused(rotated: Rotated) -> None:
    env = rotated.env
    published = {key["kid"] for key in env.client.get("/.well-known/jwks.json").json()["keys"]}
    assert published == {rotated.new_kid}
    fresh = env.token(CAM1)
    assert env.auth(token=fresh).status_code == 200  # control: the new key works
    for fields in channels(rotated.issued_before, "read", CAM1):
        check_refused(env.auth(path=CAM1, **fields))


@pytest.mark.parametrize("kid", ["old", "new", "none"])
def test_a_stolen_retired_key_cannot_sign_tokens(rotated: Rotated, kid: str) -> None:
    env = rotated.env
    now = int(time.time())
    claims = {
        "iss": env.settings.jwt_issuer,
        "aud": env.settings.jwt_audience,
        "sub": "admin",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "groups": ["vid_admin"],
        CLAIM_KEY: read(""),
    }
    header: dict[str, Any] = {"alg": "ES256", "typ": "JWT"}
    if kid != "none":
        header["kid"] = rotated.old_kid if kid == "old" else rotated.new_kid
    token = compact(header, claims, with_ec(rotated.old_key.private_key))
    for path in (CAM1, PRIVATE):
        for fields in channels(token, "read", path):
            check_refused(env.auth(path=path, **fields))
