"""The cheaper decision path gives the numbers of the code it replaced, bit for bit.

Each test keeps the replaced code as a reference (the forecast's (H, 2) layout, its per-target
record loop, the per-call log profile, np.mean/np.sum/np.clip/np.column_stack in the fits and
the walk of the book in force) and compares exactly: ``tobytes`` equality, so a NaN or a signed
zero that moved fails too.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import nnls

import agent.impact.book_walk as bw
from agent import accel
from agent.core.forecast import LiquidityForecaster
from agent.core.plan import diffuse_lots
from agent.core.policy import MpcPolicy
from agent.impact.book_walk import BeyondDepth, CostCurve, DepthPolicy, book_curve, side_arrays
from agent.impact.fit import fit_piecewise_power, fit_power, fit_quadratic
from agent.impact.profile import IntradayProfile
from tests.unit.test_book_walk import _random_books
from tests.unit.test_core_forecast import P, S, ar1_day

HOUR = 3600 * S


def _same(a: object, b: object) -> bool:
    return np.asarray(a).tobytes() == np.asarray(b).tobytes()


# -- the forecast ----------------------------------------------------------------------------


def _reference_forecast(fc: LiquidityForecaster, t_ns: int, starts: np.ndarray) -> tuple:
    """The (H, 2) body the forecast had, without its record: mult, sd, ez, sd_model, later."""
    s = np.asarray(starts, dtype=np.int64)
    tail = fc._tail if fc._features is None else fc._features.tail
    x, in_force = tail.trailing_mean(t_ns, fc.state_window_ns)
    ref = in_force if fc.now_window_ns <= 0 else tail.trailing_mean(t_ns, fc.now_window_ns)[0]
    ref = np.where(np.isfinite(ref), ref, x)
    p = fc.period_ns
    a, sum_y, n_y, phi, s2, scale = fc._state
    lp_now = _reference_log_profile(fc.profile, np.array([t_ns - fc.state_window_ns // 2]))
    x_d = x - a * lp_now[0]
    with np.errstate(invalid="ignore"):
        mu = (sum_y + np.where(np.isfinite(x_d), x_d, 0.0)) / (n_y + np.isfinite(x_d))
    lag = (s + p / 2 - (t_ns - fc.state_window_ns / 2)) / p
    later = s > t_ns
    lag = np.maximum(lag, 0.0)
    lp = a[None, :] * _reference_log_profile(fc.profile, s + p // 2)
    pk = phi[None, :] ** lag[:, None]
    ez = lp + mu[None, :] + pk * (x_d - mu)[None, :]
    with np.errstate(invalid="ignore", over="ignore"):
        mult = np.exp(ez - ref[None, :])
        denom = np.where(phi < 1.0, 1.0 - phi**2, 1.0)
        var = np.where(
            phi[None, :] < 1.0, s2[None, :] * (1.0 - pk**2) / denom[None, :], s2 * lag[:, None]
        )
    ok = np.isfinite(mult)
    mult = np.where(later[:, None] & ok, mult, 1.0)
    sd_model = np.sqrt(np.maximum(var, 0.0))
    sd = np.where(later[:, None] & ok, sd_model * scale[None, :], 0.0)
    mult = mult * np.exp(0.5 * sd**2)
    return mult, sd, ez, sd_model, later & ok.all(axis=1)


def _reference_log_profile(profile: IntradayProfile | None, t: np.ndarray) -> np.ndarray:
    """The per-call log of the bucket's multipliers (before the table)."""
    t = np.atleast_1d(np.asarray(t, dtype=np.int64))
    if profile is None:
        return np.zeros((t.size, 2))
    b = profile.bucket(t)
    return np.log(np.stack([profile.beta_mult[b], profile.gamma_mult[b]], axis=1))


def _reference_record(fc, t_ns, starts, ez, sd, later) -> None:
    """The per-target loop ``_record`` had."""
    now = fc._periods.period_of(t_ns)
    if fc._recorded_period == now:
        return
    fc._recorded_period = now
    targets = (starts + fc.period_ns // 2 - fc.origin_ns) // fc.period_ns
    ez, sd = ez.copy(), sd.copy()
    ez.flags.writeable = sd.flags.writeable = False
    for j in np.flatnonzero(later & np.all(sd > 0, axis=1)):
        fc._pending.setdefault(int(targets[j]), []).append((ez[j], sd[j]))


def _profile() -> IntradayProfile:
    rng = np.random.default_rng(7)
    b, g = rng.uniform(0.5, 2.0, 24), rng.uniform(0.5, 2.0, 24)
    return IntradayProfile(HOUR, b, g, np.sqrt(b * g), np.full(24, 500), 1.0, "test")


@pytest.mark.parametrize("profile", [None, "hourly"])
@pytest.mark.parametrize("now_window_s", [0, 600])
def test_forecast_and_its_record_are_the_replaced_codes_bit_for_bit(profile, now_window_s):
    """A day of forecasts (every period, several per period, horizons to 120 periods): the
    multipliers, sds and fields, and the record the errors are scored from, as before."""
    batch, _ = ar1_day(0.7, 130, 0.3, seed=11)
    prof = _profile() if profile else None
    kw = {"profile": prof, "now_window_ns": now_window_s * S, "origin_ns": 0}
    fc, ref = LiquidityForecaster(P, **kw), LiquidityForecaster(P, **kw)
    ts = batch.ts_event_ns
    n_rows, i = 0, 0
    for k in range(2, 125):
        for t in (k * P, k * P + P // 3):  # the first decision of a period records, not the 2nd
            j = int(np.searchsorted(ts, t, side="right"))
            if j > i:
                fc.observe(batch.slice(i, j))
                ref.observe(batch.slice(i, j))
                i = j
            starts = np.arange(k, 130, dtype=np.int64) * P
            ref.settle(0)
            mult, sd, ez, sd_model, later = _reference_forecast(ref, int(t), starts)
            _reference_record(ref, int(t), starts, ez, sd_model, later)
            got = fc.forecast(int(t), starts)
            assert _same(got.beta_mult, mult[:, 0]) and _same(got.gamma_mult, mult[:, 1])
            assert _same(got.log_sd_beta, sd[:, 0]) and _same(got.log_sd_gamma, sd[:, 1])
            n_rows += int(later.sum())
    assert fc._pending.keys() == ref._pending.keys()
    for key, rows in ref._pending.items():
        mine = fc._pending[key]
        assert len(mine) == len(rows)
        for (e, s), (e0, s0) in zip(mine, rows, strict=True):
            assert _same(e, e0) and _same(s, s0) and not e.flags.writeable
    assert fc.sd_scale().tobytes() == ref.sd_scale().tobytes()  # scored alike
    assert n_rows > 1000  # the record was exercised


def test_log_profile_table_is_the_per_call_log():
    prof = _profile()
    fc = LiquidityForecaster(P, profile=prof)
    t = np.arange(0, 30 * HOUR, 7 * 60 * S, dtype=np.int64)
    assert _same(fc._log_profile(t), _reference_log_profile(prof, t))
    for ti in t[::17].tolist():  # one time, in Python ints
        assert _same(fc._log_profile(ti), _reference_log_profile(prof, np.array([ti])))
    flat = LiquidityForecaster(P)
    assert _same(flat._log_profile(5 * S), np.zeros((1, 2)))
    assert _same(flat._log_profile(t), np.zeros((t.size, 2)))


# -- the fits --------------------------------------------------------------------------------


def _reference_quadratic(curve: CostCurve) -> tuple[float, ...]:
    """fit_quadratic's numbers by np.mean / np.sum / np.column_stack (before)."""
    keep = np.isfinite(curve.mean_cost) & (curve.frac_beyond_depth <= 1.0)
    x = curve.sizes[keep]
    s = curve.mean_cost[keep] / x
    frac = float(np.mean(curve.frac_beyond_depth[keep]))
    scale = float(x.max())
    coef, _ = nnls(np.column_stack([np.ones_like(x), x / scale]), s)
    beta, gamma = float(coef[0]), float(coef[1] / scale)
    res = s - (beta + gamma * x)
    ss_tot = float(np.sum((s - s.mean()) ** 2))
    ss_res = float(np.sum(res * res))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)
    rmse = float(np.sqrt(np.mean((res * x) ** 2)))
    return beta, gamma, r2, rmse, frac


@pytest.mark.parametrize("kind", list(BeyondDepth))
def test_fits_give_the_numbers_of_np_mean_and_np_sum(kind):
    rng = np.random.default_rng(5)
    sizes = np.linspace(100.0, 20_000.0, 50)
    policy = DepthPolicy(kind)
    batch = _random_books(rng, 60)
    n = 0
    for i in range(len(batch)):
        for side in ("buy", "sell"):
            curve = book_curve(batch.slice(i, i + 1), side, sizes, policy)
            if np.isfinite(curve.mean_cost).sum() < 2:
                continue
            fit = fit_quadratic(curve)
            ref = _reference_quadratic(curve)
            got = (fit.beta, fit.gamma, fit.r2, fit.rmse, fit.frac_beyond_depth)
            assert all(_same(a, b) for a, b in zip(got, ref, strict=True)), (got, ref)
            bare = fit_quadratic(curve, diagnostics=False)  # the book in force's: no R^2, RMSE
            assert (bare.beta, bare.gamma, bare.status, bare.message) == (
                fit.beta,
                fit.gamma,
                fit.status,
                fit.message,
            )
            assert math.isnan(bare.r2) and math.isnan(bare.rmse)
            n += 1
    assert n > 50


def test_power_fits_keep_their_diagnostics():
    """fit_power and fit_piecewise_power share the plumbing: R^2 and RMSE as np.sum/np.mean."""
    x = np.geomspace(100, 20_000, 30)
    curve = CostCurve(x, 0.01 * x**1.4, np.zeros(30), 10, np.zeros(30))
    pw, pp = fit_power(curve), fit_piecewise_power(curve, 2)
    for fit, s_hat in ((pw, pw.a * np.power(x, pw.b)), (pp, pp.cost(x) / x)):
        s = curve.mean_cost / x
        res = s - s_hat
        ss_tot, ss_res = float(np.sum((s - s.mean()) ** 2)), float(np.sum(res * res))
        r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)
        assert _same(fit.r2, r2)
        assert _same(fit.rmse, float(np.sqrt(np.mean((res * x) ** 2))))


# -- the walk of the book in force -------------------------------------------------------------


def _numpy_book_curve(batch, side, sizes, policy):
    """book_curve's operations as they were (np.clip, concatenate, sum over the levels)."""
    x = np.asarray(sizes, dtype=np.float64)
    px, sz, mid = side_arrays(batch, side)
    n = len(batch)
    lv = bw._row_levels(
        px[n - 1].tolist(),
        sz[n - 1].tolist(),
        float(mid[n - 1]),
        side == "sell",
        policy.kind,
        policy.penalty_bps * 1e-4,
    )
    assert lv is not None
    d, s, q = np.array(lv[0]), np.array(lv[1]), np.array(lv[2])
    q_prev = np.concatenate(([0.0], q[:-1]))
    cost = (np.clip(x[None, :] - q_prev[:, None], 0.0, s[:, None]) * d[:, None]).sum(axis=0)
    r = np.maximum(x - q[-1], 0.0)
    beyond = r > 0
    if policy.kind is BeyondDepth.REFUSE:
        cost[beyond] = np.nan
    else:
        cost += r * (lv[4] + 0.5 * lv[5] * r)
    return cost, np.where(np.isnan(cost), np.nan, 0.0), beyond.astype(np.float64)


def _kernels() -> list[object]:
    out = [pytest.param(None, id="numpy"), pytest.param(bw._book_walk_py, id="python")]
    if accel.enabled():
        out.append(pytest.param(bw._book_walk, id="compiled"))
    return out


@pytest.mark.parametrize("kernel", _kernels())
@pytest.mark.parametrize("side", ["buy", "sell"])
@pytest.mark.parametrize("kind", list(BeyondDepth))
def test_book_curve_paths_give_the_replaced_walk_bit_for_bit(kernel, side, kind, monkeypatch):
    """The numpy path, the kernel's Python loop and the compiled kernel, against the walk as
    it was, on random books (empty levels, deep and shallow) and grids past the depth."""
    monkeypatch.setattr(bw, "_book_walk", kernel)
    rng = np.random.default_rng(abs(hash((side, str(kind)))) % 2**32)
    batch = _random_books(rng, 120)
    policy = DepthPolicy(kind, penalty_bps=float(rng.uniform(0, 300)))
    for trial in range(4):
        sizes = np.sort(rng.choice(np.arange(10, 60_000, 10), 40, replace=False)).astype(float)
        sizes.flags.writeable = trial % 2 == 0  # the frozen grid's memo, and without it
        for i in range(len(batch)):
            got = book_curve(batch.slice(0, i + 1), side, sizes, policy)
            mean, std, frac = _numpy_book_curve(batch.slice(i, i + 1), side, sizes, policy)
            assert _same(got.mean_cost, mean) and _same(got.std_cost, std)
            assert _same(got.frac_beyond_depth, frac)
            assert (got.n_snapshots, got.n_dropped) == (1, 0)


@pytest.mark.parametrize("kernel", _kernels())
def test_book_curve_of_an_infinite_level_takes_numpys_rules(kernel, monkeypatch):
    rng = np.random.default_rng(9)
    batch = _random_books(rng, 1)
    sizes = np.linspace(100.0, 40_000.0, 30)
    ref = book_curve(batch, "buy", sizes, DepthPolicy())
    batch.ask_sz[0, 3] = np.inf
    batch.bid_px[0, 4] = -np.inf
    monkeypatch.setattr(bw, "_book_walk", None)
    want = [book_curve(batch, side, sizes, DepthPolicy()) for side in ("buy", "sell")]
    monkeypatch.setattr(bw, "_book_walk", kernel)
    got = [book_curve(batch, side, sizes, DepthPolicy()) for side in ("buy", "sell")]
    for a, b in zip(got, want, strict=True):
        assert _same(a.mean_cost, b.mean_cost) and _same(a.frac_beyond_depth, b.frac_beyond_depth)
    assert not _same(got[0].mean_cost, ref.mean_cost)  # the infinite size changed the walk


def test_a_frozen_grid_is_checked_once_and_a_writeable_one_every_time(monkeypatch):
    calls = []
    real = bw._check_sizes
    monkeypatch.setattr(bw, "_check_sizes", lambda s: calls.append(1) or real(s))
    batch = _random_books(np.random.default_rng(1), 3)
    frozen = np.linspace(100.0, 5000.0, 20)
    frozen.flags.writeable = False
    for _ in range(3):
        book_curve(batch, "buy", frozen, DepthPolicy())
    assert len(calls) == 1
    loose = np.linspace(100.0, 5000.0, 20)
    for _ in range(3):
        book_curve(batch, "buy", loose, DepthPolicy())
    assert len(calls) == 4
    loose[3] = loose[2]  # a writeable grid is checked at every call
    with pytest.raises(ValueError, match="strictly increasing"):
        book_curve(batch, "buy", loose, DepthPolicy())


# -- the policy's scalars --------------------------------------------------------------------


def test_spread_share_and_lot_carry_are_np_clips():
    rng = np.random.default_rng(2)
    x = np.linspace(100.0, 5000.0, 11)
    for _ in range(500):
        g = x * rng.uniform(0.001, 0.05) + x**2 * rng.uniform(0, 1e-5) * rng.choice([1, -1])
        curve = CostCurve(x, g, np.zeros(11), 1, np.zeros(11))
        ref = float(np.clip(g[0] / x[0] * x[5] / g[5], 0.0, 1.0)) if g[5] > 0 else 1.0
        assert _same(MpcPolicy._spread_share(curve), ref)
        x0, carry = rng.uniform(0, 5000), rng.uniform(-150, 150)
        lot, remaining = int(rng.choice([1, 100])), rng.uniform(1, 1e5)
        child, left = diffuse_lots(x0, carry, lot, remaining, remaining)
        absorbed = x0 / remaining
        target = x0 + carry * (1.0 - min(absorbed, 1.0))
        assert _same(left, float(np.clip(target - child, -lot, lot)))
