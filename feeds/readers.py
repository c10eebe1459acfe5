"""Pure, synchronous readers of order-book files into columnar ``BookBatch`` chunks.

Formats (chosen from the file suffix):

- ``.csv``, ``.csv.gz``, ``.csv.zst``: Databento MBP-10 CSV (74 columns, see
  ``../shared/data/README.md``). The text is cut into blocks of whole lines that a small thread
  pool parses (pandas' C tokenizer releases the GIL); only the 42 needed columns are converted
  (timestamps, symbol, the 40 price/size columns) and timestamps are parsed vectorised as
  ISO-8601 (``T`` or space, ``Z`` or ``+00:00``; a duplicated ``ts_event`` header without
  ``ts_recv`` gives ``ts_recv == ts_event``).
- ``.dbn``, ``.dbn.zst``: Databento Binary Encoding, versions 1 to 3. MBP-10 records are viewed
  straight from the byte buffer with a numpy structured dtype (no Python object per record);
  other record types in the same file are skipped.
- LOBSTER ``orderbook``/``message`` CSV pairs, plain or inside the sample zip files
  (``read_lobster``).

``read_books`` reads any of them, chosen by ``book_format`` from the name: every command that
reads books goes through it, so all accept the same formats and refuse others with one line.

Invariants of every yielded batch:
- one symbol, rows in file order, ``L == N_LEVELS`` levels (narrower sources padded);
- an empty level is ``NaN`` price and ``0`` size (DBN ``UNDEF_PRICE``, LOBSTER +-9999999999 and
  empty CSV cells are all mapped to it);
- timestamps are int64 ns since the epoch, UTC.

Readers do not judge the data: crossed or unordered books are passed through for
``feeds.validate.validate_batch`` to classify. A malformed CSV cell does not raise either: an
unparseable number becomes NaN and a row with an unparseable timestamp gets NaN sizes, so
validation rejects the row and a feed counts it. Lines without a symbol (truncated) or with too
many fields cannot be attributed and are dropped. Only a file that cannot be read at all, or
whose header lacks required columns, raises ``FeedDataError``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import io
import os
import re
import zipfile
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date as _date
from datetime import datetime, time
from pathlib import Path
from typing import Any, Final, Protocol
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import zstandard
from numpy.typing import NDArray

from feeds.errors import FeedDataError
from feeds.model import (
    EV_ADD,
    EV_CANCEL,
    EV_NONE,
    EV_TRADE,
    N_LEVELS,
    SIDE_ASK,
    SIDE_BID,
    SIDE_NONE,
    BookBatch,
)

__all__ = [
    "BOOK_FORMATS",
    "SUPPORTED_SUFFIXES",
    "book_format",
    "read_books",
    "read_lobster",
    "read_mbp10",
]

SUPPORTED_SUFFIXES: Final = (".csv", ".csv.gz", ".csv.zst", ".dbn", ".dbn.zst")
BOOK_FORMATS: Final = ("mbp10", "lobster")
_FORMATS_TEXT: Final = (
    "Databento MBP-10 (.csv, .csv.gz, .csv.zst, .dbn, .dbn.zst) or LOBSTER "
    "(*_orderbook_N.csv with its message file, or a LOBSTER .zip)"
)


def book_format(path: str | Path) -> str:
    """Return the format of a book file from its name: ``mbp10`` or ``lobster``.

    Raises:
        FeedDataError: The name matches no supported format (one line naming the path and
            the formats).
    """
    p = Path(path)
    name = p.name.lower()
    if name.endswith(".zip") or p.parent.suffix.lower() == ".zip":
        return "lobster"
    if "_orderbook_" in name and name.endswith(".csv"):
        return "lobster"
    if name.endswith(SUPPORTED_SUFFIXES):
        return "mbp10"
    raise FeedDataError(f"{p}: unknown file type (expected {_FORMATS_TEXT})")


def read_books(
    path: str | Path, symbol: str | None = None, chunk_rows: int = 250_000
) -> Iterator[BookBatch]:
    """Read a book file of any supported format as ``BookBatch`` chunks.

    Args:
        path: Databento MBP-10 (CSV or DBN) or LOBSTER file (see ``book_format``).
        symbol: MBP-10: keep only this symbol. LOBSTER (one symbol a file): the symbol written
            in the batches; ``None`` takes it from the file name.
        chunk_rows: Upper bound on the rows of a yielded batch.

    Raises:
        FeedDataError: Unknown format, missing file, or (MBP-10 CSV, LOBSTER) a file whose
            header or members are wrong, raised by the call itself.
    """
    if book_format(path) == "lobster":
        return read_lobster(path, symbol=symbol, chunk_rows=chunk_rows)
    return read_mbp10(path, symbol, chunk_rows)


_PX_DIV: Final = 1e9  # DBN fixed-point prices are dollars * 1e9
_UNDEF_PRICE: Final = np.iinfo(np.int64).max
_LOBSTER_EMPTY: Final = 9_999_999_999  # |price| of an empty LOBSTER level, dollars * 1e4
_LOBSTER_PX_DIV: Final = 1e4  # LOBSTER prices are dollars * 1e4
_LOBSTER_TZ: Final = ZoneInfo("America/New_York")  # LOBSTER times are NASDAQ local time

_BID_PX = [f"bid_px_{i:02d}" for i in range(N_LEVELS)]
_ASK_PX = [f"ask_px_{i:02d}" for i in range(N_LEVELS)]
_BID_SZ = [f"bid_sz_{i:02d}" for i in range(N_LEVELS)]
_ASK_SZ = [f"ask_sz_{i:02d}" for i in range(N_LEVELS)]
_BOOK_COLUMNS = _BID_PX + _ASK_PX + _BID_SZ + _ASK_SZ


def read_mbp10(
    path: str | Path, symbol: str | None = None, chunk_rows: int = 250_000
) -> Iterator[BookBatch]:
    """Read a Databento MBP-10 file as a stream of per-symbol batches.

    The file is read in blocks (CSV: about ``min(chunk_rows, 65536)`` rows; DBN: ``chunk_rows``
    records); a block holding several symbols yields one batch per symbol, in order of first
    appearance. Concatenating the batches of one symbol gives its rows in file order.

    Args:
        path: File ending in one of ``SUPPORTED_SUFFIXES``.
        symbol: Keep only this symbol; ``None`` keeps all.
        chunk_rows: Upper bound on the rows of a yielded batch.

    Yields:
        ``BookBatch`` objects of at most ``chunk_rows`` rows, ``L = 10``.

    Raises:
        FeedDataError: The file is missing, unreadable, of an unknown suffix or lacks required
            columns (raised by the call itself for CSV; DBN content errors surface on the first
            ``next``). The message names the file.
    """
    p = Path(path)
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    suffix = _suffix(p)
    if not p.is_file():
        raise FeedDataError(f"{p}: no such file")
    if suffix.startswith(".csv"):
        return _read_csv(p, symbol, chunk_rows)
    return _read_dbn(p, symbol, chunk_rows)


def _suffix(p: Path) -> str:
    name = p.name.lower()
    for s in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if name.endswith(s):
            return s
    raise FeedDataError(f"{p}: unknown file type (expected one of {', '.join(SUPPORTED_SUFFIXES)})")


# --------------------------------------------------------------------------------------------
# CSV


class _ByteStream(Protocol):
    """What the CSV path needs of a plain or decompressing file object."""

    def read(self, size: int = -1, /) -> bytes: ...
    def close(self) -> None: ...


def _open_text(p: Path) -> _ByteStream:
    name = p.name.lower()
    if name.endswith(".gz"):
        return gzip.open(p, "rb")
    if name.endswith(".zst"):
        return zstandard.ZstdDecompressor().stream_reader(open(p, "rb"), closefd=True)
    return open(p, "rb")


def _read_header(p: Path) -> tuple[list[str], bytes]:
    """Return the header cells and the first bytes of the (decompressed) file."""
    try:
        with contextlib.closing(_open_text(p)) as f:
            head = _read_up_to(f, 1 << 18)  # header (< 1 kB) plus rows to size blocks by
    except (OSError, EOFError, zstandard.ZstdError) as e:
        raise FeedDataError(f"{p}: cannot read: {e}") from e
    line = head.split(b"\n", 1)[0]
    if not line.strip():
        raise FeedDataError(f"{p}: empty file (no header line)")
    return [c.strip() for c in line.decode("utf-8", "replace").strip().split(",")], head


_EVENT_COLUMNS: Final = ("action", "side", "price", "size")


def _csv_layout(p: Path, header: list[str]) -> _CsvLayout:
    """Return the layout of the needed columns (event columns when all four are present)."""
    missing = [c for c in (*_BOOK_COLUMNS, "symbol") if c not in header]
    if "ts_event" not in header:
        missing.insert(0, "ts_event")
    if missing:
        raise FeedDataError(
            f"{p}: not a Databento MBP-10 CSV, missing columns: {', '.join(missing[:8])}"
            + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else "")
        )
    # Real files may name the first column ts_event twice (no ts_recv): take the first only.
    names = ["ts_event", *_BOOK_COLUMNS, "symbol"]
    has_recv = "ts_recv" in header
    if has_recv:
        names.insert(0, "ts_recv")
    has_events = all(c in header for c in _EVENT_COLUMNS)
    if has_events:
        names += _EVENT_COLUMNS
    index = {n: header.index(n) for n in names}
    order = sorted(names, key=index.__getitem__)  # usecols must be given in file order
    return _CsvLayout([index[n] for n in order], order, has_recv, 0, has_events, len(header))


@dataclass(frozen=True, slots=True)
class _CsvLayout:
    usecols: list[int]
    names: list[str]
    has_recv: bool
    header_bytes: int
    has_events: bool = False
    n_cols: int = 0  # cells in the header line


def _read_csv(p: Path, symbol: str | None, chunk_rows: int) -> Iterator[BookBatch]:
    # Validate the header eagerly, so a wrong file fails at the call, not at the first next().
    header, head = _read_header(p)
    layout = dataclasses.replace(
        _csv_layout(p, header), header_bytes=len(head.split(b"\n", 1)[0]) + 1
    )
    return _iter_csv(p, layout, symbol, chunk_rows, head)


def _iter_csv(
    p: Path, layout: _CsvLayout, symbol: str | None, chunk_rows: int, head: bytes
) -> Iterator[BookBatch]:
    """Cut the text into blocks at line ends and parse them on a small thread pool.

    pandas' C tokenizer releases the GIL, so blocks parse in parallel; results are consumed
    strictly in file order and at most ``workers + 1`` blocks are in flight (bounded memory).
    """
    # Size blocks by bytes from the header sample so a block holds about ``rows`` rows.
    rows = min(chunk_rows, _BLOCK_ROWS)
    body = head[layout.header_bytes :]
    lines = body.count(b"\n")
    per_row = len(body) / lines if lines else 512.0
    block_bytes = max(int(rows * per_row * 0.97), 1 << 12)
    workers = _parse_workers()
    with (
        contextlib.closing(_open_text(p)) as f,
        ThreadPoolExecutor(workers, thread_name_prefix="mbp10") as pool,
    ):
        try:
            _read_up_to(f, layout.header_bytes)
            pending: deque[Future[list[BookBatch]]] = deque()
            blocks = _line_blocks(p, f, block_bytes, layout.header_bytes)
            exhausted = False
            while True:
                while not exhausted and len(pending) <= workers:
                    item = next(blocks, None)
                    if item is None:
                        exhausted = True
                    else:
                        pending.append(pool.submit(_parse_block, p, *item, layout, symbol))
                if not pending:
                    return
                for batch in pending.popleft().result():
                    n = len(batch)
                    if n <= chunk_rows:
                        yield batch
                    else:
                        for start in range(0, n, chunk_rows):
                            yield batch.slice(start, start + chunk_rows)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


_BLOCK_ROWS: Final = 65_536  # rows per parse block: small enough for cache, large enough to batch


def _parse_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _line_blocks(
    p: Path, f: _ByteStream, block_bytes: int, offset: int
) -> Iterator[tuple[bytes, int]]:
    """Yield (block of whole lines of about ``block_bytes`` bytes, its byte offset)."""
    carry = b""
    while True:
        try:
            data = _read_up_to(f, block_bytes)
        except (OSError, EOFError, zstandard.ZstdError) as e:
            raise FeedDataError(f"{p}: cannot read: {e}") from e
        if not data:
            if carry.strip():
                yield carry, offset
            return
        buf = carry + data if carry else data
        cut = buf.rfind(b"\n") + 1
        if cut == 0:
            carry = buf
            continue
        carry = buf[cut:]
        yield buf[:cut], offset
        offset += cut


def _read_up_to(f: _ByteStream, n: int) -> bytes:
    # Decompressing readers may return short reads before EOF.
    parts, got = [], 0
    while got < n:
        chunk = f.read(n - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _parse_block(
    p: Path, block: bytes, offset: int, layout: _CsvLayout, symbol: str | None
) -> list[BookBatch]:
    """Parse one block of lines (worker thread) into per-symbol batches."""
    dtypes: dict[str, str | type[object]] = {c: np.float64 for c in _BOOK_COLUMNS}
    dtypes["symbol"] = "category"
    dtypes["ts_event"] = object
    if layout.has_recv:
        dtypes["ts_recv"] = object
    if layout.has_events:
        dtypes.update(action="category", side="category", price=np.float64, size=np.float64)
    try:
        df = pd.read_csv(
            io.BytesIO(block),
            header=None,
            names=layout.names,
            usecols=layout.usecols,
            dtype=dtypes,
            engine="c",
            index_col=False,
        )
    except (ValueError, pd.errors.ParserError):
        df = _parse_block_lenient(p, block, offset, layout)
    return list(_frame_batches(df, symbol, layout))


def _parse_block_lenient(p: Path, block: bytes, offset: int, layout: _CsvLayout) -> pd.DataFrame:
    """Re-parse a block that failed the fast typed parse, cell by cell.

    Malformed data must not stop a replay: unparseable numbers become NaN (so validation
    rejects the row and the feed counts it), lines with too many fields are dropped by the
    tokenizer (``on_bad_lines="skip"``; these are the only rows lost without a count).
    """
    try:
        # All header columns by position: a short (truncated) line is padded with NaN instead
        # of failing ``usecols`` for the whole block.
        df = pd.read_csv(
            io.BytesIO(block),
            header=None,
            names=list(range(max(layout.n_cols, max(layout.usecols) + 1))),
            dtype=object,
            engine="c",
            index_col=False,
            on_bad_lines="skip",
        )
    except (ValueError, pd.errors.ParserError) as e:
        raise FeedDataError(f"{p}: cannot parse CSV in the block at byte {offset}: {e}") from e
    df = df[layout.usecols]
    df.columns = layout.names
    for c in (*_BOOK_COLUMNS, *(("price", "size") if layout.has_events else ())):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(np.float64)
    for c in ("symbol", *(("action", "side") if layout.has_events else ())):
        df[c] = df[c].astype("category")
    return df


def _frame_batches(df: pd.DataFrame, symbol: str | None, layout: _CsvLayout) -> Iterator[BookBatch]:
    """Turn one parsed block into batches, one per symbol in order of first appearance."""
    has_recv = layout.has_recv
    sym = df["symbol"]
    codes = sym.cat.codes.to_numpy()
    cats = sym.cat.categories
    if symbol is not None:
        hits = np.flatnonzero(cats == symbol)
        if hits.size == 0:
            return
        keep = codes == hits[0]
    else:
        keep = codes >= 0  # a row without a symbol belongs to no feed
    if not keep.all():
        df = df.loc[keep]
        codes = codes[keep]
    if df.empty:
        return
    ts_event, bad_event = _parse_ts(df["ts_event"].to_numpy())
    ts_recv, bad_recv = _parse_ts(df["ts_recv"].to_numpy()) if has_recv else (ts_event, None)
    bid_px = df[_BID_PX].to_numpy(np.float64)
    ask_px = df[_ASK_PX].to_numpy(np.float64)
    bid_sz = df[_BID_SZ].to_numpy(np.float64)
    ask_sz = df[_ASK_SZ].to_numpy(np.float64)
    # An empty level is an empty price cell; a missing size cell means size 0.
    bid_sz[np.isnan(bid_sz)] = 0.0
    ask_sz[np.isnan(ask_sz)] = 0.0
    if bad_event is not None or bad_recv is not None:
        # Poison rows with an unparseable timestamp (NaN sizes): validation rejects them as
        # NON_FINITE and the feed counts them, instead of the whole file failing.
        for bad in (bad_event, bad_recv):
            if bad is not None:
                bid_sz[bad] = np.nan
    whole = BookBatch(
        "", ts_event, ts_recv, bid_px, bid_sz, ask_px, ask_sz,
        *(_csv_events(df) if layout.has_events else ()),
    )  # fmt: skip
    first_codes = codes[np.sort(np.unique(codes, return_index=True)[1])]
    if first_codes.size == 1:
        yield dataclasses.replace(whole, symbol=str(cats[first_codes[0]]))
        return
    for c in first_codes:
        yield dataclasses.replace(whole.take(codes == c), symbol=str(cats[c]))


def _csv_events(
    df: pd.DataFrame,
) -> tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.float64], NDArray[np.float64]]:
    """Return (action, ev_side, ev_px, ev_sz) of a parsed block (see ``feeds.model``)."""
    ev_px = df["price"].to_numpy(np.float64, copy=True)
    ev_px[~np.isfinite(ev_px)] = np.nan
    ev_sz = df["size"].to_numpy(np.float64, copy=True)
    ev_sz[~np.isfinite(ev_sz)] = 0.0
    return (
        _ascii_codes(df["action"], EV_NONE),
        _ascii_codes(df["side"], SIDE_NONE),
        ev_px,
        ev_sz,
    )


def _ascii_codes(col: pd.Series, missing: int) -> NDArray[np.uint8]:
    """Map a categorical column of one-letter cells to their ASCII codes (else ``missing``)."""
    cats = [str(c).strip() for c in col.cat.categories]
    table = np.array(
        [ord(c) if len(c) == 1 and c.isascii() and c.isalpha() else missing for c in cats]
        + [missing],
        dtype=np.uint8,
    )
    return table[col.cat.codes.to_numpy()]  # code -1 (empty cell) picks the last entry


def _parse_ts(values: NDArray[np.object_]) -> tuple[NDArray[np.int64], NDArray[np.bool_] | None]:
    """Parse ISO-8601 UTC timestamps (``T`` or space, ``Z`` or ``+00:00``) to int64 ns.

    Returns:
        The timestamps, shape (n,), and ``None`` when all parsed, else the mask of cells that
        did not parse (their value is carried over from the previous good cell).
    """
    # pandas parses a 1-d object array of strings (its documented "1-d array"); pandas-stubs
    # list only typed arrays, hence the two ignores.
    try:
        ts = pd.to_datetime(values, format="ISO8601", utc=True)  # type: ignore[arg-type]
        bad = None if not ts.hasnans else np.asarray(ts.isna())
    except (ValueError, TypeError):
        ts = pd.to_datetime(values, format="ISO8601", utc=True, errors="coerce")  # type: ignore[call-overload]
        bad = np.asarray(ts.isna())
    out = np.asarray(ts.as_unit("ns").asi8, dtype=np.int64)
    if bad is not None:
        if bad.all():
            out[:] = 0
        else:
            # Carry the last good value forward (and the first good one back to the start),
            # so a bad cell cannot fake a time jump; the row itself is poisoned by the caller.
            good = np.flatnonzero(~bad)
            idx = np.maximum.accumulate(np.where(bad, 0, np.arange(out.shape[0])))
            idx[: good[0]] = good[0]
            out = out[idx]
    return out, bad


# --------------------------------------------------------------------------------------------
# DBN

_RTYPE_MBP10: Final = 0x0A
_MBP10_SIZE: Final = 368  # bytes; identical layout in DBN v1, v2 and v3


def _mbp10_dtype(itemsize: int) -> np.dtype[np.void]:
    names = ["length", "rtype", "publisher_id", "instrument_id", "ts_event", "price", "size"]
    formats: list[object] = ["u1", "u1", "<u2", "<u4", "<u8", "<i8", "<u4"]
    offsets = [0, 1, 2, 4, 8, 16, 24]
    names += ["action", "side", "flags", "depth", "ts_recv", "ts_in_delta", "sequence"]
    formats += ["S1", "S1", "u1", "u1", "<u8", "<i4", "<u4"]
    offsets += [28, 29, 30, 31, 32, 40, 44]
    level = np.dtype(
        {
            "names": ["bid_px", "ask_px", "bid_sz", "ask_sz", "bid_ct", "ask_ct"],
            "formats": ["<i8", "<i8", "<u4", "<u4", "<u4", "<u4"],
            "offsets": [0, 8, 16, 20, 24, 28],
            "itemsize": 32,
        }
    )
    names.append("levels")
    formats.append((level, (N_LEVELS,)))
    offsets.append(48)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": itemsize})


def _read_dbn_bytes(p: Path) -> bytes:
    try:
        raw = p.read_bytes()
        if p.name.lower().endswith(".zst"):
            with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw)) as r:
                raw = r.read()
    except (OSError, zstandard.ZstdError) as e:
        raise FeedDataError(f"{p}: cannot read DBN: {e}") from e
    return raw


def _read_dbn(p: Path, symbol: str | None, chunk_rows: int) -> Iterator[BookBatch]:
    # The whole (decompressed) file is held in memory: DBN is compact (368 bytes per MBP-10
    # row, about 370 MB for a million rows) and a zero-copy view needs contiguous bytes.
    import databento_dbn as dbn  # local: only DBN reads need the compiled extension

    raw = _read_dbn_bytes(p)
    if len(raw) < 8 or raw[:3] != b"DBN":
        raise FeedDataError(f"{p}: not a DBN file (missing 'DBN' signature)")
    version = raw[3]
    meta_len = int.from_bytes(raw[4:8], "little")
    body_at = 8 + meta_len
    if version not in (1, 2, 3) or body_at > len(raw):
        raise FeedDataError(f"{p}: unsupported DBN version {version} or truncated metadata")
    try:
        meta: Any = dbn.DBNDecoder().write_and_decode(raw[:body_at])[0]
    except Exception as e:  # the extension raises its own DBNError/ValueError types
        raise FeedDataError(f"{p}: cannot decode DBN metadata: {e}") from e
    if meta.schema is not None and str(meta.schema) != "mbp-10":
        # Mixed-schema (live) files have no schema; other single schemas hold no MBP-10.
        raise FeedDataError(f"{p}: DBN schema is {meta.schema}, expected mbp-10")
    names = _dbn_symbol_map(meta)
    offsets, mappings = _dbn_record_offsets(p, raw, body_at, bool(meta.ts_out), dbn)
    names.update(mappings)
    view = _dbn_records(raw, body_at, offsets)
    for start in range(0, len(view), chunk_rows):
        yield from _dbn_chunk(view[start : start + chunk_rows], names, symbol)


def _dbn_symbol_map(meta: object) -> dict[int, str]:
    """Map instrument_id -> symbol from the metadata's symbology (stype_out instrument_id)."""
    out: dict[int, str] = {}
    mappings = getattr(meta, "mappings", None) or {}
    for raw_symbol, intervals in mappings.items():
        for iv in intervals:
            s = iv.get("symbol") if isinstance(iv, dict) else None
            if s and str(s).isdigit():
                out[int(s)] = str(raw_symbol)
    return out


def _dbn_record_offsets(
    p: Path, raw: bytes, body_at: int, ts_out: bool, dbn: object
) -> tuple[NDArray[np.intp] | None, dict[int, str]]:
    """Return byte offsets of MBP-10 records (``None``: every record is one) and live mappings."""
    rec_size = _MBP10_SIZE + (8 if ts_out else 0)
    body = np.frombuffer(raw, dtype=np.uint8, offset=body_at)
    if body.size % rec_size == 0:
        heads = body.reshape(-1, rec_size)[:, :2]
        if (heads[:, 0] == rec_size // 4).all() and (heads[:, 1] == _RTYPE_MBP10).all():
            return None, {}
    # Mixed record types (e.g. a live session): walk the length bytes. This is the only loop
    # over records, it reads two bytes per record; symbol mappings come from the decoder.
    offsets: list[int] = []
    pos, end = body_at, len(raw)
    while pos < end:
        length = raw[pos] * 4
        if length == 0 or pos + length > end:
            raise FeedDataError(f"{p}: truncated or corrupt DBN record at byte {pos}")
        if raw[pos + 1] == _RTYPE_MBP10 and length >= _MBP10_SIZE:
            offsets.append(pos)
        pos += length
    mappings: dict[int, str] = {}
    decoder = dbn.DBNDecoder()  # type: ignore[attr-defined]
    for rec in decoder.write_and_decode(raw):
        if type(rec).__name__.startswith("SymbolMappingMsg"):
            mappings[int(rec.instrument_id)] = str(rec.stype_out_symbol)
    return np.asarray(offsets, dtype=np.intp), mappings


def _dbn_records(raw: bytes, body_at: int, offsets: NDArray[np.intp] | None) -> NDArray[np.void]:
    if offsets is None:
        rec_size = raw[body_at] * 4 if len(raw) > body_at else _MBP10_SIZE
        return np.frombuffer(raw, dtype=_mbp10_dtype(rec_size), offset=body_at)
    if offsets.size == 0:
        return np.empty(0, dtype=_mbp10_dtype(_MBP10_SIZE))
    # Gather the records into one contiguous block with a single fancy index.
    buf = np.frombuffer(raw, dtype=np.uint8)
    block = buf[offsets[:, None] + np.arange(_MBP10_SIZE)]
    return np.asarray(block.reshape(-1).view(_mbp10_dtype(_MBP10_SIZE)))


def _dbn_chunk(
    rec: NDArray[np.void], names: dict[int, str], symbol: str | None
) -> Iterator[BookBatch]:
    if rec.size == 0:
        return
    ids = rec["instrument_id"]
    lv = rec["levels"]
    ts_event = rec["ts_event"].astype(np.int64)
    ts_recv = rec["ts_recv"].astype(np.int64)
    bid_px, ask_px = _dbn_px(lv["bid_px"]), _dbn_px(lv["ask_px"])
    bid_sz, ask_sz = lv["bid_sz"].astype(np.float64), lv["ask_sz"].astype(np.float64)
    side = np.ascontiguousarray(rec["side"]).view(np.uint8).copy()
    side[side == 0] = SIDE_NONE
    whole = BookBatch(
        "", ts_event, ts_recv, bid_px, bid_sz, ask_px, ask_sz,
        np.ascontiguousarray(rec["action"]).view(np.uint8).copy(), side,
        _dbn_px(rec["price"]), rec["size"].astype(np.float64),
    )  # fmt: skip
    uniq, first = np.unique(ids, return_index=True)
    for iid in ids[np.sort(first)] if uniq.size > 1 else uniq:
        name = names.get(int(iid), str(int(iid)))
        if symbol is not None and name != symbol:
            continue
        part = whole if uniq.size == 1 else whole.take(ids == iid)
        yield dataclasses.replace(part, symbol=name)


def _dbn_px(px: NDArray[np.int64]) -> NDArray[np.float64]:
    # Divide (not multiply by 1e-9): correctly rounded, so 3720250000000 -> 3720.25 exactly.
    out = px.astype(np.float64) / _PX_DIV
    out[px == _UNDEF_PRICE] = np.nan
    return out


# --------------------------------------------------------------------------------------------
# LOBSTER

_LOBSTER_NAME = re.compile(
    r"(?P<symbol>[A-Za-z.]+)_(?P<date>\d{4}-\d{2}-\d{2})_\d+_\d+_(?P<kind>orderbook|message)_"
    r"(?P<levels>\d+)\.csv$"
)


def read_lobster(
    orderbook_csv: str | Path,
    message_csv: str | Path | None = None,
    symbol: str | None = None,
    date: str | _date | None = None,
    *,
    chunk_rows: int = 250_000,
) -> Iterator[BookBatch]:
    """Read a LOBSTER order-book file (and its message file for timestamps).

    LOBSTER rows are, level by level, ``ask_px, ask_sz, bid_px, bid_sz`` with prices in dollars
    x 10000; empty levels carry price -9999999999 (bid) or 9999999999 (ask) and size 0. Times
    (message file, column 1) are seconds after midnight, NASDAQ local time; they are converted
    to UTC ns with the America/New_York offset of ``date``. ``ts_recv_ns == ts_event_ns``.
    Books narrower than 10 levels are padded with empty levels.

    Args:
        orderbook_csv: ``..._orderbook_N.csv`` path, or a LOBSTER ``.zip`` (then the orderbook
            member is found by name, or given as ``archive.zip/member.csv``).
        message_csv: Matching ``..._message_N.csv`` (a path, or a member name inside the zip).
            ``None`` finds it by name next to the order-book file or in the same zip.
        symbol: Symbol of the batches; ``None`` takes it from the LOBSTER file name.
        date: Trading day, ``YYYY-MM-DD``; ``None`` takes it from the file name.
        chunk_rows: Rows per yielded batch.

    Yields:
        ``BookBatch`` chunks, ``L = 10``.

    Raises:
        FeedDataError: Missing files or members, row-count mismatch between the two files, an
            unrecognisable layout, or no way to determine the symbol or date.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    # Find the files and the symbol/date now, so a wrong path fails at the call.
    book_src, msg_src, where = _lobster_sources(Path(orderbook_csv), message_csv)
    m = _LOBSTER_NAME.search(book_src[1])
    sym = symbol or (m.group("symbol") if m else None)
    day = date or (m.group("date") if m else None)
    if sym is None or day is None:
        raise FeedDataError(f"{where}: cannot infer symbol/date from the name; pass them")
    day_d = day if isinstance(day, _date) else _parse_day(where, day)
    return _iter_lobster(book_src, msg_src, where, sym, day_d, chunk_rows)


def _iter_lobster(
    book_src: _Source, msg_src: _Source, where: str, sym: str, day_d: _date, chunk_rows: int
) -> Iterator[BookBatch]:
    book = _lobster_csv(book_src, where)
    msg = _lobster_csv(msg_src, where, usecols=[0, 1, 3, 4, 5])
    if book.shape[1] % 4 != 0 or book.shape[1] == 0 or book.shape[1] // 4 > N_LEVELS:
        raise FeedDataError(f"{where}: {book.shape[1]} columns is not 4 x levels (1..10)")
    if len(book) != len(msg):
        raise FeedDataError(
            f"{where}: orderbook has {len(book)} rows but message file has {len(msg)}"
        )
    n, levels = len(book), book.shape[1] // 4
    midnight = datetime.combine(day_d, time(0), tzinfo=_LOBSTER_TZ)
    midnight_ns = int(midnight.timestamp()) * 1_000_000_000
    secs = msg[:, 0].copy()
    bad_time = ~(np.isfinite(secs) & (secs >= 0) & (secs < 4 * 86_400))
    if bad_time.any():
        # As in the CSV path: carry the last good time, poison the row (validation rejects it).
        good = np.flatnonzero(~bad_time)
        secs[bad_time] = 0.0 if good.size == 0 else np.nan
        if good.size:
            idx = np.maximum.accumulate(np.where(bad_time, 0, np.arange(n)))
            idx[: good[0]] = good[0]
            secs = secs[idx]
    ts = midnight_ns + np.rint(secs * 1e9).astype(np.int64)

    def side(px_col: int, sz_col: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        px = np.full((n, N_LEVELS), np.nan)
        sz = np.zeros((n, N_LEVELS))
        raw_px = book[:, px_col::4]
        empty = np.abs(raw_px) >= _LOBSTER_EMPTY
        px[:, :levels] = np.where(empty, np.nan, raw_px / _LOBSTER_PX_DIV)
        sz[:, :levels] = np.where(empty, 0.0, book[:, sz_col::4])
        return px, sz

    ask_px, ask_sz = side(0, 1)
    bid_px, bid_sz = side(2, 3)
    bid_sz[bad_time, 0] = np.nan
    whole = BookBatch(sym, ts, ts, bid_px, bid_sz, ask_px, ask_sz, *_lobster_events(msg))
    for start in range(0, n, chunk_rows):
        yield whole.slice(start, start + chunk_rows)


# LOBSTER event types (message file, column 2) -> our action codes. 1 new limit order, 2 partial
# cancellation, 3 deletion, 4 execution of a visible order, 5 of a hidden one, 6 cross trade
# (auction), 7 trading halt (no book event: unknown).
_LOBSTER_ACTION: Final = {
    1: EV_ADD,
    2: EV_CANCEL,
    3: EV_CANCEL,
    4: EV_TRADE,
    5: EV_TRADE,
    6: EV_TRADE,
}


def _lobster_events(
    msg: NDArray[np.float64],
) -> tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.float64], NDArray[np.float64]]:
    """Return (action, ev_side, ev_px, ev_sz) from the message columns time, type, size, px, dir.

    LOBSTER's direction is the side of the *resting* order (1 buy, -1 sell). For an order event
    that is the event's side; for an execution the aggressor is the other side, so a buy order
    executed is a sell-aggressor trade (``ev_side`` ``A``), as Databento writes trades. A cross
    trade (type 6) has no aggressor (``N``).
    """
    kind, size, px, direction = msg[:, 1], msg[:, 2], msg[:, 3], msg[:, 4]
    action = np.zeros(kind.shape[0], dtype=np.uint8)
    for code, act in _LOBSTER_ACTION.items():
        action[kind == code] = act
    resting = np.where(direction > 0, SIDE_BID, np.where(direction < 0, SIDE_ASK, SIDE_NONE))
    aggressor = np.where(direction > 0, SIDE_ASK, np.where(direction < 0, SIDE_BID, SIDE_NONE))
    ev_side = np.where(np.isin(kind, (4, 5)), aggressor, resting).astype(np.uint8)
    ev_side[(kind == 6) | (action == EV_NONE)] = SIDE_NONE
    ev_px = np.where(np.isfinite(px) & (px > 0) & (np.abs(px) < _LOBSTER_EMPTY), px, np.nan)
    ev_px = ev_px / _LOBSTER_PX_DIV
    ev_sz = np.where(np.isfinite(size) & (size > 0), size, 0.0)
    return action, ev_side, ev_px, np.asarray(ev_sz, dtype=np.float64)


def _parse_day(where: str, day: str) -> _date:
    try:
        return _date.fromisoformat(day)
    except ValueError as e:
        raise FeedDataError(f"{where}: bad date {day!r}, expected YYYY-MM-DD") from e


# A source is (zip path or None, file path or member name).
_Source = tuple[Path | None, str]


def _lobster_sources(book: Path, message: str | Path | None) -> tuple[_Source, _Source, str]:
    zip_path: Path | None = None
    member: str | None = None
    if book.suffix.lower() == ".zip":
        zip_path = book
    elif book.parent.suffix.lower() == ".zip":
        zip_path, member = book.parent, book.name
    if zip_path is None:
        if not book.is_file():
            raise FeedDataError(f"{book}: no such file")
        msg = (
            Path(message)
            if message is not None
            else book.with_name(book.name.replace("_orderbook_", "_message_"))
        )
        if not msg.is_file():
            raise FeedDataError(f"{msg}: no such file (LOBSTER message file for {book.name})")
        return (None, str(book)), (None, str(msg)), str(book)
    if not zip_path.is_file():
        raise FeedDataError(f"{zip_path}: no such file")
    try:
        with zipfile.ZipFile(zip_path) as z:
            members = z.namelist()
    except (OSError, zipfile.BadZipFile) as e:
        raise FeedDataError(f"{zip_path}: cannot open zip: {e}") from e
    if member is None:
        books = [m for m in members if "_orderbook_" in m and m.endswith(".csv")]
        if len(books) != 1:
            raise FeedDataError(f"{zip_path}: expected one *_orderbook_*.csv member, found {books}")
        member = books[0]
    msg_member = str(message) if message is not None else member.replace("_orderbook_", "_message_")
    for m in (member, msg_member):
        if m not in members:
            raise FeedDataError(f"{zip_path}: no member {m!r} (members: {members})")
    where = f"{zip_path}:{member}"
    return (zip_path, member), (zip_path, msg_member), where


def _lobster_csv(src: _Source, where: str, usecols: list[int] | None = None) -> NDArray[np.float64]:
    zip_path, name = src
    try:
        if zip_path is None:
            df = pd.read_csv(name, header=None, usecols=usecols, dtype=np.float64)
        else:
            with zipfile.ZipFile(zip_path) as z, z.open(name) as f:
                df = pd.read_csv(f, header=None, usecols=usecols, dtype=np.float64)
    except (OSError, ValueError, zipfile.BadZipFile, pd.errors.EmptyDataError) as e:
        raise FeedDataError(f"{where}: cannot read {name}: {e}") from e
    return np.asarray(df.to_numpy(np.float64), dtype=np.float64)
