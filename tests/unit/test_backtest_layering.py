"""The backtest core is pure: only the CLI shell logs; nothing imports the async daemon."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORE = ["broker.py", "tca.py", "strategies.py", "engine.py", "data.py", "executor.py", "report.py"]
FORBIDDEN = {"asyncio", "websockets", "structlog", "logging", "agent.daemon", "agent.runner"}


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for a in node.names:
                out |= {a.name, a.name.split(".")[0]}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out |= {node.module, node.module.split(".")[0]}
    return out


@pytest.mark.parametrize("name", CORE)
def test_backtest_core_has_no_io_or_daemon_imports(name):
    bad = _imports(REPO / "agent" / "backtest" / name) & FORBIDDEN
    assert not bad, f"agent/backtest/{name} imports {bad}"
