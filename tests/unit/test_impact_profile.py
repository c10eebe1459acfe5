"""Intraday liquidity profile: learning from history, filling, forecast."""

from __future__ import annotations

import numpy as np
import pytest

from agent.impact.profile import DAY_NS, IntradayProfile, forecast, learn_profile
from feeds.model import BookBatch

SIZES = np.arange(100.0, 2001.0, 100.0)
H = 3_600_000_000_000  # one hour in ns


def _day(
    day: int, hours: list[float], half_spread: list[float], depth: list[float], per_hour: int = 300
) -> BookBatch:
    """Constant books per UTC hour: the given half-spread (0.01 ticks) and shares per level."""
    ts, hs, dp = [], [], []
    for h, s, d in zip(hours, half_spread, depth, strict=True):
        ts.append(day * DAY_NS + int(h * H) + np.arange(per_hour, dtype=np.int64) * 1_000_000)
        hs.append(np.full(per_hour, s))
        dp.append(np.full(per_hour, d))
    t = np.concatenate(ts)
    s = np.concatenate(hs)[:, None]
    d = np.concatenate(dp)[:, None] * np.ones((1, 10))
    lev = 0.01 * np.arange(10)[None, :]
    return BookBatch("P", t, t.copy(), 50 - s - lev, d, 50 + s + lev, d.copy())


def test_flat_profile_scales_nothing():
    """No history: every multiplier is 1 and the forecast repeats the current estimate."""
    flat = IntradayProfile.flat()

    beta_t, gamma_t = forecast(0.02, 1e-5, 0, np.arange(5) * H, flat)

    assert flat.is_flat and flat.scale(123) == 1.0
    np.testing.assert_array_equal(beta_t, 0.02)
    np.testing.assert_array_equal(gamma_t, 1e-5)
    assert forecast(0.02, 1e-5, 0, [H], None)[0].tolist() == [0.02]
    mb, mg = flat.multipliers(np.arange(3) * H)
    assert mb.tolist() == [1.0, 1.0, 1.0] and mg.tolist() == [1.0, 1.0, 1.0]


def test_learned_profile_sees_wide_open_and_deep_midday():
    """A wide, thin first hour and a tight, deep second hour give beta and gamma multipliers
    above 1 then below 1; empty buckets copy the nearest learned one."""
    hist = [_day(d, [13.5, 14.5], [0.04, 0.01], [100.0, 400.0]) for d in range(2)]

    prof = learn_profile(hist, "buy", SIZES, bucket_s=3600, min_snapshots=50)

    b_open, b_mid = prof.bucket(int(13.6 * H)), prof.bucket(int(14.6 * H))
    assert prof.source == "history" and not prof.is_flat
    assert prof.beta_mult[b_open] > 1 > prof.beta_mult[b_mid]
    assert prof.gamma_mult[b_open] > 1 > prof.gamma_mult[b_mid]
    assert prof.scale(int(13.6 * H)) > 1 > prof.scale(int(14.6 * H))
    # per-share cost of 100 shares is the half-spread: ratio 0.04 / mean(0.04, 0.01)
    assert prof.beta_mult[b_open] == pytest.approx(0.04 / 0.025)
    assert prof.n_snapshots[b_open] == 600
    # 02:00 UTC has no history: it copies 13:00 (nearest); 23:00 copies 14:00
    assert prof.beta_mult[prof.bucket(2 * H)] == prof.beta_mult[b_open]
    assert prof.beta_mult[prof.bucket(23 * H)] == prof.beta_mult[b_mid]


def test_forecast_scales_current_estimate_by_relative_profile():
    """beta_t = beta_now * mb(t) / mb(now): the window sets the level, the profile the shape."""
    hist = [_day(0, [13.5, 14.5], [0.04, 0.01], [100.0, 400.0])]
    prof = learn_profile(hist, "sell", SIZES, bucket_s=3600, min_snapshots=50)
    now = int(14.6 * H)

    beta_t, gamma_t = forecast(0.01, 2e-6, now, [now, int(13.2 * H)], prof)

    assert beta_t[0] == 0.01 and gamma_t[0] == 2e-6
    assert beta_t[1] == pytest.approx(0.04)  # the open bucket is 4x wider
    assert gamma_t[1] > 2e-6
    mb, _ = prof.multipliers([int(13.2 * H), now])
    assert mb[0] == 1.0 and mb[1] == pytest.approx(0.25)


def test_too_little_history_gives_flat_profile():
    """Buckets under min_snapshots everywhere, or no rows at all: flat."""
    hist = [_day(0, [13.5], [0.02], [100.0], per_hour=10)]

    assert learn_profile(hist, "buy", SIZES, min_snapshots=50).is_flat
    assert learn_profile([], "buy", SIZES).is_flat
    assert learn_profile([BookBatch.empty("P")], "buy", SIZES).is_flat


def test_bucket_width_must_divide_the_day():
    """A bucket that does not tile the day is a broken contract."""
    with pytest.raises(ValueError, match="bucket_s"):
        learn_profile([], "buy", SIZES, bucket_s=7000)


def test_to_dict_is_json_ready():
    """to_dict gives plain lists and labelled bucket starts."""
    hist = [_day(0, [13.5, 14.5], [0.04, 0.01], [100.0, 400.0])]
    d = learn_profile(hist, "buy", SIZES, bucket_s=3600, min_snapshots=50).to_dict()

    assert d["bucket_start_utc"][13] == "13:00"
    assert len(d["beta_mult"]) == 24 and d["source"] == "history"
    assert IntradayProfile.flat().to_dict()["ref_size"] is None


def test_single_learned_bucket_fills_the_day():
    """One bucket with data: every bucket copies it, so the profile is flat in value."""
    prof = learn_profile([_day(0, [13.5], [0.02], [100.0])], "buy", SIZES, min_snapshots=50)

    assert prof.source == "history"
    np.testing.assert_allclose(prof.beta_mult, 1.0)
    assert prof.n_snapshots.sum() == 300


def test_bucket_with_unknown_cost_copies_its_neighbour():
    """Under REFUSE a bucket whose book cannot fill the reference size is not learned."""
    from agent.impact.book_walk import BeyondDepth, DepthPolicy

    hist = [_day(0, [13.5, 14.5, 15.5], [0.04, 0.01, 0.02], [100.0, 400.0, 5.0])]

    prof = learn_profile(
        hist, "buy", SIZES, bucket_s=3600, min_snapshots=50, policy=DepthPolicy(BeyondDepth.REFUSE)
    )

    thin = prof.bucket(int(15.6 * H))
    assert prof.n_snapshots[thin] == 0
    assert prof.beta_mult[thin] == prof.beta_mult[prof.bucket(int(14.6 * H))]


def test_fill_nearest_without_any_value_is_ones():
    """Nothing learned anywhere: multipliers default to 1."""
    from agent.impact.profile import _fill_nearest

    out = _fill_nearest(np.array([3.0, 4.0]), np.array([False, False]))

    assert out.tolist() == [1.0, 1.0]


def test_round_trip_through_dict():
    """from_dict(to_dict(p)) gives the same multipliers (the daemon loads impact.json)."""
    import json

    hist = [_day(0, [13.5, 14.5], [0.04, 0.01], [100.0, 400.0])]
    prof = learn_profile(hist, "buy", SIZES, bucket_s=3600, min_snapshots=50)

    back = IntradayProfile.from_dict(json.loads(json.dumps(prof.to_dict())))
    flat = IntradayProfile.from_dict(IntradayProfile.flat().to_dict())

    np.testing.assert_array_equal(back.beta_mult, prof.beta_mult)
    np.testing.assert_array_equal(back.gamma_mult, prof.gamma_mult)
    assert back.bucket_ns == prof.bucket_ns and back.ref_size == prof.ref_size
    assert flat.is_flat and flat.source == "flat"
    with pytest.raises(ValueError, match="multipliers"):
        IntradayProfile.from_dict({"bucket_s": 3600, "beta_mult": [1.0], "gamma_mult": [1.0]})
