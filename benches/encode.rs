//! Cost of turning one outbox row's jsonb text into the bytes produced to Kafka, per format.
//!
//! Each iteration parses the JSON text (as the relay does with each row) and encodes it into a
//! reused buffer. `raw-json` (parse + re-serialize) is the floor the other formats add to.
//! Run: `cargo bench --bench encode`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use outbox_relay::serialize::avro::AvroEncoder;
use outbox_relay::serialize::json_schema::JsonSchemaEncoder;
use outbox_relay::serialize::protobuf::ProtobufEncoder;
use serde_json::Value;

const EVENT: &str = r#"{"event_id":"2b1f0e4e-8f5c-4a7e-9a8e-2f6c3d1e0b77","type":"capability_invoked","conversation_id":"conv-123","capability_id":"cap-7","capability_name":"search","parameters":{"query":"outbox pattern","limit":10},"timestamp":1764000000000}"#;

const AVRO: &str = r#"{"type": "record", "name": "CapabilityInvoked", "namespace": "outbox.events", "fields": [
  {"name": "event_id", "type": {"type": "string", "logicalType": "uuid"}},
  {"name": "type", "type": "string"},
  {"name": "conversation_id", "type": "string"},
  {"name": "capability_id", "type": "string"},
  {"name": "capability_name", "type": "string"},
  {"name": "parameters", "type": "string", "outbox.json": true},
  {"name": "timestamp", "type": {"type": "long", "logicalType": "timestamp-millis"}}
]}"#;

const JSON_SCHEMA: &str = r#"{
  "$schema": "http://json-schema.org/draft-07/schema#",
  "title": "CapabilityInvoked",
  "type": "object",
  "additionalProperties": false,
  "required": ["event_id", "type", "conversation_id", "capability_id", "capability_name", "parameters", "timestamp"],
  "properties": {
    "event_id": {"type": "string", "format": "uuid"},
    "type": {"const": "capability_invoked"},
    "conversation_id": {"type": "string"},
    "capability_id": {"type": "string"},
    "capability_name": {"type": "string"},
    "parameters": {"type": "object"},
    "timestamp": {"type": "integer"}
  }
}"#;

const PROTO: &str = r#"
syntax = "proto3";
package outbox.events;
import "google/protobuf/struct.proto";

message CapabilityInvoked {
  string event_id = 1;
  string type = 2;
  string conversation_id = 3;
  string capability_id = 4;
  string capability_name = 5;
  google.protobuf.Struct parameters = 6;
  int64 timestamp = 7;
}
"#;

fn encode(c: &mut Criterion) {
    let avro = AvroEncoder::new(AVRO).unwrap();
    let json_schema = JsonSchemaEncoder::new(JSON_SCHEMA).unwrap();
    let protobuf = ProtobufEncoder::new(PROTO, None).unwrap();

    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1));
    let mut out = Vec::with_capacity(1024);

    group.bench_function("raw-json", |b| {
        b.iter(|| {
            out.clear();
            let v: Value = serde_json::from_str(black_box(EVENT)).unwrap();
            serde_json::to_writer(&mut out, &v).unwrap();
            black_box(out.len())
        })
    });
    group.bench_function("avro", |b| {
        b.iter(|| {
            out.clear();
            let v: Value = serde_json::from_str(black_box(EVENT)).unwrap();
            avro.encode(&v, &mut out).unwrap();
            black_box(out.len())
        })
    });
    group.bench_function("json-schema", |b| {
        b.iter(|| {
            out.clear();
            let v: Value = serde_json::from_str(black_box(EVENT)).unwrap();
            json_schema.encode(&v, &mut out).unwrap();
            black_box(out.len())
        })
    });
    group.bench_function("protobuf", |b| {
        b.iter(|| {
            out.clear();
            let v: Value = serde_json::from_str(black_box(EVENT)).unwrap();
            protobuf.encode(&v, &mut out).unwrap();
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
