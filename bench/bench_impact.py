"""Benchmark of the walk-the-book impact estimation (one command, ratios from the same run).

    python bench/bench_impact.py            # full run (~3 minutes: the baseline is slow)
    python bench/bench_impact.py --quick    # baseline on 500 rows, scaled to 10,000 (labelled)

1. Same 10,000 MBP-10 rows, same 100 sizes (100..10,000 step 100), buy side: the
   specification's approach (``DataFrame.iterrows`` and a per-level Python walk per size,
   re-implemented below in our own words with the spec's 1 % penalty past the visible depth)
   against ``agent.impact.cost_curve`` with ``DepthPolicy(PENALTY, 100 bps)``. Both give the
   mean and population std of the per-share slippage; the run checks they agree (max relative
   difference printed) and reports the speed ratio. Our time is the median of 21 runs and
   includes turning the DataFrame into arrays; the baseline runs once (it takes minutes).
2. A 1,000,000-row MBP-10 CSV (seeded synthetic day from ``feeds.synth``, written once to a
   cache folder): ``pandas.read_csv`` of the file (median of 3) against the estimation of the
   full 100-size curve (mean and std, one side and both sides, median of 5) from the arrays.

BLAS is pinned to one thread before numpy is imported, so the numbers are single-core.
"""

from __future__ import annotations

import os

for _var in (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.impact.book_walk import BeyondDepth, DepthPolicy, cost_curve  # noqa: E402
from feeds.model import BookBatch  # noqa: E402

SIZES = np.arange(100.0, 10_001.0, 100.0)
PENALTY = DepthPolicy(BeyondDepth.PENALTY, 100.0)
L = 10


# -- the baseline: the specification's method, in our own words ---------------------------------


def _baseline_one(row: pd.Series, qty: float) -> float:
    """Per-share slippage of buying ``qty`` against one row, walking the asks level by level."""
    mid = (row["bid_px_00"] + row["ask_px_00"]) / 2
    left, spent, px = qty, 0.0, np.nan
    for lev in range(L):
        if left <= 0:
            break
        px, sz = row[f"ask_px_{lev:02d}"], row[f"ask_sz_{lev:02d}"]
        if np.isnan(px) or np.isnan(sz):
            continue
        fill = min(left, sz)
        spent += fill * px
        left -= fill
    if left > 0:  # past the visible book: the last level's price plus 1 %
        spent += left * px * 1.01
    return spent / qty - mid


def baseline_curve(df: pd.DataFrame, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of per-share slippage per size: a Python walk of every row, every size."""
    means, stds = [], []
    for qty in sizes:
        slips = [_baseline_one(row, qty) for _, row in df.iterrows()]
        means.append(np.mean(slips))
        stds.append(np.std(slips))
    return np.array(means), np.array(stds)


# -- ours -----------------------------------------------------------------------------------------


def batch_from_frame(df: pd.DataFrame) -> BookBatch:
    """Columnar BookBatch from a Databento-layout frame (timestamps unused here)."""

    def cols(kind: str) -> np.ndarray:
        return df[[f"{kind}_{lev:02d}" for lev in range(L)]].to_numpy(dtype=np.float64)

    ts = np.arange(len(df), dtype=np.int64)
    return BookBatch(
        "BENCH", ts, ts, cols("bid_px"), cols("bid_sz"), cols("ask_px"), cols("ask_sz")
    )


def ours_from_frame(df: pd.DataFrame, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of per-share slippage per size from the kink accumulation."""
    c = cost_curve(batch_from_frame(df), "buy", sizes, PENALTY)
    return c.mean_cost / sizes, c.std_cost / sizes


def _median_time(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _frame(n_rows: int, seed: int) -> pd.DataFrame:
    from feeds.synth import generate_day

    return generate_day("SYNA", "2025-06-02", seed, n_rows=n_rows)


def bench_vs_spec(quick: bool) -> dict[str, float]:
    """Part 1: 10,000 rows x 100 sizes, ours vs the spec's iterrows walk."""
    df = _frame(10_000, seed=42)
    ours_t = _median_time(lambda: ours_from_frame(df, SIZES), repeat=21)
    m_ours, s_ours = ours_from_frame(df, SIZES)
    n_base = 500 if quick else len(df)
    sub = df.iloc[:n_base]
    t = time.perf_counter()
    m_base, s_base = baseline_curve(sub, SIZES)
    base_t = (time.perf_counter() - t) * len(df) / n_base
    m_check, s_check = ours_from_frame(sub, SIZES)
    diff = max(
        float(np.max(np.abs(m_check - m_base) / np.abs(m_base))),
        float(np.max(np.abs(s_check - s_base) / np.abs(s_base))),
    )
    return {
        "rows": len(df),
        "sizes": SIZES.size,
        "baseline_rows_timed": n_base,
        "baseline_s": base_t,
        "ours_s": ours_t,
        "speedup": base_t / ours_t,
        "max_rel_diff": diff,
        "mean_slippage_at_10000": float(m_ours[-1]),
        "std_slippage_at_10000": float(s_ours[-1]),
    }


def bench_vs_read_csv(workdir: Path) -> dict[str, float]:
    """Part 2: 1,000,000-row file, read_csv vs the full 100-size curve estimation."""
    from feeds.synth import write_mbp10_csv

    path = workdir / "SYNA_1M_seed7.mbp-10.csv"
    if not path.exists():
        print(f"writing {path} (once) ...", file=sys.stderr)
        write_mbp10_csv(_frame(1_000_000, seed=7), path)
    read_t = _median_time(lambda: pd.read_csv(path), repeat=3)
    batch = batch_from_frame(pd.read_csv(path))
    one = _median_time(lambda: cost_curve(batch, "buy", SIZES, PENALTY), repeat=5)
    both = _median_time(
        lambda: (
            cost_curve(batch, "buy", SIZES, PENALTY),
            cost_curve(batch, "sell", SIZES, PENALTY),
        ),
        repeat=5,
    )
    return {
        "rows": len(batch),
        "file_mb": path.stat().st_size / 1e6,
        "read_csv_s": read_t,
        "curve_one_side_s": one,
        "curve_both_sides_s": both,
        "read_over_one_side": read_t / one,
        "read_over_both_sides": read_t / both,
    }


def main(argv: list[str] | None = None) -> int:
    """Run both parts, print a table and the pass/fail of the targets."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="time the baseline on 500 rows and scale to 10,000 (labelled)",
    )
    ap.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "exec-agent-bench",
        help="cache folder of the 1M-row file",
    )
    ap.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = ap.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)

    p1 = bench_vs_spec(args.quick)
    print(
        f"[1] {p1['rows']:,} rows x {p1['sizes']} sizes, buy, penalty 1%"
        + (" (baseline timed on 500 rows, scaled)" if args.quick else "")
    )
    print(f"    spec iterrows walk : {p1['baseline_s']:10.3f} s")
    print(f"    cost_curve (median): {p1['ours_s'] * 1e3:10.3f} ms")
    print(f"    speed-up           : {p1['speedup']:10.0f} x   (target >= 3000 x)")
    print(f"    max rel. difference: {p1['max_rel_diff']:10.2e}   (mean and std per size)")
    p2 = bench_vs_read_csv(args.workdir)
    print(f"[2] {p2['rows']:,}-row MBP-10 CSV ({p2['file_mb']:.0f} MB), {SIZES.size} sizes")
    print(f"    pandas.read_csv    : {p2['read_csv_s']:10.3f} s")
    print(
        f"    curve, one side    : {p2['curve_one_side_s']:10.3f} s"
        f"   (read_csv / curve = {p2['read_over_one_side']:.1f})"
    )
    print(
        f"    curve, both sides  : {p2['curve_both_sides_s']:10.3f} s"
        f"   (read_csv / curve = {p2['read_over_both_sides']:.1f})"
    )
    ok1 = p1["speedup"] >= 3000 and p1["max_rel_diff"] < 1e-9
    ok2 = p2["read_over_one_side"] > 1
    print(
        f"targets: speed-up >= 3000x with equal numbers: {'PASS' if ok1 else 'FAIL'}; "
        f"curve cheaper than read_csv: {'PASS' if ok2 else 'FAIL'}"
    )
    if args.json:
        args.json.write_text(json.dumps({"vs_spec": p1, "vs_read_csv": p2}, indent=1))
    return 0 if ok1 and ok2 else 1


if __name__ == "__main__":
    sys.exit(main())
