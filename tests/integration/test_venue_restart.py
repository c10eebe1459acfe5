"""A restart of ``serve-venue`` while an order rests: the venue keeps its sequence numbers and
its orders but not its queue model, so it cancels what rested, with what had filled and nothing
more, says so unsolicited once the initiator logs on again, and answers every later request for
the order (by any ClOrdID of its chain) as cancelled."""

from __future__ import annotations

import json

import pytest
from structlog.testing import capture_logs

from agent.brokers.fix import FixBroker
from agent.model import (
    ChildOrder,
    OrderCancelled,
    OrderFilled,
    OrderReplaced,
    OrderReplaceRejected,
    OrderStatus,
    ReplaceRequested,
    Side,
)
from agent.orders.tracker import OrderState, OrderTracker
from agent.venue import FixVenue
from tests.integration.test_fix import SAMPLE, T_1400, _next_events

pytestmark = pytest.mark.integration
S = 10**9
QTY = 20_000  # more than trades at the bid in the next minute: some fills, and still resting


async def test_a_venue_restart_cancels_what_rests_and_says_so(tmp_path):
    state, er_log = tmp_path / "venue", tmp_path / "er.jsonl"
    v1 = await FixVenue({"SYNA": SAMPLE}, latency_ms=0, state_dir=state, er_log=er_log).start()
    book = v1.books["SYNA"]
    i = int((book.ts_event_ns <= T_1400).sum()) - 1
    px = float(book.bid_px[i, 0])
    broker = FixBroker("127.0.0.1", v1.port, "AGENT", "VENUE", heartbeat_s=5)
    await broker.start()
    events = broker.events()
    t = OrderTracker(QTY)
    child = ChildOrder("W-00001", "W", "SYNA", Side.BUY, QTY, px, T_1400, tif="day")
    t.on_submitted(child, T_1400)
    v2 = None
    try:
        with capture_logs() as logs:
            await broker.submit(child)
            (acc,) = await _next_events(events, 1, 30.0)
            t.on_event(acc)
            # a minute later, the same price under a new id: the minute's prints fill us first
            req = ReplaceRequested("W-00001", "W-00001-r1", QTY, px, T_1400 + 60 * S)
            t.on_event(req)
            await broker.replace(req)
            before = []
            while not any(isinstance(e, OrderReplaced | OrderReplaceRejected) for e in before):
                before += await _next_events(events, 1, 30.0)
            for e in before:
                t.on_event(e)
            c = t.child("W-00001")
            assert c is not None and c.order.client_order_id == "W-00001-r1"
            filled = c.filled_qty
            assert 0 < filled < QTY, "the minute must fill part of the order"

            port = v1.port
            await v1.aclose()  # the venue goes away; the adapter reconnects by itself
            v2 = await FixVenue(
                {"SYNA": SAMPLE}, latency_ms=0, state_dir=state, er_log=er_log, port=port
            ).start()
            (cxl,) = await _next_events(events, 1, 30.0)  # unsolicited, right after the Logon
            tr = t.on_event(cxl)
            # asked by its first id, the order answers by its current one: cancelled
            await broker.request_status("W-00001")
            (st,) = await _next_events(events, 1, 30.0)
            t.on_event(st)
    finally:
        await broker.aclose()
        await (v2 or v1).aclose()
    assert isinstance(cxl, OrderCancelled) and cxl.client_order_id == "W-00001-r1"
    assert cxl.reason == "venue restarted: resting order cancelled"
    assert tr.applied and tr.new is OrderState.CANCELLED
    assert st == OrderStatus(
        "W-00001-r1", st.ts_event_ns, "cancelled", filled, st.avg_px, st.reason
    )
    assert c.state is OrderState.CANCELLED and c.filled_qty == filled
    # a daemon that missed every fill report (it died before journaling them) gets them from
    # the cancel's CumQty, once
    lost = OrderTracker(QTY)
    lost.on_submitted(child, T_1400)
    for e in [acc, req, *(e for e in before if not isinstance(e, OrderFilled)), cxl, cxl]:
        lost.on_event(e)
    assert lost.filled_qty == filled and lost.child("W-00001").state is OrderState.CANCELLED
    assert t.filled_qty == filled and t.open_qty == 0 and t.uncommitted_qty == QTY - filled
    t.audit()
    # the venue's own record agrees: what filled before the restart, nothing after
    recs = [json.loads(x) for x in er_log.read_text().splitlines()]
    fills = [r["last_qty"] for r in recs if r["exec_type"] == "F"]
    assert sum(fills) == filled == sum(e.qty for e in before if isinstance(e, OrderFilled))
    assert recs[-2]["exec_type"] == "4" and recs[-2]["cum_qty"] == filled
    warned = [e for e in logs if e["event"] == "venue.resting_cancelled_by_restart"]
    assert [e["client_order_id"] for e in warned] == ["W-00001-r1"]
