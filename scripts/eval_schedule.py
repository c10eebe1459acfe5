"""Offline experiment: does the forecast move the schedule away from TWAP, and does that pay?

Not the backtest (no venue, no fills, no impact that lasts): every child is priced by walking
the book in force when it is sent, against that book's mid, in bps of the parent's notional at
the start. A parent of ``pct`` of the day's volume runs from 30 minutes after the first book to
the last period of the day, one decision per period:

- ``twap``: the remaining shares over the remaining periods, sent at the period start;
- ``mpc``: ``agent.mpc.solvers.solve_quadratic`` on ``beta_t = beta_now * mb_t``,
  ``gamma_t = gamma_now * mg_t`` for all remaining periods, with ``(beta_now, gamma_now)``
  the quadratic fit of the book in force (``fit_quadratic`` of its walk curve) and the
  multipliers of ``LiquidityForecaster`` (leave-one-out prior profile); the first period's
  amount is sent at the period start;
- ``twap+timing``, ``mpc+timing``: the same children sent by ``TimingRule`` inside the period.

Usage::

    PYTHONPATH=$PWD python scripts/eval_schedule.py [--period-s 300] [--pct 1 5]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from agent.backtest.data import load_day
from agent.core.forecast import LiquidityForecaster
from agent.core.timing import TimingRule
from agent.core.volume import VolumeTracker, participation_caps
from agent.impact.book_walk import cost_curve, side_arrays, walk_cost
from agent.impact.fit import fit_quadratic
from agent.mpc.solvers import solve_quadratic
from agent.prior import load_prior, load_prior_file

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


def run(symbol: str, side: str, pct: float, period_s: float, cap_pct: float | None) -> dict:
    day = load_day(str(DAYS[symbol]))
    books = day.books
    ts = books.ts_event_ns
    P = round(period_s * S)
    t_start = (int(ts[0]) + 1800 * S) // P * P + P
    n = int((int(ts[-1]) - t_start) // P)
    parent = round(pct / 100 * float(day.trades.qty.sum()))
    px, sz, mid = side_arrays(books, side)
    i0 = int(np.searchsorted(ts, t_start, side="right")) - 1
    notional = parent * mid[i0]
    sizes = np.unique(np.geomspace(1, max(parent / 4, 10), 24).round())
    fc = LiquidityForecaster(P, side=side, origin_ns=t_start % P, profile=load_prior(symbol, side))
    fc.observe(books.slice(0, i0 + 1))
    prior = load_prior_file(symbol, side)
    vt = VolumeTracker(P, origin_ns=int(ts[0]) // P * P, volume_share=prior.volume_share)
    tr = day.trades
    j_tr = int(np.searchsorted(tr.ts_ns, ts[i0], side="right"))
    vt.observe_trades(tr.ts_ns[:j_tr], tr.qty[:j_tr])
    rules = {
        k: TimingRule(side, np.geomspace(1, max(parent, 10), 12), min_history_ns=1800 * S)
        for k in ("twap+timing", "mpc+timing")
    }
    seen = dict.fromkeys(rules, 0)

    def feed(name: str, upto: int) -> None:
        """Show rule ``name`` the books up to index ``upto`` (exclusive), once each."""
        if upto > seen[name]:
            rules[name].observe(books.slice(seen[name], upto))
            seen[name] = upto

    left = dict.fromkeys(("twap", "mpc", "twap+timing", "mpc+timing"), float(parent))
    cost = dict.fromkeys(left, 0.0)
    first_mpc = []
    lo = i0 + 1
    for k in range(n):
        t = t_start + k * P
        a = int(np.searchsorted(ts, t, side="right"))
        b = int(np.searchsorted(ts, t + P, side="right"))
        fc.observe(books.slice(lo, a))
        lo = a
        j_new = int(np.searchsorted(tr.ts_ns, t, side="right"))
        vt.observe_trades(tr.ts_ns[j_tr:j_new], tr.qty[j_tr:j_new])
        j_tr = j_new
        i = a - 1
        H = n - k
        f = fc.forecast(t, t + P * np.arange(H))
        caps = None
        if cap_pct is not None:
            caps = participation_caps(cap_pct / 100, vt.forecast(t, t + P * np.arange(H)).volume)
        fit = fit_quadratic(cost_curve(books.slice(i, i + 1), side, sizes))
        child = {}
        for name in left:
            rem = left[name]
            if name.startswith("twap") or H == 1:
                x = rem / H
            else:
                res = solve_quadratic(fit.beta * f.beta_mult, fit.gamma * f.gamma_mult, rem, caps)
                x = float(res.x[0]) if np.all(np.isfinite(res.x)) else rem / H
            child[name] = min(round(x), rem) if H > 1 else rem
        first_mpc.append(child["mpc"] / max(left["mpc"] / H, 1e-9))
        for name, x in child.items():
            if x <= 0:
                continue
            j = i
            if name in rules:  # wait inside the period for a cheap book
                r = rules[name]
                feed(name, a)
                if not r.decide(t, x, t + P - S).send:
                    j = b - 1
                    for q in range(a, b):
                        feed(name, q + 1)
                        if r.decide(int(ts[q]), x, t + P - S).send:
                            j = q
                            break
            c = walk_cost(px[j : j + 1], sz[j : j + 1], mid[j : j + 1], [x], side=side)[0, 0]
            cost[name] += float(c)
            left[name] -= x
    bps = {k: round(v / notional * 1e4, 3) for k, v in cost.items()}
    return {
        "symbol": symbol,
        "side": side,
        "pct": pct,
        "parent": parent,
        "periods": n,
        "cost_bps": bps,
        "left": {k: round(v) for k, v in left.items()},
        "mpc_first_child_over_twap": {
            "median": round(float(np.median(first_mpc)), 3),
            "p10": round(float(np.percentile(first_mpc, 10)), 3),
            "p90": round(float(np.percentile(first_mpc, 90)), 3),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--period-s", type=float, default=300.0)
    ap.add_argument("--pct", type=float, nargs="*", default=[1.0, 5.0])
    ap.add_argument("--cap-pct", type=float, default=None, help="MPC participation cap, %% of E[V]")
    args = ap.parse_args()
    for sym in DAYS:
        for side in ("buy", "sell"):
            for pct in args.pct:
                print(json.dumps(run(sym, side, pct, args.period_s, args.cap_pct)))


if __name__ == "__main__":
    main()
