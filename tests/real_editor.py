"""The real, unmodified MediaMTX web editor from ../shared/editor/, run for a test as its README says: a copy of the
file whose install locations point into a temporary directory, its own users.json and a small mediamtx.yml, served
by its Flask app on a loopback port picked at runtime. Nothing on the machine outside that directory is touched."""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from sidecar.processes import LoggedProcess, free_port, start_process, stop_process

SOURCE = Path(__file__).resolve().parent.parent.parent / "shared" / "editor" / "mediamtx_config_editor.py"
SERVICE_USER, SERVICE_PASSWORD = "sidecar-svc", "service-password-for-tests"
MEDIAMTX_YML = """\
logLevel: info
api: true
apiAddress: :9997
paths:
  live/cam1:
    source: publisher
  live/cam2:
    source: publisher
"""


@dataclass(frozen=True)
class EditorFiles:
    root: Path
    module_dir: Path

    @property
    def users_file(self) -> Path:
        return self.root / "opt" / "users.json"

    def users(self) -> list[dict[str, str]]:
        found: list[dict[str, str]] = json.loads(self.users_file.read_text())
        return found


def prepare(root: Path, users: list[dict[str, str]] | None = None) -> EditorFiles:
    """Copy the editor into `root` with its two install prefixes moved there, and write its users and config."""
    opt, etc, module_dir = root / "opt", root / "etc", root / "module"
    for folder in (opt, etc, module_dir):
        folder.mkdir(parents=True, exist_ok=True)
    text = SOURCE.read_text()
    text = text.replace("/opt/mediamtx-webeditor", str(opt)).replace("/usr/local/etc/mediamtx", f"{etc}/mediamtx")
    (module_dir / "mediamtx_config_editor.py").write_text(text)
    (etc / "mediamtx.yml").write_text(MEDIAMTX_YML)
    accounts = users or [
        {"username": SERVICE_USER, "password": SERVICE_PASSWORD, "role": "admin", "email": "svc@example.org"},
        {"username": "other-admin", "password": "other-password-1", "role": "admin", "email": "o@example.org"},
    ]
    users_file = opt / "users.json"
    users_file.write_text(json.dumps(accounts))
    users_file.chmod(0o600)
    return EditorFiles(root, module_dir)


def command(files: EditorFiles, port: int) -> list[str]:
    """The editor's Flask app on 127.0.0.1:`port` (its own `__main__` would bind 0.0.0.0:5000)."""
    runner = (
        "import sys; sys.path.insert(0, sys.argv[1]); import mediamtx_config_editor as editor; "
        "editor.app.run(host='127.0.0.1', port=int(sys.argv[2]), debug=False)"
    )
    return [sys.executable, "-c", runner, str(files.module_dir), str(port)]


def environment() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("SIDECAR_")}


def pick_port() -> int:
    return free_port()


# One line of the editor's request log (werkzeug's): `127.0.0.1 - - [date] "GET /path HTTP/1.1" 200 -`.
REQUEST_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<target>\S+) HTTP/[\d.]+" (?P<status>\d{3})')
# It colours some of them for a terminal (e.g. 3xx green), even when writing to a file.
ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class EditorRequest:
    method: str
    target: str
    status: int


class RealEditor:
    """The editor as a process on one loopback port, which can be stopped and started again on the same port (a
    new process: a new secret key, so every editor session ends). Each start logs to its own file in the editor's
    directory, and `requests()` reads every request any of them answered."""

    def __init__(self, root: Path, users: list[dict[str, str]] | None = None) -> None:
        self.files = prepare(root, users)
        self.port = pick_port()
        self.starts = 0
        self.proc: LoggedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> list[Path]:
        return [self.files.root / f"editor-{n}.log" for n in range(1, self.starts + 1)]

    def start(self) -> None:
        assert self.proc is None, "the editor is already running"
        self.starts += 1
        argv = command(self.files, self.port)
        self.proc = start_process(argv, environment(), ready_port=self.port, timeout=60, log_path=self.logs()[-1])

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def requests(self, start: int | None = None) -> list[EditorRequest]:
        """Every request the editor has logged so far, oldest first: over all its starts, or of start number
        `start` (1 is the first)."""
        found: list[EditorRequest] = []
        for log in self.logs() if start is None else self.logs()[start - 1 : start]:
            text = ANSI_COLOUR.sub("", log.read_text(errors="replace")) if log.is_file() else ""
            for match in REQUEST_LINE.finditer(text):
                found.append(EditorRequest(match["method"], match["target"], int(match["status"])))
        return found
