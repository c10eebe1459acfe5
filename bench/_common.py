"""Benchmark helpers: one BLAS thread, medians, a seeded big MBP-10 file."""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

DATA = Path(__file__).resolve().parent / "_data"


def median_time(fn: Callable[[], object], repeats: int = 3) -> tuple[float, list[float]]:
    """Run ``fn`` ``repeats`` times; return the median and all wall times in seconds."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def big_mbp10_csv(rows: int = 1_000_000, seed: int = 7) -> Path:
    """Return a seeded synthetic MBP-10 CSV of ``rows`` rows (generated once, cached)."""
    from feeds.synth import generate_day, write_mbp10_csv

    DATA.mkdir(exist_ok=True)
    path = DATA / f"SYNBIG_{rows}_{seed}.mbp-10.csv"
    if not path.exists():
        df = generate_day("SYNBIG", "2025-06-02", seed, n_rows=rows)
        tmp = path.with_suffix(".tmp.csv")
        write_mbp10_csv(df, tmp)
        tmp.rename(path)
    return path
