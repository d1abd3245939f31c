//! Claims: the plain claim of an exchange (with the completions it carries), the claim of
//! chosen jobs that the limited claim uses, and the aging of waiting jobs' priorities, which
//! changes the order claims take them in. Limited jobs are claimed in `limits`, fair ones in
//! `fairness`.
use super::{Conn, Op};
use crate::job::JobId;
use crate::store::{BoxFuture, Clock, Exchange};
use std::time::Duration;

use super::runs::{completed_ids, completion_values};
use super::{count, duration_millis, op_error, Dialect, SqlRow};
use super::{Both, Named, SqlStore, Value};
use crate::error::Error;
use crate::store::Claimed;

/// `queues, limits, lease, worker, kinds, now`: claims, returning `id, kind, queue, args,
/// attempt, max_attempts, idempotency_key, fence, priority, run_at`.
pub(crate) static CLAIM: Named = Named::new(Both {
    postgres: PG_CLAIM,
    // One queue a statement: `$queues` and `$limits` hold one element each.
    sqlite: concat!(
        "UPDATE errand_jobs ",
        lite_claim_set!("$now", "$lease", "$worker"),
        "
        WHERE id IN (
            -- Pinned: with an index of available jobs by kind beside it (migration 19),
            -- SQLite's planner chose to read the whole queue through `errand_jobs_queue_state`
            -- and sort it.
            SELECT id FROM errand_jobs INDEXED BY errand_jobs_plain
            WHERE queue = ($queues ->> 0) AND state = 'available' AND kind IN (SELECT value FROM json_each($kinds))
              AND limit_key IS NULL AND fair_key IS NULL
              AND ",
        unexpired!("$now"),
        "
              AND NOT ",
        paused!("($queues ->> 0)"),
        "
            ORDER BY priority, run_at, id
            LIMIT ($limits ->> 0)) ",
        lite_claim_returning!(),
    ),
});

/// `ids, lease, worker, now`: claims these available jobs, returning what
/// `CLAIM` returns.
pub(super) static CLAIM_IDS: Named = Named::new(Both {
    postgres: concat!(
        "UPDATE errand_jobs ",
        // The statement's time: the transaction began before it read which slots were free,
        // and a run that freed one since may have ended after that beginning.
        pg_claim_set!(
            "$lease",
            "$worker",
            "(extract(epoch FROM statement_timestamp()) * 1000)::bigint"
        ),
        "
        WHERE id = ANY($ids) AND state = 'available' ",
        pg_claim_returning!()
    ),
    sqlite: concat!(
        "UPDATE errand_jobs ",
        lite_claim_set!("$now", "$lease", "$worker"),
        "
        WHERE id IN (SELECT value FROM json_each($ids)) AND state = 'available' ",
        lite_claim_returning!()
    ),
});

/// The claim's parameters (`CLAIM`), and `ids, fences` of the runs to complete
/// (`COMPLETE_MANY`), in one statement, returning the claim's columns and one more, `true` on
/// a row that only names a completed job (in its `id`). PostgreSQL only: SQLite has no
/// data-modifying subqueries, and runs the two in one transaction.
pub(crate) static COMPLETE_AND_CLAIM: Named = Named::new(Both {
    postgres: PG_COMPLETE_AND_CLAIM,
    sqlite: "",
});

/// The claim statement; see [`pg_claim!`].
const PG_CLAIM: &str = concat!("WITH ", pg_claim!());

/// The claim and the completion of the runs `$ids` (with their `$fences`), in one statement: one round trip and one commit per batch of a worker's claim loop. Rows with
/// `done` true only name a completed job. The two parts touch different rows (running ones,
/// available ones), so neither needs to see the other's changes.
const PG_COMPLETE_AND_CLAIM: &str = concat!(
    "WITH done AS (",
    pg_complete_many!("$ids", "$fences"),
    "), claimed AS (WITH ",
    pg_claim!(),
    ")
     SELECT *, false AS done FROM claimed
     UNION ALL
     SELECT id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, true
     FROM done"
);

/// Ages up to `limit` available jobs of `queues` whose next step is due: one priority level up
/// (towards 0) per `step` ms waited since their run time, the priority they were given kept
/// in `base_priority`. A job aged k steps is due for the next once it has waited k + 1 steps:
/// each (queue, level, k) is one range of `errand_jobs_aging`, so a backlog aged recently
/// (not due again for a step) is not read.
pub(super) static AGE: Named = Named::new(Both {
    postgres: "UPDATE errand_jobs j
        SET base_priority = COALESCE(j.base_priority, j.priority),
            priority = GREATEST(0, COALESCE(j.base_priority, j.priority) - (errand_now_ms() - j.run_at) / $step)
        FROM (
            SELECT a.id FROM unnest($queues::text[]) AS q(queue)
            CROSS JOIN generate_series(1, 9) AS p(priority)
            CROSS JOIN generate_series(0, 9 - p.priority) AS k(aged)
            CROSS JOIN LATERAL (
                SELECT id FROM errand_jobs
                WHERE queue = q.queue AND state = 'available' AND priority = p.priority
                  AND COALESCE(base_priority, priority) - priority = k.aged
                  AND run_at <= errand_now_ms() - (k.aged + 1) * $step
                ORDER BY run_at LIMIT $limit
                FOR UPDATE SKIP LOCKED) a
            LIMIT $limit
        ) aged
        WHERE j.id = aged.id",
    sqlite: "UPDATE errand_jobs
        SET base_priority = COALESCE(base_priority, priority),
            priority = max(0, COALESCE(base_priority, priority) - ($now - run_at) / $step)
        WHERE id IN (
            -- Each k the outer loop (CROSS JOIN), the index pinned: left to itself, SQLite's
            -- planner read the table and joined k to each row.
            WITH RECURSIVE k(aged) AS (SELECT 0 UNION ALL SELECT aged + 1 FROM k WHERE aged < 8)
            SELECT j.id FROM k CROSS JOIN errand_jobs AS j INDEXED BY errand_jobs_aging
            WHERE j.queue IN (SELECT value FROM json_each($queues)) AND j.state = 'available'
              AND j.priority IN (1, 2, 3, 4, 5, 6, 7, 8, 9)
              AND COALESCE(j.base_priority, j.priority) - j.priority = k.aged
              AND j.run_at <= $now - (k.aged + 1) * $step
            LIMIT $limit)",
});

impl<D: Dialect> SqlStore<D> {
    /// Ages the available jobs of `queues`: one priority level up per `step` waited.
    pub(crate) async fn age(
        &self,
        queues: &[&str],
        step: std::time::Duration,
        limit: usize,
    ) -> Result<u64, Error> {
        let op = || format!("age the priorities of {queues:?}");
        let step = duration_millis(step).max(1);
        let age = params![queues: Value::Texts(queues.to_vec()), step, limit: count(limit), now: Value::Now];
        self.run(&AGE, age, op).await
    }
}

impl<D: Dialect> SqlStore<D> {
    pub(crate) async fn claim(
        &self,
        wanted: &[(&str, usize)],
        kinds: &[&str],
        worker: &str,
        lease: Duration,
    ) -> Result<Vec<Claimed>, Error> {
        let mut conn = self.hot_conn(claim_op(wanted)).await?;
        claim::<D>(&mut conn, wanted, kinds, worker, lease, &self.clock).await
    }

    pub(crate) async fn complete_and_claim(
        &self,
        done: &[(JobId, i64)],
        wanted: &[(&str, usize)],
        kinds: &[&str],
        worker: &str,
        lease: Duration,
    ) -> Result<Exchange, Error> {
        let op = || {
            format!(
                "mark {} jobs completed and {}",
                done.len(),
                claim_op(wanted)()
            )
        };
        if done.is_empty() {
            let claimed = self.claim(wanted, kinds, worker, lease).await?;
            return Ok(Exchange {
                completed: Vec::new(),
                claimed,
            });
        }
        if D::CLAIMS_ALL_QUEUES {
            let mut values = claim_values(wanted, kinds, worker, lease);
            values.extend(completion_values(done));
            let rows = self.rows_hot(&COMPLETE_AND_CLAIM, values, op).await?;
            let mut exchange = Exchange::default();
            let mut claimed = Vec::new();
            for row in &rows {
                if row.flag(15).map_err(|e| op_error::<D>(op(), e))? {
                    let id = row.int(0).map_err(|e| op_error::<D>(op(), e))?;
                    exchange.completed.push(JobId::new(id));
                } else {
                    claimed.push(claimed_row(row).map_err(|e| op_error::<D>(op(), e))?);
                }
            }
            exchange.claimed = in_start_order(claimed);
            return Ok(exchange);
        }
        let mut tx = self.hot.begin().await.map_err(|e| op_error::<D>(op(), e))?;
        let rows =
            super::runs::COMPLETE_MANY.fetch::<D>(&mut tx, completion_values(done), &self.clock);
        let rows = rows.await.map_err(|e| op_error::<D>(op(), e))?;
        let completed = completed_ids(&rows).map_err(|e| op_error::<D>(op(), e))?;
        let claimed = claim::<D>(&mut tx, wanted, kinds, worker, lease, &self.clock).await?;
        tx.commit().await.map_err(|e| op_error::<D>(op(), e))?;
        Ok(Exchange { completed, claimed })
    }
}

/// A claimed row: `id, kind, queue, args, attempt, max_attempts, idempotency_key, fence,
/// priority, run_at, timeout_ms, tags, meta` (these two NULL when empty), `workflow_id, step`,
/// with the order it should start in.
pub(crate) fn claimed_row(row: &impl SqlRow) -> Result<((i64, i64), Claimed), sqlx::Error> {
    let job = Claimed {
        id: JobId::new(row.int(0)?),
        kind: row.text(1)?,
        queue: row.text(2)?,
        args: row.text(3)?,
        attempt: u32::try_from(row.int(4)?).unwrap_or(u32::MAX),
        max_attempts: u32::try_from(row.int(5)?).unwrap_or(u32::MAX),
        key: row.opt_text(6)?,
        fence: row.int(7)?,
        timeout: row
            .opt_int(10)?
            .map(|ms| Duration::from_millis(ms.max(0).unsigned_abs())),
        tags: row.opt_text(11)?,
        meta: row.opt_text(12)?,
        workflow: match (row.opt_int(13)?, row.opt_text(14)?) {
            (Some(id), Some(step)) => Some((crate::info::WorkflowId::new(id), step)),
            _ => None,
        },
        run_at: row.int(9)?,
    };
    Ok(((row.int(8)?, job.run_at), job))
}

/// Claimed rows in the order their jobs should start: RETURNING gives them in none.
pub(crate) fn in_start_order(mut claimed: Vec<((i64, i64), Claimed)>) -> Vec<Claimed> {
    claimed.sort_by_key(|(order, job)| (*order, job.id));
    claimed.into_iter().map(|(_, job)| job).collect()
}

/// The name of a claim from `wanted`, for its error.
pub(crate) fn claim_op<'a>(wanted: &'a [(&'a str, usize)]) -> impl Op + 'a {
    move || {
        let queues: Vec<&str> = wanted.iter().map(|(queue, _)| *queue).collect();
        format!("claim jobs from {queues:?}")
    }
}

/// `CLAIM`'s parameters.
pub(crate) fn claim_values<'a>(
    wanted: &[(&'a str, usize)],
    kinds: &[&'a str],
    worker: &'a str,
    lease: Duration,
) -> Vec<(&'static str, Value<'a>)> {
    params![
        queues: Value::Texts(wanted.iter().map(|(queue, _)| *queue).collect()),
        limits: Value::Ints(wanted.iter().map(|(_, n)| count(*n)).collect()),
        lease: Value::Lease(lease),
        worker,
        kinds: Value::Texts(kinds.to_vec()),
        now: Value::Now,
    ]
}

/// Claims on `conn` (the pool's, or a transaction's), the most urgent first; per queue where
/// the dialect cannot claim from every queue at once.
pub(crate) fn claim<'c, D: Dialect>(
    conn: &'c mut Conn<D>,
    wanted: &'c [(&'c str, usize)],
    kinds: &'c [&'c str],
    worker: &'c str,
    lease: Duration,
    clock: &'c Clock,
) -> BoxFuture<'c, Result<Vec<Claimed>, Error>> {
    Box::pin(async move {
        let groups: Vec<&[(&str, usize)]> = if D::CLAIMS_ALL_QUEUES {
            vec![wanted]
        } else {
            wanted.chunks(1).collect()
        };
        let mut claimed = Vec::new();
        for group in groups {
            let op = claim_op(group);
            let rows = CLAIM.fetch::<D>(conn, claim_values(group, kinds, worker, lease), clock);
            let rows = rows.await.map_err(|e| op_error::<D>(op(), e))?;
            for row in &rows {
                claimed.push(claimed_row(row).map_err(|e| op_error::<D>(op(), e))?);
            }
        }
        Ok(in_start_order(claimed))
    })
}
