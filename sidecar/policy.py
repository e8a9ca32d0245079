"""May they: path rules (`pattern → groups`) compiled into one matcher, and `decide(principal, path, action)`."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from sidecar.identity import Principal, Role

VIEW_ACTIONS = frozenset({"read", "playback"})
SERVICE_ACTIONS = frozenset({"api", "metrics", "pprof"})  # no stream path: MediaMTX sends none for these
ADMIN_ACTIONS = SERVICE_ACTIONS | {"publish"}
ACTIONS = VIEW_ACTIONS | ADMIN_ACTIONS

# MediaMTX path names use these characters; anything else (`%`, `\`, `?`, `#`, spaces, controls) is refused.
_SEGMENT = re.compile(r"[A-Za-z0-9_.~:@+=,-]+")
_PATTERN_SEGMENT = re.compile(r"[A-Za-z0-9_.~:@+=,*-]+")
MAX_PATH_LENGTH = 512
MEMO_SIZE = 100_000


class InvalidPattern(ValueError):
    """A rule pattern that cannot be compiled; the message says why."""


@lru_cache(maxsize=65_536)
def normalise_path(raw: str) -> str | None:
    """The canonical form of a stream path, or None when it is ambiguous and must be denied.

    A single leading `/` is accepted (URLs carry one). Empty segments (`//`, a trailing `/`), `.` and `..`
    segments and percent-encoding are refused rather than resolved: two spellings of one path would let a rule
    be sidestepped.
    """
    path = raw[1:] if raw.startswith("/") else raw
    if not path or len(path) > MAX_PATH_LENGTH or path.startswith("~"):
        return None  # a leading `~` makes MediaMTX read a permission path as a regular expression
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
    if path.startswith("~"):
        raise InvalidPattern("pattern must not start with '~' (MediaMTX would read it as a regular expression)")
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


def segment_matches(pattern: str, segment: str) -> bool:
    """`*` within one segment, without backtracking blow-up: the classic two-pointer wildcard walk, O(n·m)."""
    p = s = 0
    star = -1
    mark = 0
    while s < len(segment):
        if p < len(pattern) and pattern[p] != "*" and pattern[p] == segment[s]:
            p += 1
            s += 1
        elif p < len(pattern) and pattern[p] == "*":
            star, mark = p, s
            p += 1
        elif star >= 0:
            p = star + 1
            mark += 1
            s = mark
        else:
            return False
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)


class _Node:
    """One state of the rule automaton; `**` nodes loop on any segment."""

    __slots__ = ("globstars", "literal", "loops", "rule", "wild")

    def __init__(self, loops: bool = False) -> None:
        self.literal: dict[str, _Node] = {}
        self.wild: dict[str, _Node] = {}
        self.globstars: dict[bool, _Node] = {}  # key: at least one segment (a trailing `**`)
        self.loops = loops
        self.rule: Rule | None = None


class Matcher:
    """All rules compiled once into one segment automaton: a trie with `**` loops, run as an NFA.

    Matching costs O(path segments × live states), never exponential, whatever the patterns (a backtracking
    regex over several `**` can take seconds on a long path). When several rules match, the most specific wins.
    """

    def __init__(self, rules: Mapping[str, Iterable[str]]) -> None:
        self.rules: dict[str, Rule] = {}
        self._root = _Node()
        self._folded_root = _Node()
        self._memo: dict[str, Rule | None] = {}
        self._upper_patterns = any(pattern.casefold() != pattern for pattern in rules)
        for raw, groups in rules.items():
            pattern = validate_pattern(raw)
            rule = Rule(pattern, frozenset(groups))
            self.rules[pattern] = rule
            self._insert(self._root, pattern, rule)
            self._insert(self._folded_root, pattern.casefold(), rule)

    @staticmethod
    def _node(root: _Node, pattern: str) -> _Node:
        """The trie's node for `pattern`, made on the way when missing."""
        node = root
        segments = pattern.split("/")
        for index, segment in enumerate(segments):
            if segment == "**":
                at_least_one = index == len(segments) - 1
                node = node.globstars.setdefault(at_least_one, _Node(loops=True))
            elif "*" in segment:
                node = node.wild.setdefault(segment, _Node())
            else:
                node = node.literal.setdefault(segment, _Node())
        return node

    @classmethod
    def _insert(cls, root: _Node, pattern: str, rule: Rule) -> None:
        node = cls._node(root, pattern)
        if node.rule is None or _specificity(rule.pattern) < _specificity(node.rule.pattern):
            node.rule = rule

    def replace(self, pattern: str, groups: Iterable[str] | None) -> None:
        """Change one rule in place (`groups` None: remove it), leaving the matcher as building it anew from the
        changed rules would: microseconds, where a rebuild costs milliseconds per hundred rules."""
        pattern = validate_pattern(pattern)
        if groups is None:
            self.rules.pop(pattern, None)
        else:
            self.rules[pattern] = Rule(pattern, frozenset(groups))
        own = self.rules.get(pattern)
        self._node(self._root, pattern).rule = own
        folded = pattern.casefold()
        alike = [rule for name, rule in self.rules.items() if name.casefold() == folded]
        self._node(self._folded_root, folded).rule = min(
            alike, key=lambda rule: _specificity(rule.pattern), default=None
        )
        self._upper_patterns = any(name.casefold() != name for name in self.rules)
        self._memo.clear()

    @staticmethod
    def _closure(states: list[_Node]) -> list[_Node]:
        """Add the states reachable without consuming a segment (a non-trailing `**` may match zero)."""
        seen = {id(node): node for node in states}
        stack = list(states)
        while stack:
            node = stack.pop()
            zero = node.globstars.get(False)
            if zero is not None and id(zero) not in seen:
                seen[id(zero)] = zero
                stack.append(zero)
        return list(seen.values())

    def _run(self, root: _Node, path: str) -> Rule | None:
        states = self._closure([root])
        for segment in path.split("/"):
            following: list[_Node] = []
            for node in states:
                if node.loops:
                    following.append(node)
                exact = node.literal.get(segment)
                if exact is not None:
                    following.append(exact)
                following.extend(child for pattern, child in node.wild.items() if segment_matches(pattern, segment))
                trailing = node.globstars.get(True)
                if trailing is not None:
                    following.append(trailing)
            if not following:
                return None
            states = self._closure(following)
        found = [node.rule for node in states if node.rule is not None]
        return min(found, key=lambda rule: _specificity(rule.pattern)) if found else None

    def match(self, path: str) -> Rule | None:
        """The deciding rule for an already-normalised path (remembered: the same paths are asked again and again,
        and a matcher is rebuilt whenever the rules change)."""
        try:
            return self._memo[path]
        except KeyError:
            pass
        if len(self._memo) >= MEMO_SIZE:
            self._memo.clear()
        found = self._memo[path] = self._run(self._root, path)
        return found

    def match_ignoring_case(self, path: str) -> Rule | None:
        """The rule that would decide if letter case did not count, to spot paths that dodge a rule by case."""
        return self._run(self._folded_root, path.casefold())

    def case_ambiguous(self, path: str, rule: Rule | None) -> bool:
        """True when ignoring letter case would pick another rule than `rule` (the case-sensitive choice)."""
        if path.casefold() == path and not self._upper_patterns:
            return False  # nothing to fold on either side: the same answer, without a second run
        return self.match_ignoring_case(path) != rule


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
    if action in SERVICE_ACTIONS:
        if principal.is_admin:
            return Decision(True, f"{action} is allowed to admins", action, path)
        return Decision(False, f"{action} is for admins only", action, path)
    normal = normalise_path(path)
    if normal is None:
        return Decision(False, "path is ambiguous or malformed (//, '..', %-encoding, trailing /)", action, path)
    rule = matcher.match(normal)
    if principal.is_admin:
        return Decision(True, f"admins may {action} every path", action, normal, rule)
    if action == "publish":
        return Decision(False, "publish is for admins only", action, normal, rule)
    if matcher.case_ambiguous(normal, rule):
        reason = "path differs only in letter case from a more specific rule: ambiguous, denied"
        return Decision(False, reason, action, normal, rule)
    if rule is None:
        return Decision(False, "no rule matches this path: admins only", action, normal)
    shared = principal.groups & rule.groups
    if shared:
        return Decision(True, f"group {sorted(shared)[0]} is allowed by rule {rule.pattern}", action, normal, rule)
    allowed = ", ".join(sorted(rule.groups)) or "admins"
    return Decision(False, f"rule {rule.pattern} allows only {allowed}", action, normal, rule)
