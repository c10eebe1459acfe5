"""Traded volume per period from the feed's trade rows, its forecast, caps and the gate."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from agent.core.volume import (
    VolumeTracker,
    participation_caps,
    participation_gate,
    trade_rows,
)
from agent.errors import InvariantViolation
from feeds.model import BookBatch
from tests.lookahead import replace_after, with_events

S = 1_000_000_000
P = 60 * S


def plain(ts):
    ts = np.asarray(ts, dtype=np.int64)
    z = np.ones((ts.size, 10))
    return BookBatch("SYN", ts, ts.copy(), z * 9.99, z * 100, z * 10.01, z * 100)


def test_trade_rows_reads_only_action_t_with_a_size():
    b = with_events(plain([1, 2, 3, 4, 5]), "TACTT", [100, 50, 0, 30, 0])
    ts, q = trade_rows(b)
    assert ts.tolist() == [1, 4] and q.tolist() == [100.0, 30.0]


def test_a_batch_without_event_columns_has_no_trades():
    ts, q = trade_rows(plain([1, 2]))
    assert ts.size == 0 and q.size == 0
    vt = VolumeTracker(P)
    vt.observe(plain([1, 2]))
    assert vt.total == 0.0


def test_volume_per_period_counts_trade_rows():
    ts = np.array([0, 10, 70, 130, 135]) * S
    b = with_events(plain(ts), "TTTAT", [100, 20, 50, 999, 5])
    vt = VolumeTracker(P)
    vt.observe(b)
    np.testing.assert_allclose(vt.volumes(135 * S), [120.0, 50.0, 5.0])
    assert vt.total == 175.0


def test_flat_forecast_is_the_days_rate_and_the_current_period_adds_what_traded():
    vt = VolumeTracker(P, origin_ns=0, min_share=0.0, half_life_ns=None)
    vt.observe_trades(np.arange(0, 600, 6) * S, np.full(100, 10.0))  # 1000 shares in 10 min
    t = 600 * S - 1
    f = vt.forecast(t, [9 * P, 10 * P, 11 * P])
    # flat over the day: V_day = 1000 / (600 s / 86400 s); a minute is 100 shares
    assert f.volume[1] == pytest.approx(100.0, rel=1e-6)
    assert f.volume[2] == pytest.approx(100.0, rel=1e-6)
    assert f.realized[0] == pytest.approx(100.0) and f.volume[0] == pytest.approx(100.0, rel=1e-3)
    assert f.fields["status"] == "ok"


def test_profile_shapes_the_forecast_of_later_periods():
    share = np.zeros(24)
    share[14], share[15] = 0.25, 0.75  # three times the volume in the second hour
    origin = 14 * 3600 * S
    vt = VolumeTracker(P, origin_ns=origin, volume_share=share)
    vt.observe_trades(origin + np.arange(0, 1800, 1) * S, np.ones(1800))  # half an hour
    t = origin + 1800 * S
    f = vt.forecast(t, [t + 3600 * S, t + 1 * P])
    # half of the first hour has 1800 shares: V_day = 1800 / 0.125 = 14400; a minute of the
    # second hour is 0.75 / 60 of it, a minute of the first 0.25 / 60
    assert f.volume[0] == pytest.approx(14400 * 0.75 / 60)
    assert f.volume[1] == pytest.approx(14400 * 0.25 / 60)


def test_forecast_is_unknown_before_enough_of_the_day():
    vt = VolumeTracker(P, min_share=0.01)
    vt.observe_trades([S], [10.0])
    f = vt.forecast(2 * S, [0, P])
    assert np.all(np.isnan(f.volume)) and f.fields["status"] == "unknown"
    assert np.all(np.isinf(participation_caps(0.1, f.volume)))


def test_caps_and_gate():
    np.testing.assert_allclose(participation_caps(0.05, [1000.0, np.nan]), [50.0, np.inf])
    g = participation_gate(40.0, 0.05, 1000.0, already_qty=20.0)
    assert not g.ok and g.allowed_qty == 30.0 and g.limit_qty == 50.0
    assert g.reason == "over_participation"
    assert participation_gate(30.0, 0.05, 1000.0, already_qty=20.0).ok
    u = participation_gate(1e9, 0.05, math.nan)
    assert u.ok and u.reason == "volume_unknown"
    with pytest.raises(ValueError, match="rate"):
        participation_caps(0.0, [1.0])
    with pytest.raises(ValueError, match="rate"):
        participation_gate(1.0, 1.5, 10.0)


def test_bad_profile_is_refused():
    with pytest.raises(ValueError, match="volume_share"):
        VolumeTracker(P, volume_share=np.ones(7))


def test_volume_forecast_uses_trades_up_to_t_only():
    ts = np.arange(0, 3600, 3) * S
    b = with_events(plain(ts), "T" * ts.size, np.full(ts.size, 10.0))
    t0 = 1800 * S
    other = replace_after(b, t0)  # later trades twice the size, in reverse
    times = np.arange(300, 3600, 300) * S
    res = []
    for batch in (b, other):
        vt = VolumeTracker(P, min_share=0.0)
        out, lo = [], 0
        for t in times:
            hi = int(np.searchsorted(ts, t, side="right"))
            vt.observe(_rows(batch, lo, hi))
            lo = hi
            out.append(vt.forecast(int(t), t + P * np.arange(3)).volume)
        res.append(out)
    for t, a, c in zip(times, *res, strict=True):
        if t <= t0:
            np.testing.assert_array_equal(a, c)
    assert any(not np.array_equal(a, c) for t, a, c in zip(times, *res, strict=True) if t > t0)


def _rows(batch, lo, hi):
    """Rows lo:hi keeping the event columns (``slice`` of an older BookBatch drops them)."""
    n = len(batch)
    return dataclasses.replace(
        batch,
        **{
            f.name: getattr(batch, f.name)[lo:hi]
            for f in dataclasses.fields(batch)
            if isinstance(getattr(batch, f.name), np.ndarray)
            and getattr(batch, f.name).shape[:1] == (n,)
        },
    )


def test_forecast_refuses_a_time_before_an_observed_trade():
    vt = VolumeTracker(P)
    vt.observe_trades([10 * S], [5.0])
    with pytest.raises(InvariantViolation, match="look-ahead"):
        vt.forecast(5 * S, [0])


def test_vwap_weights_use_what_is_left_of_the_current_period():
    vt = VolumeTracker(P, min_share=0.0, half_life_ns=None)
    t = 9 * P + 30 * S  # half-way through period 9
    vt.observe_trades(np.arange(0, 571, 6) * S, np.full(96, 10.0))  # trades up to t only
    rate = 960.0 / 570.0  # shares a second, the day so far
    f = vt.forecast(t, [9 * P, 10 * P, 11 * P])
    np.testing.assert_allclose(f.realized, [60.0, 0.0, 0.0])
    np.testing.assert_allclose(f.remaining, [30 * rate, 60 * rate, 60 * rate], rtol=1e-9)
    np.testing.assert_allclose(f.weights(), [0.2, 0.4, 0.4], rtol=1e-3)
    unknown = VolumeTracker(P).forecast(0, [0, P])
    np.testing.assert_allclose(unknown.weights(), [0.5, 0.5])


def test_the_rate_follows_recent_periods_with_a_half_life():
    # a busy hour (1000 shares a minute), then an hour at 100 a minute
    ts = np.arange(0, 7200, 6) * S
    qty = np.where(ts < 3600 * S, 100.0, 10.0)
    t = 7200 * S - 1
    whole = VolumeTracker(P, min_share=0.0, half_life_ns=None)
    recent = VolumeTracker(P, min_share=0.0, half_life_ns=600 * S)
    for vt in (whole, recent):
        vt.observe_trades(ts, qty)
    w = whole.forecast(t, [t + 1])
    r = recent.forecast(t, [t + 1])
    assert w.volume[0] == pytest.approx(550.0, rel=1e-3)  # the two hours' mean
    assert 100.0 < r.volume[0] < 150.0  # mostly the last hour's rate


def test_trailing_volume_is_what_traded_in_the_last_window():
    vt = VolumeTracker(P)
    vt.observe_trades(np.array([10, 50, 70, 100, 130]) * S, [1.0, 2.0, 4.0, 8.0, 16.0])
    assert vt.trailing_volume(130 * S) == 24.0  # (70, 130]: 8 + 16 (70 itself is out)
    assert vt.trailing_volume(129 * S, P) == 12.0  # (69, 129]: 4 + 8
    assert vt.trailing_volume(130 * S, 30 * S) == 16.0
    with pytest.raises(ValueError, match="window_ns"):
        vt.trailing_volume(130 * S, 2 * P)
