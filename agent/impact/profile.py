"""Intraday liquidity profile and the forecast of g for future periods (pure).

Symbols:
    B           number of time-of-day buckets (UTC), each ``bucket_ns`` long
    mb, mg      multipliers of beta and gamma per bucket
    mc          multiplier of the total cost g(x_ref) per bucket at a reference size x_ref
    beta_t, gamma_t   forecast parameters of the period starting at t

Learning (``learn_profile``): history snapshots are bucketed by their UTC time of day (every
day of history pooled into the same buckets) and each bucket's cost curve is accumulated, as is
the pooled curve of all buckets. With ``x_0`` the smallest size and ``x_ref`` the middle one:
``mb = s_b(x_0) / s_all(x_0)`` (per-share cost of the smallest order: the spread part, what
beta carries), ``mg = e_b / e_all`` with ``e = g(x_ref) - s(x_0)*x_ref`` (the cost above that
linear part: the depth part, what gamma carries) and ``mc = g_b(x_ref) / g_all(x_ref)``. These
ratios are model-free: per-bucket quadratic fits trade beta against gamma and give noisy
ratios. A bucket with fewer than ``min_snapshots`` snapshots copies the nearest bucket that has
enough; a zero denominator leaves the multiplier at ``mc`` (gamma) or 1. Multipliers are clipped to
``[1/20, 20]``: one odd bucket must not make a period look free or impossible.

Forecast (``forecast``): ``beta_t = beta_now * mb(t) / mb(now)`` and the same for gamma: the
current window's estimate carries the level, the profile only the shape of the day. The flat
profile (no history) forecasts every period equal to the current one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from agent.impact.book_walk import CostCurve, CurveAccumulator, DepthPolicy, Side
from feeds.model import BookBatch

__all__ = ["DAY_NS", "IntradayProfile", "forecast", "learn_profile", "profile_from"]

DAY_NS = 86_400 * 1_000_000_000
_CLIP = (1.0 / 20.0, 20.0)


@dataclass(frozen=True, slots=True)
class IntradayProfile:
    """Time-of-day multipliers of the impact parameters (UTC buckets).

    Attributes:
        bucket_ns: Bucket width in ns; ``DAY_NS`` for the flat profile (one bucket).
        beta_mult: Multiplier of beta per bucket, shape (B,), > 0.
        gamma_mult: Multiplier of gamma per bucket, shape (B,), > 0.
        cost_mult: Multiplier of the total cost at ``ref_size`` per bucket, shape (B,), > 0.
        n_snapshots: History snapshots per bucket, shape (B,) (0 for filled-in buckets).
        ref_size: Reference order size of ``cost_mult``, shares (NaN when flat).
        source: ``"flat"`` or ``"history"``.
    """

    bucket_ns: int
    beta_mult: NDArray[np.float64]
    gamma_mult: NDArray[np.float64]
    cost_mult: NDArray[np.float64] = field(default_factory=lambda: np.ones(1))
    n_snapshots: NDArray[np.int64] = field(default_factory=lambda: np.zeros(1, dtype=np.int64))
    ref_size: float = math.nan
    source: str = "flat"

    @staticmethod
    def flat() -> IntradayProfile:
        """Return the profile that scales nothing (used when no history is given)."""
        return IntradayProfile(DAY_NS, np.ones(1), np.ones(1))

    @property
    def is_flat(self) -> bool:
        """Return True when every multiplier is 1."""
        return bool(
            np.all(self.beta_mult == 1.0)
            and np.all(self.gamma_mult == 1.0)
            and np.all(self.cost_mult == 1.0)
        )

    def bucket(self, ts_ns: ArrayLike) -> NDArray[np.intp]:
        """Return the bucket index of UTC timestamps (ns), same shape as ``ts_ns``."""
        b = (np.asarray(ts_ns, dtype=np.int64) % DAY_NS) // self.bucket_ns
        return np.minimum(b, self.beta_mult.size - 1).astype(np.intp)

    def bucket_of(self, ts_ns: int) -> int:
        """Return the bucket index of one UTC timestamp (ns): ``bucket`` in Python ints."""
        return min((int(ts_ns) % DAY_NS) // self.bucket_ns, self.beta_mult.size - 1)

    def scale(self, ts_ns: int) -> float:
        """Return the liquidity multiplier of the total cost at time ``ts_ns`` (1.0 when flat)."""
        return float(self.cost_mult[self.bucket(ts_ns)])

    def multipliers(self, starts_ns: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Return beta and gamma multipliers of periods relative to the first one.

        Args:
            starts_ns: Period start times in ns, shape (H,), the first being the current period.

        Returns:
            ``(mb, mg)``, each shape (H,), with ``mb[0] == mg[0] == 1``.
        """
        b = self.bucket(starts_ns)
        mb = self.beta_mult[b]
        mg = self.gamma_mult[b]
        return mb / mb[0], mg / mg[0]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready description."""
        return {
            "source": self.source,
            "bucket_s": self.bucket_ns / 1e9,
            "ref_size": None if math.isnan(self.ref_size) else self.ref_size,
            "bucket_start_utc": [_hhmm(i * self.bucket_ns) for i in range(self.beta_mult.size)],
            "beta_mult": self.beta_mult.tolist(),
            "gamma_mult": self.gamma_mult.tolist(),
            "cost_mult": self.cost_mult.tolist(),
            "n_snapshots": self.n_snapshots.tolist(),
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> IntradayProfile:
        """Rebuild a profile from ``to_dict`` output (e.g. ``impact.json``'s
        ``forecast_profile``), so the daemon can load what ``calibrate`` learned.

        Raises:
            ValueError: If the multipliers are not positive, or their count does not tile the
                day with ``bucket_s``.
        """
        bucket_ns = round(float(d["bucket_s"]) * 1e9)
        mb = np.asarray(d["beta_mult"], dtype=np.float64)
        mg = np.asarray(d["gamma_mult"], dtype=np.float64)
        mc = np.asarray(d.get("cost_mult", np.ones(mb.size)), dtype=np.float64)
        n = np.asarray(d.get("n_snapshots", np.zeros(mb.size)), dtype=np.int64)
        sizes_ok = mb.size == mg.size == mc.size == n.size and mb.size * bucket_ns == DAY_NS
        if not sizes_ok or not np.all((mb > 0) & (mg > 0) & (mc > 0)):
            raise ValueError("profile needs positive multipliers, one per bucket of the day")
        ref = d.get("ref_size")
        return IntradayProfile(
            bucket_ns,
            mb,
            mg,
            mc,
            n,
            math.nan if ref is None else float(ref),
            str(d.get("source", "history")),
        )


def _hhmm(t_ns: int) -> str:
    m = int(t_ns // 60_000_000_000)
    return f"{m // 60:02d}:{m % 60:02d}"


def _fill_nearest(values: NDArray[np.float64], ok: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Copy each missing entry from the nearest ok entry (ties: the earlier)."""
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return np.ones_like(values)
    pos = np.arange(values.size)
    j = np.clip(np.searchsorted(idx, pos), 1, max(idx.size - 1, 1))
    if idx.size == 1:
        return np.full_like(values, values[idx[0]])
    left, right = idx[j - 1], idx[j]
    near = np.where(pos - left <= right - pos, left, right)
    return np.where(ok, values, values[near])


def learn_profile(
    batches: Iterable[BookBatch],
    side: Side,
    sizes: ArrayLike,
    *,
    bucket_s: float = 1800.0,
    policy: DepthPolicy = DepthPolicy(),  # noqa: B008 (frozen, immutable default)
    min_snapshots: int = 200,
) -> IntradayProfile:
    """Learn time-of-day multipliers of beta, gamma and g from history snapshots.

    Args:
        batches: History snapshots (any number of days and batches, one symbol).
        side: ``"buy"`` or ``"sell"``: which side's cost the profile describes.
        sizes: Order sizes in shares for the per-bucket curves, shape (G,); the reference size
            of ``cost_mult`` is the middle one.
        bucket_s: Bucket width in seconds, dividing the day (e.g. 300, 900, 1800).
        policy: Beyond-depth policy of the per-bucket curves.
        min_snapshots: Buckets with fewer snapshots copy their nearest neighbour.

    Returns:
        The profile; flat when the history holds no snapshot or no bucket has enough.

    Raises:
        ValueError: If ``bucket_s`` does not divide the day into whole buckets.
    """
    bucket_ns = round(bucket_s * 1e9)
    if bucket_ns <= 0 or DAY_NS % bucket_ns:
        raise ValueError(f"bucket_s must divide the day into whole buckets, got {bucket_s}")
    n_b = DAY_NS // bucket_ns
    accs = [CurveAccumulator(sizes, side, policy) for _ in range(n_b)]
    for batch in batches:
        if not len(batch):
            continue
        b = (batch.ts_event_ns % DAY_NS) // bucket_ns
        # rows are time-ordered: split the batch at bucket changes, no per-row Python loop
        cuts = np.flatnonzero(np.diff(b)) + 1
        starts = np.r_[0, cuts]
        stops = np.r_[cuts, len(batch)]
        for lo, hi in zip(starts, stops, strict=True):  # one slice per bucket run
            accs[int(b[lo])].add(batch.slice(int(lo), int(hi)))
    return profile_from(accs, bucket_ns, min_snapshots)


def _shape(curve: CostCurve, ref: int) -> tuple[float, float, float]:
    """Return (s(x_0), g(x_ref) - s(x_0)*x_ref, g(x_ref)) of a curve.

    ``s(x_0)``, the per-share cost of the smallest size, is the spread part (what beta
    carries); the excess of ``g(x_ref)`` over it is the depth part (what gamma carries).
    Model-free on purpose: a per-bucket quadratic fit trades beta against gamma and makes
    noisy ratios.
    """
    x0, xr = curve.sizes[0], curve.sizes[ref]
    s0 = float(curve.mean_cost[0] / x0)
    g = float(curve.mean_cost[ref])
    return s0, g - s0 * xr, g


def profile_from(
    accs: list[CurveAccumulator], bucket_ns: int, min_snapshots: int = 200
) -> IntradayProfile:
    """Turn per-bucket curve accumulators into a profile (see the module docstring).

    Args:
        accs: One accumulator per time-of-day bucket, shape (B,) with ``B = DAY_NS /
            bucket_ns``, all with the same sizes, side and policy.
        bucket_ns: Bucket width in ns.
        min_snapshots: Buckets with fewer snapshots copy their nearest neighbour.

    Returns:
        The profile; flat when no bucket has enough snapshots.
    """
    n_b = len(accs)
    total = CurveAccumulator(accs[0].sizes, accs[0].side, accs[0].policy)
    for acc in accs:
        total.merge(acc)
    counts = np.array([acc.n_snapshots for acc in accs], dtype=np.int64)
    if total.n_snapshots == 0:
        return IntradayProfile.flat()
    sizes = accs[0].sizes
    ref = sizes.size // 2
    lin_all, exc_all, g_all = _shape(total.result(), ref)
    mb = np.ones(n_b)
    mg = np.ones(n_b)
    mc = np.ones(n_b)
    ok = counts >= min_snapshots
    for i in np.flatnonzero(ok):  # B buckets (48 for 30 minutes), not rows
        lin, exc, g = _shape(accs[i].result(), ref)
        if not (np.isfinite(lin) and np.isfinite(g)):
            ok[i] = False
            continue
        mb[i] = lin / lin_all if lin_all > 0 else 1.0
        mc[i] = g / g_all if g_all > 0 else 1.0
        mg[i] = exc / exc_all if exc_all > 0 else mc[i]
    if not ok.any():
        return IntradayProfile.flat()
    mb, mg, mc = (np.clip(_fill_nearest(v, ok), *_CLIP) for v in (mb, mg, mc))
    return IntradayProfile(
        bucket_ns, mb, mg, mc, np.where(ok, counts, 0), float(sizes[ref]), "history"
    )


def forecast(
    beta_now: float,
    gamma_now: float,
    now_ns: int,
    starts_ns: ArrayLike,
    profile: IntradayProfile | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Forecast (beta_t, gamma_t) of future periods from the current window's estimate.

    Args:
        beta_now: Current beta, currency per share.
        gamma_now: Current gamma, currency per share squared.
        now_ns: Time of the current estimate, ns (UTC).
        starts_ns: Start times of the periods to forecast, ns, shape (H,).
        profile: Intraday profile; ``None`` or flat gives constant parameters.

    Returns:
        ``(beta_t, gamma_t)``, each shape (H,).
    """
    t = np.asarray(starts_ns, dtype=np.int64)
    if profile is None or profile.is_flat:
        return np.full(t.shape, float(beta_now)), np.full(t.shape, float(gamma_now))
    b_now = profile.bucket(now_ns)
    b = profile.bucket(t)
    beta_t = beta_now * profile.beta_mult[b] / profile.beta_mult[b_now]
    gamma_t = gamma_now * profile.gamma_mult[b] / profile.gamma_mult[b_now]
    return beta_t, gamma_t
