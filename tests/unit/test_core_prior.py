"""The prior intraday profile: leave one symbol out, shift to the session, rebuilt by its script."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from agent.core.prior import prior_from_dict
from agent.impact.profile import IntradayProfile
from agent.prior import load_prior, load_prior_file, read_prior_dict

REPO = Path(__file__).resolve().parents[2]


def test_packaged_file_names_the_days_it_came_from():
    d = read_prior_dict()
    days = {(x["symbol"], x["date"]) for x in d["days"]}
    assert days == {("FROG", "2025-04-03"), ("AMZN", "2012-06-21")}
    assert set(d["symbols"]) == {"FROG", "AMZN"}


@pytest.mark.parametrize(
    ("symbol", "other"), [("FROG", "AMZN"), ("AMZN", "FROG"), ("frog", "AMZN")]
)
def test_the_prior_of_a_symbol_never_uses_its_own_day(symbol, other):
    d = read_prior_dict()
    pr = prior_from_dict(d, symbol, "buy")
    assert pr.symbols == (other,)
    own = IntradayProfile.from_dict(d["symbols"][other]["buy"])
    np.testing.assert_allclose(pr.profile.beta_mult, own.beta_mult)
    np.testing.assert_allclose(pr.profile.gamma_mult, own.gamma_mult)
    assert pr.profile.source == f"prior:{other}"
    assert pr.ar.source == f"prior:{other}"
    assert pr.volume_share.sum() == pytest.approx(1.0)


def test_an_unseen_symbol_gets_the_geometric_mean_of_all():
    d = read_prior_dict()
    pr = load_prior_file("SOUN", "sell")
    a = IntradayProfile.from_dict(d["symbols"]["AMZN"]["sell"]).beta_mult
    f = IntradayProfile.from_dict(d["symbols"]["FROG"]["sell"]).beta_mult
    np.testing.assert_allclose(pr.profile.beta_mult, np.sqrt(a * f))
    assert pr.symbols == ("AMZN", "FROG")
    assert isinstance(load_prior("SOUN"), IntradayProfile)


def test_session_shift_moves_the_buckets():
    d = read_prior_dict()
    base = prior_from_dict(d, "SOUN", "buy")
    later = prior_from_dict(d, "SOUN", "buy", open_utc_s=d["session_open_utc_s"] + 3600)
    np.testing.assert_allclose(later.profile.beta_mult, np.roll(base.profile.beta_mult, 2))
    np.testing.assert_allclose(later.volume_share, np.roll(base.volume_share, 2))


def test_a_file_with_only_the_symbol_itself_is_refused():
    d = read_prior_dict()
    only = {**d, "symbols": {"FROG": d["symbols"]["FROG"]}}
    with pytest.raises(ValueError, match="no symbol other than"):
        prior_from_dict(only, "FROG")
    with pytest.raises(ValueError, match="side"):
        prior_from_dict(d, "X", "both")


@pytest.mark.realdata
def test_committed_file_is_what_the_script_builds(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "build_prior_profile", REPO / "scripts" / "build_prior_profile.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for path, _, _ in mod.DAYS.values():
        if not path.exists():
            pytest.skip(f"real data not available: {path}")
    built = json.loads(json.dumps(mod.build()))
    committed = read_prior_dict()
    assert built["days"] == committed["days"]
    for sym, e in committed["symbols"].items():
        for side in ("buy", "sell"):
            np.testing.assert_allclose(
                built["symbols"][sym][side]["beta_mult"], e[side]["beta_mult"]
            )
        np.testing.assert_allclose(built["symbols"][sym]["volume_share"], e["volume_share"])
        np.testing.assert_allclose(
            built["symbols"][sym]["ar"]["theta_per_s"], e["ar"]["theta_per_s"]
        )
