"""Queue model: known-answer books where the trade sizes decide exactly when we fill."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.core.queue import (
    PassiveFill,
    QueueConfig,
    QueueModel,
    QueueRows,
    passive_fill_problem,
)
from agent.errors import InternalViolation, ModelError
from agent.model import Side

L = 3
Levels = list[tuple[float, float]]


def book(levels: Levels) -> tuple[np.ndarray, np.ndarray]:
    px = np.full(L, np.nan)
    sz = np.zeros(L)
    for i, (p, s) in enumerate(levels):
        px[i], sz[i] = p, s
    return px, sz


def rows(*spec: tuple[str, str, float, float, Levels, Levels]) -> QueueRows:
    """Rows of (action, side, px, size, bids after, asks after)."""
    bp, bs, ap, asz = [], [], [], []
    for _, _, _, _, bids, asks in spec:
        p, s = book(bids)
        bp.append(p)
        bs.append(s)
        p, s = book(asks)
        ap.append(p)
        asz.append(s)
    return QueueRows(
        np.array([ord(a) for a, *_ in spec], dtype=np.uint8),
        np.array([ord(sd) for _, sd, *_ in spec], dtype=np.uint8),
        np.array([p for _, _, p, *_ in spec], dtype=np.float64),
        np.array([s for _, _, _, s, *_ in spec], dtype=np.float64),
        np.array(bp),
        np.array(bs),
        np.array(ap),
        np.array(asz),
    )


def join(
    qm: QueueModel, key: str, side: Side, px: float, qty: float, bids: Levels, asks: Levels
) -> list[PassiveFill]:
    bp, bs = book(bids)
    ap, asz = book(asks)
    return qm.join(key, side, px, qty, bp, bs, ap, asz)


ASKS = [(10.01, 100.0), (10.02, 100.0)]


def story() -> QueueRows:
    """Our buy 50 @ 10.00 joined behind 100 displayed; then joiners, a cancel and prints."""
    return rows(
        ("A", "B", 10.00, 50, [(10.00, 150), (9.99, 200)], ASKS),  # 0: 50 join behind us
        ("C", "B", 10.00, 60, [(10.00, 90), (9.99, 200)], ASKS),  # 1: 60 cancelled, no print
        ("T", "A", 10.00, 55, [(10.00, 90), (9.99, 200)], ASKS),  # 2: a seller prints 55
        ("C", "B", 10.00, 55, [(10.00, 35), (9.99, 200)], ASKS),  # 3: the book shows the print
        ("T", "A", 10.00, 20, [(10.00, 35), (9.99, 200)], ASKS),  # 4
        ("C", "B", 10.00, 20, [(10.00, 15), (9.99, 200)], ASKS),  # 5
        ("T", "A", 10.00, 40, [(10.00, 15), (9.99, 200)], ASKS),  # 6
        ("C", "B", 10.00, 15, [(9.99, 200)], ASKS),  # 7: level gone
        ("T", "A", 10.00, 30, [(9.99, 200)], ASKS),  # 8
    )


def fills_of(fills: list[PassiveFill]) -> list[tuple[int, float, str, bool]]:
    return [(f.row, f.qty, f.kind, f.done) for f in fills]


def test_conservative_known_answer():
    """No cancel is ahead of us: 100 ahead, shrunk only to the displayed 90 by the cancel;
    prints of 55 + 20 leave 15 ahead, the print of 40 fills 25, the print of 30 the last 25."""
    qm = QueueModel()
    assert join(qm, "o", Side.BUY, 10.00, 50, [(10.00, 100), (9.99, 200)], ASKS) == []
    assert qm.position("o").ahead == 100
    f = qm.advance(story())
    assert fills_of(f) == [(6, 25.0, "trade", False), (8, 25.0, "trade", True)]
    assert all(x.px == 10.00 for x in f) and "o" not in qm


def test_proportional_known_answer():
    """Uniform cancels (power 1): the cancel of 60 at 150 displayed (100 ahead, 50 behind) is
    2/3 ahead: 40 come off, 60 ahead; 55 printed leave 5; the print of 20 fills 15 and the
    print of 40 the remaining 35."""
    qm = QueueModel(QueueConfig(model="proportional", power=1.0))
    join(qm, "o", Side.BUY, 10.00, 50, [(10.00, 100), (9.99, 200)], ASKS)
    data = story()
    f = qm.advance(data)
    assert fills_of(f) == [(4, 15.0, "trade", False), (6, 35.0, "trade", True)]


def test_proportional_position_step_by_step():
    """After the cancel row 60 are ahead; the book's C row after a print is not a cancel."""
    qm = QueueModel(QueueConfig(model="proportional"))
    join(qm, "o", Side.BUY, 10.00, 50, [(10.00, 100), (9.99, 200)], ASKS)
    data = story()
    qm.advance(data.slice(0, 2))
    assert qm.position("o").ahead == pytest.approx(60.0)
    qm.advance(data.slice(2, 4))
    assert qm.position("o").ahead == pytest.approx(5.0)


@pytest.mark.parametrize(
    ("model", "power", "ahead"),
    [("conservative", 1.0, 100.0), ("proportional", 1.0, 80.0), ("proportional", 2.0, 76.0)],
)
def test_cancel_ahead_or_behind(model, power, ahead):
    """150 displayed, 100 ahead of us, 30 cancelled: the conservative model keeps us at 100;
    the proportional one puts p = f(50) / (f(50) + f(100)) of it behind us."""
    qm = QueueModel(QueueConfig(model=model, power=power))
    join(qm, "o", Side.BUY, 10.00, 10, [(10.00, 100)], ASKS)
    qm.advance(rows(("A", "B", 10.00, 50, [(10.00, 150)], ASKS)))
    qm.advance(rows(("C", "B", 10.00, 30, [(10.00, 120)], ASKS)))
    assert qm.position("o").ahead == pytest.approx(ahead)


def test_cancel_with_nothing_behind_us_is_ahead_in_both_models():
    """At the back of the queue every cancel is ahead of us."""
    for model in ("conservative", "proportional"):
        qm = QueueModel(QueueConfig(model=model))
        join(qm, "o", Side.SELL, 10.01, 10, [(10.00, 100)], [(10.01, 100)])
        qm.advance(rows(("C", "A", 10.01, 30, [(10.00, 100)], [(10.01, 70)])))
        assert qm.position("o").ahead == pytest.approx(70.0)


def test_print_by_an_aggressor_on_our_side_does_not_move_us():
    """A buyer lifting offers at our bid price (side B) never reaches our bid."""
    qm = QueueModel()
    join(qm, "o", Side.BUY, 10.00, 10, [(10.00, 5)], ASKS)
    assert qm.advance(rows(("T", "B", 10.00, 50, [(10.00, 5)], ASKS))) == []
    assert qm.position("o").ahead == 5.0


def test_trade_through_fills_up_to_the_print():
    """Sell 30 @ 10.01 behind 100: buys printed at 10.02 and 10.03 went through us: 20 then
    the last 10 fill, at our price; a print below our offer does nothing."""
    qm = QueueModel()
    bids = [(10.00, 100)]
    join(qm, "o", Side.SELL, 10.01, 30, bids, [(10.01, 100), (10.02, 50)])
    f = qm.advance(
        rows(
            ("T", "B", 10.00, 70, bids, [(10.01, 100), (10.02, 50)]),
            ("T", "B", 10.02, 20, bids, [(10.01, 100), (10.02, 30)]),
            ("T", "N", 10.03, 50, bids, [(10.01, 100), (10.03, 10)]),
        )
    )
    assert fills_of(f) == [(1, 20.0, "trade_through", False), (2, 10.0, "trade_through", True)]
    assert all(x.px == 10.01 for x in f)


def test_book_crossing_our_price_fills_once():
    """An offer at our bid fills us at our price for its size, and not again on the next rows
    while it stays; when it grows we take the growth."""
    qm = QueueModel()
    bids = [(10.00, 100)]
    join(qm, "o", Side.BUY, 10.00, 60, bids, ASKS)
    crossed = [(10.00, 30), (10.01, 100)]
    f = qm.advance(
        rows(
            ("A", "A", 10.00, 30, bids, crossed),
            ("A", "B", 9.99, 10, [*bids, (9.99, 10)], crossed),
            ("A", "A", 10.00, 20, bids, [(10.00, 50), (10.01, 100)]),
        )
    )
    assert fills_of(f) == [(0, 30.0, "cross", False), (2, 20.0, "cross", False)]
    assert qm.position("o").qty == 10.0


def test_marketable_on_arrival_takes_then_rests_first_in_a_new_level():
    """Buy 80 @ 10.01 against 50 offered there: 50 taken at 10.01, 30 rest at a price no one
    else shows (nothing ahead); the offer the feed still shows is not taken twice; the next
    sell print at 10.01 fills us."""
    qm = QueueModel()
    bids = [(10.00, 100)]
    f = join(qm, "o", Side.BUY, 10.01, 80, bids, [(10.01, 50), (10.02, 100)])
    assert fills_of(f) == [(-1, 50.0, "taker", False)] and f[0].px == 10.01
    assert qm.position("o").ahead == 0.0 and qm.position("o").qty == 30.0
    f = qm.advance(
        rows(
            ("A", "B", 9.98, 5, [*bids, (9.98, 5)], [(10.01, 50), (10.02, 100)]),
            ("T", "A", 10.01, 10, [*bids, (9.98, 5)], [(10.02, 100)]),
        )
    )
    assert fills_of(f) == [(1, 10.0, "trade", False)]


def test_fifo_among_our_own_orders_at_one_price():
    """Two of ours at 10.00 behind 100 displayed: a print of 130 fills the first (20) and
    then 10 of the second; nothing of a print is counted twice."""
    qm = QueueModel()
    bids = [(10.00, 100)]
    join(qm, "a", Side.BUY, 10.00, 20, bids, ASKS)
    join(qm, "b", Side.BUY, 10.00, 50, bids, ASKS)
    f = qm.advance(rows(("T", "A", 10.00, 130, bids, ASKS)))
    assert [(x.key, x.qty) for x in f] == [("a", 20.0), ("b", 10.0)]
    assert qm.position("b").ahead == 0.0 and qm.position("b").qty == 40.0


def test_price_deeper_than_the_book_is_unknown_until_shown():
    """A sell deeper than the displayed levels has an unknown queue (inf) until it shows."""
    qm = QueueModel()
    asks = [(10.01, 10), (10.02, 10), (10.03, 10)]
    join(qm, "o", Side.SELL, 10.20, 5, [(10.00, 1)], asks)
    assert math.isinf(qm.position("o").ahead)
    assert qm.advance(rows(("T", "A", 10.20, 10, [(10.00, 1)], asks))) == []  # not visible
    qm.advance(rows(("C", "A", 10.03, 10, [(10.00, 1)], [(10.01, 10), (10.02, 10), (10.20, 40)])))
    assert qm.position("o").ahead == 40.0


def test_reduce_keeps_priority_cancel_removes():
    """A smaller size keeps its place; a cancel takes the order out (no more fills)."""
    qm = QueueModel()
    bids = [(10.00, 10)]
    join(qm, "o", Side.BUY, 10.00, 50, bids, ASKS)
    qm.reduce("o", 20)
    f = qm.advance(rows(("T", "A", 10.00, 15, bids, ASKS)))
    assert fills_of(f) == [(0, 5.0, "trade", False)] and qm.position("o").qty == 15.0
    with pytest.raises(InternalViolation, match="loses priority"):
        qm.reduce("o", 30)
    assert qm.cancel("o") == 15.0 and qm.advance(rows(("T", "A", 10.00, 99, bids, ASKS))) == []


def test_clear_rows_keep_positions():
    """A clear (R) row says nothing about the queue."""
    qm = QueueModel()
    join(qm, "o", Side.BUY, 10.00, 5, [(10.00, 40)], ASKS)
    qm.advance(rows(("R", "N", math.nan, 0, [], [])))
    assert qm.position("o").ahead == 40.0


def test_data_without_trades_is_refused_with_a_reason():
    """No trade rows: no passive fills can be modelled, and the reason says so."""
    no_trades = rows(("A", "B", 10.00, 5, [(10.00, 5)], ASKS))
    assert "no trade rows" in passive_fill_problem(no_trades)
    assert passive_fill_problem(story()) == ""

    class Plain:
        symbol = "X"
        action = None

    with pytest.raises(ModelError, match="no event columns"):
        QueueRows.from_batch(Plain())


def test_join_refuses_bad_orders():
    """A duplicate key or a non-positive size is our bug."""
    qm = QueueModel()
    join(qm, "o", Side.BUY, 10.00, 5, [(10.00, 40)], ASKS)
    with pytest.raises(InternalViolation):
        join(qm, "o", Side.BUY, 10.00, 5, [(10.00, 40)], ASKS)
    with pytest.raises(InternalViolation):
        join(qm, "p", Side.BUY, 10.00, 0, [(10.00, 40)], ASKS)


def test_sweep_whose_book_shows_each_print_one_row_late_is_not_a_cancel():
    """Real XNAS files: each T row shows the book before its own print, the next row shows it.
    Prints of 100, 3 and 65 take 168 of the 268 ahead; the proportional model must not count
    the decreases that merely show those prints as cancels: exactly 100 stay ahead."""
    qm = QueueModel(QueueConfig(model="proportional"))
    join(qm, "o", Side.BUY, 31.43, 50, [(31.43, 268), (31.42, 100)], [(31.86, 356)])
    asks = [(31.86, 356)]
    qm.advance(
        rows(
            ("T", "A", 31.43, 100, [(31.43, 268), (31.42, 100)], asks),
            ("T", "A", 31.43, 3, [(31.43, 168), (31.42, 100)], asks),
            ("T", "A", 31.43, 65, [(31.43, 165), (31.42, 100)], asks),
            ("A", "B", 31.40, 7, [(31.43, 100), (31.42, 100), (31.40, 7)], asks),
        )
    )
    assert qm.position("o").ahead == pytest.approx(100.0)
