"""Prometheus metrics, one registry per app so tests and several apps in one process never share counters."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

# Label values come from this fixed set, so a client cannot grow the series count with random paths.
KNOWN_AREAS = frozenset({"api", "auth", "users", "streams", "overlay", "healthz", "readyz", "version", "metrics"})


class Metrics:
    def __init__(self) -> None:
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
        known = action if action in {"read", "playback", "publish", "api", "metrics", "pprof"} else "unknown"
        self.decisions.labels("allow" if allowed else "deny", known).inc()

    def observe(self, path: str, method: str, seconds: float) -> None:
        first = path.lstrip("/").split("/", 1)[0]
        area = first if first in KNOWN_AREAS else "other"
        self.latency.labels(area, method if method in {"GET", "POST", "PUT", "PATCH", "DELETE"} else "other").observe(
            seconds
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
