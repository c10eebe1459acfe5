"""Binance depth streams (pure): decode, and rebuild an L2 book from snapshot plus diffs.

The diff stream ``<symbol>@depth@100ms`` sends changes of price levels with update ids
``U`` (first) and ``u`` (last); USD-M futures add ``pu`` (the previous event's ``u``). Binance's
documented procedure, which ``BinanceBook`` follows:

1. buffer diffs, take a REST snapshot (``lastUpdateId``);
2. drop every diff with ``u <= lastUpdateId``;
3. the first diff applied must straddle the snapshot: spot ``U <= lastUpdateId + 1 <= u``,
   futures ``U <= lastUpdateId <= u``;
4. then every diff must follow the previous one: spot ``U == prev_u + 1``, futures
   ``pu == prev_u``; otherwise the book is out of sync (``SequenceGap``): resync from a new
   snapshot;
5. a quantity of 0 removes the level.

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

import msgspec
import numpy as np

from feeds.errors import SequenceGap
from feeds.model import N_LEVELS, BookBatch

__all__ = ["BinanceBook", "DepthDiff", "DepthSnapshot", "decode_message", "rebuild_recording"]


class DepthDiff(msgspec.Struct, frozen=True):
    """One diff-depth event."""

    U: int
    u: int
    b: list[tuple[str, str]]
    a: list[tuple[str, str]]
    E: int = 0
    s: str = ""
    e: str = "depthUpdate"
    pu: int | None = None


class DepthSnapshot(msgspec.Struct, frozen=True):
    """A REST depth snapshot, or one depth10 partial-book message."""

    lastUpdateId: int
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]
    E: int = 0


class _Wrapped(msgspec.Struct, frozen=True):
    stream: str
    data: msgspec.Raw


_WRAPPED = msgspec.json.Decoder(_Wrapped)
_DIFF = msgspec.json.Decoder(DepthDiff)
_SNAP = msgspec.json.Decoder(DepthSnapshot)


def decode_message(raw: bytes | str) -> tuple[DepthDiff | DepthSnapshot | None, str]:
    """Decode one websocket message (combined-stream wrapper or bare).

    Returns:
        ``(event, "")`` for a depth diff or a snapshot / depth10 message; ``(None, reason)``
        otherwise: ``other_stream`` (trades, bookTicker), ``bad_json``, ``bad_schema``.
    """
    body: bytes | str = raw
    try:
        w = _WRAPPED.decode(raw)
        if "@depth" not in w.stream:
            return None, "other_stream"
        body = bytes(w.data)
    except msgspec.DecodeError:
        pass  # not wrapped (or not JSON: the bare decoders below say which)
    try:
        return _DIFF.decode(body), ""
    except msgspec.DecodeError:
        pass
    try:
        return _SNAP.decode(body), ""
    except msgspec.ValidationError:
        return None, "bad_schema"
    except msgspec.DecodeError:
        return None, "bad_json"


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

    def apply_diff(self, ev: DepthDiff) -> str:
        """Apply one diff.

        Returns:
            ``applied``, ``stale`` (dropped: ``u <= lastUpdateId``), ``no_snapshot`` or
            ``bad_levels`` (dropped).

        Raises:
            SequenceGap: The diff does not follow the book: resync from a new snapshot.
        """
        if self.snapshot_id is None:
            return "no_snapshot"
        if ev.u <= self.snapshot_id:
            self.dropped += 1
            return "stale"
        sid = self.snapshot_id
        if self.last_u is None:
            ok = ev.U <= sid <= ev.u if self.futures else ev.U <= sid + 1 <= ev.u
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

    def batch(self, ts_event_ns: int, ts_recv_ns: int) -> BookBatch:
        """Return the current top 10 as a one-row batch."""
        bp, bs, ap, az = self.top()
        return BookBatch(
            self.symbol,
            np.array([ts_event_ns], dtype=np.int64),
            np.array([ts_recv_ns], dtype=np.int64),
            bp[None, :],
            bs[None, :],
            ap[None, :],
            az[None, :],
        )


def rebuild_recording(
    paths: list[Path], symbol: str = "BTCUSDT", *, futures: bool = False
) -> Iterator[tuple[str, BookBatch | None]]:
    """Replay recorded sessions (``<recv ns> <raw JSON>`` per line, gzip) through the builder.

    Diffs that arrive before the snapshot are buffered, as the procedure says. Yields
    ``("applied", batch)`` after each applied diff and ``(reason, None)`` for every other line
    (``stale``, ``other_stream``, ``bad_json``, ...). Raises ``SequenceGap`` on a gap.
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
