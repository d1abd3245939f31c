//! A run after its claim: whether a job that waited in its worker's buffer may start, its
//! running key, its lease's renewals, and how it ends (completed, alone or in batches, or
//! finished in another state), each fenced so that only the job's current run writes; and the
//! release of a stopping worker's jobs.

use super::Both;
use super::{count, encode_error, op_error, Conn, Dialect, SqlRow, SqlStore, Value};
use crate::error::Error;
use crate::info::duration_millis;
use crate::job::JobId;
use crate::store::{BoxFuture, Clock, Finish, RunId, KEEP_FIRST_ERRORS, MAX_ERRORS};
use std::time::Duration;

/// `id, fence, state, run_after, refund, is_final, error, max_errors, keep_first, now`.
pub(super) const FINISH: Both = Both {
    postgres: concat!(
        "UPDATE errand_jobs
        -- A run that completes or is to go again (retried, snoozed) ends cancelled instead when
        -- its cancellation was asked while it ran: its worker may not have read the request yet.
        SET state = CASE WHEN cancel_requested AND $3 <> 'dead' THEN 'cancelled' ELSE $3 END,
            run_at = COALESCE(errand_now_ms() + $4::bigint, run_at),
            -- A run whose end the request overrides had begun: its attempt counts.
            attempt = attempt - CASE WHEN cancel_requested AND $3 NOT IN ('dead', 'cancelled') THEN 0 ELSE $5 END,
            finished_at = CASE WHEN $6 OR cancel_requested THEN errand_now_ms() END,
            lease_until = NULL,
            running_key = NULL,
            -- A retried or snoozed `until_executing` job takes its key back if it is free.
            unique_key = CASE
                WHEN NOT $6 AND NOT cancel_requested AND unique_strategy = 'until_executing' AND NOT EXISTS (
                    SELECT 1 FROM errand_jobs held
                    WHERE held.kind = errand_jobs.kind AND held.unique_key = errand_jobs.idempotency_key)
                THEN idempotency_key
                ELSE errand_key_after(unique_strategy,
                    CASE WHEN cancel_requested AND $3 <> 'dead' THEN 'cancelled' ELSE $3 END, unique_key) END,
            cancel_requested = false,
            death_pending = $3 = 'dead',
            errors = CASE WHEN $7::jsonb IS NULL THEN errors ELSE ",
        pg_append_error!(
            "$8",
            "$9",
            "jsonb_set($7::jsonb, '{at}', to_jsonb(errand_now_ms()))"
        ),
        " END
        WHERE id = $1 AND fence = $2 AND state = 'running'"
    ),
    sqlite: concat!(
        "UPDATE errand_jobs
        -- A run that completes or is to go again (retried, snoozed) ends cancelled instead when
        -- its cancellation was asked while it ran: its worker may not have read the request yet.
        SET state = CASE WHEN cancel_requested AND ?3 <> 'dead' THEN 'cancelled' ELSE ?3 END,
            run_at = COALESCE(?10 + ?4, run_at),
            -- A run whose end the request overrides had begun: its attempt counts.
            attempt = attempt - CASE WHEN cancel_requested AND ?3 NOT IN ('dead', 'cancelled') THEN 0 ELSE ?5 END,
            finished_at = CASE WHEN ?6 OR cancel_requested THEN ?10 END,
            lease_until = NULL,
            running_key = NULL,
            -- A retried or snoozed `until_executing` job takes its key back if it is free.
            unique_key = CASE
                WHEN NOT ?6 AND NOT cancel_requested AND unique_strategy = 'until_executing' AND NOT EXISTS (
                    SELECT 1 FROM errand_jobs held
                    WHERE held.kind = errand_jobs.kind AND held.unique_key = errand_jobs.idempotency_key)
                THEN idempotency_key
                ELSE ",
        lite_key_after!("(CASE WHEN cancel_requested AND ?3 <> 'dead' THEN 'cancelled' ELSE ?3 END)"),
        " END,
            cancel_requested = 0,
            death_pending = ?3 = 'dead',
            errors = CASE WHEN ?7 IS NULL THEN errors ELSE ",
        lite_append_error!("?8", "?9", "json_set(json(?7), '$.at', ?10)"),
        " END
        WHERE id = ?1 AND fence = ?2 AND state = 'running'"
    ),
};

/// `id, fence, now`: completes a running job.
pub(super) const COMPLETE: Both = Both {
    postgres: concat!(
        "UPDATE errand_jobs
        SET state = ",
        pg_completed_unless_cancelled!(""),
        ", finished_at = errand_now_ms(), lease_until = NULL, running_key = NULL,
            cancel_requested = false,
            unique_key = errand_key_after(unique_strategy, ",
        pg_completed_unless_cancelled!(""),
        ", unique_key),
            errors = ",
        pg_with_cancel_error!(""),
        " WHERE id = $1 AND fence = $2 AND state = 'running'"
    ),
    sqlite: concat!(
        "UPDATE errand_jobs
        SET state = ",
        lite_completed_unless_cancelled!(),
        ", finished_at = ?3, lease_until = NULL, running_key = NULL,
            cancel_requested = 0, unique_key = ",
        lite_key_after!(lite_completed_unless_cancelled!()),
        ", errors = ",
        lite_with_cancel_error!("?3"),
        "
        WHERE id = ?1 AND fence = ?2 AND state = 'running'"
    ),
};

/// `ids, fences, now`: completes running jobs; returns the ids completed.
pub(super) const COMPLETE_MANY: Both = Both {
    postgres: pg_complete_many!("$1", "$2"),
    sqlite: concat!(
        "UPDATE errand_jobs
        SET state = ",
        lite_completed_unless_cancelled!(),
        ", finished_at = ?3, lease_until = NULL, running_key = NULL,
            cancel_requested = 0, unique_key = ",
        lite_key_after!(lite_completed_unless_cancelled!()),
        ", errors = ",
        lite_with_cancel_error!("?3"),
        "
        WHERE id IN (SELECT value FROM json_each(?1))
          AND (id, fence) IN (SELECT value, ?2 ->> key FROM json_each(?1))
          -- `+`: found by id, through the primary key, not among all running jobs.
          AND +state = 'running'
        RETURNING id"
    ),
};

/// `worker, ids, now`: puts running jobs back, refunding the attempt; a job whose
/// cancellation was asked ends cancelled instead.
pub(super) const RELEASE: Both = Both {
    // A job whose cancellation was asked is not put back: it ends cancelled.
    postgres: concat!(
        "UPDATE errand_jobs
        SET state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'available' END,
            finished_at = CASE WHEN cancel_requested THEN errand_now_ms() END,
            unique_key = CASE WHEN cancel_requested
                THEN errand_key_after(unique_strategy, 'cancelled', unique_key) ELSE unique_key END,
            errors = ",
        pg_with_cancel_error!(""),
        ", attempt = CASE WHEN cancel_requested THEN attempt ELSE attempt - 1 END,
            lease_until = NULL, worker = NULL, running_key = NULL,
            cancel_requested = false
        WHERE state = 'running' AND worker = $1 AND id = ANY($2)"
    ),
    // A job whose cancellation was asked is not put back: it ends cancelled.
    sqlite: concat!(
        "UPDATE errand_jobs
        SET state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'available' END,
            finished_at = CASE WHEN cancel_requested THEN ?3 END,
            unique_key = CASE WHEN cancel_requested THEN ",
        lite_key_after!("'cancelled'"),
        " ELSE unique_key END,
            errors = ",
        lite_with_cancel_error!("?3"),
        ", attempt = CASE WHEN cancel_requested THEN attempt ELSE attempt - 1 END,
            lease_until = NULL, worker = NULL, running_key = NULL,
            cancel_requested = 0
        WHERE state = 'running' AND worker = ?1 AND id IN (SELECT value FROM json_each(?2))"
    ),
};

/// `lease, worker, ids, fences, now`: returns `id, fence, cancel_requested` of each run
/// renewed.
pub(super) const RENEW: Both = Both {
    // SKIP LOCKED: a job row locked by a `complete_in` transaction is not waited for; its run
    // is renewed by the next renewal, after the transaction ended.
    postgres: "UPDATE errand_jobs j SET lease_until = errand_now_ms() + $1
        FROM (SELECT e.id FROM errand_jobs e
              WHERE e.id = ANY($3) AND e.state = 'running' AND e.worker = $2
                AND (e.id, e.fence) IN (SELECT * FROM unnest($3::bigint[], $4::bigint[]))
              FOR UPDATE OF e SKIP LOCKED) live
        WHERE j.id = live.id
        RETURNING j.id, j.fence, j.cancel_requested",
    sqlite: "UPDATE errand_jobs SET lease_until = ?5 + ?1
        WHERE id IN (SELECT value FROM json_each(?3))
          AND (id, fence) IN (SELECT value, ?4 ->> key FROM json_each(?3))
          -- `+`: found by id, through the primary key, not among all running jobs.
          AND +state = 'running' AND worker = ?2
        RETURNING id, fence, cancel_requested",
};

/// `id, hold, now`: frees a running key held for `hold` by another job.
pub(super) const EXPIRE_RUNNING_KEY: Both = Both {
    postgres: "UPDATE errand_jobs SET running_key = NULL
        WHERE running_key IS NOT NULL AND attempted_at <= errand_now_ms() - $2
          AND (kind, running_key) = (SELECT kind, idempotency_key FROM errand_jobs WHERE id = $1)
          AND id <> $1",
    sqlite: "UPDATE errand_jobs SET running_key = NULL
        WHERE running_key IS NOT NULL AND attempted_at <= ?3 - ?2
          AND (kind, running_key) = (SELECT kind, idempotency_key FROM errand_jobs WHERE id = ?1)
          AND id <> ?1",
};

/// `id, fence`: takes a running job's key for its run.
pub(super) const TAKE_RUNNING_KEY: Both = Both {
    postgres: "UPDATE errand_jobs SET running_key = idempotency_key
        WHERE id = $1 AND fence = $2 AND state = 'running'",
    sqlite: "UPDATE errand_jobs SET running_key = idempotency_key
        WHERE id = ?1 AND fence = ?2 AND state = 'running'",
};

impl<D: Dialect> SqlStore<D> {
    pub(crate) async fn finish(
        &self,
        id: JobId,
        fence: i64,
        finish: &Finish,
    ) -> Result<bool, Error> {
        let error = finish
            .error
            .as_ref()
            .map(|e| encode_error::<D>(id, e))
            .transpose()?;
        let change = values![
            id.get(),
            fence,
            finish.state.as_str(),
            finish.run_after.map(duration_millis),
            i64::from(finish.refund_attempt),
            finish.state.is_final(),
            error.as_deref(),
            count(MAX_ERRORS),
            count(KEEP_FIRST_ERRORS),
            Value::Now,
        ];
        let op = || format!("mark job {id} {}", finish.state);
        Ok(self.execute(FINISH.of::<D>(), change, op).await? == 1)
    }

    pub(crate) async fn renew(
        &self,
        worker: &str,
        runs: &[RunId],
        lease: Duration,
    ) -> Result<Vec<(RunId, bool)>, Error> {
        let renew = vec![
            Value::Lease(lease),
            worker.into(),
            Value::Ints(runs.iter().map(|r| r.id.get()).collect()),
            Value::Ints(runs.iter().map(|r| r.fence).collect()),
            Value::Now,
        ];
        let op = || format!("renew the leases of {} jobs", runs.len());
        let rows = self.fetch_hot(RENEW.of::<D>(), renew, op).await?;
        rows.iter()
            .map(|row| {
                let run = RunId {
                    id: JobId::new(row.int(0)?),
                    fence: row.int(1)?,
                };
                Ok((run, row.flag(2)?))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| op_error::<D>(op(), e))
    }

    pub(crate) async fn release(&self, worker: &str, jobs: &[JobId]) -> Result<(), Error> {
        let release = vec![
            worker.into(),
            Value::Ints(jobs.iter().map(|id| id.get()).collect()),
            Value::Now,
        ];
        let op = || format!("put back {} unfinished jobs", jobs.len());
        self.execute(RELEASE.of::<D>(), release, op).await?;
        Ok(())
    }

    pub(crate) async fn complete_many(&self, runs: &[(JobId, i64)]) -> Result<Vec<JobId>, Error> {
        let op = || format!("mark {} jobs completed", runs.len());
        let rows = self
            .fetch_hot(COMPLETE_MANY.of::<D>(), completion_values(runs), op)
            .await?;
        completed_ids(&rows).map_err(|e| op_error::<D>(op(), e))
    }

    pub(crate) async fn take_running_key(
        &self,
        id: JobId,
        fence: i64,
        hold: Option<Duration>,
    ) -> Result<bool, Error> {
        if let Some(hold) = hold {
            // `unique_for` caps the hold: a run that has held the key that long gives it up.
            let expire = values![id.get(), duration_millis(hold), Value::Now];
            let op = || format!("release an expired running key for job {id}");
            self.execute(EXPIRE_RUNNING_KEY.of::<D>(), expire, op)
                .await?;
        }
        let op = || format!("take the running key of job {id}");
        let mut conn = self.conn(op).await?;
        let taken = D::execute(
            &mut conn,
            TAKE_RUNNING_KEY.of::<D>(),
            values![id.get(), fence],
            &self.clock,
        );
        match taken.await {
            Ok(done) => Ok(done == 1),
            // The unique index refused: another running job of this kind holds the key.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
            Err(e) => Err(op_error::<D>(op(), e)),
        }
    }
}

/// Marks a running job completed on `conn`, inside the caller's transaction.
pub(crate) fn complete<'c, D: Dialect>(
    conn: &'c mut Conn<D>,
    id: JobId,
    fence: i64,
    clock: &'c Clock,
) -> BoxFuture<'c, Result<bool, Error>> {
    Box::pin(async move {
        let values = values![id.get(), fence, Value::Now];
        let done = D::execute(conn, COMPLETE.of::<D>(), values, clock)
            .await
            .map_err(|e| op_error::<D>(format!("complete job {id} in a transaction"), e))?;
        Ok(done == 1)
    })
}

/// `COMPLETE_MANY`'s `ids, fences, now`.
pub(crate) fn completion_values(runs: &[(JobId, i64)]) -> Vec<Value<'static>> {
    vec![
        Value::Ints(runs.iter().map(|(id, _)| id.get()).collect()),
        Value::Ints(runs.iter().map(|(_, fence)| *fence).collect()),
        Value::Now,
    ]
}

/// The ids `COMPLETE_MANY` returned.
pub(crate) fn completed_ids(rows: &[impl SqlRow]) -> Result<Vec<JobId>, sqlx::Error> {
    rows.iter().map(|row| row.int(0).map(JobId::new)).collect()
}

/// `id, fence, now`: whether the running job `id` (under `fence`) may start now: its queue's
/// pause, whether its deadline has passed, and whether its cancellation was asked. No row: the
/// run lost its job.
const STARTABLE: Both = Both {
    postgres: "SELECT EXISTS (SELECT 1 FROM errand_queues q
                              WHERE q.queue = j.queue AND q.paused_at IS NOT NULL),
                      COALESCE(j.expires_at <= errand_now_ms(), false), j.cancel_requested
        FROM errand_jobs j WHERE j.id = $1 AND j.fence = $2 AND j.state = 'running'",
    sqlite: "SELECT EXISTS (SELECT 1 FROM errand_queues q
                            WHERE q.queue = j.queue AND q.paused_at IS NOT NULL),
                    COALESCE(j.expires_at <= ?3, 0), j.cancel_requested
        FROM errand_jobs j WHERE j.id = ?1 AND j.fence = ?2 AND j.state = 'running'",
};

impl<D: Dialect> SqlStore<D> {
    /// Whether a claimed job that waited in its worker's buffer may start now.
    pub(crate) async fn startable(
        &self,
        id: crate::job::JobId,
        fence: i64,
    ) -> Result<crate::store::Startable, Error> {
        use crate::store::Startable;
        let op = || format!("check that job {id} may start");
        let rows = self
            .fetch(
                STARTABLE.of::<D>(),
                values![id.get(), fence, Value::Now],
                op,
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(Startable::Lost);
        };
        let err = |e| op_error::<D>(op(), e);
        Ok(if row.flag(0).map_err(err)? {
            Startable::Paused
        } else if row.flag(1).map_err(err)? {
            Startable::Expired
        } else if row.flag(2).map_err(err)? {
            Startable::Cancelled
        } else {
            Startable::Yes
        })
    }
}
