"""The compiled-kernel switch: numba when installed, off on request, and the same numbers."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from agent import accel
from tests.conftest import REPO


def _status_with(env: dict[str, str]) -> str:
    code = "from agent import accel; print(accel.enabled(), accel.status())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout.strip()


def test_the_environment_switch_turns_the_kernels_off():
    assert _status_with({accel.ENV: "0"}) == f"False off ({accel.ENV}=0)"


@pytest.mark.skipif(not accel.enabled(), reason="numba not installed")
def test_a_kernel_compiles_and_warm_loads_it():
    from tests.unit import _accel_kernel as k

    assert accel.status().startswith("numba ")
    assert accel.warm() >= 1
    x = np.random.default_rng(0).random(101)
    assert k.total is not None
    assert k.total(x) == k.total_py(x)  # same loop, same rounding
