"""The seed's error types, with the same meaning.

    EventPublishingError
    ├── SerializationError        the event cannot be turned into a row (not JSON, bad headers)
    │   └── SchemaValidationError the value does not fit its schema (client-side validation)
    └── PublishingError           the database refused the row or could not be reached
"""

from __future__ import annotations


class EventPublishingError(Exception):
    """Base exception for event publishing errors."""


class SerializationError(EventPublishingError):
    """Exception for serialization errors."""


class PublishingError(EventPublishingError):
    """Exception for message publishing errors: the database refused the row, or was unreachable.

    ``sqlstate`` is the database's error code when it answered (``22023`` when the publish
    function refused an input; ``field`` then names the column: ``topic``, ``key``, ``payload``,
    ``headers``, ...). Both are ``None`` when the database could not be reached.
    """

    def __init__(self, message: str, *, sqlstate: str | None = None, field: str | None = None):
        super().__init__(message)
        self.sqlstate = sqlstate
        self.field = field


class SchemaValidationError(SerializationError):
    """Exception for schema validation errors."""
