"""Seeded synthetic MBP-10 trading days in the exact Databento CSV layout.

The project ships only data it generates itself (``replay_data/``); this module makes it. A day
covers the regular session 13:30:00-20:00:00 UTC with the intraday pattern execution cares
about, so that an impact-aware schedule differs from TWAP:

- activity is U-shaped: snapshot intensity ``lam(u) = 1 + a_open*exp(-u/tau_open) +
  a_close*exp(-(1-u)/tau_close)`` over session fraction ``u`` in [0, 1];
- the spread is wide at the open and narrows: ``s(u) = s_base * (1 + k_open*exp(-u/tau_s))``
  ticks, with lognormal noise, changed at a random subset of rows and held in between;
- depth is thin at the open and thickens: lots per level ``~ depth_lots * (1 - thin_open *
  exp(-u/tau_d)) * (1 + 0.15*level) * LogNormal(0, 0.5)``, in round lots of 100 shares;
- the best bid follows a random walk on the tick grid (0.01), more active at the open;
- every book is valid: 10 non-empty levels a side, strictly ordered, spread >= 1 tick,
  strictly increasing ``ts_event`` (so ``validate_batch`` accepts every row).

Everything is a function of ``(symbol, date, seed, params)`` through one ``numpy`` Generator;
``write_mbp10_csv`` writes a byte-for-byte reproducible file (fixed float repr, gzip mtime 0).
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd
import zstandard
from numpy.typing import NDArray

from feeds.model import N_LEVELS

__all__ = ["MBP10_COLUMNS", "PRESETS", "SynthParams", "generate_day", "write_mbp10_csv"]

_TICK: Final = 0.01
_LOT: Final = 100
_SESSION_OPEN_S: Final = 13 * 3600 + 30 * 60  # 13:30:00 UTC
_SESSION_S: Final = 6 * 3600 + 30 * 60  # 6.5 hours
_GZIP_LEVEL: Final = 6
_ZSTD_LEVEL: Final = 10

MBP10_COLUMNS: Final[tuple[str, ...]] = (
    "ts_recv", "ts_event", "rtype", "publisher_id", "instrument_id", "action", "side", "depth",
    "price", "size", "flags", "ts_in_delta", "sequence",
    *(
        f"{name}_{i:02d}"
        for i in range(N_LEVELS)
        for name in ("bid_px", "ask_px", "bid_sz", "ask_sz", "bid_ct", "ask_ct")
    ),
    "symbol",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SynthParams:
    """Shape of a synthetic day (see the module docstring for the formulas).

    Attributes:
        n_rows: Snapshots in the session.
        px0: Opening best bid, dollars (rounded to the tick).
        instrument_id: Venue instrument id written to the file.
        a_open: Extra intensity at the open (multiple of the midday rate).
        a_close: Extra intensity at the close.
        tau_open: Decay of the open burst, session fraction.
        tau_close: Rise of the close burst, session fraction.
        spread_ticks: Midday mean spread, ticks.
        spread_open_mult: ``k_open``: the open spread is ``1 + k_open`` times wider.
        tau_spread: Decay of the wide open spread, session fraction.
        depth_lots: Midday mean lots (100 shares) at level 0.
        thin_open: Fraction of depth missing at the open, in [0, 1).
        tau_depth: Decay of the thin open depth, session fraction.
        p_move: Probability the best bid moves at a midday snapshot.
        move_open_mult: Extra move probability at the open (multiple).
        p_level_gap: Probability that the next level is 2+ ticks away instead of 1.
        p_spread_change: Probability that the spread is redrawn at a snapshot.
    """

    n_rows: int = 50_000
    px0: float = 50.00
    instrument_id: int = 90_001
    a_open: float = 4.0
    a_close: float = 3.0
    tau_open: float = 0.05
    tau_close: float = 0.04
    spread_ticks: float = 1.6
    spread_open_mult: float = 2.5
    tau_spread: float = 0.08
    depth_lots: float = 12.0
    thin_open: float = 0.7
    tau_depth: float = 0.10
    p_move: float = 0.10
    move_open_mult: float = 1.5
    p_level_gap: float = 0.15
    p_spread_change: float = 0.25


PRESETS: Final[dict[str, SynthParams]] = {
    # Liquid ~$50 name: tight spread, deep book, many snapshots.
    "SYNA": SynthParams(),
    # Thinner ~$12 name: wider spread, shallower and gappier book, fewer snapshots.
    "SYNB": SynthParams(
        n_rows=32_000,
        px0=12.00,
        instrument_id=90_002,
        spread_ticks=2.5,
        spread_open_mult=3.0,
        depth_lots=4.0,
        thin_open=0.75,
        p_move=0.05,
        p_level_gap=0.45,
    ),
}


def generate_day(
    symbol: str,
    date: str,
    seed: int,
    *,
    n_rows: int | None = None,
    params: SynthParams | None = None,
) -> pd.DataFrame:
    """Generate one regular session of MBP-10 snapshots.

    Args:
        symbol: Symbol written in the ``symbol`` column; selects a preset from ``PRESETS``
            when ``params`` is ``None`` (unknown symbols use the ``SYNA`` shape).
        date: Trading day, ``YYYY-MM-DD``; the session is 13:30-20:00 UTC of that day.
        seed: Seed of the numpy Generator; same inputs give the same frame.
        n_rows: Number of snapshots; overrides ``params.n_rows``.
        params: Day shape; defaults to the preset of ``symbol``.

    Returns:
        DataFrame of ``n_rows`` rows and the 74 ``MBP10_COLUMNS`` in Databento order:
        timestamps as ISO strings with nanoseconds and ``+00:00``, prices float dollars on the
        0.01 grid, sizes and counts int64.
    """
    p = params if params is not None else PRESETS.get(symbol, PRESETS["SYNA"])
    if n_rows is not None:
        p = replace(p, n_rows=n_rows)
    n = p.n_rows
    if n < 1:
        raise ValueError(f"n_rows must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    midnight_ns = int(np.datetime64(date, "ns").astype(np.int64))
    open_ns = midnight_ns + _SESSION_OPEN_S * 1_000_000_000

    u = _event_fractions(rng, n, p)  # session fraction per row, shape (n,)
    # Event times on a 1 ms grid, plus integer ns jitter from a stream of its own: the float
    # maths behind ``u`` (np.exp, np.interp) may differ in the last ulp between numpy builds,
    # and only a coarse grid keeps the written file byte-for-byte the same across them.
    ms = np.floor(u * _SESSION_S * 1e3).astype(np.int64)
    jitter = np.random.default_rng([seed, 1]).integers(0, 1_000_000, n)
    ts_event = _strictly_increasing(open_ns + ms * 1_000_000 + jitter)
    latency = rng.integers(8_000, 250_000, n)  # receive latency, ns
    ts_recv = _strictly_increasing(ts_event + latency)

    # Best bid: random walk on the tick grid, livelier at the open.
    p_move = np.minimum(p.p_move * (1 + p.move_open_mult * np.exp(-u / p.tau_open)), 0.9)
    moves = (rng.random(n) < p_move) * rng.choice(np.array([-1, 1]), n)
    moves = moves * (1 + (rng.random(n) < 0.1))  # occasional 2-tick jumps
    moves[0] = 0
    px0_ticks = round(p.px0 / _TICK)
    bid0 = px0_ticks + np.cumsum(moves)
    # Keep 10 levels above zero even on an unlucky path (reflect at a floor).
    floor = 40
    bid0 = np.where(bid0 < floor, 2 * floor - bid0, bid0)

    # Spread: redrawn at some rows, held (forward-filled) in between.
    s_mean = p.spread_ticks * (1 + p.spread_open_mult * np.exp(-u / p.tau_spread))
    s_draw = np.maximum(1, np.rint(s_mean * rng.lognormal(0.0, 0.35, n))).astype(np.int64)
    change = rng.random(n) < p.p_spread_change
    change[0] = True
    held = np.maximum.accumulate(np.where(change, np.arange(n), 0))
    spread = s_draw[held]
    ask0 = bid0 + spread

    # Level offsets from the best price: 1 tick, or more with probability p_level_gap.
    def side_ticks(best: NDArray[np.int64], sign: int) -> NDArray[np.int64]:
        gaps = 1 + (rng.random((n, N_LEVELS - 1)) < p.p_level_gap) * rng.integers(
            1, 4, (n, N_LEVELS - 1)
        )
        off = np.concatenate([np.zeros((n, 1), np.int64), np.cumsum(gaps, axis=1)], axis=1)
        return np.asarray(best[:, None] + sign * off, dtype=np.int64)

    bid_t, ask_t = side_ticks(bid0, -1), side_ticks(ask0, +1)

    depth_mean = p.depth_lots * (1 - p.thin_open * np.exp(-u / p.tau_depth))
    shape = 1 + 0.15 * np.arange(N_LEVELS)

    def side_sizes() -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        lots = depth_mean[:, None] * shape[None, :] * rng.lognormal(0.0, 0.5, (n, N_LEVELS))
        lots = np.maximum(1, np.rint(lots)).astype(np.int64)
        odd = (rng.random((n, N_LEVELS)) < 0.08) * rng.integers(1, _LOT, (n, N_LEVELS))
        size = np.asarray(lots * _LOT + odd, dtype=np.int64)
        ct = np.maximum(1, np.rint(size / rng.uniform(150, 400, (n, N_LEVELS)))).astype(np.int64)
        return size, ct

    bid_sz, bid_ct = side_sizes()
    ask_sz, ask_ct = side_sizes()

    # The event each snapshot follows (informational columns).
    action = rng.choice(np.array(["A", "C", "T"]), n, p=[0.49, 0.46, 0.05])
    side_is_bid = rng.random(n) < 0.5
    depth = np.where(action == "T", 0, rng.integers(0, N_LEVELS, n))
    rows = np.arange(n)
    ev_ticks = np.where(side_is_bid, bid_t[rows, depth], ask_t[rows, depth])
    ev_size = rng.integers(1, 6, n) * _LOT

    cols: dict[str, object] = {
        "ts_recv": _iso(ts_recv, midnight_ns, date),
        "ts_event": _iso(ts_event, midnight_ns, date),
        "rtype": np.full(n, 10, np.int64),
        "publisher_id": np.full(n, 2, np.int64),
        "instrument_id": np.full(n, p.instrument_id, np.int64),
        "action": action,
        "side": np.where(side_is_bid, "B", "A"),
        "depth": depth.astype(np.int64),
        "price": _px(ev_ticks),
        "size": ev_size.astype(np.int64),
        "flags": np.full(n, 128, np.int64),
        "ts_in_delta": rng.integers(150_000, 185_000, n).astype(np.int64),
        "sequence": (10_000_000 + np.cumsum(rng.integers(1, 400, n))).astype(np.int64),
    }
    for i in range(N_LEVELS):
        cols[f"bid_px_{i:02d}"] = _px(bid_t[:, i])
        cols[f"ask_px_{i:02d}"] = _px(ask_t[:, i])
        cols[f"bid_sz_{i:02d}"] = bid_sz[:, i]
        cols[f"ask_sz_{i:02d}"] = ask_sz[:, i]
        cols[f"bid_ct_{i:02d}"] = bid_ct[:, i]
        cols[f"ask_ct_{i:02d}"] = ask_ct[:, i]
    cols["symbol"] = np.full(n, symbol, dtype=object)
    return pd.DataFrame(cols, columns=list(MBP10_COLUMNS))


def write_mbp10_csv(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a frame from ``generate_day`` as a reproducible MBP-10 CSV.

    The bytes depend only on the frame: floats use numpy's shortest round-trip repr, lines end
    in ``\\n``, gzip members have mtime 0, no file name and level 6, zstd frames level 10.
    (Compressed bytes also depend on the zlib/zstd library version; the CSV text does not.)

    Args:
        df: Frame with the 74 ``MBP10_COLUMNS``.
        path: Output ending in ``.csv``, ``.csv.gz`` or ``.csv.zst``.

    Returns:
        The written path.
    """
    out = Path(path)
    name = out.name.lower()
    if not name.endswith((".csv", ".csv.gz", ".csv.zst")):
        raise ValueError(f"{out}: expected a .csv, .csv.gz or .csv.zst file name")
    buf = io.StringIO()
    df.to_csv(buf, index=False, lineterminator="\n")
    data = buf.getvalue().encode("ascii")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        if name.endswith(".gz"):
            with gzip.GzipFile(
                filename="", mode="wb", fileobj=f, compresslevel=_GZIP_LEVEL, mtime=0
            ) as gz:
                gz.write(data)
        elif name.endswith(".zst"):
            f.write(zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress(data))
        else:
            f.write(data)
    return out


def _event_fractions(rng: np.random.Generator, n: int, p: SynthParams) -> NDArray[np.float64]:
    """Sorted session fractions of ``n`` events under the U-shaped intensity, shape (n,)."""
    grid = np.linspace(0.0, 1.0, 20_001)
    lam = 1 + p.a_open * np.exp(-grid / p.tau_open) + p.a_close * np.exp(-(1 - grid) / p.tau_close)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (lam[1:] + lam[:-1]) * np.diff(grid))])
    cdf /= cdf[-1]
    q = np.sort(rng.random(n))
    return np.interp(q, cdf, grid) * (1 - 1e-9)  # stay strictly before 20:00:00


def _strictly_increasing(ts: NDArray[np.int64]) -> NDArray[np.int64]:
    """Nudge ties up by whole ns so that ``ts`` is strictly increasing."""
    i = np.arange(ts.shape[0], dtype=np.int64)
    return np.maximum.accumulate(ts - i) + i


def _px(ticks: NDArray[np.int64]) -> NDArray[np.float64]:
    # Round so that the shortest repr is the 2-decimal price ("50.12", not "50.120000000000005").
    return np.round(ticks * _TICK, 2)


def _iso(ts_ns: NDArray[np.int64], midnight_ns: int, date: str) -> NDArray[np.str_]:
    """Format ns timestamps of one UTC day as ``YYYY-MM-DD HH:MM:SS.nnnnnnnnn+00:00``.

    Vectorised: digits are written into a (n, 35) byte matrix, viewed as fixed-width strings.
    """
    n = ts_ns.shape[0]
    tod = ts_ns - midnight_ns
    if n and (tod.min() < 0 or tod.max() >= 86_400 * 1_000_000_000):
        raise ValueError("timestamps must fall on the given date")
    sec, frac = np.divmod(tod, 1_000_000_000)
    hh, rem = np.divmod(sec, 3600)
    mm, ss = np.divmod(rem, 60)
    template = np.frombuffer(f"{date} 00:00:00.000000000+00:00".encode("ascii"), np.uint8)
    out = np.tile(template, (n, 1))
    zero = ord("0")
    for col, val in ((11, hh), (14, mm), (17, ss)):
        out[:, col] = zero + val // 10
        out[:, col + 1] = zero + val % 10
    div = 10 ** np.arange(8, -1, -1, dtype=np.int64)
    out[:, 20:29] = zero + (frac[:, None] // div) % 10
    return out.view("S35").ravel().astype(str)
