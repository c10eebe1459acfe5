"""Deployment config: a TOML file validated by frozen pydantic models.

Every table forbids unknown keys, so a misspelt key fails at start-up. ``load_config`` turns any
problem into one ``ConfigError`` line naming the file and the key path, e.g.
``config/replay.toml: orders[0].quantity: Input should be greater than 0``.

Relative paths in the file (data files, history files) are resolved against the directory of the
config file, so a config works from any working directory.

Numbers: every numeric value of every table must be finite (``inf``/``nan`` are refused) and at
most ``MAX_ABS`` in size; share quantities at most ``MAX_QTY``. Messages never echo a secret:
URLs in them are passed through ``feeds.redact.redact_url``, and ``redacted_dump`` is what may
be logged of a config.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

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

from agent.core.risk import AggregateLimits
from agent.core.tactic import TacticConfig
from agent.errors import ConfigError
from agent.model import Side
from feeds.redact import redact_text, redact_url, redact_value

__all__ = [
    "AgentConfig",
    "BrokerConfig",
    "EstimationConfig",
    "FeedConfig",
    "LoggingConfig",
    "OrderConfig",
    "RiskConfig",
    "StrategyConfig",
    "StrategyParamsConfig",
    "is_loopback",
    "load_config",
    "redacted_dump",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_ABS = 1e15  # no config number is meaningfully larger (notional caps included)
MAX_QTY = 1e12  # shares: more than any company has issued
PositiveFloat = Annotated[float, Field(gt=0)]
Shares = Annotated[float, Field(gt=0, le=MAX_QTY)]
_LOOPBACK = ("localhost", "::1")


class StrictModel(BaseModel):
    """A config table: frozen, unknown keys rejected, numbers finite and not absurd."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _not_absurd(cls, v: Any) -> Any:
        if isinstance(v, int | float) and not isinstance(v, bool) and abs(v) > MAX_ABS:
            raise ValueError(f"{v:g} is absurd (at most {MAX_ABS:g})")
        return v


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
    ``max_buffered_rows`` (websocket): books received and not yet taken, per symbol; the daemon
    takes all of them as one batch, and only past this many is the oldest conflated away
    (counted, ``feed.conflated``; trades never are). ``max_hold_ms`` (websocket): books that
    cannot trigger a decision (before the next decision time) reach the daemon in batches, at
    most this late; a book past it reaches the daemon at once; 0: every book wakes the daemon.
    ``conflate_after_ms`` (websocket): a reader or a daemon more than this far behind (frames
    unread in the socket, or rows untaken for longer) conflates the books newer ones replace,
    counted (``feed.conflated``), so decisions stay on time; at most an hour (3,600,000).
    ``max_clock_skew_s`` (websocket): a book whose event time is further than that from the
    wall clock is rejected and counted (``time_ahead`` / ``time_behind``); unset, it is 60 s
    with ``wall_clock = true`` and off without (a recording served with its old times).
    ``files`` may also be LOBSTER files (a sample ``.zip``, or ``*_orderbook_N.csv``); other
    types are refused.
    Decisions follow the books' event time in both kinds; live (``websocket``) with
    ``wall_clock = true`` (the default: event times are real time), the wall clock moves them
    on too: a decision time more than ``clock_grace_s`` in the past (by the last book's event
    time run on at the wall clock's rate, or the wall clock itself before any book) is taken
    without waiting for a later book, so a silent period is skipped and a parent whose
    deadline passes without books ends ``incomplete``. ``wall_clock = false`` is for a
    historical day served over a websocket (``exec-agent serve-feed``): event time alone.
    Decisions follow the books' event time in both kinds. ``wss://`` is checked against the
    system's certificate authorities (``ca_file``: a PEM bundle to trust instead, e.g. a
    venue's private CA); clear-text ``ws://`` to anything but loopback needs
    ``allow_insecure = true``.
    ``reader`` (websocket): ``"loop"`` (the default) reads the websockets on the daemon's own
    event loop; ``"process"`` reads them in one child process (``feeds.procfeed``: same
    decoding, checks, counters and logs), which hands the daemon ready batches, so reading
    uses another core than the decisions. Refused with ``kind = "replay"``.
    """

    kind: Literal["replay", "websocket"] = "replay"
    reader: Literal["loop", "process"] = "loop"
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
    max_buffered_rows: int = Field(100_000, ge=1)
    max_hold_ms: float = Field(5.0, ge=0, le=1000, allow_inf_nan=False)
    conflate_after_ms: float = Field(50.0, gt=0, le=3_600_000, allow_inf_nan=False)
    wall_clock: bool = True
    clock_grace_s: float = Field(1.0, ge=0, allow_inf_nan=False)
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

    allow_insecure: bool = False
    ca_file: Path | None = None

    @field_validator("urls")
    @classmethod
    def _ws(cls, v: dict[str, str]) -> dict[str, str]:
        for sym, url in v.items():
            if not url.startswith(("ws://", "wss://")):
                raise ValueError(f"{sym}: must be a ws:// or wss:// URL, got {redact_url(url)!r}")
            try:
                parse_uri(url)
            except (ValueError, InvalidURI):
                # The URL itself is not echoed: it may carry credentials.
                raise ValueError(f"{sym}: not a valid websocket URL (host, port)") from None
        return v

    @model_validator(mode="after")
    def _reader_kind(self) -> FeedConfig:
        if self.reader == "process" and self.kind != "websocket":
            raise ValueError(
                f'feed.reader = "process" reads websockets: it needs kind = "websocket", '
                f"got kind = {self.kind!r}"
            )
        return self

    @model_validator(mode="after")
    def _clear_text(self) -> FeedConfig:
        if self.kind != "websocket" or self.allow_insecure:
            return self
        for sym, url in self.urls.items():
            if url.startswith("ws://") and not is_loopback(url):
                raise ValueError(
                    f"feed.urls.{sym}: clear-text ws:// to a non-loopback host "
                    f"({redact_url(url)}); use wss://, or set allow_insecure = true in [feed]"
                )
        return self

    def sources(self) -> dict[str, object]:
        """Return the symbol -> source map of the configured kind."""
        return dict(self.files) if self.kind == "replay" else dict(self.urls)


class BrokerConfig(StrictModel):
    """``[broker]``: where children go.

    Children are immediate-or-cancel limit orders priced ``collar_bps`` through the mid.
    ``kind = "simulated"``: the execution core's simulated venue (the backtest's too) fills
    them against the book in force ``latency_ms`` after the decision, walking the levels inside
    the collar (partial fill when depth is short); with ``half_life_s > 0`` it remembers the
    depth our fills took, which comes back with that half-life (0: every child sees the
    displayed book); ``beyond_depth = "penalty"`` fills what the visible levels cannot at the
    last level's price worsened by ``penalty_bps`` (``unfilled``: cancelled).
    ``kind = "fix"``: a FIX 4.4 session to ``host``:``port`` (``sender_comp_id``,
    ``target_comp_id``, ``heartbeat_s``); sequence numbers persist in ``store_path``; the logon
    password, if any, is read from the environment variable named by ``password_env`` or from
    ``password_file`` (never from this file, never logged). At start, children the journal
    left open are queried by client order id and the daemon waits up to
    ``reconcile_timeout_s`` for the answers before it sends anything new; a child with no final
    report ``ack_timeout_s`` (wall clock) after it was sent is queried the same way, up to
    ``max_status_queries`` times; still unresolved, it engages the kill switch. A FIX run needs
    ``store_path`` and ``[journal] path`` (refused at start otherwise), the venue's Logon must
    carry the configured CompIDs, and a host that is not loopback needs ``tls = true`` (the
    certificate is checked) or an explicit ``allow_insecure = true``.
    """

    kind: Literal["simulated", "fix"] = "simulated"
    latency_ms: float = Field(50.0, ge=0)
    collar_bps: float = Field(50.0, gt=0)
    half_life_s: float = Field(0.0, ge=0)
    beyond_depth: Literal["unfilled", "penalty"] = "unfilled"
    penalty_bps: float = Field(100.0, ge=0)
    queue_model: Literal["conservative", "proportional"] = "conservative"
    queue_power: float = Field(1.0, gt=0)
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
    # FIX transport: TLS checks the venue's certificate (``tls_ca_file``: the CA bundle, else
    # the system's); clear text to a host that is not loopback needs ``allow_insecure = true``.
    tls: bool = False
    tls_ca_file: Path | None = None
    allow_insecure: bool = False

    @model_validator(mode="after")
    def _transport(self) -> BrokerConfig:
        if self.kind == "fix" and not (self.tls or self.allow_insecure or _loopback(self.host)):
            raise ValueError(
                f"broker.host: clear-text FIX to {self.host!r} is refused (set tls = true, or "
                "allow_insecure = true to accept it)"
            )
        return self


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WindowEstimationConfig(StrictModel):
    """The re-estimation of g_t from a rolling window (the daemon's and the backtest's).

    See ``EstimationConfig`` for the keys.
    """

    window_s: float = Field(600.0, gt=0)
    current_window_s: float = Field(0.0, ge=0)
    max_size: float = Field(0.0, ge=0)
    n_sizes: int = Field(50, ge=4, le=2000)
    beyond_depth: Literal["extrapolate", "penalty", "refuse"] = "extrapolate"
    penalty_bps: float = Field(100.0, ge=0)
    min_snapshots: int = Field(10, ge=1)
    weighting: Literal["time", "snapshot"] = "time"
    max_window_rows: int = Field(20_000, ge=100)
    incremental: bool = True
    profile_bucket_s: float = Field(1800.0, gt=0)


class EstimationConfig(WindowEstimationConfig):
    """``[estimation]``: rolling re-estimation of the impact cost g_t(x).

    ``window_s``: rolling window of snapshots (seconds of event time): the shape of the cost
    curve and the level the forecast of later periods scales. ``current_window_s``: the MPC's
    cost of the period being decided, from the book in force at the decision (0, the default)
    or the time-weighted mean over this trailing span; ``current_window_s >= window_s`` gives
    the whole window's estimate to the current period too (as before issue 13's item 1).
    ``max_size``/``n_sizes``: size grid (shares) on which the window's mean walk-the-book cost
    curve is evaluated before the quadratic fit; ``max_size = 0`` sizes the grid to the order:
    three times its average child (quantity / periods), at least ten lots. ``beyond_depth``:
    what a size past the visible
    levels costs (``extrapolate`` the deepest level's price slope, ``penalty`` on the last level's
    price, or ``refuse`` such sizes). ``history``: MBP-10 files of earlier days from which the
    intraday liquidity profile is learned (flat when empty). ``weighting``: ``time`` weights each
    snapshot by how long it was in force (what an order arriving at a random instant meets),
    ``snapshot`` weights every snapshot equally (as the specification does). ``incremental``:
    keep the window's curve up to date book by book (``agent.core.estimator``: each book walked
    once, a decision reads the curve in O(sizes), parents on one symbol and side share it; the
    same numbers as re-walking the window, to 1e-12, but ``max_window_rows`` no longer thins
    it); ``false`` re-walks the (thinned) window at every decision.
    """

    history: list[Path] = Field(default_factory=list)


class StrategyParamsConfig(StrictModel):
    """The strategies' parameters, shared by the agent's and the backtest's ``[strategy]``.

    ``pov_rate``: POV child = this share of the volume traded in the previous period.
    ``final_retry_s``: in the last period, what is left is re-sent this often until the
    deadline (every strategy). ``scenario_weights``: weights of the stochastic MPC's three
    scenarios (mean curve with the profile, mean + 1 std with the profile, mean curve flat);
    the robust MPC takes the worst of the same three. ``on_solve_failure``: ``twap`` sends the
    TWAP slice, ``pause`` sends nothing that period. ``max_child_multiple``: no child above
    this multiple of the parent's average period quantity (quantity / periods), so a time jump
    or a stalled feed never fires a catch-up dump (a larger child is capped, logged as
    ``mpc.child_capped``); on by default, ``0`` turns it off explicitly. ``forecast``
    (MPC): ``adaptive`` forecasts every later period from the current state of the book
    moving toward the day's level (``agent.core.forecast``, docs/forecast.md), ``profile``
    gives every later period the current estimate times the intraday profile (the MPC is then
    TWAP on a flat profile). ``prior_profile``: without ``estimation.history``, use the
    packaged prior profile estimated from other symbols' days (never the symbol's own).
    ``max_participation``: at most this share of each period's expected market volume (from
    the feed's trades, forecast by ``agent.core.volume``); 0 = off. The MPC (deterministic and
    timing risk) plans within it, relaxed only when the deadline needs it; every strategy's
    child is cut to it before it is sent (``mpc.child_capped``), in every period but the last,
    relaxed by the solver's factor when the periods left cannot hold the rest at that rate.
    ``decision_lead_ms``: decide each period this long before it starts, on the books known
    then (as if the feed were silent until the period's start), and send the child at the
    start: the child then leaves with the first book of its period instead of after a whole
    decision, at the price of the last ``decision_lead_ms`` of books (event time; 0: decide at
    the start, on every book up to it; below every order's ``period_s``; only with the
    aggressive tactic).
    """

    pov_rate: float = Field(0.10, gt=0, le=1)
    max_child_multiple: float = Field(10.0, ge=0, allow_inf_nan=False)
    forecast: Literal["adaptive", "profile"] = "adaptive"
    prior_profile: bool = True
    max_participation: float = Field(0.0, ge=0, le=1)
    final_retry_s: float = Field(15.0, gt=0)
    scenario_weights: tuple[float, float, float] = (0.5, 0.25, 0.25)
    on_solve_failure: Literal["twap", "pause"] = "twap"
    decision_lead_ms: float = Field(0.0, ge=0, le=3_600_000, allow_inf_nan=False)

    @field_validator("scenario_weights")
    @classmethod
    def _w(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(not math.isfinite(w) or w < 0 for w in v) or sum(v) <= 0:
            raise ValueError("weights must be finite, >= 0 and not all 0")
        return v


class StrategyConfig(StrategyParamsConfig):
    """``[strategy]``: what works every parent (the same strategies the backtest ranks).

    ``kind``: ``mpc`` (re-estimate g from the book every period and re-solve to the deadline),
    ``twap``, ``vwap`` (volume profile of the ``estimation.history`` days), ``pov``
    (``pov_rate`` of the previous period's traded volume) or ``ac`` (static Almgren-Chriss).
    ``model`` (MPC): ``quadratic`` (``g = beta x + gamma x^2``, exact water-filling), ``power``
    (``a x^(1+b)``), ``piecewise_power`` (two power-law regimes) or ``nonparametric`` (the
    window's walk-the-book curve itself, piecewise linear). ``solver`` (MPC): ``deterministic``,
    ``robust`` (worst of three liquidity scenarios) or ``stochastic`` (their weighted mean).
    ``risk_aversion``: Almgren-Chriss kappa (1/currency), timing risk ``kappa sigma^2 sum q^2``
    with sigma from the feed (``mpc``: quadratic and deterministic only; ``ac``: its schedule).
    ``benchmark``: run a TWAP shadow on its own simulated venue beside every parent.
    """

    kind: Literal["mpc", "twap", "vwap", "pov", "ac"] = "mpc"
    model: Literal["quadratic", "power", "piecewise_power", "nonparametric"] = "quadratic"
    solver: Literal["deterministic", "robust", "stochastic"] = "deterministic"
    risk_aversion: float = Field(0.0, ge=0, allow_inf_nan=False)
    benchmark: bool = True

    @model_validator(mode="after")
    def _risk(self) -> StrategyConfig:
        if (
            self.kind == "mpc"
            and self.risk_aversion > 0
            and (self.model != "quadratic" or self.solver != "deterministic")
        ):
            raise ValueError(
                "risk_aversion > 0 (timing risk) needs model = quadratic and solver = deterministic"
            )
        return self


class RiskConfig(StrictModel):
    """``[risk]``: pre-trade gates on every child, independent of the optimiser (0 = off).

    ``max_child_qty`` (shares), ``max_child_notional`` (currency), ``max_collar_bps`` (limit
    price from the mid), ``max_depth_share`` (of the visible depth inside the limit),
    ``max_orders_per_min`` (all parents together), ``stale_book_s`` (event time since the last
    book), ``max_children_per_parent`` (children sent, counted from the journal, so a restart
    does not reset it). Open plus filled above the parent and a repeated client order id are
    always blocked, and so is any child while the broker session is down.

    Over the whole daemon, every parent together (``[risk]`` only, not ``[orders.risk]``):
    ``max_gross_notional`` (filled plus open, currency), ``max_symbol_qty`` (filled plus open
    shares per symbol), ``max_open_orders`` (children open at once), ``max_parents`` (parents
    working at once) and ``max_parent_qty`` (a parent above it is refused, at start or when
    submitted). ``exec-agent status`` shows the usage of each.
    """

    max_child_qty: float = Field(0.0, ge=0, le=MAX_QTY)
    max_child_notional: float = Field(0.0, ge=0)
    max_collar_bps: float = Field(0.0, ge=0)
    max_depth_share: float = Field(0.0, ge=0)
    max_orders_per_min: int = Field(0, ge=0)
    stale_book_s: float = Field(0.0, ge=0)
    max_children_per_parent: int = Field(0, ge=0)
    max_gross_notional: float = Field(0.0, ge=0)
    max_symbol_qty: float = Field(0.0, ge=0, le=MAX_QTY)
    max_open_orders: int = Field(0, ge=0)
    max_parents: int = Field(0, ge=0)
    max_parent_qty: float = Field(0.0, ge=0, le=MAX_QTY)

    def aggregate_limits(self) -> AggregateLimits:
        """Return the daemon-wide limits for ``agent.core.risk.AggregateGates``."""
        return AggregateLimits(
            max_gross_notional=self.max_gross_notional,
            max_symbol_qty=self.max_symbol_qty,
            max_open_orders=self.max_open_orders,
            max_orders_per_min=self.max_orders_per_min,
            max_parents=self.max_parents,
            max_parent_qty=self.max_parent_qty,
        )


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
    quantity: Shares
    start: datetime
    end: datetime
    period_s: PositiveFloat
    lot: int = Field(1, ge=1)
    max_child_qty: float = Field(0.0, ge=0, le=MAX_QTY)
    risk: RiskConfig | None = None
    risk_aversion: float | None = Field(None, ge=0, allow_inf_nan=False)

    @field_validator("risk")
    @classmethod
    def _per_order(cls, v: RiskConfig | None) -> RiskConfig | None:
        for k in _AGGREGATE_KEYS:
            if v is not None and getattr(v, k):
                raise ValueError(f"{k} is a daemon-wide limit: set it in [risk], not here")
        return v

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
    strategy: StrategyConfig = StrategyConfig()
    tactic: TacticConfig = Field(default_factory=TacticConfig)
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
        if self.tactic.kind != "aggressive" and self.strategy.decision_lead_ms:
            raise ValueError(
                "strategy.decision_lead_ms: a decision ahead of its period is not supported with "
                f"tactic.kind = {self.tactic.kind} (its slices follow the book through the period)"
            )
        if self.tactic.kind == "passive" and self.feed.kind == "websocket":
            raise ValueError(
                "tactic.kind: passive needs per-row trades for its queue model, which the "
                "live websocket feed does not give the simulated venue here: use it in replay "
                "(MBP-10 or LOBSTER files) or with a real venue"
            )
        seen: set[str] = set()
        st = self.strategy
        for i, o in enumerate(self.orders):
            if o.id in seen:
                raise ValueError(f"orders[{i}].id: duplicate order id {o.id!r}")
            seen.add(o.id)
            if st.decision_lead_ms and st.decision_lead_ms >= o.period_s * 1000:
                raise ValueError(
                    f"orders[{i}].period_s: strategy.decision_lead_ms ({st.decision_lead_ms:g}) "
                    f"must be below the period ({o.period_s:g} s)"
                )
            if (
                o.risk_aversion
                and st.kind == "mpc"
                and (st.model != "quadratic" or st.solver != "deterministic")
            ):
                raise ValueError(
                    f"orders[{i}].risk_aversion: timing risk needs strategy.model = quadratic "
                    "and strategy.solver = deterministic"
                )
            if self.risk.max_parent_qty and o.quantity > self.risk.max_parent_qty:
                raise ValueError(
                    f"orders[{i}].quantity: {o.quantity:g} shares is above "
                    f"risk.max_parent_qty ({self.risk.max_parent_qty:g})"
                )
            if o.symbol not in self.feed.sources():
                where = "[feed.files]" if self.feed.kind == "replay" else "[feed.urls]"
                raise ValueError(
                    f"orders[{i}].symbol: no feed source for {o.symbol!r} (add it to {where})"
                )
        return self

    @model_validator(mode="after")
    def _fix_needs_state(self) -> AgentConfig:
        # Without both, a restart after a crash cannot resolve its children or its session.
        if self.broker.kind == "fix" and self.journal.path is None:
            raise ValueError(
                'journal.path: broker.kind = "fix" needs a journal (add [journal] path = '
                '"state/journal.sqlite")'
            )
        if self.broker.kind == "fix" and self.broker.store_path is None:
            raise ValueError(
                'broker.store_path: broker.kind = "fix" needs a sequence store (add '
                'store_path = "state/fix-seq.json" to [broker])'
            )
        return self


_AGGREGATE_KEYS = (
    "max_gross_notional",
    "max_symbol_qty",
    "max_open_orders",
    "max_parents",
    "max_parent_qty",
)


def is_loopback(url: str) -> bool:
    """Return True when a URL's host is a loopback name or address (127.0.0.0/8, ::1)."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return False
    if host in _LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def redacted_dump(cfg: BaseModel) -> dict[str, Any]:
    """Return the config as JSON-ready data with every secret and URL credential masked."""
    out: dict[str, Any] = redact_value(cfg.model_dump(mode="json"))
    return out


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
    if isinstance(feed, dict) and isinstance(feed.get("ca_file"), str):
        ca = feed["ca_file"]
        feed["ca_file"] = ca if Path(ca).is_absolute() else str((base / ca).resolve())
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
        for key in ("store_path", "password_file", "tls_ca_file"):
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
        raise ConfigError(redact_text(f"{p}: {where}: {msg}{more}")) from None
    for sym, fp in cfg.feed.files.items() if cfg.feed.kind == "replay" else ():
        if not fp.is_file():
            raise ConfigError(f"{p}: feed.files.{sym}: data file not found: {fp}")
    for i, fp in enumerate(cfg.estimation.history):
        if not fp.is_file():
            raise ConfigError(f"{p}: estimation.history[{i}]: data file not found: {fp}")
    if cfg.feed.ca_file is not None and not cfg.feed.ca_file.is_file():
        raise ConfigError(f"{p}: feed.ca_file: file not found: {cfg.feed.ca_file}")
    return cfg, hashlib.sha256(data).hexdigest()
