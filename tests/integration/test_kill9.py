"""kill -9 of the daemon at seeded random points of a run against ``serve-venue`` (a process
of its own), each followed by a restart: no client order id sent twice, the daemon's fills
equal the venue's order by order (an order is its chain of ClOrdIDs), the remaining quantity
exact, nothing left open on either side.

20 aggressive points and 8 passive ones (children resting at the venue when the daemon dies,
two of them with a venue restart too) by default; the full campaigns with ``python -m pytest -m
slow tests/integration/test_kill9.py`` (or ``python -m tests.chaos.kill9 --points 200``).
"""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from tests.chaos.kill9 import campaign, summarize

pytestmark = pytest.mark.integration


def _check(results):
    failed = [asdict(r) for r in results if not r.ok]
    assert not failed, json.dumps(failed, indent=1)
    s = summarize(results)
    assert s["duplicate_new_orders"] == 0 and s["fill_mismatches"] == 0
    assert s["open_at_end"] == 0 and s["overfilled"] == 0 and s["reconcile_timeouts"] == 0
    # the faults really happened, and the order was finished after them
    assert s["killed"] >= 0.8 * len(results)
    assert s["completed"] == len(results)
    return s


def test_kill9_campaign_20_points(tmp_path):
    s = _check(campaign(20, seed=7, jobs=2, root=tmp_path))
    assert s["reconciled_children"] > 0  # some kills left a child in doubt, and it was resolved


@pytest.mark.slow
def test_kill9_campaign_200_points(tmp_path):
    _check(campaign(200, seed=11, jobs=2, root=tmp_path))


def _check_passive(results, venue_restarts: int):
    s = _check(results)
    # the kills found children resting at the venue, and orders re-priced under new ClOrdIDs
    assert s["points_resting_at_kill"] >= len(results) // 4, s
    assert s["replaced_children"] > 0
    assert s["venue_restarts"] == venue_restarts
    return s


def test_kill9_passive_campaign_8_points(tmp_path):
    _check_passive(
        campaign(8, seed=3, jobs=2, root=tmp_path, tactic="passive", restart_venue_every=4), 2
    )


@pytest.mark.slow
def test_kill9_passive_campaign_200_points(tmp_path):
    s = _check_passive(
        campaign(200, seed=11, jobs=2, root=tmp_path, tactic="passive", restart_venue_every=5), 40
    )
    assert s["cancelled_by_venue_restart"] > 0  # some restarts of the venue found orders resting
