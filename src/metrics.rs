//! The relay's Prometheus metrics: their names, help texts and buckets, in one place, and the
//! few plain functions the loop calls to report (`batch_claimed`, `rows_delivered`, ...).
//!
//! Recording goes through the `metrics` facade; the recorder is `metrics-exporter-prometheus`,
//! installed once per process when the HTTP endpoint is on ([`install`]) and rendered by
//! `/metrics`. With no recorder installed every call here is a no-op.
//!
//! Gauges are all set right before a scrape is rendered (see `http.rs`), from state kept in
//! memory: the relay's health, and the table statistics the one relay holding the stats lock
//! refreshes on an interval. Gauges that were not set for a while are dropped from the output
//! (the exporter's idle timeout), so a relay that lost the stats lock stops exporting table
//! figures instead of exporting stale ones.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use ::metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use chrono::{DateTime, Utc};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;

/// Every metric the relay exports: name, kind, labels, help text. The README's table and the
/// dashboard test follow this list.
pub const METRICS: &[(&str, &str, &str, &str)] = &[
    (ROWS_DELIVERED, "counter", "topic", "Rows marked delivered (Kafka acknowledged them, the mark committed)"),
    (ROWS_RETRIED, "counter", "topic", "Failed deliveries rescheduled with backoff (one attempt each)"),
    (ROWS_PARKED, "counter", "topic, reason", "Rows parked; reason: kafka (Kafka refused the record), payload (the row cannot make a record: schema, registry 4xx), retries_exhausted"),
    (ROWS_DEAD_LETTERED, "counter", "topic", "Parked rows copied to their topic's dead-letter topic"),
    (OUT_OF_ORDER, "counter", "topic", "Rows acknowledged after an earlier row of their key failed in the same batch (the key's order broke in Kafka)"),
    (REGISTRY_CACHE_HITS, "counter", "", "Schema lookups answered from the relay's cache"),
    (REGISTRY_CACHE_MISSES, "counter", "", "Schema lookups that asked the Schema Registry"),
    (RETENTION_DELETED, "counter", "", "Delivered rows deleted by retention"),
    (COMMIT_TO_ACK, "histogram", "", "Seconds from a row's created_at (its transaction's start) to Kafka's acknowledgement"),
    (BATCH_ROWS, "histogram", "", "Rows per claimed (non-empty) batch"),
    (CLAIM_DURATION, "histogram", "", "Seconds one claim statement took"),
    (MARK_DURATION, "histogram", "", "Seconds writing a batch's outcomes (mark, reschedule, park) and committing took"),
    (IN_FLIGHT, "gauge", "", "Records handed to librdkafka and not yet acknowledged"),
    (READY, "gauge", "", "1 when /readyz answers 200: Postgres, Kafka and the registry answer and nothing is paused"),
    (WORKERS_RUNNING, "gauge", "", "Batch workers running (relay.concurrency once started)"),
    (DEPENDENCY_UP, "gauge", "dependency", "1 when the dependency (postgres, kafka, registry) answers and the relay is not paused by its outage"),
    (TABLE_STATS_LEADER, "gauge", "", "1 on the relay that refreshes the table gauges (holds the stats advisory lock)"),
    (RETENTION_LEADER, "gauge", "", "1 on the relay that runs retention (holds the retention advisory lock)"),
    (ROWS, "gauge", "status", "Rows by status (pending, parked), counted up to 100000 (at the cap: at least that many); exported by the stats leader"),
    (OLDEST_DUE_AGE, "gauge", "", "Seconds the oldest claimable pending row has been due (0 when none): the relay's lag; exported by the stats leader"),
    (HELD_KEYS, "gauge", "", "Keys held back by a parked row (on_parked = hold-key); exported by the stats leader"),
    (ROWS_BEHIND_HELD_KEYS, "gauge", "", "Pending rows waiting behind held keys; exported by the stats leader"),
];

pub const ROWS_DELIVERED: &str = "outbox_relay_rows_delivered_total";
pub const ROWS_RETRIED: &str = "outbox_relay_rows_retried_total";
pub const ROWS_PARKED: &str = "outbox_relay_rows_parked_total";
pub const ROWS_DEAD_LETTERED: &str = "outbox_relay_rows_dead_lettered_total";
pub const OUT_OF_ORDER: &str = "outbox_relay_out_of_order_total";
pub const REGISTRY_CACHE_HITS: &str = "outbox_relay_registry_cache_hits_total";
pub const REGISTRY_CACHE_MISSES: &str = "outbox_relay_registry_cache_misses_total";
pub const RETENTION_DELETED: &str = "outbox_relay_retention_deleted_rows_total";
pub const COMMIT_TO_ACK: &str = "outbox_relay_commit_to_ack_seconds";
pub const BATCH_ROWS: &str = "outbox_relay_batch_rows";
pub const CLAIM_DURATION: &str = "outbox_relay_claim_duration_seconds";
pub const MARK_DURATION: &str = "outbox_relay_mark_duration_seconds";
pub const IN_FLIGHT: &str = "outbox_relay_in_flight_records";
pub const READY: &str = "outbox_relay_ready";
pub const WORKERS_RUNNING: &str = "outbox_relay_workers_running";
pub const DEPENDENCY_UP: &str = "outbox_relay_dependency_up";
pub const TABLE_STATS_LEADER: &str = "outbox_relay_table_stats_leader";
pub const RETENTION_LEADER: &str = "outbox_relay_retention_leader";
pub const ROWS: &str = "outbox_relay_rows";
pub const OLDEST_DUE_AGE: &str = "outbox_relay_oldest_due_pending_age_seconds";
pub const HELD_KEYS: &str = "outbox_relay_held_keys";
pub const ROWS_BEHIND_HELD_KEYS: &str = "outbox_relay_rows_behind_held_keys";

const SECONDS_FAST: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
const SECONDS_LATENCY: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
const ROWS_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1_000.0, 2_500.0, 5_000.0, 10_000.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once; later calls return the same handle).
/// Gauges not set for `gauge_idle` disappear from the output.
pub fn install(gauge_idle: Duration) -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .idle_timeout(MetricKindMask::GAUGE, Some(gauge_idle))
            .set_buckets_for_metric(Matcher::Full(COMMIT_TO_ACK.into()), SECONDS_LATENCY)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_ROWS.into()), ROWS_BUCKETS))
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(CLAIM_DURATION.into()), SECONDS_FAST)
            })
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(MARK_DURATION.into()), SECONDS_FAST)
            })
            .expect("static, non-empty buckets");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (a test harness, an embedding program):
        // then the relay's metrics go there and `/metrics` renders this recorder's (empty) view.
        if ::metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics shows nothing");
        }
        describe();
        handle
    })
}

/// The Prometheus text of every metric, once [`install`] ran.
pub fn render() -> Option<String> {
    HANDLE.get().map(|h| {
        h.run_upkeep();
        h.render()
    })
}

fn describe() {
    for &(name, kind, labels, help) in METRICS {
        match kind {
            "counter" => {
                describe_counter!(name, help);
                // A counter without labels is shown at 0 from the start; one with labels
                // appears with its first labelled increment.
                if labels.is_empty() {
                    counter!(name).absolute(0);
                }
            }
            "histogram" => describe_histogram!(name, help),
            _ => describe_gauge!(name, help),
        }
    }
}

/// A claim returned `rows` rows in `took`.
pub fn batch_claimed(rows: usize, took: Duration) {
    histogram!(CLAIM_DURATION).record(took.as_secs_f64());
    if rows > 0 {
        histogram!(BATCH_ROWS).record(rows as f64);
    }
}

/// A batch's outcomes were written and committed in `took`.
pub fn marked(took: Duration) {
    histogram!(MARK_DURATION).record(took.as_secs_f64());
}

/// Kafka acknowledged rows created at these times (their transactions' start).
pub fn acknowledged(created_at: impl IntoIterator<Item = DateTime<Utc>>) {
    let now = Utc::now();
    let h = histogram!(COMMIT_TO_ACK);
    for at in created_at {
        h.record((now - at).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6);
    }
}

/// One count per row, by topic.
fn per_topic<'a>(name: &'static str, topics: impl IntoIterator<Item = &'a str>) {
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for t in topics {
        *counts.entry(t).or_default() += 1;
    }
    for (topic, n) in counts {
        counter!(name, "topic" => topic.to_owned()).increment(n);
    }
}

/// Rows of these topics were marked delivered (after the commit).
pub fn rows_delivered<'a>(topics: impl IntoIterator<Item = &'a str>) {
    per_topic(ROWS_DELIVERED, topics);
}

/// Rows of these topics were rescheduled after a failure (after the commit).
pub fn rows_retried<'a>(topics: impl IntoIterator<Item = &'a str>) {
    per_topic(ROWS_RETRIED, topics);
}

/// Rows were parked (after the commit): (topic, the reason written to `last_error`).
pub fn rows_parked<'a>(parked: impl IntoIterator<Item = (&'a str, &'a str)>) {
    let mut counts: HashMap<(&str, &str), u64> = HashMap::new();
    for (topic, reason) in parked {
        *counts
            .entry((topic, park_reason_class(reason)))
            .or_default() += 1;
    }
    for ((topic, class), n) in counts {
        counter!(ROWS_PARKED, "topic" => topic.to_owned(), "reason" => class).increment(n);
    }
}

/// The `reason` label of a parked row, from the reason the relay wrote: retries exhausted
/// (`gave up after N attempts: …`), Kafka refused the record (`kafka: …`, the produce layer's
/// prefix), or the row cannot make a record at all (serialization, the registry's 4xx).
pub fn park_reason_class(reason: &str) -> &'static str {
    if reason.starts_with("gave up after ") {
        "retries_exhausted"
    } else if reason.starts_with("kafka: ") {
        "kafka"
    } else {
        "payload"
    }
}

/// A parked row of `topic` was copied to its dead-letter topic.
pub fn row_dead_lettered(topic: &str) {
    counter!(ROWS_DEAD_LETTERED, "topic" => topic.to_owned()).increment(1);
}

/// A row of `topic` reached Kafka after an earlier row of its key failed.
pub fn out_of_order(topic: &str) {
    counter!(OUT_OF_ORDER, "topic" => topic.to_owned()).increment(1);
}

/// A schema lookup was answered from the cache (`true`) or asked the registry.
pub fn registry_cache(hit: bool) {
    if hit {
        counter!(REGISTRY_CACHE_HITS).increment(1);
    } else {
        counter!(REGISTRY_CACHE_MISSES).increment(1);
    }
}

/// Retention deleted `n` delivered rows.
pub fn retention_deleted(n: u64) {
    counter!(RETENTION_DELETED).increment(n);
}

/// Sets a gauge without labels.
pub(crate) fn set(name: &'static str, value: f64) {
    gauge!(name).set(value);
}

/// Sets a gauge with one label.
pub(crate) fn set_labelled(name: &'static str, label: &'static str, value_of: &str, value: f64) {
    gauge!(name, label => value_of.to_owned()).set(value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::produce::ProduceError;

    #[test]
    fn a_parked_rows_reason_class_follows_the_text_the_relay_wrote() {
        let kafka = ProduceError::Kafka(rdkafka::error::KafkaError::MessageProduction(
            rdkafka::error::RDKafkaErrorCode::MessageSizeTooLarge,
        ));
        assert_eq!(park_reason_class(&kafka.to_string()), "kafka");
        let bad = ProduceError::BadRow("value does not match subject `s`".into());
        assert_eq!(park_reason_class(&bad.to_string()), "payload");
        assert_eq!(
            park_reason_class("gave up after 10 attempts: kafka: Message timed out"),
            "retries_exhausted"
        );
    }

    #[test]
    fn every_metric_is_named_once_with_the_relays_prefix_and_a_known_kind() {
        let mut names: Vec<&str> = METRICS.iter().map(|m| m.0).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), METRICS.len(), "a metric is listed twice");
        for &(name, kind, _, help) in METRICS {
            assert!(name.starts_with("outbox_relay_"), "{name}");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{name}");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{name}");
            assert!(!help.is_empty(), "{name}");
        }
    }
}
