"""Load one trading day for the backtest: validated books plus the day's trades (pure I/O).

Books come from the existing readers (``feeds.readers.read_mbp10``, ``read_lobster``) and are
cleaned by ``feeds.validate.validate_batch`` (bad snapshots dropped and counted). The readers
do not expose trades, so they are read here from the same files:

- Databento MBP-10 CSV: rows with ``action == 'T'``; their ``size`` is the traded quantity
  (``mbp10_trades``). DBN files: trades are not read (``none``).
- LOBSTER: message events of type 4 (execution of a visible limit order) and 5 (execution of a
  hidden limit order), column ``size`` (``lobster_executions``).

A day without trade information has empty trade arrays and ``trade_source == "none"``: the
volume-based pieces (parent sizes in % of volume, VWAP, POV) then fall back and say so.

Loaded days are cached per process (``load_day``), so a worker that runs many strategies on the
same day reads it once.
"""

from __future__ import annotations

import functools
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from feeds.errors import FeedDataError
from feeds.model import BookBatch
from feeds.readers import read_lobster, read_mbp10
from feeds.validate import validate_batch

__all__ = ["DayData", "Trades", "detect_format", "load_day", "load_trades", "load_valid_books"]


@dataclass(frozen=True, slots=True)
class Trades:
    """Trades of one day.

    Attributes:
        ts_ns: Event times, int64 ns UTC, shape (m,), non-decreasing.
        qty: Traded shares, shape (m,).
        source: ``mbp10_trades``, ``lobster_executions`` or ``none``.
    """

    ts_ns: NDArray[np.int64]
    qty: NDArray[np.float64]
    source: str

    @staticmethod
    def none() -> Trades:
        """Return the empty record of a file without trade information."""
        return Trades(np.empty(0, dtype=np.int64), np.empty(0), "none")

    def volume_between(
        self, t0_ns: NDArray[np.int64], t1_ns: NDArray[np.int64]
    ) -> NDArray[np.float64]:
        """Return the shares traded in ``[t0, t1)`` for each pair, shape like ``t0_ns``."""
        c = np.concatenate([[0.0], np.cumsum(self.qty)])
        i0 = np.searchsorted(self.ts_ns, t0_ns, side="left")
        i1 = np.searchsorted(self.ts_ns, t1_ns, side="left")
        return np.asarray(c[i1] - c[i0], dtype=np.float64)


@dataclass(frozen=True, slots=True)
class DayData:
    """One symbol's day.

    Attributes:
        symbol: Instrument.
        books: Valid snapshots in time order (``validate_batch``).
        trades: The day's trades.
        n_invalid: Snapshots dropped by validation.
        path: Source file.
    """

    symbol: str
    books: BookBatch
    trades: Trades
    n_invalid: int
    path: str

    @property
    def day_start_ns(self) -> int:
        """Return midnight UTC of the day of the first snapshot, ns."""
        day = 86_400 * 1_000_000_000
        return int(self.books.ts_event_ns[0]) // day * day


def detect_format(path: Path, fmt: str = "auto") -> str:
    """Return ``mbp10`` or ``lobster`` for a data path."""
    if fmt != "auto":
        return fmt
    name = path.name.lower()
    if name.endswith(".zip") or "_orderbook_" in name or path.parent.suffix.lower() == ".zip":
        return "lobster"
    return "mbp10"


def load_valid_books(path: Path, fmt: str, symbol: str | None) -> tuple[BookBatch, int, str]:
    """Read and validate every snapshot of a file.

    Returns:
        ``(books, n_invalid, symbol)``.

    Raises:
        FeedDataError: unreadable file, or no valid snapshot of ``symbol``.
    """
    it = read_lobster(path, symbol=symbol) if fmt == "lobster" else read_mbp10(path, symbol)
    parts: list[BookBatch] = []
    prev: int | None = None
    n_bad = 0
    sym = symbol
    for batch in it:
        if sym is None:
            sym = batch.symbol
        if batch.symbol != sym:
            continue  # several symbols in one file and none asked for: keep the first
        res = validate_batch(batch, prev)
        prev = res.last_ts_ns
        n_bad += res.n_invalid
        if len(res.valid):
            parts.append(res.valid)
    if not parts or sym is None:
        raise FeedDataError(f"{path}: no valid snapshot" + (f" of {symbol}" if symbol else ""))
    return BookBatch.concat(parts), n_bad, sym


def load_trades(path: Path, fmt: str, symbol: str | None) -> Trades:
    """Read the day's trades (see the module docstring for where they come from)."""
    if fmt == "lobster":
        return _lobster_trades(path)
    name = path.name.lower()
    if ".csv" not in name:
        return Trades.none()
    return _mbp10_trades(path, symbol)


def _mbp10_trades(path: Path, symbol: str | None) -> Trades:
    try:
        header = pd.read_csv(path, nrows=0).columns.tolist()
    except (OSError, ValueError) as e:
        raise FeedDataError(f"{path}: cannot read: {e}") from e
    names = [h.split(".")[0] for h in header]  # pandas renames a duplicated ts_event
    if "action" not in names or "size" not in names or "ts_event" not in names:
        return Trades.none()
    cols = {"ts_event": names.index("ts_event"), "action": names.index("action")}
    cols["size"] = names.index("size")
    if "symbol" in names:
        cols["symbol"] = names.index("symbol")
    order = sorted(cols, key=cols.__getitem__)
    df = pd.read_csv(
        path,
        usecols=[cols[c] for c in order],
        header=0,
        names=None,
        dtype={header[cols["action"]]: "category"},
    )
    df.columns = order
    mask = (df["action"] == "T").to_numpy().copy()
    if symbol is not None and "symbol" in df:
        mask &= (df["symbol"] == symbol).to_numpy()
    if not mask.any():
        return Trades.none()
    ts = pd.to_datetime(df["ts_event"][mask], format="ISO8601", utc=True)
    qty = pd.to_numeric(df["size"][mask], errors="coerce").to_numpy(np.float64)
    t = np.asarray(ts.dt.as_unit("ns").astype("int64"), dtype=np.int64)
    ok = np.isfinite(qty) & (qty > 0)
    order_t = np.argsort(t[ok], kind="stable")
    return Trades(t[ok][order_t], qty[ok][order_t], "mbp10_trades")


def _lobster_trades(path: Path) -> Trades:
    # Times come from the book reader's conversion (same rows, same count): read the message
    # file's type and size columns and take the book timestamps of those rows.
    books = list(read_lobster(path))
    ts = np.concatenate([b.ts_event_ns for b in books])
    if path.suffix.lower() == ".zip":
        with zipfile.ZipFile(path) as z:
            member = next(m for m in z.namelist() if "_message_" in m and m.endswith(".csv"))
            raw = z.read(member)
    else:
        raw = Path(str(path).replace("_orderbook_", "_message_")).read_bytes()
    msg = pd.read_csv(io.BytesIO(raw), header=None, usecols=[1, 3], dtype=np.float64).to_numpy()
    if msg.shape[0] != ts.shape[0]:
        raise FeedDataError(f"{path}: message and order-book row counts differ")
    ex = np.isin(msg[:, 0], (4.0, 5.0)) & (msg[:, 1] > 0)
    return Trades(ts[ex], msg[ex, 1].astype(np.float64), "lobster_executions")


@functools.lru_cache(maxsize=4)
def load_day(path: str, fmt: str = "auto", symbol: str | None = None) -> DayData:
    """Load (once per process) the validated books and trades of a day file."""
    p = Path(path)
    kind = detect_format(p, fmt)
    books, n_bad, sym = load_valid_books(p, kind, symbol)
    return DayData(sym, books, load_trades(p, kind, sym), n_bad, str(p))


@functools.lru_cache(maxsize=8)
def load_history(paths: tuple[str, ...], symbol: str) -> tuple[tuple[BookBatch, ...], Trades]:
    """Load (once per process) history days of an MBP-10 symbol: books and pooled trades."""
    books: list[BookBatch] = []
    ts: list[NDArray[np.int64]] = []
    qty: list[NDArray[np.float64]] = []
    sources = set()
    for hp in paths:
        p = Path(hp)
        kind = detect_format(p)
        b, _, _ = load_valid_books(p, kind, symbol)
        books.append(b)
        tr = load_trades(p, kind, symbol)
        sources.add(tr.source)
        ts.append(tr.ts_ns)
        qty.append(tr.qty)
    if not ts or sources == {"none"}:
        return tuple(books), Trades.none()
    return tuple(books), Trades(np.concatenate(ts), np.concatenate(qty), "history")
