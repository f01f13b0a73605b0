"""outbox-publisher: the seed platform's ``EventPublisher`` over a transactional outbox.

``OutboxEventPublisher`` keeps the seed's interface (``publish``, ``publish_batch``, ``flush``)
and writes each event as a row of the outbox table through the caller's own asyncpg or psycopg
connection, in the caller's transaction; outbox-relay delivers committed rows to Kafka.
``MCPEventPublisher`` and ``EvolutionEventPublisher`` are the seed's, unchanged.
"""

from .errors import (
    EventPublishingError,
    PublishingError,
    SchemaValidationError,
    SerializationError,
)
from .publisher import (
    DEFAULT_HEADERS,
    EventPublisher,
    OutboxEventPublisher,
    key_subject,
    value_subject,
)
from .specialized import EvolutionEventPublisher, MCPEventPublisher
from .uuid7 import uuid7
from .validation import AvroSchemaValidator

__all__ = [
    "AvroSchemaValidator",
    "DEFAULT_HEADERS",
    "EventPublisher",
    "EventPublishingError",
    "EvolutionEventPublisher",
    "MCPEventPublisher",
    "OutboxEventPublisher",
    "PublishingError",
    "SchemaValidationError",
    "SerializationError",
    "key_subject",
    "uuid7",
    "value_subject",
]
