"""Every malformed input of issue 16, over a real TCP connection, to the venue and to the
adapter: each gets its FIX answer (a session Reject with RefTagID and SessionRejectReason, an
execution report 150=8, a BusinessMessageReject, or a Logout when the counterparty is not the
one configured) and a warning log line; nothing crashes and nothing is executed or applied."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import simplefix
from structlog.testing import capture_logs

from agent.brokers.fix import FixBroker
from agent.model import ChildOrder, OrderFilled, OrderRejected, OrderStatus, Side
from agent.venue import FixVenue
from tests.conftest import REPO

pytestmark = pytest.mark.integration

SAMPLE = REPO / "replay_data" / "SYNA_2025-06-02.mbp-10.csv.gz"
TS = "20250602-14:00:00.000"


def fix_msg(seq, mtype, *pairs, sender="AGENT", target="VENUE", begin="FIX.4.4") -> bytes:
    m = simplefix.FixMessage()
    m.append_pair(8, begin, header=True)
    m.append_pair(35, mtype, header=True)
    m.append_pair(49, sender, header=True)
    m.append_pair(56, target, header=True)
    if seq is not None:
        m.append_pair(34, seq, header=True)
    m.append_pair(52, TS, header=True)
    for tag, v in pairs:
        m.append_pair(tag, v)
    return m.encode()


def bad_checksum(raw: bytes) -> bytes:
    head, _, cs = raw[:-1].rpartition(b"\x0110=")
    return head + b"\x0110=" + b"%03d" % ((int(cs) + 1) % 256) + b"\x01"


def bad_length(raw: bytes) -> bytes:
    start = raw.index(b"\x019=") + 3
    end = raw.index(b"\x01", start)
    return raw[:start] + str(int(raw[start:end]) + 5).encode() + raw[end:]


def parse_all(data: bytes) -> list[dict[int, str]]:
    p = simplefix.FixParser()
    p.append_buffer(data)
    out = []
    while (m := p.get_message()) is not None:
        out.append({int(t): v.decode() for t, v in m.pairs})
    return out


LOGON = [(98, 0), (108, 30)]
ORDER = [(11, "M-1"), (55, "SYNA"), (54, 1), (60, TS), (38, 100), (40, 2), (44, 99), (59, 3)]


def order(**kw) -> list[tuple[int, object]]:
    """The valid order with tags replaced (``t38="abc"``) or removed (``t60=None``)."""
    pairs = dict(ORDER)
    for k, v in kw.items():
        if v is None:
            pairs.pop(int(k[1:]))
        else:
            pairs[int(k[1:])] = v
    return list(pairs.items())


# case -> (bytes after a good Logon, or None for "instead of the Logon"; the expected answer)
VENUE_CASES = {
    "transact_time_without_ms": (fix_msg(2, "D", *order(t60="20250602-14:00:00")), "8:0"),
    "transact_time_missing": (fix_msg(2, "D", *order(t60=None)), "3:60:1"),
    "quantity_not_a_number": (fix_msg(2, "D", *order(t38="abc")), "3:38:6"),
    "quantity_nan": (fix_msg(2, "D", *order(t38="nan")), "3:38:6"),
    "quantity_inf": (fix_msg(2, "D", *order(t38="inf")), "3:38:6"),
    "side_missing": (fix_msg(2, "D", *order(t54=None)), "3:54:1"),
    "clordid_empty": (fix_msg(2, "D", *order(t11="")), "3:11:4"),
    "ordtype_market": (fix_msg(2, "D", *order(t40="1", t44=None)), "8:8:11"),
    "timeinforce_gtd": (fix_msg(2, "D", *order(t59="6")), "8:8:11"),  # day and GTC rest
    "bad_checksum": (bad_checksum(fix_msg(2, "D", *ORDER)), "3:10:5"),
    "bad_body_length": (bad_length(fix_msg(2, "D", *ORDER)) + fix_msg(3, "0"), "3:9:5"),
    "unknown_msgtype_ZZ": (fix_msg(2, "ZZ"), "3:35:11"),
    "unsupported_msgtype_AF": (fix_msg(2, "AF", (584, "M"), (585, 7)), "j:3"),
    "garbage_before_a_message": (b"\x00garbage 8=FIY" + fix_msg(2, "D", *ORDER), "8:0"),
    "cancel_of_an_unknown_order": (
        fix_msg(2, "F", (41, "X-9"), (11, "X-9C"), (55, "SYNA"), (54, 1), (60, TS)),
        "9",
    ),
    "message_before_logon": (None, "5"),
    "wrong_sender_comp_id": (fix_msg(1, "A", *LOGON, sender="OTHER"), "3:49:9"),
    "wrong_begin_string": (fix_msg(1, "A", *LOGON, begin="FIX.4.2"), "5"),
    "missing_password": (fix_msg(1, "A", *LOGON), "5"),
}


LOGON_CASES = {"wrong_sender_comp_id", "wrong_begin_string", "missing_password"}


def answer_code(msgs: list[dict[int, str]]) -> str:
    """The first non-session-housekeeping answer as ``type:tag:reason`` (or ``8:exectype``)."""
    for m in msgs:
        t = m[35]
        if t == "3":
            return f"3:{m.get(371, '')}:{m.get(373, '')}"
        if t == "8":
            return f"8:{m[150]}" + (f":{m[103]}" if m[150] == "8" else "")
        if t == "j":
            return f"j:{m[380]}"
        if t in ("9", "5"):
            return t
    return "none"


@pytest.mark.parametrize("case", sorted(VENUE_CASES))
async def test_venue_answers_each_malformed_input(tmp_path, case):
    raw, expected = VENUE_CASES[case]
    er_log = tmp_path / "er.jsonl"
    password = "s3cret" if case == "missing_password" else None
    with capture_logs() as logs:
        async with FixVenue(
            {"SYNA": SAMPLE}, er_log=er_log, latency_ms=0, password=password
        ) as venue:
            r, w = await asyncio.open_connection("127.0.0.1", venue.port)
            if raw is None:  # an order instead of the Logon
                w.write(fix_msg(1, "D", *ORDER))
            elif case in LOGON_CASES:  # the Logon itself is wrong
                w.write(raw)
            else:
                w.write(fix_msg(1, "A", *LOGON) + raw)
            await w.drain()
            got: list[dict[int, str]] = []
            async with asyncio.timeout(5):
                buf = b""
                while answer_code([m for m in parse_all(buf) if m[35] != "A"]) == "none":
                    data = await r.read(65536)
                    if not data:
                        break
                    buf += data
            got = [m for m in parse_all(buf) if m[35] != "A"]
            w.close()
            # the venue is still up: it answers a new connection's Logon
            r2, w2 = await asyncio.open_connection("127.0.0.1", venue.port)
            w2.write(fix_msg(1, "A", *LOGON))
            async with asyncio.timeout(5):
                alive = await r2.read(4096)
            w2.close()
            assert parse_all(alive)[0][35] in ("A", "5")
    code = answer_code(got)
    assert code == expected, (case, got)
    executed = [json.loads(x) for x in er_log.read_text().splitlines()] if er_log.exists() else []
    fills = [e for e in executed if e["exec_type"] in ("0", "F")]
    if expected == "8:0":
        assert len([e for e in fills if e["exec_type"] == "0"]) == 1
    else:
        assert fills == [], case
    if case != "transact_time_without_ms":  # valid FIX (QuickFIX's default): no warning
        assert any(e["log_level"] in ("warning", "error") for e in logs), case
    if case in LOGON_CASES or case == "message_before_logon":
        assert got[-1][35] == "5"  # and the connection is closed
    assert not any(e["log_level"] == "critical" or "exc_info" in e for e in logs)
    print(f"\nMALFORMED venue {case}: {code}")


# -- the adapter ------------------------------------------------------------------------------
class RawVenue:
    """A fake venue: answers the Logon, then sends what the test gives it, records replies."""

    def __init__(self, logon: bytes | None = None) -> None:
        self.received = b""
        self.logon = logon
        self.to_send: asyncio.Queue[bytes] = asyncio.Queue()
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> RawVenue:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _client(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.received += await r.read(65536)
        w.write(self.logon or fix_msg(1, "A", *LOGON, sender="VENUE", target="AGENT"))
        await w.drain()

        async def pump() -> None:
            while True:
                w.write(await self.to_send.get())
                await w.drain()

        t = asyncio.create_task(pump())
        try:
            while data := await r.read(65536):
                self.received += data
        finally:
            t.cancel()
            w.close()


def er(seq, *pairs) -> bytes:
    base = [
        (37, "V-1"),
        (11, "A-1"),
        (17, f"E{seq}"),
        (39, "1"),
        (54, 1),
        (151, 0),
        (14, 100),
        (6, "10"),
    ]
    return fix_msg(seq, "8", *base, *pairs, sender="VENUE", target="AGENT")


ADAPTER_CASES = {
    "last_qty_not_a_number": (er(2, (150, "F"), (32, "abc"), (31, "10")), "3:32:6"),
    "last_qty_nan": (er(2, (150, "F"), (32, "nan"), (31, "10")), "3:32:6"),
    "last_qty_inf": (er(2, (150, "F"), (32, "inf"), (31, "10")), "3:32:6"),
    "cum_qty_negative": (
        fix_msg(
            2,
            "8",
            (37, "V"),
            (11, "A-1"),
            (17, "E"),
            (150, "0"),
            (39, "0"),
            (54, 1),
            (151, 0),
            (14, "-5"),
            (6, "0"),
            sender="VENUE",
            target="AGENT",
        ),
        "3:14:6",
    ),
    "new_seq_no_not_a_number": (
        fix_msg(2, "4", (123, "Y"), (36, "abc"), sender="VENUE", target="AGENT"),
        "3:36:6",
    ),
    "bad_checksum": (bad_checksum(er(2, (150, "F"), (32, 100), (31, "10"))), "3:10:5"),
    "bad_body_length": (
        bad_length(er(2, (150, "F"), (32, 100), (31, "10")))
        + fix_msg(3, "0", sender="VENUE", target="AGENT"),
        "3:9:5",
    ),
    "exec_type_fix42_partial": (er(2, (150, "1"), (32, 100), (31, "10")), "3:150:5"),
    "session_reject_of_our_order": (
        fix_msg(
            2, "3", (45, 2), (371, 44), (373, 5), (58, "bad price"), sender="VENUE", target="AGENT"
        ),
        "rejected",
    ),
    "business_reject_of_our_order": (
        fix_msg(
            2,
            "j",
            (45, 2),
            (372, "D"),
            (379, "A-1"),
            (380, 4),
            (58, "no"),
            sender="VENUE",
            target="AGENT",
        ),
        "rejected",
    ),
    "order_cancel_reject": (
        fix_msg(
            2,
            "9",
            (37, "V-1"),
            (11, "A-1-C"),
            (41, "A-1"),
            (39, "2"),
            (434, 1),
            (102, 0),
            sender="VENUE",
            target="AGENT",
        ),
        "status_request",
    ),
}


@pytest.mark.parametrize("case", sorted(ADAPTER_CASES))
async def test_adapter_answers_each_malformed_input(tmp_path, case):
    raw, expected = ADAPTER_CASES[case]
    async with RawVenue() as venue:
        broker = FixBroker("127.0.0.1", venue.port, "AGENT", "VENUE", heartbeat_s=30)
        with capture_logs() as logs:
            await broker.start()
            await broker.submit(ChildOrder("A-1", "A", "SYNA", Side.BUY, 100, 10.0, 0))  # seq 2
            events = broker.events()
            venue.to_send.put_nowait(raw)
            got = []
            async with asyncio.timeout(5):
                while True:
                    msgs = parse_all(venue.received)
                    if expected.startswith("3:") and any(m[35] == "3" for m in msgs):
                        break
                    if expected == "status_request" and any(m[35] == "H" for m in msgs):
                        break
                    if expected == "rejected":
                        got.append(await anext(events))
                        break
                    await asyncio.sleep(0.01)
            assert broker.available  # the adapter is alive and logged on
            await broker.aclose()
    msgs = parse_all(venue.received)
    if expected.startswith("3:"):
        (rj,) = [m for m in msgs if m[35] == "3"]
        assert f"3:{rj.get(371, '')}:{rj.get(373, '')}" == expected
        assert not [e for e in logs if e["event"] == "order.filled"]
        code = expected
    elif expected == "rejected":
        (ev,) = got
        assert isinstance(ev, OrderRejected) and ev.client_order_id == "A-1" and ev.reason
        (w,) = [e for e in logs if e["event"] == "broker.order_rejected"]
        assert w["log_level"] == "warning"
        code = "OrderRejected(A-1)"
    else:
        (h,) = [m for m in msgs if m[35] == "H"]
        assert (h[11], h[54]) == ("A-1", "1")
        (w,) = [e for e in logs if e["event"] == "broker.cancel_rejected"]
        assert w["log_level"] == "warning"
        code = "status request (35=H, 54=1)"
    assert any(e["log_level"] == "warning" for e in logs), case
    assert not [e for e in got if isinstance(e, OrderFilled | OrderStatus)]
    print(f"\nMALFORMED adapter {case}: {code}")


async def test_adapter_refuses_a_venue_with_other_comp_ids(tmp_path):
    """A second venue on the configured port, answering as someone else: Logout, an error
    line, the session never active, no order sent."""
    other = fix_msg(1, "A", *LOGON, sender="OTHER", target="AGENT")
    async with RawVenue(logon=other) as venue:
        broker = FixBroker("127.0.0.1", venue.port, "AGENT", "VENUE", reconnect_max_s=0.05)
        with capture_logs() as logs:
            with pytest.raises(TimeoutError):
                await broker.start(timeout_s=0.5)
            await broker.aclose()
    assert not broker.available
    errors = [
        e for e in logs if e["event"] == "broker.session_warning" and e["log_level"] == "error"
    ]
    assert errors and "compid_mismatch" in errors[0]["detail"]
    assert all(m[35] in ("A", "3", "5") for m in parse_all(venue.received))


def test_the_case_lists_cover_the_issue(tmp_path: Path):
    """The table in the README is these lists: keep them complete."""
    assert len(VENUE_CASES) == 19 and len(ADAPTER_CASES) == 11
