"""A decision taken ahead of its period (``strategy.decision_lead_ms``, issue 15): the period's
child is decided ``lead`` before the period starts, on the books known then, and sent at the
start. So the books of the last ``lead`` before a period cannot change its child's size (they
do without a lead: the test could fail), the child is stamped with the period's start, and the
daemon and the backtest still send the same children and get the same fills.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from agent.backtest.data import load_day
from agent.backtest.engine import RunSpec, SimParams, simulate
from agent.config import load_config
from agent.daemon import Daemon
from agent.errors import ConfigError
from agent.runner import make_feed_factory
from tests.lookahead import replace_after

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DAY = REPO / "replay_data" / "SYNA_2025-06-02.mbp-10.csv.gz"
NS = 1_000_000_000
START_S, END_S, PERIOD_S = 13 * 3600 + 40 * 60, 15 * 3600 + 40 * 60, 600
DAY0 = 1_748_822_400 * NS  # 2025-06-02 00:00 UTC
T_PERIOD = DAY0 + (START_S + 8 * PERIOD_S) * NS  # 15:00:00, the start of period 8
LEAD_S = 90.0

CONFIG = """
[feed]
files = {{ SYNA = "{day}" }}
chunk_rows = 997
[broker]
latency_ms = 40
collar_bps = 60
half_life_s = 30
[estimation]
window_s = 600
n_sizes = 40
[strategy]
final_retry_s = 20
decision_lead_ms = {lead_ms}
[[orders]]
id = "LD"
symbol = "SYNA"
side = "buy"
quantity = 24000
start = 2025-06-02T13:40:00Z
end = 2025-06-02T15:40:00Z
period_s = 600
lot = 100
"""


def _backtest(day, lead_s: float):
    params = SimParams(
        start_s=START_S,
        end_s=END_S,
        period_s=PERIOD_S,
        lot=100,
        latency_ms=40,
        collar_bps=60,
        half_life_s=30,
        window_s=600,
        n_sizes=40,
        final_retry_s=20,
        decision_lead_ms=lead_s * 1000,
    )
    spec = RunSpec(
        "LD", "ld", str(DAY), "mbp10", "SYNA", (), "buy", 0.0, "mpc-quadratic-deterministic",
        params, qty=24_000, mpc_profile="history",
    )  # fmt: skip
    r = simulate(day, spec)
    assert r.status != "failed", r.message
    return r


def _sized(r, upto_ns: int) -> list[tuple[int, float]]:
    return [(s["t_ns"], s["sent_qty"]) for s in r.slices if s["t_ns"] <= upto_ns]


def test_the_books_of_the_lead_before_a_period_do_not_change_its_child():
    day = load_day(str(DAY), "mbp10", "SYNA")
    other = dataclasses.replace(day, books=replace_after(day.books, T_PERIOD - int(LEAD_S * NS)))
    a, b = _backtest(day, LEAD_S), _backtest(other, LEAD_S)
    assert any(t == T_PERIOD for t, _ in _sized(a, T_PERIOD))
    assert _sized(a, T_PERIOD) == _sized(b, T_PERIOD)
    # Without a lead the same books do change that child: the test can fail.
    a0, b0 = _backtest(day, 0.0), _backtest(other, 0.0)
    assert _sized(a0, T_PERIOD - 1) == _sized(b0, T_PERIOD - 1)
    assert _sized(a0, T_PERIOD) != _sized(b0, T_PERIOD)


def test_children_decided_ahead_leave_at_their_periods_start():
    r = _backtest(load_day(str(DAY), "mbp10", "SYNA"), LEAD_S)
    starts = {DAY0 + (START_S + k * PERIOD_S) * NS for k in range(12)}
    first = [s["t_ns"] for s in r.slices if not s.get("retry")]
    assert first and set(first) <= starts, first
    assert r.tca["filled_qty"] == pytest.approx(24_000)


async def test_daemon_and_backtest_agree_with_a_lead(tmp_path):
    p = tmp_path / "lead.toml"
    p.write_text(CONFIG.format(day=DAY.as_posix(), lead_ms=LEAD_S * 1000))
    cfg = load_config(p)[0]
    d = Daemon(cfg, make_feed_factory(cfg), None, None, None, None)
    await d.run()
    (runner,) = d.runners
    bt = _backtest(load_day(str(DAY), "mbp10", "SYNA"), LEAD_S)
    sent = [
        (c.order.ts_created_ns, c.order.qty, round(c.order.limit_px, 9))
        for c in runner.mpc.tracker.children.values()
    ]
    assert len(sent) >= 4
    assert sent == [(s["t_ns"], s["sent_qty"], round(s["limit_px"], 9)) for s in bt.slices]
    assert runner.summary().filled_qty == pytest.approx(bt.tca["filled_qty"])


@pytest.mark.parametrize(
    ("extra", "lead_ms", "where"),
    [
        ("", 600_000, "orders[0].period_s"),
        ('[tactic]\nkind = "passive"\n', 1000, "strategy.decision_lead_ms"),
        ('[tactic]\nkind = "timing"\n', 1000, "strategy.decision_lead_ms"),
    ],
)
def test_a_lead_the_core_cannot_honour_is_refused_with_its_key(tmp_path, extra, lead_ms, where):
    p = tmp_path / "bad.toml"
    p.write_text(CONFIG.format(day=DAY.as_posix(), lead_ms=lead_ms) + extra)
    with pytest.raises(ConfigError, match=where.replace("[", r"\[").replace("]", r"\]")):
        load_config(p)
