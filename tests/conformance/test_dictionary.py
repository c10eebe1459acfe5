"""Every message either side of ours sends validates against QuickFIX's stock FIX44.xml, with
QuickFIX's own DataDictionary (no socket): the adapter's session and order messages, and the
venue's Logon, execution reports, cancel rejects and business rejects."""

from __future__ import annotations

import pytest
import simplefix

from agent.brokers.fix_session import (
    FixSession,
    SeqNumbers,
    new_order_single,
    order_cancel_request,
    order_status_request,
)
from agent.model import ChildOrder, Side
from agent.venue import FixVenue
from tests.conformance.quickfix_dict import have_quickfix, validate
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(not have_quickfix(), reason="quickfix-ssl not installed")

S = 1_000_000_000
T = 1_748_872_800 * S  # 2025-06-02 14:00 UTC, inside the sample
SAMPLE = REPO / "replay_data" / "SYNA_2025-06-02.mbp-10.csv.gz"


def wire(sender: str, target: str, seq: int, mtype: str, *pairs) -> bytes:
    m = simplefix.FixMessage()
    m.append_pair(8, "FIX.4.4", header=True)
    m.append_pair(35, mtype, header=True)
    m.append_pair(49, sender, header=True)
    m.append_pair(56, target, header=True)
    m.append_pair(34, seq, header=True)
    m.append_pair(52, "20250602-14:00:00.000", header=True)
    for tag, v in pairs:
        m.append_pair(tag, v)
    return m.encode()


def adapter_messages() -> dict[str, bytes]:
    s = FixSession("AGENT", "VENUE", 30, SeqNumbers())
    got: dict[str, bytes] = {}
    got["logon"] = s.logon(T).send[0]
    got["logon_password"] = FixSession("AGENT", "VENUE", 30).logon(T, "pw").send[0]
    got["logon_reset"] = FixSession("AGENT", "VENUE", 30).logon(T, reset=True).send[0]
    s.receive(wire("VENUE", "AGENT", 1, "A", (98, 0), (108, 30)), T)
    got["heartbeat"] = s.on_timer(T + 31 * S).send[0]
    got["test_request"] = s.on_timer(T + 68 * S).send[0]
    got["heartbeat_answer"] = s.receive(wire("VENUE", "AGENT", 2, "1", (112, "X")), T).send[0]
    child = ChildOrder("P-00001", "P", "SYNA", Side.SELL, 300, 49.75, T)
    got["new_order_single"] = s.send_app(new_order_single(child, T), "D", T).send[0]
    cxl = order_cancel_request("P-00001", "P-00001-C1", "SYNA", Side.SELL, 300, T)
    got["order_cancel_request"] = s.send_app(cxl, "F", T).send[0]
    st = order_status_request("P-00001", "SYNA", Side.SELL)
    got["order_status_request"] = s.send_app(st, "H", T).send[0]
    bad = wire(
        "VENUE",
        "AGENT",
        3,
        "8",
        (37, "V"),
        (11, "P-00001"),
        (17, "E"),
        (150, "F"),
        (39, "1"),
        (54, "2"),
        (151, 0),
        (14, 0),
        (6, 0),
        (32, "abc"),
        (31, "1"),
    )
    got["reject"] = s.receive(bad, T).send[0]
    out = s.receive(wire("VENUE", "AGENT", 9, "0"), T)
    got["resend_request"] = out.send[0]
    out = s.receive(wire("VENUE", "AGENT", 4, "2", (7, 1), (16, 0)), T)
    got["gap_fill"] = out.send[0]
    got["logout"] = s.logout(T, "bye").send[0]
    return got


def venue_messages() -> dict[str, bytes]:
    v = FixVenue({"SYNA": SAMPLE}, latency_ms=0)
    got: dict[str, bytes] = {}
    out = v.session.receive(wire("AGENT", "VENUE", 1, "A", (98, 0), (108, 30)), T)
    got["logon_reply"] = out.send[0]

    def order(seq: int, coid: str, *extra) -> simplefix.FixMessage:
        p = simplefix.FixParser()
        p.append_buffer(
            wire(
                "AGENT",
                "VENUE",
                seq,
                "D",
                (11, coid),
                (55, "SYNA"),
                (54, 1),
                (60, "20250602-14:00:00"),
                (38, 100000),
                *extra,
            )
        )
        return p.get_message()

    ack, *fills, rest = v._on_app(order(2, "C1", (40, 2), (44, "99"), (59, 3)))
    got |= {"er_new": ack, "er_fill": fills[0], "er_cancelled": rest}
    got["er_duplicate"] = v._on_app(order(3, "C1", (40, 2), (44, "99"), (59, 3)))[0]
    got["er_unsupported"] = v._on_app(order(4, "C2", (40, 1), (59, 3)))[0]

    def request(mtype: str, *pairs) -> simplefix.FixMessage:
        p = simplefix.FixParser()
        p.append_buffer(wire("AGENT", "VENUE", 9, mtype, *pairs))
        return p.get_message()

    got["er_status"] = v._on_app(request("H", (11, "C1"), (55, "SYNA"), (54, 1)))[0]
    got["er_status_unknown"] = v._on_app(request("H", (11, "C9"), (55, "SYNA"), (54, 1)))[0]
    cx = [(41, "C1"), (11, "C1-X"), (55, "SYNA"), (54, 1), (60, "20250602-14:00:00")]
    got["cancel_reject"] = v._on_app(request("F", *cx))[0]
    cx[0] = (41, "C9")
    got["cancel_reject_unknown"] = v._on_app(request("F", *cx))[0]
    v.session.seq.next_in = 2
    out = v.session.receive(wire("AGENT", "VENUE", 2, "R", (131, "Q1")), T)
    got["business_reject"] = out.send[0]
    out = v.session.receive(wire("AGENT", "VENUE", 3, "ZZ"), T)
    got["reject_msgtype"] = out.send[0]
    return got


def test_every_message_we_send_validates_against_quickfix_fix44():
    msgs = {f"adapter.{k}": v for k, v in adapter_messages().items()}
    msgs |= {f"venue.{k}": v for k, v in venue_messages().items()}
    kinds = {k: simplefix_type(v) for k, v in msgs.items()}
    assert set(kinds.values()) == set("012345ADFH89j")
    verdicts = dict(zip(msgs, validate(list(msgs.values())), strict=True))
    assert {k: v for k, v in verdicts.items() if v is not None} == {}


def test_the_dictionary_check_can_fail():
    """A status request without Side(54), as the adapter used to send, is refused."""
    raw = wire("AGENT", "VENUE", 2, "H", (11, "C1"), (55, "SYNA"))
    (why,) = validate([raw])
    assert why is not None and "Required tag missing" in why


def simplefix_type(raw: bytes) -> str:
    return raw.split(b"\x0135=")[1].split(b"\x01")[0].decode()
