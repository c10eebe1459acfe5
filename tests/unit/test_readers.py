"""Readers: real Databento CSV/DBN and LOBSTER files, hand-made fixtures, errors."""

from __future__ import annotations

import gzip
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zstandard

from feeds.errors import FeedDataError
from feeds.model import N_LEVELS, BookBatch
from feeds.readers import read_lobster, read_mbp10
from tests.conftest import SHARED_DATA

DATA = SHARED_DATA
FIXTURES = Path(__file__).resolve().parents[1] / "data"
MBP = DATA / "databento-mbp10"
DBN = DATA / "dbn"
FROG_DAY = MBP / "FROG" / "FROG_2025-04-03 00_00_00+00_00.csv"
AAPL = MBP / "AAPL" / "AAPL_2024-10-21_premarket_5000rows.csv"
LOBSTER5 = DATA / "lobster" / "LOBSTER_SampleFile_AMZN_2012-06-21_5.zip"
LOBSTER1 = DATA / "lobster" / "LOBSTER_SampleFile_AMZN_2012-06-21_1.zip"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not available: {path} (../shared/data absent; see its README)")
    return path


def ns(text: str) -> int:
    return int(pd.Timestamp(text).as_unit("ns").value)


def read_all(path: Path, **kw: object) -> list[BookBatch]:
    return list(read_mbp10(path, **kw))  # type: ignore[arg-type]


def raw_row(path: Path, i: int) -> dict[str, str]:
    """Row ``i`` of a CSV as raw text cells (header de-duplicated by position)."""
    with open(path) as f:
        header = f.readline().strip().split(",")
        for _ in range(i):
            f.readline()
        cells = f.readline().strip().split(",")
    return dict(zip(header[::-1], cells[::-1], strict=True))  # first duplicate wins


# ----------------------------------------------------------------------------- Databento CSV


@pytest.mark.realdata
def test_frog_full_day_matches_raw_text() -> None:
    """The FROG day (duplicate ts_event header, +00:00) reads whole, values equal the text."""
    path = need(FROG_DAY)
    batches = read_all(path)
    whole = BookBatch.concat(batches)
    assert {b.symbol for b in batches} == {"FROG"}
    assert len(whole) == 33_286
    for i in (0, 1, 20_000, 33_285):
        raw = raw_row(path, i)
        assert whole.ts_event_ns[i] == ns(raw["ts_event"])
        assert whole.ts_recv_ns[i] == whole.ts_event_ns[i]  # no ts_recv column
        for k in range(N_LEVELS):
            assert whole.bid_px[i, k] == float(raw[f"bid_px_{k:02d}"])
            assert whole.ask_px[i, k] == float(raw[f"ask_px_{k:02d}"])
            assert whole.bid_sz[i, k] == float(raw[f"bid_sz_{k:02d}"])
            assert whole.ask_sz[i, k] == float(raw[f"ask_sz_{k:02d}"])
    assert ns("2025-04-03 13:30:00+00:00") <= whole.ts_event_ns[0]
    assert whole.ts_event_ns[-1] < ns("2025-04-03 20:00:00+00:00")


@pytest.mark.realdata
def test_frog_chunks_concatenate_to_the_single_read() -> None:
    """Chunked reading yields the same rows as one chunk, each chunk at most chunk_rows."""
    path = need(FROG_DAY)
    (one,) = read_all(path, chunk_rows=10**9)
    parts = read_all(path, chunk_rows=7_000)
    assert max(len(b) for b in parts) <= 7_000
    assert len(parts) >= 5
    joined = BookBatch.concat(parts)
    np.testing.assert_array_equal(joined.ts_event_ns, one.ts_event_ns)
    np.testing.assert_array_equal(joined.ask_px, one.ask_px)


@pytest.mark.realdata
def test_aapl_has_distinct_ts_recv_and_z_suffix() -> None:
    """The AAPL file's ts_recv ('Z' suffix) is read separately from ts_event."""
    path = need(AAPL)
    (batch,) = read_all(path)
    raw = raw_row(path, 0)
    assert len(batch) == 5_000
    assert batch.ts_recv_ns[0] == ns("2024-10-21T11:54:29.221230963Z") == ns(raw["ts_recv"])
    assert batch.ts_event_ns[0] == ns("2024-10-21T11:54:29.221064336Z")
    assert batch.bid_px[0, 0] == 233.67
    assert batch.ask_px[0, 9] == 234.13
    assert batch.ask_sz[0, 9] == 400


@pytest.mark.realdata
@pytest.mark.parametrize("ticker", ["CRWV", "FROG", "SOUN"])
def test_samples_read_five_rows(ticker: str) -> None:
    """Each 5-row sample yields its symbol with the first row's best bid/ask."""
    path = need(MBP / "samples" / f"{ticker}_sample.csv")
    (batch,) = read_all(path)
    raw = raw_row(path, 0)
    assert batch.symbol == ticker
    assert len(batch) == 5
    assert batch.bid_px[0, 0] == float(raw["bid_px_00"])
    assert batch.ask_sz[0, 0] == float(raw["ask_sz_00"])


@pytest.mark.realdata
@pytest.mark.parametrize("suffix", [".csv.gz", ".csv.zst"])
def test_compressed_csv_equals_plain(tmp_path: Path, suffix: str) -> None:
    """Gzip and zstd copies of a sample read exactly like the plain file."""
    src = need(MBP / "samples" / "SOUN_sample.csv")
    dst = tmp_path / f"SOUN_sample{suffix}"
    data = src.read_bytes()
    dst.write_bytes(gzip.compress(data) if suffix.endswith("gz") else zstandard.compress(data))
    (a,) = read_all(src)
    (b,) = read_all(dst)
    np.testing.assert_array_equal(a.bid_px, b.bid_px)
    np.testing.assert_array_equal(a.ts_event_ns, b.ts_event_ns)


def test_two_symbols_split_and_filter() -> None:
    """Interleaved symbols give one batch each per chunk; ``symbol=`` keeps only that one."""
    path = FIXTURES / "mbp10_two_symbols.csv"
    batches = read_all(path)
    assert [(b.symbol, len(b)) for b in batches] == [("AAA", 4), ("BBB", 2)]
    bbb = read_all(path, symbol="BBB")
    assert [b.symbol for b in bbb] == ["BBB"]
    assert bbb[0].bid_px[0, 0] == 20.00
    assert read_all(path, symbol="ZZZ") == []
    # chunk_rows bounds every batch; each symbol's rows stay in file order
    small = read_all(path, chunk_rows=2)
    assert max(len(b) for b in small) <= 2
    for sym, whole in (("AAA", batches[0]), ("BBB", batches[1])):
        joined = BookBatch.concat([b for b in small if b.symbol == sym])
        np.testing.assert_array_equal(joined.ts_event_ns, whole.ts_event_ns)


def test_empty_levels_become_nan_and_zero() -> None:
    """Empty price cells read as NaN with size 0 (trailing ask levels of BBB)."""
    (b,) = read_all(FIXTURES / "mbp10_two_symbols.csv", symbol="BBB")
    assert np.isnan(b.ask_px[:, 8:]).all()
    assert (b.ask_sz[:, 8:] == 0).all()
    assert np.isfinite(b.ask_px[:, :8]).all()


def test_duplicate_ts_event_header_gives_equal_timestamps() -> None:
    """Without ts_recv, ts_recv_ns equals ts_event_ns (parsed from '+00:00' text)."""
    (b, _) = read_all(FIXTURES / "mbp10_two_symbols.csv")
    assert b.ts_event_ns[0] == ns("2025-04-14 13:30:00.001+00:00")
    np.testing.assert_array_equal(b.ts_recv_ns, b.ts_event_ns)


# ----------------------------------------------------------------------------------- errors


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    """A missing file raises FeedDataError naming it."""
    missing = tmp_path / "nope.csv"
    with pytest.raises(FeedDataError, match=r"nope\.csv.*no such file"):
        read_mbp10(missing)


def test_unknown_suffix_is_rejected(tmp_path: Path) -> None:
    """A file with an unsupported suffix raises FeedDataError listing the known ones."""
    p = tmp_path / "book.parquet"
    p.write_bytes(b"x")
    with pytest.raises(FeedDataError, match=r"book\.parquet.*unknown file type"):
        read_mbp10(p)


def test_missing_columns_are_named() -> None:
    """A header without the level-9 columns raises naming them."""
    with pytest.raises(FeedDataError, match=r"missing columns: bid_px_09"):
        read_mbp10(FIXTURES / "mbp10_missing_columns.csv")


def test_empty_file_is_rejected(tmp_path: Path) -> None:
    """An empty file raises FeedDataError (no header)."""
    p = tmp_path / "empty.csv"
    p.write_text("")
    with pytest.raises(FeedDataError, match="empty"):
        read_mbp10(p)


def _corrupt(tmp_path: Path, name: str, edits: dict[int, str]) -> Path:
    """Copy the bad-rows fixture with some data lines replaced (line 1 = first data row)."""
    lines = (FIXTURES / "mbp10_bad_rows.csv").read_text().splitlines()
    for i, text in edits.items():
        lines[i] = text
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return p


def test_malformed_rows_are_poisoned_not_fatal(tmp_path: Path) -> None:
    """Garbage timestamps/numbers and short lines do not raise: the rows come out invalid.

    A bad timestamp carries the previous time and NaN sizes (NON_FINITE), a garbage price is
    NaN (SIZE_WITHOUT_PRICE). A truncated line has no symbol and belongs to no feed: it is
    dropped (the one uncounted loss, with too-long lines). Good rows are unaffected.
    """
    from feeds.validate import Reason, validate_batch

    good = (FIXTURES / "mbp10_bad_rows.csv").read_text().splitlines()[1]
    cells = good.split(",")
    bad_px = cells.copy()
    bad_px[13] = "abc"  # bid_px_00
    p = _corrupt(
        tmp_path,
        "malformed.csv",
        {
            2: "garbage," + good.split(",", 1)[1],
            3: ",".join(bad_px),
            4: ",".join(cells[:20]),
        },
    )
    (b,) = read_all(p)
    assert len(b) == 11
    res = validate_batch(b, None)
    assert [Reason(int(r)) for r in res.reason[:4]] == [
        Reason.OK,
        Reason.NON_FINITE,
        Reason.SIZE_WITHOUT_PRICE,
        Reason.CROSSED,
    ]
    assert b.ts_recv_ns[1] == b.ts_recv_ns[0]  # carried forward, not a fake jump


def test_not_dbn_signature(tmp_path: Path) -> None:
    """A .dbn file without the DBN signature raises FeedDataError."""
    p = tmp_path / "x.dbn"
    p.write_bytes(b"not a dbn file at all")
    with pytest.raises(FeedDataError, match="DBN"):
        read_all(p)


# ------------------------------------------------------------------------------------- DBN


def _decoded(path: Path) -> list[object]:
    import databento_dbn as dbn

    raw = path.read_bytes()
    if path.suffix == ".zst":
        raw = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    return [r for r in dbn.DBNDecoder().write_and_decode(raw)[1:] if isinstance(r, dbn.MBP10Msg)]


@pytest.mark.realdata
@pytest.mark.parametrize(
    "name",
    [
        "test_data.mbp-10.dbn",
        "test_data.mbp-10.v1.dbn.zst",
        "test_data.mbp-10.v2.dbn.zst",
        "test_data.mbp-10.v3.dbn.zst",
        "GLBX.MDP3.test_data.mbp-10.dbn.zst",
        "XNAS.ITCH.test_data.mbp-10.dbn.zst",
        "LIVE.test_data.live.dbn.zst",
    ],
)
def test_dbn_matches_the_reference_decoder(name: str) -> None:
    """Our zero-copy MBP-10 view agrees with databento_dbn's record objects, field by field."""
    path = need(DBN / name)
    recs = _decoded(path)
    batches = read_all(path)
    whole = BookBatch.concat(batches)
    assert len(whole) == len(recs) > 0
    undef = np.iinfo(np.int64).max
    for i, r in enumerate(recs):
        assert whole.ts_event_ns[i] == r.ts_event  # type: ignore[attr-defined]
        assert whole.ts_recv_ns[i] == r.ts_recv  # type: ignore[attr-defined]
        for k in range(N_LEVELS):
            lv = r.levels[k]  # type: ignore[attr-defined]
            for px, ours in ((lv.bid_px, whole.bid_px[i, k]), (lv.ask_px, whole.ask_px[i, k])):
                if px == undef:
                    assert np.isnan(ours)
                else:
                    assert ours == pytest.approx(px * 1e-9, abs=1e-12)
            assert whole.bid_sz[i, k] == lv.bid_sz
            assert whole.ask_sz[i, k] == lv.ask_sz


@pytest.mark.realdata
def test_dbn_symbols_and_values() -> None:
    """ESH1 from the metadata symbology; first record's best bid 3720.25 (1e-9 fixed point)."""
    (b,) = read_all(need(DBN / "test_data.mbp-10.v1.dbn.zst"))
    assert b.symbol == "ESH1"
    assert len(b) == 2
    assert b.bid_px[0, 0] == pytest.approx(3720.25)
    assert b.ask_px[0, 0] == pytest.approx(3720.50)
    assert b.ts_event_ns[0] == 1_609_160_400_000_429_831
    assert b.ts_recv_ns[0] == 1_609_160_400_000_704_060


@pytest.mark.realdata
def test_dbn_undefined_levels_are_empty() -> None:
    """XNAS NVDA records with UNDEF_PRICE levels read as NaN price, size 0."""
    (b,) = read_all(need(DBN / "XNAS.ITCH.test_data.mbp-10.dbn.zst"))
    assert b.symbol == "NVDA"
    assert b.bid_px[0, 0] == pytest.approx(502.0)
    assert np.isnan(b.ask_px[0]).all()
    assert (b.ask_sz[0] == 0).all()


@pytest.mark.realdata
def test_dbn_live_mixed_schema_uses_symbol_mapping_records() -> None:
    """The mixed live session yields only its MBP-10 records, named from SymbolMappingMsg."""
    batches = read_all(need(DBN / "LIVE.test_data.live.dbn.zst"))
    assert batches
    assert all(not b.symbol.isdigit() for b in batches)
    assert read_all(DBN / "LIVE.test_data.live.dbn.zst", symbol="NOPE") == []


@pytest.mark.realdata
def test_dbn_other_schema_is_rejected() -> None:
    """A DBN file of another schema (MBO) is a FeedDataError, not an empty read."""
    src = need(DBN / "test_data.mbo.v3.dbn.zst")
    with pytest.raises(FeedDataError, match="schema"):
        read_all(src)


@pytest.mark.realdata
def test_dbn_chunking(tmp_path: Path) -> None:
    """chunk_rows splits DBN records too."""
    src = need(DBN / "GLBX.MDP3.test_data.mbp-10.dbn.zst")
    assert [len(b) for b in read_all(src, chunk_rows=3)] == [3, 1]


# --------------------------------------------------------------------------------- LOBSTER


@pytest.mark.realdata
def test_lobster_5_levels_from_zip() -> None:
    """LOBSTER zip: prices /10000, 5 levels padded to 10, ET seconds-after-midnight to UTC."""
    path = need(LOBSTER5)
    batches = list(read_lobster(path))
    whole = BookBatch.concat(batches)
    with zipfile.ZipFile(path) as z:
        book = z.read("AMZN_2012-06-21_34200000_57600000_orderbook_5.csv").decode().splitlines()
    first = [float(x) for x in book[0].split(",")]
    assert whole.symbol == "AMZN"
    assert len(whole) == len(book)
    # 34200.017459617 s after midnight EDT (UTC-4) on 2012-06-21
    assert whole.ts_event_ns[0] == ns("2012-06-21T13:30:00.017459617Z")
    assert whole.ask_px[0, 0] == pytest.approx(first[0] / 1e4)
    assert whole.ask_sz[0, 0] == first[1]
    assert whole.bid_px[0, 0] == pytest.approx(first[2] / 1e4)
    assert whole.bid_sz[0, 4] == first[19]
    assert np.isnan(whole.bid_px[:, 5:]).all()
    assert (whole.ask_sz[:, 5:] == 0).all()


@pytest.mark.realdata
def test_lobster_members_and_sentinels(tmp_path: Path) -> None:
    """Explicit member names work; +-9999999999 sentinels become empty levels."""
    path = need(LOBSTER1)
    book = "AMZN_2012-06-21_34200000_57600000_orderbook_1.csv"
    msg = "AMZN_2012-06-21_34200000_57600000_message_1.csv"
    a = BookBatch.concat(list(read_lobster(path / book, msg, "AMZN", "2012-06-21")))
    b = BookBatch.concat(list(read_lobster(path)))
    np.testing.assert_array_equal(a.ts_event_ns, b.ts_event_ns)
    assert np.isnan(a.bid_px[:, 1:]).all()
    # sentinel rows written by hand (LOBSTER marks empty levels with +-9999999999, size 0)
    ob = tmp_path / "XYZ_2012-06-21_0_1_orderbook_1.csv"
    ms = tmp_path / "XYZ_2012-06-21_0_1_message_1.csv"
    ob.write_text("9999999999,0,1000000,5\n1001000,7,-9999999999,0\n")
    ms.write_text("34200.5,1,1,5,1000000,1\n34201.25,1,2,7,1001000,-1\n")
    (c,) = read_lobster(ob)
    assert c.symbol == "XYZ"
    assert np.isnan(c.ask_px[0, 0]) and c.ask_sz[0, 0] == 0
    assert c.bid_px[0, 0] == 100.0 and c.bid_sz[0, 0] == 5
    assert np.isnan(c.bid_px[1, 0]) and c.ask_px[1, 0] == 100.1
    assert c.ts_event_ns[1] - c.ts_event_ns[0] == 750_000_000


def test_lobster_errors(tmp_path: Path) -> None:
    """Missing message file and row-count mismatch raise FeedDataError naming the files."""
    ob = tmp_path / "XYZ_2012-06-21_0_1_orderbook_1.csv"
    ob.write_text("1001000,7,1000000,5\n")
    with pytest.raises(FeedDataError, match="message"):
        list(read_lobster(ob))
    ms = tmp_path / "XYZ_2012-06-21_0_1_message_1.csv"
    ms.write_text("34200.5,1,1,5,1000000,1\n34200.6,1,1,5,1000000,1\n")
    with pytest.raises(FeedDataError, match="rows"):
        list(read_lobster(ob))
    with pytest.raises(FeedDataError, match="no such file"):
        list(read_lobster(tmp_path / "missing.zip"))


def test_lobster_zip_member_copy(tmp_path: Path) -> None:
    """A hand-made zip with orderbook and message members is found by name."""
    zpath = tmp_path / "LOBSTER_SampleFile_XYZ_2012-06-21_1.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("XYZ_2012-06-21_0_1_orderbook_1.csv", "1001000,7,1000000,5\n")
        z.writestr("XYZ_2012-06-21_0_1_message_1.csv", "34200.5,1,1,5,1000000,1\n")
    (b,) = read_lobster(zpath)
    assert b.ask_px[0, 0] == 100.1 and b.bid_sz[0, 0] == 5
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_truncated_gzip_raises_feed_data_error(tmp_path: Path) -> None:
    """A gzip file cut short is unreadable: FeedDataError naming it, not an EOFError."""
    data = gzip.compress((FIXTURES / "mbp10_bad_rows.csv").read_bytes())
    p = tmp_path / "cut.csv.gz"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(FeedDataError, match=r"cut\.csv\.gz"):
        read_all(p)


def test_header_only_file_yields_nothing(tmp_path: Path) -> None:
    """A valid header without data rows is an empty stream, not an error."""
    p = tmp_path / "header.csv"
    p.write_text((FIXTURES / "mbp10_bad_rows.csv").read_text().splitlines()[0] + "\n")
    assert read_all(p) == []


@pytest.mark.slow
def test_read_speed_against_pandas_read_csv(tmp_path: Path) -> None:
    """read_mbp10 of a 300k-row synthetic CSV takes at most ~read_csv's time (budget 1.5x).

    Timing on a shared machine is noisy: medians of 3, and a loose bound (1.2x) that still
    catches a regression to per-row Python work.
    """
    import statistics
    import time

    from feeds.synth import generate_day, write_mbp10_csv

    path = write_mbp10_csv(
        generate_day("SYNA", "2025-06-02", 1, n_rows=300_000), tmp_path / "big.csv"
    )

    def median_s(fn) -> float:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    base = median_s(lambda: pd.read_csv(path))
    ours = median_s(lambda: sum(len(b) for b in read_mbp10(path)))
    assert ours <= 1.2 * base, f"read_mbp10 {ours:.2f}s vs pandas.read_csv {base:.2f}s"
