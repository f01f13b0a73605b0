"""The seed's specialized publishers against the catalogue in schemas/: each of the nine
methods writes its event to the catalogue's topic with the catalogue's key, and the event
encodes with the topic's Avro schema (as the relay encodes it: outbox.json fields as JSON text).
Also the optional client-side validator, from schemas/ files and from a registry."""

import io
import json
import subprocess

import fastavro
import pytest

from conftest import REPO, binary, rows
from outbox_publisher import (
    AvroSchemaValidator,
    EventPublisher,
    EvolutionEventPublisher,
    MCPEventPublisher,
    OutboxEventPublisher,
    SchemaValidationError,
)

SCHEMAS = REPO / "schemas"

# (method, arguments, topic, key argument, the seed's event fields besides type/timestamp)
CALLS = [
    ("mcp", "publish_conversation_created",
     dict(conversation_id="conv-1", user_id="user-1", agent_id="agent-1",
          metadata={"source": "web-interface", "session_id": "sess-abc"}),
     "mcp.conversations", "conversation_id"),
    ("mcp", "publish_message_added",
     dict(conversation_id="conv-1", message_id="msg-1", content="Hello", role="user"),
     "mcp.messages", "message_id"),
    ("mcp", "publish_response_generated",
     dict(conversation_id="conv-1", message_id="msg-2", model="m-1", tokens=42, latency=0.25),
     "mcp.responses", "message_id"),
    ("mcp", "publish_capability_invoked",
     dict(conversation_id="conv-1", capability_id="cap-1", capability_name="search",
          parameters={"q": "outbox"}),
     "mcp.capabilities", "capability_id"),
    ("mcp", "publish_capability_completed",
     dict(conversation_id="conv-1", capability_id="cap-1", capability_name="search",
          result={"hits": 3}, duration=0.5),
     "mcp.capabilities", "capability_id"),
    ("evolution", "publish_evolution_proposal_created",
     dict(proposal_id="prop-1", agent_id="agent-1", target_system="memory-service",
          proposal_content={"title": "Faster retrieval"}),
     "evolution.proposals", "proposal_id"),
    ("evolution", "publish_evolution_validation_started",
     dict(proposal_id="prop-1", validation_id="val-1", validation_steps=[{"step": "lint"}]),
     "evolution.validations", "validation_id"),
    ("evolution", "publish_evolution_validation_completed",
     dict(proposal_id="prop-1", validation_id="val-1", result={"ok": True}, is_valid=True),
     "evolution.validations", "validation_id"),
    ("evolution", "publish_evolution_applied",
     dict(proposal_id="prop-1", implementation_id="impl-1", changes=[{"file": "a.py"}],
          affected_systems=["memory-service"]),
     "evolution.implementations", "implementation_id"),
]


class Recording(EventPublisher):
    def __init__(self):
        self.published = []

    async def publish(self, topic, key, value, headers=None):
        self.published.append((topic, key, value, headers))

    async def publish_batch(self, topic, messages):
        raise NotImplementedError

    async def flush(self):
        pass


def specialized(kind, base):
    return MCPEventPublisher(base) if kind == "mcp" else EvolutionEventPublisher(base)


def catalogue_schema(topic):
    return json.loads((SCHEMAS / f"{topic}-value.avsc").read_text())


def as_avro(schema, event):
    """The relay's reading of an outbox payload: outbox.json fields become their JSON text."""
    records = schema if isinstance(schema, list) else [schema]
    for record in records:
        if record["fields"][1]["type"]["symbols"] == [event["type"]]:
            json_fields = {f["name"] for f in record["fields"] if f.get("outbox.json")}
            return {k: json.dumps(v, separators=(",", ":")) if k in json_fields else v
                    for k, v in event.items()}
    raise AssertionError(f"no record for {event['type']}")


@pytest.mark.parametrize("kind, method, args, topic, key_arg", CALLS, ids=[c[1] for c in CALLS])
async def test_each_method_publishes_on_the_catalogue_topic_and_key_and_encodes_with_its_schema(
    kind, method, args, topic, key_arg
):
    recording = Recording()
    await getattr(specialized(kind, recording), method)(**args)
    [(got_topic, key, event, headers)] = recording.published
    assert (got_topic, key, headers) == (topic, args[key_arg], None)
    assert event["type"] == method.removeprefix("publish_")
    assert set(event) == {"type", "timestamp", *args}
    assert {k: event[k] for k in args} == args

    event["event_id"] = "0b6f3c1e-5a7d-4e8f-9a21-3c4d5e6f7a01"  # as OutboxEventPublisher adds it
    schema = fastavro.parse_schema(catalogue_schema(topic))
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, as_avro(catalogue_schema(topic), event))
    buffer.seek(0)
    decoded = fastavro.schemaless_reader(buffer, schema, schema)
    assert decoded["type"] == event["type"]
    assert decoded[key_arg] == args[key_arg]


def test_the_nine_methods_are_the_catalogues_nine_event_types():
    examples = {p.stem for p in (SCHEMAS / "examples").glob("*.json")}
    assert {c[1].removeprefix("publish_") for c in CALLS} == examples
    for cls in (MCPEventPublisher, EvolutionEventPublisher):
        methods = {m for m in vars(cls) if m.startswith("publish_")}
        assert methods == {c[1] for c in CALLS if c[0] == ("mcp" if cls is MCPEventPublisher else "evolution")}


async def test_the_nine_methods_write_rows_through_the_outbox_publisher(apg, schema):
    topics = {c[3] for c in CALLS}
    await apg.execute(f'DELETE FROM "{schema}".outbox WHERE topic = ANY($1)', list(topics))
    base = OutboxEventPublisher(apg, schema=schema,
                                validator=AvroSchemaValidator.from_directory(SCHEMAS))
    async with base.transaction():
        for kind, method, args, _, _ in CALLS:
            await getattr(specialized(kind, base), method)(**args)
    for _, method, args, topic, key_arg in CALLS:
        found = [r for r in await rows(schema, topic)
                 if json.loads(r["payload"])["type"] == method.removeprefix("publish_")]
        assert len(found) == 1, method
        assert found[0]["key"] == args[key_arg]
        assert json.loads(found[0]["payload"])["event_id"] == found[0]["event_id"]


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(role=7), "value does not match subject mcp.messages-value"),
        (dict(colour="red"), "value.colour: not a field of record"),
        (dict(type="message_deleted"), "not a symbol of enum"),
    ],
)
async def test_validation_refuses_a_value_that_misfits_its_schema_before_anything_is_written(
    apg, schema, change, message
):
    topic = "mcp.messages"
    await apg.execute(f'DELETE FROM "{schema}".outbox WHERE topic = $1', topic)
    publisher = OutboxEventPublisher(apg, schema=schema,
                                     validator=AvroSchemaValidator.from_directory(SCHEMAS))
    value = {"type": "message_added", "conversation_id": "c", "message_id": "m",
             "content": "hi", "role": "user", "timestamp": 1767268800000, **change}
    with pytest.raises(SchemaValidationError, match=message):
        await publisher.publish(topic, "m", value)
    assert await rows(schema, topic) == []


async def test_validation_refuses_a_topic_without_a_schema_unless_told_not_to(apg, schema, topic):
    strict = OutboxEventPublisher(apg, schema=schema,
                                  validator=AvroSchemaValidator.from_directory(SCHEMAS))
    with pytest.raises(SchemaValidationError, match=f"no schema for subject {topic}-value"):
        await strict.publish(topic, "k", {"n": 1})
    lax = OutboxEventPublisher(
        apg, schema=schema,
        validator=AvroSchemaValidator.from_directory(SCHEMAS, require_schema=False))
    await lax.publish(topic, "k", {"n": 1})
    assert len(await rows(schema, topic)) == 1


@pytest.fixture
def registry_url():
    process = subprocess.Popen(
        [str(binary("OUTBOX_REGISTRY_DOUBLE_BIN", "schema-registry-double")), "--port", "0"],
        stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline().strip()
        assert line.startswith("listening on http://"), line
        yield line.removeprefix("listening on ")
    finally:
        process.terminate()
        process.wait(timeout=5)


def test_validation_against_a_registry_uses_the_subjects_latest_schema(registry_url):
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

    text = (SCHEMAS / "mcp.capabilities-value.avsc").read_text()
    SchemaRegistryClient({"url": registry_url}).register_schema(
        "mcp.capabilities-value", Schema(text, "AVRO"))
    validator = AvroSchemaValidator.from_registry(registry_url)
    good = {"event_id": "0b6f3c1e-5a7d-4e8f-9a21-3c4d5e6f7a01", "type": "capability_completed",
            "conversation_id": "c", "capability_id": "cap", "capability_name": "search",
            "result": {"hits": 3}, "duration": 0.2, "timestamp": 1767268800000}
    validator.validate("mcp.capabilities", good)
    with pytest.raises(SchemaValidationError, match="fits no branch"):
        validator.validate("mcp.capabilities", {**good, "type": "capability_invoked"})
    with pytest.raises(SchemaValidationError, match="no schema for subject mcp.messages-value"):
        validator.validate("mcp.messages", good)
