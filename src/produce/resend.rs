//! Finding the culprit of a refused record batch.
//!
//! Kafka refuses a whole record batch when one record of it is refused (too large, invalid
//! timestamp, invalid record, ...), and librdkafka fails every record of that batch with the
//! same error: parking them all would park innocent rows. The rows sharing such a verdict are
//! sent again one at a time, each waiting for its report, so that only the culprit is refused.
//! The resend is bounded ([`MAX_ROWS`], [`BUDGET`]); rows beyond the bound are left untouched.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::{Duration, Instant};

use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::DeliveryFuture;

use super::{delivery_report, Disposition, ProduceError};
use crate::outbox::ClaimedRow;

/// At most this many rows of one batch are sent again one at a time.
pub const MAX_ROWS: usize = 100;
/// And for at most this long in all.
pub const BUDGET: Duration = Duration::from_secs(30);

/// One failed record of a batch, as [`suspects`] needs to see it.
#[derive(Debug, Clone, Copy)]
pub struct Refusal<'a> {
    pub index: usize,
    pub topic: &'a str,
    pub disposition: Disposition,
    /// Kafka's code, when Kafka itself reported the failure.
    pub kafka_code: Option<RDKafkaErrorCode>,
}

/// The rows to send again one at a time: those whose Kafka refusal is a `Park` verdict shared
/// with another row of the same topic (a refusal of the record batch they travelled in), in
/// index order.
pub fn suspects<'a>(refusals: impl IntoIterator<Item = Refusal<'a>>) -> Vec<usize> {
    let mut groups: HashMap<(&str, i32), Vec<usize>> = HashMap::new();
    for r in refusals {
        if let (Disposition::Park, Some(code)) = (r.disposition, r.kafka_code) {
            groups
                .entry((r.topic, code as i32))
                .or_default()
                .push(r.index);
        }
    }
    let mut out: Vec<usize> = groups
        .into_values()
        .filter(|g| g.len() > 1)
        .flatten()
        .collect();
    out.sort_unstable();
    out
}

/// Whoever hands a row over (checks, serializes and enqueues it): the relay.
pub trait HandOver {
    fn hand_over(&self, row: &ClaimedRow) -> impl Future<Output = Handed> + Send;
}

/// What handing one row over came to.
pub enum Handed {
    Sent(DeliveryFuture),
    /// The row cannot be serialized, or librdkafka refused it.
    Failed(ProduceError),
    /// Not sent, not the row's fault (e.g. the registry is away): left untouched.
    NotNow,
}

/// What the one-at-a-time resend came to, by index.
#[derive(Debug, Default)]
pub struct Resent {
    pub delivered: Vec<(usize, i32, i64)>,
    pub failed: Vec<(usize, ProduceError)>,
    /// Not sent: beyond the bound, not handed over, or behind a failed row of its key.
    pub untouched: Vec<usize>,
}

/// Sends `indexes` of `rows` one at a time in id order through `sender`, each waiting for
/// its delivery report (at most `report_bound`). A row that fails or is not sent leaves the
/// later rows of its key untouched, so per-key order holds.
pub async fn one_at_a_time(
    rows: &[ClaimedRow],
    mut indexes: Vec<usize>,
    report_bound: Duration,
    sender: &impl HandOver,
) -> Resent {
    indexes.sort_unstable();
    let mut blocked: HashSet<(&str, &str)> = HashSet::new();
    let mut out = Resent::default();
    let deadline = Instant::now() + BUDGET;
    for (n, index) in indexes.into_iter().enumerate() {
        let row = &rows[index];
        let key = row.key.as_deref().map(|k| (row.topic.as_str(), k));
        let within = n < MAX_ROWS && Instant::now() < deadline;
        let report = if !within || key.is_some_and(|k| blocked.contains(&k)) {
            None
        } else {
            match sender.hand_over(row).await {
                Handed::Sent(delivery) => {
                    tokio::time::timeout(report_bound, delivery_report(delivery))
                        .await
                        .ok()
                }
                Handed::Failed(e) => Some(Err(e)),
                Handed::NotNow => None,
            }
        };
        match report {
            Some(Ok((partition, offset))) => out.delivered.push((index, partition, offset)),
            failed_or_not_sent => {
                if let Some(k) = key {
                    blocked.insert(k);
                }
                match failed_or_not_sent {
                    Some(Err(e)) => out.failed.push((index, e)),
                    _ => out.untouched.push(index),
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use RDKafkaErrorCode as C;

    fn refusal(index: usize, topic: &str, d: Disposition, code: Option<C>) -> Refusal<'_> {
        Refusal {
            index,
            topic,
            disposition: d,
            kafka_code: code,
        }
    }

    #[test]
    fn only_park_verdicts_kafka_shared_within_a_topic_make_suspects() {
        let p = Disposition::Park;
        let got = suspects([
            // Two rows of "a" refused together: suspects.
            refusal(4, "a", p, Some(C::InvalidTimestamp)),
            refusal(1, "a", p, Some(C::InvalidTimestamp)),
            // Alone in its topic and code: the culprit itself.
            refusal(2, "b", p, Some(C::InvalidTimestamp)),
            refusal(3, "a", p, Some(C::MessageSizeTooLarge)),
            // Refused before Kafka (no code): never resent.
            refusal(5, "c", p, None),
            refusal(6, "c", p, None),
            // Retries are not resent one at a time.
            refusal(7, "d", Disposition::Retry, Some(C::RequestTimedOut)),
            refusal(8, "d", Disposition::Retry, Some(C::RequestTimedOut)),
        ]);
        assert_eq!(got, vec![1, 4]);
    }
}
