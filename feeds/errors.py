"""Feed errors.

```
FeedError                a live feed's reader stopped (it reconnects after drops by itself)
├── SequenceGap          resubscribe / resync from a fresh snapshot
└── FeedParseError       a message or file could not be decoded; carries where
    └── FeedDataError    a data file is missing, empty or of an unknown format
```
"""

from __future__ import annotations

__all__ = ["FeedDataError", "FeedError", "FeedParseError", "SequenceGap"]


class FeedError(Exception):
    """Base class of every feed error; raised itself when a live feed's reader task stopped."""


class SequenceGap(FeedError):
    """Raised when update ids skip; the caller resyncs from a fresh snapshot."""


class FeedParseError(FeedError):
    """Raised when a message or a data file cannot be decoded at all.

    The message names the file (or stream) and, where known, the row or field.
    """


class FeedDataError(FeedParseError):
    """Raised when a data file is missing, empty or of an unknown format."""
