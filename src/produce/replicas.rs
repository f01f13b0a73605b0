//! A degraded cluster: a partition with fewer in-sync replicas than its topic's
//! `min.insync.replicas` refuses every `acks=all` record (`NOT_ENOUGH_REPLICAS`, or a message
//! timeout once librdkafka's own retries run out), whatever the row. That is the cluster's
//! fault, not the row's: the relay takes it for an outage (no attempt counted, nothing parked,
//! nothing claimed) until the partitions have their replicas back.
//!
//! The replicas come from a metadata request (each partition's replicas and ISR); the minimum
//! from the topic's described configs ([`super::TopicLimits::min_insync_replicas`]). A topic
//! whose minimum is unknown is not checked.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

use tracing::{info, warn};

/// One partition as a metadata answer lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PartitionReplicas {
    pub(crate) partition: i32,
    pub(crate) replicas: usize,
    pub(crate) in_sync: usize,
}

/// A partition that cannot take `acks=all` records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UnderMinIsr {
    pub(crate) partition: i32,
    pub(crate) in_sync: usize,
    pub(crate) replicas: usize,
}

impl fmt::Display for UnderMinIsr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "partition {} has {} of {} replicas in sync",
            self.partition, self.in_sync, self.replicas
        )
    }
}

/// The partitions with fewer in-sync replicas than `min_isr`.
pub(crate) fn under_min_isr(partitions: &[PartitionReplicas], min_isr: i32) -> Vec<UnderMinIsr> {
    let min = usize::try_from(min_isr).unwrap_or(0);
    partitions
        .iter()
        .filter(|p| p.in_sync < min)
        .map(|p| UnderMinIsr {
            partition: p.partition,
            in_sync: p.in_sync,
            replicas: p.replicas,
        })
        .collect()
}

/// Why a topic cannot take records now, for logs and probes.
pub(crate) fn describe(topic: &str, min_isr: i32, under: &[UnderMinIsr]) -> String {
    let parts: Vec<String> = under.iter().map(ToString::to_string).collect();
    format!(
        "topic {topic:?}: {} (min.insync.replicas = {min_isr})",
        parts.join(", ")
    )
}

/// The topics found degraded, with their `min.insync.replicas`: while any is, the producer's
/// probe fails, so the relay claims nothing.
#[derive(Debug, Default)]
pub(crate) struct Degraded(Mutex<BTreeMap<String, i32>>);

impl Degraded {
    /// `topic` has partitions under its minimum: said once per episode, at WARN.
    pub(crate) fn note(&self, topic: &str, min_isr: i32, under: &[UnderMinIsr]) {
        let mut topics = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if topics.insert(topic.to_owned(), min_isr).is_none() {
            warn!(%topic, min_insync_replicas = min_isr, partitions = %describe(topic, min_isr, under),
                "Kafka cluster degraded: partitions of this topic have fewer in-sync replicas \
                 than min.insync.replicas and refuse acks=all records; the rows stay pending \
                 (no attempt counted, nothing parked) and nothing is claimed until the replicas \
                 are back");
        }
    }

    /// The topics to check again, with their minimum.
    pub(crate) fn topics(&self) -> Vec<(String, i32)> {
        let topics = self.0.lock().unwrap_or_else(|e| e.into_inner());
        topics.iter().map(|(t, m)| (t.clone(), *m)).collect()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    /// `topic` has its replicas back (or is gone).
    pub(crate) fn recovered(&self, topic: &str) {
        let mut topics = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if topics.remove(topic).is_some() {
            info!(%topic, "Kafka cluster recovered: every partition of this topic has \
                min.insync.replicas in sync again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(partition: i32, replicas: usize, in_sync: usize) -> PartitionReplicas {
        PartitionReplicas {
            partition,
            replicas,
            in_sync,
        }
    }

    #[test]
    fn a_partition_is_under_its_minimum_only_with_fewer_in_sync_replicas_than_it() {
        // (partitions, min.insync.replicas) → partitions under it
        let cases: &[(&[PartitionReplicas], i32, &[i32])] = &[
            (&[p(0, 3, 3), p(1, 3, 3)], 2, &[]),
            // One broker of three away: two in sync is enough.
            (&[p(0, 3, 2), p(1, 3, 2)], 2, &[]),
            // Two away.
            (&[p(0, 3, 1), p(1, 3, 2), p(2, 3, 1)], 2, &[0, 2]),
            (&[p(0, 3, 2)], 3, &[0]),
            // min.insync.replicas = 1 (the default): only a partition without a leader.
            (&[p(0, 1, 1), p(1, 3, 0)], 1, &[1]),
            (&[], 2, &[]),
        ];
        for &(partitions, min_isr, want) in cases {
            let got: Vec<i32> = under_min_isr(partitions, min_isr)
                .iter()
                .map(|u| u.partition)
                .collect();
            assert_eq!(got, want, "{partitions:?} min {min_isr}");
        }
    }

    #[test]
    fn the_reason_names_the_topic_the_partitions_and_the_minimum() {
        let under = under_min_isr(&[p(0, 3, 1), p(2, 3, 1)], 2);
        assert_eq!(
            describe("orders", 2, &under),
            "topic \"orders\": partition 0 has 1 of 3 replicas in sync, partition 2 has 1 of 3 \
             replicas in sync (min.insync.replicas = 2)"
        );
    }

    #[test]
    fn a_topic_is_degraded_from_its_note_until_it_recovers() {
        let d = Degraded::default();
        assert!(d.is_empty());
        d.note("t", 2, &[]);
        d.note("t", 2, &[]);
        assert_eq!(d.topics(), [("t".to_owned(), 2)]);
        d.recovered("other");
        assert!(!d.is_empty());
        d.recovered("t");
        assert!(d.is_empty());
    }
}
