//! Dead-letter copies of parked rows: best effort, all of a batch's copies within one deadline.
//! The row stays parked (and replayable) whatever happens here.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use tracing::warn;

use super::{ProduceError, Producer};
use crate::outbox::ClaimedRow;
use rdkafka::producer::DeliveryFuture;

/// A parked row's copy for its topic's dead-letter topic.
pub struct DeadLetter<'a> {
    pub row: &'a ClaimedRow,
    pub topic: &'a str,
    /// Why the row was parked (the `outbox.error` header).
    pub reason: &'a str,
    /// The attempts the row had used (the `outbox.attempts` header).
    pub attempts: i32,
}

impl Producer {
    /// Sends every copy, then waits for their acknowledgements, all of them within `wait`.
    /// Returns the rows whose copy Kafka acknowledged; a copy that fails is logged and dropped.
    pub async fn dead_letter<'a>(
        &self,
        copies: Vec<DeadLetter<'a>>,
        wait: Duration,
    ) -> Vec<&'a ClaimedRow> {
        let mut sent = Vec::with_capacity(copies.len());
        for c in copies {
            match self
                .enqueue_dead_letter(c.topic, c.row, c.reason, c.attempts)
                .await
            {
                Ok(delivery) => sent.push((c, delivery)),
                Err(e) => warn!(id = c.row.id, dead_letter_topic = %c.topic, error = %e,
                    "could not copy the parked row to its dead-letter topic"),
            }
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mut acknowledged = Vec::with_capacity(sent.len());
        for (c, delivery) in sent {
            match tokio::time::timeout_at(deadline, delivery).await {
                Ok(Ok(Ok(_))) => acknowledged.push(c.row),
                Ok(Ok(Err((e, _)))) => warn!(id = c.row.id, dead_letter_topic = %c.topic,
                    error = %e, "the dead-letter topic refused the parked row's copy"),
                _ => warn!(id = c.row.id, dead_letter_topic = %c.topic,
                    "no acknowledgement for the parked row's dead-letter copy"),
            }
        }
        acknowledged
    }

    /// A copy of a parked row for its topic's dead-letter topic: the row's key and JSON text,
    /// with `event_id`, then `outbox.topic`, `outbox.id`, `outbox.error` and `outbox.attempts`,
    /// then the row's own headers.
    pub async fn enqueue_dead_letter(
        &self,
        dead_letter_topic: &str,
        row: &ClaimedRow,
        reason: &str,
        attempts: i32,
    ) -> Result<DeliveryFuture, ProduceError> {
        let own: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&row.headers).unwrap_or_default();
        let event_id = row.event_id.hyphenated().to_string();
        let (id, attempts) = (row.id.to_string(), attempts.to_string());
        let mut headers = OwnedHeaders::new_with_capacity(5 + own.len());
        for (name, value) in [
            ("event_id", event_id.as_str()),
            ("outbox.topic", row.topic.as_str()),
            ("outbox.id", id.as_str()),
            ("outbox.error", reason),
            ("outbox.attempts", attempts.as_str()),
        ] {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_bytes()),
            });
        }
        for (name, value) in &own {
            if let (Some(value), false) = (value.as_str(), name == "event_id") {
                headers = headers.insert(Header {
                    key: name,
                    value: Some(value.as_bytes()),
                });
            }
        }
        self.send(
            dead_letter_topic,
            row.key.as_deref().map(str::as_bytes),
            row.payload.as_bytes(),
            headers,
            row.created_at.timestamp_millis(),
        )
        .await
    }
}
