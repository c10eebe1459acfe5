"""Pre-trade risk gates, independent of the optimiser (pure).

Every child passes every gate before it is recorded and sent (SEC 15c3-5 style: the checks sit
between the decision and the venue, and a blocked order names the gate that blocked it):

- ``max_child_qty`` / ``max_child_notional``: size of one child (shares / currency);
- ``collar``: the limit price no further than ``max_collar_bps`` from the current mid;
- ``depth_share``: at most ``max_depth_share`` of the visible depth inside the limit;
- ``rate``: at most ``max_orders_per_min`` children per minute, all parents together;
- ``stale_book`` / ``invalid_book``: no order on a book older than ``stale_book_s`` (event
  time) or without a valid mid;
- ``parent_overfill``: open plus filled never above the parent quantity;
- ``duplicate``: a client order id is never sent twice.

A limit of 0 disables that gate (except the last two, which are always on).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

__all__ = ["GateResult", "RiskGates", "RiskLimits"]


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """Limits of the gates (0 = gate off)."""

    max_child_qty: float = 0.0
    max_child_notional: float = 0.0
    max_collar_bps: float = 0.0
    max_depth_share: float = 0.0
    max_orders_per_min: int = 0
    stale_book_s: float = 0.0


@dataclass(frozen=True, slots=True)
class GateResult:
    """``ok`` or the gate that blocked, with the numbers that decided it."""

    ok: bool
    gate: str = ""
    detail: str = ""


@dataclass(slots=True)
class RiskGates:
    """The gates with their state (sent ids, recent send times)."""

    limits: RiskLimits
    _sent_ids: set[str] = field(default_factory=set)
    _recent: deque[int] = field(default_factory=deque)

    def check(
        self,
        *,
        client_order_id: str,
        qty: float,
        limit_px: float,
        mid: float,
        book_ts_ns: int,
        now_ns: int,
        depth_inside_limit: float,
        filled_qty: float,
        open_qty: float,
        parent_qty: float,
    ) -> GateResult:
        """Return whether the child may go out (first failing gate otherwise)."""
        lim = self.limits
        if client_order_id in self._sent_ids:
            return GateResult(False, "duplicate", client_order_id)
        if filled_qty + open_qty + qty > parent_qty + 1e-9:
            return GateResult(
                False,
                "parent_overfill",
                f"filled {filled_qty} + open {open_qty} + {qty} > {parent_qty}",
            )
        if not (math.isfinite(mid) and mid > 0):
            return GateResult(False, "invalid_book", f"mid {mid}")
        if lim.stale_book_s and now_ns - book_ts_ns > lim.stale_book_s * 1e9:
            return GateResult(
                False, "stale_book", f"book is {(now_ns - book_ts_ns) / 1e9:.1f} s old"
            )
        if lim.max_child_qty and qty > lim.max_child_qty:
            return GateResult(False, "max_child_qty", f"{qty} > {lim.max_child_qty}")
        if lim.max_child_notional and qty * limit_px > lim.max_child_notional:
            return GateResult(
                False, "max_child_notional", f"{qty * limit_px:.2f} > {lim.max_child_notional}"
            )
        if lim.max_collar_bps:
            dev = abs(limit_px / mid - 1.0) * 1e4
            if dev > lim.max_collar_bps + 1e-9:
                return GateResult(False, "collar", f"{dev:.1f} bps > {lim.max_collar_bps}")
        if lim.max_depth_share and qty > lim.max_depth_share * depth_inside_limit:
            return GateResult(
                False, "depth_share", f"{qty} > {lim.max_depth_share} x {depth_inside_limit}"
            )
        if lim.max_orders_per_min:
            while self._recent and now_ns - self._recent[0] >= 60_000_000_000:
                self._recent.popleft()
            if len(self._recent) >= lim.max_orders_per_min:
                return GateResult(False, "rate", f"{len(self._recent)} orders in the last minute")
        return GateResult(True)

    def record_sent(self, client_order_id: str, now_ns: int) -> None:
        """Remember a child that passed and was sent."""
        self._sent_ids.add(client_order_id)
        self._recent.append(now_ns)
