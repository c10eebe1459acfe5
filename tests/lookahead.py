"""Test helpers for the no-look-ahead checks (issue 13 item 7) and for batches with trade rows.

``replace_after(batch, t)`` returns a copy of a batch whose every row after ``t`` holds other
books (and other event columns, when the batch has them), so a test can assert that every
decision up to ``t`` is unchanged. ``with_events`` attaches the optional event columns of
``feeds.model.BookBatch`` (``action``, ``ev_side``, ``ev_px``, ``ev_sz``) whether or not the
installed ``BookBatch`` declares them yet.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from numpy.typing import ArrayLike, NDArray

from feeds.model import BookBatch

__all__ = ["EVENT_FIELDS", "event_batch_type", "replace_after", "with_events"]

EVENT_FIELDS = ("action", "ev_side", "ev_px", "ev_sz")
_TIME_FIELDS = ("ts_event_ns", "ts_recv_ns")
_PX_FIELDS = ("bid_px", "ask_px", "ev_px")
_SZ_FIELDS = ("bid_sz", "ask_sz", "ev_sz")


def _has_event_fields() -> bool:
    names = {f.name for f in dataclasses.fields(BookBatch)}
    return all(n in names for n in EVENT_FIELDS)


if _has_event_fields():
    _EventBatch: type[BookBatch] = BookBatch
else:

    @dataclasses.dataclass(frozen=True, slots=True)
    class _EventBatch(BookBatch):  # type: ignore[no-redef]
        """``BookBatch`` with the optional event columns (until the model declares them)."""

        action: NDArray[np.uint8] | None = None
        ev_side: NDArray[np.uint8] | None = None
        ev_px: NDArray[np.float64] | None = None
        ev_sz: NDArray[np.float64] | None = None


def event_batch_type() -> type[BookBatch]:
    """Return the class that carries event columns (``BookBatch`` itself once it has them)."""
    return _EventBatch


def with_events(
    batch: BookBatch,
    action: ArrayLike | str,
    ev_sz: ArrayLike,
    ev_px: ArrayLike | None = None,
    ev_side: ArrayLike | str | None = None,
) -> BookBatch:
    """Return ``batch`` with event columns; ``action``/``ev_side`` may be strings like "TAC"."""
    n = len(batch)

    def codes(v: ArrayLike | str | None, default: int) -> NDArray[np.uint8]:
        if v is None:
            return np.full(n, default, dtype=np.uint8)
        if isinstance(v, str):
            return np.frombuffer(v.encode("ascii"), dtype=np.uint8).copy()
        return np.asarray(v, dtype=np.uint8)

    cols = {
        "action": codes(action, 0),
        "ev_side": codes(ev_side, ord("N")),
        "ev_px": np.full(n, np.nan) if ev_px is None else np.asarray(ev_px, dtype=np.float64),
        "ev_sz": np.asarray(ev_sz, dtype=np.float64),
    }
    for k, v in cols.items():
        if v.shape != (n,):
            raise ValueError(f"{k} has shape {v.shape}, the batch has {n} rows")
    base = {f.name: getattr(batch, f.name) for f in dataclasses.fields(BookBatch)}
    base.update(cols)
    return _EventBatch(**base)


def replace_after(
    batch: BookBatch, t_ns: int, other: BookBatch | None = None, *, keep_times: bool = True
) -> BookBatch:
    """Return a copy of ``batch`` whose rows with ``ts_event_ns > t_ns`` hold other books.

    Args:
        batch: The original books (any ``BookBatch``, with or without event columns).
        t_ns: Rows after this time are replaced; rows at or before it are kept bit for bit.
        other: Donor books (cycled to fill); None uses the original rows after ``t`` in reverse
            order, prices 1 % higher and sizes doubled plus one, so every replaced row differs.
        keep_times: Keep the original timestamps (the decision times stay the same); False
            takes the donor's.

    Raises:
        ValueError: If the donor has no rows or no row is after ``t``.
    """
    n = len(batch)
    after = np.flatnonzero(np.asarray(batch.ts_event_ns) > t_ns)
    if after.size == 0:
        raise ValueError(f"no row after t={t_ns}: nothing to replace")
    donor = other if other is not None else batch
    if len(donor) == 0:
        raise ValueError("the donor batch has no rows")
    idx = np.resize(np.arange(len(donor)), after.size) if other is not None else after[::-1]
    changes = {}
    for f in dataclasses.fields(batch):
        v = getattr(batch, f.name)
        if not isinstance(v, np.ndarray) or v.shape[:1] != (n,):
            continue
        if keep_times and f.name in _TIME_FIELDS:
            continue
        d = getattr(donor, f.name, None)
        new = v.copy()
        if d is None:
            continue
        repl = np.asarray(d)[idx].copy()
        if other is None and f.name in _PX_FIELDS:
            repl = repl * 1.01
        if other is None and f.name in _SZ_FIELDS:
            repl = repl * 2.0 + np.where(repl > 0, 1.0, 0.0)
        new[after] = repl
        changes[f.name] = new
    return dataclasses.replace(batch, **changes)
