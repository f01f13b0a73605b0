"""End to end: a service function changes a business row and publishes a seed event in one
transaction. Rolled back: neither exists, and nothing reaches Kafka. Committed: the relay
delivers the event and confluent-kafka's AvroDeserializer decodes it.

Runs the relay binary and the registry double (`cargo build --workspace`) on the local Kafka.
The topic is the seed's `mcp.conversations` under a prefix of this test (`topic_prefix`), its
schema the catalogue's, registered by the relay at startup under `<topic>-value`."""

import asyncio
import shutil
import subprocess
import time

import asyncpg
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from conftest import DATABASE_URL, KAFKA, REPO, binary, migrate, unique
from outbox_publisher import MCPEventPublisher, OutboxEventPublisher
from test_catalogue import registry_url  # noqa: F401 (fixture)


async def start_conversation(conn, events: MCPEventPublisher, schema, conversation_id, fail):
    """The service function: the business row and its event, in one transaction."""
    async with conn.transaction():
        await conn.execute(
            f'INSERT INTO "{schema}".conversations (id, user_id) VALUES ($1, $2)',
            conversation_id, "user-456")
        await events.publish_conversation_created(
            conversation_id=conversation_id, user_id="user-456", agent_id="agent-789",
            metadata={"source": "web-interface"})
        if fail:
            raise RuntimeError("the service failed after publishing")


def create_topic(topic):
    admin = AdminClient({"bootstrap.servers": KAFKA})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)


def read_topic(topic, registry):
    """Every record of the topic, decoded, up to the high watermark seen now."""
    consumer = Consumer({"bootstrap.servers": KAFKA, "group.id": unique("py-e2e-"),
                         "enable.auto.commit": False})
    deserialize = AvroDeserializer(SchemaRegistryClient({"url": registry}))
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, 0)])
        records, deadline = [], time.monotonic() + 30
        while len(records) < high and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            value = deserialize(msg.value(), SerializationContext(topic, MessageField.VALUE))
            records.append((msg.key().decode(), dict(msg.headers()), value))
        return records
    finally:
        consumer.close()


async def wait_delivered(conn, schema, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = await conn.fetch(f'SELECT status, last_error FROM "{schema}".outbox')
        if status and all(r["status"] == "delivered" for r in status):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not delivered within {timeout}s: {status}")


async def test_a_rolled_back_service_call_sends_nothing_and_a_committed_one_is_delivered_as_avro(
    tmp_path, registry_url  # noqa: F811
):
    prefix = unique("mcp_")
    topic = f"{prefix}.conversations"
    create_topic(topic)
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    shutil.copy(REPO / "schemas" / "mcp.conversations-value.avsc", schemas / f"{topic}-value.avsc")
    schema = unique("py_e2e_")
    config = migrate(tmp_path, schema, f"""
[relay]
poll_interval_ms = 50

[registry]
url = "{registry_url}"
auto_register = true
schemas_dir = "{schemas}"

[topics."{topic}"]
format = "avro"
""")

    conn = await asyncpg.connect(DATABASE_URL)
    relay = None
    try:
        await conn.execute(
            f'CREATE TABLE "{schema}".conversations (id text PRIMARY KEY, user_id text NOT NULL)')
        events = MCPEventPublisher(OutboxEventPublisher(conn, schema=schema))
        events.topic_prefix = prefix

        try:
            await start_conversation(conn, events, schema, "conv-rolled-back", fail=True)
        except RuntimeError:
            pass
        await start_conversation(conn, events, schema, "conv-committed", fail=False)
        assert [r["id"] for r in await conn.fetch(
            f'SELECT id FROM "{schema}".conversations')] == ["conv-committed"]

        relay = subprocess.Popen(
            [str(binary("OUTBOX_RELAY_BIN", "outbox-relay")), "run", "--config", str(config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        await wait_delivered(conn, schema)
        row = await conn.fetchrow(f'SELECT event_id::text FROM "{schema}".outbox')
    finally:
        if relay is not None:
            relay.terminate()
            _, log = relay.communicate(timeout=30)
            print(log)  # shown by pytest if the test failed
        await conn.close()

    # The committed event is the topic's only record: the rolled-back one, written before it,
    # never existed, and the relay delivers in id order.
    [(key, headers, value)] = read_topic(topic, registry_url)
    assert key == "conv-committed"
    assert value["type"] == "conversation_created"
    assert value["conversation_id"] == "conv-committed"
    assert str(value["event_id"]) == row["event_id"] == headers["event_id"].decode()
    assert value["metadata"] == '{"source":"web-interface"}'
    assert headers["source"] == b"agent-orchestration-platform"
