"""One backtest run: a strategy works one parent order on one replayed day (pure, synchronous).

``run_one(spec)`` is what the executor ships to a worker: it loads the day (cached per process),
then ``simulate`` walks the order's periods:

1. At each decision time ``t_k`` (period start) the strategy sees only the books with
   ``ts <= t_k`` (the rolling window for the MPC, the previous period's trades for POV).
2. The child goes out as an IOC limit order ``collar_bps`` through the mid in force at ``t_k``
   and executes on the first snapshot at or after ``t_k + latency`` against the
   ``ResilientBook`` (our earlier fills' depth is missing until it comes back).
3. What is filled comes back before the next decision (latency < period, checked by the
   config); what is left is re-planned. In the last period what is left is re-sent every
   ``final_retry_s`` until the deadline.
4. At the deadline, ``tca`` prices the fills and the unfilled remainder.

Every strategy of a batch sees the same books, the same broker rules and the same clock, so
their results differ only by their decisions. Nothing here is random: a run's result is a pure
function of its spec and the data.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agent.backtest.broker import ResilientBook
from agent.backtest.data import DayData, Trades, load_day, load_history
from agent.backtest.strategies import (
    MpcPlanner,
    ac_targets,
    catch_up_child,
    pov_child,
    twap_targets,
    volume_targets,
    window_of,
)
from agent.backtest.tca import realized_slice_cost, tca
from agent.brokers.matching import collar_limit_px
from agent.errors import InvariantViolation
from agent.impact.book_walk import BeyondDepth, DepthPolicy, cost_curve, time_weights
from agent.impact.fit import fit_quadratic
from agent.impact.profile import DAY_NS, IntradayProfile, learn_profile
from agent.model import Side
from agent.planner import PeriodGrid, round_lot, twap_child_qty
from feeds.model import BookBatch

__all__ = ["RunResult", "RunSpec", "SimParams", "run_one", "simulate"]

_NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class SimParams:
    """Everything a run needs besides the data and the strategy (plain, picklable).

    Times: ``start_s``/``end_s`` are seconds after midnight UTC of the data's day.
    """

    start_s: float = 13.5 * 3600 + 300
    end_s: float = 20 * 3600 - 300
    period_s: float = 300.0
    lot: int = 100
    latency_ms: float = 50.0
    collar_bps: float = 100.0
    half_life_s: float = 60.0  # math.inf: depth never comes back
    broker_beyond: str = "unfilled"
    broker_penalty_bps: float = 100.0
    window_s: float = 600.0
    max_size: float = 0.0
    n_sizes: int = 50
    est_beyond: str = "extrapolate"
    est_penalty_bps: float = 100.0
    min_snapshots: int = 10
    weighting: str = "time"
    max_window_rows: int = 20_000
    profile_bucket_s: float = 1800.0
    pov_rate: float = 0.10
    ac_risk_aversion: float = 1e-6
    final_retry_s: float = 15.0
    scenario_weights: tuple[float, float, float] = (0.5, 0.25, 0.25)
    unfilled_penalty_bps: float = 0.0


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One run of the batch (picklable: paths and numbers only).

    Attributes:
        run_id: Unique id in the batch.
        dataset: Dataset label.
        path: Day file; ``fmt``/``symbol`` as in ``DatasetConfig``.
        history: History day files (MBP-10) of the same symbol.
        side: ``buy`` or ``sell``.
        pct_of_volume: Parent size in % of the day's traded volume.
        strategy: One of ``ALL_STRATEGIES``.
        params: Simulation parameters.
        qty: Parent shares; 0 sizes it from ``pct_of_volume``.
        mpc_profile: ``history``, ``same_day`` (look-ahead) or ``flat``.
    """

    run_id: str
    dataset: str
    path: str
    fmt: str
    symbol: str | None
    history: tuple[str, ...]
    side: str
    pct_of_volume: float
    strategy: str
    params: SimParams
    qty: float = 0.0
    mpc_profile: str = "history"


@dataclass(slots=True)
class RunResult:
    """Outcome of one run (JSON-ready through ``to_dict``)."""

    run_id: str
    dataset: str
    symbol: str
    side: str
    strategy: str
    pct_of_volume: float
    parent_qty: float
    day_volume: float
    status: str
    message: str = ""
    tca: dict[str, Any] = field(default_factory=dict)
    n_children: int = 0
    period_starts_ns: list[int] = field(default_factory=list)
    period_filled: list[float] = field(default_factory=list)
    fills: dict[str, list[Any]] = field(default_factory=dict)
    slices: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (NaN as None)."""
        return _clean({k: getattr(self, k) for k in self.__slots__})  # type: ignore[attr-defined]


def _clean(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, np.generic):
        return _clean(v.item())
    return v


def run_one(spec: RunSpec) -> RunResult:
    """Load the day (cached per process) and simulate one run; never raises on data problems."""
    t0 = time.perf_counter()
    try:
        day = load_day(spec.path, spec.fmt, spec.symbol)
        hist = load_history(spec.history, day.symbol) if spec.history else None
        res = simulate(day, spec, hist)
    except Exception as e:  # a worker must return a result, not kill the batch
        res = RunResult(
            spec.run_id,
            spec.dataset,
            spec.symbol or "",
            spec.side,
            spec.strategy,
            spec.pct_of_volume,
            spec.qty,
            math.nan,
            "failed",
            f"{type(e).__name__}: {e}",
        )
    res.elapsed_s = time.perf_counter() - t0
    return res


def parent_qty_of(spec: RunSpec, day: DayData, lot: int) -> tuple[float, float]:
    """Return ``(parent shares, day volume)``: ``spec.qty`` or pct of the day's volume in lots."""
    vol = float(day.trades.qty.sum())
    if spec.qty > 0:
        return spec.qty, vol
    return round_lot(spec.pct_of_volume / 100.0 * vol, lot), vol


def _in_force(ts: NDArray[np.int64], t_ns: int) -> int:
    """Return the index of the last row with ``ts <= t`` (-1 if none)."""
    return int(np.searchsorted(ts, t_ns, side="right")) - 1


def _tod_volume(trades: Trades, starts: NDArray[np.int64], ends: NDArray[np.int64]) -> NDArray:
    """Return the volume per period by time of day, pooled over the days of ``trades``."""
    if trades.ts_ns.size == 0:
        return np.zeros(starts.size)
    tod = trades.ts_ns % DAY_NS
    order = np.argsort(tod, kind="stable")
    pooled = Trades(tod[order], trades.qty[order], trades.source)
    return pooled.volume_between(starts % DAY_NS, ends % DAY_NS)


def _sigma_per_period(window: BookBatch, t_ns: int, period_s: float) -> float:
    """Return the mid's standard deviation over one period, from 1 s steps in the window."""
    if len(window) < 3:
        return math.nan
    ts = window.ts_event_ns
    grid = np.arange(int(ts[0]) + _NS, t_ns + 1, _NS, dtype=np.int64)
    if grid.size < 3:
        return math.nan
    idx = np.searchsorted(ts, grid, side="right") - 1
    mids = window.mid[idx]
    d = np.diff(mids)
    return float(np.std(d) * math.sqrt(period_s))


def simulate(
    day: DayData,
    spec: RunSpec,
    history: tuple[tuple[BookBatch, ...], Trades] | None = None,
) -> RunResult:
    """Work one parent order with one strategy on one day.

    Args:
        day: The day's books and trades.
        spec: The run.
        history: Earlier days' books and trades (profiles), or None.

    Returns:
        The run's result: fills, per-period schedule, TCA and, for the MPC, the predicted and
        realized cost of every slice.
    """
    p = spec.params
    side = Side(spec.side)
    sign = side.sign
    books = day.books
    ts = books.ts_event_ns
    d0 = day.day_start_ns
    start_ns = d0 + round(p.start_s * _NS)
    end_ns = d0 + round(p.end_s * _NS)
    grid = PeriodGrid(start_ns, end_ns, round(p.period_s * _NS))
    n = grid.n
    starts = grid.starts()
    ends = np.minimum(starts + grid.period_ns, end_ns)
    S, vol = parent_qty_of(spec, day, p.lot)
    res = RunResult(
        spec.run_id,
        spec.dataset,
        day.symbol,
        spec.side,
        spec.strategy,
        spec.pct_of_volume,
        S,
        vol,
        "failed",
    )
    res.period_starts_ns = [int(x) for x in starts]
    if not S > 0:
        res.message = (
            "parent size is 0: no trade information to size it from"
            if day.trades.source == "none"
            else f"parent size rounds to 0 lots ({spec.pct_of_volume}% of {vol:g})"
        )
        return res
    i0 = _in_force(ts, start_ns)
    if i0 < 0:
        i0 = 0
        res.notes.append("no book before the start: arrival mid is the first book's")
    arrival_mid = float(books.mid[i0])
    i_end = max(_in_force(ts, end_ns), 0)
    final_mid = float(books.mid[i_end])
    lot = p.lot
    window_ns = round(p.window_s * _NS)
    policy = DepthPolicy(BeyondDepth(p.est_beyond), p.est_penalty_bps)
    max_size = p.max_size or max(10 * lot, 3 * S / n)
    sizes = np.linspace(max_size / p.n_sizes, max_size, p.n_sizes)
    broker = ResilientBook(side, p.half_life_s, p.broker_beyond, p.broker_penalty_bps)

    strat = spec.strategy
    targets: NDArray[np.float64] | None = None
    planner: MpcPlanner | None = None
    if strat == "twap":
        targets = twap_targets(n)
    elif strat == "vwap":
        targets = _vwap_targets(day, history, starts, ends, res.notes)
    elif strat == "ac":
        targets = _ac_targets(books, start_ns, window_ns, p, policy, sizes, side, S, n, res.notes)
    elif strat == "pov":
        if day.trades.source == "none":
            res.notes.append("pov: no trade information in the file: TWAP schedule instead")
            targets = twap_targets(n)
    elif strat.startswith("mpc-"):
        _, model, solver = strat.split("-")
        profile = IntradayProfile.flat()
        if spec.mpc_profile == "same_day":
            profile = learn_profile(
                (books,),
                spec.side,
                sizes,  # type: ignore[arg-type]
                bucket_s=p.profile_bucket_s,
                policy=policy,
            )
            res.notes.append("mpc profile: SAME-DAY (look-ahead: learned from the traded day)")
        elif spec.mpc_profile == "history" and history is not None and history[0]:
            profile = (
                _learn_profile(
                    spec.history,
                    day.symbol,
                    spec.side,
                    tuple(sizes.tolist()),
                    p.profile_bucket_s,
                    policy,
                )
                if spec.history
                else learn_profile(
                    history[0],
                    spec.side,
                    sizes,  # type: ignore[arg-type]
                    bucket_s=p.profile_bucket_s,
                    policy=policy,
                )
            )
            res.notes.append(f"mpc profile: learned from {len(history[0])} history day(s)")
        else:
            res.notes.append("mpc profile: flat (no history day given)")
        planner = MpcPlanner(
            model,
            solver,
            spec.side,
            sizes,
            policy,
            profile,
            min_snapshots=p.min_snapshots,
            weighting=p.weighting,
            scenario_weights=p.scenario_weights,
        )
    else:
        res.message = f"unknown strategy {strat!r}"
        return res

    fq: list[float] = []
    fp: list[float] = []
    fm: list[float] = []
    fh: list[float] = []
    ft: list[int] = []
    period_filled = np.zeros(n)
    filled = 0.0
    n_children = 0
    latency_ns = round(p.latency_ms * 1e6)
    retry_ns = round(p.final_retry_s * _NS)

    def send(k: int, t_ns: int, qty: float, info: dict[str, Any], g0: Any) -> float:
        nonlocal filled, n_children
        qty = min(qty, S - filled)
        i = _in_force(ts, t_ns)
        if qty <= 0 or i < 0:
            return 0.0
        mid_dec = float(books.mid[i])
        limit = collar_limit_px(side, mid_dec, p.collar_bps)
        j = int(np.searchsorted(ts, t_ns + latency_ns, side="left"))
        rec: dict[str, Any] = {"k": k, "t_ns": t_ns, "sent_qty": qty, **info}
        n_children += 1
        if j >= len(books):
            rec |= {"filled_qty": 0.0, "reason": "no_book_after_latency"}
            res.slices.append(rec)
            return 0.0
        px, sz = (
            (books.ask_px[j], books.ask_sz[j])
            if side is Side.BUY
            else (books.bid_px[j], books.bid_sz[j])
        )
        ex = broker.execute(int(ts[j]), qty, limit, px, sz)
        mid = float(books.mid[j])
        half = 0.5 * float(books.ask_px[j, 0] - books.bid_px[j, 0])
        got = ex.filled
        for q, pr in zip(ex.qty.tolist(), ex.px.tolist(), strict=True):
            fq.append(q)
            fp.append(pr)
            fm.append(mid)
            fh.append(half)
            ft.append(int(ts[j]))
        filled += got
        period_filled[k] += got
        rec |= {
            "exec_ns": int(ts[j]),
            "filled_qty": got,
            "avg_px": ex.avg_px,
            "mid": mid,
            "half_spread": half,
            "beyond_depth_qty": ex.beyond_qty,
            "reason": ex.reason,
            "realized_cost": realized_slice_cost(sign, ex.qty, ex.px, mid),
        }
        if g0 is not None:
            rec["predicted_cost_sent"] = g0(qty)
            rec["predicted_cost_filled"] = g0(got)
        res.slices.append(rec)
        return got

    for k in range(n):
        t = grid.start_of(k)
        last = k == n - 1
        remaining = S - filled
        if remaining <= 1e-9:
            break
        if _in_force(ts, t) < 0:
            res.notes.append(f"period {k}: no book yet, nothing sent")
            continue
        info: dict[str, Any] = {}
        g0 = None
        if targets is not None:
            qty = catch_up_child(targets, k, S, filled, lot)
        elif strat == "pov":
            prev = float(
                day.trades.volume_between(np.array([t - grid.period_ns]), np.array([t]))[0]
            )
            qty = pov_child(p.pov_rate, prev, remaining, lot, last)
            info["prev_volume"] = prev
        else:
            if planner is None:
                raise InvariantViolation(f"strategy {strat!r} has no planner")
            twap_qty = twap_child_qty(grid, k, S, filled, lot)
            win = window_of(books, t, window_ns, p.max_window_rows)
            step = planner.decide(win, t, grid, k, remaining, lot, twap_qty)
            qty = step.decision.child_qty
            g0 = step.g0
            info = {
                "status": step.decision.status,
                "lam": step.decision.lam,
                "solve_ms": step.decision.solve_ms,
                "plan_next": [float(x) for x in step.decision.plan[:3]],
                **{kk: vv for kk, vv in step.fields.items() if isinstance(vv, (int, float, str))},
            }
        send(k, t, qty, info, g0)
        if last:
            # Final retries: what a partial fill left, every final_retry_s until the deadline.
            t_r = t + retry_ns
            while S - filled > 1e-9 and t_r < end_ns:
                send(k, t_r, S - filled, {"retry": True}, None)
                t_r += retry_ns

    tc = tca(sign, S, arrival_mid, final_mid, fq, fp, fm, fh, p.unfilled_penalty_bps)
    res.tca = tc.to_dict()
    res.n_children = n_children
    res.period_filled = period_filled.tolist()
    res.fills = {"t_ns": ft, "qty": fq, "px": fp, "mid": fm}  # t_ns: int ns (exact)
    res.status = "completed" if S - filled <= 1e-9 else "incomplete"
    if res.status == "incomplete":
        res.message = f"{S - filled:g} of {S:g} shares unfilled at the deadline"
    return res


@functools.lru_cache(maxsize=16)
def _learn_profile(
    paths: tuple[str, ...],
    symbol: str,
    side: str,
    sizes: tuple[float, ...],
    bucket_s: float,
    policy: DepthPolicy,
) -> IntradayProfile:
    # Cached per process: the MPC variants of one (day, side, size) share it.
    books = load_history(paths, symbol)[0]
    return learn_profile(books, side, np.asarray(sizes), bucket_s=bucket_s, policy=policy)  # type: ignore[arg-type]


def _vwap_targets(
    day: DayData,
    history: tuple[tuple[BookBatch, ...], Trades] | None,
    starts: NDArray[np.int64],
    ends: NDArray[np.int64],
    notes: list[str],
) -> NDArray[np.float64]:
    if history is not None and history[1].ts_ns.size:
        f = volume_targets(_tod_volume(history[1], starts, ends))
        if f is not None:
            notes.append("vwap profile: learned from the history day(s)' trades")
            return f
    if day.trades.ts_ns.size:
        f = volume_targets(day.trades.volume_between(starts, ends))
        if f is not None:
            notes.append("vwap profile: SAME-DAY volume (look-ahead: no history day given)")
            return f
    notes.append("vwap: no trade information: TWAP schedule instead")
    return twap_targets(starts.size)


def _ac_targets(
    books: BookBatch,
    start_ns: int,
    window_ns: int,
    p: SimParams,
    policy: DepthPolicy,
    sizes: NDArray[np.float64],
    side: Side,
    S: float,
    n: int,
    notes: list[str],
) -> NDArray[np.float64]:
    win = window_of(books, start_ns, window_ns, p.max_window_rows)
    beta = gamma = sigma = math.nan
    if len(win) >= p.min_snapshots:
        w = time_weights(win.ts_event_ns, start_ns) if p.weighting == "time" else None
        fit = fit_quadratic(cost_curve(win, side.value, sizes, policy, weights=w))
        if fit.ok:
            beta, gamma = fit.beta, fit.gamma
        sigma = _sigma_per_period(win, start_ns, p.period_s)
    risk = p.ac_risk_aversion * sigma * sigma
    f, why = ac_targets(beta, gamma, risk, S, n)
    if f is None:
        notes.append(f"ac: {why}: TWAP schedule instead")
        return twap_targets(n)
    notes.append(
        f"ac: static schedule from the start's window: beta={beta:.4g}, gamma={gamma:.4g}, "
        f"sigma/period={sigma:.4g}, kappa={p.ac_risk_aversion:g}, first slice "
        f"{f[0] * 100:.2f}% (TWAP {100 / n:.2f}%)"
    )
    return f
