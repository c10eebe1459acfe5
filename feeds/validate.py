"""Pure, vectorised validation of MBP-10 snapshot batches.

Rules (a row is valid when none applies; otherwise it gets the FIRST that applies, in this
order, which is the order of ``Reason``):

1. ``NON_FINITE``: a size is NaN or +-inf, or a price is +-inf (NaN price is the empty marker).
2. ``NON_POSITIVE_SIZE``: a level with a price has size <= 0, or any size is negative.
3. ``SIZE_WITHOUT_PRICE``: a level with size > 0 has a NaN price.
4. ``CROSSED``: best bid > best ask.
5. ``LOCKED``: best bid == best ask.
6. ``OUT_OF_ORDER``: over the non-empty levels, bids not strictly decreasing or asks not
   strictly increasing.
7. ``GAP``: an empty level followed by a non-empty one on the same side.
8. ``TIME_BACKWARDS``: ``ts_event_ns`` below that of the previous valid row (the previous batch
   included, through ``prev_ts_ns``). Equal timestamps are fine.
9. ``EMPTY_SIDE``: no non-empty level on the bid or on the ask side.
10. ``BAD_EVENT``: the event columns (when the batch has them) are not a known action
    (``A C M T F R`` or 0), a known side (``A B N``), a price that is NaN or finite, a finite
    size >= 0, and for a trade or fill a finite price and a size > 0.

A level is *empty* when its price is NaN and its size is 0. Time is judged against the previous
*valid* row only, so one bad row with a far-future timestamp cannot poison the rows after it
unless it is otherwise valid.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from numpy.typing import NDArray

from feeds.model import (
    EV_ADD,
    EV_CANCEL,
    EV_CLEAR,
    EV_FILL,
    EV_MODIFY,
    EV_NONE,
    EV_TRADE,
    SIDE_ASK,
    SIDE_BID,
    SIDE_NONE,
    BookBatch,
)

__all__ = ["Reason", "ValidationResult", "validate_batch", "validate_row"]


class Reason(IntEnum):
    """Why a snapshot was rejected; ``OK`` for a valid one. Values are stored as uint8."""

    OK = 0
    NON_FINITE = 1
    NON_POSITIVE_SIZE = 2
    SIZE_WITHOUT_PRICE = 3
    CROSSED = 4
    LOCKED = 5
    OUT_OF_ORDER = 6
    GAP = 7
    TIME_BACKWARDS = 8
    EMPTY_SIDE = 9
    BAD_EVENT = 10


_ACTIONS = np.array([EV_NONE, EV_ADD, EV_CANCEL, EV_MODIFY, EV_TRADE, EV_FILL, EV_CLEAR], np.uint8)
_SIDES = np.array([SIDE_ASK, SIDE_BID, SIDE_NONE], np.uint8)


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """Outcome of ``validate_batch``.

    Attributes:
        valid: The valid rows, in order (a new batch; may be empty).
        reason: ``Reason`` value per input row, uint8, shape (n,); 0 where valid.
        counts: Number of rejected rows per reason (reasons with zero rows omitted).
        last_ts_ns: ``ts_event_ns`` of the last valid row, else the ``prev_ts_ns`` passed in;
            pass it as ``prev_ts_ns`` for the next batch.
    """

    valid: BookBatch
    reason: NDArray[np.uint8]
    counts: dict[Reason, int]
    last_ts_ns: int | None

    @property
    def n_invalid(self) -> int:
        """Number of rejected rows."""
        return int(np.count_nonzero(self.reason))


def validate_batch(batch: BookBatch, prev_ts_ns: int | None = None) -> ValidationResult:
    """Classify each snapshot of ``batch`` and keep the valid ones.

    Args:
        batch: Snapshots, n rows by L levels.
        prev_ts_ns: ``ts_event_ns`` of the last valid row before this batch, ns; ``None`` at the
            start of a stream.

    Returns:
        The valid sub-batch, the per-row reason codes (shape (n,)) and counts per reason.
    """
    n = len(batch)
    if n == 0:
        return ValidationResult(batch, np.zeros(0, np.uint8), {}, prev_ts_ns)
    bid_px, ask_px, bid_sz, ask_sz = batch.bid_px, batch.ask_px, batch.bid_sz, batch.ask_sz

    # Row flags, one boolean array of shape (n,) per rule, in priority order.
    flags = np.zeros((len(Reason) - 1, n), dtype=np.bool_)
    flags[Reason.NON_FINITE - 1] = (
        _any(np.isinf(bid_px)) | _any(np.isinf(ask_px))
        | _any(~np.isfinite(bid_sz)) | _any(~np.isfinite(ask_sz))
    )  # fmt: skip
    bid_priced, ask_priced = ~np.isnan(bid_px), ~np.isnan(ask_px)
    flags[Reason.NON_POSITIVE_SIZE - 1] = _any(bid_priced & (bid_sz <= 0) | (bid_sz < 0)) | _any(
        ask_priced & (ask_sz <= 0) | (ask_sz < 0)
    )
    flags[Reason.SIZE_WITHOUT_PRICE - 1] = _any(~bid_priced & (bid_sz > 0)) | _any(
        ~ask_priced & (ask_sz > 0)
    )
    b0, a0 = bid_px[:, 0], ask_px[:, 0]
    with np.errstate(invalid="ignore"):
        flags[Reason.CROSSED - 1] = b0 > a0
        flags[Reason.LOCKED - 1] = b0 == a0
    # A level counts as present when it has a price; empty-with-size cases are caught above.
    flags[Reason.OUT_OF_ORDER - 1] = _out_of_order(bid_px, bid_priced, descending=True) | (
        _out_of_order(ask_px, ask_priced, descending=False)
    )
    flags[Reason.GAP - 1] = _gap(bid_priced) | _gap(ask_priced)
    flags[Reason.EMPTY_SIDE - 1] = ~bid_priced.any(axis=1) | ~ask_priced.any(axis=1)
    if batch.action is not None:
        flags[Reason.BAD_EVENT - 1] = _bad_event(batch)

    # Time: compare with the running maximum of earlier rows that pass every other rule (a row
    # failing only on time has ts below that maximum, so it never raises it: the running max
    # over candidates equals the running max over valid rows).
    ts = batch.ts_event_ns
    candidate = ~flags.any(axis=0)
    floor = np.iinfo(np.int64).min if prev_ts_ns is None else prev_ts_ns
    cand_ts = np.where(candidate, ts, np.iinfo(np.int64).min)
    run_max = np.maximum.accumulate(cand_ts)
    before = np.empty(n, dtype=np.int64)
    before[0] = floor
    np.maximum(run_max[:-1], floor, out=before[1:])
    flags[Reason.TIME_BACKWARDS - 1] = ts < before

    # First applicable reason: argmax finds the first True along the rule axis.
    any_bad = np.asarray(flags.any(axis=0), dtype=np.bool_)
    reason = np.where(any_bad, flags.argmax(axis=0) + 1, 0).astype(np.uint8)
    ok = ~any_bad
    valid = batch if ok.all() else batch.take(ok)
    values, cnt = np.unique(reason[any_bad], return_counts=True)
    counts = {Reason(int(v)): int(c) for v, c in zip(values, cnt, strict=True)}
    last = int(valid.ts_event_ns[-1]) if len(valid) else prev_ts_ns
    return ValidationResult(valid, reason, counts, last)


def _bad_event(batch: BookBatch) -> NDArray[np.bool_]:
    """Rows whose event columns break the ``BAD_EVENT`` rule, shape (n,).

    Raises:
        ValueError: The batch has only some event columns, or of the wrong length (a bug of
            the producer, not bad data).
    """
    n = len(batch)
    action, side, px, sz = batch.action, batch.ev_side, batch.ev_px, batch.ev_sz
    if (
        action is None
        or side is None
        or px is None
        or sz is None
        or not action.shape == side.shape == px.shape == sz.shape == (n,)
    ):
        raise ValueError(f"{batch.symbol}: event columns must be all four, each of shape ({n},)")
    trade = (action == EV_TRADE) | (action == EV_FILL)
    return np.asarray(
        ~np.isin(action, _ACTIONS)
        | ~np.isin(side, _SIDES)
        | np.isinf(px)
        | ~np.isfinite(sz)
        | (sz < 0)
        | (trade & ~((sz > 0) & np.isfinite(px))),
        dtype=np.bool_,
    )


def _any(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    return np.asarray(mask.any(axis=1), dtype=np.bool_)


def _gap(present: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Rows where an empty level precedes a present one, shape (n,)."""
    return _any(~present[:, :-1] & present[:, 1:])


def _out_of_order(
    px: NDArray[np.float64], present: NDArray[np.bool_], *, descending: bool
) -> NDArray[np.bool_]:
    """Rows whose present levels are not strictly monotone, shape (n,).

    Each present level is compared with the nearest present level before it, skipping empty
    ones.
    """
    with np.errstate(invalid="ignore"):
        # Adjacent levels both present: the common case, and exact for gap-free rows.
        step = px[:, 1:] <= px[:, :-1] if not descending else px[:, 1:] >= px[:, :-1]
    bad = _any(step & present[:, 1:] & present[:, :-1])
    gappy = np.flatnonzero(_gap(present))
    if gappy.size:
        # Rows with a hole: compare each present level with the nearest present one before it,
        # found by a running maximum of present-level column indices.
        g_px, g_present = px[gappy], present[gappy]
        idx = np.where(g_present, np.arange(px.shape[1]), -1)
        last = np.maximum.accumulate(idx, axis=1)
        prev = np.full_like(last, -1)
        prev[:, 1:] = last[:, :-1]
        prev_px = np.take_along_axis(g_px, np.maximum(prev, 0), axis=1)
        with np.errstate(invalid="ignore"):
            worse = g_px >= prev_px if descending else g_px <= prev_px
        bad[gappy] = _any(worse & g_present & (prev >= 0))
    return bad


def _side_reason(
    px: list[float], sz: list[float], *, descending: bool
) -> tuple[int, bool, bool, bool]:
    """Return (first of reasons 1-3 or 0, out_of_order, gap, empty) of one side of one row."""
    reasons: set[int] = set()
    prev = math.nan
    out_of_order = gap = seen_empty = present_any = False
    for p, s in zip(px, sz, strict=True):
        priced = p == p  # not NaN
        if math.isinf(p) or not math.isfinite(s):
            reasons.add(Reason.NON_FINITE)
        if (priced and s <= 0) or s < 0:
            reasons.add(Reason.NON_POSITIVE_SIZE)
        if not priced and s > 0:
            reasons.add(Reason.SIZE_WITHOUT_PRICE)
        if priced:
            gap |= seen_empty
            if prev == prev and not (p < prev if descending else p > prev):
                out_of_order = True
            prev = p
            present_any = True
        else:
            seen_empty = True
    return min(reasons, default=0), out_of_order, gap, not present_any


def validate_row(
    bid_px: list[float],
    bid_sz: list[float],
    ask_px: list[float],
    ask_sz: list[float],
    ts_ns: int,
    prev_ts_ns: int | None,
    event: tuple[int, int, float, float] | None = None,
) -> Reason:
    """Classify one snapshot given as Python lists (NaN = empty level).

    The rules and priority of ``validate_batch`` without numpy's per-call overhead: a live feed
    checks one book at a time (``tests/unit/test_validate.py`` checks that the two agree).
    ``event`` is ``(action, ev_side, ev_px, ev_sz)`` of the row, when it has event columns.
    """
    if (
        _clean_side(bid_px, bid_sz, _gt)
        and _clean_side(ask_px, ask_sz, _lt)
        and bid_px[0] < ask_px[0]
        and (prev_ts_ns is None or ts_ns >= prev_ts_ns)
        and (event is None or not _bad_event_row(*event))
    ):
        return Reason.OK  # the usual full, clean book, in a few C-level passes
    rb, ob, gb, eb = _side_reason(bid_px, bid_sz, descending=True)
    ra, oa, ga, ea = _side_reason(ask_px, ask_sz, descending=False)
    first = min(r for r in (rb, ra, 99) if r)
    if first != 99:
        return Reason(first)
    b0, a0 = bid_px[0], ask_px[0]
    if b0 > a0:
        return Reason.CROSSED
    if b0 == a0:
        return Reason.LOCKED
    if ob or oa:
        return Reason.OUT_OF_ORDER
    if gb or ga:
        return Reason.GAP
    if prev_ts_ns is not None and ts_ns < prev_ts_ns:
        return Reason.TIME_BACKWARDS
    if eb or ea:
        return Reason.EMPTY_SIDE
    if event is not None and _bad_event_row(*event):
        return Reason.BAD_EVENT
    return Reason.OK


def _clean_side(px: list[float], sz: list[float], step: Callable[[float, float], bool]) -> bool:
    """Return True for a side that no rule can fault: every level priced (no NaN, no inf),
    strictly monotone by ``step``, every size finite and > 0. Any other side (a hole, an
    empty level, a NaN) takes the rule-by-rule path."""
    if not px or len(px) != len(sz):
        return False
    total = sum(sz)  # NaN or inf anywhere (or an overflow) makes it non-finite
    return (
        -_INF < total < _INF
        and min(sz) > 0
        and -_INF < px[0] < _INF
        and -_INF < px[-1] < _INF
        and all(map(step, px, px[1:]))
    )


def _bad_event_row(action: int, side: int, px: float, sz: float) -> bool:
    """Return True when one row's event fields break the ``BAD_EVENT`` rule."""
    return (
        action not in _ACTION_SET
        or side not in _SIDE_SET
        or math.isinf(px)
        or not math.isfinite(sz)
        or sz < 0
        or (action in (EV_TRADE, EV_FILL) and not (sz > 0 and math.isfinite(px)))
    )


_ACTION_SET = frozenset(_ACTIONS.tolist())
_INF = math.inf
_gt: Callable[[float, float], bool] = operator.gt
_lt: Callable[[float, float], bool] = operator.lt
_SIDE_SET = frozenset(_SIDES.tolist())
