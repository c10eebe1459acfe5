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

__all__ = ["ENV", "compiled", "enabled", "status", "warm"]

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
