//! One batch, in one transaction: claim → serialize → produce → wait for every delivery
//! report → mark delivered / reschedule / park → commit.
//!
//! Per-key order inside a batch: rows are handed to Kafka in id order, and once a row of a key
//! fails before reaching Kafka (unserializable, refused by librdkafka) or is held back (registry
//! outage), the later rows of that key in this batch are not handed over either: they stay
//! pending, untouched, and the claim's key rules decide when they go.
//!
//! A refusal Kafka makes about a whole record batch (too large, invalid timestamp, invalid
//! record, ...) fails every record of that batch with the same code: when several rows of one
//! topic share such a verdict, they are sent again one at a time (bounded by
//! [`ISOLATE_MAX_ROWS`] and [`ISOLATE_BUDGET`]; rows beyond the bound stay pending, untouched),
//! so only the culprit is parked.
//!
//! A refusal about a topic (its authorization) defers that topic's rows, without an attempt,
//! and lets every other topic flow; see [`Shared::defer_delay`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::future::join_all;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::DeliveryFuture;
use tracing::{debug, error, info, warn};

use super::Shared;
use crate::config::OnParked;
use crate::outbox::{capped, ClaimedRow, Delivered, Failed, Parked, StoreError, REASON_MAX_BYTES};
use crate::produce::{delivery_report, Disposition, ProduceError};
use crate::retry::{jitter_unit, RetryDecision};
use crate::serialize::SerializeError;

/// How long a batch waits for the dead-letter copies of its parked rows.
const DEAD_LETTER_WAIT: Duration = Duration::from_secs(10);

/// At most this many rows of one batch are sent again one at a time to find a culprit.
const ISOLATE_MAX_ROWS: usize = 100;
/// And for at most this long in all.
const ISOLATE_BUDGET: Duration = Duration::from_secs(30);

/// A deferred topic's first delay, doubled per deferral in a row, up to [`DEFER_MAX`].
const DEFER_MIN: Duration = Duration::from_secs(1);
const DEFER_MAX: Duration = Duration::from_secs(60);

/// A topic whose rows are deferred, and since how many deferrals in a row.
#[derive(Debug, Clone, Copy)]
pub(super) struct Deferral {
    until: Instant,
    streak: u32,
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
    pub(super) claimed: usize,
    /// Kafka did not answer: the rows it concerned were left untouched.
    pub(super) kafka_outage: bool,
    /// The registry did not answer: the rows from there on were left untouched.
    pub(super) registry_outage: Option<String>,
}

/// A row that did not make it, and what to do about it.
struct Failure {
    index: usize,
    reason: String,
    disposition: Disposition,
    /// Kafka's code when Kafka refused the record (or the record batch it travelled in, maybe
    /// because of another record of that batch).
    kafka_code: Option<RDKafkaErrorCode>,
}

impl Failure {
    fn new(index: usize, e: &ProduceError) -> Self {
        Self {
            index,
            reason: capped(&e.to_string(), REASON_MAX_BYTES).into_owned(),
            disposition: e.disposition(),
            kafka_code: None,
        }
    }
}

/// Why a row was not handed to librdkafka.
enum HandOver {
    /// The registry is away: not the row's fault.
    RegistryAway(String),
    /// The row cannot be serialized, or librdkafka refused it.
    Failed(ProduceError),
}

impl Shared {
    /// Serializes `row` and hands it to librdkafka.
    async fn hand_over(&self, row: &ClaimedRow) -> Result<DeliveryFuture, HandOver> {
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

    pub(super) async fn run_batch(&self) -> Result<BatchOutcome, BatchError> {
        let mut tx = self.outbox.begin().await?;
        let claim_started = Instant::now();
        let rows = self.outbox.claim(&mut tx, self.config.batch_size).await?;
        crate::metrics::batch_claimed(rows.len(), claim_started.elapsed());
        if rows.is_empty() {
            tx.commit().await.map_err(StoreError::from)?;
            return Ok(BatchOutcome::default());
        }
        let mut outcome = BatchOutcome {
            claimed: rows.len(),
            ..BatchOutcome::default()
        };

        // 1. Serialize and hand to librdkafka in id order.
        let mut in_flight = Vec::with_capacity(rows.len());
        let mut failures: Vec<Failure> = Vec::new();
        let mut blocked: HashSet<(&str, &str)> = HashSet::new();
        let mut untouched = 0usize;
        // Topics to defer in this batch, with the reason.
        let mut defer: HashMap<&str, String> = HashMap::new();
        for (index, row) in rows.iter().enumerate() {
            let key = row.key.as_deref().map(|k| (row.topic.as_str(), k));
            if outcome.registry_outage.is_some() || key.is_some_and(|k| blocked.contains(&k)) {
                untouched += 1;
                continue;
            }
            if defer.contains_key(row.topic.as_str()) {
                continue;
            }
            if let Some(reason) = self.deferred_reason(&row.topic) {
                // The topic refused us a moment ago: do not ask again before its delay is over.
                defer.insert(&row.topic, reason);
                continue;
            }
            match self.hand_over(row).await {
                Ok(delivery) => in_flight.push((index, delivery)),
                Err(HandOver::RegistryAway(why)) => {
                    // Not the row's fault; and asking again for the next rows would only
                    // hammer a registry that is away.
                    outcome.registry_outage = Some(why);
                    untouched += 1;
                }
                Err(HandOver::Failed(e)) => {
                    if let Some(k) = key {
                        blocked.insert(k);
                    }
                    failures.push(Failure::new(index, &e));
                }
            }
        }

        // 2. Wait for every delivery report.
        let reports = join_all(
            in_flight
                .into_iter()
                .map(|(index, delivery)| async move { (index, delivery_report(delivery).await) }),
        )
        .await;
        crate::metrics::acknowledged(
            reports
                .iter()
                .filter(|(_, r)| r.is_ok())
                .map(|(i, _)| rows[*i].created_at),
        );
        let mut delivered = Vec::with_capacity(reports.len());
        for (index, result) in reports {
            match result {
                Ok((partition, offset)) => delivered.push((index, partition, offset)),
                Err(e) => failures.push(Failure {
                    kafka_code: e.kafka_code(),
                    ..Failure::new(index, &e)
                }),
            }
        }
        // 2b. Kafka refuses a whole record batch when one record of it is refused (too large,
        //     invalid timestamp, invalid record, ...), and librdkafka fails every record of that
        //     batch with the same error: parking them all would park innocent rows. Send the
        //     rows sharing such a verdict again one at a time.
        let suspects = isolation_suspects(&rows, &failures);
        if !suspects.is_empty() {
            failures.retain(|f| !suspects.contains(&f.index));
            untouched += self
                .one_at_a_time(&rows, suspects, &mut delivered, &mut failures)
                .await;
        }
        // 2c. A topic that refuses us is deferred as a whole.
        failures.retain(|f| {
            if f.disposition != Disposition::Defer {
                return true;
            }
            defer
                .entry(rows[f.index].topic.as_str())
                .or_insert_with(|| f.reason.clone());
            false
        });
        for &(index, _, _) in &delivered {
            self.topic_accepts(&rows[index].topic);
        }
        if !delivered.is_empty() {
            self.producer.health().kafka_answers();
        }
        self.note_out_of_order(&rows, &delivered, &failures);

        // 3. Sort failures into what to write. A timeout while no broker answers is the
        //    cluster's fault, not the row's.
        if failures.iter().any(|f| f.disposition == Disposition::Retry)
            && self.producer.probe().await.is_err()
        {
            for f in &mut failures {
                if f.disposition == Disposition::Retry {
                    f.disposition = Disposition::Outage;
                }
            }
        }
        let mut retry = Vec::new();
        let mut park = Vec::new();
        for f in failures {
            let row = &rows[f.index];
            let policy = self.policies.get(&row.topic);
            warn!(id = row.id, event_id = %row.event_id, topic = %row.topic,
                attempts = row.attempts, disposition = ?f.disposition, error = %f.reason,
                "delivery failed");
            let holds_key = policy.on_parked == OnParked::HoldKey && row.key.is_some();
            match f.disposition {
                Disposition::Outage => {
                    outcome.kafka_outage = true;
                    untouched += 1;
                }
                Disposition::Defer => unreachable!("deferred rows were taken out above"),
                Disposition::Park => park.push((
                    f.index,
                    Parked {
                        id: row.id,
                        error: f.reason,
                        holds_key,
                    },
                )),
                Disposition::Retry => {
                    let attempt = row.attempts.max(0) as u32 + 1;
                    match policy.retry.decide(attempt, jitter_unit()) {
                        RetryDecision::RetryAfter(delay) => retry.push(Failed {
                            id: row.id,
                            error: f.reason,
                            delay,
                        }),
                        RetryDecision::GiveUp => park.push((
                            f.index,
                            Parked {
                                id: row.id,
                                error: format!("gave up after {attempt} attempts: {}", f.reason),
                                holds_key,
                            },
                        )),
                    }
                }
            }
        }

        // 4. Write it all in the claiming transaction.
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
            .reschedule(&mut tx, &retry)
            .await
            .map_err(acknowledged)?;
        let parked: Vec<Parked> = park.iter().map(|(_, p)| p.clone()).collect();
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
        self.dead_letter(&rows, &park).await;
        if let Err(e) = tx.commit().await {
            return Err(acknowledged(StoreError::from(e)));
        }

        crate::metrics::marked(mark_started.elapsed());
        crate::metrics::rows_delivered(delivered.iter().map(|&(i, _, _)| rows[i].topic.as_str()));
        crate::metrics::rows_retried(
            retry
                .iter()
                .filter_map(|f| rows.iter().find(|r| r.id == f.id))
                .map(|r| r.topic.as_str()),
        );
        crate::metrics::rows_parked(
            park.iter()
                .map(|(i, p)| (rows[*i].topic.as_str(), p.error.as_str())),
        );
        let c = &self.counters;
        c.delivered.fetch_add(marks.len() as u64, Ordering::Relaxed);
        c.retried.fetch_add(retry.len() as u64, Ordering::Relaxed);
        c.parked.fetch_add(park.len() as u64, Ordering::Relaxed);
        debug!(
            claimed = rows.len(),
            delivered = marks.len(),
            retried = retry.len(),
            parked = park.len(),
            deferred,
            untouched,
            "batch done"
        );
        Ok(outcome)
    }

    /// Sends `indexes` one row at a time, each waiting for its delivery report, in id order;
    /// a failed row leaves the later rows of its key untouched. Returns how many were untouched.
    async fn one_at_a_time(
        &self,
        rows: &[ClaimedRow],
        mut indexes: Vec<usize>,
        delivered: &mut Vec<(usize, i32, i64)>,
        failures: &mut Vec<Failure>,
    ) -> usize {
        indexes.sort_unstable();
        let mut blocked: HashSet<(&str, &str)> = HashSet::new();
        let mut untouched = 0;
        let deadline = Instant::now() + ISOLATE_BUDGET;
        for (n, index) in indexes.into_iter().enumerate() {
            let row = &rows[index];
            let key = row.key.as_deref().map(|k| (row.topic.as_str(), k));
            if key.is_some_and(|k| blocked.contains(&k)) {
                untouched += 1;
                continue;
            }
            if n >= ISOLATE_MAX_ROWS || Instant::now() >= deadline {
                // Beyond the bound: pending, untouched, tried again by a later batch.
                if let Some(k) = key {
                    blocked.insert(k);
                }
                untouched += 1;
                continue;
            }
            let result = match self.hand_over(row).await {
                Ok(delivery) => delivery_report(delivery).await,
                Err(HandOver::Failed(e)) => Err(e),
                Err(HandOver::RegistryAway(_)) => {
                    if let Some(k) = key {
                        blocked.insert(k);
                    }
                    untouched += 1;
                    continue;
                }
            };
            match result {
                Ok((partition, offset)) => delivered.push((index, partition, offset)),
                Err(e) => {
                    if let Some(k) = key {
                        blocked.insert(k);
                    }
                    failures.push(Failure::new(index, &e));
                }
            }
        }
        untouched
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

    /// librdkafka can fail one record and still deliver a later one of the same partition;
    /// when both share a key, that key's order broke in Kafka. Say so loudly and count it.
    fn note_out_of_order(
        &self,
        rows: &[ClaimedRow],
        delivered: &[(usize, i32, i64)],
        failures: &[Failure],
    ) {
        let mut first_failure: HashMap<(&str, &str), usize> = HashMap::new();
        for f in failures {
            if let Some(k) = rows[f.index].key.as_deref() {
                let slot = first_failure
                    .entry((&rows[f.index].topic, k))
                    .or_insert(f.index);
                *slot = (*slot).min(f.index);
            }
        }
        if first_failure.is_empty() {
            return;
        }
        for &(index, _, _) in delivered {
            let row = &rows[index];
            let Some(k) = row.key.as_deref() else {
                continue;
            };
            if first_failure
                .get(&(row.topic.as_str(), k))
                .is_some_and(|&failed| failed < index)
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
        let mut copies = Vec::new();
        for (index, p) in parked {
            let row = &rows[*index];
            let Some(dlt) = &self.policies.get(&row.topic).dead_letter_topic else {
                continue;
            };
            match self
                .producer
                .enqueue_dead_letter(dlt, row, &p.error, row.attempts + 1)
                .await
            {
                Ok(delivery) => copies.push((row.id, dlt, delivery)),
                Err(e) => warn!(id = row.id, dead_letter_topic = %dlt, error = %e,
                    "could not copy the parked row to its dead-letter topic"),
            }
        }
        for (id, dlt, delivery) in copies {
            match tokio::time::timeout(DEAD_LETTER_WAIT, delivery).await {
                Ok(Ok(Ok(_))) => {
                    self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    crate::metrics::row_dead_lettered(
                        rows.iter()
                            .find(|r| r.id == id)
                            .map_or("", |r| r.topic.as_str()),
                    );
                }
                Ok(Ok(Err((e, _)))) => warn!(id, dead_letter_topic = %dlt, error = %e,
                    "the dead-letter topic refused the parked row's copy"),
                _ => warn!(id, dead_letter_topic = %dlt,
                    "no acknowledgement for the parked row's dead-letter copy"),
            }
        }
    }
}

/// The rows to send again one at a time: those whose Kafka refusal is a Park verdict shared
/// with another row of the same topic (a refusal of the record batch they travelled in).
fn isolation_suspects(rows: &[ClaimedRow], failures: &[Failure]) -> Vec<usize> {
    let mut groups: HashMap<(&str, i32), Vec<usize>> = HashMap::new();
    for f in failures {
        if let (Disposition::Park, Some(code)) = (f.disposition, f.kafka_code) {
            groups
                .entry((rows[f.index].topic.as_str(), code as i32))
                .or_default()
                .push(f.index);
        }
    }
    let mut suspects: Vec<usize> = groups
        .into_values()
        .filter(|g| g.len() > 1)
        .flatten()
        .collect();
    suspects.sort_unstable();
    suspects
}
