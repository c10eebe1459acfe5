"""Benchmark: backtest run time per strategy, and batch throughput by executor.

1. One run of every strategy on the shipped sample (SYNB, 5 % of the day's volume, buy, 76
   periods of 5 minutes), data already loaded: median wall time per run (what a worker spends).
2. The same batch (every strategy, both sides) through local processes (1 and 2 workers) and a
   Dask ``LocalCluster`` of 2 worker processes: wall time and runs per second, and a check that
   the three give identical results.

Run: ``python bench/bench_backtest.py [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import _common  # noqa: F401  (pins BLAS threads before numpy loads)

from agent.backtest.config import ALL_STRATEGIES
from agent.backtest.data import load_day, load_history
from agent.backtest.engine import RunSpec, SimParams, simulate
from agent.backtest.executor import run_batch

REPO = Path(__file__).resolve().parents[1]
DAY = str(REPO / "replay_data" / "SYNB_2025-06-02.mbp-10.csv.gz")
HIST = (str(REPO / "replay_data" / "history" / "SYNB_2025-05-30.mbp-10.csv.gz"),)


def _specs(sides: tuple[str, ...]) -> list[RunSpec]:
    return [
        RunSpec(f"SYNB-{side}-{st}", "SYNB", DAY, "auto", "SYNB", HIST, side, 5.0, st, SimParams())
        for side in sides
        for st in ALL_STRATEGIES
    ]


def _key(r):
    d = r.to_dict()
    d.pop("elapsed_s")
    for s in d["slices"]:
        s.pop("solve_ms", None)
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    day = load_day(DAY, "auto", "SYNB")
    hist = load_history(HIST, "SYNB")
    print("| strategy | median s per run | children |")
    print("|---|---|---|")
    for spec in _specs(("buy",)):
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            r = simulate(day, spec, hist)
            times.append(time.perf_counter() - t0)
        print(f"| {spec.strategy} | {sorted(times)[len(times) // 2]:.3f} | {r.n_children} |")
    specs = _specs(("buy", "sell"))
    rows = []
    ref = None
    for label, kw in (("processes x1", {"max_workers": 1}), ("processes x2", {"max_workers": 2})):
        t0 = time.perf_counter()
        res = run_batch(specs, progress=False, **kw)
        rows.append((label, time.perf_counter() - t0, res))
    try:
        from distributed import LocalCluster

        with LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster:
            t0 = time.perf_counter()
            res = run_batch(specs, dask_address=cluster.scheduler_address, progress=False)
            rows.append(("dask LocalCluster x2", time.perf_counter() - t0, res))
    except ImportError:
        print("(distributed not installed: Dask skipped)")
    print()
    print("| executor | runs | wall s (incl. worker start) | runs/s | identical to processes x1 |")
    print("|---|---|---|---|---|")
    for label, wall, res in rows:
        keys = [_key(r) for r in res]
        ref = ref or keys
        print(f"| {label} | {len(res)} | {wall:.1f} | {len(res) / wall:.2f} | {keys == ref} |")


if __name__ == "__main__":
    main()
