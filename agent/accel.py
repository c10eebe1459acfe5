"""Compiled kernels when numba is installed (the ``fast`` extra), numpy otherwise.

A kernel is a plain-Python loop over floats and arrays. ``compiled(fn, signature)`` returns
numba's machine-code version of it (nopython, cached on disk), or None when numba is missing or
``EXEC_AGENT_JIT=0``; the caller then keeps its numpy path, which is also the reference the
tests compare every kernel against. A kernel compiles (or loads from the cache) at its first
call; ``warm()`` does that for all of them, so the daemon pays it at start, not in its first
decision. ``status()`` says which path runs, for the logs and the benchmarks.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["ENV", "compiled", "enabled", "pairwise_sum", "status", "sum_block", "warm"]

ENV = "EXEC_AGENT_JIT"  # "0" (or off/false/no): never compile, use the numpy paths
_OFF = {"0", "off", "false", "no"}


def _load() -> tuple[Any, str]:
    if os.environ.get(ENV, "").strip().lower() in _OFF:
        return None, f"off ({ENV}=0)"
    try:
        import numba
    except ImportError:
        return None, "off (numba not installed: pip install 'exec-agent[fast]')"
    return numba, f"numba {numba.__version__}"


_numba, _status = _load()
_kernels: list[tuple[Any, str]] = []  # (dispatcher, signature) for warm()


def enabled() -> bool:
    """Return True when kernels are compiled."""
    return _numba is not None


def status() -> str:
    """Return which path the kernels take, for ``daemon.started`` and the benchmarks."""
    return _status


def compiled(fn: Callable[..., Any], signature: str) -> Callable[..., Any] | None:
    """Return ``fn`` compiled for ``signature`` (numba's type string), or None without numba."""
    if _numba is None:
        return None
    # The GIL is kept: a kernel runs for microseconds, and one that released it would wait for
    # another thread's switch interval (the journal writer's, the replay's reader) to get back.
    out = _numba.njit(cache=True)(fn)
    _kernels.append((out, signature))
    return out  # type: ignore[no-any-return]


def warm() -> int:
    """Compile (or load from the cache) every kernel defined so far; return how many."""
    for disp, sig in _kernels:
        disp.compile(sig)
    return len(_kernels)


# -- numpy's summation, for kernels that must give numpy's bits (the solver's plan sums to S
# under numpy; the window's weight total is the numpy path's) ------------------------------
def sum_block_py(a: NDArray[np.float64], lo: int, n: int) -> float:
    """Return ``sum(a[lo:lo+n])`` for ``n <= 128`` as numpy sums a block (eight accumulators)."""
    if n < 8:
        r = 0.0
        for i in range(lo, lo + n):
            r += a[i]
        return r
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = lo + 8
    end8 = lo + n - n % 8
    while i < end8:
        r0 += a[i]
        r1 += a[i + 1]
        r2 += a[i + 2]
        r3 += a[i + 3]
        r4 += a[i + 4]
        r5 += a[i + 5]
        r6 += a[i + 6]
        r7 += a[i + 7]
        i += 8
    r = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < lo + n:
        r += a[i]
        i += 1
    return float(r)


sum_block = compiled(sum_block_py, "float64(float64[::1], int64, int64)") or sum_block_py


def pairwise_sum_py(a: NDArray[np.float64], lo: int, n: int) -> float:
    """Return numpy's pairwise sum of ``a[lo:lo+n]``, its recursion unrolled on a stack.

    numpy splits a block of n > 128 at n2 = n // 2 rounded down to a multiple of 8 and adds
    the halves' sums: a post-order walk of that tree (depth < 64 for any array). numba
    cannot cache a recursive function, hence the explicit stack.
    """
    if n <= 128:
        return float(sum_block(a, lo, n))
    s_lo = np.empty(64, np.int64)
    s_n = np.empty(64, np.int64)
    s_state = np.empty(64, np.int64)
    vals = np.empty(64)
    s_lo[0], s_n[0], s_state[0] = lo, n, 0
    sp, vp = 1, 0
    while sp > 0:
        top = sp - 1
        at, m = s_lo[top], s_n[top]
        if m <= 128:
            vals[vp] = sum_block(a, at, m)
            vp += 1
            sp -= 1
            continue
        n2 = m // 2
        n2 -= n2 % 8
        state = s_state[top]
        if state == 2:  # both halves summed: combine them
            vp -= 1
            vals[vp - 1] += vals[vp]
            sp -= 1
            continue
        s_state[top] = state + 1
        s_lo[sp] = at if state == 0 else at + n2
        s_n[sp] = n2 if state == 0 else m - n2
        s_state[sp] = 0
        sp += 1
    return float(vals[0])


pairwise_sum = compiled(pairwise_sum_py, "float64(float64[::1], int64, int64)") or pairwise_sum_py
