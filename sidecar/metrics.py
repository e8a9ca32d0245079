"""Prometheus metrics, one registry per app so tests and several apps in one process never share counters."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

# Label values come from this fixed set, so a client cannot grow the series count with random paths.
ACTIONS = frozenset({"read", "playback", "publish", "api", "metrics", "pprof"})
KNOWN_AREAS = frozenset({"api", "auth", "users", "streams", "overlay", "healthz", "readyz", "version", "metrics"})


class Metrics:
    def __init__(self) -> None:
        self._decision_children: dict[tuple[bool, str], Counter] = {}
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "sidecar_decisions_total",
            "Access decisions by result and action",
            ["result", "action"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sidecar_request_seconds",
            "Request latency by area and method",
            ["area", "method"],
            registry=self.registry,
        )

    def record_decision(self, allowed: bool, action: str) -> None:
        known = action if action in ACTIONS else "unknown"
        key = (allowed, known)
        child = self._decision_children.get(key)
        if child is None:  # labels() is costly and this runs for every MediaMTX callback
            child = self._decision_children[key] = self.decisions.labels("allow" if allowed else "deny", known)
        child.inc()

    def observe(self, path: str, method: str, seconds: float) -> None:
        first = path.lstrip("/").split("/", 1)[0]
        area = first if first in KNOWN_AREAS else "other"
        self.latency.labels(area, method if method in {"GET", "POST", "PUT", "PATCH", "DELETE"} else "other").observe(
            seconds
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
