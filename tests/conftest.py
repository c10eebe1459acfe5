"""Shared fixtures: paths, real-data location, structlog reset."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog

REPO = Path(__file__).resolve().parents[1]
# ../shared/data next to the checkout, or next to an ancestor (a worktree under /work/wt/NAME).
SHARED_DATA = next(
    (a / "shared" / "data" for a in REPO.parents if (a / "shared" / "data").is_dir()),
    REPO.parent / "shared" / "data",
)
FROG_DAY = SHARED_DATA / "databento-mbp10" / "FROG" / "FROG_2025-04-03 00_00_00+00_00.csv"


def require(path: Path) -> Path:
    """Skip the test when a real-data file is absent."""
    if not path.exists():
        pytest.skip(f"real data not available: {path} (see ../shared/data/README.md)")
    return path


@pytest.fixture(autouse=True)
def _reset_structlog():
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture
def repo() -> Path:
    return REPO
