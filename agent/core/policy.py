"""Every strategy behind one policy interface (pure): what to send this period.

A policy sees only the past (``DecisionInput``: the period, what is filled and working, the
rolling window of books up to the decision time, the traded volume so far) and returns a
``PolicyStep``: the child quantity with its status, plan and diagnostics. The per-parent state
machine (``agent.core.parent``) calls it at every period start, in the daemon and in the
backtest alike; the last period's retries and the lot carry's journaling are the state
machine's.

Strategies (``StrategySpec.kind``):
- ``twap``: catch up to ``(k+1)/N`` of the parent.
- ``vwap``: catch up to the cumulative share of a volume profile by time of day (given by the
  caller from earlier days' trades; TWAP without one, noted).
- ``pov``: ``pov_rate`` times the volume traded in the previous period (TWAP without trades).
- ``ac``: the static Almgren-Chriss schedule of ``sum g + kappa sigma^2 sum q^2`` for the
  quadratic ``g`` and the mid's sigma estimated at the first decision, never re-planned.
- ``mpc``: re-estimate ``g`` from the window (``model``: ``quadratic``, ``power``,
  ``piecewise_power``, ``nonparametric``), forecast the later periods with the intraday profile,
  re-solve what is left to the deadline (``solver``: ``deterministic``, ``robust``,
  ``stochastic``; ``risk_aversion > 0``: Almgren-Chriss timing risk with sigma from the
  window), send ``x[0]`` rounded to lots by error diffusion.

Robust and stochastic use three scenarios: (1) the mean curve with the profile, (2) the mean +
1 std curve with the profile (adverse liquidity), (3) the mean curve flat (the profile is
wrong: today's liquidity persists). Stochastic minimises their weighted expected cost, robust
the worst of them (epigraph LP, then the plan of its dual weights, exactly).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from agent.core.bookstats import FeatureMemo
from agent.core.forecast import ArPrior, Forecast, LiquidityForecaster
from agent.core.plan import (
    NO_TIMER,
    Decision,
    PeriodGrid,
    decide_mpc,
    decision_from_plan,
    nonparametric_costs,
    quadratic_costs,
    round_lot,
    twap_child_qty,
)
from agent.impact.book_walk import CostCurve, DepthPolicy, book_curve, cost_curve, time_weights
from agent.impact.fit import fit_piecewise_power, fit_power, fit_quadratic
from agent.impact.profile import IntradayProfile
from agent.mpc.costs import CostSet, PiecewiseLinearCost, PiecewisePowerCost
from agent.mpc.robust import solve_risk_averse, solve_robust_pl, solve_stochastic
from agent.mpc.solvers import SolveResult, solve_auto
from feeds.model import BookBatch

__all__ = [
    "KINDS",
    "MODELS",
    "SOLVERS",
    "DecisionInput",
    "Policy",
    "PolicyStep",
    "StrategySpec",
    "adaptive_forecaster",
    "make_policy",
    "sigma_per_period",
    "tod_volume",
    "volume_targets",
]

_NS = 1_000_000_000
KINDS = ("twap", "vwap", "pov", "ac", "mpc")
MODELS = ("quadratic", "power", "piecewise_power", "nonparametric")
SOLVERS = ("deterministic", "robust", "stochastic")


@dataclass(frozen=True, slots=True)
class StrategySpec:
    """Which strategy works the parent, and its parameters (validated here, once).

    Attributes:
        kind: One of ``KINDS``.
        model: MPC impact model, one of ``MODELS``.
        solver: MPC solver, one of ``SOLVERS``.
        risk_aversion: Almgren-Chriss kappa (per currency); > 0 adds timing risk
            ``kappa sigma^2 sum q_t^2`` (MPC: quadratic model, deterministic solver; AC: the
            static schedule's).
        pov_rate: POV's share of the previous period's volume, in (0, 1].
        scenario_weights: Weights of the three scenarios (stochastic).
        on_solve_failure: ``twap`` sends the TWAP slice, ``pause`` sends nothing that period.
        forecast: MPC: ``adaptive`` (the later periods' cost from the book's state moving
            toward the day's level) or ``profile`` (the current estimate times the profile).
    """

    kind: str = "mpc"
    model: str = "quadratic"
    solver: str = "deterministic"
    risk_aversion: float = 0.0
    pov_rate: float = 0.10
    scenario_weights: tuple[float, float, float] = (0.5, 0.25, 0.25)
    on_solve_failure: str = "twap"
    forecast: str = "adaptive"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"strategy kind must be one of {KINDS}, got {self.kind!r}")
        if self.model not in MODELS:
            raise ValueError(f"mpc model must be one of {MODELS}, got {self.model!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"mpc solver must be one of {SOLVERS}, got {self.solver!r}")
        if not (math.isfinite(self.risk_aversion) and self.risk_aversion >= 0):
            raise ValueError(f"risk_aversion must be finite and >= 0, got {self.risk_aversion}")
        if (
            self.kind == "mpc"
            and self.risk_aversion > 0
            and (self.model != "quadratic" or self.solver != "deterministic")
        ):
            raise ValueError(
                "risk_aversion > 0 (timing risk) needs model = quadratic and solver = "
                "deterministic (the exact Almgren-Chriss solve)"
            )
        if not (0 < self.pov_rate <= 1):
            raise ValueError(f"pov_rate must be in (0, 1], got {self.pov_rate}")
        w = self.scenario_weights
        if len(w) != 3 or not all(math.isfinite(x) and x >= 0 for x in w) or sum(w) <= 0:
            raise ValueError(f"scenario_weights must be 3 non-negative numbers, got {w}")
        if self.forecast not in ("adaptive", "profile"):
            raise ValueError(f"forecast must be adaptive or profile, got {self.forecast!r}")
        if self.on_solve_failure not in ("twap", "pause"):
            raise ValueError(f"on_solve_failure must be twap or pause, got {self.on_solve_failure}")

    @property
    def name(self) -> str:
        """Return the strategy's name as the backtest lists it (``mpc-quadratic-robust``)."""
        if self.kind != "mpc":
            return self.kind
        base = f"mpc-{self.model}-{self.solver}"
        return f"{base}-risk" if self.risk_aversion > 0 else base

    @staticmethod
    def parse(name: str, **params: object) -> StrategySpec:
        """Return the spec of a backtest strategy name (``twap``, ``mpc-power-robust``, ...)."""
        if not name.startswith("mpc-"):
            return StrategySpec(kind=name, **params)  # type: ignore[arg-type]
        parts = name.split("-")
        if len(parts) not in (3, 4) or (len(parts) == 4 and parts[3] != "risk"):
            raise ValueError(f"unknown strategy {name!r}")
        return StrategySpec(kind="mpc", model=parts[1], solver=parts[2], **params)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class DecisionInput:
    """What a policy may see at the decision of period ``k`` (the past only).

    Attributes:
        k: Period index.
        t_ns: Decision time, ns.
        grid: The order's periods.
        parent_qty: Parent shares S.
        filled_qty, open_qty: Shares filled, and working at the venue.
        lot: Lot size.
        max_child_qty: Cap per child (0 = none).
        carry: Lot-rounding residual of the previous decision (MPC).
        window: Returns the rolling window of books at ``t_ns`` (lazy: TWAP never builds it).
        prev_volume: Shares traded on the market in the previous period (NaN: unknown).
        timer: Monotonic seconds to time solves with (the core reads no clock itself).
        curve: Returns the window's cost curve at ``t_ns`` and its row count from the
            incremental estimator (None: walk the window's rows at the decision).
        caps: Most the MPC may plan per period k..N-1 (the participation cap), shape
            (N-k,), ``inf`` where unknown; None: no cap.
    """

    k: int
    t_ns: int
    grid: PeriodGrid
    parent_qty: float
    filled_qty: float
    open_qty: float
    lot: int
    max_child_qty: float
    carry: float
    window: Callable[[], BookBatch]
    prev_volume: float = math.nan
    timer: Callable[[], float] = NO_TIMER
    curve: Callable[[], tuple[CostCurve, int]] | None = None
    caps: NDArray[np.float64] | None = None
    tail: Callable[[int], BookBatch] | None = None

    @property
    def remaining(self) -> float:
        """Return the shares not yet filled or working (what is left to plan)."""
        return max(0.0, self.parent_qty - self.filled_qty - self.open_qty)

    @property
    def twap_qty(self) -> float:
        """Return the TWAP slice of this period (the fallback of every other strategy)."""
        q = twap_child_qty(
            self.grid, self.k, self.parent_qty, self.filled_qty + self.open_qty, self.lot
        )
        return min(q, self.remaining)


@dataclass(frozen=True, slots=True)
class PolicyStep:
    """A policy's answer: the decision, the predicted cost of this slice, diagnostics.

    Attributes:
        decision: Child, plan, status, lot carry.
        g0: Predicted cost ``g_k(x)`` of this period in currency (None without an estimate).
        fields: Diagnostics for the ``mpc.step`` log line and the backtest's slices.
    """

    decision: Decision
    g0: Callable[[float], float] | None = None
    fields: dict[str, object] = field(default_factory=dict)


class Policy(Protocol):
    """A strategy: the child of one period from what the past shows."""

    spec: StrategySpec

    def decide(self, inp: DecisionInput) -> PolicyStep:
        """Return this period's step."""
        ...


def _fallback(inp: DecisionInput, spec: StrategySpec, why: str) -> Decision:
    qty = inp.twap_qty if spec.on_solve_failure == "twap" else 0.0
    return Decision(inp.k, qty, np.zeros(0), math.nan, "twap_fallback", why, 0.0, inp.carry)


def catch_up_child(targets: NDArray[np.float64], k: int, S: float, done: float, lot: int) -> float:
    """Return the child that brings ``done`` up to the target of period ``k`` (lots)."""
    last = k >= targets.size - 1
    target = S if last else round_lot(S * float(targets[k]), lot)
    return max(0.0, target - done)


def volume_targets(volume: NDArray[np.float64]) -> NDArray[np.float64] | None:
    """Return cumulative targets proportional to a volume profile (None if it is all zero)."""
    v = np.maximum(np.asarray(volume, dtype=np.float64), 0.0)
    tot = float(v.sum())
    if not tot > 0:
        return None
    f = np.cumsum(v) / tot
    f[-1] = 1.0
    return f


def tod_volume(
    ts_ns: NDArray[np.int64],
    qty: NDArray[np.float64],
    starts: NDArray[np.int64],
    ends: NDArray[np.int64],
    day_ns: int = 86_400 * _NS,
) -> NDArray[np.float64]:
    """Return the traded volume per period ``[start, end)`` by UTC time of day, pooled over
    every day of ``ts_ns`` (VWAP's profile from earlier days), shape like ``starts``."""
    ts = np.asarray(ts_ns, dtype=np.int64)
    if ts.size == 0:
        return np.zeros(np.asarray(starts).size)
    tod = ts % day_ns
    order = np.argsort(tod, kind="stable")
    c = np.concatenate([[0.0], np.cumsum(np.asarray(qty, dtype=np.float64)[order])])
    t = tod[order]
    i0 = np.searchsorted(t, np.asarray(starts, dtype=np.int64) % day_ns, side="left")
    i1 = np.searchsorted(t, np.asarray(ends, dtype=np.int64) % day_ns, side="left")
    return np.asarray(c[i1] - c[i0], dtype=np.float64)


def sigma_per_period(window: BookBatch, t_ns: int, period_s: float) -> float:
    """Return the mid's standard deviation over one period, from 1 s steps in the window."""
    if len(window) < 3:
        return math.nan
    ts = window.ts_event_ns
    grid = np.arange(int(ts[0]) + _NS, t_ns + 1, _NS, dtype=np.int64)
    if grid.size < 3:
        return math.nan
    idx = np.searchsorted(ts, grid, side="right") - 1
    d = np.diff(window.mid[idx])
    return float(np.std(d) * math.sqrt(period_s))


class _Estimation:
    """The window's walk-the-book curve at a decision (shared by AC and the MPC)."""

    def __init__(
        self,
        side: str,
        sizes: NDArray[np.float64],
        depth: DepthPolicy,
        min_snapshots: int,
        weighting: str,
    ) -> None:
        self.side = side
        self.sizes = sizes
        self.depth = depth
        self.min_snapshots = min_snapshots
        self.weighting = weighting

    def curve(self, window: BookBatch, t_ns: int) -> CostCurve | None:
        if len(window) < self.min_snapshots:
            return None
        w = time_weights(window.ts_event_ns, t_ns) if self.weighting == "time" else None
        return cost_curve(window, self.side, self.sizes, self.depth, weights=w)  # type: ignore[arg-type]


class TwapPolicy:
    """``twap``: catch up to ``(k+1)/N`` of the parent."""

    def __init__(self, spec: StrategySpec) -> None:
        self.spec = spec

    def decide(self, inp: DecisionInput) -> PolicyStep:
        """Return the TWAP slice."""
        d = Decision(inp.k, inp.twap_qty, np.zeros(0), math.nan, "twap", "", 0.0, inp.carry)
        return PolicyStep(d)


class TargetsPolicy:
    """A fixed cumulative schedule (``vwap``, ``ac``): catch up to ``targets[k] * S``.

    ``targets`` may be computed at the first decision (``make``: AC needs the window then).
    """

    def __init__(
        self,
        spec: StrategySpec,
        targets: NDArray[np.float64] | None,
        make: Callable[[DecisionInput], tuple[NDArray[np.float64] | None, str]] | None = None,
        note: str = "",
    ) -> None:
        self.spec = spec
        self.targets = targets
        self.make = make
        self.note = note

    def decide(self, inp: DecisionInput) -> PolicyStep:
        """Return the catch-up child of the schedule (TWAP when there is none)."""
        fields: dict[str, object] = {}
        if self.targets is None and self.make is not None:
            self.targets, self.note = self.make(inp)
            self.make = None
            fields["schedule"] = self.note
        if self.targets is None or self.targets.size != inp.grid.n:
            d = Decision(
                inp.k,
                inp.twap_qty,
                np.zeros(0),
                math.nan,
                "twap_fallback",
                self.note or "no schedule",
                0.0,
                inp.carry,
            )
            return PolicyStep(d, None, fields)
        q = catch_up_child(
            self.targets, inp.k, inp.parent_qty, inp.filled_qty + inp.open_qty, inp.lot
        )
        d = Decision(
            inp.k, min(q, inp.remaining), np.zeros(0), math.nan, self.spec.kind, "", 0.0, inp.carry
        )
        return PolicyStep(d, None, fields)


class PovPolicy:
    """``pov``: ``pov_rate`` times the previous period's market volume (lots)."""

    def __init__(self, spec: StrategySpec) -> None:
        self.spec = spec

    def decide(self, inp: DecisionInput) -> PolicyStep:
        """Return the POV child (TWAP when the feed carries no trades)."""
        last = inp.k >= inp.grid.n - 1
        if last:
            q = inp.remaining
        elif not math.isfinite(inp.prev_volume):
            d = Decision(
                inp.k,
                inp.twap_qty,
                np.zeros(0),
                math.nan,
                "twap_fallback",
                "no trade information",
                0.0,
                inp.carry,
            )
            return PolicyStep(d, None, {"prev_volume": None})
        else:
            q = max(
                0.0, min(round_lot(self.spec.pov_rate * inp.prev_volume, inp.lot), inp.remaining)
            )
        d = Decision(inp.k, q, np.zeros(0), math.nan, "pov", "", 0.0, inp.carry)
        f: dict[str, object] = {
            "prev_volume": inp.prev_volume if math.isfinite(inp.prev_volume) else None
        }
        return PolicyStep(d, None, f)


@dataclass(frozen=True, slots=True)
class _Model:
    """A fitted model: ``quadratic`` (beta, gamma), ``power`` (a, b), ``piecewise_power``
    (a, b, c rows) or ``nonparametric`` (knots, slopes)."""

    kind: str
    params: tuple[object, ...]


@dataclass(frozen=True, slots=True)
class _Current:
    """The current period's cost as multipliers of the window model: beta's, gamma's and the
    whole cost's (the models other than quadratic)."""

    mb: float
    mg: float
    mc: float
    model: _Model | None = None

    def apply(
        self, mb: NDArray[np.float64], mg: NDArray[np.float64], mc: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """Return copies of per-period multipliers (shape (H,) or (S, H)) with period 0 set."""
        mb, mg, mc = (np.array(v, dtype=np.float64) for v in (mb, mg, mc))
        mb[..., 0] = self.mb
        mg[..., 0] = self.mg
        mc[..., 0] = self.mc
        return mb, mg, mc

    def apply_bg(
        self, mb: NDArray[np.float64], mg: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """``apply`` of beta's and gamma's multipliers only (the quadratic reads no ``mc``)."""
        mb, mg = np.array(mb, dtype=np.float64), np.array(mg, dtype=np.float64)
        mb[..., 0] = self.mb
        mg[..., 0] = self.mg
        return mb, mg


def _ratio(a: float, b: float) -> float:
    """Return ``a / b`` for a positive finite ``b`` (1 otherwise: no information)."""
    return a / b if math.isfinite(a) and math.isfinite(b) and b > 0 else 1.0


class MpcPolicy:
    """``mpc``: re-estimate, forecast, re-solve to the deadline, send ``x[0]`` in lots.

    Args:
        spec: The strategy.
        side: ``buy`` or ``sell``.
        sizes: Size grid of the walk-the-book curve, shares, shape (G,).
        depth: Beyond-depth policy of the estimation.
        profile: Intraday profile of the forecast.
        min_snapshots: Fewer rows in the window: no estimate (fallback).
        weighting: ``time`` or ``snapshot``.
        period_s: Period length (timing risk's sigma per period).
        current_window_s: The current period's cost from the book in force (0) or the trailing
            mean over this span (None: the window's estimate, as every later period's base).
    """

    def __init__(
        self,
        spec: StrategySpec,
        side: str,
        sizes: NDArray[np.float64],
        depth: DepthPolicy,
        profile: IntradayProfile,
        *,
        min_snapshots: int = 10,
        weighting: str = "time",
        period_s: float = 300.0,
        forecaster: LiquidityForecaster | None = None,
        current_window_s: float | None = None,
    ) -> None:
        self.spec = spec
        self.forecaster = forecaster
        self.est = _Estimation(side, sizes, depth, min_snapshots, weighting)
        self.current_ns = None if current_window_s is None else round(current_window_s * _NS)
        # A read-only copy: the walk of the book in force validates it once (``book_curve``).
        self.sizes = np.array(sizes, dtype=np.float64)
        self.sizes.flags.writeable = False
        self.profile = profile
        self.period_s = period_s
        self.weights = np.asarray(spec.scenario_weights, dtype=np.float64)

    def _fit(self, curve: CostCurve) -> tuple[_Model | None, dict[str, object]]:
        """Fit the model to a window curve (None when there is no usable estimate)."""
        m = self.spec.model
        if m == "quadratic":
            fit = fit_quadratic(curve)
            f: dict[str, object] = {
                "beta": fit.beta,
                "gamma": fit.gamma,
                "fit_r2": fit.r2,
                "fit_rmse": fit.rmse,
                "fit_status": str(fit.status),
            }
            if not (fit.ok and math.isfinite(fit.beta) and math.isfinite(fit.gamma)):
                return None, f
            return _Model("quadratic", (fit.beta, fit.gamma)), f
        if m == "power":
            pw = fit_power(curve)
            f = {
                "a": pw.a,
                "b": pw.b,
                "fit_r2": pw.r2,
                "fit_rmse": pw.rmse,
                "fit_status": str(pw.status),
            }
            if not (pw.ok and pw.a > 0 and math.isfinite(pw.b)):
                return None, f
            return _Model("power", (pw.a, pw.b)), f
        if m == "piecewise_power":
            pp = fit_piecewise_power(curve)
            f = {
                "a": pp.a.tolist(),
                "b": pp.b.tolist(),
                "breakpoints": pp.breakpoints.tolist(),
                "fit_r2": pp.r2,
                "fit_rmse": pp.rmse,
                "fit_status": str(pp.status),
            }
            if not (pp.ok and np.all(pp.a > 0) and np.all(np.isfinite(pp.b))):
                return None, f
            a, b, c = PiecewisePowerCost.from_regimes(
                float(pp.a[0]), pp.b.tolist(), pp.breakpoints.tolist()
            )
            return _Model("piecewise_power", (a, b, c)), f
        knots, slopes = curve.segments()
        if slopes.size == 0 or not np.all(np.isfinite(slopes)):
            return None, {"fit_status": "no_curve"}
        return _Model("nonparametric", (knots, slopes)), {
            "fit_status": "ok",
            "slope0": float(slopes[0]),
        }

    def _costs(
        self,
        m: _Model,
        profile: IntradayProfile,
        starts: NDArray[np.int64],
        now: _Current | None = None,
    ) -> CostSet:
        """Return the cost set of periods k..N-1 scaled by the intraday ``profile``.

        Quadratic: beta and gamma scaled by the profile's ``mb``, ``mg``; the others: the whole
        cost scaled by the profile's cost multiplier ``mc`` (relative to the current period).
        ``now`` replaces the current period's multipliers (the book in force).
        """
        mb, mg = profile.multipliers(starts)
        b = profile.bucket(starts)
        mc = profile.cost_mult[b] / profile.cost_mult[b[0]]
        if now is None:
            return self._scaled(m, mb, mg, mc)
        mb, mg, mc = now.apply(mb, mg, mc)
        return self._scaled(m, mb, mg, mc, now.model)

    def _current(
        self, inp: DecisionInput, curve: CostCurve, model: _Model
    ) -> tuple[_Current | None, dict[str, object]]:
        """Return the current period's cost against the window's (issue 13 item 1): the walk of
        the book in force (or the trailing ``current_window_s``), as multipliers of the window
        model that every later period is scaled from (None: the window's estimate stays)."""
        if self.current_ns is None or inp.tail is None:
            return None, {}
        rows = inp.tail(self.current_ns)
        if not len(rows):
            return None, {"current_status": "no_book"}
        if len(rows) == 1:  # the book in force: its own walk, without the window machinery
            cur = book_curve(rows, self.est.side, self.sizes, self.est.depth)  # type: ignore[arg-type]
        else:
            w = time_weights(rows.ts_event_ns, inp.t_ns)
            cur = cost_curve(rows, self.est.side, self.sizes, self.est.depth, weights=w)  # type: ignore[arg-type]
        if cur.n_snapshots == 0:
            return None, {"current_status": "no_valid_book"}
        if model.kind == "quadratic":
            # beta and gamma of the book against the window's (the model's own parameters):
            # the quadratic reads only these multipliers.
            now_fit = fit_quadratic(cur, diagnostics=False)  # beta and gamma only
            beta_w, gamma_w = (float(v) for v in model.params)  # type: ignore[arg-type]
            mb0, mg0 = _ratio(now_fit.beta, beta_w), _ratio(now_fit.gamma, gamma_w)
            if not (now_fit.ok and math.isfinite(mb0 * mg0)):
                return None, {"current_status": "no_fit"}
            now = _Current(mb0, mg0, 1.0)
        else:
            # The other models read the whole-cost multiplier (the mean ratio of the two walks
            # over the size grid, a relative least-squares scalar) and, where its shape fits
            # the window model's, the fit to the book itself.
            g_now = np.asarray(cur.mean_cost, dtype=np.float64)
            g_win = np.asarray(curve.mean_cost, dtype=np.float64)
            ok = np.isfinite(g_now) & np.isfinite(g_win) & (g_win > 0)
            mc0 = float(np.mean(g_now[ok] / g_win[ok])) if ok.any() else 1.0
            mc0 = mc0 if math.isfinite(mc0) and mc0 > 0 else 1.0
            now = _Current(1.0, 1.0, mc0, self._fit(cur)[0])
        return now, {
            "current_status": "ok",
            "current_rows": len(rows),
            "current_beta_mult": now.mb,
            "current_gamma_mult": now.mg,
            "current_cost_mult": now.mc,
        }

    def _scaled(
        self,
        m: _Model,
        mb: NDArray[np.float64],
        mg: NDArray[np.float64],
        mc: NDArray[np.float64] | None,
        cur: _Model | None = None,
    ) -> CostSet:
        """Return the model's cost per period with multipliers: ``mb``/``mg`` of beta and gamma
        (quadratic), ``mc`` of the whole cost (the others; None for the quadratic), each shape
        (H,).

        ``cur``: the same model fitted to the current period's book; where its shape fits the
        window model's (power: always; piecewise power: as many regimes; nonparametric: the
        same knots), period 0 is that fit itself rather than the window's scaled by ``mc[0]``.
        """
        if m.kind == "quadratic":  # (reads no mc: None is fine)
            beta, gamma = m.params
            return quadratic_costs(float(beta), float(gamma), mb, mg)  # type: ignore[arg-type]
        assert mc is not None, "the models other than quadratic need the cost multipliers"
        h = mc.size
        if m.kind == "power":
            a, bb = m.params
            a_t, b_t = float(a) * mc, np.full(h, float(bb))  # type: ignore[arg-type]
            if cur is not None and cur.kind == "power":
                a_t[0], b_t[0] = float(cur.params[0]), float(cur.params[1])  # type: ignore[arg-type]
            return CostSet.of(PiecewisePowerCost.power(a_t, b_t), h)
        if m.kind == "piecewise_power":
            a_r, b_r, c_r = (np.asarray(v, dtype=np.float64) for v in m.params)
            a_t, b_t, c_t = np.outer(mc, a_r), np.tile(b_r, (h, 1)), np.tile(c_r, (h, 1))
            if cur is not None and cur.kind == "piecewise_power":
                rows = [np.asarray(v, dtype=np.float64) for v in cur.params]
                if all(r.shape == a_r.shape for r in rows):
                    a_t[0], b_t[0], c_t[0] = rows
            return CostSet.of(PiecewisePowerCost(a_t, b_t, c_t), h)
        knots, slopes = (np.asarray(v, dtype=np.float64) for v in m.params)
        if cur is not None and cur.kind == "nonparametric":
            k_now, s_now = (np.asarray(v, dtype=np.float64) for v in cur.params)
            if k_now.shape == knots.shape and np.array_equal(k_now, knots):
                sl = np.outer(mc, slopes)
                sl[0] = s_now
                return CostSet.of(PiecewiseLinearCost(np.tile(knots[:-1], (h, 1)), sl), h)
        return nonparametric_costs(knots[:-1], slopes, mc)

    def observe(self, seg: BookBatch) -> None:
        """Take in the books up to the decision (the adaptive forecast learns from them)."""
        if self.forecaster is not None:
            self.forecaster.observe(seg)

    def settle(self, min_rows: int) -> None:
        """Fold the observed books into the forecast now if ``min_rows`` wait."""
        if self.forecaster is not None:
            self.forecaster.settle(min_rows)

    @staticmethod
    def _spread_share(curve: CostCurve) -> float:
        """Return the share of the cost at the middle size that the spread (the smallest
        size's per-share cost) makes: how a whole-cost multiplier mixes beta's and gamma's."""
        g = np.asarray(curve.mean_cost, dtype=np.float64)
        x = np.asarray(curve.sizes, dtype=np.float64)
        if not g.size:
            return 1.0
        j = x.size // 2
        g0, gj = float(g[0]), float(g[j])
        if not (math.isfinite(gj) and gj > 0 and math.isfinite(g0)):
            return 1.0
        # np.clip's min(max(.)) in floats (the same operations; NaN stays NaN)
        return min(max(g0 / float(x[0]) * float(x[j]) / gj, 0.0), 1.0)

    def decide(self, inp: DecisionInput) -> PolicyStep:
        """Return this period's decision (the fallback when there is no estimate)."""
        if inp.curve is not None:  # the incremental estimator (agent.core.estimator)
            inc, n_rows = inp.curve()
            curve = inc if n_rows >= self.est.min_snapshots else None
        else:
            window = inp.window()
            n_rows = len(window)
            curve = self.est.curve(window, inp.t_ns)
        fields: dict[str, object] = {
            "model": self.spec.model,
            "solver": self.spec.solver,
            "n_snapshots": n_rows,
        }
        remaining = inp.remaining
        if curve is None:
            fields["fit_status"] = "insufficient_data"
            return PolicyStep(_fallback(inp, self.spec, "insufficient_data"), None, fields)
        fb = curve.frac_beyond_depth
        frac = float(np.add.reduce(fb)) / fb.size if fb.size else math.nan  # np.mean's
        fields["frac_beyond_depth"] = frac if math.isfinite(frac) else 0.0
        if curve.policy_used:
            fields["beyond_depth_policy"] = self.est.depth.kind.value
        starts = inp.grid.starts(inp.k)
        model, f = self._fit(curve)
        fields |= f
        if model is None:
            return PolicyStep(_fallback(inp, self.spec, "no impact estimate"), None, fields)
        now, f = self._current(inp, curve, model)
        fields |= f
        fc = None
        if self.forecaster is not None:
            fc = self.forecaster.forecast(inp.t_ns, starts)
            # The median multipliers: the current estimate is the window's mean curve, an
            # arithmetic mean over the same log-normal fluctuation as a later period's, so
            # later / now is the ratio of medians. The expected multipliers (exp(m + sd^2/2))
            # set a known-noisy mean against a later mean and are biased by exp(sd^2/2):
            # measured on FROG, ~2x for the next period, which front-loaded every parent.
            mb, mg = fc.median()
            if model.kind == "quadratic":  # beta's and gamma's own multipliers: no mc to mix
                if now is not None:
                    mb, mg = now.apply_bg(mb, mg)
                base = self._scaled(model, mb, mg, None)
            else:
                share = self._spread_share(curve)
                mc = share * mb + (1.0 - share) * mg
                if now is not None:
                    mb, mg, mc = now.apply(mb, mg, mc)
                base = self._scaled(model, mb, mg, mc, None if now is None else now.model)
            for key in ("status", "n_pairs"):
                if key in fc.fields:
                    fields[f"forecast_{key}"] = fc.fields[key]
            if fc.beta_mult.size > 1:
                fields["forecast_beta_next"] = float(mb[1])
                fields["forecast_gamma_next"] = float(mg[1])
        else:
            base = self._costs(model, self.profile, starts, now)

        def g0(x: float, _c: CostSet = base) -> float:
            v = np.zeros(_c.H)
            v[0] = x
            return float(_c.cost(v)[0])

        cap = inp.max_child_qty
        if self.spec.solver != "deterministic":
            d = self._decide_scenarios(inp, curve, model, starts, fc, now)
        elif self.spec.risk_aversion > 0:
            sigma = sigma_per_period(inp.window(), inp.t_ns, self.period_s)
            fields["sigma_period"] = sigma
            d = self._decide_risk(inp, base, sigma)
        else:
            d = decide_mpc(
                inp.grid,
                inp.k,
                remaining,
                base,
                lot=inp.lot,
                max_child_qty=cap,
                fallback_twap_qty=(inp.twap_qty if self.spec.on_solve_failure == "twap" else None),
                carry=inp.carry,
                timer=inp.timer,
                caps=inp.caps,
            )
        if inp.caps is not None and inp.caps.size:
            fields["participation_cap"] = float(inp.caps[0]) if np.isfinite(inp.caps[0]) else None
        return PolicyStep(d, g0, fields)

    def _decide_risk(self, inp: DecisionInput, base: CostSet, sigma: float) -> Decision:
        """The deterministic re-solve with Almgren-Chriss timing risk (quadratic, exact)."""
        h = inp.grid.n - inp.k
        remaining = inp.remaining
        cap = inp.max_child_qty if inp.max_child_qty > 0 else math.inf
        if remaining <= 0:
            return Decision(inp.k, 0.0, np.zeros(h), math.nan, "done", "nothing left", 0.0)
        if h <= 1:
            c = min(remaining, cap)
            return Decision(inp.k, c, np.array([c]), math.nan, "final", "last period", 0.0)
        if not math.isfinite(sigma):
            return _fallback(inp, self.spec, "no volatility estimate for the timing risk")
        q = base.quadratic
        if q is None:  # guarded by StrategySpec
            return _fallback(inp, self.spec, "timing risk needs the quadratic model")
        caps = None if math.isinf(cap) else np.full(h, cap)
        t0 = inp.timer()
        res = solve_risk_averse(
            q.beta, q.gamma, remaining, self.spec.risk_aversion * sigma**2, caps
        )
        ms = (inp.timer() - t0) * 1e3
        fb = inp.twap_qty if self.spec.on_solve_failure == "twap" else None
        return decision_from_plan(inp.k, res, remaining, cap, inp.lot, inp.carry, ms, fb)

    def _decide_scenarios(
        self,
        inp: DecisionInput,
        curve: CostCurve,
        model: _Model,
        starts: NDArray[np.int64],
        fc: Forecast | None = None,
        now: _Current | None = None,
    ) -> Decision:
        h = inp.grid.n - inp.k
        remaining = inp.remaining
        cap = inp.max_child_qty if inp.max_child_qty > 0 else math.inf
        if remaining <= 0:
            return Decision(inp.k, 0.0, np.zeros(h), math.nan, "done", "nothing left", 0.0)
        if h <= 1:
            c = min(remaining, cap)
            return Decision(inp.k, c, np.array([c]), math.nan, "final", "last period", 0.0)
        weights = self.weights
        if fc is not None:
            # The forecast's own uncertainty: robust over -1/0/+1 sd of the log level, the
            # stochastic mean over its 3-point Gauss-Hermite rule (docs/forecast.md).
            mbs, mgs, probs = fc.scenarios(1.0 if self.spec.solver == "robust" else None)
            if self.spec.solver != "robust":  # centred on the medians, as the point forecast
                mbs = mbs * np.exp(-0.5 * fc.log_sd_beta**2)[None, :]
                mgs = mgs * np.exp(-0.5 * fc.log_sd_gamma**2)[None, :]
            share = self._spread_share(curve)
            mcs = share * mbs + (1.0 - share) * mgs
            if now is not None:  # the book in force is known: period 0 alike in every scenario
                mbs, mgs, mcs = now.apply(mbs, mgs, mcs)
            scen = [
                self._scaled(model, mb, mg, mc, None if now is None else now.model)
                for mb, mg, mc in zip(mbs, mgs, mcs, strict=True)
            ]
            weights = probs
        else:
            std = np.nan_to_num(curve.std_cost, nan=0.0)
            adverse_m, _ = self._fit(dataclasses.replace(curve, mean_cost=curve.mean_cost + std))
            adverse = adverse_m if adverse_m is not None else model
            scen = [
                self._costs(model, self.profile, starts, now),
                self._costs(adverse, self.profile, starts, now),
                self._costs(model, IntradayProfile.flat(), starts, now),
            ]
        t0 = inp.timer()
        knots = _knots(self.sizes, remaining, thin=self.spec.solver == "robust")
        slopes = [_table(c, knots) for c in scen]
        if self.spec.solver == "stochastic":
            res = _solve_mixture(scen, slopes, knots, weights, remaining)
        else:
            # Robust: the epigraph LP gives the worst case and its dual weights p*; the plan is
            # the p*-weighted mixture solved exactly (the same tie-break as the deterministic
            # MPC, instead of an arbitrary LP vertex).
            lp_res, p_star = solve_robust_pl(knots, slopes, remaining)
            res = lp_res
            if lp_res.ok:
                mixed = _solve_mixture(scen, slopes, knots, p_star, remaining)
                res = dataclasses.replace(
                    mixed,
                    message=f"{lp_res.message}; worst case {lp_res.cost:.6g}; "
                    f"p* = {np.round(p_star, 4).tolist()}; plan: p*-mixture",
                )
        ms = (inp.timer() - t0) * 1e3
        fb = inp.twap_qty if self.spec.on_solve_failure == "twap" else None
        return decision_from_plan(inp.k, res, remaining, cap, inp.lot, inp.carry, ms, fb)


def _table(costs: CostSet, knots: NDArray[np.float64]) -> NDArray[np.float64]:
    """Return the chord slopes of every period's cost between knots, shape (H, J).

    Exact for piecewise-linear costs whose kinks are among the knots; chords otherwise (convex,
    so the slopes are non-decreasing; a running max removes rounding).
    """
    vals = np.stack([costs.cost(np.full(costs.H, x)) for x in knots], axis=1)
    slopes = np.diff(vals, axis=1) / np.diff(knots)
    return np.maximum.accumulate(slopes, axis=1)


def _solve_mixture(
    scen: list[CostSet],
    slopes: list[NDArray[np.float64]],
    knots: NDArray[np.float64],
    weights: NDArray[np.float64],
    S: float,
) -> SolveResult:
    """Minimise the weighted sum of the scenarios' costs (continuous, exact).

    Quadratic scenarios: ``solve_stochastic`` (the mixture is quadratic). Others: the mixture of
    their tables (piecewise linear on shared knots) by ``solve_auto``.
    """
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    if all(c.quadratic is not None for c in scen):
        return solve_stochastic(scen, w, S, lot=None)
    h = slopes[0].shape[0]
    mix = sum((wk * sk for wk, sk in zip(w, slopes, strict=True)), start=np.zeros_like(slopes[0]))
    pl = PiecewiseLinearCost(np.tile(knots[:-1], (h, 1)), mix)
    return solve_auto(CostSet.of(pl, h), S)


def _knots(
    sizes: NDArray[np.float64], remaining: float, *, thin: bool = False
) -> NDArray[np.float64]:
    """Return the knot grid: 0, the sizes (every other one if ``thin``: a smaller LP), then
    doubling past the last size until ``remaining``."""
    grid = sizes[1::2] if thin and sizes.size > 24 else sizes
    ext = [float(sizes[-1])]
    while ext[-1] < remaining:
        ext.append(ext[-1] * 2.0)
    return np.unique(np.concatenate([[0.0], grid, ext]))


def adaptive_forecaster(
    spec: StrategySpec,
    side: str,
    start_ns: int,
    period_ns: int,
    window_ns: int,
    profile: IntradayProfile,
    ar: ArPrior | None = None,
    features: FeatureMemo | None = None,
) -> LiquidityForecaster | None:
    """Return the MPC's adaptive forecast of the later periods (None for other strategies).

    Its reference is the estimation window (``now_window_ns``), so the multipliers it gives
    are relative to the window's estimate that the MPC scales; ``profile`` (earlier days, or
    the prior from other symbols) shapes the day's expected level. ``features``: the book
    features shared by the parents on the symbol and side (``SymbolSession.features``).
    """
    if spec.kind != "mpc" or spec.forecast != "adaptive":
        return None
    return LiquidityForecaster(
        period_ns,
        side=side,
        origin_ns=start_ns,
        profile=profile,
        prior=ar,
        now_window_ns=window_ns,
        features=features,
    )


def make_policy(
    spec: StrategySpec,
    side: str,
    sizes: NDArray[np.float64],
    depth: DepthPolicy,
    profile: IntradayProfile,
    *,
    min_snapshots: int = 10,
    weighting: str = "time",
    period_s: float = 300.0,
    volume_profile: NDArray[np.float64] | None = None,
    volume_note: str = "",
    forecaster: LiquidityForecaster | None = None,
    current_window_s: float | None = None,
) -> Policy:
    """Return the policy of ``spec``.

    Args:
        spec: The strategy.
        side, sizes, depth, profile, min_snapshots, weighting, period_s: The estimation (MPC,
            AC).
        volume_profile: VWAP's market volume per period of the order (earlier days), shape (N,).
        volume_note: Where ``volume_profile`` came from (for the logs).
        forecaster: The adaptive forecast of the later periods' cost (MPC; None: the intraday
            profile scales the current estimate, as before).
        current_window_s: The MPC's current period from the book in force (0) or this trailing
            span (None: from the window, like the later periods).
    """
    if spec.kind == "twap":
        return TwapPolicy(spec)
    if spec.kind == "pov":
        return PovPolicy(spec)
    if spec.kind == "vwap":
        t = volume_targets(volume_profile) if volume_profile is not None else None
        note = volume_note if t is not None else "vwap: no volume profile: TWAP schedule instead"
        return TargetsPolicy(spec, t, None, note)
    if spec.kind == "ac":
        est = _Estimation(side, sizes, depth, min_snapshots, weighting)

        def make(inp: DecisionInput) -> tuple[NDArray[np.float64] | None, str]:
            win = inp.window()
            curve = est.curve(win, inp.t_ns)
            beta = gamma = sigma = math.nan
            if curve is not None:
                fit = fit_quadratic(curve)
                if fit.ok:
                    beta, gamma = fit.beta, fit.gamma
                sigma = sigma_per_period(win, inp.t_ns, period_s)
            n = inp.grid.n - inp.k
            risk = spec.risk_aversion * sigma * sigma
            S = inp.remaining
            if not (math.isfinite(beta) and math.isfinite(gamma) and math.isfinite(risk)):
                return None, "ac: no impact or volatility estimate at the start: TWAP instead"
            res = solve_risk_averse(np.full(n, beta), np.full(n, gamma), S, risk)
            if not res.ok or not S > 0:
                return None, f"ac: solve_risk_averse: {res.status}: {res.message}: TWAP instead"
            done = inp.parent_qty - S
            f = (done + np.cumsum(res.x)) / inp.parent_qty
            full = np.concatenate([np.full(inp.k, done / inp.parent_qty), f])
            full[-1] = 1.0
            note = (
                f"ac: static schedule from the window at period {inp.k}: beta={beta:.4g}, "
                f"gamma={gamma:.4g}, sigma/period={sigma:.4g}, kappa={spec.risk_aversion:g}, "
                f"first slice {res.x[0] / inp.parent_qty * 100:.2f}% (TWAP {100 / n:.2f}%)"
            )
            return np.clip(full, 0.0, 1.0), note

        return TargetsPolicy(spec, None, make)
    return MpcPolicy(
        spec,
        side,
        sizes,
        depth,
        profile,
        min_snapshots=min_snapshots,
        weighting=weighting,
        period_s=period_s,
        forecaster=forecaster,
        current_window_s=current_window_s,
    )
