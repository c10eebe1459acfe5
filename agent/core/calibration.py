"""Predicted against realized cost per slice: the calibration figures of issue 13 item 6 (pure).

For slices ``i`` with predicted cost ``p_i > 0`` and realized cost ``r_i`` (same units, e.g.
currency or bps against the decision's mid), the ratio is ``r_i / p_i``. Reported: the median
ratio (1 is unbiased), the share of slices within ``+-tol`` of the prediction
(``|r_i / p_i - 1| <= tol``, tol = 20 %), and the Pearson and Spearman correlations of ``p`` and
``r``. Slices whose prediction is not positive and finite, or whose realized cost is not finite,
cannot be judged: they are counted in ``n_dropped``, never silently folded in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

__all__ = ["Calibration", "calibrate_costs"]


@dataclass(frozen=True, slots=True)
class Calibration:
    """Calibration figures of predicted against realized slice costs.

    Attributes:
        n: Slices judged.
        n_dropped: Slices left out (prediction <= 0 or not finite, realized not finite).
        median_ratio: Median of ``realized / predicted`` (NaN when ``n == 0``).
        share_within: Share of judged slices with ``|ratio - 1| <= tol`` (NaN when ``n == 0``).
        tol: The tolerance used (0.2 = +-20 %).
        pearson: Correlation of predicted and realized (NaN below 2 slices or no variance).
        spearman: Rank correlation (NaN likewise).
    """

    n: int
    n_dropped: int
    median_ratio: float
    share_within: float
    tol: float
    pearson: float
    spearman: float

    def to_dict(self) -> dict[str, Any]:
        """Return the figures for a log line or the TCA report."""
        return {
            "n": self.n,
            "n_dropped": self.n_dropped,
            "median_ratio": self.median_ratio,
            "share_within": self.share_within,
            "tol": self.tol,
            "pearson": self.pearson,
            "spearman": self.spearman,
        }


def calibrate_costs(predicted: ArrayLike, realized: ArrayLike, tol: float = 0.2) -> Calibration:
    """Return the calibration figures of per-slice costs (see the module docstring).

    Args:
        predicted: Predicted cost per slice, shape (n,).
        realized: Realized cost per slice, shape (n,), same units.
        tol: Relative tolerance of ``share_within``, > 0.

    Raises:
        ValueError: If the shapes differ or ``tol`` is not positive.
    """
    p = np.asarray(predicted, dtype=np.float64).ravel()
    r = np.asarray(realized, dtype=np.float64).ravel()
    if p.shape != r.shape:
        raise ValueError(f"predicted {p.shape} and realized {r.shape} differ in shape")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    ok = np.isfinite(p) & (p > 0) & np.isfinite(r)
    p, r = p[ok], r[ok]
    n = int(p.size)
    dropped = int(ok.size - n)
    if n == 0:
        return Calibration(0, dropped, math.nan, math.nan, tol, math.nan, math.nan)
    ratio = r / p
    within = float(np.mean(np.abs(ratio - 1.0) <= tol + 1e-12))
    pear = spear = math.nan
    if n >= 2 and np.ptp(p) > 0 and np.ptp(r) > 0:
        pear = float(np.corrcoef(p, r)[0, 1])
        spear = float(stats.spearmanr(p, r).statistic)
    return Calibration(n, dropped, float(np.median(ratio)), within, tol, pear, spear)
