"""The adaptive-execution modules of agent/core stay pure, following first-party imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.unit.test_layering import IO_ALLOWED  # the one exception, and why

REPO = Path(__file__).resolve().parents[2]
MODULES = ["bookstats", "forecast", "prior", "volume", "timing", "calibration"]
FORBIDDEN = {
    "asyncio", "websockets", "structlog", "logging", "time", "datetime", "os", "pathlib", "io",
    "importlib", "json", "socket", "threading",
}  # fmt: skip


def _imports(path: Path) -> tuple[set[str], set[str], bool]:
    """Return (top-level modules, first-party dotted modules, calls open())."""
    tree = ast.parse(path.read_text())
    top: set[str] = set()
    first: set[str] = set()
    calls_open = False
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            calls_open |= node.func.id == "open"
        for n in names:
            top.add(n.split(".")[0])
            if n.split(".")[0] in ("agent", "feeds"):
                first.add(n)
    return top, first, calls_open


def _file(mod: str) -> Path:
    p = REPO.joinpath(*mod.split("."))
    return p.with_suffix(".py") if p.with_suffix(".py").exists() else p / "__init__.py"


@pytest.mark.parametrize("name", MODULES)
def test_module_and_its_first_party_imports_do_no_io(name):
    seen: set[str] = set()
    todo = [f"agent.core.{name}"]
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        path = _file(mod)
        if not path.exists():
            continue
        top, first, calls_open = _imports(path)
        parts = mod.split(".")
        first |= {".".join(parts[:i]) for i in range(1, len(parts))}  # packages run on import
        bad = top & FORBIDDEN - IO_ALLOWED.get(str(path.relative_to(REPO)), set())
        assert not bad, f"{mod} (from agent.core.{name}) imports {bad}"
        assert not calls_open, f"{mod} (from agent.core.{name}) calls open()"
        todo += sorted(first)
