"""Binance depth streams (pure): decode, and rebuild an L2 book from snapshot plus diffs.

The diff stream ``<symbol>@depth@100ms`` sends changes of price levels with update ids
``U`` (first) and ``u`` (last); USD-M futures add ``pu`` (the previous event's ``u``). Binance's
documented procedure, which ``BinanceBook`` follows:

1. buffer diffs, take a REST snapshot (``lastUpdateId``);
2. drop every diff older than the snapshot: spot ``u <= lastUpdateId``, futures
   ``u < lastUpdateId`` (a futures diff with ``u == lastUpdateId`` is the straddling one);
3. the first diff applied must straddle the snapshot: spot ``U <= lastUpdateId + 1 <= u``,
   futures ``U <= lastUpdateId <= u``, or ``pu == lastUpdateId`` (the diff right after a
   snapshot taken at an event boundary, as our replay server takes them);
4. then every diff must follow the previous one: spot ``U == prev_u + 1``, futures
   ``pu == prev_u``; otherwise the book is out of sync (``SequenceGap``): resync from a new
   snapshot. A diff already applied (``u <= prev_u``, a duplicate) is dropped, not a gap;
5. a quantity of 0 removes the level.

The trade stream ``<symbol>@trade`` (``e == "trade"``) is decoded into ``Trade``: the feed turns
each trade into a row carrying the book in force (action ``T``, the aggressor side from ``m``:
buyer is maker means a sell aggressor). Other streams (``bookTicker``, ``aggTrade``, ...) are
``other_stream``: not needed, ignored without a warning. Event times ``E``/``T`` beyond int64
nanoseconds are ``bad_schema``, never an exception.

The partial book stream ``<symbol>@depth10@100ms`` sends the top levels whole (``bids``,
``asks``, ``lastUpdateId``): each message is a snapshot. Decoding uses typed msgspec structs and
never raises: bad lines give a reason.
"""

from __future__ import annotations

import gzip
import heapq
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Final, Literal

import msgspec
import numpy as np

from feeds.errors import SequenceGap
from feeds.model import (
    EV_NONE,
    EV_TRADE,
    N_LEVELS,
    SIDE_ASK,
    SIDE_BID,
    SIDE_NONE,
    BookBatch,
    BookRow,
)

__all__ = [
    "IGNORED_REASONS",
    "BinanceBook",
    "DepthDiff",
    "DepthSnapshot",
    "Trade",
    "decode_message",
    "rebuild_recording",
]

# Event times are ms since the epoch; beyond this, E * 1e6 ns overflows int64.
_MAX_MS: Final = (2**63 - 1) // 1_000_000
_Ms = Annotated[int, msgspec.Meta(ge=0, le=_MAX_MS)]

# Outcomes that are part of the documented procedure or of streams we do not need, not faults:
# a feed counts them without a warning.
IGNORED_REASONS: Final = frozenset({"other_stream", "stale", "duplicate", "no_snapshot", "no_book"})


class DepthDiff(msgspec.Struct, frozen=True):
    """One diff-depth event."""

    U: int
    u: int
    b: list[tuple[str, str]]
    a: list[tuple[str, str]]
    E: _Ms = 0
    s: str = ""
    e: str = "depthUpdate"
    pu: int | None = None
    T: _Ms = 0


class DepthSnapshot(msgspec.Struct, frozen=True):
    """A REST depth snapshot, or one depth10 partial-book message."""

    lastUpdateId: int
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]
    E: _Ms = 0
    T: _Ms = 0


class Trade(msgspec.Struct, frozen=True):
    """One ``@trade`` event: price ``p`` and quantity ``q`` (decimal strings), ``m`` buyer is
    maker, event time ``E`` and trade time ``T`` in ms."""

    e: Literal["trade"]
    p: str
    q: str
    m: bool
    E: _Ms = 0
    T: _Ms = 0
    s: str = ""
    t: int = 0
    X: str = "MARKET"  # USD-M futures: MARKET, or INSURANCE_FUND / ADL / NA


class _Wrapped(msgspec.Struct, frozen=True):
    stream: str
    data: msgspec.Raw


_WRAPPED = msgspec.json.Decoder(_Wrapped)
_DIFF = msgspec.json.Decoder(DepthDiff)
_SNAP = msgspec.json.Decoder(DepthSnapshot)
_TRADE = msgspec.json.Decoder(Trade)


class _Kind(msgspec.Struct):
    e: str | None = None


_KIND = msgspec.json.Decoder(_Kind)


def decode_message(raw: bytes | str) -> tuple[DepthDiff | DepthSnapshot | Trade | None, str]:
    """Decode one websocket message (combined-stream wrapper or bare); never raises.

    Returns:
        ``(event, "")`` for a depth diff, a snapshot / depth10 message or a trade;
        ``(None, reason)`` otherwise: ``other_stream`` (bookTicker, aggTrade, ...),
        ``bad_json``, ``bad_schema``.
    """
    body: bytes | str = raw
    try:
        w = _WRAPPED.decode(raw)
        if "@depth" not in w.stream and not w.stream.endswith("@trade"):
            return None, "other_stream"
        body = bytes(w.data)
    except msgspec.DecodeError:
        pass  # not wrapped (or not JSON: the bare decoders below say which)
    try:
        kind = _KIND.decode(body).e
    except msgspec.ValidationError:
        return None, "bad_schema"
    except msgspec.DecodeError:
        return None, "bad_json"
    try:
        if kind == "trade":
            return _TRADE.decode(body), ""
        if kind == "depthUpdate":
            return _DIFF.decode(body), ""
        if kind is not None:
            return None, "other_stream"
        try:
            return _DIFF.decode(body), ""
        except msgspec.ValidationError:
            return _SNAP.decode(body), ""
    except msgspec.DecodeError:  # ValidationError is a DecodeError
        return None, "bad_schema"


def _levels(rows: list[tuple[str, str]]) -> list[tuple[float, float]] | None:
    try:
        out = [(float(p), float(q)) for p, q in rows]
    except ValueError:
        return None
    if any(not (math.isfinite(p) and math.isfinite(q)) or q < 0 for p, q in out):
        return None
    return out


class BinanceBook:
    """L2 book of one symbol rebuilt from a snapshot and diff events.

    Args:
        symbol: Symbol written in the batches.
        futures: USD-M futures sequencing (``pu``) instead of spot (``U``).
    """

    def __init__(self, symbol: str, *, futures: bool = False) -> None:
        self.symbol = symbol
        self.futures = futures
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.snapshot_id: int | None = None
        self.last_u: int | None = None
        self.applied = 0
        self.dropped = 0

    @property
    def synced(self) -> bool:
        """Return True once a diff has been applied on top of the snapshot."""
        return self.last_u is not None

    def apply_snapshot(self, snap: DepthSnapshot) -> bool:
        """Reset the book to a snapshot; False (book unchanged) if its levels are malformed."""
        bids, asks = _levels(snap.bids), _levels(snap.asks)
        if bids is None or asks is None:
            return False
        self.bids = {p: q for p, q in bids if q > 0}
        self.asks = {p: q for p, q in asks if q > 0}
        self.snapshot_id = snap.lastUpdateId
        self.last_u = None
        return True

    def apply_diff(self, ev: DepthDiff, *, check: bool = True) -> str:
        """Apply one diff.

        ``check=False`` applies it whatever its ids (a server carrying on past a gap in its own
        recording); the chain then continues from its ``u``.

        Returns:
            ``applied``, ``stale`` (dropped: older than the snapshot), ``duplicate`` (dropped:
            already applied), ``wrong_symbol``, ``no_snapshot`` or ``bad_levels`` (dropped).

        Raises:
            SequenceGap: The diff does not follow the book: resync from a new snapshot.
        """
        if ev.s and ev.s.upper() != self.symbol.upper():
            return "wrong_symbol"
        if self.snapshot_id is None:
            return "no_snapshot"
        if ev.u < self.snapshot_id or (ev.u == self.snapshot_id and not self.futures):
            self.dropped += 1
            return "stale"
        if self.last_u is not None and ev.u <= self.last_u:
            self.dropped += 1
            return "duplicate"
        sid = self.snapshot_id
        if not check:
            pass
        elif self.last_u is None:
            # Futures: a diff whose ``pu`` is the snapshot's id follows it exactly, even when
            # its ``U`` is above (futures ids are not contiguous), so it chains too.
            straddles = ev.U <= sid <= ev.u if self.futures else ev.U <= sid + 1 <= ev.u
            ok = straddles or (self.futures and ev.pu == sid)
            if not ok:
                raise SequenceGap(
                    f"{self.symbol}: first diff U={ev.U} u={ev.u} does not straddle "
                    f"lastUpdateId={sid}"
                )
        elif self.futures:
            if ev.pu != self.last_u:
                raise SequenceGap(f"{self.symbol}: pu={ev.pu} != previous u={self.last_u}")
        elif self.last_u + 1 != ev.U:
            raise SequenceGap(f"{self.symbol}: U={ev.U} != previous u + 1 = {self.last_u + 1}")
        bids, asks = _levels(ev.b), _levels(ev.a)
        if bids is None or asks is None:
            return "bad_levels"
        for side, rows in ((self.bids, bids), (self.asks, asks)):
            for p, q in rows:
                if q == 0:
                    side.pop(p, None)
                else:
                    side[p] = q
        self.last_u = ev.u
        self.applied += 1
        return "applied"

    def top(self, n: int = N_LEVELS) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(bid_px, bid_sz, ask_px, ask_sz)``, each shape (n,), NaN/0 padded."""
        bp = heapq.nlargest(n, self.bids)
        ap = heapq.nsmallest(n, self.asks)
        out = [np.full(n, np.nan), np.zeros(n), np.full(n, np.nan), np.zeros(n)]
        out[0][: len(bp)] = bp
        out[1][: len(bp)] = [self.bids[p] for p in bp]
        out[2][: len(ap)] = ap
        out[3][: len(ap)] = [self.asks[p] for p in ap]
        return out[0], out[1], out[2], out[3]

    def is_crossed(self) -> bool:
        """Return True when the best bid is at or above the best ask."""
        return bool(self.bids and self.asks and max(self.bids) >= min(self.asks))

    def batch(self, ts_event_ns: int, ts_recv_ns: int, trade: Trade | None = None) -> BookBatch:
        """Return the current top 10 as a one-row batch.

        With ``trade``, the row is that trade (action ``T``, the aggressor side, its price and
        quantity) on the book in force; a quantity that is not a finite number gives NaN size,
        which validation rejects as ``BAD_EVENT``.
        """
        return BookBatch.from_rows(self.symbol, [self.row(ts_event_ns, ts_recv_ns, trade)])

    def row(
        self, ts_event_ns: int, ts_recv_ns: int, trade: Trade | None = None, n: int = N_LEVELS
    ) -> BookRow:
        """Return the current top ``n`` as a ``BookRow`` of Python values (``batch`` without
        numpy: what a live reader buffers per message)."""
        bp = heapq.nlargest(n, self.bids)
        ap = heapq.nsmallest(n, self.asks)
        bs = [self.bids[p] for p in bp]
        az = [self.asks[p] for p in ap]
        if len(bp) < n:
            pad = n - len(bp)
            bp, bs = bp + [math.nan] * pad, bs + [0.0] * pad
        if len(ap) < n:
            pad = n - len(ap)
            ap, az = ap + [math.nan] * pad, az + [0.0] * pad
        if trade is None:
            ev = (EV_NONE, SIDE_NONE, math.nan, 0.0)
        else:
            ev = (EV_TRADE, SIDE_ASK if trade.m else SIDE_BID, _num(trade.p), _num(trade.q))
        return (ts_event_ns, ts_recv_ns, bp, bs, ap, az, ev)


def _num(text: str) -> float:
    """Parse a decimal string; NaN when it is not a finite number (rejected downstream)."""
    try:
        v = float(text)
    except ValueError:
        return math.nan
    return v if math.isfinite(v) else math.nan


def rebuild_recording(
    paths: list[Path], symbol: str = "BTCUSDT", *, futures: bool = False, trades: bool = False
) -> Iterator[tuple[str, BookBatch | None]]:
    """Replay recorded sessions (``<recv ns> <raw JSON>`` per line, gzip) through the builder.

    Diffs that arrive before the snapshot are buffered, as the procedure says. Yields
    ``("applied", batch)`` after each applied diff, ``("trade", batch)`` for each trade once the
    book is synced (with ``trades``; else ``("trade", None)``) and ``(reason, None)`` for every
    other line (``stale``, ``other_stream``, ``bad_json``, ...). Raises ``SequenceGap`` on a gap.
    """
    book = BinanceBook(symbol, futures=futures)
    pending: list[tuple[int, DepthDiff]] = []
    for path in paths:
        with gzip.open(path, "rb") as f:
            for line in f:
                head, _, raw = line.partition(b" ")
                try:
                    recv_ns = int(head)
                except ValueError:
                    yield "bad_line", None
                    continue
                msg, reason = decode_message(raw)
                if msg is None:
                    yield reason, None
                elif isinstance(msg, Trade):
                    ok = trades and book.synced
                    yield "trade", book.batch(msg.E * 1_000_000, recv_ns, msg) if ok else None
                elif isinstance(msg, DepthSnapshot):
                    if book.snapshot_id is None and book.apply_snapshot(msg):
                        for r_ns, ev in pending:
                            yield from _applied(book, ev, r_ns)
                        pending.clear()
                    else:
                        yield "extra_snapshot", None
                elif book.snapshot_id is None:
                    pending.append((recv_ns, msg))
                else:
                    yield from _applied(book, msg, recv_ns)


def _applied(
    book: BinanceBook, ev: DepthDiff, recv_ns: int
) -> Iterator[tuple[str, BookBatch | None]]:
    r = book.apply_diff(ev)
    yield (r, book.batch(ev.E * 1_000_000, recv_ns)) if r == "applied" else (r, None)
