"""The within-period tactic through the whole core: hand-built books where the trade sizes decide
exactly when we fill, and the cancel and replace races a real venue has."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.backtest.engine import run_core
from agent.core.parent import ParentCore, ParentParams
from agent.core.policy import StrategySpec, TwapPolicy
from agent.core.session import SymbolSession
from agent.core.tactic import TacticConfig, passive_price
from agent.core.venue import SimVenue
from agent.model import (
    OrderCancelled,
    OrderCancelRejected,
    OrderFilled,
    OrderReplaced,
    OrderReplaceRejected,
    Side,
)
from agent.orders.tracker import OrderState
from feeds.model import BookBatch

S = 1_000_000_000
MS = 1_000_000
T0 = 1_000 * S  # the parent starts here; one 100 s period
L = 3
BID = [(10.00, 300.0), (9.99, 200.0), (9.98, 200.0)]
ASK = [(10.02, 300.0), (10.03, 200.0), (10.04, 200.0)]


def batch(rows: list[tuple[int, str, str, float, float, list, list]], events: bool = True):
    """Rows of (ts, action, side, px, size, bids after, asks after)."""
    n = len(rows)
    bp, bs, ap, az = (np.full((n, L), np.nan) for _ in range(4))
    for a in (bs, az):
        a[:] = 0.0
    for i, (_, _, _, _, _, bids, asks) in enumerate(rows):
        for j, (p, q) in enumerate(bids):
            bp[i, j], bs[i, j] = p, q
        for j, (p, q) in enumerate(asks):
            ap[i, j], az[i, j] = p, q
    ts = np.array([r[0] for r in rows], dtype=np.int64)
    ev = (
        (
            np.array([ord(r[1]) for r in rows], dtype=np.uint8),
            np.array([ord(r[2]) for r in rows], dtype=np.uint8),
            np.array([r[3] for r in rows], dtype=np.float64),
            np.array([r[4] for r in rows], dtype=np.float64),
        )
        if events
        else (None, None, None, None)
    )
    return BookBatch("XYZ", ts, ts.copy(), bp, bs, ap, az, *ev)


def book(ts: int) -> tuple[int, str, str, float, float, list, list]:
    return (ts, "A", "A", 10.05, 1.0, BID, ASK)  # an add far away: the touch unchanged


def core(qty: float, tactic: TacticConfig, side: Side = Side.BUY) -> ParentCore:
    p = ParentParams("P", "XYZ", side, qty, T0, T0 + 100 * S, 100 * S, lot=1, collar_bps=100)
    c = ParentCore(p, TwapPolicy(StrategySpec(kind="twap")))
    c.set_tactic(tactic)
    return c


def run(c: ParentCore, b: BookBatch, latency_ms: float = 0.0) -> SimVenue:
    venue = SimVenue(int(latency_ms * MS))
    session = SymbolSession("XYZ", [c], [venue])
    run_core(c, session, b, venue)
    c.check()
    return venue


def fills(v: SimVenue) -> list[tuple[int, float, float, str]]:
    return [
        (f.due_ns, q, p, f.kind)
        for f in v.fills
        for q, p in zip(f.execution.qty.tolist(), f.execution.px.tolist(), strict=True)
    ]


AT_TOUCH = TacticConfig(kind="passive", inside=False, cutoff=0.9, reprice_ticks=1)


def test_passive_price_at_the_touch_or_one_tick_inside():
    assert passive_price(Side.BUY, 10.00, 10.02, 0.01, True).px == pytest.approx(10.01)
    assert passive_price(Side.BUY, 10.00, 10.01, 0.01, True).px == pytest.approx(10.00)
    assert passive_price(Side.SELL, 10.00, 10.02, 0.01, True).px == pytest.approx(10.01)
    assert passive_price(Side.SELL, 10.00, 10.02, 0.01, False).px == pytest.approx(10.02)
    assert passive_price(Side.BUY, math.nan, 10.02, 0.01, True) is None


def test_known_answer_queue_the_trade_sizes_decide_when_we_fill():
    """Buy 200 @ 10.00 behind 300 displayed: 250 + 100 printed -> 50 ours; 200 more -> the rest."""
    c = core(200, AT_TOUCH)
    lv = lambda q: [(10.00, q), *BID[1:]]  # noqa: E731
    b = batch(
        [
            book(T0 - S),
            (T0 + 10 * S, "T", "A", 10.00, 250.0, BID, ASK),  # eats 250 of the 300 ahead
            (T0 + 11 * S, "C", "B", 10.00, 250.0, lv(50.0), ASK),  # the book shows it
            (T0 + 20 * S, "T", "A", 10.00, 100.0, lv(50.0), ASK),  # 50 ahead, then 50 ours
            (T0 + 21 * S, "C", "B", 10.00, 50.0, lv(0.0), ASK),
            (T0 + 30 * S, "T", "A", 10.00, 149.0, lv(0.0), ASK),  # 149 of our 150
            (T0 + 40 * S, "T", "A", 10.00, 1.0, lv(0.0), ASK),  # the last share
            book(T0 + 200 * S),
        ]
    )
    v = run(c, b)
    assert fills(v) == [
        (T0 + 20 * S, 50.0, 10.00, "passive"),
        (T0 + 30 * S, 149.0, 10.00, "passive"),
        (T0 + 40 * S, 1.0, 10.00, "passive"),
    ]
    (child,) = c.mpc.tracker.children.values()
    assert child.order.tif == "day" and child.state is OrderState.FILLED
    assert c.summary().status == "completed"


def test_what_the_queue_does_not_give_crosses_at_the_cutoff():
    """Only 100 printed past the 300 ahead: at the cut-off (90 s) the 100 left cross the spread."""
    c = core(200, AT_TOUCH)
    b = batch(
        [
            book(T0 - S),
            (T0 + 10 * S, "T", "A", 10.00, 400.0, BID, ASK),  # 300 ahead, then 100 ours
            book(T0 + 95 * S),
            book(T0 + 200 * S),
        ]
    )
    v = run(c, b, latency_ms=50)
    cut = T0 + 90 * S
    assert fills(v) == [
        (T0 + 10 * S, 100.0, 10.00, "passive"),
        (cut + 100 * MS, 100.0, 10.02, "taker"),  # cancel at cut+50ms, the IOC 50 ms later
    ]
    a, b2 = c.mpc.tracker.children.values()
    assert (a.state, a.filled_qty) == (OrderState.CANCELLED, 100.0)
    assert (b2.order.tif, b2.order.qty, b2.order.ts_created_ns) == ("ioc", 100.0, cut + 50 * MS)
    assert c.summary().status == "completed"


def test_cancel_race_a_fill_before_the_cancel_arrives_is_kept_and_not_crossed_again():
    """The cut-off cancel leaves at 90 s; 60 shares print at 90.02 s, before it reaches the
    venue at 90.05 s: the IOC crosses exactly the 140 left, nothing twice."""
    c = core(200, AT_TOUCH)
    b = batch(
        [
            book(T0 - S),
            (T0 + 10 * S, "T", "A", 10.00, 300.0, BID, ASK),  # the 300 ahead gone
            (T0 + 90 * S + 20 * MS, "T", "A", 10.00, 60.0, BID, ASK),  # in the cancel's flight
            book(T0 + 95 * S),
            book(T0 + 200 * S),
        ]
    )
    v = run(c, b, latency_ms=50)
    assert [f[:3] for f in fills(v)] == [
        (T0 + 90 * S + 20 * MS, 60.0, 10.00),
        (T0 + 90 * S + 100 * MS, 140.0, 10.02),
    ]
    assert c.mpc.tracker.filled_qty == 200.0
    assert c.summary().status == "completed"


def test_cancel_race_the_order_filled_in_flight_so_the_cancel_is_rejected_and_nothing_crosses():
    c = core(200, AT_TOUCH)
    b = batch(
        [
            book(T0 - S),
            (T0 + 10 * S, "T", "A", 10.00, 300.0, BID, ASK),
            (T0 + 90 * S + 20 * MS, "T", "A", 10.00, 500.0, BID, ASK),  # fills all 200
            book(T0 + 95 * S),
            book(T0 + 200 * S),
        ]
    )
    seen: list[object] = []
    orig = ParentCore.on_event

    def spy(self, leg, event):
        seen.append(event)
        return orig(self, leg, event)

    ParentCore.on_event = spy  # type: ignore[method-assign]
    try:
        v = run(c, b, latency_ms=50)
    finally:
        ParentCore.on_event = orig  # type: ignore[method-assign]
    assert [f[:3] for f in fills(v)] == [(T0 + 90 * S + 20 * MS, 200.0, 10.00)]
    assert any(isinstance(e, OrderCancelRejected) for e in seen)
    assert not any(isinstance(e, OrderCancelled) for e in seen)
    assert len(c.mpc.tracker.children) == 1, "an IOC went out after a complete fill"
    assert c.summary().status == "completed"


def test_the_touch_moves_away_so_we_reprice_and_join_the_new_touch():
    """The bid steps up two ticks: the order is replaced at 10.02 and fills there."""
    c = core(100, AT_TOUCH)
    up_b = [(10.02, 100.0), (10.01, 100.0), (10.00, 300.0)]
    up_a = [(10.04, 100.0), (10.05, 100.0), (10.06, 100.0)]
    b = batch(
        [
            book(T0 - S),
            (T0 + 5 * S, "A", "B", 10.02, 100.0, up_b, up_a),  # touch away by 2 ticks
            (T0 + 6 * S, "T", "A", 10.02, 100.0, up_b, up_a),  # eats the 100 ahead
            (T0 + 7 * S, "T", "A", 10.02, 100.0, up_b, up_a),  # ours
            book(T0 + 200 * S),
        ]
    )
    v = run(c, b, latency_ms=50)
    assert fills(v) == [(T0 + 7 * S, 100.0, 10.02, "passive")]
    (child,) = c.mpc.tracker.children.values()
    assert child.order.limit_px == pytest.approx(10.02)
    assert c.tactic is not None and c.tactic.n_repriced == 1


def test_replace_race_the_order_fills_before_the_replace_arrives():
    """The replace leaves at 5 s; a print through our price fills us at 5.01 s; the venue then
    rejects the replace as too late and the tracker keeps the fill, once."""
    c = core(100, AT_TOUCH)
    up_b = [(10.02, 100.0), (10.01, 100.0), (10.00, 300.0)]
    up_a = [(10.04, 100.0), (10.05, 100.0), (10.06, 100.0)]
    b = batch(
        [
            book(T0 - S),
            (T0 + 5 * S, "A", "B", 10.02, 100.0, up_b, up_a),
            (T0 + 5 * S + 10 * MS, "T", "A", 9.99, 500.0, up_b, up_a),  # through us
            book(T0 + 200 * S),
        ]
    )
    seen: list[object] = []
    orig = ParentCore.on_event

    def spy(self, leg, event):
        seen.append(event)
        return orig(self, leg, event)

    ParentCore.on_event = spy  # type: ignore[method-assign]
    try:
        v = run(c, b, latency_ms=50)
    finally:
        ParentCore.on_event = orig  # type: ignore[method-assign]
    assert fills(v) == [(T0 + 5 * S + 10 * MS, 100.0, 10.00, "passive")]
    assert any(isinstance(e, OrderReplaceRejected) for e in seen)
    assert not any(isinstance(e, OrderReplaced) for e in seen)
    (child,) = c.mpc.tracker.children.values()
    assert child.state is OrderState.FILLED and child.replace is None
    assert sum(e.qty for e in seen if isinstance(e, OrderFilled)) == 100.0


def test_a_feed_without_trade_rows_gets_no_invented_passive_fill():
    """No event columns: the venue rejects the resting order and the tactic crosses at once."""
    c = core(100, AT_TOUCH)
    b = batch([book(T0 - S), book(T0 + 50 * S), book(T0 + 200 * S)], events=False)
    v = run(c, b)
    assert [f[3] for f in fills(v)] == ["taker"]
    first = next(iter(c.mpc.tracker.children.values()))
    assert first.state is OrderState.REJECTED and "no_trade_rows" in first.reason
    assert c.summary().status == "completed"


def test_behind_schedule_crosses_at_once():
    """A 1 bp collar: the cut-off IOC of period 0 finds nothing, so period 1 starts behind the
    schedule and crosses at once instead of posting."""
    t = TacticConfig(kind="passive", behind_tol=0.0)
    p = ParentParams("P", "XYZ", Side.BUY, 200, T0, T0 + 200 * S, 100 * S, lot=1, collar_bps=1)
    c = ParentCore(p, TwapPolicy(StrategySpec(kind="twap")))
    c.set_tactic(t)
    b = batch([book(T0 - S), book(T0 + 50 * S), book(T0 + 150 * S), book(T0 + 300 * S)])
    run(c, b)
    kids = [(ch.order.tif, ch.order.ts_created_ns) for ch in c.mpc.tracker.children.values()]
    assert kids[0] == ("day", T0)
    assert kids[1] == ("ioc", T0 + 80 * S)  # the cut-off
    assert kids[2] == ("ioc", T0 + 100 * S)  # period 1: behind, no post
    assert c.tactic is not None and (c.tactic.n_passive, c.tactic.n_crossed) == (1, 1)


def test_aggressive_is_the_default_and_sends_iocs():
    c = ParentCore(
        ParentParams("P", "XYZ", Side.BUY, 100, T0, T0 + 100 * S, 100 * S, lot=1),
        TwapPolicy(StrategySpec(kind="twap")),
    )
    v = run(c, batch([book(T0 - S), book(T0 + 200 * S)]))
    assert [f[3] for f in fills(v)] == ["taker"]
    assert [ch.order.tif for ch in c.mpc.tracker.children.values()] == ["ioc"]


def test_a_child_resting_across_a_restart_is_cancelled_and_its_rest_crossed_never_resent():
    """Journal replay: a day child was working when the daemon died. The restored core cancels
    it first (recorded before it is sent) and crosses only what the venue did not fill."""
    from agent.core.parent import Cancel, Record, Send
    from agent.model import ChildOrder, OrderAccepted, OrderCancelled, OrderFilled

    c = core(200, AT_TOUCH)
    child = ChildOrder("P-00001", "P", "XYZ", Side.BUY, 200, 10.00, T0, tif="day")
    items = [
        ("mpc", child),
        ("mpc", OrderAccepted("P-00001", T0)),
        ("mpc", OrderFilled("P-00001", "x0", 80, 10.00, T0 + S)),
    ]
    c.restore(items, [0], 10.01, 0.0)
    c.observe(batch([book(T0 + 2 * S)]))
    acts = c.on_time(c.next_time())
    cancels = [a for a in acts if isinstance(a, Cancel)]
    assert [a.client_order_id for a in cancels] == ["P-00001"]
    assert any(isinstance(a, Record) for a in acts), "the cancel request is journaled first"
    assert not any(isinstance(a, Send) for a in acts)
    c.on_event(c.mpc, OrderCancelled("P-00001", T0 + 2 * S + 50 * MS))
    acts = c.on_time(c.next_time())
    (send,) = [a for a in acts if isinstance(a, Send)]
    assert (send.child.qty, send.child.tif, send.child.client_order_id) == (120, "ioc", "P-00002")
