"""Calibration figures of predicted against realized slice costs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.core.calibration import calibrate_costs


def test_figures_on_a_hand_computed_example():
    p = [1.0, 2.0, 4.0, 5.0]
    r = [1.1, 3.0, 4.0, 4.5]  # ratios 1.1, 1.5, 1.0, 0.9
    c = calibrate_costs(p, r)
    assert c.n == 4 and c.n_dropped == 0
    assert c.median_ratio == pytest.approx(1.05)
    assert c.share_within == pytest.approx(0.75)
    assert c.pearson == pytest.approx(np.corrcoef(p, r)[0, 1])
    assert c.spearman == pytest.approx(1.0)  # realized in the same order as predicted
    assert calibrate_costs(p, [4.0, 3.0, 2.0, 1.0]).spearman == pytest.approx(-1.0)
    assert c.to_dict()["tol"] == 0.2


def test_the_twenty_percent_edge_counts_as_within():
    c = calibrate_costs([10.0, 10.0], [12.0, 8.0])
    assert c.share_within == 1.0
    assert calibrate_costs([10.0], [12.1]).share_within == 0.0


def test_unjudgeable_slices_are_counted_not_folded_in():
    c = calibrate_costs([1.0, 0.0, -1.0, np.nan, 2.0], [1.0, 5.0, 5.0, 1.0, np.inf])
    assert c.n == 1 and c.n_dropped == 4
    assert c.median_ratio == 1.0
    assert math.isnan(c.pearson) and math.isnan(c.spearman)  # one slice: no correlation


def test_negative_realized_costs_are_judged():
    c = calibrate_costs([1.0, 1.0, 1.0], [-0.5, 1.0, 1.1])
    assert c.n == 3 and c.median_ratio == 1.0 and c.share_within == pytest.approx(2 / 3)


def test_empty_and_bad_inputs():
    c = calibrate_costs([], [])
    assert c.n == 0 and math.isnan(c.median_ratio) and math.isnan(c.share_within)
    with pytest.raises(ValueError, match="shape"):
        calibrate_costs([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="tol"):
        calibrate_costs([1.0], [1.0], tol=0.0)
