"""The timing rule on real days: one child a period, sent at the period start or by the rule.

For each period (after a warm-up), the child of ``qty`` shares is either sent against the book
in force at the period start, or held by ``agent.core.timing.TimingRule`` until a book whose
cost is at or below the day's q-quantile so far (or the period's end less one second). Reported
per day, side and size, in bps of the mid: the mean walk-the-book cost of both, and the mean mid
move from the period start to the timed send (signed against us: a buy that waits while the mid
rises pays it). Cost against the arrival mid = walk cost + that move. Usage::

    PYTHONPATH=$PWD python scripts/eval_timing.py [--period-s 300] [--quantile 0.25]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from agent.backtest.data import load_day
from agent.core.timing import TimingRule
from agent.impact.book_walk import side_arrays, walk_cost

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


def run(symbol: str, side: str, qty: float, period_s: float, quantile: float) -> dict:
    books = load_day(str(DAYS[symbol])).books
    ts = books.ts_event_ns
    P = round(period_s * S)
    origin = int(ts[0]) // P * P + P
    px, sz, mid = side_arrays(books, side)
    cost = walk_cost(px, sz, mid, [qty], side=side)[:, 0] / qty / mid * 1e4
    sign = 1.0 if side == "buy" else -1.0
    rule = TimingRule(
        side, np.geomspace(10, 20_000, 12), quantile=quantile, min_history_ns=1800 * S
    )
    at_start, timed, drift, reasons = [], [], [], {}
    lo = 0
    for k in range(int((int(ts[-1]) - origin) // P)):
        start, end = origin + k * P, origin + (k + 1) * P
        a = int(np.searchsorted(ts, start, side="right"))
        b = int(np.searchsorted(ts, end, side="right"))
        if a == 0 or b <= a:
            continue
        rule.observe(books.slice(lo, a))
        lo = a
        d = rule.decide(start, qty, end - S)
        sent, why = (a - 1, d.reason) if d.send else (None, "")
        i = a
        while sent is None and i < b:
            rule.observe(books.slice(i, i + 1))
            lo = i + 1
            di = rule.decide(int(ts[i]), qty, end - S)
            if di.send:
                sent, why = i, di.reason
            i += 1
        if sent is None:
            sent, why = b - 1, "deadline"
        if d.reason == "warmup":
            continue
        reasons[why] = reasons.get(why, 0) + 1
        at_start.append(cost[a - 1])
        timed.append(cost[sent])
        drift.append(sign * (mid[sent] - mid[a - 1]) / mid[a - 1] * 1e4)
    return {
        "symbol": symbol,
        "side": side,
        "qty": qty,
        "periods": len(timed),
        "cost_at_start_bps": round(float(np.mean(at_start)), 3),
        "cost_timed_bps": round(float(np.mean(timed)), 3),
        "mid_move_bps": round(float(np.mean(drift)), 3),
        "mid_move_se_bps": round(float(np.std(drift) / np.sqrt(len(drift))), 3),
        "reasons": reasons,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--period-s", type=float, default=300.0)
    ap.add_argument("--quantile", type=float, default=0.25)
    args = ap.parse_args()
    for sym in DAYS:
        for side in ("buy", "sell"):
            for qty in (100.0, 500.0, 2000.0):
                print(json.dumps(run(sym, side, qty, args.period_s, args.quantile)))


if __name__ == "__main__":
    main()
