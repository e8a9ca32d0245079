"""Path rules as a service: validated writes with audit events, and the compiled matcher kept current.

The matcher is compiled once and then changed in place by this process's own rule changes (one pattern each, in
microseconds; `Matcher.replace`) instead of being rebuilt from the database: a rebuild costs milliseconds per hundred
rules, and the first MediaMTX callback after every change would wait for it on the event loop. A change made by
another process (the CLI) is seen through the store's generation and still rebuilds it whole.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from sidecar.directory import Directory
from sidecar.errors import BadRequest, NotFoundError
from sidecar.identity import Principal, RolePolicy, group_name_problem
from sidecar.policy import Decision, InvalidPattern, Matcher, decide, validate_pattern
from sidecar.store import Store

# How long a group confirmed to exist is taken as existing when a rule names it (rules are checked against the
# directory, which in authentik mode is a request to Authentik each); a group not found is asked for every time.
GROUP_SEEN_SECONDS = 5.0


class RuleBook:
    """The one way rules are read, changed and applied, shared by the HTTP API and the CLI."""

    def __init__(
        self,
        store: Store,
        directory: Directory,
        roles: RolePolicy,
    ) -> None:
        # Re-checks live sessions on paths the changed pattern could match (set by the wiring).
        self.on_change: Callable[[str, str], None] | None = None
        self.store = store
        self.directory = directory
        self.roles = roles
        self._matcher: Matcher | None = None
        self._version = -1
        self._groups_seen: dict[str, float] = {}  # group -> monotonic time it was last found in the directory

    def matcher(self) -> Matcher:
        """Recompiled only when the rules may have changed (here, or by another process such as the CLI)."""
        version = self.store.generation()
        if self._matcher is None or version != self._version:
            self._matcher = Matcher(self.store.list_rules())
            self._version = version
        return self._matcher

    def _changed(self, reason: str, pattern: str, groups: list[str] | None) -> None:
        """After the commit of one rule's change (`groups` None: deleted): the matcher follows it at once."""
        matcher = self._matcher
        if matcher is not None and self._version == self.store.generation():
            matcher.replace(pattern, groups)
        else:
            self._matcher = None  # rebuilt whole at its next use
        if self.on_change is not None:
            self.on_change(reason, pattern)

    def all(self) -> dict[str, list[str]]:
        return self.store.list_rules()

    def decide(self, principal: Principal, path: str, action: str) -> Decision:
        return decide(self.matcher(), principal, path, action)

    async def check_groups(self, groups: object) -> list[str]:
        # An empty list is meaningful: the pattern is for admins only, even where a broader rule names groups.
        if not isinstance(groups, list) or not all(isinstance(group, str) for group in groups):
            raise BadRequest("groups must be a list of group names ([] for admins only)", field="groups")
        for group in groups:
            problem = group_name_problem(group, self.roles.prefix)
            if problem is not None:
                raise BadRequest(f"{problem} ({group!r})", field="groups")
            if not await self._group_exists(group):
                raise BadRequest(f"unknown group {group!r}", field="groups")
        return sorted(set(groups))

    async def _group_exists(self, group: str) -> bool:
        now = time.monotonic()
        seen = self._groups_seen.get(group)
        if seen is not None and now - seen < GROUP_SEEN_SECONDS:
            return True
        if await self.directory.get_group(group) is None:
            self._groups_seen.pop(group, None)
            return False
        if len(self._groups_seen) >= 10_000:
            self._groups_seen.clear()
        self._groups_seen[group] = now
        return True

    async def set(self, pattern: object, groups: object, actor: str) -> tuple[str, list[str]]:
        if not isinstance(pattern, str):
            raise BadRequest("pattern must be a string", field="pattern")
        try:
            normal = validate_pattern(pattern)
        except InvalidPattern as error:
            raise BadRequest(str(error), field="pattern") from error
        checked = await self.check_groups(groups)
        with self.store.transaction() as db:
            self.store.put_rule(db, normal, checked)
            self.store.audit(db, actor, "rule.set", normal, {"groups": checked})
        self._changed(f"rule {normal} set", normal, checked)
        return normal, checked

    def delete(self, pattern: str, actor: str) -> None:
        try:
            normal = validate_pattern(pattern)
        except InvalidPattern as error:
            raise BadRequest(str(error), field="pattern") from error
        with self.store.transaction() as db:
            if not self.store.delete_rule(db, normal):
                raise NotFoundError(f"no rule for pattern {normal!r}", field="pattern")
            self.store.audit(db, actor, "rule.delete", normal)
        self._changed(f"rule {normal} deleted", normal, None)

    def readable(self, principal: Principal, paths: Iterable[str]) -> list[str]:
        """The paths the principal may read, in order: one matcher for the whole list, no per-path counting."""
        matcher = self.matcher()
        return [path for path in paths if decide(matcher, principal, path, "read").allowed]

    async def explain(
        self, path: str, action: str, *, username: str | None = None, groups: list[str] | None = None
    ) -> dict[str, object]:
        """The decision for a directory user, or for a bare group set (preview), with the rule that decided."""
        if groups is not None:
            principal = self.roles.principal(username or "(preview)", groups, source="preview")
        else:
            if not username:
                raise BadRequest("give a user or a group set", field="user")
            user = await self.directory.get_user(username)
            if user is None:
                raise NotFoundError(f"unknown user {username!r}", field="user")
            principal = self.roles.principal(username, user.groups if user.is_active else (), source="explain")
        result = decide(self.matcher(), principal, path, action).as_dict()  # a preview, not counted in metrics
        result.update(user=principal.username, role=principal.role.value, groups=self.roles.managed(principal.groups))
        return result
