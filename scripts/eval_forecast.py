"""Out-of-sample check of the liquidity forecast on real days: is it better than "same as now"?

For each day, side and period length, the forecaster is driven online (books up to each period
start, then a forecast of the next H periods). The realized level of each later period is its
time-weighted mean, computed offline, of: the log half-spread, the log depth slope, and the log
of the per-share walk-the-book cost of a reference size. Predictions compared:

- ``now``: the book in force at the decision (what the MPC uses today for every period);
- ``trail``: the mean over the last period;
- ``forecast``: ``LiquidityForecaster`` (AR(1) toward the day's level, with the prior profile
  estimated from the *other* symbols when ``--prior`` is given).

Reports the RMSE of the log error (realized - predicted) over all (decision, lead) pairs and by
lead. Usage::

    PYTHONPATH=$PWD python scripts/eval_forecast.py --period-s 300 --horizon 12 [--prior]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from agent.backtest.data import load_day
from agent.core.bookstats import PeriodMeans, book_features
from agent.core.forecast import LiquidityForecaster
from agent.impact.book_walk import side_arrays, walk_cost
from agent.prior import load_prior

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


def _realized(books, side, period_ns, origin, x_ref):
    """Per period: time-weighted means of (log h, log c, per-share cost at x_ref)."""
    z = book_features(books, side)
    px, sz, mid = side_arrays(books, side)
    s = walk_cost(px, sz, mid, [x_ref], side=side)[:, 0] / x_ref
    pm = PeriodMeans(period_ns, origin, 3)
    out = {}
    for p in pm.add(books.ts_event_ns, np.column_stack([z, s])):
        out[p.period] = p.mean
    return out


def run(symbol, side, period_s, horizon, prior):
    day = load_day(str(DAYS[symbol]))
    books = day.books
    P = round(period_s * 1e9)
    ts = books.ts_event_ns
    origin = int(ts[0]) // P * P
    x_ref = float(np.median(books.ask_sz[:, 0] if side == "buy" else books.bid_sz[:, 0])) * 2
    real = _realized(books, side, P, origin, x_ref)
    profile = load_prior(symbol, side=side) if prior else None
    fc = LiquidityForecaster(P, side=side, origin_ns=origin, profile=profile)
    px, sz, mid = side_arrays(books, side)
    errs = {k: {"now": [], "trail": [], "forecast": []} for k in ("h", "c", "cost")}
    lead_err = {m: np.zeros((horizon, 2)) for m in ("now", "forecast")}
    inside = {"h": [], "c": []}  # realized within the forecast's +-1 sd band
    n_dec = int((int(ts[-1]) - origin) // P)
    lo = 0
    for k in range(1, n_dec):
        t = origin + k * P
        hi = int(np.searchsorted(ts, t, side="right"))
        fc.observe(books.slice(lo, hi))
        lo = hi
        if hi == 0:
            continue
        starts = t + P * np.arange(horizon + 1)
        f = fc.forecast(t, starts)
        med_b, med_g = f.median()  # the point forecast of a log level is the median
        i = hi - 1
        ref = np.array([f.fields["ref_beta"], f.fields["ref_gamma"]])
        trail = np.array([f.fields["state_beta"], f.fields["state_gamma"]])
        c_now = walk_cost(px[i : i + 1], sz[i : i + 1], mid[i : i + 1], [x_ref], side=side)[0, 0]
        s_now = c_now / x_ref
        h_now = float(np.exp(ref[0]))
        exc = max(s_now - h_now, 0.0)
        for j in range(1, horizon + 1):
            r = real.get(k + j)
            if r is None or not np.all(np.isfinite(r)):
                continue
            pred = {
                "now": (ref, np.log(s_now)),
                "trail": (trail, np.log(s_now) + (trail[0] - ref[0])),
                "forecast": (
                    ref + np.log([med_b[j], med_g[j]]),
                    np.log(h_now * med_b[j] + exc * med_g[j]),
                ),
            }
            zf = pred["forecast"][0]
            inside["h"].append(abs(r[0] - zf[0]) <= f.log_sd_beta[j])
            inside["c"].append(abs(r[1] - zf[1]) <= f.log_sd_gamma[j])
            for m, (zz, lc) in pred.items():
                errs["h"][m].append(r[0] - zz[0])
                errs["c"][m].append(r[1] - zz[1])
                errs["cost"][m].append(np.log(r[2]) - lc)
                if m in lead_err:
                    lead_err[m][j - 1] += ((np.log(r[2]) - lc) ** 2, 1)
    res = {
        "symbol": symbol,
        "side": side,
        "period_s": period_s,
        "x_ref": x_ref,
        "n_pairs": len(errs["h"]["now"]),
        "final_phi": [f.fields["phi_beta"], f.fields["phi_gamma"]],
        "final_sd": [f.fields["sd_beta"], f.fields["sd_gamma"]],
    }
    for key, d in errs.items():
        res[f"rmse_{key}"] = {m: float(np.sqrt(np.mean(np.square(v)))) for m, v in d.items()}
    res["within_1sd"] = {k: float(np.mean(v)) for k, v in inside.items()}
    res["rmse_cost_by_lead"] = {
        m: [round(float(np.sqrt(a / max(n, 1))), 3) for a, n in v] for m, v in lead_err.items()
    }
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--period-s", type=float, default=300.0)
    ap.add_argument("--horizon", type=int, default=12)
    ap.add_argument("--prior", action="store_true", help="use the leave-one-out prior profile")
    ap.add_argument("--symbols", nargs="*", default=list(DAYS))
    args = ap.parse_args()
    for sym in args.symbols:
        for side in ("buy", "sell"):
            r = run(sym, side, args.period_s, args.horizon, args.prior)
            print(json.dumps(r))


if __name__ == "__main__":
    main()
