"""The lock that orders admin changes across the processes sharing one data dir."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from sidecar.locks import ProcessLock

HOLDER = """
import asyncio, sys, time
from pathlib import Path
from sidecar.locks import ProcessLock
async def main():
    async with ProcessLock(Path(sys.argv[1])).held():
        log = Path(sys.argv[2])
        log.write_text(log.read_text() + "other in\\n")
        print("held", flush=True)
        time.sleep(1.0)
        log.write_text(log.read_text() + "other out\\n")
asyncio.run(main())
"""


def test_another_process_holding_the_lock_keeps_this_one_waiting(tmp_path: Path) -> None:
    lock_file, log = tmp_path / "admin-change.lock", tmp_path / "log"
    log.write_text("")
    other = subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", HOLDER, str(lock_file), str(log)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "held"

        async def mine() -> None:
            async with ProcessLock(lock_file).held():
                log.write_text(log.read_text() + "this in\n")

        asyncio.run(mine())
    finally:
        other.wait(20)
    assert log.read_text().splitlines() == ["other in", "other out", "this in"]


def test_holders_in_one_process_take_turns(tmp_path: Path) -> None:
    lock = ProcessLock(tmp_path / "admin-change.lock")
    order: list[str] = []

    async def holder(name: str) -> None:
        async with lock.held():
            order.append(f"{name} in")
            await asyncio.sleep(0.05)
            order.append(f"{name} out")

    async def both() -> None:
        await asyncio.gather(holder("a"), holder("b"))

    asyncio.run(both())
    assert order in (["a in", "a out", "b in", "b out"], ["b in", "b out", "a in", "a out"]), order
