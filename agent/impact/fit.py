"""Fit parametric impact models to a walk-the-book cost curve (pure; numpy and scipy).

Symbols (``docs/execution-math.md`` section 1):
    x       order size, shares
    g(x)    total temporary-impact cost in currency against the mid (what the solver minimises)
    s(x)    per-share slippage ``g(x)/x``, currency per share
    beta    linear coefficient, currency per share (about the half-spread)
    gamma   quadratic coefficient, currency per share squared (about the depth slope)
    a, b    power law ``s(x) = a*x**b``, so ``g(x) = a*x**(1+b)``

Every model is fitted to the *per-share* slippage ``s(x_j) = g(x_j)/x_j`` of the curve's sizes,
all sizes weighing the same: ``s`` is the quantity the spec tabulates, and fitting the total
cost instead would let the largest sizes (whose cost is largest) decide everything. Each fit
keeps ``g`` convex in ``x``: ``beta, gamma >= 0``; power exponents ``b >= 0``, non-decreasing
from one regime to the next.

Fits never raise on data: an empty window, too few usable sizes or a failed optimiser give a
result with ``status`` other than ``OK``, NaN parameters and a ``message``. Bad *arguments*
(breakpoints outside the grid, a non-positive regime count) raise ``ValueError``.

Diagnostics common to all fits:
    r2      coefficient of determination of the fitted per-share slippage over the fitted sizes
    rmse    root mean square residual of the *total* cost ``g``, currency
    frac_beyond_depth   mean over the fitted sizes of the share of snapshots whose visible depth
            was below the size, i.e. the share of (snapshot, size) pairs the beyond-depth policy
            priced
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import TypedDict

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import least_squares, lsq_linear, nnls

from agent.impact.book_walk import CostCurve

__all__ = [
    "FitStatus",
    "PiecewisePowerFit",
    "PowerFit",
    "QuadraticFit",
    "fit_piecewise_power",
    "fit_power",
    "fit_quadratic",
]


# Upper bound of every power-law exponent and exponent increment: past it a "fit" is a
# degenerate curve (near-zero costs, then a wall), not a market impact.
_B_MAX = 8.0


class FitStatus(StrEnum):
    """Outcome of a fit."""

    OK = "ok"
    EMPTY_WINDOW = "empty_window"  # no snapshot in the window
    TOO_FEW_POINTS = "too_few_points"  # fewer usable sizes than parameters
    FAILED = "failed"  # the optimiser did not converge


@dataclass(frozen=True, slots=True)
class QuadraticFit:
    """``g(x) = beta*x + gamma*x**2`` (so ``s(x) = beta + gamma*x``), ``beta, gamma >= 0``.

    Attributes:
        beta: Currency per share; NaN unless ``status == "ok"``.
        gamma: Currency per share squared; NaN unless ``status == "ok"``.
        r2: R^2 of the per-share slippage fit.
        rmse: RMS residual of the total cost, currency.
        n_snapshots: Snapshots behind the curve.
        frac_beyond_depth: Share of (snapshot, size) pairs priced by the beyond-depth policy.
        status: A ``FitStatus`` value.
        message: Human-readable detail (why it failed, which policy was used).
        n_sizes: Sizes used in the fit.
    """

    beta: float
    gamma: float
    r2: float
    rmse: float
    n_snapshots: int
    frac_beyond_depth: float
    status: str
    message: str
    n_sizes: int = 0

    @property
    def ok(self) -> bool:
        """Return True when the parameters are usable."""
        return self.status == FitStatus.OK

    def cost(self, x: ArrayLike) -> NDArray[np.float64]:
        """Return ``g(x) = beta*x + gamma*x**2`` in currency for sizes ``x`` (shares), any shape."""
        x = np.asarray(x, dtype=np.float64)
        return np.asarray(self.beta * x + self.gamma * x * x, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class PowerFit:
    """``g(x) = a*x**(1+b)`` (so ``s(x) = a*x**b``), ``a > 0, b >= 0``.

    Attributes:
        a: Currency per share**(1+b); NaN unless ``status == "ok"``.
        b: Exponent of the per-share slippage, >= 0.
        r2, rmse, n_snapshots, frac_beyond_depth, status, message, n_sizes: As in
            ``QuadraticFit``.
    """

    a: float
    b: float
    r2: float
    rmse: float
    n_snapshots: int
    frac_beyond_depth: float
    status: str
    message: str
    n_sizes: int = 0

    @property
    def ok(self) -> bool:
        """Return True when the parameters are usable."""
        return self.status == FitStatus.OK

    def cost(self, x: ArrayLike) -> NDArray[np.float64]:
        """Return ``g(x) = a*x**(1+b)`` in currency for sizes ``x`` (shares), any shape."""
        x = np.asarray(x, dtype=np.float64)
        return np.asarray(self.a * np.power(x, 1.0 + self.b), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class PiecewisePowerFit:
    """Per-share slippage ``s(x) = a_k*x**b_k`` on regime ``k``, continuous at the breakpoints.

    Regime ``k`` covers ``[breakpoints[k-1], breakpoints[k])`` (the first starts at 0, the last
    runs to infinity). Continuity of ``s`` fixes ``a_{k+1} = a_k*x_k**(b_k - b_{k+1})``, and
    ``0 <= b_0 <= b_1 <= ...`` keeps ``g(x) = x*s(x)`` convex (its slope can only jump up).

    Attributes:
        breakpoints: Regime boundaries in shares, shape (K-1,), increasing.
        a: Coefficients per regime, shape (K,).
        b: Exponents per regime, shape (K,), non-decreasing, >= 0.
        r2, rmse, n_snapshots, frac_beyond_depth, status, message, n_sizes: As in
            ``QuadraticFit``.
    """

    breakpoints: NDArray[np.float64]
    a: NDArray[np.float64]
    b: NDArray[np.float64]
    r2: float
    rmse: float
    n_snapshots: int
    frac_beyond_depth: float
    status: str
    message: str
    n_sizes: int = 0

    @property
    def ok(self) -> bool:
        """Return True when the parameters are usable."""
        return self.status == FitStatus.OK

    def cost(self, x: ArrayLike) -> NDArray[np.float64]:
        """Return ``g(x) = x*a_k*x**b_k`` (regime ``k`` of each x) in currency, any shape."""
        x = np.asarray(x, dtype=np.float64)
        k = np.searchsorted(self.breakpoints, x, side="right")
        return np.asarray(self.a[k] * np.power(x, 1.0 + self.b[k]), dtype=np.float64)


# -- shared plumbing ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Data:
    x: NDArray[np.float64]  # sizes used, shares
    s: NDArray[np.float64]  # per-share slippage, currency per share
    frac_beyond: float
    n_snapshots: int
    note: str


def _data(curve: CostCurve, max_frac_beyond: float) -> _Data | str:
    """Return the usable points of the curve, or the reason there are none."""
    if curve.n_snapshots == 0:
        return "empty window: no snapshot to estimate from"
    sizes, g, fb = curve.sizes, curve.mean_cost, curve.frac_beyond_depth
    keep = np.isfinite(g)
    keep &= fb <= max_frac_beyond
    if keep.all():  # every size usable (the usual case): the arrays as they are, no gather
        x, s = sizes, g / sizes
    else:
        x, fb = sizes[keep], fb[keep]
        s = g[keep] / x
    # np.mean's own sum and division, without its wrappers (called at every decision)
    frac = float(np.add.reduce(fb)) / x.size if x.size else math.nan
    note = ""
    if x.size < sizes.size:
        note = f"{sizes.size - x.size} of {sizes.size} sizes left out"
        note += " (refused or above max_frac_beyond)"
    if frac > 0:
        note = (note + "; " if note else "") + (
            f"beyond-depth policy priced {frac:.1%} of (snapshot, size) pairs: "
            + curve.policy.describe()
        )
    return _Data(x, s, frac, curve.n_snapshots, note)


def _diagnostics(d: _Data, s_hat: NDArray[np.float64]) -> tuple[float, float]:
    """Return (R^2 of s, RMSE of g in currency).

    ``np.sum``'s and ``np.mean``'s own reductions (``np.add.reduce``, then one division),
    without their wrappers: the same numbers, a decision fits twice.
    """
    n = d.s.size
    if n == 0:  # as np.mean of nothing: no residual (R^2 1), RMSE NaN
        return 1.0, math.nan
    res = d.s - s_hat
    dev = d.s - float(np.add.reduce(d.s)) / n
    ss_tot = float(np.add.reduce(dev**2))
    ss_res = float(np.add.reduce(res * res))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)
    rmse = math.sqrt(float(np.add.reduce((res * d.x) ** 2)) / n)
    return r2, rmse


class _Failed(TypedDict):
    r2: float
    rmse: float
    n_snapshots: int
    frac_beyond_depth: float
    status: str
    message: str


def _failed(curve: CostCurve, status: FitStatus, message: str) -> _Failed:
    frac = float(np.nanmean(curve.frac_beyond_depth)) if curve.n_snapshots else math.nan
    return {
        "r2": math.nan,
        "rmse": math.nan,
        "n_snapshots": curve.n_snapshots,
        "frac_beyond_depth": frac,
        "status": str(status),
        "message": message,
    }


# -- quadratic ----------------------------------------------------------------------------------


def fit_quadratic(
    curve: CostCurve, *, max_frac_beyond: float = 1.0, diagnostics: bool = True
) -> QuadraticFit:
    """Fit ``g(x) = beta*x + gamma*x**2`` with ``beta, gamma >= 0`` (never raises on data).

    Non-negative least squares of the per-share slippage ``s(x_j)`` on ``[1, x_j]`` (columns
    scaled to unit size for conditioning): exact, no starting point, no iteration cap.

    Args:
        curve: Window curve from ``cost_curve``.
        max_frac_beyond: Leave out sizes where more than this share of snapshots needed the
            beyond-depth policy (1.0 keeps every size the policy priced).
        diagnostics: False: leave ``r2`` and ``rmse`` NaN (the parameters are the same; the
            MPC's fit of the book in force reads only them, at every decision).

    Returns:
        The fit; ``status != "ok"`` (NaN parameters) on an empty window or fewer than 2 sizes.
    """
    d = _data(curve, max_frac_beyond)
    if isinstance(d, str):
        return QuadraticFit(math.nan, math.nan, **_failed(curve, FitStatus.EMPTY_WINDOW, d))
    if d.x.size < 2:
        return QuadraticFit(
            math.nan,
            math.nan,
            **_failed(curve, FitStatus.TOO_FEW_POINTS, f"{d.x.size} usable sizes, need 2"),
            n_sizes=int(d.x.size),
        )
    scale = float(d.x.max())
    design = np.empty((d.x.size, 2))  # np.column_stack([1, x / scale]) without its wrappers
    design[:, 0] = 1.0
    np.divide(d.x, scale, out=design[:, 1])
    coef, _ = nnls(design, d.s)
    beta, gamma = float(coef[0]), float(coef[1] / scale)
    r2, rmse = _diagnostics(d, beta + gamma * d.x) if diagnostics else (math.nan, math.nan)
    return QuadraticFit(
        beta,
        gamma,
        r2,
        rmse,
        d.n_snapshots,
        d.frac_beyond,
        str(FitStatus.OK),
        d.note,
        int(d.x.size),
    )


# -- power law ----------------------------------------------------------------------------------


def _log_hinge_design(lx: NDArray[np.float64], lbreaks: NDArray[np.float64]) -> NDArray[np.float64]:
    """Design of ``log s = log a_0 + b_0*log x + sum_k delta_k*max(log x - log x_k, 0)``."""
    cols = [np.ones_like(lx), lx] + [np.maximum(lx - lb, 0.0) for lb in lbreaks]
    return np.column_stack(cols)


def _fit_log_hinge(d: _Data, lbreaks: NDArray[np.float64]) -> tuple[NDArray[np.float64], bool, str]:
    """Fit ``theta = (log a_0, b_0, delta_1..)`` with ``b_0, delta_k >= 0`` to ``s`` (absolute).

    Start from the bounded log-space least squares, then minimise the absolute residuals of
    ``s`` (the same objective as the quadratic fit) with ``scipy.optimize.least_squares``.
    """
    lx = np.log(d.x)
    design = _log_hinge_design(lx, lbreaks)
    pos = d.s > 0
    lo = np.r_[-np.inf, np.zeros(design.shape[1] - 1)]
    hi = np.r_[np.inf, np.full(design.shape[1] - 1, _B_MAX)]
    if pos.sum() >= design.shape[1]:
        start = lsq_linear(design[pos], np.log(d.s[pos]), bounds=(lo, hi)).x
    else:
        start = np.r_[math.log(max(float(np.mean(d.s)), 1e-12)), np.zeros(design.shape[1] - 1)]
    start = np.clip(start, lo, hi)
    scale = float(np.max(np.abs(d.s))) or 1.0

    def resid(theta: NDArray[np.float64]) -> NDArray[np.float64]:
        return (np.exp(design @ theta) - d.s) / scale

    def jac(theta: NDArray[np.float64]) -> NDArray[np.float64]:
        return (np.exp(design @ theta) / scale)[:, None] * design

    res = least_squares(resid, start, jac=jac, bounds=(lo, hi), method="trf", x_scale="jac")
    return res.x, bool(res.success), str(res.message)


def fit_power(curve: CostCurve, *, max_frac_beyond: float = 1.0) -> PowerFit:
    """Fit ``g(x) = a*x**(1+b)`` with ``a > 0, 0 <= b <= 8`` (never raises on data).

    Args:
        curve: Window curve from ``cost_curve``.
        max_frac_beyond: As in ``fit_quadratic``.

    Returns:
        The fit; ``status != "ok"`` (NaN parameters) on an empty window, fewer than 2 sizes, or
        an optimiser failure.
    """
    d = _data(curve, max_frac_beyond)
    if isinstance(d, str):
        return PowerFit(math.nan, math.nan, **_failed(curve, FitStatus.EMPTY_WINDOW, d))
    if d.x.size < 2 or not np.any(d.s > 0):
        return PowerFit(
            math.nan,
            math.nan,
            **_failed(
                curve,
                FitStatus.TOO_FEW_POINTS,
                f"{d.x.size} usable sizes with positive cost, need 2",
            ),
            n_sizes=int(d.x.size),
        )
    theta, ok, msg = _fit_log_hinge(d, np.empty(0))
    if not ok:
        return PowerFit(
            math.nan, math.nan, **_failed(curve, FitStatus.FAILED, msg), n_sizes=int(d.x.size)
        )
    a, b = float(np.exp(theta[0])), float(theta[1])
    r2, rmse = _diagnostics(d, a * np.power(d.x, b))
    return PowerFit(
        a, b, r2, rmse, d.n_snapshots, d.frac_beyond, str(FitStatus.OK), d.note, int(d.x.size)
    )


def fit_piecewise_power(
    curve: CostCurve,
    breakpoints: ArrayLike | None = None,
    *,
    n_regimes: int = 2,
    max_frac_beyond: float = 1.0,
) -> PiecewisePowerFit:
    """Fit a continuous piecewise power law of the per-share slippage (never raises on data).

    In log-log coordinates the model is a continuous piecewise-linear function of ``log x``
    with slopes ``b_k``; it is fitted with ``b_0 >= 0`` and non-negative slope increments.

    Args:
        curve: Window curve from ``cost_curve``.
        breakpoints: Regime boundaries in shares, shape (K-1,), increasing, inside the curve's
            size range. ``None`` picks them: for each boundary in turn, the interior grid size
            with the least squared residual (a grid search, at most 40 candidates each).
        n_regimes: Number of regimes K when ``breakpoints`` is None, >= 1.
        max_frac_beyond: As in ``fit_quadratic``.

    Returns:
        The fit; ``status != "ok"`` (NaN parameters) on an empty window, too few sizes (fewer
        than K + 1) or an optimiser failure.

    Raises:
        ValueError: If ``n_regimes < 1`` or the breakpoints are not increasing and positive.
    """
    if breakpoints is not None:
        bps = np.asarray(breakpoints, dtype=np.float64).ravel()
        if np.any(bps <= 0) or np.any(np.diff(bps) <= 0):
            raise ValueError("breakpoints must be positive and strictly increasing")
        k_reg = bps.size + 1
    else:
        if n_regimes < 1:
            raise ValueError(f"n_regimes must be >= 1, got {n_regimes}")
        bps = None
        k_reg = n_regimes
    nan_k = np.full(k_reg, np.nan)
    empty_bp = np.full(k_reg - 1, np.nan) if bps is None else bps
    d = _data(curve, max_frac_beyond)
    if isinstance(d, str):
        return PiecewisePowerFit(
            empty_bp, nan_k, nan_k.copy(), **_failed(curve, FitStatus.EMPTY_WINDOW, d)
        )
    if d.x.size < k_reg + 1 or not np.any(d.s > 0):
        return PiecewisePowerFit(
            empty_bp,
            nan_k,
            nan_k.copy(),
            **_failed(
                curve,
                FitStatus.TOO_FEW_POINTS,
                f"{d.x.size} usable sizes, need {k_reg + 1} for {k_reg} regimes",
            ),
            n_sizes=int(d.x.size),
        )
    if bps is None:
        bps = _search_breakpoints(d, k_reg - 1)
    theta, ok, msg = _fit_log_hinge(d, np.log(bps))
    if not ok:
        return PiecewisePowerFit(
            bps, nan_k, nan_k.copy(), **_failed(curve, FitStatus.FAILED, msg), n_sizes=int(d.x.size)
        )
    b = theta[1] + np.concatenate([[0.0], np.cumsum(theta[2:])])
    la = np.empty(k_reg)
    la[0] = theta[0]
    for k in range(1, k_reg):  # K regimes, a handful
        la[k] = la[k - 1] + (b[k - 1] - b[k]) * math.log(bps[k - 1])
    fit = PiecewisePowerFit(
        bps,
        np.exp(la),
        b,
        math.nan,
        math.nan,
        d.n_snapshots,
        d.frac_beyond,
        str(FitStatus.OK),
        d.note,
        int(d.x.size),
    )
    r2, rmse = _diagnostics(d, fit.cost(d.x) / d.x)
    return PiecewisePowerFit(
        bps,
        fit.a,
        fit.b,
        r2,
        rmse,
        d.n_snapshots,
        d.frac_beyond,
        str(FitStatus.OK),
        d.note,
        int(d.x.size),
    )


def _search_breakpoints(d: _Data, n_breaks: int) -> NDArray[np.float64]:
    """Choose breakpoints greedily among interior sizes by least squared residual of ``s``.

    Each breakpoint is searched coarse to fine: at most 40 evenly spaced interior sizes, then
    every interior size between the best coarse candidate's neighbours.
    """
    chosen: list[float] = []
    interior = d.x[1:-1]
    lx = np.log(d.x)

    def sse(cand: float) -> float:
        lbps = np.log(np.sort(np.array([*chosen, cand])))
        theta, _, _ = _fit_log_hinge(d, lbps)
        return float(np.sum((np.exp(_log_hinge_design(lx, lbps) @ theta) - d.s) ** 2))

    # The caller guarantees at least K + 1 sizes, hence n_breaks <= interior.size.
    for _ in range(n_breaks):
        free = np.array([c for c in interior if c not in chosen])
        coarse = np.unique(np.linspace(0, free.size - 1, min(40, free.size)).round().astype(int))
        errs = [sse(float(free[i])) for i in coarse]  # at most 40 candidates
        j = int(np.argmin(errs))
        lo = coarse[j - 1] if j > 0 else coarse[j]
        hi = coarse[j + 1] if j + 1 < coarse.size else coarse[j]
        fine = np.arange(lo, hi + 1)
        errs_fine = [sse(float(free[i])) for i in fine]  # the sizes between two coarse ones
        chosen.append(float(free[fine[int(np.argmin(errs_fine))]]))
    return np.sort(np.array(chosen))
