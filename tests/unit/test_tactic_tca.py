"""Tactic TCA, known answers: spread captured and adverse selection of passive fills, and the
report's pairing of a tactic against the same schedule sent aggressively."""

from __future__ import annotations

import numpy as np
import pytest

from agent.backtest.engine import RunResult
from agent.backtest.report import summarize
from agent.backtest.tca import tactic_tca
from feeds.model import BookBatch

S = 1_000_000_000


def books(ts_s: list[float], mids: list[float]) -> BookBatch:
    n = len(ts_s)
    ts = (np.array(ts_s) * S).astype(np.int64)
    m = np.array(mids)
    bp, ap = (m - 0.01)[:, None], (m + 0.01)[:, None]
    z = np.full((n, 1), 100.0)
    return BookBatch("X", ts, ts.copy(), bp, z, ap, z.copy())


def test_captured_spread_and_adverse_selection_known_answer():
    b = books([0, 10, 70], [10.00, 10.00, 9.98])
    out = tactic_tca(
        1,
        b,
        [10 * S, 10 * S],
        [100.0, 50.0],
        [9.99, 10.01],
        [10.00, 10.00],
        [0.01, 0.01],
        ["passive", "taker"],
        60.0,
        1000 * 10.0,
    )
    # the passive buy at the bid: 2 half-spreads captured against crossing; the mid then fell 2c
    assert out["spread_captured"] == pytest.approx(100 * 0.02)
    assert out["adverse"] == pytest.approx(100 * 0.02)
    assert out["adverse_bps"] == pytest.approx(2.0)
    assert out["passive_share"] == pytest.approx(100 / 150)
    sell = tactic_tca(
        -1, b, [10 * S], [100.0], [10.01], [10.0], [0.01], ["passive"], 60.0, 1e4
    )  # a sell before the mid fell: favourable, negative adverse selection
    assert sell["adverse"] == pytest.approx(-2.0)


def _run(strategy: str, side: str, spread: float, impact: float, adverse: float) -> RunResult:
    r = RunResult("id", "D", "X", side, strategy, 1.0, 100.0, 1e4, "completed")
    r.tca = {"spread_bps": spread, "impact_bps": impact, "adverse_bps": adverse, "total_bps": 0.0}
    r.tca |= {"filled_qty": 100.0}
    return r


def test_report_pairs_a_tactic_with_the_same_schedule_sent_aggressively():
    rs = [
        _run("twap", "buy", 5.0, 1.0, 0.0),
        _run("twap", "sell", 4.0, 2.0, 0.0),
        _run("twap+passive-conservative", "buy", -1.0, 0.0, 2.0),
        _run("twap+passive-conservative", "sell", 1.0, 0.0, 6.0),
    ]
    (row,) = [x for x in summarize(rs)["rows"] if x["strategy"].endswith("conservative")]
    assert row["vs_aggressive_execution_bps"]["mean"] == pytest.approx(((-1 - 6) + (1 - 6)) / 2)
    assert row["vs_aggressive_net_bps"]["mean"] == pytest.approx(((1 - 6) + (7 - 6)) / 2)
    assert row["n_cheaper_than_aggressive_net"] == 1
