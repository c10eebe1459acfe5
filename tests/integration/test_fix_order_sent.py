"""The FIX adapter logs each NewOrderSingle once it is written to the socket (``broker.order_sent``:
ClOrdID, MsgSeqNum, wall time), the line bench/bench_live.py --broker fix times children by."""

from __future__ import annotations

import asyncio
import time

import pytest
from structlog.testing import capture_logs

from agent.brokers.fix import FixBroker
from agent.model import ChildOrder, OrderAccepted, Side
from agent.venue import FixVenue
from tests.conftest import REPO

pytestmark = pytest.mark.integration

SAMPLE = REPO / "replay_data" / "SYNA_2025-06-02.mbp-10.csv.gz"
T_1400 = 1_748_872_800 * 10**9  # 2025-06-02 14:00 UTC, inside the sample


async def test_each_new_order_single_is_logged_with_its_write_time(tmp_path) -> None:
    with capture_logs() as logs:
        async with FixVenue({"SYNA": SAMPLE}) as venue:
            broker = FixBroker(
                "127.0.0.1", venue.port, "AGENT", "VENUE", store_path=tmp_path / "seq.json"
            )
            await broker.start()
            events = broker.events()
            spans = {}
            for i in range(3):
                coid = f"S-{i}"
                t0 = time.time_ns()
                await broker.submit(
                    ChildOrder(coid, "S", "SYNA", Side.BUY, 100.0, 60.0, T_1400 + i * 10**9)
                )
                spans[coid] = (t0, time.time_ns())
            # The venue got every one: each is acknowledged.
            acked = set()
            async with asyncio.timeout(30):  # a hang, not a pace
                async for e in events:
                    if isinstance(e, OrderAccepted):
                        acked.add(e.client_order_id)
                    if acked == set(spans):
                        break
            await broker.aclose()
    sent = [e for e in logs if e["event"] == "broker.order_sent"]
    assert [e["client_order_id"] for e in sent] == list(spans)
    for e in sent:
        t0, t1 = spans[e["client_order_id"]]
        assert t0 < e["written_ns"] <= t1  # measured inside the submit, after the write
        # The number it names is the one the session stamped on that NewOrderSingle.
        assert broker.session.sent_ref(e["msg_seq_num"]) == ("D", e["client_order_id"])
    assert len({e["msg_seq_num"] for e in sent}) == len(sent)
