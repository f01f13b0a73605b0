//! Issue B end to end: rows serialized through the Schema Registry (the in-process double) by
//! the in-process relay, on real Kafka, read back by confluent-kafka's own deserializers
//! (`tests/interop/decode.py`) or byte by byte (the Confluent header's schema id).
//!
//! Parking and outage cases live in `serialization_failures.rs`.

use std::collections::HashMap;
use std::time::Duration;

use outbox_relay::config::{Format, SubjectStrategy, TopicConfig};
use outbox_relay_testkit::SchemaRegistryDouble;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::harness::{
    consume_all, create_topic, decode_with_confluent, registry_config, topic, Row, RunningRelay,
    TestOutbox,
};

const AVRO_ORDER: &str = r#"{
  "type": "record", "name": "OrderPlaced", "namespace": "it.outbox",
  "fields": [
    {"name": "event_id", "type": "string"},
    {"name": "order_id", "type": "long"},
    {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID", "SHIPPED"]}},
    {"name": "customer", "type": {"type": "record", "name": "Customer", "fields": [
        {"name": "name", "type": "string"},
        {"name": "vip", "type": "boolean"}]}},
    {"name": "lines", "type": {"type": "array", "items": {"type": "record", "name": "Line", "fields": [
        {"name": "sku", "type": "string"},
        {"name": "qty", "type": "int"}]}}},
    {"name": "attributes", "type": {"type": "map", "values": "string"}},
    {"name": "coupon", "type": ["null", "string"], "default": null},
    {"name": "placed_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "metadata", "type": "string", "outbox.json": true}
  ]
}"#;

const JSON_TICKET: &str = r#"{
  "$schema": "http://json-schema.org/draft-07/schema#",
  "title": "TicketOpened",
  "type": "object",
  "properties": {
    "event_id": {"type": "string"},
    "ticket": {"type": "integer"},
    "subject": {"type": "string"},
    "priority": {"enum": ["low", "high"]},
    "tags": {"type": "array", "items": {"type": "string"}},
    "requester": {"type": "object", "properties": {"email": {"type": "string"}}, "required": ["email"]},
    "note": {"type": ["string", "null"]}
  },
  "required": ["ticket", "subject"],
  "additionalProperties": false
}"#;

const PROTO_SHIPMENT: &str = r#"syntax = "proto3";
package it.outbox;

message ShipmentSent {
  string event_id = 1;
  int64 shipment_id = 2;
  Carrier carrier = 3;
  Address address = 4;
  repeated string parcels = 5;
  map<string, string> labels = 6;
  double weight_kg = 7;

  enum Carrier {
    CARRIER_UNSPECIFIED = 0;
    DHL = 1;
    UPS = 2;
  }
  message Address {
    string city = 1;
    string zip = 2;
  }
}
"#;

/// Registers `schema` as `{topic}-value`, relays `rows` (all on the outbox's topic, `format`),
/// decodes the topic with confluent-kafka and checks every record against its row: value
/// (after `normalize` of the decoded value and `expect` of the payload), key, row headers,
/// `event_id` header, schema id. Returns the decoded lines.
async fn round_trip(
    format: Format,
    schema_type: &str,
    decode_format: &str,
    schema: &str,
    rows: Vec<(Option<&str>, Value, Value)>,
    expect: impl Fn(&Value, Uuid) -> Value,
    normalize: impl Fn(Value) -> Value,
) -> Vec<Value> {
    let outbox = TestOutbox::new(2).await;
    let double = SchemaRegistryDouble::start().await;
    let id = double.register(&format!("{}-value", outbox.topic), schema_type, schema);
    let mut config = registry_config(&outbox, &double);
    config.topics.insert(outbox.topic.clone(), topic(format));
    let rows: Vec<Row> = rows
        .into_iter()
        .map(|(key, payload, headers)| Row::new(&outbox.topic, key, payload).headers(headers))
        .collect();
    let ids = outbox.insert_all(&rows).await;

    let relay = RunningRelay::start(&config);
    outbox
        .wait_counts(rows.len() as i64, 0, Duration::from_secs(60))
        .await;
    relay.stop().await;
    assert_eq!(outbox.count("parked").await, 0);

    let lines = decode_with_confluent(&double.url(), &outbox.topic, decode_format).await;
    assert_eq!(lines.len(), rows.len(), "{lines:#?}");
    let by_event: HashMap<&str, &Value> = lines
        .iter()
        .map(|l| (l["headers"]["event_id"].as_str().unwrap(), l))
        .collect();
    for (row, (_, event_id)) in rows.iter().zip(&ids) {
        let line = by_event
            .get(event_id.to_string().as_str())
            .unwrap_or_else(|| panic!("{event_id} not decoded: {lines:#?}"));
        assert_eq!(line["schema_id"], json!(id), "{line}");
        assert_eq!(line["key"].as_str(), row.key.as_deref(), "{line}");
        for (name, value) in row.headers.as_object().unwrap() {
            assert_eq!(&line["headers"][name], value, "header {name}: {line}");
        }
        assert_eq!(
            normalize(line["value"].clone()),
            expect(&row.payload, *event_id),
            "decoded value of row {event_id} differs from its payload"
        );
    }
    lines
}

/// The payload with the row's event_id filled in when it has none, as the relay does.
fn with_event_id(payload: &Value, event_id: Uuid) -> Value {
    let mut p = payload.clone();
    let fields = p.as_object_mut().unwrap();
    fields
        .entry("event_id")
        .or_insert_with(|| json!(event_id.to_string()));
    p
}

fn millis_of(v: &Value) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap(),
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .timestamp_millis(),
        other => panic!("not a timestamp: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_rows_round_trip_through_kafka_and_confluent_kafkas_avro_deserializer() {
    let full = json!({
        "order_id": 9_007_199_254_740_991_i64,
        "status": "NEW",
        "customer": {"name": "Zoë", "vip": true},
        "lines": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}],
        "attributes": {"channel": "web", "campaign": "spring"},
        "coupon": "SPRING24",
        "placed_at": 1_714_566_896_789_i64,
        "metadata": {"source": "checkout", "ab": [1, 2, {"x": null}], "ok": true}
    });
    let rows = vec![
        (
            Some("order-1"),
            full.clone(),
            json!({"trace": "t-1", "tenant": "acme"}),
        ),
        (
            Some("order-1"),
            json!({
                "order_id": 2, "status": "PAID",
                "customer": {"name": "Ann", "vip": false},
                "lines": [], "attributes": {},
                "coupon": null,
                "placed_at": "2024-05-01T12:34:56.789Z",
                "metadata": "just a string"
            }),
            json!({}),
        ),
        (
            None,
            // No coupon (defaults to null); its own event_id, kept as it is.
            json!({
                "event_id": "evt-from-the-payload",
                "order_id": 3, "status": "SHIPPED",
                "customer": {"name": "Bo", "vip": false},
                "lines": [{"sku": "C", "qty": 10}],
                "attributes": {"k": "v"},
                "placed_at": 0,
                "metadata": {}
            }),
            json!({"source": "billing"}),
        ),
    ];
    round_trip(
        Format::Avro,
        "AVRO",
        "avro",
        AVRO_ORDER,
        rows,
        |payload, event_id| {
            let mut p = with_event_id(payload, event_id);
            let fields = p.as_object_mut().unwrap();
            fields.entry("coupon").or_insert(Value::Null);
            let millis = millis_of(&fields["placed_at"]);
            fields.insert("placed_at".into(), json!(millis));
            p
        },
        |mut decoded| {
            // timestamp-millis decodes to a datetime (printed ISO-8601); the free-form JSON
            // field decodes to its compact JSON text.
            let fields = decoded.as_object_mut().unwrap();
            let millis = millis_of(&fields["placed_at"]);
            fields.insert("placed_at".into(), json!(millis));
            let text = fields["metadata"].as_str().expect("metadata is a string");
            let parsed: Value = serde_json::from_str(text).expect("metadata is JSON text");
            assert!(
                !text.contains(": ") && !text.contains(", "),
                "not compact: {text}"
            );
            fields.insert("metadata".into(), parsed);
            decoded
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_schema_rows_round_trip_through_kafka_and_confluent_kafkas_json_deserializer() {
    let rows = vec![
        (
            Some("t-1"),
            json!({
                "ticket": 41, "subject": "Printer on fire", "priority": "high",
                "tags": ["hw", "urgent"], "requester": {"email": "a@example.org"},
                "note": null
            }),
            json!({"trace": "t-1"}),
        ),
        (
            Some("t-1"),
            json!({"ticket": 42, "subject": "héllo ✓", "event_id": "given"}),
            json!({}),
        ),
        (
            None,
            json!({"ticket": 43, "subject": "unkeyed", "tags": []}),
            json!({"a": "b"}),
        ),
    ];
    round_trip(
        Format::JsonSchema,
        "JSON",
        "json-schema",
        JSON_TICKET,
        rows,
        with_event_id,
        |v| v,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_rows_round_trip_through_kafka_and_confluent_kafkas_protobuf_deserializer() {
    let rows = vec![
        (
            Some("s-1"),
            json!({
                "shipment_id": 9_007_199_254_740_993_i64, "carrier": "DHL",
                "address": {"city": "Lyon", "zip": "69001"},
                "parcels": ["p1", "p2"], "labels": {"fragile": "yes"}, "weight_kg": 2.5
            }),
            json!({"trace": "t-1"}),
        ),
        (
            Some("s-1"),
            // 64-bit integers as strings, the proto3 JSON mapping allows both.
            json!({"shipment_id": "7", "carrier": "UPS", "parcels": ["only"]}),
            json!({}),
        ),
        (
            None,
            json!({"event_id": "mine", "shipment_id": 8, "address": {"city": "Oslo"}}),
            json!({"x": "y"}),
        ),
    ];
    round_trip(
        Format::Protobuf,
        "PROTOBUF",
        "protobuf",
        PROTO_SHIPMENT,
        rows,
        |payload, event_id| {
            // MessageToDict prints int64 as strings.
            let mut p = with_event_id(payload, event_id);
            let id = &p["shipment_id"];
            let text = id.as_str().map_or_else(|| id.to_string(), str::to_owned);
            p["shipment_id"] = json!(text);
            p
        },
        |v| v,
    )
    .await;
}

/// An Avro record schema named `name` with a long `n` (what `insert_rows`-style payloads carry),
/// and in `v2` an extra defaulted field: distinct names and shapes give distinct schema ids.
fn avro_n(name: &str, v2: bool) -> String {
    let extra = if v2 {
        r#", {"name": "extra", "type": "string", "default": ""}"#
    } else {
        ""
    };
    format!(
        r#"{{"type": "record", "name": "{name}", "namespace": "it.strategies",
            "fields": [{{"name": "n", "type": "long"}}{extra}]}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_subject_strategy_selection_mode_and_row_override_picks_the_right_schema_id() {
    let outbox = TestOutbox::new(1).await;
    let double = SchemaRegistryDouble::start().await;
    let record = "it.strategies.Chosen";
    let t = |suffix: &str| format!("{}-{suffix}", outbox.topic);
    let (latest, by_record, by_topic_record, pinned_version, pinned_id) = (
        t("latest"),
        t("record"),
        t("topic-record"),
        t("version"),
        t("id"),
    );
    for name in [
        &latest,
        &by_record,
        &by_topic_record,
        &pinned_version,
        &pinned_id,
    ] {
        create_topic(name, 1).await;
    }

    // What each topic must pick, and decoys it must not.
    let latest_v1 = double.register(&format!("{latest}-value"), "AVRO", &avro_n("L", false));
    let latest_v2 = double.register(&format!("{latest}-value"), "AVRO", &avro_n("L", true));
    let record_id = double.register(record, "AVRO", &avro_n("R", false));
    double.register(
        &format!("{by_record}-value"),
        "AVRO",
        &avro_n("Decoy1", false),
    );
    let topic_record_id = double.register(
        &format!("{by_topic_record}-{record}"),
        "AVRO",
        &avro_n("TR", false),
    );
    double.register(
        &format!("{by_topic_record}-value"),
        "AVRO",
        &avro_n("Decoy2", false),
    );
    let version_v1 = double.register(
        &format!("{pinned_version}-value"),
        "AVRO",
        &avro_n("V", false),
    );
    let version_v2 = double.register(
        &format!("{pinned_version}-value"),
        "AVRO",
        &avro_n("V", true),
    );
    let pinned = double.register("some-unrelated-subject", "AVRO", &avro_n("P", false));
    double.register(
        &format!("{pinned_id}-value"),
        "AVRO",
        &avro_n("Decoy3", false),
    );
    let override_v1 = double.register("row-override", "AVRO", &avro_n("O", false));
    let override_v2 = double.register("row-override", "AVRO", &avro_n("O", true));
    let all = [
        latest_v1,
        latest_v2,
        record_id,
        topic_record_id,
        version_v1,
        version_v2,
        pinned,
        override_v1,
        override_v2,
    ];
    let distinct: std::collections::HashSet<_> = all.iter().collect();
    assert_eq!(
        distinct.len(),
        all.len(),
        "ids must tell the schemas apart: {all:?}"
    );

    let mut config = registry_config(&outbox, &double);
    let avro = || topic(Format::Avro);
    config.topics.insert(latest.clone(), avro());
    config.topics.insert(
        by_record.clone(),
        TopicConfig {
            subject_strategy: Some(SubjectStrategy::Record),
            record_name: Some(record.into()),
            ..avro()
        },
    );
    config.topics.insert(
        by_topic_record.clone(),
        TopicConfig {
            subject_strategy: Some(SubjectStrategy::TopicRecord),
            record_name: Some(record.into()),
            ..avro()
        },
    );
    config.topics.insert(
        pinned_version.clone(),
        TopicConfig {
            schema_version: Some(1),
            ..avro()
        },
    );
    config.topics.insert(
        pinned_id.clone(),
        TopicConfig {
            schema_id: Some(pinned),
            ..avro()
        },
    );

    // (row, schema id it must carry)
    let mut expected: Vec<(Row, u32)> = Vec::new();
    for (name, id) in [
        (&latest, latest_v2),
        (&by_record, record_id),
        (&by_topic_record, topic_record_id),
        (&pinned_version, version_v1),
        (&pinned_id, pinned),
    ] {
        for n in 0..3 {
            let key = format!("k{n}");
            expected.push((Row::new(name, Some(&key), json!({ "n": n })), id));
        }
    }
    // Per-row overrides on the `latest` topic: another subject, latest or a pinned version.
    expected.push((
        Row::new(&latest, Some("o1"), json!({"n": 10})).subject("row-override", None),
        override_v2,
    ));
    expected.push((
        Row::new(&latest, Some("o2"), json!({"n": 11})).subject("row-override", Some(1)),
        override_v1,
    ));
    expected.push((
        Row::new(&latest, Some("o3"), json!({"n": 12}))
            .subject(&format!("{latest}-value"), Some(1)),
        latest_v1,
    ));
    let rows: Vec<Row> = expected.iter().map(|(r, _)| r.clone()).collect();
    let ids = outbox.insert_all(&rows).await;

    let relay = RunningRelay::start(&config);
    outbox
        .wait_counts(rows.len() as i64, 0, Duration::from_secs(60))
        .await;
    relay.stop().await;
    assert_eq!(outbox.count("parked").await, 0);

    let mut seen = 0;
    for name in [
        &latest,
        &by_record,
        &by_topic_record,
        &pinned_version,
        &pinned_id,
    ] {
        for record in consume_all(name).await {
            let at = ids
                .iter()
                .position(|(_, e)| e.to_string() == record.event_id())
                .expect("a record of ours");
            let (row, id) = &expected[at];
            assert_eq!(&row.topic, name);
            assert_eq!(record.key_str(), row.key.as_deref());
            assert_eq!(
                record.schema_id(),
                *id,
                "topic {name}, row {row:?}: wrong schema id (ids: latest v1 {latest_v1} v2 \
                 {latest_v2}, record {record_id}, topic-record {topic_record_id}, version v1 \
                 {version_v1} v2 {version_v2}, pinned {pinned}, override v1 {override_v1} v2 \
                 {override_v2})"
            );
            seen += 1;
        }
    }
    assert_eq!(seen, rows.len());
}
