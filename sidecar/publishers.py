"""Publisher credentials: a name and a random secret (shown once, stored hashed) that may publish to a pattern."""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from sidecar.errors import BadRequest, NotFoundError
from sidecar.keys import digest as secret_hash
from sidecar.policy import InvalidPattern, Matcher, normalise_path, validate_pattern
from sidecar.store import Store

NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# Hashing an unknown name's secret against this keeps the work the same as for a known name.
_DUMMY_HASH = secret_hash("no-such-publisher")


@dataclass(frozen=True)
class Publisher:
    name: str
    pattern: str
    created_by: str
    created_at: float


class Publishers:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.on_revoke: Callable[[str, str], None] | None = None  # kicks the credential's live streams

    def list(self) -> list[Publisher]:
        return [Publisher(r["name"], r["pattern"], r["created_by"], r["created_at"]) for r in self.store.publishers()]

    def create(self, name: object, pattern: object, actor: str) -> tuple[Publisher, str]:
        """A new credential and its secret, which is never stored or shown again."""
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise BadRequest("name must be 1-64 letters, digits, '.', '_' or '-'", field="name")
        try:
            normal = validate_pattern(pattern) if isinstance(pattern, str) else validate_pattern("")
        except InvalidPattern as error:
            raise BadRequest(str(error), field="pattern") from error
        secret = secrets.token_urlsafe(32)
        with self.store.transaction() as db:
            if not self.store.insert_publisher(db, name, normal, secret_hash(secret), actor):
                raise BadRequest(f"a publisher named {name!r} exists; revoke it first", field="name")
            self.store.audit(db, actor, "publisher.create", name, {"pattern": normal})
        return Publisher(name, normal, actor, 0.0), secret

    def revoke(self, name: str, actor: str) -> None:
        with self.store.transaction() as db:
            if not self.store.delete_publisher(db, name):
                raise NotFoundError(f"no publisher named {name!r}", field="name")
            self.store.audit(db, actor, "publisher.revoke", name)
        if self.on_revoke is not None:
            self.on_revoke(name, "publisher credential revoked")

    def covers(self, name: str, path: str) -> bool:
        """Whether the credential still exists and its pattern still covers the path (for live re-checks)."""
        row = self.store.publisher(name)
        normal = normalise_path(path)
        return row is not None and normal is not None and Matcher({row["pattern"]: []}).match(normal) is not None

    def may_publish(self, name: str, secret: str, path: str) -> Publisher | None:
        """The credential, when the secret is right and its pattern covers the path; same work either way."""
        row = self.store.publisher(name)
        expected = row["secret_hash"] if row is not None else _DUMMY_HASH
        matches = hmac.compare_digest(secret_hash(secret), expected)
        if row is None or not matches:
            return None
        normal = normalise_path(path)
        if normal is None or Matcher({row["pattern"]: []}).match(normal) is None:
            return None
        return Publisher(row["name"], row["pattern"], row["created_by"], row["created_at"])
