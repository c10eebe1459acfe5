"""Synthetic days: layout, validity, intraday shape, byte-for-byte reproducibility."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feeds.model import BookBatch
from feeds.readers import read_mbp10
from feeds.synth import MBP10_COLUMNS, PRESETS, generate_day, write_mbp10_csv
from feeds.validate import validate_batch

REPO = Path(__file__).resolve().parents[2]
REPLAY_DATA = REPO / "replay_data"
REAL_AAPL = (
    REPO.parent / "shared" / "data" / "databento-mbp10" / "AAPL"
    / "AAPL_2024-10-21_premarket_5000rows.csv"
)  # fmt: skip
SESSION_OPEN = pd.Timestamp("2025-06-02 13:30:00+00:00").value
SESSION_CLOSE = pd.Timestamp("2025-06-02 20:00:00+00:00").value


def _script():
    spec = importlib.util.spec_from_file_location(
        "generate_replay_data", REPO / "scripts" / "generate_replay_data.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("generate_replay_data", mod)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def syna() -> BookBatch:
    df = generate_day("SYNA", "2025-06-02", 11, n_rows=20_000)
    bid = df[[f"bid_px_{i:02d}" for i in range(10)]].to_numpy()
    ask = df[[f"ask_px_{i:02d}" for i in range(10)]].to_numpy()
    bsz = df[[f"bid_sz_{i:02d}" for i in range(10)]].to_numpy(np.float64)
    asz = df[[f"ask_sz_{i:02d}" for i in range(10)]].to_numpy(np.float64)
    ts = pd.to_datetime(df["ts_event"], format="ISO8601").astype("int64").to_numpy()
    return BookBatch("SYNA", ts, ts, bid, bsz, ask, asz)


def test_layout_matches_the_real_databento_header() -> None:
    """74 columns in Databento's order; the real AAPL header is identical."""
    df = generate_day("SYNA", "2025-06-02", 1, n_rows=10)
    assert list(df.columns) == list(MBP10_COLUMNS)
    assert len(MBP10_COLUMNS) == 74
    if REAL_AAPL.exists():
        with REAL_AAPL.open() as f:
            assert f.readline().strip().split(",") == list(MBP10_COLUMNS)
    ts = df.loc[0, "ts_event"]
    assert len(ts) == 35 and ts.startswith("2025-06-02 13:") and ts.endswith("+00:00")
    assert set(df["action"]) <= {"A", "C", "T"}
    assert (df["symbol"] == "SYNA").all()


def test_every_book_is_valid_and_inside_the_session(syna: BookBatch) -> None:
    """All rows pass validate_batch: 10 levels a side, ordered, uncrossed, time increasing."""
    res = validate_batch(syna, None)
    assert res.counts == {}
    assert np.isfinite(syna.bid_px).all() and np.isfinite(syna.ask_px).all()
    assert np.all(np.diff(syna.ts_event_ns) > 0)
    assert syna.ts_event_ns[0] >= SESSION_OPEN and syna.ts_event_ns[-1] < SESSION_CLOSE
    ticks = syna.bid_px / 0.01
    np.testing.assert_allclose(ticks, np.rint(ticks), atol=1e-6)
    assert np.all(syna.bid_sz >= 100)


def test_intraday_shape(syna: BookBatch) -> None:
    """U-shaped activity, wider spread and thinner depth in the first half hour than midday."""
    half_hour = 1_800 * 10**9
    bucket = (syna.ts_event_ns - SESSION_OPEN) // half_hour  # 13 buckets
    counts = np.bincount(bucket, minlength=13)
    spread = syna.ask_px[:, 0] - syna.bid_px[:, 0]
    depth = syna.bid_sz[:, :5].sum(axis=1) + syna.ask_sz[:, :5].sum(axis=1)
    mid = (bucket >= 4) & (bucket <= 8)
    assert counts[0] > 2 * counts[4:9].mean() and counts[12] > 1.5 * counts[4:9].mean()
    assert spread[bucket == 0].mean() > 1.5 * spread[mid].mean()
    assert depth[bucket == 0].mean() < 0.7 * depth[mid].mean()


def test_presets_differ_in_liquidity() -> None:
    """SYNB is cheaper, wider and thinner than SYNA."""
    a = generate_day("SYNA", "2025-06-02", 2, n_rows=3_000)
    b = generate_day("SYNB", "2025-06-02", 2, n_rows=3_000)
    assert a["bid_px_00"].mean() > 3 * b["bid_px_00"].mean()
    assert (b["ask_px_00"] - b["bid_px_00"]).mean() > (a["ask_px_00"] - a["bid_px_00"]).mean()
    assert b["bid_sz_00"].mean() < 0.5 * a["bid_sz_00"].mean()
    assert PRESETS["SYNB"].n_rows < PRESETS["SYNA"].n_rows


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    """Regenerating a slice twice gives identical .csv and .csv.gz bytes; a new seed differs."""
    files = []
    for i, seed in enumerate((7, 7, 8)):
        df = generate_day("SYNB", "2025-06-02", seed, n_rows=2_000)
        files.append(write_mbp10_csv(df, tmp_path / f"{i}.mbp-10.csv.gz").read_bytes())
    assert files[0] == files[1] != files[2]
    plain = write_mbp10_csv(
        generate_day("SYNB", "2025-06-02", 7, n_rows=2_000), tmp_path / "p.csv"
    ).read_bytes()
    assert gzip.decompress(files[0]) == plain
    assert files[0][4:8] == b"\0\0\0\0"  # gzip mtime field is zero


def test_written_file_round_trips_through_the_reader(tmp_path: Path) -> None:
    """What write_mbp10_csv writes, read_mbp10 reads back exactly (incl. .csv.zst)."""
    df = generate_day("SYNA", "2025-06-02", 4, n_rows=500)
    for name in ("d.csv", "d.csv.gz", "d.csv.zst"):
        (b,) = read_mbp10(write_mbp10_csv(df, tmp_path / name))
        np.testing.assert_array_equal(b.bid_px[:, 3], df["bid_px_03"].to_numpy())
        np.testing.assert_array_equal(b.ask_sz[:, 9], df["ask_sz_09"].to_numpy())
        assert b.ts_recv_ns[0] == pd.Timestamp(df.loc[0, "ts_recv"]).value


def test_shipped_checksums_match_the_files() -> None:
    """replay_data/SHA256SUMS lists the shipped files with their current hashes."""
    lines = (REPLAY_DATA / "SHA256SUMS").read_text().splitlines()
    assert len(lines) == 4  # two sample days and two history days
    for line in lines:
        digest, name = line.split("  ")
        assert hashlib.sha256((REPLAY_DATA / name).read_bytes()).hexdigest() == digest
    total = sum((REPLAY_DATA / ln.split("  ")[1]).stat().st_size for ln in lines)
    assert total < 20 * 2**20


def test_shipped_sample_regenerates_byte_for_byte(tmp_path: Path) -> None:
    """The script regenerates replay_data/SYNB_... identically (text, and gzip bytes)."""
    mod = _script()
    df = generate_day("SYNB", mod.DATE, mod.symbol_seed(mod.SEED, "SYNB"))
    out = write_mbp10_csv(df, mod.sample_path(tmp_path, "SYNB"))
    shipped = mod.sample_path(REPLAY_DATA, "SYNB")
    assert gzip.decompress(out.read_bytes()) == gzip.decompress(shipped.read_bytes())
    assert out.read_bytes() == shipped.read_bytes()


@pytest.mark.slow
def test_script_regenerates_the_whole_sample(tmp_path: Path) -> None:
    """Running the script end to end reproduces both shipped files and SHA256SUMS."""
    mod = _script()
    assert mod.main(["--out", str(tmp_path)]) == 0
    for name in (
        "SHA256SUMS",
        "SYNA_2025-06-02.mbp-10.csv.gz",
        "SYNB_2025-06-02.mbp-10.csv.gz",
        "history/SYNA_2025-05-30.mbp-10.csv.gz",
        "history/SYNB_2025-05-30.mbp-10.csv.gz",
    ):
        assert (tmp_path / name).read_bytes() == (REPLAY_DATA / name).read_bytes()
