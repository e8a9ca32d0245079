"""A lock that holds across the processes sharing one data dir (several `sidecar serve` on one machine, or a CLI
beside the server): changes that must see each other, such as removing an admin, take it one at a time."""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path


class ProcessLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = asyncio.Lock()  # one holder in this process; the file lock orders the processes

    @asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        async with self._local:
            fd = await asyncio.to_thread(self._acquire)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def _acquire(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits for another process's holder
        except BaseException:
            os.close(fd)
            raise
        return fd
