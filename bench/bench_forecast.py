"""Speed of the adaptive-execution building blocks on a real day (one BLAS thread).

    python bench/bench_forecast.py

On the FROG day (``../shared/data``; the seeded synthetic 1M-row day's first 100,000 rows when
it is absent): ``LiquidityForecaster.observe`` fed one book at a time (as the daemon) and in
10,000-row chunks (as the backtest), ``forecast`` of 78 periods, ``TimingRule.observe`` and
``decide``, ``VolumeTracker.forecast``. Medians per call.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _common
import numpy as np

from agent.core.forecast import LiquidityForecaster
from agent.core.timing import TimingRule
from agent.core.volume import VolumeTracker

REPO = Path(__file__).resolve().parents[1]
S = 1_000_000_000
P = 300 * S


def _books():
    from agent.backtest.data import load_day

    for d in (REPO.parent / "shared" / "data", REPO.parents[1] / "shared" / "data"):
        p = d / "databento-mbp10" / "FROG" / "FROG_2025-04-03 00_00_00+00_00.csv"
        if p.exists():
            return "FROG 2025-04-03", load_day(str(p)).books
    path = _common.big_mbp10_csv()
    return "synthetic (100k rows)", load_day(str(path)).books.slice(0, 100_000)


def per_call(fn, n):
    t0 = _common.time.perf_counter()
    for i in range(n):
        fn(i)
    return (_common.time.perf_counter() - t0) / n


def main() -> None:
    name, books = _books()
    ts = books.ts_event_ns
    origin = int(ts[0]) // P * P
    n = len(books)
    print(f"day: {name}, {n} books")

    fc = LiquidityForecaster(P, origin_ns=origin)
    one = per_call(lambda i: fc.observe(books.slice(i, i + 1)), n)
    print(f"forecaster.observe, one book a call: {one * 1e6:.1f} us per book")
    fc2 = LiquidityForecaster(P, origin_ns=origin)
    chunk = 10_000
    t_chunk = per_call(lambda i: fc2.observe(books.slice(i * chunk, (i + 1) * chunk)), n // chunk)
    print(f"forecaster.observe, 10,000-row chunks: {t_chunk / chunk * 1e9:.0f} ns per book")
    t_end = int(ts[-1])
    starts = t_end + P * np.arange(78)
    f_t = per_call(lambda i: fc.forecast(t_end, starts), 2000)
    print(f"forecaster.forecast, H = 78: {f_t * 1e6:.1f} us per call")

    rule = TimingRule("buy", np.geomspace(10, 20_000, 12))
    r_obs = per_call(lambda i: rule.observe(books.slice(i, i + 1)), min(n, 20_000))
    print(f"timing.observe, one book a call: {r_obs * 1e6:.1f} us per book")
    t_last = int(ts[min(n, 20_000) - 1])
    d_t = per_call(lambda i: rule.decide(t_last, 500.0, t_last + P), 2000)
    print(f"timing.decide: {d_t * 1e6:.1f} us per call")

    vt = VolumeTracker(P, origin_ns=origin)
    vt.observe_trades(ts[::10], np.full(ts[::10].size, 100.0))
    v_t = per_call(lambda i: vt.forecast(t_end, starts), 2000)
    print(f"volume.forecast, H = 78: {v_t * 1e6:.1f} us per call")


if __name__ == "__main__":
    main()
