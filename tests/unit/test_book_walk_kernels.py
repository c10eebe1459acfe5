"""The compiled kernels (``agent.accel``) of the walk and the book features against the numpy
path they replace.

Each kernel is checked twice: compiled by numba (skipped without it) and as the plain-Python
loop it is compiled from, both against the vectorised numpy walk and sums, which run when there
is no numba and are the reference. The kernels promise the reference's bits, so the
comparisons are exact.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import agent.core.bookstats as bookstats
import agent.impact.book_walk as bw
from agent import accel
from agent.impact.book_walk import BeyondDepth, CurveAccumulator, DepthPolicy, side_arrays
from feeds.model import BookBatch
from tests.unit.test_book_walk import _random_books

WALKED = ("keep", "keep_at", "ivis", "dvis", "ilast", "dlast", "jdx")
needs_numba = pytest.mark.skipif(not accel.enabled(), reason="numba not installed or off")


def _kernels(name: str, module: object = bw) -> list[object]:
    """The compiled kernel (when numba is there) and its Python loop."""
    out = [pytest.param(getattr(module, f"{name}_py"), id="python")]
    if accel.enabled():
        out.insert(0, pytest.param(getattr(module, name), id="compiled"))
    return out


def _grid(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """A size grid of each binning: arithmetic (a division), a union of grids, irregular."""
    if kind == "arithmetic":
        return np.arange(100.0, 30_001.0, 100.0), True
    if kind == "union":
        parts = [np.linspace(m / 50, m, 50) for m in (3e3, 7e3, 2e4)]
        return np.unique(np.concatenate(parts)), False
    return np.sort(rng.choice(np.arange(50, 30_000, 7), 9, replace=False)).astype(float), False


def _books(rng: np.random.Generator, n: int, side: str, levels: int = 10):
    px, sz, mid = (np.array(a) for a in side_arrays(_random_books(rng, n, levels), side))
    mid[rng.random(n) < 0.05] = np.nan  # dropped rows
    sz[rng.random((n, levels)) < 0.03] = np.nan  # NaN sizes: empty levels
    px[:, 1:][rng.random((n, levels - 1)) < 0.02] = np.nan  # holes inside the book
    return px, sz, mid


def _reference_walk(acc, px, sz, mid, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(bw, "_walk_rows", None)
        m.setattr(bw, "_FEW_ROWS", 0)
        return acc.walk(px, sz, mid)


@pytest.mark.parametrize("kernel", _kernels("_walk_rows"))
@pytest.mark.parametrize("side", ["buy", "sell"])
@pytest.mark.parametrize("kind", list(BeyondDepth))
@pytest.mark.parametrize("grid", ["arithmetic", "union", "irregular"])
def test_walk_kernel_gives_the_numpy_walk_bit_for_bit(kernel, side, kind, grid, monkeypatch):
    rng = np.random.default_rng(abs(hash((side, str(kind), grid))) % 2**32)
    sizes, arithmetic = _grid(grid, rng)
    acc = CurveAccumulator(sizes, side, DepthPolicy(kind, penalty_bps=float(rng.uniform(0, 300))))
    if grid == "irregular":
        acc._cells = None  # the numpy walk's binary search
    assert (acc._step > 0) == arithmetic
    monkeypatch.setattr(bw, "_walk_rows", kernel)
    for n, levels in ((1, 10), (3, 1), (64, 10), (700, 5), (2500, 10)):  # 2500: two chunks
        px, sz, mid = _books(rng, n, side, levels)
        ref = _reference_walk(acc, px, sz, mid, monkeypatch)
        got = acc.walk(px, sz, mid)
        for name in WALKED:
            a, b = getattr(got, name), getattr(ref, name)
            assert a.shape == b.shape and a.dtype == b.dtype, (n, name, a.shape, b.shape)
            np.testing.assert_array_equal(a, b, err_msg=f"{n} rows: {name}")


@pytest.mark.parametrize("kernel", _kernels("_walk_rows"))
def test_walk_kernel_leaves_infinite_books_and_column_major_input_right(kernel, monkeypatch):
    rng = np.random.default_rng(3)
    acc = CurveAccumulator(np.linspace(100, 5000, 20), "buy")
    monkeypatch.setattr(bw, "_walk_rows", kernel)
    px, sz, mid = _books(rng, 40, "buy")
    px[7, 3] = np.inf
    assert acc._walk_compiled(px, sz, mid) is None  # the numpy walk takes it
    got, ref = acc.walk(px, sz, mid), _reference_walk(acc, px, sz, mid, monkeypatch)
    for name in WALKED:
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name))
    px, sz, mid = _books(rng, 40, "buy")
    got = acc.walk(np.asfortranarray(px), np.asfortranarray(sz), mid)  # a reader's layout
    ref = _reference_walk(acc, px, sz, mid, monkeypatch)
    for name in WALKED:
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name))


@pytest.mark.parametrize("kernel", _kernels("_add_rows"))
@pytest.mark.parametrize("grid", ["arithmetic", "union"])
@pytest.mark.parametrize("weighted", [False, True])
def test_sum_kernel_gives_add_walked_bit_for_bit(kernel, grid, weighted, monkeypatch):
    rng = np.random.default_rng(11 + weighted)
    sizes, _ = _grid(grid, rng)
    acc = CurveAccumulator(sizes, "sell", DepthPolicy())
    px, sz, mid = _books(rng, 900, "sell")
    numpy_walk = _reference_walk(acc, px, sz, mid, monkeypatch)
    with monkeypatch.context() as m:
        m.setattr(bw, "_walk_rows", bw._walk_rows or bw._walk_rows_py)
        kernel_walk = acc.walk(px, sz, mid)  # each kink's bin once (WalkedRows.bins)
    assert kernel_walk.bins is not None and numpy_walk.bins is None
    monkeypatch.setattr(bw, "_CHUNK_ROWS", 97)  # several chunks per add, as in a long window
    cases = ((0, 900), (5, 6), (13, 610), (899, 900), (300, 300))
    for walked, (a, b) in itertools.product((numpy_walk, kernel_walk), cases):
        w = None
        if weighted:
            w = rng.random(b - a) * 3.0
            w[rng.random(b - a) < 0.1] = 0.0  # rows of no weight: not counted as positive
        got, ref = acc.empty_like(), acc.empty_like()
        got.weight = ref.weight = 1.25  # the weight is summed on from what is there
        with monkeypatch.context() as m:
            m.setattr(bw, "_add_rows", None)
            ref.add_walked(walked, a, b, w)
        monkeypatch.setattr(bw, "_add_rows", kernel)
        got.add_walked(walked, a, b, w)
        for name in ("_delta", "_beyond", "_n_beyond"):
            np.testing.assert_array_equal(getattr(got, name), getattr(ref, name), err_msg=name)
        assert (got.n_snapshots, got.n_dropped, got._n_pos) == (
            ref.n_snapshots,
            ref.n_dropped,
            ref._n_pos,
        )
        assert got.weight == ref.weight  # numpy's pairwise sum, bit for bit
        assert got.n_snapshots > 0 or b - a <= 1


@pytest.mark.parametrize("kernel", _kernels("pairwise_sum", accel))
def test_pairwise_sum_is_numpys_sum(kernel):
    rng = np.random.default_rng(5)
    for n in [*range(0, 260), 511, 512, 1000, 2047, 2048, 4099, 70_000]:
        a = rng.random(n) * 10.0 ** rng.uniform(-6, 6, n)
        assert kernel(a, 0, n) == a.sum(), n
        if n > 9:
            assert kernel(a, 4, n - 9) == a[4 : n - 5].sum(), n


@needs_numba
def test_the_kernels_are_compiled_and_warm():
    assert bw._walk_rows is not None and bw._add_rows is not None
    assert accel.warm() >= 4  # the walk's four kernels compile for their signatures


@pytest.mark.parametrize("kernel", _kernels("_features_rows", bookstats))
@pytest.mark.parametrize("side", ["buy", "sell", "both"])
@pytest.mark.parametrize("levels", [1, 2, 5, 7])
def test_features_kernel_gives_the_numpy_features_bit_for_bit(kernel, side, levels, monkeypatch):
    """``book_features`` by the kernel (and numpy's log) against its numpy path: crossed and
    one-sided books, holes, NaN and zero sizes, a reader's column-major arrays."""
    bs = bookstats
    rng = np.random.default_rng(levels * 7 + len(side))
    b = _random_books(rng, 600)
    ask_px, bid_px = b.ask_px.copy(), b.bid_px.copy()
    ask_sz, bid_sz = b.ask_sz.copy(), b.bid_sz.copy()
    ask_px[rng.random(600) < 0.05, 0] = np.nan  # one-sided
    cross = rng.random(600) < 0.05
    bid_px[cross, 0] = ask_px[cross, 0] + 0.01 * rng.integers(0, 2, cross.sum())  # crossed, locked
    ask_sz[rng.random((600, 10)) < 0.05] = np.nan
    bid_sz[rng.random((600, 10)) < 0.05] = 0.0
    bid_px[rng.random(600) < 0.03, 0] = np.nan
    batch = BookBatch(
        "K",
        b.ts_event_ns,
        b.ts_recv_ns,
        np.asfortranarray(bid_px),
        np.asfortranarray(bid_sz),
        ask_px,
        ask_sz,
    )
    with monkeypatch.context() as m:
        m.setattr(bs, "_features_rows", None)
        ref = bs.book_features(batch, side, levels)
    monkeypatch.setattr(bs, "_features_rows", kernel)
    got = bs.book_features(batch, side, levels)
    assert np.isnan(ref[:, 0]).any() and np.isnan(ref[:, 1]).any()
    assert np.isfinite(ref[:, 1]).any() == (levels > 1)  # one level: no slope
    np.testing.assert_array_equal(got, ref)
