"""Traded volume per period from the feed, its forecast, and the participation cap (pure).

Symbols (``docs/forecast.md``):
    V_k        shares traded in period k (trade rows of the feed, or a trade stream)
    f(tau)     expected share of the session's volume per unit of time of day (the profile's
               ``volume_share`` per bucket / bucket length); flat when no profile is given
    F(a, b)    ``int_a^b f``: the share of the day's volume expected in ``[a, b)``
    V_day      the day's expected volume: ``V_k / F_k`` of the periods so far, averaged with
               weights ``2^(-age / half_life) F_k`` (``V(origin, t) / F(origin, t)`` without a
               half-life)
    E[V_j]     ``V_day * F(s_j, s_j + P)`` for a later period, plus what already traded for the
               current one
    rho        participation rate: at most ``rho`` of a period's volume, so ``u_j = rho E[V_j]``

Trades come from the batch's event columns when the feed carries them (``action`` uint8 ASCII,
``'T'`` a trade, ``ev_sz`` its size; read with ``getattr`` so a batch without the columns simply
has no trades), or from ``observe_trades`` (a separate trade stream, e.g. Binance ``@trade``,
or the backtest's ``Trades``). A trade of our own child is in the market's prints live but not in
a replayed file: the caller decides whether to subtract it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from agent.core.bookstats import Tail
from agent.errors import InvariantViolation
from feeds.model import BookBatch

__all__ = [
    "GateResult",
    "VolumeForecast",
    "VolumeTracker",
    "participation_caps",
    "participation_gate",
    "trade_rows",
]

DAY_NS = 86_400 * 1_000_000_000


def trade_rows(
    batch: BookBatch, actions: bytes = b"T"
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Return ``(ts_ns, qty)`` of the batch's trade rows (empty when it has no event columns).

    Args:
        batch: Snapshots, possibly with the optional ``action`` and ``ev_sz`` columns.
        actions: ASCII codes that count as trades.
    """
    action = getattr(batch, "action", None)
    size = getattr(batch, "ev_sz", None)
    if action is None or size is None or not len(batch):
        return np.empty(0, dtype=np.int64), np.empty(0)
    a = np.asarray(action, dtype=np.uint8)
    q = np.asarray(size, dtype=np.float64)
    m = np.isin(a, np.frombuffer(actions, dtype=np.uint8)) & np.isfinite(q) & (q > 0)
    return np.asarray(batch.ts_event_ns, dtype=np.int64)[m], q[m]


@dataclass(frozen=True, slots=True)
class VolumeForecast:
    """Expected volume of the periods asked.

    Attributes:
        volume: Expected shares traded per period, shape (H,); NaN where unknown (no trade yet
            or too little of the day seen): a cap from it is then no cap.
        realized: Shares already traded in each period (0 for later ones), shape (H,).
        fields: Scalars for the logs (``volume.*``).
    """

    volume: NDArray[np.float64]
    realized: NDArray[np.float64]
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def remaining(self) -> NDArray[np.float64]:
        """Expected volume still to trade in each period (the current one: its rest)."""
        return np.maximum(self.volume - self.realized, 0.0)

    def weights(self) -> NDArray[np.float64]:
        """Return the VWAP weights of the periods, ``remaining / sum(remaining)``, shape (H,);
        uniform when the volume is unknown."""
        r = self.remaining
        if not np.all(np.isfinite(r)) or r.sum() <= 0:
            return np.full(r.size, 1.0 / max(r.size, 1))
        return np.asarray(r / r.sum(), dtype=np.float64)


class VolumeTracker:
    """Per-period traded volume since ``origin_ns`` and its forecast (see module docstring).

    Args:
        period_ns: Period length P, ns.
        origin_ns: Start of period 0 and of the volume counted, ns.
        volume_share: Expected share of the day's volume per UTC bucket, shape (B,), tiling
            the day (``agent.core.prior.Prior.volume_share``); None for flat in time.
        min_share: Share of the day's volume ``F(origin, t)`` that must have elapsed before a
            forecast is given (below it the rate is too noisy to cap on).
        half_life_ns: Half-life of the periods' weights in ``V_day`` (the day's rate drifts);
            None weighs the whole day the same.
        actions: ASCII action codes counted as trades.
    """

    def __init__(
        self,
        period_ns: int,
        origin_ns: int = 0,
        *,
        volume_share: ArrayLike | None = None,
        min_share: float = 0.005,
        half_life_ns: int | None = 3600 * 10**9,
        actions: bytes = b"T",
    ) -> None:
        if period_ns <= 0:
            raise ValueError(f"period_ns must be > 0, got {period_ns}")
        self.period_ns = int(period_ns)
        self.origin_ns = int(origin_ns)
        self.min_share = float(min_share)
        self.half_life_ns = half_life_ns
        self.actions = actions
        self._vol: dict[int, float] = {}
        self._recent = Tail(1)  # trades of the last period, for ``trailing_volume``
        self._total = 0.0
        self._n_added = 0  # trade batches counted: what a memoised forecast depends on
        self._memo: tuple[tuple[int, ...], VolumeForecast] | None = None
        self._last_ts: int | None = None
        if volume_share is None:
            self._share = np.ones(1)
        else:
            v = np.asarray(volume_share, dtype=np.float64)
            if v.ndim != 1 or v.size == 0 or DAY_NS % v.size or np.any(v < 0) or v.sum() <= 0:
                raise ValueError("volume_share must be >= 0, sum > 0, one per bucket of the day")
            self._share = v / v.sum()
        self._bucket_ns = DAY_NS // self._share.size
        self._cum = np.r_[0.0, np.cumsum(self._share)]

    def period_of(self, t_ns: int) -> int:
        """Return the period index of a time."""
        return (int(t_ns) - self.origin_ns) // self.period_ns

    @property
    def total(self) -> float:
        """Shares traded since ``origin_ns``."""
        return self._total

    def observe(self, batch: BookBatch) -> None:
        """Count the batch's trade rows (none when the batch has no event columns)."""
        ts, qty = trade_rows(batch, self.actions)
        if len(batch):
            self._last_ts = max(self._last_ts or 0, int(batch.ts_event_ns[-1]))
        self.observe_trades(ts, qty)

    def observe_trades(self, ts_ns: ArrayLike, qty: ArrayLike) -> None:
        """Count trades from a separate stream (ns times, shares); earlier than origin ignored."""
        ts = np.asarray(ts_ns, dtype=np.int64)
        q = np.asarray(qty, dtype=np.float64)
        if ts.size == 0:
            return
        if ts.shape != q.shape:
            raise ValueError(f"trade times {ts.shape} and sizes {q.shape} differ in shape")
        self._last_ts = max(self._last_ts or 0, int(ts.max()))
        keep = (ts >= self.origin_ns) & np.isfinite(q) & (q > 0)
        if not keep.any():
            return
        p = (ts[keep] - self.origin_ns) // self.period_ns
        uniq, inv = np.unique(p, return_inverse=True)
        sums = np.bincount(inv, weights=q[keep])
        for per, v in zip(uniq.tolist(), sums.tolist(), strict=True):  # few periods a batch
            self._vol[per] = self._vol.get(per, 0.0) + v
        self._n_added += 1
        self._total += float(sums.sum())
        self._recent.append(ts[keep], q[keep][:, None])
        self._recent.trim(self._last_ts - self.period_ns)

    def trailing_volume(self, t_ns: int, window_ns: int | None = None) -> float:
        """Return the shares traded in ``(t - window, t]`` (window at most one period, the
        default): the realized volume a hard participation gate checks against."""
        w = self.period_ns if window_ns is None else int(window_ns)
        if not (0 < w <= self.period_ns):
            raise ValueError(f"window_ns must be in (0, period_ns], got {window_ns}")
        ts, q = self._recent.view()
        m = (ts > t_ns - w) & (ts <= t_ns)
        return float(q[m, 0].sum())

    def volumes(self, t_ns: int) -> NDArray[np.float64]:
        """Return the volume of periods ``0 .. period_of(t)``, shape (k+1,) (the last partial)."""
        k = self.period_of(t_ns)
        out = np.zeros(max(k + 1, 0))
        for p, v in self._vol.items():
            if 0 <= p <= k:
                out[p] = v
        return out

    def share_between(self, a_ns: ArrayLike, b_ns: ArrayLike) -> NDArray[np.float64]:
        """Return ``F(a, b)``: the expected share of a day's volume in ``[a, b)``, elementwise."""
        return self._cum_at(b_ns) - self._cum_at(a_ns)

    def _cum_at(self, t_ns: ArrayLike) -> NDArray[np.float64]:
        t = np.asarray(t_ns, dtype=np.int64)
        d, r = np.divmod(t, DAY_NS)
        b = np.minimum(r // self._bucket_ns, self._share.size - 1)
        frac = (r - b * self._bucket_ns) / self._bucket_ns
        return np.asarray(d + self._cum[b] + self._share[b] * frac, dtype=np.float64)

    def _day_volume(self, t_ns: int) -> float:
        """Return ``V_day``: each period's ``V_k / F_k`` averaged with weights
        ``2^(-age / half_life) * F_k`` (the current period with what of it has elapsed), so a
        busy open does not set the afternoon's rate. Without a half-life: ``V / F`` of the day."""
        if self.half_life_ns is None:
            return self._total / float(self.share_between(self.origin_ns, t_ns))
        now = self.period_of(t_ns)
        # periods older than 30 half-lives weigh < 1e-9: left out, so the cost stays bounded
        oldest = max(0, now - math.ceil(30 * self.half_life_ns / self.period_ns))
        k = np.arange(oldest, max(now, 0) + 1)
        a = self.origin_ns + k * self.period_ns
        b = np.minimum(a + self.period_ns, t_ns)
        f = self.share_between(np.maximum(a, self.origin_ns), b)  # F_k, the current one partial
        v = np.array([self._vol.get(int(i), 0.0) for i in k])
        w = 0.5 ** ((now - k) * self.period_ns / self.half_life_ns)
        # sum w F (V / F) / sum w F, periods with F = 0 (no volume expected) carry no weight
        den = float(np.sum(w * f))
        return float(np.sum(w * np.where(f > 0, v, 0.0)) / den) if den > 0 else math.nan

    def forecast(self, t_ns: int, starts: ArrayLike) -> VolumeForecast:
        """Return the expected volume of the periods starting at ``starts`` (ns, shape (H,)).

        A period containing ``t`` gets its realized volume plus the expected rest; later
        periods ``V_day * F(s, s + P)``. Uses trades up to ``t`` only.
        """
        s = np.asarray(starts, dtype=np.int64)
        P = self.period_ns
        if self._last_ts is not None and self._last_ts > t_ns:
            raise InvariantViolation(
                f"volume forecast at {t_ns} after a trade or book at {self._last_ts}: look-ahead"
            )
        # The same question twice in one decision (the solver's caps, then the child's gate),
        # with no trade counted in between: the same answer, computed once.
        ends = (int(s[0]), int(s[-1])) if s.size else (0, 0)
        key = (int(t_ns), s.size, *ends, self._n_added)
        if self._memo is not None and self._memo[0] == key:
            return self._memo[1]
        elapsed = float(self.share_between(self.origin_ns, t_ns))
        realized = np.zeros(s.size)
        for i in np.flatnonzero(s <= t_ns).tolist():  # the current period (and any past one)
            realized[i] = self._vol.get(self.period_of(int(s[i])), 0.0)
        fields: dict[str, Any] = {"total": self._total, "elapsed_share": elapsed}
        if elapsed < self.min_share or self._total <= 0:
            fields["status"] = "unknown"
            out = VolumeForecast(np.full(s.size, np.nan), realized, fields)
        else:
            v_day = self._day_volume(t_ns)
            rest_from = np.maximum(s, t_ns)
            expected = v_day * self.share_between(rest_from, s + P)
            vol = np.where(s + P <= t_ns, realized, realized + np.maximum(expected, 0.0))
            fields |= {"status": "ok", "day_volume": v_day}
            out = VolumeForecast(vol, realized, fields)
        for a in (out.volume, out.realized):
            a.flags.writeable = False  # shared by the calls the memo answers
        self._memo = (key, out)
        return out


def participation_caps(rate: float, volume: ArrayLike) -> NDArray[np.float64]:
    """Return the solver's caps ``u_j = rate * E[V_j]``; ``inf`` where the volume is unknown.

    Args:
        rate: Participation rate rho in (0, 1].
        volume: Expected volume per period, shape (H,), NaN where unknown.

    Raises:
        ValueError: If the rate is not in (0, 1].
    """
    if not (0.0 < rate <= 1.0):
        raise ValueError(f"participation rate must be in (0, 1], got {rate}")
    v = np.asarray(volume, dtype=np.float64)
    return np.where(np.isfinite(v), rate * np.maximum(v, 0.0), np.inf)


@dataclass(frozen=True, slots=True)
class GateResult:
    """Pre-trade participation check of one child.

    Attributes:
        ok: True when the child fits under the limit.
        allowed_qty: The most that may still be sent this period, shares (inf: no limit known).
        limit_qty: ``rate * period volume``, shares (inf when the volume is unknown).
        reason: ``"within"``, ``"over_participation"`` or ``"volume_unknown"``.
    """

    ok: bool
    allowed_qty: float
    limit_qty: float
    reason: str


def participation_gate(
    child_qty: float, rate: float, period_volume: float, already_qty: float = 0.0
) -> GateResult:
    """Check a child against ``rate * period_volume`` less what this period already sent.

    Args:
        child_qty: Shares of the child about to be sent, >= 0.
        rate: Participation rate rho in (0, 1].
        period_volume: The period's volume the limit applies to (e.g. the larger of the
            realized and the forecast, ``VolumeForecast.volume[0]``); NaN when unknown.
        already_qty: Shares of ours already sent in the period.
    """
    if not (0.0 < rate <= 1.0):
        raise ValueError(f"participation rate must be in (0, 1], got {rate}")
    if not (child_qty >= 0 and already_qty >= 0):
        raise ValueError(f"child_qty and already_qty must be >= 0, got {child_qty}, {already_qty}")
    if not math.isfinite(period_volume):
        return GateResult(True, math.inf, math.inf, "volume_unknown")
    limit = rate * max(period_volume, 0.0)
    allowed = max(limit - already_qty, 0.0)
    ok = child_qty <= allowed * (1 + 1e-12)
    return GateResult(ok, allowed, limit, "within" if ok else "over_participation")
