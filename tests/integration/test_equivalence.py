"""The backtest runs the code that trades: same books, same order, same children and fills.

The daemon (replay feed of the shipped sample, read in chunks, with the simulated broker) and
the backtest (the whole day as one batch) drive the same execution core. For every strategy
they must send the same children (decision time, quantity, limit price) and get the same fills
(time, quantity, price), and the daemon's TWAP shadow must equal the backtest's TWAP run. A
copy of the decision anywhere, or a second latency rule, fails this test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.backtest.data import load_day, load_history
from agent.backtest.engine import RunSpec, SimParams, simulate
from agent.config import load_config
from agent.core.tactic import TacticConfig
from agent.daemon import Daemon
from agent.runner import build_history_trades, make_feed_factory

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DAY = REPO / "replay_data" / "SYNA_2025-06-02.mbp-10.csv.gz"
HISTORY = REPO / "replay_data" / "history" / "SYNA_2025-05-30.mbp-10.csv.gz"
QTY = 24_000
START, END = "13:35:00", "15:35:00"

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
{history}
[strategy]
kind = "{kind}"
model = "{model}"
solver = "{solver}"
risk_aversion = {risk}
pov_rate = 0.05
final_retry_s = 20
[[orders]]
id = "EQ1"
symbol = "SYNA"
side = "{side}"
quantity = {qty}
start = 2025-06-02T{start}Z
end = 2025-06-02T{end}Z
period_s = 600
lot = 100
"""

STRATEGIES = [
    "twap",
    "vwap",
    "pov",
    "ac",
    "mpc-quadratic-deterministic",
    "mpc-quadratic-deterministic-risk",
    "mpc-power-deterministic",
    "mpc-piecewise_power-deterministic",
    "mpc-nonparametric-deterministic",
    "mpc-quadratic-robust",
    "mpc-nonparametric-robust",
    "mpc-power-stochastic",
    "mpc-quadratic-stochastic",
]
RISK = 1e-4


def _secs(hhmmss: str) -> float:
    h, m, s = (int(x) for x in hhmmss.split(":"))
    return h * 3600 + m * 60 + s


async def _daemon(tmp_path: Path, name: str, side: str) -> Daemon:
    if name.startswith("mpc-"):
        kind, model, solver = "mpc", *name.split("-")[1:3]
    else:
        kind, model, solver = name, "quadratic", "deterministic"
    risk = RISK if name.endswith("-risk") or name == "ac" else 0.0
    p = tmp_path / "eq.toml"
    p.write_text(
        CONFIG.format(
            day=DAY.as_posix(),
            history=f'history = ["{HISTORY.as_posix()}"]' if name == "vwap" else "",
            kind=kind,
            model=model,
            solver=solver,
            risk=risk,
            side=side,
            qty=QTY,
            start=START,
            end=END,
        )
    )
    cfg = load_config(p)[0]
    d = Daemon(
        cfg,
        make_feed_factory(cfg),
        None,
        None,
        None,
        None,
        history_trades=build_history_trades(cfg),
    )
    await d.run()
    return d


def _backtest(name: str, side: str, tactic: TacticConfig | None = None):
    params = SimParams(
        tactic=tactic or TacticConfig(),
        start_s=_secs(START),
        end_s=_secs(END),
        period_s=600,
        lot=100,
        latency_ms=40,
        collar_bps=60,
        half_life_s=30,
        window_s=600,
        n_sizes=40,
        pov_rate=0.05,
        ac_risk_aversion=RISK,
        risk_aversion=RISK,
        final_retry_s=20,
    )
    hist = (str(HISTORY),) if name == "vwap" else ()
    spec = RunSpec(
        "EQ1",
        "eq",
        str(DAY),
        "mbp10",
        "SYNA",
        hist,
        side,
        0.0,
        name,
        params,
        qty=QTY,
        mpc_profile="history",  # no history day: the packaged prior, as the daemon
    )
    history = load_history(hist, "SYNA") if hist else None
    return simulate(load_day(str(DAY), "mbp10", "SYNA"), spec, history)


def _children(leg) -> list[tuple[int, float, float]]:
    return [
        (c.order.ts_created_ns, c.order.qty, round(c.order.limit_px, 9))
        for c in leg.tracker.children.values()
    ]


def _fills(venue, prefix: str) -> list[tuple[int, float, float]]:
    out = []
    for f in venue.fills:
        if f.client_order_id.startswith(prefix):
            out += [
                (f.due_ns, q, p)
                for q, p in zip(f.execution.qty.tolist(), f.execution.px.tolist(), strict=True)
            ]
    return out


@pytest.mark.parametrize("side", ["buy", "sell"])
@pytest.mark.parametrize("name", STRATEGIES)
async def test_daemon_and_backtest_send_the_same_children_and_get_the_same_fills(
    tmp_path, name, side
):
    d = await _daemon(tmp_path, name, side)
    (r,) = d.runners
    bt = _backtest(name, side)
    assert bt.status != "failed", bt.message
    if name == "vwap":
        assert any("learned from the history" in n for n in bt.notes), bt.notes
    if name == "pov":  # the trades came through (the books' T rows), not a TWAP fallback
        assert all(s.get("prev_volume") is not None for s in bt.slices[:-1]), bt.slices[:2]
    sent = _children(r.mpc)
    assert len(sent) >= 4, "too few children to compare"
    bt_sent = [(s["t_ns"], s["sent_qty"], round(s["limit_px"], 9)) for s in bt.slices]
    assert sent == bt_sent
    mpc_fills = _fills(d.main.venue, "EQ1-")  # the main venue holds the mpc leg only
    assert mpc_fills == list(zip(bt.fills["t_ns"], bt.fills["qty"], bt.fills["px"], strict=True))
    assert r.summary().filled_qty == pytest.approx(bt.tca["filled_qty"])
    assert r.summary().status == bt.status


@pytest.mark.parametrize("side", ["buy", "sell"])
async def test_the_daemons_twap_shadow_is_the_backtests_twap(tmp_path, side):
    d = await _daemon(tmp_path, "mpc-quadratic-deterministic", side)
    (r,) = d.runners
    assert r.twap is not None
    bt = _backtest("twap", side)
    assert _children(r.twap) == [
        (s["t_ns"], s["sent_qty"], round(s["limit_px"], 9)) for s in bt.slices
    ]
    assert _fills(d.shadow.venue, "EQ1-twap-") == list(
        zip(bt.fills["t_ns"], bt.fills["qty"], bt.fills["px"], strict=True)
    )
    s = r.summary()
    assert s.twap_filled_qty == pytest.approx(bt.tca["filled_qty"])
    assert s.twap_avg_px == pytest.approx(bt.tca["avg_px"], rel=1e-12)


def test_the_sample_day_is_there():
    assert DAY.exists()


# -- the within-period tactics: the same resting orders, cancels, replaces and fills ---------------
TACTICS = {
    "passive": TacticConfig(kind="passive", cutoff=0.7, reprice_ticks=1),
    "timing": TacticConfig(kind="timing", quantile=0.3, min_history_s=300, cutoff=0.8),
}


def _with_tactic(monkeypatch, tactic: TacticConfig) -> None:
    """The daemon builds its cores with the tactic (until ``[tactic]`` is in the config)."""
    import agent.daemon as daemon_mod

    orig = daemon_mod.build_core

    def build(*a, **kw):
        core = orig(*a, **kw)
        core.set_tactic(tactic)
        return core

    monkeypatch.setattr(daemon_mod, "build_core", build)


@pytest.mark.parametrize("side", ["buy", "sell"])
@pytest.mark.parametrize("tactic", sorted(TACTICS))
@pytest.mark.parametrize("name", ["twap", "mpc-quadratic-deterministic"])
async def test_tactics_daemon_equals_backtest(tmp_path, monkeypatch, name, tactic, side):
    cfg = TACTICS[tactic]
    _with_tactic(monkeypatch, cfg)
    d = await _daemon(tmp_path, name, side)
    (r,) = d.runners
    bt = _backtest(name, side, cfg)
    assert bt.status == "completed", bt.message
    assert r.summary().status == "completed"
    sent = [
        (s.t_ns, s.qty, round(s.limit_px, 9), r.mpc.tracker.child(s.client_order_id).order.tif)
        for s in r.core.slices
    ]
    assert len(sent) >= 6
    if tactic == "passive":
        assert sum(t == "day" for *_, t in sent) >= 3, "the passive tactic posted too little"
        assert bt.tca["passive_share"] > 0.1, bt.tca  # the passive path really filled
    else:
        waited = [s for s in bt.slices if s["t_ns"] not in bt.period_starts_ns]
        assert waited, "the timing tactic never waited"
    bt_sent = [(s["t_ns"], s["sent_qty"], round(s["limit_px"], 9), s["tif"]) for s in bt.slices]
    assert sent == bt_sent
    fills = [
        (f.due_ns, q, p, f.kind)
        for f in d.main.venue.fills
        if f.client_order_id.startswith("EQ1-")
        for q, p in zip(f.execution.qty.tolist(), f.execution.px.tolist(), strict=True)
    ]
    assert [x[:3] for x in fills] == list(
        zip(bt.fills["t_ns"], bt.fills["qty"], bt.fills["px"], strict=True)
    )
    assert r.summary().filled_qty == pytest.approx(bt.tca["filled_qty"])
    tac = r.core.tactic
    assert tac is not None
    assert (tac.n_passive, tac.n_repriced, tac.n_crossed) == (
        bt.tca["n_posted"],
        bt.tca["n_repriced"],
        bt.tca["n_behind"],
    )
    if tactic == "passive" and name == "twap":  # TWAP posts every period: replaces happen
        assert tac.n_repriced > 0, "no re-price: the replace path was not exercised"
        kinds = {k for *_, k in fills}
        assert "passive" in kinds, kinds
    r.core.check()
