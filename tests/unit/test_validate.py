"""validate_batch: one rule at a time, priority, time across batches, real and fixture files."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feeds.model import N_LEVELS, BookBatch
from feeds.readers import read_mbp10
from feeds.validate import Reason, validate_batch
from tests.conftest import SHARED_DATA

FIXTURES = Path(__file__).resolve().parents[1] / "data"
DATA = SHARED_DATA


def book(n: int = 1, *, t0: int = 1_000, dt: int = 10) -> BookBatch:
    """n identical valid rows: bids 100.00, 99.99, ...; asks 100.02, 100.03, ..."""
    k = np.arange(N_LEVELS)
    bid_px = np.tile(100.00 - 0.01 * k, (n, 1))
    ask_px = np.tile(100.02 + 0.01 * k, (n, 1))
    sz = np.full((n, N_LEVELS), 100.0)
    ts = t0 + dt * np.arange(n, dtype=np.int64)
    return BookBatch("T", ts, ts.copy(), bid_px, sz.copy(), ask_px, sz.copy())


def reasons(b: BookBatch, prev: int | None = None) -> list[Reason]:
    return [Reason(int(r)) for r in validate_batch(b, prev).reason]


def test_valid_rows_pass_untouched() -> None:
    """A clean batch is returned as is, all reasons OK, no counts."""
    b = book(5)
    res = validate_batch(b, None)
    assert res.valid is b
    assert res.reason.dtype == np.uint8
    assert res.reason.tolist() == [0] * 5
    assert res.counts == {}
    assert res.n_invalid == 0
    assert res.last_ts_ns == int(b.ts_event_ns[-1])


def test_empty_batch() -> None:
    """An empty batch validates to an empty result and keeps prev_ts_ns."""
    res = validate_batch(BookBatch.empty("T"), 42)
    assert len(res.valid) == 0 and res.last_ts_ns == 42 and res.counts == {}


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda b: b.bid_sz.__setitem__((0, 3), np.nan), Reason.NON_FINITE),
        (lambda b: b.ask_sz.__setitem__((0, 0), np.inf), Reason.NON_FINITE),
        (lambda b: b.ask_px.__setitem__((0, 5), np.inf), Reason.NON_FINITE),
        (lambda b: b.bid_px.__setitem__((0, 9), -np.inf), Reason.NON_FINITE),
        (lambda b: b.ask_sz.__setitem__((0, 2), 0.0), Reason.NON_POSITIVE_SIZE),
        (lambda b: b.bid_sz.__setitem__((0, 0), -100.0), Reason.NON_POSITIVE_SIZE),
        (lambda b: b.bid_px.__setitem__((0, 4), np.nan), Reason.SIZE_WITHOUT_PRICE),
        (lambda b: b.bid_px.__setitem__((0, 0), 100.05), Reason.CROSSED),
        (lambda b: b.bid_px.__setitem__((0, 0), 100.02), Reason.LOCKED),
        (lambda b: b.ask_px.__setitem__((0, slice(3, 5)), [100.06, 100.05]), Reason.OUT_OF_ORDER),
        (lambda b: b.bid_px.__setitem__((0, 7), 99.94), Reason.OUT_OF_ORDER),  # duplicate price
        (lambda b: b.bid_px.__setitem__((0, 1), 100.00), Reason.OUT_OF_ORDER),  # equal to best
    ],
)
def test_each_rule(edit, expected: Reason) -> None:
    """One defect in row 1 of 3 flags exactly that row with the expected reason."""
    b = book(3)
    edit(b.slice(1, 2))  # edit row 1 in place through a view
    res = validate_batch(b, None)
    assert [Reason(int(r)) for r in res.reason] == [Reason.OK, expected, Reason.OK]
    assert res.counts == {expected: 1}
    assert len(res.valid) == 2


def _empty_level(b: BookBatch, side: str, levels: slice) -> None:
    getattr(b, f"{side}_px")[:, levels] = np.nan
    getattr(b, f"{side}_sz")[:, levels] = 0.0


def test_gap_and_trailing_empty_levels() -> None:
    """An empty level followed by a present one is a GAP; trailing empty levels are fine."""
    gap, tail = book(1), book(1)
    _empty_level(gap, "bid", slice(4, 5))
    _empty_level(tail, "ask", slice(6, None))
    assert reasons(gap) == [Reason.GAP]
    assert reasons(tail) == [Reason.OK]


def test_out_of_order_across_a_gap_wins_over_gap() -> None:
    """Ordering is checked over present levels, skipping holes, and outranks GAP."""
    b = book(1)
    _empty_level(b, "ask", slice(2, 3))
    b.ask_px[0, 3] = 100.03  # equals level 1, the nearest present level before it
    assert reasons(b) == [Reason.OUT_OF_ORDER]


def test_empty_side() -> None:
    """A side with no level at all is EMPTY_SIDE (both sides checked)."""
    a, b = book(1), book(1)
    _empty_level(a, "ask", slice(None))
    _empty_level(b, "bid", slice(None))
    assert reasons(a) == [Reason.EMPTY_SIDE]
    assert reasons(b) == [Reason.EMPTY_SIDE]


def test_first_applicable_reason_wins() -> None:
    """A row with several defects gets the earliest reason in Reason order."""
    b = book(1)
    b.bid_px[0, 0] = 100.05  # crossed
    b.ask_sz[0, 4] = 0.0  # non-positive size outranks crossed
    assert reasons(b) == [Reason.NON_POSITIVE_SIZE]
    b.ask_sz[0, 4] = np.nan  # non-finite outranks both
    assert reasons(b) == [Reason.NON_FINITE]


def test_time_backwards_against_previous_valid_row() -> None:
    """Time is compared with the last *valid* row; equal timestamps are allowed."""
    b = book(5)
    b.ts_event_ns[:] = [100, 300, 200, 200, 400]
    b.bid_px[1, 0] = 100.05  # row 1 (ts 300) is crossed, so it does not set the floor
    assert reasons(b) == [Reason.OK, Reason.CROSSED, Reason.OK, Reason.OK, Reason.OK]
    b.bid_px[1, 0] = 100.00  # now row 1 is valid: rows 2 and 3 go backwards
    assert reasons(b) == [Reason.OK, Reason.OK] + [Reason.TIME_BACKWARDS] * 2 + [Reason.OK]


def test_time_backwards_across_batches() -> None:
    """prev_ts_ns carries the floor from the previous batch; last_ts_ns hands it on."""
    first = validate_batch(book(3, t0=1_000), None)
    assert first.last_ts_ns == 1_020
    second = book(3, t0=1_010)  # 1010, 1020, 1030
    res = validate_batch(second, first.last_ts_ns)
    assert [Reason(int(r)) for r in res.reason] == [Reason.TIME_BACKWARDS, Reason.OK, Reason.OK]
    all_bad = validate_batch(book(2, t0=0), 5_000)
    assert len(all_bad.valid) == 0 and all_bad.last_ts_ns == 5_000


def test_fixture_file_has_one_row_per_reason() -> None:
    """tests/data/mbp10_bad_rows.csv: each hand-made bad row gets its reason."""
    (b,) = read_mbp10(FIXTURES / "mbp10_bad_rows.csv")
    res = validate_batch(b, None)
    assert [Reason(int(r)) for r in res.reason] == [
        Reason.OK,
        Reason.NON_FINITE,
        Reason.NON_POSITIVE_SIZE,
        Reason.SIZE_WITHOUT_PRICE,
        Reason.CROSSED,
        Reason.LOCKED,
        Reason.OUT_OF_ORDER,
        Reason.GAP,
        Reason.TIME_BACKWARDS,
        Reason.EMPTY_SIDE,
        Reason.OK,
        Reason.OK,
    ]
    assert sum(res.counts.values()) == 9
    assert len(res.valid) == 3
    np.testing.assert_array_equal(res.valid.ts_event_ns, b.ts_event_ns[[0, 10, 11]])


@pytest.mark.realdata
def test_real_frog_day_is_all_valid() -> None:
    """The real FROG session has no bad snapshot (README: no crossed books, all levels)."""
    path = DATA / "databento-mbp10" / "FROG" / "FROG_2025-04-03 00_00_00+00_00.csv"
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    prev = None
    for b in read_mbp10(path):
        res = validate_batch(b, prev)
        assert res.counts == {}
        prev = res.last_ts_ns


def _reference(b: BookBatch, prev: int | None) -> list[int]:
    """Row-by-row reference implementation of the rules (slow, obviously correct)."""
    out = []
    floor = prev
    for i in range(len(b)):
        found = 0
        rules = []
        bp, ap, bs, as_ = b.bid_px[i], b.ask_px[i], b.bid_sz[i], b.ask_sz[i]
        rules.append(
            np.isinf(bp).any() or np.isinf(ap).any()
            or not np.isfinite(bs).all() or not np.isfinite(as_).all()
        )  # fmt: skip
        rules.append(
            any((not np.isnan(p) and s <= 0) or s < 0 for p, s in zip(bp, bs, strict=True))
            or any((not np.isnan(p) and s <= 0) or s < 0 for p, s in zip(ap, as_, strict=True))
        )
        rules.append(
            any(np.isnan(p) and s > 0 for p, s in zip(bp, bs, strict=True))
            or any(np.isnan(p) and s > 0 for p, s in zip(ap, as_, strict=True))
        )
        rules.append(bool(bp[0] > ap[0]))
        rules.append(bool(bp[0] == ap[0]))
        pb = [p for p in bp if not np.isnan(p)]
        pa = [p for p in ap if not np.isnan(p)]
        rules.append(
            any(x <= y for x, y in itertools.pairwise(pb))
            or any(x >= y for x, y in itertools.pairwise(pa))
        )
        gap = any(np.isnan(bp[k]) and not np.isnan(bp[k + 1]) for k in range(N_LEVELS - 1))
        gap |= any(np.isnan(ap[k]) and not np.isnan(ap[k + 1]) for k in range(N_LEVELS - 1))
        rules.append(gap)
        rules.append(floor is not None and b.ts_event_ns[i] < floor)
        rules.append(not pb or not pa)
        for j, hit in enumerate(rules):
            if hit:
                found = j + 1
                break
        if found == 0:
            floor = int(b.ts_event_ns[i])
        out.append(found)
    return out


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 40), prev=st.none() | st.integers(0, 60))
def test_matches_row_by_row_reference(seed: int, n: int, prev: int | None) -> None:
    """On randomly corrupted books, the vectorised rules equal a per-row reference."""
    rng = np.random.default_rng(seed)
    b = book(n, t0=0, dt=1)
    b.ts_event_ns[:] = rng.integers(0, 60, n)
    for arr in (b.bid_px, b.ask_px, b.bid_sz, b.ask_sz):
        hit = rng.random(arr.shape) < 0.03
        arr[hit] = rng.choice(
            np.array([np.nan, np.inf, -1.0, 0.0, 100.01, 100.02, 99.99]), hit.sum()
        )
    empty = rng.random((n, N_LEVELS)) < 0.05
    b.bid_px[empty] = np.nan
    b.bid_sz[empty] = 0.0
    res = validate_batch(b, prev)
    assert res.reason.tolist() == _reference(b, prev)
    assert len(res.valid) == int((res.reason == 0).sum())


_LEVEL = st.one_of(
    st.just(float("nan")), st.floats(9.0, 11.0), st.just(float("inf")), st.just(10.0)
)
_SIZE = st.one_of(st.just(0.0), st.floats(-5, 500), st.just(float("nan")), st.just(100.0))


@settings(max_examples=500, deadline=None)
@given(
    bp=st.lists(_LEVEL, min_size=10, max_size=10),
    bs=st.lists(_SIZE, min_size=10, max_size=10),
    ap=st.lists(_LEVEL, min_size=10, max_size=10),
    az=st.lists(_SIZE, min_size=10, max_size=10),
    ts=st.integers(0, 10),
    prev=st.one_of(st.none(), st.integers(0, 10)),
)
def test_validate_row_agrees_with_validate_batch(bp, bs, ap, az, ts, prev):
    """The scalar one-book check used by the live feed classifies like the vectorised one."""
    from feeds.validate import validate_row

    t = np.array([ts], dtype=np.int64)
    batch = BookBatch("S", t, t, np.array([bp]), np.array([bs]), np.array([ap]), np.array([az]))
    expected = Reason(int(validate_batch(batch, prev).reason[0]))
    assert validate_row(bp, bs, ap, az, ts, prev) == expected


_BAD = st.sampled_from(
    [float("nan"), float("inf"), -float("inf"), 0.0, -1.0, 1e308, 10.0, 9.995, 10.005]
)


@settings(max_examples=400, deadline=None)
@given(
    side=st.integers(0, 3),
    level=st.integers(0, 9),
    value=_BAD,
    ts=st.integers(0, 10),
    prev=st.one_of(st.none(), st.integers(0, 10)),
)
def test_validate_row_fast_path_agrees_near_a_clean_book(side, level, value, ts, prev):
    """A full clean book takes validate_row's fast path; one value changed anywhere (a NaN,
    an inf, a size <= 0, a price out of order, an overflowing sum) must classify as the
    vectorised check does."""
    from feeds.validate import validate_row

    cols = [
        [9.99 - 0.01 * k for k in range(10)],
        [100.0 + k for k in range(10)],
        [10.01 + 0.01 * k for k in range(10)],
        [200.0 + k for k in range(10)],
    ]
    assert validate_row(*cols, ts, None) is Reason.OK
    cols[side][level] = value
    t = np.array([ts], dtype=np.int64)
    arrays = [np.array([c]) for c in cols]
    batch = BookBatch("S", t, t, *arrays)
    expected = Reason(int(validate_batch(batch, prev).reason[0]))
    assert validate_row(*cols, ts, prev) == expected
