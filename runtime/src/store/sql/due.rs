//! Waiting jobs coming due. Every poll a worker cancels the waiting jobs past their deadline,
//! makes the due ones available, and reads when the next one is due, so that it looks again
//! then rather than at its next poll: on PostgreSQL in one statement (one round trip), on
//! SQLite in one write transaction (its statements run in the process, under one lock).
//!
//! A due job past its deadline is cancelled, never made available: the promotion passes it
//! over, and the expiry takes it (now, or at its next sweep when this one took its fill).

use std::time::Duration;

use super::{count, encode_error, named, op_error, Dialect, Named, SqlRow, SqlStore};
use crate::classify::FailureKind;
use crate::error::Error;
use crate::info::AttemptError;
use crate::job::JobId;
use crate::store::Promoted;

/// PostgreSQL: cancels up to `limit` waiting jobs past their deadline
/// (recording `error`, an [`AttemptError`] as JSON whose attempt and time the statement sets),
/// makes up to `limit` due ones available, and returns how many of each and how long until
/// the earliest job still waiting is due, in milliseconds (NULL: none). Its parts read one
/// snapshot: the jobs it promotes are due, so the next due is the first entry of
/// `errand_jobs_due` after now.
pub(crate) static PROMOTE_POSTGRES: Named = Named::only(
    "
    WITH expired AS (
        UPDATE errand_jobs
        SET state = 'cancelled', finished_at = errand_now_ms(), lease_until = NULL,
            unique_key = errand_key_after(unique_strategy, 'cancelled', unique_key),
            errors = errors || jsonb_build_array(jsonb_set(jsonb_set($error::jsonb, '{attempt}',
                to_jsonb(attempt)), '{at}', to_jsonb(errand_now_ms())))
        WHERE id IN (SELECT id FROM errand_jobs
                     WHERE expires_at <= errand_now_ms()
                       AND state IN ('scheduled', 'available', 'retryable', 'pending')
                     ORDER BY expires_at LIMIT $limit FOR UPDATE SKIP LOCKED)
        RETURNING 1
    ), promoted AS (
        -- Walks only due rows of `errand_jobs_due`; none the expiry takes.
        UPDATE errand_jobs SET state = 'available'
        WHERE id IN (SELECT id FROM errand_jobs
                     WHERE state IN ('scheduled', 'retryable') AND run_at <= errand_now_ms()
                       AND NOT COALESCE(expires_at <= errand_now_ms(), false)
                     ORDER BY run_at LIMIT $limit FOR UPDATE SKIP LOCKED)
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM expired), (SELECT count(*) FROM promoted),
           (SELECT min(run_at) - errand_now_ms() FROM errand_jobs
            WHERE state IN ('scheduled', 'retryable') AND run_at > errand_now_ms())",
);

/// SQLite: as the first part of [`PROMOTE_POSTGRES`]. Reads
/// `errand_jobs_expiring` in its order and stops after `limit`: with an `ORDER BY`, SQLite's
/// planner read every waiting job through the state index.
pub(crate) static EXPIRE_SQLITE: Named = Named::only("UPDATE errand_jobs
    SET state = 'cancelled', finished_at = $now, lease_until = NULL,
        -- A cancelled job keeps its unique key only while `until_expired` holds it.
    unique_key = CASE WHEN unique_strategy = 'until_expired' THEN unique_key END,
        errors = json_insert(errors, '$[#]', json_set(json($error), '$.attempt', attempt, '$.at', $now))
    WHERE id IN (SELECT id FROM errand_jobs INDEXED BY errand_jobs_expiring
                 WHERE expires_at <= $now
                   AND state IN ('scheduled', 'available', 'retryable', 'pending')
                 LIMIT $limit)");

/// SQLite: makes up to `limit` due jobs available, reading `errand_jobs_due` in
/// its order, the earliest first, and stopping after `limit`: no `ORDER BY`, because with one
/// SQLite's planner chose to sort every due match (with a million jobs waiting for tomorrow,
/// its statistics said few were due; in an outage's backlog, all would be read to promote the
/// first thousand).
pub(crate) static PROMOTE_SQLITE: Named = Named::only(
    "UPDATE errand_jobs SET state = 'available'
    WHERE id IN (SELECT id FROM errand_jobs INDEXED BY errand_jobs_due
                 WHERE state IN ('scheduled', 'retryable') AND run_at <= $now
                   AND NOT COALESCE(expires_at <= $now, 0)
                 LIMIT $limit)",
);

/// SQLite: how long until the earliest job still waiting is due, in milliseconds (NULL:
/// none): the first entry of `errand_jobs_due` after now (with a million scheduled jobs,
/// SQLite's planner chose to read every one of them through the state index).
pub(crate) static NEXT_DUE_SQLITE: Named = Named::only(
    "SELECT min(run_at) - $now FROM errand_jobs INDEXED BY errand_jobs_due
    WHERE state IN ('scheduled', 'retryable') AND run_at > $now",
);

impl<D: Dialect> SqlStore<D> {
    /// Cancels up to `limit` waiting jobs past their deadline, makes up to `limit` due ones
    /// available, and reads when the next one is due.
    pub(crate) async fn promote(&self, limit: usize) -> Result<Promoted, Error> {
        let op = named("make due jobs available");
        let err = |e| op_error::<D>(op(), e);
        let expired = AttemptError {
            attempt: 0,
            kind: FailureKind::Expired,
            message: "not started by its deadline".to_owned(),
            at: std::time::SystemTime::now(),
            duration: Duration::ZERO,
            worker: String::new(),
        };
        let expired = encode_error::<D>(JobId::new(0), &expired)?;
        let (expired, count, next_in) = if D::STORE == "postgres" {
            let promote = params![limit: count(limit), error: expired.as_str()];
            let rows = self.rows(&PROMOTE_POSTGRES, promote, op).await?;
            let row = rows.first().ok_or_else(|| err(sqlx::Error::RowNotFound))?;
            let read = || Ok::<_, sqlx::Error>((row.int(0)?, row.int(1)?, row.opt_int(2)?));
            read().map_err(err)?
        } else {
            let mut tx = self.begin_write().await?;
            let now = self.clock.now_ms();
            let expire = params![limit: count(limit), error: expired.as_str(), now];
            let expired = EXPIRE_SQLITE.execute::<D>(&mut tx, expire, &self.clock);
            let expired = expired.await.map_err(err)?;
            let promote = params![limit: count(limit), now];
            let promoted = PROMOTE_SQLITE.execute::<D>(&mut tx, promote, &self.clock);
            let promoted = promoted.await.map_err(err)?;
            let next = NEXT_DUE_SQLITE.fetch::<D>(&mut tx, params![now], &self.clock);
            let next_in = match next.await.map_err(err)?.first() {
                Some(row) => row.opt_int(0).map_err(err)?,
                None => None,
            };
            tx.commit().await.map_err(err)?;
            let as_int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            (as_int(expired), as_int(promoted), next_in)
        };
        let as_count = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(Promoted {
            expired: as_count(expired),
            count: as_count(count),
            next_in: next_in.map(|ms| Duration::from_millis(ms.max(0).unsigned_abs())),
        })
    }
}
