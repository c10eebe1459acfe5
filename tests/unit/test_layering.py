"""The numerical core stays pure: no asyncio, websockets or structlog in it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PURE = [
    *sorted((REPO / "agent" / "impact").glob("*.py")),
    *sorted((REPO / "agent" / "mpc").glob("*.py")),
    *sorted((REPO / "agent" / "orders").glob("*.py")),
    REPO / "agent" / "planner.py",
    REPO / "agent" / "window.py",
    REPO / "agent" / "brokers" / "matching.py",
    REPO / "agent" / "brokers" / "fix_session.py",
    REPO / "feeds" / "model.py",
    REPO / "feeds" / "readers.py",
    REPO / "feeds" / "validate.py",
    REPO / "feeds" / "jsonmsg.py",
    REPO / "feeds" / "binance_depth.py",
]
FORBIDDEN = {"asyncio", "websockets", "structlog", "logging"}


def imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("path", [p for p in PURE if p.exists()], ids=lambda p: p.name)
def test_pure_module_has_no_io_imports(path):
    assert not (imported(path) & FORBIDDEN), f"{path} imports {imported(path) & FORBIDDEN}"


def test_feeds_never_import_agent():
    """Dependencies run agent -> feeds, never the reverse."""
    for p in (REPO / "feeds").glob("*.py"):
        assert "agent" not in imported(p), p
