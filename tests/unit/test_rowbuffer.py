"""The live reader's row buffer: nothing conflated below its cap, exactly counted above it,
trades kept, arrival order kept, and many frames taken as one batch equal to frame by frame."""

from __future__ import annotations

import asyncio
import json
import math

import numpy as np
import pytest

from feeds.clock import ManualClock
from feeds.jsonmsg import decode_mbp10
from feeds.live import WebSocketFeed
from feeds.model import EV_TRADE, SIDE_BID, BookBatch, BookRow
from feeds.rowbuffer import RowBuffer

T0 = 1_748_871_000_000_000_000


def _row(i: int, trade: bool = False) -> BookRow:
    bp = [10.0 - 0.01 * k - 0.001 * i for k in range(10)]
    ap = [10.01 + 0.01 * k + 0.001 * i for k in range(10)]
    ev = (EV_TRADE, SIDE_BID, ap[0], 100.0 + i) if trade else None
    return (T0 + i, T0 + i + 5, bp, [100.0 + i] * 10, ap, [200.0 + i] * 10, ev)


def test_nothing_is_conflated_below_the_cap_and_one_take_returns_every_row_in_order() -> None:
    buf = RowBuffer("S", max_books=50)
    for i in range(50):
        assert buf.append(_row(i)) is False
    b = buf.take()
    assert b is not None and len(b) == 50 and buf.conflated == 0
    assert b.ts_event_ns.tolist() == [T0 + i for i in range(50)]
    assert b.ts_recv_ns.tolist() == [T0 + i + 5 for i in range(50)]
    assert b.bid_px.shape == (50, 10) and b.bid_sz[:, 0].tolist() == [100.0 + i for i in range(50)]
    assert b.action is None  # no row had an event: no event columns
    assert buf.take() is None and len(buf) == 0


def test_above_the_cap_the_oldest_books_go_counted_exactly_and_trades_stay() -> None:
    buf = RowBuffer("S", max_books=3, max_trades=100)
    trades = {1, 4, 6}
    dropped = [buf.append(_row(i, i in trades), i in trades) for i in range(10)]
    # Books 0 2 3 5 7 8 9 arrive; at most 3 wait: 0 2 3 5 go, each the oldest book then.
    assert buf.conflated == 4 and sum(dropped) == 4 and buf.trades_dropped == 0
    b = buf.take()
    assert b is not None and b.action is not None
    assert b.ts_event_ns.tolist() == [T0 + i for i in (1, 4, 6, 7, 8, 9)]  # arrival order
    assert (b.action == EV_TRADE).tolist() == [True, True, True, False, False, False]
    assert b.ev_sz is not None and b.ev_sz[:3].tolist() == [101.0, 104.0, 106.0]
    assert math.isnan(b.ev_px[3]) and b.ev_side is not None  # type: ignore[index]


def test_trades_past_their_own_cap_drop_the_oldest_trade() -> None:
    buf = RowBuffer("S", max_books=10, max_trades=2)
    for i in range(5):
        buf.append(_row(i, True), True)
    assert buf.trades_dropped == 3 and buf.conflated == 0
    b = buf.take()
    assert b is not None and b.ts_event_ns.tolist() == [T0 + 3, T0 + 4]


def test_caps_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_books"):
        RowBuffer("S", max_books=0)


def _frame(i: int, **event: object) -> str:
    """An MBP-10 JSON message with a hole on the ask side for odd ``i`` (the slow path)."""
    asks = [10.02 + 0.01 * k for k in range(10)]
    ask_sz: list[float] = [300.0 + i] * 10
    if i % 2:
        asks, ask_sz = asks[:7], ask_sz[:7]
    return json.dumps(
        {
            "type": "mbp10",
            "symbol": "SYNA",
            "ts_event": T0 + 1000 * i,
            "bid_px": [10.0 - 0.01 * k for k in range(10)],
            "bid_sz": [100 + i + k for k in range(10)],  # ints on the wire
            "ask_px": asks,
            "ask_sz": ask_sz,
            **event,
        }
    )


def test_many_frames_arrive_as_one_batch_with_the_values_of_frame_by_frame() -> None:
    """What the consumer takes at once equals the frames decoded one by one, concatenated."""
    frames = [
        _frame(i, **({"action": "T", "side": "B", "price": 10.02, "size": 50} if i == 3 else {}))
        for i in range(12)
    ]
    clock = ManualClock(T0)
    feed = WebSocketFeed("ws://127.0.0.1:9", "SYNA", clock=clock)
    one_by_one = []
    for f in frames:
        clock.advance(7)
        feed._on_frame(f)
        b, reason = decode_mbp10(f, clock.now_ns(), "SYNA")
        assert b is not None, reason
        one_by_one.append(b)
    got = feed._take()
    want = BookBatch.concat(one_by_one)
    assert got is not None and len(got) == 12 and feed.stats.books == 12
    assert feed.stats.conflated == 0 and feed._take() is None
    for name in ("ts_event_ns", "ts_recv_ns", "bid_px", "bid_sz", "ask_px", "ask_sz", "action"):
        a, w = getattr(got, name), getattr(want, name)
        assert a.dtype == w.dtype and a.shape == w.shape, name
        np.testing.assert_array_equal(a, w, err_msg=name)  # NaN == NaN here
    for name in ("ev_side", "ev_px", "ev_sz"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)


def test_the_feed_conflates_only_above_its_configured_cap() -> None:
    feed = WebSocketFeed("ws://127.0.0.1:9", "SYNA", clock=ManualClock(T0), max_buffered_rows=5)
    for i in range(8):
        feed._on_frame(_frame(2 * i))
    assert feed.stats.conflated == 3 and feed.stats.books == 8
    b = feed._take()
    assert b is not None and b.ts_event_ns.tolist() == [T0 + 2000 * i for i in range(3, 8)]
    for i in range(8, 13):
        feed._on_frame(_frame(2 * i))
    assert feed.stats.conflated == 3  # the consumer took them in time: nothing more lost


async def test_held_rows_wait_and_a_row_past_the_hold_wakes_the_consumer_at_once() -> None:
    """Rows up to the consumer's next decision time do not wake it; the first later row does,
    and the consumer then takes every row since its last take as one batch."""
    feed = WebSocketFeed("ws://127.0.0.1:9", "SYNA", clock=ManualClock(T0), max_hold_ms=60_000)
    feed.hold(T0 + 4000)  # the next decision: rows at or before it cannot trigger anything
    for i in range(5):
        feed._on_frame(_frame(2 * i))  # event times T0 ... T0 + 8000, step 2000
        assert feed._new.is_set() is (i >= 3), i  # T0 + 6000 is past the hold
    b = feed._take()
    assert b is not None and b.ts_event_ns.tolist() == [T0 + 2000 * i for i in range(5)]


async def test_held_rows_wake_the_consumer_within_max_hold() -> None:
    """A row that cannot trigger a decision still reaches the consumer, after max_hold_ms."""
    feed = WebSocketFeed("ws://127.0.0.1:9", "SYNA", clock=ManualClock(T0), max_hold_ms=1.0)
    feed.hold(T0 + 10**9)
    feed._on_frame(_frame(0))
    assert not feed._new.is_set()
    await asyncio.wait_for(feed._new.wait(), 5.0)  # set by the hold timer, bounded
    feed.hold(None)  # no hold: every row wakes the consumer
    feed._new.clear()
    feed._held = False
    feed._on_frame(_frame(2))
    assert feed._new.is_set()


def test_rows_older_than_max_age_go_but_for_the_newest_old_book_and_every_trade() -> None:
    buf = RowBuffer("S")
    for i in range(10):  # received at T0 + i + 5
        buf.append(_row(i, trade=i in (2, 7)), trade=i in (2, 7))
    now = T0 + 5 + 100
    b = buf.take(now, max_age_ns=100 - 6)  # rows received before T0 + 5 + 6 are old
    assert b is not None
    # Old books 0, 1, 3, 4, 5 (trade 2 stays): all but the newest old one (5) are conflated.
    assert buf.conflated == 4
    assert b.ts_event_ns.tolist() == [T0 + i for i in (2, 5, 6, 7, 8, 9)]
    assert b.action is not None and [chr(a) for a in b.action[[0, 3]]] == ["T", "T"]


def test_max_age_keeps_one_book_when_every_waiting_book_is_old_and_none_when_fresh() -> None:
    buf = RowBuffer("S")
    for i in range(5):
        buf.append(_row(i))
    b = buf.take(T0 + 10**9, max_age_ns=1000)
    assert b is not None and b.ts_event_ns.tolist() == [T0 + 4] and buf.conflated == 4
    for i in range(5, 8):
        buf.append(_row(i))
    b = buf.take(T0 + 12, max_age_ns=1000)  # all fresh: nothing goes
    assert b is not None and len(b) == 3 and buf.conflated == 4


def test_is_plain_book_lets_only_snapshots_of_the_symbol_be_skipped() -> None:
    from feeds.jsonmsg import is_plain_book

    book = {"type": "mbp10", "symbol": "S", "ts_event": 1, "bid_px": [1.0], "bid_sz": [1]}
    assert is_plain_book(json.dumps(book), "S") and is_plain_book(json.dumps(book).encode())
    assert is_plain_book(json.dumps(book | {"action": "A"}), "S")
    assert not is_plain_book(json.dumps(book | {"action": "T"}), "S")  # a trade: volume
    assert not is_plain_book(json.dumps(book), "OTHER")  # counted as wrong_symbol by decode
    assert not is_plain_book(json.dumps(book | {"type": "x"}), "S")
    assert not is_plain_book(json.dumps(book | {"ts_event": -1}), "S")
    assert not is_plain_book(json.dumps({"symbol": "S"}), "S")  # no ts_event: bad_schema
    assert not is_plain_book(b"{not json", "S") and not is_plain_book(b"[1, 2]", "S")
