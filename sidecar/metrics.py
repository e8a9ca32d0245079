"""Prometheus metrics, one registry per app so tests and several apps in one process never share counters."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

# Label values come from this fixed set, so a client cannot grow the series count with random paths.
ACTIONS = frozenset({"read", "playback", "publish", "api", "metrics", "pprof"})
KNOWN_AREAS = frozenset(
    {"mediamtx", "api", "auth", "users", "streams", "overlay", "healthz", "readyz", "version", "metrics"}
)
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})


class Metrics:
    def __init__(self) -> None:
        self._children: dict[tuple[object, ...], Any] = {}
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "sidecar_decisions_total",
            "MediaMTX auth callback decisions by result and action",
            ["result", "action"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sidecar_request_seconds",
            "Request latency by area and method",
            ["area", "method"],
            registry=self.registry,
        )

    def _child(self, metric: Counter | Histogram, *labels: str) -> Any:
        """The labelled series, looked up once: labels() is costly and MediaMTX's callbacks come by the thousand."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def record_decision(self, allowed: bool, action: str) -> None:
        self._child(self.decisions, "allow" if allowed else "deny", action if action in ACTIONS else "unknown").inc()

    def observe(self, path: str, method: str, seconds: float) -> None:
        first = path.lstrip("/").split("/", 1)[0]
        area = first if first in KNOWN_AREAS else "other"
        self._child(self.latency, area, method if method in METHODS else "other").observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
