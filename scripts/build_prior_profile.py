"""Rebuild ``agent/data/prior_profile.json``: per symbol-day parameters of the prior profile.

Reads the real days in ``../shared/data`` (never copied into the project: only the parameters
below are written), one entry per symbol:

- ``buy`` / ``sell``: ``agent.impact.profile.learn_profile`` multipliers by 30-minute UTC bucket
  (sizes 0.5, 1, 2, 4, 8 times the day's median best-level size, so they are dimensionless);
- ``volume_share``: share of the day's traded volume per bucket (``agent.backtest.data`` trades);
- ``ar``: the AR(1) dynamics of the deseasonalised log half-spread and log depth slope at the
  5-minute scale (``agent.core.bookstats``), as a mean-reversion rate and a stationary variance.

Usage::

    PYTHONPATH=$PWD python scripts/build_prior_profile.py [--out agent/data/prior_profile.json]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from agent.backtest.data import load_day
from agent.core.bookstats import PeriodMeans, book_features
from agent.impact.profile import DAY_NS, learn_profile

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
    "FROG": (
        DATA / "databento-mbp10" / "FROG" / "FROG_2025-04-03 00_00_00+00_00.csv",
        "2025-04-03",
        "Databento MBP-10, XNAS, full regular session",
    ),
    "AMZN": (
        DATA / "lobster" / "LOBSTER_SampleFile_AMZN_2012-06-21_5.zip",
        "2012-06-21",
        "LOBSTER NASDAQ sample, 5 levels, full regular session",
    ),
}
BUCKET_S = 1800.0
AR_PERIOD_S = 300.0
SESSION_OPEN_UTC_S = 13.5 * 3600  # 09:30 New York in daylight saving time (both days)


def _ar(books, side: str, profile_b, profile_g) -> dict:
    P = round(AR_PERIOD_S * 1e9)
    ts = books.ts_event_ns
    pm = PeriodMeans(P, int(ts[0]) // P * P)
    done = pm.add(ts, book_features(books, side="both"))
    mids = np.array([pm.origin_ns + p.period * P + P // 2 for p in done], dtype=np.int64)
    b = (mids % DAY_NS) // round(BUCKET_S * 1e9)
    y = np.array([p.mean for p in done]) - np.log(np.column_stack([profile_b[b], profile_g[b]]))
    per = np.array([p.period for p in done])
    theta, var = [], []
    for i in range(2):
        ok = np.isfinite(y[:, i])
        yi = y[ok, i]
        pi = per[ok]
        pair = np.diff(pi) == 1
        x0, x1 = yi[:-1][pair], yi[1:][pair]
        phi = float(np.clip(np.corrcoef(x0, x1)[0, 1], 0.01, 0.99))
        theta.append(-math.log(phi) / AR_PERIOD_S)
        var.append(float(np.var(yi)))
    return {"period_s": AR_PERIOD_S, "theta_per_s": theta, "stat_var": var}


def build() -> dict:
    out = {
        "description": (
            "Prior intraday profile parameters (no market data): per symbol-day multipliers "
            "by UTC bucket, volume shares and AR(1) dynamics. The prior of a symbol combines "
            "the OTHER symbols only (agent.core.prior.prior_from_dict)."
        ),
        "generated_by": "scripts/build_prior_profile.py",
        "bucket_s": BUCKET_S,
        "session_open_utc_s": SESSION_OPEN_UTC_S,
        "days": [],
        "symbols": {},
    }
    for sym, (path, date, what) in DAYS.items():
        day = load_day(str(path))
        books = day.books
        entry: dict = {}
        profs = {}
        for side in ("buy", "sell"):
            sz0 = books.ask_sz[:, 0] if side == "buy" else books.bid_sz[:, 0]
            sizes = float(np.median(sz0)) * np.array([0.5, 1.0, 2.0, 4.0, 8.0])
            prof = learn_profile([books], side, sizes, bucket_s=BUCKET_S)
            profs[side] = prof
            d = prof.to_dict()
            d.pop("ref_size")  # a size in shares of this symbol: meaningless for another
            entry[side] = d
        n_b = round(86400 / BUCKET_S)
        vol = np.zeros(n_b)
        b = (day.trades.ts_ns % DAY_NS) // round(BUCKET_S * 1e9)
        np.add.at(vol, b, day.trades.qty)
        entry["volume_share"] = (vol / vol.sum()).tolist() if vol.sum() > 0 else [1.0 / n_b] * n_b
        gb = np.sqrt(profs["buy"].beta_mult * profs["sell"].beta_mult)
        gg = np.sqrt(profs["buy"].gamma_mult * profs["sell"].gamma_mult)
        entry["ar"] = _ar(books, "both", gb, gg)
        out["symbols"][sym] = entry
        out["days"].append(
            {
                "symbol": sym,
                "date": date,
                "source": what,
                "file": str(path.relative_to(DATA)),
                "books": len(books),
                "trades": int(day.trades.ts_ns.size),
                "trade_source": day.trades.source,
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "agent" / "data" / "prior_profile.json"))
    args = ap.parse_args()
    d = build()
    Path(args.out).write_text(json.dumps(d, indent=1) + "\n")
    print(f"wrote {args.out}: {[x['symbol'] + ' ' + x['date'] for x in d['days']]}")


if __name__ == "__main__":
    main()
