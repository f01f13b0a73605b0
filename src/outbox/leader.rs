//! One relay at a time: a Postgres session-level advisory lock held on a dedicated connection.
//!
//! Background jobs that must not run twice (retention, the table statistics) each hold a lock
//! named after the job and the table. The job's statements run *on the connection that holds
//! the lock*: if that session dies, its lock is released by Postgres and its statements fail,
//! so two relays can never run the job at once, and another relay takes over at its next try.

use sqlx::postgres::PgConnection;
use sqlx::{Connection, PgPool};

use super::TableName;

/// A job's advisory lock and the session holding it (when it is held).
pub struct Leader {
    pool: PgPool,
    name: String,
    session: Option<PgConnection>,
}

impl Leader {
    /// The lock of `job` on `table`, not taken yet. Connections are opened with the pool's
    /// options, outside the pool.
    pub fn new(pool: &PgPool, table: &TableName, job: &str) -> Self {
        Self {
            pool: pool.clone(),
            name: format!("outbox-relay {job} {}", table.qualified()),
            session: None,
        }
    }

    /// The lock's name (its key is `hashtextextended(name, 0)`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Is the lock held by this relay (as far as it knows: a broken session is found out by
    /// the next statement run on it)?
    pub fn is_held(&self) -> bool {
        self.session.is_some()
    }

    /// The session holding the lock: the held one, or a new one if the lock is free. None when
    /// another relay holds it. Errors (Postgres away) leave it not held.
    pub async fn session(&mut self) -> Result<Option<&mut PgConnection>, sqlx::Error> {
        if self.session.is_none() {
            let mut conn = PgConnection::connect_with(&self.pool.connect_options()).await?;
            let got: bool =
                sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                    .bind(&self.name)
                    .fetch_one(&mut conn)
                    .await?;
            if !got {
                let _ = conn.close().await;
                return Ok(None);
            }
            self.session = Some(conn);
        }
        Ok(self.session.as_mut())
    }

    /// A statement on the session failed: drop it (Postgres releases the lock with it).
    pub fn lost(&mut self) {
        self.session = None;
    }

    /// Releases the lock and closes the session.
    pub async fn release(&mut self) {
        if let Some(conn) = self.session.take() {
            let _ = conn.close().await;
        }
    }
}
