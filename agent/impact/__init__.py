"""Impact estimation: walk-the-book cost curves, parametric fits, intraday forecast (pure).

Modules:
    book_walk  vectorised walk of MBP-10 snapshots -> window cost curve g(x) (mean, std)
    fit        quadratic, power-law and piecewise power-law fits of g with diagnostics
    profile    intraday liquidity profile learned from history; forecast of (beta_t, gamma_t)
"""

from agent.impact.book_walk import (
    BeyondDepth,
    CostCurve,
    CurveAccumulator,
    DepthPolicy,
    cost_curve,
    time_weights,
    walk_cost,
)
from agent.impact.fit import (
    FitStatus,
    PiecewisePowerFit,
    PowerFit,
    QuadraticFit,
    fit_piecewise_power,
    fit_power,
    fit_quadratic,
)
from agent.impact.profile import IntradayProfile, forecast, learn_profile

__all__ = [
    "BeyondDepth",
    "CostCurve",
    "CurveAccumulator",
    "DepthPolicy",
    "FitStatus",
    "IntradayProfile",
    "PiecewisePowerFit",
    "PowerFit",
    "QuadraticFit",
    "cost_curve",
    "fit_piecewise_power",
    "fit_power",
    "fit_quadratic",
    "forecast",
    "learn_profile",
    "time_weights",
    "walk_cost",
]
