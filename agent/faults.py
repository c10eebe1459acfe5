"""Crash points for the kill -9 campaign: the process kills itself at a named place.

``EXEC_AGENT_CRASH_AT=site:n`` (read once, at import) makes the n-th pass through
``crash_point(site)`` send SIGKILL to the process itself: the same death as ``kill -9`` from
outside, but at an exact, reproducible place (after an intent is durable and before the order
is sent, after the send, after an event is applied but before it is durable, after a cancel or
a cancel/replace left for the venue...). Unset, it costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

__all__ = ["SITES", "crash_point"]

SITES = ("intent_durable", "submitted", "event_applied", "decided", "requested")


def _parse(spec: str) -> tuple[str, int] | None:
    if not spec:
        return None
    site, _, n = spec.partition(":")
    if site not in SITES or not n.isdigit() or int(n) < 1:
        raise ValueError(f"EXEC_AGENT_CRASH_AT={spec!r}: want SITE:N with SITE in {SITES}, N >= 1")
    return site, int(n)


_TARGET = _parse(os.environ.get("EXEC_AGENT_CRASH_AT", ""))
_COUNTS: dict[str, int] = {}


def crash_point(site: str) -> None:
    """Die here by SIGKILL if this is the configured site's n-th pass."""
    if _TARGET is None or _TARGET[0] != site:
        return
    _COUNTS[site] = _COUNTS.get(site, 0) + 1
    if _COUNTS[site] == _TARGET[1]:
        os.kill(os.getpid(), signal.SIGKILL)
