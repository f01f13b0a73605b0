"""``EventPublisher`` (the seed's interface) and ``OutboxEventPublisher``, which keeps it and
writes each event as an outbox row through the caller's own connection, in the caller's own
transaction. outbox-relay then delivers committed rows to Kafka; rolled-back ones never exist.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Dict, List, Optional, Protocol, Union

from .errors import PublishingError, SerializationError
from .uuid7 import uuid7

DEFAULT_HEADERS: Dict[str, str] = {
    "source": "agent-orchestration-platform",
    "version": "1.0.0",
}

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def key_subject(topic: str) -> str:
    """The registry subject of a topic's keys, as the seed names it (``{topic}-key``)."""
    return f"{topic}-key"


def value_subject(topic: str) -> str:
    """The registry subject of a topic's values, as the seed names it (``{topic}-value``): the
    one the relay uses under its default ``subject_strategy = "topic"``."""
    return f"{topic}-value"


class EventPublisher(ABC):
    """Interface for event publishers."""

    @abstractmethod
    async def publish(
        self,
        topic: str,
        key: Optional[str],
        value: Dict[str, Any],
        headers: Optional[Dict[str, str]] = None,
    ) -> Any:
        """Publish an event to the specified topic.

        Raises:
            SerializationError: If the message cannot be serialized
            PublishingError: If the message cannot be published
        """

    @abstractmethod
    async def publish_batch(self, topic: str, messages: list[Dict[str, Any]]) -> Any:
        """Publish a batch of messages (dicts with keys 'key', 'value', 'headers') to the topic.

        Raises:
            SerializationError: If any message cannot be serialized
            PublishingError: If the messages cannot be published
        """

    @abstractmethod
    async def flush(self) -> None:
        """Flush any buffered messages.

        Raises:
            PublishingError: If the flush operation fails
        """


class Validator(Protocol):
    """Client-side validation of a value before anything is written (see ``validation``)."""

    def validate(self, topic: str, value: Dict[str, Any]) -> None: ...


Connection = Any  # an asyncpg Connection (or pool proxy) or a psycopg AsyncConnection
ConnectionSource = Union[Connection, Callable[[], Connection]]


class OutboxEventPublisher(EventPublisher):
    """The seed's ``EventPublisher``, over the outbox table: ``publish`` writes one row with the
    ``outbox_publish`` SQL function on ``connection``, inside whatever transaction that
    connection is in, so the event is committed or rolled back with the caller's own changes.

    ``connection`` is an asyncpg ``Connection`` (or a connection acquired from an asyncpg pool),
    a psycopg 3 ``AsyncConnection``, or a zero-argument callable returning one of those at each
    call (for a long-lived publisher in a service whose connection is per request, e.g. a
    ``contextvars.ContextVar``'s ``get``).

    Outside a transaction, asyncpg commits each row at once (as a ``KafkaEventPublisher`` sent
    it at once), and psycopg opens one that the caller must commit (its usual behaviour). Use
    ``async with publisher.transaction():`` to open one.

    ``schema`` and ``table`` name the outbox table; its functions are
    ``"{schema}"."{table}_publish"`` and ``"{schema}"."{table}_publish_batch"``.
    """

    def __init__(
        self,
        connection: ConnectionSource,
        *,
        schema: str = "public",
        table: str = "outbox",
        default_headers: Optional[Dict[str, str]] = None,
        validator: Optional[Validator] = None,
    ):
        for what, name in (("schema", schema), ("table", table)):
            if not _IDENTIFIER.match(name):
                raise ValueError(f"{what} {name!r}: letters, digits and underscores, at most 63")
        self._connection = connection
        self.schema = schema
        self.table = table
        self.default_headers = dict(DEFAULT_HEADERS if default_headers is None else default_headers)
        self.validator = validator
        self._one = f'"{schema}"."{table}_publish"'
        self._batch = f'"{schema}"."{table}_publish_batch"'

    # -- the seed's interface -------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        key: Optional[str],
        value: Dict[str, Any],
        headers: Optional[Dict[str, str]] = None,
    ) -> str:
        """Write the event in the connection's transaction; returns its ``event_id``.

        As the seed does: ``value["event_id"]`` is set (a time-ordered UUID v7) when absent, in
        the caller's dict; it becomes the row's ``event_id`` and so the ``event_id`` header the
        relay sends. Default headers (``source``, ``version``) are merged under ``headers``.

        Raises:
            SerializationError: value not JSON, headers not strings (SchemaValidationError: the
                value does not fit the validator's schema)
            PublishingError: the database refused the row (``sqlstate``, ``field``) or could not
                be reached
        """
        payload, row_headers, event_id = self._prepare(topic, key, value, headers)
        driver = self._driver()
        try:
            return await driver.publish(
                self._one, topic, key, payload, json.dumps(row_headers), event_id
            )
        except Exception as error:
            raise driver.wrap(error, f"Failed to publish event to {topic}") from error

    async def publish_batch(self, topic: str, messages: list[Dict[str, Any]]) -> List[str]:
        """Write ``messages`` (dicts with 'key', 'value', 'headers') in one round trip, in order;
        returns their event ids in the same order. One refused message writes none.
        """
        elements = []
        for i, message in enumerate(messages):
            try:
                value = message["value"]
            except (KeyError, TypeError) as error:
                raise SerializationError(f"messages[{i}]: no 'value'") from error
            _, row_headers, event_id = self._prepare(
                topic, message.get("key"), value, message.get("headers")
            )
            elements.append(
                {"topic": topic, "key": message.get("key"), "payload": value,
                 "headers": row_headers, "event_id": event_id}
            )
        if not elements:
            return []
        try:
            events = json.dumps(elements, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as error:  # pragma: no cover - _prepare checked each
            raise SerializationError(f"batch for {topic} is not JSON: {error}") from error
        driver = self._driver()
        try:
            return await driver.publish_batch(self._batch, events)
        except Exception as error:
            raise driver.wrap(error, f"Failed to publish batch to {topic}") from error

    async def flush(self) -> None:
        """Nothing to flush, on purpose: ``publish`` buffers nothing. Each event is a row of the
        caller's transaction, durable when that transaction commits; the relay delivers it
        from there (and it is gone if the transaction rolls back). Kept for the seed's
        interface, so callers of ``flush()`` need no change."""

    # -- for callers without a transaction --------------------------------------------------------

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator["OutboxEventPublisher"]:
        """Opens a transaction on the publisher's connection: committed when the block exits,
        rolled back (with every event published in it) when it raises::

            async with publisher.transaction():
                await conn.execute("UPDATE ...")
                await publisher.publish("mcp.conversations", "conv-1", {...})
        """
        async with self._conn().transaction():
            yield self

    # -- internals --------------------------------------------------------------------------------

    def _conn(self) -> Connection:
        conn = self._connection
        if callable(conn) and not hasattr(conn, "transaction"):
            conn = conn()
        if conn is None:
            raise PublishingError("no database connection to publish on")
        return conn

    def _driver(self) -> "_Driver":
        conn = self._conn()
        module = type(conn).__module__
        if module.startswith("asyncpg"):
            return _Asyncpg(conn)
        if module.startswith("psycopg"):
            return _Psycopg(conn)
        raise PublishingError(
            f"unsupported connection type {type(conn).__qualname__}: "
            "an asyncpg Connection or a psycopg AsyncConnection"
        )

    def _prepare(
        self,
        topic: str,
        key: Optional[str],
        value: Dict[str, Any],
        headers: Optional[Dict[str, str]],
    ) -> "tuple[str, Dict[str, str], str]":
        if not isinstance(value, dict):
            raise SerializationError(f"value for {topic} must be a dict, got {type(value).__name__}")
        if key is not None and not isinstance(key, str):
            raise SerializationError(f"key for {topic} must be a string or None, got {type(key).__name__}")
        if "event_id" not in value:
            value["event_id"] = str(uuid7())
        merged = {**self.default_headers}
        if headers:
            merged.update(headers)
        for name, header in merged.items():
            if not isinstance(name, str) or not isinstance(header, str):
                raise SerializationError(
                    f"header {name!r} for {topic}: names and values must be strings"
                )
        if self.validator is not None:
            self.validator.validate(topic, value)
        try:
            payload = json.dumps(value, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as error:
            raise SerializationError(f"value for {topic} is not JSON: {error}") from error
        event_id = value["event_id"]
        if not isinstance(event_id, str):
            raise SerializationError(f"value['event_id'] for {topic} must be a UUID string")
        return payload, merged, event_id


class _Driver:
    def __init__(self, conn: Connection):
        self.conn = conn

    async def publish(
        self, function: str, topic: str, key: Optional[str], payload: str, headers: str,
        event_id: str,
    ) -> str:
        raise NotImplementedError

    async def publish_batch(self, function: str, events: str) -> List[str]:
        raise NotImplementedError

    def wrap(self, error: Exception, context: str) -> Exception:
        if isinstance(error, SerializationError | PublishingError):
            return error
        return PublishingError(f"{context}: {error}")


class _Asyncpg(_Driver):
    # Parameters go as text and are cast in SQL, so custom type codecs set on the caller's
    # connection (jsonb, uuid) do not apply to them.
    async def publish(
        self, function: str, topic: str, key: Optional[str], payload: str, headers: str,
        event_id: str,
    ) -> str:
        return str(await self.conn.fetchval(
            f"SELECT {function}($1::text, $2::text, $3::text::jsonb, $4::text::jsonb,"
            " NULL, NULL, $5::text::uuid)::text",
            topic, key, payload, headers, event_id,
        ))

    async def publish_batch(self, function: str, events: str) -> List[str]:
        rows = await self.conn.fetch(
            f"SELECT e::text FROM {function}($1::text::jsonb) AS e", events
        )
        return [row[0] for row in rows]

    def wrap(self, error: Exception, context: str) -> Exception:
        import asyncpg

        if isinstance(error, asyncpg.PostgresError):
            return PublishingError(
                f"{context}: {error}",
                sqlstate=error.sqlstate,
                field=getattr(error, "column_name", None),
            )
        return super().wrap(error, context)


class _Psycopg(_Driver):
    async def publish(
        self, function: str, topic: str, key: Optional[str], payload: str, headers: str,
        event_id: str,
    ) -> str:
        cursor = await self.conn.execute(
            f"SELECT {function}(%s::text, %s::text, %s::text::jsonb, %s::text::jsonb,"
            " NULL, NULL, %s::text::uuid)::text",
            (topic, key, payload, headers, event_id),
        )
        row = await cursor.fetchone()
        return str(row[0])

    async def publish_batch(self, function: str, events: str) -> List[str]:
        cursor = await self.conn.execute(
            f"SELECT e::text FROM {function}(%s::text::jsonb) AS e", (events,)
        )
        return [row[0] for row in await cursor.fetchall()]

    def wrap(self, error: Exception, context: str) -> Exception:
        import psycopg

        if isinstance(error, psycopg.Error):
            diag = getattr(error, "diag", None)
            return PublishingError(
                f"{context}: {error}",
                sqlstate=error.sqlstate,
                field=getattr(diag, "column_name", None) if diag is not None else None,
            )
        return super().wrap(error, context)
