"""Deployment config: a TOML file validated by frozen pydantic models.

Every table forbids unknown keys, so a misspelt key fails at start-up. ``load_config`` turns any
problem into one ``ConfigError`` line naming the file and the key path, e.g.
``config/replay.toml: orders[0].quantity: Input should be greater than 0``.

Relative paths in the file (data files, history files) are resolved against the directory of the
config file, so a config works from any working directory.
"""

from __future__ import annotations

import hashlib
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from websockets.exceptions import InvalidURI
from websockets.uri import parse_uri

from agent.errors import ConfigError
from agent.model import Side

__all__ = [
    "AgentConfig",
    "BrokerConfig",
    "EstimationConfig",
    "FeedConfig",
    "LoggingConfig",
    "MpcConfig",
    "OrderConfig",
    "RiskConfig",
    "load_config",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PositiveFloat = Annotated[float, Field(gt=0)]


class StrictModel(BaseModel):
    """A config table: frozen, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class LoggingConfig(StrictModel):
    """``[logging]``: output format and level."""

    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class FeedConfig(StrictModel):
    """``[feed]``: where books come from.

    ``kind = "replay"``: ``files`` maps each symbol to one MBP-10 file (CSV, .csv.gz, .csv.zst,
    .dbn, .dbn.zst); ``speed`` = 0 replays as fast as possible, K > 0 paces by event time K
    times faster than real. ``kind = "websocket"``: ``urls`` maps each symbol to a websocket
    address; ``format`` is ``mbp10-json`` (our message; ``exec-agent serve-feed`` sends it),
    ``binance-depth`` (the diff stream, ``futures = true`` for USD-M sequencing) or
    ``binance-depth10`` (the partial book stream);
    ``stale_after_s`` of silence pauses that symbol (``feed.stale``) until data resumes.
    ``max_clock_skew_s`` (websocket): a book whose event time is further than that from the
    wall clock is rejected and counted (``time_ahead`` / ``time_behind``); unset, times are not
    checked against the clock (a recording served with its old times). ``files`` may also be
    LOBSTER files (a sample ``.zip``, or ``*_orderbook_N.csv``); other types are refused.
    Decisions follow the books' event time in both kinds.
    """

    kind: Literal["replay", "websocket"] = "replay"
    speed: float = Field(0.0, ge=0)
    files: dict[str, Path] = Field(default_factory=dict)
    chunk_rows: int = Field(250_000, ge=1)
    urls: dict[str, str] = Field(default_factory=dict)
    format: Literal["mbp10-json", "binance-depth", "binance-depth10"] = "mbp10-json"
    futures: bool = False
    stale_after_s: float = Field(5.0, gt=0)
    heartbeat_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(5.0, gt=0)
    max_message_bytes: int = Field(65_536, ge=1024)
    max_clock_skew_s: float | None = Field(None, gt=0, allow_inf_nan=False)

    @field_validator("files")
    @classmethod
    def _book_files(cls, v: dict[str, Path]) -> dict[str, Path]:
        from feeds.errors import FeedDataError
        from feeds.readers import book_format

        for sym, path in v.items():
            try:
                book_format(path)
            except FeedDataError as e:
                raise ValueError(f"{sym}: {e}") from None
        return v

    @field_validator("urls")
    @classmethod
    def _ws(cls, v: dict[str, str]) -> dict[str, str]:
        for sym, url in v.items():
            if not url.startswith(("ws://", "wss://")):
                raise ValueError(f"{sym}: must be a ws:// or wss:// URL, got {url!r}")
            try:
                parse_uri(url)
            except (ValueError, InvalidURI):
                # The URL itself is not echoed: it may carry credentials.
                raise ValueError(f"{sym}: not a valid websocket URL (host, port)") from None
        return v

    def sources(self) -> dict[str, object]:
        """Return the symbol -> source map of the configured kind."""
        return dict(self.files) if self.kind == "replay" else dict(self.urls)


class BrokerConfig(StrictModel):
    """``[broker]``: where children go.

    Children are immediate-or-cancel limit orders priced ``collar_bps`` through the mid.
    ``kind = "simulated"``: the in-process venue fills them ``latency_ms`` after sending against
    the book then in force, walking the levels inside the collar (partial fill when depth is
    short). ``kind = "fix"``: a FIX 4.4 session to ``host``:``port`` (``sender_comp_id``,
    ``target_comp_id``, ``heartbeat_s``); sequence numbers persist in ``store_path``; the logon
    password, if any, is read from the environment variable named by ``password_env`` or from
    ``password_file`` (never from this file, never logged). At start, children the journal
    left open are queried by client order id and the daemon waits up to
    ``reconcile_timeout_s`` for the answers before it sends anything new; a child with no final
    report ``ack_timeout_s`` (wall clock) after it was sent is queried the same way, up to
    ``max_status_queries`` times; still unresolved, it engages the kill switch.
    """

    kind: Literal["simulated", "fix"] = "simulated"
    latency_ms: float = Field(50.0, ge=0)
    collar_bps: float = Field(50.0, gt=0)
    host: str = "127.0.0.1"
    port: int = Field(9878, ge=1, le=65535)
    sender_comp_id: str = "AGENT"
    target_comp_id: str = "VENUE"
    heartbeat_s: int = Field(30, ge=1)
    store_path: Path | None = None
    password_env: str | None = None
    password_file: Path | None = None
    reconcile_timeout_s: float = Field(5.0, gt=0)
    ack_timeout_s: float = Field(2.0, gt=0)
    max_status_queries: int = Field(3, ge=1)


class WindowEstimationConfig(StrictModel):
    """The re-estimation of g_t from a rolling window (the daemon's and the backtest's).

    See ``EstimationConfig`` for the keys.
    """

    window_s: float = Field(600.0, gt=0)
    max_size: float = Field(0.0, ge=0)
    n_sizes: int = Field(50, ge=4, le=2000)
    beyond_depth: Literal["extrapolate", "penalty", "refuse"] = "extrapolate"
    penalty_bps: float = Field(100.0, ge=0)
    min_snapshots: int = Field(10, ge=1)
    weighting: Literal["time", "snapshot"] = "time"
    max_window_rows: int = Field(20_000, ge=100)
    profile_bucket_s: float = Field(1800.0, gt=0)


class EstimationConfig(WindowEstimationConfig):
    """``[estimation]``: rolling re-estimation of the impact cost g_t(x).

    ``window_s``: rolling window of snapshots (seconds of event time).
    ``max_size``/``n_sizes``: size grid (shares) on which the window's mean walk-the-book cost
    curve is evaluated before the quadratic fit; ``max_size = 0`` sizes the grid to the order:
    three times its average child (quantity / periods), at least ten lots. ``beyond_depth``:
    what a size past the visible
    levels costs (``extrapolate`` the deepest level's price slope, ``penalty`` on the last level's
    price, or ``refuse`` such sizes). ``history``: MBP-10 files of earlier days from which the
    intraday liquidity profile is learned (flat when empty). ``weighting``: ``time`` weights each
    snapshot by how long it was in force (what an order arriving at a random instant meets),
    ``snapshot`` weights every snapshot equally (as the specification does).
    """

    history: list[Path] = Field(default_factory=list)


class MpcConfig(StrictModel):
    """``[mpc]``: the receding-horizon re-solve.

    ``model``: ``quadratic`` fits ``g = beta x + gamma x^2`` to the window and solves by exact
    water-filling; ``nonparametric`` uses the window's mean walk-the-book curve itself
    (piecewise linear, convex) and solves it exactly by segments.

    The horizon always runs to the order's deadline. ``final_retry_s``: in the last period,
    whatever a partial fill left is sent again this often until the deadline.
    ``on_solve_failure``: ``twap`` sends the TWAP slice, ``pause`` sends nothing this period.
    """

    model: Literal["quadratic", "nonparametric"] = "quadratic"
    final_retry_s: float = Field(15.0, gt=0)
    on_solve_failure: Literal["twap", "pause"] = "twap"


class RiskConfig(StrictModel):
    """``[risk]``: pre-trade gates on every child, independent of the optimiser (0 = off).

    ``max_child_qty`` (shares), ``max_child_notional`` (currency), ``max_collar_bps`` (limit
    price from the mid), ``max_depth_share`` (of the visible depth inside the limit),
    ``max_orders_per_min`` (all parents together), ``stale_book_s`` (event time since the last
    book), ``max_children_per_parent`` (children sent, counted from the journal, so a restart
    does not reset it). Open plus filled above the parent and a repeated client order id are
    always blocked, and so is any child while the broker session is down.
    """

    max_child_qty: float = Field(0.0, ge=0)
    max_child_notional: float = Field(0.0, ge=0)
    max_collar_bps: float = Field(0.0, ge=0)
    max_depth_share: float = Field(0.0, ge=0)
    max_orders_per_min: int = Field(0, ge=0)
    stale_book_s: float = Field(0.0, ge=0)
    max_children_per_parent: int = Field(0, ge=0)


class JournalConfig(StrictModel):
    """``[journal]``: crash-safe record of decisions, child intents and order events.

    ``path`` (SQLite, WAL, synchronous FULL): with it, a restarted daemon resumes every parent
    where the journal left it (fills applied once, client order ids never reused, periods not
    decided twice, children left open kept in doubt). Without it nothing is recorded.
    """

    path: Path | None = None


class ControlConfig(StrictModel):
    """``[control]``: how operators reach the running daemon.

    ``socket``: Unix socket for ``exec-agent status | submit | cancel | kill | resume | stop``
    (created with mode 0600; none when unset). ``keep_running``: stay up when every parent is
    done, waiting for parents submitted on the socket, until stopped. ``on_stop``: what a
    SIGTERM, SIGINT or ``stop`` does with children still open: ``cancel`` them or ``leave``
    them working at the venue (handed over). ``metrics_port``: serve Prometheus metrics on
    ``metrics_addr``:``metrics_port`` (loopback by default; 0 picks a free port; unset: off).
    """

    socket: Path | None = None
    keep_running: bool = False
    on_stop: Literal["cancel", "leave"] = "cancel"
    metrics_port: int | None = Field(None, ge=0, le=65535)
    metrics_addr: str = "127.0.0.1"


class OrderConfig(StrictModel):
    """``[[orders]]``: one parent order.

    ``quantity`` shares to ``side`` between ``start`` and ``end`` (timezone-aware datetimes), in
    periods of ``period_s`` seconds; children are whole multiples of ``lot`` (an odd-lot remainder
    is allowed). ``max_child_qty`` caps one child (0 = no cap). ``[orders.risk]`` takes the
    keys of ``[risk]``: gates for this parent alone, checked after the global ones (a block is
    logged as ``gate = "order.<gate>"``).
    """

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    symbol: str = Field(min_length=1)
    side: Side
    quantity: PositiveFloat
    start: datetime
    end: datetime
    period_s: PositiveFloat
    lot: int = Field(1, ge=1)
    max_child_qty: float = Field(0.0, ge=0)
    risk: RiskConfig | None = None

    @field_validator("start", "end", mode="before")
    @classmethod
    def _not_a_number(cls, v: object) -> object:
        # pydantic would read a number as seconds since 1970: a typo, never a trading window.
        if isinstance(v, int | float) and not isinstance(v, bool):
            raise ValueError("must be a date-time such as 2025-06-02T13:30:00Z, not a number")
        return v

    @field_validator("start", "end")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("must carry a timezone, e.g. 2025-06-02T13:30:00Z")
        return v

    @field_validator("quantity")
    @classmethod
    def _whole(cls, v: float) -> float:
        if v != int(v):
            raise ValueError("must be a whole number of shares")
        return v

    @model_validator(mode="after")
    def _window(self) -> OrderConfig:
        if self.end <= self.start:
            raise ValueError(f"end ({self.end.isoformat()}) must be after start")
        if self.period_s > (self.end - self.start).total_seconds():
            raise ValueError("period_s is longer than end - start")
        return self

    @property
    def start_ns(self) -> int:
        """Return the start as ns since the epoch."""
        return _to_ns(self.start)

    @property
    def end_ns(self) -> int:
        """Return the deadline as ns since the epoch."""
        return _to_ns(self.end)


class AgentConfig(StrictModel):
    """The whole file."""

    logging: LoggingConfig = LoggingConfig()
    feed: FeedConfig
    broker: BrokerConfig = BrokerConfig()
    estimation: EstimationConfig = EstimationConfig()
    mpc: MpcConfig = MpcConfig()
    risk: RiskConfig = RiskConfig()
    journal: JournalConfig = JournalConfig()
    control: ControlConfig = ControlConfig()
    orders: list[OrderConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _cross(self) -> AgentConfig:
        if not self.orders and not (self.control.socket and self.control.keep_running):
            raise ValueError(
                "orders: no [[orders]] table (a daemon without one needs [control] socket and "
                "keep_running = true, to take parent orders on the socket)"
            )
        seen: set[str] = set()
        for i, o in enumerate(self.orders):
            if o.id in seen:
                raise ValueError(f"orders[{i}].id: duplicate order id {o.id!r}")
            seen.add(o.id)
            if o.symbol not in self.feed.sources():
                where = "[feed.files]" if self.feed.kind == "replay" else "[feed.urls]"
                raise ValueError(
                    f"orders[{i}].symbol: no feed source for {o.symbol!r} (add it to {where})"
                )
        return self


def _to_ns(dt: datetime) -> int:
    # Exact integer arithmetic: float timestamps lose the last microseconds.
    return (dt - _EPOCH) // timedelta(microseconds=1) * 1_000


def key_path(loc: tuple[int | str, ...]) -> str:
    """Return a pydantic error location as a config key path: ``orders[0].quantity``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    feed = raw.get("feed")
    if isinstance(feed, dict) and isinstance(feed.get("files"), dict):
        for sym, p in feed["files"].items():
            if isinstance(p, str):
                feed["files"][sym] = str((base / p).resolve()) if not Path(p).is_absolute() else p
    for section, key in (("journal", "path"), ("control", "socket")):
        sec = raw.get(section)
        if (
            isinstance(sec, dict)
            and isinstance(sec.get(key), str)
            and not Path(sec[key]).is_absolute()
        ):
            sec[key] = str((base / sec[key]).resolve())
    brk = raw.get("broker")
    if isinstance(brk, dict):
        for key in ("store_path", "password_file"):
            if isinstance(brk.get(key), str):
                sp = brk[key]
                brk[key] = sp if Path(sp).is_absolute() else str((base / sp).resolve())
    est = raw.get("estimation")
    if isinstance(est, dict) and isinstance(est.get("history"), list):
        est["history"] = [
            str((base / p).resolve()) if isinstance(p, str) and not Path(p).is_absolute() else p
            for p in est["history"]
        ]


def read_toml(p: Path) -> tuple[dict[str, Any], bytes]:
    """Read a TOML file; return the table and the file's bytes.

    Raises:
        ConfigError: unreadable file or not TOML, naming the file.
    """
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config file ({e.strerror or e})") from e
    try:
        return tomllib.loads(data.decode("utf-8")), data
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from e


def load_config(path: str | Path) -> tuple[AgentConfig, str]:
    """Read and validate a config file.

    Args:
        path: TOML file.

    Returns:
        The validated config and the SHA-256 hex digest of the file's bytes.

    Raises:
        ConfigError: unreadable file, TOML syntax error, unknown key, bad value, missing data
            file; the message names the file and the key path.
    """
    p = Path(path)
    raw, data = read_toml(p)
    _resolve_paths(raw, p.resolve().parent)
    try:
        cfg = AgentConfig.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        where = key_path(tuple(err["loc"]))
        if where == "(top level)" and ": " in msg:  # cross-field messages carry their own path
            where, msg = msg.split(": ", 1)
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise ConfigError(f"{p}: {where}: {msg}{more}") from None
    for sym, fp in cfg.feed.files.items() if cfg.feed.kind == "replay" else ():
        if not fp.is_file():
            raise ConfigError(f"{p}: feed.files.{sym}: data file not found: {fp}")
    for i, fp in enumerate(cfg.estimation.history):
        if not fp.is_file():
            raise ConfigError(f"{p}: estimation.history[{i}]: data file not found: {fp}")
    return cfg, hashlib.sha256(data).hexdigest()
