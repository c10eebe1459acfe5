"""The restart's reconciliation and resting children: a day order the venue answers as working
is resolved (known there, tracked here) at once, while an IOC child answered as working stays in
doubt until the venue closes it (the timeout says which)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from structlog.testing import capture_logs

from agent.daemon import _reconcile
from agent.model import ChildOrder, OrderStatus, Side
from agent.orders.tracker import OrderTracker


class _Runner:
    """What ``_reconcile`` reads of a parent runner: its children in doubt and its tracker."""

    def __init__(self, tracker: OrderTracker) -> None:
        self.mpc = SimpleNamespace(tracker=tracker)

    def in_doubt(self) -> list[str]:
        return [k for k, c in self.mpc.tracker.children.items() if not c.state.terminal]


class _Venue:
    """Answers every status query 'working' on the next loop turn, as a pump would."""

    name = "stub"

    def __init__(self, tracker: OrderTracker) -> None:
        self.tracker = tracker
        self.asked: list[str] = []

    async def request_status(self, coid: str) -> None:
        self.asked.append(coid)
        ev = OrderStatus(coid, 1, "working", 0.0)
        asyncio.get_running_loop().call_soon(self.tracker.on_event, ev)


def _tracker(*tifs: str) -> OrderTracker:
    t = OrderTracker(1000.0)
    for n, tif in enumerate(tifs, start=1):
        t.on_submitted(ChildOrder(f"P-{n:05d}", "P", "S", Side.BUY, 100.0, 10.0, 0, tif=tif), 0)
    return t


async def test_a_resting_child_answered_working_ends_the_reconciliation():
    t = _tracker("day", "gtc")
    venue = _Venue(t)
    with capture_logs() as logs:
        async with asyncio.timeout(5.0):  # far below the 30 s the reconciliation would wait
            await _reconcile([_Runner(t)], venue, timeout_s=30.0)
    assert venue.asked == ["P-00001", "P-00002"]
    (done,) = [e for e in logs if e["event"] == "reconcile.finished"]
    assert done["still_resting"] == ["P-00001", "P-00002"]
    assert not [e for e in logs if e["event"] == "reconcile.timeout"]
    assert all(c.n_status == 1 and not c.state.terminal for c in t.children.values())
    assert t.open_qty == 200.0  # still working: their shares stay reserved


async def test_an_ioc_child_answered_working_stays_in_doubt():
    t = _tracker("day", "ioc")
    with capture_logs() as logs:
        await _reconcile([_Runner(t)], _Venue(t), timeout_s=0.2)
    (late,) = [e for e in logs if e["event"] == "reconcile.timeout"]
    assert late["still_in_doubt"] == ["P-00002"]
