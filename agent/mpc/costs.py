"""Per-period temporary-impact cost models g_t(x), vectorised over periods (pure).

Symbols: ``H`` periods, ``x`` shares (>= 0), ``g_t(x)`` total cost in currency of ``x`` shares in
period ``t``, ``g_t'`` its marginal cost. Every model here is convex in ``x`` when its
parameters satisfy the documented bounds, except ``TabulatedCost`` (any cost, for the DP).

A ``CostSet`` is H periods whose models may differ (quadratic in some, power law in others). It
offers what the solvers need, each vectorised within a model family:

- ``cost(x)``: g_t(x_t) per period, shape (H,);
- ``x_range(lam)``: the interval of minimisers of ``g_t(x) - lam*x`` over x >= 0, as
  ``(x_lo, x_hi)``, shape (H,) each. For a strictly convex g it is one point,
  ``(g_t')^{-1}(lam)`` (0 when ``g_t'(0) >= lam``); a linear piece of slope exactly ``lam`` gives
  the whole piece. This is what KKT water-filling inverts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "CostSet",
    "PiecewiseLinearCost",
    "PiecewisePowerCost",
    "QuadraticCost",
    "TabulatedCost",
]

F = NDArray[np.float64]


@dataclass(frozen=True)
class QuadraticCost:
    """``g_t(x) = beta_t x + gamma_t x^2`` with ``beta_t, gamma_t >= 0``; shapes (n,)."""

    beta: F
    gamma: F

    def __init__(self, beta: F, gamma: F) -> None:
        # The MPC makes one per decision: the frozen dataclass's own __init__ (one
        # object.__setattr__ per field) costs half again as much.
        d = self.__dict__
        d["beta"] = beta
        d["gamma"] = gamma

    def cost(self, x: F) -> F:
        """Return g_t(x_t), shape (n,)."""
        return self.beta * x + self.gamma * x * x

    def x_range(self, lam: float) -> tuple[F, F]:
        """Return the minimisers of g - lam*x: a point, or [0, inf) ties when gamma = 0."""
        lin = self.gamma == 0
        with np.errstate(divide="ignore", invalid="ignore"):
            xq = np.maximum((lam - self.beta) / (2.0 * self.gamma), 0.0)
        lo = np.where(lin, np.where(self.beta < lam, np.inf, 0.0), xq)
        hi = np.where(lin, np.where(self.beta <= lam, np.inf, 0.0), xq)
        return lo, hi

    def min_marginal(self) -> F:
        """Return g_t'(0), shape (n,)."""
        return self.beta.copy()

    def marginal(self, x: F) -> F:
        """Return g_t'(x_t) = beta_t + 2 gamma_t x_t, shape (n,)."""
        return self.beta + 2.0 * self.gamma * x


@dataclass(frozen=True)
class PiecewisePowerCost:
    """Per-share slippage ``s(x) = a_k x^b_k`` on regime k: ``g(x) = x s(x)``.

    Regime k covers ``[c_k, c_{k+1})`` with ``c_0 = 0`` and the last regime unbounded. Continuity
    of ``s`` at the breakpoints and ``0 <= b_0 <= b_1 <= ...`` keep ``g`` convex (its slope
    ``(1 + b_k) s(x)`` only jumps up). A single regime is the power law ``g = a x^(1+b)``.

    Attributes:
        a: Coefficients, shape (n, R), > 0 (padded regimes repeat the last one).
        b: Exponents, shape (n, R), >= 0, non-decreasing along R.
        c: Regime starts, shape (n, R), ``c[:, 0] == 0``, increasing (+inf for padding).
    """

    a: F
    b: F
    c: F

    @staticmethod
    def power(a: ArrayLike, b: ArrayLike) -> PiecewisePowerCost:
        """Return the power law ``g = a x^(1+b)`` per period (shapes (n,))."""
        aa = np.asarray(a, float).reshape(-1, 1)
        bb = np.asarray(b, float).reshape(-1, 1)
        return PiecewisePowerCost(aa, bb, np.zeros_like(aa))

    @staticmethod
    def from_regimes(a0: float, b: Sequence[float], breakpoints: Sequence[float]) -> tuple[F, F, F]:
        """Return one period's (a, b, c) rows from ``a_0``, exponents and breakpoints.

        ``a_{k+1} = a_k c_{k+1}^(b_k - b_{k+1})`` makes ``s`` continuous.
        """
        bb = np.asarray(b, float)
        c = np.concatenate(([0.0], np.asarray(breakpoints, float)))
        a = np.empty_like(bb)
        a[0] = a0
        for k in range(1, bb.size):  # R regimes (a handful), not rows
            a[k] = a[k - 1] * c[k] ** (bb[k - 1] - bb[k])
        return a, bb, c

    def _regime(self, x: F) -> NDArray[np.intp]:
        # index of the regime holding x (last k with c_k <= x)
        return np.asarray((np.sum(self.c <= x[:, None], axis=1) - 1).clip(0), dtype=np.intp)

    def cost(self, x: F) -> F:
        """Return g_t(x_t), shape (n,)."""
        x = np.asarray(x, float)
        k = self._regime(x)
        r = np.arange(x.size)
        with np.errstate(invalid="ignore"):
            return np.where(x > 0, self.a[r, k] * x ** (1.0 + self.b[r, k]), 0.0)

    def x_range(self, lam: float) -> tuple[F, F]:
        """Return the minimiser of g - lam*x (g strictly convex here: one point)."""
        m = self.a * (1.0 + self.b)  # g'(x) = m_k x^b_k on regime k
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            inv = np.where(
                self.b > 0,
                (lam / m) ** (1.0 / np.where(self.b > 0, self.b, 1.0)),
                np.where(m < lam, np.inf, 0.0),
            )
        inv = np.where(lam > 0, inv, 0.0)
        hi_edge = np.concatenate([self.c[:, 1:], np.full((self.c.shape[0], 1), np.inf)], axis=1)
        real = np.isfinite(self.c)
        start = np.where(real, self.c, 0.0)
        length = np.where(real, np.clip(inv, start, hi_edge) - start, 0.0)
        x = length.sum(axis=1)
        return x, x

    def min_marginal(self) -> F:
        """Return g_t'(0+) (0 for b > 0), shape (n,)."""
        return np.where(self.b[:, 0] > 0, 0.0, self.a[:, 0])

    def marginal(self, x: F) -> F:
        """Return the right derivative (1 + b_k) a_k x^b_k on the regime of x, shape (n,)."""
        x = np.asarray(x, float)
        k = self._regime(x)
        r = np.arange(x.size)
        b = self.b[r, k]
        return (1.0 + b) * self.a[r, k] * np.where(b > 0, x, 1.0) ** b


@dataclass(frozen=True)
class PiecewiseLinearCost:
    """Convex piecewise-linear cost from tabulated points (the walk-the-book curves).

    Attributes:
        knots: Segment starts in shares, shape (n, M), ``knots[:, 0] == 0``, increasing; padded
            segments start at +inf.
        slopes: Cost per share on each segment, shape (n, M), non-decreasing along M. The last
            real segment extends to infinity.
        offset: ``g(0)``; 0 for impact costs, shape (n,).
    """

    knots: F
    slopes: F
    offset: F = field(default_factory=lambda: np.zeros(0))

    @staticmethod
    def from_points(
        sizes: Sequence[float], costs: Sequence[float], *, convex: bool = True
    ) -> tuple[F, F]:
        """Return one period's (knots, slopes) from points ``(0, 0), (s_1, c_1), ...``.

        ``convex=False`` keeps any slopes (a fixed fee, a rebate tier): ``cost`` is exact for
        them, and only the DP (``agent.mpc.dp``) may be given such a cost.

        Raises:
            ValueError: Not starting at (0, 0), sizes not increasing, or (with ``convex``) not
                convex.
        """
        s = np.asarray(sizes, float)
        c = np.asarray(costs, float)
        if s.size < 2 or s.size != c.size:
            raise ValueError("needs at least two points and as many costs as sizes")
        if s[0] != 0 or c[0] != 0:
            raise ValueError("must start at size 0 with cost 0")
        if np.any(np.diff(s) <= 0):
            raise ValueError("sizes must increase")
        slopes = np.diff(c) / np.diff(s)
        if not convex:
            return s[:-1], slopes
        if np.any(np.diff(slopes) < -1e-12 * np.maximum(1.0, np.abs(slopes[1:]))):
            raise ValueError("costs are not convex (slopes must not decrease)")
        return s[:-1], np.maximum.accumulate(slopes)

    def _cum(self) -> F:
        seg = np.diff(self.knots, axis=1)
        seg = np.where(np.isfinite(seg), seg, 0.0)
        return np.concatenate(
            [np.zeros((self.knots.shape[0], 1)), np.cumsum(self.slopes[:, :-1] * seg, axis=1)],
            axis=1,
        )

    def cost(self, x: F) -> F:
        """Return g_t(x_t), shape (n,)."""
        x = np.asarray(x, float)
        k = (np.sum(self.knots <= x[:, None], axis=1) - 1).clip(0)
        r = np.arange(x.size)
        g = self._cum()[r, k] + self.slopes[r, k] * (x - self.knots[r, k])
        return np.asarray(g, dtype=np.float64)

    def x_range(self, lam: float) -> tuple[F, F]:
        """Return [x_lo, x_hi]: the segments cheaper than lam, plus ties at lam."""
        ends = np.concatenate(
            [self.knots[:, 1:], np.full((self.knots.shape[0], 1), np.inf)], axis=1
        )
        real = np.isfinite(self.knots)
        below = real & (self.slopes < lam)
        at = real & (self.slopes <= lam)
        lo = np.max(np.where(below, ends, 0.0), axis=1)
        hi = np.max(np.where(at, ends, 0.0), axis=1)
        return lo, hi

    def min_marginal(self) -> F:
        """Return the first slope, shape (n,)."""
        return self.slopes[:, 0].copy()

    def marginal(self, x: F) -> F:
        """Return the right derivative: the slope of the segment starting at or before x."""
        x = np.asarray(x, float)
        k = (np.sum(self.knots <= x[:, None], axis=1) - 1).clip(0)
        return np.asarray(self.slopes[np.arange(x.size), k], dtype=np.float64)


@dataclass(frozen=True)
class TabulatedCost:
    """Any cost, convex or not, given by ``fn(t, x) -> g_t(x)`` (vectorised in x); DP only.

    Attributes:
        fn: ``fn(t, x)`` returns the cost of sizes ``x`` (array) in period ``t`` (int).
        n: Number of periods it covers.
        row_of: Internal: ``fn`` ignores ``t`` (a one-period view made by the DP).
    """

    fn: Callable[[int, F], F]
    n: int
    row_of: bool = False

    def cost(self, x: F) -> F:
        """Return g_t(x_t), shape (n,)."""
        x = np.asarray(x, float)
        if self.row_of:
            return np.asarray(self.fn(0, x), float)
        return np.array([float(self.fn(t, x[t : t + 1])[0]) for t in range(x.size)])


@dataclass(frozen=True)
class MixtureCost:
    """Weighted sum of convex cost sets over the same periods: ``sum_k w_k g^k_t(x)``.

    The expected cost of the stochastic problem, and the inner problem of the robust dual.
    ``x_range`` inverts the summed marginal by a vectorised bisection in x per period.

    Attributes:
        parts: Cost sets, each over the same n periods.
        weights: Non-negative weight per part, shape (K,).
    """

    parts: tuple[CostSet, ...]
    weights: F

    @property
    def n(self) -> int:
        """Return the number of periods."""
        return self.parts[0].H

    def cost(self, x: F) -> F:
        """Return sum_k w_k g^k_t(x_t), shape (n,)."""
        return sum(
            (w * p.cost(x) for w, p in zip(self.weights, self.parts, strict=True)),
            start=np.zeros(self.n),
        )

    def marginal(self, x: F) -> F:
        """Return the summed right derivative, shape (n,)."""
        return sum(
            (w * p.marginal(x) for w, p in zip(self.weights, self.parts, strict=True)),
            start=np.zeros(self.n),
        )

    def min_marginal(self) -> F:
        """Return the summed g'(0+), shape (n,)."""
        return self.marginal(np.zeros(self.n))

    def x_range(self, lam: float) -> tuple[F, F]:
        """Return sup{x : g'(x) <= lam} per period (bisection to machine precision)."""
        lo = np.zeros(self.n)
        ok0 = self.marginal(lo) <= lam
        hi = np.ones(self.n)
        for _ in range(200):  # grow the bracket: a few doublings
            grow = ok0 & (self.marginal(hi) <= lam)
            if not grow.any():
                break
            lo = np.where(grow, hi, lo)
            hi = np.where(grow, hi * 2.0, hi)
        for _ in range(80):  # bisection on x, all periods at once
            mid = 0.5 * (lo + hi)
            below = self.marginal(mid) <= lam
            lo = np.where(below, mid, lo)
            hi = np.where(below, hi, mid)
        x = np.where(ok0, lo, 0.0)
        return x, x


Model = QuadraticCost | PiecewisePowerCost | PiecewiseLinearCost | TabulatedCost | MixtureCost


class CostSet:
    """H periods, each with its own model; blocks of one family are evaluated together.

    Args:
        blocks: ``(model, periods)`` pairs: the model covers the periods listed (int array).
        H: Number of periods.
    """

    def __init__(self, blocks: list[tuple[Model, NDArray[np.intp]]], H: int) -> None:
        self._blocks: list[tuple[Model, NDArray[np.intp]]] | None = blocks
        self._model: Model | None = None  # the one model of a set made by ``of``
        self.H = H
        self._whole = False  # one model covering periods 0..H-1 in order (see ``of``)
        covered = np.zeros(H, int)
        for _, idx in blocks:
            covered[idx] += 1
        if np.any(covered != 1):
            raise ValueError("every period needs exactly one cost model")

    @staticmethod
    def of(model: Model, H: int) -> CostSet:
        """Return a set where one model covers all H periods (built without the cover check).

        The MPC builds one per decision, so this path does no array work: the period index of
        ``blocks`` is made when something first asks for it (the fast solver paths do not).
        """
        out = CostSet.__new__(CostSet)
        out._blocks = None
        out._model = model
        out.H = H
        out._whole = True
        return out

    @property
    def blocks(self) -> list[tuple[Model, NDArray[np.intp]]]:
        """Return the ``(model, periods)`` pairs."""
        b = self._blocks
        if b is None:
            b = self._blocks = [(self._model, np.arange(self.H))]  # type: ignore[list-item]
        return b

    @property
    def convex(self) -> bool:
        """Return True when no block is a tabulated (possibly non-convex) cost."""
        return not any(isinstance(m, TabulatedCost) for m, _ in self.blocks)

    @property
    def quadratic(self) -> QuadraticCost | None:
        """Return the whole set as one QuadraticCost when every period is quadratic."""
        m = self._model
        H = self.H
        if self._whole and isinstance(m, QuadraticCost) and m.beta.shape == m.gamma.shape == (H,):
            return m  # already in period order: no copy (frozen, never written to)
        if len(self.blocks) != 1:
            return None
        m, idx = self.blocks[0]
        if not isinstance(m, QuadraticCost):
            return None
        beta = np.empty(self.H)
        gamma = np.empty(self.H)
        beta[idx] = m.beta
        gamma[idx] = m.gamma
        return QuadraticCost(beta, gamma)

    def cost(self, x: ArrayLike) -> F:
        """Return g_t(x_t) per period, shape (H,)."""
        x = np.asarray(x, float)
        out = np.empty(self.H)
        for m, idx in self.blocks:
            out[idx] = m.cost(x[idx])
        return out

    def total(self, x: ArrayLike) -> float:
        """Return sum_t g_t(x_t)."""
        return float(self.cost(x).sum())

    def x_range(self, lam: float) -> tuple[F, F]:
        """Return the minimiser interval of each g_t(x) - lam*x, shapes (H,)."""
        lo = np.empty(self.H)
        hi = np.empty(self.H)
        for m, idx in self.blocks:
            if isinstance(m, TabulatedCost):
                raise ValueError("x_range needs convex models (TabulatedCost is DP-only)")
            lo[idx], hi[idx] = m.x_range(lam)
        return lo, hi

    def marginal(self, x: ArrayLike) -> F:
        """Return g_t'(x_t) (right derivative) per period, shape (H,)."""
        x = np.asarray(x, float)
        out = np.empty(self.H)
        for m, idx in self.blocks:
            if isinstance(m, TabulatedCost):
                raise ValueError("marginal needs convex models")
            out[idx] = m.marginal(x[idx])
        return out

    @staticmethod
    def mixture(parts: Sequence[CostSet], weights: ArrayLike) -> CostSet:
        """Return ``sum_k w_k parts[k]``: exact quadratic when every part is quadratic."""
        w = np.asarray(weights, float)
        quads = [p.quadratic for p in parts]
        if all(q is not None for q in quads):
            beta = sum(
                (wk * q.beta for wk, q in zip(w, quads, strict=True)),  # type: ignore[union-attr]
                start=np.zeros(parts[0].H),
            )
            gamma = sum(
                (wk * q.gamma for wk, q in zip(w, quads, strict=True)),  # type: ignore[union-attr]
                start=np.zeros(parts[0].H),
            )
            return CostSet.of(QuadraticCost(beta, gamma), parts[0].H)
        return CostSet.of(MixtureCost(tuple(parts), w), parts[0].H)

    def min_marginal(self) -> F:
        """Return g_t'(0+) per period, shape (H,)."""
        out = np.empty(self.H)
        for m, idx in self.blocks:
            if isinstance(m, TabulatedCost):
                raise ValueError("min_marginal needs convex models")
            out[idx] = m.min_marginal()
        return out
