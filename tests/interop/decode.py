#!/usr/bin/env python3
"""Decode every record of a Kafka topic with confluent-kafka's own deserializers.

An independent proof that outbox-relay's bytes are right: nothing here shares code with the
relay. The topic is read from the beginning up to the high watermarks seen at start, on every
partition, and one JSON line is printed per record:

    {"partition": p, "offset": o, "key": ..., "headers": {name: utf8 value},
     "schema_id": id from bytes 1..5 of the value (null if not framed), "value": decoded}

For Protobuf the message class is built from what the registry serves for the record's schema
id (`format=serialized`), not from any file in the repository. A record that fails to decode
prints a line with "error" instead of "value"/"key", and the exit status is then 1. Not reaching
the high watermarks within 30 s exits 3.

Non-JSON values in decoded Avro (bytes, timestamps, decimals, uuids) print as base64, ISO-8601
and strings respectively.
"""

import argparse
import base64
import datetime
import decimal
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
# Imported for their side effect: the well-known types land in the default descriptor pool,
# from where a registry schema's imports of google/protobuf/*.proto are resolved.
from google.protobuf import (  # noqa: F401
    any_pb2,
    duration_pb2,
    empty_pb2,
    field_mask_pb2,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
)

FORMATS = ("avro", "json-schema", "protobuf")
DEADLINE_SECONDS = 30


def schema_id_of(data):
    """The schema id of a Confluent-framed payload (magic byte 0, then a big-endian u32)."""
    if data is None or len(data) < 5 or data[0] != 0:
        return None
    return int.from_bytes(data[1:5], "big")


def _zigzag_varint(data, pos):
    shift = result = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7


def message_indexes_of(data):
    """The Protobuf message-index path after the schema id; a lone 0 byte means [0]."""
    count, pos = _zigzag_varint(data, 5)
    if count == 0:
        return [0]
    indexes = []
    for _ in range(count):
        index, pos = _zigzag_varint(data, pos)
        indexes.append(index)
    return indexes


def add_references(client, pool, references, added):
    """Adds the files of a schema's references (Protobuf imports registered as other subjects)
    to `pool`, dependencies first, each under the name it is imported by."""
    for reference in references or []:
        if reference.name in added:
            continue
        added.add(reference.name)
        registered = client.get_version(reference.subject, reference.version, fmt="serialized")
        add_references(client, pool, registered.schema.references, added)
        file_proto = descriptor_pb2.FileDescriptorProto()
        file_proto.ParseFromString(base64.standard_b64decode(registered.schema.schema_str))
        file_proto.name = reference.name
        for dependency in file_proto.dependency:
            if dependency.startswith("google/protobuf/") and dependency not in added:
                added.add(dependency)
                known = descriptor_pool.Default().FindFileByName(dependency)
                pool.AddSerializedFile(known.serialized_pb)
        pool.Add(file_proto)


def protobuf_message_class(client, schema_id, indexes):
    """Builds the message class for `indexes` in the registry's schema `schema_id`."""
    schema = client.get_schema(schema_id, fmt="serialized")
    file_proto = descriptor_pb2.FileDescriptorProto()
    file_proto.ParseFromString(base64.standard_b64decode(schema.schema_str))
    file_proto.name = "default"  # as confluent-kafka's deserializer names it
    pool = descriptor_pool.DescriptorPool()
    add_references(client, pool, schema.references, set())
    for dependency in file_proto.dependency:
        if dependency.startswith("google/protobuf/"):
            known = descriptor_pool.Default().FindFileByName(dependency)
            pool.AddSerializedFile(known.serialized_pb)
    pool.Add(file_proto)
    file_descriptor = pool.FindFileByName(file_proto.name)
    descriptor = file_descriptor.message_types_by_name[file_proto.message_type[indexes[0]].name]
    for index in indexes[1:]:
        descriptor = descriptor.nested_types[index]
    return message_factory.GetMessageClass(descriptor)


class Decoder:
    """Decodes one field (key or value) of records in one format, with confluent-kafka."""

    def __init__(self, fmt, client, topic, field):
        self.fmt, self.client, self.topic, self.field = fmt, client, topic, field
        self._protobuf = {}  # (schema id, indexes) -> ProtobufDeserializer
        if fmt == "avro":
            self._deserializer = AvroDeserializer(client)
        elif fmt == "json-schema":
            self._deserializer = JSONDeserializer(None, schema_registry_client=client)

    def __call__(self, data):
        if data is None:
            return None
        if self.fmt == "string":
            return data.decode("utf-8")
        context = SerializationContext(self.topic, self.field)
        if self.fmt != "protobuf":
            return self._deserializer(data, context)
        schema_id = schema_id_of(data)
        if schema_id is None:
            raise ValueError("not in the Confluent wire format (no magic byte 0)")
        key = (schema_id, tuple(message_indexes_of(data)))
        if key not in self._protobuf:
            message_class = protobuf_message_class(self.client, schema_id, list(key[1]))
            self._protobuf[key] = ProtobufDeserializer(
                message_class, {"use.deprecated.format": False}, schema_registry_client=self.client
            )
        message = self._protobuf[key](data, context)
        return json_format.MessageToDict(message, preserving_proto_field_name=True)


def jsonable(value):
    if isinstance(value, (bytes, bytearray)):
        return base64.standard_b64encode(value).decode("ascii")
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def record_line(message, key_decoder, value_decoder):
    line = {"partition": message.partition(), "offset": message.offset(), "key": None}
    line["headers"] = {
        name: None if value is None else value.decode("utf-8", errors="replace")
        for name, value in (message.headers() or [])
    }
    line["schema_id"] = schema_id_of(message.value())
    try:
        line["key"] = key_decoder(message.key())
        line["value"] = value_decoder(message.value())
    except Exception as error:  # noqa: BLE001 - every failure is reported, none is fatal
        line["error"] = f"{type(error).__name__}: {error}"
    return line


def registry_client(url, user=None, password=None):
    conf = {"url": url}
    if user is not None:
        conf["basic.auth.user.info"] = f"{user}:{password or ''}"
    return SchemaRegistryClient(conf)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True, help="HOST:PORT of a Kafka broker")
    parser.add_argument("--registry", required=True, help="Schema Registry URL")
    parser.add_argument("--registry-user")
    parser.add_argument("--registry-password")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--key-format", default="string", choices=("string",) + FORMATS)
    args = parser.parse_args(argv)

    client = registry_client(args.registry, args.registry_user, args.registry_password)
    value_decoder = Decoder(args.format, client, args.topic, MessageField.VALUE)
    key_decoder = Decoder(args.key_format, client, args.topic, MessageField.KEY)

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": f"outbox-relay-decode-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    failed = False
    try:
        topic = consumer.list_topics(args.topic, timeout=10).topics.get(args.topic)
        if topic is None or topic.error is not None:
            print(f"decode.py: topic {args.topic!r} not found: {topic and topic.error}", file=sys.stderr)
            return 2
        # partition -> high watermark at start; only partitions with records are assigned.
        remaining, assignment = {}, []
        for partition in sorted(topic.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(args.topic, partition), timeout=10)
            if high > low:
                remaining[partition] = high
                assignment.append(TopicPartition(args.topic, partition, low))
        consumer.assign(assignment)

        deadline = time.monotonic() + DEADLINE_SECONDS
        while remaining and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error() is not None:
                print(f"decode.py: {message.error()}", file=sys.stderr)
                continue
            partition = message.partition()
            if partition not in remaining or message.offset() >= remaining[partition]:
                continue
            line = record_line(message, key_decoder, value_decoder)
            failed = failed or "error" in line
            print(json.dumps(line, default=jsonable), flush=True)
            if message.offset() + 1 >= remaining[partition]:
                del remaining[partition]
    finally:
        consumer.close()

    if remaining:
        print(f"decode.py: gave up after {DEADLINE_SECONDS} s short of the high watermarks: {remaining}",
              file=sys.stderr)
        return 3
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
