"""Share links: a secret URL that plays one stream without signing in, until it expires or is revoked."""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from sidecar.errors import BadRequest, Forbidden, NotFoundError, TooManyRequests
from sidecar.group_lookup import GroupLookup
from sidecar.identity import Principal, Role, RolePolicy
from sidecar.keys import digest
from sidecar.media_auth import playback_permissions
from sidecar.policy import is_glob, normalise_path
from sidecar.revocation import Revoker
from sidecar.rules import RuleBook
from sidecar.settings import Settings
from sidecar.store import Store
from sidecar.tokens import Issued, TokenIssuer

TTLS: dict[str, int | None] = {"1h": 3600, "4h": 4 * 3600, "24h": 24 * 3600, "never": None}
SUBJECT_PREFIX = "share:"  # `:` is never part of a local username, so a link's subject is never a person's
REQUESTS_PER_LINK = "60/minute"  # token requests; a player needs a few per reload
USE_AUDIT_SECONDS = 60
GONE = "This share link does not exist, has expired or was revoked."
_SECRET = re.compile(r"[A-Za-z0-9_-]{32,128}")


@dataclass(frozen=True)
class ShareLink:
    id: str
    path: str
    groups: tuple[str, ...]
    created_by: str
    created_at: float
    expires_at: float | None
    revoked: bool
    uses: int

    @property
    def subject(self) -> str:
        """The subject of the link's playback tokens: what token revocation and session kicks are keyed on."""
        return SUBJECT_PREFIX + self.id

    def public(self) -> dict[str, Any]:
        """What the API shows about a link (never the secret, nor the groups it plays with)."""
        return {
            "id": self.id,
            "path": self.path,
            "expires_at": None if self.expires_at is None else int(self.expires_at),
            "created_by": self.created_by,
            "created_at": int(self.created_at),
            "revoked": self.revoked,
            "uses": self.uses,
        }


def _link(row: sqlite3.Row) -> ShareLink:
    return ShareLink(
        id=row["id"],
        path=row["path"],
        groups=tuple(json.loads(row["groups"])),
        created_by=row["created_by"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked=row["revoked_at"] is not None,
        uses=int(row["uses"]),
    )


class ShareLinks:
    def __init__(
        self,
        store: Store,
        rules: RuleBook,
        roles: RolePolicy,
        tokens: TokenIssuer,
        revoker: Revoker,
        settings: Settings,
        lookup: GroupLookup,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.lookup = lookup
        self.store = store
        self.rules = rules
        self.roles = roles
        self.tokens = tokens
        self.revoker = revoker
        self.settings = settings
        self.clock = clock
        self.token_rate = parse(REQUESTS_PER_LINK)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._use_audited: dict[str, float] = {}

    def create(self, who: Principal, path: object, ttl: object) -> tuple[ShareLink, str]:
        """A new link to one stream `who` may watch, and its secret, which is stored only as a digest."""
        if who.role == Role.SERVICE:
            # A link plays with its creator's groups, and the API key has none that rules could name.
            raise Forbidden("share links are created by signed-in people, not with the API key")
        if not (who.is_admin or self.settings.viewer_share_links):
            raise Forbidden("only admins may create share links")
        if not isinstance(path, str) or not path:
            raise BadRequest("path must be a stream path", field="path")
        if is_glob(path):
            raise BadRequest("path must be one stream, not a pattern", field="path")
        normal = normalise_path(path)
        if normal is None:
            raise BadRequest("path must be a plain stream path without empty, '.' or '..' segments", field="path")
        if not isinstance(ttl, str) or ttl not in TTLS:
            raise BadRequest(f"ttl must be one of {', '.join(TTLS)}", field="ttl")
        if not self.rules.decide(who, normal, "read").allowed:
            # Say nothing about why: the reason would tell a viewer which rule or groups guard the path.
            raise Forbidden("you may not share this stream")
        # Only the groups that can grant anything travel with the link (never tak_* and the like).
        groups = self.roles.granting(who.groups)
        now = self.clock()
        lifetime = TTLS[ttl]
        expires_at = None if lifetime is None else now + lifetime
        link_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        with self.store.transaction() as db:
            self.store.insert_share_link(db, link_id, digest(secret), normal, groups, who.username, now, expires_at)
            detail = {"path": normal, "ttl": ttl, "expires_at": None if expires_at is None else int(expires_at)}
            self.store.audit(db, who.username, "share.create", link_id, detail)
        link = ShareLink(link_id, normal, tuple(groups), who.username, now, expires_at, False, 0)
        return link, secret

    def list(self, who: Principal) -> list[ShareLink]:
        """Every link for admins; a viewer's own links for a viewer."""
        rows = self.store.share_links(None if who.is_admin else who.username)
        return [_link(row) for row in rows]

    def revoke(self, who: Principal, link_id: str) -> None:
        """Refuse new tokens at once, invalidate the ones issued, and kick what they are playing."""
        row = self.store.share_link(link_id)
        if row is None or not (who.is_admin or row["created_by"] == who.username):
            # Someone else's link answers like an unknown one: its id tells a viewer nothing.
            raise NotFoundError("no share link with this id", field="id")
        with self.store.transaction() as db:
            if self.store.revoke_share_link(db, link_id, self.clock()):
                self.store.audit(db, who.username, "share.revoke", link_id, {"path": row["path"]})
        self._use_audited.pop(link_id, None)
        # Revokes every token issued to the link's subject so far and re-checks its remembered sessions, which
        # the directory does not know as a user and are therefore kicked. Repeated on a second revoke, so a kick
        # that failed while MediaMTX was down can be retried.
        self.revoker.user_lost_access(SUBJECT_PREFIX + link_id, "share link revoked")

    async def find(self, secret: str) -> ShareLink | None:
        """The link behind a secret while it can play: not revoked, not expired, its creator still active and still
        allowed the stream by the rules."""
        if not _SECRET.fullmatch(secret):
            return None
        row = self.store.share_link_by_secret(digest(secret))
        if row is None:
            return None
        link = _link(row)
        return link if await self._principal(link, "read") is not None else None

    async def still_plays(self, subject: str, path: str, action: str) -> bool:
        """Whether a session let in with a link's token may go on (for re-checking live sessions: the directory
        knows no user by a link's subject, so asking it would end every shared session on any change)."""
        if not subject.startswith(SUBJECT_PREFIX):
            return False
        row = self.store.share_link(subject[len(SUBJECT_PREFIX) :])
        if row is None:
            return False
        link = _link(row)
        return normalise_path(path) == link.path and await self._principal(link, action) is not None

    def creator_lost_access(self, username: str, reason: str) -> None:
        """The creator was removed from a group or deactivated: their links are decided again in the background."""
        self.revoker.background(self._creator_changed(username, reason))

    async def _creator_changed(self, username: str, reason: str) -> None:
        """A creator who is gone or inactive takes their links along (revoked for good); otherwise each link that
        no longer plays has its tokens revoked and what it is playing kicked (it plays again if access returns)."""
        links = [link for link in map(_link, self.store.share_links(username)) if not link.revoked]
        if not links:
            return
        self.lookup.forget(username)
        standing = await self.lookup.standing(username)
        gone = standing is None or not standing.active
        for link in links:
            if gone:
                with self.store.transaction() as db:
                    if self.store.revoke_share_link(db, link.id, self.clock()):
                        detail = {"path": link.path, "reason": f"creator {username} {reason}"}
                        self.store.audit(db, "sidecar", "share.revoke", link.id, detail)
            elif await self._principal(link, "read") is not None:
                continue
            self._use_audited.pop(link.id, None)
            self.revoker.user_lost_access(link.subject, f"share link creator {username} {reason}")

    async def token(self, secret: str, ip: str) -> tuple[ShareLink, Issued]:
        """A playback token for the link's one stream, never outliving the link."""
        link = await self.find(secret)
        if link is None:
            raise NotFoundError(GONE)
        if not self._limiter.hit(self.token_rate, "share", link.id):
            raise TooManyRequests("too many requests for this link; wait a minute and try again")
        now = self.clock()
        ttl = self.settings.token_ttl_seconds
        if link.expires_at is not None:
            ttl = min(ttl, int(link.expires_at - now))
        if ttl < 1:
            raise NotFoundError(GONE)
        principal = await self._principal(link, "read")
        if principal is None:
            raise NotFoundError(GONE)
        permissions = playback_permissions(principal, link.path)
        issued = self.tokens.issue(link.subject, permissions, sorted(principal.groups), ttl=ttl)
        with self.store.transaction() as db:
            uses = self.store.use_share_link(db, link.id, now)
            # A player asks again for every reload and before each token expires; one audit event per link and
            # minute (the count of uses says how many were folded into it) keeps the log readable.
            last = self._use_audited.get(link.id)
            if last is None or now - last >= USE_AUDIT_SECONDS:
                self._use_audited[link.id] = now
                self.store.audit(db, link.subject, "share.use", link.id, {"path": link.path, "ip": ip, "uses": uses})
        return link, issued

    async def _principal(self, link: ShareLink, action: str) -> Principal | None:
        """Who the link plays as, if it may `action` its stream now: the groups it was made with that its creator
        still holds (never more than either), while the creator is active; None when it may not play."""
        if link.revoked or (link.expires_at is not None and link.expires_at <= self.clock()):
            return None
        creator = await self.lookup.standing(link.created_by)
        if creator is None or not creator.active:
            return None
        groups = set(link.groups) & set(self.roles.granting(creator.groups))
        # The same principal the MediaMTX callback builds from the token's subject and groups.
        principal = self.roles.principal(link.subject, groups, source="share")
        return principal if self.rules.decide(principal, link.path, action).allowed else None
