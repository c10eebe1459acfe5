"""``exec-agent calibrate`` end to end: synthetic folders, the real FROG day, bad input."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from agent import calibrate
from feeds.synth import generate_day, write_mbp10_csv
from tests.conftest import SHARED_DATA

pytestmark = pytest.mark.integration

FROG_DIR = SHARED_DATA / "databento-mbp10" / "FROG"
DBN_FILE = SHARED_DATA / "dbn" / "XNAS.ITCH.test_data.mbp-10.dbn.zst"
MODELS = ("quadratic", "quadratic_visible", "power", "piecewise_power")


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    calibrate.add_parser(parser.add_subparsers())
    args = parser.parse_args(["calibrate", *argv])
    return args.func(args)


@pytest.fixture(scope="module")
def synth_dirs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tickers as folders (gz and zst), plus a history day of each in another folder."""
    root = tmp_path_factory.mktemp("synth")
    for sym, seed in (("SYNA", 1), ("SYNB", 2)):
        write_mbp10_csv(
            generate_day(sym, "2025-06-02", seed, n_rows=6000),
            root / "data" / sym / f"{sym}_2025-06-02.csv.gz",
        )
        write_mbp10_csv(
            generate_day(sym, "2025-05-30", seed + 10, n_rows=6000),
            root / "history" / sym / f"{sym}_2025-05-30.csv.zst",
        )
    return root


@pytest.fixture(scope="module")
def synth_result(synth_dirs: Path) -> tuple[Path, dict]:
    out = synth_dirs / "out"
    code = _run(
        str(synth_dirs / "data" / "SYNA"),
        str(synth_dirs / "data" / "SYNB"),
        "--out",
        str(out),
        "--sizes",
        "100:5000:100",
        "--history",
        str(synth_dirs / "history" / "SYNA"),
        str(synth_dirs / "history" / "SYNB"),
        "--progress",
        "off",
    )
    assert code == 0
    return out, json.loads((out / "impact.json").read_text())


def test_calibrate_writes_curves_models_and_figures(synth_result):
    """impact.json has, per ticker and side, the curve and every model with diagnostics;
    the figures are written and small."""
    out, res = synth_result

    assert set(res["tickers"]) == {"SYNA", "SYNB"}
    for data in res["tickers"].values():
        assert data["n_rows"] == 6000
        for side in ("buy", "sell"):
            c = data[side]["curve"]
            assert len(c["sizes"]) == len(c["mean_cost"]) == len(c["std_cost"]) == 50
            assert c["n_snapshots"] > 5000
            mean = np.array(c["mean_cost"])
            assert np.all(np.diff(mean) > 0)  # cost grows with size
            assert np.all(np.diff(mean, 2) >= -1e-9 * mean.max())  # and is convex
            for m in MODELS:
                fit = data[side]["models"][m]
                assert fit["status"] == "ok", fit
                assert {"r2", "rmse", "n_snapshots", "frac_beyond_depth", "message"} <= set(fit)
            q = data[side]["models"]["quadratic"]
            assert q["beta"] >= 0 and q["gamma"] >= 0
            assert data[side]["beyond_depth"]["policy"] == "extrapolate"
            sched = data[side]["schedule"]
            assert sched["status"] == "ok"
            assert sum(sched["x"]) == pytest.approx(10_000)
            assert min(sched["x"]) >= 0
    for name in ("summary.png", "fit_SYNA.png", "profile_SYNB.png"):
        assert 10_000 < (out / name).stat().st_size < 300_000


def test_history_gives_a_time_of_day_forecast(synth_result):
    """With --history the forecast profile is learned (not flat) and the open is dearer."""
    _, res = synth_result

    prof = res["tickers"]["SYNA"]["buy"]["forecast_profile"]

    assert prof["source"] == "history"
    open_bucket = prof["bucket_start_utc"].index("13:30")
    mid_bucket = prof["bucket_start_utc"].index("16:00")
    assert prof["cost_mult"][open_bucket] > prof["cost_mult"][mid_bucket]


def test_without_history_the_forecast_is_flat_and_schedule_uniform(tmp_path, synth_dirs):
    """No history: flat profile, and constant costs give the uniform (TWAP) schedule."""
    code = _run(
        str(synth_dirs / "data" / "SYNB"),
        "--out",
        str(tmp_path),
        "--no-figures",
        "--side",
        "sell",
        "--beyond-depth",
        "penalty",
        "--penalty-bps",
        "50",
        "--periods",
        "8",
    )

    res = json.loads((tmp_path / "impact.json").read_text())
    assert code == 0
    sell = res["tickers"]["SYNB"]["sell"]
    assert "buy" not in res["tickers"]["SYNB"]
    assert sell["forecast_profile"]["source"] == "flat"
    np.testing.assert_allclose(sell["schedule"]["x"], 10_000 / 8, rtol=1e-9)
    assert sell["beyond_depth"] == {
        "policy": "penalty",
        "penalty_bps": 50.0,
        "description": "penalty: last visible price worsened by 50 bps",
        "used": sell["beyond_depth"]["used"],
    }
    assert not (tmp_path / "summary.png").exists()


def test_bad_input_exits_2_with_one_line(tmp_path, capsys):
    """A missing path is a user error: exit code 2 and a one-line message, no traceback."""
    code = _run(str(tmp_path / "nope"), "--out", str(tmp_path / "o"))

    err = capsys.readouterr().err
    assert code == 2
    assert "nope" in err and "Traceback" not in err


@pytest.mark.realdata
def test_calibrate_real_frog_day_beta_within_half_spread(tmp_path):
    """On the real FROG session the quadratic beta lies within the observed half-spreads."""
    if not FROG_DIR.is_dir():
        pytest.skip(f"real data not available: {FROG_DIR} (see ../shared/data/README.md)")

    code = _run(str(FROG_DIR), "--out", str(tmp_path), "--no-figures")

    res = json.loads((tmp_path / "impact.json").read_text())["tickers"]["FROG"]
    assert code == 0
    assert res["n_rows"] == 33_286
    hs = res["half_spread"]
    for side in ("buy", "sell"):
        q = res[side]["models"]["quadratic"]
        qv = res[side]["models"]["quadratic_visible"]
        assert q["status"] == "ok" and q["r2"] > 0.99
        assert hs["min"] <= q["beta"] <= hs["max"]
        # the fit of the visible book alone: beta between the 5th and 95th percentile
        assert hs["p05"] <= qv["beta"] <= hs["p95"]
        assert res[side]["beyond_depth"]["used"]  # 10 levels never hold 10,000 FROG shares


@pytest.mark.realdata
def test_calibrate_reads_dbn(tmp_path):
    """A DBN file goes through the same path (symbols taken from the file)."""
    if not DBN_FILE.is_file():
        pytest.skip(f"real data not available: {DBN_FILE} (see ../shared/data/README.md)")

    code = _run(str(DBN_FILE), "--out", str(tmp_path), "--no-figures", "--sizes", "1,2,5,10")

    res = json.loads((tmp_path / "impact.json").read_text())
    assert code == 0
    assert res["tickers"]
    for data in res["tickers"].values():
        assert data["buy"]["curve"]["sizes"] == [1.0, 2.0, 5.0, 10.0]


def test_one_side_refuse_still_draws(tmp_path, synth_dirs):
    """--side buy with --beyond-depth refuse: NaN-tail curves, failed fits drawn as gaps."""
    code = _run(
        str(synth_dirs / "data" / "SYNB"),
        "--out",
        str(tmp_path),
        "--side",
        "buy",
        "--beyond-depth",
        "refuse",
        "--sizes",
        "100:20000:500",
        "--progress",
        "off",
    )

    res = json.loads((tmp_path / "impact.json").read_text())["tickers"]["SYNB"]
    assert code == 0
    assert res["buy"]["curve"]["mean_cost"][-1] is None  # JSON null: unknown past the depth
    assert (tmp_path / "fit_SYNB.png").exists() and (tmp_path / "summary.png").exists()


@pytest.mark.parametrize(
    "extra",
    [["--bucket-s", "7000"], ["--periods", "0"], ["--shares", "-5"]],
)
def test_bad_options_exit_2(tmp_path, synth_dirs, capsys, extra):
    """Options that cannot work are user errors: exit 2, one line on stderr."""
    code = _run(str(synth_dirs / "data" / "SYNB"), "--out", str(tmp_path), *extra)

    assert code == 2
    assert capsys.readouterr().err.startswith("exec-agent calibrate:")


@pytest.mark.parametrize("sizes", ["5:1:1", "a,b", "0,10"])
def test_bad_sizes_are_rejected_by_the_parser(tmp_path, sizes):
    """--sizes must parse as START:STOP:STEP or a list of positive increasing sizes."""
    with pytest.raises(SystemExit) as exc:
        _run(str(tmp_path), "--out", str(tmp_path), "--sizes", sizes)
    assert exc.value.code == 2


def test_empty_folder_is_a_user_error(tmp_path, capsys):
    """A folder without any MBP-10 file: exit 2 naming the folder."""
    (tmp_path / "EMPTY").mkdir()

    code = _run(str(tmp_path / "EMPTY"), "--out", str(tmp_path / "o"))

    assert code == 2
    assert "EMPTY" in capsys.readouterr().err


def test_progress_bar_on_request(tmp_path, synth_dirs, capsys):
    """--progress on draws a tqdm bar on stderr even when it is not a terminal."""
    code = _run(
        str(synth_dirs / "data" / "SYNB"),
        "--out",
        str(tmp_path),
        "--no-figures",
        "--progress",
        "on",
        "--sizes",
        "100:1000:100",
    )

    assert code == 0
    assert "rows" in capsys.readouterr().err


def test_folder_with_several_symbols_is_split_by_symbol(tmp_path):
    """A folder of one symbol is named after the folder; a mixed folder splits by symbol, and
    a loose file of a symbol already seen merges into it."""
    for sym, seed in (("SYNA", 3), ("SYNB", 4)):
        write_mbp10_csv(
            generate_day(sym, "2025-06-03", seed, n_rows=800), tmp_path / "MIX" / f"{sym}.csv"
        )
    write_mbp10_csv(generate_day("SYNA", "2025-06-04", 5, n_rows=700), tmp_path / "solo.csv")
    write_mbp10_csv(
        generate_day("SYNB", "2025-06-04", 6, n_rows=600), tmp_path / "ALIAS" / "b.csv.gz"
    )

    code = _run(
        str(tmp_path / "MIX"),
        str(tmp_path / "solo.csv"),
        str(tmp_path / "ALIAS"),
        "--out",
        str(tmp_path / "o"),
        "--no-figures",
        "--sizes",
        "100:1000:100",
    )

    res = json.loads((tmp_path / "o" / "impact.json").read_text())["tickers"]
    assert code == 0
    assert set(res) == {"SYNA", "SYNB", "ALIAS"}
    assert res["SYNA"]["n_rows"] == 1500 and len(res["SYNA"]["files"]) == 2
    assert res["SYNB"]["n_rows"] == 800 and res["ALIAS"]["n_rows"] == 600


def test_time_weighted_option_changes_the_estimator(tmp_path, synth_dirs):
    """--time-weighted weighs each book by its time in force and says so in meta."""
    code = _run(
        str(synth_dirs / "data" / "SYNB"),
        "--out",
        str(tmp_path),
        "--no-figures",
        "--time-weighted",
        "--sizes",
        "100:1000:100",
        "--side",
        "buy",
    )

    res = json.loads((tmp_path / "impact.json").read_text())
    assert code == 0
    assert res["meta"]["weighting"] == "time in force"
    assert res["tickers"]["SYNB"]["buy"]["models"]["quadratic"]["status"] == "ok"


LOBSTER5 = SHARED_DATA / "lobster" / "LOBSTER_SampleFile_AMZN_2012-06-21_5.zip"


@pytest.mark.realdata
def test_lobster_zip_is_calibrated(tmp_path):
    """A LOBSTER sample zip is read like any book file (issue 18 item 6), symbol from its name."""
    if not LOBSTER5.exists():
        pytest.skip(f"real data not available: {LOBSTER5}")
    out = tmp_path / "out"
    assert _run(str(LOBSTER5), "--out", str(out), "--no-figures") == 0
    doc = json.loads((out / "impact.json").read_text())
    assert "AMZN" in json.dumps(doc)


def test_unknown_file_type_is_refused_in_one_line(tmp_path, capsys):
    """A file of no supported format is refused at start with one line naming it, exit 2."""
    bad = tmp_path / "books.parquet"
    bad.write_bytes(b"PAR1")
    assert _run(str(bad), "--out", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err.strip()
    assert "books.parquet" in err and "LOBSTER" in err and len(err.splitlines()) == 1
