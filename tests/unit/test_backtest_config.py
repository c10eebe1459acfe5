"""Backtest config: the shipped files load; a bad key or value names its path."""

from __future__ import annotations

import math
import tomllib

import pytest

from agent.backtest.cli import build_specs, sim_params
from agent.backtest.config import ALL_STRATEGIES, load_backtest_config, parse_backtest_config
from agent.errors import ConfigError


def test_shipped_sample_config_loads(repo):
    cfg, sha = load_backtest_config(repo / "config" / "backtest.toml")
    assert len(sha) == 64
    assert [d.label for d in cfg.datasets] == ["SYNA", "SYNB"]
    assert all(d.path.is_file() and d.history for d in cfg.datasets)
    specs = build_specs(cfg)
    n = len(cfg.datasets) * len(cfg.backtest.parent_pct_of_volume) * 2 * len(ALL_STRATEGIES)
    assert len(specs) == n
    assert len({s.run_id for s in specs}) == n


@pytest.mark.parametrize("name", ["backtest-real.toml", "backtest-real-lookahead.toml"])
def test_real_config_parses(repo, name):
    """The real-data configs validate (data presence aside: checked only when it exists)."""
    raw = tomllib.loads((repo / "config" / name).read_text())
    try:
        cfg = parse_backtest_config(raw, "backtest-real.toml", repo / "config")
    except ConfigError as e:
        if "data file not found" in str(e):
            pytest.skip(f"real data absent: {e}")
        raise
    assert {d.label for d in cfg.datasets} == {"FROG", "AMZN"}
    want = "same_day" if "lookahead" in name else "history"
    assert {d.mpc_profile for d in cfg.datasets} == {want}


def _base(repo) -> dict:
    return {
        "datasets": [
            {"label": "A", "path": str(repo / "replay_data" / "SYNA_2025-06-02.mbp-10.csv.gz")}
        ]
    }


@pytest.mark.parametrize(
    ("patch", "where"),
    [
        ({"broker": {"latency_msec": 5}}, "broker.latency_msec"),
        ({"broker": {"latency_ms": -1}}, "broker.latency_ms"),
        ({"broker": {"latency_ms": 400_000}}, "broker.latency_ms"),
        ({"broker": {"resilience_half_life_s": -3}}, "broker.resilience_half_life_s"),
        ({"backtest": {"strategies": ["twap", "vwapp"]}}, "backtest.strategies"),
        ({"backtest": {"parent_pct_of_volume": [0.5, 150]}}, "backtest.parent_pct_of_volume"),
        ({"backtest": {"start_utc": "20:00", "end_utc": "13:30"}}, "backtest.end_utc"),
        ({"backtest": {"start_utc": "9h30"}}, "backtest.start_utc"),
        ({"strategy": {"pov_rate": 0}}, "strategy.pov_rate"),
    ],
)
def test_bad_values_name_the_key(repo, patch, where):
    raw = _base(repo) | patch
    with pytest.raises(ConfigError) as e:
        parse_backtest_config(raw, "x.toml", repo)
    assert str(e.value).startswith(f"x.toml: {where}:"), str(e.value)


def test_missing_data_file_names_the_dataset(repo, tmp_path):
    raw = {"datasets": [{"label": "A", "path": "nope.csv"}]}
    with pytest.raises(ConfigError, match=r"datasets\[0\]\.path: data file not found"):
        parse_backtest_config(raw, "x.toml", tmp_path)


def test_infinite_half_life_is_minus_one(repo):
    cfg = parse_backtest_config(_base(repo) | {"broker": {"resilience_half_life_s": -1}}, "x", repo)
    assert math.isinf(sim_params(cfg).half_life_s)
