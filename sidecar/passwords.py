"""bcrypt password hashing, run off the event loop, with the same work for unknown users as for known ones."""

from __future__ import annotations

import bcrypt
from anyio import to_thread

from sidecar.errors import BadRequest

MIN_LENGTH = 10
MAX_BYTES = 72  # bcrypt ignores everything past 72 bytes; refuse instead of silently truncating
# A real hash of a random secret: verifying against it costs what a real check costs, so a missing user and a
# wrong password take the same time.
_DUMMY_HASH = bcrypt.hashpw(b"no-such-user-placeholder", bcrypt.gensalt()).decode()


def check_strength(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise BadRequest(f"password must be at least {MIN_LENGTH} characters", field="password")
    if len(password.encode()) > MAX_BYTES:
        raise BadRequest(f"password must be at most {MAX_BYTES} bytes", field="password")


def hash_password_sync(password: str) -> str:
    check_strength(password)
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()


async def hash_password(password: str) -> str:
    check_strength(password)
    return await to_thread.run_sync(hash_password_sync, password)


def _verify(password: str, password_hash: str | None) -> bool:
    candidate = password.encode()
    if password_hash is None or len(candidate) > MAX_BYTES:
        # Same bcrypt work as a real check; an over-long password can never match (bcrypt would truncate it).
        bcrypt.checkpw(candidate[:MAX_BYTES], _DUMMY_HASH.encode())
        return False
    return bcrypt.checkpw(candidate, password_hash.encode())


async def verify_password(password: str, password_hash: str | None) -> bool:
    """True when the password matches; None as hash still does a full bcrypt check and returns False."""
    return await to_thread.run_sync(_verify, password, password_hash)
