"""Pure matching of an immediate-or-cancel limit order against one L2 snapshot.

A buy walks the asks from the best price up, a sell walks the bids down, taking at most each
level's displayed size and never a level priced through the limit (the collar). Whatever the
visible levels inside the limit cannot fill is left unfilled (the venue then cancels it).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from agent.model import Side

__all__ = ["collar_limit_px", "match_ioc"]


def collar_limit_px(side: Side, mid: float, collar_bps: float) -> float:
    """Return the worst acceptable price: ``mid * (1 +/- collar_bps / 1e4)``."""
    return mid * (1.0 + side.sign * collar_bps * 1e-4)


def match_ioc(
    side: Side,
    qty: float,
    limit_px: float,
    px: NDArray[np.float64],
    sz: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Match an IOC limit order against one side of one snapshot.

    Args:
        side: Order side (buy takes ``px``/``sz`` of the asks, sell of the bids).
        qty: Shares wanted, >= 0.
        limit_px: Worst acceptable price.
        px: Level prices of the side walked, shape (L,), best first, NaN when empty.
        sz: Level sizes, shape (L,), 0 when empty.

    Returns:
        ``(fill_qty, fill_px)``: one entry per level touched, best first; empty when nothing
        is marketable. ``fill_qty.sum() <= qty``.
    """
    with np.errstate(invalid="ignore"):
        ok = (px <= limit_px) if side is Side.BUY else (px >= limit_px)
    ok &= np.isfinite(px) & (sz > 0)
    avail = np.where(ok, sz, 0.0)
    before = np.concatenate(([0.0], np.cumsum(avail)[:-1]))
    take = np.clip(qty - before, 0.0, avail)
    hit = take > 0
    return take[hit], px[hit]
