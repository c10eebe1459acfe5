"""Walk-the-book cost: hand-computed books, a plain-loop reference, the kink accumulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.impact.book_walk import (
    BeyondDepth,
    CostCurve,
    CurveAccumulator,
    DepthPolicy,
    book_curve,
    cost_curve,
    side_arrays,
    walk_cost,
)
from feeds.model import BookBatch

NAN = math.nan
PENALTY = DepthPolicy(BeyondDepth.PENALTY, 100.0)
EXTRAP = DepthPolicy(BeyondDepth.EXTRAPOLATE)
REFUSE = DepthPolicy(BeyondDepth.REFUSE)


def _batch(
    bids: list[list[tuple[float, float]]], asks: list[list[tuple[float, float]]], levels: int = 10
) -> BookBatch:
    """Build a batch from per-row (price, size) lists; missing levels are empty."""
    n = len(bids)
    bp = np.full((n, levels), np.nan)
    bs = np.zeros((n, levels))
    ap = np.full((n, levels), np.nan)
    as_ = np.zeros((n, levels))
    for i in range(n):
        for lev, (p, s) in enumerate(bids[i]):
            bp[i, lev], bs[i, lev] = p, s
        for lev, (p, s) in enumerate(asks[i]):
            ap[i, lev], as_[i, lev] = p, s
    ts = np.arange(n, dtype=np.int64) * 1_000_000_000
    return BookBatch("TEST", ts, ts.copy(), bp, bs, ap, as_)


# Mid 100 everywhere; prices in quarters so every cost below is exact in binary.
ROW_A_BIDS = [(99.75, 400), (99.5, 400)]
ROW_A_ASKS = [(100.25, 100), (100.5, 200), (NAN, 0), (101.0, 300)]  # a hole, then trailing empties
ROW_B_BIDS = [(99.75 - 0.25 * lev, 100) for lev in range(10)]
ROW_B_ASKS = [(100.25 + 0.25 * lev, 100) for lev in range(10)]


def _loop_cost(px_row, sz_row, mid, x, policy, side):
    """Plain-Python walk of one snapshot (the reference): total cost against the mid."""
    sign = 1.0 if side == "buy" else -1.0
    remaining, cost = x, 0.0
    first_d = sign * (px_row[0] - mid)
    first_s = sz_row[0] if np.isfinite(px_row[0]) else 0.0
    last_d, last_px, last_s, depth = first_d, px_row[0], 0.0, 0.0
    for p, s in zip(px_row, sz_row, strict=True):
        if not np.isfinite(p) or not s > 0:
            continue
        d = sign * (p - mid)
        take = min(remaining, s)
        cost += take * d
        remaining -= take
        depth += s
        last_d, last_px, last_s = d, p, s
    if remaining <= 0:
        return cost
    if policy.kind is BeyondDepth.REFUSE:
        return NAN
    if policy.kind is BeyondDepth.PENALTY:
        return cost + remaining * (last_d + abs(last_px) * policy.penalty_bps * 1e-4)
    span = depth - last_s / 2 - first_s / 2
    k = max(0.0, (last_d - first_d) / span) if span > 0 else 0.0
    e = last_d + k * last_s / 2
    return cost + remaining * e + k * remaining**2 / 2


@pytest.mark.parametrize(
    ("side", "sizes", "policy", "expected"),
    [
        ("buy", [50, 100, 250, 600], PENALTY, [12.5, 25.0, 100.0, 425.0]),
        ("buy", [700], PENALTY, [425.0 + 100 * (101.0 * 1.01 - 100.0)]),
        ("buy", [700], EXTRAP, [562.5]),
        ("buy", [600, 700], REFUSE, [425.0, NAN]),
        ("sell", [100, 500, 800], PENALTY, [25.0, 150.0, 300.0]),
        ("sell", [1000], PENALTY, [300.0 + 200 * (100.0 - 99.5 * 0.99)]),
        ("sell", [1000], EXTRAP, [437.5]),
        ("sell", [800, 801], REFUSE, [300.0, NAN]),
    ],
)
def test_walk_cost_matches_hand_computed_book(side, sizes, policy, expected):
    """Known curve of a book with a hole, trailing empty levels and a size past the depth.

    Buy walks asks 100.25x100, 100.5x200, (empty), 101x300 (depth 600); sell walks bids
    99.75x400, 99.5x400 (depth 800). Extrapolation: slope k = (d_last - d_0) / (D - s_last/2 -
    s_0/2); buy k = 0.75/400, 100 shares past depth cost 100*(1 + 150k) + k*100**2/2 = 137.5.
    """
    batch = _batch([ROW_A_BIDS], [ROW_A_ASKS])
    px, sz, mid = side_arrays(batch, side)

    got = walk_cost(px, sz, mid, np.array(sizes, dtype=float), policy, side=side)

    np.testing.assert_allclose(got[0], expected, rtol=1e-12, equal_nan=True)


def test_cost_curve_is_window_mean_std_and_depth_share():
    """Mean, population std and beyond-depth share over two hand-made rows."""
    batch = _batch([ROW_A_BIDS, ROW_B_BIDS], [ROW_A_ASKS, ROW_B_ASKS])
    sizes = np.array([100.0, 600.0, 700.0, 1000.0, 1100.0])
    # Row B asks: 100 shares per level at 0.25, 0.5, ..., 2.5 from the mid.
    row_b = np.array([25.0, 25 + 50 + 75 + 100 + 125 + 150, 525 + 175, 0.0, 0.0])
    row_b[3] = sum(25.0 * (lev + 1) for lev in range(10))
    row_b[4] = row_b[3] + 100 * (100.25 + 0.25 * 9) * 1.01 - 100 * 100
    row_a = np.array([25.0, 425.0, 626.0, 0.0, 0.0])
    row_a[3] = 425 + 400 * (101.0 * 1.01 - 100)
    row_a[4] = 425 + 500 * (101.0 * 1.01 - 100)

    curve = cost_curve(batch, "buy", sizes, PENALTY)

    both = np.vstack([row_a, row_b])
    np.testing.assert_allclose(curve.mean_cost, both.mean(0), rtol=1e-12)
    np.testing.assert_allclose(curve.std_cost, both.std(0), rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(curve.frac_beyond_depth, [0, 0, 0.5, 0.5, 1.0])
    assert curve.n_snapshots == 2
    assert curve.policy_used


def test_refuse_makes_curve_unknown_where_any_snapshot_runs_out():
    """Under REFUSE the mean is NaN from the first size some snapshot cannot fill."""
    batch = _batch([ROW_A_BIDS, ROW_B_BIDS], [ROW_A_ASKS, ROW_B_ASKS])

    curve = cost_curve(batch, "buy", np.array([100.0, 600.0, 601.0]), REFUSE)

    assert np.isfinite(curve.mean_cost[:2]).all()
    assert np.isnan(curve.mean_cost[2]) and np.isnan(curve.std_cost[2])
    knots, slopes = curve.segments()
    np.testing.assert_array_equal(knots, [0.0, 100.0, 600.0])
    assert slopes.size == 2


def _random_books(rng: np.random.Generator, n: int, levels: int = 10) -> BookBatch:
    """Random ordered books: gaps of 1-3 ticks, random depth, trailing and inner empty levels."""
    mid = 20 + rng.random(n) * 5
    half = rng.integers(1, 4, n) * 0.01
    ask = mid[:, None] + half[:, None] + np.cumsum(rng.integers(0, 3, (n, levels)), 1) * 0.01
    bid = mid[:, None] - half[:, None] - np.cumsum(rng.integers(0, 3, (n, levels)), 1) * 0.01
    asz = rng.integers(1, 30, (n, levels)) * 100.0
    bsz = rng.integers(1, 30, (n, levels)) * 100.0
    for px, sz in ((ask, asz), (bid, bsz)):
        keep = rng.integers(1, levels + 1, n)
        empty = np.arange(levels)[None, :] >= keep[:, None]
        empty |= (rng.random((n, levels)) < 0.05) & (np.arange(levels)[None, :] > 0)
        px[empty] = np.nan
        sz[empty] = 0.0
    ts = np.arange(n, dtype=np.int64)
    return BookBatch("RND", ts, ts.copy(), bid, bsz, ask, asz)


@pytest.mark.parametrize("side", ["buy", "sell"])
@pytest.mark.parametrize("kind", list(BeyondDepth))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_walk_equals_plain_loop_on_random_books(side, kind, seed):
    """walk_cost (per level, vectorised) equals the plain loop row by row, size by size."""
    rng = np.random.default_rng(seed)
    batch = _random_books(rng, 60)
    sizes = np.sort(rng.choice(np.arange(50, 30_000, 50), 25, replace=False)).astype(float)
    policy = DepthPolicy(kind, penalty_bps=float(rng.uniform(0, 300)))
    px, sz, mid = side_arrays(batch, side)

    got = walk_cost(px, sz, mid, sizes, policy, side=side)

    ref = np.array(
        [
            [_loop_cost(px[i], sz[i], mid[i], x, policy, side) for x in sizes]
            for i in range(len(batch))
        ]
    )
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-9, equal_nan=True)


@pytest.mark.parametrize("side", ["buy", "sell"])
@pytest.mark.parametrize("kind", list(BeyondDepth))
@pytest.mark.parametrize("grid", ["uniform", "irregular"])
def test_kink_accumulation_equals_row_matrix_moments(side, kind, grid):
    """cost_curve (kinks binned, two cumsums) gives walk_cost's mean, std and depth share."""
    rng = np.random.default_rng(7)
    batch = _random_books(rng, 3000)
    if grid == "uniform":
        sizes = np.arange(100.0, 10_001.0, 100.0)
    else:
        sizes = np.unique(np.round(np.geomspace(10, 40_000, 80)))
    policy = DepthPolicy(kind)
    px, sz, mid = side_arrays(batch, side)

    curve = cost_curve(batch, side, sizes, policy)

    mat = walk_cost(px, sz, mid, sizes, policy, side=side)
    depth = sz.sum(1)
    frac = (depth[:, None] < sizes[None, :]).mean(0)
    np.testing.assert_allclose(curve.frac_beyond_depth, frac, rtol=0, atol=1e-15)
    if kind is BeyondDepth.REFUSE:
        mat = np.where(frac[None, :] > 0, np.nan, mat)
    scale = float(np.nanmax(np.abs(mat)))
    mean = np.where(np.isnan(mat).any(0), np.nan, mat.mean(0))
    std = np.where(np.isnan(mat).any(0), np.nan, mat.std(0))
    np.testing.assert_allclose(curve.mean_cost, mean, rtol=1e-11, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(curve.std_cost, std, rtol=1e-7, atol=1e-9 * scale, equal_nan=True)


def test_mean_curve_is_convex_and_segments_are_monotone():
    """The window mean of convex piecewise-linear curves is convex; segments() slopes rise."""
    rng = np.random.default_rng(3)
    batch = _random_books(rng, 2000)

    curve = cost_curve(batch, "buy", np.arange(100.0, 20_001.0, 100.0), EXTRAP)

    knots, slopes = curve.segments()
    raw = np.diff(np.r_[0.0, curve.mean_cost]) / np.diff(knots)
    assert np.all(np.diff(raw) >= -1e-9 * np.abs(raw).max())
    assert np.all(np.diff(slopes) >= 0)


def test_rows_without_a_mid_are_dropped_and_counted():
    """A snapshot with an empty side has no mid: it is left out and counted in n_dropped."""
    batch = _batch([ROW_A_BIDS, []], [ROW_A_ASKS, ROW_A_ASKS])

    curve = cost_curve(batch, "buy", np.array([100.0]), PENALTY)
    px, sz, mid = side_arrays(batch, "buy")
    mat = walk_cost(px, sz, mid, np.array([100.0]), PENALTY)

    assert curve.n_snapshots == 1 and curve.n_dropped == 1
    assert curve.mean_cost[0] == 25.0
    assert mat[0, 0] == 25.0 and np.isnan(mat[1, 0])


def test_empty_window_gives_nan_curve_not_an_error():
    """An empty window is a result (NaN curve, zero snapshots), not an exception."""
    curve = cost_curve(BookBatch.empty("X"), "sell", np.array([100.0, 200.0]))

    assert curve.n_snapshots == 0
    assert np.isnan(curve.mean_cost).all() and np.isnan(curve.frac_beyond_depth).all()
    assert not curve.policy_used


def test_accumulator_merge_equals_one_pass():
    """Curves are additive over disjoint rows: merging two halves equals one pass."""
    rng = np.random.default_rng(11)
    batch = _random_books(rng, 5000)
    sizes = np.arange(500.0, 30_001.0, 500.0)
    left = CurveAccumulator(sizes, "sell", PENALTY)
    right = CurveAccumulator(sizes, "sell", PENALTY)

    left.add(batch.slice(0, 1234))
    right.add(batch.slice(1234, 5000))
    left.merge(right)

    whole = cost_curve(batch, "sell", sizes, PENALTY)
    merged = left.result()
    np.testing.assert_allclose(merged.mean_cost, whole.mean_cost, rtol=1e-12)
    np.testing.assert_allclose(merged.std_cost, whole.std_cost, rtol=1e-9)
    assert merged.n_snapshots == whole.n_snapshots == 5000
    with pytest.raises(ValueError, match="merge"):
        left.merge(CurveAccumulator(sizes, "buy", PENALTY))


@pytest.mark.parametrize("bad", [[], [0.0, 1.0], [2.0, 1.0], [1.0, np.inf]])
def test_bad_sizes_are_rejected(bad):
    """Sizes must be a non-empty, positive, strictly increasing grid (a broken contract)."""
    with pytest.raises(ValueError, match="sizes"):
        CurveAccumulator(np.array(bad), "buy")


def test_policy_validation_and_description():
    """Penalty must be finite and >= 0; strings coerce to the enum; describe() names the rule."""
    assert DepthPolicy("penalty", 50).kind is BeyondDepth.PENALTY
    assert "50 bps" in DepthPolicy("penalty", 50).describe()
    assert "extrapolate" in EXTRAP.describe() and "refuse" in REFUSE.describe()
    with pytest.raises(ValueError, match="penalty_bps"):
        DepthPolicy(BeyondDepth.PENALTY, -1.0)
    with pytest.raises(ValueError):
        DepthPolicy("sideways")
    with pytest.raises(ValueError, match="side"):
        cost_curve(BookBatch.empty("X"), "hold", np.array([1.0]))  # type: ignore[arg-type]


def test_cost_curve_dataclass_helpers():
    """mean_slippage is g(x)/x; segments() of an all-NaN curve is empty."""
    sizes = np.array([100.0, 200.0])
    curve = CostCurve(sizes, np.array([1.0, 4.0]), np.zeros(2), 3, np.zeros(2))
    np.testing.assert_allclose(curve.mean_slippage, [0.01, 0.02])
    empty = CostCurve(sizes, np.full(2, np.nan), np.full(2, np.nan), 0, np.full(2, np.nan))
    knots, slopes = empty.segments()
    assert knots.tolist() == [0.0] and slopes.size == 0


def test_shape_and_side_contracts():
    """Mismatched arrays and unknown sides are broken contracts: ValueError."""
    batch = _batch([ROW_A_BIDS], [ROW_A_ASKS])
    px, sz, mid = side_arrays(batch, "buy")
    with pytest.raises(ValueError, match="side"):
        side_arrays(batch, "hold")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shapes"):
        walk_cost(px, sz[:, :5], mid, np.array([1.0]))


def test_chunk_with_only_dropped_rows_adds_nothing():
    """A batch whose rows all lack a mid leaves the accumulator empty but counts the drops."""
    acc = CurveAccumulator(np.array([100.0]), "buy")
    batch = _batch([[]], [ROW_A_ASKS])

    acc.add(batch)

    assert acc.n_snapshots == 0 and acc.n_dropped == 1
    assert np.isnan(acc.result().mean_cost).all()


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def _books_and_grid(draw):
    """A few ordered one-sided books (random gaps, sizes, empty levels) and a size grid."""
    n = draw(st.integers(1, 6))
    levels = draw(st.integers(1, 10))
    mid = draw(st.floats(1.0, 500.0))
    gaps = draw(
        st.lists(
            st.lists(st.floats(0.0, 2.0), min_size=levels, max_size=levels), min_size=n, max_size=n
        )
    )
    sizes = draw(
        st.lists(
            st.lists(
                st.sampled_from([0.0, 1.0, 37.5, 100.0, 250.0, 1e4]),
                min_size=levels,
                max_size=levels,
            ),
            min_size=n,
            max_size=n,
        )
    )
    px = mid + 0.005 + np.cumsum(np.array(gaps), axis=1)
    sz = np.array(sizes)
    px[sz == 0] = np.nan
    px[:, 0] = np.where(np.isnan(px[:, 0]), mid + 0.005, px[:, 0])
    grid = np.unique(np.array(draw(st.lists(st.floats(0.5, 5e4), min_size=1, max_size=30))))
    return px, sz, np.full(n, mid), grid


@settings(max_examples=80, deadline=None)
@given(
    data=_books_and_grid(),
    kind=st.sampled_from(list(BeyondDepth)),
    side=st.sampled_from(["buy", "sell"]),
)
def test_property_three_implementations_agree(data, kind, side):
    """Plain loop, per-level matrix and kink accumulation agree on arbitrary ordered books."""
    px, sz, mid, grid = data
    if side == "sell":  # mirror the asks into bids
        px = 2 * mid[:, None] - px
    policy = DepthPolicy(kind, 100.0)

    mat = walk_cost(px, sz, mid, grid, policy, side=side)
    acc = CurveAccumulator(grid, side, policy)
    acc.add_arrays(px, sz, mid)
    curve = acc.result()

    ref = np.array(
        [
            [_loop_cost(px[i], sz[i], mid[i], x, policy, side) for x in grid]
            for i in range(px.shape[0])
        ]
    )
    scale = max(1.0, float(np.nanmax(np.abs(ref), initial=0.0)))
    np.testing.assert_allclose(mat, ref, rtol=1e-10, atol=1e-10 * scale, equal_nan=True)
    unknown = np.isnan(ref).any(axis=0)
    mean = np.where(unknown, np.nan, ref.mean(axis=0))
    np.testing.assert_allclose(curve.mean_cost, mean, rtol=1e-9, atol=1e-9 * scale, equal_nan=True)
    rise = np.diff(mat, axis=1)
    assert np.all(rise[np.isfinite(rise)] >= -1e-9 * scale)  # cost rises with x


def test_integer_weights_equal_repeated_rows_and_ones_equal_unweighted():
    """Weighting a row by k is repeating it k times; weights of 1 change nothing."""
    from agent.impact.book_walk import time_weights

    rng = np.random.default_rng(21)
    batch = _random_books(rng, 300)
    sizes = np.arange(100.0, 20_001.0, 300.0)
    k = rng.integers(0, 4, len(batch))

    weighted = cost_curve(batch, "buy", sizes, EXTRAP, weights=k.astype(float))
    repeated = cost_curve(batch.take(np.repeat(np.arange(len(batch)), k)), "buy", sizes, EXTRAP)
    ones = cost_curve(batch, "buy", sizes, EXTRAP, weights=np.ones(len(batch)))
    plain = cost_curve(batch, "buy", sizes, EXTRAP)

    np.testing.assert_allclose(weighted.mean_cost, repeated.mean_cost, rtol=1e-11)
    np.testing.assert_allclose(weighted.std_cost, repeated.std_cost, rtol=1e-7)
    np.testing.assert_allclose(weighted.frac_beyond_depth, repeated.frac_beyond_depth)
    np.testing.assert_allclose(ones.mean_cost, plain.mean_cost, rtol=1e-13)
    assert weighted.n_snapshots == len(batch)
    np.testing.assert_allclose(
        time_weights(np.array([0, 10**9, 3 * 10**9]), 4 * 10**9), [1.0, 2.0, 1.0]
    )
    assert time_weights(np.array([5]), None).tolist() == [0.0]
    assert time_weights(np.empty(0, dtype=np.int64)).size == 0
    with pytest.raises(ValueError, match="weights"):
        cost_curve(batch, "buy", sizes, weights=-np.ones(len(batch)))
    zero = cost_curve(batch, "buy", sizes, weights=np.zeros(len(batch)))
    assert np.isnan(zero.mean_cost).all() and zero.n_snapshots == len(batch)


def test_bin_table_of_a_union_grid_gives_the_binary_search_bins():
    """The union of parents' grids (not arithmetic) bins kinks through a table of cells: the
    same bins as a binary search, so the same curve bit for bit."""
    rng = np.random.default_rng(17)
    for trial in range(40):
        grids = [np.linspace(m / 50, m, 50) for m in rng.uniform(100, 20000, 1 + trial % 16)]
        x = np.unique(np.concatenate([*grids, rng.uniform(1, 30000, trial % 3)]))
        acc = CurveAccumulator(x, "buy")
        assert acc._cells is not None, trial
        pos = np.concatenate(
            [rng.uniform(0, x[-1] * 1.2, 5000), x, np.nextafter(x, 0), np.nextafter(x, np.inf)]
        )
        np.testing.assert_array_equal(
            acc._bin(pos.copy()), np.searchsorted(x, pos, side="left"), err_msg=str(trial)
        )
    books = _random_books(rng, 3000)
    with_table = CurveAccumulator(x, "sell")
    searched = CurveAccumulator(x, "sell")
    searched._cells = None
    with_table.add(books)
    searched.add(books)
    a, b = with_table.result(), searched.result()
    np.testing.assert_array_equal(a.mean_cost, b.mean_cost)
    np.testing.assert_array_equal(a.std_cost, b.std_cost)


@pytest.mark.parametrize("side", ["buy", "sell"])
@pytest.mark.parametrize("kind", list(BeyondDepth))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_book_curve_equals_the_plain_loop_and_the_accumulator(side, kind, seed):
    """book_curve (the current period's price) is the last row's walk: the plain loop to
    1e-12, the accumulator's curve of that one row in mean, depth share and NaNs."""
    rng = np.random.default_rng(seed)
    batch = _random_books(rng, 40)
    sizes = np.sort(rng.choice(np.arange(50, 30_000, 50), 25, replace=False)).astype(float)
    policy = DepthPolicy(kind, penalty_bps=float(rng.uniform(0, 300)))
    px, sz, mid = side_arrays(batch, side)
    for i in range(len(batch)):
        got = book_curve(batch.slice(0, i + 1), side, sizes, policy)
        loop = [_loop_cost(px[i], sz[i], mid[i], x, policy, side) for x in sizes]
        ref = cost_curve(batch.slice(i, i + 1), side, sizes, policy)
        np.testing.assert_allclose(got.mean_cost, loop, rtol=1e-12, atol=1e-9, equal_nan=True)
        np.testing.assert_allclose(got.mean_cost, ref.mean_cost, rtol=1e-12, equal_nan=True)
        np.testing.assert_array_equal(got.frac_beyond_depth, ref.frac_beyond_depth)
        assert (got.n_snapshots, got.n_dropped) == (ref.n_snapshots, ref.n_dropped) == (1, 0)
        assert np.all((got.std_cost == 0) | np.isnan(got.mean_cost))


def test_one_book_curve_of_a_real_day_equals_the_accumulator():
    """Every 50th book of a real day (FROG), both sides, every policy, the project's grid."""
    from feeds.readers import read_mbp10
    from tests.conftest import FROG_DAY, require

    batch = next(iter(read_mbp10(require(FROG_DAY))))
    sizes = np.linspace(10, 5000, 50)
    for side in ("buy", "sell"):
        for policy in (EXTRAP, PENALTY, REFUSE):
            for i in range(0, len(batch), 50):
                got = book_curve(batch.slice(i, i + 1), side, sizes, policy)
                ref = cost_curve(batch.slice(i, i + 1), side, sizes, policy)
                np.testing.assert_allclose(
                    got.mean_cost, ref.mean_cost, rtol=1e-12, atol=1e-12, equal_nan=True
                )
                np.testing.assert_array_equal(got.frac_beyond_depth, ref.frac_beyond_depth)
                assert (got.n_snapshots, got.n_dropped) == (ref.n_snapshots, ref.n_dropped)


def test_one_book_curve_of_nothing_or_a_book_without_a_mid():
    sizes = np.array([100.0, 200.0])
    empty = book_curve(BookBatch.empty("X"), "buy", sizes, EXTRAP)
    assert empty.n_snapshots == 0 and np.isnan(empty.mean_cost).all()
    bad = _batch([[]], [[(10.0, 100.0)]])
    c = book_curve(bad, "buy", sizes, EXTRAP)
    ref = cost_curve(bad, "buy", sizes, EXTRAP)
    assert (c.n_snapshots, c.n_dropped) == (ref.n_snapshots, ref.n_dropped) == (0, 1)
    assert np.isnan(c.mean_cost).all()


def _walks(acc: CurveAccumulator, px, sz, mid, monkeypatch):
    """Return (plain-float walk, vectorised walk) of the same rows (the compiled walk off:
    ``tests/unit/test_book_walk_kernels.py`` checks it)."""
    import agent.impact.book_walk as bw

    with monkeypatch.context() as m:
        m.setattr(bw, "_walk_rows", None)
        few = acc.walk(px, sz, mid)
        m.setattr(bw, "_FEW_ROWS", 0)
        vec = acc.walk(px, sz, mid)
    return few, vec


def _assert_same_walk(few, vec, what: str) -> None:
    for name in ("keep", "keep_at", "ivis", "dvis", "ilast", "dlast", "jdx"):
        a, b = getattr(few, name), getattr(vec, name)
        assert a.shape == b.shape and a.dtype == b.dtype, (what, name, a.shape, b.shape)
        np.testing.assert_array_equal(a, b, err_msg=f"{what}: {name}")


@pytest.mark.parametrize("side", ["buy", "sell"])
@pytest.mark.parametrize("kind", list(BeyondDepth))
@pytest.mark.parametrize("grid", ["arithmetic", "union", "irregular"])
def test_walk_of_a_few_rows_in_floats_is_the_vectorised_walk_bit_for_bit(
    side, kind, grid, monkeypatch
):
    """A live window walks one to four rows at a time in plain floats: every array it gives
    add_walked (bins and coefficient changes) equals the vectorised walk's exactly."""
    rng = np.random.default_rng(hash((side, str(kind), grid)) % 2**32)
    if grid == "arithmetic":
        sizes = np.arange(100.0, 30_001.0, 100.0)
    elif grid == "union":
        sizes = np.unique(np.concatenate([np.linspace(m / 50, m, 50) for m in (3e3, 7e3, 2e4)]))
    else:
        sizes = np.sort(rng.choice(np.arange(50, 30_000, 7), 9, replace=False)).astype(float)
    acc = CurveAccumulator(sizes, side, DepthPolicy(kind, penalty_bps=float(rng.uniform(0, 300))))
    if grid == "irregular":
        acc._cells = None  # the binary search
    # The three ways to bin a kink: one division, the table of cells, the binary search.
    assert (acc._step > 0, acc._cells is not None) == {
        "arithmetic": (True, False),
        "union": (False, True),
        "irregular": (False, False),
    }[grid]
    for trial in range(150):
        n = 1 + trial % 4
        px, sz, mid = side_arrays(_random_books(rng, n, levels=1 + trial % 10), side)
        px, sz, mid = px.copy(), sz.copy(), mid.copy()
        if trial % 7 == 0:
            mid[rng.integers(n)] = np.nan  # dropped
        if trial % 11 == 0:
            sz[rng.integers(n), -1] = np.nan  # a NaN size: an empty level
        few, vec = _walks(acc, px, sz, mid, monkeypatch)
        _assert_same_walk(few, vec, f"trial {trial}")


def test_walk_of_a_few_rows_leaves_infinite_books_to_the_vectorised_walk(monkeypatch):
    acc = CurveAccumulator(np.linspace(100, 5000, 20), "buy")
    batch = _random_books(np.random.default_rng(5), 2)
    px, sz, mid = (a.copy() for a in side_arrays(batch, "buy"))
    px[1, 3], sz[0, 2] = np.inf, np.inf
    assert acc._walk_few(px, sz, mid) is None
    few, vec = _walks(acc, px, sz, mid, monkeypatch)
    _assert_same_walk(few, vec, "inf")


def test_walk_of_a_few_rows_of_a_real_day_is_the_vectorised_walk(monkeypatch):
    """Every book of a real day (FROG) in runs of 1 to 4, both sides, the project's grid."""
    from feeds.readers import read_mbp10
    from tests.conftest import FROG_DAY, require

    batch = next(iter(read_mbp10(require(FROG_DAY))))
    for side in ("buy", "sell"):
        acc = CurveAccumulator(np.linspace(10, 5000, 50), side, EXTRAP)
        px, sz, mid = side_arrays(batch, side)
        i, n = 0, 1
        while i < min(len(batch), 4000):
            few, vec = _walks(acc, px[i : i + n], sz[i : i + n], mid[i : i + n], monkeypatch)
            _assert_same_walk(few, vec, f"{side} rows {i}:{i + n}")
            i, n = i + n, n % 4 + 1
