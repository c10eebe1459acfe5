"""Intraday liquidity profile used to forecast g_t for later periods (pure).

The forecast for period j seen from period k is the current window's estimate scaled by the
profile: ``beta_j = beta_now * mb(t_j) / mb(t_k)`` and ``gamma_j = gamma_now * mg(t_j) / mg(t_k)``,
where ``mb``/``mg`` are time-of-day bucket multipliers (UTC) learned from earlier days. The flat
profile (all ones) makes every later period look like the current one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

__all__ = ["LiquidityProfile", "learn_profiles", "profile_from_fits"]

_DAY_NS = 86_400 * 1_000_000_000


@dataclass(frozen=True, slots=True)
class LiquidityProfile:
    """Time-of-day multipliers of the impact parameters.

    Attributes:
        bucket_ns: Bucket width in ns.
        beta_mult: Multiplier of beta per bucket of the UTC day, shape (B,), > 0.
        gamma_mult: Multiplier of gamma per bucket, shape (B,), > 0.
    """

    bucket_ns: int
    beta_mult: NDArray[np.float64]
    gamma_mult: NDArray[np.float64]

    @staticmethod
    def flat() -> LiquidityProfile:
        """Return the profile that scales nothing."""
        return LiquidityProfile(_DAY_NS, np.ones(1), np.ones(1))

    @property
    def is_flat(self) -> bool:
        """Return True when every multiplier is 1."""
        return bool(np.all(self.beta_mult == 1.0) and np.all(self.gamma_mult == 1.0))

    def _bucket(self, t_ns: NDArray[np.int64]) -> NDArray[np.intp]:
        b = (np.asarray(t_ns, dtype=np.int64) % _DAY_NS) // self.bucket_ns
        return np.minimum(b, len(self.beta_mult) - 1).astype(np.intp)

    def multipliers(
        self, starts_ns: NDArray[np.int64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Return forecast multipliers of beta and gamma for periods starting at ``starts_ns``.

        Both are relative to the first period (the current one), so the first entries are 1.

        Args:
            starts_ns: Period start times, shape (H,), the first being the current period.

        Returns:
            ``(mb, mg)``, each shape (H,).
        """
        b = self._bucket(starts_ns)
        mb = self.beta_mult[b]
        mg = self.gamma_mult[b]
        return mb / mb[0], mg / mg[0]


def profile_from_fits(
    bucket_ns: int,
    beta: NDArray[np.float64],
    gamma: NDArray[np.float64],
) -> LiquidityProfile:
    """Build a profile from per-bucket fitted parameters (NaN where a bucket had no data).

    Multipliers are the bucket's parameter over the median across buckets with data; an empty
    bucket takes the nearest bucket with data, so the forecast never invents a regime.

    Args:
        bucket_ns: Bucket width, ns.
        beta: Fitted beta per bucket of the day, shape (B,).
        gamma: Fitted gamma per bucket, shape (B,).
    """
    out = []
    for p in (np.asarray(beta, float), np.asarray(gamma, float)):
        ok = np.isfinite(p) & (p > 0)
        if not ok.any():
            out.append(np.ones_like(p))
            continue
        idx = np.flatnonzero(ok)
        nearest = idx[np.abs(np.arange(len(p))[:, None] - idx[None, :]).argmin(axis=1)]
        filled = p[nearest]
        out.append(filled / np.median(p[ok]))
    return LiquidityProfile(int(bucket_ns), out[0], out[1])


def learn_profiles(
    paths: list[Path], symbols: set[str], *, bucket_s: float = 1800.0,
    sizes: NDArray[np.float64] | None = None,
) -> dict[str, LiquidityProfile]:
    """Learn a profile per symbol from history files of earlier days.

    Each bucket of the UTC day gets the quadratic fit of its mean walk-the-book curve (both
    sides averaged); the multipliers are these over their median across buckets.

    Args:
        paths: MBP-10 files (any format ``feeds.readers.read_mbp10`` reads).
        symbols: Symbols to learn (others in the files are ignored).
        bucket_s: Bucket width, seconds.
        sizes: Size grid for the walk (shares); 50 sizes up to 10,000 by default.
    """
    from agent.impact.book_walk import cost_curve
    from agent.impact.fit import fit_quadratic
    from feeds.model import BookBatch
    from feeds.readers import read_mbp10
    from feeds.validate import validate_batch

    grid = np.linspace(200.0, 10_000.0, 50) if sizes is None else sizes
    bucket_ns = int(bucket_s * 1e9)
    n_b = int(np.ceil(_DAY_NS / bucket_ns))
    per_sym: dict[str, list[BookBatch]] = {s: [] for s in symbols}
    for p in paths:
        prev: dict[str, int | None] = {}
        for batch in read_mbp10(p):
            if batch.symbol not in per_sym:
                continue
            res = validate_batch(batch, prev.get(batch.symbol))
            if len(res.valid):
                prev[batch.symbol] = int(res.valid.ts_event_ns[-1])
                per_sym[batch.symbol].append(res.valid)
    out: dict[str, LiquidityProfile] = {}
    for sym, batches in per_sym.items():
        if not batches:
            continue
        whole = BookBatch.concat(batches)
        b_idx = (whole.ts_event_ns % _DAY_NS) // bucket_ns
        beta = np.full(n_b, np.nan)
        gamma = np.full(n_b, np.nan)
        for b in np.unique(b_idx):
            rows = whole.take(np.flatnonzero(b_idx == b))
            if len(rows) < 20:
                continue
            fits = [fit_quadratic(cost_curve(rows, side, grid)) for side in ("buy", "sell")]
            beta[b] = np.mean([f.beta for f in fits])
            gamma[b] = np.mean([f.gamma for f in fits])
        out[sym] = profile_from_fits(bucket_ns, beta, gamma)
    return out
