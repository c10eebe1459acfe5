"""One backtest run: a strategy works one parent order on one replayed day (pure, synchronous).

``run_one(spec)`` is what the executor ships to a worker: it loads the day (cached per process),
then ``simulate`` runs the execution core over it, exactly as the daemon does in replay with the
simulated broker: a ``ParentCore`` with the strategy's policy (``agent.core.policy``), the
core's ``SymbolSession`` cutting the day at the decision times (a decision at ``t`` sees only
the books with ``ts <= t``), and the core's ``SimVenue`` (a child decided at ``t`` executes on
the book in force at ``t + latency``, against our remembered consumption of the depth, which
comes back with the configured half-life). What is filled comes back before the next decision
(latency < period, checked by the config); what is left is re-planned; in the last period what
is left is re-sent every ``final_retry_s`` until the deadline. At the deadline, ``tca`` prices
the fills and the unfilled remainder.

Every strategy of a batch sees the same books, the same venue rules and the same clock, so
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

from agent.backtest.data import DayData, Trades, load_day, load_history
from agent.backtest.tca import realized_slice_cost, tactic_tca, tca
from agent.core.estimator import IncrementalCurve
from agent.core.forecast import ArPrior
from agent.core.parent import Cancel, ParentCore, ParentParams, Replace, Send, SliceRecord
from agent.core.plan import PeriodGrid, round_lot
from agent.core.policy import StrategySpec, adaptive_forecaster, make_policy, tod_volume
from agent.core.queue import QueueConfig, QueueRows, passive_fill_problem
from agent.core.session import SymbolSession, VenueEvents
from agent.core.tactic import TacticConfig
from agent.core.venue import SimVenue
from agent.errors import InvariantViolation
from agent.impact.book_walk import BeyondDepth, DepthPolicy
from agent.impact.book_walk import Side as WalkSide
from agent.impact.profile import IntradayProfile, learn_profile
from agent.model import OrderEvent, Side
from agent.prior import packaged_prior
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
    current_window_s: float = 0.0
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
    risk_aversion: float = 1e-6
    final_retry_s: float = 15.0
    scenario_weights: tuple[float, float, float] = (0.5, 0.25, 0.25)
    unfilled_penalty_bps: float = 0.0
    max_child_multiple: float = 10.0
    decision_lead_ms: float = 0.0
    incremental: bool = True
    forecast: str = "adaptive"
    prior_profile: bool = True
    max_participation: float = 0.0
    tactic: TacticConfig = TacticConfig()  # noqa: RUF009 (frozen pydantic model)
    queue: QueueConfig = QueueConfig()  # noqa: RUF009 (frozen pydantic model)
    adverse_horizon_s: float = 60.0


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
    label: str = ""  # the strategy's name in the results ("" = strategy); with its tactic


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
        out: dict[str, Any] = _clean({k: getattr(self, k) for k in self.__slots__})
        return out


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
            spec.label or spec.strategy,
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


def simulate(
    day: DayData,
    spec: RunSpec,
    history: tuple[tuple[BookBatch, ...], Trades] | None = None,
) -> RunResult:
    """Work one parent order with one strategy on one day, through the execution core.

    The same objects as the daemon: a ``ParentCore`` with the strategy's policy, the core's
    ``SymbolSession`` cutting the day at the decision times, and the core's ``SimVenue``.

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
        spec.label or spec.strategy,
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
    if _in_force(ts, start_ns) < 0:
        res.notes.append("no book before the start: the first periods send nothing")
    i_end = max(_in_force(ts, end_ns), 0)
    final_mid = float(books.mid[i_end])
    lot = p.lot
    depth = DepthPolicy(BeyondDepth(p.est_beyond), p.est_penalty_bps)
    max_size = p.max_size or max(10 * lot, 3 * S / n)
    sizes = np.linspace(max_size / p.n_sizes, max_size, p.n_sizes)

    strat = spec.strategy
    try:
        risk = (
            p.ac_risk_aversion
            if strat == "ac"
            else (p.risk_aversion if strat.endswith("-risk") else 0.0)
        )
        sspec = StrategySpec.parse(
            strat,
            pov_rate=p.pov_rate,
            scenario_weights=p.scenario_weights,
            risk_aversion=risk,
            forecast=p.forecast,
        )
    except ValueError as e:
        res.message = f"unknown strategy {strat!r}: {e}"
        return res
    profile = IntradayProfile.flat()
    volume_profile: NDArray[np.float64] | None = None
    volume_note = ""
    if sspec.kind == "vwap":
        volume_profile, volume_note = _vwap_volume(day, history, starts, ends)
        res.notes.append(volume_note)
    elif sspec.kind == "pov" and day.trades.source == "none":
        res.notes.append("pov: no trade information in the file: TWAP schedule instead")
    ar = None
    if sspec.kind == "mpc":
        profile, ar = _mpc_profile(spec, day, history, books, sizes, depth, res.notes)
    policy = make_policy(
        sspec,
        spec.side,
        sizes,
        depth,
        profile,
        min_snapshots=p.min_snapshots,
        weighting=p.weighting,
        period_s=p.period_s,
        volume_profile=volume_profile,
        volume_note=volume_note,
        current_window_s=p.current_window_s,
        forecaster=adaptive_forecaster(
            sspec, spec.side, start_ns, grid.period_ns, round(p.window_s * _NS), profile, ar
        ),
    )
    params = ParentParams(
        parent_id=spec.run_id,
        symbol=day.symbol,
        side=side,
        quantity=S,
        start_ns=start_ns,
        end_ns=end_ns,
        period_ns=grid.period_ns,
        lot=lot,
        collar_bps=p.collar_bps,
        final_retry_s=p.final_retry_s,
        window_ns=round(p.window_s * _NS),
        max_window_rows=p.max_window_rows,
        max_child_multiple=p.max_child_multiple,
        max_participation=p.max_participation,
        lead_ns=round(p.decision_lead_ms * 1e6),
    )
    session = SymbolSession(day.symbol, [])
    estimator = None
    if p.incremental:
        estimator = session.estimator(
            ("only",),
            lambda: IncrementalCurve(
                side_of(spec.side),
                sizes,
                depth,
                params.window_ns,
                p.weighting,  # type: ignore[arg-type]
            ),
        )
    core = ParentCore(params, policy, estimator=estimator)
    if p.tactic.kind != "aggressive":
        if p.tactic.kind == "passive":
            why = (
                passive_fill_problem(QueueRows.from_batch(books))
                if books.action is not None
                else ("the file has no event columns (no trade rows)")
            )
            if why:
                res.message = f"passive tactic refused on {day.symbol}: {why}"
                return res
        core.set_tactic(p.tactic)
    session.parents.append(core)
    hl = p.half_life_s
    venue = SimVenue(round(p.latency_ms * 1e6), hl, p.broker_beyond, p.broker_penalty_bps, p.queue)
    session.venues.append(venue)
    # Market volume: the books' own trade rows when they carry them (what the daemon sees),
    # else the file's trades (a LOBSTER message file, say).
    trades = (
        (day.trades.ts_ns, day.trades.qty)
        if books.action is None and day.trades.source != "none"
        else None
    )
    run_core(core, session, books, venue, trades)

    # -- results ----------------------------------------------------------------------------
    fq: list[float] = []
    fp: list[float] = []
    fm: list[float] = []
    fh: list[float] = []
    ft: list[int] = []
    period_filled = np.zeros(n)
    by_coid = {s.client_order_id: s for s in core.slices}
    done: set[str] = set()
    kinds: list[str] = []
    hows: list[str] = []
    per_child: dict[str, list[Any]] = {}
    for f in venue.fills:
        ch = core.mpc.tracker.child(f.client_order_id)
        orig = (ch.prior_ids[0] if ch.prior_ids else ch.order.client_order_id) if ch else ""
        sl = by_coid.get(orig)
        if sl is None:
            raise InvariantViolation(f"venue filled {f.client_order_id}, which the core never sent")
        ex = f.execution
        for q, pr in zip(ex.qty.tolist(), ex.px.tolist(), strict=True):
            fq.append(q)
            fp.append(pr)
            fm.append(f.mid)
            fh.append(f.half_spread)
            ft.append(f.due_ns)
            kinds.append(f.kind)
            hows.append(f.how)
        period_filled[sl.k] += ex.filled
        per_child.setdefault(orig, []).append(f)
    for coid, fs in per_child.items():
        sl = by_coid[coid]
        done.add(coid)
        f0 = fs[0]
        qty = np.concatenate([f.execution.qty for f in fs])
        px = np.concatenate([f.execution.px for f in fs])
        filled_c = float(qty.sum())
        res.slices.append(
            _slice(sl, sign)
            | {
                "exec_ns": f0.due_ns,
                "book_ns": f0.book_ts_ns,
                "filled_qty": filled_c,
                "avg_px": float(qty @ px / filled_c) if filled_c > 0 else math.nan,
                "mid": f0.mid,
                "half_spread": f0.half_spread,
                "beyond_depth_qty": float(sum(f.execution.beyond_qty for f in fs)),
                "reason": fs[-1].execution.reason,
                "realized_cost": realized_slice_cost(sign, qty, px, f0.mid),
                "predicted_cost_filled": sl.g0(filled_c) if sl.g0 is not None else None,
            }
        )
    for sl in core.slices:
        if sl.client_order_id not in done:
            res.slices.append(_slice(sl, sign) | {"filled_qty": 0.0, "reason": "not_executed"})
    res.slices.sort(key=lambda r: (r["t_ns"], r["client_order_id"]))
    for rec in res.slices:
        ch = core.mpc.tracker.child(rec["client_order_id"])
        rec["tif"] = ch.order.tif if ch is not None else "ioc"
    filled = core.mpc.tracker.filled_qty
    if abs(filled - float(sum(fq))) > 1e-6:
        raise InvariantViolation(f"tracker filled {filled}, venue {sum(fq)}")
    arrival_mid = core.arrival_mid
    if not math.isfinite(arrival_mid):
        arrival_mid = float(books.mid[0])
        res.notes.append("no decision saw a book: arrival mid is the first book's")
    tc = tca(sign, S, arrival_mid, final_mid, fq, fp, fm, fh, p.unfilled_penalty_bps)
    res.tca = tc.to_dict() | tactic_tca(
        sign,
        books,
        np.asarray(ft, dtype=np.int64),
        fq,
        fp,
        fm,
        fh,
        kinds,
        p.adverse_horizon_s,
        S * arrival_mid,
    )
    pq = {h: 0.0 for h in ("trade", "trade_through", "cross")}
    for q, h in zip(fq, hows, strict=True):
        if h in pq:
            pq[h] += q
    tot = sum(pq.values())
    if tot > 0:  # how the passive shares filled (queue model: print at our price, through, cross)
        res.tca |= {f"passive_by_{h}": v / tot for h, v in pq.items()}
    if core.tactic is not None:
        res.tca |= {
            "tactic": p.tactic.kind,
            "n_posted": core.tactic.n_passive,
            "n_repriced": core.tactic.n_repriced,
            "n_behind": core.tactic.n_crossed,
        }
    else:
        res.tca["tactic"] = "aggressive"
    res.n_children = core.mpc.n_sent
    res.period_filled = period_filled.tolist()
    res.fills = {"t_ns": ft, "qty": fq, "px": fp, "mid": fm}  # t_ns: int ns (exact)
    for _k, st in core.steps:
        note = st.fields.get("schedule")
        if isinstance(note, str):
            res.notes.append(note)
    res.status = "completed" if S - filled <= 1e-9 else "incomplete"
    if res.status == "incomplete":
        res.message = f"{S - filled:g} of {S:g} shares unfilled at the deadline"
    return res


def run_core(
    core: ParentCore,
    session: SymbolSession,
    books: BookBatch,
    venue: SimVenue,
    trades: tuple[NDArray[np.int64], NDArray[np.float64]] | None = None,
) -> None:
    """Drive one parent's core over a day of books, synchronously (the backtest's executor).

    ``Send`` goes to the venue, whose events go straight back to the core; logs, journal
    records and cancels (nothing rests at an IOC venue) have no effect here.
    """

    def route(events: list[OrderEvent]) -> None:
        for e in events:
            leg = core.leg_for(e.client_order_id)
            if leg is None:
                raise InvariantViolation(f"venue event for unknown order {e.client_order_id}")
            core.on_event(leg, e)

    for item in session.feed(books, trades=trades):
        if isinstance(item, VenueEvents):
            route(item.events)
            continue
        for c in item.parents:
            for a in c.on_time(item.t_ns, item.now_ns):
                if isinstance(a, Send):
                    route(venue.submit(a.child))
                elif isinstance(a, Cancel) and a.request is not None:
                    route(venue.cancel(a.request))
                elif isinstance(a, Replace):
                    route(venue.replace(a.request))
    for item in session.end():
        route(item.events)


def _slice(sl: SliceRecord, sign: int) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "k": sl.k,
        "t_ns": sl.t_ns,
        "client_order_id": sl.client_order_id,
        "sent_qty": sl.qty,
        "limit_px": sl.limit_px,
        "predicted_cost_sent": sl.predicted_cost,
    }
    if sl.retry:
        rec["retry"] = True
    for kk, vv in sl.fields.items():
        if isinstance(vv, (int, float, str)) and kk not in rec:
            rec[kk] = vv
    return rec


def side_of(side: str) -> WalkSide:
    """Return ``side`` as the book walk's side literal (``buy`` or ``sell``)."""
    if side == "buy":
        return "buy"
    if side == "sell":
        return "sell"
    raise ValueError(f"side must be buy or sell, got {side!r}")


def _mpc_profile(
    spec: RunSpec,
    day: DayData,
    history: tuple[tuple[BookBatch, ...], Trades] | None,
    books: BookBatch,
    sizes: NDArray[np.float64],
    depth: DepthPolicy,
    notes: list[str],
) -> tuple[IntradayProfile, ArPrior | None]:
    """Return the MPC's intraday profile (and the prior's dynamics when it is the prior)."""
    p = spec.params
    if spec.mpc_profile == "same_day":
        notes.append("mpc profile: SAME-DAY (look-ahead: learned from the traded day)")
        return learn_profile(
            (books,), side_of(spec.side), sizes, bucket_s=p.profile_bucket_s, policy=depth
        ), None
    if spec.mpc_profile == "history" and history is not None and history[0]:
        notes.append(f"mpc profile: learned from {len(history[0])} history day(s)")
        if spec.history:
            return _learn_profile(
                spec.history,
                day.symbol,
                spec.side,
                tuple(sizes.tolist()),
                p.profile_bucket_s,
                depth,
            ), None
        return learn_profile(
            history[0], side_of(spec.side), sizes, bucket_s=p.profile_bucket_s, policy=depth
        ), None
    if spec.mpc_profile == "history" and p.prior_profile:
        prior = packaged_prior(day.symbol, spec.side)
        if prior is not None:
            notes.append(
                "mpc profile: prior from other symbols' days ("
                + ", ".join(prior.symbols)
                + f"; never {day.symbol}'s own)"
            )
            return prior.profile, prior.ar
    notes.append("mpc profile: flat (no history day given)")
    return IntradayProfile.flat(), None


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
    return learn_profile(books, side_of(side), np.asarray(sizes), bucket_s=bucket_s, policy=policy)


def _vwap_volume(
    day: DayData,
    history: tuple[tuple[BookBatch, ...], Trades] | None,
    starts: NDArray[np.int64],
    ends: NDArray[np.int64],
) -> tuple[NDArray[np.float64] | None, str]:
    """Return VWAP's volume per period and where it came from (None: TWAP instead)."""
    if history is not None and history[1].ts_ns.size:
        v = tod_volume(history[1].ts_ns, history[1].qty, starts, ends)
        if float(v.sum()) > 0:
            return v, "vwap profile: learned from the history day(s)' trades"
    if day.trades.ts_ns.size:
        v = day.trades.volume_between(starts, ends)
        if float(v.sum()) > 0:
            return v, "vwap profile: SAME-DAY volume (look-ahead: no history day given)"
    return None, "vwap: no trade information: TWAP schedule instead"
