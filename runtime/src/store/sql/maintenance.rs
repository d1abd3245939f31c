//! What workers do for the whole store, besides running jobs: rescuing runs whose lease
//! lapsed, burying jobs that no live worker knows, pruning what retention lets go, and the
//! named locks that keep one node at a task.

use super::{count, named, op_error, Dialect, SqlRow, SqlStore, Value};
use super::{Both, Named};
use crate::dead::Retention;
use crate::error::Error;
use crate::info::duration_millis;
use crate::job::JobId;
use crate::store::{
    DEATH_DELIVERY_WINDOW, KEEP_FIRST_ERRORS, LEASE_LOST_AFTER, LEASE_LOST_BEFORE, MAX_ERRORS,
    UNKNOWN_KIND_AFTER, UNKNOWN_KIND_BEFORE,
};
use std::time::Duration;

/// `grace, queues, kinds, message_before, message_after, max_errors, keep_first, worker,
/// now, live, limit`: kills up to `limit` available jobs of unpaused queues due for
/// `grace` whose kind is none of `kinds` and none of a worker seen within `live` ms.
pub(super) static BURY_UNKNOWN: Named = Named::new(Both {
    postgres: concat!(
        "UPDATE errand_jobs
        SET state = 'dead', finished_at = errand_now_ms(), lease_until = NULL, death_pending = true,
            unique_key = errand_key_after(unique_strategy, 'dead', unique_key),
            errors = ",
        pg_append_error!(
            "$max_errors",
            "$keep_first",
            "jsonb_build_object('attempt', attempt, 'kind', 'unknown_kind',
                'message', $message_before || kind || $message_after, 'at', errand_now_ms(), 'duration_ms', 0,
                'worker', $worker::text)"
        ),
        "
        WHERE state = 'available' AND id IN (
            -- Each kind of available jobs, one probe of `errand_jobs_available_kinds` a kind,
            -- then the jobs of the kinds no live worker knows, queue by unpaused queue.
            WITH RECURSIVE kinds(kind) AS (
                (SELECT kind FROM errand_jobs WHERE state = 'available' ORDER BY kind LIMIT 1)
                UNION ALL
                SELECT (SELECT j.kind FROM errand_jobs j
                        WHERE j.state = 'available' AND j.kind > k.kind ORDER BY j.kind LIMIT 1)
                FROM kinds k WHERE k.kind IS NOT NULL
            )
            SELECT j.id FROM kinds k
            CROSS JOIN unnest($queues::text[]) AS q(queue)
            CROSS JOIN LATERAL (
                SELECT id FROM errand_jobs
                WHERE kind = k.kind AND queue = q.queue AND state = 'available'
                  AND run_at <= errand_now_ms() - $grace
                -- In the index's order: without it, a backlog of known kinds older than the
                -- grace made the planner expect matches anywhere and read the table.
                ORDER BY run_at LIMIT $limit FOR UPDATE SKIP LOCKED) j
            WHERE k.kind IS NOT NULL AND k.kind <> ALL($kinds)
              AND NOT EXISTS (SELECT 1 FROM errand_workers w
                              WHERE w.seen_at > errand_now_ms() - $live AND k.kind = ANY(w.kinds))
              AND NOT ",
        paused!("q.queue"),
        "
            LIMIT $limit)",
    ),
    sqlite: concat!(
        "UPDATE errand_jobs
        SET state = 'dead', finished_at = $now, lease_until = NULL, death_pending = 1,
            unique_key = ",
        lite_key_after!("'dead'"),
        ",
            errors = ",
        lite_append_error!(
            "$max_errors",
            "$keep_first",
            "json_object('attempt', attempt, 'kind', 'unknown_kind', 'message', $message_before || kind || $message_after,
                'at', $now, 'duration_ms', 0, 'worker', $worker)"
        ),
        "
        WHERE id IN (
            -- Each kind of available jobs, one probe of `errand_jobs_available_kinds` a kind,
            -- then the jobs of the kinds no live worker knows, queue by unpaused queue.
            -- (`min` reads the first entry of a range; `CROSS JOIN` keeps the order written.)
            WITH RECURSIVE kinds(kind) AS (
                SELECT (SELECT min(kind) FROM errand_jobs INDEXED BY errand_jobs_available_kinds
                        WHERE state = 'available')
                UNION ALL
                SELECT (SELECT min(j.kind) FROM errand_jobs j INDEXED BY errand_jobs_available_kinds
                        WHERE j.state = 'available' AND j.kind > k.kind)
                FROM kinds k WHERE k.kind IS NOT NULL
            )
            SELECT j.id FROM kinds k
            CROSS JOIN json_each($queues) q
            CROSS JOIN errand_jobs j INDEXED BY errand_jobs_available_kinds
              ON j.kind = k.kind AND j.queue = q.value AND j.state = 'available'
                 AND j.run_at <= $now - $grace
            WHERE k.kind IS NOT NULL AND k.kind NOT IN (SELECT value FROM json_each($kinds))
              AND NOT EXISTS (SELECT 1 FROM errand_workers w, json_each(w.kinds) wk
                              WHERE w.seen_at > $now - $live AND wk.value = k.kind)
              AND NOT ",
        paused!("q.value"),
        "
            LIMIT $limit)",
    ),
});

/// `message_before, message_after, max_errors, keep_first, now, wall` (leases end in wall
/// time): returns the ids rescued.
pub(super) static RESCUE: Named = Named::new(Both {
    postgres: concat!(
        "UPDATE errand_jobs
        -- A job whose cancellation was asked before its worker stopped ends cancelled.
        SET state = CASE WHEN cancel_requested THEN 'cancelled'
                         WHEN attempt >= max_attempts THEN 'dead' ELSE 'retryable' END,
            finished_at = CASE WHEN cancel_requested OR attempt >= max_attempts THEN errand_now_ms() END,
            run_at = errand_now_ms(),
            lease_until = NULL,
            running_key = NULL,
            unique_key = errand_key_after(unique_strategy,
                CASE WHEN cancel_requested THEN 'cancelled'
                     WHEN attempt >= max_attempts THEN 'dead' ELSE 'retryable' END, unique_key),
            death_pending = NOT cancel_requested AND attempt >= max_attempts,
            cancel_requested = false,
            errors = ",
        pg_append_error!(
            "$max_errors",
            "$keep_first",
            "jsonb_build_object('attempt', attempt, 'kind', 'lease_lost',
                'message', $message_before || COALESCE(worker, '?') || $message_after, 'at', errand_now_ms(),
                'duration_ms', errand_now_ms() - COALESCE(attempted_at, errand_now_ms()),
                'worker', COALESCE(worker, '?'))"
        ),
        "
        WHERE id IN (
            -- SKIP LOCKED: a job whose row a `complete_in` transaction holds is left alone;
            -- it is about to complete, or its worker still renews it.
            SELECT id FROM errand_jobs WHERE state = 'running' AND lease_until < errand_now_ms()
            FOR UPDATE SKIP LOCKED)
        RETURNING id"
    ),
    sqlite: concat!(
        "UPDATE errand_jobs
        -- A job whose cancellation was asked before its worker stopped ends cancelled.
        SET state = CASE WHEN cancel_requested THEN 'cancelled'
                         WHEN attempt >= max_attempts THEN 'dead' ELSE 'retryable' END,
            finished_at = CASE WHEN cancel_requested OR attempt >= max_attempts THEN $now END,
            run_at = $now,
            lease_until = NULL,
            running_key = NULL,
            unique_key = ",
        lite_key_after!("(CASE WHEN cancel_requested THEN 'cancelled'
                          WHEN attempt >= max_attempts THEN 'dead' ELSE 'retryable' END)"),
        ",
            death_pending = NOT cancel_requested AND attempt >= max_attempts,
            cancel_requested = 0,
            errors = ",
        lite_append_error!(
            "$max_errors",
            "$keep_first",
            "json_object('attempt', attempt, 'kind', 'lease_lost',
                'message', $message_before || COALESCE(worker, '?') || $message_after, 'at', $now,
                'duration_ms', $now - COALESCE(attempted_at, $now), 'worker', COALESCE(worker, '?'))"
        ),
        "
        WHERE state = 'running' AND lease_until < $wall
        RETURNING id"
    ),
});

/// The statements of a pruning round, with what each does: each takes `keep` (a duration, or
/// for surplus dead jobs a count), `batch`, `now` and the delivery `window`.
/// On PostgreSQL, with 1,000,000 jobs and 200,000 ledger records of which 1% are due, `EXPLAIN` shows: a
/// `Bitmap Index Scan on errand_jobs_finished` under the `LIMIT` of the first two; an `Index
/// Only Scan Backward using errand_jobs_finished` for the surplus of dead jobs; and for the
/// ledger, an `Index Scan using errand_steps_created` whose two `NOT EXISTS` are index
/// look-ups (`errand_jobs_key`, `errand_jobs_pkey`), deleted by a `Tid Scan`. (The single
/// statement these replaced, `id IN (..) OR id IN (..)`, could use no index.) Where most
/// rows are due, the planner rightly prefers a sequential scan that stops at the limit.
pub(super) static PRUNE: [(&Named, &str); 4] = [
    (&PRUNE_FINISHED, "prune finished jobs"),
    (&PRUNE_OLD_DEAD, "prune old dead jobs"),
    (&PRUNE_SURPLUS_DEAD, "prune surplus dead jobs"),
    (&PRUNE_LEDGER, "prune the effect ledger"),
];

/// Deletes up to `batch` completed and cancelled jobs finished more than `keep` ms ago.
static PRUNE_FINISHED: Named = Named::new(Both {
    postgres: "DELETE FROM errand_jobs WHERE id IN (
                SELECT id FROM errand_jobs
                WHERE state IN ('completed', 'cancelled') AND finished_at < errand_now_ms() - $keep
                LIMIT $batch)",
    sqlite: "DELETE FROM errand_jobs WHERE id IN (
                SELECT id FROM errand_jobs
                WHERE state IN ('completed', 'cancelled') AND finished_at < $now - $keep LIMIT $batch)",
});

/// Deletes up to `batch` dead jobs that died more than `keep` ms ago.
static PRUNE_OLD_DEAD: Named = Named::new(Both {
    postgres: "DELETE FROM errand_jobs WHERE id IN (
                SELECT id FROM errand_jobs
                WHERE state = 'dead' AND finished_at < errand_now_ms() - $keep
                LIMIT $batch)",
    sqlite: "DELETE FROM errand_jobs WHERE id IN (
                SELECT id FROM errand_jobs
                WHERE state = 'dead' AND finished_at < $now - $keep LIMIT $batch)",
});

/// Deletes up to `batch` dead jobs beyond the newest `keep`, but a death its handlers have
/// not had the delivery `window` to take.
static PRUNE_SURPLUS_DEAD: Named = Named::new(Both {
    postgres: "DELETE FROM errand_jobs WHERE id IN (
                SELECT id FROM errand_jobs WHERE state = 'dead'
                ORDER BY finished_at DESC, id DESC OFFSET $keep LIMIT $batch)
            -- A death its handlers have not had the delivery window to take is kept until then.
            AND NOT (death_pending AND finished_at > errand_now_ms() - $window)",
    sqlite: "DELETE FROM errand_jobs WHERE id IN (
                SELECT id FROM errand_jobs WHERE state = 'dead'
                ORDER BY finished_at DESC, id DESC LIMIT $batch OFFSET $keep)
            -- A death its handlers have not had the delivery window to take is kept until then.
            AND NOT (death_pending = 1 AND finished_at > $now - $window)",
});

/// Deletes up to `batch` ledger records older than `keep` ms whose job has finished.
static PRUNE_LEDGER: Named = Named::new(Both {
    postgres: "DELETE FROM errand_steps WHERE ctid = ANY (ARRAY(
                SELECT ctid FROM errand_steps s
                WHERE s.created_at < errand_now_ms() - $keep
                  AND NOT EXISTS (SELECT 1 FROM errand_jobs j
                                  WHERE j.kind = s.kind AND j.idempotency_key = s.job_key
                                    AND j.state NOT IN ('completed', 'cancelled', 'dead'))
                  AND NOT EXISTS (SELECT 1 FROM errand_jobs j
                                  WHERE s.job_key IS NULL AND j.id = s.job_id
                                    AND j.state NOT IN ('completed', 'cancelled', 'dead'))
                LIMIT $batch))",
    sqlite: "DELETE FROM errand_steps WHERE (scope, name) IN (
                SELECT scope, name FROM errand_steps s
                WHERE s.created_at < $now - $keep
                  AND NOT EXISTS (SELECT 1 FROM errand_jobs j
                                  WHERE j.kind = s.kind AND j.idempotency_key = s.job_key
                                    AND j.state NOT IN ('completed', 'cancelled', 'dead'))
                  AND NOT EXISTS (SELECT 1 FROM errand_jobs j
                                  WHERE s.job_key IS NULL AND j.id = s.job_id
                                    AND j.state NOT IN ('completed', 'cancelled', 'dead'))
                LIMIT $batch)",
});

/// `name, holder, ttl, now`: returns a row when the lock is held by `holder`.
pub(super) static TRY_LOCK: Named = Named::new(Both {
    postgres: "INSERT INTO errand_locks (name, holder, until) VALUES ($name, $holder, errand_now_ms() + $ttl)
        ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
        WHERE errand_locks.until < errand_now_ms() OR errand_locks.holder = excluded.holder
        RETURNING holder",
    sqlite: "INSERT INTO errand_locks (name, holder, until) VALUES ($name, $holder, $now + $ttl)
        ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
        WHERE errand_locks.until < $now OR errand_locks.holder = excluded.holder
        RETURNING holder",
});

impl<D: Dialect> SqlStore<D> {
    pub(crate) async fn bury_unknown(
        &self,
        queues: &[&str],
        kinds: &[&str],
        grace: Duration,
        worker: &str,
        limit: usize,
    ) -> Result<u64, Error> {
        let bury = params![grace: duration_millis(grace), queues: Value::Texts(queues.to_vec()), kinds: Value::Texts(kinds.to_vec()), message_before: UNKNOWN_KIND_BEFORE, message_after: UNKNOWN_KIND_AFTER, max_errors: count(MAX_ERRORS), keep_first: count(KEEP_FIRST_ERRORS), worker, now: Value::Now, live: duration_millis(crate::store::WORKER_STALE), limit: count(limit)];
        let op = named("bury jobs of kinds no worker knows");
        self.run(&BURY_UNKNOWN, bury, op).await
    }

    pub(crate) async fn rescue(&self) -> Result<Vec<JobId>, Error> {
        let rescue = params![message_before: LEASE_LOST_BEFORE, message_after: LEASE_LOST_AFTER, max_errors: count(MAX_ERRORS), keep_first: count(KEEP_FIRST_ERRORS), now: Value::Now, wall: Value::Wall];
        let op = named("rescue jobs whose lease ran out");
        let rows = self.rows(&RESCUE, rescue, op).await?;
        let ids: Result<Vec<JobId>, _> =
            rows.iter().map(|row| row.int(0).map(JobId::new)).collect();
        ids.map_err(|e| op_error::<D>(op(), e))
    }

    pub(crate) async fn try_lock(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, Error> {
        let lock = params![name, holder, ttl: duration_millis(ttl), now: Value::Now];
        let op = || format!("take the lock `{name}`");
        Ok(!self.rows(&TRY_LOCK, lock, op).await?.is_empty())
    }

    pub(crate) async fn prune(&self, retention: &Retention, batch: usize) -> Result<u64, Error> {
        // One statement per kind of row, each a range of one index, so that a backlog of
        // millions costs each batch an index scan, not a table scan (see the PostgreSQL
        // dialect's statements for the plans).
        let keep = [
            duration_millis(retention.finished_for),
            duration_millis(retention.dead_for),
            count(retention.max_dead),
            duration_millis(retention.steps_for),
        ];
        let mut deleted = 0;
        for ((statement, op), keep) in PRUNE.iter().zip(keep) {
            let prune = params![
                keep,
                batch: count(batch),
                now: Value::Now,
                window: duration_millis(DEATH_DELIVERY_WINDOW),
            ];
            deleted += self.run(statement, prune, named(op)).await?;
        }
        let unseen_for = crate::store::FORGET_AFTER;
        deleted += self
            .prune_bookkeeping(retention.finished_for, unseen_for, batch)
            .await?;
        Ok(deleted)
    }
}

/// The burial of unknown kinds, checked on each store: with no live worker at all (so that
/// only the burying worker's own registry spares its kinds), a job of a kind the worker knows
/// is never buried; one of a kind it does not know is, once due for the grace; one due for
/// less is not yet.
#[cfg(test)]
pub(crate) async fn check_burial_spares_known_kinds<D: Dialect>(store: &SqlStore<D>) {
    static FILL: Named = Named::same(
        "INSERT INTO errand_jobs (kind, queue, args, state, priority, max_attempts,
                                 run_at, created_at)
         VALUES ('known', 'q', '{}', 'available', 5, 25, 0, 0),
                ('unknown', 'q', '{}', 'available', 5, 25, 0, 0),
                ('unknown', 'q', '{}', 'available', 5, 25, 9000000000000, 0)",
    );
    let op = named("set up the burial test");
    store
        .run(&FILL, Vec::new(), op)
        .await
        .expect("fill the table");
    let grace = Duration::from_secs(60);
    let buried = store
        .bury_unknown(&["q"], &["known"], grace, "test-worker", 10)
        .await
        .expect("bury");
    assert_eq!(buried, 1, "only the due job of the unknown kind is buried");
    let states = "SELECT kind || ':' || state FROM errand_jobs ORDER BY id";
    let rows = store
        .fetch(states, Vec::new(), op)
        .await
        .expect("read the states");
    let states: Vec<String> = rows.iter().map(|r| r.text(0).expect("a text")).collect();
    assert_eq!(
        states,
        ["known:available", "unknown:dead", "unknown:available"]
    );
}
