"""OutboxEventPublisher on both drivers against the real Postgres: the seed's behaviours,
atomicity with the caller's transaction, and the error types."""

import json
import uuid

import pytest

from conftest import rows
from outbox_publisher import (
    DEFAULT_HEADERS,
    EventPublisher,
    EventPublishingError,
    OutboxEventPublisher,
    PublishingError,
    SchemaValidationError,
    SerializationError,
    key_subject,
    value_subject,
)


async def test_publish_writes_a_row_with_event_id_added_and_default_headers_under_the_callers(
    conn, schema, topic
):
    publisher = OutboxEventPublisher(conn, schema=schema)
    value = {"type": "user_action", "user_id": "user-123"}
    async with publisher.transaction():
        event_id = await publisher.publish(
            topic, "user-123", value, headers={"correlation_id": "corr-456", "version": "2.0.0"}
        )

    assert value["event_id"] == event_id, "added to the caller's value, as the seed does"
    assert uuid.UUID(event_id).version == 7
    [row] = await rows(schema, topic)
    assert row["event_id"] == event_id
    assert row["key"] == "user-123"
    assert json.loads(row["payload"]) == value
    assert json.loads(row["headers"]) == {
        "source": "agent-orchestration-platform", "version": "2.0.0", "correlation_id": "corr-456",
    }


async def test_an_event_id_in_the_value_is_kept_as_the_rows(conn, schema, topic):
    publisher = OutboxEventPublisher(conn, schema=schema)
    given = str(uuid.uuid4())
    async with publisher.transaction():
        assert await publisher.publish(topic, None, {"event_id": given}) == given
    [row] = await rows(schema, topic)
    assert (row["event_id"], row["key"]) == (given, None)


async def test_a_rolled_back_transaction_leaves_no_row_and_a_committed_one_does(
    conn, schema, topic
):
    publisher = OutboxEventPublisher(conn, schema=schema)
    with pytest.raises(RuntimeError):
        async with publisher.transaction():
            await publisher.publish(topic, "k", {"n": "rolled back"})
            raise RuntimeError("the business change failed")
    async with publisher.transaction():
        await publisher.publish(topic, "k", {"n": "committed"})
    assert [json.loads(r["payload"])["n"] for r in await rows(schema, topic)] == ["committed"]


async def test_publish_batch_writes_in_order_in_one_call_and_returns_the_ids(conn, schema, topic):
    publisher = OutboxEventPublisher(conn, schema=schema)
    messages = [{"key": f"k{n % 2}", "value": {"n": n}, "headers": {"n": str(n)}} for n in range(20)]
    async with publisher.transaction():
        ids = await publisher.publish_batch(topic, messages)
    found = await rows(schema, topic)
    assert [r["event_id"] for r in found] == ids
    assert [json.loads(r["payload"])["n"] for r in found] == list(range(20))
    assert [m["value"]["event_id"] for m in messages] == ids
    assert json.loads(found[3]["headers"]) == {**DEFAULT_HEADERS, "n": "3"}


async def test_a_refused_batch_message_writes_none_and_names_its_index_and_field(
    conn, schema, topic
):
    publisher = OutboxEventPublisher(conn, schema=schema)
    messages = [{"key": "k", "value": {"n": 1}}, {"key": "k" * 1025, "value": {"n": 2}}]
    with pytest.raises(PublishingError) as raised:
        async with publisher.transaction():
            await publisher.publish_batch(topic, messages)
    assert raised.value.sqlstate == "22023"
    assert raised.value.field == "key"
    assert "events[1].key: 1025 bytes, more than 1024" in str(raised.value)
    assert await rows(schema, topic) == []


@pytest.mark.parametrize(
    "topic_name, headers, field, message",
    [
        ("not a topic!", None, "topic", 'topic: "not a topic!" is not a Kafka topic name'),
        (None, {"event_id": "mine"}, "headers", "headers.event_id: reserved"),
    ],
)
async def test_the_database_refusing_a_row_is_a_publishing_error_naming_the_field(
    conn, schema, topic, topic_name, headers, field, message
):
    publisher = OutboxEventPublisher(conn, schema=schema)
    with pytest.raises(PublishingError) as raised:
        async with publisher.transaction():
            await publisher.publish(topic_name or topic, "k", {"n": 1}, headers)
    assert (raised.value.sqlstate, raised.value.field) == ("22023", field)
    assert message in str(raised.value)
    assert isinstance(raised.value, EventPublishingError)


@pytest.mark.parametrize(
    "value, headers, message",
    [
        ({"at": object()}, None, "is not JSON"),
        ({"ratio": float("nan")}, None, "is not JSON"),
        ({"n": 1}, {"attempt": 3}, "header 'attempt'"),
        ("not a dict", None, "must be a dict"),
    ],
)
async def test_a_value_or_header_that_is_not_json_strings_is_a_serialization_error(
    conn, schema, topic, value, headers, message
):
    publisher = OutboxEventPublisher(conn, schema=schema)
    with pytest.raises(SerializationError, match=message):
        await publisher.publish(topic, "k", value, headers)
    # Nothing reached the database: the connection is still usable outside any transaction.
    async with publisher.transaction():
        await publisher.publish(topic, "k", {"sentinel": True})
    assert [json.loads(r["payload"]).get("sentinel") for r in await rows(schema, topic)] == [True]


async def test_an_unreachable_database_is_a_publishing_error(apg, schema, topic):
    await apg.close()
    publisher = OutboxEventPublisher(apg, schema=schema)
    with pytest.raises(PublishingError) as raised:
        await publisher.publish(topic, "k", {"n": 1})
    assert raised.value.sqlstate is None


async def test_a_connection_getter_is_called_at_each_publish(apg, pg, schema, topic):
    current = {"conn": apg}
    publisher = OutboxEventPublisher(lambda: current["conn"], schema=schema)
    await publisher.publish(topic, "a", {"n": 1})  # asyncpg, outside a transaction: autocommit
    current["conn"] = pg
    async with publisher.transaction():
        await publisher.publish(topic, "b", {"n": 2})
    assert [r["key"] for r in await rows(schema, topic)] == ["a", "b"]


async def test_flush_is_a_no_op_and_the_seed_interface_is_kept(conn, schema):
    publisher = OutboxEventPublisher(conn, schema=schema)
    assert isinstance(publisher, EventPublisher)
    assert await publisher.flush() is None
    assert (key_subject("mcp.messages"), value_subject("mcp.messages")) == (
        "mcp.messages-key", "mcp.messages-value",
    )
    assert issubclass(SchemaValidationError, SerializationError)
    assert issubclass(SerializationError, EventPublishingError)
    assert issubclass(PublishingError, EventPublishingError)
    assert not issubclass(PublishingError, SerializationError)


def test_schema_and_table_must_be_plain_identifiers(apg):
    with pytest.raises(ValueError, match="schema"):
        OutboxEventPublisher(apg, schema='x"; DROP TABLE y; --')
