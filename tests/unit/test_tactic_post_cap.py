"""``tactic.max_post_multiple``: a passive child never posts more than N times the size the book
shows at its price (at our touch when it posts inside the spread); what the cap leaves of the
period crosses at the cut-off with what the post did not fill."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from agent.core.tactic import TacticConfig, displayed_at
from agent.model import Side
from agent.orders.tracker import OrderState
from tests.unit.test_core_tactic import ASK, BID, T0, S, batch, book, core, run

CAPPED = TacticConfig(kind="passive", inside=False, cutoff=0.9, max_post_multiple=0.5)


def test_displayed_at_our_level_or_at_the_touch():
    px = np.array([10.00, 9.99, 9.98])
    sz = np.array([300.0, 200.0, 100.0])
    assert displayed_at(9.99, px, sz) == 200.0
    assert displayed_at(10.01, px, sz) == 300.0  # inside the spread: a new level, the touch
    assert displayed_at(10.00, np.array([np.nan]), np.array([np.nan])) == 0.0


def test_a_post_is_capped_at_the_multiple_of_the_displayed_size():
    """Buy 400 at the touch with 300 displayed and a multiple of 0.5: 150 rest, never more; 100
    print at our price past the 300 ahead, and at the cut-off the period's other 300 cross."""
    c = core(400, CAPPED)
    b = batch(
        [
            book(T0 - S),
            (T0 + 10 * S, "T", "A", 10.00, 400.0, BID, ASK),  # 300 ahead, then 100 ours
            book(T0 + 95 * S),
            book(T0 + 200 * S),
        ]
    )
    run(c, b)
    post, cross = c.mpc.tracker.children.values()
    assert (post.order.tif, post.order.qty, post.order.limit_px) == ("day", 150.0, 10.00)
    assert (post.filled_qty, post.state) == (100.0, OrderState.CANCELLED)
    assert (cross.order.tif, cross.order.qty, cross.filled_qty) == ("ioc", 300.0, 300.0)
    assert cross.order.ts_created_ns == T0 + 90 * S
    assert c.summary().status == "completed" and c.mpc.tracker.filled_qty == 400


def test_off_by_default_and_below_the_cap_the_child_is_whole():
    c = core(100, CAPPED)  # 100 <= 0.5 x 300: unchanged
    run(c, batch([book(T0 - S), book(T0 + 95 * S), book(T0 + 200 * S)]))
    assert next(iter(c.mpc.tracker.children.values())).order.qty == 100.0
    c = core(400, TacticConfig(kind="passive", inside=False, cutoff=0.9))
    run(c, batch([book(T0 - S), book(T0 + 95 * S), book(T0 + 200 * S)]))
    assert next(iter(c.mpc.tracker.children.values())).order.qty == 400.0
    with pytest.raises(ValidationError):
        TacticConfig(kind="passive", max_post_multiple=-1.0)


def test_a_sell_inside_the_spread_is_measured_against_the_ask():
    c = core(400, CAPPED.model_copy(update={"inside": True}), side=Side.SELL)
    run(c, batch([book(T0 - S), book(T0 + 95 * S), book(T0 + 200 * S)]))
    first = next(iter(c.mpc.tracker.children.values()))
    assert first.order.limit_px == pytest.approx(10.01) and first.order.qty == 0.5 * ASK[0][1]
    assert BID[0][1] == ASK[0][1]  # (both touches show 300: the side is told by the price)
