"""The acknowledgement watchdog on a ManualClock: a child without a final report is queried
once its timeout has passed on the clock (not before, however long the wall clock runs),
once per timeout, and after ``max_queries`` unanswered queries it engages the kill switch."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from agent.daemon import _ack_watchdog
from feeds.clock import ManualClock
from tests.waiting import wait_until

S = 1_000_000_000
TIMEOUT_S = 2.0


class Runner:
    """What the watchdog reads of a ParentRunner: the mpc children and their send times."""

    def __init__(self) -> None:
        self.sent_at: dict[str, int] = {}
        self.mpc = SimpleNamespace(tracker=SimpleNamespace(children={}))

    def send(self, coid: str, t_ns: int) -> None:
        self.mpc.tracker.children[coid] = SimpleNamespace(state=SimpleNamespace(terminal=False))
        self.sent_at[coid] = t_ns


class Broker:
    name = "fake"

    def __init__(self, on_query=None) -> None:
        self.asked: list[str] = []
        self.on_query = on_query

    async def request_status(self, coid: str) -> None:
        await asyncio.sleep(0)  # a real send awaits the socket: others run meanwhile
        if self.on_query is not None:
            self.on_query(coid)
        self.asked.append(coid)


async def _settle() -> None:
    # The watchdog wakes on the clock's future: a few loop turns and its pass is done (no I/O).
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_child_is_queried_when_the_clock_passes_its_timeout_and_halts_after_max():
    clock = ManualClock(1000 * S)
    r, broker, halts, until = Runner(), Broker(), [], asyncio.Event()
    task = asyncio.create_task(_ack_watchdog([r], broker, clock, TIMEOUT_S, until, 2, halts.append))
    r.send("A-1", clock.now_ns())
    await _settle()
    clock.advance(int(TIMEOUT_S * S) - 1)  # not yet
    await _settle()
    assert broker.asked == []
    clock.advance(1)
    await wait_until(lambda: broker.asked == ["A-1"], timeout_s=5, what="the first query")
    clock.advance(int(TIMEOUT_S * S) // 2)  # one query per timeout
    await _settle()
    assert broker.asked == ["A-1"]
    clock.advance(int(TIMEOUT_S * S) // 2)
    await wait_until(lambda: broker.asked == ["A-1"] * 2, timeout_s=5, what="the second query")
    assert halts == []
    clock.advance(int(TIMEOUT_S * S))  # max_queries = 2 unanswered: the kill switch
    await wait_until(lambda: halts, timeout_s=5, what="the kill switch")
    assert broker.asked == ["A-1"] * 2 and len(halts) == 1 and "A-1" in halts[0]
    clock.advance(10 * int(TIMEOUT_S * S))  # once
    await _settle()
    assert len(halts) == 1 and broker.asked == ["A-1"] * 2
    until.set()
    await asyncio.wait_for(task, 5)


async def test_a_closed_child_is_not_queried_and_a_child_sent_during_a_query_is_safe():
    clock = ManualClock(0)
    r, until = Runner(), asyncio.Event()
    # While the query of A-1 is being sent, the symbol task sends A-3 (the children grow).
    broker = Broker(on_query=lambda coid: r.send("A-3", clock.now_ns()))
    task = asyncio.create_task(_ack_watchdog([r], broker, clock, TIMEOUT_S, until))
    r.send("A-1", 0)
    r.send("A-2", 0)
    r.mpc.tracker.children["A-2"].state.terminal = True  # its final report came
    clock.advance(int(TIMEOUT_S * S))
    await wait_until(lambda: "A-1" in broker.asked, timeout_s=5, what="the query of A-1")
    await _settle()
    assert not task.done()  # the watchdog survived the new child
    assert "A-2" not in broker.asked and "A-3" not in broker.asked  # A-3 is not due yet
    until.set()
    await asyncio.wait_for(task, 5)


async def test_the_watchdog_stops_at_once_when_told_even_if_the_clock_never_moves():
    clock = ManualClock(0)
    until = asyncio.Event()
    task = asyncio.create_task(_ack_watchdog([Runner()], Broker(), clock, 600.0, until))
    await _settle()
    until.set()
    await asyncio.wait_for(task, 5)
