"""Benchmark: the order tracker's cost per decision as a parent's children pile up.

Each decision reads ``uncommitted_qty`` and ``open_qty`` (as the per-parent state machine does),
sends a child and applies its ack, a partial fill and the IOC cancel. Before issue 12 item 5
``open_qty`` summed over every child, so a decision cost grew with the children sent so far
(quadratic over a parent's life); now the totals are kept incrementally and the cost per
decision should not depend on how many children came before. The column ``sum_us`` is what one
sum over the children (the old ``open_qty``) costs at that size, for comparison.

Target: time per decision at 20,000 children within 2x of the time at 200 (flat; the old sum
grew 12x over the same range, measured against the previous tracker on this machine).

Run: ``python bench/bench_tracker.py [--repeats 5]``
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

import _common  # noqa: F401  (pins BLAS threads before numpy loads)

from agent.model import ChildOrder, OrderAccepted, OrderCancelled, OrderFilled, Side
from agent.orders.tracker import OrderTracker

BLOCK = 1_000  # decisions timed at each size


def decide(t: OrderTracker, i: int) -> None:
    """One decision and its child's life: ack, partial fill, IOC remainder cancelled."""
    if t.uncommitted_qty <= 0 or t.open_qty > 0:
        raise AssertionError("bench parent ran out")
    coid = f"P-{i:07d}"
    t.on_submitted(ChildOrder(coid, "P", "SYM", Side.BUY, 10.0, 10.0, i), i)
    t.on_event(OrderAccepted(coid, i))
    t.on_event(OrderFilled(coid, f"x{i}", 1.0, 10.0, i))
    t.on_event(OrderCancelled(coid, i))


def per_decision_us(n_before: int) -> tuple[float, float]:
    """Return (us per decision after ``n_before`` children, us for one sum over them)."""
    t = OrderTracker(1e12)
    for i in range(n_before):
        decide(t, i)
    # The cyclic GC's passes over every live object grow with the heap whatever the tracker
    # does; freeze what exists so the timing shows the tracker's own cost.
    gc.collect()
    gc.freeze()
    t0 = time.perf_counter()
    for i in range(n_before, n_before + BLOCK):
        decide(t, i)
    dt = (time.perf_counter() - t0) / BLOCK * 1e6
    gc.unfreeze()
    t0 = time.perf_counter()
    sum(c.leaves_qty for c in t.children.values() if not c.state.terminal)
    return dt, (time.perf_counter() - t0) * 1e6


def main() -> None:
    """Print the cost per decision at growing numbers of children."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rows = []
    per_decision_us(200)  # warm up
    for n in (200, 2_000, 20_000):
        runs = [per_decision_us(n) for _ in range(args.repeats)]
        rows.append(
            (n, statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
        )
    print(f"{'children':>9} {'us/decision':>12} {'sum_us':>9}")
    for n, us, s in rows:
        print(f"{n:>9} {us:>12.2f} {s:>9.1f}")
    ratio = rows[-1][1] / rows[0][1]
    verdict = "PASS" if ratio <= 2.0 else "FAIL"
    print(f"ratio 20,000 / 200 children: {ratio:.2f} (target <= 2): {verdict}")


if __name__ == "__main__":
    main()
