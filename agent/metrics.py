"""Prometheus metrics for operators (optional; ``[control] metrics_port``).

An own ``CollectorRegistry`` (nothing global, so tests and several daemons in one process do not
collide), served by prometheus-client's HTTP server in its own daemon thread, on loopback by
default. ``NullMetrics`` is the same interface doing nothing, used when metrics are off.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["Metrics", "NullMetrics"]


class NullMetrics:
    """Metrics switched off: every call does nothing."""

    port: int | None = None

    def order_sent(self, parent_id: str) -> None:
        """Count a child sent."""

    def fill(self, parent_id: str, qty: float) -> None:
        """Count a fill."""

    def reject(self, parent_id: str) -> None:
        """Count a child the venue refused."""

    def blocked(self, gate: str) -> None:
        """Count a child a risk gate stopped."""

    def remaining(self, parent_id: str, qty: float) -> None:
        """Set a parent's remaining quantity."""

    def feed_batch(self, symbol: str, last_event_ns: int) -> None:
        """Record a batch: feed lag is now minus its last event time."""

    def feed_stale(self, symbol: str, stale: bool) -> None:
        """Set whether a feed is stale."""

    def solve_time(self, seconds: float) -> None:
        """Observe one MPC solve."""

    def halted(self, halted: bool) -> None:
        """Set the kill-switch state."""

    def close(self) -> None:
        """Stop serving."""


class Metrics(NullMetrics):
    """The daemon's Prometheus metrics on an own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._sent = Counter(
            "exec_agent_orders_sent", "Child orders sent", ["parent_id"], registry=r
        )
        self._fill_qty = Counter(
            "exec_agent_filled_shares", "Shares filled", ["parent_id"], registry=r
        )
        self._fills = Counter("exec_agent_fills", "Fill reports applied", ["parent_id"], registry=r)
        self._rejects = Counter(
            "exec_agent_rejects", "Children refused by the venue", ["parent_id"], registry=r
        )
        self._blocked = Counter(
            "exec_agent_blocked_orders", "Children stopped by a risk gate", ["gate"], registry=r
        )
        self._remaining = Gauge(
            "exec_agent_remaining_shares",
            "Parent quantity not yet filled",
            ["parent_id"],
            registry=r,
        )
        self._lag = Gauge(
            "exec_agent_feed_lag_seconds",
            "Wall clock minus the last book's event time",
            ["symbol"],
            registry=r,
        )
        self._stale = Gauge(
            "exec_agent_feed_stale", "1 while a feed is stale", ["symbol"], registry=r
        )
        self._solve = Histogram(
            "exec_agent_solve_seconds",
            "Time of one MPC re-solve",
            registry=r,
            buckets=(1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0),
        )
        self._halted = Gauge("exec_agent_halted", "1 while the kill switch is engaged", registry=r)
        self._server: Any = None
        self.port: int | None = None

    @classmethod
    def serve(cls, addr: str, port: int) -> Metrics:
        """Create the metrics and serve them on ``addr:port`` (0: a free port, see ``.port``)."""
        m = cls()
        server, _thread = start_http_server(port, addr=addr, registry=m.registry)
        m._server = server
        m.port = server.server_port
        return m

    def order_sent(self, parent_id: str) -> None:
        self._sent.labels(parent_id).inc()

    def fill(self, parent_id: str, qty: float) -> None:
        self._fills.labels(parent_id).inc()
        self._fill_qty.labels(parent_id).inc(qty)

    def reject(self, parent_id: str) -> None:
        self._rejects.labels(parent_id).inc()

    def blocked(self, gate: str) -> None:
        self._blocked.labels(gate).inc()

    def remaining(self, parent_id: str, qty: float) -> None:
        self._remaining.labels(parent_id).set(qty)

    def feed_batch(self, symbol: str, last_event_ns: int) -> None:
        self._lag.labels(symbol).set(time.time() - last_event_ns / 1e9)

    def feed_stale(self, symbol: str, stale: bool) -> None:
        self._stale.labels(symbol).set(1.0 if stale else 0.0)

    def solve_time(self, seconds: float) -> None:
        self._solve.observe(seconds)

    def halted(self, halted: bool) -> None:
        self._halted.set(1.0 if halted else 0.0)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
