"""MediaMTX's HTTP auth callback as a service: credentials in MediaMTX's order, then the policy engine."""

from __future__ import annotations

import hmac
import re
import time
from typing import Any, NamedTuple
from urllib.parse import parse_qs

from sidecar.errors import BadRequest
from sidecar.identity import Principal, Role, RolePolicy, TrustedProxies
from sidecar.policy import SERVICE_ACTIONS, VIEW_ACTIONS, glob_to_regex, is_glob, normalise_path
from sidecar.publishers import Publishers
from sidecar.rules import RuleBook
from sidecar.session_writer import SessionWriter
from sidecar.tokens import Claims, TokenInvalid, TokenIssuer

FIELDS = ("ip", "user", "password", "token", "action", "path", "protocol", "query", "userAgent")
MAX_FIELD = 4096
SESSION_ACTIONS = VIEW_ACTIONS | {"publish"}


class AuthRequest(NamedTuple):
    """MediaMTX's callback body (every field is always sent; `id` may be null). A tuple: one is built per
    connection MediaMTX opens."""

    ip: str
    user: str
    password: str
    token: str
    action: str
    path: str
    protocol: str
    query: str
    id: str | None

    @classmethod
    def parse(cls, data: Any) -> AuthRequest:
        if type(data) is not dict:
            raise BadRequest("body must be a JSON object")
        get = data.get
        values: list[str] = []
        for name in FIELDS:
            value = get(name)
            if value is None:
                value = ""
            elif type(value) is not str or len(value) > MAX_FIELD:
                raise BadRequest(f"{name} must be a string of at most {MAX_FIELD} characters", field=name)
            elif not value.isascii() and not encodable(value):
                # JSON can carry a lone surrogate (`\ud800`), which no text MediaMTX sends contains and which
                # would fail later where the value is encoded (digests, constant-time comparisons).
                raise BadRequest(f"{name} must be valid text", field=name)
            values.append(value)
        session_id = get("id")
        if session_id is not None and (
            type(session_id) is not str or len(session_id) > 128 or not (session_id.isascii() or encodable(session_id))
        ):
            raise BadRequest("id must be a string or null", field="id")
        ip, user, password, token, action, path, protocol, query, _ = values  # the user agent is only checked
        return cls(ip, user, password, token, action, path, protocol, query, session_id or None)

    def query_token(self) -> str:
        params = parse_qs(self.query, keep_blank_values=False)
        for name in ("token", "jwt"):
            if params.get(name):
                return params[name][0]
        return ""


class Verdict(NamedTuple):
    allowed: bool
    reason: str
    username: str = ""
    groups: tuple[str, ...] = ()
    kind: str = "user"  # user, publisher or service: how revocation re-decides the session later


def encodable(value: str) -> bool:
    """False for strings JSON let through that cannot be text anywhere else (a lone surrogate, `\\ud800`)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def looks_like_jwt(value: str) -> bool:
    return value.count(".") == 2 and len(value) > 20


def permission_covers(permissions: tuple[dict[str, str], ...], action: str, path: str) -> bool:
    """MediaMTX's own rule: `""` is any path, `~re` is an (unanchored) RE2 match, anything else is equality."""
    for permission in permissions:
        if not isinstance(permission, dict) or permission.get("action") != action:
            continue
        wanted = permission.get("path", "")
        if not isinstance(wanted, str):
            continue  # malformed: grants nothing
        if wanted == "" or wanted == path:
            return True
        if wanted.startswith("~"):
            try:
                if re.search(wanted[1:], path):
                    return True
            except re.error:
                continue
    return False


def playback_permissions(principal: Principal, path: str) -> list[dict[str, str]]:
    """What a token for `path` grants: the exact path for viewers (never `""`, never a glob that a more specific
    rule might narrow), an anchored `~^…$` regex when an admin asks for a glob."""
    if is_glob(path):
        regex = "~" + glob_to_regex(path)
        return [{"action": action, "path": regex} for action in sorted(VIEW_ACTIONS)]
    normal = normalise_path(path)
    assert normal is not None
    return [{"action": action, "path": normal} for action in sorted(VIEW_ACTIONS)]


class MediaAuth:
    def __init__(
        self,
        rules: RuleBook,
        roles: RolePolicy,
        tokens: TokenIssuer,
        publishers: Publishers,
        sessions: SessionWriter,
        api_key: str,
        local_api: TrustedProxies,
    ) -> None:
        self.local_api = local_api
        self.sessions = sessions
        self.rules = rules
        self.roles = roles
        self.tokens = tokens
        self.publishers = publishers
        self.api_key = api_key

    def check(self, request: AuthRequest) -> Verdict:
        token = request.token if looks_like_jwt(request.token) else request.query_token()
        if looks_like_jwt(token):
            try:
                claims = self.tokens.verify(token)
            except TokenInvalid as error:
                return Verdict(False, f"token rejected: {error}")
            return self._by_token(claims, request)
        password = request.password or request.token  # MediaMTX moves a password into `token` when no bearer
        if request.user and password:
            publisher = self.publishers.may_publish(request.user, password, request.path)
            if publisher is not None and request.action == "publish":
                reason = f"publisher {publisher.name} may publish to {publisher.pattern}"
                return Verdict(True, reason, publisher.name, kind="publisher")
        if password and hmac.compare_digest(password.encode(), self.api_key.encode()):
            service = Principal(username="api-key", role=Role.SERVICE, source="api_key")
            decision = self.rules.decide(service, request.path, request.action)
            return Verdict(decision.allowed, decision.reason, service.username, kind="service")
        if not (request.user or password or token):
            if request.action in SERVICE_ACTIONS and self.local_api.contains(request.ip):
                reason = f"{request.action} from a local API client ({request.ip})"
                return Verdict(True, reason, "local-api", kind="service")
            return Verdict(False, "no credentials")
        return Verdict(False, "credentials not accepted")

    def _by_token(self, claims: Claims, request: AuthRequest) -> Verdict:
        normal = normalise_path(request.path) if request.path else request.path
        if normal is None or not permission_covers(claims.permissions, request.action, normal):
            return Verdict(False, "token does not grant this action on this path", claims.subject)
        if claims.service:
            principal = Principal(username=claims.subject, role=Role.SERVICE, source="token")
        else:
            principal = self.roles.principal(claims.subject, claims.groups, source="token")
        # The token proves who and what was granted; the current rules decide whether it still holds.
        decision = self.rules.decide(principal, request.path, request.action)
        kind = "service" if claims.service else "user"
        return Verdict(decision.allowed, decision.reason, claims.subject, tuple(claims.groups), kind)

    def remember(self, request: AuthRequest, verdict: Verdict) -> None:
        """Note which MediaMTX session the sidecar let in for whom, so revocation can kick exactly those."""
        if not (verdict.allowed and request.id and request.action in SESSION_ACTIONS and verdict.username):
            return
        self.sessions.add(
            (
                request.id,
                verdict.username,
                list(verdict.groups),
                request.path,
                request.action,
                request.protocol,
                verdict.kind,
                time.time(),
            )
        )
