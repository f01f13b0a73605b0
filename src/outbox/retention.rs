//! Retention: delivered rows older than `retention.delivered_after` are deleted, in bounded
//! batches, by one relay at a time (a [`Leader`](super::Leader) lock), in id order.
//!
//! A pass walks the primary key from the lowest id, `batch_size` rows per statement (each its
//! own short transaction), and deletes the rows of each step that are delivered and were
//! delivered before the cutoff. Pending and parked rows are stepped over, never touched: the
//! DELETE re-checks `status = 'delivered'` on the row it deletes. A pass ends at the end of the
//! table, or at the first step whose rows were all *created* after the cutoff (ids grow with
//! time, and a row cannot be delivered before it was created, so nothing beyond is due). Every
//! step is an index range scan of `batch_size` entries of the primary key: the cost of a pass
//! is the rows it deletes plus the few it steps over (parked, pending), never the young
//! delivered rows, however many there are.

use std::time::Duration;

use sqlx::postgres::PgConnection;

use super::TableName;

/// One step of a pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Step {
    /// The highest id looked at (the next step starts after it); None past the end.
    pub last_id: Option<i64>,
    /// Rows looked at.
    pub scanned: i64,
    /// Rows deleted.
    pub deleted: i64,
    /// Rows created after the cutoff among those looked at: when every row of a step is, the
    /// pass is over.
    pub young: i64,
}

impl Step {
    /// Nothing more to delete in this pass.
    pub fn ends_pass(&self, batch_size: u32) -> bool {
        // One young row does not end it: a long transaction's rows, or a backlog of pending
        // rows, may sit among old delivered ones.
        self.scanned < i64::from(batch_size) || self.last_id.is_none() || self.young == self.scanned
    }
}

/// The retention statement on one table.
#[derive(Debug, Clone)]
pub struct RetentionSql {
    step_sql: String,
}

impl RetentionSql {
    pub fn new(table: &TableName) -> Self {
        let t = table.qualified();
        // $1 = start after this id, $2 = rows per step, $3 = keep rows delivered within this
        // many seconds.
        let step_sql = format!(
            "WITH cutoff AS (SELECT now() - make_interval(secs => $3) AS at), \
             scanned AS ( \
                 SELECT id, status, created_at, delivered_at FROM {t} \
                 WHERE id > $1 ORDER BY id LIMIT $2), \
             deleted AS ( \
                 DELETE FROM {t} o USING scanned s, cutoff \
                 WHERE o.id = s.id AND s.status = 'delivered' AND s.delivered_at < cutoff.at \
                   AND o.status = 'delivered' AND o.delivered_at < cutoff.at \
                 RETURNING o.id) \
             SELECT (SELECT max(id) FROM scanned) AS last_id, \
                    (SELECT count(*) FROM scanned) AS scanned, \
                    (SELECT count(*) FROM deleted) AS deleted, \
                    (SELECT count(*) FROM scanned, cutoff WHERE scanned.created_at >= cutoff.at) \
                      AS young"
        );
        Self { step_sql }
    }

    /// The step statement, for `EXPLAIN`.
    pub fn step_sql(&self) -> &str {
        &self.step_sql
    }

    /// One step after id `after`: deletes the delivered rows among the next `batch_size` rows
    /// that were delivered more than `keep` ago.
    pub async fn step(
        &self,
        conn: &mut PgConnection,
        after: i64,
        batch_size: u32,
        keep: Duration,
    ) -> Result<Step, sqlx::Error> {
        sqlx::query_as(&self.step_sql)
            .bind(after)
            .bind(i64::from(batch_size))
            .bind(keep.as_secs_f64())
            .fetch_one(conn)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(scanned: i64, young: i64) -> Step {
        Step {
            last_id: (scanned > 0).then_some(100),
            scanned,
            deleted: 0,
            young,
        }
    }

    #[test]
    fn a_pass_ends_at_the_end_of_the_table_or_at_a_step_of_young_rows_only() {
        assert!(!step(10, 0).ends_pass(10));
        assert!(!step(10, 9).ends_pass(10), "young rows among old ones");
        assert!(
            step(10, 10).ends_pass(10),
            "every row created after the cutoff"
        );
        assert!(step(7, 0).ends_pass(10), "the end of the table");
        assert!(step(0, 0).ends_pass(10));
    }
}
