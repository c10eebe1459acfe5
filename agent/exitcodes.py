"""Process exit codes of ``exec-agent run``, defined once (a scheduler tells the outcomes apart).

- ``COMPLETED`` (0): every parent order completed (or was cancelled on purpose by an
  operator); a graceful stop (SIGTERM, ``stop``) exits by the same rule, so a stop that leaves
  a parent unfinished is ``INCOMPLETE``;
- ``FAILED`` (1): an unexpected error (a bug or an unhandled condition: see the log);
- ``CONFIG_ERROR`` (2): bad config, missing data, bad input, an unusable path; nothing traded;
- ``INCOMPLETE`` (3): the run ended and at least one parent did not complete;
- ``HALTED`` (4): the kill switch was engaged (operator, unresolved child, journal fault).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "COMPLETED",
    "CONFIG_ERROR",
    "EPILOG",
    "FAILED",
    "HALTED",
    "INCOMPLETE",
    "exit_code",
]

COMPLETED = 0
FAILED = 1
CONFIG_ERROR = 2
INCOMPLETE = 3
HALTED = 4

#: The ``--help`` text of the codes (one place, shown by ``exec-agent run --help``).
EPILOG = (
    "exit status: 0 every parent completed; 1 unexpected error; 2 config or input error "
    "(nothing traded); 3 incomplete (a parent did not complete); 4 halted (kill switch "
    "engaged: operator, unresolved child or journal fault)"
)

# Parent statuses that count as done on purpose (see agent.daemon.RunSummary.status).
_DONE = frozenset({"completed", "cancelled"})


def exit_code(statuses: Iterable[str], *, halted: bool) -> int:
    """Return the exit code of a run from its parents' final statuses.

    Args:
        statuses: ``RunSummary.status`` of every parent.
        halted: Whether the kill switch was engaged at the end of the run.
    """
    if halted:
        return HALTED
    return COMPLETED if all(s in _DONE for s in statuses) else INCOMPLETE
