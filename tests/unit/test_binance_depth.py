"""Binance depth streams: the documented sync procedure, and the real recorded sessions."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feeds.binance_depth import (
    BinanceBook,
    DepthDiff,
    DepthSnapshot,
    decode_message,
    rebuild_recording,
)
from feeds.errors import SequenceGap
from tests.conftest import SHARED_DATA, require

BWS = SHARED_DATA / "binance-ws"


def snap(uid: int = 100) -> DepthSnapshot:
    return DepthSnapshot(uid, [("10.0", "1"), ("9.9", "2")], [("10.1", "3"), ("10.2", "4")])


def diff(U: int, u: int, b=(), a=(), pu=None) -> DepthDiff:
    return DepthDiff(U, u, list(b), list(a), pu=pu)


def test_spot_procedure_stale_straddle_chain_and_gap():
    book = BinanceBook("X")
    assert book.apply_diff(diff(90, 95)) == "no_snapshot"
    book.apply_snapshot(snap(100))
    assert book.apply_diff(diff(90, 100)) == "stale"
    other = BinanceBook("X")
    other.apply_snapshot(snap(100))
    with pytest.raises(SequenceGap):
        other.apply_diff(diff(102, 105))  # does not straddle 101
    assert book.apply_diff(diff(99, 103, b=[("10.05", "5")])) == "applied"
    assert book.apply_diff(diff(104, 104, a=[("10.1", "0")])) == "applied"  # qty 0 removes
    bp, _bs, ap, az = book.top()
    assert bp[:3].tolist()[:2] == [10.05, 10.0] and ap[0] == 10.2 and np.isnan(ap[1])
    assert az[1] == 0 and not book.is_crossed()
    with pytest.raises(SequenceGap):
        book.apply_diff(diff(106, 107))  # skipped 105


def test_futures_chain_on_pu():
    book = BinanceBook("X", futures=True)
    book.apply_snapshot(snap(100))
    assert book.apply_diff(diff(95, 101, pu=94)) == "applied"  # U <= 100 <= u
    assert book.apply_diff(diff(102, 110, pu=101)) == "applied"
    with pytest.raises(SequenceGap):
        book.apply_diff(diff(111, 112, pu=109))


def test_futures_first_diff_chains_on_pu_after_a_boundary_snapshot():
    """A snapshot taken right after event u=100 is followed by a diff with pu=100 and U above
    101 (futures ids skip): that diff follows the snapshot exactly; a later one does not."""
    book = BinanceBook("X", futures=True)
    book.apply_snapshot(snap(100))
    assert book.apply_diff(diff(155, 160, pu=100)) == "applied"
    late = BinanceBook("X", futures=True)
    late.apply_snapshot(snap(100))
    with pytest.raises(SequenceGap):
        late.apply_diff(diff(155, 160, pu=120))


def test_decode_skips_other_streams_and_never_raises_on_garbage():
    ticker = b'{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT","b":"1","B":"1"}}'
    assert decode_message(ticker) == (None, "other_stream")
    # A trade is used now (issue 18 item 5); one without price/quantity is malformed.
    assert decode_message(b'{"stream":"btcusdt@trade","data":{"e":"trade"}}') == (
        None,
        "bad_schema",
    )
    ev, r = decode_message(b'{"stream":"x@depth@100ms","data":{"U":1,"u":2,"b":[],"a":[]}}')
    assert r == "" and isinstance(ev, DepthDiff)
    assert decode_message(b"{nope")[1] == "bad_json"


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_garbage_never_raises(raw):
    ev, reason = decode_message(raw)
    assert (ev is None) != (reason == "")


def independent_count(paths):
    """Count by hand the diffs the procedure must apply: depth events after the snapshot's id."""
    snap_id, diffs = None, []
    for p in paths:
        with gzip.open(p, "rt") as f:
            for line in f:
                msg = json.loads(line.split(" ", 1)[1])
                if "lastUpdateId" in msg and snap_id is None:
                    snap_id = msg["lastUpdateId"]
                elif "@depth" in msg.get("stream", ""):
                    diffs.append(msg["data"]["u"])
    return sum(u > snap_id for u in diffs)


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("files", "futures"),
    [
        (["spot__btcusdt_20240808.gz", "spot__btcusdt_20240809.gz"], False),
        (["usdm__btcusdt_20240808.gz"], True),
    ],
)
def test_recorded_session_rebuilds_without_gap_or_crossing(files, futures):
    paths = [require(BWS / f) for f in files]
    applied = 0
    last_ts = 0
    for _reason, batch in rebuild_recording(paths, futures=futures):  # raises on any gap
        if batch is None:
            continue
        applied += 1
        assert batch.bid_px[0, 0] < batch.ask_px[0, 0], "crossed book"
        assert np.all(np.diff(batch.bid_px[0]) < 0) and np.all(np.diff(batch.ask_px[0]) > 0)
        assert batch.ts_event_ns[0] >= last_ts
        last_ts = int(batch.ts_event_ns[0])
    assert applied == independent_count(paths) > 1000
