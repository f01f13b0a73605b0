//! Refusals Kafka makes about a whole record batch, on the real broker: only the culprit is
//! parked, its neighbours in the same batch (same partition, other keys) are delivered.

use std::time::Duration;

use outbox_relay::config::TopicConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

use crate::harness::{init_logs, kafka_bootstrap, set_property, RunningRelay, TestOutbox};

/// Creates `topic` (1 partition) with topic-level `configs`.
async fn create_topic_with(topic: &str, configs: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .create()
        .unwrap();
    let mut new = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
    for (k, v) in configs {
        new = new.set(k, v);
    }
    for r in admin
        .create_topics(
            &[new],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topic")
    {
        r.expect("topic created");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_beyond_the_timestamp_window_is_parked_alone_and_its_batch_neighbours_are_delivered()
{
    init_logs();
    let outbox = TestOutbox::new(1).await;
    let topic = format!("{}-ts", outbox.topic);
    create_topic_with(&topic, &[("message.timestamp.after.max.ms", "60000")]).await;
    let mut config = outbox.config();
    // The relay would foresee this refusal and park the culprit before producing
    // (tests/it/topic_prechecks.rs): switched off, Kafka refuses the batch and the one-at-a-time
    // resend has to find the culprit.
    config.kafka.check_topic_limits = false;
    // One produce batch for the whole relay batch.
    set_property(&mut config, "linger.ms", "200");
    config.topics.insert(topic.clone(), TopicConfig::default());

    let mut ids = Vec::new();
    for (key, future) in [
        ("a", false),
        ("b", false),
        ("bad", true),
        ("c", false),
        ("d", false),
    ] {
        let id: i64 = sqlx::query_scalar(&format!(
            "INSERT INTO {} (topic, key, payload, created_at) \
             VALUES ($1, $2, '{{}}', now() + CASE WHEN $3 THEN interval '1 day' ELSE interval '0' END) \
             RETURNING id",
            outbox.table()
        ))
        .bind(&topic)
        .bind(key)
        .bind(future)
        .fetch_one(&outbox.pool)
        .await
        .unwrap();
        ids.push(id);
    }

    let relay = RunningRelay::start(&config);
    let bad = outbox
        .wait_status(ids[2], "parked", Duration::from_secs(60))
        .await;
    for &id in [ids[0], ids[1], ids[3], ids[4]].iter() {
        outbox
            .wait_status(id, "delivered", Duration::from_secs(60))
            .await;
    }
    relay.stop().await;
    let reason = bad.last_error.unwrap_or_default();
    println!("culprit parked: {reason}");
    assert!(
        reason.contains("InvalidTimestamp") || reason.to_lowercase().contains("timestamp"),
        "the reason names the timestamp refusal: {reason}"
    );
    for &id in [ids[0], ids[1], ids[3], ids[4]].iter() {
        let r = outbox.row(id).await;
        assert_eq!(r.attempts, 0, "a neighbour burned nothing: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_null_key_on_a_compacted_topic_is_parked_alone_and_its_batch_neighbours_are_delivered() {
    init_logs();
    let outbox = TestOutbox::new(1).await;
    let topic = format!("{}-compact", outbox.topic);
    create_topic_with(&topic, &[("cleanup.policy", "compact")]).await;
    let mut config = outbox.config();
    // The relay would foresee this refusal and park the culprit before producing
    // (tests/it/topic_prechecks.rs): switched off, Kafka refuses the batch and the one-at-a-time
    // resend has to find the culprit.
    config.kafka.check_topic_limits = false;
    set_property(&mut config, "linger.ms", "200");
    config.topics.insert(topic.clone(), TopicConfig::default());

    let mut ids = Vec::new();
    for key in [Some("a"), Some("b"), None, Some("c"), Some("d")] {
        let id: i64 = sqlx::query_scalar(&format!(
            "INSERT INTO {} (topic, key, payload) VALUES ($1, $2, '{{}}') RETURNING id",
            outbox.table()
        ))
        .bind(&topic)
        .bind(key)
        .fetch_one(&outbox.pool)
        .await
        .unwrap();
        ids.push(id);
    }

    let relay = RunningRelay::start(&config);
    let bad = outbox
        .wait_status(ids[2], "parked", Duration::from_secs(60))
        .await;
    for &id in [ids[0], ids[1], ids[3], ids[4]].iter() {
        outbox
            .wait_status(id, "delivered", Duration::from_secs(60))
            .await;
    }
    relay.stop().await;
    let reason = bad.last_error.unwrap_or_default();
    println!("culprit parked: {reason}");
    assert!(
        reason.contains("InvalidRecord") || reason.to_lowercase().contains("invalid record"),
        "the reason names the record refusal: {reason}"
    );
}
