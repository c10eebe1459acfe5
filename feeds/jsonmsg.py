"""Our JSON MBP-10 snapshot message (pure): typed decode with msgspec, and encode.

One message is one full 10-level book of one symbol::

    {"type": "mbp10", "symbol": "SYNA",
     "ts_event": 1748871000125395235,          # venue time, int ns since the epoch (UTC)
     "ts_recv": 1748871000125401000,           # optional: sender's receive time, int ns
     "bid_px": [49.99, 49.98, ...],            # up to 10, best first; null = empty level
     "bid_sz": [300, 500, ...],                # shares; 0 for an empty level
     "ask_px": [50.01, ...], "ask_sz": [200, ...]}

Decoding never raises: a malformed frame gives ``(None, reason)`` with ``reason`` one of
``bad_json``, ``bad_schema``, ``wrong_symbol``, ``too_many_levels``, ``level_mismatch``, or a
``feeds.validate.Reason`` name (``non_finite``, ``crossed``, ``time_backwards``, ...): the
book is checked by ``validate_row``, the one-book twin of ``validate_batch``.
"""

from __future__ import annotations

import math

import msgspec
import numpy as np

from feeds.model import N_LEVELS, BookBatch
from feeds.validate import Reason, validate_row

__all__ = ["Mbp10Message", "decode_mbp10", "encode_mbp10"]


class Mbp10Message(msgspec.Struct, frozen=True):
    """Schema of one snapshot message (see the module docstring)."""

    symbol: str
    ts_event: int
    bid_px: list[float | None]
    bid_sz: list[float]
    ask_px: list[float | None]
    ask_sz: list[float]
    type: str = "mbp10"
    ts_recv: int | None = None


_DECODER = msgspec.json.Decoder(Mbp10Message)
_ENCODER = msgspec.json.Encoder()


def _side(px: list[float | None], sz: list[float]) -> tuple[list[float], list[float]] | str:
    if len(px) > N_LEVELS or len(sz) > N_LEVELS:
        return "too_many_levels"
    if len(px) != len(sz):
        return "level_mismatch"
    pad = N_LEVELS - len(px)
    p = [math.nan if v is None else float(v) for v in px] + [math.nan] * pad
    return p, [float(v) for v in sz] + [0.0] * pad


def decode_mbp10(
    raw: bytes | str,
    recv_ns: int,
    symbol: str | None = None,
    prev_ts_ns: int | None = None,
    *,
    validate: bool = True,
) -> tuple[BookBatch | None, str]:
    """Decode (and by default validate) one frame into a one-row ``BookBatch``.

    Args:
        raw: The frame (JSON text or bytes).
        recv_ns: Our receive time, ns: the batch's ``ts_recv_ns`` (our clock; the sender's
            ``ts_recv`` is informative only).
        symbol: Expected symbol; another one is rejected.
        prev_ts_ns: Event time of the previous valid book (for ``time_backwards``).
        validate: Apply ``feeds.validate.validate_row`` (crossed, out of order, ...).

    Returns:
        ``(batch, "")`` or ``(None, reason)``; never raises.
    """
    try:
        m = _DECODER.decode(raw)
    except msgspec.ValidationError:
        return None, "bad_schema"
    except msgspec.DecodeError:
        return None, "bad_json"
    if m.type != "mbp10":
        return None, "bad_schema"
    if symbol is not None and m.symbol != symbol:
        return None, "wrong_symbol"
    bid = _side(m.bid_px, m.bid_sz)
    if isinstance(bid, str):
        return None, bid
    ask = _side(m.ask_px, m.ask_sz)
    if isinstance(ask, str):
        return None, ask
    if validate:
        r = validate_row(bid[0], bid[1], ask[0], ask[1], m.ts_event, prev_ts_ns)
        if r is not Reason.OK:
            return None, r.name.lower()
    return (
        BookBatch(
            m.symbol,
            np.array([m.ts_event], dtype=np.int64),
            np.array([recv_ns], dtype=np.int64),
            np.array([bid[0]]),
            np.array([bid[1]]),
            np.array([ask[0]]),
            np.array([ask[1]]),
        ),
        "",
    )


def _px_list(row: np.ndarray) -> list[float | None]:
    return [None if not math.isfinite(v) else float(v) for v in row.tolist()]


def encode_mbp10(batch: BookBatch, i: int) -> bytes:
    """Encode row ``i`` of ``batch`` as one JSON message."""
    return _ENCODER.encode(
        Mbp10Message(
            symbol=batch.symbol,
            ts_event=int(batch.ts_event_ns[i]),
            ts_recv=int(batch.ts_recv_ns[i]),
            bid_px=_px_list(batch.bid_px[i]),
            bid_sz=batch.bid_sz[i].tolist(),
            ask_px=_px_list(batch.ask_px[i]),
            ask_sz=batch.ask_sz[i].tolist(),
        )
    )
