"""The sessions journal: rows stay in a file until SQLite has them; a dead process's file is taken over, a live
one's never, and a line cut short by a crash is skipped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sidecar.session_journal import SessionJournal
from sidecar.session_writer import SessionWriter
from sidecar.store import SessionRow, Store

ROW: SessionRow = ("s-1", "bob", ["vid_public"], "live/cam1", "read", "rtsp", "user", 1_700_000_000.0)


def test_the_journal_is_emptied_once_the_database_has_every_row(tmp_path: Path) -> None:
    journal = SessionJournal(tmp_path)
    assert journal.append([ROW])
    assert journal.path is not None and journal.path.stat().st_size > 0
    assert journal.path.stat().st_mode & 0o777 == 0o600  # usernames and paths: nobody else's to read
    journal.written()
    assert journal.path.stat().st_size == 0
    path = journal.path
    journal.close()
    assert not path.exists()


def test_a_journal_with_rows_not_yet_written_outlives_its_process(tmp_path: Path) -> None:
    journal = SessionJournal(tmp_path)
    journal.append([ROW])
    journal.close()
    assert journal.path is not None and journal.path.exists()
    heir = SessionJournal(tmp_path)
    assert heir.adopt_orphans() == [ROW]
    assert not journal.path.exists() and heir.path is not None and heir.path.exists()


def test_a_live_process_journal_is_never_taken_and_a_torn_line_is_skipped(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from sidecar.session_journal import SessionJournal\n"
            "j = SessionJournal(Path(sys.argv[1]))\n"
            "j.append([('live-1', 'ann', ['vid_public'], 'live/a', 'read', 'rtsp', 'user', 1.0)])\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        (tmp_path / "sessions-dead.journal").write_bytes(
            b'["s-1","bob",["vid_public"],"live/cam1","read","rtsp","user",1700000000.0]\n["s-2","bo'
        )
        heir = SessionJournal(tmp_path)
        assert heir.adopt_orphans() == [ROW]  # the dead one's whole line; not the torn one, not the live one's
        assert len(list(tmp_path.glob("sessions-*.journal"))) == 2  # the live process's and the heir's
    finally:
        holder.kill()
        holder.wait()
    heir.close()  # still holding s-1, which no database has: the file stays for the next one
    assert sorted(row[0] for row in SessionJournal(tmp_path).adopt_orphans()) == ["live-1", "s-1"]


def test_a_new_writer_writes_what_a_dead_one_kept(tmp_path: Path) -> None:
    database = tmp_path / "sidecar.db"
    Store(database).close()
    orphan = SessionJournal(tmp_path)
    orphan.append([ROW])
    orphan.close()
    writer = SessionWriter(database)
    try:
        store = Store(database)
        assert [row["id"] for row in store.media_sessions("bob")] == ["s-1"]
        store.close()
        assert writer.backlog == 0
    finally:
        writer.close()
    assert not list(tmp_path.glob("sessions-*.journal"))
