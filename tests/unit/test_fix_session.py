"""The FIX 4.4 session layer as a pure state machine, driven by scripted message sequences
(the QuickFIX acceptance cases named in ../shared/docs/reliability-tests.md)."""

from __future__ import annotations

import simplefix

from agent.brokers.fix import SeqStore
from agent.brokers.fix_session import (
    FixSession,
    SeqNumbers,
    SessionState,
    execution_report_events,
    new_order_single,
)
from agent.model import (
    ChildOrder,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderStatus,
    Side,
)

S = 1_000_000_000


def peer(
    seq: int, mtype: str, *pairs, poss_dup: bool = False, sender="VENUE", target="AGENT"
) -> bytes:
    m = simplefix.FixMessage()
    m.append_pair(8, "FIX.4.4", header=True)
    m.append_pair(35, mtype, header=True)
    m.append_pair(49, sender, header=True)
    m.append_pair(56, target, header=True)
    m.append_pair(34, seq, header=True)
    m.append_pair(52, "20250602-13:30:00.000", header=True)
    if poss_dup:
        m.append_pair(43, "Y", header=True)
    for tag, v in pairs:
        m.append_pair(tag, v)
    return m.encode()


def parse(raw: bytes) -> simplefix.FixMessage:
    p = simplefix.FixParser()
    p.append_buffer(raw)
    return p.get_message()


def active() -> FixSession:
    s = FixSession("AGENT", "VENUE", 30, SeqNumbers())
    s.logon(0)
    s.receive(peer(1, "A", (98, 0), (108, 30)), 0)
    assert s.state is SessionState.ACTIVE
    return s


ER_FIELDS = [(37, "V-1"), (39, "1"), (54, "1"), (151, "0"), (14, "0"), (6, "0")]


def report(seq: int, coid: str, exec_type: str, **kw) -> bytes:
    pairs = [(11, coid), (17, kw.get("exec_id", f"E{seq}")), (150, exec_type), *ER_FIELDS]
    if "qty" in kw:
        pairs += [(32, kw["qty"]), (31, kw["px"])]
    if kw.get("poss_dup"):
        pairs.insert(0, (122, "20250602-13:29:00.000"))
    return peer(seq, "8", *pairs, poss_dup=kw.get("poss_dup", False))


def test_gap_sends_one_resend_request_and_processes_each_message_once_in_order():
    """QuickFIX 2b: a gap gives ResendRequest 7=<expected> 16=0; the resent messages are
    processed in order, once; messages past the gap are not processed before it is filled."""
    s = active()
    out = s.receive(report(5, "C1", "F", qty=100, px=10.0), S)
    assert [parse(m).get(35) for m in out.send] == [b"2"]
    assert parse(out.send[0]).get(7) == b"2" and parse(out.send[0]).get(16) == b"0"
    assert out.app == []
    assert s.receive(report(6, "C1", "F", qty=50, px=10.0), S).send == []  # no second request
    seen = []
    for seq in range(2, 7):
        seen += s.receive(report(seq, "C1", "F", qty=1, px=1.0, poss_dup=True), S).app
    assert [int(m.get(34)) for m in seen] == [2, 3, 4, 5, 6]
    assert s.seq.next_in == 7


def test_seq_too_low_without_possdup_logs_out_and_disconnects():
    """QuickFIX 2c."""
    s = active()
    s.receive(peer(2, "0"), S)
    out = s.receive(peer(2, "0"), S)
    assert out.disconnect and out.events[0].startswith("seq_too_low")
    assert parse(out.send[0]).get(35) == b"5"


def test_possdup_already_seen_is_ignored_and_without_origsendingtime_is_rejected():
    """QuickFIX 2e and 2g: ignored; Reject 373=1 and the inbound number is not incremented."""
    s = active()
    s.receive(report(2, "C1", "F", qty=10, px=1.0), S)
    out = s.receive(
        peer(2, "8", (122, "20250602-13:29:00"), (11, "C1"), (150, "F"), poss_dup=True), S
    )
    assert out.app == [] and "possdup_ignored" in out.events
    out = s.receive(peer(2, "8", (11, "C1"), (150, "F"), poss_dup=True), S)
    rej = parse(out.send[0])
    assert rej.get(35) == b"3" and rej.get(373) == b"1" and s.seq.next_in == 3


def test_resend_request_from_the_peer_is_gap_filled_never_resent():
    """Admin and stale orders are never resent: one SequenceReset-GapFill covers the range."""
    s = active()
    order = ChildOrder("P-00001", "P", "SYNA", Side.BUY, 100, 50.5, 0)
    s.send_app(new_order_single(order, 0), "D", S)
    out = s.receive(peer(2, "2", (7, 1), (16, 0)), S)
    gf = parse(out.send[0])
    assert gf.get(35) == b"4" and gf.get(123) == b"Y" and gf.get(43) == b"Y"
    assert gf.get(34) == b"1" and int(gf.get(36)) == s.seq.next_out
    assert not any(parse(m).get(35) == b"D" for m in out.send)


def test_sequence_reset_reset_sets_the_number_without_a_resend_loop():
    """QuickFIX 11a-c."""
    s = active()
    out = s.receive(peer(99, "4", (36, 50)), S)
    assert out.send == [] and s.seq.next_in == 50


def test_heartbeat_test_request_then_disconnect_when_silent():
    """QuickFIX 4a/6 and F11: TestRequest after 1.2 x HeartBtInt, disconnect after another."""
    s = active()
    assert parse(s.on_timer(30 * S).send[0]).get(35) == b"0"  # our own heartbeat
    out = s.on_timer(37 * S)
    assert parse(out.send[0]).get(35) == b"1" and "test_request_sent" in out.events
    assert not s.on_timer(50 * S).disconnect
    out = s.on_timer(67 * S)
    assert out.disconnect and "peer_silent" in out.events


def test_test_request_is_answered_with_its_id():
    s = active()
    out = s.receive(peer(2, "1", (112, "PING")), S)
    hb = parse(out.send[0])
    assert hb.get(35) == b"0" and hb.get(112) == b"PING"


def test_the_session_returns_the_numbers_to_persist_and_the_shell_saves_them(tmp_path):
    """The session writes nothing itself: each output says which numbers to persist."""
    store = SeqStore(tmp_path / "seq.json")
    s = FixSession("AGENT", "VENUE", 30, store.load())
    store.save(s.logon(0).persist)
    store.save(s.receive(peer(1, "A", (98, 0), (108, 30)), 0).persist)
    out = s.send_app(simplefix.FixMessage(), "D", 0)
    assert out.persist == SeqNumbers(3, 2)
    assert not (tmp_path / "seq.json").read_text().count("3")  # not written by the session
    store.save(out.persist)
    again = SeqStore(tmp_path / "seq.json").load()
    assert (again.next_out, again.next_in) == (3, 2)


def test_execution_reports_map_onto_order_events():
    assert execution_report_events(parse(report(2, "C1", "0")), 5) == [OrderAccepted("C1", 5)]
    (f,) = execution_report_events(parse(report(3, "C1", "F", qty=100, px=10.5, exec_id="X9")), 5)
    assert f == OrderFilled("C1", "X9", 100.0, 10.5, 5)
    (c,) = execution_report_events(parse(report(4, "C1", "C")), 5)
    assert isinstance(c, OrderCancelled) and c.reason == "expired"
    # A status report (150=I) carries the venue's totals, not a fill of its own.
    st = peer(5, "8", (11, "C1"), (17, "E5"), (150, "I"), (39, "1"), (14, 300), (6, "10.25"))
    assert execution_report_events(parse(st), 5) == [OrderStatus("C1", 5, "working", 300.0, 10.25)]
    unknown = peer(6, "8", (11, "C9"), (17, "E6"), (150, "I"), (39, "8"), (58, "unknown order"))
    (u,) = execution_report_events(parse(unknown), 5)
    assert (u.status, u.cum_qty) == ("unknown", 0.0)


def test_new_order_single_is_an_ioc_limit_at_the_collar():
    m = new_order_single(
        ChildOrder("P-1", "P", "SYNA", Side.SELL, 300, 49.75, 0), 0, poss_resend=True
    )
    assert m.get(54) == b"2" and m.get(40) == b"2" and m.get(59) == b"3"
    assert m.get(44) == b"49.750000" and m.get(38) == b"300" and m.get(97) == b"Y"


def test_venue_resends_its_reports_with_possdup_and_gap_fills_admin():
    """A venue answers a ResendRequest with its execution reports again (43=Y, 122), so a fill
    sent into a dropped connection is not lost; admin messages in the range are gap-filled."""
    v = FixSession("VENUE", "AGENT", 30, SeqNumbers(), acceptor=True, resend_app=True)
    v.on_connect(0)
    v.receive(peer(1, "A", (98, 0), (108, 30), sender="AGENT", target="VENUE"), 0)  # seq 1
    body = simplefix.FixMessage()
    body.append_pair(11, "C1")
    body.append_pair(150, "F")
    v.send_app(body, "8", S)  # seq 2
    v.on_timer(31 * S)  # heartbeat: seq 3
    v.send_app(body, "8", 32 * S)  # seq 4
    out = v.receive(peer(2, "2", (7, 2), (16, 0), sender="AGENT", target="VENUE"), 40 * S)
    got = [parse(m) for m in out.send]
    assert [(m.get(35), m.get(34)) for m in got] == [(b"8", b"2"), (b"4", b"3"), (b"8", b"4")]
    assert got[0].get(43) == b"Y" and got[0].get(122) is not None and got[0].get(11) == b"C1"
    assert got[1].get(123) == b"Y" and got[1].get(36) == b"4"


def test_logon_ahead_of_the_expected_sequence_logs_on_then_asks_for_the_gap(tmp_path):
    """After a restart our store expects 57 but the venue's Logon is 58 (its Logout reply was
    never read): the session is active at once and asks for 57 onwards."""
    store = SeqNumbers(next_in=57)
    s = FixSession("AGENT", "VENUE", 30, store)
    s.logon(0)
    out = s.receive(peer(58, "A", (98, 0), (108, 30)), S)
    assert s.state is SessionState.ACTIVE
    (rr,) = [parse(m) for m in out.send]
    assert rr.get(35) == b"2" and rr.get(7) == b"57"
    s.receive(peer(57, "4", (123, "Y"), (36, 59), poss_dup=True), S)
    assert store.next_in == 59


def venue_session(**kw) -> FixSession:
    v = FixSession("VENUE", "AGENT", 30, SeqNumbers(), acceptor=True, resend_app=True, **kw)
    v.on_connect(0)
    return v


def agent(seq: int, mtype: str, *pairs, **kw) -> bytes:
    return peer(seq, mtype, *pairs, sender="AGENT", target="VENUE", **kw)


def test_a_resend_request_inside_our_gap_is_answered_at_once():
    """Both sides have a gap: the peer's ResendRequest arrives with a number too high; it is
    answered (gap fill) and our own ResendRequest follows, in the same output."""
    s = active()
    s.send_app(new_order_single(ChildOrder("P-1", "P", "SYNA", Side.BUY, 100, 50.0, 0), 0), "D", S)
    out = s.receive(peer(5, "2", (7, 2), (16, 0)), S)
    kinds = [parse(m).get(35) for m in out.send]
    assert kinds == [b"4", b"2"]
    assert parse(out.send[1]).get(7) == b"2"


def test_our_heartbeat_is_due_however_chatty_the_peer():
    s = active()
    for k in range(1, 31):
        s.receive(peer(k + 1, "0"), k * S)  # the peer talks every second
    out = s.on_timer(31 * S)
    assert [parse(m).get(35) for m in out.send] == [b"0"]
    assert s.next_timer_ns() == 61 * S


def test_acceptor_logon_checks_comp_ids_password_and_honours_heartbtint():
    v = venue_session(password="pw")
    out = v.receive(agent(1, "A", (98, 0), (108, 30)), 0)
    assert out.disconnect and parse(out.send[-1]).get(35) == b"5"  # no password
    v = venue_session(password="pw")
    out = v.receive(agent(1, "A", (98, 0), (108, 7), (554, "pw")), 0)
    (logon,) = [parse(m) for m in out.send]
    assert logon.get(108) == b"7" and v.state is SessionState.ACTIVE and v.heartbeat_s == 7
    v = venue_session()
    out = v.receive(peer(1, "A", (98, 0), (108, 30), sender="OTHER", target="VENUE"), 0)
    rej, lo = (parse(m) for m in out.send)
    assert (rej.get(35), rej.get(373), rej.get(371), lo.get(35)) == (b"3", b"9", b"49", b"5")
    assert out.disconnect and v.state is not SessionState.ACTIVE


def test_a_message_before_logon_is_not_processed():
    v = venue_session()
    out = v.receive(agent(1, "D", (11, "C1"), (55, "SYNA"), (54, 1)), 0)
    assert out.app == [] and out.disconnect and parse(out.send[0]).get(35) == b"5"


def test_reset_seq_num_flag_restarts_both_numbers():
    v = venue_session()
    v.seq.next_in, v.seq.next_out = 40, 50
    out = v.receive(agent(1, "A", (98, 0), (108, 30), (141, "Y")), 0)
    (logon,) = [parse(m) for m in out.send]
    assert logon.get(141) == b"Y" and logon.get(34) == b"1"
    assert (v.seq.next_in, v.seq.next_out) == (2, 2)


def test_sequence_reset_below_the_expected_number_is_rejected():
    s = active()
    s.receive(peer(2, "0"), S)
    out = s.receive(peer(3, "4", (36, 1)), S)
    rej = parse(out.send[0])
    assert (rej.get(35), rej.get(371), rej.get(373)) == (b"3", b"36", b"5")
    assert s.seq.next_in == 3


def test_garbage_before_a_message_is_skipped_and_the_message_processed():
    s = active()
    out = s.receive(b"\x00\xffjunk8=FI" + report(2, "C1", "0"), S)
    assert [m.get(11) for m in out.app] == [b"C1"]
    assert any(w.startswith("garbage_skipped") for w in out.warnings)


def test_a_bad_checksum_is_rejected_and_its_number_is_not_consumed():
    """The next message shows the gap and the peer's resend brings the report back intact."""
    s = active()
    raw = report(2, "C1", "F", qty=100, px=10.0)
    broken = raw[:-4] + (b"%03d" % ((int(raw[-4:-1]) + 1) % 256)) + b"\x01"
    out = s.receive(broken, S)
    rej = parse(out.send[0])
    assert (rej.get(35), rej.get(45), rej.get(371)) == (b"3", b"2", b"10") and out.app == []
    out = s.receive(report(3, "C1", "0"), S)
    assert parse(out.send[0]).get(35) == b"2" and s.seq.next_in == 2


def test_a_peer_reject_is_tied_to_the_order_it_rejected():
    s = active()
    s.send_app(new_order_single(ChildOrder("P-7", "P", "SYNA", Side.BUY, 100, 50.0, 0), 0), "D", S)
    out = s.receive(peer(2, "3", (45, 2), (371, 44), (373, 5), (58, "price")), S)
    (pr,) = out.rejected
    assert (pr.ref_seq, pr.ref_msg_type, pr.client_order_id) == (2, "D", "P-7")
    assert "price" in pr.reason and "RefTagID=44" in pr.reason
