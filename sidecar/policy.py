"""May they: path rules (`pattern → groups`) compiled into one matcher, and `decide(principal, path, action)`."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sidecar.identity import Principal, Role

VIEW_ACTIONS = frozenset({"read", "playback"})
ADMIN_ACTIONS = frozenset({"publish", "api", "metrics", "pprof"})
ACTIONS = VIEW_ACTIONS | ADMIN_ACTIONS

# MediaMTX path names use these characters; anything else (`%`, `\`, `?`, `#`, spaces, controls) is refused.
_SEGMENT = re.compile(r"[A-Za-z0-9_.~:@+=,-]+")
_PATTERN_SEGMENT = re.compile(r"[A-Za-z0-9_.~:@+=,*-]+")
MAX_PATH_LENGTH = 512


class InvalidPattern(ValueError):
    """A rule pattern that cannot be compiled; the message says why."""


def normalise_path(raw: str) -> str | None:
    """The canonical form of a stream path, or None when it is ambiguous and must be denied.

    A single leading `/` is accepted (URLs carry one). Empty segments (`//`, a trailing `/`), `.` and `..`
    segments and percent-encoding are refused rather than resolved: two spellings of one path would let a rule
    be sidestepped.
    """
    path = raw[1:] if raw.startswith("/") else raw
    if not path or len(path) > MAX_PATH_LENGTH:
        return None
    for segment in path.split("/"):
        if segment in ("", ".", "..") or not _SEGMENT.fullmatch(segment):
            return None
    return path


def _segment_regex(segment: str) -> str:
    return "[^/]*".join(re.escape(part) for part in segment.split("*"))


def glob_to_regex(pattern: str) -> str:
    """Translate a glob into an anchored RE2-compatible regex.

    `*` matches within one segment, a `**` segment matches any depth: `live/**` matches everything below
    `live/` (not `live` itself), `**/cam` matches `cam` and `a/b/cam`, `a/**/b` matches `a/b` and `a/x/y/b`.
    """
    segments = validate_pattern(pattern).split("/")
    out = "^"
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            if last:
                out += "[^/]+(?:/[^/]+)*"
            else:
                out += "(?:[^/]+/)*"
            continue
        out += _segment_regex(segment)
        if not last:
            out += "/"
    return out + "$"


def validate_pattern(pattern: str) -> str:
    if not pattern or len(pattern) > MAX_PATH_LENGTH:
        raise InvalidPattern("pattern must be 1 to 512 characters")
    path = pattern[1:] if pattern.startswith("/") else pattern
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidPattern("pattern has an empty, '.' or '..' segment")
        if not _PATTERN_SEGMENT.fullmatch(segment):
            raise InvalidPattern(f"pattern segment {segment!r} has characters outside A-Z a-z 0-9 _ . ~ : @ + = , - *")
        if "**" in segment and segment != "**":
            raise InvalidPattern("'**' must be a whole path segment")
    return path


def is_glob(pattern: str) -> bool:
    return "*" in pattern


def _specificity(pattern: str) -> tuple[int, int, int, int, str]:
    """Sort key: the most specific rule decides (exact, then fewer `**`, more literal characters, fewer `*`)."""
    return (
        1 if is_glob(pattern) else 0,
        pattern.count("**"),
        -len(pattern.replace("*", "")),
        pattern.count("*"),
        pattern,
    )


@dataclass(frozen=True)
class Rule:
    pattern: str
    groups: frozenset[str]


class Matcher:
    """All rules compiled once into a dict of exact paths plus one alternation ordered by specificity."""

    def __init__(self, rules: Mapping[str, Iterable[str]]) -> None:
        self.rules = {validate_pattern(p): Rule(validate_pattern(p), frozenset(g)) for p, g in rules.items()}
        self._exact = {p: r for p, r in self.rules.items() if not is_glob(p)}
        self._globs = sorted((p for p in self.rules if is_glob(p)), key=_specificity)
        self._regex: re.Pattern[str] | None = None
        if self._globs:
            alternatives = (f"(?P<r{i}>{glob_to_regex(p)[1:-1]})" for i, p in enumerate(self._globs))
            self._regex = re.compile("^(?:" + "|".join(alternatives) + ")$")

    def match(self, path: str) -> Rule | None:
        """The deciding rule for an already-normalised path."""
        exact = self._exact.get(path)
        if exact is not None or self._regex is None:
            return exact
        found = self._regex.match(path)
        if found is None or found.lastgroup is None:
            return None
        return self.rules[self._globs[int(found.lastgroup[1:])]]


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    action: str
    path: str
    rule: Rule | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "allowed": self.allowed,
            "decision": "allow" if self.allowed else "deny",
            "reason": self.reason,
            "action": self.action,
            "path": self.path,
            "rule": None if self.rule is None else {"pattern": self.rule.pattern, "groups": sorted(self.rule.groups)},
        }


def decide(matcher: Matcher, principal: Principal, path: str, action: str) -> Decision:
    if action not in ACTIONS:
        return Decision(False, f"unknown action {action!r}", action, path)
    if principal.role == Role.NONE:
        return Decision(False, "no group with the configured prefix: no access", action, path)
    if action in ADMIN_ACTIONS:
        if principal.is_admin:
            return Decision(True, f"{action} is allowed to admins", action, path)
        return Decision(False, f"{action} is for admins only", action, path)
    normal = normalise_path(path)
    if normal is None:
        return Decision(False, "path is ambiguous or malformed (//, '..', %-encoding, trailing /)", action, path)
    rule = matcher.match(normal)
    if principal.is_admin:
        return Decision(True, "admins may read every path", action, normal, rule)
    if rule is None:
        return Decision(False, "no rule matches this path: admins only", action, normal)
    shared = principal.groups & rule.groups
    if shared:
        return Decision(True, f"group {sorted(shared)[0]} is allowed by rule {rule.pattern}", action, normal, rule)
    return Decision(False, f"rule {rule.pattern} allows only {', '.join(sorted(rule.groups))}", action, normal, rule)
