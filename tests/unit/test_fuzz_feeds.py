"""Seeded, bounded fuzz campaigns over the feed inputs (issue 18).

- frames: mutated MBP-10 JSON and Binance (diff depth, trade, bookTicker, depth10) frames
  through the live feed's whole receive path (decode, sequencing, clock checks, validation);
- files: mutated MBP-10 CSV, DBN and LOBSTER files through ``read_books`` and validation.

Each campaign asserts crashes 0 (no exception escapes, no ``feed.frame_failed``), reader deaths
0, wedged feeds 0 (after the fuzz, genuine data is accepted again). The default run tries a fast
subset; ``-m slow`` the full counts. Figures print with ``-s`` (``fuzz.frames`` lines).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import random
import traceback
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from feeds.clock import ManualClock
from feeds.errors import FeedDataError, SequenceGap
from feeds.jsonmsg import encode_mbp10
from feeds.live import WebSocketFeed
from feeds.model import BookBatch
from feeds.readers import read_books, read_mbp10
from feeds.server import FeedServer
from feeds.validate import validate_batch
from tests.conftest import REPO, SHARED_DATA

SAMPLE = REPO / "replay_data" / "SYNA_2025-06-02.mbp-10.csv.gz"
BINANCE = SHARED_DATA / "binance-ws" / "spot__btcusdt_20240808.gz"
DBN_FILE = SHARED_DATA / "dbn" / "test_data.mbp-10.dbn"
LOBSTER1 = SHARED_DATA / "lobster" / "LOBSTER_SampleFile_AMZN_2012-06-21_1.zip"

FAST_FRAMES, FULL_FRAMES = 1_500, 12_000
FAST_FILES, FULL_FILES = 40, 200

_HUGE = [2**63, 2**63 - 1, 2**64, 2**64 + 1, -1, -(2**63) - 1, 10**30, 0]
_ODD = [None, "", "x", [], {}, True, 1e308, -1e308, "NaN", "Infinity", 1.5, "1e999"]


# ------------------------------------------------------------------------------ frame sources


def _sample_rows(n: int = 64) -> BookBatch:
    return next(read_mbp10(SAMPLE, "SYNA", chunk_rows=n))


def _mbp_frames(rows: BookBatch) -> list[dict]:
    return [json.loads(encode_mbp10(rows, i)) for i in range(len(rows))]


def _binance_frames() -> list[dict]:
    """A Binance session's frames: the recording's when present, else a synthetic one."""
    if BINANCE.exists():
        out = []
        with gzip.open(BINANCE, "rb") as f:
            for k, line in enumerate(f):
                out.append(json.loads(line.partition(b" ")[2]))
                if k > 600:
                    break
        return out
    uid, frames = 1000, [{"lastUpdateId": 1000, "bids": [["100.0", "1"]], "asks": [["100.5", "1"]]}]
    for k in range(200):
        e_ms = 1_723_161_255_000 + k
        diff = {"e": "depthUpdate", "E": e_ms, "s": "BTCUSDT", "U": uid + 1, "u": uid + 2}
        diff |= {"b": [["100.0", str(1 + k % 3)]], "a": []}
        trade = {"e": "trade", "E": e_ms, "s": "BTCUSDT", "t": k, "p": "100.5", "q": "0.1"}
        trade |= {"T": e_ms, "m": k % 2 == 0}
        frames.append({"stream": "btcusdt@depth@100ms", "data": diff})
        frames.append({"stream": "btcusdt@trade", "data": trade})
        uid += 2
    return frames


def _mutate_value(rng: random.Random, v: object) -> object:
    r = rng.random()
    if r < 0.3:
        return rng.choice(_HUGE)
    if r < 0.55:
        return rng.choice(_ODD)
    if isinstance(v, list) and v:
        v = list(v)
        i = rng.randrange(len(v))
        v[i] = _mutate_value(rng, v[i]) if rng.random() < 0.7 else v[i]
        if rng.random() < 0.3:
            v = v * rng.randint(2, 3)  # too many levels
        return v
    if isinstance(v, int | float) and not isinstance(v, bool):
        return rng.choice([v * 10 ** rng.randint(1, 12), -v, v + rng.randint(-5, 5), float(v)])
    if isinstance(v, str):
        return rng.choice([v[::-1], v + "0", "", v.upper(), "-" + v, "1e400"])
    return v


def _mutate_frame(rng: random.Random, frame: dict, now_ns: int) -> str | bytes:
    """Return a hostile variant of one frame (a deep copy is edited)."""
    f = json.loads(json.dumps(frame))
    body = f["data"] if isinstance(f.get("data"), dict) else f
    kind = rng.random()
    if kind < 0.1:  # textual damage
        text = json.dumps(f)
        cut = rng.randrange(len(text))
        options: list[str | bytes] = [text[:cut], text[:cut] + "\x00" + text[cut:], text * 2]
        options += [text.replace('"', "'", 1), text.encode()[:cut] + bytes([rng.randrange(256)])]
        return rng.choice(options)
    if kind < 0.25:  # times from years away, huge, negative
        key = "ts_event" if "ts_event" in body else "E"
        unit = 1 if key == "ts_event" else 1_000_000
        shift = rng.choice([10 * 365 * 86_400 * 10**9, -10 * 365 * 86_400 * 10**9, 10**9])
        body[key] = rng.choice([(now_ns + shift) // unit, rng.choice(_HUGE)])
        return json.dumps(f)
    if kind < 0.35 and body:  # delete a field
        body.pop(rng.choice(list(body)))
        return json.dumps(f)
    if kind < 0.45:  # unknown / wrong symbol, stream name
        if "symbol" in body:
            body["symbol"] = rng.choice(["OTHER", "", "syna", 5])
        elif "s" in body:
            body["s"] = rng.choice(["ETHUSDT", "", 7])
        if "stream" in f:
            f["stream"] = rng.choice(["btcusdt@bookTicker", "x", "btcusdt@depth@100ms", ""])
        return json.dumps(f)
    if not body:
        return json.dumps(f)
    key = rng.choice(list(body))
    body[key] = _mutate_value(rng, body[key])
    try:
        return json.dumps(f, allow_nan=True)
    except (TypeError, ValueError):
        return str(f)


# ------------------------------------------------------------------------------ frame harness


@dataclass
class FrameFigures:
    tried: int = 0
    crashes: int = 0
    reader_deaths: int = 0
    wedged: int = 0
    accepted: int = 0
    gaps: int = 0


def _shifted_mbp(frame: dict, now_ns: int, k: int) -> str:
    g = dict(frame)
    g["ts_event"] = now_ns + k
    return json.dumps(g)


def _run_frames(
    fmt: str, n: int, seed: int, skew_s: float | None, figures: FrameFigures
) -> Counter[str]:
    """Drive ``n`` mutated frames through one feed's receive path; count outcomes."""
    rng = random.Random(seed)
    now0 = 1_748_871_000_000_000_000 if fmt == "mbp10-json" else 1_723_161_255_000_000_000
    clock = ManualClock(now0)
    feed = WebSocketFeed("ws://127.0.0.1:9", "SYNA" if fmt == "mbp10-json" else "BTCUSDT",
                         clock=clock, fmt=fmt, max_clock_skew_s=skew_s)  # fmt: skip
    if fmt == "mbp10-json":
        sources = _mbp_frames(_sample_rows())
        for f in sources:
            f["ts_event"] = now0  # genuine frames are "now"
    else:
        sources = _binance_frames()
    snapshot = next((f for f in sources if "lastUpdateId" in f), None)
    reasons: Counter[str] = Counter()
    with capture_logs() as logs:
        for i in range(n):
            clock.advance(1_000_000)
            src = sources[rng.randrange(len(sources))]
            frame = (
                _mutate_frame(rng, src, clock.now_ns()) if rng.random() < 0.8 else json.dumps(src)
            )
            figures.tried += 1
            try:
                feed._on_frame_safe(frame)
            except SequenceGap:
                figures.gaps += 1
                if snapshot is not None:  # what a reconnect does: a fresh snapshot
                    feed._book = type(feed._book)(feed.symbol, futures=feed.futures)
                    feed._on_frame_safe(json.dumps(snapshot))
            except Exception:
                figures.crashes += 1
            if i % 97 == 0:
                feed._take()
        figures.crashes += feed.stats.frame_errors
        for k, v in feed.stats.invalid.items():
            reasons[k] += v
        # Wedge check: genuine data of now must be accepted again within a few frames.
        before = feed.stats.books
        for k in range(5):
            clock.advance(1_000_000)
            if fmt == "mbp10-json":
                feed._on_frame_safe(_shifted_mbp(sources[k], clock.now_ns(), k))
            else:
                feed._book = type(feed._book)(feed.symbol)
                e_ms = clock.now_ns() // 1_000_000
                snap = {"lastUpdateId": 10, "E": e_ms, "bids": [["100.0", "1"]]}
                snap["asks"] = [["100.5", "1"]]
                diff = {"e": "depthUpdate", "E": e_ms, "s": "BTCUSDT", "U": 11, "u": 11}
                diff |= {"b": [["99.0", "1"]], "a": []}
                feed._on_frame_safe(json.dumps(snap))
                feed._on_frame_safe(json.dumps(diff))
        if feed.stats.books == before:
            figures.wedged += 1
    figures.accepted += feed.stats.books
    assert not [e for e in logs if e["event"] == "feed.frame_failed"]
    return reasons


def _campaign(n_total: int) -> FrameFigures:
    figs = FrameFigures()
    per = n_total // 6
    seed = 18
    for fmt in ("mbp10-json", "binance-depth", "binance-depth10"):
        for skew in (None, 60.0):
            _run_frames(fmt, per, seed, skew, figs)
            seed += 1
    print(
        f"fuzz.frames tried={figs.tried} crashes={figs.crashes} "
        f"reader_deaths={figs.reader_deaths} wedged={figs.wedged} "
        f"accepted={figs.accepted} gaps={figs.gaps}"
    )
    return figs


def test_frame_fuzz_fast_subset() -> None:
    """1,500 hostile frames over the three live formats, clock check on and off: crashes 0,
    wedged feeds 0 (genuine frames are accepted after the fuzz)."""
    figs = _campaign(FAST_FRAMES)
    assert figs.tried >= FAST_FRAMES - 6
    assert (figs.crashes, figs.reader_deaths, figs.wedged) == (0, 0, 0)
    assert figs.accepted > 0


@pytest.mark.slow
def test_frame_fuzz_full() -> None:
    """The full frame campaign: 12,000 frames, same outcome."""
    figs = _campaign(FULL_FRAMES)
    assert (figs.crashes, figs.reader_deaths, figs.wedged) == (0, 0, 0)


async def _over_socket(n: int, seed: int) -> tuple[int, WebSocketFeed]:
    """Send ``n`` hostile frames through a real websocket, then genuine ones; return received."""
    rng = random.Random(seed)
    rows = _sample_rows(16)
    genuine = _mbp_frames(rows)
    async with FeedServer(SAMPLE, speed=1e-9, symbol="SYNA") as srv:  # sends nothing by itself
        feed = WebSocketFeed(srv.url, "SYNA", heartbeat_s=0.02, reconnect_max_s=0.05)
        got = 0
        sent_genuine = False
        async with asyncio.timeout(30):
            async for b in feed.updates():
                if feed.stats.connects and not sent_genuine:
                    for _ in range(n):
                        srv.send_raw(
                            _mutate_frame(rng, rng.choice(genuine), int(rows.ts_event_ns[0]))
                        )
                    for k, g in enumerate(genuine):
                        g = dict(g)
                        g["ts_event"] = 4_000_000_000_000_000_000 + k  # after every fuzzed time
                        srv.send_raw(json.dumps(g))
                    sent_genuine = True
                got += len(b)
                if got and feed.stats.frames >= n:
                    break
        alive = feed._reader is not None and not feed._reader.done()
        await feed.aclose()
    assert alive, "the reader task died"
    return got, feed


async def test_frames_over_a_real_websocket_never_kill_the_reader() -> None:
    """300 hostile frames over loopback: the reader survives and genuine books still arrive."""
    got, feed = await _over_socket(300, 7)
    assert got >= 1 and feed.stats.frame_errors == 0
    print(f"fuzz.frames_socket tried=300 received={got} invalid={sum(feed.stats.invalid.values())}")


# ------------------------------------------------------------------------------- file fuzz


def _csv_text() -> bytes:
    with gzip.open(SAMPLE, "rb") as f:
        return b"".join(f.readline() for _ in range(41))


def _mutate_bytes(rng: random.Random, data: bytes, header_len: int) -> bytes:
    b = bytearray(data)
    kind = rng.randrange(9)
    if kind == 0:  # truncate anywhere, often mid-line
        return bytes(b[: rng.randrange(len(b))])
    if kind == 1:  # flip bytes
        for _ in range(rng.randint(1, 20)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    lines = bytes(b).split(b"\n")
    if len(lines) < 3:
        return bytes(b[: rng.randrange(len(b))])
    i = rng.randrange(1, len(lines) - 1)
    if kind == 2:  # truncated line
        lines[i] = lines[i][: rng.randrange(max(1, len(lines[i])))]
    elif kind == 3:  # a cell replaced
        cells = lines[i].split(b",")
        j = rng.randrange(len(cells))
        cells[j] = rng.choice(
            [b"", b"nan", b"inf", b"-1", b"1e999", b"x", b"9" * 30, b'"', b"\x00"]
        )
        lines[i] = b",".join(cells)
    elif kind == 4:  # extra or missing cells
        cells = lines[i].split(b",")
        lines[i] = b",".join(
            cells + [b"1"] * rng.randint(1, 3) if rng.random() < 0.5 else cells[:-2]
        )
    elif kind == 5:  # header damaged
        cells = lines[0].split(b",")
        cells[rng.randrange(len(cells))] = b"bogus"
        lines[0] = b",".join(cells)
    elif kind == 6:  # shuffled or duplicated lines
        body = lines[1:]
        rng.shuffle(body)
        lines = [lines[0], *body, *body[:3]]
    elif kind == 7:  # CRLF, blank lines, BOM
        return b"\xef\xbb\xbf" + b"\r\n\r\n".join(lines)
    else:  # timestamps garbled
        cells = lines[i].split(b",")
        cells[rng.randrange(min(2, len(cells)))] = rng.choice(
            [b"2025-13-01T00:00:00Z", b"9999999999999999999", b"", b"now"]
        )
        lines[i] = b",".join(cells)
    return b"\n".join(lines)


@dataclass
class FileFigures:
    tried: int = 0
    refused: int = 0
    read: int = 0
    crashes: int = 0


def _read_file(path: Path, figs: FileFigures) -> None:
    figs.tried += 1
    try:
        prev = None
        for batch in read_books(path):
            prev = validate_batch(batch, prev).last_ts_ns
        figs.read += 1
    except FeedDataError as e:
        assert str(path.name) in str(e) or str(path) in str(e)
        assert "\n" not in str(e).strip()
        figs.refused += 1


def _file_campaign(tmp_path: Path, n: int, seed: int) -> FileFigures:
    rng = random.Random(seed)
    figs = FileFigures()
    csv = _csv_text()
    dbn = DBN_FILE.read_bytes() if DBN_FILE.exists() else None
    lob = None
    if LOBSTER1.exists():
        with zipfile.ZipFile(LOBSTER1) as z:
            names = z.namelist()
            book_m = next(m for m in names if "_orderbook_" in m)
            msg_m = next(m for m in names if "_message_" in m)
            lob = (book_m, msg_m, b"\n".join(z.read(book_m).split(b"\n")[:40]),
                   b"\n".join(z.read(msg_m).split(b"\n")[:40]))  # fmt: skip
    for k in range(n):
        which = k % 3
        d = tmp_path / f"f{k}"
        d.mkdir()
        if which == 0 or (which == 1 and dbn is None) or (which == 2 and lob is None):
            p = d / "SYNA_2025-06-02.mbp-10.csv"
            p.write_bytes(_mutate_bytes(rng, csv, 0))
        elif which == 1 and dbn is not None:
            p = d / "x.mbp-10.dbn"
            p.write_bytes(
                _mutate_bytes(rng, dbn, 0) if rng.random() < 0.5 else dbn[: rng.randrange(len(dbn))]
            )
        else:
            assert lob is not None
            p = d / "LOBSTER_AMZN_1.zip"
            with zipfile.ZipFile(p, "w") as z:
                mut_book = rng.random() < 0.5
                z.writestr(lob[0], _mutate_bytes(rng, lob[2], 0) if mut_book else lob[2])
                z.writestr(lob[1], lob[3] if mut_book else _mutate_bytes(rng, lob[3], 0))
        try:
            _read_file(p, figs)
        except AssertionError:
            raise
        except Exception as e:
            figs.crashes += 1
            print(f"crash on {p}: {type(e).__name__}: {e}")
            traceback.print_exc()
    print(
        f"fuzz.files tried={figs.tried} read={figs.read} refused={figs.refused} "
        f"crashes={figs.crashes}"
    )
    return figs


def test_file_fuzz_fast_subset(tmp_path: Path) -> None:
    """40 mutated CSV/DBN/LOBSTER files: each is read (bad rows counted by validation) or
    refused with one FeedDataError line naming the file; nothing else is raised."""
    figs = _file_campaign(tmp_path, FAST_FILES, 1)
    assert figs.crashes == 0 and figs.tried == FAST_FILES


@pytest.mark.slow
def test_file_fuzz_full(tmp_path: Path) -> None:
    """The full file campaign: 200 files, crashes 0."""
    figs = _file_campaign(tmp_path, FULL_FILES, 2)
    assert figs.crashes == 0


def test_truncated_csv_line_is_not_an_attribute_error(tmp_path: Path) -> None:
    """A last line cut short (no symbol cell) is dropped or poisoned, never AttributeError."""
    text = _csv_text()
    for cut in (3, 40, 200, 400):
        p = tmp_path / f"t{cut}.csv"
        p.write_bytes(text[: len(text) - cut])
        rows = sum(len(validate_batch(b).valid) for b in read_books(p))
        assert 38 <= rows <= 40
