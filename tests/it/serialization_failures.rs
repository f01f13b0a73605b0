//! Issue B when things go wrong: rows that can never be serialized are parked with a reason
//! naming the subject and the field, while their neighbours are delivered; a registry that is
//! away (or refuses our credentials) costs no row an attempt; in steady state no row costs a
//! registry call.

use std::collections::HashSet;
use std::time::Duration;

use nix::sys::signal::Signal;
use outbox_relay::config::{Format, OnParked, Secret, TopicConfig};
use outbox_relay_testkit::{DoubleOptions, SchemaRegistryDouble};
use serde_json::json;

use crate::harness::{
    consume_all, create_topic, kafka_bootstrap, registry_config, signal, spawn_relay_binary, topic,
    wait_exit, wait_for_log, Row, RunningRelay, TestOutbox,
};

const AVRO_EVENT: &str = r#"{
  "type": "record", "name": "ColorPicked", "namespace": "it.failures",
  "fields": [
    {"name": "n", "type": "long"},
    {"name": "color", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN"]}},
    {"name": "name", "type": "string"}
  ]
}"#;

const JSON_EVENT: &str = r#"{
  "type": "object",
  "properties": {
    "ticket": {"type": "integer", "minimum": 1},
    "requester": {"type": "object", "properties": {"email": {"type": "string"}}}
  },
  "required": ["ticket"],
  "additionalProperties": false
}"#;

const PROTO_EVENT: &str = r#"syntax = "proto3";
package it.failures;
message Counted { int64 count = 1; string label = 2; }
"#;

/// Nothing is left pending, parked or attempted, and no row carries an error.
async fn assert_untouched(outbox: &TestOutbox, rows: i64) {
    let states = outbox.rows().await;
    assert_eq!(states.len() as i64, rows);
    for s in &states {
        assert!(
            s.status == "pending" && s.attempts == 0 && s.last_error.is_none(),
            "a registry outage touched a row: {s:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_unserializable_row_is_parked_naming_subject_and_field_while_neighbours_are_delivered(
) {
    let outbox = TestOutbox::new(2).await;
    let double = SchemaRegistryDouble::start().await;
    let hold = outbox.topic.clone();
    let skip = format!("{hold}-skip");
    let json_topic = format!("{hold}-json");
    let proto = format!("{hold}-proto");
    for t in [&skip, &json_topic, &proto] {
        create_topic(t, 2).await;
    }
    double.register(&format!("{hold}-value"), "AVRO", AVRO_EVENT);
    double.register(&format!("{skip}-value"), "AVRO", AVRO_EVENT);
    double.register(&format!("{json_topic}-value"), "JSON", JSON_EVENT);
    double.register(&format!("{proto}-value"), "PROTOBUF", PROTO_EVENT);
    let mut config = registry_config(&outbox, &double);
    config.topics.insert(hold.clone(), topic(Format::Avro)); // on_parked: hold-key (default)
    config.topics.insert(
        skip.clone(),
        TopicConfig {
            on_parked: Some(OnParked::Skip),
            ..topic(Format::Avro)
        },
    );
    config
        .topics
        .insert(json_topic.clone(), topic(Format::JsonSchema));
    config.topics.insert(proto.clone(), topic(Format::Protobuf));

    let ok = |n: i64| json!({"n": n, "color": "GREEN", "name": "fine"});
    // (row, Some(substrings the parked reason must contain) | None: delivered | "held": pending)
    enum Fate {
        Delivered,
        Parked(Vec<String>),
        Held,
    }
    let subject = |t: &str| format!("`{t}-value`");
    let rows: Vec<(Row, Fate)> = vec![
        (Row::new(&hold, Some("a"), ok(1)), Fate::Delivered),
        (
            Row::new(
                &hold,
                Some("wrong-type"),
                json!({"n": "abc", "color": "RED", "name": "x"}),
            ),
            Fate::Parked(vec![subject(&hold), "field `n`".into()]),
        ),
        (Row::new(&hold, Some("b"), ok(2)), Fate::Delivered),
        (
            Row::new(
                &hold,
                Some("enum"),
                json!({"n": 1, "color": "PURPLE", "name": "x"}),
            ),
            Fate::Parked(vec![
                subject(&hold),
                "field `color`".into(),
                "PURPLE".into(),
            ]),
        ),
        (
            Row::new(&hold, Some("missing"), json!({"n": 1, "color": "RED"})),
            Fate::Parked(vec![subject(&hold), "field `name`".into()]),
        ),
        (
            Row::new(&hold, Some("nosubject"), ok(3)).subject("no-such-subject", None),
            Fate::Parked(vec!["`no-such-subject`".into(), "not found".into()]),
        ),
        (Row::new(&hold, None, ok(4)), Fate::Delivered),
        (Row::new(&hold, Some("c"), ok(5)), Fate::Delivered),
        // Later rows of held keys: fine payloads, but their key is held by a parked row.
        (Row::new(&hold, Some("wrong-type"), ok(6)), Fate::Held),
        (Row::new(&hold, Some("enum"), ok(7)), Fate::Held),
        (Row::new(&hold, Some("nosubject"), ok(8)), Fate::Held),
        // on_parked = skip: the key goes on.
        (
            Row::new(
                &skip,
                Some("s"),
                json!({"n": 1, "color": "BLUE", "name": "x"}),
            ),
            Fate::Parked(vec![subject(&skip), "field `color`".into()]),
        ),
        (Row::new(&skip, Some("s"), ok(9)), Fate::Delivered),
        (Row::new(&skip, Some("t"), ok(10)), Fate::Delivered),
        // JSON Schema.
        (
            Row::new(&json_topic, Some("j"), json!({"ticket": 0})),
            Fate::Parked(vec![subject(&json_topic), "field `ticket`".into()]),
        ),
        (
            Row::new(
                &json_topic,
                Some("j2"),
                json!({"ticket": 1, "requester": {"email": 5}}),
            ),
            Fate::Parked(vec![subject(&json_topic), "requester.email".into()]),
        ),
        (
            Row::new(&json_topic, Some("j3"), json!({"ticket": 2})),
            Fate::Delivered,
        ),
        // Protobuf: a field the message does not declare.
        (
            Row::new(&proto, Some("p"), json!({"count": 1, "bogus": true})),
            Fate::Parked(vec![subject(&proto), "bogus".into()]),
        ),
        (
            Row::new(&proto, Some("p2"), json!({"count": "2", "label": "x"})),
            Fate::Delivered,
        ),
    ];
    let inserted: Vec<Row> = rows.iter().map(|(r, _)| r.clone()).collect();
    let ids = outbox.insert_all(&inserted).await;
    let count = |f: fn(&Fate) -> bool| rows.iter().filter(|(_, fate)| f(fate)).count() as i64;
    let delivered = count(|f| matches!(f, Fate::Delivered));
    let parked = count(|f| matches!(f, Fate::Parked(_)));

    let relay = RunningRelay::start(&config);
    outbox
        .wait_counts(delivered, parked, Duration::from_secs(60))
        .await;
    // Claimed after every parked row was parked: the held rows were passed by since (and
    // stopping drains every batch in flight).
    let sentinel = outbox.deliver_sentinel(&hold, ok(99)).await;
    relay.stop().await;

    let states = outbox.rows().await;
    for ((row, fate), state) in rows.iter().zip(&states) {
        let what = format!("row {row:?}\n  is {state:?}");
        match fate {
            Fate::Delivered => assert_eq!(state.status, "delivered", "{what}"),
            Fate::Held => {
                assert_eq!(state.status, "pending", "{what}");
                assert_eq!(state.attempts, 0, "{what}");
            }
            Fate::Parked(needles) => {
                assert_eq!(state.status, "parked", "{what}");
                assert_eq!(state.attempts, 1, "{what}");
                assert_eq!(state.holds_key, row.topic != skip, "{what}");
                let reason = state.last_error.as_deref().unwrap_or_default();
                for needle in needles {
                    assert!(
                        reason.contains(needle.as_str()),
                        "{needle:?} not in reason of {what}"
                    );
                }
                println!("parked: {reason}");
            }
        }
    }
    // Kafka holds the delivered rows and nothing else.
    let mut in_kafka = HashSet::new();
    for t in [&hold, &skip, &json_topic, &proto] {
        for r in consume_all(t).await {
            assert!(in_kafka.insert(r.event_id().to_owned()), "twice: {r:?}");
        }
    }
    let want: HashSet<String> = rows
        .iter()
        .zip(&ids)
        .filter(|((_, fate), _)| matches!(fate, Fate::Delivered))
        .map(|(_, (_, e))| e.to_string())
        .chain([outbox.row(sentinel).await.event_id.to_string()])
        .collect();
    assert_eq!(in_kafka, want);
}

/// Relays `rows` rows while the registry is away (`take_down`), checks nothing was touched,
/// heals it, and checks every row is delivered without a single attempt recorded. Returns the
/// registry requests seen while it was away.
async fn outage_then_recovery(
    take_down: impl AsyncFnOnce(&SchemaRegistryDouble),
    heal: impl AsyncFnOnce(&SchemaRegistryDouble),
    rows: i64,
) -> u64 {
    let outbox = TestOutbox::new(2).await;
    let double = SchemaRegistryDouble::start().await;
    // A subject the relay has never seen: nothing cached to fall back on.
    double.register(
        &format!("{}-value", outbox.topic),
        "JSON",
        r#"{"type": "object"}"#,
    );
    let mut config = registry_config(&outbox, &double);
    config
        .topics
        .insert(outbox.topic.clone(), topic(Format::JsonSchema));
    outbox.insert_rows(rows, 10).await;

    take_down(&double).await;
    let before = double.requests();
    let relay = RunningRelay::start(&config);
    // The relay's turn at the rows while the registry is away: a batch claimed some and ended
    // (no sentinel can go through an outage, which pauses every row).
    outbox.wait_claimed(1, Duration::from_secs(60)).await;
    // The window in which the registry requests are counted.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let while_down = double.requests() - before;
    assert_untouched(&outbox, rows).await;
    assert_eq!(outbox.total_attempts().await, 0);

    heal(&double).await;
    outbox.wait_delivered(rows, Duration::from_secs(60)).await;
    relay.stop().await;
    assert_eq!(outbox.count("parked").await, 0);
    assert_eq!(outbox.total_attempts().await, 0);
    let errors: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {} WHERE last_error IS NOT NULL",
        outbox.table()
    ))
    .fetch_one(&outbox.pool)
    .await
    .unwrap();
    assert_eq!(errors, 0);
    while_down
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_down_for_a_while_costs_no_attempt_and_parks_nothing_then_everything_is_delivered()
{
    let requests = outage_then_recovery(
        async |d: &SchemaRegistryDouble| d.go_down().await,
        async |d: &SchemaRegistryDouble| d.come_back().await,
        1_000,
    )
    .await;
    // Connections are refused while down, so the double counts none (the 503 test counts them).
    println!("registry requests answered while down: {requests}");
    assert_eq!(requests, 0, "the double was not down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_answering_503_pauses_the_relay_which_probes_instead_of_asking_per_row() {
    let rows = 1_000;
    let requests = outage_then_recovery(
        async |d: &SchemaRegistryDouble| d.fail_with(Some(503)),
        async |d: &SchemaRegistryDouble| d.fail_with(None),
        rows,
    )
    .await;
    println!("registry requests during 3 s of 503s, {rows} rows pending: {requests}");
    assert!(requests > 0, "the relay never asked");
    assert!(
        requests < rows as u64 / 10,
        "{requests} requests for {rows} rows: the relay asks per row instead of pausing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_state_costs_no_registry_call_per_row() {
    let outbox = TestOutbox::new(3).await;
    let double = SchemaRegistryDouble::start().await;
    double.register(
        &format!("{}-value", outbox.topic),
        "AVRO",
        r#"{"type": "record", "name": "N", "fields": [{"name": "n", "type": "long"}]}"#,
    );
    let mut config = registry_config(&outbox, &double);
    config
        .topics
        .insert(outbox.topic.clone(), topic(Format::Avro));
    let relay = RunningRelay::start(&config);
    outbox.insert_rows(200, 20).await;
    outbox.wait_delivered(200, Duration::from_secs(60)).await;
    let warm = double.requests();

    outbox.insert_rows(5_000, 50).await;
    outbox.wait_delivered(5_200, Duration::from_secs(120)).await;
    relay.stop().await;
    let after = double.requests();
    println!(
        "registry requests: {warm} during warm-up, {} for 5,000 more rows",
        after - warm
    );
    assert!(warm > 0);
    assert_eq!(after, warm, "rows in steady state asked the registry");
    assert_eq!(outbox.count("parked").await, 0);
    assert_eq!(consume_all(&outbox.topic).await.len(), 5_200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_registry_credentials_are_an_outage_and_good_ones_deliver() {
    let (user, good, bad) = ("relay-user", "good-Pa55word", "bad-Pa55word");
    let double = SchemaRegistryDouble::start_with(DoubleOptions {
        basic_auth: Some((user.into(), good.into())),
        ..DoubleOptions::default()
    })
    .await;
    let outbox = TestOutbox::new(2).await;
    double.register(
        &format!("{}-value", outbox.topic),
        "JSON",
        r#"{"type": "object"}"#,
    );
    outbox.insert_rows(100, 10).await;

    // Wrong password, through the binary so that its log can be read.
    let dir = tempfile::tempdir().unwrap();
    let config_file = outbox.config_file(
        &dir,
        &kafka_bootstrap(),
        &format!(
            "[registry]\nurl = {url:?}\nusername = {user:?}\npassword = {bad:?}\n\n\
             [topics.{topic:?}]\nformat = \"json-schema\"\n",
            url = double.url(),
            topic = outbox.topic,
        ),
    );
    let log = dir.path().join("relay.log");
    let mut child = spawn_relay_binary(&config_file, &log);
    // The relay's turn at the rows: a batch claimed some, met the refusal and ended.
    wait_for_log(&log, &["credentials"], Duration::from_secs(60)).await;
    outbox.wait_claimed(1, Duration::from_secs(60)).await;
    signal(&child, Signal::SIGTERM);
    let (status, _) = wait_exit(&mut child, Duration::from_secs(20))
        .await
        .expect("relay exits on SIGTERM");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status:?}\n{text}");
    assert_untouched(&outbox, 100).await;
    assert!(
        text.contains("credentials"),
        "the log does not say why:\n{text}"
    );
    assert!(
        !text.contains(bad) && !text.contains(good),
        "a password in the log:\n{text}"
    );
    // No row-level failure was logged: the relay blamed the registry, not the rows.
    assert!(!text.contains("delivery failed"), "{text}");

    // The right password: everything goes, nothing was ever attempted.
    let mut config = registry_config(&outbox, &double);
    config.registry.username = user.into();
    config.registry.password = Secret::new(good);
    config
        .topics
        .insert(outbox.topic.clone(), topic(Format::JsonSchema));
    let relay = RunningRelay::start(&config);
    outbox.wait_delivered(100, Duration::from_secs(60)).await;
    relay.stop().await;
    assert_eq!(outbox.total_attempts().await, 0);
    assert_eq!(outbox.count("parked").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_register_registers_the_schemas_dir_at_startup_and_delivers() {
    let outbox = TestOutbox::new(1).await;
    let double = SchemaRegistryDouble::start().await;
    let schemas = tempfile::tempdir().unwrap();
    let schema = r#"{"type": "record", "name": "Auto", "namespace": "it.auto",
                     "fields": [{"name": "n", "type": "long"}]}"#;
    std::fs::write(
        schemas.path().join(format!("{}-value.avsc", outbox.topic)),
        schema,
    )
    .unwrap();
    let mut config = registry_config(&outbox, &double);
    config.registry.auto_register = true;
    config.registry.schemas_dir = schemas.path().to_owned();
    config
        .topics
        .insert(outbox.topic.clone(), topic(Format::Avro));
    outbox.insert_rows(20, 4).await;

    let relay = RunningRelay::start(&config);
    outbox.wait_delivered(20, Duration::from_secs(60)).await;
    relay.stop().await;

    // Registering the same text again answers the id the relay registered it under.
    let id = double.register(&format!("{}-value", outbox.topic), "AVRO", schema);
    let records = consume_all(&outbox.topic).await;
    assert_eq!(records.len(), 20);
    assert!(records.iter().all(|r| r.schema_id() == id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_failing_after_warm_up_keeps_the_last_known_latest_without_asking_per_row() {
    let outbox = TestOutbox::new(2).await;
    let double = SchemaRegistryDouble::start().await;
    let id = double.register(
        &format!("{}-value", outbox.topic),
        "AVRO",
        r#"{"type": "record", "name": "N", "fields": [{"name": "n", "type": "long"}]}"#,
    );
    let mut config = registry_config(&outbox, &double);
    config.registry.latest_ttl_ms = 200;
    config
        .topics
        .insert(outbox.topic.clone(), topic(Format::Avro));
    let relay = RunningRelay::start(&config);
    outbox.insert_rows(10, 5).await;
    outbox.wait_delivered(10, Duration::from_secs(60)).await;

    double.fail_with(Some(503));
    tokio::time::sleep(Duration::from_millis(300)).await; // the latest answer is now stale
    let before = double.requests();
    let rows = 2_000;
    outbox.insert_rows(rows, 50).await;
    outbox
        .wait_delivered(rows + 10, Duration::from_secs(60))
        .await;
    let asked = double.requests() - before;
    relay.stop().await;
    println!("registry requests while failing, for {rows} rows on a stale latest: {asked}");
    assert_eq!(outbox.count("parked").await, 0);
    assert_eq!(outbox.total_attempts().await, 0);
    let records = consume_all(&outbox.topic).await;
    assert!(records.iter().all(|r| r.schema_id() == id));
    assert!(
        asked < rows as u64 / 10,
        "{asked} registry requests for {rows} rows: each row asks a failing registry again"
    );
}
