"""Transaction-cost analysis of one parent order (pure).

Symbols: ``S`` parent shares, ``s = +1`` for a buy and ``-1`` for a sell, ``m_0`` the arrival
mid (the mid in force at the order's start), fills ``i`` with shares ``q_i``, price ``p_i``, mid
``m_i`` and half-spread ``h_i`` of the snapshot they executed on, ``U = S - sum q_i`` the shares
left at the deadline, ``m_T`` the mid in force at the deadline, ``pen`` the unfilled penalty in
bps. Costs are in currency, positive = cost, for buys and sells alike:

    spread   = sum q_i h_i                                  (half-spread paid at each fill)
    impact   = s sum q_i (p_i - m_i) - spread               (paid beyond the half-spread)
    timing   = s sum q_i (m_i - m_0)                        (drift of the mid until each fill)
    unfilled = s U (m_T - m_0) + U m_0 pen / 1e4            (what is left, marked at the end)
    total    = s (sum q_i p_i + U m_T - S m_0) + U m_0 pen / 1e4

and ``spread + impact + timing + unfilled == total`` (to rounding; a test checks it). Every cost
is also given in bps of the parent's arrival notional ``S m_0``, so that an order that filled
less is not made to look cheaper: its unfilled part is priced.

``realized_slice_cost``: the cost of one child against the mid of the snapshot it executed on,
``s sum q_i (p_i - m_i)`` = spread + impact of that child: what the MPC's ``g_t(x)`` predicts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["Tca", "realized_slice_cost", "tactic_tca", "tca"]


@dataclass(frozen=True, slots=True)
class Tca:
    """Implementation shortfall and its parts (currency and bps of ``S m_0``).

    Attributes:
        parent_qty, filled_qty, unfilled_qty: Shares.
        arrival_mid, final_mid: ``m_0`` and ``m_T``.
        avg_px: Average fill price (NaN when nothing filled).
        total, spread, impact, timing, unfilled: Costs in currency (see the module docstring).
        total_bps, spread_bps, impact_bps, timing_bps, unfilled_bps: The same in bps of
            ``S m_0``.
        filled_shortfall_bps: ``s (avg_px - m_0) / m_0`` in bps, on the filled shares only
            (the daemon's ``shortfall_bps``); NaN when nothing filled.
    """

    parent_qty: float
    filled_qty: float
    unfilled_qty: float
    arrival_mid: float
    final_mid: float
    avg_px: float
    total: float
    spread: float
    impact: float
    timing: float
    unfilled: float
    total_bps: float
    spread_bps: float
    impact_bps: float
    timing_bps: float
    unfilled_bps: float
    filled_shortfall_bps: float

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (NaN as None)."""
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in asdict(self).items()
        }


def tca(
    sign: int,
    parent_qty: float,
    arrival_mid: float,
    final_mid: float,
    fill_qty: ArrayLike,
    fill_px: ArrayLike,
    fill_mid: ArrayLike,
    fill_half_spread: ArrayLike,
    unfilled_penalty_bps: float = 0.0,
) -> Tca:
    """Return the shortfall decomposition of one parent order.

    Args:
        sign: +1 buy, -1 sell.
        parent_qty: ``S``, shares, > 0.
        arrival_mid: ``m_0``, > 0.
        final_mid: ``m_T`` (mid in force at the deadline).
        fill_qty, fill_px, fill_mid, fill_half_spread: Per fill, shape (n,).
        unfilled_penalty_bps: Extra cost per unfilled share, bps of ``m_0``.
    """
    q = np.asarray(fill_qty, dtype=np.float64)
    p = np.asarray(fill_px, dtype=np.float64)
    m = np.asarray(fill_mid, dtype=np.float64)
    h = np.asarray(fill_half_spread, dtype=np.float64)
    if not (parent_qty > 0 and arrival_mid > 0 and sign in (1, -1)):
        raise ValueError("parent_qty and arrival_mid must be > 0 and sign +-1")
    filled = float(q.sum())
    u = parent_qty - filled
    u = u if u > 1e-9 * max(parent_qty, 1.0) else 0.0  # rounding of a complete fill is no remainder
    spread = float(q @ h)
    impact = float(sign * (q @ (p - m))) - spread
    timing = float(sign * (q @ (m - arrival_mid)))
    pen = u * arrival_mid * unfilled_penalty_bps * 1e-4
    unfilled = (sign * u * (final_mid - arrival_mid) if u > 0 else 0.0) + pen
    total = (
        float(sign * (q @ p + (u * final_mid if u > 0 else 0.0) - parent_qty * arrival_mid)) + pen
    )
    notional = parent_qty * arrival_mid
    avg = float(q @ p / filled) if filled > 0 else math.nan
    fs = sign * (avg - arrival_mid) / arrival_mid * 1e4 if filled > 0 else math.nan
    bps = 1e4 / notional
    return Tca(
        parent_qty,
        filled,
        u,
        arrival_mid,
        final_mid,
        avg,
        total,
        spread,
        impact,
        timing,
        unfilled,
        total * bps,
        spread * bps,
        impact * bps,
        timing * bps,
        unfilled * bps,
        fs,
    )


def realized_slice_cost(sign: int, qty: ArrayLike, px: ArrayLike, mid: float) -> float:
    """Return ``s sum q_i (p_i - mid)``: one child's cost against the mid it executed on."""
    q = np.asarray(qty, dtype=np.float64)
    return float(sign * (q @ (np.asarray(px, dtype=np.float64) - mid)))


def tactic_tca(
    sign: int,
    books: Any,
    fill_ts_ns: ArrayLike,
    fill_qty: ArrayLike,
    fill_px: ArrayLike,
    fill_mid: ArrayLike,
    fill_half_spread: ArrayLike,
    kinds: list[str],
    horizon_s: float,
    notional: float,
) -> dict[str, Any]:
    """Return the tactic's figures: what filled passively, the spread it captured, and the
    adverse selection after each passive fill (JSON-ready, NaN as None).

    ``spread_captured``: ``sum_passive q_i (h_i - s (p_i - m_i))`` over the half-spread paid by
    an aggressive fill, i.e. a passive fill at our touch captures ``2 h`` against crossing.
    ``adverse``: ``sum_passive q_i s (m_i - m(t_i + H))``, the mid moving against us over the
    horizon ``H`` after the fill (positive = cost: a buy filled before the mid fell).
    Both also in bps of the parent's arrival notional ``S m_0`` (``notional``).
    """
    t = np.asarray(fill_ts_ns, dtype=np.int64)
    q = np.asarray(fill_qty, dtype=np.float64)
    p = np.asarray(fill_px, dtype=np.float64)
    m = np.asarray(fill_mid, dtype=np.float64)
    h = np.asarray(fill_half_spread, dtype=np.float64)
    passive = np.array([k == "passive" for k in kinds], dtype=bool)
    filled = float(q.sum())
    qp = q[passive]
    ts = books.ts_event_ns
    idx = np.searchsorted(ts, t[passive] + int(horizon_s * 1e9), side="right") - 1
    m_later = books.mid[np.clip(idx, 0, len(ts) - 1)] if len(ts) else np.zeros(0)
    adverse = float(sign * (qp @ (m[passive] - m_later))) if qp.size else 0.0
    captured = float(qp @ (h[passive] - sign * (p[passive] - m[passive]))) if qp.size else 0.0
    bps = 1e4 / notional if notional > 0 else math.nan
    out = {
        "passive_qty": float(qp.sum()),
        "passive_share": float(qp.sum()) / filled if filled > 0 else math.nan,
        "n_passive_fills": int(passive.sum()),
        "spread_captured": captured,
        "spread_captured_bps": captured * bps,
        "adverse": adverse,
        "adverse_bps": adverse * bps,
        "adverse_horizon_s": horizon_s,
    }
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()
    }
