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
- ``duplicate``: a client order id is never sent twice;
- ``invalid_order``: a quantity or limit price that is not a finite positive number.

A limit of 0 disables that gate (except the last three, which are always on).

``AggregateGates`` holds the limits over the whole daemon, every parent together (15c3-5's
"in the aggregate"): ``max_gross_notional`` (filled plus open, currency),
``max_symbol_qty`` (filled plus open shares per symbol, both sides), ``max_open_orders``
(children open at once), ``max_orders_per_min`` (children sent in any 60 s), and at
admission ``max_parents`` (parents working at once) and ``max_parent_qty`` (shares of one
parent). It is fed what is sent, filled and closed (``record_*``) and reports ``usage()``
against each limit for ``exec-agent status``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["AggregateGates", "AggregateLimits", "GateResult", "RiskGates", "RiskLimits"]

_MINUTE_NS = 60_000_000_000


@dataclass(slots=True)
class _RateWindow:
    """Send times of the last minute (the one rate rule, used by both gate classes)."""

    _times: deque[int] = field(default_factory=deque)

    def count(self, now_ns: int) -> int:
        """Return how many sends fall in the minute before ``now_ns``."""
        while self._times and now_ns - self._times[0] >= _MINUTE_NS:
            self._times.popleft()
        return len(self._times)

    def add(self, now_ns: int) -> None:
        """Remember one send."""
        self._times.append(now_ns)


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
    _recent: _RateWindow = field(default_factory=_RateWindow)

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
        if bad := _invalid_order(qty, limit_px):
            return bad
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
            n = self._recent.count(now_ns)
            if n >= lim.max_orders_per_min:
                return GateResult(False, "rate", f"{n} orders in the last minute")
        return GateResult(True)

    def record_sent(self, client_order_id: str, now_ns: int) -> None:
        """Remember a child that passed and was sent."""
        self._sent_ids.add(client_order_id)
        self._recent.add(now_ns)

    def forbid_ids(self, client_order_ids: Iterable[str]) -> None:
        """Block these ids for ever (every id a journal ever used, ``Journal.client_order_ids``)."""
        self._sent_ids.update(client_order_ids)


def _invalid_order(qty: float, limit_px: float) -> GateResult | None:
    if not (math.isfinite(qty) and qty > 0):
        return GateResult(False, "invalid_order", f"qty {qty}")
    if not (math.isfinite(limit_px) and limit_px > 0):
        return GateResult(False, "invalid_order", f"limit_px {limit_px}")
    return None


@dataclass(frozen=True, slots=True)
class AggregateLimits:
    """Limits over every parent together (0 = off); see the module docstring."""

    max_gross_notional: float = 0.0
    max_symbol_qty: float = 0.0
    max_open_orders: int = 0
    max_orders_per_min: int = 0
    max_parents: int = 0
    max_parent_qty: float = 0.0


@dataclass(slots=True)
class _Exposure:
    symbol: str
    open_qty: float
    limit_px: float
    filled_qty: float = 0.0
    filled_notional: float = 0.0


@dataclass(slots=True)
class AggregateGates:
    """Daemon-wide limits with their state (pure: the caller says what happened, and when).

    Exposure of a child = its filled notional plus its open quantity at its limit price; its
    shares = filled plus open. A child leaves the open count when ``record_closed`` is
    called (filled, cancelled, rejected, expired): its unfilled part is released then.
    """

    limits: AggregateLimits
    _children: dict[str, _Exposure] = field(default_factory=dict)
    _open: set[str] = field(default_factory=set)
    _parents: dict[str, float] = field(default_factory=dict)  # working: id -> qty
    _rate: _RateWindow = field(default_factory=_RateWindow)

    # -- parents -----------------------------------------------------------------------------
    def check_parent(self, parent_id: str, qty: float) -> GateResult:
        """Return whether a parent of ``qty`` shares may start working (at start or submitted)."""
        lim = self.limits
        if not (math.isfinite(qty) and qty > 0):
            return GateResult(False, "invalid_order", f"parent quantity {qty}")
        if lim.max_parent_qty and qty > lim.max_parent_qty:
            return GateResult(False, "max_parent_qty", f"{qty:g} > {lim.max_parent_qty:g}")
        if (
            lim.max_parents
            and parent_id not in self._parents
            and len(self._parents) >= lim.max_parents
        ):
            return GateResult(False, "max_parents", f"{len(self._parents)} parents working already")
        return GateResult(True)

    def record_parent(self, parent_id: str, qty: float) -> None:
        """Remember a parent of ``qty`` shares that is working."""
        self._parents[parent_id] = qty

    def record_parent_done(self, parent_id: str) -> None:
        """Forget a parent that is done (completed, cancelled, past its deadline)."""
        self._parents.pop(parent_id, None)

    # -- children ----------------------------------------------------------------------------
    def check(self, *, symbol: str, qty: float, limit_px: float, now_ns: int) -> GateResult:
        """Return whether one more child may go out (first failing limit otherwise)."""
        if bad := _invalid_order(qty, limit_px):
            return bad
        lim = self.limits
        if lim.max_open_orders and len(self._open) >= lim.max_open_orders:
            return GateResult(False, "max_open_orders", f"{len(self._open)} children open")
        if lim.max_gross_notional:
            gross = self.gross_notional()
            if gross + qty * limit_px > lim.max_gross_notional + 1e-6:
                return GateResult(
                    False,
                    "max_gross_notional",
                    f"{gross:.2f} + {qty * limit_px:.2f} > {lim.max_gross_notional:g}",
                )
        if lim.max_symbol_qty:
            used = self.symbol_qty(symbol)
            if used + qty > lim.max_symbol_qty + 1e-9:
                return GateResult(
                    False,
                    "max_symbol_qty",
                    f"{symbol}: {used:g} + {qty:g} > {lim.max_symbol_qty:g}",
                )
        if lim.max_orders_per_min:
            n = self._rate.count(now_ns)
            if n >= lim.max_orders_per_min:
                return GateResult(False, "rate", f"{n} orders in the last minute")
        return GateResult(True)

    def record_sent(
        self, client_order_id: str, *, symbol: str, qty: float, limit_px: float, now_ns: int
    ) -> None:
        """Remember a child that passed and was sent (or was found in the journal at start)."""
        if client_order_id in self._children:
            return  # a replay of what is known already
        self._children[client_order_id] = _Exposure(symbol, qty, limit_px)
        self._open.add(client_order_id)
        self._rate.add(now_ns)

    def record_fill(self, client_order_id: str, qty: float, px: float) -> None:
        """Move ``qty`` shares of a child from open to filled at ``px`` (unknown ids ignored)."""
        c = self._children.get(client_order_id)
        if c is None:
            return
        c.filled_qty += qty
        c.filled_notional += qty * px
        c.open_qty = max(0.0, c.open_qty - qty)

    def record_closed(self, client_order_id: str) -> None:
        """Release a child's unfilled shares: it is final (filled, cancelled, rejected)."""
        c = self._children.get(client_order_id)
        if c is not None:
            c.open_qty = 0.0
        self._open.discard(client_order_id)

    # -- reading -----------------------------------------------------------------------------
    def gross_notional(self) -> float:
        """Return filled plus open notional over every child, currency."""
        return sum(c.filled_notional + c.open_qty * c.limit_px for c in self._children.values())

    def symbol_qty(self, symbol: str) -> float:
        """Return filled plus open shares of ``symbol``, both sides."""
        return sum(c.filled_qty + c.open_qty for c in self._children.values() if c.symbol == symbol)

    def usage(self, now_ns: int) -> dict[str, dict[str, float | int | dict[str, float]]]:
        """Return each limit with what is used of it (``limit`` 0 = off), for a status reply."""
        lim = self.limits
        symbols = sorted({c.symbol for c in self._children.values()})
        return {
            "gross_notional": {"used": self.gross_notional(), "limit": lim.max_gross_notional},
            "symbol_qty": {
                "used": {s: self.symbol_qty(s) for s in symbols},
                "limit": lim.max_symbol_qty,
            },
            "open_orders": {"used": len(self._open), "limit": lim.max_open_orders},
            "orders_last_min": {"used": self._rate.count(now_ns), "limit": lim.max_orders_per_min},
            "parents": {"used": len(self._parents), "limit": lim.max_parents},
            "parent_qty": {
                "used": max(self._parents.values(), default=0.0),
                "limit": lim.max_parent_qty,
            },
        }
