//! Delivery reports: where Kafka put each record of a batch, why it refused one, or that no
//! report came within the bound.

use std::time::Duration;

use futures::future::join_all;
use rdkafka::error::KafkaError;
use rdkafka::producer::DeliveryFuture;

use super::ProduceError;

/// Waits for a record's delivery report: where Kafka put it (partition, offset), or why not.
pub async fn delivery_report(delivery: DeliveryFuture) -> Result<(i32, i64), ProduceError> {
    match delivery.await {
        Ok(Ok(d)) => Ok((d.partition, d.offset)),
        Ok(Err((e, _))) => Err(e.into()),
        Err(_canceled) => Err(KafkaError::Canceled.into()),
    }
}

/// A batch's delivery reports, by the index each record was handed over with.
#[derive(Debug, Default)]
pub struct Reports {
    /// Acknowledged: `(index, partition, offset)`.
    pub delivered: Vec<(usize, i32, i64)>,
    /// Refused or lost, with why.
    pub failed: Vec<(usize, ProduceError)>,
    /// No report within the bound: the record may still reach Kafka (a later send of the row
    /// is a duplicate with the same `event_id`, never a loss).
    pub unreported: Vec<usize>,
}

/// Waits for every report, each for at most `bound` (librdkafka reports every record within
/// `message.timeout.ms`; the bound is a safety net beyond it).
pub async fn reports(deliveries: Vec<(usize, DeliveryFuture)>, bound: Duration) -> Reports {
    let all = join_all(deliveries.into_iter().map(|(index, delivery)| async move {
        (
            index,
            tokio::time::timeout(bound, delivery_report(delivery))
                .await
                .ok(),
        )
    }))
    .await;
    let mut out = Reports {
        delivered: Vec::with_capacity(all.len()),
        ..Reports::default()
    };
    for (index, report) in all {
        match report {
            Some(Ok((partition, offset))) => out.delivered.push((index, partition, offset)),
            Some(Err(e)) => out.failed.push((index, e)),
            None => out.unreported.push(index),
        }
    }
    out
}
