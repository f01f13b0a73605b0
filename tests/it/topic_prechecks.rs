//! Refusals the relay foresees from the topic's configuration, on the real broker: the culprit is
//! parked before it is produced (its record is not in Kafka), with a reason naming the limit and
//! its value; its neighbours and a sentinel after it are delivered. A topic that cannot be
//! described holds nothing up.

use std::time::Duration;

use outbox_relay::config::{Config, TopicConfig};
use uuid::Uuid;

use crate::harness::{
    consume_all, create_topic_with, init_logs, kafka_bootstrap, log_dir, set_property,
    wait_for_log, RelayProcess, RunningRelay, TestOutbox,
};

/// One row of a scenario: its key, how far its `created_at` lies from now (a Postgres interval),
/// and whether it is the culprit.
struct Case {
    key: Option<&'static str>,
    created_at: &'static str,
    culprit: bool,
}

const fn row(key: &'static str) -> Case {
    Case {
        key: Some(key),
        created_at: "0",
        culprit: false,
    }
}

/// Inserts a row of `topic` whose `created_at` is now + `offset`; returns (id, event_id).
async fn insert_at(
    outbox: &TestOutbox,
    topic: &str,
    key: Option<&str>,
    offset: &str,
) -> (i64, Uuid) {
    sqlx::query_as(&format!(
        "INSERT INTO {} (topic, key, payload, created_at) \
         VALUES ($1, $2, '{{}}', now() + $3::text::interval) RETURNING id, event_id",
        outbox.table()
    ))
    .bind(topic)
    .bind(key)
    .bind(offset)
    .fetch_one(&outbox.pool)
    .await
    .unwrap()
}

/// A config for `topic` whose relay batch travels in one produce batch: without the precheck,
/// Kafka would refuse the culprit's whole record batch.
fn config_for(outbox: &TestOutbox, topic: &str) -> Config {
    let mut config = outbox.config();
    set_property(&mut config, "linger.ms", "200");
    config
        .topics
        .insert(topic.to_owned(), TopicConfig::default());
    config
}

/// Creates a topic with `configs`, writes `cases`, runs a relay: the culprit is parked, every
/// other row and a sentinel after them are delivered, the culprit's record is not in Kafka.
/// Returns the culprit's reason and the topic.
async fn culprit_is_parked_before_producing(
    name: &str,
    configs: &[(&str, &str)],
    cases: &[Case],
) -> (String, String) {
    init_logs();
    let outbox = TestOutbox::new(1).await;
    let topic = format!("{}-{name}", outbox.topic);
    create_topic_with(&kafka_bootstrap(), &topic, 1, configs).await;
    let config = config_for(&outbox, &topic);

    let mut rows = Vec::new();
    for c in cases {
        rows.push((
            insert_at(&outbox, &topic, c.key, c.created_at).await,
            c.culprit,
        ));
    }
    let relay = RunningRelay::start(&config);
    let sentinel = outbox
        .deliver_sentinel(&topic, serde_json::json!({"sentinel": true}))
        .await;
    relay.stop().await;

    let mut reason = None;
    let mut delivered = Vec::new();
    let mut culprit_event = None;
    for &((id, event_id), culprit) in &rows {
        let r = outbox.row(id).await;
        if culprit {
            assert_eq!(r.status, "parked", "the culprit is parked: {r:?}");
            reason = r.last_error.clone();
            culprit_event = Some(event_id.to_string());
        } else {
            assert_eq!(r.status, "delivered", "a neighbour is delivered: {r:?}");
            assert_eq!(r.attempts, 0, "a neighbour burned nothing: {r:?}");
            delivered.push(event_id.to_string());
        }
    }
    let sentinel_event = outbox.row(sentinel).await.event_id.to_string();
    delivered.push(sentinel_event);

    let records = consume_all(&topic).await;
    let in_kafka: Vec<&str> = records.iter().map(|r| r.event_id()).collect();
    let culprit_event = culprit_event.expect("a culprit among the cases");
    assert!(
        !in_kafka.contains(&culprit_event.as_str()),
        "the culprit was never produced: {in_kafka:?}"
    );
    for e in &delivered {
        assert!(
            in_kafka.contains(&e.as_str()),
            "{e} is in Kafka: {in_kafka:?}"
        );
    }
    let reason = reason.expect("the culprit has a reason");
    println!("culprit parked: {reason}");
    (reason, topic)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_ahead_of_the_timestamp_window_is_parked_before_producing_and_its_neighbours_are_delivered(
) {
    let (reason, topic) = culprit_is_parked_before_producing(
        "after",
        &[("message.timestamp.after.max.ms", "60000")],
        &[
            row("k"),
            Case {
                key: Some("k"),
                created_at: "1 day",
                culprit: true,
            },
            row("a"),
            row("b"),
        ],
    )
    .await;
    for part in [
        "refused before producing: created_at ",
        " ms ahead of now; ",
        &format!("topic {topic:?} allows message.timestamp.after.max.ms = 60000"),
    ] {
        assert!(reason.contains(part), "{part:?} in {reason:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_behind_the_timestamp_window_is_parked_before_producing_and_its_neighbours_are_delivered(
) {
    let (reason, topic) = culprit_is_parked_before_producing(
        "before",
        &[("message.timestamp.before.max.ms", "3600000")],
        &[
            row("a"),
            Case {
                key: Some("k"),
                created_at: "-1 day",
                culprit: true,
            },
            row("b"),
        ],
    )
    .await;
    for part in [
        "refused before producing: created_at ",
        " ms behind now; ",
        &format!("topic {topic:?} allows message.timestamp.before.max.ms = 3600000"),
    ] {
        assert!(reason.contains(part), "{part:?} in {reason:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_without_a_key_on_a_compacted_topic_is_parked_before_producing_and_keyed_neighbours_are_delivered(
) {
    let (reason, topic) = culprit_is_parked_before_producing(
        "compact",
        &[("cleanup.policy", "compact")],
        &[
            row("a"),
            Case {
                key: None,
                created_at: "0",
                culprit: true,
            },
            row("b"),
            row("c"),
        ],
    )
    .await;
    assert_eq!(
        reason,
        format!(
            "refused before producing: the row has no key and topic {topic:?} has \
             cleanup.policy = compact, which refuses records without a key"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_that_cannot_be_described_yet_does_not_hold_up_its_rows() {
    init_logs();
    let outbox = TestOutbox::new(1).await;
    // Not created yet: describing it fails (unknown topic).
    let topic = format!("{}-later", outbox.topic);
    let ids = [
        insert_at(&outbox, &topic, Some("a"), "0").await.0,
        insert_at(&outbox, &topic, Some("b"), "0").await.0,
    ];
    let dir = log_dir("a_topic_that_cannot_be_described_yet_does_not_hold_up_its_rows");
    let config = outbox.config_file_in(&dir, "relay", &kafka_bootstrap(), "");
    let log = dir.join("relay.log");
    let _relay = RelayProcess {
        child: crate::harness::spawn_with_filter(
            &config,
            &log,
            "info,outbox_relay::produce::topic_limits=debug",
        ),
        log: log.clone(),
    };
    wait_for_log(
        &log,
        &["topic configs not described", &topic],
        Duration::from_secs(60),
    )
    .await;
    // The relay went on to produce; the topic appears and the rows get through.
    create_topic_with(&kafka_bootstrap(), &topic, 1, &[]).await;
    for id in ids {
        outbox
            .wait_status(id, "delivered", Duration::from_secs(60))
            .await;
    }
    outbox
        .deliver_sentinel(&topic, serde_json::json!({"sentinel": true}))
        .await;
}
