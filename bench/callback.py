"""Load benchmark of MediaMTX's HTTP auth callback: the real sidecar against a bare Starlette endpoint.

Run with `.venv/bin/python bench/callback.py [--quick]`; see bench/README.md for what it prints.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import math
import os
import random
import secrets
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from sidecar.bootstrap import bootstrap
from sidecar.media_auth import playback_permissions
from sidecar.policy import decide
from sidecar.processes import LoggedProcess, free_port, start_process, stop_process
from sidecar.runtime import Services, run_with_services
from sidecar.settings import Settings

BENCH_DIR = Path(__file__).resolve().parent
ACTOR = "bench"
GROUP_COUNT = 50
SITE_COUNT = 100
RULE_COUNT = 1000
PRINCIPAL_COUNT = 10_000
TOKEN_TTL = 3600  # longer than the longest run, so no token expires while it is measured
REQUEST_TIMEOUT = 5.0
PACING_WORKERS = 16
PROTOCOLS = ("rtsp", "hls", "webrtc", "rtmp", "srt")
USER_AGENTS = {
    "rtsp": "LibVLC/3.0.21 (LIVE555 Streaming Media v2016.11.28)",
    "rtmp": "FMLE/3.0 (compatible; FMSc/1.0)",
    "hls": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "webrtc": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0",
    "srt": "",
    "": "Lavf/61.1.100",
}
TARGET_RATIO = 0.8
TARGET_P99_MS = 5.0


@dataclass(frozen=True)
class Mode:
    name: str
    time_limit: float  # seconds for the whole run, setup included
    saturation_requests: int  # per server, split over the rounds
    saturation_rounds: int
    paced_seconds: float  # per server and round
    paced_rounds: int
    paced_cap: int  # at most this many requests per server and round
    guard_sample: int
    token_count: int


FULL = Mode("full", 300.0, 3000, 3, 8.0, 3, 4000, 400, 2000)
QUICK = Mode("quick", 60.0, 500, 2, 2.0, 2, 1000, 100, 2000)


@dataclass(frozen=True)
class CallbackRequest:
    kind: str  # allow, wrong-path, publish, no-credentials
    body: bytes
    expected: int  # the status the sidecar must answer


@dataclass
class Load:
    """What one server answered in one phase."""

    requests: int = 0
    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    unexpected: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, from the scheduled send time (paced phase)
    server_cpu: float = 0.0  # CPU seconds the server process used meanwhile
    client_cpu: float = 0.0  # CPU seconds this process (the load generator) used meanwhile

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def server_cpu_ms(self) -> float:
        """Server CPU per callback: steadier than requests/s on a busy machine."""
        return self.server_cpu * 1000 / self.requests if self.requests else math.nan

    @property
    def client_share(self) -> float:
        """How busy the load generator was, in cores (near 1.0 would make it the bottleneck)."""
        return self.client_cpu / self.seconds if self.seconds > 0 else math.nan

    def add(self, other: Load) -> None:
        self.requests += other.requests
        self.seconds += other.seconds
        self.statuses.update(other.statuses)
        self.unexpected += other.unexpected
        self.latencies.extend(other.latencies)
        self.server_cpu += other.server_cpu
        self.client_cpu += other.client_cpu


@dataclass(frozen=True)
class Server:
    name: str
    port: int
    pid: int


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux /proc); NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return math.nan


class Budget:
    """The run's hard time limit: every loop asks it before starting more work."""

    def __init__(self, seconds: float) -> None:
        self.started = time.monotonic()
        self.deadline = self.started + seconds
        self.cut_short: list[str] = []

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline


# -- setup ------------------------------------------------------------------------------------------------------
def group_names() -> list[str]:
    return [f"vid_g{index:02d}" for index in range(GROUP_COUNT)]


def rule_set(rng: random.Random) -> dict[str, list[str]]:
    """1,000 rules: one `site{i}/*` per site, `site{i}/**` on every tenth site, the rest exact camera paths."""
    groups = group_names()
    rules: dict[str, list[str]] = {}
    for site in range(SITE_COUNT):
        owner = groups[site % GROUP_COUNT]
        rules[f"site{site}/*"] = [owner]
        if site % 10 == 0:
            rules[f"site{site}/**"] = sorted({owner, groups[(site * 7 + 3) % GROUP_COUNT]})
    for camera in itertools.count():
        for site in range(SITE_COUNT):
            if len(rules) >= RULE_COUNT:
                return rules
            owner = groups[site % GROUP_COUNT]
            extra = rng.sample(groups, rng.randint(0, 2))
            # Some cameras narrow the site's audience (owner left out), most widen it.
            chosen = extra if extra and rng.random() < 0.3 else [owner, *extra]
            rules[f"site{site}/cam{camera}"] = sorted(set(chosen))
    raise AssertionError("unreachable")


def callback_body(
    rng: random.Random, *, token: str, action: str, path: str, protocol: str, with_id: bool = True
) -> bytes:
    """MediaMTX's body, field for field, with the token where MediaMTX puts it for each protocol."""
    fields: dict[str, Any] = {
        "ip": f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
        "user": "",
        "password": "",
        "token": "",
        "action": action,
        "path": path,
        "protocol": protocol,
        "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)) if with_id else None,
        "query": "",
        "userAgent": USER_AGENTS[protocol],
    }
    if token:
        if protocol in ("rtsp", "rtmp"):  # MediaMTX copies the query's token into `token`
            fields["token"] = token
            fields["query"] = f"token={token}"
        elif protocol == "hls":  # HTTP mode: only the raw query carries it
            fields["query"] = f"token={token}"
        elif protocol == "srt":  # the streamid's password, moved into `token`
            fields["password"] = token
            fields["token"] = token
        else:  # webrtc (WHEP bearer) and playback
            fields["token"] = token
    if action == "playback":
        fields["query"] = f"path={path}&start=2026-01-01T00:00:00Z&duration=60"
    return json.dumps(fields, separators=(",", ":")).encode()


async def populate(services: Services, seed: int, progress: Callable[[str], None]) -> list[CallbackRequest]:
    """Groups, rules and 10,000 principals with tokens; the callback requests with the status each must get."""
    rng = random.Random(seed)
    groups = group_names()
    for name in groups:
        await services.users.create_group(name, ACTOR)
    rules = rule_set(rng)
    for pattern, rule_groups in rules.items():
        await services.rules.set(pattern, rule_groups, ACTOR)
    progress(f"{len(rules)} rules over {len(groups)} groups")
    by_group: dict[str, list[str]] = {name: [] for name in groups}
    for pattern, rule_groups in rules.items():
        for name in rule_groups:
            by_group[name].append(pattern)
    matcher = services.rules.matcher()

    allowed: list[CallbackRequest] = []
    granted: list[tuple[str, str]] = []  # (token, path) per principal
    for index in range(PRINCIPAL_COUNT):
        username = f"user{index:05d}"
        user_groups = rng.sample(groups, rng.randint(1, 3))
        principal = services.roles.principal(username, user_groups, source=ACTOR)
        candidates = [pattern for name in user_groups for pattern in by_group[name]]
        path = ""
        for _ in range(50):
            pattern = rng.choice(candidates)
            site = pattern.split("/", 1)[0]
            if pattern.endswith("/**"):
                candidate = f"{site}/rec/{rng.randint(0, 99)}"
            elif pattern.endswith("/*"):
                candidate = f"{site}/live{rng.randint(0, 99)}"
            else:
                candidate = pattern
            if decide(matcher, principal, candidate, "read").allowed:
                path = candidate
                break
        if not path:
            raise RuntimeError(f"no readable path found for {username} in {user_groups}")
        permissions = playback_permissions(principal, path)
        token = services.tokens.issue(username, permissions, user_groups, ttl=TOKEN_TTL).token
        granted.append((token, path))
        if rng.random() < 0.1:
            body = callback_body(rng, token=token, action="playback", path=path, protocol="", with_id=False)
        else:
            body = callback_body(rng, token=token, action="read", path=path, protocol=rng.choice(PROTOCOLS))
        allowed.append(CallbackRequest("allow", body, 200))
    progress(f"{len(granted)} principals with playback tokens")

    denied: list[CallbackRequest] = []
    for _ in range(1000):  # a valid token, another path than the one it grants
        token, path = rng.choice(granted)
        other = path
        while other == path:
            other = f"site{rng.randrange(SITE_COUNT)}/cam{rng.randint(0, 8)}"
        body = callback_body(rng, token=token, action="read", path=other, protocol=rng.choice(PROTOCOLS))
        denied.append(CallbackRequest("wrong-path", body, 401))
    for _ in range(800):  # a viewer's token asking to publish its own path
        token, path = rng.choice(granted)
        protocol = rng.choice(("rtsp", "rtmp", "srt"))
        body = callback_body(rng, token=token, action="publish", path=path, protocol=protocol)
        denied.append(CallbackRequest("publish", body, 401))
    for _ in range(700):  # a player that sent nothing yet (MediaMTX then prompts for credentials)
        path = f"site{rng.randrange(SITE_COUNT)}/cam{rng.randint(0, 8)}"
        body = callback_body(rng, token="", action="read", path=path, protocol=rng.choice(PROTOCOLS))
        denied.append(CallbackRequest("no-credentials", body, 401))
    requests = allowed + denied
    rng.shuffle(requests)
    return requests


# -- HTTP client: one new TCP connection per callback, as MediaMTX does ----------------------------------------------
def wire_requests(port: int, bodies: Sequence[bytes]) -> list[bytes]:
    head = (
        "POST /mediamtx/auth HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "User-Agent: Go-http-client/1.1\r\n"
        "Content-Length: {length}\r\n"
        "Content-Type: application/json\r\n"
        "Connection: close\r\n"
        "Accept-Encoding: gzip\r\n\r\n"
    )
    return [head.format(length=len(body)).encode() + body for body in bodies]


def exchange(port: int, request: bytes) -> int:
    """Connect, send, read until the server closes; the HTTP status, or 0 when the exchange failed."""
    received = bytearray()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT) as sock:
            sock.sendall(request)
            while chunk := sock.recv(65536):
                received += chunk
    except OSError:
        return 0
    try:
        return int(received[9:12])
    except ValueError:
        return 0


def run_threads(server: Server, count: int, work: Callable[[Load], None], started: float | None = None) -> Load:
    """Run `work` on `count` threads; their loads summed, with wall time and the CPU both sides used."""
    loads = [Load() for _ in range(count)]
    threads = [threading.Thread(target=work, args=(load,), daemon=True) for load in loads]
    server_before, client_before = cpu_seconds(server.pid), time.process_time()
    started = time.perf_counter() if started is None else started
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = Load(
        seconds=time.perf_counter() - started,
        server_cpu=cpu_seconds(server.pid) - server_before,
        client_cpu=time.process_time() - client_before,
    )
    for load in loads:
        total.add(load)
    return total


def saturate(server: Server, wire: Sequence[bytes], expected: Sequence[int], concurrency: int, budget: Budget) -> Load:
    """Closed loop: `concurrency` clients, each sending its next callback as soon as the last one is answered."""
    counter = itertools.count()

    def work(load: Load) -> None:
        while not budget.expired():
            index = next(counter)
            if index >= len(wire):
                return
            status = exchange(server.port, wire[index])
            load.requests += 1
            load.statuses[status] += 1
            load.unexpected += status != expected[index]

    total = run_threads(server, concurrency, work)
    if total.requests < len(wire):
        budget.cut_short.append(f"saturation of {server.name}")
    return total


def paced(server: Server, wire: Sequence[bytes], expected: Sequence[int], rate: float, budget: Budget) -> Load:
    """Open loop: callback i is due at start + i/rate whatever happened before; latency counts from when it was due."""
    counter = itertools.count()
    start = time.perf_counter() + 0.05

    def work(load: Load) -> None:
        while True:
            index = next(counter)
            if index >= len(wire) or budget.expired():
                return
            due = start + index / rate
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            status = exchange(server.port, wire[index])
            load.latencies.append(time.perf_counter() - due)
            load.requests += 1
            load.statuses[status] += 1
            load.unexpected += status != expected[index]

    total = run_threads(server, PACING_WORKERS, work, started=start)
    if total.requests < len(wire):
        budget.cut_short.append(f"paced load of {server.name}")
    return total


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


# -- the servers ----------------------------------------------------------------------------------------------------
def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SIDECAR_")}
    env.pop("WEB_CONCURRENCY", None)  # uvicorn's worker count: one worker for both servers
    env.update(extra)
    return env


def start_sidecar(settings: Settings, port: int, workdir: Path) -> LoggedProcess:
    env = child_env(
        {
            "SIDECAR_DATA_DIR": str(settings.data_dir),
            "SIDECAR_API_KEY": settings.api_key.get_secret_value() if settings.api_key else "",
            "SIDECAR_HOST": "127.0.0.1",
            "SIDECAR_PORT": str(port),
            "SIDECAR_LOG_LEVEL": "WARNING",
        }
    )
    argv = [sys.executable, "-m", "sidecar", "serve"]
    return start_process(argv, env, ready_url=f"http://127.0.0.1:{port}/healthz", cwd=workdir)


def start_bare(port: int, workdir: Path) -> LoggedProcess:
    # The same server settings as `sidecar serve`: one worker, no access log, proxy headers off, no server header.
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "bare_app:app",
        "--app-dir",
        str(BENCH_DIR),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--no-access-log",
        "--no-proxy-headers",
        "--no-server-header",
        "--log-level",
        "warning",
    ]
    return start_process(argv, child_env({}), ready_url=f"http://127.0.0.1:{port}/mediamtx/auth", cwd=workdir)


class Children:
    """Started servers, stopped on any exit: normal end, exception, Ctrl-C, SIGTERM, or the watchdog."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: list[LoggedProcess] = []

    def add(self, proc: LoggedProcess) -> LoggedProcess:
        with self._lock:
            self._procs.append(proc)
        return proc

    def stop_all(self) -> None:
        with self._lock:
            procs, self._procs = self._procs, []
        for proc in reversed(procs):
            with contextlib.suppress(Exception):
                stop_process(proc)


@contextlib.contextmanager
def hard_stop(children: Children, seconds: float) -> Iterator[None]:
    """Stop the servers and leave if the run overshoots its limit by `seconds` (a hung socket, a stuck join)."""

    def fire() -> None:
        print(f"benchmark exceeded its time limit by {seconds:.0f}s: stopping", file=sys.stderr, flush=True)
        children.stop_all()
        os._exit(3)

    def on_signal(number: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + number)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        children.stop_all()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# -- in-process token rates -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenRates:
    count: int
    issued: float
    verified: float  # through TokenIssuer.verify: recognised in the issued-token register
    signature_checked: float  # the full ES256 check that a token the register does not know gets
    json_dumps: float


async def token_rates(services: Services, count: int) -> TokenRates:
    settings = services.settings
    now = int(time.time())
    grants = [
        (
            f"rate{index:05d}",
            [{"action": "read", "path": f"site{index % SITE_COUNT}/cam{index % 9}"}],
            [f"vid_g{index % GROUP_COUNT:02d}"],
        )
        for index in range(count)
    ]
    claims = [
        {
            "iss": settings.jwt_issuer,
            "aud": settings.jwt_audience,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + TOKEN_TTL,
            "groups": groups,
            settings.jwt_claim_key: permissions,
        }
        for subject, permissions, groups in grants
    ]
    started = time.perf_counter()
    for claim in claims:
        json.dumps(claim)
    dumps_seconds = time.perf_counter() - started
    started = time.perf_counter()
    tokens = [services.tokens.issue(subject, permissions, groups).token for subject, permissions, groups in grants]
    issue_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for token in tokens:
        services.tokens.verify(token)
    verify_seconds = time.perf_counter() - started
    keys = KeySet([ECKey.import_key(json.loads(row["private_jwk"])) for row in services.store.signing_keys()])
    started = time.perf_counter()
    for token in tokens:
        jwt.decode(token, keys, algorithms=["ES256"])
    signature_seconds = time.perf_counter() - started
    return TokenRates(
        count, count / issue_seconds, count / verify_seconds, count / signature_seconds, count / dumps_seconds
    )


# -- the run --------------------------------------------------------------------------------------------------------
def bench_settings(data_dir: Path) -> Settings:
    values: dict[str, object] = {
        "data_dir": data_dir,
        "api_key": secrets.token_urlsafe(24),
        "bootstrap_password": secrets.token_urlsafe(18),
    }
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def progress(line: str) -> None:
    print(f"  .. {line}", file=sys.stderr, flush=True)


def guard(port: int, requests: Sequence[CallbackRequest], sample: int, rng: random.Random) -> list[str]:
    """Before any timing: the sidecar must allow the allowed and deny the denied, on a sample of every kind."""
    by_kind: dict[str, list[CallbackRequest]] = {}
    for request in requests:
        by_kind.setdefault(request.kind, []).append(request)
    per_kind = max(1, sample // len(by_kind))
    problems = []
    for kind, members in sorted(by_kind.items()):
        chosen = rng.sample(members, min(per_kind, len(members)))
        wire = wire_requests(port, [request.body for request in chosen])
        for request, raw in zip(chosen, wire, strict=True):
            status = exchange(port, raw)
            if status != request.expected:
                problems.append(f"{kind}: expected {request.expected}, got {status}: {request.body[:160]!r}")
    return problems


def run(mode: Mode, concurrency: int, seed: int) -> int:
    budget = Budget(mode.time_limit)
    rng = random.Random(seed + 1)
    children = Children()
    load_average = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    print(f"MediaMTX auth callback benchmark ({mode.name}): {os.cpu_count()} CPUs, load {load_average:.2f} at start")
    with tempfile.TemporaryDirectory(prefix="sidecar-bench-") as tmp, hard_stop(children, mode.time_limit + 20):
        workdir = Path(tmp)
        settings = bench_settings(workdir / "data")
        started = time.perf_counter()
        bootstrap(settings, out=lambda _: None)
        requests = run_with_services(settings, lambda services: populate(services, seed, progress))
        kinds = Counter(request.kind for request in requests)
        print(
            f"setup: {RULE_COUNT} rules, {GROUP_COUNT} groups, {PRINCIPAL_COUNT} tokens; {len(requests)} callbacks "
            f"({', '.join(f'{count} {kind}' for kind, count in sorted(kinds.items()))}) "
            f"in {time.perf_counter() - started:.1f}s"
        )

        sidecar_port, bare_port = free_port(), free_port()
        sidecar_proc = children.add(start_sidecar(settings, sidecar_port, workdir))
        bare_proc = children.add(start_bare(bare_port, workdir))
        progress(f"sidecar on 127.0.0.1:{sidecar_port}, bare app on 127.0.0.1:{bare_port}")

        problems = guard(sidecar_port, requests, mode.guard_sample, rng)
        if problems:
            print(f"correctness guard FAILED ({len(problems)} wrong answers); not measuring a broken server:")
            for line in problems[:10]:
                print(f"  {line}")
            return 1
        bare_problems = guard(bare_port, [CallbackRequest("bare", requests[0].body, 200)], 1, rng)
        if bare_problems:
            print(f"bare app does not answer 200: {bare_problems[0]}")
            return 1
        print(f"correctness guard: sidecar answered every sampled callback as expected ({mode.guard_sample} sampled)")

        servers = {
            "sidecar": Server("sidecar", sidecar_port, sidecar_proc.pid),
            "bare": Server("bare", bare_port, bare_proc.pid),
        }
        bodies = [request.body for request in requests]
        wires = {name: wire_requests(server.port, bodies) for name, server in servers.items()}
        expected = {"sidecar": [request.expected for request in requests], "bare": [200] * len(requests)}

        def window(name: str, offset: int, length: int) -> tuple[list[bytes], list[int]]:
            """`length` callbacks from `offset` on, wrapping around the shuffled list."""
            indices = [(offset + step) % len(requests) for step in range(length)]
            return [wires[name][index] for index in indices], [expected[name][index] for index in indices]

        # Phase A: saturation, alternating the servers round by round.
        saturation = {name: Load() for name in servers}
        rounds: dict[str, list[float]] = {name: [] for name in servers}
        per_round = mode.saturation_requests // mode.saturation_rounds
        order = list(servers)
        for number in range(mode.saturation_rounds):
            if budget.left() < 10:
                budget.cut_short.append("saturation rounds")
                break
            for name in order:
                wire, wanted = window(name, number * per_round, per_round)
                load = saturate(servers[name], wire, wanted, concurrency, budget)
                saturation[name].add(load)
                rounds[name].append(load.rate)
                progress(
                    f"saturation round {number + 1} {name}: {load.rate:.0f} req/s, "
                    f"server {load.server_cpu_ms:.2f} ms CPU per callback, client {load.client_share:.2f} cores"
                )
            order.reverse()  # A B, B A, A B: neither server always goes first

        # Phase B: latency at half the sidecar's saturated rate, open loop, alternating again.
        rate = saturation["sidecar"].rate / 2
        latency = {name: Load() for name in servers}
        if rate > 0:
            count = max(1, min(mode.paced_cap, int(rate * mode.paced_seconds)))
            order = list(servers)
            for number in range(mode.paced_rounds):
                if budget.left() < len(servers) * count / rate + 5:  # a round is for both servers or neither
                    budget.cut_short.append("paced rounds")
                    break
                for name in order:
                    wire, wanted = window(name, mode.saturation_requests + number * count, count)
                    load = paced(servers[name], wire, wanted, rate, budget)
                    latency[name].add(load)
                    progress(f"paced round {number + 1} {name}: p99 {percentile(load.latencies, 0.99) * 1000:.2f} ms")
                order.reverse()

        children.stop_all()
        progress(f"in-process token rates ({mode.token_count} tokens)")
        tokens = run_with_services(settings, lambda services: token_rates(services, mode.token_count))
    report(mode, concurrency, saturation, rounds, latency, rate, tokens, budget)
    return 0


def report(
    mode: Mode,
    concurrency: int,
    saturation: dict[str, Load],
    rounds: dict[str, list[float]],
    latency: dict[str, Load],
    rate: float,
    tokens: TokenRates,
    budget: Budget,
) -> None:
    def row(label: str, sidecar: object, bare: object, ratio: object = "") -> None:
        print(f"{label:52}{sidecar!s:>10}{bare!s:>10}{ratio!s:>14}")

    def number(value: float, digits: int = 2) -> str:
        return "-" if math.isnan(value) else f"{value:.{digits}f}"

    def quotient(top: float, bottom: float) -> str:
        return number(top / bottom) if bottom and not math.isnan(top) and not math.isnan(bottom) else "-"

    side, bare = saturation["sidecar"], saturation["bare"]
    ratio = side.rate / bare.rate if bare.rate else math.nan
    p50 = {name: percentile(load.latencies, 0.50) * 1000 for name, load in latency.items()}
    p99 = {name: percentile(load.latencies, 0.99) * 1000 for name, load in latency.items()}
    print()
    row("", "sidecar", "bare", "sidecar/bare")
    row(f"requests/s, {concurrency} concurrent", number(side.rate, 0), number(bare.rate, 0), number(ratio))
    for index in range(max(len(values) for values in rounds.values())):
        side_round, bare_round = (rounds[n][index] if index < len(rounds[n]) else math.nan for n in ("sidecar", "bare"))
        row(f"  round {index + 1}", number(side_round, 0), number(bare_round, 0), quotient(side_round, bare_round))
    row("  requests", side.requests, bare.requests)
    row(
        "  server CPU ms per callback",
        number(side.server_cpu_ms),
        number(bare.server_cpu_ms),
        quotient(side.server_cpu_ms, bare.server_cpu_ms),
    )
    row("  load generator, cores busy", number(side.client_share), number(bare.client_share))
    row(f"latency at {rate:.0f} req/s (half the sidecar's)", "", "")
    row("  p50 ms", number(p50["sidecar"]), number(p50["bare"]), quotient(p50["sidecar"], p50["bare"]))
    row("  p99 ms", number(p99["sidecar"]), number(p99["bare"]), quotient(p99["sidecar"], p99["bare"]))
    row("  requests", latency["sidecar"].requests, latency["bare"].requests)
    unexpected = {name: saturation[name].unexpected + latency[name].unexpected for name in saturation}
    failed = {name: saturation[name].statuses[0] + latency[name].statuses[0] for name in saturation}
    row("unexpected answers (no answer at all)", *(f"{unexpected[n]} ({failed[n]})" for n in ("sidecar", "bare")))
    print()
    row(f"in process, {tokens.count} tokens", "per s", "", "vs json.dumps")
    row("  json.dumps of the claims", number(tokens.json_dumps, 0), "")
    for label, rate in (
        ("  ES256 tokens issued", tokens.issued),
        ("  tokens verified (register: issued here)", tokens.verified),
        ("  ES256 signature checks (tokens not issued here)", tokens.signature_checked),
    ):
        row(label, number(rate, 0), "", number(rate / tokens.json_dumps, 4))
    print()
    print("targets")
    ratio_met = ratio >= TARGET_RATIO
    p99_met = p99["sidecar"] <= TARGET_P99_MS
    print(f"  requests/s sidecar/bare >= {TARGET_RATIO:.2f}: {number(ratio)}  {'met' if ratio_met else 'NOT met'}")
    print(
        f"  sidecar p99 <= {TARGET_P99_MS:.0f} ms at half saturation: {number(p99['sidecar'])} ms  "
        f"{'met' if p99_met else 'NOT met'}"
    )
    if unexpected["sidecar"] or unexpected["bare"]:
        print("  WARNING: some answers under load were not the expected status (see above)")
    if budget.cut_short:
        print(f"  cut short by the {mode.time_limit:.0f}s limit: {', '.join(dict.fromkeys(budget.cut_short))}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer requests, about a minute at most")
    parser.add_argument("--concurrency", type=int, default=16, help="clients in the saturation phase (default 16)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated rules, users and requests")
    args = parser.parse_args(argv)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # keep the table and the progress lines in order
    if not 1 <= args.concurrency <= 256:
        parser.error("--concurrency must be 1 to 256")
    return run(QUICK if args.quick else FULL, args.concurrency, args.seed)


if __name__ == "__main__":
    raise SystemExit(main())
