"""Rolling window: time bounds and even thinning."""

from __future__ import annotations

import numpy as np

from agent.core.window import RollingWindow
from feeds.model import BookBatch


def rows(ts: list[int]) -> BookBatch:
    n = len(ts)
    z = np.zeros((n, 10))
    t = np.array(ts, np.int64)
    return BookBatch("S", t, t, z, z, z, z)


def test_view_keeps_only_the_window():
    w = RollingWindow("S", window_ns=100)
    w.append(rows([0, 10, 20]))
    w.append(rows([90, 110, 150]))
    assert w.view(115).ts_event_ns.tolist() == [20, 90, 110]  # 15 < ts <= 115
    assert w.view(150).ts_event_ns.tolist() == [90, 110, 150]
    assert len(w.view(1000)) == 0


def test_view_thins_evenly_above_max_rows():
    w = RollingWindow("S", window_ns=10_000, max_rows=100)
    w.append(rows(list(range(1000))))
    v = w.view(999)
    assert len(v) == 100
    assert v.ts_event_ns[0] == 0 and np.all(np.diff(v.ts_event_ns) == 10)


def test_tail_is_the_span_or_the_book_in_force_across_batches():
    w = RollingWindow("S", window_ns=1000)
    w.append(rows([0, 10, 20]))
    w.append(rows([90, 110, 150]))
    assert w.tail(115, 0).ts_event_ns.tolist() == [110]  # the book in force alone
    assert w.tail(100, 0).ts_event_ns.tolist() == [90]
    assert w.tail(115, 100).ts_event_ns.tolist() == [20, 90, 110]  # 15 < ts <= 115
    assert w.tail(150, 1000).ts_event_ns.tolist() == [0, 10, 20, 90, 110, 150]
    assert w.tail(95, 3).ts_event_ns.tolist() == [90]  # nothing in the span: book in force
    assert len(w.tail(-1, 0)) == 0  # before every book


def test_append_drops_what_left_the_window_even_when_nothing_reads_it():
    """A live run with the incremental estimator never calls ``view``: the batches behind the
    window must go anyway, or memory grows for the whole run."""
    w = RollingWindow("S", window_ns=100)
    for t0 in range(0, 100_000, 10):
        w.append(rows([t0, t0 + 5]))
    assert len(w._batches) <= 21  # the window and one window of slack
    assert w.view(99_995).ts_event_ns[0] > 99_895
