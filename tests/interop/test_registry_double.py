"""confluent-kafka's own Schema Registry client and serializers, driven against our double.

If these pass, the double answers the way the reference client expects, so tests of the relay
that use the double prove something about the real registry too.

Needs the built binary: `cd testkit && cargo build`; its path comes from
OUTBOX_REGISTRY_DOUBLE_BIN, else $CARGO_TARGET_DIR/debug/ or target/debug/.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest
from confluent_kafka.schema_registry import Schema, SchemaReference, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import decode  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
TOPIC = "orders"
VALUE = SerializationContext(TOPIC, MessageField.VALUE)

AVRO = json.dumps({
    "type": "record", "name": "OrderPlaced", "namespace": "shop.v1",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "customer", "type": "string"},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
})
JSON_SCHEMA = json.dumps({
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "OrderPlaced", "type": "object",
    "properties": {"id": {"type": "integer"}, "customer": {"type": "string"}},
    "required": ["id", "customer"],
})
PROTO = """syntax = "proto3";
package shop.v1;
import "google/protobuf/timestamp.proto";
message OrderPlaced {
  int64 id = 1;
  string customer = 2;
  repeated string items = 3;
  google.protobuf.Timestamp at = 4;
}
"""


def double_binary():
    if os.environ.get("OUTBOX_REGISTRY_DOUBLE_BIN"):
        return pathlib.Path(os.environ["OUTBOX_REGISTRY_DOUBLE_BIN"])
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "testkit" / "target"))
    for candidate in (target / "debug" / "schema-registry-double",
                      REPO / "target" / "debug" / "schema-registry-double"):
        if candidate.exists():
            return candidate
    pytest.fail("schema-registry-double not built: run `cd testkit && cargo build` "
                "or set OUTBOX_REGISTRY_DOUBLE_BIN")


@pytest.fixture
def registry_url():
    process = subprocess.Popen([str(double_binary()), "--port", "0"],
                               stdout=subprocess.PIPE, text=True)
    try:
        first_line = process.stdout.readline().strip()
        assert first_line.startswith("listening on http://127.0.0.1:"), first_line
        yield first_line.removeprefix("listening on ")
    finally:
        process.terminate()
        process.wait(timeout=5)


@pytest.fixture
def client(registry_url):
    return SchemaRegistryClient({"url": registry_url})


def order_placed_class():
    """OrderPlaced, built by hand as a FileDescriptorProto (no protoc needed)."""
    file_proto = descriptor_pb2.FileDescriptorProto(
        name="shop/v1/order.proto", package="shop.v1", syntax="proto3",
        dependency=["google/protobuf/timestamp.proto"])
    message = file_proto.message_type.add(name="OrderPlaced")
    F = descriptor_pb2.FieldDescriptorProto
    message.field.add(name="id", number=1, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    message.field.add(name="customer", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    message.field.add(name="items", number=3, type=F.TYPE_STRING, label=F.LABEL_REPEATED)
    message.field.add(name="at", number=4, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                      type_name=".google.protobuf.Timestamp")
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(file_proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("shop.v1.OrderPlaced"))


def error_code_of(call):
    with pytest.raises(SchemaRegistryError) as raised:
        call()
    return raised.value.error_code


# --- the client ------------------------------------------------------------------------------

AVRO_NEW_FIELD_NO_DEFAULT = json.dumps({
    "type": "record", "name": "OrderPlaced", "namespace": "shop.v1",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "customer", "type": "string"},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "channel", "type": "string"},
    ],
})
AVRO_NEW_FIELD_WITH_DEFAULT = AVRO_NEW_FIELD_NO_DEFAULT.replace(
    '"type": "string"}]', '"type": "string", "default": "web"}]')


def test_an_incompatible_new_version_raises_http_409_under_the_default_backward_level(client):
    client.register_schema("orders-value", Schema(AVRO, "AVRO"))
    assert client.get_compatibility() == "BACKWARD"
    with pytest.raises(SchemaRegistryError) as raised:
        client.register_schema("orders-value", Schema(AVRO_NEW_FIELD_NO_DEFAULT, "AVRO"))
    assert (raised.value.http_status_code, raised.value.error_code) == (409, 409)
    assert "incompatible with an earlier schema" in raised.value.error_message
    assert client.get_versions("orders-value") == [1]
    client.register_schema("orders-value", Schema(AVRO_NEW_FIELD_WITH_DEFAULT, "AVRO"))
    assert client.get_versions("orders-value") == [1, 2]


def test_test_compatibility_and_set_compatibility_follow_the_subject_level(client):
    client.register_schema("orders-value", Schema(AVRO, "AVRO"))
    incompatible = Schema(AVRO_NEW_FIELD_NO_DEFAULT, "AVRO")
    assert client.test_compatibility("orders-value", incompatible) is False
    assert client.test_compatibility("orders-value", Schema(AVRO_NEW_FIELD_WITH_DEFAULT, "AVRO")) is True
    client.set_compatibility("orders-value", "NONE")
    assert client.test_compatibility("orders-value", incompatible) is True
    client.register_schema("orders-value", incompatible)
    assert error_code_of(lambda: client.set_compatibility("orders-value", "SIDEWAYS")) == 42203


def test_a_subject_without_its_own_level_answers_40408(client):
    client.register_schema("orders-value", Schema(AVRO, "AVRO"))
    assert error_code_of(lambda: client.get_compatibility("orders-value")) == 40408


def test_avro_referring_to_a_type_of_another_subject_round_trips_through_confluent_serializers(client):
    money = json.dumps({"type": "record", "name": "Money", "namespace": "shop.v1",
                        "fields": [{"name": "cents", "type": "long"}]})
    priced = json.dumps({"type": "record", "name": "Priced", "namespace": "shop.v1",
                         "fields": [{"name": "price", "type": "shop.v1.Money"}]})
    client.register_schema("money", Schema(money, "AVRO"))
    reference = SchemaReference("shop.v1.Money", "money", 1)
    schema_id = client.register_schema("orders-value", Schema(priced, "AVRO", [reference]))
    fetched = client.get_schema(schema_id)
    assert [(r.name, r.subject, r.version) for r in fetched.references] == [("shop.v1.Money", "money", 1)]
    serializer = AvroSerializer(client, Schema(priced, "AVRO", [reference]),
                                conf={"auto.register.schemas": False, "use.latest.version": True})
    data = serializer({"price": {"cents": 1999}}, VALUE)
    assert AvroDeserializer(client)(data, VALUE) == {"price": {"cents": 1999}}

def test_register_answers_an_id_that_get_schema_serves_back(client):
    schema_id = client.register_schema("orders-value", Schema(AVRO, "AVRO"))
    fetched = client.get_schema(schema_id)
    assert fetched.schema_type == "AVRO"
    assert json.loads(fetched.schema_str) == json.loads(AVRO)


def test_identical_schemas_share_an_id_across_subjects(client):
    a = client.register_schema("a-value", Schema(AVRO, "AVRO"))
    b = client.register_schema("b-value", Schema(AVRO, "AVRO"))
    client.set_compatibility("b-value", "NONE")
    other = client.register_schema("b-value", Schema(JSON_SCHEMA, "JSON"))
    assert a == b != other


def test_latest_and_numbered_versions_answer_subject_version_id_and_schema(client):
    first = client.register_schema("orders-value", Schema(AVRO, "AVRO"))
    client.set_compatibility("orders-value", "NONE")
    second = client.register_schema("orders-value", Schema(JSON_SCHEMA, "JSON"))
    latest = client.get_latest_version("orders-value")
    assert (latest.subject, latest.version, latest.schema_id) == ("orders-value", 2, second)
    assert latest.schema.schema_type == "JSON"
    one = client.get_version("orders-value", 1)
    assert (one.version, one.schema_id, one.schema.schema_type) == (1, first, "AVRO")


def test_lookup_finds_the_version_holding_a_schema(client):
    schema_id = client.register_schema("orders-value", Schema(AVRO, "AVRO"))
    found = client.lookup_schema("orders-value", Schema(AVRO, "AVRO"))
    assert (found.schema_id, found.version, found.subject) == (schema_id, 1, "orders-value")


def test_get_subjects_lists_what_was_registered(client):
    client.register_schema("orders-value", Schema(AVRO, "AVRO"))
    client.register_schema("team/orders-key", Schema('"string"', "AVRO"))
    assert sorted(client.get_subjects()) == ["orders-value", "team/orders-key"]
    assert client.get_latest_version("team/orders-key").subject == "team/orders-key"


def test_unknown_subject_raises_40401(client):
    assert error_code_of(lambda: client.get_latest_version("nope")) == 40401


def test_unknown_version_raises_40402(client):
    client.register_schema("orders-value", Schema(AVRO, "AVRO"))
    assert error_code_of(lambda: client.get_version("orders-value", 9)) == 40402


def test_unknown_schema_id_raises_40403(client):
    assert error_code_of(lambda: client.get_schema(4242)) == 40403


def test_lookup_of_a_schema_not_under_the_subject_raises_40403(client):
    client.register_schema("orders-value", Schema(AVRO, "AVRO"))
    assert error_code_of(lambda: client.lookup_schema("orders-value", Schema(JSON_SCHEMA, "JSON"))) == 40403


def test_an_invalid_schema_raises_42201(client):
    assert error_code_of(lambda: client.register_schema("bad", Schema("{not avro", "AVRO"))) == 42201
    assert error_code_of(lambda: client.register_schema("bad", Schema("message {", "PROTOBUF"))) == 42201


def test_compatibility_is_stored_and_read_back(client):
    assert client.get_compatibility() == "BACKWARD"
    client.set_compatibility(level="FULL")
    assert client.get_compatibility() == "FULL"


# --- serializer -> deserializer round trips ---------------------------------------------------

ORDER = {"id": 7, "customer": "ada", "note": None}


def test_avro_round_trips_with_auto_registration(client):
    serializer = AvroSerializer(client, AVRO, conf={"auto.register.schemas": True})
    data = serializer(ORDER, VALUE)
    assert decode.schema_id_of(data) == client.get_latest_version("orders-value").schema_id
    assert AvroDeserializer(client)(data, VALUE) == ORDER


def test_avro_serializer_uses_a_preregistered_latest_version(client):
    schema_id = client.register_schema("orders-value", Schema(AVRO, "AVRO"))
    serializer = AvroSerializer(client, AVRO, conf={"auto.register.schemas": False, "use.latest.version": True})
    data = serializer(ORDER, VALUE)
    assert decode.schema_id_of(data) == schema_id
    assert AvroDeserializer(client)(data, VALUE) == ORDER


def test_avro_serializer_looks_up_a_preregistered_schema(client):
    schema_id = client.register_schema("orders-value", Schema(AVRO, "AVRO"))
    serializer = AvroSerializer(client, AVRO, conf={"auto.register.schemas": False})
    assert decode.schema_id_of(serializer(ORDER, VALUE)) == schema_id


def test_json_schema_round_trips_with_auto_registration(client):
    value = {"id": 7, "customer": "ada"}
    data = JSONSerializer(JSON_SCHEMA, client, conf={"auto.register.schemas": True})(value, VALUE)
    registered = client.get_latest_version("orders-value")
    assert registered.schema.schema_type == "JSON"
    assert decode.schema_id_of(data) == registered.schema_id
    assert JSONDeserializer(None, schema_registry_client=client)(data, VALUE) == value


def test_json_schema_serializer_uses_a_preregistered_latest_version(client):
    schema_id = client.register_schema("orders-value", Schema(JSON_SCHEMA, "JSON"))
    conf = {"auto.register.schemas": False, "use.latest.version": True}
    data = JSONSerializer(JSON_SCHEMA, client, conf=conf)({"id": 1, "customer": "bo"}, VALUE)
    assert decode.schema_id_of(data) == schema_id
    assert JSONDeserializer(JSON_SCHEMA)(data, VALUE) == {"id": 1, "customer": "bo"}


def protobuf_order(message_class):
    message = message_class(id=7, customer="ada", items=["tea", "jam"])
    message.at.FromSeconds(1_700_000_000)
    return message


def test_protobuf_round_trips_with_auto_registration(client):
    OrderPlaced = order_placed_class()
    serializer = ProtobufSerializer(OrderPlaced, client, {"auto.register.schemas": True})
    data = serializer(protobuf_order(OrderPlaced), VALUE)
    assert client.get_latest_version("orders-value").schema.schema_type == "PROTOBUF"
    decoded = ProtobufDeserializer(OrderPlaced, {}, schema_registry_client=client)(data, VALUE)
    assert decoded == protobuf_order(OrderPlaced)


def test_protobuf_serializer_uses_a_preregistered_proto_text_schema(client, registry_url):
    # Registered as .proto text by another client: confluent-kafka caches schemas by id and
    # latest versions by subject, whatever the format asked for, so the client that registered
    # (or already fetched) the text would serve itself the text instead of the descriptor.
    admin = SchemaRegistryClient({"url": registry_url})
    schema_id = admin.register_schema("orders-value", Schema(PROTO, "PROTOBUF"))
    OrderPlaced = order_placed_class()
    conf = {"auto.register.schemas": False, "use.latest.version": True}
    data = ProtobufSerializer(OrderPlaced, client, conf)(protobuf_order(OrderPlaced), VALUE)
    assert decode.schema_id_of(data) == schema_id
    decoded = ProtobufDeserializer(OrderPlaced, {}, schema_registry_client=client)(data, VALUE)
    assert decoded == protobuf_order(OrderPlaced)


def test_decode_py_builds_the_protobuf_class_from_what_the_registry_serves(client, registry_url):
    # The writer's class is built by hand; the reader's only from the registry's answer.
    SchemaRegistryClient({"url": registry_url}).register_schema("orders-value", Schema(PROTO, "PROTOBUF"))
    OrderPlaced = order_placed_class()
    conf = {"auto.register.schemas": False, "use.latest.version": True}
    data = ProtobufSerializer(OrderPlaced, client, conf)(protobuf_order(OrderPlaced), VALUE)
    decoded = decode.Decoder("protobuf", client, TOPIC, MessageField.VALUE)(data)
    assert decoded == {"id": "7", "customer": "ada", "items": ["tea", "jam"], "at": "2023-11-14T22:13:20Z"}


def test_decode_py_reports_a_record_that_is_not_framed_as_an_error(client):
    with pytest.raises(Exception):
        decode.Decoder("protobuf", client, TOPIC, MessageField.VALUE)(b"plain text")
    assert decode.schema_id_of(b"\x00\x00\x00\x00\x2a\x00") == 42
    assert decode.schema_id_of(b"{}") is None


# --- decode.py end to end, only where a broker is given ----------------------------------------

@pytest.mark.skipif(not os.environ.get("OUTBOX_KAFKA_BOOTSTRAP"),
                    reason="set OUTBOX_KAFKA_BOOTSTRAP=HOST:PORT to run decode.py against a broker")
def test_decode_py_prints_every_record_and_fails_on_one_it_cannot_decode(client, registry_url):
    import uuid
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    bootstrap = os.environ["OUTBOX_KAFKA_BOOTSTRAP"]
    topic = f"decode-py-test-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, 2, 1)]).values():
        future.result()
    try:
        serializer = AvroSerializer(client, AVRO)
        producer = Producer({"bootstrap.servers": bootstrap})
        context = SerializationContext(topic, MessageField.VALUE)
        producer.produce(topic, key="k0", value=serializer(ORDER, context), partition=0,
                         headers=[("event-id", b"e0")])
        producer.produce(topic, key="k1", value=b"not framed", partition=1)
        producer.flush(10)
        run = subprocess.run([sys.executable, str(pathlib.Path(decode.__file__)), "--bootstrap", bootstrap,
                              "--registry", registry_url, "--topic", topic, "--format", "avro"],
                             capture_output=True, text=True, timeout=60)
        lines = sorted((json.loads(line) for line in run.stdout.splitlines()), key=lambda l: l["partition"])
        assert run.returncode == 1, run.stderr
        assert lines[0] == {"partition": 0, "offset": 0, "key": "k0", "headers": {"event-id": "e0"},
                            "schema_id": decode.schema_id_of(serializer(ORDER, context)), "value": ORDER}
        assert lines[1]["partition"] == 1 and "error" in lines[1]
    finally:
        for future in admin.delete_topics([topic]).values():
            future.result()
