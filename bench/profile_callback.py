"""Where one auth callback spends its time inside the sidecar, without HTTP or TCP in the way.

Builds the same data as bench/callback.py, then drives the sidecar's ASGI app and the bare app directly with the
same callback bodies: microseconds per callback for both, the cost of each step of the sidecar's callback on its
own, and a cProfile of the sidecar's callbacks grouped by where the time goes.
Run with `.venv/bin/python bench/profile_callback.py [--count N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import io
import itertools
import json
import math
import pstats
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bare_app import app as bare_app
from callback import CallbackRequest, bench_settings, populate
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet
from joserfc.jwt import JWTClaimsRegistry
from starlette.types import ASGIApp, Message

from sidecar.app import create_app
from sidecar.bootstrap import bootstrap
from sidecar.keys import digest
from sidecar.media_auth import AuthRequest
from sidecar.runtime import Services, build_services
from sidecar.tokens import thumbprint

# Where a profiled function lives -> the cost it stands for (first match wins).
CATEGORIES = (
    ("joserfc", "JWT decode/verify (joserfc)"),
    ("cryptography", "ECDSA / key handling (cryptography)"),
    ("sqlite3", "SQLite calls"),
    ("sidecar/store.py", "SQLite calls"),
    ("prometheus_client", "metrics (prometheus_client)"),
    ("json/", "JSON"),
    ("_json", "JSON"),
    ("logging", "logging"),
    ("starlette", "Starlette (routing, request, response)"),
    ("sidecar/web", "sidecar web layer"),
    ("sidecar/tokens.py", "sidecar tokens.py"),
    ("sidecar/policy.py", "rule matching (policy.py)"),
    ("sidecar/media_auth.py", "media_auth.py"),
    ("sidecar/rules.py", "rules.py"),
    ("sidecar/identity.py", "identity.py"),
    ("asyncio", "asyncio"),
    ("hashlib", "hashlib"),
    ("urllib", "urllib (query parsing)"),
    ("re/", "re"),
    ("<built-in", "other built-ins"),
    ("<method", "other built-ins"),
    ("<frozen", "other built-ins"),
)


def scope_for(body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/mediamtx/auth",
        "raw_path": b"/mediamtx/auth",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8088"),
            (b"user-agent", b"Go-http-client/1.1"),
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"application/json"),
            (b"connection", b"close"),
            (b"accept-encoding", b"gzip"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8088),
        "state": {},
    }


async def call(app: ASGIApp, body: bytes) -> int:
    status = 0

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope_for(body), receive, send)
    return status


async def per_callback_us(app: ASGIApp, bodies: Sequence[bytes]) -> float:
    started = time.perf_counter()
    for body in bodies:
        await call(app, body)
    return (time.perf_counter() - started) * 1e6 / len(bodies)


def timed(work: Callable[[], object], repeat: int) -> list[float]:
    """Seconds per call of `work`, one sample per call."""
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        samples.append(time.perf_counter() - started)
    return samples


def raw_ecdsa(token: str, key: ECKey) -> Callable[[], object]:
    """The bare P-256 signature check of `token`, without any JWT library around it."""
    header, payload, signature = token.split(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public = key.public_key
    assert isinstance(public, ec.EllipticCurvePublicKey)
    message = f"{header}.{payload}".encode()
    return lambda: public.verify(der, message, ec.ECDSA(hashes.SHA256()))


def steps(services: Services, requests: Sequence[CallbackRequest]) -> list[tuple[str, list[float]]]:
    """Each step the sidecar takes for one callback, timed on its own over the sample."""
    parsed = [AuthRequest.parse(json.loads(request.body)) for request in requests]
    tokens = [token for token in (p.token if p.token.count(".") == 2 else p.query_token() for p in parsed) if token]
    counter = itertools.count()

    def cycle(items: Sequence[Any]) -> Callable[[], Any]:
        return lambda: items[next(counter) % len(items)]

    body, request, token = cycle([r.body for r in requests]), cycle(parsed), cycle(tokens)
    n = len(requests)
    media_auth, store, metrics, issuer = services.media_auth, services.store, services.metrics, services.tokens
    keys = [key for _, key, _, _ in issuer._load()]
    keyset = KeySet(list(keys))
    settings = services.settings
    viewer = services.roles.principal("user00001", ["vid_g01"], source="bench")
    decoded = jwt.decode(tokens[0], keyset, algorithms=["ES256"])

    def claims_check() -> None:
        registry = JWTClaimsRegistry(
            now=int(time.time()),
            iss={"essential": True, "value": settings.jwt_issuer},
            aud={"essential": True, "value": settings.jwt_audience},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
        )
        registry.validate(decoded.claims)

    def batch_of_50() -> None:
        row = ("user00001", ["vid_g01"], "site1/cam1", "read", "rtsp", "user", time.time())
        store.remember_sessions([(f"id-{next(counter)}", *row) for _ in range(50)])

    return [
        ("json.loads(body)", timed(lambda: json.loads(body()), n)),
        ("AuthRequest.parse", timed(lambda: AuthRequest.parse(json.loads(body())), n)),
        ("MediaAuth.check (the whole decision, mixed sample)", timed(lambda: media_auth.check(request()), n)),
        ("  TokenIssuer.verify (per token)", timed(lambda: issuer.verify(token()), len(tokens))),
        (
            "    jwt.decode (joserfc, signature included)",
            timed(lambda: jwt.decode(token(), keyset, algorithms=["ES256"]), len(tokens)),
        ),
        ("      P-256 ECDSA verify alone (cryptography)", timed(raw_ecdsa(tokens[0], keys[0]), n)),
        ("    claims registry + validate", timed(claims_check, n)),
        (f"    thumbprint() of the {len(keys)} key(s), every time", timed(lambda: [thumbprint(k) for k in keys], n)),
        ("    Store.generation (polled every 10 ms at most)", timed(store.generation, n)),
        ("    digest() of the token (register lookup)", timed(lambda: digest(token()), len(tokens))),
        ("  RuleBook.decide (2 automaton runs)", timed(lambda: services.rules.decide(viewer, "site1/cam1", "read"), n)),
        (
            "remembered session (a row of a 50-row batch)",
            [sample / 50 for sample in timed(batch_of_50, max(1, n // 50))],
        ),
        ("Metrics.record_decision", timed(lambda: metrics.record_decision(True, "read"), n)),
        ("Metrics.observe", timed(lambda: metrics.observe("/mediamtx/auth", "POST", 0.001), n)),
    ]


def grouped(profile: cProfile.Profile, count: int) -> list[tuple[str, float]]:
    stats = pstats.Stats(profile)
    totals: dict[str, float] = {}
    for (filename, _line, function), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{filename}:{function}"
        label = next((name for key, name in CATEGORIES if key in where), "other Python")
        totals[label] = totals.get(label, 0.0) + tottime
    return sorted(((label, seconds * 1e6 / count) for label, seconds in totals.items()), key=lambda x: -x[1])


async def measure(services: Services, sidecar: ASGIApp, requests: list[CallbackRequest], count: int) -> None:
    bodies = [request.body for request in requests[:count]]
    for app in (sidecar, bare_app):  # warm up: matcher compiled, keys loaded, imports done
        for body in bodies[:200]:
            await call(app, body)
    statuses = [await call(sidecar, request.body) for request in requests[:200]]
    wrong = sum(status != request.expected for status, request in zip(statuses, requests[:200], strict=True))
    if wrong:
        raise SystemExit(f"the sidecar app answered {wrong} of 200 callbacks wrongly; not profiling a broken app")

    timings: dict[str, list[float]] = {"sidecar": [], "bare": []}
    for _ in range(3):  # alternate, and keep the best of three: the least disturbed by the rest of the machine
        timings["sidecar"].append(await per_callback_us(sidecar, bodies))
        timings["bare"].append(await per_callback_us(bare_app, bodies))
    side, bare = min(timings["sidecar"]), min(timings["bare"])
    print(f"ASGI app only, {len(bodies)} callbacks, best of 3 (µs per callback)")
    print(f"  sidecar {side:8.0f}\n  bare    {bare:8.0f}\n  extra   {side - bare:8.0f}  (the sidecar's own work)")

    print(f"\neach step alone, µs per call{'':25}{'mean':>8}{'p99':>8}{'max':>8}")
    for label, samples in steps(services, requests[:count]):
        ordered = sorted(samples)
        mean = sum(samples) / len(samples)
        p99 = ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]
        print(f"  {label:52}{mean * 1e6:8.1f}{p99 * 1e6:8.1f}{ordered[-1] * 1e6:8.0f}")

    profile = cProfile.Profile()
    profile.enable()
    for body in bodies:
        await call(sidecar, body)
    profile.disable()
    print(f"\ncProfile of {len(bodies)} sidecar callbacks, own time grouped (µs per callback, profiler overhead in)")
    for label, micros in grouped(profile, len(bodies)):
        if micros >= 1:
            print(f"  {label:52}{micros:8.1f}")
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out).strip_dirs().sort_stats("tottime")
    stats.print_stats(15)
    print("\ntop 15 functions by own time")
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip() and "Ordered by" not in line))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=2000, help="callbacks per measurement (default 2000)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if not 200 <= args.count <= 12_000:
        parser.error("--count must be 200 to 12000")
    with tempfile.TemporaryDirectory(prefix="sidecar-profile-") as tmp:
        settings = bench_settings(Path(tmp) / "data")
        bootstrap(settings, out=lambda _: None)

        async def work() -> None:
            services = build_services(settings)
            try:
                requests = await populate(services, args.seed, lambda line: print(f"  .. {line}", file=sys.stderr))
                random.Random(args.seed).shuffle(requests)
                sidecar = create_app(settings)
                sidecar.state.services = services  # what the lifespan would do
                await measure(services, sidecar, requests, args.count)
            finally:
                await services.aclose()

        asyncio.run(work())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
