"""The async shell: moves books and order events between the feeds, the core and the broker.

One task per symbol reads that symbol's feed and drives every parent order on it; one task pumps
the broker's order events into the trackers. Each batch is cut at the orders' decision times so
that a decision sees exactly the book in force at its time, and the simulated venue executes a
child at ``decision + latency`` against the book then in force.

At every decision time of a parent order (period starts, then retries within the last period):
re-estimate g_t from the rolling window (vectorised walk of the book + quadratic fit), forecast
the later periods with the intraday profile, re-solve the allocation of what is left (from fills)
to the deadline, and send this period's child. A TWAP shadow runs beside it on its own simulated
broker and the same books, as the benchmark in ``run.summary``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import structlog
from pydantic import ValidationError

from agent.brokers.base import BookDrivenBroker, Broker
from agent.brokers.matching import collar_limit_px
from agent.brokers.simulated import SimulatedBroker
from agent.config import AgentConfig, OrderConfig, RiskConfig, key_path
from agent.control import Control, ControlServer
from agent.errors import BrokerError, BrokerRejected, InvariantViolation
from agent.faults import crash_point
from agent.impact.book_walk import BeyondDepth, DepthPolicy, cost_curve, time_weights
from agent.impact.fit import fit_quadratic
from agent.impact.profile import IntradayProfile
from agent.journal import Journal, ParentHistory
from agent.metrics import NullMetrics
from agent.model import ChildOrder, OrderEvent, OrderFilled, OrderRejected, OrderStatus, Side
from agent.mpc.costs import CostSet
from agent.orders.tracker import OrderTracker, Transition
from agent.planner import (
    Decision,
    PeriodGrid,
    decide_mpc,
    nonparametric_costs,
    quadratic_costs,
    twap_child_qty,
)
from agent.risk import RiskGates, RiskLimits
from agent.window import RollingWindow
from feeds.base import BookFeed
from feeds.model import BookBatch

__all__ = ["Control", "Daemon", "ParentRunner", "RunSummary", "run"]

_NS = 1_000_000_000
_EVENT_NAMES = {
    "acknowledged": "order.acknowledged",
    "partially_filled": "order.partially_filled",
    "filled": "order.filled",
    "cancelled": "order.cancelled",
    "rejected": "order.rejected",
}

FeedFactory = Callable[[str], BookFeed]


@dataclass(slots=True)
class RunSummary:
    """Outcome of one parent order (also logged as ``run.summary``)."""

    parent_id: str
    symbol: str
    side: str
    target_qty: float
    filled_qty: float
    avg_px: float
    arrival_mid: float
    shortfall_bps: float
    twap_filled_qty: float
    twap_avg_px: float
    twap_shortfall_bps: float
    n_periods: int
    n_children: int
    status: str

    def as_log(self) -> dict[str, Any]:
        """Return the fields for the log line (NaN as None)."""
        out: dict[str, Any] = {}
        for k in self.__slots__:  # type: ignore[attr-defined]
            v = getattr(self, k)
            out[k] = None if isinstance(v, float) and not math.isfinite(v) else v
        return out


def _shortfall_bps(side: Side, avg_px: float, arrival_mid: float) -> float:
    # Positive = cost, for buys and sells alike.
    if not (math.isfinite(avg_px) and math.isfinite(arrival_mid) and arrival_mid > 0):
        return math.nan
    return side.sign * (avg_px - arrival_mid) / arrival_mid * 1e4


@dataclass(slots=True)
class _Leg:
    """One strategy working the parent: the MPC itself or its TWAP shadow."""

    name: str
    broker: Broker
    tracker: OrderTracker
    prefix: str
    n_sent: int = 0
    log_level: str = "info"
    children: list[str] = field(default_factory=list)


class ParentRunner:
    """Works one parent order: decisions at period boundaries, children to the broker.

    Args:
        order: The parent order's config.
        cfg: The whole config (estimation, mpc, broker sections).
        broker: Where the MPC children go.
        shadow: Simulated broker for the TWAP benchmark (None: no benchmark).
        profile: Intraday liquidity profile for the forecast.
    """

    def __init__(
        self,
        order: OrderConfig,
        cfg: AgentConfig,
        broker: Broker,
        shadow: SimulatedBroker | None,
        profile: IntradayProfile,
        gates: RiskGates | None = None,
        journal: Journal | None = None,
        control: Control | None = None,
        metrics: NullMetrics | None = None,
    ) -> None:
        self.control = control or Control()
        self.metrics = metrics or NullMetrics()
        self.gates = gates
        # Per-order limits ([orders.risk]) apply on top of the global ones ([risk]).
        self.order_gates = (
            RiskGates(_limits(order.risk)) if order.risk is not None and gates else None
        )
        self.journal = journal
        self._last_row: tuple[np.ndarray, np.ndarray] | None = None
        self.order = order
        self.cfg = cfg
        self.side = order.side
        self.grid = PeriodGrid(order.start_ns, order.end_ns, int(order.period_s * _NS))
        self.window = RollingWindow(
            order.symbol, int(cfg.estimation.window_s * _NS), cfg.estimation.max_window_rows
        )
        self.profile = profile
        est = cfg.estimation
        max_size = est.max_size or max(10 * order.lot, 3 * order.quantity / self.grid.n)
        self.sizes = np.linspace(max_size / est.n_sizes, max_size, est.n_sizes)
        self.policy = DepthPolicy(BeyondDepth(est.beyond_depth), est.penalty_bps)
        self.mpc = _Leg("mpc", broker, OrderTracker(order.quantity), order.id)
        self.twap = (
            _Leg(
                "twap", shadow, OrderTracker(order.quantity), f"{order.id}-twap", log_level="debug"
            )
            if shadow is not None
            else None
        )
        self.log = structlog.get_logger().bind(parent_id=order.id, symbol=order.symbol)
        self.arrival_mid = math.nan
        self._last_mid = math.nan
        self._last_ts = -1
        self._k_next = 0  # next period to decide
        self._retry_next = 0  # next retry time in the last period (ns)
        self.n_decisions = 0
        self.done = False
        self.cancelled = False
        self._carry = 0.0  # lot-rounding residual between decisions (planner.diffuse_lots)
        self.sent_at: dict[str, float] = {}  # client order id -> loop time sent (ack watchdog)

    def restore(self, h: ParentHistory) -> None:
        """Resume from the journal: replay intents and events into fresh trackers."""
        if h.empty:
            return
        legs = {"mpc": self.mpc, "twap": self.twap}
        for name, item in h.items:
            leg = legs.get(name)
            if leg is None:
                continue
            if isinstance(item, ChildOrder):
                leg.tracker.on_submitted(item, item.ts_created_ns)
                if leg is self.mpc and self.gates is not None:
                    self.gates.record_sent(item.client_order_id, item.ts_created_ns)
                leg.children.append(item.client_order_id)
                leg.n_sent += 1
            else:
                leg.tracker.on_event(item)
        if h.periods:
            self._k_next = max(h.periods) + 1
            if self._k_next >= self.grid.n:
                self._retry_next = self.grid.start_of(self.grid.n - 1)
        self.arrival_mid = h.arrival_mid
        self._carry = h.carry
        t = self.mpc.tracker
        self.log.info(
            "order.restored",
            periods_decided=len(h.periods),
            children=self.mpc.n_sent,
            filled_qty=t.filled_qty,
            open_qty=t.open_qty,
            remaining_qty=t.remaining_qty,
        )
        for c in t.children.values():
            if not c.state.terminal:
                # Sent before the restart and never closed: it may still be working. Its shares
                # stay reserved until the venue reports on it; it is never re-sent as new.
                self.log.error(
                    "order.in_doubt",
                    client_order_id=c.order.client_order_id,
                    qty=c.order.qty,
                    filled_qty=c.filled_qty,
                    after_restart=True,
                )

    def in_doubt(self) -> list[str]:
        """Return the MPC children sent but not closed (before reconciliation: in doubt)."""
        return [k for k, c in self.mpc.tracker.children.items() if not c.state.terminal]

    # -- scheduling ---------------------------------------------------------------------------
    def next_time(self) -> int | None:
        """Return the next decision time in ns (None once the deadline has passed)."""
        if self.done:
            return None
        if self._k_next < self.grid.n:
            return self.grid.start_of(self._k_next)
        if self._retry_next < self.order.end_ns:
            return self._retry_next
        return self.order.end_ns

    def observe(self, seg: BookBatch) -> None:
        """Take in validated rows that precede the next decision time."""
        if not len(seg):
            return
        self.window.append(seg)
        self._last_mid = float(seg.mid[-1])
        self._last_row = (
            (seg.ask_px[-1], seg.ask_sz[-1])
            if self.side is Side.BUY
            else (seg.bid_px[-1], seg.bid_sz[-1])
        )
        self._last_ts = int(seg.ts_event_ns[-1])

    async def on_time(self, t_ns: int, now_ns: int | None = None) -> None:
        """Act at decision time ``t_ns`` (equal to ``next_time()``).

        Args:
            t_ns: The decision time.
            now_ns: Event time of the first book after ``t_ns``. When it is already past the
                end of the period (the feed was silent, a halt), the period is skipped rather
                than traded late in a burst with the next ones; the MPC re-plans the rest.
        """
        if math.isnan(self.arrival_mid) and math.isfinite(self._last_mid):
            self.arrival_mid = self._last_mid
        if self._k_next < self.grid.n:
            k = self._k_next
            self._k_next += 1
            if now_ns is not None and k < self.grid.n - 1 and now_ns >= self.grid.start_of(k + 1):
                self.n_decisions += 1
                self.log.warning(
                    "mpc.step",
                    period=k,
                    n_periods=self.grid.n,
                    ts_ns=t_ns,
                    child_qty=0.0,
                    remaining_qty=self.mpc.tracker.remaining_qty,
                    status="skipped",
                    message="no book during the period",
                    next_book_ts_ns=now_ns,
                )
                return
            if k == self.grid.n - 1:
                self._retry_next = t_ns + int(self.cfg.mpc.final_retry_s * _NS)
            await self._decide(k, t_ns)
        elif t_ns < self.order.end_ns:
            self._retry_next = t_ns + int(self.cfg.mpc.final_retry_s * _NS)
            await self._final_retry(t_ns)
        else:
            self.done = True
            self.log.info(
                "order.deadline_reached",
                remaining_qty=self.mpc.tracker.remaining_qty,
                open_qty=self.mpc.tracker.open_qty,
            )

    # -- decisions ----------------------------------------------------------------------------
    async def _decide(self, k: int, t_ns: int) -> None:
        tracker = self.mpc.tracker
        remaining = tracker.uncommitted_qty
        twap_qty = twap_child_qty(
            self.grid,
            k,
            tracker.parent_qty,
            tracker.filled_qty + tracker.open_qty,
            self.order.lot,
        )
        fields: dict[str, Any] = {}
        if not math.isfinite(self._last_mid):
            decision = Decision(k, 0.0, np.zeros(0), math.nan, "no_book", "no valid book yet", 0.0)
        else:
            costs, fields = self._estimate(k, t_ns)
            if costs is not None:
                decision = decide_mpc(
                    self.grid,
                    k,
                    remaining,
                    costs,
                    lot=self.order.lot,
                    max_child_qty=self.order.max_child_qty,
                    fallback_twap_qty=(
                        twap_qty if self.cfg.mpc.on_solve_failure == "twap" else None
                    ),
                    carry=self._carry,
                )
                self._carry = decision.carry
                if decision.status == "twap_fallback":
                    self.log.warning("mpc.solve_failed", period=k, message=decision.message)
            else:
                decision = Decision(
                    k,
                    min(twap_qty, remaining),
                    np.zeros(0),
                    math.nan,
                    "twap_fallback",
                    "no impact estimate",
                    0.0,
                )
        self.n_decisions += 1
        if decision.solve_ms:
            self.metrics.solve_time(decision.solve_ms / 1e3)
        if self.journal is not None:
            self.journal.decision(self.order.id, k, self.arrival_mid, self._carry)
            crash_point("decided")
        self.log.info(
            "mpc.step",
            period=k,
            n_periods=self.grid.n,
            ts_ns=t_ns,
            remaining_qty=tracker.remaining_qty,
            open_qty=tracker.open_qty,
            child_qty=decision.child_qty,
            lam=None if math.isnan(decision.lam) else decision.lam,
            status=decision.status,
            solve_ms=round(decision.solve_ms, 4),
            mid=self._last_mid if math.isfinite(self._last_mid) else None,
            **fields,
        )
        await self._send(self.mpc, decision.child_qty, t_ns)
        if self.twap is not None:
            tw = self.twap.tracker
            q = twap_child_qty(
                self.grid, k, tw.parent_qty, tw.filled_qty + tw.open_qty, self.order.lot
            )
            await self._send(self.twap, min(q, tw.uncommitted_qty), t_ns)

    def _estimate(self, k: int, t_ns: int) -> tuple[CostSet | None, dict[str, Any]]:
        """Re-estimate g from the window and forecast periods k..N-1 (None: no estimate)."""
        window = self.window.view(t_ns)
        if len(window) < self.cfg.estimation.min_snapshots:
            return None, {"n_snapshots": len(window), "fit_status": "insufficient_data"}
        w = (
            time_weights(window.ts_event_ns, t_ns)
            if self.cfg.estimation.weighting == "time"
            else None
        )
        curve = cost_curve(window, self.side.value, self.sizes, self.policy, weights=w)
        fit = fit_quadratic(curve)
        fields: dict[str, Any] = {
            "model": self.cfg.mpc.model,
            "beta": fit.beta,
            "gamma": fit.gamma,
            "fit_r2": fit.r2,
            "fit_rmse": fit.rmse,
            "fit_status": fit.status,
            "n_snapshots": fit.n_snapshots,
            "frac_beyond_depth": fit.frac_beyond_depth,
        }
        if fit.frac_beyond_depth > 0:
            fields["beyond_depth_policy"] = self.policy.kind.value
        starts = self.grid.starts(k)
        if self.cfg.mpc.model == "nonparametric":
            knots, slopes = curve.segments()
            if slopes.size == 0:
                return None, fields
            b = self.profile.bucket(starts)
            mc = self.profile.cost_mult[b] / self.profile.cost_mult[b[0]]
            return nonparametric_costs(knots[:-1], slopes, mc), fields
        if not (math.isfinite(fit.beta) and math.isfinite(fit.gamma)):
            return None, fields
        mb, mg = self.profile.multipliers(starts)
        return quadratic_costs(fit.beta, fit.gamma, mb, mg), fields

    async def cancel_open(self, reason: str) -> int:
        """Ask the broker to cancel every open MPC child; return how many were asked."""
        n = 0
        for coid, c in list(self.mpc.tracker.children.items()):
            if not c.state.terminal:
                self.log.warning("order.cancel_requested", client_order_id=coid, reason=reason)
                try:
                    await self.mpc.broker.cancel(coid)
                except BrokerError as e:
                    self.log.error("order.cancel_failed", client_order_id=coid, error=str(e))
                n += 1
        return n

    def cancel_parent(self, reason: str) -> None:
        """Stop working this parent: no new child from now on (open ones: see cancel_open)."""
        if not self.cancelled:
            self.cancelled = True
            self.done = True
            self.log.warning(
                "order.parent_cancelled",
                reason=reason,
                filled_qty=self.mpc.tracker.filled_qty,
                remaining_qty=self.mpc.tracker.remaining_qty,
            )

    def status(self) -> dict[str, Any]:
        """Return the parent's state for ``exec-agent status``."""
        t = self.mpc.tracker
        s = self.summary()
        return {
            "parent_id": self.order.id,
            "symbol": self.order.symbol,
            "side": self.side.value,
            "quantity": t.parent_qty,
            "filled_qty": t.filled_qty,
            "open_qty": t.open_qty,
            "remaining_qty": t.remaining_qty,
            "avg_px": None if not math.isfinite(t.avg_px) else t.avg_px,
            "shortfall_bps": None if not math.isfinite(s.shortfall_bps) else s.shortfall_bps,
            "children": self.mpc.n_sent,
            "periods_decided": min(self._k_next, self.grid.n),
            "n_periods": self.grid.n,
            "state": s.status if self.done else "working",
        }

    async def _final_retry(self, t_ns: int) -> None:
        for leg in (self.mpc, self.twap):
            if leg is None:
                continue
            q = leg.tracker.uncommitted_qty
            if leg.tracker.n_open == 0 and q > 0:
                if leg is self.mpc:
                    self.log.info("mpc.final_retry", ts_ns=t_ns, child_qty=q)
                await self._send(leg, q, t_ns)

    async def _send(self, leg: _Leg, qty: float, t_ns: int) -> None:
        cap = self.order.max_child_qty
        if cap > 0:
            qty = min(qty, cap)
        qty = min(qty, leg.tracker.uncommitted_qty)
        if qty <= 0 or not math.isfinite(self._last_mid):
            return
        coid = f"{leg.prefix}-{leg.n_sent + 1:05d}"
        limit_px = collar_limit_px(self.side, self._last_mid, self.cfg.broker.collar_bps)
        if leg is self.mpc:
            blocked = self._gate(leg, coid, float(qty), limit_px, t_ns)
            if blocked is not None:
                gate, detail = blocked
                self.metrics.blocked(gate)
                self.log.warning(
                    "risk.blocked", gate=gate, detail=detail, client_order_id=coid, qty=float(qty)
                )
                return
        leg.n_sent += 1
        child = ChildOrder(
            client_order_id=coid,
            parent_id=self.order.id,
            symbol=self.order.symbol,
            side=self.side,
            qty=float(qty),
            limit_px=limit_px,
            ts_created_ns=t_ns,
        )
        if self.journal is not None:
            await self.journal.intent(leg.name, child)  # durable before it can reach the venue
            crash_point("intent_durable")
        leg.tracker.on_submitted(child, t_ns)
        leg.children.append(coid)
        self.log.log(
            _level(leg.log_level),
            "order.submitted",
            strategy=leg.name,
            client_order_id=coid,
            qty=child.qty,
            limit_px=child.limit_px,
            ts_ns=t_ns,
        )
        if leg is self.mpc:
            self.sent_at[coid] = asyncio.get_running_loop().time()
            self.metrics.order_sent(self.order.id)
        try:
            await leg.broker.submit(child)
            crash_point("submitted")
        except BrokerRejected as e:
            # Refused before it reached the book: nothing executed, the quantity is free again.
            self.log.warning(
                "order.submit_rejected", client_order_id=coid, reason=e.reason or str(e)
            )
            self.apply(leg, OrderRejected(coid, t_ns, e.reason or str(e)))
        except BrokerError as e:
            # In doubt: it may have reached the venue. It stays open (never re-sent as new);
            # its fate comes from the venue's reports or a status query.
            self.log.error(
                "order.in_doubt", client_order_id=coid, error=str(e), retryable=e.retryable
            )

    def _gate(
        self, leg: _Leg, coid: str, qty: float, limit_px: float, t_ns: int
    ) -> tuple[str, str] | None:
        """Return ``(gate, detail)`` of the first gate that stops this child, else None.

        The operator's and the session's gates first (kill switch, broker down, children per
        parent), then the pre-trade limits, global then per order. A child that passes is
        recorded by the gates (duplicate guard, rate).
        """
        if self.control.halted:
            return "halted", "kill switch engaged"
        if not getattr(leg.broker, "available", True):
            # Denied, not queued: a child sent into a dead session would only be in doubt.
            return "broker_unavailable", f"{leg.broker.name} session is not active"
        cap_n = self.cfg.risk.max_children_per_parent
        if self.order.risk is not None and self.order.risk.max_children_per_parent:
            cap_n = min(x for x in (cap_n, self.order.risk.max_children_per_parent) if x)
        if cap_n and leg.n_sent >= cap_n:
            # Counted from the journal's intents, so a kill -9 and a restart do not reset it.
            return "max_children_per_parent", f"{leg.n_sent} children sent, limit {cap_n}"
        if self.gates is None:
            return None
        px, sz = self._last_row if self._last_row is not None else (np.zeros(0), np.zeros(0))
        with np.errstate(invalid="ignore"):
            inside = (px <= limit_px) if self.side is Side.BUY else (px >= limit_px)
        args = {
            "client_order_id": coid,
            "qty": qty,
            "limit_px": limit_px,
            "mid": self._last_mid,
            "book_ts_ns": self._last_ts,
            "now_ns": t_ns,
            "depth_inside_limit": float(sz[inside].sum()),
            "filled_qty": leg.tracker.filled_qty,
            "open_qty": leg.tracker.open_qty,
            "parent_qty": leg.tracker.parent_qty,
        }
        res = self.gates.check(**args)
        if not res.ok:
            return res.gate, res.detail
        if self.order_gates is not None:
            res = self.order_gates.check(**args)
            if not res.ok:
                return f"order.{res.gate}", res.detail
            self.order_gates.record_sent(coid, t_ns)
        self.gates.record_sent(coid, t_ns)
        return None

    # -- events -------------------------------------------------------------------------------
    def leg_for(self, client_order_id: str) -> _Leg | None:
        """Return the leg that owns a client order id."""
        if self.twap is not None and client_order_id in self.twap.tracker.children:
            return self.twap
        if client_order_id in self.mpc.tracker.children:
            return self.mpc
        return None

    def apply(self, leg: _Leg, event: OrderEvent) -> Transition:
        """Apply a broker event to the leg's tracker and log the state change."""
        tr = leg.tracker.on_event(event)
        if tr.applied and self.journal is not None:
            self.journal.event(self.order.id, leg.name, event)
            crash_point("event_applied")
        if tr.applied and leg is self.mpc:
            if tr.fill_qty:
                self.metrics.fill(self.order.id, tr.fill_qty)
            if isinstance(event, OrderRejected):
                self.metrics.reject(self.order.id)
            self.metrics.remaining(self.order.id, leg.tracker.remaining_qty)
        if isinstance(event, OrderStatus):
            child = leg.tracker.children.get(event.client_order_id)
            self.log.log(
                _level("warning" if tr.applied else leg.log_level),
                "order.reconciled",
                strategy=leg.name,
                client_order_id=event.client_order_id,
                venue_status=event.status,
                venue_cum_qty=event.cum_qty,
                filled_qty=child.filled_qty if child else None,
                state=str(tr.new) if tr.new is not None else None,
                changed=tr.applied,
                note=tr.note,
            )
            return tr
        if tr.applied and tr.new is not None and tr.new != tr.old:
            fields: dict[str, Any] = {
                "strategy": leg.name,
                "client_order_id": tr.client_order_id,
                "state": str(tr.new),
            }
            if isinstance(event, OrderFilled):
                fields |= {"fill_qty": event.qty, "fill_px": event.px, "exec_id": event.exec_id}
            child = leg.tracker.children[tr.client_order_id]
            fields |= {"filled_qty": child.filled_qty, "order_qty": child.order.qty}
            if child.reason:
                fields["reason"] = child.reason
            if tr.note:
                fields["note"] = tr.note
            self.log.log(
                _level(leg.log_level), _EVENT_NAMES.get(str(tr.new), "order.updated"), **fields
            )
        elif isinstance(event, OrderFilled) and tr.applied:
            self.log.log(
                _level(leg.log_level),
                "order.partially_filled",
                strategy=leg.name,
                client_order_id=tr.client_order_id,
                fill_qty=event.qty,
                fill_px=event.px,
                exec_id=event.exec_id,
            )
        elif tr.note in ("duplicate", "stale"):
            self.log.debug(
                "order.event_ignored",
                client_order_id=tr.client_order_id,
                note=tr.note,
                event_type=type(event).__name__,
            )
        return tr

    def summary(self) -> RunSummary:
        """Return the parent's outcome so far."""
        t = self.mpc.tracker
        tw = self.twap.tracker if self.twap is not None else None
        status = "completed" if t.filled_qty >= t.parent_qty - 1e-9 else "incomplete"
        if self.cancelled and status != "completed":
            status = "cancelled"
        return RunSummary(
            parent_id=self.order.id,
            symbol=self.order.symbol,
            side=self.side.value,
            target_qty=t.parent_qty,
            filled_qty=t.filled_qty,
            avg_px=t.avg_px,
            arrival_mid=self.arrival_mid,
            shortfall_bps=_shortfall_bps(self.side, t.avg_px, self.arrival_mid),
            twap_filled_qty=tw.filled_qty if tw else math.nan,
            twap_avg_px=tw.avg_px if tw else math.nan,
            twap_shortfall_bps=(
                _shortfall_bps(self.side, tw.avg_px, self.arrival_mid) if tw else math.nan
            ),
            n_periods=self.grid.n,
            n_children=self.mpc.n_sent,
            status=status,
        )


def _level(name: str) -> int:
    return {"debug": 10, "info": 20, "warning": 30, "error": 40}[name]


class _Router:
    """Route broker events to the parent runner that owns the client order id."""

    def __init__(
        self, runners: list[ParentRunner], on_violation: Callable[[str], object] | None = None
    ) -> None:
        self.runners = runners
        self.on_violation = on_violation
        self.log = structlog.get_logger()

    def route(self, event: OrderEvent) -> None:
        for r in self.runners:
            leg = r.leg_for(event.client_order_id)
            if leg is not None:
                try:
                    r.apply(leg, event)
                except InvariantViolation as e:
                    # A report we cannot apply (an overfill, say): the venue and we disagree.
                    # Keep the report in the log and journal, stop trading, call a human.
                    self.log.error(
                        "order.invariant_violation",
                        parent_id=r.order.id,
                        client_order_id=event.client_order_id,
                        error=str(e),
                        detail=repr(event),
                    )
                    if r.journal is not None:
                        r.journal.anomaly(r.order.id, leg.name, event, str(e))
                    if self.on_violation is not None:
                        self.on_violation(f"invariant violation on {event.client_order_id}: {e}")
                return
        # Never drop a fill silently: an execution we cannot attribute needs a human.
        self.log.error(
            "order.unknown_event",
            client_order_id=event.client_order_id,
            event_type=type(event).__name__,
            detail=repr(event),
        )


async def _pump_events(broker: Broker, router: _Router) -> None:
    async for event in broker.events():
        router.route(event)


async def _settle() -> None:
    # Let the event pumps apply what the simulated venues just produced.
    for _ in range(2):
        await asyncio.sleep(0)


async def _run_symbol(
    symbol: str,
    feed: BookFeed,
    runners: list[ParentRunner],
    venues: list[BookDrivenBroker],
    control: Control,
    keep_running: bool = False,
    metrics: NullMetrics | None = None,
) -> None:
    """Drive every parent on ``symbol`` from its feed.

    ``runners`` may grow while this runs (a parent submitted on the control channel). It ends
    when the feed ends, on a stop request, or once every parent is done (unless
    ``keep_running``: a service waiting for more parents).
    """
    log = structlog.get_logger().bind(symbol=symbol)
    try:
        updates: AsyncIterator[BookBatch] = feed.updates()
        metrics = metrics or NullMetrics()
        is_stale = getattr(feed, "is_stale", None)
        async for batch in updates:
            if control.stop:
                break
            if len(batch):
                metrics.feed_batch(symbol, int(batch.ts_event_ns[-1]))
            if is_stale is not None:
                metrics.feed_stale(symbol, bool(is_stale()))
            pos = 0
            n = len(batch)
            ts = batch.ts_event_ns
            while pos < n:
                times = [t for r in list(runners) if (t := r.next_time()) is not None]
                if not times or control.stop:
                    if len(batch) and pos < n:
                        for v in venues:
                            v.on_book(batch.slice(pos, n))
                    break
                t_next = min(times)
                # Rows up to and including t_next are the book in force at t_next; decide
                # only once a later row proves nothing more can arrive for that instant.
                cut = int(np.searchsorted(ts, t_next, side="right")) if t_next < ts[-1] else n
                seg = batch.slice(pos, cut)
                if len(seg):
                    for r in list(runners):
                        r.observe(seg)
                    for v in venues:
                        v.on_book(seg)
                    if any(v.pending_events() for v in venues):
                        await _settle()
                pos = cut
                if pos < n:
                    for r in list(runners):
                        if r.next_time() == t_next:
                            await r.on_time(t_next, now_ns=int(ts[pos]))
                    await _settle()
            if all(r.done for r in runners) and not keep_running:
                break
        # Data ended, every order is past its deadline, or a stop was requested: orders already
        # sent execute against the last book; nothing new is sent.
        for v in venues:
            v.on_end(symbol)
        await _settle()
        for r in runners:
            if not r.done and control.stop:
                r.done = True
                log.warning(
                    "order.stopped_before_deadline",
                    parent_id=r.order.id,
                    periods_decided=r._k_next,
                    n_periods=r.grid.n,
                    remaining_qty=r.mpc.tracker.remaining_qty,
                )
            if not r.done:
                log.warning(
                    "feed.ended_before_deadline",
                    parent_id=r.order.id,
                    periods_decided=r._k_next,
                    n_periods=r.grid.n,
                    remaining_qty=r.mpc.tracker.remaining_qty,
                )
                r.done = True
    finally:
        await feed.aclose()
        stats = getattr(feed, "stats", None)
        log.info("feed.closed", **(_stats_fields(stats)))


def _stats_fields(stats: Any) -> dict[str, Any]:
    if stats is None:
        return {}
    if hasattr(stats, "as_dict"):
        return dict(stats.as_dict())
    if hasattr(stats, "__dataclass_fields__"):
        return {k: getattr(stats, k) for k in stats.__dataclass_fields__}
    return {"stats": repr(stats)}


async def _reconcile(
    runners: list[ParentRunner], broker: Broker, timeout_s: float, at: str = "start"
) -> None:
    """Before anything new is sent: ask the broker about every child in doubt, and wait.

    The answers (``OrderStatus``) arrive through the event pump and close each child, with any
    execution the journal missed applied exactly once. Children still unresolved at the timeout
    stay open with their shares reserved: never re-sent, never forgotten.
    """
    log = structlog.get_logger()
    pending = {coid: r for r in runners for coid in r.in_doubt()}
    if not pending:
        return
    ask = getattr(broker, "request_status", None)
    if ask is None:
        log.error("reconcile.unsupported", at=at, broker=broker.name, in_doubt=sorted(pending))
        return
    log.info("reconcile.started", at=at, n_in_doubt=len(pending), client_order_ids=sorted(pending))
    for coid in sorted(pending):
        try:
            await ask(coid)
        except BrokerError as e:
            log.error("reconcile.query_failed", at=at, client_order_id=coid, error=str(e))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        left = [c for c, r in pending.items() if c in r.in_doubt()]
        if not left:
            log.info("reconcile.finished", at=at, n_resolved=len(pending))
            return
        await asyncio.sleep(0.01)
    left = sorted(c for c, r in pending.items() if c in r.in_doubt())
    log.error("reconcile.timeout", at=at, still_in_doubt=left, timeout_s=timeout_s)


async def _ack_watchdog(
    runners: list[ParentRunner],
    broker: Broker,
    timeout_s: float,
    until: asyncio.Event,
    max_queries: int = 3,
    on_unresolved: Callable[[str], object] | None = None,
) -> None:
    """Query the status of any MPC child left without a final report for ``timeout_s``.

    A lost acknowledgement or fill report (a venue fault, a report lost beyond what the
    session layer recovers) would otherwise keep the child's shares reserved forever; the
    answer closes it with what the venue really executed. One query per child per timeout;
    a child still unresolved after ``max_queries`` engages the kill switch (``on_unresolved``):
    its shares stay reserved, nothing new is sent, and a human decides.
    """
    ask = getattr(broker, "request_status", None)
    if ask is None:
        return
    loop = asyncio.get_running_loop()
    asked: dict[str, float] = {}
    n_asked: dict[str, int] = {}
    log = structlog.get_logger()
    while not until.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(0.25, timeout_s / 4)):
                await until.wait()
        now = loop.time()
        for r in runners:
            for coid, c in r.mpc.tracker.children.items():
                if c.state.terminal:
                    continue
                since = max(r.sent_at.get(coid, now), asked.get(coid, -math.inf))
                if now - since >= timeout_s:
                    if n_asked.get(coid, 0) >= max_queries:
                        if on_unresolved is not None and n_asked[coid] == max_queries:
                            log.error("order.unresolved", client_order_id=coid, queries=max_queries)
                            on_unresolved(f"{coid} unresolved after {max_queries} status queries")
                        n_asked[coid] = max_queries + 1
                        continue
                    n_asked[coid] = n_asked.get(coid, 0) + 1
                    asked[coid] = now
                    log.warning("order.status_query", client_order_id=coid, waited_s=timeout_s)
                    try:
                        await ask(coid)
                    except BrokerError as e:
                        log.warning("order.status_query_failed", client_order_id=coid, error=str(e))


def _limits(r: RiskConfig) -> RiskLimits:
    return RiskLimits(
        r.max_child_qty,
        r.max_child_notional,
        r.max_collar_bps,
        r.max_depth_share,
        r.max_orders_per_min,
        r.stale_book_s,
    )


class Daemon:
    """The running service: parents, their symbol tasks, the broker pumps and the operators.

    Built by ``run``; the control channel calls ``command``.
    """

    def __init__(
        self,
        cfg: AgentConfig,
        feed_factory: FeedFactory,
        broker: Broker | None,
        profiles: dict[tuple[str, str], IntradayProfile] | None,
        journal: Journal | None,
        control: Control | None,
        metrics: NullMetrics | None = None,
    ) -> None:
        self.cfg = cfg
        self.metrics = metrics or NullMetrics()
        self.feed_factory = feed_factory
        self.journal = journal
        self.log = structlog.get_logger()
        latency_ns = int(cfg.broker.latency_ms * 1e6)
        self.main = broker if broker is not None else SimulatedBroker(latency_ns)
        self.shadow = SimulatedBroker(latency_ns, name="twap-shadow")
        self.profiles = profiles or {}
        self.control = control or Control(journal)
        self.gates = RiskGates(_limits(cfg.risk))
        self.runners: list[ParentRunner] = []
        self.router = _Router(self.runners, self.control.halt)
        self.venues: list[BookDrivenBroker] = [self.shadow]
        if isinstance(self.main, BookDrivenBroker):
            self.venues.insert(0, self.main)
        self.by_symbol: dict[str, list[ParentRunner]] = {}
        self.sym_tasks: dict[str, asyncio.Task[None]] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._symbol_started = asyncio.Event()

    # -- parents ------------------------------------------------------------------------------
    def _add(self, order: OrderConfig, restore: bool = True) -> ParentRunner:
        r = ParentRunner(
            order,
            self.cfg,
            self.main,
            self.shadow,
            self.profiles.get((order.symbol, order.side.value), IntradayProfile.flat()),
            self.gates,
            self.journal,
            self.control,
            self.metrics,
        )
        if restore and self.journal is not None:
            r.restore(self.journal.load(order.id))
            if r.twap is not None:
                # The shadow's simulated venue died with the last process: what it had open
                # is closed as unknown (it never trades for real).
                for coid, c in list(r.twap.tracker.children.items()):
                    if not c.state.terminal:
                        r.apply(r.twap, OrderStatus(coid, 0, "unknown", 0.0, 0.0, "restart"))
        self.runners.append(r)
        self.by_symbol.setdefault(order.symbol, []).append(r)
        return r

    def _start_symbol(self, symbol: str) -> None:
        task = self.sym_tasks.get(symbol)
        if task is not None and not task.done():
            return  # the running task picks the new parent up at its next batch
        assert self._tg is not None
        self.sym_tasks[symbol] = self._tg.create_task(
            _run_symbol(
                symbol,
                self.feed_factory(symbol),
                self.by_symbol[symbol],
                self.venues,
                self.control,
                self.cfg.control.keep_running,
                self.metrics,
            )
        )
        self._symbol_started.set()

    async def submit_parent(self, raw: dict[str, Any]) -> ParentRunner:
        """Add a parent order while running (journaled first, so a restart keeps it)."""
        order = OrderConfig.model_validate(raw)
        if any(r.order.id == order.id for r in self.runners):
            raise ValueError(f"parent id {order.id!r} is already in use")
        if self.cfg.feed.kind == "replay" and order.symbol not in self.cfg.feed.files:
            raise ValueError(f"no feed for symbol {order.symbol!r} in [feed].files")
        if self.cfg.feed.kind == "websocket" and order.symbol not in self.cfg.feed.urls:
            raise ValueError(f"no feed for symbol {order.symbol!r} in [feed].urls")
        if self.journal is not None:
            await self.journal.add_parent(order.model_dump(mode="json"))
        r = self._add(order, restore=False)
        self.log.info(
            "order.parent_submitted",
            parent_id=order.id,
            symbol=order.symbol,
            side=order.side.value,
            quantity=order.quantity,
        )
        self._start_symbol(order.symbol)
        return r

    async def cancel_parent(self, parent_id: str, reason: str = "operator") -> ParentRunner:
        """Stop a parent: no new child, open children cancelled (journaled: survives restarts)."""
        r = next((x for x in self.runners if x.order.id == parent_id), None)
        if r is None:
            raise ValueError(f"no parent order {parent_id!r}")
        if self.journal is not None:
            await self.journal.cancel_parent(parent_id, reason)
        r.cancel_parent(reason)
        await r.cancel_open(reason="parent_cancelled")
        return r

    async def halt(self, reason: str) -> int:
        """Kill switch: HALTED (durable); return how many open children get a cancel.

        The cancels are sent by ``_on_halt``, the one place every path to the kill switch
        (signal, command, unresolved child) goes through. Killing a daemon already halted
        sends the cancels again, on purpose.
        """
        n = sum(len(r.in_doubt()) for r in self.runners)
        if not self.control.halt(reason):
            return await self._cancel_all("halt")
        return n

    async def _cancel_all(self, reason: str) -> int:
        n = 0
        for r in list(self.runners):
            n += await r.cancel_open(reason)
        return n

    # -- control channel ------------------------------------------------------------------------
    async def command(self, req: dict[str, Any]) -> dict[str, Any]:
        """Answer one control command (see ``agent.control``)."""
        cmd = req["cmd"]
        if cmd == "status":
            return {
                "ok": True,
                "halted": self.control.halted,
                "stopping": self.control.stop,
                "broker": self.main.name,
                "parents": [r.status() for r in self.runners],
            }
        if cmd == "kill":
            n = await self.halt(str(req.get("reason") or "control command"))
            return {"ok": True, "halted": True, "cancel_requested": n}
        if cmd == "resume":
            changed = self.control.resume(str(req.get("reason") or "control command"))
            self.metrics.halted(False)
            return {"ok": True, "halted": False, "changed": changed}
        if cmd == "stop":
            self.control.request_stop("control command")
            return {"ok": True, "stopping": True}
        if cmd == "submit":
            order = req.get("order")
            if not isinstance(order, dict):
                return {"ok": False, "error": 'submit needs "order": {...} (an [[orders]] table)'}
            try:
                r = await self.submit_parent(order)
            except ValidationError as e:
                err = e.errors()[0]
                return {"ok": False, "error": f"order.{key_path(tuple(err['loc']))}: {err['msg']}"}
            except ValueError as e:
                return {"ok": False, "error": str(e)}
            return {"ok": True, "parent": r.status()}
        if cmd == "cancel":
            pid = req.get("parent_id")
            if not isinstance(pid, str):
                return {"ok": False, "error": 'cancel needs "parent_id"'}
            try:
                r = await self.cancel_parent(pid, str(req.get("reason") or "control command"))
            except ValueError as e:
                return {"ok": False, "error": str(e)}
            return {"ok": True, "parent": r.status()}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    # -- the run ------------------------------------------------------------------------------
    async def _on_halt(self) -> None:
        # Cancels the open children the moment the kill switch is engaged by any path (signal,
        # command, API), not at the next book.
        while True:
            await self.control.halt_event.wait()
            self.control.halt_event.clear()  # set again only by the next halt after a resume
            self.metrics.halted(True)
            await self._cancel_all("halt")

    async def _on_stop(self) -> None:
        await self.control.stop_event.wait()
        if self.cfg.control.on_stop == "cancel":
            n = await self._cancel_all("shutdown")
            self.log.info("daemon.shutdown_cancel", cancel_requested=n)
        else:
            open_ids = [c for r in self.runners for c in r.in_doubt()]
            self.log.warning("daemon.shutdown_left_open", client_order_ids=open_ids)
        # A feed that is silent would not see the stop until its next message: end it.
        await asyncio.sleep(1.0)
        for t in self.sym_tasks.values():
            if not t.done():
                t.cancel()

    async def run(self) -> list[RunSummary]:
        """Work every parent to its deadline (or until stopped); return the summaries."""
        log = self.log
        if self.control.halted:
            log.error(
                "daemon.halted",
                reason="halted before this start (journal)",
                hint="resume on purpose: exec-agent resume, or exec-agent run --resume",
            )
        for o in self.cfg.orders:
            self._add(o)
        if self.journal is not None:
            known = {o.id for o in self.cfg.orders}
            submitted, cancelled = self.journal.parents()
            for raw in submitted:
                if raw["id"] not in known:
                    self._add(OrderConfig.model_validate(raw))
            for r in self.runners:
                if r.order.id in cancelled:
                    r.cancel_parent(cancelled[r.order.id])
        self.metrics.halted(self.control.halted)
        for r in self.runners:
            self.metrics.remaining(r.order.id, r.mpc.tracker.remaining_qty)
        log.info(
            "daemon.started",
            n_orders=len(self.runners),
            symbols=sorted(self.by_symbol),
            broker=self.main.name,
            halted=self.control.halted,
        )
        server: ControlServer | None = None
        if self.cfg.control.socket is not None:
            server = await ControlServer(self.cfg.control.socket, self.command).start()
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                pumps = [
                    tg.create_task(_pump_events(b, self.router))
                    for b in {id(self.main): self.main, id(self.shadow): self.shadow}.values()
                ]
                await _reconcile(self.runners, self.main, self.cfg.broker.reconcile_timeout_s)
                stop_watchdog = asyncio.Event()
                helpers = [
                    tg.create_task(
                        _ack_watchdog(
                            self.runners,
                            self.main,
                            self.cfg.broker.ack_timeout_s,
                            stop_watchdog,
                            self.cfg.broker.max_status_queries,
                            self.control.halt,
                        )
                    ),
                    tg.create_task(self._on_halt()),
                    tg.create_task(self._on_stop()),
                ]
                for sym in list(self.by_symbol):
                    self._start_symbol(sym)
                while True:
                    pending = [t for t in self.sym_tasks.values() if not t.done()]
                    if pending:
                        await asyncio.wait(pending)
                        continue
                    if self.cfg.control.keep_running and not self.control.stop:
                        await _first(self.control.stop_event.wait(), self._new_task())
                        continue
                    break
                await _settle()
                # Children still without a final report: ask, and wait for the answers before exit.
                await _reconcile(
                    self.runners, self.main, self.cfg.broker.reconcile_timeout_s, at="exit"
                )
                stop_watchdog.set()
                for h in helpers[1:]:
                    h.cancel()
                await helpers[0]
                await self.main.aclose()
                await self.shadow.aclose()
                await asyncio.gather(*pumps)
        finally:
            if server is not None:
                await server.aclose()
        if self.journal is not None:
            await self.journal.flush()
        summaries = [r.summary() for r in self.runners]
        for s, r in zip(summaries, self.runners, strict=True):
            if r.mpc.tracker.n_open:
                log.error(
                    "run.open_orders_at_exit",
                    parent_id=s.parent_id,
                    open_qty=r.mpc.tracker.open_qty,
                )
            if r.mpc.tracker.orphan_fills:
                log.error(
                    "run.orphan_fills", parent_id=s.parent_id, n=len(r.mpc.tracker.orphan_fills)
                )
            log.log(20 if s.status == "completed" else 30, "run.summary", **s.as_log())
        return summaries

    async def _new_task(self) -> None:
        # Returns once a symbol task is started again (a parent was submitted).
        self._symbol_started.clear()
        await self._symbol_started.wait()


async def _first(*aws: Any) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


async def run(
    cfg: AgentConfig,
    feed_factory: FeedFactory,
    *,
    broker: Broker | None = None,
    profiles: dict[tuple[str, str], IntradayProfile] | None = None,
    journal: Journal | None = None,
    control: Control | None = None,
    metrics: NullMetrics | None = None,
) -> list[RunSummary]:
    """Work every parent order of ``cfg`` to its deadline and return the summaries.

    Args:
        cfg: Validated config.
        feed_factory: Opens the book feed of a symbol.
        broker: Where MPC children go; a ``SimulatedBroker`` per the config when None.
        profiles: Intraday liquidity profile per (symbol, side) (flat when missing).
        journal: Crash-safe journal; parents found in it resume where they stopped, and parents
            submitted on the control channel come back.
        control: Stop and kill-switch state (a fresh one, HALTED if the journal says so).
        metrics: Prometheus metrics (None: off).
    """
    return await Daemon(cfg, feed_factory, broker, profiles, journal, control, metrics).run()
