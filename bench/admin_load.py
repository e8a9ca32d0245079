"""/healthz and MediaMTX-callback latency while 200 admins write at once, against the same measured idle.

Run from the repository root (see bench/README.md for what it prints):

    .venv/bin/python bench/admin_load.py            # full run, at most about 3 minutes
    .venv/bin/python bench/admin_load.py --quick    # at most about a minute

Target: under load, the p99 of `GET /healthz` and of `POST /mediamtx/auth` each stays within 2x of its own idle p99
measured in the same run. The exit code is 0 when the run completed, whatever the figures (it is a report), and 1
when it could not measure: the server did not start, or an answer (before or during timing) had the wrong status.

The probes run in this process, open loop, each request over a new TCP connection with `Connection: close`: that is
how MediaMTX calls back, and how a health checker (Docker, a load balancer) usually asks. The admin writes come from
a spawned process (its own GIL), niced, as admins' browsers would be on other machines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import io
import math
import multiprocessing
import os
import queue
import random
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from multiprocessing.context import SpawnContext, SpawnProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any, NamedTuple

import httpx

from sidecar.bootstrap import bootstrap
from sidecar.media_auth import playback_permissions
from sidecar.processes import free_port
from sidecar.runtime import Services, run_with_services

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package
from callback import (  # noqa: E402
    PROTOCOLS,
    Budget,
    Children,
    Load,
    Server,
    bench_settings,
    callback_body,
    cpu_seconds,
    exchange,
    hard_stop,
    paced,
    percentile,
    progress,
    start_sidecar,
    wire_requests,
)

ACTOR = "bench"
GROUP_COUNT = 20
RULE_COUNT = 100  # one `view/gNN/*` per group, the rest exact camera paths
TARGET_COUNT = 300  # the people the writers change
VIEWER_COUNT = 50  # the people whose playback tokens the callback probes carry
WRITERS = 200
TOKEN_TTL = 3600
PROBE_RATE = 50.0  # per second, for each of the two probes
WRITE_TIMEOUT = 30.0
ONE_CONNECTION = httpx.Limits(max_connections=1, max_keepalive_connections=1)
TARGET_RATIO = 2.0
Message = tuple[str, Any]  # ("started", None), ("done", results) or ("failed", why), from the load process


@dataclass(frozen=True)
class Mode:
    name: str
    time_limit: float  # seconds for the whole run, setup included
    idle_seconds: float  # probing per idle phase
    load_seconds: float  # probing per load phase
    lead_seconds: float  # the writers run this long before probing starts
    phases: tuple[str, ...]
    writers: int = WRITERS  # admin writers at once


FULL = Mode("full", 180.0, 12.0, 15.0, 2.0, ("idle", "load", "load", "idle"))
QUICK = Mode("quick", 60.0, 6.0, 8.0, 2.0, ("idle", "load"))


class Write(NamedTuple):
    kind: str
    method: str
    url: str
    body: dict[str, object] | None = None
    params: dict[str, str] | None = None


@dataclass
class Phase:
    kind: str  # idle or load
    healthz: Load
    callback: Load
    seconds: float
    server_cpu: float
    probe_cpu: float = 0.0  # CPU seconds this process (the probes) used
    machine_cpu: float = math.nan  # CPU seconds the whole machine used, every process
    writes: dict[str, Any] | None = None  # what the load process reported


@dataclass
class Writes:
    """The admin writes of every load phase, summed."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    cpu: float = 0.0

    def add(self, result: dict[str, Any]) -> None:
        for kind, values in result["latencies"].items():
            self.latencies.setdefault(kind, []).extend(values)
        for kind, counts in result["statuses"].items():
            self.statuses.setdefault(kind, Counter()).update(counts)
        self.errors.update(result["errors"])
        self.seconds += result["seconds"]
        self.cpu += result["cpu"]

    def count(self, kind: str | None = None) -> int:
        return sum(sum(counts.values()) for name, counts in self.statuses.items() if kind in (None, name))

    def failed(self, kind: str | None = None) -> int:
        return sum(
            n
            for name, counts in self.statuses.items()
            if kind in (None, name)
            for s, n in counts.items()
            if s // 100 != 2
        )


class RunFailed(Exception):
    pass


# -- setup ------------------------------------------------------------------------------------------------------
def group(index: int) -> str:
    return f"vid_g{index % GROUP_COUNT:02d}"


def target(index: int) -> str:
    return f"target{index:03d}"


async def populate(services: Services) -> list[tuple[str, str]]:
    """Groups, rules, the writers' targets (each in one home group) and viewers with tokens: (token, path) each."""
    for index in range(GROUP_COUNT):
        await services.users.create_group(group(index), ACTOR)
        await services.rules.set(f"view/g{index:02d}/*", [group(index)], ACTOR)
    for index in range(RULE_COUNT - GROUP_COUNT):
        await services.rules.set(
            f"site{index // 4}/cam{index % 4}", sorted({group(index), group(3 * index + 1)}), ACTOR
        )
    for index in range(TARGET_COUNT):
        await services.users.add_user(target(index), [group(index)], None, ACTOR)
    granted = []
    for index in range(VIEWER_COUNT):
        name, groups, path = f"viewer{index:02d}", [group(index)], f"view/g{index % GROUP_COUNT:02d}/live{index}"
        await services.users.add_user(name, groups, None, ACTOR)
        principal = services.roles.principal(name, groups, source=ACTOR)
        permissions = playback_permissions(principal, path)
        granted.append((services.tokens.issue(name, permissions, groups, ttl=TOKEN_TTL).token, path))
    return granted


def writes(writer: int, writers: int) -> Iterator[Write]:
    """Writer `writer`'s endless cycle over its own people and its own rule; every step answers 2xx from any state
    an interrupted cycle leaves (the rule is always set before it is deleted)."""
    pattern = f"load/w{writer:03d}/*"
    while True:
        for index in range(writer, TARGET_COUNT, writers):
            membership = f"/api/v1/users/{target(index)}/groups/{group(index + 7)}"  # never the home group
            yield Write("membership add", "PUT", membership)
            yield Write("rule set", "PUT", "/api/v1/rules", {"pattern": pattern, "groups": [group(writer)]})
            yield Write("deactivate", "PATCH", f"/api/v1/users/{target(index)}", {"is_active": False})
            yield Write("membership remove", "DELETE", membership)
            yield Write("rule delete", "DELETE", "/api/v1/rules", params={"pattern": pattern})
            yield Write("activate", "PATCH", f"/api/v1/users/{target(index)}", {"is_active": True})


# -- the load process: 200 writers on one event loop, away from the probes' GIL ----------------------------------------
def load_process(port: int, api_key: str, writers: int, stop: Event, out: Queue[Message], max_seconds: float) -> None:
    # The writers stand in for admins' browsers on other machines: on a shared machine they yield the CPU to the
    # server and the probes (the server's backlog stays full anyway, as every writer always has a write waiting).
    os.nice(10)
    try:
        result = asyncio.run(write_load(port, api_key, writers, stop, out, max_seconds))
    except BaseException as error:
        out.put(("failed", f"{type(error).__name__}: {error}"))
        raise
    out.put(("done", result))


async def write_load(
    port: int, api_key: str, writers: int, stop: Event, out: Queue[Message], max_seconds: float
) -> dict[str, Any]:
    latencies: dict[str, list[float]] = {}
    statuses: dict[str, Counter[int]] = {}
    errors: Counter[str] = Counter()
    running = True
    parent, deadline = os.getppid(), time.monotonic() + max_seconds
    headers = {"X-API-Key": api_key}
    # One client (one keep-alive connection) per writer: 200 connections in one httpx pool cost the load generator
    # several ms of CPU per request (the pool scans its connections), which made it, not the server, the limit.
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}", headers=headers, limits=ONE_CONNECTION, timeout=WRITE_TIMEOUT
                )
            )
            for _ in range(writers)
        ]

        async def writer(index: int) -> None:
            client = clients[index]
            for write in writes(index, writers):
                if not running:
                    return
                started = time.perf_counter()
                try:
                    response = await client.request(write.method, write.url, json=write.body, params=write.params)
                    status = response.status_code
                except httpx.HTTPError as error:
                    status = 0
                    errors[type(error).__name__] += 1
                latencies.setdefault(write.kind, []).append(time.perf_counter() - started)
                statuses.setdefault(write.kind, Counter())[status] += 1

        out.put(("started", None))
        cpu, started = time.process_time(), time.perf_counter()
        tasks = [asyncio.create_task(writer(index)) for index in range(writers)]
        while not stop.is_set() and time.monotonic() < deadline and os.getppid() == parent:
            await asyncio.sleep(0.05)
        running = False  # each writer finishes the write it is in
        await asyncio.wait(tasks, timeout=WRITE_TIMEOUT + 5)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    statuses_out = {kind: dict(counts) for kind, counts in statuses.items()}
    return {"latencies": latencies, "statuses": statuses_out, "errors": dict(errors), "seconds": seconds, "cpu": cpu}


def receive(out: Queue[Message], proc: SpawnProcess, timeout: float) -> Message:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return out.get(timeout=0.5)
        except queue.Empty:
            if not proc.is_alive():
                break
    raise RunFailed(f"the load process sent nothing (exit code {proc.exitcode})")


# -- the phases -----------------------------------------------------------------------------------------------------
def probe(server: Server, healthz: bytes, callbacks: Sequence[bytes], budget: Budget, seconds: float) -> Phase:
    """Both probes at once, each open loop at PROBE_RATE, with the server's CPU meanwhile."""
    count = int(PROBE_RATE * seconds)
    cpu, own, machine, started = cpu_seconds(server.pid), time.process_time(), machine_cpu(), time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        health = pool.submit(paced, server, [healthz] * count, [200] * count, PROBE_RATE, budget)
        auth = pool.submit(paced, server, callbacks[:count], [200] * count, PROBE_RATE, budget)
        result = Phase("", health.result(), auth.result(), 0.0, 0.0)
    result.seconds, result.server_cpu = time.perf_counter() - started, cpu_seconds(server.pid) - cpu
    result.probe_cpu, result.machine_cpu = time.process_time() - own, machine_cpu() - machine
    return result


def machine_cpu() -> float:
    """CPU seconds every process on the machine used so far, all cores (Linux /proc/stat); NaN elsewhere."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        user, nice, system, idle, iowait, irq, softirq, steal = (int(value) for value in fields[:8])
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return math.nan


def load_phase(
    ctx: SpawnContext, server: Server, api_key: str, mode: Mode, run_probes: Callable[[float], Phase]
) -> Phase:
    stop, out = ctx.Event(), ctx.Queue()
    max_seconds = mode.lead_seconds + mode.load_seconds + 30  # in case this process dies without telling it
    args = (server.port, api_key, mode.writers, stop, out, max_seconds)
    proc = ctx.Process(target=load_process, args=args, name="admin-writers", daemon=True)
    proc.start()
    try:
        kind, payload = receive(out, proc, 60)
        if kind != "started":
            raise RunFailed(f"the load process failed to start: {payload}")
        time.sleep(mode.lead_seconds)
        result = run_probes(mode.load_seconds)
        stop.set()
        kind, payload = receive(out, proc, WRITE_TIMEOUT + 30)
        if kind != "done":
            raise RunFailed(f"the load process failed: {payload}")
        result.writes = payload
        return result
    finally:
        stop.set()
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)


def settle(pid: int, cap: float = 10.0) -> float:
    """Wait until the server is quiet (re-checks and session writes of the last phase done), at most `cap` s."""
    started = time.perf_counter()
    while time.perf_counter() - started < cap:
        before = cpu_seconds(pid)
        time.sleep(0.5)
        used = cpu_seconds(pid) - before
        if math.isnan(used) or used < 0.05:
            break
    return time.perf_counter() - started


def guard(server: Server, healthz: bytes, callbacks: Sequence[bytes], api_key: str) -> list[str]:
    """Before timing: /healthz and a sample of callbacks answer 200, and one writer cycle is all 2xx."""
    problems = []
    if (status := exchange(server.port, healthz)) != 200:
        problems.append(f"/healthz: expected 200, got {status}")
    for raw in callbacks:
        if (status := exchange(server.port, raw)) != 200:
            problems.append(f"callback: expected 200, got {status}: {raw[-300:]!r}")
    cycle = writes(0, WRITERS)
    with httpx.Client(
        base_url=f"http://127.0.0.1:{server.port}", headers={"X-API-Key": api_key}, timeout=WRITE_TIMEOUT
    ) as client:
        for write in (next(cycle) for _ in range(6)):
            response = client.request(write.method, write.url, json=write.body, params=write.params)
            if response.status_code // 100 != 2:
                problems.append(f"{write.kind}: {write.method} {write.url} got {response.status_code}: {response.text}")
    return problems


def remembered_sessions(database: Path) -> int | None:
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as db:
            return int(db.execute("SELECT count(*) FROM media_sessions").fetchone()[0])
    except sqlite3.Error:
        return None


# -- the run --------------------------------------------------------------------------------------------------------
def run(mode: Mode, seed: int) -> int:
    budget = Budget(mode.time_limit)
    rng = random.Random(seed)
    children = Children()
    load_average = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    print(
        f"/healthz and callback latency under {mode.writers} concurrent admin writers ({mode.name}): "
        f"{os.cpu_count()} CPUs, load {load_average:.2f} at start; no MediaMTX API configured, so kicks and "
        "MediaMTX's session list are unreachable (re-checks of remembered sessions still run)"
    )
    with tempfile.TemporaryDirectory(prefix="sidecar-bench-") as tmp, hard_stop(children, mode.time_limit + 20):
        workdir = Path(tmp)
        settings = bench_settings(workdir / "data")
        api_key = settings.api_key.get_secret_value() if settings.api_key else ""
        started = time.perf_counter()
        bootstrap(settings, out=lambda _: None)
        granted = run_with_services(settings, populate)
        print(
            f"setup: {RULE_COUNT} rules, {GROUP_COUNT} groups, {TARGET_COUNT} people to write to, {VIEWER_COUNT} "
            f"viewer tokens in {time.perf_counter() - started:.1f}s; probes {PROBE_RATE:.0f}/s each, open loop, "
            "a new TCP connection per request (as MediaMTX and a health checker connect)"
        )

        port = free_port()
        try:
            proc = children.add(start_sidecar(settings, port, workdir))
        except Exception as error:
            print(f"the sidecar did not start: {error}")
            return 1
        server = Server("sidecar", port, proc.pid)
        progress(f"sidecar on 127.0.0.1:{port}")
        probe_total = sum(mode.idle_seconds if kind == "idle" else mode.load_seconds for kind in mode.phases)
        bodies = [
            callback_body(rng, token=token, action="read", path=path, protocol=rng.choice(PROTOCOLS))
            for token, path in (rng.choice(granted) for _ in range(int(PROBE_RATE * probe_total) + 10))
        ]  # every body a new session id, so the sidecar remembers each session as MediaMTX would make it do
        callbacks = wire_requests(port, bodies)
        healthz = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
        problems = guard(server, healthz, callbacks[-10:], api_key)
        if problems:
            print(f"guard FAILED ({len(problems)} wrong answers); not measuring a broken server:")
            for line in problems[:10]:
                print(f"  {line}")
            return 1

        ctx = multiprocessing.get_context("spawn")
        phases: list[Phase] = []
        used = 0
        try:
            for kind in mode.phases:
                progress(f"settled for {settle(server.pid):.1f}s")
                if budget.left() < 30:
                    budget.cut_short.append(f"{kind} phase {len(phases) + 1}")
                    break
                run_probes = functools.partial(probe, server, healthz, callbacks[used:], budget)
                if kind == "idle":
                    phase = run_probes(mode.idle_seconds)
                else:
                    phase = load_phase(ctx, server, api_key, mode, run_probes)
                phase.kind = kind
                used += phase.callback.requests
                phases.append(phase)
                progress(
                    f"{kind}: healthz p99 {percentile(phase.healthz.latencies, 0.99) * 1000:.1f} ms, callback p99 "
                    f"{percentile(phase.callback.latencies, 0.99) * 1000:.1f} ms, server "
                    f"{phase.server_cpu / phase.seconds:.2f} cores"
                )
        except RunFailed as error:
            print(f"run FAILED: {error}")
            return 1
        sessions = remembered_sessions(settings.database_path)
        children.stop_all()
    return report(mode, phases, sessions, budget)


def report(mode: Mode, phases: Sequence[Phase], sessions: int | None, budget: Budget) -> int:
    def row(label: str, idle: object, load: object, ratio: object = "") -> None:
        print(f"{label:44}{idle!s:>10}{load!s:>10}{ratio!s:>11}")

    def number(value: float, digits: int = 2) -> str:
        return "-" if math.isnan(value) else f"{value:.{digits}f}"

    def quotient(top: float, bottom: float) -> float:
        return top / bottom if bottom and not math.isnan(top) and not math.isnan(bottom) else math.nan

    def ms(values: Sequence[float], fraction: float) -> float:
        return percentile(values, fraction) * 1000

    merged = {kind: {"healthz": Load(), "callback": Load()} for kind in ("idle", "load")}
    cpu = {kind: dict.fromkeys(("server", "probes", "machine", "seconds"), 0.0) for kind in ("idle", "load")}
    admin = Writes()
    for phase in phases:
        merged[phase.kind]["healthz"].add(phase.healthz)
        merged[phase.kind]["callback"].add(phase.callback)
        used = {"server": phase.server_cpu, "probes": phase.probe_cpu, "machine": phase.machine_cpu}
        for name, seconds in {**used, "seconds": phase.seconds}.items():
            cpu[phase.kind][name] += seconds
        if phase.writes is not None:
            admin.add(phase.writes)

    print()
    row("", "idle", "load", "load/idle")
    p99_ratio: dict[str, float] = {}
    for probe_name, label in (("healthz", "GET /healthz"), ("callback", "POST /mediamtx/auth")):
        idle, load = merged["idle"][probe_name], merged["load"][probe_name]
        print(label)
        for name, fraction in (("p50", 0.50), ("p99", 0.99), ("max", 1.0)):
            top, bottom = ms(load.latencies, fraction), ms(idle.latencies, fraction)
            row(f"  {name} ms", number(bottom), number(top), number(quotient(top, bottom)))
            if name == "p99":
                p99_ratio[probe_name] = quotient(top, bottom)
        for index, phase in enumerate(phases):
            value = number(ms(getattr(phase, probe_name).latencies, 0.99))
            row(f"  p99 ms, phase {index + 1} ({phase.kind})", *((value, "") if phase.kind == "idle" else ("", value)))
        row("  requests (unexpected status)", *(f"{m.requests} ({m.unexpected})" for m in (idle, load)))
    cores = {kind: {name: quotient(used, cpu[kind]["seconds"]) for name, used in cpu[kind].items()} for kind in cpu}
    for name, label in (("server", "server"), ("probes", "probes (this process)"), ("machine", "whole machine")):
        row(f"CPU cores busy, {label}", number(cores["idle"][name]), number(cores["load"][name]))
    write_rate = quotient(admin.count(), admin.seconds)
    print(f"admin writes, {mode.writers} writers at once")
    row("  completed", "", admin.count())
    row("  writes/s", "", number(write_rate, 0))
    row("  non-2xx (no answer)", "", f"{admin.failed()} ({sum(admin.errors.values())})")
    row(
        "  server CPU ms per write (cores / writes/s)", "", number(quotient(1000 * cores["load"]["server"], write_rate))
    )
    row("  load generator, cores busy", "", number(quotient(admin.cpu, admin.seconds)))
    row("remembered media sessions at the end", "", "-" if sessions is None else sessions)
    print()
    print(f"{'write kind':24}{'count':>8}{'non-2xx':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for kind, latencies in sorted(admin.latencies.items(), key=lambda item: -percentile(item[1], 0.5)):
        print(
            f"{kind:24}{len(latencies):>8}{admin.failed(kind):>9}{number(ms(latencies, 0.5), 1):>9}"
            f"{number(ms(latencies, 0.99), 1):>9}{number(ms(latencies, 1.0), 1):>9}"
        )
    odd = {f"{kind} {status}": count for kind, counts in admin.statuses.items() for status, count in counts.items()}
    odd = {key: count for key, count in odd.items() if not key.endswith((" 200", " 201", " 204"))}
    if odd or admin.errors:
        print(f"  non-2xx writes: {odd or ''} {dict(admin.errors) or ''}")
    print()
    print("targets")
    for probe_name, label in (("healthz", "/healthz"), ("callback", "callback")):
        ratio = p99_ratio.get(probe_name, math.nan)
        held = "yes" if ratio <= TARGET_RATIO else "no"
        print(f"  {label} p99 under load within {TARGET_RATIO:.0f}x of idle p99: {held} ({number(ratio)}x)")
    busy, machine, count = cores["load"]["server"], cores["load"]["machine"], os.cpu_count() or 1
    saturated = "saturated" if busy >= 0.9 else "not saturated"
    print(f"  server under load: {number(busy)} cores busy on one event loop: {saturated}", end="")
    full = machine >= 0.9 * count
    print(f"; the machine {'was' if full else 'was not'} saturated ({number(machine)} of {count} cores busy)")
    if budget.cut_short:
        print(f"  cut short by the {mode.time_limit:.0f}s limit: {', '.join(dict.fromkeys(budget.cut_short))}")
    unexpected = sum(m[p].unexpected for m in merged.values() for p in ("healthz", "callback"))
    if unexpected or admin.failed():
        print(f"run FAILED: {unexpected} probe answers and {admin.failed()} writes had the wrong status")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="shorter phases, about a minute at most")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated callback bodies")
    parser.add_argument("--writers", type=int, default=WRITERS, help=f"admin writers at once (default {WRITERS})")
    args = parser.parse_args(argv)
    if not 1 <= args.writers <= TARGET_COUNT:
        parser.error(f"--writers must be 1 to {TARGET_COUNT}")
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # keep the table and the progress lines in order
    return run(replace(QUICK if args.quick else FULL, writers=args.writers), args.seed)


if __name__ == "__main__":
    raise SystemExit(main())
