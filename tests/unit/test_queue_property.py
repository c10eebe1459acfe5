"""Queue model, property-based: random stories at one price level (prints, joiners, cancels),
with the book showing each print one row later as real XNAS files do."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.queue import QueueConfig, QueueModel, QueueRows
from agent.model import Side

PX = 10.00
ASK = 10.01

event = st.tuples(st.sampled_from(["print", "add", "cancel"]), st.integers(1, 80))


def build(level0: float, events: list[tuple[str, int]]) -> tuple[QueueRows, float]:
    """Rows for the story and the total printed at our price by sellers."""
    action: list[str] = []
    side: list[str] = []
    px: list[float] = []
    sz: list[float] = []
    lv: list[float] = []

    def row(a: str, sd: str, p: float, z: float) -> None:
        action.append(a)
        side.append(sd)
        px.append(p)
        sz.append(z)

    level = level0
    printed = 0.0
    pending = 0.0  # a print's effect, shown on the next row
    for kind, n in events:
        if pending:
            level -= pending
            pending = 0.0
        if kind == "print":
            s = float(min(n, level)) if level > 0 else 0.0
            if s <= 0:
                continue
            row("T", "A", PX, s)
            printed += s
            pending = s
        elif kind == "add":
            level += n
            row("A", "B", PX, float(n))
        else:
            c = float(min(n, level))
            level -= c
            row("C", "B", PX, c)
        lv.append(level)
    if pending:
        level -= pending
        row("A", "B", 9.99, 1.0)
        lv.append(level)
    n = len(action)
    bid_px = np.column_stack([np.where(np.array(lv) > 0, PX, np.nan), np.full(n, 9.99)])
    bid_sz = np.column_stack([np.array(lv, dtype=float), np.full(n, 500.0)])
    rows = QueueRows(
        np.array([ord(a) for a in action], dtype=np.uint8),
        np.array([ord(s) for s in side], dtype=np.uint8),
        np.array(px, dtype=np.float64),
        np.array(sz, dtype=np.float64),
        bid_px if n else np.empty((0, 2)),
        bid_sz if n else np.empty((0, 2)),
        np.tile([ASK, 10.02], (n, 1)),
        np.full((n, 2), 100.0),
    )
    return rows, printed


def cumulative(model: str, level0: float, qty: float, rows: QueueRows) -> np.ndarray:
    qm = QueueModel(QueueConfig(model=model))  # type: ignore[arg-type]
    b = np.array([PX, 9.99]), np.array([level0, 500.0]), np.array([ASK, 10.02]), np.full(2, 100.0)
    assert qm.join("o", Side.BUY, PX, qty, *b) == []
    cum = np.zeros(len(rows))
    for f in qm.advance(rows):
        assert f.qty > 0 and f.px == PX and f.kind == "trade"
        assert rows.action[f.row] == ord("T")
        cum[f.row :] += f.qty
    pos = qm.position("o")
    if pos is not None:
        assert pos.ahead >= 0
    return cum


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 300), st.integers(1, 200), st.lists(event, max_size=40))
def test_fills_are_bounded_and_proportional_never_later(level0, qty, events):
    """Fills never exceed the order or the prints; the conservative model fills at least the
    prints beyond the initial queue; the proportional model is never behind it."""
    rows, printed = build(float(level0), events)
    cons = cumulative("conservative", level0, qty, rows)
    prop = cumulative("proportional", level0, qty, rows)
    total = cons[-1] if len(cons) else 0.0
    assert min(qty, max(0.0, printed - level0)) - 1e-9 <= total <= min(qty, printed) + 1e-9
    assert np.all(prop >= cons - 1e-9) and (prop[-1] if len(prop) else 0.0) <= qty + 1e-9


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 300), st.integers(1, 200), st.lists(event, max_size=40))
def test_without_cancels_both_models_fill_exactly_the_prints_beyond_the_queue(level0, qty, events):
    """Prints and joiners only: both models give exactly min(qty, printed - ahead0), row by
    row; the book's one-row-late display of each print is never taken for a cancel."""
    events = [e for e in events if e[0] != "cancel"]
    rows, _ = build(float(level0), events)
    cons = cumulative("conservative", level0, qty, rows)
    prop = cumulative("proportional", level0, qty, rows)
    printed = np.cumsum(np.where(rows.action == ord("T"), rows.sz, 0.0))
    expected = np.clip(printed - level0, 0.0, qty)
    assert np.allclose(cons, expected) and np.allclose(prop, expected)
