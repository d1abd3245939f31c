//! A run after its claim: whether a job that waited in its worker's buffer may start, its
//! running key, its lease's renewals, and how it ends (completed, alone or in batches, or
//! finished in another state), each fenced so that only the job's current run writes; and the
//! release of a stopping worker's jobs.

use super::{count, encode_error, op_error, Conn, Dialect, SqlRow, SqlStore, Value};
use super::{Both, Named};
use crate::error::Error;
use crate::info::duration_millis;
use crate::job::JobId;
use crate::store::{BoxFuture, Clock, Finish, RunId, KEEP_FIRST_ERRORS, MAX_ERRORS};
use std::time::Duration;

/// `id, fence, state, run_after, refund, is_final, error, max_errors, keep_first, now`.
pub(super) static FINISH: Named = Named::new(Both {
    postgres: concat!(
        "UPDATE errand_jobs
        -- A run that completes or is to go again (retried, snoozed) ends cancelled instead when
        -- its cancellation was asked while it ran: its worker may not have read the request yet.
        SET state = CASE WHEN cancel_requested AND $state <> 'dead' THEN 'cancelled' ELSE $state END,
            run_at = COALESCE(errand_now_ms() + $run_after::bigint, run_at),
            -- A run whose end the request overrides had begun: its attempt counts.
            attempt = attempt - CASE WHEN cancel_requested AND $state NOT IN ('dead', 'cancelled') THEN 0 ELSE $refund END,
            finished_at = CASE WHEN $is_final OR cancel_requested THEN errand_now_ms() END,
            lease_until = NULL,
            running_key = NULL,
            -- A retried or snoozed `until_executing` job takes its key back if it is free.
            unique_key = CASE
                WHEN NOT $is_final AND NOT cancel_requested AND unique_strategy = 'until_executing' AND NOT EXISTS (
                    SELECT 1 FROM errand_jobs held
                    WHERE held.kind = errand_jobs.kind AND held.unique_key = errand_jobs.idempotency_key)
                THEN idempotency_key
                ELSE errand_key_after(unique_strategy,
                    CASE WHEN cancel_requested AND $state <> 'dead' THEN 'cancelled' ELSE $state END, unique_key) END,
            cancel_requested = false,
            death_pending = $state = 'dead',
            errors = CASE WHEN $error::jsonb IS NULL THEN errors ELSE ",
        pg_append_error!(
            "$max_errors",
            "$keep_first",
            "jsonb_set($error::jsonb, '{at}', to_jsonb(errand_now_ms()))"
        ),
        " END
        WHERE id = $id AND fence = $fence AND state = 'running'"
    ),
    sqlite: concat!(
        "UPDATE errand_jobs
        -- A run that completes or is to go again (retried, snoozed) ends cancelled instead when
        -- its cancellation was asked while it ran: its worker may not have read the request yet.
        SET state = CASE WHEN cancel_requested AND $state <> 'dead' THEN 'cancelled' ELSE $state END,
            run_at = COALESCE($now + $run_after, run_at),
            -- A run whose end the request overrides had begun: its attempt counts.
            attempt = attempt - CASE WHEN cancel_requested AND $state NOT IN ('dead', 'cancelled') THEN 0 ELSE $refund END,
            finished_at = CASE WHEN $is_final OR cancel_requested THEN $now END,
            lease_until = NULL,
            running_key = NULL,
            -- A retried or snoozed `until_executing` job takes its key back if it is free.
            unique_key = CASE
                WHEN NOT $is_final AND NOT cancel_requested AND unique_strategy = 'until_executing' AND NOT EXISTS (
                    SELECT 1 FROM errand_jobs held
                    WHERE held.kind = errand_jobs.kind AND held.unique_key = errand_jobs.idempotency_key)
                THEN idempotency_key
                ELSE ",
        lite_key_after!("(CASE WHEN cancel_requested AND $state <> 'dead' THEN 'cancelled' ELSE $state END)"),
        " END,
            cancel_requested = 0,
            death_pending = $state = 'dead',
            errors = CASE WHEN $error IS NULL THEN errors ELSE ",
        lite_append_error!("$max_errors", "$keep_first", "json_set(json($error), '$.at', $now)"),
        " END
        WHERE id = $id AND fence = $fence AND state = 'running'"
    ),
});

/// `id, fence, now`: completes a running job.
pub(super) static COMPLETE: Named = Named::new(Both {
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
        " WHERE id = $id AND fence = $fence AND state = 'running'"
    ),
    sqlite: concat!(
        "UPDATE errand_jobs
        SET state = ",
        lite_completed_unless_cancelled!(),
        ", finished_at = $now, lease_until = NULL, running_key = NULL,
            cancel_requested = 0, unique_key = ",
        lite_key_after!(lite_completed_unless_cancelled!()),
        ", errors = ",
        lite_with_cancel_error!("$now"),
        "
        WHERE id = $id AND fence = $fence AND state = 'running'"
    ),
});

/// `ids, fences, now`: completes running jobs; returns the ids completed.
pub(super) static COMPLETE_MANY: Named = Named::new(Both {
    postgres: pg_complete_many!("$ids", "$fences"),
    sqlite: concat!(
        "UPDATE errand_jobs
        SET state = ",
        lite_completed_unless_cancelled!(),
        ", finished_at = $now, lease_until = NULL, running_key = NULL,
            cancel_requested = 0, unique_key = ",
        lite_key_after!(lite_completed_unless_cancelled!()),
        ", errors = ",
        lite_with_cancel_error!("$now"),
        "
        WHERE id IN (SELECT value FROM json_each($ids))
          AND (id, fence) IN (SELECT value, $fences ->> key FROM json_each($ids))
          -- `+`: found by id, through the primary key, not among all running jobs.
          AND +state = 'running'
        RETURNING id"
    ),
});

/// `worker, ids, now`: puts running jobs back, refunding the attempt; a job whose
/// cancellation was asked ends cancelled instead.
pub(super) static RELEASE: Named = Named::new(Both {
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
        WHERE state = 'running' AND worker = $worker AND id = ANY($ids)"
    ),
    // A job whose cancellation was asked is not put back: it ends cancelled.
    sqlite: concat!(
        "UPDATE errand_jobs
        SET state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'available' END,
            finished_at = CASE WHEN cancel_requested THEN $now END,
            unique_key = CASE WHEN cancel_requested THEN ",
        lite_key_after!("'cancelled'"),
        " ELSE unique_key END,
            errors = ",
        lite_with_cancel_error!("$now"),
        ", attempt = CASE WHEN cancel_requested THEN attempt ELSE attempt - 1 END,
            lease_until = NULL, worker = NULL, running_key = NULL,
            cancel_requested = 0
        WHERE state = 'running' AND worker = $worker AND id IN (SELECT value FROM json_each($ids))"
    ),
});

/// `lease, worker, ids, fences, now`: returns `id, fence, cancel_requested` of each run
/// renewed.
pub(super) static RENEW: Named = Named::new(Both {
    // SKIP LOCKED: a job row locked by a `complete_in` transaction is not waited for; its run
    // is renewed by the next renewal, after the transaction ended.
    postgres: "UPDATE errand_jobs j SET lease_until = errand_now_ms() + $lease
        FROM (SELECT e.id FROM errand_jobs e
              WHERE e.id = ANY($ids) AND e.state = 'running' AND e.worker = $worker
                AND (e.id, e.fence) IN (SELECT * FROM unnest($ids::bigint[], $fences::bigint[]))
              FOR UPDATE OF e SKIP LOCKED) live
        WHERE j.id = live.id
        RETURNING j.id, j.fence, j.cancel_requested",
    sqlite: "UPDATE errand_jobs SET lease_until = $now + $lease
        WHERE id IN (SELECT value FROM json_each($ids))
          AND (id, fence) IN (SELECT value, $fences ->> key FROM json_each($ids))
          -- `+`: found by id, through the primary key, not among all running jobs.
          AND +state = 'running' AND worker = $worker
        RETURNING id, fence, cancel_requested",
});

/// `id, hold, now`: frees a running key held for `hold` by another job.
pub(super) static EXPIRE_RUNNING_KEY: Named = Named::new(Both {
    postgres: "UPDATE errand_jobs SET running_key = NULL
        WHERE running_key IS NOT NULL AND attempted_at <= errand_now_ms() - $hold
          AND (kind, running_key) = (SELECT kind, idempotency_key FROM errand_jobs WHERE id = $id)
          AND id <> $id",
    sqlite: "UPDATE errand_jobs SET running_key = NULL
        WHERE running_key IS NOT NULL AND attempted_at <= $now - $hold
          AND (kind, running_key) = (SELECT kind, idempotency_key FROM errand_jobs WHERE id = $id)
          AND id <> $id",
});

/// `id, fence`: takes a running job's key for its run.
pub(super) static TAKE_RUNNING_KEY: Named = Named::same(
    "UPDATE errand_jobs SET running_key = idempotency_key
        WHERE id = $id AND fence = $fence AND state = 'running'",
);

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
        let change = params![id: id.get(), fence, state: finish.state.as_str(), run_after: finish.run_after.map(duration_millis), refund: i64::from(finish.refund_attempt), is_final: finish.state.is_final(), error: error.as_deref(), max_errors: count(MAX_ERRORS), keep_first: count(KEEP_FIRST_ERRORS), now: Value::Now];
        let op = || format!("mark job {id} {}", finish.state);
        Ok(self.run(&FINISH, change, op).await? == 1)
    }

    pub(crate) async fn renew(
        &self,
        worker: &str,
        runs: &[RunId],
        lease: Duration,
    ) -> Result<Vec<(RunId, bool)>, Error> {
        let renew = params![lease: Value::Lease(lease), worker, ids: Value::Ints(runs.iter().map(|r| r.id.get()).collect()), fences: Value::Ints(runs.iter().map(|r| r.fence).collect()), now: Value::Now];
        let op = || format!("renew the leases of {} jobs", runs.len());
        let rows = self.rows_hot(&RENEW, renew, op).await?;
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
        let release = params![worker, ids: Value::Ints(jobs.iter().map(|id| id.get()).collect()), now: Value::Now];
        let op = || format!("put back {} unfinished jobs", jobs.len());
        self.run(&RELEASE, release, op).await?;
        Ok(())
    }

    pub(crate) async fn complete_many(&self, runs: &[(JobId, i64)]) -> Result<Vec<JobId>, Error> {
        let op = || format!("mark {} jobs completed", runs.len());
        let rows = self
            .rows_hot(&COMPLETE_MANY, completion_values(runs), op)
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
            let expire = params![id: id.get(), hold: duration_millis(hold), now: Value::Now];
            let op = || format!("release an expired running key for job {id}");
            self.run(&EXPIRE_RUNNING_KEY, expire, op).await?;
        }
        let op = || format!("take the running key of job {id}");
        let mut conn = self.conn(op).await?;
        let taken =
            TAKE_RUNNING_KEY.execute::<D>(&mut conn, params![id: id.get(), fence], &self.clock);
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
        let values = params![id: id.get(), fence, now: Value::Now];
        let done = COMPLETE
            .execute::<D>(conn, values, clock)
            .await
            .map_err(|e| op_error::<D>(format!("complete job {id} in a transaction"), e))?;
        Ok(done == 1)
    })
}

/// `COMPLETE_MANY`'s parameters.
pub(crate) fn completion_values(runs: &[(JobId, i64)]) -> Vec<(&'static str, Value<'static>)> {
    params![
        ids: Value::Ints(runs.iter().map(|(id, _)| id.get()).collect()),
        fences: Value::Ints(runs.iter().map(|(_, fence)| *fence).collect()),
        now: Value::Now,
    ]
}

/// The ids `COMPLETE_MANY` returned.
pub(crate) fn completed_ids(rows: &[impl SqlRow]) -> Result<Vec<JobId>, sqlx::Error> {
    rows.iter().map(|row| row.int(0).map(JobId::new)).collect()
}

/// `id, fence, now`: whether the running job `id` (under `fence`) may start now: its queue's
/// pause, whether its deadline has passed, and whether its cancellation was asked. No row: the
/// run lost its job.
static STARTABLE: Named = Named::new(Both {
    postgres: concat!(
        "SELECT ",
        paused!("j.queue"),
        ", COALESCE(j.expires_at <= errand_now_ms(), false), j.cancel_requested
        FROM errand_jobs j WHERE j.id = $id AND j.fence = $fence AND j.state = 'running'"
    ),
    sqlite: concat!(
        "SELECT ",
        paused!("j.queue"),
        ", COALESCE(j.expires_at <= $now, 0), j.cancel_requested
        FROM errand_jobs j WHERE j.id = $id AND j.fence = $fence AND j.state = 'running'"
    ),
});

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
            .rows(
                &STARTABLE,
                params![id: id.get(), fence, now: Value::Now],
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
