"""The liquidity forecast: features, period means, AR(1) toward the day's level, no look-ahead."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from agent.core.bookstats import PeriodMeans, book_features, trailing_mean
from agent.core.forecast import ArPrior, Forecast, LiquidityForecaster
from agent.errors import InvariantViolation
from agent.impact.profile import IntradayProfile
from feeds.model import BookBatch
from tests.lookahead import replace_after

S = 1_000_000_000
P = 60 * S  # one-minute periods in the synthetic tests
LOG_H = math.log(0.02)
REPO = Path(__file__).resolve().parents[2]


def shared_data() -> Path:
    for d in (REPO.parent / "shared" / "data", REPO.parents[1] / "shared" / "data"):
        if d.exists():
            return d
    pytest.skip("real data not available: ../shared/data (see its README.md)")


def books(ts, half_spread, depth, tick=0.01, mid=10.0, levels=10):
    """Ladders: level l at ``mid +- (h + l*tick)``, ``depth`` shares on every level."""
    ts = np.asarray(ts, dtype=np.int64)
    h = np.broadcast_to(np.asarray(half_spread, dtype=np.float64), ts.shape)
    q = np.broadcast_to(np.asarray(depth, dtype=np.float64), ts.shape)
    lv = np.arange(levels) * tick
    ask = mid + h[:, None] + lv[None, :]
    bid = mid - h[:, None] - lv[None, :]
    sz = np.repeat(q[:, None], levels, axis=1)
    return BookBatch("SYN", ts, ts.copy(), bid, sz.copy(), ask, sz.copy())


def test_book_features_are_the_log_half_spread_and_depth_slope():
    b = books([0, 1], [0.02, 0.05], [100.0, 400.0])
    z = book_features(b, "buy", levels=5)
    # five levels 0..4 ticks from the best, equal sizes: mean distance 2 ticks over Q = 5q
    np.testing.assert_allclose(z[:, 0], np.log([0.02, 0.05]))
    np.testing.assert_allclose(z[:, 1], np.log([0.02 / 500.0, 0.02 / 2000.0]))
    np.testing.assert_allclose(book_features(b, "both")[:, 1], book_features(b, "sell")[:, 1])


def test_book_features_undefined_for_locked_or_one_level_books():
    b = books([0, 1], [0.0, 0.02], [100.0, 100.0])
    z = book_features(b, "buy")
    assert math.isnan(z[0, 0]) and np.isfinite(z[1, 0])
    one = books([0], [0.02], [100.0], levels=1)
    pad = BookBatch(
        "SYN",
        one.ts_event_ns,
        one.ts_recv_ns,
        np.c_[one.bid_px, np.full((1, 9), np.nan)],
        np.c_[one.bid_sz, np.zeros((1, 9))],
        np.c_[one.ask_px, np.full((1, 9), np.nan)],
        np.c_[one.ask_sz, np.zeros((1, 9))],
    )
    assert math.isnan(book_features(pad, "buy")[0, 1])
    with pytest.raises(ValueError, match="side"):
        book_features(b, "long")


def test_period_means_weigh_books_by_time_in_force_across_boundaries():
    pm = PeriodMeans(10, 0, n_features=1)
    # book 1.0 in force 0..15, book 3.0 in force 15..25, then a book at 25 closes period 1
    done = pm.add(np.array([0, 15, 25]), np.array([[1.0], [3.0], [5.0]]))
    assert [d.period for d in done] == [0, 1]
    assert done[0].mean[0] == pytest.approx(1.0)
    assert done[1].mean[0] == pytest.approx((5 * 1.0 + 5 * 3.0) / 10)
    assert pm.add(np.array([26]), np.array([[0.0]])) == []


def test_period_means_do_not_depend_on_how_the_rows_are_chunked():
    rng = np.random.default_rng(1)
    ts = np.sort(rng.integers(0, 1000, 400))
    z = rng.normal(size=(400, 2))
    whole = PeriodMeans(37, 5).add(ts, z)
    pm = PeriodMeans(37, 5)
    parts = []
    for lo in range(0, 400, 13):
        parts += pm.add(ts[lo : lo + 13], z[lo : lo + 13])
    assert [p.period for p in parts] == [p.period for p in whole]
    for a, b in zip(parts, whole, strict=True):
        np.testing.assert_allclose(a.mean, b.mean, rtol=1e-12)


def test_trailing_mean_and_book_in_force():
    ts = np.array([0, 10, 20], dtype=np.int64)
    z = np.array([[1.0], [2.0], [4.0]])
    mean, now = trailing_mean(ts, z, 30, 25)  # 5..10 at 1, 10..20 at 2, 20..30 at 4
    assert mean[0] == pytest.approx((5 * 1 + 10 * 2 + 10 * 4) / 25)
    assert now[0] == 4.0
    assert trailing_mean(ts, z, 15, 0)[0][0] == 2.0


def ar1_day(phi, n_periods, sd, level=LOG_H, seed=0, per_period=6):
    """Books whose log half-spread follows an AR(1) across periods (constant within one)."""
    rng = np.random.default_rng(seed)
    y = np.empty(n_periods)
    y[0] = level
    for k in range(1, n_periods):
        y[k] = level + phi * (y[k - 1] - level) + sd * rng.normal()
    ts = (np.arange(n_periods * per_period) * (P // per_period)).astype(np.int64)
    h = np.exp(np.repeat(y, per_period))
    return books(ts, h, 200.0), y


def drive(fc, batch, times, horizon=5):
    """Observe the books up to each decision time, then forecast; return the forecasts."""
    ts = batch.ts_event_ns
    out, lo = [], 0
    for t in times:
        hi = int(np.searchsorted(ts, t, side="right"))
        fc.observe(batch.slice(lo, hi))
        lo = hi
        out.append(fc.forecast(int(t), t + P * np.arange(horizon + 1)))
    return out


def test_ar1_coefficient_is_estimated_from_the_day():
    batch, _ = ar1_day(0.6, 400, 0.2)
    fc = LiquidityForecaster(P, prior=ArPrior(weight_pairs=1.0))
    f = drive(fc, batch, [400 * P - 1])[0]
    assert f.fields["phi_beta"] == pytest.approx(0.6, abs=0.1)
    assert f.fields["sd_beta"] == pytest.approx(0.2, rel=0.15)
    assert f.fields["n_pairs"] >= 390


def test_forecast_reverts_from_a_wide_spread_toward_the_days_level():
    batch, _ = ar1_day(0.5, 120, 0.1, level=math.log(0.02))
    wide = books([120 * P + 1], [0.08], [200.0])  # spread four times the day's level now
    fc = LiquidityForecaster(P, now_window_ns=0, state_window_ns=P // 10)
    fc.observe(batch)
    fc.observe(wide)
    t = 120 * P + 2
    f = fc.forecast(t, 120 * P + P * np.arange(6))
    assert f.beta_mult[0] == 1.0 and f.log_sd_beta[0] == 0.0  # the current period
    mb = f.beta_mult[1:]
    assert np.all(mb < 1.0) and np.all(np.diff(mb) < 0)  # cheaper later, converging
    assert mb[-1] == pytest.approx(0.25, rel=0.15)  # toward 0.02 / 0.08
    assert np.all(np.diff(f.log_sd_beta[1:]) > 0)  # wider the further ahead


def test_profile_shape_is_carried_into_later_periods():
    # the day's half-spread follows a two-bucket profile exactly: 2x in the first hour
    bucket = 3600 * S
    mb = np.ones(24)
    mb[10] = 2.0
    prof = IntradayProfile(bucket, mb, np.ones(24), np.ones(24), np.full(24, 500), 1.0, "test")
    ts = 10 * bucket + np.arange(0, 2 * bucket, 10 * S, dtype=np.int64)
    h = np.where(ts < 11 * bucket, 0.04, 0.02)
    fc = LiquidityForecaster(P, origin_ns=10 * bucket, profile=prof)
    t = 10 * bucket + 50 * P
    f = drive(fc, books(ts, h, 200.0), [t], horizon=20)[0]
    # periods from the next hour on are forecast at half the current spread
    starts = t + P * np.arange(21)
    nxt = starts >= 11 * bucket
    np.testing.assert_allclose(f.beta_mult[nxt], 0.5, rtol=0.02)
    np.testing.assert_allclose(f.beta_mult[1:][~nxt[1:]], 1.0, rtol=0.02)
    assert f.fields["loading_beta"] == pytest.approx(1.0, abs=0.05)


def test_forecast_does_not_depend_on_how_books_were_chunked():
    """The daemon sees one book at a time, the backtest chunks: same forecasts."""
    batch, _ = ar1_day(0.7, 60, 0.2, seed=3)
    times = P * np.arange(5, 55, 7) + P // 3
    chunked = drive(LiquidityForecaster(P), batch, times)
    fc = LiquidityForecaster(P)
    ts = batch.ts_event_ns
    single, i = [], 0
    for t in times:
        while i < len(batch) and ts[i] <= t:  # one row at a time, as a live feed delivers
            fc.observe(batch.slice(i, i + 1))
            i += 1
        single.append(fc.forecast(int(t), t + P * np.arange(6)))
    for a, b in zip(chunked, single, strict=True):
        np.testing.assert_allclose(a.beta_mult, b.beta_mult, rtol=1e-9)
        np.testing.assert_allclose(a.gamma_mult, b.gamma_mult, rtol=1e-9)
        np.testing.assert_allclose(a.log_sd_beta, b.log_sd_beta, rtol=1e-9)


def test_forecast_at_t_depends_only_on_books_up_to_t():
    batch, _ = ar1_day(0.6, 60, 0.3, seed=5)
    t0 = 30 * P + P // 2
    other = replace_after(batch, t0)
    times = P * np.arange(2, 59, 3) + P // 4
    fa = drive(LiquidityForecaster(P), batch, times)
    fb = drive(LiquidityForecaster(P), other, times)
    for t, a, b in zip(times, fa, fb, strict=True):
        same = np.array_equal(a.beta_mult, b.beta_mult) and np.array_equal(
            a.gamma_mult, b.gamma_mult
        )
        if t <= t0:
            assert same, f"forecast at {t} changed when books after {t0} were replaced"
    # the control: the replacement does change the later forecasts (the test can fail)
    assert not all(
        np.array_equal(a.beta_mult, b.beta_mult)
        for t, a, b in zip(times, fa, fb, strict=True)
        if t > t0
    )


def test_forecast_refuses_a_time_before_an_observed_book():
    fc = LiquidityForecaster(P)
    fc.observe(books([10 * S, 20 * S], [0.02, 0.02], [100.0, 100.0]))
    with pytest.raises(InvariantViolation, match="looked ahead"):
        fc.forecast(15 * S, [15 * S])


def test_forecast_without_books_is_flat():
    f = LiquidityForecaster(P).forecast(0, np.arange(4) * P)
    assert np.all(f.beta_mult == 1.0) and f.fields["status"] == "no_books"


def test_scenarios_gauss_hermite_mean_and_robust_band():
    # expected multipliers 0.8 and 1.2 with log-sds 0.3 and 0.5: medians 0.8 e^-0.045, ...
    f = Forecast(
        np.array([1.0, 0.8]), np.array([1.0, 1.2]), np.array([0.0, 0.3]), np.array([0.0, 0.5])
    )
    med_b, med_g = f.median()
    assert med_b[1] == pytest.approx(0.8 * math.exp(-(0.3**2) / 2))
    assert med_g[0] == 1.0
    mb, mg, p = f.scenarios()
    assert mb.shape == (3, 2) and p.sum() == pytest.approx(1.0)
    # the probability-weighted multiplier is the expected one, exp(m + s^2 / 2)
    assert p @ mb[:, 1] == pytest.approx(0.8, rel=2e-3)
    assert p @ mg[:, 1] == pytest.approx(1.2, rel=1e-2)
    rb, rg, _ = f.scenarios(k_sd=2.0)
    assert rg[0, 1] == pytest.approx(med_g[1] * math.exp(-1.0))
    assert rb[2, 1] == pytest.approx(med_b[1] * math.exp(0.6)) and rb[:, 0].tolist() == [1, 1, 1]
    np.testing.assert_allclose(f.cost_mult(0.25), 0.25 * f.beta_mult + 0.75 * f.gamma_mult)
    np.testing.assert_allclose(f.log_sd, [0.0, 0.5])


def _eval_module():
    spec = importlib.util.spec_from_file_location(
        "eval_forecast", REPO / "scripts" / "eval_forecast.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.realdata
@pytest.mark.parametrize("symbol", ["FROG", "AMZN"])
def test_forecast_beats_same_as_now_out_of_sample(symbol):
    """On a real day, with the prior from the other symbol only, the forecast of the next 12
    five-minute periods' cost level at a reference size has a smaller log-RMSE than "the same
    as the book in force"."""
    shared_data()
    ev = _eval_module()
    if not ev.DAYS[symbol].exists():
        pytest.skip(f"real data not available: {ev.DAYS[symbol]}")
    r = ev.run(symbol, "buy", 300.0, 12, prior=True)
    assert r["n_pairs"] > 500
    assert r["rmse_cost"]["forecast"] < r["rmse_cost"]["now"], r["rmse_cost"]


def test_width_scale_follows_the_days_own_forecast_errors():
    """Well specified, the widths stay about right; with level jumps the model does not know
    of, the day's record widens them."""
    good, _ = ar1_day(0.6, 300, 0.2, seed=7)
    fc = LiquidityForecaster(P)
    drive(fc, good, P * np.arange(1, 300) + P // 2)
    assert 0.7 < fc.sd_scale()[0] < 1.4
    rng = np.random.default_rng(8)
    jumps = np.repeat(rng.choice([0.01, 0.08], size=30), 10)  # 10-period regimes, 8x apart
    ts = (np.arange(300 * 6) * (P // 6)).astype(np.int64)
    bad = books(ts, np.repeat(jumps, 6) * np.exp(0.02 * rng.normal(size=ts.size)), 200.0)
    fc2 = LiquidityForecaster(P, prior=ArPrior(stat_var=(0.001, 0.001)))
    drive(fc2, bad, P * np.arange(1, 300) + P // 2)
    assert fc2.sd_scale()[0] > 1.5


@pytest.mark.realdata
def test_no_look_ahead_on_a_real_day():
    """FROG: every book after 16:00 UTC replaced; the forecasts up to then are unchanged."""
    path = shared_data() / "databento-mbp10" / "FROG" / "FROG_2025-04-03 00_00_00+00_00.csv"
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    from agent.backtest.data import load_day

    day = load_day(str(path)).books
    P5 = 300 * S
    origin = int(day.ts_event_ns[0]) // P5 * P5
    t0 = origin + 30 * P5
    other = replace_after(day, t0)
    times = origin + P5 * np.arange(1, 60, 4) + 7 * S
    runs = []
    for b in (day, other):
        fc = LiquidityForecaster(P5, origin_ns=origin)
        ts = b.ts_event_ns
        out, lo = [], 0
        for t in times:
            hi = int(np.searchsorted(ts, t, side="right"))
            fc.observe(b.slice(lo, hi))
            lo = hi
            out.append(fc.forecast(int(t), t + P5 * np.arange(13)))
        runs.append(out)
    for t, a, c in zip(times, *runs, strict=True):
        if t <= t0:
            np.testing.assert_array_equal(a.beta_mult, c.beta_mult)
            np.testing.assert_array_equal(a.log_sd_gamma, c.log_sd_gamma)
    assert any(
        not np.array_equal(a.beta_mult, c.beta_mult)
        for t, a, c in zip(times, *runs, strict=True)
        if t > t0
    )


def test_shared_features_give_the_same_forecasts():
    """Parents sharing one FeatureMemo (the same batch objects, as the session hands them out,
    and one tail of trailing means) forecast exactly as with features and a tail of their own,
    and each batch is computed once."""
    from agent.core.bookstats import FeatureMemo

    batch, _ = ar1_day(0.7, 60, 0.2, seed=8)
    ts = batch.ts_event_ns
    times = P * np.arange(5, 55, 7) + P // 3
    memo = FeatureMemo("buy")
    shared = [
        LiquidityForecaster(P, features=memo),
        LiquidityForecaster(P, origin_ns=P // 7, features=memo),
    ]
    alone = [LiquidityForecaster(P), LiquidityForecaster(P, origin_ns=P // 7)]
    lo, n_batches = 0, 0
    for t in times:
        hi = int(np.searchsorted(ts, t, side="right"))
        for j in range(lo, hi, 500):  # several batches between two forecasts
            seg = batch.slice(j, min(j + 500, hi))
            n_batches += 1
            memo.push(seg)  # as the session does, before the parents observe
            for fc in (*shared, *alone):
                fc.observe(seg)
        lo = hi
        starts = t + P * np.arange(6)
        for x, y in zip(shared, alone, strict=True):
            fx, fy = x.forecast(int(t), starts), y.forecast(int(t), starts)
            np.testing.assert_array_equal(fx.beta_mult, fy.beta_mult)
            np.testing.assert_array_equal(fx.gamma_mult, fy.gamma_mult)
    assert memo.n_computed == n_batches  # once per batch, not once per parent
    small = FeatureMemo("buy", keep=1)  # batches fall out of it: computed again, same numbers
    fa, fb = LiquidityForecaster(P, features=small), LiquidityForecaster(P)
    lo = 0
    for t in times:
        hi = int(np.searchsorted(ts, t, side="right"))
        seg = batch.slice(lo, hi)
        lo = hi
        small.push(seg)
        small.push(batch.slice(0, 0))  # nothing: ignored
        fa.observe(seg)
        fb.observe(seg)
        np.testing.assert_array_equal(
            fa.forecast(int(t), t + P * np.arange(6)).beta_mult,
            fb.forecast(int(t), t + P * np.arange(6)).beta_mult,
        )
    with pytest.raises(ValueError, match="event-time order"):
        small.push(batch.slice(0, 5))
    with pytest.raises(ValueError, match="features of side"):
        LiquidityForecaster(P, side="sell", features=memo)


def test_tail_trailing_mean_is_the_direct_one():
    """The running integrals give the direct time-weighted mean (NaN values, trims, chunks)."""
    from agent.core.bookstats import Tail

    rng = np.random.default_rng(21)
    n = 5000
    ts = (
        np.cumsum(rng.choice([0, 1, 7, 50, 900], n, p=[0.1, 0.4, 0.3, 0.15, 0.05])).astype(np.int64)
        + 10**6
    )
    z = rng.normal(0, 2, (n, 2))
    z[rng.random((n, 2)) < 0.1] = np.nan
    z[2000:2300, 1] = np.nan  # a stretch with no finite value: the book in force is the answer
    tail = Tail(2, capacity=16)
    i = 0
    while i < n:
        j = min(n, i + int(rng.integers(1, 400)) + (40 if i == 0 else 0))  # 1st: past capacity
        tail.append(ts[i:j], z[i:j])
        i = j
        t = int(ts[j - 1]) + int(rng.integers(0, 40))
        tail.trim(t - 3000)
        for window in (0, 1, 200, 3000):
            got = tail.trailing_mean(t, window)
            want = trailing_mean(ts[:j], z[:j], t, window)
            for g, w in zip(got, want, strict=True):
                # A difference of two running sums: off by the rounding of the sums (their
                # size, not the window's), here ~1e-12 absolute on a 1-tick window.
                np.testing.assert_allclose(g, w, rtol=0, atol=1e-10)


def test_shared_features_in_small_batches_give_the_same_forecasts():
    """Batches inside one period credit the memo's shared column sums (``credit_total``); a
    parent with features of its own sums them the same way: the same bits."""
    from agent.core.bookstats import FeatureMemo

    batch, _ = ar1_day(0.7, 30, 0.2, seed=9, per_period=80)
    ts = batch.ts_event_ns
    memo = FeatureMemo("buy")
    shared = LiquidityForecaster(P, origin_ns=P // 5, features=memo)
    alone = LiquidityForecaster(P, origin_ns=P // 5)
    seen = 0
    for t in P * np.arange(3, 29, 2) + P // 2:
        hi = int(np.searchsorted(ts, t, side="right"))
        for j in range(seen, hi, 17):
            seg = batch.slice(j, min(j + 17, hi))
            memo.push(seg)
            for fc in (shared, alone):
                fc.observe(seg)
                fc.settle(1)  # folded batch by batch, as the session settles them
        seen = hi
        starts = t + P * np.arange(5)
        fx, fy = shared.forecast(int(t), starts), alone.forecast(int(t), starts)
        np.testing.assert_array_equal(fx.beta_mult, fy.beta_mult)
        np.testing.assert_array_equal(fx.gamma_mult, fy.gamma_mult)
    assert shared._ar.f[0].n > 5  # periods finished and were folded


def test_period_means_from_shared_credits_equal_the_plain_sums():
    """``add`` with the credits given (a function, called only across a period edge) and their
    total gives the periods of ``add`` without them, batch by batch, gaps longer than
    ``max_gap_periods`` included."""
    from agent.core.bookstats import _with_edge, credit_values

    rng = np.random.default_rng(4)
    gaps = rng.choice([1, 3, 40, 400], size=600, p=[0.5, 0.3, 0.15, 0.05])
    ts = np.cumsum(gaps).astype(np.int64)
    z = rng.normal(size=(600, 2))
    z[rng.random((600, 2)) < 0.1] = np.nan
    plain, given = PeriodMeans(50, 7, max_gap_periods=2), PeriodMeans(50, 7, max_gap_periods=2)
    called = 0
    lo = 0
    out_a, out_b = [], []
    while lo < 600:
        hi = min(lo + int(rng.integers(1, 12)), 600)
        tb, zb = ts[lo:hi], z[lo:hi]
        last = given.last_book
        t_all = tb if last is None else np.r_[last[0], tb]
        z_all = zb if last is None else np.vstack([last[1], zb])
        vals = credit_values(np.diff(t_all).astype(np.float64), z_all[:-1])

        def lazy(v=vals):
            nonlocal called
            called += 1
            return v

        out_a += plain.add(tb, zb)
        inner = credit_values(np.diff(tb).astype(np.float64), zb[:-1]).sum(axis=0)
        out_b += given.add(tb, zb, lazy, _with_edge(inner, last, int(tb[0])))
        lo = hi
    assert 0 < called < 200  # the credits were needed across edges only
    assert [p.period for p in out_a] == [p.period for p in out_b] and len(out_a) > 20
    for a, b in zip(out_a, out_b, strict=True):
        np.testing.assert_array_equal(a.mean, b.mean)
        np.testing.assert_array_equal(a.weight_ns, b.weight_ns)


def test_period_means_with_the_shared_run_equal_the_plain_sums():
    """A parent's first batch of a period credits the memo's row-order sum of the batch's inner
    intervals (``inner_run``) and its own crossing interval: the bits of ``add`` with the
    credits row by row, and the credits are not asked for then."""
    from agent.core.bookstats import _run_sum, credit_values

    rng = np.random.default_rng(11)
    gaps = rng.choice([1, 3, 40, 400], size=900, p=[0.5, 0.3, 0.15, 0.05])
    ts = np.cumsum(gaps).astype(np.int64)
    z = rng.normal(size=(900, 2)) * 1e3
    z[rng.random((900, 2)) < 0.1] = np.nan
    plain, given = PeriodMeans(50, 7, max_gap_periods=2), PeriodMeans(50, 7, max_gap_periods=2)
    used = asked = 0
    lo = 0
    out_a, out_b = [], []
    per = (ts - 7) // 50
    while lo < 900:
        hi = min(lo + int(rng.integers(1, 30)), 900)
        if rng.random() < 0.7:  # cut where a period starts, as a parent's decision cuts
            hi = min(hi, lo + 1 + int(np.searchsorted(per[lo + 1 :], per[lo], side="right")))
        tb, zb = ts[lo:hi], z[lo:hi]
        last = given.last_book
        t_all = tb if last is None else np.r_[last[0], tb]
        z_all = zb if last is None else np.vstack([last[1], zb])
        vals = credit_values(np.diff(t_all).astype(np.float64), z_all[:-1])
        inner = credit_values(np.diff(tb).astype(np.float64), zb[:-1])

        def lazy(v=vals):
            nonlocal asked
            asked += 1
            return v

        def run(r=inner):
            nonlocal used
            used += 1
            return _run_sum(r)

        out_a += plain.add(tb, zb, vals)
        out_b += given.add(tb, zb, lazy, None, run)
        lo = hi
    assert used > 20 and asked > 20  # both ways were taken
    assert [p.period for p in out_a] == [p.period for p in out_b] and len(out_a) > 20
    for a, b in zip(out_a, out_b, strict=True):
        np.testing.assert_array_equal(a.mean, b.mean)
        np.testing.assert_array_equal(a.weight_ns, b.weight_ns)


def test_credit_span_in_floats_is_the_numpy_credit():
    """``_credit_span`` in plain floats credits each period what ``credit_values`` of its
    parts and a row sum per period credited (the numpy code it replaced): the same bits."""
    from agent.core.bookstats import credit_values

    rng = np.random.default_rng(5)
    for _ in range(300):
        pm = PeriodMeans(int(rng.integers(3, 90)), int(rng.integers(0, 50)), max_gap_periods=2)
        t0 = int(rng.integers(0, 1000))
        t1 = t0 + int(rng.integers(1, 500))
        if pm.period_of(t0) == pm.period_of(t1):
            continue
        zz = rng.normal(size=2) * 10.0 ** rng.integers(-3, 4)
        zz[rng.random(2) < 0.2] = np.nan
        pm._sums = {pm.period_of(t0): rng.normal(size=4)}  # an earlier credit to add to
        want = {p: v.copy() for p, v in pm._sums.items()}
        pa, pb = pm.period_of(t0), pm.period_of(t1)
        parts = [(pa, pm.origin_ns + (pa + 1) * pm.period_ns - t0)]
        if pb - pa - 1 <= pm.max_gap_periods:
            parts += [(p, pm.period_ns) for p in range(pa + 1, pb)]
        parts.append((pb, t1 - (pm.origin_ns + pb * pm.period_ns)))
        w = np.array([float(d) for _, d in parts])
        rows = credit_values(w, np.tile(zz, (len(parts), 1)))
        for (p, _), row in zip(parts, rows, strict=True):
            want[p] = row if p not in want else want[p] + row
        pm._credit_span(t0, t1, zz)
        assert pm._sums.keys() == want.keys()
        for p, v in want.items():
            np.testing.assert_array_equal(pm._sums[p], v)


def test_feature_memo_credits_share_one_computation():
    """``credits``, ``credit_total`` and ``credit_run`` of a batch come from one computation of
    its inner credits, with the numbers of computing each directly."""
    from agent.core.bookstats import FeatureMemo, _run_sum, _with_edge, credit_values

    batch, _ = ar1_day(0.7, 4, 0.2, seed=3, per_period=50)
    memo = FeatureMemo("buy")
    seg = batch.slice(10, 60)
    ts = seg.ts_event_ns
    zs = book_features(seg, "buy")
    inner = credit_values(np.diff(ts).astype(np.float64), zs[:-1])
    last = (int(batch.ts_event_ns[9]), book_features(batch.slice(9, 10), "buy")[0])
    edge = credit_values(np.array([float(ts[0] - last[0])]), last[1][None, :])
    np.testing.assert_array_equal(memo.credits(seg, None), inner)
    np.testing.assert_array_equal(memo.credits(seg, last), np.concatenate((edge, inner)))
    np.testing.assert_array_equal(
        memo.credit_total(seg, last), _with_edge(inner.sum(axis=0), last, int(ts[0]))
    )
    np.testing.assert_array_equal(memo.credit_run(seg), _run_sum(inner))
    assert memo.credit_run(seg) is memo.credit_run(seg)  # kept, not summed again
    assert memo.n_computed == 1
