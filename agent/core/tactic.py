"""The within-period tactic: how one period's quantity is worked (pure).

The schedule (how much per period) is the policy's; the tactic decides how that child meets the
book inside its period. One of:

- ``aggressive`` (default): an IOC limit through the spread at the decision (the collar price),
  the behaviour of every release before this module.
- ``passive``: post a resting limit at our touch (the bid for a buy), one tick inside when the
  spread is at least two ticks; re-price (cancel/replace) when the touch moves away from us by
  more than ``reprice_ticks`` (never more than ``max_post_multiple`` times the size the book
  shows there, when set); at the cut-off (``cutoff`` of the period) cancel what rests and
  cross the rest with an IOC. A parent that falls behind its schedule (what the policy asked for
  in the earlier periods, less what filled) by more than ``behind_tol`` of its quantity at a
  decision crosses that period at once. The final period's
  re-sends after the cut-off are IOCs, so the parent still completes.
- ``timing``: the IOC of the period waits, within the period, for a book whose walk cost for the
  child is at most the ``quantile`` of the day so far (``agent.core.timing.TimingRule``; the
  threshold is frozen at the decision so the rule reads past books only), and goes at the
  cut-off at the latest.

``Tactic`` holds the state of the one slice being worked and answers three questions the core
asks: how to send a child (``plan``), at which of the rows about to be observed it wants to act
(``wake_row``, vectorised), and what to do at a wake (the core's ``ParentCore._tactic_act``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from agent.core.timing import TimingRule
from agent.model import Side
from feeds.model import BookBatch

__all__ = [
    "PassivePrice",
    "Plan",
    "Slice",
    "Tactic",
    "TacticConfig",
    "displayed_at",
    "passive_price",
]

_NS = 1_000_000_000
_EPS = 1e-9


class TacticConfig(BaseModel):
    """How each period's child is worked (see the module docstring).

    Attributes:
        kind: ``aggressive`` (default), ``passive`` or ``timing``.
        tick_size: Price increment of the instrument (passive prices are on this grid).
        inside: Post one tick inside the touch when the spread is at least two ticks.
        reprice_ticks: Re-price when our touch moves away from our price by more than this.
        cutoff: Share of the period after which what rests is cancelled and the rest crosses
            (passive), or the latest send time of the waiting IOC (timing).
        behind_tol: At a decision, a parent behind its schedule (the policy's earlier children
            less the fills) by more than this share of its quantity crosses at once (passive).
        tif: Time in force of the resting child (``day`` or ``gtc``).
        max_post_multiple: Passive: post at most this many times the size displayed at our
            price (at our touch when we post inside it), in lots; a post far above what the
            book shows signals the order. What the cap leaves of the period crosses at the
            cut-off with what the post did not fill. 0: off.
        quantile: Timing: send when the child's cost is at most this quantile of the day.
        min_history_s: Timing: send at once until the day has this much book history.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["aggressive", "passive", "timing"] = "aggressive"
    tick_size: float = Field(default=0.01, gt=0.0)
    inside: bool = True
    reprice_ticks: float = Field(default=1.0, ge=0.0)
    cutoff: float = Field(default=0.8, gt=0.0, lt=1.0)
    behind_tol: float = Field(default=0.1, ge=0.0)
    tif: Literal["day", "gtc"] = "day"
    max_post_multiple: float = Field(default=0.0, ge=0.0)
    quantile: float = Field(default=0.25, gt=0.0, lt=1.0)
    min_history_s: float = Field(default=600.0, ge=0.0)


@dataclass(frozen=True, slots=True)
class PassivePrice:
    """Where a passive child posts: ``px`` and the touch it was priced from."""

    px: float
    touch: float


def displayed_at(
    px: float, levels_px: NDArray[np.float64], levels_sz: NDArray[np.float64]
) -> float:
    """Return the size displayed at ``px`` on our side's levels, or at our touch when no level
    is there (a post inside the spread opens a new level: the touch is what the book shows)."""
    with np.errstate(invalid="ignore"):
        at = np.abs(levels_px - px) <= _EPS * max(1.0, abs(px))
    if at.any():
        return float(levels_sz[at].sum())
    return float(levels_sz[0]) if levels_sz.size and math.isfinite(levels_sz[0]) else 0.0


def passive_price(
    side: Side, bid: float, ask: float, tick: float, inside: bool
) -> PassivePrice | None:
    """Return the passive price on this touch (None without a usable book).

    At our touch, or one tick inside when ``inside`` and the spread is at least two ticks; never
    at or through the other side.
    """
    if not (math.isfinite(bid) and math.isfinite(ask) and 0 < bid < ask):
        return None
    spread_ticks = round((ask - bid) / tick)
    step = tick if inside and spread_ticks >= 2 else 0.0
    if side is Side.BUY:
        px = round((bid + step) / tick) * tick
        return PassivePrice(px, bid) if px < ask - _EPS else None
    px = round((ask - step) / tick) * tick
    return PassivePrice(px, ask) if px > bid + _EPS else None


@dataclass(frozen=True, slots=True)
class Plan:
    """How to send one child: ``tif``, ``px`` (None: the collar price) or ``wait`` (timing)."""

    tif: str = "ioc"
    px: float | None = None
    wait: bool = False
    reason: str = "aggressive"


@dataclass(slots=True)
class Slice:
    """The slice being worked in the current period.

    Attributes:
        k: Period.
        qty: The period's child quantity.
        t_cut: Cut-off time, ns (cancel and cross / latest send).
        phase: ``resting`` (passive child posted), ``crossing`` (cancel sent, IOC to follow),
            ``waiting`` (timing: the IOC waits for a cheap book).
        coid: The resting child's client order id (passive).
        px: Its price (passive).
        threshold_bps: Timing threshold frozen at the decision.
        wake_ns: A wake the core must honour (a row trigger or a confirmed cancel), ns.
    """

    k: int
    qty: float
    t_cut: int
    phase: str
    coid: str = ""
    px: float = math.nan
    threshold_bps: float = math.nan
    wake_ns: int | None = None


class Tactic:
    """The tactic of one parent (see the module docstring).

    Args:
        config: Which tactic and its parameters.
        side: The parent's side.
        sizes: Timing only: child sizes of its cost histograms, increasing (shares).
    """

    def __init__(self, config: TacticConfig, side: Side, sizes: NDArray[np.float64]) -> None:
        self.config = config
        self.side = side
        self.slice: Slice | None = None
        self.rule: TimingRule | None = None
        if config.kind == "timing":
            self.rule = TimingRule(
                side.value, sizes, quantile=config.quantile,
                min_history_ns=int(config.min_history_s * _NS),
            )  # fmt: skip
        self.planned = 0.0  # shares the schedule asked for in the periods decided so far
        self.n_passive = 0
        self.n_crossed = 0
        self.n_repriced = 0

    @property
    def live(self) -> bool:
        """Return True when the tactic can act between decisions (not aggressive)."""
        return self.config.kind != "aggressive"

    def observe(self, seg: BookBatch) -> None:
        """Take in observed rows (timing: the day's cost history)."""
        if self.rule is not None:
            self.rule.observe(seg)

    def cut_time(self, period_start_ns: int, period_end_ns: int) -> int:
        """Return the period's cut-off time, ns."""
        return period_start_ns + int(self.config.cutoff * (period_end_ns - period_start_ns))

    def plan(
        self,
        k: int,
        qty: float,
        t_ns: int,
        touch: tuple[float, float],
        period_end_ns: int,
        behind: float,
    ) -> Plan:
        """Return how the period's child of ``qty`` goes at decision ``t_ns``.

        Args:
            k, qty, t_ns: The period, its child, the decision time.
            touch: ``(bid, ask)`` in force.
            period_end_ns: End of the period (the deadline for the last one).
            behind: Shares the parent is behind its own schedule (what the policy asked for in
                the earlier periods less what filled), share of the parent.
        """
        c = self.config
        self.planned += qty
        t_cut = self.cut_time(t_ns, period_end_ns)
        if c.kind == "passive":
            if behind > c.behind_tol:
                self.n_crossed += 1
                return Plan(reason="behind_schedule")
            pp = passive_price(self.side, touch[0], touch[1], c.tick_size, c.inside)
            if pp is None or t_cut <= t_ns:
                return Plan(reason="no_touch")
            self.slice = Slice(k, qty, t_cut, "resting", px=pp.px)
            self.n_passive += 1
            return Plan(tif=c.tif, px=pp.px, reason="passive")
        if c.kind == "timing" and self.rule is not None:
            d = self.rule.decide(t_ns, qty, t_cut)
            if d.send:
                return Plan(reason=f"timing_{d.reason}")
            self.slice = Slice(k, qty, t_cut, "waiting", threshold_bps=d.threshold_bps)
            return Plan(wait=True, reason="timing_wait")
        return Plan()

    def next_wake(self) -> int | None:
        """Return the earliest time the tactic must act, ns (None: nothing pending)."""
        s = self.slice
        if s is None:
            return None
        if s.phase == "crossing":
            return s.wake_ns
        return s.t_cut if s.wake_ns is None else min(s.t_cut, s.wake_ns)

    def wake_row(self, seg: BookBatch) -> int | None:
        """Return the time of the first row of ``seg`` the tactic reacts to (None: none).

        Passive: our touch moved away from our price by more than ``reprice_ticks``. Timing: the
        child's cost on the row is at most the threshold frozen at the decision. Vectorised over
        the rows; the answer depends on the rows and the slice only (never on how the feed was
        cut), so the daemon and the backtest wake at the same rows.
        """
        s = self.slice
        if s is None or not len(seg) or s.phase == "crossing" or s.wake_ns is not None:
            return None
        ts = seg.ts_event_ns
        with np.errstate(invalid="ignore"):
            if s.phase == "resting":
                lim = (self.config.reprice_ticks + 0.5) * self.config.tick_size
                if self.side is Side.BUY:
                    hit = seg.bid_px[:, 0] - s.px > lim
                else:
                    hit = s.px - seg.ask_px[:, 0] > lim
            elif s.phase == "waiting" and self.rule is not None:
                if not math.isfinite(s.threshold_bps):
                    return None
                cost = self.rule.costs_bps(seg, s.qty)
                hit = cost <= s.threshold_bps
            else:
                return None
        hit &= ts < s.t_cut
        idx = np.flatnonzero(hit)
        if idx.size == 0:
            return None
        s.wake_ns = int(ts[idx[0]])
        return s.wake_ns
