"""Storage faults against a real `sidecar serve`: a full data disk, a filesystem the kernel turns read-only under the
running server, and start-up on a read-only, foreign-owned or damaged data dir.

A full disk is a size-limited tmpfs holding the data dir, filled by another file as a log or a backup would fill it.
The kernel's own read-only switch is ext4's `errors=remount-ro` on a loop-mounted image, set off through ext4's
`trigger_fs_error` (Linux refuses `mount -o remount,ro` while the server holds its database open for writing, so this
is how a running server meets a read-only disk). Both need root and a kernel that lets this machine mount; without
them those tests skip and say why. What each test expects:

- on a full disk every write (a playback token, a sign-in, the public form, a rule change) answers 503 saying the
  data disk is full (the form a page, the API its JSON shape), nothing half-saved; reads go on, and a viewer holding
  a token keeps watching; `/readyz` fails naming the store; once space is back everything works without a restart;
- the sidecar starts on a full disk and does the same;
- a read-only filesystem under the running server: the same 503s, saying the database is read-only;
- start-up on a read-only, foreign-owned or damaged data dir: `sidecar serve` and any other command exit 2 with one
  line `error: <sentence>` and no traceback, and `sidecar check` prints the same sentence as a PROBLEM line.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from sidecar.processes import LoggedProcess, free_port, start_process, stop_process
from sidecar.runtime import run_with_services
from tests.helpers import API_KEY, bootstrapped_settings, callback_body, cheapen_bcrypt, submit_access_request
from tests.processes_fixtures import child_env

pytestmark = pytest.mark.caddy  # real processes

VIEWER, VIEWER_PASSWORD = "bob", "bob-password-for-storage"
KEY = {"x-api-key": API_KEY}
BROWSER = {"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
FULL = "the data disk is full"
READ_ONLY = "the database is read-only"
RESERVE_NAME = "space-reserve"  # what `sidecar serve` sets aside in the data dir to start on a full disk
OTHER_UID = 1000
# root as far as uids go, but bound by file permissions like anyone else
UNPRIVILEGED_ROOT = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--"]


# -- mounts -------------------------------------------------------------------------------------------------------
def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small or read-only filesystem for the data dir needs root")


def _unmount(target: Path) -> None:
    """Unmount for sure: a lazy unmount when something still holds it, so no test leaves a mount behind."""
    if _run("umount", str(target)).returncode != 0:
        _run("umount", "-l", str(target))


@contextlib.contextmanager
def mounted(argv: list[str], target: Path, what: str) -> Iterator[Path]:
    _needs_root()
    target.mkdir(parents=True, exist_ok=True)
    done = _run(*argv, str(target))
    if done.returncode != 0:
        pytest.skip(f"this machine cannot mount {what}: {done.stderr.strip()}")
    try:
        yield target
    finally:
        _unmount(target)


def fill(directory: Path) -> Path:
    """Fill the filesystem holding `directory` to the last byte with another file; that file."""
    path = directory / "filler"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            block = b"\xa5" * size
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, block)
    finally:
        os.close(fd)
    with pytest.raises(OSError) as refused:  # truly full now
        fd = os.open(directory / "one-more", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.write(fd, b"x" * 4096)
        finally:
            os.close(fd)
            (directory / "one-more").unlink()
    assert refused.value.errno == errno.ENOSPC
    return path


# -- the data dir and the processes -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bootstrapped local-mode data dir (admin, the viewer bob in vid_public, `live/**` for vid_public), copied
    into each test's filesystem."""
    data_dir = tmp_path_factory.mktemp("storage") / "data"
    settings = bootstrapped_settings(data_dir)

    async def populate(services: object) -> None:
        await services.users.add_user(VIEWER, ["vid_public"], VIEWER_PASSWORD, "test")  # type: ignore[attr-defined]
        await services.rules.set("live/**", ["vid_public"], "test")  # type: ignore[attr-defined]

    with pytest.MonkeyPatch.context() as patch:
        cheapen_bcrypt(patch)
        run_with_services(settings, populate)  # type: ignore[arg-type]
    return data_dir


def copy_data(template: Path, into: Path) -> Path:
    target = into / "data"
    shutil.copytree(template, target)
    return target


def env(data_dir: Path, **values: str) -> dict[str, str]:
    return child_env(
        SIDECAR_MODE="local",
        SIDECAR_DATA_DIR=str(data_dir),
        SIDECAR_API_KEY=API_KEY,
        SIDECAR_LOG_LEVEL="WARNING",
        **values,
    )


@contextlib.contextmanager
def serving(data_dir: Path, logs: Path) -> Iterator[str]:
    """A real `sidecar serve` for `data_dir`, stopped on the way out whatever happened; its base URL."""
    port = free_port()
    values = {"SIDECAR_HOST": "127.0.0.1", "SIDECAR_PORT": str(port)}
    logs.mkdir(parents=True, exist_ok=True)
    proc: LoggedProcess = start_process(
        [sys.executable, "-m", "sidecar", "serve"],
        env(data_dir, **values),
        ready_url=f"http://127.0.0.1:{port}/healthz",
        cwd=logs,
        log_path=logs / f"sidecar-{port}.log",
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


def cli(data_dir: Path, *argv: str, cwd: Path, prefix: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """One `sidecar` command; a `serve` that starts after all is stopped by the timeout (and fails the test)."""
    return subprocess.run(
        [*prefix, sys.executable, "-m", "sidecar", *argv],
        env=env(data_dir, SIDECAR_HOST="127.0.0.1", SIDECAR_PORT=str(free_port())),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )


# -- what people do -----------------------------------------------------------------------------------------------
def sign_in(url: str) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=15) as fresh:
        return fresh.post("/auth/login", json={"username": VIEWER, "password": VIEWER_PASSWORD})


class Viewer:
    """bob, signed in while the disk was fine, in a browser that keeps his session cookie."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=15)
        assert self.http.post("/auth/login", json={"username": VIEWER, "password": VIEWER_PASSWORD}).status_code == 200
        csrf = self.http.get("/api/v1/me").json()["csrf_token"]
        self.headers = {"origin": url, "x-csrf-token": csrf}

    def playback_token(self) -> httpx.Response:
        return self.http.post("/api/v1/streams/token", json={"path": "live/cam1"}, headers=self.headers)

    def close(self) -> None:
        self.http.close()


def set_rule(url: str, pattern: str) -> httpx.Response:
    return httpx.put(f"{url}/api/v1/rules", json={"pattern": pattern, "groups": ["vid_public"]}, headers=KEY)


def rules(url: str) -> dict[str, list[str]]:
    response = httpx.get(f"{url}/api/v1/rules", headers=KEY)
    assert response.status_code == 200, response.text
    return {rule["pattern"]: rule["groups"] for rule in response.json()["rules"]}


def requesters(url: str) -> list[str]:
    response = httpx.get(f"{url}/api/v1/access-requests", headers=KEY)
    assert response.status_code == 200, response.text
    return [request["username"] for request in response.json()["requests"]]


def assert_json_503(response: httpx.Response, words: str) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["error"]
    assert message.startswith(words + ": nothing can be saved"), message


def assert_page_503(response: httpx.Response, words: str) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("text/html"), response.headers["content-type"]
    assert words in response.text


def assert_store_not_ready(url: str, words: str) -> None:
    response = httpx.get(f"{url}/readyz")
    assert response.status_code == 503, response.text
    assert response.json()["status"] == "not ready"
    assert words in response.json()["checks"]["store"]


def assert_every_write_refused(url: str, viewer: Viewer, words: str, *, page_words: str | None = None) -> None:
    """Each kind of write answers 503 with the sentence and leaves nothing behind."""
    assert_json_503(viewer.playback_token(), words)
    assert_json_503(sign_in(url), words)
    assert_page_503(submit_access_request(url, headers=BROWSER, username="ada"), page_words or words)
    assert_json_503(set_rule(url, "refused/**"), words)
    assert "refused/**" not in rules(url)
    assert "ada" not in requesters(url)
    assert_store_not_ready(url, words)


def assert_every_write_works(url: str, viewer: Viewer, form_user: str) -> None:
    assert viewer.playback_token().status_code == 200
    assert sign_in(url).status_code == 200
    done = submit_access_request(url, headers=BROWSER, username=form_user)
    assert done.status_code == 200 and done.headers["content-type"].startswith("text/html"), done.text
    assert set_rule(url, f"{form_user}/**").status_code == 200
    assert f"{form_user}/**" in rules(url)
    assert form_user in requesters(url)
    ready = httpx.get(f"{url}/readyz")
    assert ready.status_code == 200, ready.text


# -- a full data disk ---------------------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB filesystem of its own for the data dir."""
    with mounted(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs"], tmp_path / "disk", "a tmpfs") as disk:
        yield disk


def test_a_full_disk_answers_every_write_503_saying_so_and_recovers_without_a_restart(
    template: Path, small_disk: Path, tmp_path: Path
) -> None:
    data_dir = copy_data(template, small_disk)
    with serving(data_dir, tmp_path / "logs") as url:
        viewer = Viewer(url)
        try:
            token = viewer.playback_token()
            assert token.status_code == 200, token.text
            filler = fill(small_disk)

            assert_every_write_refused(url, viewer, FULL)
            # A command beside the server says so in one line, and `sidecar check` the same as a PROBLEM.
            done = cli(data_dir, "rules", "set", "cli/**", "vid_public", cwd=tmp_path)
            assert done.returncode == 2, done.stderr
            assert done.stderr.startswith(f"error: the data disk is full (no space left for {data_dir})")
            assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
            checked = cli(data_dir, "check", cwd=tmp_path)
            assert (
                checked.returncode == 1 and f"PROBLEM  {done.stderr.strip().removeprefix('error: ')}" in checked.stdout
            )
            # What only reads goes on: health, the rules, the form page, and a viewer already holding a token.
            assert httpx.get(f"{url}/healthz").status_code == 200
            assert rules(url)["live/**"] == ["vid_public"]
            watching = httpx.post(f"{url}/mediamtx/auth", json=callback_body(token=token.json()["token"]))
            assert watching.status_code == 200, watching.text

            filler.unlink()
            assert_every_write_works(url, viewer, "ada")
        finally:
            viewer.close()


def test_the_sidecar_starts_on_a_full_disk_serves_reads_and_saves_again_once_space_is_back(
    template: Path, small_disk: Path, tmp_path: Path
) -> None:
    data_dir = copy_data(template, small_disk)
    with serving(data_dir, tmp_path / "logs"):
        pass  # a first start sets the space reserve aside; a clean stop leaves no SQLite side files
    filler = fill(small_disk)

    with serving(data_dir, tmp_path / "logs") as url:
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert rules(url)["live/**"] == ["vid_public"]
        viewer = Viewer(url)  # signs in: the room the reserve left
        try:
            fill(small_disk)  # whatever filled the disk goes on writing
            assert_every_write_refused(url, viewer, FULL)
            filler.unlink()
            assert_every_write_works(url, viewer, "eve")
            assert (data_dir / RESERVE_NAME).is_file()  # set aside again once there was room
        finally:
            viewer.close()


# -- a filesystem turned read-only under the running server -------------------------------------------------------
@pytest.fixture
def ext4_disk(tmp_path: Path) -> Iterator[Path]:
    """A loop-mounted ext4 that the kernel turns read-only on its first error, as a failing disk would."""
    _needs_root()
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("mkfs.ext4 is not installed")
    image = tmp_path / "disk.img"
    with image.open("wb") as handle:
        handle.truncate(32 << 20)
    made = _run("mkfs.ext4", "-q", "-F", "-m", "0", str(image))
    if made.returncode != 0:
        pytest.skip(f"mkfs.ext4 failed: {made.stderr.strip()}")
    argv = ["mount", "-o", "loop,errors=remount-ro", str(image)]
    with mounted(argv, tmp_path / "disk", "a loop device") as disk:
        device = _run("findmnt", "-no", "SOURCE", str(disk)).stdout.strip()
        trigger = Path("/sys/fs/ext4") / Path(device).name / "trigger_fs_error"
        if not trigger.exists():
            pytest.skip(f"this kernel has no {trigger} to set off an ext4 error")
        yield disk


def break_filesystem(disk: Path) -> None:
    device = _run("findmnt", "-no", "SOURCE", str(disk)).stdout.strip()
    (Path("/sys/fs/ext4") / Path(device).name / "trigger_fs_error").write_text("storage fault test\n")
    with pytest.raises(OSError) as refused:
        (disk / "probe").write_text("x")
    assert refused.value.errno == errno.EROFS


def test_a_filesystem_turned_read_only_under_the_server_answers_every_write_503_saying_so(
    template: Path, ext4_disk: Path, tmp_path: Path
) -> None:
    data_dir = copy_data(template, ext4_disk)
    with serving(data_dir, tmp_path / "logs") as url:
        viewer = Viewer(url)
        try:
            break_filesystem(ext4_disk)
            assert_every_write_refused(url, viewer, READ_ONLY)
            assert rules(url)["live/**"] == ["vid_public"]
            # A command beside the server says so in one line too.
            done = cli(data_dir, "rules", "set", "cli/**", "vid_public", cwd=tmp_path)
            assert done.returncode == 2, done.stderr
            assert done.stderr.startswith(f"error: the data dir {data_dir} is on a read-only filesystem")
            assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
        finally:
            viewer.close()


# -- start-up on a data dir that cannot work ----------------------------------------------------------------------
def assert_one_clear_line(data_dir: Path, cwd: Path, sentence_start: str, prefix: Sequence[str] = ()) -> None:
    """`sidecar serve` and another command exit 2 with the same one line; `sidecar check` names it as a PROBLEM."""
    served = cli(data_dir, "serve", cwd=cwd, prefix=prefix)
    assert served.returncode == 2, served.stdout + served.stderr
    assert "Traceback" not in served.stderr
    lines = served.stderr.splitlines()
    assert len(lines) == 1, served.stderr
    assert lines[0].startswith("error: " + sentence_start), lines[0]
    sentence = lines[0].removeprefix("error: ")

    listed = cli(data_dir, "rules", "list", cwd=cwd, prefix=prefix)
    assert listed.returncode == 2 and listed.stderr.splitlines() == lines, listed.stderr

    checked = cli(data_dir, "check", cwd=cwd, prefix=prefix)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "Traceback" not in checked.stderr
    assert f"PROBLEM  {sentence}" in checked.stdout.splitlines(), checked.stdout


def test_start_on_a_damaged_database_exits_2_with_one_line(template: Path, tmp_path: Path) -> None:
    data_dir = copy_data(template, tmp_path)
    (data_dir / "sidecar.db").write_bytes(b"this was a database until a bad copy\n" * 2000)
    assert_one_clear_line(data_dir, tmp_path, f"the database {data_dir / 'sidecar.db'} is damaged")


def test_start_on_a_read_only_data_dir_exits_2_with_one_line(template: Path, tmp_path: Path) -> None:
    source = copy_data(template, tmp_path / "source")
    target = tmp_path / "readonly"
    with mounted(["mount", "--bind", str(source)], target, "a bind mount"):
        remounted = _run("mount", "-o", "remount,bind,ro", str(target))
        if remounted.returncode != 0:
            pytest.skip(f"this machine cannot make a bind mount read-only: {remounted.stderr.strip()}")
        assert_one_clear_line(target, tmp_path, f"the data dir {target} is on a read-only filesystem")


def test_start_on_a_data_dir_owned_by_someone_else_exits_2_with_one_line(template: Path, tmp_path: Path) -> None:
    """The data dir belongs to another user (a restored backup, a volume prepared under another uid). Root may write
    anywhere, so the sidecar runs as root without the capabilities that override file permissions (setpriv)."""
    _needs_root()
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    data_dir = copy_data(template, tmp_path)
    for path in (data_dir, *data_dir.iterdir()):
        os.chown(path, OTHER_UID, OTHER_UID)
    data_dir.chmod(0o700)
    assert_one_clear_line(data_dir, tmp_path, f"{data_dir} cannot be written by root", prefix=UNPRIVILEGED_ROOT)
