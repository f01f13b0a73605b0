//! One batch, in its own transaction, in two halves:
//!
//! - [`Shared::dispatch`] (the pipeline, one claim after another): claim the batch;
//! - [`Shared::complete`] (a task per batch, several at once): hand its rows to librdkafka once
//!   the batch before it has all its delivery reports → wait for its own → decide
//!   ([`super::decide`]) → mark delivered / reschedule / park → commit.
//!
//! So while batch n waits for Kafka, batch n+1 is claimed (its rows locked) and batch n-1 writes
//! its outcome; but a batch's records go to Kafka only after every record of the batch before it
//! was acknowledged or failed. Per-key order across batches is therefore as strict as within a
//! single one: a later row of a key is never handed over while an earlier row of that key may
//! still fail. When a row of a key fails, or is left untouched (registry outage, deferred topic,
//! beyond a bound), the later rows of that key in this batch and in the batches claimed while it
//! was in flight are not handed over either ([`Carry`]): they stay pending, untouched, and the
//! claim's key rules decide when they go.
//!
//! A refusal Kafka makes about a whole record batch (too large, invalid timestamp, invalid
//! record, ...) fails every record of that batch with the same code: when several rows of one
//! topic share such a verdict, they are sent again one at a time (bounded by
//! [`resend::MAX_ROWS`] and [`resend::BUDGET`]; rows beyond the bound stay pending, untouched),
//! so only the culprit is parked.
//!
//! A refusal about a topic (its authorization) defers that topic's rows, without an attempt,
//! and lets every other topic flow; see [`Shared::defer_delay`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::producer::DeliveryFuture;
use sqlx::{Postgres, Transaction};
use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};

use super::decide::{decide, Failure};
use super::Shared;
use crate::outbox::{ClaimedRow, Delivered, Parked, StoreError};
use crate::produce::resend::{self, Handed};
use crate::produce::{self, ClusterState, DeadLetter, Disposition, ProduceError};
use crate::retry::jitter_unit;
use crate::serialize::SerializeError;

/// How long a batch waits for the dead-letter copies of its parked rows, all of them together.
const DEAD_LETTER_WAIT: Duration = Duration::from_secs(10);

/// Beyond `kafka.delivery_timeout_ms`, how long a batch still waits for a delivery report
/// before it gives up on it (librdkafka reports every record by then; this is a safety bound).
const REPORT_GRACE: Duration = Duration::from_secs(5);

/// A deferred topic's first delay, doubled per deferral in a row, up to [`DEFER_MAX`].
const DEFER_MIN: Duration = Duration::from_secs(1);
const DEFER_MAX: Duration = Duration::from_secs(60);

/// A topic whose rows are deferred, and since how many deferrals in a row.
#[derive(Debug, Clone, Copy)]
pub(super) struct Deferral {
    until: Instant,
    streak: u32,
}

/// Keys whose later rows must not be handed over, passed from each batch to the next once its
/// delivery reports are in: `(seq of the batch that failed or left a row of the key untouched,
/// topic, key)`. A batch heeds only the entries of batches that were in flight when it was
/// claimed: one claimed after the failing batch committed finds that batch's rows pending (or
/// backing off, or parked and holding the key), and the claim's key rules take over.
#[derive(Debug, Default)]
pub(super) struct Carry(Vec<(u64, String, String)>);

impl Carry {
    fn holds(&self) -> HashSet<(&str, &str)> {
        self.0
            .iter()
            .map(|(_, t, k)| (t.as_str(), k.as_str()))
            .collect()
    }
}

/// A batch's place in the chain: it hands its rows over when its predecessor's reports are in
/// (`wait`), and tells its successor when its own are (`pass`).
pub(super) struct Turn {
    pub(super) wait: Option<oneshot::Receiver<Carry>>,
    pub(super) pass: oneshot::Sender<Carry>,
}

/// Why a store write failed, and whether Kafka had acknowledged rows of the batch.
#[derive(Debug)]
pub(super) struct BatchError {
    pub(super) error: StoreError,
    /// Rows Kafka acknowledged that could not be recorded: they stay pending and go again.
    pub(super) acknowledged: usize,
}

impl From<StoreError> for BatchError {
    fn from(error: StoreError) -> Self {
        Self {
            error,
            acknowledged: 0,
        }
    }
}

/// What a batch ended in.
#[derive(Debug, Default)]
pub(super) struct BatchOutcome {
    /// Kafka did not answer: the rows it concerned were left untouched.
    pub(super) kafka_outage: bool,
    /// The registry did not answer: the rows from there on were left untouched.
    pub(super) registry_outage: Option<String>,
}

/// What a claim came back with.
pub(super) enum Dispatched {
    /// No row is due.
    Empty,
    /// Rows are due, but every one is behind an earlier row of its key held elsewhere.
    Blocked,
    /// A batch claimed: its rows' ids, and the batch.
    Batch(Vec<i64>, Box<Claimed>),
}

/// A claimed batch: its rows locked in its transaction.
pub(super) struct Claimed {
    seq: u64,
    /// The oldest batch still in flight when this one was claimed (`seq` if none was).
    oldest_in_flight: u64,
    tx: Transaction<'static, Postgres>,
    rows: Vec<ClaimedRow>,
}

/// What handing a batch's rows to librdkafka came to.
#[derive(Default)]
struct HandedOver {
    deliveries: Vec<(usize, DeliveryFuture)>,
    failures: Vec<Failure>,
    /// Topics to defer (an index of one of its rows, the reason).
    defer: Vec<(usize, String)>,
    /// Rows not handed over and left as they are.
    untouched: Vec<usize>,
    registry_outage: Option<String>,
}

/// Why a row was not handed to librdkafka.
enum HandOver {
    /// The registry is away: not the row's fault.
    RegistryAway(String),
    /// The row cannot be serialized, or librdkafka refused it.
    Failed(ProduceError),
}

/// The span of a batch: every log line about it carries `batch` (its sequence number), its
/// claimed count, and the W3C `traceparent` of its rows that have one (up to 10, so that the
/// batch links to the traces that wrote its rows; the header reaches the Kafka record
/// unchanged, as every row header does). Its outcome is recorded when it ends (`delivered`,
/// `retried`, `parked`, `untouched`, `duration_ms`), and said in its `batch done` debug line.
pub(super) fn span(seq: u64, batch: &Claimed) -> tracing::Span {
    let traceparents: Vec<&str> = batch
        .rows
        .iter()
        .filter_map(|r| traceparent(&r.headers))
        .take(10)
        .collect();
    tracing::info_span!(
        "batch",
        batch = seq,
        claimed = batch.rows.len(),
        traceparents = %traceparents.join(","),
        delivered = tracing::field::Empty,
        retried = tracing::field::Empty,
        parked = tracing::field::Empty,
        untouched = tracing::field::Empty,
        duration_ms = tracing::field::Empty,
    )
}

/// The `traceparent` header of a row, from its headers as Postgres prints them
/// (`{"a": "b", …}`), without parsing the object or allocating; `None` if absent or escaped.
fn traceparent(headers: &str) -> Option<&str> {
    const NEEDLE: &str = "\"traceparent\": \"";
    let at = headers.find(NEEDLE)?;
    let value = headers[at + NEEDLE.len()..].split('"').next()?;
    (!value.contains('\\')).then_some(value)
}

impl resend::HandOver for Shared {
    async fn hand_over(&self, row: &ClaimedRow) -> Handed {
        match Shared::hand_over(self, row).await {
            Ok(delivery) => Handed::Sent(delivery),
            Err(HandOver::Failed(e)) => Handed::Failed(e),
            Err(HandOver::RegistryAway(_)) => Handed::NotNow,
        }
    }
}

impl Shared {
    /// Checks `row` against its topic's limits, serializes it and hands it to librdkafka.
    async fn hand_over(&self, row: &ClaimedRow) -> Result<DeliveryFuture, HandOver> {
        if let Some(reason) = self.topic_limits.refusal_for(row).await {
            return Err(HandOver::Failed(ProduceError::BadRow(reason)));
        }
        match self
            .serializer
            .serialize(row, self.policies.get(&row.topic))
            .await
        {
            Ok(encoded) => self
                .producer
                .enqueue(row, &encoded)
                .await
                .map_err(HandOver::Failed),
            Err(SerializeError::Outage(why)) => Err(HandOver::RegistryAway(why)),
            Err(SerializeError::Poison(why)) => Err(HandOver::Failed(ProduceError::BadRow(why))),
        }
    }

    /// Claims a batch (`in_flight`: the ids of this relay's batches still in flight, whose
    /// records go to Kafka before this batch's).
    pub(super) async fn dispatch(
        &self,
        seq: u64,
        oldest_in_flight: u64,
        in_flight: &[i64],
    ) -> Result<Dispatched, StoreError> {
        let mut tx = self.outbox.begin().await?;
        let claim_started = Instant::now();
        let claim = self
            .outbox
            .claim(&mut tx, self.config.batch_size, in_flight)
            .await?;
        crate::metrics::batch_claimed(claim.rows.len(), claim_started.elapsed());
        if claim.rows.is_empty() {
            tx.commit().await?;
            return Ok(if claim.candidates > 0 {
                Dispatched::Blocked
            } else {
                Dispatched::Empty
            });
        }
        let ids = claim.rows.iter().map(|r| r.id).collect();
        Ok(Dispatched::Batch(
            ids,
            Box::new(Claimed {
                seq,
                oldest_in_flight,
                tx,
                rows: claim.rows,
            }),
        ))
    }

    /// Serializes and hands `rows` to librdkafka in id order, but no row of a key in `holds`,
    /// nor a later row of a key whose row failed or was left untouched here.
    async fn hand_over_all(
        &self,
        rows: &[ClaimedRow],
        holds: &HashSet<(&str, &str)>,
    ) -> HandedOver {
        let mut out = HandedOver {
            deliveries: Vec::with_capacity(rows.len()),
            ..HandedOver::default()
        };
        let deferrals = self.deferrals_armed();
        let mut blocked: HashSet<(&str, &str)> = HashSet::new();
        for (index, row) in rows.iter().enumerate() {
            let key = row.key.as_deref().map(|k| (row.topic.as_str(), k));
            let held = key.is_some_and(|k| {
                (!holds.is_empty() && holds.contains(&k))
                    || (!blocked.is_empty() && blocked.contains(&k))
            });
            if out.registry_outage.is_some() || held || self.kafka_down.load(Ordering::SeqCst) {
                out.untouched.push(index);
                continue;
            }
            if out.defer.iter().any(|(i, _)| rows[*i].topic == row.topic) {
                out.untouched.push(index);
                continue;
            }
            if let Some(reason) = deferrals
                .then(|| self.deferred_reason(&row.topic))
                .flatten()
            {
                // The topic refused us a moment ago: do not ask again before its delay is over.
                out.defer.push((index, reason));
                out.untouched.push(index);
                continue;
            }
            match self.hand_over(row).await {
                Ok(delivery) => out.deliveries.push((index, delivery)),
                Err(HandOver::RegistryAway(why)) => {
                    // Not the row's fault; and asking again for the next rows would only
                    // hammer a registry that is away.
                    out.registry_outage = Some(why);
                    out.untouched.push(index);
                }
                Err(HandOver::Failed(e)) => {
                    if let Some(k) = key {
                        blocked.insert(k);
                    }
                    out.failures.push(Failure::new(index, &e));
                }
            }
        }
        out
    }

    /// Waits for the batch's delivery reports, decides each row's fate, writes it all in the
    /// batch's transaction (in its turn) and commits.
    pub(super) async fn complete(
        &self,
        batch: Box<Claimed>,
        turn: Turn,
    ) -> Result<BatchOutcome, BatchError> {
        let started = Instant::now();
        let Claimed {
            seq,
            oldest_in_flight,
            mut tx,
            rows,
        } = *batch;

        // 1. Hand the rows over once the batch before has all its reports.
        let mut carry = match turn.wait {
            Some(wait) => wait.await.unwrap_or_default(),
            None => Carry::default(),
        };
        carry.0.retain(|(from, ..)| *from >= oldest_in_flight);
        let HandedOver {
            deliveries,
            mut failures,
            defer,
            untouched: left,
            registry_outage,
        } = self.hand_over_all(&rows, &carry.holds()).await;
        let mut outcome = BatchOutcome {
            registry_outage,
            ..BatchOutcome::default()
        };
        let mut untouched = left.len();
        let mut left_keyed: Vec<usize> = left;

        // 2. Every delivery report, within the delivery timeout (and a grace).
        let bound = self.delivery_timeout + REPORT_GRACE;
        let reports = produce::reports(deliveries, bound).await;
        crate::metrics::acknowledged(reports.delivered.iter().map(|&(i, ..)| rows[i].created_at));
        let mut delivered = reports.delivered;
        failures.extend(
            reports
                .failed
                .iter()
                .map(|(index, e)| Failure::reported(*index, e)),
        );
        for index in reports.unreported {
            // No report within the bound: left pending (it may still arrive in Kafka; a later
            // batch sends it again, same event_id).
            untouched += 1;
            left_keyed.push(index);
            let row = &rows[index];
            warn!(id = row.id, event_id = %row.event_id, topic = %row.topic, bound = ?bound,
                "no delivery report within kafka.delivery_timeout_ms; the row stays pending");
        }
        // 2. Kafka refuses a whole record batch when one record of it is refused (too large,
        //    invalid timestamp, invalid record, ...), and librdkafka fails every record of that
        //    batch with the same error: parking them all would park innocent rows. Send the
        //    rows sharing such a verdict again one at a time.
        let suspects = resend::suspects(failures.iter().map(|f| resend::Refusal {
            index: f.index,
            topic: rows[f.index].topic.as_str(),
            disposition: f.disposition,
            kafka_code: f.kafka_code,
        }));
        if !suspects.is_empty() {
            failures.retain(|f| !suspects.contains(&f.index));
            let resent = resend::one_at_a_time(&rows, suspects, bound, self).await;
            delivered.extend(resent.delivered);
            failures.extend(resent.failed.iter().map(|(i, e)| Failure::reported(*i, e)));
            untouched += resent.untouched.len();
            left_keyed.extend(resent.untouched);
        }

        // 3. A topic that refuses us is deferred as a whole.
        let failed_keyed: Vec<usize> = failures
            .iter()
            .filter(|f| rows[f.index].key.is_some())
            .map(|f| f.index)
            .collect();
        let mut defer: HashMap<&str, String> = defer
            .into_iter()
            .map(|(i, reason)| (rows[i].topic.as_str(), reason))
            .collect();
        failures.retain(|f| {
            if f.disposition != Disposition::Defer {
                return true;
            }
            defer
                .entry(rows[f.index].topic.as_str())
                .or_insert_with(|| f.reason.clone());
            false
        });
        if !delivered.is_empty() {
            self.producer.health().kafka_answers();
            if self.deferrals_armed() {
                for &(index, _, _) in &delivered {
                    self.topic_accepts(&rows[index].topic);
                }
            }
        }

        // 4. Decide. A timeout while no broker answers, or a NOT_ENOUGH_REPLICAS (or the timeout
        //    it turns into) while the rows' partitions lack in-sync replicas, is the cluster's
        //    fault, not the row's.
        let probed: BTreeSet<&str> = failures
            .iter()
            .filter(|f| f.disposition == Disposition::Retry)
            .map(|f| rows[f.index].topic.as_str())
            .collect();
        let cluster = if probed.is_empty() {
            ClusterState::Answers
        } else {
            self.producer
                .cluster_state(&probed, &self.topic_limits)
                .await
        };
        for f in &failures {
            let row = &rows[f.index];
            warn!(id = row.id, event_id = %row.event_id, topic = %row.topic,
                attempts = row.attempts, disposition = ?f.disposition, error = %f.reason,
                "delivery failed");
        }
        let failures_at_kafka: Vec<(usize, i64)> = failures
            .iter()
            .filter(|f| f.kafka_code.is_some())
            .map(|f| (f.index, rows[f.index].id))
            .collect();
        let decisions = decide(&rows, failures, &self.policies, cluster, jitter_unit);
        outcome.kafka_outage = decisions.kafka_outage;
        untouched += decisions.untouched;
        if decisions.kafka_outage {
            // Before the next batch's turn: it must not hand its rows to a Kafka that is away.
            self.kafka_down.store(true, Ordering::SeqCst);
        }

        // 5. The next batch may hand its rows over now, but none of a key that failed or was
        //    left untouched here.
        let before = carry.0.len();
        carry.0.extend(
            failed_keyed
                .iter()
                .copied()
                .chain(left_keyed)
                .filter_map(|i| {
                    let row = &rows[i];
                    row.key.clone().map(|k| (seq, row.topic.clone(), k))
                }),
        );
        if carry.0.len() > before {
            // Batches claimed meanwhile will leave these keys' rows untouched; let the pipeline
            // drain before it claims again, so that the next claim starts from what is written.
            self.drain.store(true, Ordering::SeqCst);
        }
        let _ = turn.pass.send(carry);

        self.note_out_of_order(&rows, &delivered, &failures_at_kafka);

        // 6. Write it all in the claiming transaction, and commit.
        let marks: Vec<Delivered> = delivered
            .iter()
            .map(|&(index, partition, offset)| Delivered {
                id: rows[index].id,
                partition,
                offset,
            })
            .collect();
        let acknowledged = |error| BatchError {
            error,
            acknowledged: marks.len(),
        };
        let mark_started = Instant::now();
        let marked = self
            .outbox
            .mark_delivered(&mut tx, &marks)
            .await
            .map_err(acknowledged)?;
        if marked != marks.len() as u64 {
            error!(
                acknowledged = marks.len(),
                marked,
                "rows marked delivered differ from rows Kafka acknowledged; \
                 acknowledged rows that were no longer pending were left as they are"
            );
        }
        self.outbox
            .reschedule(&mut tx, &decisions.retry)
            .await
            .map_err(acknowledged)?;
        let parked: Vec<Parked> = decisions.park.iter().map(|(_, p)| p.clone()).collect();
        self.outbox
            .park(&mut tx, &parked)
            .await
            .map_err(acknowledged)?;
        let mut deferred = 0;
        for (topic, reason) in &defer {
            let delay = self.defer_delay(topic, reason);
            let reason = format!("deferred (not counted as an attempt): {reason}");
            deferred += self
                .outbox
                .defer_topic(&mut tx, topic, delay, &reason)
                .await
                .map_err(acknowledged)?;
        }
        self.dead_letter(&rows, &decisions.park).await;
        if let Err(e) = tx.commit().await {
            return Err(acknowledged(StoreError::from(e)));
        }

        crate::metrics::marked(mark_started.elapsed());
        crate::metrics::rows_delivered(delivered.iter().map(|&(i, _, _)| rows[i].topic.as_str()));
        crate::metrics::rows_retried(
            decisions
                .retry
                .iter()
                .filter_map(|f| rows.iter().find(|r| r.id == f.id))
                .map(|r| r.topic.as_str()),
        );
        crate::metrics::rows_parked(
            decisions
                .park
                .iter()
                .map(|(i, p)| (rows[*i].topic.as_str(), p.error.as_str())),
        );
        let c = &self.counters;
        c.delivered.fetch_add(marks.len() as u64, Ordering::Relaxed);
        c.retried
            .fetch_add(decisions.retry.len() as u64, Ordering::Relaxed);
        c.parked
            .fetch_add(decisions.park.len() as u64, Ordering::Relaxed);
        let span = tracing::Span::current();
        span.record("delivered", marks.len());
        span.record("retried", decisions.retry.len());
        span.record("parked", decisions.park.len());
        span.record("untouched", untouched);
        span.record("duration_ms", started.elapsed().as_millis() as u64);
        debug!(
            claimed = rows.len(),
            delivered = marks.len(),
            retried = decisions.retry.len(),
            parked = decisions.park.len(),
            deferred,
            untouched,
            "batch done"
        );
        Ok(outcome)
    }

    /// Is any topic deferred (or was one, and has not delivered since)?
    fn deferrals_armed(&self) -> bool {
        !self
            .deferrals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// The reason `topic` is deferred, while it is.
    fn deferred_reason(&self, topic: &str) -> Option<String> {
        let deferrals = self.deferrals.lock().unwrap_or_else(|e| e.into_inner());
        deferrals
            .get(topic)
            .filter(|d| d.until > Instant::now())
            .map(|d| format!("topic {topic:?} refused the relay's last records; waiting until its delay is over (deferral {} in a row)", d.streak))
    }

    /// How long to defer `topic`'s rows now: what is left of a deferral another batch armed, or
    /// a new one (1 s doubling to 60 s per deferral in a row), said once in the log.
    fn defer_delay(&self, topic: &str, reason: &str) -> Duration {
        let now = Instant::now();
        let mut deferrals = self.deferrals.lock().unwrap_or_else(|e| e.into_inner());
        let d = deferrals.entry(topic.to_owned()).or_insert(Deferral {
            until: now,
            streak: 0,
        });
        if d.until > now {
            return d.until - now;
        }
        d.streak += 1;
        let delay = DEFER_MIN
            .saturating_mul(1 << (d.streak - 1).min(16))
            .min(DEFER_MAX);
        d.until = now + delay;
        warn!(%topic, error = %reason, retry_in = ?delay, deferrals_in_a_row = d.streak,
            "Kafka refuses this topic; its rows are deferred (no attempt counted) and every \
             other topic goes on");
        delay
    }

    /// A row of `topic` was delivered: the topic is no longer deferred.
    fn topic_accepts(&self, topic: &str) {
        let mut deferrals = self.deferrals.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = deferrals.remove(topic) {
            info!(%topic, deferrals = d.streak, "Kafka accepts this topic's records again");
        }
    }

    /// librdkafka can fail one record and still deliver a later one of the same partition in
    /// the same batch; when both share a key, that key's order broke in Kafka. Say so loudly and
    /// count it. `failed`: (index, id) of the rows Kafka failed.
    fn note_out_of_order(
        &self,
        rows: &[ClaimedRow],
        delivered: &[(usize, i32, i64)],
        failed: &[(usize, i64)],
    ) {
        if failed.is_empty() {
            return;
        }
        let mut first_failure: HashMap<(&str, &str), i64> = HashMap::new();
        for &(index, id) in failed {
            let row = &rows[index];
            if let Some(k) = row.key.as_deref() {
                let slot = first_failure.entry((&row.topic, k)).or_insert(id);
                *slot = (*slot).min(id);
            }
        }
        for &(index, _, _) in delivered {
            let row = &rows[index];
            let Some(k) = row.key.as_deref() else {
                continue;
            };
            if first_failure
                .get(&(row.topic.as_str(), k))
                .is_some_and(|&failed| failed < row.id)
            {
                self.counters.out_of_order.fetch_add(1, Ordering::Relaxed);
                crate::metrics::out_of_order(&row.topic);
                error!(id = row.id, topic = %row.topic, key = k,
                    "a later row of this key reached Kafka although an earlier one failed: \
                     the key's order is broken in Kafka");
            }
        }
    }

    /// Best effort: a copy of each parked row to its topic's dead-letter topic, if it has one.
    /// The row stays parked (and replayable) whatever happens here.
    async fn dead_letter(&self, rows: &[ClaimedRow], parked: &[(usize, Parked)]) {
        let copies: Vec<DeadLetter<'_>> = parked
            .iter()
            .filter_map(|(index, p)| {
                let row = &rows[*index];
                let topic = self.policies.get(&row.topic).dead_letter_topic.as_deref()?;
                Some(DeadLetter {
                    row,
                    topic,
                    reason: &p.error,
                    attempts: row.attempts + 1,
                })
            })
            .collect();
        if copies.is_empty() {
            return;
        }
        for row in self.producer.dead_letter(copies, DEAD_LETTER_WAIT).await {
            self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
            crate::metrics::row_dead_lettered(&row.topic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::traceparent;

    #[test]
    fn the_traceparent_header_is_read_from_the_headers_text_as_postgres_prints_it() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let headers = format!(r#"{{"source": "svc", "traceparent": "{tp}", "tracestate": "a=1"}}"#);
        assert_eq!(traceparent(&headers), Some(tp));
        assert_eq!(traceparent(r#"{"source": "svc"}"#), None);
        assert_eq!(traceparent("{}"), None);
        assert_eq!(
            traceparent(r#"{"traceparent": "a\"b"}"#),
            None,
            "escaped: not read"
        );
    }
}
