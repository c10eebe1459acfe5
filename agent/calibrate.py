"""``exec-agent calibrate``: estimate impact models from book files and draw the figures.

The shell around ``agent.impact``: it reads files (``feeds.readers.read_books``), drops rows
that ``feeds.validate.validate_batch`` rejects, streams every batch into per-(side, time-of-day
bucket) ``CurveAccumulator`` objects (memory O(sizes x buckets), whatever the file size), then
fits the models and writes

- ``DIR/impact.json``: per ticker, per side, the empirical ``curve`` (``sizes``, ``mean_cost``,
  ``std_cost``, ``frac_beyond_depth``, ``n_snapshots``), the ``models`` (parameters and fit
  diagnostics), the forecast profile (from ``--history``; flat without it), the in-sample
  intraday profile, and the optimal schedule of ``--shares`` over ``--periods``;
- PNG figures: ``summary.png`` (the specification's panels: impact curves with error bars,
  optimal schedules, fitted parameters; plus fitted vs empirical), ``fit_<TICKER>.png`` and
  ``profile_<TICKER>.png``.

Inputs: Databento MBP-10 files (``.csv``, ``.csv.gz``, ``.csv.zst``, ``.dbn``, ``.dbn.zst``) named
by the symbols inside them, LOBSTER files (a sample ``.zip`` or an ``*_orderbook_N.csv`` next to
its message file, symbol from the file name), or folders (one per ticker, the folder name
being the ticker) of such files. A file of any other type is refused at start, in one line.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from numpy.typing import NDArray

from agent.impact.book_walk import (
    BeyondDepth,
    CostCurve,
    CurveAccumulator,
    DepthPolicy,
    Side,
    time_weights,
)
from agent.impact.fit import (
    PiecewisePowerFit,
    PowerFit,
    QuadraticFit,
    fit_piecewise_power,
    fit_power,
    fit_quadratic,
)
from agent.impact.profile import DAY_NS, IntradayProfile, forecast, profile_from
from agent.mpc.solvers import solve_quadratic

__all__ = ["add_parser", "run"]

log = structlog.get_logger("impact")

SIDES: tuple[Side, Side] = ("buy", "sell")
# Share of snapshots allowed past the visible depth for the "quadratic_visible" fit: the fit
# of the book itself, as opposed to the book plus the beyond-depth policy.
_VISIBLE_FRAC = 0.05


# -- arguments ------------------------------------------------------------------------------


def _sizes(text: str) -> NDArray[np.float64]:
    """Parse ``START:STOP:STEP`` (inclusive stop) or a comma list of sizes in shares."""
    try:
        if ":" in text:
            start, stop, step = (float(v) for v in text.split(":"))
            out = np.arange(start, stop + step / 2, step)
        else:
            out = np.array([float(v) for v in text.split(",")])
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"bad --sizes {text!r}: {e}") from e
    if out.size == 0 or out[0] <= 0 or np.any(np.diff(out) <= 0):
        raise argparse.ArgumentTypeError(f"--sizes {text!r} must be positive and increasing")
    return out


def add_parser(subparsers: Any) -> None:
    """Add the ``calibrate`` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "calibrate",
        help="estimate impact models from book files (MBP-10, LOBSTER) and draw the figures",
        description="Walk every book snapshot for a grid of order sizes, average the total cost "
        "against the mid per ticker and side, fit quadratic, power-law and piecewise power-law "
        "models, and write impact.json plus PNG figures to --out.",
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="book files (MBP-10 csv, csv.gz, csv.zst, dbn, dbn.zst; LOBSTER zip or "
        "*_orderbook_N.csv) or per-ticker folders",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument(
        "--sizes",
        type=_sizes,
        default=_sizes("100:10000:100"),
        help="order sizes in shares: START:STOP:STEP or a comma list "
        "(default 100:10000:100, the specification's grid)",
    )
    p.add_argument("--side", choices=["buy", "sell", "both"], default="both")
    p.add_argument(
        "--beyond-depth",
        choices=[k.value for k in BeyondDepth],
        default=BeyondDepth.EXTRAPOLATE.value,
        help="cost of shares past the 10 visible levels (default extrapolate)",
    )
    p.add_argument(
        "--penalty-bps",
        type=float,
        default=100.0,
        help="price penalty of --beyond-depth penalty, bps of the last level (100)",
    )
    p.add_argument(
        "--history",
        nargs="+",
        action="extend",
        default=[],
        metavar="PATH",
        help="files or folders to learn the intraday profile from (flat if none); give it "
        "after the input PATHs, or repeat it",
    )
    p.add_argument(
        "--bucket-s",
        type=float,
        default=1800.0,
        help="time-of-day bucket of the intraday profile, seconds (1800)",
    )
    p.add_argument(
        "--shares",
        type=float,
        default=10_000.0,
        help="parent order of the schedule panel, shares (10000)",
    )
    p.add_argument(
        "--periods",
        type=int,
        default=20,
        help="periods of the schedule panel over the session (20)",
    )
    p.add_argument("--regimes", type=int, default=2, help="regimes of the piecewise power law (2)")
    p.add_argument(
        "--time-weighted",
        action="store_true",
        help="weight each snapshot by how long it was in force (default: every snapshot 1, "
        "as the specification)",
    )
    p.add_argument("--no-figures", action="store_true", help="write impact.json only")
    p.add_argument(
        "--progress",
        choices=["auto", "on", "off"],
        default="auto",
        help="progress bar on stderr (auto: only when stderr is a terminal)",
    )
    p.set_defaults(func=run)


# -- reading --------------------------------------------------------------------------------


def _data_files(folder: Path) -> list[Path]:
    """Return the book files of a folder (LOBSTER message files go with their order book)."""
    from feeds.errors import FeedDataError
    from feeds.readers import book_format

    out = []
    for f in sorted(folder.iterdir()):
        if not f.is_file() or "_message_" in f.name.lower():
            continue
        try:
            book_format(f)
        except FeedDataError:
            continue
        out.append(f)
    return out


def _sources(paths: Sequence[str]) -> list[tuple[str | None, Path]]:
    """Return (ticker or None, file) pairs; a folder names the ticker of its files."""
    from feeds.readers import book_format

    out: list[tuple[str | None, Path]] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files = _data_files(p)
            if not files:
                raise FileNotFoundError(f"{p}: no book file (MBP-10 or LOBSTER) in this folder")
            out.extend((p.name, f) for f in files)
        elif p.is_file():
            book_format(p)  # an unknown type is refused now, not after reading other files
            out.append((None, p))
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return out


@dataclass
class _TickerStats:
    """Streaming per-ticker accumulation."""

    files: list[str] = field(default_factory=list)
    n_rows: int = 0
    n_rejected: dict[str, int] = field(default_factory=dict)
    half_spread: list[NDArray[np.float64]] = field(default_factory=list)
    depth: dict[str, list[NDArray[np.float64]]] = field(default_factory=dict)
    buckets: dict[str, list[CurveAccumulator]] = field(default_factory=dict)
    t_first: int | None = None
    t_last: int | None = None
    tod_min: int = DAY_NS  # earliest time of day seen, ns after midnight UTC
    tod_max: int = 0  # latest time of day seen


def _batches(
    sources: list[tuple[str | None, Path]], bar: Any
) -> Iterator[tuple[str, str, tuple[Any, int]]]:
    """Yield ("folder\0symbol", file, (validation result, rows read)), updating the bar."""
    from feeds.readers import read_books
    from feeds.validate import validate_batch

    for ticker, path in sources:
        prev: int | None = None
        for batch in read_books(path):
            res = validate_batch(batch, prev)
            prev = res.last_ts_ns if res.last_ts_ns is not None else prev
            bar.update(len(batch))
            yield f"{ticker or ''}\0{batch.symbol}", str(path), (res, len(batch))


def _accumulate(
    sources: list[tuple[str | None, Path]],
    sides: Sequence[Side],
    sizes: NDArray[np.float64],
    policy: DepthPolicy,
    bucket_ns: int,
    bar: Any,
    time_weighted: bool = False,
) -> dict[str, _TickerStats]:
    n_b = DAY_NS // bucket_ns
    stats: dict[str, _TickerStats] = {}
    for ticker, path, (res, n_in) in _batches(sources, bar):
        st = stats.get(ticker)
        if st is None:
            st = stats[ticker] = _TickerStats()
            st.buckets = {
                s: [CurveAccumulator(sizes, s, policy) for _ in range(n_b)] for s in sides
            }
            st.depth = {s: [] for s in sides}
        if path not in st.files:
            st.files.append(path)
        st.n_rows += n_in
        for reason, count in res.counts.items():
            if count:
                key = getattr(reason, "name", str(reason)).lower()
                st.n_rejected[key] = st.n_rejected.get(key, 0) + int(count)
        b = res.valid
        if not len(b):
            continue
        st.t_first = int(b.ts_event_ns[0]) if st.t_first is None else st.t_first
        st.t_last = int(b.ts_event_ns[-1])
        tod = b.ts_event_ns % DAY_NS
        st.tod_min = min(st.tod_min, int(tod.min()))
        st.tod_max = max(st.tod_max, int(tod.max()))
        st.half_spread.append(0.5 * (b.ask_px[:, 0] - b.bid_px[:, 0]))
        # Time weights: each book lasts until the next one of the batch (the last: 0 s; one row
        # in a chunk of 250k, and a gap across files or days must not count as time in force).
        w = time_weights(b.ts_event_ns) if time_weighted else None
        bucket = (b.ts_event_ns % DAY_NS) // bucket_ns
        cuts = np.flatnonzero(np.diff(bucket)) + 1
        bounds = zip(np.r_[0, cuts], np.r_[cuts, len(b)], strict=True)
        runs = [(int(lo), int(hi)) for lo, hi in bounds]
        for s in sides:
            sz = b.ask_sz if s == "buy" else b.bid_sz
            st.depth[s].append(sz.sum(axis=1))
            for lo, hi in runs:  # one run per bucket change, not per row
                st.buckets[s][int(bucket[lo])].add(b.slice(lo, hi), None if w is None else w[lo:hi])
    return _name_tickers(stats)


def _merge_stats(a: _TickerStats, b: _TickerStats) -> _TickerStats:
    """Combine the accumulations of disjoint rows of one ticker."""
    a.files += [f for f in b.files if f not in a.files]
    a.n_rows += b.n_rows
    for k, v in b.n_rejected.items():
        a.n_rejected[k] = a.n_rejected.get(k, 0) + v
    a.half_spread += b.half_spread
    for side, accs in b.buckets.items():
        a.depth[side] += b.depth[side]
        for mine, theirs in zip(a.buckets[side], accs, strict=True):
            mine.merge(theirs)
    firsts = [t for t in (a.t_first, b.t_first) if t is not None]
    lasts = [t for t in (a.t_last, b.t_last) if t is not None]
    a.t_first = min(firsts) if firsts else None
    a.t_last = max(lasts) if lasts else None
    a.tod_min = min(a.tod_min, b.tod_min)
    a.tod_max = max(a.tod_max, b.tod_max)
    return a


def _name_tickers(raw: dict[str, _TickerStats]) -> dict[str, _TickerStats]:
    """Name each accumulation: a folder holding one symbol is that folder's ticker (the
    specification's CRWV/, FROG/, SOUN/); otherwise, and for loose files, the symbol."""
    per_folder: dict[str, set[str]] = {}
    for key in raw:
        folder, symbol = key.split("\0", 1)
        per_folder.setdefault(folder, set()).add(symbol)
    out: dict[str, _TickerStats] = {}
    for key, st in raw.items():
        folder, symbol = key.split("\0", 1)
        name = folder if folder and len(per_folder[folder]) == 1 else symbol
        out[name] = _merge_stats(out[name], st) if name in out else st
    return out


# -- estimation -----------------------------------------------------------------------------


def _merged(accs: list[CurveAccumulator]) -> CostCurve:
    total = CurveAccumulator(accs[0].sizes, accs[0].side, accs[0].policy)
    for acc in accs:
        total.merge(acc)
    return total.result()


def _fit_dict(fit: QuadraticFit | PowerFit | PiecewisePowerFit) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in fit.__slots__:  # dataclass fields
        v = getattr(fit, name)
        out[name] = v.tolist() if isinstance(v, np.ndarray) else v
    return out


def _stats(v: NDArray[np.float64]) -> dict[str, float]:
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {}
    q = np.quantile(v, [0.0, 0.05, 0.5, 0.95, 1.0])
    return {
        "min": q[0],
        "p05": q[1],
        "median": q[2],
        "mean": float(v.mean()),
        "p95": q[3],
        "max": q[4],
    }


def _schedule(
    fit: QuadraticFit, starts: NDArray[np.int64], shares: float, profile: IntradayProfile
) -> dict[str, Any]:
    if not fit.ok:
        return {"status": "no_fit"}
    beta_t, gamma_t = forecast(fit.beta, fit.gamma, int(starts[0]), starts, profile)
    res = solve_quadratic(beta_t, gamma_t, shares)
    if not res.ok:
        return {"status": str(res.status), "message": res.message}
    x = res.x
    return {
        "status": "ok",
        "period_start_ns": starts.tolist(),
        "beta_t": beta_t.tolist(),
        "gamma_t": gamma_t.tolist(),
        "x": x.tolist(),
        "cost": float(np.sum(beta_t * x + gamma_t * x * x)),
        "twap_cost": float(np.sum(beta_t * shares / x.size + gamma_t * (shares / x.size) ** 2)),
    }


def _period_starts(st: _TickerStats, n: int) -> NDArray[np.int64]:
    """Start times of ``n`` equal periods spanning the traded times of day, on the first day."""
    t0 = int(st.t_first or 0)
    day0 = t0 - t0 % DAY_NS
    span = max(st.tod_max - st.tod_min, n)
    return day0 + st.tod_min + (np.arange(n, dtype=np.int64) * span) // n


def _estimate(
    ticker: str,
    st: _TickerStats,
    args: argparse.Namespace,
    sides: Sequence[Side],
    history: dict[str, dict[str, IntradayProfile]],
    bucket_ns: int,
) -> dict[str, Any]:
    hs = np.concatenate(st.half_spread) if st.half_spread else np.empty(0)
    out: dict[str, Any] = {
        "files": st.files,
        "n_rows": st.n_rows,
        "n_rejected": st.n_rejected,
        "half_spread": _stats(hs),
        "first_ts_ns": st.t_first,
        "last_ts_ns": st.t_last,
    }
    starts = _period_starts(st, args.periods)
    for s in sides:
        curve = _merged(st.buckets[s])
        quad = fit_quadratic(curve)
        models: dict[str, QuadraticFit | PowerFit | PiecewisePowerFit] = {
            "quadratic": quad,
            "quadratic_visible": fit_quadratic(curve, max_frac_beyond=_VISIBLE_FRAC),
            "power": fit_power(curve),
            "piecewise_power": fit_piecewise_power(curve, n_regimes=args.regimes),
        }
        if curve.policy_used:
            log.warning(
                "impact.beyond_depth_used",
                ticker=ticker,
                side=s,
                policy=curve.policy.kind.value,
                penalty_bps=curve.policy.penalty_bps,
                frac_beyond_depth_max=float(np.nanmax(curve.frac_beyond_depth)),
                first_size_beyond=float(curve.sizes[np.argmax(curve.frac_beyond_depth > 0)]),
            )
        for name, fit in models.items():
            log.info(
                "impact.fitted",
                ticker=ticker,
                side=s,
                model=name,
                status=fit.status,
                r2=fit.r2,
                rmse=fit.rmse,
                n_snapshots=fit.n_snapshots,
                frac_beyond_depth=fit.frac_beyond_depth,
            )
        in_sample = profile_from(st.buckets[s], bucket_ns, min_snapshots=200)
        fprof = history.get(ticker, {}).get(s, IntradayProfile.flat())
        depth = np.concatenate(st.depth[s]) if st.depth[s] else np.empty(0)
        out[s] = {
            "curve": {
                "sizes": curve.sizes.tolist(),
                "mean_cost": curve.mean_cost.tolist(),
                "std_cost": curve.std_cost.tolist(),
                "frac_beyond_depth": curve.frac_beyond_depth.tolist(),
                "n_snapshots": curve.n_snapshots,
                "units": "currency (total cost of x shares against the mid)",
            },
            "visible_depth": _stats(depth),
            "beyond_depth": {
                "policy": curve.policy.kind.value,
                "penalty_bps": curve.policy.penalty_bps,
                "description": curve.policy.describe(),
                "used": curve.policy_used,
            },
            "models": {k: _fit_dict(v) for k, v in models.items()},
            "forecast_profile": fprof.to_dict(),
            "intraday_in_sample": in_sample.to_dict(),
            "schedule": _schedule(quad, starts, args.shares, fprof),
            "schedule_in_sample_profile": _schedule(quad, starts, args.shares, in_sample),
        }
    return out


def _clean(obj: Any) -> Any:
    """Make an object strict-JSON ready: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(mode: str, desc: str) -> Any:
    enabled = mode == "on" or (mode == "auto" and sys.stderr.isatty())
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(desc=desc, unit="rows", unit_scale=True, file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Run ``calibrate``; return the exit code (0 ok, 2 bad input)."""
    from feeds.errors import FeedError

    sides: tuple[Side, ...] = SIDES if args.side == "both" else (args.side,)
    try:
        policy = DepthPolicy(BeyondDepth(args.beyond_depth), args.penalty_bps)
        bucket_ns = round(args.bucket_s * 1e9)
        if bucket_ns <= 0 or DAY_NS % bucket_ns:
            raise ValueError(f"--bucket-s {args.bucket_s} must divide the day")
        if args.periods < 1 or not args.shares > 0 or args.regimes < 1:
            raise ValueError("--periods and --regimes must be >= 1 and --shares > 0")
        sources = _sources(args.paths)
        hist_sources = _sources(args.history) if args.history else []
        bar = _bar(args.progress, "calibrate")
        try:
            stats = _accumulate(
                sources, sides, args.sizes, policy, bucket_ns, bar, args.time_weighted
            )
        finally:
            bar.close()
        history: dict[str, dict[str, IntradayProfile]] = {}
        if hist_sources:
            hbar = _bar(args.progress, "history")
            try:
                hstats = _accumulate(
                    hist_sources, sides, args.sizes, policy, bucket_ns, hbar, args.time_weighted
                )
            finally:
                hbar.close()
            history = {
                t: {s: profile_from(h.buckets[s], bucket_ns) for s in sides}
                for t, h in hstats.items()
            }
    except (OSError, ValueError, FeedError) as e:
        print(f"exec-agent calibrate: {e}", file=sys.stderr)
        return 2
    if not stats:
        print("exec-agent calibrate: no book rows in the given paths", file=sys.stderr)
        return 2
    result = {
        "meta": {
            "command": "exec-agent calibrate",
            "sizes": args.sizes.tolist(),
            "sides": list(sides),
            "beyond_depth": {
                "policy": policy.kind.value,
                "penalty_bps": policy.penalty_bps,
                "description": policy.describe(),
            },
            "cost_units": "total cost in currency against the mid; g(x) = beta*x + gamma*x**2",
            "history": [str(p) for p in args.history],
            "bucket_s": args.bucket_s,
            "weighting": "time in force" if args.time_weighted else "per snapshot",
            "schedule": {"shares": args.shares, "periods": args.periods},
        },
        "tickers": {
            t: _estimate(t, st, args, sides, history, bucket_ns) for t, st in stats.items()
        },
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clean = _clean(result)
    (out / "impact.json").write_text(json.dumps(clean, indent=1, allow_nan=False) + "\n")
    if not args.no_figures:
        from agent.impact.figures import draw_all

        for path in draw_all(clean, out):
            log.info("impact.figure_written", path=str(path))
    print(f"wrote {out / 'impact.json'}", file=sys.stderr)
    return 0
