"""The per-parent state machine (pure): books, times and order events in, actions out.

``ParentCore`` works one parent order. It owns everything that decides: the rolling window, the
period grid, the policy (``agent.core.policy``), the order trackers, the lot carry, the period
index, the last period's retries, the pre-trade gates and the summary. It never awaits and
never performs an effect: ``on_time`` and ``on_event`` return actions (``Send``, ``Cancel``,
``Decided``, ``Record``, ``Log``) that a driver executes in order — the daemon journals, sends
to the broker, logs and counts them; the backtest hands ``Send`` to the simulated venue and
keeps the rest.

Legs: ``mpc`` is the parent's own strategy (whatever ``StrategySpec.kind`` says; the name is the
journal's), ``twap`` an optional TWAP benchmark on its own simulated venue (the daemon's
shadow), which is never gated.

Tactic (``set_tactic``, ``agent.core.tactic``): how each period's child meets the book. Without
one (the default) every child is an IOC at the collar; ``passive`` posts, re-prices
(``Replace``), cancels at the cut-off (``Cancel`` with its recorded request) and crosses the
rest; ``timing`` holds the IOC for a cheap book. Its wakes come through ``next_time`` and
``wake_in`` and are acted on in ``on_time``, like decisions.

Time rules: a decision at period ``k`` sees the book in force at its start; when the first book
after the start is already past the period's end (the feed was silent, a halt) the period is
skipped rather than traded late in a burst; in the last period whatever is left is re-sent
every ``final_retry_s`` until the deadline.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agent.brokers.matching import collar_limit_px
from agent.core.estimator import CurveView, IncrementalCurve
from agent.core.plan import NO_TIMER, Decision, PeriodGrid
from agent.core.policy import DecisionInput, Policy, PolicyStep, TwapPolicy
from agent.core.risk import AggregateGates, RiskGates
from agent.core.tactic import Slice, Tactic, TacticConfig, displayed_at, passive_price
from agent.core.volume import VolumeTracker, participation_caps
from agent.core.window import RollingWindow
from agent.model import (
    CancelRequested,
    ChildOrder,
    OrderEvent,
    OrderFilled,
    OrderStatus,
    ReplaceRequested,
    Side,
    TrackerEvent,
)
from agent.orders.tracker import OrderTracker, Transition
from feeds.model import BookBatch

__all__ = [
    "Cancel",
    "Decided",
    "Env",
    "Log",
    "ParentCore",
    "ParentParams",
    "Record",
    "Replace",
    "Send",
    "Summary",
]

_NS = 1_000_000_000
_EVENT_NAMES = {
    "acknowledged": "order.acknowledged",
    "partially_filled": "order.partially_filled",
    "filled": "order.filled",
    "cancelled": "order.cancelled",
    "rejected": "order.rejected",
    "pending_cancel": "order.pending_cancel",
    "pending_replace": "order.pending_replace",
}


# -- actions --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Log:
    """A structured log line: ``event`` at ``level`` with ``fields``."""

    level: str
    event: str
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``child`` on ``leg`` (the daemon: journal the intent first, then the broker).

    ``log`` is the ``order.submitted`` line, emitted once the intent is durable, as the child
    goes to the broker (never for a child that did not go).
    """

    leg: str
    child: ChildOrder
    log: Log | None = None


@dataclass(frozen=True, slots=True)
class Cancel:
    """Ask the venue to cancel what is left of a working child.

    ``request`` is set when the core recorded the request in the tracker first (the tactic's
    cancels; the daemon journals the ``Record`` before this action): its time is the request's.
    """

    leg: str
    client_order_id: str
    reason: str
    request: CancelRequested | None = None


@dataclass(frozen=True, slots=True)
class Replace:
    """Ask the venue to amend a resting child (recorded in the tracker and journal first)."""

    leg: str
    request: ReplaceRequested


@dataclass(frozen=True, slots=True)
class Decided:
    """Period ``k`` was decided (the daemon journals it: a restart never decides it twice)."""

    k: int
    arrival_mid: float
    carry: float


@dataclass(frozen=True, slots=True)
class Record:
    """An order event, or our cancel/replace request, that changed a tracker (the daemon
    journals it)."""

    leg: str
    event: TrackerEvent


Action = Send | Cancel | Replace | Decided | Record | Log


@dataclass(frozen=True, slots=True)
class Env:
    """What the driver knows that gates a child: the kill switch and the broker session."""

    halted: bool = False
    broker_available: bool = True
    broker_name: str = "simulated"


@dataclass(frozen=True, slots=True)
class ParentParams:
    """One parent order and the rules that work it.

    Attributes:
        parent_id, symbol, side, quantity: The parent.
        start_ns, end_ns, period_ns: Its periods; ``end_ns`` is the deadline.
        lot: Lot size; children are whole lots except the last remainder.
        max_child_qty: Cap per child (0 = none).
        collar_bps: Limit price of a child, bps through the mid.
        final_retry_s: Retry interval in the last period.
        window_ns, max_window_rows: The rolling window of the estimation.
        max_children: Children the mpc leg may send (0 = no limit; counted across restarts).
        max_child_multiple: A child at most this multiple of ``quantity / periods`` (0 = off):
            no catch-up dump after a time jump or a silent feed.
        max_participation: At most this share of each period's expected market volume (from
            the feed's trades; 0 = off): the MPC's solver cap, and a pre-trade gate that cuts
            any strategy's child to it in every period but the last.
        lead_ns: Decide each period this long before it starts, on the books known then (the
            decision is the one at the period's start with no later book), and send its child
            at the start (0: decide at the start). Below ``period_ns``; aggressive tactic only.
        id_tag: Extra component of the client order ids (a run tag: ids unique across runs).
    """

    parent_id: str
    symbol: str
    side: Side
    quantity: float
    start_ns: int
    end_ns: int
    period_ns: int
    lot: int = 1
    max_child_qty: float = 0.0
    collar_bps: float = 50.0
    final_retry_s: float = 15.0
    window_ns: int = 600 * _NS
    max_window_rows: int = 20_000
    max_children: int = 0
    max_child_multiple: float = 0.0
    max_participation: float = 0.0
    lead_ns: int = 0
    id_tag: str = ""


@dataclass(slots=True)
class Summary:
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
        for k in self.__slots__:
            v = getattr(self, k)
            out[k] = None if isinstance(v, float) and not math.isfinite(v) else v
        return out


def shortfall_bps(side: Side, avg_px: float, arrival_mid: float) -> float:
    """Return the shortfall of ``avg_px`` against the arrival mid, bps (positive = cost)."""
    if not (math.isfinite(avg_px) and math.isfinite(arrival_mid) and arrival_mid > 0):
        return math.nan
    return side.sign * (avg_px - arrival_mid) / arrival_mid * 1e4


@dataclass(slots=True)
class Leg:
    """One strategy working the parent: its policy, tracker and children."""

    name: str
    policy: Policy
    tracker: OrderTracker
    prefix: str
    gated: bool
    log_level: str = "info"
    n_sent: int = 0
    children: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SliceRecord:
    """One child of the mpc leg as decided: what the model predicted for it.

    ``predicted_cost`` is ``g_k(qty)`` in currency at the decision (None without a model).
    """

    client_order_id: str
    k: int
    t_ns: int
    qty: float
    limit_px: float
    retry: bool
    predicted_cost: float | None
    g0: Callable[[float], float] | None
    fields: dict[str, Any]


class ParentCore:
    """Works one parent order (see the module docstring).

    Args:
        params: The parent and its rules.
        policy: The strategy of the ``mpc`` leg.
        gates: Pre-trade gates shared by every parent (None: none).
        order_gates: Gates of this parent alone, after the global ones (None: none).
        benchmark: Run the TWAP benchmark leg beside it.
        estimator: The window's incremental cost curve (possibly shared with other parents on
            the symbol and side; the ``SymbolSession`` pushes the rows into it), or None to
            walk the window at each decision.
        aggregate: Daemon-wide limits over every parent (gross notional, shares per symbol,
            open orders, rate), shared by every parent's core (None: none).
    """

    def __init__(
        self,
        params: ParentParams,
        policy: Policy,
        gates: RiskGates | None = None,
        order_gates: RiskGates | None = None,
        benchmark: bool = False,
        estimator: IncrementalCurve | CurveView | None = None,
        aggregate: AggregateGates | None = None,
    ) -> None:
        p = params
        if not 0 <= p.lead_ns < p.period_ns:
            raise ValueError(f"lead_ns must be in [0, period_ns), got {p.lead_ns}")
        self.estimator = estimator
        self.aggregate = aggregate
        # Traded volume per period, for the participation cap (p.max_participation).
        self.volume = VolumeTracker(p.period_ns, p.start_ns) if p.max_participation > 0 else None
        self._period_fills: dict[int, float] = {}  # our fills per period (the pre-trade gate)
        self.p = p
        self.side = p.side
        self.grid = PeriodGrid(p.start_ns, p.end_ns, p.period_ns)
        self.window = RollingWindow(p.symbol, p.window_ns, p.max_window_rows)
        self.gates = gates
        self.order_gates = order_gates
        tag = f"{p.id_tag}-" if p.id_tag else ""
        self.mpc = Leg("mpc", policy, OrderTracker(p.quantity), f"{p.parent_id}-{tag}", True)
        self.twap: Leg | None = (
            Leg(
                "twap",
                TwapPolicy(policy.spec),
                OrderTracker(p.quantity),
                f"{p.parent_id}-twap-{tag}",
                False,
                "debug",
            )
            if benchmark
            else None
        )
        self.arrival_mid = math.nan
        self.last_mid = math.nan
        self._last_row: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None
        # our own side's last levels (prices, sizes): what a passive post is measured against
        self._own_row: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None
        self.last_ts = -1
        self.k_next = 0  # next period to decide
        self._retry_next = 0  # next retry time in the last period (ns)
        self.n_books = 0
        self.done = False
        self.cancelled = False
        self.carry = 0.0  # lot-rounding residual between decisions (plan.diffuse_lots)
        self._trade_ts: list[NDArray[np.int64]] = []
        self._trade_qty: list[NDArray[np.float64]] = []
        self._prev_volume: tuple[int | None, float] = (None, math.nan)  # (time, the volume then)
        self._trades_known = False
        self.slices: list[SliceRecord] = []
        self._slice_of: dict[str, SliceRecord] = {}
        self.timer: Callable[[], float] = NO_TIMER  # the daemon injects time.perf_counter
        self.steps: list[tuple[int, PolicyStep]] = []
        self.tactic: Tactic | None = None  # None: every child an IOC (``set_tactic``)
        self._touch = (math.nan, math.nan)
        self._wait_step: PolicyStep | None = None
        # decided ahead (p.lead_ns), sent at the period's start: (start, k, mpc qty, its step,
        # twap qty)
        self._held: tuple[int, int, float, PolicyStep, float | None] | None = None

    # -- inputs ---------------------------------------------------------------------------------
    @property
    def legs(self) -> list[Leg]:
        """Return the legs (``mpc`` first)."""
        return [self.mpc] if self.twap is None else [self.mpc, self.twap]

    def leg(self, name: str) -> Leg | None:
        """Return the leg called ``name``."""
        return next((x for x in self.legs if x.name == name), None)

    def leg_for(self, client_order_id: str) -> Leg | None:
        """Return the leg that owns a client order id."""
        for x in self.legs:
            if x.tracker.knows(client_order_id):  # current, prior or pending-replace id
                return x
        return None

    def set_tactic(self, config: TacticConfig) -> None:
        """Work each period's child with ``config``'s tactic (``agent.core.tactic``)."""
        if self.p.lead_ns and config.kind != "aggressive":
            raise ValueError(f"a decision lead needs the aggressive tactic, not {config.kind}")
        sizes = np.geomspace(
            max(float(self.p.lot), 1.0), max(self.p.quantity, 2.0 * self.p.lot), 12
        )
        self.tactic = Tactic(config, self.side, sizes)

    def next_time(self) -> int | None:
        """Return the next time the core acts, ns: a decision, the send of a child decided
        ahead, or a wake of the tactic."""
        t = self._schedule_time()
        if self._held is not None:
            t = self._held[0] if t is None else min(t, self._held[0])
        w = self.tactic.next_wake() if self.tactic is not None and not self.done else None
        if w is None or t is None:
            return t
        return min(t, w)

    def wake_in(self, seg: BookBatch) -> int | None:
        """Return the time of the first row of ``seg`` (not yet observed) the tactic reacts to.

        The session cuts the books there, as at a decision time; None when the tactic waits for
        nothing in these rows.
        """
        if self.tactic is None or self.done or not self.tactic.live:
            return None
        return self.tactic.wake_row(seg)

    def _schedule_time(self) -> int | None:
        if self.done:
            return None
        if self.k_next < self.grid.n:
            return self.grid.start_of(self.k_next) - self.p.lead_ns
        if self._retry_next < self.p.end_ns:
            return self._retry_next
        return self.p.end_ns

    def observe(self, seg: BookBatch) -> None:
        """Take in validated rows that precede the next decision time."""
        if not len(seg):
            return
        self.window.append(seg)
        self.n_books += len(seg)
        observe = getattr(self.mpc.policy, "observe", None)
        if observe is not None:
            observe(seg)
        self.last_mid = 0.5 * (float(seg.bid_px[-1, 0]) + float(seg.ask_px[-1, 0]))  # mid[-1]
        self._last_row = (
            (seg.ask_px[-1], seg.ask_sz[-1])
            if self.side is Side.BUY
            else (seg.bid_px[-1], seg.bid_sz[-1])
        )
        self.last_ts = int(seg.ts_event_ns[-1])
        self._touch = (float(seg.bid_px[-1, 0]), float(seg.ask_px[-1, 0]))
        if self.tactic is not None:
            self._own_row = (
                (seg.bid_px[-1], seg.bid_sz[-1])
                if self.side is Side.BUY
                else (seg.ask_px[-1], seg.ask_sz[-1])
            )
            self.tactic.observe(seg)

    def settle(self, min_rows: int) -> None:
        """Fold observed books into the forecast now if at least ``min_rows`` wait
        (``SymbolSession.settle``)."""
        settle = getattr(self.mpc.policy, "settle", None)
        if settle is not None:
            settle(min_rows)

    def on_trades(self, ts_ns: NDArray[np.int64], qty: NDArray[np.float64]) -> None:
        """Take in market trades (times and sizes) that precede the next decision time."""
        self._trades_known = True
        if self.volume is not None and ts_ns.size:
            self.volume.observe_trades(ts_ns, qty)
        if ts_ns.size:
            self._trade_ts.append(np.asarray(ts_ns, dtype=np.int64))
            self._trade_qty.append(np.asarray(qty, dtype=np.float64))

    def volume_between(self, a_ns: int, b_ns: int) -> float:
        """Return the market volume traded in ``[a, b)`` (NaN when the feed has no trades).

        ``a_ns`` never goes back between calls (each decision asks for the period before it):
        the trades before it are let go, so a call costs the trades of one period, not of the day.
        """
        if not self._trades_known:
            return math.nan
        if len(self._trade_ts) > 1:
            self._trade_ts = [np.concatenate(self._trade_ts)]
            self._trade_qty = [np.concatenate(self._trade_qty)]
        if not self._trade_ts:
            return 0.0
        ts, q = self._trade_ts[0], self._trade_qty[0]
        i, j = np.searchsorted(ts, [a_ns, b_ns], side="left")
        out = float(q[i:j].sum())
        if i:
            self._trade_ts, self._trade_qty = [ts[i:]], [q[i:]]
        return out

    # -- decisions ------------------------------------------------------------------------------
    def on_time(self, t_ns: int, now_ns: int | None = None, env: Env | None = None) -> list[Action]:
        """Act at decision time ``t_ns`` (equal to ``next_time()``).

        Args:
            t_ns: The decision time.
            now_ns: Event time of the first book after ``t_ns`` (None: unknown). When it is
                already past the end of the period, the period is skipped.
            env: Kill switch and broker state (default: all clear).
        """
        env = env or Env()
        out: list[Action] = []
        if math.isnan(self.arrival_mid) and math.isfinite(self.last_mid):
            self.arrival_mid = self.last_mid
        if self._held is not None and t_ns >= self._held[0]:
            self._release(env, out)
            sched = self._schedule_time()
            if sched is None or t_ns < sched:
                return out  # the send of the child decided ahead only
        if self.tactic is not None and self.tactic.live:
            w = self.tactic.next_wake()
            if w is not None and w <= t_ns:
                self._tactic_act(t_ns, env, out)
            sched = self._schedule_time()
            if sched is None or t_ns < sched:
                return out  # a wake of the tactic only
        n = self.grid.n
        if self.k_next < n:
            k = self.k_next
            self.k_next += 1
            if now_ns is not None and k < n - 1 and now_ns >= self.grid.start_of(k + 1):
                out.append(
                    Log(
                        "warning",
                        "mpc.step",
                        {
                            "period": k,
                            "n_periods": n,
                            "ts_ns": t_ns,
                            "child_qty": 0.0,
                            "remaining_qty": self.mpc.tracker.remaining_qty,
                            "status": "skipped",
                            "message": "no book during the period",
                            "next_book_ts_ns": now_ns,
                        },
                    )
                )
                return out
            if k == n - 1:
                self._retry_next = self.grid.start_of(k) + int(self.p.final_retry_s * _NS)
            # Decided ahead (lead_ns): the decision at the period's start, with the books known
            # now; its child leaves at the start (``_release``).
            self._decide(k, t_ns + self.p.lead_ns, env, out)
        elif t_ns < self.p.end_ns:
            self._retry_next = t_ns + int(self.p.final_retry_s * _NS)
            for leg in self.legs:
                q = leg.tracker.uncommitted_qty
                if leg is self.mpc and self.tactic is not None and self.tactic.slice is not None:
                    continue  # the tactic still works the last period's slice
                if leg.tracker.n_open == 0 and q > 0:
                    if leg is self.mpc:
                        out.append(Log("info", "mpc.final_retry", {"ts_ns": t_ns, "child_qty": q}))
                    self._send(leg, q, t_ns, env, out, k=n - 1, retry=True)
        else:
            self.done = True
            if self.tactic is not None:
                self.tactic.slice = None
                for c in list(self.mpc.tracker.open_children()):
                    if c.order.rests and c.ts_cancel_requested_ns is None:
                        self._request_cancel(c.order.client_order_id, t_ns, "deadline", out)
            no_books = self.n_books == 0
            out.append(
                Log(
                    "warning" if no_books else "info",
                    "order.deadline_reached",
                    {
                        "remaining_qty": self.mpc.tracker.remaining_qty,
                        "open_qty": self.mpc.tracker.open_qty,
                        "books_seen": self.n_books,
                        **({"reason": "no book before the deadline"} if no_books else {}),
                    },
                )
            )
        return out

    def _input(self, leg: Leg, k: int, t_ns: int) -> DecisionInput:
        t = leg.tracker
        if self._prev_volume[0] != t_ns:  # once per decision time, whatever the legs
            self._prev_volume = (t_ns, self.volume_between(t_ns - self.grid.period_ns, t_ns))
        prev = self._prev_volume[1]
        return DecisionInput(
            k=k,
            t_ns=t_ns,
            grid=self.grid,
            parent_qty=t.parent_qty,
            filled_qty=t.filled_qty,
            open_qty=t.open_qty,
            lot=self.p.lot,
            max_child_qty=self.p.max_child_qty,
            carry=self.carry if leg is self.mpc else 0.0,
            window=lambda: self.window.view(t_ns),
            tail=lambda span_ns: self.window.tail(t_ns, span_ns),
            prev_volume=prev,
            timer=self.timer,
            caps=self._participation_caps(t_ns) if leg is self.mpc else None,
            curve=(
                None
                if self.estimator is None or leg is not self.mpc
                else lambda: (self.estimator.curve(t_ns), self.estimator.n_rows)  # type: ignore[union-attr]
            ),
        )

    def _decide(self, k: int, t_ns: int, env: Env, out: list[Action]) -> None:
        tracker = self.mpc.tracker
        if not math.isfinite(self.last_mid):
            step = PolicyStep(
                Decision(
                    k, 0.0, np.zeros(0), math.nan, "no_book", "no valid book yet", 0.0, self.carry
                )
            )
        else:
            step = self.mpc.policy.decide(self._input(self.mpc, k, t_ns))
        d = step.decision
        self.carry = d.carry
        self.steps.append((k, step))
        if d.status == "twap_fallback" and d.message not in ("insufficient_data",):
            out.append(Log("warning", "mpc.solve_failed", {"period": k, "message": d.message}))
        out.append(Decided(k, self.arrival_mid, self.carry))
        fields: dict[str, Any] = {
            "period": k,
            "n_periods": self.grid.n,
            "ts_ns": t_ns,
            "strategy": self.mpc.policy.spec.name,
            "remaining_qty": tracker.remaining_qty,
            "open_qty": tracker.open_qty,
            "child_qty": d.child_qty,
            "lam": None if math.isnan(d.lam) else d.lam,
            "status": d.status,
            "solve_ms": round(d.solve_ms, 4),
            "mid": self.last_mid if math.isfinite(self.last_mid) else None,
        }
        if self.p.lead_ns:  # decided this long before ts_ns, on the books known then
            fields["lead_ms"] = self.p.lead_ns / 1e6
        for key, v in step.fields.items():
            fields.setdefault(key, v)
        out.append(Log("info", "mpc.step", fields))
        twap_qty = None
        if self.twap is not None:
            twap_qty = self.twap.policy.decide(self._input(self.twap, k, t_ns)).decision.child_qty
        self._held = (t_ns, k, d.child_qty, step, twap_qty)
        if not self.p.lead_ns:
            self._release(env, out)  # decided at the start: sent now

    def _release(self, env: Env, out: list[Action]) -> None:
        """Send the children decided (ahead, or just now), at their period's start: sized, gated
        and priced by the tracker and the book of now (a fill, a reject or a halt since is
        seen)."""
        assert self._held is not None
        t_ns, k, qty, step, twap_qty = self._held
        self._held = None
        if self.done:
            return
        self._send(self.mpc, qty, t_ns, env, out, k=k, step=step)
        if self.twap is not None and twap_qty is not None:
            self._send(self.twap, twap_qty, t_ns, env, out, k=k)

    def _send(
        self,
        leg: Leg,
        qty: float,
        t_ns: int,
        env: Env,
        out: list[Action],
        *,
        k: int,
        retry: bool = False,
        step: PolicyStep | None = None,
        forced: bool = False,
    ) -> None:
        cap = self.p.max_child_qty
        if cap > 0:
            qty = min(qty, cap)
        qty = min(qty, leg.tracker.uncommitted_qty)
        if qty <= 0 or not math.isfinite(self.last_mid):
            return
        if leg.gated and self.p.max_child_multiple > 0:
            # The catch-up guard: no child above max_child_multiple average periods (a time
            # jump, a silent feed or a late resume never fires the rest as one dump); the
            # rest waits for the next decision or retry.
            lim = self._multiple_limit()
            if qty > lim + 1e-9:
                capped = math.floor(lim / self.p.lot + 1e-9) * self.p.lot or lim
                out.append(
                    _capped(
                        k,
                        qty,
                        capped,
                        f"{self.p.max_child_multiple:g}x the average period quantity "
                        f"{self.p.quantity / self.grid.n:g} (strategy.max_child_multiple; 0: off)",
                    )
                )
                qty = float(capped)
        if leg.gated and self.volume is not None and k < self.grid.n - 1:
            qty = self._participation_clip(k, qty, t_ns, out)
            if qty <= 0:
                return
        coid = f"{leg.prefix}{leg.n_sent + 1:05d}"
        limit_px = collar_limit_px(self.side, self.last_mid, self.p.collar_bps)
        tif = "ioc"
        tac = self.tactic
        if leg is self.mpc and tac is not None and tac.live and not (retry or forced):
            end = min(self.grid.start_of(k) + self.grid.period_ns, self.p.end_ns)
            behind = tac.planned - leg.tracker.filled_qty  # the schedule's own, not a line
            plan = tac.plan(k, float(qty), t_ns, self._touch, end, behind / self.p.quantity)
            if plan.wait:
                self._wait_step = step
                out.append(
                    Log("info", "tactic.wait", {"period": k, "qty": float(qty), "ts_ns": t_ns})
                )
                return
            if plan.px is not None:
                tif, limit_px = plan.tif, plan.px
                qty = self._post_cap(k, float(qty), plan.px, out)
        if forced and step is None:
            step, self._wait_step = self._wait_step, None
        if leg.gated:
            blocked = self._gate(leg, coid, float(qty), limit_px, t_ns, env, rests=tif != "ioc")
            if blocked is not None:
                gate, detail = blocked
                out.append(
                    Log(
                        "warning",
                        "risk.blocked",
                        {
                            "gate": gate,
                            "detail": detail,
                            "client_order_id": coid,
                            "qty": float(qty),
                        },
                    )
                )
                return
        leg.n_sent += 1
        child = ChildOrder(
            client_order_id=coid,
            parent_id=self.p.parent_id,
            symbol=self.p.symbol,
            side=self.side,
            qty=float(qty),
            limit_px=limit_px,
            ts_created_ns=t_ns,
            tif=tif,  # type: ignore[arg-type]
        )
        if tif != "ioc" and tac is not None and tac.slice is not None:
            tac.slice.coid = coid
        leg.tracker.on_submitted(child, t_ns)
        leg.children.append(coid)
        fields: dict[str, Any] = {
            "strategy": leg.name,
            "client_order_id": coid,
            "qty": child.qty,
            "limit_px": child.limit_px,
            "ts_ns": t_ns,
            "tif": tif,
        }
        if leg is self.mpc:
            g0 = step.g0 if step is not None else None
            pred = g0(child.qty) if g0 is not None else None
            if pred is not None:
                fields["predicted_cost"] = pred
            self.slices.append(
                SliceRecord(
                    coid,
                    k,
                    t_ns,
                    child.qty,
                    child.limit_px,
                    retry,
                    pred,
                    g0,
                    dict(step.fields) if step is not None else {},
                )
            )
        out.append(Send(leg.name, child, Log(leg.log_level, "order.submitted", fields)))

    def _post_cap(self, k: int, qty: float, px: float, out: list[Action]) -> float:
        """Return the passive child's size under ``max_post_multiple`` x the size displayed at
        its price, in lots (at least one lot); what it leaves of the period crosses at the
        cut-off with what the post did not fill."""
        tac = self.tactic
        m = tac.config.max_post_multiple if tac is not None else 0.0
        if not m or self._own_row is None:
            return qty
        shown = displayed_at(px, *self._own_row)
        lot = self.p.lot
        cap = max(math.floor(m * shown / lot + 1e-9) * lot, lot)
        if qty <= cap + 1e-9:
            return qty
        fields = {"period": k, "qty": qty, "capped_qty": float(cap), "px": px, "displayed": shown}
        out.append(Log("info", "tactic.post_capped", fields | {"multiple": m}))
        return float(cap)  # the slice keeps the period's quantity: the cut-off crosses the rest

    def _gate(
        self,
        leg: Leg,
        coid: str,
        qty: float,
        limit_px: float,
        t_ns: int,
        env: Env,
        rests: bool = False,
    ) -> tuple[str, str] | None:
        """Return ``(gate, detail)`` of the first gate that stops this child, else None.

        The operator's and the session's gates first (kill switch, broker down, children per
        parent), then the pre-trade limits, global then per order. A child that passes is
        recorded by the gates (duplicate guard, rate).
        """
        if env.halted:
            return "halted", "kill switch engaged"
        if not env.broker_available:
            # Denied, not queued: a child sent into a dead session would only be in doubt.
            return "broker_unavailable", f"{env.broker_name} session is not active"
        cap_n = self.p.max_children
        if cap_n and leg.n_sent >= cap_n:
            # Counted from the journal's intents, so a kill -9 and a restart do not reset it.
            return "max_children_per_parent", f"{leg.n_sent} children sent, limit {cap_n}"
        if self.gates is None:
            return None
        px, sz = self._last_row if self._last_row is not None else (np.zeros(0), np.zeros(0))
        with np.errstate(invalid="ignore"):
            inside = (px <= limit_px) if self.side is Side.BUY else (px >= limit_px)
        args: dict[str, Any] = {
            "client_order_id": coid,
            "qty": qty,
            "limit_px": limit_px,
            "mid": self.last_mid,
            "book_ts_ns": self.last_ts,
            "now_ns": t_ns,
            # A resting child takes no depth (it adds to it): the depth share limits only
            # children that cross.
            "depth_inside_limit": math.inf if rests else float(sz[inside].sum()),
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
        if self.aggregate is not None:
            agg = self.aggregate.check(
                symbol=self.p.symbol, qty=qty, limit_px=limit_px, now_ns=t_ns
            )
            if not agg.ok:
                return f"aggregate.{agg.gate}", agg.detail
            self.aggregate.record_sent(
                coid, symbol=self.p.symbol, qty=qty, limit_px=limit_px, now_ns=t_ns
            )
        if self.order_gates is not None:
            self.order_gates.record_sent(coid, t_ns)
        self.gates.record_sent(coid, t_ns)
        return None

    def _participation_caps(self, t_ns: int) -> NDArray[np.float64] | None:
        """Return the solver's caps of periods k.. from the expected volume (None: off)."""
        if self.volume is None:
            return None
        starts = self.grid.starts(min(self.k_next - 1, self.grid.n - 1) if self.k_next else 0)
        vf = self.volume.forecast(t_ns, starts)
        return participation_caps(self.p.max_participation, vf.volume)

    def _participation_clip(self, k: int, qty: float, t_ns: int, out: list[Action]) -> float:
        """Return the child cut to what the participation limit leaves of period ``k``.

        The pre-trade gate of ``max_participation`` for every strategy and every child of the
        period before the last (the solver's cap only shapes the MPC's plan): at most
        ``rate * E[V_k]`` of the period's volume, less what we took in it (fills dated in the
        period, plus what is still working). When the periods left cannot hold what is left at
        that rate, the limit is relaxed by the same factor as the solver's caps (just enough to
        finish by the deadline), so the gate never piles the parent into the last period.
        Unknown volume: no limit, as for the solver; the last period is not gated.
        """
        assert self.volume is not None
        vf = self.volume.forecast(t_ns, self.grid.starts(k))
        caps = participation_caps(self.p.max_participation, vf.volume)
        if caps.size == 0 or not np.all(np.isfinite(caps)):
            return qty
        taken = self._period_fills.get(k, 0.0) + self.mpc.tracker.open_qty
        total = float(caps.sum())
        left = self.mpc.tracker.uncommitted_qty + taken  # what the periods from k must hold
        scale = max(1.0, left / total) if total > 0 else math.inf
        limit = float(caps[0]) * scale
        allowed = max(limit - taken, 0.0)
        if qty <= allowed * (1 + 1e-12):
            return qty
        lot = self.p.lot
        capped = math.floor(allowed / lot + 1e-9) * lot
        rate = self.p.max_participation * scale
        relaxed = ", relaxed to finish by the deadline" if scale > 1 else ""
        out.append(
            _capped(
                k,
                qty,
                float(capped),
                f"{rate:.4g} of the period's expected volume {float(vf.volume[0]):g} "
                f"(strategy.max_participation {self.p.max_participation:g}{relaxed}), "
                f"{taken:g} already taken in the period",
            )
        )
        return float(capped)

    def _multiple_limit(self) -> float:
        """Return the largest child the catch-up guard lets through, shares."""
        avg = self.p.quantity / self.grid.n
        return self.p.max_child_multiple * max(avg, float(self.p.lot))

    # -- operator -------------------------------------------------------------------------------
    def cancel_open(self, reason: str) -> list[Action]:
        """Return a cancel for every open child of the mpc leg."""
        out: list[Action] = []
        for coid, c in list(self.mpc.tracker.children.items()):
            if not c.state.terminal:
                out.append(
                    Log(
                        "warning",
                        "order.cancel_requested",
                        {"client_order_id": coid, "reason": reason},
                    )
                )
                out.append(Cancel("mpc", coid, reason))
        return out

    def cancel_parent(self, reason: str) -> list[Action]:
        """Stop working this parent: no new child from now on (open ones: ``cancel_open``)."""
        if self.cancelled:
            return []
        self.cancelled = True
        self.done = True
        self._held = None
        return [
            Log(
                "warning",
                "order.parent_cancelled",
                {
                    "reason": reason,
                    "filled_qty": self.mpc.tracker.filled_qty,
                    "remaining_qty": self.mpc.tracker.remaining_qty,
                },
            )
        ]

    def in_doubt(self) -> list[str]:
        """Return the mpc children sent but not closed."""
        return [k for k, c in self.mpc.tracker.children.items() if not c.state.terminal]

    # -- events ---------------------------------------------------------------------------------
    def on_event(self, leg: Leg, event: TrackerEvent) -> tuple[Transition, list[Action]]:
        """Apply a venue event to the leg's tracker; return the transition and its actions.

        Raises:
            InvariantViolation: The event breaks the tracker's rules (an overfill, say).
        """
        tr = leg.tracker.on_event(event)
        out: list[Action] = []
        if tr.applied:
            out.append(Record(leg.name, event))
            if leg is self.mpc:
                self._account(tr, event)
                if tr.fill_qty and self.volume is not None:
                    kf = (event.ts_event_ns - self.grid.start_ns) // self.grid.period_ns
                    self._period_fills[kf] = self._period_fills.get(kf, 0.0) + tr.fill_qty
                if tr.new is not None and tr.new.terminal:
                    out.extend(self._slice_cost(tr.client_order_id))
        if self.tactic is not None and tr.applied:
            self._tactic_event(leg, tr.client_order_id, event.ts_event_ns)
        if isinstance(event, OrderStatus):
            child = leg.tracker.children.get(event.client_order_id)
            out.append(
                Log(
                    "warning" if tr.applied else leg.log_level,
                    "order.reconciled",
                    {
                        "strategy": leg.name,
                        "client_order_id": event.client_order_id,
                        "venue_status": event.status,
                        "venue_cum_qty": event.cum_qty,
                        "filled_qty": child.filled_qty if child else None,
                        "state": str(tr.new) if tr.new is not None else None,
                        "changed": tr.applied,
                        "note": tr.note,
                    },
                )
            )
            return tr, out
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
            out.append(Log(leg.log_level, _EVENT_NAMES.get(str(tr.new), "order.updated"), fields))
        elif isinstance(event, OrderFilled) and tr.applied:
            out.append(
                Log(
                    leg.log_level,
                    "order.partially_filled",
                    {
                        "strategy": leg.name,
                        "client_order_id": tr.client_order_id,
                        "fill_qty": event.qty,
                        "fill_px": event.px,
                        "exec_id": event.exec_id,
                    },
                )
            )
        elif tr.note in ("duplicate", "stale"):
            out.append(
                Log(
                    "debug",
                    "order.event_ignored",
                    {
                        "client_order_id": tr.client_order_id,
                        "note": tr.note,
                        "event_type": type(event).__name__,
                    },
                )
            )
        return tr, out

    def _slice_cost(self, coid: str) -> list[Action]:
        """Return the ``order.slice_cost`` line of a closed mpc child: the cost the model
        predicted for what filled beside the cost realized against the decision's mid."""
        for rec in self.slices[len(self._slice_of) :]:  # index the slices sent since
            self._slice_of[rec.client_order_id] = rec
        sl = self._slice_of.get(coid)
        child = self.mpc.tracker.children.get(coid)
        if sl is None or child is None or sl.g0 is None or not child.filled_qty > 0:
            return []
        # The decision's mid, from the child's collar: limit = mid (1 + s collar).
        mid = child.order.limit_px / (1.0 + self.side.sign * self.p.collar_bps * 1e-4)
        realized = self.side.sign * child.filled_qty * (child.avg_px - mid)
        predicted = sl.g0(child.filled_qty)
        return [
            Log(
                "info",
                "order.slice_cost",
                {
                    "client_order_id": coid,
                    "period": sl.k,
                    "filled_qty": child.filled_qty,
                    "predicted_cost": predicted,
                    "realized_cost": realized,
                    "ratio": realized / predicted if predicted > 0 else None,
                },
            )
        ]

    def _account(self, tr: Transition, event: TrackerEvent) -> None:
        """Keep the daemon-wide exposure up to date with what the venue did."""
        if self.aggregate is None:
            return
        if tr.fill_qty:
            px = event.px if isinstance(event, OrderFilled) else getattr(event, "avg_px", 0.0)
            self.aggregate.record_fill(tr.client_order_id, tr.fill_qty, float(px))
        if tr.new is not None and tr.new.terminal:
            self.aggregate.record_closed(tr.client_order_id)

    # -- restart --------------------------------------------------------------------------------
    def restore(
        self,
        items: Sequence[tuple[str, ChildOrder | OrderEvent]],
        periods: Sequence[int],
        arrival_mid: float,
        carry: float,
    ) -> list[Action]:
        """Resume from a journal: replay intents and events into fresh trackers."""
        if not (items or periods):
            return []
        for name, item in items:
            leg = self.leg(name)
            if leg is None:
                continue
            if isinstance(item, ChildOrder):
                leg.tracker.on_submitted(item, item.ts_created_ns)
                if leg is self.mpc and self.gates is not None:
                    self.gates.record_sent(item.client_order_id, item.ts_created_ns)
                if leg is self.mpc and self.aggregate is not None:
                    self.aggregate.record_sent(
                        item.client_order_id,
                        symbol=item.symbol,
                        qty=item.qty,
                        limit_px=item.limit_px,
                        now_ns=item.ts_created_ns,
                    )
                leg.children.append(item.client_order_id)
                leg.n_sent += 1
            else:
                tr = leg.tracker.on_event(item)
                if leg is self.mpc and tr.applied:
                    self._account(tr, item)
        if periods:
            self.k_next = max(periods) + 1
            if self.k_next >= self.grid.n:
                self._retry_next = self.grid.start_of(self.grid.n - 1)
        self.arrival_mid = arrival_mid
        self.carry = carry
        t = self.mpc.tracker
        out: list[Action] = [
            Log(
                "info",
                "order.restored",
                {
                    "periods_decided": len(periods),
                    "children": self.mpc.n_sent,
                    "filled_qty": t.filled_qty,
                    "open_qty": t.open_qty,
                    "remaining_qty": t.remaining_qty,
                },
            )
        ]
        self._restore_resting()
        for c in t.children.values():
            if not c.state.terminal:
                # Sent before the restart and never closed: it may still be working. Its shares
                # stay reserved until the venue reports on it; it is never re-sent as new.
                out.append(
                    Log(
                        "error",
                        "order.in_doubt",
                        {
                            "client_order_id": c.order.client_order_id,
                            "qty": c.order.qty,
                            "filled_qty": c.filled_qty,
                            "after_restart": True,
                        },
                    )
                )
        return out

    def _restore_resting(self) -> None:
        """A child that rested before the restart is cut off at once: its period's plan is
        gone, so the tactic cancels it and crosses what is left (never re-sent as new)."""
        tac = self.tactic
        if tac is None:
            return
        for c in self.mpc.tracker.open_children():
            if c.order.rests and c.ts_cancel_requested_ns is None:
                k = max(0, min(self.k_next - 1, self.grid.n - 1))
                tac.slice = Slice(
                    k, c.order.qty, c.order.ts_created_ns, "resting", coid=c.order.client_order_id
                )
                return

    # -- outcome --------------------------------------------------------------------------------
    def summary(self) -> Summary:
        """Return the parent's outcome so far."""
        t = self.mpc.tracker
        tw = self.twap.tracker if self.twap is not None else None
        status = "completed" if t.filled_qty >= t.parent_qty - 1e-9 else "incomplete"
        if self.cancelled and status != "completed":
            status = "cancelled"
        return Summary(
            parent_id=self.p.parent_id,
            symbol=self.p.symbol,
            side=self.side.value,
            target_qty=t.parent_qty,
            filled_qty=t.filled_qty,
            avg_px=t.avg_px,
            arrival_mid=self.arrival_mid,
            shortfall_bps=shortfall_bps(self.side, t.avg_px, self.arrival_mid),
            twap_filled_qty=tw.filled_qty if tw else math.nan,
            twap_avg_px=tw.avg_px if tw else math.nan,
            twap_shortfall_bps=(
                shortfall_bps(self.side, tw.avg_px, self.arrival_mid) if tw else math.nan
            ),
            n_periods=self.grid.n,
            n_children=self.mpc.n_sent,
            status=status,
        )

    def check(self) -> None:
        """Raise ``InvariantViolation`` when a tracker's books do not balance (tests)."""
        for leg in self.legs:
            leg.tracker.audit()

    # -- tactic ---------------------------------------------------------------------------------
    def _tactic_act(self, t_ns: int, env: Env, out: list[Action]) -> None:
        """A wake of the tactic: send a waiting IOC, re-price, cut off, or cross what is left."""
        tac = self.tactic
        s = tac.slice if tac is not None else None
        if tac is None or s is None:
            return
        leg = self.mpc
        if s.phase == "waiting":
            tac.slice = None
            reason = "deadline" if t_ns >= s.t_cut else "cheap"
            out.append(Log("info", "tactic.send", {"period": s.k, "reason": reason, "ts_ns": t_ns}))
            self._send(leg, s.qty, t_ns, env, out, k=s.k, forced=True)
            return
        child = leg.tracker.child(s.coid) if s.coid else None
        if s.phase == "resting":
            if child is None or child.state.terminal:
                s.phase = "crossing"
            elif t_ns >= s.t_cut:
                s.phase, s.wake_ns = "crossing", None
                if child.ts_cancel_requested_ns is None:
                    self._request_cancel(child.order.client_order_id, t_ns, "tactic_cutoff", out)
                return
            else:
                s.wake_ns = None
                pp = passive_price(self.side, *self._touch, tac.config.tick_size, tac.config.inside)
                if pp is None or abs(pp.px - s.px) < 1e-9 or child.replace is not None:
                    return
                if child.ts_cancel_requested_ns is not None:
                    return
                # A new ClOrdID per replace (FIX 35=G); the tracker resolves every id of the child.
                cur = child.order.client_order_id
                new = f"{s.coid}-r{len(child.prior_ids) + 1}"
                req = ReplaceRequested(cur, new, child.order.qty, pp.px, t_ns)
                out.extend(self.on_event(leg, req)[1])
                out.append(Replace(leg.name, req))
                fields = {"client_order_id": s.coid, "old_px": s.px, "px": pp.px}
                out.append(Log("info", "tactic.reprice", fields))
                s.px = pp.px
                tac.n_repriced += 1
                return
        if child is not None and not child.state.terminal:
            s.wake_ns = None  # the cancel's answer wakes us
            return
        tac.slice = None
        # the period's quantity less what the post filled (a capped post rested less than it)
        left = max(s.qty, child.order.qty) - child.filled_qty if child is not None else s.qty
        if left > 1e-9:
            out.append(Log("info", "tactic.cross", {"period": s.k, "qty": left, "ts_ns": t_ns}))
            self._send(leg, left, t_ns, env, out, k=s.k, forced=True)

    def _request_cancel(self, coid: str, t_ns: int, reason: str, out: list[Action]) -> None:
        """Record a cancel request in the tracker (journaled), then ask the venue."""
        req = CancelRequested(coid, t_ns)
        out.extend(self.on_event(self.mpc, req)[1])
        out.append(
            Log("info", "order.cancel_requested", {"client_order_id": coid, "reason": reason})
        )
        out.append(Cancel(self.mpc.name, coid, reason, req))

    def _tactic_event(self, leg: Leg, coid: str, ts_ns: int) -> None:
        """After an event on the resting child: a closed child wakes the tactic to cross."""
        tac = self.tactic
        s = tac.slice if tac is not None else None
        if tac is None or s is None or leg is not self.mpc or not s.coid or s.phase == "waiting":
            return
        child = leg.tracker.child(coid)
        if child is None or child is not leg.tracker.child(s.coid):
            return
        if child.state.terminal:
            if child.full:
                tac.slice = None  # the passive child did it all
            else:
                # at the event's time (a status answer after a restart may carry none)
                s.phase, s.wake_ns = "crossing", max(ts_ns, self.last_ts)


def _capped(k: int, qty: float, capped: float, limit: str) -> Log:
    """Return the ``mpc.child_capped`` line of a child cut by a guard (``limit`` says which)."""
    return Log(
        "warning",
        "mpc.child_capped",
        {"period": k, "qty": qty, "capped_qty": capped, "limit": limit},
    )
