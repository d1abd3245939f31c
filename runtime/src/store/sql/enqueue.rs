//! Enqueueing: one job (the unique index decides its key; the jobs it waits on are locked and
//! recorded), many at once in one statement, and a waiting job replaced under
//! `OnConflict::Replace`.

use super::Both;
use super::{encode_error, first, op_error, Conn, Dialect, Named, SqlRow, SqlStore, Value};
use crate::error::Error;
use crate::info::AttemptError;
use crate::job::{JobId, OnConflict, OnDependencyFailure};
use crate::store::{BoxFuture, Clock, Inserted, NewJob};
use std::time::Duration;

/// Inserts a job unless its unique key is taken; returns its id. It runs at `at`, or `delay`
/// from now (one of them set); it expires at `expires_at`, or `expires_after` past its run time;
/// it waits on `waiting_on` other jobs (`pending` while more than none).
pub(super) static INSERT: Named = Named::new(Both {
    // Each insert wakes idle workers of the queues it made jobs available in (`errand_wake`,
    // once per statement); the extra column only makes sure it is called.
    postgres: concat!(
        "WITH ins AS (
        INSERT INTO errand_jobs (kind, queue, args, state, priority, max_attempts, idempotency_key,
                                 run_at, created_at, unique_key, unique_strategy, unique_until,
                                 tags, meta, timeout_ms, expires_at, limit_key, fair_key,
                                 waiting_on, workflow_id, step)
        SELECT $kind, $queue, $args::jsonb,
               CASE WHEN $waiting_on::int > 0 THEN 'pending'
                    WHEN t.run_at > errand_now_ms() THEN 'scheduled' ELSE 'available' END,
               $priority, $max_attempts, $key, t.run_at, errand_now_ms(), $unique_key, $strategy,
               errand_now_ms() + $unique_for::bigint, $tags::text[], $meta::jsonb,
               $timeout::bigint, COALESCE($expires_at::bigint, t.run_at + $expires_after::bigint),
               $limit_key::text, $fair_key::text, $waiting_on::int, $workflow::bigint, $step::text
        FROM (SELECT COALESCE($at::bigint, errand_now_ms() + $delay::bigint) AS run_at) t
        ON CONFLICT DO NOTHING
        RETURNING id, CASE WHEN limit_key IS NULL AND fair_key IS NULL THEN queue
                          ELSE '+' || queue END AS queue, state)",
        pg_wake!()
    ),
    // `WHERE true` tells SQLite's parser that `ON CONFLICT` belongs to the insert.
    sqlite:
        "INSERT INTO errand_jobs (kind, queue, args, state, priority, max_attempts, idempotency_key,
                                      run_at, created_at, unique_key, unique_strategy, unique_until,
                                      tags, meta, timeout_ms, expires_at, limit_key, fair_key,
                                      waiting_on, workflow_id, step)
        SELECT $kind, $queue, $args,
               CASE WHEN $waiting_on > 0 THEN 'pending'
                    WHEN t.run_at > $now THEN 'scheduled' ELSE 'available' END,
               $priority, $max_attempts, $key, t.run_at, $now, $unique_key, $strategy,
               $now + $unique_for, $tags, $meta, $timeout,
               COALESCE($expires_at, t.run_at + $expires_after),
               $limit_key, $fair_key, $waiting_on, $workflow, $step
        FROM (SELECT COALESCE($at, $now + $delay) AS run_at) t WHERE true
        ON CONFLICT DO NOTHING
        RETURNING id",
});

/// Inserts jobs that are not unique, from the columns [`Dialect::many_values`] builds (one
/// array each on PostgreSQL; one JSON array of rows on SQLite); returns their ids.
pub(super) static INSERT_MANY: Named = Named::new(Both {
    postgres: concat!(
        "WITH ins AS (
        INSERT INTO errand_jobs (kind, queue, args, state, priority, max_attempts, idempotency_key, run_at, created_at,
                                 tags, meta, timeout_ms, expires_at, limit_key, fair_key)
        SELECT kind, queue, args::jsonb,
               CASE WHEN COALESCE(at, errand_now_ms() + delay) > errand_now_ms() THEN 'scheduled' ELSE 'available' END,
               priority, max_attempts, key, COALESCE(at, errand_now_ms() + delay), errand_now_ms(),
               ARRAY(SELECT jsonb_array_elements_text(tags::jsonb)), meta::jsonb, timeout_ms,
               COALESCE(expires_at, COALESCE(at, errand_now_ms() + delay) + expires_after), limit_key,
               fair_key
        FROM unnest($kinds::text[], $queues::text[], $args::text[], $priorities::smallint[],
                    $max_attempts::int[], $keys::text[], $delays::bigint[], $ats::bigint[],
                    $tags::text[], $metas::text[], $timeouts::bigint[], $expires_afters::bigint[],
                    $expires_ats::bigint[], $limit_keys::text[], $fair_keys::text[])
             AS t(kind, queue, args, priority, max_attempts, key, delay, at, tags, meta, timeout_ms,
                  expires_after, expires_at, limit_key, fair_key)
        RETURNING id, CASE WHEN limit_key IS NULL AND fair_key IS NULL THEN queue
                          ELSE '+' || queue END AS queue, state)",
        pg_wake!()
    ),
    sqlite: "INSERT INTO errand_jobs (kind, queue, args, state, priority, max_attempts, idempotency_key, run_at, created_at,
                                           tags, meta, timeout_ms, expires_at, limit_key, fair_key)
        SELECT value ->> 0, value ->> 1, value ->> 2,
               CASE WHEN COALESCE(value ->> 7, $now + (value ->> 6)) > $now THEN 'scheduled' ELSE 'available' END,
               value ->> 3, value ->> 4, value ->> 5, COALESCE(value ->> 7, $now + (value ->> 6)), $now,
               value -> 8, value -> 9, value ->> 10,
               COALESCE(value ->> 12, COALESCE(value ->> 7, $now + (value ->> 6)) + (value ->> 11)),
               value ->> 13, value ->> 14
        FROM json_each($rows)
        RETURNING id",
});

/// Frees the unique key `key` of `kind` if its `unique_for` has passed.
pub(super) static EXPIRE_KEY: Named = Named::new(Both {
    postgres: "UPDATE errand_jobs SET unique_key = NULL
        WHERE kind = $kind AND unique_key = $key AND unique_until <= errand_now_ms()",
    sqlite: "UPDATE errand_jobs SET unique_key = NULL
        WHERE kind = $kind AND unique_key = $key AND unique_until IS NOT NULL
          AND unique_until <= $now",
});

/// The id of the job of `kind` holding the unique key `key`.
pub(super) static KEY_HOLDER: Named = Named::new(Both {
    postgres: "SELECT id FROM errand_jobs WHERE kind = $kind AND unique_key = $key",
    sqlite: "SELECT id FROM errand_jobs WHERE kind = $kind AND unique_key = $key",
});

/// Replaces job `id`'s arguments, queue, priority and run time (`at`, or `delay` from now),
/// unless it has started; returns its id.
pub(super) static REPLACE: Named = Named::new(Both {
    postgres: "UPDATE errand_jobs
        SET args = $args::jsonb, queue = $queue, priority = $priority,
            run_at = COALESCE($at::bigint, errand_now_ms() + $delay::bigint),
            state = CASE WHEN COALESCE($at::bigint, errand_now_ms() + $delay::bigint) > errand_now_ms()
                         THEN 'scheduled' ELSE 'available' END
        WHERE id = $id AND state IN ('scheduled', 'available', 'retryable')
        RETURNING id",
    sqlite: "UPDATE errand_jobs
        SET args = $args, queue = $queue, priority = $priority,
            run_at = COALESCE($at, $now + $delay),
            state = CASE WHEN COALESCE($at, $now + $delay) > $now THEN 'scheduled' ELSE 'available' END
        WHERE id = $id AND state IN ('scheduled', 'available', 'retryable')
        RETURNING id",
});

/// Marks the jobs `ids` as having dependents (locking them until the transaction ends);
/// returns `id, state, step` of each.
pub(super) static LOCK_PARENTS: Named = Named::new(Both {
    postgres: "UPDATE errand_jobs SET has_dependents = true WHERE id = ANY($ids)
        RETURNING id, state, step",
    sqlite: "UPDATE errand_jobs SET has_dependents = 1
        WHERE id IN (SELECT value FROM json_each($ids))
        RETURNING id, state, step",
});

/// Records that job `job` waits on each of `parents`, with the `on_failures` parallel to them.
pub(super) static ADD_DEPS: Named = Named::new(Both {
    postgres: "INSERT INTO errand_job_deps (depends_on, job_id, on_failure)
        SELECT t.p, $job, t.m FROM unnest($parents::bigint[], $on_failures::text[]) AS t(p, m)
        ON CONFLICT DO NOTHING",
    sqlite: "INSERT INTO errand_job_deps (depends_on, job_id, on_failure)
        SELECT p.value, $job, m.value FROM json_each($parents) p
        JOIN json_each($on_failures) m ON m.key = p.key
        WHERE true ON CONFLICT DO NOTHING",
});

impl<D: Dialect> SqlStore<D> {
    pub(crate) async fn enqueue(&self, job: &NewJob) -> Result<Inserted, Error> {
        let op = || format!("enqueue a `{}` job", job.kind);
        if job.after.is_empty() && job.any_of.is_empty() {
            let mut conn = self.conn(op).await?;
            return insert::<D>(&mut conn, job, &self.clock).await;
        }
        let mut tx = self.begin_write().await?;
        let inserted = insert::<D>(&mut tx, job, &self.clock).await?;
        tx.commit().await.map_err(|e| op_error::<D>(op(), e))?;
        Ok(inserted)
    }

    pub(crate) async fn enqueue_many(&self, jobs: &[NewJob]) -> Result<Vec<JobId>, Error> {
        let op = || format!("enqueue {} jobs", jobs.len());
        let mut conn = self.conn(op).await?;
        insert_many::<D>(&mut conn, jobs, &self.clock).await
    }
}

/// Inserts a job on `conn` (the pool's, or the caller's transaction), unless its unique key is
/// taken. The unique index decides, never a check before the insert: of many enqueues of one
/// key at once, from any number of processes, exactly one inserts.
///
/// A job that waits on others ([`NewJob::after`]) must be inserted in a transaction: this locks
/// the jobs it waits on (so that none finishes unseen between their reading and the insert),
/// inserts it `pending` on those not finished, and records its dependencies. One of them dead or
/// cancelled cancels it at once (unless it runs anyway).
pub(crate) fn insert<'a, D: Dialect>(
    conn: &'a mut Conn<D>,
    job: &'a NewJob,
    clock: &'a Clock,
) -> BoxFuture<'a, Result<Inserted, Error>> {
    Box::pin(async move {
        if job.after.is_empty() && job.any_of.is_empty() {
            return insert_one::<D>(conn, job, clock, 0).await;
        }
        let op = |e| op_error::<D>(format!("enqueue a `{}` job after others", job.kind), e);
        // Each parent with the `on_failure` of its edge.
        let edges: Vec<(i64, &'static str)> = if job.any_of.is_empty() {
            let on_failure = job.on_dependency_failure.as_str();
            job.after.iter().map(|id| (id.get(), on_failure)).collect()
        } else {
            let edges = job.any_of.iter();
            edges
                .map(|(id, release)| (id.get(), release.as_str()))
                .collect()
        };
        let parents: Vec<i64> = edges.iter().map(|(id, _)| *id).collect();
        let (sql, lock) = LOCK_PARENTS
            .bind::<D>(params![ids: Value::Ints(parents.clone())])
            .map_err(op)?;
        let rows = D::fetch(conn, sql, lock, clock).await.map_err(op)?;
        let mut found = Vec::with_capacity(rows.len());
        for row in &rows {
            let (id, state, step) = (row.int(0), row.text(1), row.opt_text(2));
            found.push((id.map_err(op)?, state.map_err(op)?, step.map_err(op)?));
        }
        if let Some(missing) = parents.iter().find(|p| !found.iter().any(|f| f.0 == **p)) {
            return Err(Error::UnknownDependency {
                kind: job.kind,
                depends_on: JobId::new(*missing),
            });
        }
        let (waiting, failed) = waiting_at_insert(job, &found);
        let inserted = insert_one::<D>(conn, job, clock, waiting).await?;
        let Inserted::New(id) = inserted else {
            return Ok(inserted);
        };
        let modes = edges.iter().map(|(_, on_failure)| *on_failure).collect();
        let deps = params![
            parents: Value::Ints(parents),
            job: id.get(),
            on_failures: Value::Texts(modes),
        ];
        let (sql, deps) = ADD_DEPS.bind::<D>(deps).map_err(op)?;
        D::execute(conn, sql, deps, clock).await.map_err(op)?;
        if let Some(message) = failed {
            let error = AttemptError {
                attempt: 0,
                kind: crate::classify::FailureKind::Cancelled,
                message,
                at: std::time::SystemTime::now(),
                duration: Duration::ZERO,
                worker: String::new(),
            };
            let error = encode_error::<D>(id, &error)?;
            let cancel = params![id: id.get(), error: error.as_str(), now: Value::Now];
            super::cancels::CANCEL
                .execute::<D>(conn, cancel, clock)
                .await
                .map_err(op)?;
        }
        Ok(inserted)
    })
}

/// What the states of the jobs a new job waits on (`id, state, step` of each) mean for it: how
/// many of them it still waits on, and why it is cancelled at once, if it is.
pub(crate) fn waiting_at_insert(
    job: &NewJob,
    parents: &[(i64, String, Option<String>)],
) -> (i64, Option<String>) {
    let ended = |state: &str| match state {
        "completed" => Some("completed"),
        "dead" => Some("died"),
        "cancelled" => Some("was cancelled"),
        _ => None,
    };
    let named = |id: i64, step: &Option<String>| match step {
        Some(step) => format!("job {id} ({step})"),
        None => format!("job {id}"),
    };
    let open = |states: &mut dyn Iterator<Item = &str>| {
        states.filter(|state| ended(state).is_none()).count() as i64
    };
    if !job.any_of.is_empty() {
        // Released by any one of them; cancelled only when each has ended without releasing.
        let releases = |(id, state, _): &&(i64, String, Option<String>)| {
            job.any_of
                .iter()
                .any(|(p, release)| p.get() == *id && release.releases(state))
        };
        if parents.iter().any(|p| releases(&p)) {
            return (0, None);
        }
        let waiting = open(&mut parents.iter().map(|(_, state, _)| state.as_str()));
        let reason = parents.iter().find_map(|(id, state, step)| {
            ended(state).map(|what| format!("not needed: {} {what}", named(*id, step)))
        });
        return match waiting {
            0 => (1, reason),
            n => (n, None),
        };
    }
    let runs_anyway = job.on_dependency_failure == OnDependencyFailure::Run;
    let failed = parents
        .iter()
        .find_map(|(id, state, step)| match ended(state) {
            Some("completed") | None => None,
            Some(_) if runs_anyway => None,
            Some(what) => Some(format!("{} that it depends on {what}", named(*id, step))),
        });
    // A job whose dependency already failed is inserted waiting on one, then cancelled.
    match failed {
        Some(reason) => (1, Some(reason)),
        None => (
            open(&mut parents.iter().map(|(_, state, _)| state.as_str())),
            None,
        ),
    }
}

/// Inserts a job (see [`insert`]), `pending` on `waiting` unfinished jobs if any.
pub(crate) fn insert_one<'a, D: Dialect>(
    conn: &'a mut Conn<D>,
    job: &'a NewJob,
    clock: &'a Clock,
    waiting: i64,
) -> BoxFuture<'a, Result<Inserted, Error>> {
    Box::pin(async move {
        let op = |e| op_error::<D>(format!("enqueue a `{}` job", job.kind), e);
        // Relative times are measured on the store's clock; absolute ones are taken as given.
        let (delay, at) = job.run_at.delay_or_at_ms();
        let unique_key = job.unique_key();
        // A holder can release the key between our insert and our look-up; then try again.
        for _ in 0..3 {
            if let Some(key) = unique_key {
                let expire = params![kind: job.kind, key: key, now: Value::Now];
                let (sql, expire) = EXPIRE_KEY.bind::<D>(expire).map_err(op)?;
                D::execute(conn, sql, expire, clock).await.map_err(op)?;
            }
            let (expires_after, expires_at) = job.expiry_ms();
            let new = params![
                kind: job.kind,
                queue: job.queue.as_str(),
                args: job.args.as_str(),
                priority: i64::from(job.priority),
                max_attempts: i64::from(job.max_attempts),
                key: job.key.as_deref(),
                delay: delay,
                at: at,
                unique_key: unique_key,
                strategy: job.unique_strategy(),
                unique_for: job.unique_for_ms(),
                now: Value::Now,
                tags: Value::Texts(job.tags.iter().map(String::as_str).collect()),
                meta: job.meta_json(),
                timeout: job.timeout_ms,
                expires_after: expires_after,
                expires_at: expires_at,
                limit_key: job.limit_key.as_deref(),
                fair_key: job.fair_key.as_deref(),
                waiting_on: waiting,
                workflow: job.workflow.as_ref().map(|(id, _)| *id),
                step: job.workflow.as_ref().map(|(_, step)| step.as_str()),
            ];
            let (sql, new) = INSERT.bind::<D>(new).map_err(op)?;
            if let Some(row) = first(D::fetch(conn, sql, new, clock).await.map_err(op)?) {
                crate::metrics::enqueued(job.kind, &job.queue);
                return Ok(Inserted::New(JobId::new(row.int(0).map_err(op)?)));
            }
            let Some(key) = unique_key else { continue };
            let (sql, held) = KEY_HOLDER
                .bind::<D>(params![kind: job.kind, key: key])
                .map_err(op)?;
            let holder = D::fetch(conn, sql, held, clock).await;
            let Some(holder) = first(holder.map_err(op)?) else {
                continue;
            };
            let holder = JobId::new(holder.int(0).map_err(op)?);
            if job.on_conflict() != OnConflict::Replace {
                return Ok(Inserted::Duplicate(holder));
            }
            let replace = params![
                id: holder.get(),
                args: job.args.as_str(),
                queue: job.queue.as_str(),
                priority: i64::from(job.priority),
                delay: delay,
                at: at,
                now: Value::Now,
            ];
            let (sql, replace) = REPLACE.bind::<D>(replace).map_err(op)?;
            let replaced = D::fetch(conn, sql, replace, clock).await.map_err(op)?;
            return Ok(if replaced.is_empty() {
                Inserted::Duplicate(holder)
            } else {
                Inserted::Replaced(holder)
            });
        }
        Err(Error::KeyContended {
            kind: job.kind,
            key: job.key.clone().unwrap_or_default(),
        })
    })
}

/// Counts jobs stored by one statement, per kind and queue (most such batches have one of each).
pub(crate) fn count_enqueued(jobs: &[NewJob]) {
    let mut counted = 0;
    while counted < jobs.len() {
        let (kind, queue) = (jobs[counted].kind, &jobs[counted].queue);
        let same = jobs[counted..]
            .iter()
            .take_while(|j| j.kind == kind && j.queue == *queue)
            .count();
        crate::metrics::enqueued_many(kind, queue, same);
        counted += same;
    }
}

/// Inserts jobs that are not unique on `conn` (the pool's, or the caller's transaction), in
/// one statement; returns their ids in the order of `jobs`.
pub(crate) fn insert_many<'a, D: Dialect>(
    conn: &'a mut Conn<D>,
    jobs: &'a [NewJob],
    clock: &'a Clock,
) -> BoxFuture<'a, Result<Vec<JobId>, Error>> {
    Box::pin(async move {
        let op = || format!("enqueue {} jobs", jobs.len());
        let err = |e| op_error::<D>(op(), e);
        let (sql, values) = INSERT_MANY.bind::<D>(D::many_values(jobs)).map_err(err)?;
        let rows = D::fetch(conn, sql, values, clock).await.map_err(err)?;
        let ids: Result<Vec<i64>, _> = rows.iter().map(|row| row.int(0)).collect();
        let mut ids = ids.map_err(|e| op_error::<D>(op(), e))?;
        count_enqueued(jobs);
        // Ids rise in insertion order.
        ids.sort_unstable();
        Ok(ids.into_iter().map(JobId::new).collect())
    })
}
