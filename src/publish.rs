//! The producer side: an application writes events in its own transaction, through the SQL
//! functions of migration 0006 (`outbox_publish`, `outbox_publish_batch`), and the relay does
//! the rest. Nothing here talks to Kafka.
//!
//! Each event gets a time-ordered UUID (version 7) made here, before the round trip, so the
//! caller knows its id whatever happens next; the row keeps it as `event_id`, the relay sends it
//! as the `event_id` header (and fills it into the value when the schema has that field).
//!
//! The event exists if and only if the caller's transaction commits:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use outbox_relay::outbox::{migrate, TableName};
//! use outbox_relay::publish::{Event, Publisher};
//! use serde_json::json;
//!
//! # let url = std::env::var("OUTBOX_TEST_DATABASE_URL")
//! #     .unwrap_or_else(|_| "postgres://outbox:outbox@127.0.0.1:5432/outbox".into());
//! let table = TableName::new("doc_publish", "outbox")?;
//! migrate(&url, &table).await?; // the table and its publish functions
//! let pool = sqlx::PgPool::connect(&url).await?;
//! let publisher = Publisher::new(&table); // "doc_publish".outbox_publish(...)
//!
//! let event = Event::new(
//!     "mcp.conversations",
//!     json!({"type": "conversation_created", "conversation_id": "conv-123",
//!            "user_id": "user-456", "agent_id": "agent-789", "timestamp": 1767268800000_i64}),
//! )
//! .key("conv-123")
//! .header("correlation_id", "corr-456");
//!
//! // Committed: the row is there, with the id publish returned.
//! let mut tx = pool.begin().await?;
//! // ... the business change, on `&mut *tx` ...
//! let id = publisher.publish(&mut tx, &event).await?;
//! tx.commit().await?;
//! let found: i64 = sqlx::query_scalar("SELECT count(*) FROM doc_publish.outbox WHERE event_id = $1")
//!     .bind(id)
//!     .fetch_one(&pool)
//!     .await?;
//! assert_eq!(found, 1);
//!
//! // Rolled back: no row, so the relay never sends it.
//! let mut tx = pool.begin().await?;
//! let id = publisher.publish(&mut tx, &event).await?;
//! tx.rollback().await?;
//! let found: i64 = sqlx::query_scalar("SELECT count(*) FROM doc_publish.outbox WHERE event_id = $1")
//!     .bind(id)
//!     .fetch_one(&pool)
//!     .await?;
//! assert_eq!(found, 0);
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::outbox::TableName;

/// The SQLSTATE the publish functions raise for an input they refuse (`invalid_parameter_value`).
pub const REFUSED_SQLSTATE: &str = "22023";

/// One event to publish: the row's `topic`, `key`, `payload`, `headers` and serialization
/// overrides. Build it with [`Event::new`] and the setters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub topic: String,
    pub key: Option<String>,
    pub payload: serde_json::Value,
    /// Flat string headers; `event_id` and `outbox.*` are reserved.
    pub headers: BTreeMap<String, String>,
    /// Serialize the value with this registry subject instead of the topic's.
    pub value_subject: Option<String>,
    /// Pin a version of `value_subject`.
    pub value_schema_version: Option<i32>,
}

impl Event {
    /// An event without key, headers or overrides.
    pub fn new(topic: impl Into<String>, payload: serde_json::Value) -> Self {
        Self {
            topic: topic.into(),
            key: None,
            payload,
            headers: BTreeMap::new(),
            value_subject: None,
            value_schema_version: None,
        }
    }

    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Serialize with `subject` (and `version`, if given) instead of the topic's selection.
    pub fn value_subject(mut self, subject: impl Into<String>, version: Option<i32>) -> Self {
        self.value_subject = Some(subject.into());
        self.value_schema_version = version;
        self
    }

    /// The event id this event will be written with: the payload's `event_id` when it has a
    /// UUID there (the SQL function makes the row agree with it), else a new UUID v7.
    fn event_id(&self) -> Uuid {
        self.payload
            .get("event_id")
            .and_then(|id| id.as_str())
            .and_then(|id| Uuid::parse_str(id).ok())
            .unwrap_or_else(Uuid::now_v7)
    }
}

/// Why an event was not written.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The publish function refused an input (SQLSTATE 22023); `field` names the column
    /// (`topic`, `key`, `payload`, `headers`, ...) and the message starts with the field's path.
    #[error("event refused: {message}")]
    Refused {
        field: Option<String>,
        message: String,
    },
    /// Anything else the database said, or could not say (connection lost, the functions
    /// missing because migration 0006 did not run, ...).
    #[error("database: {0}")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for PublishError {
    fn from(error: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &error {
            if db.code().as_deref() == Some(REFUSED_SQLSTATE) {
                let field = db
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .and_then(|pg| pg.column())
                    .map(str::to_owned);
                return Self::Refused {
                    field,
                    message: db.message().to_owned(),
                };
            }
        }
        Self::Database(error)
    }
}

/// Calls the publish functions of one outbox table.
#[derive(Debug, Clone)]
pub struct Publisher {
    one: String,
    batch: String,
}

impl Default for Publisher {
    /// The functions of `public.outbox`.
    fn default() -> Self {
        Self::new(&TableName::new("public", "outbox").expect("valid identifiers"))
    }
}

impl Publisher {
    /// For the table `"schema"."table"`: its functions `"schema"."table_publish"` and
    /// `"schema"."table_publish_batch"`.
    pub fn new(table: &TableName) -> Self {
        let (schema, table) = (table.schema(), table.table());
        Self {
            one: format!("SELECT \"{schema}\".\"{table}_publish\"($1, $2, $3, $4, $5, $6, $7)"),
            batch: format!("SELECT \"{schema}\".\"{table}_publish_batch\"($1)"),
        }
    }

    /// Writes one event in the caller's transaction (pass `&mut tx`); returns its event id.
    pub async fn publish(
        &self,
        conn: &mut PgConnection,
        event: &Event,
    ) -> Result<Uuid, PublishError> {
        let headers = serde_json::to_value(&event.headers).expect("string map serializes");
        let id = sqlx::query_scalar::<_, Uuid>(&self.one)
            .bind(&event.topic)
            .bind(&event.key)
            .bind(&event.payload)
            .bind(headers)
            .bind(&event.value_subject)
            .bind(event.value_schema_version)
            .bind(event.event_id())
            .fetch_one(conn)
            .await?;
        Ok(id)
    }

    /// Writes `events` in one round trip, in order (ascending ids: per-key order is the
    /// slice's); returns their ids in the same order. One refused event writes none.
    pub async fn publish_batch(
        &self,
        conn: &mut PgConnection,
        events: &[Event],
    ) -> Result<Vec<Uuid>, PublishError> {
        #[derive(Serialize)]
        struct Element<'a> {
            #[serde(flatten)]
            event: &'a Event,
            event_id: Uuid,
        }
        let elements: Vec<Element<'_>> = events
            .iter()
            .map(|event| Element {
                event,
                event_id: event.event_id(),
            })
            .collect();
        let json = serde_json::to_value(&elements).expect("events serialize");
        Ok(sqlx::query_scalar::<_, Uuid>(&self.batch)
            .bind(json)
            .fetch_all(conn)
            .await?)
    }
}

/// [`Publisher::publish`] on `public.outbox`.
pub async fn publish(conn: &mut PgConnection, event: &Event) -> Result<Uuid, PublishError> {
    Publisher::default().publish(conn, event).await
}

/// [`Publisher::publish_batch`] on `public.outbox`: one round trip for all of `events`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use outbox_relay::outbox::{migrate, TableName};
/// use outbox_relay::publish::{Event, PublishError, Publisher};
/// use serde_json::json;
///
/// # let url = std::env::var("OUTBOX_TEST_DATABASE_URL")
/// #     .unwrap_or_else(|_| "postgres://outbox:outbox@127.0.0.1:5432/outbox".into());
/// let table = TableName::new("doc_publish_batch", "outbox")?;
/// migrate(&url, &table).await?;
/// let pool = sqlx::PgPool::connect(&url).await?;
/// let publisher = Publisher::new(&table);
///
/// let mut tx = pool.begin().await?;
/// let ids = publisher
///     .publish_batch(&mut tx, &[
///         Event::new("orders", json!({"n": 1})).key("order-1"),
///         Event::new("orders", json!({"n": 2})).key("order-1"),
///     ])
///     .await?;
/// tx.commit().await?;
/// assert_eq!(ids.len(), 2);
/// assert!(ids[0] < ids[1], "UUID v7: time-ordered");
///
/// // One bad event refuses the whole batch, naming the field; the transaction is then
/// // aborted, so roll it back.
/// let mut tx = pool.begin().await?;
/// let refused = publisher
///     .publish_batch(&mut tx, &[
///         Event::new("orders", json!({"n": 3})),
///         Event::new("not a topic!", json!({"n": 4})),
///     ])
///     .await;
/// tx.rollback().await?;
/// match refused {
///     Err(PublishError::Refused { field, message }) => {
///         assert_eq!(field.as_deref(), Some("topic"));
///         assert!(message.starts_with("events[1].topic: "), "{message}");
///     }
///     other => panic!("expected a refusal, got {other:?}"),
/// }
/// # Ok(())
/// # }
/// ```
pub async fn publish_batch(
    conn: &mut PgConnection,
    events: &[Event],
) -> Result<Vec<Uuid>, PublishError> {
    Publisher::default().publish_batch(conn, events).await
}
