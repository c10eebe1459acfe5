"""Queue model on a real XNAS MBP-10 day (FROG, 2025-04-03): bounds that must hold on any data.

Orders rest at the touch from several points of the day, on both sides, under both cancel
models; what they fill is checked against what the prints at and through their price allow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agent.core.queue import QueueConfig, QueueModel, QueueRows, passive_fill_problem
from agent.model import Side

pytestmark = pytest.mark.integration

_REL = Path("databento-mbp10") / "FROG" / "FROG_2025-04-03 00_00_00+00_00.csv"
QTY = 300.0
WINDOW = 3_000


def _frog() -> Path:
    # The shared data sit beside the checkout (../shared/data), or higher up for a worktree.
    here = Path(__file__).resolve()
    for p in here.parents:
        if (p / "shared" / "data" / _REL).exists():
            return p / "shared" / "data" / _REL
    pytest.skip(f"real data not available: shared/data/{_REL} (see ../shared/data/README.md)")


@pytest.fixture(scope="module")
def frog_rows() -> QueueRows:
    df = pd.read_csv(_frog())
    lv = range(10)
    return QueueRows(
        np.frombuffer(df["action"].astype(str).str.encode("ascii").str[:1].sum(), np.uint8).copy(),
        np.frombuffer(df["side"].astype(str).str.encode("ascii").str[:1].sum(), np.uint8).copy(),
        df["price"].to_numpy(np.float64),
        df["size"].to_numpy(np.float64),
        df[[f"bid_px_{i:02d}" for i in lv]].to_numpy(np.float64),
        df[[f"bid_sz_{i:02d}" for i in lv]].to_numpy(np.float64),
        df[[f"ask_px_{i:02d}" for i in lv]].to_numpy(np.float64),
        df[[f"ask_sz_{i:02d}" for i in lv]].to_numpy(np.float64),
    )


def _run(
    rows: QueueRows, start: int, side: Side, model: str
) -> tuple[float, np.ndarray, float, float]:
    """Rest QTY at the touch on row ``start``; return (ahead at join, cum fill per row, px,
    shares filled because the other side of the book reached our price)."""
    qm = QueueModel(QueueConfig(model=model))  # type: ignore[arg-type]
    px = float(rows.bid_px[start, 0] if side is Side.BUY else rows.ask_px[start, 0])
    b = (rows.bid_px[start], rows.bid_sz[start], rows.ask_px[start], rows.ask_sz[start])
    assert qm.join("o", side, px, QTY, *b) == []  # at the touch: never marketable
    ahead0 = qm.position("o").ahead
    w = rows.slice(start + 1, start + 1 + WINDOW)
    cum = np.zeros(len(w))
    crossed = 0.0
    for f in qm.advance(w):
        assert f.qty > 0 and f.px == px
        cum[f.row :] += f.qty
        if f.kind == "cross":
            opp = w.bid_px[f.row] if side is Side.BUY else w.ask_px[f.row]
            assert np.any(opp <= px + 1e-9) if side is Side.BUY else np.any(opp >= px - 1e-9)
            crossed += f.qty
        else:
            assert w.action[f.row] == ord("T")
    return ahead0, cum, px, crossed


def test_the_day_supports_passive_fills(frog_rows):
    """The file has trade rows: the passive model is allowed on it."""
    assert passive_fill_problem(frog_rows) == ""


@pytest.mark.parametrize("side", [Side.BUY, Side.SELL])
def test_fills_stay_within_what_the_prints_allow(frog_rows, side):
    """Conservative fills are at least the prints at our price beyond the queue ahead and, but
    for a book that moved through our price, at most the prints that could reach us; a print
    or a crossed book is behind every fill; the proportional model never fills later."""
    starts = np.linspace(100, len(frog_rows) - WINDOW - 2, 12).astype(int)
    total = 0.0
    for s in starts.tolist():
        ahead0, cons, px, crossed = _run(frog_rows, s, side, "conservative")
        _, prop, _, _ = _run(frog_rows, s, side, "proportional")
        w = frog_rows.slice(s + 1, s + 1 + WINDOW)
        other = ord("A") if side is Side.BUY else ord("B")  # the aggressor that hits us
        hits = (w.action == ord("T")) & ((w.side == other) | (w.side == ord("N")))
        at = hits & np.isclose(w.px, px, rtol=0, atol=1e-9)
        through = hits & ((w.px < px - 1e-9) if side is Side.BUY else (w.px > px + 1e-9))
        p_at, p_through = float(w.sz[at].sum()), float(w.sz[through].sum())
        assert cons[-1] >= min(QTY, max(0.0, p_at - ahead0)) - 1e-9
        assert cons[-1] - crossed <= min(QTY, p_at + p_through) + 1e-9
        assert np.all(prop >= cons - 1e-9) and prop[-1] <= QTY + 1e-9
        total += cons[-1]
    assert total > 0  # the day's prints do reach orders resting at the touch
