"""Agent error hierarchy.

```
AgentError
├── ConfigError(AgentError, ValueError)      bad/missing key; message names the file and key path
├── DuplicateParent(AgentError, ValueError)  a parent id already used on this journal (caller's)
├── JournalUnavailable                       the journal cannot write or read (disk full, I/O)
├── ModelError                               impact fit failed, invalid parameters
├── SolverError                              carries .result (a SolveResult)
├── BrokerError                              .retryable: bool
│   ├── BrokerUnavailable   (retryable)      timeouts, disconnects
│   ├── BrokerRejected      (not retryable)  venue said no; carries the venue's reason
│   └── BrokerProtocolError (not retryable)  venue sent something we cannot parse
└── InvariantViolation(AgentError, AssertionError)  a broken rule; crash the run; .culprit: whose
    ├── InternalViolation   (culprit "ours")      we broke it: a child above what is left, a
    │                                             duplicate id, a request the order's state forbids
    └── VenueViolation      (culprit "venue")     the venue broke it: an overfill, a fill on a
                                                  closed order that overfills the parent, a
                                                  replace below what is already filled
```

Numerical outcomes (an infeasible allocation, a solver at its iteration cap) are *results* with a
status, not exceptions; exceptions are for broken contracts.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

__all__ = [
    "AgentError",
    "BrokerError",
    "BrokerProtocolError",
    "BrokerRejected",
    "BrokerUnavailable",
    "ConfigError",
    "DuplicateParent",
    "InternalViolation",
    "InvariantViolation",
    "JournalUnavailable",
    "ModelError",
    "SolverError",
    "VenueViolation",
]


class AgentError(Exception):
    """Base class of every error the agent raises on purpose."""


class ConfigError(AgentError, ValueError):
    """Raised when a config file is missing, malformed or has a bad value; names file and key."""


class DuplicateParent(AgentError, ValueError):
    """Raised when a parent is submitted with an id the journal already knows (never reused).

    A ``ValueError`` so that the control channel answers it as a refusal with this message.
    """

    def __init__(self, parent_id: str) -> None:
        super().__init__(
            f"parent id {parent_id!r} was already used on this journal "
            "(ids are never reused: pick a new one)"
        )
        self.parent_id = parent_id


class JournalUnavailable(AgentError):
    """Raised when the journal cannot record or read (disk full, I/O error, file gone).

    Nothing may be sent without a durable intent, so the daemon engages the kill switch on it.
    """


class ModelError(AgentError):
    """Raised when an impact model cannot be fitted or has invalid parameters."""


class SolverError(AgentError):
    """Raised when no solver could produce a usable schedule; ``result`` holds the last attempt."""

    def __init__(self, message: str, result: Any = None) -> None:
        super().__init__(message)
        self.result = result


class BrokerError(AgentError):
    """Base class of broker errors; ``retryable`` says whether trying again can help."""

    retryable = False


class BrokerUnavailable(BrokerError):
    """Raised on timeouts and disconnects: the request may be retried."""

    retryable = True


class BrokerRejected(BrokerError):
    """Raised when the venue refused a request; ``reason`` is the venue's text."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class BrokerProtocolError(BrokerError):
    """Raised when the venue sent something we cannot parse."""


class InvariantViolation(AgentError, AssertionError):
    """Raised when an invariant breaks; ``culprit`` says whether we (a bug) or the venue broke it.

    Raise one of the two subclasses, which say whose fault it is; the base stands for "ours".
    """

    culprit: ClassVar[Literal["ours", "venue"]] = "ours"


class InternalViolation(InvariantViolation):
    """Raised when our own code breaks a rule (e.g. a child above what the parent has left)."""

    culprit: ClassVar[Literal["ours", "venue"]] = "ours"


class VenueViolation(InvariantViolation):
    """Raised when a venue report breaks a rule (e.g. a fill larger than its order)."""

    culprit: ClassVar[Literal["ours", "venue"]] = "venue"
