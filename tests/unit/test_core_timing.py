"""Timing inside the period: send on a cheap book, wait on a dear one, forced at the deadline."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from agent.core.timing import TimingRule
from agent.errors import InvariantViolation
from agent.impact.book_walk import side_arrays, walk_cost
from feeds.model import BookBatch
from tests.lookahead import replace_after

S = 1_000_000_000
REPO = Path(__file__).resolve().parents[2]
SIZES = np.geomspace(10, 10_000, 10)


def books(ts, half_spread, depth=100.0, tick=0.01, mid=10.0):
    ts = np.asarray(ts, dtype=np.int64)
    h = np.broadcast_to(np.asarray(half_spread, dtype=np.float64), ts.shape)
    lv = np.arange(10) * tick
    sz = np.full((ts.size, 10), float(depth))
    return BookBatch(
        "SYN", ts, ts.copy(), mid - h[:, None] - lv, sz, mid + h[:, None] + lv, sz.copy()
    )


def alternating_day(n=1200, step=S):
    """Books one second apart whose half-spread is 1 tick three times in four, else 3 ticks."""
    ts = np.arange(n) * step
    h = np.where(np.arange(n) % 4 == 3, 0.03, 0.01)
    return books(ts, h)


def test_warmup_sends_at_once():
    rule = TimingRule("buy", SIZES, min_history_ns=600 * S)
    rule.observe(books([0, S], [0.03, 0.03]))
    d = rule.decide(2 * S, 50.0, 60 * S)
    assert d.send and d.reason == "warmup"


def test_no_book_sends_and_bad_inputs_are_refused():
    rule = TimingRule("sell", SIZES)
    assert rule.decide(0, 10.0, S).reason == "no_book"
    with pytest.raises(ValueError, match="quantile"):
        TimingRule("buy", SIZES, quantile=1.0)
    with pytest.raises(ValueError, match="side"):
        TimingRule("hold", SIZES)
    with pytest.raises(ValueError, match="qty"):
        rule.decide(0, 0.0, S)


def test_waits_on_a_dear_book_and_sends_on_a_cheap_one():
    rule = TimingRule("buy", SIZES, quantile=0.5, min_history_ns=300 * S)
    day = alternating_day()
    rule.observe(day.slice(0, 1199))  # last book observed: index 1198 (1 tick)
    cheap = rule.decide(1198 * S, 50.0, 1260 * S)
    assert cheap.send and cheap.reason == "cheap"
    rule.observe(books([1199 * S + 1], [0.03]))
    dear = rule.decide(1199 * S + 2, 50.0, 1260 * S)
    assert not dear.send and dear.reason == "wait"
    assert dear.cost_bps > dear.threshold_bps >= cheap.cost_bps * 0.95
    forced = rule.decide(1260 * S, 50.0, 1260 * S)
    assert forced.send and forced.reason == "deadline"


def test_threshold_is_the_time_weighted_quantile():
    # 1-tick books are in force 3 s of every 4: the 0.5 quantile is the 1-tick cost, 0.9 the
    # 3-tick cost (rounded up to its histogram bin, 2.3 %)
    day = alternating_day()
    x = 50.0
    px, sz, mid = side_arrays(day.slice(0, 4), "buy")
    c = walk_cost(px, sz, mid, [x], side="buy")[:, 0] / x / mid * 1e4
    lo, hi = c.min(), c.max()
    for q, want in ((0.5, lo), (0.9, hi)):
        rule = TimingRule("buy", SIZES, quantile=q)
        rule.observe(day)
        assert want <= rule.threshold_bps(x) <= want * 1.024


def test_half_life_forgets_the_old_books():
    # an hour of dear books, then ten minutes of cheap ones: with a short half-life the
    # median is the cheap cost, without it the dear one
    dear = books(np.arange(3600) * S, 0.05)
    cheap = books(3600 * S + np.arange(600) * S, 0.01)
    keep = TimingRule("buy", SIZES, quantile=0.5)
    forget = TimingRule("buy", SIZES, quantile=0.5, half_life_ns=120 * S)
    for r in (keep, forget):
        r.observe(dear)
        r.observe(cheap)
    assert forget.threshold_bps(50.0) < 0.5 * keep.threshold_bps(50.0)


def test_decision_refuses_a_time_before_an_observed_book():
    rule = TimingRule("buy", SIZES)
    rule.observe(books([10 * S], [0.01]))
    with pytest.raises(InvariantViolation):
        rule.decide(5 * S, 10.0, 60 * S)


def test_decisions_up_to_t_do_not_depend_on_later_books():
    day = alternating_day(2400)
    t0 = 1500 * S
    other = replace_after(day, t0)
    times = np.arange(700, 2400, 37) * S + S // 2
    out = []
    for b in (day, other):
        rule = TimingRule("buy", SIZES, min_history_ns=600 * S)
        lo, res = 0, []
        for t in times:
            hi = int(np.searchsorted(b.ts_event_ns, t, side="right"))
            rule.observe(b.slice(lo, hi))
            lo = hi
            d = rule.decide(int(t), 80.0, int(t) + 30 * S)
            res.append((d.send, d.reason, d.cost_bps, d.threshold_bps))
        out.append(res)
    for t, a, c in zip(times, *out, strict=True):
        if t <= t0:
            assert a == c
    assert any(a != c for t, a, c in zip(times, *out, strict=True) if t > t0)


def _frog() -> Path:
    for d in (REPO.parent / "shared" / "data", REPO.parents[1] / "shared" / "data"):
        p = d / "databento-mbp10" / "FROG" / "FROG_2025-04-03 00_00_00+00_00.csv"
        if p.exists():
            return p
    pytest.skip("real data not available: FROG day in ../shared/data")


@pytest.mark.realdata
def test_timed_twap_children_cost_less_than_children_at_the_period_start_on_frog():
    """TWAP children of 200 shares every 5 minutes on FROG: sent by the rule (first book at
    or below the day's 25 % quantile, else at the period's end) their walk-the-book cost is
    lower on average than sent at the period start."""
    from agent.backtest.data import load_day

    books_ = load_day(str(_frog())).books
    ts = books_.ts_event_ns
    P = 300 * S
    origin = int(ts[0]) // P * P + P
    px, sz, mid = side_arrays(books_, "buy")
    qty = 200.0
    cost = walk_cost(px, sz, mid, [qty], side="buy")[:, 0] / qty / mid * 1e4  # per book, bps
    rule = TimingRule("buy", SIZES, quantile=0.25, min_history_ns=1800 * S)
    at_start, timed = [], []
    lo = 0
    for k in range(int((int(ts[-1]) - origin) // P)):
        start, end = origin + k * P, origin + (k + 1) * P
        a = int(np.searchsorted(ts, start, side="right"))
        b = int(np.searchsorted(ts, end, side="right"))
        if a == 0 or b <= a:
            continue
        rule.observe(books_.slice(lo, a))
        lo = a
        d = rule.decide(start, qty, end - S)
        sent = a - 1 if d.send else None
        i = a
        while sent is None and i < b:  # every book of the period, in order
            rule.observe(books_.slice(i, i + 1))
            lo = i + 1
            if int(ts[i]) >= end - S or rule.decide(int(ts[i]), qty, end - S).send:
                sent = i
            i += 1
        if sent is None:
            sent = b - 1
        if k >= 6:  # after the rule's warm-up
            at_start.append(cost[a - 1])
            timed.append(cost[sent])
    assert len(timed) > 50
    gain = float(np.mean(at_start) - np.mean(timed))
    assert gain > 0, (np.mean(at_start), np.mean(timed))
    assert math.isfinite(gain)
