"""Out-of-sample check of the volume forecast on real days (the volume behind POV caps).

Driven online through each day (trades up to each period start), the forecast of the next H
periods' volume from the day so far, flat in time or shaped by the leave-one-out prior's
volume shares, against "the last finished period's volume". Reports the RMSE of
``log(1 + V)`` errors and the median ratio realized / forecast, over all (decision, lead) pairs
from 30 minutes after the first book. Usage::

    PYTHONPATH=$PWD python scripts/eval_volume.py [--period-s 300] [--horizon 12]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from agent.backtest.data import load_day
from agent.core.volume import VolumeTracker
from agent.prior import load_prior_file

S = 1_000_000_000
REPO = Path(__file__).resolve().parents[1]
DATA = next(
    (
        d
        for d in (REPO.parent / "shared" / "data", REPO.parents[1] / "shared" / "data")
        if d.exists()
    ),
    REPO.parent / "shared" / "data",
)
DAYS = {
    "FROG": DATA / "databento-mbp10" / "FROG" / "FROG_2025-04-03 00_00_00+00_00.csv",
    "AMZN": DATA / "lobster" / "LOBSTER_SampleFile_AMZN_2012-06-21_5.zip",
}


def run(symbol: str, period_s: float, horizon: int) -> dict:
    day = load_day(str(DAYS[symbol]))
    tr = day.trades
    P = round(period_s * S)
    first = int(day.books.ts_event_ns[0])
    last = int(day.books.ts_event_ns[-1])
    origin = first // P * P
    n = (last - origin) // P
    real = tr.volume_between(origin + P * np.arange(n), origin + P * np.arange(1, n + 1))
    prior = load_prior_file(symbol)
    models = {
        "flat": VolumeTracker(P, origin, min_share=0.0),
        "prior": VolumeTracker(P, origin, volume_share=prior.volume_share, min_share=0.0),
    }
    err: dict[str, list[float]] = {"last": [], "flat": [], "prior": []}
    ratio: dict[str, list[float]] = {k: [] for k in err}
    lo = 0
    for k in range(1, n):
        t = origin + k * P
        hi = int(np.searchsorted(tr.ts_ns, t, side="right"))
        for m in models.values():
            m.observe_trades(tr.ts_ns[lo:hi], tr.qty[lo:hi])
        lo = hi
        if t - first < 1800 * S:
            continue
        starts = t + P * np.arange(1, horizon + 1)
        preds = {name: m.forecast(t, starts).volume for name, m in models.items()}
        preds["last"] = np.full(horizon, real[k - 1])
        for j in range(horizon):
            if k + 1 + j >= n:
                break
            r = real[k + 1 + j]
            for name, p in preds.items():
                err[name].append(np.log1p(r) - np.log1p(p[j]))
                if p[j] > 0:
                    ratio[name].append(r / p[j])
    return {
        "symbol": symbol,
        "prior_from": list(prior.symbols),
        "pairs": len(err["flat"]),
        "rmse_log1p": {m: round(float(np.sqrt(np.mean(np.square(v)))), 3) for m, v in err.items()},
        "median_ratio": {m: round(float(np.median(v)), 3) for m, v in ratio.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--period-s", type=float, default=300.0)
    ap.add_argument("--horizon", type=int, default=12)
    args = ap.parse_args()
    for sym in DAYS:
        print(json.dumps(run(sym, args.period_s, args.horizon)))


if __name__ == "__main__":
    main()
