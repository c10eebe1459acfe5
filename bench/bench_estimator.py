"""Benchmark: the window's cost curve per decision, incremental against the batch re-walk.

Books arrive one row at a time (as from a live feed) at a fixed event-time spacing; at every
decision the batch path assembles the window (``RollingWindow.view``) and re-walks it
(``cost_curve`` with ``time_weights``), as ``ParentRunner._estimate`` does today; the
incremental path (``agent.core.estimator.IncrementalCurve``) pushes each book and reads the
curve. Reported: median wall time per decision and per pushed book, for windows of 1k to 200k
rows (the batch is timed without ``max_rows`` thinning, which the incremental path does not
need), and the largest relative difference of the mean cost between the two.

Run: ``python bench/bench_estimator.py [--decisions 40]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import _common  # noqa: F401  (pins BLAS threads before numpy loads)
import numpy as np

from agent.core.estimator import IncrementalCurve
from agent.core.window import RollingWindow
from agent.impact.book_walk import DepthPolicy, cost_curve, time_weights
from feeds.model import BookBatch
from feeds.readers import read_mbp10

SAMPLE = Path(__file__).resolve().parents[1] / "replay_data" / "SYNA_2025-06-02.mbp-10.csv.gz"
DT_NS = 50_000_000  # 20 books an event second


def books(n: int) -> BookBatch:
    """Return ``n`` rows of the sample (cycled), at a fixed spacing of event time."""
    b = BookBatch.concat(list(read_mbp10(SAMPLE)))
    idx = np.arange(n) % len(b)
    out = b.take(idx)
    ts = 10**18 + np.arange(n, dtype=np.int64) * DT_NS
    return BookBatch(out.symbol, ts, ts.copy(), out.bid_px, out.bid_sz, out.ask_px, out.ask_sz)


def run(window_rows: int, decisions: int, every: int) -> dict[str, float]:
    n = window_rows + decisions * every
    data = books(n)
    window_ns = window_rows * DT_NS
    sizes = np.linspace(100, 5000, 50)
    pol = DepthPolicy()
    inc = IncrementalCurve("buy", sizes, pol, window_ns, "time")
    win = RollingWindow(data.symbol, window_ns, max_rows=10**9)
    rows = [data.slice(i, i + 1) for i in range(n)]
    push_inc, push_win, t_inc, t_batch, worst = [], [], [], [], 0.0
    j = 0
    for d in range(decisions + 1):
        k = window_rows + d * every
        t0 = time.perf_counter()
        for r in rows[j:k]:
            inc.push(r)
        push_inc.append((time.perf_counter() - t0) / max(k - j, 1))
        t0 = time.perf_counter()
        for r in rows[j:k]:
            win.append(r)
        push_win.append((time.perf_counter() - t0) / max(k - j, 1))
        j = k
        t = int(data.ts_event_ns[k - 1]) + DT_NS // 2
        t0 = time.perf_counter()
        c = inc.curve(t)
        t1 = time.perf_counter()
        v = win.view(t)
        ref = cost_curve(v, "buy", sizes, pol, weights=time_weights(v.ts_event_ns, t))
        t2 = time.perf_counter()
        if d == 0:
            continue  # the first read walks the whole window once: not a decision's cost
        t_inc.append(t1 - t0)
        t_batch.append(t2 - t1)
        worst = max(worst, float(np.max(np.abs(c.mean_cost - ref.mean_cost) / ref.mean_cost)))
    return {
        "inc": statistics.median(t_inc),
        "inc_max": max(t_inc),
        "rebuilds": inc.n_rebuilds,
        "batch": statistics.median(t_batch),
        "push_inc": statistics.median(push_inc[1:]),
        "push_win": statistics.median(push_win[1:]),
        "diff": worst,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decisions", type=int, default=40)
    ap.add_argument("--books-per-decision", type=int, default=200)
    args = ap.parse_args()
    print(
        f"{'window rows':>11} {'incremental':>12} {'(max)':>9} {'rebuilds':>8} {'batch':>10} "
        f"{'batch/inc':>9} "
        f"{'push inc':>9} {'push win':>9} {'max rel diff':>12}"
    )
    for w in (1_000, 10_000, 50_000, 200_000):
        r = run(w, args.decisions, args.books_per_decision)
        print(
            f"{w:>11} {r['inc'] * 1e3:>10.3f}ms {r['inc_max'] * 1e3:>7.2f}ms {r['rebuilds']:>8} "
            f"{r['batch'] * 1e3:>8.2f}ms "
            f"{r['batch'] / r['inc']:>8.1f}x {r['push_inc'] * 1e6:>7.2f}us "
            f"{r['push_win'] * 1e6:>7.2f}us {r['diff']:>12.1e}"
        )
    print(
        f"per decision: read the curve after {args.books_per_decision} new books (incremental) "
        "or view + re-walk the window (batch), medians; (max): the slowest read, re-sums "
        "included; push: per book."
    )


if __name__ == "__main__":
    main()
