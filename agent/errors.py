"""Agent error hierarchy.

```
AgentError
├── ConfigError(AgentError, ValueError)      bad/missing key; message names the file and key path
├── DuplicateParent(AgentError, ValueError)  a parent id already used on this journal (caller's)
├── JournalUnavailable                       the journal cannot write or read (disk full, I/O)
├── ModelError                               a model cannot work on this input (a passive
│                                            fill model on a feed without trade rows)
├── BrokerError                              .retryable: bool; from Broker.submit / cancel
│   ├── BrokerUnavailable   (retryable)      not sent or in doubt: timeouts, disconnects
│   └── BrokerRejected      (not retryable)  refused before sending (nothing reached the
│                                            venue); carries the reason
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

from typing import ClassVar, Literal

__all__ = [
    "AgentError",
    "BrokerError",
    "BrokerRejected",
    "BrokerUnavailable",
    "ConfigError",
    "DuplicateParent",
    "InternalViolation",
    "InvariantViolation",
    "JournalUnavailable",
    "ModelError",
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
    """Raised when a model cannot work on the input it was given (the input lacks what it needs)."""


class BrokerError(AgentError):
    """Base class of broker errors; ``retryable`` says whether trying again can help."""

    retryable = False


class BrokerUnavailable(BrokerError):
    """Raised on timeouts and disconnects: the request may be retried."""

    retryable = True


class BrokerRejected(BrokerError):
    """Raised when a broker refuses a request before sending it; ``reason`` is a short code.

    Nothing reached the venue, so the daemon frees the child's quantity at once (a venue's own
    reject arrives as an ``OrderRejected`` event instead).
    """

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


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
