"""Pure IOC matching and the simulated venue."""

from __future__ import annotations

import numpy as np
import pytest

from agent.brokers.matching import collar_limit_px, match_ioc
from agent.core.venue import SimVenue as SimulatedVenue
from agent.model import ChildOrder, OrderAccepted, OrderCancelled, OrderFilled, Side
from feeds.model import BookBatch

NAN = np.nan


def book(ts: list[int], ask0: list[float]) -> BookBatch:
    n = len(ts)
    lv = np.arange(10)
    ask_px = np.array(ask0)[:, None] + 0.01 * lv
    bid_px = np.array(ask0)[:, None] - 0.02 - 0.01 * lv
    sz = np.full((n, 10), 100.0)
    return BookBatch(
        "S", np.array(ts, np.int64), np.array(ts, np.int64), bid_px, sz, ask_px, sz.copy()
    )


def test_match_walks_levels_inside_limit():
    """A buy takes level after level until the limit, then stops."""
    px = np.array([10.0, 10.01, 10.02, NAN, 10.05])
    sz = np.array([100.0, 50.0, 80.0, 0.0, 500.0])
    q, p = match_ioc(Side.BUY, 200, 10.02, px, sz)
    assert q.tolist() == [100.0, 50.0, 50.0] and p.tolist() == [10.0, 10.01, 10.02]
    q, p = match_ioc(Side.BUY, 1000, 10.02, px, sz)
    assert q.sum() == 230  # partial: depth inside the collar is short


def test_match_sell_respects_limit():
    """A sell never trades below its limit."""
    px = np.array([9.99, 9.98, 9.90])
    sz = np.array([10.0, 10.0, 10.0])
    q, p = match_ioc(Side.SELL, 100, 9.95, px, sz)
    assert q.sum() == 20 and (p >= 9.95).all()


def test_collar():
    assert collar_limit_px(Side.BUY, 100.0, 50) == pytest.approx(100.5)
    assert collar_limit_px(Side.SELL, 100.0, 50) == pytest.approx(99.5)


def test_venue_executes_after_latency_against_book_in_force():
    """The order sent at t=100 with latency 50 executes on the row of t=140, not t=160."""
    v = SimulatedVenue(latency_ns=50)
    o = ChildOrder("C-1", "P", "S", Side.BUY, 150.0, 1e9, 100)
    assert v.submit(o) == []
    ev = v.advance(book([90, 140, 160], [10.0, 11.0, 12.0]))
    fills = [e for e in ev if isinstance(e, OrderFilled)]
    assert isinstance(ev[0], OrderAccepted)
    assert [f.px for f in fills] == [11.0, 11.01] and sum(f.qty for f in fills) == 150


def test_venue_due_before_batch_uses_previous_row_and_cancels_rest():
    """An order due between batches uses the last row of the previous batch; IOC rest cancels."""
    v = SimulatedVenue(latency_ns=10)
    v.advance(book([100], [10.0]))
    v.submit(ChildOrder("C-1", "P", "S", Side.BUY, 5000.0, 10.015, 105))
    ev = v.advance(book([200], [20.0]))
    fills = [e for e in ev if isinstance(e, OrderFilled)]
    assert sum(f.qty for f in fills) == 200 and fills[0].px == 10.0
    assert isinstance(ev[-1], OrderCancelled)


def test_venue_rejects_duplicate_id():
    v = SimulatedVenue()
    o = ChildOrder("C-1", "P", "S", Side.BUY, 1.0, 11.0, 0)
    assert v.submit(o) == []
    assert v.submit(o)[0].reason == "duplicate_order_id"
