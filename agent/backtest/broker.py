"""Resilient simulated broker for the backtest (pure, synchronous).

The replayed book does not know about our orders: after we take 500 shares at the best ask, the
next snapshot still shows them. Matching every child against the displayed book would let a
strategy that trades often take the same depth again and again. This broker remembers it.

Rules (invariants):
- Consumed depth ``c(p)`` is kept per price of the side we take (asks for a buy, bids for a
  sell). Between two executions it decays as ``c * exp(-ln2 * dt / half_life)``: the depth comes
  back with the configured resilience half-life. ``half_life = 0`` forgets at once (every order
  sees the displayed book); ``half_life = inf`` never forgets.
- At an execution the size available to us at price ``p`` is ``max(0, displayed(p) - c(p))``;
  what we take is added to ``c(p)``. So, on an unchanged book with an infinite half-life, no
  share is taken twice: the sum of our fills at a level never exceeds its displayed size.
- Orders are immediate-or-cancel limit orders: levels priced through the limit are not taken;
  what the visible levels (net of consumption) cannot fill is cancelled (``unfilled``), or,
  under the ``penalty`` policy, filled at the last visible price worsened by ``penalty_bps``
  when that price is inside the limit. Penalty fills model liquidity we cannot see, so they
  consume nothing we can track: the policy is explicit and every such fill is flagged.
- Latency is handled by the caller (``agent.backtest.engine``): a child sent at ``t`` executes
  on the first snapshot at or after ``t + latency``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from agent.brokers.matching import match_ioc
from agent.model import Side

__all__ = ["Execution", "ResilientBook"]

_LN2 = math.log(2.0)


@dataclass(frozen=True, slots=True)
class Execution:
    """Outcome of one IOC child.

    Attributes:
        qty: Shares filled per level touched, shape (m,) (the last entry may be a penalty fill).
        px: Fill price per entry, shape (m,).
        beyond_qty: Shares filled by the beyond-depth penalty policy (0 when none).
        reason: ``filled``, ``ioc_remainder`` (partial), ``no_liquidity`` (nothing filled).
    """

    qty: NDArray[np.float64]
    px: NDArray[np.float64]
    beyond_qty: float
    reason: str

    @property
    def filled(self) -> float:
        """Return the shares filled."""
        return float(self.qty.sum())

    @property
    def avg_px(self) -> float:
        """Return the volume-weighted fill price (NaN when nothing filled)."""
        f = self.filled
        return float(self.qty @ self.px / f) if f > 0 else math.nan


@dataclass(slots=True)
class ResilientBook:
    """Our memory of the depth we took on one side, with resilience.

    Args:
        side: The side of our orders (a buy takes asks).
        half_life_s: Resilience half-life in seconds (0: none kept; ``math.inf``: forever).
        beyond_depth: ``unfilled`` or ``penalty``.
        penalty_bps: Price penalty of ``penalty`` beyond the last visible level, bps.
    """

    side: Side
    half_life_s: float
    beyond_depth: str = "unfilled"
    penalty_bps: float = 100.0
    _consumed: dict[float, float] = field(default_factory=dict)
    _last_ns: int | None = None

    def __post_init__(self) -> None:
        if not (self.half_life_s >= 0):
            raise ValueError(f"half_life_s must be >= 0, got {self.half_life_s}")
        if self.beyond_depth not in ("unfilled", "penalty"):
            raise ValueError(f"beyond_depth must be unfilled or penalty, got {self.beyond_depth}")

    def consumed(self, px: float, ts_ns: int) -> float:
        """Return the depth still missing at ``px`` at time ``ts_ns`` (shares)."""
        self._decay(ts_ns)
        return self._consumed.get(_key(px), 0.0)

    def _decay(self, ts_ns: int) -> None:
        if self._last_ns is None:
            self._last_ns = ts_ns
            return
        dt = (ts_ns - self._last_ns) / 1e9
        if dt < 0:
            raise ValueError("executions must come in time order")
        if self.half_life_s == 0:
            self._consumed.clear()
        elif dt > 0 and math.isfinite(self.half_life_s):
            f = math.exp(-_LN2 * dt / self.half_life_s)
            self._consumed = {p: c * f for p, c in self._consumed.items() if c * f > 1e-9}
        self._last_ns = ts_ns

    def execute(
        self,
        ts_ns: int,
        qty: float,
        limit_px: float,
        px: NDArray[np.float64],
        sz: NDArray[np.float64],
    ) -> Execution:
        """Execute an IOC limit order against one snapshot of the side we take.

        Args:
            ts_ns: Time of the snapshot, ns (non-decreasing across calls).
            qty: Shares wanted, > 0.
            limit_px: Worst acceptable price.
            px: Displayed prices of the side taken, shape (L,), best first, NaN when empty.
            sz: Displayed sizes, shape (L,).

        Returns:
            The fills; ``qty`` entries sum to at most the order's quantity.
        """
        self._decay(ts_ns)
        if self.half_life_s == 0:
            self._consumed.clear()
        avail = np.asarray(sz, dtype=np.float64).copy()
        for i, p in enumerate(px):
            if np.isfinite(p):
                avail[i] = max(0.0, avail[i] - self._consumed.get(_key(float(p)), 0.0))
        fq, fp = match_ioc(self.side, qty, limit_px, np.asarray(px, dtype=np.float64), avail)
        for q, p in zip(fq.tolist(), fp.tolist(), strict=True):
            k = _key(p)
            self._consumed[k] = self._consumed.get(k, 0.0) + q
        left = qty - float(fq.sum())
        beyond = 0.0
        if left > 1e-9 and self.beyond_depth == "penalty":
            live = np.isfinite(px) & (np.asarray(sz) > 0)
            if live.any():
                last = float(np.asarray(px)[np.flatnonzero(live)[-1]])
                pen = last * (1.0 + self.side.sign * self.penalty_bps * 1e-4)
                inside = pen <= limit_px if self.side is Side.BUY else pen >= limit_px
                # Only the shares that the visible levels inside the limit could not fill and
                # that lie past the whole visible book go to the penalty: a level skipped for
                # the collar is not "beyond depth".
                all_in = bool(
                    np.all(
                        ~live | ((px <= limit_px) if self.side is Side.BUY else (px >= limit_px))
                    )
                )
                if inside and all_in:
                    beyond = left
                    fq = np.append(fq, left)
                    fp = np.append(fp, pen)
                    left = 0.0
        partial = "ioc_remainder" if fq.size else "no_liquidity"
        reason = "filled" if left <= 1e-9 else partial
        return Execution(fq, fp, beyond, reason)


def _key(px: float) -> float:
    # Prices are on a tick grid; rounding merges float noise from different snapshots.
    return round(px, 8)
