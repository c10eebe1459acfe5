"""Forecast of the cost curve's level by period: from the book now toward the day's level (pure).

Symbols (``docs/forecast.md``, ``execution-math.md`` section 4):
    P            period length, ns
    z_t          per-book state ``(log h, log c)``: log half-spread (beta's part) and log depth
                 slope (gamma's part), see ``agent.core.bookstats``
    y_k          time-weighted mean of ``z`` over period k, less the log intraday profile
                 ``log m(k)`` (deseasonalised)
    mu           the day's expected deseasonalised level: the mean of ``y`` so far, each
                 period weighted ``2^(-age / level_half_life)`` (the level drifts)
    phi, s^2     AR(1) coefficient and innovation variance of ``y`` at the period's scale,
                 estimated online from the day's finished periods (OLS on consecutive pairs),
                 shrunk toward a prior while the day has few pairs
    x            the state: time-weighted mean of ``z`` over the trailing ``state_window_ns``
    r            the reference: ``z`` of the book in force (or the mean over ``now_window_ns``),
                 the level the caller's current estimate of beta and gamma was made at

For a later period j, ``lag_j`` periods ahead of the state (centre to centre),
``E[z_j] = log m(j) + mu + phi^lag_j (x - log m(now) - mu)`` and the multiplier returned is
the expected ``exp(E[z_j] - r + log_sd_j^2 / 2)`` of the log-normal level (its median is
``exp(E[z_j] - r)``), with ``log_sd_j = kappa * s *
sqrt((1 - phi^(2 lag_j)) / (1 - phi^2))``. The current period gets 1 and 0. ``kappa`` scales
the model's width to the day's own record: ``sqrt(pi/2)`` times the mean absolute standardised
error of the forecasts made so far (the first forecast of each period is kept until its targets
finish), shrunk toward 1. That record is the one side effect of ``forecast``: the same calls at
the same times (as the daemon and the backtest make them) give the same results.

Everything is online and from past books only: ``observe`` folds books in (O(rows), vectorised),
``forecast(t, ...)`` reads the finished periods' running sums and the trailing window, and
refuses a ``t`` earlier than a book already observed (that would be a look-ahead).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from agent.core.bookstats import (
    N_FEATURES,
    FeatureMemo,
    PeriodMean,
    PeriodMeans,
    Tail,
    book_features,
)
from agent.errors import InvariantViolation
from agent.impact.profile import IntradayProfile
from feeds.model import BookBatch

__all__ = ["ArPrior", "Forecast", "LiquidityForecaster"]

_NAMES = ("beta", "gamma")
_PHI_MAX = 0.99
# 3-point Gauss-Hermite rule for a standard normal: nodes and probabilities
_GH_NODES = np.array([-math.sqrt(3.0), 0.0, math.sqrt(3.0)])
_GH_PROBS = np.array([1.0 / 6.0, 2.0 / 3.0, 1.0 / 6.0])


@dataclass(frozen=True, slots=True)
class ArPrior:
    """Prior of the AR(1) dynamics, as a continuous-time mean reversion so it fits any period.

    ``phi(P) = exp(-theta * P)``; the innovation variance at scale P is ``v * (1 - phi^2)``
    with ``v`` the stationary variance of the period means. One value per feature (beta, gamma).

    Attributes:
        theta_per_s: Mean-reversion rates, 1/s, >= 0, shape (2,).
        stat_var: Stationary variances of the log levels, >= 0, shape (2,).
        weight_pairs: How many period pairs of the day the prior counts as.
        source: Where the prior comes from (for the logs).
    """

    theta_per_s: tuple[float, float] = (1.0 / 1800.0, 1.0 / 1800.0)
    stat_var: tuple[float, float] = (0.05, 0.05)
    weight_pairs: float = 6.0
    source: str = "default"

    def at(self, period_ns: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Return ``(phi, s^2)`` at the period's scale, each shape (2,)."""
        phi = np.exp(-np.asarray(self.theta_per_s, dtype=np.float64) * period_ns / 1e9)
        phi = np.minimum(phi, _PHI_MAX)
        return phi, np.asarray(self.stat_var, dtype=np.float64) * (1.0 - phi**2)


@dataclass(frozen=True, slots=True)
class Forecast:
    """Multipliers of beta and gamma for the periods asked, relative to the current estimate.

    The multipliers are the **expected** ones, ``exp(m + sd^2 / 2)`` of the log-normal level:
    the current period is known (sd 0) and a later one is not, so comparing the known now with
    a later *median* would make every uncertain period look cheap and defer the order. The
    medians (the best point forecast of the log level) are ``median()``.

    Attributes:
        beta_mult: Expected multiplier of beta per period, shape (H,), 1 for the current period.
        gamma_mult: Same for gamma, shape (H,).
        log_sd_beta: Standard deviation of the log multiplier of beta, shape (H,), 0 now.
        log_sd_gamma: Same for gamma, shape (H,).
        fields: Scalars for the logs (``forecast.*``): phi, mu, state, reference, counts.
    """

    beta_mult: NDArray[np.float64]
    gamma_mult: NDArray[np.float64]
    log_sd_beta: NDArray[np.float64]
    log_sd_gamma: NDArray[np.float64]
    fields: dict[str, Any] = field(default_factory=dict)

    def median(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Return the median multipliers ``(mb, mg)``, ``mult * exp(-sd^2 / 2)``, shape (H,)."""
        return (
            self.beta_mult * np.exp(-0.5 * self.log_sd_beta**2),
            self.gamma_mult * np.exp(-0.5 * self.log_sd_gamma**2),
        )

    @property
    def log_sd(self) -> NDArray[np.float64]:
        """Per period, the larger of the two log-sds: the width of one scenario band."""
        return np.maximum(self.log_sd_beta, self.log_sd_gamma)

    def scenarios(
        self, k_sd: float | None = None
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """Return cost scenarios ``(mb, mg, prob)``, shapes (S, H), (S, H), (S,).

        Scenarios are the median times ``exp(node * sd)``. ``k_sd=None`` gives the 3-point
        Gauss-Hermite rule (nodes ``0, +-sqrt(3)`` sd, probabilities 2/3, 1/6, 1/6): its
        weighted multipliers are the expected ones (``beta_mult``) to ``O(sd^6)``, for the
        stochastic variant. ``k_sd=k`` gives the three scenarios ``-k, 0, +k`` sd with equal
        weights, for the robust (min-max) variant. Beta and gamma move together (one shock a
        scenario): the dear scenario is dear on both.
        """
        nodes, probs = (
            (_GH_NODES, _GH_PROBS)
            if k_sd is None
            else (np.array([-k_sd, 0.0, k_sd]), np.full(3, 1.0 / 3.0))
        )
        med_b, med_g = self.median()
        mb = med_b[None, :] * np.exp(nodes[:, None] * self.log_sd_beta[None, :])
        mg = med_g[None, :] * np.exp(nodes[:, None] * self.log_sd_gamma[None, :])
        return mb, mg, probs

    def cost_mult(self, spread_share: float) -> NDArray[np.float64]:
        """Return the multiplier of the total cost at a size whose current cost is
        ``spread_share`` from beta (the rest from gamma), shape (H,), for the nonparametric
        curve (``mc_t``)."""
        w = min(max(float(spread_share), 0.0), 1.0)
        return w * self.beta_mult + (1.0 - w) * self.gamma_mult


def _finite(x: float) -> float:
    """``np.nan_to_num`` of one float: NaN to 0, infinities to the largest finite floats."""
    if x != x:
        return 0.0
    if math.isinf(x):
        return _BIG if x > 0 else -_BIG
    return x


_BIG = float(np.finfo(np.float64).max)


@dataclass(slots=True)
class _Feat:
    """The running sums of ``_ArStats`` for one feature, as Python floats.

    ``u = (z, L)``: ``s*`` are sums of u, ``s*_zz``/``_zl``/``_ll`` of its products (``uu'`` is
    symmetric), ``spn_*`` of the (previous, next) products of consecutive pairs.
    """

    ew_n: float = 0.0
    ew_z: float = 0.0
    ew_l: float = 0.0
    n: float = 0.0
    sz: float = 0.0
    sl: float = 0.0
    szz: float = 0.0
    szl: float = 0.0
    sll: float = 0.0
    pairs: float = 0.0
    sp_z: float = 0.0
    sp_l: float = 0.0
    sn_z: float = 0.0
    sn_l: float = 0.0
    spp_zz: float = 0.0
    spp_zl: float = 0.0
    spp_ll: float = 0.0
    snn_zz: float = 0.0
    snn_zl: float = 0.0
    snn_ll: float = 0.0
    spn_zz: float = 0.0
    spn_zl: float = 0.0
    spn_lz: float = 0.0
    spn_ll: float = 0.0
    last_z: float = math.nan
    last_l: float = math.nan


class _ArStats:
    """Running sums of ``u_k = (z_k, L_k)`` (period mean, log profile) and of consecutive pairs.

    The sums are kept in ``u`` so that the deseasonalised ``y_k = z_k - a L_k`` and its AR(1)
    fit can be read in O(1) for any loading ``a`` (``w = (1, -a)``: ``sum y = w . sum u``,
    ``sum y y' = w^T (sum u u'^T) w``). Two features of two numbers each: plain floats, not
    numpy (a period's fold is on the decision's path, and numpy calls on 2-element arrays
    cost more than their arithmetic); the same operations in the same order as elementwise
    arrays would do, so the same numbers, but for the fit's ``w' M w``, summed in its own order
    (rounding).
    """

    def __init__(self, level_decay: float = 1.0) -> None:
        self.level_decay = float(level_decay)  # per period, of the level's weights
        self.f = [_Feat() for _ in range(N_FEATURES)]
        self.last_period: int | None = None

    def add(self, period: int, z: NDArray[np.float64], lp: NDArray[np.float64]) -> None:
        gap = 1 if self.last_period is None else max(period - self.last_period, 1)
        d = self.level_decay**gap
        pair = self.last_period is not None and period == self.last_period + 1
        for f, zf, lf in zip(self.f, z.tolist(), lp.tolist(), strict=True):
            fin = math.isfinite(zf)
            z0, l0 = (zf, lf) if fin else (0.0, 0.0)
            f.ew_n = f.ew_n * d + fin
            f.ew_z = f.ew_z * d + z0
            f.ew_l = f.ew_l * d + l0
            f.n += fin
            f.sz += z0
            f.sl += l0
            f.szz += z0 * z0
            f.szl += z0 * l0
            f.sll += l0 * l0
            if pair:
                ok = fin and math.isfinite(f.last_z)
                az, al = (f.last_z, f.last_l) if ok else (0.0, 0.0)
                bz, bl = (zf, lf) if ok else (0.0, 0.0)
                f.pairs += ok
                f.sp_z += az
                f.sp_l += al
                f.sn_z += bz
                f.sn_l += bl
                f.spp_zz += az * az
                f.spp_zl += az * al
                f.spp_ll += al * al
                f.snn_zz += bz * bz
                f.snn_zl += bz * bl
                f.snn_ll += bl * bl
                f.spn_zz += az * bz
                f.spn_zl += az * bl
                f.spn_lz += al * bz
                f.spn_ll += al * bl
            f.last_z, f.last_l = zf, lf
        self.last_period = period

    def loading(self, a0: float, n0: float) -> NDArray[np.float64]:
        """Return the profile loading ``a`` per feature: OLS of z on L, shrunk toward ``a0``."""
        out = []
        for f in self.f:
            n, a_hat = f.n, a0
            ok = n >= 3
            if ok:
                cov = f.szl - f.sz * f.sl / n
                var = f.sll - f.sl * f.sl / n
                ok = var > 1e-12 * max(n, 1.0)
                if ok:
                    a_hat = cov / var
                    ok = math.isfinite(a_hat)
            a_hat = min(max(a_hat if ok else a0, 0.0), 2.0)
            m = n if ok else 0.0
            out.append((m * a_hat + n0 * a0) / (m + n0))
        return np.array(out)

    def mean_y(self, a: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Return ``(sum y, n)`` of the deseasonalised finished periods, each weighted by
        ``level_decay ** age`` (1: the whole day the same)."""
        return (
            np.array([f.ew_z - af * f.ew_l for f, af in zip(self.f, a.tolist(), strict=True)]),
            np.array([f.ew_n for f in self.f]),
        )

    def ols(self, a: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Return ``(phi_hat, s2_hat)`` of ``y = z - a L`` per feature; NaN below 3 pairs."""
        phis, s2s = [], []
        for f, af in zip(self.f, a.tolist(), strict=True):
            n, w1 = f.pairs, -af
            if not n >= 3:
                phis.append(math.nan)
                s2s.append(math.nan)
                continue
            sx = f.sp_z + w1 * f.sp_l
            sy = f.sn_z + w1 * f.sn_l
            # w^T M w with w = (1, w1)
            q_pn = f.spn_zz + w1 * f.spn_lz + (f.spn_zl + w1 * f.spn_ll) * w1
            q_pp = f.spp_zz + w1 * f.spp_zl + (f.spp_zl + w1 * f.spp_ll) * w1
            q_nn = f.snn_zz + w1 * f.snn_zl + (f.snn_zl + w1 * f.snn_ll) * w1
            cov = q_pn - sx * sy / n
            varx = q_pp - sx * sx / n
            vary = q_nn - sy * sy / n
            if not varx > 0:
                phis.append(math.nan)
                s2s.append(math.nan)
                continue
            b = cov / varx
            phis.append(b)
            s2s.append(max(vary - b * cov, 0.0) / (n - 2))
        return np.array(phis), np.array(s2s)


class LiquidityForecaster:
    """Online forecast of the beta and gamma multipliers of later periods (see module docstring).

    Args:
        period_ns: Period length P, ns.
        side: ``"buy"``, ``"sell"`` or ``"both"``: the side whose depth slope is tracked.
        origin_ns: Start of period 0 (the parent's start), ns; periods are ``origin + k P``.
        profile: Intraday profile (earlier days or the prior); None for flat.
        prior: Prior of the AR(1) dynamics.
        state_window_ns: Trailing window of the state x; default one period.
        now_window_ns: Window of the reference r; 0 (default) is the book in force.
        level_half_life_ns: Half-life of the finished periods' weights in the level mu (the
            day's level drifts); None weighs the whole day the same.
        levels: Levels of the side in the depth slope.
        features: The features of the books and their tail, shared with the other parents on
            the symbol (``FeatureMemo`` of the same side and levels, which its owner feeds with
            every book, in order; None: computed and kept here).
    """

    def __init__(
        self,
        period_ns: int,
        *,
        side: str = "buy",
        origin_ns: int = 0,
        profile: IntradayProfile | None = None,
        prior: ArPrior | None = None,
        state_window_ns: int | None = None,
        now_window_ns: int = 0,
        level_half_life_ns: int | None = 3600 * 10**9,
        levels: int = 5,
        features: FeatureMemo | None = None,
    ) -> None:
        if period_ns <= 0:
            raise ValueError(f"period_ns must be > 0, got {period_ns}")
        self.period_ns = int(period_ns)
        self.side = side
        self.levels = int(levels)
        self.profile = profile if profile is not None and not profile.is_flat else None
        # log m of every bucket, taken once (the profile is frozen; see ``_log_profile``), and
        # the last forecast's periods' middles with their rows of it (see ``forecast``)
        self._log_m: NDArray[np.float64] | None = None
        if self.profile is not None:
            p = self.profile
            self._log_m = np.log(np.stack([p.beta_mult, p.gamma_mult], axis=1))
            self._log_m.flags.writeable = False
        self._lp_memo: tuple[NDArray[np.int64], NDArray[np.float64]] | None = None
        self.prior = prior or ArPrior()
        self.state_window_ns = int(state_window_ns if state_window_ns is not None else period_ns)
        self.now_window_ns = int(now_window_ns)
        book_features(BookBatch.empty("check"), side)  # validates side early
        if features is not None and (features.side, features.levels) != (side, self.levels):
            raise ValueError(
                f"features of side {features.side!r}, {features.levels} levels, for a forecast "
                f"of side {side!r}, {self.levels} levels"
            )
        self._features = features
        if features is not None:
            features.need(max(self.state_window_ns, self.now_window_ns))
        self._periods = PeriodMeans(self.period_ns, origin_ns, N_FEATURES)
        decay = 1.0 if not level_half_life_ns else 0.5 ** (self.period_ns / level_half_life_ns)
        self._ar = _ArStats(decay)
        self._keep_ns = max(self.state_window_ns, self.now_window_ns)
        self._tail = Tail(N_FEATURES)
        self._unfolded: list[BookBatch] = []  # observed, not folded in yet (see ``_flush``)
        self._unfolded_rows = 0
        self._last_seen: int | None = None
        self._phi0, self._s20 = self.prior.at(self.period_ns)
        # width calibration: the first forecast of each period, kept until its targets finish
        self._pending: dict[int, list[tuple[NDArray[np.float64], NDArray[np.float64]]]] = {}
        self._recorded_period: int | None = None
        self._e1 = np.zeros(N_FEATURES)  # sum of |standardised errors|
        self._n_e = np.zeros(N_FEATURES)
        self._refresh()

    @property
    def origin_ns(self) -> int:
        return self._periods.origin_ns

    def _log_profile(self, t_ns: ArrayLike) -> NDArray[np.float64]:
        """Return ``log m`` of beta and gamma at times, shape (n, 2) (zeros when flat).

        The log of every bucket's multipliers is taken once (the profile is frozen; the table
        read-only): the same elementwise log of the same values as per call, so the same bits.
        """
        prof, table = self.profile, self._log_m
        if prof is None or table is None:
            n = 1 if isinstance(t_ns, int) else np.atleast_1d(np.asarray(t_ns)).size
            return np.zeros((n, N_FEATURES))
        if isinstance(t_ns, int):  # one time (a decision's): its bucket in Python ints
            b = prof.bucket_of(t_ns)
            return table[b : b + 1]
        return table[prof.bucket(np.atleast_1d(np.asarray(t_ns, dtype=np.int64)))]

    def observe(self, batch: BookBatch) -> None:
        """Take in books newer than every book seen so far.

        O(1) per call: books are folded in (vectorised, O(rows)) at the next ``forecast`` or
        ``settle``, so a live feed's one-book batches cost an append each.

        Raises:
            ValueError: If the batch starts before the newest book already seen.
        """
        n = len(batch)
        if not n:
            return
        first = int(batch.ts_event_ns[0])
        if self._last_seen is not None and first < self._last_seen:
            raise ValueError(f"books out of order: {first} after {self._last_seen}")
        self._last_seen = int(batch.ts_event_ns[-1])
        self._unfolded.append(batch)
        self._unfolded_rows += n

    def settle(self, min_rows: int) -> None:
        """Fold the observed books in now if at least ``min_rows`` wait (the next forecast
        would do it first)."""
        if self._unfolded and self._unfolded_rows >= min_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._unfolded:
            return
        batches = self._unfolded
        self._unfolded, self._unfolded_rows = [], 0
        if self._features is None:
            batch = batches[0] if len(batches) == 1 else BookBatch.concat(batches)
            z = book_features(batch, self.side, self.levels)
            ts = np.asarray(batch.ts_event_ns, dtype=np.int64)
        elif len(batches) == 1:  # the features shared with the symbol's other parents
            z = self._features.of(batches[0])
            ts = np.asarray(batches[0].ts_event_ns, dtype=np.int64)
        else:
            z = np.concatenate([self._features.of(b) for b in batches])
            ts = np.concatenate([b.ts_event_ns for b in batches]).astype(np.int64, copy=False)
        memo = self._features
        if memo is not None and len(batches) == 1:  # one segment: shared credits
            seg, last = batches[0], self._periods.last_book
            total = memo.credit_total(seg, last)
            finished = self._periods.add(
                ts, z, lambda: memo.credits(seg, last), total, lambda: memo.credit_run(seg)
            )
        else:
            finished = self._periods.add(ts, z)
        if finished:
            self._fold(finished)
        if self._features is None:
            self._tail.append(ts, z)
            self._tail.trim(int(ts[-1]) - self._keep_ns)

    def _fold(self, finished: list[PeriodMean]) -> None:
        half = self.period_ns // 2
        mids = [self.origin_ns + pm.period * self.period_ns + half for pm in finished]
        lp = self._log_profile(np.array(mids, dtype=np.int64))
        for pm, lp_k in zip(finished, lp, strict=True):
            self._ar.add(pm.period, pm.mean, lp_k)
            scored = self._pending.pop(pm.period, None)
            if scored:
                # Every earlier forecast of this period at once (one per earlier period: a loop
                # over them made a decision O(periods)); the errors are summed in the same order
                # as one by one (accumulate is sequential), so the numbers are unchanged.
                e = (pm.mean - np.array([p for p, _ in scored])) / np.array([s for _, s in scored])
                ok = np.isfinite(e)
                terms = np.vstack([self._e1[None, :], np.where(ok, np.abs(e), 0.0)])
                self._e1 = np.add.accumulate(terms, axis=0)[-1]
                self._n_e = self._n_e + ok.sum(axis=0)
        last = finished[-1].period
        for p in [p for p in self._pending if p < last]:  # targets that got no books
            del self._pending[p]
        self._refresh()

    def _refresh(self) -> None:
        """Recompute what only a finished period changes (loading, level, dynamics, width):
        once per period, as the books come in, not at every decision."""
        a = self.loading()
        sum_y, n_y = self._ar.mean_y(a)
        phi, s2 = self.dynamics(a)
        self._state = (a, sum_y, n_y, phi, s2, self.sd_scale())

    def sd_scale(self) -> NDArray[np.float64]:
        """Return the factor on the model's log-sd per feature that the day's own forecast
        errors call for: ``sqrt(pi/2) mean |e|`` of the standardised errors of earlier forecasts
        (the first one of each period; 1 for normal errors, and less swayed than the RMS by the
        open's outliers), shrunk toward 1, clipped to [0.5, 3]."""
        self._flush()
        n0 = self.prior.weight_pairs
        k = (math.sqrt(math.pi / 2.0) * self._e1 + n0) / (self._n_e + n0)
        return np.clip(k, 0.5, 3.0)

    def loading(self) -> NDArray[np.float64]:
        """Return the profile loading ``a`` per feature (1 = the profile's shape as given)."""
        self._flush()
        if self.profile is None:
            return np.zeros(N_FEATURES)
        return self._ar.loading(1.0, self.prior.weight_pairs)

    def dynamics(
        self, a: NDArray[np.float64] | None = None
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Return the current ``(phi, s^2)`` per feature, shrunk toward the prior."""
        phi_hat, s2_hat = self._ar.ols(self.loading() if a is None else a)
        n0 = self.prior.weight_pairs
        phi, s2 = [], []
        for f, ph, sh, p0, q0 in zip(
            self._ar.f,
            phi_hat.tolist(),
            s2_hat.tolist(),
            self._phi0.tolist(),
            self._s20.tolist(),
            strict=True,
        ):
            n = f.pairs if math.isfinite(ph) else 0.0
            ph = min(max(_finite(ph), 0.0), _PHI_MAX)
            phi.append((n * ph + n0 * p0) / (n + n0))
            s2.append((n * _finite(sh) + n0 * q0) / (n + n0))
        return np.array(phi), np.array(s2)

    def _record(
        self,
        t_ns: int,
        starts: NDArray[np.int64],
        ez: NDArray[np.float64],
        sd: NDArray[np.float64],
        later: NDArray[np.bool_],
    ) -> None:
        """Keep the first forecast made in each period, to score it when its targets finish."""
        now = self._periods.period_of(t_ns)
        if self._recorded_period == now:
            return
        self._recorded_period = now
        targets = (starts + self.period_ns // 2 - self.origin_ns) // self.period_ns
        keep = np.flatnonzero(later & np.all(sd > 0, axis=1))
        if not keep.size:
            return
        # Rows of read-only copies (one copy each of ez and sd, not 2 H), their targets as
        # Python ints at once: the loop only appends (indexing numpy per target cost ~2 us a
        # target, up to H = 390 of them, at every parent's first decision of a period).
        ez, sd = ez[keep], sd[keep]
        ez.flags.writeable = sd.flags.writeable = False
        pending = self._pending
        for target, e, s in zip(targets[keep].tolist(), ez, sd, strict=True):
            got = pending.get(target)
            if got is None:
                pending[target] = [(e, s)]
            else:
                got.append((e, s))

    def forecast(self, t_ns: int, starts: ArrayLike) -> Forecast:
        """Return the multipliers of the periods starting at ``starts`` relative to now.

        Args:
            t_ns: Decision time, ns; no book observed so far may be later.
            starts: Period start times, ns, shape (H,); a period containing ``t_ns`` (or
                already past) is the current one and gets multiplier 1.

        Raises:
            InvariantViolation: If a book later than ``t_ns`` was observed (look-ahead).
        """
        s = np.asarray(starts, dtype=np.int64)
        last = self._last_seen
        if last is not None and last > t_ns:
            raise InvariantViolation(
                f"forecast at {t_ns} after observing a book at {last}: the caller looked ahead"
            )
        self._flush()
        # The tail shared with the symbol's other parents (the session feeds it), or our own.
        tail = self._tail if self._features is None else self._features.tail
        if not len(tail):
            ones, zeros = np.ones(s.size), np.zeros(s.size)
            return Forecast(ones, ones.copy(), zeros, zeros.copy(), {"status": "no_books"})
        x, in_force = tail.trailing_mean(t_ns, self.state_window_ns)
        ref = (
            in_force if self.now_window_ns <= 0 else tail.trailing_mean(t_ns, self.now_window_ns)[0]
        )
        ref = np.where(np.isfinite(ref), ref, x)
        P = self.period_ns
        a, sum_y, n_y, phi, s2, scale = self._state
        x_d = x - a * self._log_profile(t_ns - self.state_window_ns // 2)[0]
        # Feature-major, shape (2, H): the per-feature parameters broadcast along contiguous
        # rows of H (an (H, 2) layout ran every operation's inner loop over 2 elements). The
        # same operations on the same values in the same order, so the same numbers.
        # mu = (sum_y + where(isfinite(x_d), x_d, 0)) / (n_y + isfinite(x_d)): in floats (two
        # features), numpy's own when a count is 0
        num, den = [], []
        for sy, xd, ny in zip(sum_y.tolist(), x_d.tolist(), n_y.tolist(), strict=True):
            fin = math.isfinite(xd)
            num.append(sy + (xd if fin else 0.0))
            den.append(ny + fin)
        if all(den):
            mu = np.array([u / v for u, v in zip(num, den, strict=True)])
        else:
            with np.errstate(invalid="ignore"):
                mu = np.array(num) / np.array(den)
        # The log profile at the periods' middles: the rows of the last call's grid when these
        # periods are its tail (a parent's next decision), else looked up.
        mids = s + P // 2
        memo = self._lp_memo
        h = mids.size
        if (
            memo is not None
            and 0 < h <= memo[0].size
            and np.array_equal(memo[0][memo[0].size - h :], mids)
        ):
            lp_rows = memo[1][:, memo[0].size - h :]
        else:
            lp_rows = np.ascontiguousarray(self._log_profile(mids).T)
            self._lp_memo = (mids, lp_rows)
        with np.errstate(invalid="ignore", over="ignore"):
            lag = (s + P / 2 - (t_ns - self.state_window_ns / 2)) / P  # centre to centre
            later = s > t_ns  # a period that has started (the current one) keeps multiplier 1
            np.maximum(lag, 0.0, out=lag)
            lp = a[:, None] * lp_rows
            pk = phi[:, None] ** lag[None, :]  # (2, H)
            ez = lp + mu[:, None]
            ez += pk * (x_d - mu)[:, None]
            mult = np.exp(ez - ref[:, None])
            if bool((phi < 1.0).all()):  # the dynamics clip phi below 1: one branch
                var = s2[:, None] * (1.0 - pk**2) / (1.0 - phi**2)[:, None]
            else:
                denom = np.where(phi < 1.0, 1.0 - phi**2, 1.0)
                var = np.where(
                    phi[:, None] < 1.0,
                    s2[:, None] * (1.0 - pk**2) / denom[:, None],
                    s2[:, None] * lag[None, :],
                )
        ok = np.isfinite(mult)
        live = later[None, :] & ok
        mult = np.where(live, mult, 1.0)
        np.maximum(var, 0.0, out=var)
        sd_model = np.sqrt(var)
        self._record(t_ns, s, ez.T, sd_model.T, later & ok.all(axis=0))
        sd = np.where(live, sd_model * scale[:, None], 0.0)
        mult *= np.exp(0.5 * sd**2)  # expected, not median (see ``Forecast``)
        ref_l = ref.tolist()
        fields: dict[str, Any] = {
            "status": "ok" if all(map(math.isfinite, ref_l)) else "no_state",
            "n_periods": int(min(f.n for f in self._ar.f)),
            "n_pairs": int(min(f.pairs for f in self._ar.f)),
            "profile": "flat" if self.profile is None else self.profile.source,
            "prior": self.prior.source,
        }
        rows = zip(*(c.tolist() for c in (phi, s2, mu, x, ref, a, scale)), strict=True)
        for name, (ph, v, m, xi, r, ai, sc) in zip(_NAMES, rows, strict=True):
            fields[f"phi_{name}"] = ph
            fields[f"sd_{name}"] = math.sqrt(v)
            fields[f"mu_{name}"] = m
            fields[f"state_{name}"] = xi
            fields[f"ref_{name}"] = r
            fields[f"loading_{name}"] = ai
            fields[f"sd_scale_{name}"] = sc
        return Forecast(mult[0], mult[1], sd[0], sd[1], fields)
