#!/usr/bin/env python
"""Generate the shipped synthetic MBP-10 replay data (byte-for-byte reproducible).

Usage:
    python scripts/generate_replay_data.py                 # rewrite replay_data/ (the sample)
    python scripts/generate_replay_data.py --out /tmp/x    # same files elsewhere
    python scripts/generate_replay_data.py --rows 1000000 --out /tmp/bench
        # one big SYNA day (plain .csv) for read-speed benchmarks

The sample is two symbols of one day (2025-06-02): SYNA (~$50, liquid) and SYNB (~$12, thinner
book, wider spread), written as ``<SYMBOL>_<date>.mbp-10.csv.gz`` plus ``SHA256SUMS``, and an
earlier day of each (2025-05-30, fewer rows) under ``history/``: the daemon learns its intraday
liquidity profile from it, so the replay forecasts without looking ahead.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from feeds.synth import generate_day, write_mbp10_csv  # noqa: E402

DATE = "2025-06-02"
SEED = 20250602
SYMBOLS = ("SYNA", "SYNB")
HISTORY_DATE = "2025-05-30"
HISTORY_ROWS = 20_000


def sample_path(out: Path, symbol: str, date: str = DATE) -> Path:
    """Return the file name of one shipped sample file."""
    return out / f"{symbol}_{date}.mbp-10.csv.gz"


def symbol_seed(seed: int, symbol: str) -> int:
    """Derive a per-symbol seed (stable across runs and platforms, unlike ``hash``)."""
    return seed + int.from_bytes(hashlib.sha256(symbol.encode()).digest()[:4], "little")


def write_sample(out: Path, seed: int = SEED) -> list[Path]:
    """Write the two-symbol sample and its SHA256SUMS into ``out``; return the data files."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for sym in SYMBOLS:
        df = generate_day(sym, DATE, symbol_seed(seed, sym))
        paths.append(write_mbp10_csv(df, sample_path(out, sym)))
    (out / "history").mkdir(exist_ok=True)
    for sym in SYMBOLS:
        df = generate_day(sym, HISTORY_DATE, symbol_seed(seed + 1, sym), n_rows=HISTORY_ROWS)
        paths.append(write_mbp10_csv(df, sample_path(out / "history", sym, HISTORY_DATE)))
    sums = "".join(
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(out).as_posix()}\n"
        for p in paths
    )
    (out / "SHA256SUMS").write_text(sums, encoding="ascii")
    return paths


def write_bench(out: Path, rows: int, seed: int = SEED) -> Path:
    """Write one big uncompressed SYNA day of ``rows`` snapshots; return its path."""
    df = generate_day("SYNA", DATE, symbol_seed(seed, "SYNA"), n_rows=rows)
    return write_mbp10_csv(df, out / f"SYNA_{DATE}_{rows}rows.mbp-10.csv")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and write the files."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "replay_data", help="output directory")
    ap.add_argument("--seed", type=int, default=SEED, help=f"base seed (default {SEED})")
    ap.add_argument(
        "--rows", type=int, default=None, help="write one big benchmark file of N rows instead"
    )
    args = ap.parse_args(argv)
    if args.rows is not None:
        path = write_bench(args.out, args.rows, args.seed)
        print(path)
        return 0
    for p in write_sample(args.out, args.seed):
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
