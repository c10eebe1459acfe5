"""kill -9 in the middle of group commits (issue 15): a journal killed while it commits batches
of concurrent intents keeps every intent that returned, and what it holds is a prefix of what
was issued (no hole for replay to trip on)."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys

import pytest

from agent.journal import Journal
from tests.chaos.journal_writer import expected
from tests.conftest import REPO

pytestmark = pytest.mark.integration


def _labels(path) -> list[str]:
    con = sqlite3.connect(path)
    try:
        got = con.execute("SELECT kind, body FROM records ORDER BY seq").fetchall()
    finally:
        con.close()
    out = []
    for kind, b in got:
        body = json.loads(b)
        out.append(f"{kind}:{body.get('client_order_id', body.get('period'))}")
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill9_mid_batch_loses_no_intent_that_returned(tmp_path, seed):
    path = tmp_path / "j.sqlite"
    after = random.Random(seed).randrange(40, 400)  # acknowledged intents before the kill
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.chaos.journal_writer", str(path)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    acked: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            acked.append(line.strip())
            if len(acked) >= after:
                break
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=60)  # what it said before it died counts too
        acked += rest.split()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert len(acked) >= after
    j = Journal(path)  # opens as a restart does (WAL recovery)
    j.close()
    got = _labels(path)
    assert got == expected(len(got))[: len(got)], "the journal is not a prefix of the issue order"
    intents = {g.split(":", 1)[1] for g in got if g.startswith("intent:")}
    lost = [c for c in acked if c not in intents]
    assert not lost, f"{len(lost)} intents returned durable and were lost: {lost[:5]}"
