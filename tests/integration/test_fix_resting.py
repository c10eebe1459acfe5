"""Resting orders over real FIX end to end: the adapter's day orders, 35=G replaces and cancels
against ``serve-venue``'s queue model on the sample day, into an order tracker."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from agent.brokers.fix import FixBroker
from agent.model import (
    CancelRequested,
    ChildOrder,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderReplaced,
    OrderReplaceRejected,
    ReplaceRequested,
    Side,
)
from agent.orders.tracker import OrderState, OrderTracker
from agent.venue import FixVenue
from tests.integration.test_fix import SAMPLE, T_1400, _next_events

pytestmark = pytest.mark.integration
S = 10**9


async def _broker(venue: FixVenue) -> FixBroker:
    b = FixBroker("127.0.0.1", venue.port, "AGENT", "VENUE", heartbeat_s=5)
    await b.start()
    return b


async def test_a_day_order_rests_is_replaced_under_a_new_id_and_cancelled():
    async with FixVenue({"SYNA": SAMPLE}, latency_ms=0) as venue:
        broker = await _broker(venue)
        events = broker.events()
        t = OrderTracker(100)
        child = ChildOrder("R-00001", "R", "SYNA", Side.BUY, 100, 1.00, T_1400, tif="day")
        t.on_submitted(child, T_1400)
        with capture_logs():
            await broker.submit(child)
            (acc,) = await _next_events(events, 1, 30.0)
            req = ReplaceRequested("R-00001", "R-00001-r1", 100, 1.01, T_1400 + S)
            t.on_event(acc)
            t.on_event(req)
            await broker.replace(req)
            (rep,) = await _next_events(events, 1, 30.0)
            t.on_event(rep)
            creq = CancelRequested("R-00001-r1", T_1400 + 2 * S)
            t.on_event(creq)
            await broker.cancel_request(creq)
            (cxl,) = await _next_events(events, 1, 30.0)
            t.on_event(cxl)
        await broker.aclose()
    assert isinstance(acc, OrderAccepted)
    assert rep == OrderReplaced("R-00001", rep.ts_event_ns, 100.0, 1.01, "R-00001-r1")
    assert isinstance(cxl, OrderCancelled) and cxl.client_order_id == "R-00001-r1"
    c = t.child("R-00001")
    assert c is not None and c.state is OrderState.CANCELLED and c.order.limit_px == 1.01
    assert t.open_qty == 0 and t.filled_qty == 0
    t.audit()


async def test_a_resting_order_at_the_touch_fills_from_the_prints_and_a_late_replace_is_refused():
    """A buy at the bid fills from the queue as market time moves on (the fills come out when
    the next request arrives, in time order); a replace after it filled is refused (35=9)."""
    async with FixVenue({"SYNA": SAMPLE}, latency_ms=0) as venue:
        book = venue.books["SYNA"]
        i = int((book.ts_event_ns <= T_1400).sum()) - 1
        bid = float(book.bid_px[i, 0])
        broker = await _broker(venue)
        events = broker.events()
        t = OrderTracker(300)
        child = ChildOrder("Q-00001", "Q", "SYNA", Side.BUY, 300, bid, T_1400, tif="day")
        t.on_submitted(child, T_1400)
        with capture_logs():
            await broker.submit(child)
            got = await _next_events(events, 1, 30.0)
            # an hour later: the rows in between reach the queue model, then the replace
            req = ReplaceRequested("Q-00001", "Q-00001-r1", 300, bid - 0.05, T_1400 + 3600 * S)
            t.on_event(got[0])
            t.on_event(req)
            await broker.replace(req)
            more = []
            while not any(isinstance(e, OrderReplaced | OrderReplaceRejected) for e in more):
                more += await _next_events(events, 1, 30.0)
        await broker.aclose()
    fills = [e for e in more if isinstance(e, OrderFilled)]
    for e in more:
        t.on_event(e)
    assert fills, "nothing traded at the bid in an hour: the queue model never filled us"
    assert sum(f.qty for f in fills) <= 300
    c = t.child("Q-00001")
    assert c is not None
    if c.filled_qty >= 300:
        assert isinstance(more[-1], OrderReplaceRejected) and c.state is OrderState.FILLED
    else:
        assert isinstance(more[-1], OrderReplaced) and c.order.client_order_id == "Q-00001-r1"
    t.audit()
