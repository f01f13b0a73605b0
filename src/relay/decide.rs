//! What happens to each row of a batch that did not make it: a pure decision, from the rows, how
//! each failed, the topics' policies and what a probe found of the cluster (does it answer, can
//! it take `acks=all` records). No I/O, so it is tested with tables (below) and no Kafka.

use crate::config::{OnParked, TopicPolicies};
use crate::outbox::{capped, ClaimedRow, Failed, Parked, REASON_MAX_BYTES};
use crate::produce::{ClusterState, Disposition, ProduceError};
use crate::retry::RetryDecision;
use rdkafka::error::RDKafkaErrorCode;

/// A row that did not make it, and what its failure calls for.
#[derive(Debug, Clone)]
pub(super) struct Failure {
    /// The row's index in its batch.
    pub(super) index: usize,
    pub(super) reason: String,
    pub(super) disposition: Disposition,
    /// Kafka's code when Kafka refused the record (or the record batch it travelled in, maybe
    /// because of another record of that batch).
    pub(super) kafka_code: Option<RDKafkaErrorCode>,
}

impl Failure {
    /// A failure before Kafka (unserializable, refused by librdkafka on enqueue).
    pub(super) fn new(index: usize, e: &ProduceError) -> Self {
        Self {
            index,
            reason: capped(&e.to_string(), REASON_MAX_BYTES).into_owned(),
            disposition: e.disposition(),
            kafka_code: None,
        }
    }

    /// A failure Kafka reported for the record (its delivery report).
    pub(super) fn reported(index: usize, e: &ProduceError) -> Self {
        Self {
            kafka_code: e.kafka_code(),
            ..Self::new(index, e)
        }
    }
}

/// The writes a batch's failures call for.
#[derive(Debug, Default)]
pub(super) struct Decisions {
    /// One more attempt, tried again after a delay.
    pub(super) retry: Vec<Failed>,
    /// Parked, with the row's index in the batch (for its dead-letter copy).
    pub(super) park: Vec<(usize, Parked)>,
    /// Left as they are (Kafka is away: not the rows' fault).
    pub(super) untouched: usize,
    /// Kafka did not answer, or cannot take records: the relay must pause.
    pub(super) kafka_outage: bool,
}

/// Sorts `failures` (none of them `Defer`: deferred topics are taken out before) into retries,
/// parks and untouched rows.
///
/// - `Outage`, or `Retry` while the cluster is not [`ClusterState::Answers`] (no broker answers
///   a metadata request, or a partition of the failed rows' topics has fewer in-sync replicas
///   than its `min.insync.replicas`, so that timeouts are what `NOT_ENOUGH_REPLICAS` turned
///   into): the cluster's fault, not the row's; the row is left as it is (no attempt counted,
///   even on its last one) and the relay pauses.
/// - `Retry`: one more attempt, after the topic's backoff (`jitter` draws a unit for each), or
///   parked when its attempts are used up ("gave up after N attempts: …").
/// - `Park`: parked now, holding its key when the topic says `on_parked = "hold-key"`.
pub(super) fn decide(
    rows: &[ClaimedRow],
    failures: Vec<Failure>,
    policies: &TopicPolicies,
    cluster: ClusterState,
    mut jitter: impl FnMut() -> f64,
) -> Decisions {
    let mut d = Decisions::default();
    for f in failures {
        let row = &rows[f.index];
        let policy = policies.get(&row.topic);
        let holds_key = policy.on_parked == OnParked::HoldKey && row.key.is_some();
        let park = |error: String| Parked {
            id: row.id,
            error,
            holds_key,
        };
        match f.disposition {
            Disposition::Outage | Disposition::Defer => {
                d.kafka_outage |= f.disposition == Disposition::Outage;
                d.untouched += 1;
            }
            Disposition::Retry if cluster != ClusterState::Answers => {
                d.kafka_outage = true;
                d.untouched += 1;
            }
            Disposition::Park => d.park.push((f.index, park(f.reason))),
            Disposition::Retry => {
                let attempt = row.attempts.max(0) as u32 + 1;
                match policy.retry.decide(attempt, jitter()) {
                    RetryDecision::RetryAfter(delay) => d.retry.push(Failed {
                        id: row.id,
                        error: f.reason,
                        delay,
                    }),
                    RetryDecision::GiveUp => d.park.push((
                        f.index,
                        park(format!("gave up after {attempt} attempts: {}", f.reason)),
                    )),
                }
            }
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RetryConfig, TopicConfig};
    use std::collections::BTreeMap;

    fn row(id: i64, topic: &str, key: Option<&str>, attempts: i32) -> ClaimedRow {
        ClaimedRow {
            id,
            event_id: uuid::Uuid::nil(),
            topic: topic.into(),
            key: key.map(Into::into),
            payload: "{}".into(),
            headers: "{}".into(),
            created_at: chrono::Utc::now(),
            attempts,
            value_subject: None,
            value_schema_version: None,
        }
    }

    fn failure(index: usize, disposition: Disposition) -> Failure {
        Failure {
            index,
            reason: format!("reason {index}"),
            disposition,
            kafka_code: None,
        }
    }

    fn policies() -> TopicPolicies {
        let mut topics = BTreeMap::new();
        topics.insert(
            "skips".to_owned(),
            TopicConfig {
                on_parked: Some(OnParked::Skip),
                ..TopicConfig::default()
            },
        );
        TopicPolicies::new(&topics, &TopicConfig::default(), &RetryConfig::default())
    }

    /// (row's attempts, disposition, what the probe found) → (retried, parked, untouched,
    /// outage), the parked reason's start.
    type Case = (
        i32,
        Disposition,
        ClusterState,
        (usize, usize, usize, bool),
        &'static str,
    );

    #[test]
    fn each_failure_becomes_the_write_the_table_says() {
        use ClusterState::{Answers, Degraded, Unreachable};
        let max = RetryConfig::default().max_attempts as i32;
        #[rustfmt::skip]
        let cases: &[Case] = &[
            (0, Disposition::Retry, Answers, (1, 0, 0, false), ""),
            (max - 1, Disposition::Retry, Answers, (0, 1, 0, false), "gave up after"),
            (0, Disposition::Retry, Unreachable, (0, 0, 1, true), ""),
            (max - 1, Disposition::Retry, Unreachable, (0, 0, 1, true), ""),
            // A timeout while partitions lack in-sync replicas: the cluster's fault, even on
            // the row's last attempt.
            (0, Disposition::Retry, Degraded, (0, 0, 1, true), ""),
            (max - 1, Disposition::Retry, Degraded, (0, 0, 1, true), ""),
            (0, Disposition::Park, Answers, (0, 1, 0, false), "reason 0"),
            (0, Disposition::Park, Unreachable, (0, 1, 0, false), "reason 0"),
            (0, Disposition::Park, Degraded, (0, 1, 0, false), "reason 0"),
            (3, Disposition::Outage, Answers, (0, 0, 1, true), ""),
            (max - 1, Disposition::Outage, Degraded, (0, 0, 1, true), ""),
            (0, Disposition::Defer, Answers, (0, 0, 1, false), ""),
            (0, Disposition::Defer, Degraded, (0, 0, 1, false), ""),
        ];
        for &(attempts, disposition, cluster, (retried, parked, untouched, outage), reason) in cases
        {
            let rows = [row(1, "t", Some("k"), attempts)];
            let d = decide(
                &rows,
                vec![failure(0, disposition)],
                &policies(),
                cluster,
                || 0.5,
            );
            let case = format!("{attempts} {disposition:?} {cluster:?}");
            assert_eq!(d.retry.len(), retried, "{case}");
            assert_eq!(d.park.len(), parked, "{case}");
            assert_eq!(d.untouched, untouched, "{case}");
            assert_eq!(d.kafka_outage, outage, "{case}");
            if let Some((_, p)) = d.park.first() {
                assert!(p.error.starts_with(reason), "{case}: {}", p.error);
                assert!(
                    p.holds_key,
                    "{case}: a keyed row of a hold-key topic holds its key"
                );
            }
            for r in &d.retry {
                assert!(!r.delay.is_zero(), "{case}: a retry waits");
            }
        }
    }

    #[test]
    fn in_a_degraded_cluster_only_poison_is_parked_and_no_row_costs_an_attempt() {
        let max = RetryConfig::default().max_attempts as i32;
        let rows = [
            row(1, "t", Some("a"), max - 1),
            row(2, "t", Some("b"), 0),
            row(3, "t", Some("c"), 0),
        ];
        // A timeout (or NOT_ENOUGH_REPLICAS) on its last attempt, an outage, poison.
        let failures = vec![
            failure(0, Disposition::Retry),
            failure(1, Disposition::Outage),
            failure(2, Disposition::Park),
        ];
        let d = decide(&rows, failures, &policies(), ClusterState::Degraded, || 0.5);
        assert!(d.retry.is_empty(), "{:?}", d.retry);
        assert_eq!(d.untouched, 2);
        assert!(d.kafka_outage);
        let parked: Vec<i64> = d.park.iter().map(|(_, p)| p.id).collect();
        assert_eq!(parked, [3]);
    }

    #[test]
    fn a_parked_row_holds_its_key_only_with_a_key_on_a_hold_key_topic() {
        let rows = [
            row(1, "t", Some("k"), 0),
            row(2, "t", None, 0),
            row(3, "skips", Some("k"), 0),
        ];
        let failures = (0..3).map(|i| failure(i, Disposition::Park)).collect();
        let d = decide(&rows, failures, &policies(), ClusterState::Answers, || 0.5);
        let holds: Vec<(i64, bool)> = d.park.iter().map(|(_, p)| (p.id, p.holds_key)).collect();
        assert_eq!(holds, [(1, true), (2, false), (3, false)]);
    }
}
