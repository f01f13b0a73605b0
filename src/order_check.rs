//! The order checker: compares what a topic holds with what the outbox says was delivered.
//!
//! It reads every record of the topic from the beginning to the high watermarks of the moment
//! (all partitions assigned, a fresh group id, nothing committed), looking only at the
//! `event_id` header, so it works whatever the payload format. It then reports duplicates,
//! delivered rows that never arrived (lost), keys whose records break outbox id order
//! (reordered), delivered rows whose stored (partition, offset) holds another record
//! (mismatched), records the outbox does not know (unknown), and rows never sent (pending,
//! parked). Every one of them but duplicates fails the check unless [`Allow`] says otherwise.
//!
//! The outbox rows are read *before* the watermarks: a row is marked delivered only after
//! Kafka acknowledged it with `acks=all`, which means its record is below the high watermark,
//! so a row delivered while the check runs can never be reported lost.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::outbox::TableName;

/// How many lost ids and reordered keys a report spells out.
const LOST_IDS_SHOWN: usize = 20;
const REORDERED_SHOWN: usize = 10;
/// How long the reader waits without any new record before it gives up.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// What the checker found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OrderReport {
    /// Records read from the topic.
    pub records: u64,
    /// Distinct `event_id`s among them (a record without one counts as distinct).
    pub distinct_event_ids: u64,
    /// `records - distinct_event_ids`: copies consumers must deduplicate.
    pub duplicates: u64,
    /// Rows marked `delivered` whose `event_id` is not in the topic.
    pub lost: u64,
    /// The first lost row ids, ascending.
    pub lost_ids: Vec<i64>,
    /// Keys whose records, taken at their first occurrence in the partition log, do not have
    /// increasing outbox ids.
    pub reordered: u64,
    /// A few of them, readable.
    pub reordered_examples: Vec<String>,
    /// Records whose `event_id` is not in the outbox (or that carry none).
    pub unknown: u64,
    /// Rows of the topic never sent: still pending, or parked.
    pub pending: u64,
    pub parked: u64,
    /// Delivered rows found in the topic, but not at the (partition, offset) the outbox stored
    /// for them (another record is there, none is, or none was stored).
    pub mismatched: u64,
    /// The first mismatched row ids, ascending.
    pub mismatched_ids: Vec<i64>,
    /// What the verdict tolerates (default: nothing but duplicates).
    pub allow: Allow,
}

/// What a verdict may tolerate. Duplicates are always tolerated (consumers dedupe on
/// `event_id`); lost, reordered and mismatched never are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Allow {
    /// Rows still pending (not sent yet, or stuck).
    pub pending: bool,
    /// Parked rows.
    pub parked: bool,
    /// Records whose `event_id` is not an outbox row of the topic.
    pub unknown: bool,
}

impl OrderReport {
    /// Nothing lost, out of order or at the wrong coordinates, and (unless [`OrderReport::allow`]
    /// says otherwise) nothing pending, parked or unknown.
    pub fn is_ok(&self) -> bool {
        self.problems().is_empty()
    }

    /// What fails the verdict, e.g. `["lost 1", "pending 3"]`.
    pub fn problems(&self) -> Vec<String> {
        let a = self.allow;
        [
            ("lost", self.lost, false),
            ("reordered", self.reordered, false),
            ("mismatched", self.mismatched, false),
            ("unknown", self.unknown, a.unknown),
            ("pending", self.pending, a.pending),
            ("parked", self.parked, a.parked),
        ]
        .into_iter()
        .filter(|&(_, n, allowed)| n > 0 && !allowed)
        .map(|(what, n, _)| format!("{what} {n}"))
        .collect()
    }
}

impl fmt::Display for OrderReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "records:    {} (distinct event_ids: {}, duplicates: {})",
            self.records, self.distinct_event_ids, self.duplicates
        )?;
        write!(
            f,
            "lost:       {} (delivered rows not in the topic)",
            self.lost
        )?;
        if !self.lost_ids.is_empty() {
            let ids: Vec<String> = self.lost_ids.iter().map(i64::to_string).collect();
            let more = if self.lost > ids.len() as u64 {
                ", …"
            } else {
                ""
            };
            write!(f, ": ids {}{more}", ids.join(", "))?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "reordered:  {} (keys out of outbox id order)",
            self.reordered
        )?;
        for example in &self.reordered_examples {
            writeln!(f, "            {example}")?;
        }
        write!(
            f,
            "mismatched: {} (delivered rows whose stored partition/offset holds another record)",
            self.mismatched
        )?;
        if !self.mismatched_ids.is_empty() {
            let ids: Vec<String> = self.mismatched_ids.iter().map(i64::to_string).collect();
            let more = if self.mismatched > ids.len() as u64 {
                ", …"
            } else {
                ""
            };
            write!(f, ": ids {}{more}", ids.join(", "))?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "unknown:    {} (records whose event_id is not in the outbox){}",
            self.unknown,
            if self.allow.unknown { ", allowed" } else { "" }
        )?;
        writeln!(
            f,
            "not sent:   pending {}{}, parked {}{}",
            self.pending,
            if self.allow.pending { " (allowed)" } else { "" },
            self.parked,
            if self.allow.parked { " (allowed)" } else { "" },
        )?;
        let problems = self.problems();
        if problems.is_empty() {
            write!(f, "verdict:    OK")
        } else {
            write!(f, "verdict:    FAILED ({})", problems.join(", "))
        }
    }
}

/// Why the check could not run (not what it found).
#[derive(Debug, thiserror::Error)]
pub enum OrderCheckError {
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("topic {0:?} does not exist")]
    UnknownTopic(String),
    #[error(
        "no record arrived for {0:?} while {1} partitions were still below their high watermark"
    )]
    Stalled(Duration, usize),
    #[error("the Kafka reader stopped unexpectedly: {0}")]
    Reader(String),
}

/// One outbox row of the topic, as the checker needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: i64,
    pub event_id: Uuid,
    pub key: Option<String>,
    pub status: String,
    /// Where the relay recorded the row's record (delivered rows).
    pub partition: Option<i32>,
    pub offset: Option<i64>,
}

/// One record's identity and place in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub partition: i32,
    pub offset: i64,
    pub event_id: EventRef,
}

/// The `event_id` header as found.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventRef {
    Uuid(Uuid),
    /// Present but not a UUID.
    Other(Vec<u8>),
    Missing,
}

impl EventRef {
    fn from_header(value: Option<&[u8]>) -> Self {
        match value {
            None => EventRef::Missing,
            Some(bytes) => std::str::from_utf8(bytes)
                .ok()
                .and_then(|s| Uuid::parse_str(s).ok())
                .map_or_else(|| EventRef::Other(bytes.to_vec()), EventRef::Uuid),
        }
    }
}

/// The delivery log of `table` (migration 0007), where `relay.on_delivered = "delete"` keeps
/// the coordinates of the rows it deleted.
fn delivered_log(table: &TableName) -> String {
    format!("\"{}\".\"{}_delivered\"", table.schema(), table.table())
}

/// Checks `topic` against the outbox `table` (and its delivery log), reading it from the
/// brokers at `bootstrap` over PLAINTEXT.
pub async fn check(
    pool: &PgPool,
    table: &TableName,
    bootstrap: &str,
    topic: &str,
) -> Result<OrderReport, OrderCheckError> {
    let mut connection = ClientConfig::new();
    connection.set("bootstrap.servers", bootstrap);
    check_with(pool, table, connection, topic).await
}

/// [`check`], reading the topic through a consumer built on `connection` (the brokers and how
/// to reach them: [`crate::produce::connection_config`]).
pub async fn check_with(
    pool: &PgPool,
    table: &TableName,
    connection: ClientConfig,
    topic: &str,
) -> Result<OrderReport, OrderCheckError> {
    let mut rows: Vec<OutboxRow> = sqlx::query_as::<
        _,
        (i64, Uuid, Option<String>, String, Option<i32>, Option<i64>),
    >(&format!(
        "SELECT id, event_id, key, status, kafka_partition, kafka_offset FROM {} \
             WHERE topic = $1 \
         UNION ALL \
         SELECT id, event_id, key, 'delivered', kafka_partition, kafka_offset FROM {} \
             WHERE topic = $1",
        table.qualified(),
        delivered_log(table)
    ))
    .bind(topic)
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|(id, event_id, key, status, partition, offset)| OutboxRow {
        id,
        event_id,
        key,
        status,
        partition,
        offset,
    })
    .collect();

    let name = topic.to_owned();
    let records = tokio::task::spawn_blocking(move || read_topic(connection, &name))
        .await
        .map_err(|e| OrderCheckError::Reader(e.to_string()))??;

    // Rows committed after the snapshot may already be in the topic: look them up, so they
    // count as known (and their order is checked), though never as lost.
    let known: HashSet<Uuid> = rows.iter().map(|r| r.event_id).collect();
    let late: Vec<Uuid> = records
        .iter()
        .filter_map(|r| match r.event_id {
            EventRef::Uuid(u) if !known.contains(&u) => Some(u),
            _ => None,
        })
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if !late.is_empty() {
        let late_rows = sqlx::query_as::<_, (i64, Uuid, Option<String>)>(&format!(
            "SELECT id, event_id, key FROM {} WHERE topic = $1 AND event_id = ANY($2) \
             UNION ALL \
             SELECT id, event_id, key FROM {} WHERE topic = $1 AND event_id = ANY($2)",
            table.qualified(),
            delivered_log(table)
        ))
        .bind(topic)
        .bind(&late)
        .fetch_all(pool)
        .await?;
        // Marked "late": whatever their status now, they were not in the snapshot.
        rows.extend(late_rows.into_iter().map(|(id, event_id, key)| OutboxRow {
            id,
            event_id,
            key,
            status: "late".into(),
            partition: None,
            offset: None,
        }));
    }
    Ok(analyze(&rows, records))
}

/// Reads every record below the high watermarks of this moment.
fn read_topic(
    mut connection: ClientConfig,
    topic: &str,
) -> Result<Vec<LogRecord>, OrderCheckError> {
    let consumer: BaseConsumer = connection
        .set(
            "group.id",
            format!("outbox-relay-order-check-{}", Uuid::new_v4()),
        )
        .set("client.id", "outbox-relay-order-check")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), KAFKA_TIMEOUT)?;
    let Some(meta) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(OrderCheckError::UnknownTopic(topic.to_owned()));
    };
    match meta.error().map(RDKafkaErrorCode::from) {
        Some(RDKafkaErrorCode::UnknownTopicOrPartition) => {
            return Err(OrderCheckError::UnknownTopic(topic.to_owned()))
        }
        Some(code) => return Err(KafkaError::MetadataFetch(code).into()),
        None => {}
    }
    // partition → high watermark still to reach.
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    let mut expected = 0i64;
    for p in meta.partitions() {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), KAFKA_TIMEOUT)?;
        if high > low {
            remaining.insert(p.id(), high);
            expected += high - low;
            assignment.add_partition_offset(topic, p.id(), Offset::Offset(low))?;
        }
    }
    let mut out = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
    if remaining.is_empty() {
        return Ok(out);
    }
    consumer.assign(&assignment)?;
    let mut last_progress = Instant::now();
    while !remaining.is_empty() {
        if last_progress.elapsed() > STALL_TIMEOUT {
            return Err(OrderCheckError::Stalled(STALL_TIMEOUT, remaining.len()));
        }
        let Some(msg) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let msg = match msg {
            Ok(msg) => msg,
            // librdkafka reports a lost broker connection this way, then reconnects (or reads
            // from the new leader): the stall timeout bounds the wait.
            Err(KafkaError::MessageConsumption(code)) if is_transient(code) => continue,
            Err(e) => return Err(e.into()),
        };
        last_progress = Instant::now();
        let (partition, offset) = (msg.partition(), msg.offset());
        let Some(&high) = remaining.get(&partition) else {
            continue; // this partition is done; later records are beyond the snapshot
        };
        if offset >= high {
            remaining.remove(&partition);
            continue;
        }
        let event_id = EventRef::from_header(msg.headers().and_then(|headers| {
            headers
                .iter()
                .find(|h| h.key == "event_id")
                .and_then(|h| h.value)
        }));
        out.push(LogRecord {
            partition,
            offset,
            event_id,
        });
        if offset + 1 >= high {
            remaining.remove(&partition);
        }
    }
    Ok(out)
}

/// Consumer errors that say a broker is away for now (a broker restarted or killed, the
/// cluster electing leaders), not that the topic cannot be read.
fn is_transient(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::BrokerTransportFailure
            | C::AllBrokersDown
            | C::Resolve
            | C::OperationTimedOut
            | C::RequestTimedOut
            | C::NetworkException
            | C::LeaderNotAvailable
            | C::NotLeaderForPartition
    )
}

/// Computes the report from the outbox rows of a topic and its records (each partition's
/// records in offset order; partitions may interleave).
pub fn analyze(rows: &[OutboxRow], mut records: Vec<LogRecord>) -> OrderReport {
    records.sort_by_key(|r| (r.partition, r.offset));
    let by_event: HashMap<Uuid, usize> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (r.event_id, i))
        .collect();

    let mut report = OrderReport {
        records: records.len() as u64,
        ..OrderReport::default()
    };
    let mut seen_uuids: HashSet<Uuid> = HashSet::with_capacity(records.len());
    let mut seen_other: HashSet<&[u8]> = HashSet::new();
    // (partition, key) → (outbox id, offset) of the last first occurrence.
    let mut last_of_key: HashMap<(i32, &str), (i64, i64)> = HashMap::new();
    let mut broken_keys: HashSet<&str> = HashSet::new();
    for record in &records {
        let uuid = match &record.event_id {
            EventRef::Uuid(u) => *u,
            EventRef::Other(bytes) => {
                report.unknown += 1;
                if seen_other.insert(bytes) {
                    report.distinct_event_ids += 1;
                }
                continue;
            }
            EventRef::Missing => {
                report.unknown += 1;
                report.distinct_event_ids += 1;
                continue;
            }
        };
        if !seen_uuids.insert(uuid) {
            continue; // a duplicate: only first occurrences carry order
        }
        report.distinct_event_ids += 1;
        let Some(row) = by_event.get(&uuid).map(|&i| &rows[i]) else {
            report.unknown += 1;
            continue;
        };
        let Some(key) = row.key.as_deref() else {
            continue; // unkeyed rows carry no order promise
        };
        let here = (row.id, record.offset);
        match last_of_key.insert((record.partition, key), here) {
            Some((prev_id, prev_offset)) if prev_id > row.id => {
                if broken_keys.insert(key) && report.reordered_examples.len() < REORDERED_SHOWN {
                    report.reordered_examples.push(format!(
                        "key {key:?} (partition {}): id {} at offset {} after id {prev_id} at \
                         offset {prev_offset}",
                        record.partition, row.id, record.offset
                    ));
                }
                // Keep the higher id as the bar, so one late row is not counted per follower.
                last_of_key.insert((record.partition, key), (prev_id, prev_offset));
            }
            _ => {}
        }
    }
    report.duplicates = report.records - report.distinct_event_ids;
    report.reordered = broken_keys.len() as u64;

    let at: HashMap<(i32, i64), &EventRef> = records
        .iter()
        .map(|r| ((r.partition, r.offset), &r.event_id))
        .collect();
    let mut lost: Vec<i64> = Vec::new();
    let mut mismatched: Vec<i64> = Vec::new();
    for row in rows {
        match row.status.as_str() {
            "delivered" if !seen_uuids.contains(&row.event_id) => lost.push(row.id),
            "delivered" => {
                let holds_it = match (row.partition, row.offset) {
                    (Some(p), Some(o)) => at.get(&(p, o)) == Some(&&EventRef::Uuid(row.event_id)),
                    _ => false,
                };
                if !holds_it {
                    mismatched.push(row.id);
                }
            }
            "pending" => report.pending += 1,
            "parked" => report.parked += 1,
            _ => {}
        }
    }
    lost.sort_unstable();
    report.lost = lost.len() as u64;
    lost.truncate(LOST_IDS_SHOWN);
    report.lost_ids = lost;
    mismatched.sort_unstable();
    report.mismatched = mismatched.len() as u64;
    mismatched.truncate(LOST_IDS_SHOWN);
    report.mismatched_ids = mismatched;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_broker_connection_is_waited_out_but_a_topic_error_ends_the_check() {
        for code in [
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::NotLeaderForPartition,
        ] {
            assert!(is_transient(code), "{code:?} should be waited out");
        }
        for code in [
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::OffsetOutOfRange,
        ] {
            assert!(!is_transient(code), "{code:?} should end the check");
        }
    }

    /// A row; delivered rows get their coordinates from `at` (id → (partition, offset)).
    fn row(id: i64, key: Option<&str>, status: &str) -> OutboxRow {
        OutboxRow {
            id,
            event_id: Uuid::from_u128(id as u128),
            key: key.map(str::to_owned),
            status: status.into(),
            partition: None,
            offset: None,
        }
    }

    /// `rows` with the coordinates of their first record in `records`, as the relay marks them.
    fn marked(mut rows: Vec<OutboxRow>, records: &[LogRecord]) -> Vec<OutboxRow> {
        for r in &mut rows {
            if let Some(rec) = records
                .iter()
                .find(|rec| rec.event_id == EventRef::Uuid(r.event_id))
            {
                (r.partition, r.offset) = (Some(rec.partition), Some(rec.offset));
            }
        }
        rows
    }

    fn rec(partition: i32, offset: i64, id: i64) -> LogRecord {
        LogRecord {
            partition,
            offset,
            event_id: EventRef::Uuid(Uuid::from_u128(id as u128)),
        }
    }

    #[test]
    fn a_clean_log_is_ok() {
        let rows = [
            row(1, Some("a"), "delivered"),
            row(2, Some("a"), "delivered"),
        ];
        let records = vec![rec(0, 0, 1), rec(0, 1, 2)];
        let report = analyze(&marked(rows.to_vec(), &records), records);
        assert!(report.is_ok(), "{report}");
        assert_eq!((report.records, report.duplicates), (2, 0));
    }

    #[test]
    fn a_retried_batch_that_resends_earlier_rows_is_duplicated_but_not_reordered() {
        let rows = [
            row(1, Some("a"), "delivered"),
            row(2, Some("a"), "delivered"),
        ];
        let records = vec![rec(0, 0, 1), rec(0, 1, 2), rec(0, 2, 1), rec(0, 3, 2)];
        let report = analyze(&marked(rows.to_vec(), &records), records);
        assert_eq!(report.duplicates, 2);
        assert_eq!(report.reordered, 0);
        assert!(report.is_ok());
    }

    #[test]
    fn a_key_out_of_id_order_is_counted_once_however_many_rows_follow() {
        let rows: Vec<_> = (1..=5).map(|i| row(i, Some("a"), "delivered")).collect();
        let records = vec![
            rec(0, 0, 3),
            rec(0, 1, 1),
            rec(0, 2, 2),
            rec(0, 3, 4),
            rec(0, 4, 5),
        ];
        let report = analyze(&marked(rows.to_vec(), &records), records);
        assert_eq!(report.reordered, 1);
        assert!(report.reordered_examples[0].contains("id 1 at offset 1 after id 3"));
        assert!(!report.is_ok());
    }

    #[test]
    fn unkeyed_rows_and_other_partitions_carry_no_order_promise() {
        let rows = [
            row(1, None, "delivered"),
            row(2, None, "delivered"),
            row(3, Some("a"), "delivered"),
            row(4, Some("b"), "delivered"),
        ];
        // Partitions interleave in the input, as a consumer returns them.
        let records = vec![rec(0, 0, 2), rec(1, 0, 4), rec(0, 1, 1), rec(2, 0, 3)];
        assert!(analyze(&marked(rows.to_vec(), &records), records).is_ok());
    }

    #[test]
    fn delivered_rows_missing_from_the_log_are_lost_and_others_are_context() {
        let rows = [
            row(1, Some("a"), "delivered"),
            row(2, Some("a"), "delivered"),
            row(3, Some("a"), "pending"),
            row(4, None, "parked"),
        ];
        let mut records = vec![rec(0, 0, 1), rec(0, 1, 99)];
        records.push(LogRecord {
            partition: 0,
            offset: 2,
            event_id: EventRef::Missing,
        });
        let report = analyze(&marked(rows.to_vec(), &records), records);
        assert_eq!(report.lost, 1);
        assert_eq!(report.lost_ids, vec![2]);
        assert_eq!(report.unknown, 2);
        assert_eq!((report.pending, report.parked), (1, 1));
        assert_eq!(report.duplicates, 0);
    }

    #[test]
    fn a_row_whose_stored_offset_holds_another_record_is_mismatched() {
        let records = vec![rec(0, 0, 1), rec(0, 1, 2)];
        let mut rows = marked(
            vec![
                row(1, Some("a"), "delivered"),
                row(2, Some("a"), "delivered"),
            ],
            &records,
        );
        rows[0].offset = Some(1);
        let report = analyze(&rows, records);
        assert_eq!(
            (report.mismatched, report.mismatched_ids.clone()),
            (1, vec![1])
        );
        assert_eq!(report.lost, 0);
        assert!(!report.is_ok(), "{report}");
        assert!(
            report.to_string().contains("FAILED (mismatched 1)"),
            "{report}"
        );
    }

    #[test]
    fn rows_never_sent_and_unknown_records_fail_unless_allowed() {
        let records = vec![rec(0, 0, 1), rec(0, 1, 99)];
        let rows = marked(
            vec![
                row(1, Some("a"), "delivered"),
                row(2, Some("a"), "pending"),
                row(3, None, "parked"),
            ],
            &records,
        );
        let mut report = analyze(&rows, records);
        assert_eq!(report.problems(), ["unknown 1", "pending 1", "parked 1"]);
        report.allow = Allow {
            pending: true,
            parked: true,
            unknown: false,
        };
        assert_eq!(report.problems(), ["unknown 1"]);
        report.allow.unknown = true;
        assert!(report.is_ok(), "{report}");
    }
}
