"""How long filtering 1,000 live paths for one viewer takes, as a ratio to building the unfiltered list.

Run: .venv/bin/python bench/filter.py   (prints the ratio and per-call times; target: filtering <= 20 ms)
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from sidecar.bootstrap import bootstrap
from sidecar.mediamtx import PathInfo
from sidecar.runtime import Services, run_with_services
from sidecar.settings import Settings

PATHS = 1_000
RULES = 1_000
REPEATS = 50


def paths() -> list[PathInfo]:
    return [PathInfo(name=f"site{i % 100}/cam{i}", ready=True) for i in range(PATHS)]


def unfiltered(infos: list[PathInfo]) -> list[dict[str, object]]:
    return [{"name": p.name, "ready": p.ready, "readers": len(p.readers)} for p in infos]


async def measure(services: Services) -> None:
    for site in range(50):
        await services.users.create_group(f"vid_g{site}", actor="bench")
    for i in range(RULES):
        pattern = f"site{i % 100}/*" if i < 100 else f"site{i % 100}/cam{i}"
        await services.rules.set(pattern, [f"vid_g{i % 50}"], actor="bench")
    viewer = services.roles.principal("viewer", ["vid_g1", "vid_g7"], source="bench")
    infos = paths()

    def filtered() -> list[dict[str, object]]:
        streams = unfiltered(infos)
        readable = set(services.rules.readable(viewer, [str(s["name"]) for s in streams]))
        return [s for s in streams if s["name"] in readable]

    base, work = [], []
    for _ in range(REPEATS):  # alternate, so machine noise hits both alike
        started = time.perf_counter()
        unfiltered(infos)
        base.append(time.perf_counter() - started)
        started = time.perf_counter()
        kept = filtered()
        work.append(time.perf_counter() - started)
    base_ms, work_ms = statistics.median(base) * 1000, statistics.median(work) * 1000
    print(f"{PATHS} live paths, {RULES} rules, viewer in 2 of 50 groups: {len(kept)} visible")
    print(f"  unfiltered list   median {base_ms:8.3f} ms")
    print(f"  filtered list     median {work_ms:8.3f} ms   ratio {work_ms / base_ms:6.1f}x the unfiltered list")
    print(f"  target: filtering <= 20 ms: {'met' if work_ms <= 20 else 'NOT met'}")


def main() -> None:
    with tempfile.TemporaryDirectory() as data:
        settings = Settings(_env_file=None, data_dir=Path(data), bootstrap_password="bench-password-1")  # type: ignore[call-arg]  # noqa: S106
        bootstrap(settings, out=lambda line: None)
        run_with_services(settings, measure)


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
