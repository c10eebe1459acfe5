"""Our JSON MBP-10 snapshot message (pure): typed decode with msgspec, and encode.

One message is one full 10-level book of one symbol::

    {"type": "mbp10", "symbol": "SYNA",
     "ts_event": 1748871000125395235,          # venue time, int ns since the epoch (UTC)
     "ts_recv": 1748871000125401000,           # optional: sender's receive time, int ns
     "bid_px": [49.99, 49.98, ...],            # up to 10, best first; null = empty level
     "bid_sz": [300, 500, ...],                # shares; 0 for an empty level
     "ask_px": [50.01, ...], "ask_sz": [200, ...]}

Decoding never raises: a malformed frame gives ``(None, reason)`` with ``reason`` one of
``bad_json``, ``bad_schema``, ``wrong_symbol``, ``too_many_levels``, ``level_mismatch``,
``non_finite``. Book consistency (crossed, out of order, ...) is ``feeds.validate``'s job.
"""

from __future__ import annotations

import math

import msgspec
import numpy as np

from feeds.model import N_LEVELS, BookBatch

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


def _side(px: list[float | None], sz: list[float]) -> tuple[np.ndarray, np.ndarray] | str:
    if len(px) > N_LEVELS or len(sz) > N_LEVELS:
        return "too_many_levels"
    if len(px) != len(sz):
        return "level_mismatch"
    p = np.full(N_LEVELS, np.nan)
    s = np.zeros(N_LEVELS)
    p[: len(px)] = [math.nan if v is None else v for v in px]
    s[: len(sz)] = sz
    if not np.all(np.isfinite(s)) or np.any(np.isinf(p)):
        return "non_finite"
    return p, s


def decode_mbp10(
    raw: bytes | str, recv_ns: int, symbol: str | None = None
) -> tuple[BookBatch | None, str]:
    """Decode one frame into a one-row ``BookBatch``.

    Args:
        raw: The frame (JSON text or bytes).
        recv_ns: Our receive time, ns: always the batch's ``ts_recv_ns`` (our clock; the
            sender's ``ts_recv`` is informative only).
        symbol: Expected symbol; another one is rejected.

    Returns:
        ``(batch, "")`` or ``(None, reason)``.
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
    ts = np.array([m.ts_event], dtype=np.int64)
    return (
        BookBatch(
            m.symbol,
            ts,
            np.array([recv_ns], dtype=np.int64),
            bid[0][None, :],
            bid[1][None, :],
            ask[0][None, :],
            ask[1][None, :],
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
