"""The daemon on hand-built books: known answers, partial fills, bad data, stray events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from agent.brokers.simulated import SimulatedBroker
from agent.config import load_config
from agent.daemon import run
from agent.model import OrderFilled
from feeds.model import BookBatch

NS = 1_000_000_000
T0 = 1_748_871_000 * NS  # 2025-06-02 13:30:00 UTC


def book(ts: np.ndarray, depth: float | np.ndarray, tick: float = 0.01) -> BookBatch:
    """Constant-price book: best bid 9.99 / ask 10.01, 10 levels a tick apart, ``depth`` each."""
    n = len(ts)
    lv = np.arange(10) * tick
    d = np.broadcast_to(np.asarray(depth, float).reshape(-1, 1), (n, 10)).copy()
    ask = np.broadcast_to(10.01 + lv, (n, 10)).copy()
    bid = np.broadcast_to(9.99 - lv, (n, 10)).copy()
    t = ts.astype(np.int64)
    return BookBatch("SYM", t, t.copy(), bid, d, ask, d.copy())


class ListFeed:
    """A BookFeed over prepared batches."""

    def __init__(self, batches: list[BookBatch]) -> None:
        self.symbol = "SYM"
        self._batches = batches
        self.closed = False

    async def updates(self) -> AsyncIterator[BookBatch]:
        for b in self._batches:
            yield b

    async def aclose(self) -> None:
        self.closed = True


CONFIG = """
[feed]
files = {{ SYM = "{data}" }}
[broker]
latency_ms = 10
collar_bps = {collar}
[estimation]
window_s = 300
[strategy]
model = "{model}"
prior_profile = false  # hand-built books: no prior from other symbols' days
forecast = "{forecast}"
{risk}
[[orders]]
id = "P"
symbol = "SYM"
side = "{side}"
quantity = {qty}
start = 2025-06-02T13:35:00Z
end = 2025-06-02T14:35:00Z
period_s = {period}
lot = 100
"""


def cfg_for(
    tmp_path: Path,
    *,
    qty: int = 12_000,
    side: str = "buy",
    collar: float = 100,
    model: str = "quadratic",
    risk: str = "",
    period: int = 300,
    forecast: str = "profile",  # hand-built books with exact answers: the profile forecast
):
    data = tmp_path / "dummy.csv"
    data.write_text("unused\n")
    p = tmp_path / "c.toml"
    p.write_text(
        CONFIG.format(
            data=data.as_posix(),
            qty=qty,
            side=side,
            collar=collar,
            model=model,
            risk=risk,
            period=period,
            forecast=forecast,
        )
    )
    return load_config(p)[0]


def steps(logs: list[dict]) -> list[dict]:
    return [e for e in logs if e["event"] == "mpc.step"]


@pytest.mark.parametrize("model", ["quadratic", "nonparametric"])
@pytest.mark.parametrize("side", ["buy", "sell"])
async def test_constant_book_mpc_is_twap(tmp_path, side, model):
    """A book that never changes: every period costs the same, so the plan is uniform and the
    MPC pays exactly what TWAP pays."""
    cfg = cfg_for(tmp_path, side=side, model=model, forecast="profile")
    ts = T0 + np.arange(0, 2 * 3600, 1) * NS
    feed = ListFeed([book(ts[i : i + 1000], 500.0) for i in range(0, len(ts), 1000)])
    with capture_logs() as logs:
        (s,) = await run(cfg, lambda sym: feed)
    assert s.filled_qty == 12_000 and s.status == "completed"
    assert [e["child_qty"] for e in steps(logs)] == [1000.0] * 12
    assert s.shortfall_bps == pytest.approx(s.twap_shortfall_bps)
    assert s.shortfall_bps > 0  # crossing the spread is a cost on both sides
    assert feed.closed
    # Per child, the cost the model predicted beside the one realized (issue 13 item 6).
    costs = [e for e in logs if e["event"] == "order.slice_cost"]
    assert len(costs) == 12 and all(0.8 <= c["ratio"] <= 1.2 for c in costs), costs[:2]


@pytest.mark.parametrize("model", ["quadratic", "nonparametric"])
async def test_depth_doubling_later_moves_volume_there(tmp_path, model):
    """Depth doubles at 14:00 and the intraday profile (learned from history) says so: the MPC
    trades less before and more after, where a flat forecast would split evenly."""
    from agent.impact.profile import IntradayProfile

    cfg = cfg_for(tmp_path, qty=24_000, model=model)
    ts = T0 + np.arange(0, 2 * 3600, 1) * NS
    change = T0 + 30 * 60 * NS  # 14:00
    feed = ListFeed([book(ts, np.where(ts < change, 300.0, 600.0))])
    half_hour = 1800 * NS
    gamma_mult = np.where(np.arange(48) >= 28, 0.5, 1.0)  # bucket 28 starts at 14:00 UTC
    profile = IntradayProfile(
        half_hour, np.ones(48), gamma_mult, cost_mult=gamma_mult, source="history"
    )
    with capture_logs() as logs:
        (s,) = await run(cfg, lambda sym: feed, profiles={("SYM", "buy"): profile})
    kids = [e["child_qty"] for e in steps(logs)]
    assert s.filled_qty == 24_000
    assert max(kids[:5]) < min(kids[6:])
    assert s.shortfall_bps < s.twap_shortfall_bps  # and it pays less than TWAP for it


async def test_thin_book_partial_fills_flow_back_and_are_reported(tmp_path):
    """Depth inside the collar is short: children fill partially, the rest is re-planned, and
    what cannot be done by the deadline is reported, not hidden."""
    cfg = cfg_for(tmp_path, qty=60_000, collar=15)  # 15 bps of 10.00 reaches the best level only
    ts = T0 + np.arange(0, 2 * 3600, 1) * NS
    feed = ListFeed([book(ts, 1_000.0)])
    with capture_logs() as logs:
        (s,) = await run(cfg, lambda sym: feed)
    st = steps(logs)
    fills = sum(e["fill_qty"] for e in logs if "fill_qty" in e and e.get("strategy") == "mpc")
    assert fills == s.filled_qty < 60_000 and s.status == "incomplete"
    # remaining in each step is exactly the parent minus what filled before it
    assert st[1]["remaining_qty"] == 60_000 - 1_000
    assert any(e["event"] == "mpc.final_retry" for e in logs)
    assert all(e["filled_qty"] <= e["order_qty"] for e in logs if "order_qty" in e)


async def test_stray_broker_event_is_logged_not_dropped(tmp_path):
    """A fill for an id we never sent is reported as an error line with its details."""
    from agent.brokers.simulated import SimulatedBroker

    cfg = cfg_for(tmp_path)
    broker = SimulatedBroker(latency_ns=10_000_000)
    broker._put([OrderFilled("NOT-OURS-1", "x1", 100, 10.0, T0)])
    ts = T0 + np.arange(0, 2 * 3600, 1) * NS
    with capture_logs() as logs:
        await run(cfg, lambda sym: ListFeed([book(ts, 500.0)]), broker=broker)
    bad = [e for e in logs if e["event"] == "order.unknown_event"]
    assert len(bad) == 1 and bad[0]["client_order_id"] == "NOT-OURS-1"


async def test_data_ending_early_stops_without_trading_on_a_dead_book(tmp_path):
    cfg = cfg_for(tmp_path)
    ts = T0 + np.arange(0, 20 * 60, 1) * NS  # 13:30-13:50: only three periods
    with capture_logs() as logs:
        (s,) = await run(cfg, lambda sym: ListFeed([book(ts, 500.0)]))
    assert len(steps(logs)) == 3 and s.filled_qty == 3_000
    assert any(e["event"] == "feed.ended_before_deadline" for e in logs)


async def test_broker_refusals_free_the_quantity_and_in_doubt_orders_are_never_resent(tmp_path):
    """A rejected submit frees its quantity for later children; an in-doubt one stays open and
    is never sent again as new."""
    from agent.brokers.simulated import SimulatedBroker
    from agent.errors import BrokerRejected, BrokerUnavailable

    class Flaky(SimulatedBroker):
        def __init__(self) -> None:
            super().__init__(latency_ns=10_000_000)
            self.calls = 0

        async def submit(self, order):
            self.calls += 1
            if self.calls == 1:
                raise BrokerRejected("risk limit", reason="risk_limit")
            if self.calls == 2:
                raise BrokerUnavailable("timeout")
            await super().submit(order)

    cfg = cfg_for(tmp_path)
    broker = Flaky()
    ts = T0 + np.arange(0, 2 * 3600, 1) * NS
    with capture_logs() as logs:
        (s,) = await run(cfg, lambda sym: ListFeed([book(ts, 500.0)]), broker=broker)
    names = [e["event"] for e in logs]
    assert "order.submit_rejected" in names and "order.in_doubt" in names
    sent = [
        e["client_order_id"]
        for e in logs
        if e["event"] == "order.submitted" and e["strategy"] == "mpc"
    ]
    assert len(sent) == len(set(sent))
    # the in-doubt child's shares stay reserved: never re-sent, reported at the end
    doubt = next(e["client_order_id"] for e in logs if e["event"] == "order.in_doubt")
    qty = next(
        e["qty"] for e in logs if e["event"] == "order.submitted" and e["client_order_id"] == doubt
    )
    assert s.filled_qty == 12_000 - qty and s.status == "incomplete"


async def test_risk_gate_blocks_children_and_names_the_gate(tmp_path):
    """A max_child_qty below the MPC's child blocks every child: nothing is sent, each block is
    logged with its gate, and the shortfall is reported."""
    cfg = cfg_for(tmp_path, risk="[risk]\nmax_child_qty = 500")
    ts = T0 + np.arange(0, 2 * 3600, 1) * NS
    with capture_logs() as logs:
        (s,) = await run(cfg, lambda sym: ListFeed([book(ts, 500.0)]))
    blocks = [e for e in logs if e["event"] == "risk.blocked"]
    assert blocks and all(b["gate"] == "max_child_qty" for b in blocks)
    assert not any(e["event"] == "order.submitted" and e["strategy"] == "mpc" for e in logs)
    assert s.filled_qty == 0 and s.status == "incomplete"


async def test_per_order_risk_gate_applies_on_top_of_the_global_one(tmp_path):
    """[orders.risk] max_child_notional below a child's notional blocks that parent's children
    as gate "order.max_child_notional", while the global [risk] (looser) lets them pass."""
    cfg = cfg_for(tmp_path, risk="[risk]\nmax_child_notional = 1e9")
    p = tmp_path / "c.toml"
    p.write_text(p.read_text() + "[orders.risk]\nmax_child_notional = 1000\n")
    cfg = load_config(p)[0]
    assert cfg.orders[0].risk is not None and cfg.orders[0].risk.max_child_notional == 1000
    ts = T0 + np.arange(0, 2 * 3600, 1) * NS
    with capture_logs() as logs:
        (s,) = await run(cfg, lambda sym: ListFeed([book(ts, 500.0)]))
    blocks = [e for e in logs if e["event"] == "risk.blocked"]
    assert blocks and all(b["gate"] == "order.max_child_notional" for b in blocks)
    assert s.filled_qty == 0


async def test_an_overfill_report_halts_the_daemon_and_is_kept(tmp_path):
    """A venue fill larger than the child (F5): logged and journaled as an anomaly, the
    kill switch engages, the daemon keeps running (no crash) and sends nothing more."""
    from agent.journal import Journal

    cfg = cfg_for(tmp_path)
    ts = T0 + np.arange(0, 2 * 3600, 1) * NS

    class OverfillBroker(SimulatedBroker):
        async def submit(self, order):
            await super().submit(order)
            if order.client_order_id.endswith("-00002"):
                self._put([OrderFilled(order.client_order_id, "bad", order.qty * 3, 50.0, 0)])

    journal = Journal(tmp_path / "j.sqlite")
    with capture_logs() as logs:
        (s,) = await run(
            cfg,
            lambda sym: ListFeed([book(ts, 500.0)]),
            broker=OverfillBroker(10_000_000),
            journal=journal,
        )
    names = [e["event"] for e in logs]
    assert "order.invariant_violation" in names and "daemon.halted" in names
    sent = [
        e["client_order_id"]
        for e in logs
        if e["event"] == "order.submitted" and e["strategy"] == "mpc"
    ]
    # P-<run tag>-<n>: the tag is this start's, from the journal
    assert [c.rsplit("-", 1)[1] for c in sent] == ["00001", "00002"]
    assert len({c.rsplit("-", 1)[0] for c in sent}) == 1 and sent[0].startswith("P-")
    rows = journal._pool.submit(
        lambda: journal._conn.execute("SELECT body FROM records WHERE kind='anomaly'").fetchall()
    ).result()
    journal.close()
    assert len(rows) == 1 and '"bad"' in rows[0][0]
    assert s.status == "incomplete"


async def test_children_per_parent_limit_counts_across_a_restart(tmp_path):
    """max_children_per_parent = 3: the 4th child is blocked, and a restart from the journal
    does not reset the count (RTS 6 Art 15(3), reliability-tests L7)."""
    from agent.journal import Journal

    cfg = cfg_for(tmp_path, risk="[risk]\nmax_children_per_parent = 3")
    ts = T0 + np.arange(0, 2 * 3600, 1) * NS
    journal = Journal(tmp_path / "j.sqlite")
    with capture_logs() as logs:
        await run(cfg, lambda sym: ListFeed([book(ts, 500.0)]), journal=journal)
    sent = [e for e in logs if e["event"] == "order.submitted" and e["strategy"] == "mpc"]
    blocked = [e for e in logs if e["event"] == "risk.blocked"]
    assert len(sent) == 3 and blocked
    assert all(b["gate"] == "max_children_per_parent" for b in blocked)
    with capture_logs() as logs:
        await run(cfg, lambda sym: ListFeed([book(ts, 500.0)]), journal=journal)
    journal.close()
    assert not [e for e in logs if e["event"] == "order.submitted" and e["strategy"] == "mpc"]


async def test_no_child_is_sent_into_a_broker_that_is_down(tmp_path):
    """A broker whose session is down is not sent to: the child is denied with its reason
    (not journaled, not in doubt), and the run goes on."""
    cfg = cfg_for(tmp_path)
    ts = T0 + np.arange(0, 2 * 3600, 1) * NS

    class Down(SimulatedBroker):
        available = False

    with capture_logs() as logs:
        (s,) = await run(cfg, lambda sym: ListFeed([book(ts, 500.0)]), broker=Down(10_000_000))
    blocked = [e for e in logs if e["event"] == "risk.blocked"]
    assert blocked and {b["gate"] for b in blocked} == {"broker_unavailable"}
    assert not [
        e
        for e in logs
        if e["event"] in ("order.submitted", "order.in_doubt") and e.get("strategy", "mpc") == "mpc"
    ]
    assert s.filled_qty == 0


async def test_a_frame_ten_years_ahead_never_fires_a_catch_up_dump(tmp_path):
    """A book dated ten years ahead skips the periods it jumps over; the last period would
    then send the rest of the parent in one child. It is capped at ten average periods
    (strategy.max_child_multiple) and the parent ends incomplete, said in the logs."""
    cfg = cfg_for(tmp_path, period=60)  # 60 periods of 200 shares on average
    ts = T0 + np.arange(0, 1200, 1) * NS  # 13:30 to 13:50: the first fifteen periods
    far = np.array([T0 + 10 * 365 * 86_400 * NS])
    with capture_logs() as logs:
        (s,) = await run(cfg, lambda sym: ListFeed([book(ts, 500.0), book(far, 500.0)]))
    sent = [e["qty"] for e in logs if e["event"] == "order.submitted" and e["strategy"] == "mpc"]
    avg = 12_000 / 60
    assert sent and max(sent) <= 10 * avg
    capped = [e for e in logs if e["event"] == "mpc.child_capped"]
    assert capped and all(c["capped_qty"] <= 10 * avg for c in capped)
    assert s.status == "incomplete" and s.filled_qty == sum(sent)


async def test_live_without_any_book_ends_at_the_deadline_by_the_wall_clock(tmp_path):
    """The feed's server is down: only heartbeats (empty batches) come. The wall clock (an
    injected ManualClock, moved by the test) passes the deadline: the parent ends incomplete
    with a clear event instead of waiting for ever."""
    from feeds.clock import ManualClock

    cfg = cfg_for(tmp_path)
    clock = ManualClock(T0)
    end = T0 + 65 * 60 * NS  # the order ends at 14:35

    class Heartbeats:
        symbol = "SYM"

        async def updates(self):
            t = T0
            while t < end + 10 * NS:
                t += 30 * NS
                clock.advance_to(t)
                yield BookBatch.empty("SYM")

        async def aclose(self):
            pass

    with capture_logs() as logs:
        (s,) = await run(cfg, lambda sym: Heartbeats(), clock=clock)
    assert s.status == "incomplete" and s.filled_qty == 0
    (dl,) = [e for e in logs if e["event"] == "order.deadline_reached"]
    assert dl["books_seen"] == 0 and dl["reason"] == "no book before the deadline"
    assert not [e for e in logs if e["event"] == "order.submitted"]
    assert not [e for e in logs if e["event"] == "feed.ended_before_deadline"]


@pytest.mark.parametrize("side", ["buy", "sell"])
async def test_constant_book_adaptive_mpc_stays_near_twap(tmp_path, side):
    """The adaptive forecast on a book that never changes: the state is the day's level, so
    the plan stays close to uniform (only the forecast's uncertainty, which makes later
    periods a little dearer in expectation, tilts it forward) and completes."""
    cfg = cfg_for(tmp_path, side=side, forecast="adaptive")
    ts = T0 + np.arange(0, 2 * 3600, 1) * NS
    feed = ListFeed([book(ts[i : i + 1000], 500.0) for i in range(0, len(ts), 1000)])
    with capture_logs() as logs:
        (s,) = await run(cfg, lambda sym: feed)
    assert s.status == "completed" and s.filled_qty == 12_000
    kids = [e["child_qty"] for e in steps(logs)]
    assert len(kids) == 12 and max(abs(k - 1000.0) for k in kids) <= 300.0


async def test_an_urgent_parent_front_loads_against_a_patient_one(tmp_path):
    """Urgency per parent (orders[].risk_aversion): on the same constant book, the parent with
    timing risk trades more in its first periods than the one without."""
    patient = cfg_for(tmp_path)
    urgent_p = tmp_path / "u.toml"
    urgent_p.write_text(
        (tmp_path / "c.toml").read_text().replace("lot = 100", "lot = 100\nrisk_aversion = 0.05")
    )
    urgent = load_config(urgent_p)[0]
    assert urgent.orders[0].risk_aversion == 0.05
    ts = T0 + np.arange(0, 2 * 3600, 1) * NS
    # a mid that moves (sigma > 0), depth constant
    b = book(ts, 500.0)
    wiggle = 0.01 * np.sin(np.arange(len(ts)) / 30.0)[:, None]
    b = BookBatch(
        "SYM", b.ts_event_ns, b.ts_recv_ns, b.bid_px + wiggle, b.bid_sz, b.ask_px + wiggle, b.ask_sz
    )
    firsts = []
    for cfg in (patient, urgent):
        with capture_logs() as logs:
            (s,) = await run(cfg, lambda sym: ListFeed([b]))
        assert s.status == "completed"
        firsts.append(sum(e["child_qty"] for e in steps(logs)[:3]))
    assert firsts[1] > firsts[0] * 1.2, firsts
