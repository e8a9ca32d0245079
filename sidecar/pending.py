"""What waits to be done later, as short sentences for admins (`GET /api/v1/pending-work`) and operators
(`sidecar check`): kicks MediaMTX has not confirmed yet, mail not sent yet and, given the server's session writer,
remembered MediaMTX sessions it could not write yet or had to drop. Each of these is retried on its own until done;
the sentences say what waits, since when, and the latest error, so someone can fix its cause."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from sidecar.session_writer import SessionWriter
from sidecar.store import Store


def _clock(at: float, now: float) -> str:
    moment = datetime.fromtimestamp(at, UTC)
    if now - at < 20 * 3600:
        return moment.strftime("%H:%M UTC")
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _because(error: str) -> str:
    return f" (last error: {error})" if error else ""


def pending_work(store: Store, sessions: SessionWriter | None = None, *, now: float | None = None) -> list[str]:
    """Empty when nothing waits."""
    now = time.time() if now is None else now
    lines: list[str] = []
    count, since, _, error = store.pending_kick_summary()
    if count and since is not None:
        what = "1 kick waits" if count == 1 else f"{count:,} kicks wait"
        lines.append(f"{what} for MediaMTX since {_clock(since, now)}{_because(error)}")
    count, oldest, error = store.pending_mail_summary()
    if count and oldest is not None:
        what = "1 email waits" if count == 1 else f"{count:,} emails wait"
        lines.append(f"{what} to be sent since {_clock(oldest, now)}{_because(error)}")
    if sessions is not None:
        if sessions.backlog and sessions.failing_since is not None:
            held = sessions.backlog
            what = "1 remembered MediaMTX session waits" if held == 1 else f"{held:,} remembered MediaMTX sessions wait"
            lines.append(
                f"{what} to be written since {_clock(sessions.failing_since, now)}{_because(sessions.last_error)}"
            )
        if sessions.dropped:
            lines.append(
                f"{sessions.dropped:,} remembered MediaMTX sessions were dropped since the start (the database did not "
                "take them in time); those cannot be kicked on revocation"
            )
    return lines
