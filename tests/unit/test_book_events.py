"""Event columns of BookBatch (action, ev_side, ev_px, ev_sz): model, readers, validation."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zstandard

from feeds.model import EV_TRADE, N_LEVELS, SIDE_ASK, SIDE_BID, SIDE_NONE, BookBatch
from feeds.readers import read_lobster, read_mbp10
from feeds.validate import Reason, validate_batch, validate_row
from tests.conftest import SHARED_DATA, require

REPO = Path(__file__).resolve().parents[2]
FROG_DAY = SHARED_DATA / "databento-mbp10" / "FROG" / "FROG_2025-04-03 00_00_00+00_00.csv"
LOBSTER5 = SHARED_DATA / "lobster" / "LOBSTER_SampleFile_AMZN_2012-06-21_5.zip"
DBN = SHARED_DATA / "dbn"


def book(n: int, *, events: bool = True) -> BookBatch:
    k = np.arange(N_LEVELS)
    bid = np.tile(100.00 - 0.01 * k, (n, 1))
    ask = np.tile(100.02 + 0.01 * k, (n, 1))
    sz = np.full((n, N_LEVELS), 100.0)
    ts = 1_000 + 10 * np.arange(n, dtype=np.int64)
    if not events:
        return BookBatch("T", ts, ts.copy(), bid, sz, ask, sz.copy())
    action = np.array([ord("AT"[i % 2]) for i in range(n)], np.uint8)
    side = np.full(n, SIDE_BID, np.uint8)
    return BookBatch(
        "T", ts, ts.copy(), bid, sz, ask, sz.copy(), action, side,
        np.full(n, 100.0), np.arange(1, n + 1, dtype=np.float64),
    )  # fmt: skip


def test_event_columns_default_to_none_and_follow_slice_take_concat() -> None:
    """Old seven-field batches stay valid; slice/take/concat/empty carry the event columns."""
    plain = book(3, events=False)
    assert plain.action is None and plain.ev_sz is None and not plain.has_events
    assert plain.is_trade.tolist() == [False] * 3
    b = book(6)
    s = b.slice(1, 4)
    assert s.action is not None and bytes(s.action) == b"TAT"
    assert s.ev_sz is not None and s.ev_sz.tolist() == [2.0, 3.0, 4.0]
    t = b.take(b.is_trade)
    assert t.ev_sz is not None and t.ev_sz.tolist() == [2.0, 4.0, 6.0]
    c = BookBatch.concat([b, plain])
    assert c.action is not None and c.ev_side is not None and c.ev_px is not None
    assert len(c.action) == 9
    assert c.action[6:].tolist() == [0, 0, 0]  # unknown events for the batch without them
    assert c.ev_side[6:].tolist() == [SIDE_NONE] * 3 and np.isnan(c.ev_px[6:]).all()
    assert BookBatch.concat([plain, plain]).action is None
    e = BookBatch.empty("T", events=True)
    assert e.action is not None and e.action.dtype == np.uint8 and len(e) == 0
    assert BookBatch.empty("T").action is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("action", ord("X")),
        ("ev_side", ord("Q")),
        ("ev_px", np.inf),
        ("ev_sz", -1.0),
        ("ev_sz", np.nan),
        ("ev_sz", 0.0),  # a trade of size 0
    ],
)
def test_bad_event_is_rejected_by_batch_and_row_checks(field: str, value: float) -> None:
    """A malformed event field rejects the row as BAD_EVENT in both validators."""
    b = book(2)
    getattr(b, field)[1] = value
    res = validate_batch(b, None)
    assert res.reason.tolist() == [0, Reason.BAD_EVENT]
    assert res.valid.ev_sz is not None and len(res.valid.ev_sz) == 1
    ev = (int(b.action[1]), int(b.ev_side[1]), float(b.ev_px[1]), float(b.ev_sz[1]))  # type: ignore[index]
    r = validate_row(
        b.bid_px[1].tolist(), b.bid_sz[1].tolist(), b.ask_px[1].tolist(), b.ask_sz[1].tolist(),
        int(b.ts_event_ns[1]), None, ev,
    )  # fmt: skip
    assert r is Reason.BAD_EVENT


def test_partial_event_columns_are_a_producer_bug() -> None:
    """A batch with only some event columns is refused where it is made (ValueError naming
    what is missing): a slice or concat of it could not keep them."""
    b = book(2, events=False)
    with pytest.raises(ValueError, match="all four or none; missing ev_side, ev_px, ev_sz"):
        BookBatch(
            "T", b.ts_event_ns, b.ts_recv_ns, b.bid_px, b.bid_sz, b.ask_px, b.ask_sz,
            np.zeros(2, np.uint8),
        )  # fmt: skip
    e = book(2)
    with pytest.raises(ValueError, match="missing ev_sz"):
        BookBatch(
            "T", e.ts_event_ns, e.ts_recv_ns, e.bid_px, e.bid_sz, e.ask_px, e.ask_sz,
            e.action, e.ev_side, e.ev_px,
        )  # fmt: skip


@pytest.mark.realdata
def test_frog_csv_event_columns_equal_the_raw_text() -> None:
    """Databento CSV: action, side, price and size per row equal the file's cells."""
    path = require(FROG_DAY)
    whole = BookBatch.concat(list(read_mbp10(path)))
    raw = pd.read_csv(path, usecols=["action", "side", "price", "size"], dtype=str)
    assert whole.action is not None and whole.ev_side is not None
    assert whole.ev_px is not None and whole.ev_sz is not None
    assert bytes(whole.action).decode() == "".join(raw["action"])
    assert bytes(whole.ev_side).decode() == "".join(raw["side"])
    np.testing.assert_array_equal(whole.ev_px, raw["price"].astype(float).to_numpy())
    np.testing.assert_array_equal(whole.ev_sz, raw["size"].astype(float).to_numpy())
    assert int(whole.is_trade.sum()) == int((raw["action"] == "T").sum()) > 0
    assert validate_batch(whole, None).n_invalid == 0


def test_shipped_replay_data_has_trades() -> None:
    """The synthetic sample carries event columns; its trade rows are valid with size > 0."""
    whole = BookBatch.concat(
        list(read_mbp10(REPO / "replay_data" / "SYNA_2025-06-02.mbp-10.csv.gz"))
    )
    assert whole.ev_sz is not None
    trades = whole.take(whole.is_trade)
    assert len(trades) > 100
    assert trades.ev_sz is not None and (trades.ev_sz > 0).all()
    assert validate_batch(whole, None).n_invalid == 0


@pytest.mark.realdata
@pytest.mark.parametrize(
    "name",
    [
        "test_data.mbp-10.v3.dbn.zst",
        "XNAS.ITCH.test_data.mbp-10.dbn.zst",
        "LIVE.test_data.live.dbn.zst",
    ],
)
def test_dbn_event_columns_match_the_reference_decoder(name: str) -> None:
    """DBN: action, side, price (1e-9 fixed point), size agree with databento_dbn's records."""
    import databento_dbn as dbn

    path = require(DBN / name)
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(path.read_bytes())).read()
    recs = [
        r
        for r in dbn.DBNDecoder().write_and_decode(raw)[1:]
        if type(r).__name__.startswith("MBP10")
    ]
    whole = BookBatch.concat(list(read_mbp10(path)))
    assert whole.action is not None and whole.ev_side is not None
    assert whole.ev_px is not None and whole.ev_sz is not None
    assert len(recs) == len(whole) > 0
    for i, r in enumerate(recs):
        assert chr(whole.action[i]) == str(r.action)
        assert chr(whole.ev_side[i]) == str(r.side)
        assert whole.ev_px[i] == pytest.approx(r.price * 1e-9, abs=1e-12)
        assert whole.ev_sz[i] == r.size


@pytest.mark.realdata
def test_lobster_executions_are_trades_with_the_aggressor_side() -> None:
    """LOBSTER: types 4/5 are trades with the message's size and price; a resting buy order
    executed (direction 1) is a sell-aggressor trade (A), a resting sell (-1) a buy one (B)."""
    path = require(LOBSTER5)
    whole = BookBatch.concat(list(read_lobster(path)))
    with zipfile.ZipFile(path) as z:
        member = next(m for m in z.namelist() if "_message_" in m)
        msg = pd.read_csv(z.open(member), header=None).to_numpy(np.float64)
    assert whole.action is not None and whole.ev_side is not None
    assert whole.ev_px is not None and whole.ev_sz is not None
    ex = np.isin(msg[:, 1], (4, 5))
    assert ex.sum() > 1000
    np.testing.assert_array_equal(whole.action == EV_TRADE, ex)
    np.testing.assert_array_equal(whole.ev_sz[ex], msg[ex, 3])
    np.testing.assert_allclose(whole.ev_px[ex], msg[ex, 4] / 1e4, rtol=0, atol=1e-9)
    expect = np.where(msg[ex, 5] > 0, SIDE_ASK, SIDE_BID)
    np.testing.assert_array_equal(whole.ev_side[ex], expect)
    adds = msg[:, 1] == 1
    np.testing.assert_array_equal(
        whole.ev_side[adds], np.where(msg[adds, 5] > 0, SIDE_BID, SIDE_ASK)
    )
    assert validate_batch(whole, None).counts.get(Reason.BAD_EVENT, 0) == 0
