"""No look-ahead (issue 13 item 7): replace every book after ``t`` by other books; every
decision up to ``t`` must stay the same, in the daemon and in the backtest.

The books after ``t`` are the day's own rows in reverse order with prices 1 % higher and sizes
doubled (``tests.lookahead.replace_after``), so the later decisions do change: the test also
asserts that, or it could pass by deciding nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.backtest.data import DayData, load_day
from agent.backtest.engine import RunSpec, SimParams, simulate
from agent.config import load_config
from agent.daemon import Daemon
from feeds.model import BookBatch
from tests.lookahead import replace_after

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DAY = REPO / "replay_data" / "SYNA_2025-06-02.mbp-10.csv.gz"
NS = 1_000_000_000
T_CUT = 1_748_876_400 * NS  # 2025-06-02 15:00:00 UTC, mid-order
STRATEGIES = ["mpc-quadratic-deterministic", "mpc-nonparametric-robust", "pov", "ac"]

CONFIG = """
[feed]
files = {{ SYNA = "{day}" }}
[broker]
latency_ms = 40
collar_bps = 60
half_life_s = 30
[strategy]
kind = "{kind}"
model = "{model}"
solver = "{solver}"
risk_aversion = {risk}
pov_rate = 0.05
[[orders]]
id = "LA"
symbol = "SYNA"
side = "buy"
quantity = 30000
start = 2025-06-02T13:35:00Z
end = 2025-06-02T17:35:00Z
period_s = 600
lot = 100
"""


def _books() -> tuple[DayData, BookBatch]:
    day = load_day(str(DAY), "mbp10", "SYNA")
    return day, replace_after(day.books, T_CUT)


class _Feed:
    symbol = "SYNA"

    def __init__(self, books: BookBatch) -> None:
        self.books = books

    async def updates(self) -> AsyncIterator[BookBatch]:
        for i in range(0, len(self.books), 1500):
            yield self.books.slice(i, i + 1500)

    async def aclose(self) -> None:
        pass


def _split(name: str) -> tuple[str, str, str, float]:
    if name.startswith("mpc-"):
        _, model, solver = name.split("-")[:3]
        return "mpc", model, solver, 0.0
    return name, "quadratic", "deterministic", 1e-4 if name == "ac" else 0.0


async def _daemon_children(tmp_path: Path, name: str, books: BookBatch) -> list[tuple]:
    kind, model, solver, risk = _split(name)
    p = tmp_path / f"{name}.toml"
    p.write_text(
        CONFIG.format(day=DAY.as_posix(), kind=kind, model=model, solver=solver, risk=risk)
    )
    cfg = load_config(p)[0]
    d = Daemon(cfg, lambda sym: _Feed(books), None, None, None, None)
    await d.run()
    (r,) = d.runners
    return [
        (c.order.ts_created_ns, c.order.qty, c.order.limit_px)
        for c in r.mpc.tracker.children.values()
    ]


def _backtest_children(name: str, day: DayData) -> list[tuple]:
    _, _, _, risk = _split(name)
    params = SimParams(
        start_s=13 * 3600 + 35 * 60,
        end_s=17 * 3600 + 35 * 60,
        period_s=600,
        lot=100,
        latency_ms=40,
        collar_bps=60,
        half_life_s=30,
        pov_rate=0.05,
        ac_risk_aversion=risk,
    )
    spec = RunSpec("LA", "la", str(DAY), "mbp10", "SYNA", (), "buy", 0.0, name, params, 30_000)
    r = simulate(day, spec)
    assert r.status != "failed", r.message
    return [(s["t_ns"], s["sent_qty"], s["limit_px"]) for s in r.slices]


def _up_to(kids: list[tuple], t: int) -> list[tuple]:
    return [k for k in kids if k[0] <= t]


@pytest.mark.parametrize("name", STRATEGIES)
def test_backtest_decisions_before_t_ignore_the_books_after_t(name):
    day, other = _books()
    a = _backtest_children(name, day)
    b = _backtest_children(name, dataclasses.replace(day, books=other))
    assert _up_to(a, T_CUT) == _up_to(b, T_CUT) and _up_to(a, T_CUT)
    assert a != b, "the books after t changed nothing: the test could not fail"


@pytest.mark.parametrize("name", STRATEGIES)
async def test_daemon_decisions_before_t_ignore_the_books_after_t(tmp_path, name):
    day, other = _books()
    a = await _daemon_children(tmp_path, name, day.books)
    b = await _daemon_children(tmp_path, name, other)
    assert _up_to(a, T_CUT) == _up_to(b, T_CUT) and _up_to(a, T_CUT)
    assert a != b, "the books after t changed nothing: the test could not fail"
