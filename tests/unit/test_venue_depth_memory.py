"""The resilient simulated broker: our fills consume depth, which comes back with a half-life."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.core.venue import DepthMemory as ResilientBook
from agent.model import Side

NS = 1_000_000_000
ASK_PX = np.array([100.01, 100.02, 100.03, 100.04, 100.05])
ASK_SZ = np.array([100.0, 200.0, 300.0, 400.0, 500.0])
BID_PX = np.array([99.99, 99.98, 99.97, 99.96, 99.95])


def test_infinite_half_life_takes_no_share_twice():
    """Two orders on an unchanged book: the second only gets what the first left."""
    book = ResilientBook(Side.BUY, math.inf)
    a = book.execute(0, 250, 101.0, ASK_PX, ASK_SZ)
    b = book.execute(10 * NS, 250, 101.0, ASK_PX, ASK_SZ)
    assert a.qty.tolist() == [100.0, 150.0]
    assert a.px.tolist() == [100.01, 100.02]
    assert b.qty.tolist() == [50.0, 200.0]
    assert b.px.tolist() == [100.02, 100.03]


def test_zero_half_life_orders_are_independent():
    """With half-life 0 every order sees the displayed book again."""
    book = ResilientBook(Side.BUY, 0.0)
    a = book.execute(0, 250, 101.0, ASK_PX, ASK_SZ)
    b = book.execute(0, 250, 101.0, ASK_PX, ASK_SZ)
    c = book.execute(5 * NS, 250, 101.0, ASK_PX, ASK_SZ)
    assert a.qty.tolist() == b.qty.tolist() == c.qty.tolist() == [100.0, 150.0]
    assert a.avg_px == b.avg_px == c.avg_px


def test_half_of_the_depth_comes_back_after_one_half_life():
    """Consumed depth decays as exp(-ln2 dt / half_life)."""
    book = ResilientBook(Side.SELL, 30.0)
    first = book.execute(0, 100, 99.0, BID_PX, ASK_SZ)
    assert first.qty.tolist() == [100.0]
    assert book.consumed(99.99, 30 * NS) == pytest.approx(50.0)
    second = book.execute(30 * NS, 60, 99.0, BID_PX, ASK_SZ)
    assert second.qty.tolist() == pytest.approx([50.0, 10.0])
    assert second.px.tolist() == [99.99, 99.98]


def test_random_orders_never_exceed_displayed_depth():
    """Any sequence of orders on an unchanged book with infinite half-life: per level, the sum
    of our fills never exceeds the displayed size."""
    rng = np.random.default_rng(7)
    book = ResilientBook(Side.BUY, math.inf)
    taken = dict.fromkeys(ASK_PX.tolist(), 0.0)
    for i in range(200):
        ex = book.execute(i * NS, float(rng.integers(1, 400)), 100.035, ASK_PX, ASK_SZ)
        assert ex.filled <= 400
        for q, p in zip(ex.qty, ex.px, strict=True):
            taken[float(p)] += q
    for p, s in zip(ASK_PX, ASK_SZ, strict=True):
        assert taken[float(p)] <= s + 1e-9
    # the collar (100.035) keeps the two deepest levels out: exactly the first three are gone
    assert sum(taken.values()) == pytest.approx(600.0)


def test_penalty_policy_fills_past_the_visible_book_inside_the_limit_only():
    """Beyond the visible levels: `unfilled` cancels; `penalty` fills at the last price worsened
    by penalty_bps, but never through the limit."""
    wide = ResilientBook(Side.BUY, 0.0, "penalty", 100.0)
    ex = wide.execute(0, 2000, 102.0, ASK_PX, ASK_SZ)
    assert ex.filled == 2000
    assert ex.beyond_qty == 500
    assert ex.px[-1] == pytest.approx(100.05 * 1.01)
    tight = ResilientBook(Side.BUY, 0.0, "penalty", 100.0)
    ex2 = tight.execute(0, 2000, 100.5, ASK_PX, ASK_SZ)
    assert ex2.filled == 1500 and ex2.beyond_qty == 0 and ex2.reason == "ioc_remainder"
    plain = ResilientBook(Side.BUY, 0.0)
    ex3 = plain.execute(0, 2000, 102.0, ASK_PX, ASK_SZ)
    assert ex3.filled == 1500 and ex3.reason == "ioc_remainder"


def test_time_must_not_go_backwards():
    book = ResilientBook(Side.BUY, 10.0)
    book.execute(5 * NS, 10, 101.0, ASK_PX, ASK_SZ)
    with pytest.raises(ValueError, match="time order"):
        book.execute(4 * NS, 10, 101.0, ASK_PX, ASK_SZ)
