"""IncrementalCurve gives the batch window curve: the same numbers as re-walking the window."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from agent.core.estimator import IncrementalCurve
from agent.core.window import RollingWindow
from agent.impact.book_walk import BeyondDepth, DepthPolicy, cost_curve, time_weights
from agent.impact.fit import fit_quadratic
from feeds.model import BookBatch
from feeds.readers import read_mbp10
from tests.conftest import FROG_DAY, require

RTOL = 1e-12
# The standard deviation comes from E[C^2] - E[C]^2: the batch result itself is only within
# about 2e-12 (relative) of the exact one on FROG (checked in long double), so two correct
# summation orders cannot agree better than that.
RTOL_STD = 1e-11


def _batch_curve(window: RollingWindow, t: int, side, sizes, policy, weighting):
    v = window.view(t)
    w = time_weights(v.ts_event_ns, t) if weighting == "time" else None
    return cost_curve(v, side, sizes, policy, weights=w)


def _assert_same(inc, ref):
    assert inc.n_snapshots == ref.n_snapshots
    assert inc.n_dropped == ref.n_dropped
    np.testing.assert_array_equal(np.isnan(inc.mean_cost), np.isnan(ref.mean_cost))
    np.testing.assert_allclose(inc.mean_cost, ref.mean_cost, rtol=RTOL, atol=0)
    np.testing.assert_allclose(inc.std_cost, ref.std_cost, rtol=RTOL_STD, atol=0)
    np.testing.assert_allclose(inc.frac_beyond_depth, ref.frac_beyond_depth, rtol=RTOL, atol=0)
    assert inc.policy_used == ref.policy_used
    ka, sa = inc.segments()
    kb, sb = ref.segments()
    np.testing.assert_array_equal(ka, kb)
    np.testing.assert_allclose(sa, sb, rtol=RTOL, atol=0)
    with warnings.catch_warnings():
        # fit_quadratic takes a nanmean of an all-NaN share when every row weighs 0 (rows at
        # one event time, read at that time): numpy warns, the fit says empty_window either way.
        warnings.simplefilter("ignore", RuntimeWarning)
        fa, fb = fit_quadratic(inc), fit_quadratic(ref)
    assert fa.status == fb.status
    if fb.status == "ok":
        # Compare the fitted curves (a gamma of 1e-19 is rounding either way: NNLS at a bound).
        x = ref.sizes
        np.testing.assert_allclose(
            fa.beta * x + fa.gamma * x * x, fb.beta * x + fb.gamma * x * x, rtol=RTOL, atol=0
        )
        assert fa.n_snapshots == fb.n_snapshots
        assert fa.frac_beyond_depth == pytest.approx(fb.frac_beyond_depth, rel=RTOL, abs=0)


def _replay(batch, times, side, sizes, policy, weighting, window_ns, rng, settle=None):
    """Push ``batch`` in random pieces; at each time compare with the unthinned batch window.

    ``settle``: after each piece, ``settle`` at the piece's last row with that ``min_rows``
    (the live daemon's between-decision walk)."""
    inc = IncrementalCurve(side, sizes, policy, window_ns, weighting)
    n_settled = 0
    win = RollingWindow(batch.symbol, window_ns, max_rows=10**9)
    ts = batch.ts_event_ns
    j = 0
    n_checked = 0
    for t in times:
        k = int(np.searchsorted(ts, t, side="right"))
        while j < k:
            e = min(k, j + int(rng.integers(1, 300)))
            inc.push(batch.slice(j, e))
            win.append(batch.slice(j, e))
            if settle is not None:
                n_settled += inc.settle(int(ts[e - 1]), settle)
            j = e
        ref = _batch_curve(win, int(t), side, sizes, policy, weighting)
        _assert_same(inc.curve(int(t)), ref)
        assert inc.n_rows == len(win.view(int(t)))
        n_checked += ref.n_snapshots > 0
    assert settle is None or n_settled > len(times) // 2  # rows were walked between reads
    return inc, n_checked


@pytest.fixture(scope="module")
def frog() -> BookBatch:
    return BookBatch.concat(list(read_mbp10(require(FROG_DAY))))


@pytest.mark.parametrize("weighting", ["time", "snapshot"])
@pytest.mark.parametrize("side", ["buy", "sell"])
@pytest.mark.parametrize("settle", [None, 1, 64])
def test_incremental_equals_batch_on_frog(frog, weighting, side, settle):
    """Reads only, or rows walked between reads (``settle``): the batch numbers either way."""
    ts = frog.ts_event_ns
    times = np.linspace(ts[0] + 10**9, ts[-1] + 5 * 10**9, 60).astype(np.int64)
    sizes = np.linspace(20, 1000, 50)
    rng = np.random.default_rng(1)
    inc, n = _replay(
        frog, times, side, sizes, DepthPolicy(), weighting, 300 * 10**9, rng, settle=settle
    )
    assert n > 40
    assert inc.n_rebuilds > 0  # rows left the window and the sums were rebuilt along the way


def _synthetic(rng: np.random.Generator, n: int) -> BookBatch:
    """Ordered random books with holes, thin sides, rows without a mid and repeated times."""
    levels = 10
    mid = 50 + np.cumsum(rng.normal(0, 0.01, n))
    half = rng.integers(1, 4, n) * 0.01
    ask = mid[:, None] + half[:, None] + np.cumsum(rng.integers(0, 3, (n, levels)), 1) * 0.01
    bid = mid[:, None] - half[:, None] - np.cumsum(rng.integers(0, 3, (n, levels)), 1) * 0.01
    asz = rng.integers(1, 30, (n, levels)) * 10.0
    bsz = rng.integers(1, 30, (n, levels)) * 10.0
    for px, sz in ((ask, asz), (bid, bsz)):
        keep = rng.integers(1, levels + 1, n)
        empty = np.arange(levels)[None, :] >= keep[:, None]
        empty |= (rng.random((n, levels)) < 0.05) & (np.arange(levels)[None, :] > 0)
        empty[rng.random(n) < 0.02] = True  # a side empty: no mid, the row is dropped
        px[empty] = np.nan
        sz[empty] = 0.0
    # Gaps of 0 (same event time), short and long (longer than the window: it empties).
    gaps = rng.choice([0, 1, 5, 50, 400], size=n, p=[0.2, 0.4, 0.3, 0.09, 0.01]) * 10**7
    ts = 10**12 + np.cumsum(gaps).astype(np.int64)
    return BookBatch("SYN", ts, ts.copy(), bid, bsz, ask, asz)


@pytest.mark.parametrize("weighting", ["time", "snapshot"])
@pytest.mark.parametrize("side", ["buy", "sell"])
@pytest.mark.parametrize("kind", list(BeyondDepth))
def test_incremental_equals_batch_on_synthetic_books(weighting, side, kind):
    rng = np.random.default_rng(7)
    batch = _synthetic(rng, 4000)
    ts = batch.ts_event_ns
    # Reads at random times, some between rows, some on a row's own time, one past a long gap.
    times = np.sort(rng.integers(int(ts[0]), int(ts[-1]) + 10**9, 80))
    times = np.unique(np.concatenate([times, ts[rng.integers(0, ts.size, 20)]]))
    sizes = np.linspace(10, 600, 40)  # deep enough that some books run out
    policy = DepthPolicy(kind, 50.0)
    inc, n = _replay(batch, times, side, sizes, policy, weighting, 2 * 10**9, rng)
    assert n > 50
    assert inc.n_rebuilds > 0
    # The same reads with the rows walked as they come (a few rows at a time).
    inc, n = _replay(batch, times, side, sizes, policy, weighting, 2 * 10**9, rng, settle=8)
    assert n > 50
    assert inc.n_rebuilds > 0


def test_rows_pushed_ahead_of_the_read_wait_until_their_time():
    """A read at t ignores rows after t, as RollingWindow.view(t) does."""
    rng = np.random.default_rng(3)
    batch = _synthetic(rng, 600)
    ts = batch.ts_event_ns
    inc = IncrementalCurve("buy", np.linspace(10, 300, 20), DepthPolicy(), 10**9, "time")
    win = RollingWindow("SYN", 10**9, max_rows=10**9)
    inc.push(batch)  # everything at once, long before it is read
    win.append(batch)
    for t in np.linspace(ts[0], ts[-1], 25).astype(np.int64):
        ref = _batch_curve(win, int(t), "buy", inc.sizes, DepthPolicy(), "time")
        _assert_same(inc.curve(int(t)), ref)


def test_one_instance_serves_several_parents():
    """Two parents reading the shared curve at their own (interleaved) times get the batch."""
    rng = np.random.default_rng(5)
    batch = _synthetic(rng, 2000)
    ts = batch.ts_event_ns
    sizes = np.linspace(10, 300, 20)
    shared = IncrementalCurve("sell", sizes, DepthPolicy(), 3 * 10**9, "time")
    win = RollingWindow("SYN", 3 * 10**9, max_rows=10**9)
    a_times = np.linspace(ts[0], ts[-1], 30).astype(np.int64)
    b_times = a_times + 7 * 10**7
    j = 0
    for t in np.sort(np.concatenate([a_times, b_times])):
        k = int(np.searchsorted(ts, t, side="right"))
        if k > j:
            shared.push(batch.slice(j, k))
            win.append(batch.slice(j, k))
            j = k
        ref = _batch_curve(win, int(t), "sell", sizes, DepthPolicy(), "time")
        _assert_same(shared.curve(int(t)), ref)


def test_contract_errors():
    inc = IncrementalCurve("buy", [1.0, 2.0], DepthPolicy(), 10**9, "time")
    rng = np.random.default_rng(0)
    b = _synthetic(rng, 10)
    inc.push(b.slice(5, 10))
    with pytest.raises(ValueError, match="event-time order"):
        inc.push(b.slice(0, 5))
    inc.curve(int(b.ts_event_ns[-1]))
    with pytest.raises(ValueError, match="after a read"):
        inc.curve(int(b.ts_event_ns[0]) - 1)
    with pytest.raises(ValueError, match="weighting"):
        IncrementalCurve("buy", [1.0], DepthPolicy(), 10**9, "decay")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="window_ns"):
        IncrementalCurve("buy", [1.0], DepthPolicy(), 0, "time")
    empty = IncrementalCurve("buy", [1.0, 2.0], DepthPolicy(), 10**9, "snapshot").curve(0)
    assert empty.n_snapshots == 0 and np.isnan(empty.mean_cost).all()


def test_curve_bank_shares_one_curve_per_estimate_and_feeds_each_once():
    from agent.core.estimator import CurveBank

    bank = CurveBank()
    sizes = np.linspace(10, 300, 20)
    a = bank.curve_for("SYN", "buy", sizes, DepthPolicy(), 10**9, "time")
    b = bank.curve_for("SYN", "buy", sizes.copy(), DepthPolicy(), 10**9, "time")
    c = bank.curve_for("SYN", "sell", sizes, DepthPolicy(), 10**9, "time")
    d = bank.curve_for("SYN", "buy", sizes * 2, DepthPolicy(), 10**9, "time")
    e = bank.curve_for("OTHER", "buy", sizes, DepthPolicy(), 10**9, "time")
    assert a is b and len({id(a), id(c), id(d), id(e)}) == 4 and len(bank) == 4
    batch = _synthetic(np.random.default_rng(2), 300)
    win = RollingWindow("SYN", 10**9, max_rows=10**9)
    bank.push(batch)
    win.append(batch)
    t = int(batch.ts_event_ns[-1])
    _assert_same(a.curve(t), _batch_curve(win, t, "buy", sizes, DepthPolicy(), "time"))
    _assert_same(c.curve(t), _batch_curve(win, t, "sell", sizes, DepthPolicy(), "time"))
    assert e.curve(t).n_snapshots == 0  # another symbol's books never reach it


def test_shared_curves_serve_every_grid_as_its_own_curve():
    """Parents' different size grids read from one walk of each book (the union grid) get the
    numbers of a curve on their own grid; a grid asked for after the first book starts empty."""
    from agent.core.estimator import SharedCurves

    rng = np.random.default_rng(11)
    batch = _synthetic(rng, 3000)
    ts = batch.ts_event_ns
    policy = DepthPolicy(BeyondDepth.PENALTY, 50.0)
    grids = [np.linspace(x / 20, x, 20) for x in (120.0, 300.0, 450.0)] + [np.geomspace(5, 600, 9)]
    shared = SharedCurves("buy", policy, 2 * 10**9, "time")
    views = [shared.view(g) for g in grids]
    own = [IncrementalCurve("buy", g, policy, 2 * 10**9, "time") for g in grids]
    times = np.sort(rng.integers(int(ts[0]), int(ts[-1]), 40))
    j = 0
    late = None
    for n, t in enumerate(times):
        k = int(np.searchsorted(ts, t, side="right"))
        if k > j:
            views[0].push(batch.slice(j, k))  # through any view: the rows reach the shared walk
            for c in own:
                c.push(batch.slice(j, k))
            j = k
        if n == 0:
            late = shared.view(np.linspace(7, 77, 11))  # not in the union: its own, empty curve
        for v, c in zip(views, own, strict=True):
            got, want = v.curve(int(t)), c.curve(int(t))
            np.testing.assert_array_equal(got.sizes, c.sizes)
            _assert_same(got, want)
            assert v.n_rows == c.n_rows
    assert len(shared.curves) == 2 and late is not None  # the union, and the late grid's own


def test_a_second_read_at_the_same_time_is_the_first():
    inc = IncrementalCurve("sell", np.linspace(10, 300, 20), DepthPolicy(), 10**9, "time")
    batch = _synthetic(np.random.default_rng(4), 200)
    inc.push(batch)
    t = int(batch.ts_event_ns[-1]) + 10**7
    a = inc.curve(t)
    assert inc.curve(t) is a  # parents deciding at one instant: one read
    inc.push(BookBatch.empty("SYN"))  # nothing new: the same read
    assert inc.curve(t) is a
    more = _synthetic(np.random.default_rng(5), 10)
    shifted = BookBatch(
        "SYN",
        more.ts_event_ns - more.ts_event_ns[0] + t,
        more.ts_recv_ns - more.ts_event_ns[0] + t,
        more.bid_px,
        more.bid_sz,
        more.ask_px,
        more.ask_sz,
    )
    inc.push(shifted)  # a row at t itself arrives after the read: the next read takes it in
    assert inc.curve(t) is not a


def test_settle_walks_rows_before_the_read_and_a_settle_before_a_read_is_as_of_it():
    """``settle`` does a read's walk early: queued rows are taken in (once enough wait), the
    read at that time finds nothing left to walk. A settle earlier than the last read (books
    from before a decision taken ahead of its period, ``ParentParams.lead_ns``) walks them in
    as of that read: the next read equals the window computed from scratch."""
    rng = np.random.default_rng(3)
    batch = _synthetic(rng, 300)
    ts = batch.ts_event_ns
    inc = IncrementalCurve("buy", np.linspace(10, 600, 20), DepthPolicy(), 10**12)
    inc.push(batch.slice(0, 10))
    assert not inc.settle(int(ts[9]), min_rows=64)  # too few rows wait: nothing done
    inc.push(batch.slice(10, 200))
    assert inc.settle(int(ts[199]), min_rows=64)
    assert inc._pending_rows == 0 and inc.n_rows == 200
    ref = IncrementalCurve("buy", np.linspace(10, 600, 20), DepthPolicy(), 10**12)
    ref.push(batch.slice(0, 200))
    t = int(ts[199]) + 1
    np.testing.assert_allclose(inc.curve(t).mean_cost, ref.curve(t).mean_cost, rtol=1e-12)
    # Read ahead at ts[260]; books up to ts[259] arrive after it and settle at their own times.
    ahead = int(ts[260])
    inc.curve(ahead)
    ref.curve(ahead)
    for i in range(200, 260, 20):
        inc.push(batch.slice(i, i + 20))
        ref.push(batch.slice(i, i + 20))
        inc.settle(int(ts[i + 19]), min_rows=1)
    inc.push(batch.slice(260, 300))
    ref.push(batch.slice(260, 300))
    t2 = int(ts[299]) + 1
    np.testing.assert_allclose(inc.curve(t2).mean_cost, ref.curve(t2).mean_cost, rtol=1e-12)
    full = IncrementalCurve("buy", np.linspace(10, 600, 20), DepthPolicy(), 10**12)
    full.push(batch)
    np.testing.assert_allclose(inc.curve(t2).mean_cost, full.curve(t2).mean_cost, rtol=1e-12)


def test_a_read_before_the_last_settle_is_read_at_the_settle():
    """A parent added late may decide an instant whose books are already walked in: its read
    is not an error (that would stop the symbol) but the window at the settle's time."""
    rng = np.random.default_rng(4)
    batch = _synthetic(rng, 300)
    ts = batch.ts_event_ns
    grid = np.linspace(10, 600, 20)
    inc = IncrementalCurve("buy", grid, DepthPolicy(), 10**12)
    inc.push(batch.slice(0, 250))
    assert inc.settle(int(ts[249]), min_rows=1)
    early = inc.curve(int(ts[100]))  # before the settle
    ref = IncrementalCurve("buy", grid, DepthPolicy(), 10**12)
    ref.push(batch.slice(0, 250))
    at_settle = ref.curve(int(ts[249]))
    np.testing.assert_allclose(early.mean_cost, at_settle.mean_cost, rtol=1e-12, equal_nan=True)
    assert (early.n_snapshots, early.n_dropped) == (at_settle.n_snapshots, at_settle.n_dropped)
    inc.push(batch.slice(250, 300))
    ref.push(batch.slice(250, 300))
    later = inc.curve(int(ts[299]))  # reads go on from there
    assert later.n_snapshots == ref.curve(int(ts[299])).n_snapshots > at_settle.n_snapshots


@pytest.mark.parametrize("weighting", ["time", "snapshot"])
@pytest.mark.parametrize("settle", [None, 64])
def test_walking_rows_again_when_they_leave_gives_the_same_bits(
    frog, weighting, settle, monkeypatch
):
    """Past ``_KEEP_WALK_ROWS`` a window walks its rows again when they leave instead of
    keeping their walks: the curves are those of the kept walks, bit for bit."""
    import agent.core.estimator as est

    ts = frog.ts_event_ns
    times = np.linspace(ts[0] + 10**9, ts[-1] + 5 * 10**9, 40).astype(np.int64)
    sizes = np.linspace(20, 1000, 50)

    def run(keep_rows: int) -> tuple[list, IncrementalCurve]:
        monkeypatch.setattr(est, "_KEEP_WALK_ROWS", keep_rows)
        rng = np.random.default_rng(3)
        inc = IncrementalCurve("sell", sizes, DepthPolicy(), 120 * 10**9, weighting)
        out, j = [], 0
        for t in times:
            k = int(np.searchsorted(ts, t, side="right"))
            while j < k:
                e = min(k, j + int(rng.integers(1, 300)))
                inc.push(frog.slice(j, e))
                if settle is not None:
                    inc.settle(int(ts[e - 1]), settle)
                j = e
            out.append(inc.curve(int(t)))
        return out, inc

    kept, a = run(10**9)
    again, b = run(0)
    assert all(c.walk is not None for c in a._chunks)
    assert all(c.walk is None for c in b._chunks)  # nothing kept: walked when summed
    assert b.n_rebuilds > 0
    for x, y in zip(kept, again, strict=True):
        for name in ("mean_cost", "std_cost", "frac_beyond_depth"):
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name), err_msg=name)
        assert (x.n_snapshots, x.n_dropped) == (y.n_snapshots, y.n_dropped)
