"""Backtest config: a TOML file validated by frozen pydantic models (unknown keys rejected).

``load_backtest_config`` turns any problem into one ``ConfigError`` line naming the file and the
key path (``config/backtest.toml: broker.latency_ms: Input should be greater than or equal to
0``). Relative data paths are resolved against the config file's folder, as in
``agent/config.py``.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from agent.config import (
    StrategyParamsConfig,
    StrictModel,
    WindowEstimationConfig,
    key_path,
    read_toml,
)
from agent.core.queue import QueueConfig
from agent.core.tactic import TacticConfig
from agent.errors import ConfigError

__all__ = [
    "ALL_STRATEGIES",
    "MPC_MODELS",
    "MPC_SOLVERS",
    "BacktestBrokerConfig",
    "BacktestConfig",
    "DatasetConfig",
    "load_backtest_config",
]

MPC_MODELS = ("quadratic", "power", "piecewise_power", "nonparametric")
MPC_SOLVERS = ("deterministic", "robust", "stochastic")
BASELINES = ("twap", "vwap", "pov", "ac")
ALL_STRATEGIES = (
    BASELINES
    + tuple(f"mpc-{m}-{s}" for m in MPC_MODELS for s in MPC_SOLVERS)
    + ("mpc-quadratic-deterministic-risk",)
)

_KEY = re.compile(r"^[a-z_][a-z0-9_.\[\]]*$")
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?$")


class DatasetConfig(StrictModel):
    """``[[datasets]]``: one trading day to replay.

    ``path``: Databento MBP-10 file (``.csv``, ``.csv.gz``, ``.csv.zst``, ``.dbn``) or a LOBSTER
    zip / ``*_orderbook_N.csv`` (``format = "lobster"``, or auto from the name). ``symbol``: the
    symbol to keep (MBP-10 files may hold several). ``history``: MBP-10 files of earlier days of
    the same symbol: the MPC's intraday profile and the VWAP volume profile are learned from
    them (without history, the MPC forecast is flat and VWAP uses the same day's volume, which
    is look-ahead and flagged as such in the report). ``lot``: overrides ``backtest.lot``.
    ``mpc_profile``: where the MPC's intraday profile comes from: ``history`` (flat without
    history), ``same_day`` (learned from the traded day itself: look-ahead, an upper bound of
    what a profile can buy, flagged in the report) or ``flat``.
    """

    label: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    path: Path
    format: Literal["auto", "mbp10", "lobster"] = "auto"
    symbol: str | None = None
    history: list[Path] = Field(default_factory=list)
    lot: int | None = Field(None, ge=1)
    mpc_profile: Literal["history", "same_day", "flat"] = "history"


class BacktestBrokerConfig(StrictModel):
    """``[broker]``: the resilient simulated broker every strategy trades against.

    ``latency_ms``: a child sent at t executes on the first snapshot at or after t + latency.
    ``collar_bps``: children are IOC limit orders this far through the decision mid.
    ``resilience_half_life_s``: depth our fills took comes back with this half-life (0: the
    next order sees the displayed book again; ``inf`` is spelt ``-1``: never comes back).
    ``beyond_depth``: shares past the visible levels are ``unfilled`` (IOC remainder
    cancelled) or filled at the last visible price worsened by ``penalty_bps`` (``penalty``;
    only when that price is inside the collar).
    """

    latency_ms: float = Field(50.0, ge=0)
    collar_bps: float = Field(100.0, gt=0)
    resilience_half_life_s: float = Field(60.0, ge=-1)
    beyond_depth: Literal["unfilled", "penalty"] = "unfilled"
    penalty_bps: float = Field(100.0, ge=0)

    @field_validator("resilience_half_life_s")
    @classmethod
    def _hl(cls, v: float) -> float:
        if v < 0 and v != -1:
            raise ValueError("must be >= 0, or -1 for never (infinite half-life)")
        return v


class BacktestEstimationConfig(WindowEstimationConfig):
    """``[estimation]``: the MPC's re-estimation of g_t (same meaning as in the agent config)."""


class StrategyParams(StrategyParamsConfig):
    """``[strategy]``: parameters of the baselines and the MPC variants (the agent's keys, see
    ``agent.config.StrategyParamsConfig``, plus the two risk aversions of the grid).

    ``ac_risk_aversion``: Almgren-Chriss kappa (1/currency) of the static ``ac`` schedule, which
    minimises impact + kappa sigma^2 sum q_t^2. ``risk_aversion``: the same kappa for the MPC
    variant with timing risk (``mpc-quadratic-deterministic-risk``).
    """

    ac_risk_aversion: float = Field(1e-6, ge=0, allow_inf_nan=False)
    risk_aversion: float = Field(1e-6, ge=0, allow_inf_nan=False)


class TcaConfig(StrictModel):
    """``[tca]``: ``unfilled_penalty_bps`` is added to the cost of every share left unfilled at
    the deadline (on top of marking it at the final mid)."""

    unfilled_penalty_bps: float = Field(0.0, ge=0)
    adverse_horizon_s: float = Field(60.0, gt=0)  # mid move after each passive fill


class RunGridConfig(StrictModel):
    """``[backtest]``: the grid of runs and the parent order's shape.

    Every (dataset x parent size x side x strategy) is one run. ``parent_pct_of_volume``: parent
    sizes in percent of the day's traded volume (rounded down to lots). ``start_utc``/``end_utc``:
    the order's window as UTC time of day on the dataset's date (``HH:MM``). ``workers``:
    local processes (0 = min(2, cpus)).
    """

    parent_pct_of_volume: list[float] = Field(default_factory=lambda: [1.0], min_length=1)
    sides: list[Literal["buy", "sell"]] = Field(default_factory=lambda: ["buy", "sell"])  # type: ignore[arg-type]
    strategies: list[str] = Field(default_factory=lambda: list(ALL_STRATEGIES), min_length=1)
    # within-period tactics (agent.core.tactic), each run on the same books; the queue models
    # apply to the passive tactic (every other tactic runs once)
    tactics: list[Literal["aggressive", "passive", "timing"]] = Field(
        default_factory=lambda: ["aggressive"],  # type: ignore[arg-type]
        min_length=1,
    )
    queue_models: list[Literal["conservative", "proportional"]] = Field(
        default_factory=lambda: ["conservative"],  # type: ignore[arg-type]
        min_length=1,
    )
    start_utc: str = "13:35"
    end_utc: str = "19:55"
    period_s: float = Field(300.0, gt=0)
    lot: int = Field(100, ge=1)
    workers: int = Field(0, ge=0)
    out: Path = Path("backtest-out")

    @field_validator("parent_pct_of_volume")
    @classmethod
    def _pct(cls, v: list[float]) -> list[float]:
        for x in v:
            if not 0 < x <= 100:
                raise ValueError(f"each size must be in (0, 100] percent, got {x}")
        return v

    @field_validator("strategies")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        for name in v:
            if name not in ALL_STRATEGIES:
                raise ValueError(f"unknown strategy {name!r}; known: {', '.join(ALL_STRATEGIES)}")
        if len(set(v)) != len(v):
            raise ValueError("duplicate strategy")
        return v

    @field_validator("start_utc", "end_utc")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        if not _HHMM.match(v):
            raise ValueError(f"expected HH:MM (UTC), got {v!r}")
        return v

    @model_validator(mode="after")
    def _order(self) -> RunGridConfig:
        if _secs(self.end_utc) <= _secs(self.start_utc):
            raise ValueError(f"end_utc: {self.end_utc} must be after start_utc {self.start_utc}")
        if self.period_s > _secs(self.end_utc) - _secs(self.start_utc):
            raise ValueError("period_s: longer than end_utc - start_utc")
        return self


def _secs(hhmm: str) -> int:
    parts = [int(p) for p in hhmm.split(":")]
    return parts[0] * 3600 + parts[1] * 60 + (parts[2] if len(parts) > 2 else 0)


class BacktestConfig(StrictModel):
    """The whole backtest file."""

    backtest: RunGridConfig = Field(default_factory=RunGridConfig)
    broker: BacktestBrokerConfig = Field(default_factory=BacktestBrokerConfig)
    estimation: BacktestEstimationConfig = Field(default_factory=BacktestEstimationConfig)
    strategy: StrategyParams = Field(default_factory=StrategyParams)
    tca: TcaConfig = Field(default_factory=TcaConfig)
    tactic: TacticConfig = Field(default_factory=TacticConfig)  # kind: from backtest.tactics
    queue: QueueConfig = Field(default_factory=QueueConfig)  # model: from backtest.queue_models
    datasets: list[DatasetConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _cross(self) -> BacktestConfig:
        labels = [d.label for d in self.datasets]
        for i, lab in enumerate(labels):
            if lab in labels[:i]:
                raise ValueError(f"datasets[{i}].label: duplicate label {lab!r}")
        if self.broker.latency_ms / 1e3 >= min(self.backtest.period_s, self.strategy.final_retry_s):
            raise ValueError(
                "broker.latency_ms: must be shorter than backtest.period_s and "
                "strategy.final_retry_s (a child settles before the next decision)"
            )
        lead = self.strategy.decision_lead_ms
        if lead and lead >= self.backtest.period_s * 1000:
            raise ValueError(
                f"strategy.decision_lead_ms: {lead:g} must be below backtest.period_s "
                f"({self.backtest.period_s:g} s)"
            )
        if lead and set(self.backtest.tactics) - {"aggressive"}:
            raise ValueError(
                "strategy.decision_lead_ms: a decision ahead of its period is only supported "
                'with the "aggressive" tactic (backtest.tactics)'
            )
        return self

    def start_s(self) -> int:
        """Return the order's start as seconds after midnight UTC."""
        return _secs(self.backtest.start_utc)

    def end_s(self) -> int:
        """Return the order's deadline as seconds after midnight UTC."""
        return _secs(self.backtest.end_utc)


def _resolve(p: Any, base: Path) -> Any:
    if isinstance(p, str) and not Path(p).is_absolute():
        return str((base / p).resolve())
    return p


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    bt = raw.get("backtest")
    if isinstance(bt, dict) and "out" in bt:
        bt["out"] = _resolve(bt["out"], base)
    for d in raw.get("datasets", []) if isinstance(raw.get("datasets"), list) else []:
        if not isinstance(d, dict):
            continue
        if "path" in d:
            d["path"] = _resolve(d["path"], base)
        if isinstance(d.get("history"), list):
            d["history"] = [_resolve(h, base) for h in d["history"]]


def parse_backtest_config(raw: dict[str, Any], where: str, base: Path) -> BacktestConfig:
    """Validate a parsed TOML table (paths relative to ``base``).

    Raises:
        ConfigError: naming ``where`` and the key path of the first problem.
    """
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    if isinstance(raw.get("datasets"), list):
        raw["datasets"] = [dict(d) if isinstance(d, dict) else d for d in raw["datasets"]]
    _resolve_paths(raw, base)
    try:
        cfg = BacktestConfig.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        loc = key_path(tuple(err["loc"]))
        head, sep, rest = msg.partition(": ")
        if sep and _KEY.match(head):
            # cross-field messages carry their own key path, relative to where they were raised
            loc = head if loc == "(top level)" else f"{loc}.{head}"
            msg = rest
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise ConfigError(f"{where}: {loc}: {msg}{more}") from None
    for i, d in enumerate(cfg.datasets):
        if not d.path.exists():
            raise ConfigError(f"{where}: datasets[{i}].path: data file not found: {d.path}")
        for j, h in enumerate(d.history):
            if not h.is_file():
                raise ConfigError(f"{where}: datasets[{i}].history[{j}]: data file not found: {h}")
    return cfg


def load_backtest_config(path: str | Path) -> tuple[BacktestConfig, str]:
    """Read and validate a backtest config file.

    Returns:
        The config and the SHA-256 hex digest of the file's bytes.

    Raises:
        ConfigError: unreadable file, TOML syntax error, unknown key, bad value, missing data
            file; the message names the file and the key path.
    """
    p = Path(path)
    raw, data = read_toml(p)
    cfg = parse_backtest_config(raw, str(p), p.resolve().parent)
    return cfg, hashlib.sha256(data).hexdigest()
