"""The execution core is pure, and that is checked transitively, not by a hand-kept list.

- ``agent/core/`` and every module of ours it imports, directly or through others (followed
  here through ``agent.*`` and ``feeds.*`` imports, package ``__init__`` files included), never
  import asyncio, websockets, structlog or logging, never read the wall clock (``time``,
  ``datetime.now``/``utcnow``, ``date.today``) and never touch the filesystem or the network
  (``open``, ``os``, ``pathlib``, ``sqlite3``, ``socket``, ...).
- The other pure modules (parsers, the FIX session layer) import no async or logging library.
- Every path listed here exists: a renamed module cannot silently drop out of the check.
- Dependencies run agent -> feeds, never the reverse.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORE_DIR = REPO / "agent" / "core"
NO_ASYNC = [
    REPO / "agent" / "brokers" / "matching.py",
    REPO / "agent" / "brokers" / "fix_session.py",
    REPO / "feeds" / "model.py",
    REPO / "feeds" / "readers.py",
    REPO / "feeds" / "validate.py",
    REPO / "feeds" / "jsonmsg.py",
    REPO / "feeds" / "binance_depth.py",
    REPO / "agent" / "backtest" / "tca.py",
    REPO / "agent" / "backtest" / "engine.py",
    REPO / "agent" / "backtest" / "data.py",
    REPO / "agent" / "backtest" / "executor.py",
    REPO / "agent" / "backtest" / "report.py",
]
ASYNC_OR_LOGS = {"asyncio", "websockets", "structlog", "logging"}
IO = {
    "time",
    "os",
    "pathlib",
    "io",
    "sqlite3",
    "socket",
    "shutil",
    "tempfile",
    "subprocess",
    "threading",
    "multiprocessing",
    "glob",
    "urllib",
    "http",
    "ssl",
    "select",
    "signal",
}
# The one exception, and why: the compiled-kernel switch reads EXEC_AGENT_JIT from the
# environment once, at import (the kernels it then compiles are pure functions of their
# arguments). Nothing else of the core may import os.
IO_ALLOWED = {"agent/accel.py": {"os"}}
CLOCK_CALLS = {("datetime", "now"), ("datetime", "utcnow"), ("date", "today"), ("time", "time")}
BANNED_NAMES = {"open", "input", "print"}


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def _file_of(module: str) -> Path | None:
    parts = module.split(".")
    if parts[0] not in ("agent", "feeds"):
        return None
    base = REPO.joinpath(*parts)
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _closure(roots: list[Path]) -> set[Path]:
    """Return every module of ours that ``roots`` import, transitively (with their packages)."""
    seen: set[Path] = set()
    todo = list(roots)
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        for mod in _imports(p):
            parts = mod.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__
                f = _file_of(".".join(parts[:i]))
                if f is not None and f not in seen:
                    todo.append(f)
    return seen


CORE = sorted(CORE_DIR.glob("*.py"))
CLOSURE = sorted(_closure(CORE))


def test_listed_paths_exist():
    missing = [str(p.relative_to(REPO)) for p in NO_ASYNC if not p.exists()]
    assert not missing, f"listed in the layering test but missing: {missing}"
    assert len(CORE) >= 7, CORE  # the package is there and holds its modules


def test_the_check_follows_imports():
    """The closure reaches modules the core only imports indirectly (so it really recurses)."""
    rel = {str(p.relative_to(REPO)) for p in CLOSURE}
    assert "agent/mpc/solvers.py" in rel  # core/policy -> core/plan -> mpc/solvers
    assert "agent/mpc/costs.py" in rel
    assert "feeds/model.py" in rel
    assert "agent/daemon.py" not in rel and "agent/journal.py" not in rel
    assert set(IO_ALLOWED) <= rel  # an exception that no longer applies is removed


@pytest.mark.parametrize("path", CLOSURE, ids=lambda p: str(p.relative_to(REPO)))
def test_core_and_what_it_imports_are_pure(path):
    tops = {m.split(".")[0] for m in _imports(path)}
    assert not (tops & ASYNC_OR_LOGS), f"{path} imports {tops & ASYNC_OR_LOGS}"
    io = tops & IO - IO_ALLOWED.get(str(path.relative_to(REPO)), set())
    assert not io, f"{path} imports {io} (clock, filesystem or network)"
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in BANNED_NAMES:
                pytest.fail(f"{path}:{node.lineno} calls {f.id}()")
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                if (f.value.id, f.attr) in CLOCK_CALLS:
                    pytest.fail(f"{path}:{node.lineno} reads the clock: {f.value.id}.{f.attr}()")
                if f.attr in ("read_text", "write_text", "read_bytes", "write_bytes", "open"):
                    pytest.fail(f"{path}:{node.lineno} touches the filesystem: .{f.attr}()")


@pytest.mark.parametrize("path", NO_ASYNC, ids=lambda p: str(p.relative_to(REPO)))
def test_pure_module_has_no_async_or_logging_imports(path):
    tops = {m.split(".")[0] for m in _imports(path)}
    bad = tops & ASYNC_OR_LOGS
    bad |= {m for m in _imports(path) if m.startswith(("agent.daemon", "agent.runner"))}
    assert not bad, f"{path} imports {bad}"


def test_feeds_never_import_agent():
    """Dependencies run agent -> feeds, never the reverse."""
    for p in (REPO / "feeds").glob("*.py"):
        assert not any(m.split(".")[0] == "agent" for m in _imports(p)), p
