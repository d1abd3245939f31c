//! The PostgreSQL store: many workers on many machines.
//!
//! Claims take a batch across queues in one statement with `FOR UPDATE SKIP LOCKED`, so workers
//! never wait on each other's rows and never take the same job. Every time comes from the
//! database's clock (`errand_now_ms()`), so machines with skewed clocks agree on what is due and
//! which lease ran out. A trigger notifies `errand_<schema>` when a job becomes available, and
//! workers `LISTEN` on it.
//!
//! The store's tables live in one schema (`public` unless [`Config::schema`](crate::Config::schema)
//! says otherwise), reached through the connections' `search_path`; no statement names it.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow};
use sqlx::{PgConnection, PgPool, Row};

use crate::dead::{Cancellation, Retention};
use crate::error::{redact, Error};
use crate::info::{duration_millis, AttemptError, JobInfo, StoredAttempt};
use crate::job::JobId;
use crate::job::OnConflict;
use crate::store::{
    job_from_row, BoxFuture, Claimed, DeadQuery, Finish, Inserted, NewJob, RunId, StepOwner, Store,
    KEEP_FIRST_ERRORS, LEASE_LOST_AFTER, LEASE_LOST_BEFORE, MAX_ERRORS, UNKNOWN_KIND_AFTER,
    UNKNOWN_KIND_BEFORE,
};

const STORE: &str = "postgres";

#[derive(Clone, Debug)]
pub(crate) struct PostgresStore {
    pool: PgPool,
    /// How to open a connection of errand's own, outside the pool (for `LISTEN`). Boxed: the
    /// options are large, and the store is one variant of a small enum.
    options: Box<PgConnectOptions>,
    schema: String,
}

/// How long connecting may take before `Client::connect` gives up with the cause.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl PostgresStore {
    pub(crate) fn connect<'a>(
        url: &'a str,
        schema: &'a str,
        max_connections: u32,
        migrate: bool,
    ) -> BoxFuture<'a, Result<PostgresStore, Error>> {
        Box::pin(async move {
            let options = PgConnectOptions::from_str(url)
                .map_err(|e| Error::InvalidUrl {
                    url: redact(url),
                    reason: e.to_string(),
                })?
                // A startup parameter, not SQL: the schema name never becomes part of a statement.
                .options([("search_path", schema)]);
            let connect_error = |source| Error::Connect {
                store: STORE,
                url: format!(
                    "{} ({}:{})",
                    redact(url),
                    options.get_host(),
                    options.get_port()
                ),
                source,
            };
            // One connection first, on its own: a pool retries until its acquire timeout and
            // then reports only that it timed out; this reports the cause (refused, unknown
            // host, authentication failed) at once.
            let probe = tokio::time::timeout(
                CONNECT_TIMEOUT,
                <PgConnection as sqlx::Connection>::connect_with(&options),
            )
            .await
            .map_err(|_| {
                connect_error(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {CONNECT_TIMEOUT:?}"),
                )))
            })?
            .map_err(connect_error)?;
            let _ = sqlx::Connection::close(probe).await;
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options.clone())
                .await
                .map_err(connect_error)?;
            let store = PostgresStore {
                pool,
                options: Box::new(options),
                schema: schema.to_owned(),
            };
            if migrate {
                store.migrate().await?;
            } else {
                store.check_version().await?;
            }
            Ok(store)
        })
    }

    /// Applies the migrations this schema lacks. An advisory lock per schema makes processes
    /// that start together wait for one another, so each migration runs once.
    pub(crate) fn migrate(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let begin_error = |source| Error::Migrate {
                store: STORE,
                version: 0,
                source,
            };
            let mut tx = self.pool.begin().await.map_err(begin_error)?;
            apply_migrations(&mut tx, &self.schema).await?;
            tx.commit().await.map_err(begin_error)
        })
    }

    /// Fails unless the schema has every migration this errand knows.
    async fn check_version(&self) -> Result<(), Error> {
        let needed = crate::migrations::latest(crate::migrations::POSTGRES);
        let found =
            sqlx::query_scalar::<_, i64>("SELECT COALESCE(MAX(version), 0) FROM errand_migrations")
                .fetch_one(&self.pool)
                .await;
        let found = match found {
            Ok(found) => found,
            // 42P01: the table does not exist; errand's schema was never migrated.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => 0,
            Err(e) => return Err(op_error("read the schema's version", e)),
        };
        if found < needed {
            return Err(Error::SchemaBehind {
                store: STORE,
                found,
                needed,
            });
        }
        Ok(())
    }

    /// A listener for this schema's "job available" notifications.
    ///
    /// The listener holds its connection for as long as it lives, so it gets one of its own,
    /// outside the client's pool: a pool of one connection must still serve claims.
    pub(crate) async fn listen(&self) -> Result<PgListener, Error> {
        let own = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_lazy_with((*self.options).clone());
        let mut listener = PgListener::connect_with(&own)
            .await
            .map_err(|e| op_error("open a LISTEN connection", e))?;
        listener
            .listen(&format!("errand_{}", self.schema))
            .await
            .map_err(|e| op_error("LISTEN for available jobs", e))?;
        Ok(listener)
    }
}

/// The migrations, on the migrating transaction's connection.
///
/// Each statement goes through [`run`] or [`row`]: awaiting sqlx's futures on a reborrowed
/// `&mut PgConnection` directly would leave a lifetime in this future that rustc cannot prove
/// `Send` for (see [`BoxFuture`]).
fn apply_migrations<'a>(
    conn: &'a mut PgConnection,
    schema: &'a str,
) -> BoxFuture<'a, Result<(), Error>> {
    Box::pin(async move {
        let migrate_error = |version| {
            move |source| Error::Migrate {
                store: STORE,
                version,
                source,
            }
        };
        let lock =
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('errand migrations ' || $1))")
                .bind(schema);
        run(conn, lock).await.map_err(migrate_error(0))?;
        // `format('%I')` quotes the name on the server: it is bound as a value, never spliced.
        let format =
            sqlx::query("SELECT format('CREATE SCHEMA IF NOT EXISTS %I', $1::text)").bind(schema);
        let create: String = row(conn, format)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(migrate_error(0))?;
        run(conn, sqlx::query(&create))
            .await
            .map_err(migrate_error(0))?;
        run(conn, sqlx::query(crate::migrations::POSTGRES_BOOKKEEPING))
            .await
            .map_err(migrate_error(0))?;
        let current = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM errand_migrations");
        let current: i64 = row(conn, current)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(migrate_error(0))?;
        for crate::migrations::Migration { version, sql, .. } in crate::migrations::POSTGRES
            .iter()
            .filter(|m| m.version > current)
        {
            raw(conn, sql).await.map_err(migrate_error(*version))?;
            let record =
                sqlx::query("INSERT INTO errand_migrations (version) VALUES ($1)").bind(version);
            run(conn, record).await.map_err(migrate_error(*version))?;
        }
        Ok(())
    })
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

fn run<'c>(
    conn: &'c mut PgConnection,
    query: PgQuery<'c>,
) -> BoxFuture<'c, Result<(), sqlx::Error>> {
    Box::pin(async move { query.execute(conn).await.map(|_| ()) })
}

fn maybe_row<'c>(
    conn: &'c mut PgConnection,
    query: PgQuery<'c>,
) -> BoxFuture<'c, Result<Option<PgRow>, sqlx::Error>> {
    Box::pin(query.fetch_optional(conn))
}

fn row<'c>(
    conn: &'c mut PgConnection,
    query: PgQuery<'c>,
) -> BoxFuture<'c, Result<PgRow, sqlx::Error>> {
    Box::pin(query.fetch_one(conn))
}

/// Several statements in one string, as migrations are.
fn raw<'c>(conn: &'c mut PgConnection, sql: &'c str) -> BoxFuture<'c, Result<(), sqlx::Error>> {
    Box::pin(async move { sqlx::Executor::execute(conn, sql).await.map(|_| ()) })
}

fn op_error(op: impl Into<String>, source: sqlx::Error) -> Error {
    Error::Store {
        store: STORE,
        op: op.into(),
        source,
    }
}

/// Inserts a job on `conn` (the pool's, or the caller's transaction), unless its unique key is
/// taken. The unique index decides, never a check before the insert: of many enqueues of one
/// key at once, from any number of processes, exactly one inserts.
pub(crate) fn insert<'a>(
    conn: &'a mut PgConnection,
    job: &'a NewJob,
) -> BoxFuture<'a, Result<Inserted, Error>> {
    Box::pin(async move {
        let op = |e| op_error(format!("enqueue a `{}` job", job.kind), e);
        // Relative times are measured on the database's clock; absolute ones are taken as given.
        let (delay_ms, at_ms) = job.run_at.delay_or_at_ms();
        let unique_key = job.unique_key();
        // A holder can release the key between our insert and our look-up; then try again.
        for _ in 0..3 {
            if let Some(key) = unique_key {
                let expire = sqlx::query(
                    "UPDATE errand_jobs SET unique_key = NULL
                     WHERE kind = $1 AND unique_key = $2 AND unique_until <= errand_now_ms()",
                )
                .bind(job.kind)
                .bind(key);
                run(conn, expire).await.map_err(op)?;
            }
            let insert = sqlx::query(
                "INSERT INTO errand_jobs (kind, queue, args, state, priority, max_attempts, idempotency_key,
                                          run_at, created_at, unique_key, unique_strategy, unique_until)
                 SELECT $1, $2, $3::jsonb,
                        CASE WHEN t.run_at > errand_now_ms() THEN 'scheduled' ELSE 'available' END,
                        $4, $5, $6, t.run_at, errand_now_ms(), $9, $10, errand_now_ms() + $11::bigint
                 FROM (SELECT COALESCE($8::bigint, errand_now_ms() + $7::bigint) AS run_at) t
                 ON CONFLICT DO NOTHING
                 RETURNING id",
            )
            .bind(job.kind)
            .bind(&job.queue)
            .bind(&job.args)
            .bind(i16::from(job.priority))
            .bind(i32::try_from(job.max_attempts).unwrap_or(i32::MAX))
            .bind(job.key.as_deref())
            .bind(delay_ms)
            .bind(at_ms)
            .bind(unique_key)
            .bind(job.unique_strategy())
            .bind(job.unique_for_ms());
            if let Some(row) = maybe_row(conn, insert).await.map_err(op)? {
                return Ok(Inserted::New(JobId::new(row.try_get(0).map_err(op)?)));
            }
            let Some(key) = unique_key else { continue };
            let holder =
                sqlx::query("SELECT id FROM errand_jobs WHERE kind = $1 AND unique_key = $2")
                    .bind(job.kind)
                    .bind(key);
            let Some(holder) = maybe_row(conn, holder).await.map_err(op)? else {
                continue;
            };
            let holder = JobId::new(holder.try_get(0).map_err(op)?);
            if job.on_conflict() != OnConflict::Replace {
                return Ok(Inserted::Duplicate(holder));
            }
            let replace = sqlx::query(
                "UPDATE errand_jobs
                 SET args = $2::jsonb, queue = $3, priority = $4,
                     run_at = COALESCE($6::bigint, errand_now_ms() + $5::bigint),
                     state = CASE WHEN COALESCE($6::bigint, errand_now_ms() + $5::bigint) > errand_now_ms()
                                  THEN 'scheduled' ELSE 'available' END
                 WHERE id = $1 AND state IN ('scheduled', 'available', 'retryable')
                 RETURNING id",
            )
            .bind(holder.get())
            .bind(&job.args)
            .bind(&job.queue)
            .bind(i16::from(job.priority))
            .bind(delay_ms)
            .bind(at_ms);
            let replaced = maybe_row(conn, replace).await.map_err(op)?.is_some();
            return Ok(if replaced {
                Inserted::Replaced(holder)
            } else {
                Inserted::Duplicate(holder)
            });
        }
        Err(Error::KeyContended {
            kind: job.kind,
            key: job.key.clone().unwrap_or_default(),
        })
    })
}

/// Marks a running job completed on `conn`, inside the caller's transaction.
pub(crate) fn complete(
    conn: &mut PgConnection,
    id: JobId,
    fence: i64,
) -> BoxFuture<'_, Result<bool, Error>> {
    Box::pin(async move {
        let done = sqlx::query(
            "UPDATE errand_jobs
             SET state = 'completed', finished_at = errand_now_ms(), lease_until = NULL, running_key = NULL,
                 unique_key = errand_key_after(unique_strategy, 'completed', unique_key)
             WHERE id = $1 AND fence = $2 AND state = 'running'",
        )
        .bind(id.get())
        .bind(fence)
        .execute(&mut *conn)
        .await
        .map_err(|e| op_error(format!("complete job {id} in a transaction"), e))?;
        Ok(done.rows_affected() == 1)
    })
}

fn ids(ids: &[JobId]) -> Vec<i64> {
    ids.iter().map(|id| id.get()).collect()
}

impl Store for PostgresStore {
    async fn enqueue(&self, job: &NewJob) -> Result<Inserted, Error> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| op_error(format!("enqueue a `{}` job", job.kind), e))?;
        insert(&mut conn, job).await
    }

    async fn claim(
        &self,
        wanted: &[(&str, usize)],
        kinds: &[&str],
        worker: &str,
        lease: Duration,
    ) -> Result<Vec<Claimed>, Error> {
        let queues: Vec<&str> = wanted.iter().map(|(q, _)| *q).collect();
        let limits: Vec<i32> = wanted
            .iter()
            .map(|(_, n)| i32::try_from(*n).unwrap_or(i32::MAX))
            .collect();
        let rows = sqlx::query(CLAIM)
            .bind(&queues)
            .bind(&limits)
            .bind(duration_millis(lease))
            .bind(worker)
            .bind(kinds)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| op_error(format!("claim jobs from {queues:?}"), e))?;
        let mut claimed = rows
            .iter()
            .map(|row| {
                let order = (
                    row.try_get::<i16, _>("priority")?,
                    row.try_get::<i64, _>("run_at")?,
                );
                let job = Claimed {
                    id: JobId::new(row.try_get("id")?),
                    kind: row.try_get("kind")?,
                    queue: row.try_get("queue")?,
                    args: row.try_get("args")?,
                    attempt: u32::try_from(row.try_get::<i32, _>("attempt")?).unwrap_or(u32::MAX),
                    max_attempts: u32::try_from(row.try_get::<i32, _>("max_attempts")?)
                        .unwrap_or(u32::MAX),
                    key: row.try_get("idempotency_key")?,
                    fence: row.try_get("fence")?,
                };
                Ok((order, job))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(|e| op_error("read claimed jobs", e))?;
        // RETURNING gives rows in no particular order; start the most urgent first.
        claimed.sort_by_key(|(order, job)| (*order, job.id));
        Ok(claimed.into_iter().map(|(_, job)| job).collect())
    }

    async fn promote(&self, limit: usize) -> Result<u64, Error> {
        let promoted = sqlx::query(PROMOTE)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await
            .map_err(|e| op_error("make due jobs available", e))?;
        Ok(promoted.rows_affected())
    }

    async fn bury_unknown(
        &self,
        queues: &[&str],
        kinds: &[&str],
        grace: Duration,
        worker: &str,
    ) -> Result<u64, Error> {
        let buried = sqlx::query(
            "UPDATE errand_jobs
             SET state = 'dead', finished_at = errand_now_ms(), lease_until = NULL, death_pending = true,
                 unique_key = errand_key_after(unique_strategy, 'dead', unique_key),
                 errors = (CASE WHEN jsonb_array_length(errors) >= $6 THEN errors - $7::int ELSE errors END)
                     || jsonb_build_array(jsonb_build_object(
                     'attempt', attempt, 'kind', 'unknown_kind', 'message', $4 || kind || $5,
                     'at', errand_now_ms(), 'duration_ms', 0, 'worker', $8::text))
             WHERE state = 'available' AND run_at <= errand_now_ms() - $1
               AND queue = ANY($2) AND kind <> ALL($3)",
        )
        .bind(duration_millis(grace))
        .bind(queues)
        .bind(kinds)
        .bind(UNKNOWN_KIND_BEFORE)
        .bind(UNKNOWN_KIND_AFTER)
        .bind(MAX_ERRORS as i32)
        .bind(KEEP_FIRST_ERRORS as i32)
        .bind(worker)
        .execute(&self.pool)
        .await
        .map_err(|e| op_error("bury jobs of kinds no worker knows", e))?;
        Ok(buried.rows_affected())
    }

    async fn finish(&self, id: JobId, fence: i64, finish: &Finish) -> Result<bool, Error> {
        let error = finish
            .error
            .as_ref()
            .map(|e| serde_json::to_string(&StoredAttempt::from(e)))
            .transpose();
        let error = error.map_err(|e| Error::Corrupt {
            store: STORE,
            id,
            reason: format!("cannot encode an attempt error: {e}"),
        })?;
        let result = sqlx::query(
            "UPDATE errand_jobs
             SET state = $3,
                 run_at = COALESCE(errand_now_ms() + $4::bigint, run_at),
                 attempt = attempt - $5,
                 finished_at = CASE WHEN $6 THEN errand_now_ms() END,
                 lease_until = NULL,
                 running_key = NULL,
                 -- A retried or snoozed `until_executing` job takes its key back if it is free.
                 unique_key = CASE
                     WHEN NOT $6 AND unique_strategy = 'until_executing' AND NOT EXISTS (
                         SELECT 1 FROM errand_jobs held
                         WHERE held.kind = errand_jobs.kind AND held.unique_key = errand_jobs.idempotency_key)
                     THEN idempotency_key
                     ELSE errand_key_after(unique_strategy, $3, unique_key) END,
                 cancel_requested = false,
                 death_pending = $3 = 'dead',
                 errors = CASE WHEN $7::jsonb IS NULL THEN errors
                     ELSE (CASE WHEN jsonb_array_length(errors) >= $8 THEN errors - $9::int ELSE errors END)
                          || jsonb_build_array(jsonb_set($7::jsonb, '{at}', to_jsonb(errand_now_ms()))) END
             WHERE id = $1 AND fence = $2 AND state = 'running'",
        )
        .bind(id.get())
        .bind(fence)
        .bind(finish.state.as_str())
        .bind(finish.run_after.map(duration_millis))
        .bind(i32::from(finish.refund_attempt))
        .bind(finish.state.is_final())
        .bind(error)
        .bind(MAX_ERRORS as i32)
        .bind(KEEP_FIRST_ERRORS as i32)
        .execute(&self.pool)
        .await
        .map_err(|e| op_error(format!("mark job {id} {}", finish.state), e))?;
        Ok(result.rows_affected() == 1)
    }

    async fn renew(
        &self,
        worker: &str,
        runs: &[RunId],
        lease: Duration,
    ) -> Result<Vec<(RunId, bool)>, Error> {
        let ids: Vec<i64> = runs.iter().map(|r| r.id.get()).collect();
        let fences: Vec<i64> = runs.iter().map(|r| r.fence).collect();
        // SKIP LOCKED: a job row locked by a `complete_in` transaction is not waited for; its run
        // is renewed by the next renewal, after the transaction ended.
        let renewed: Vec<(i64, i64, bool)> = sqlx::query_as(
            "UPDATE errand_jobs j SET lease_until = errand_now_ms() + $1
             FROM (SELECT e.id FROM errand_jobs e
                   WHERE e.id = ANY($3) AND e.state = 'running' AND e.worker = $2
                     AND (e.id, e.fence) IN (SELECT * FROM unnest($3::bigint[], $4::bigint[]))
                   FOR UPDATE OF e SKIP LOCKED) live
             WHERE j.id = live.id
             RETURNING j.id, j.fence, j.cancel_requested",
        )
        .bind(duration_millis(lease))
        .bind(worker)
        .bind(&ids)
        .bind(&fences)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| op_error(format!("renew the leases of {} jobs", runs.len()), e))?;
        Ok(renewed
            .into_iter()
            .map(|(id, fence, cancel)| {
                let run = RunId {
                    id: JobId::new(id),
                    fence,
                };
                (run, cancel)
            })
            .collect())
    }

    async fn release(&self, worker: &str, jobs: &[JobId]) -> Result<(), Error> {
        sqlx::query(
            "UPDATE errand_jobs
             SET state = 'available', attempt = attempt - 1, lease_until = NULL, worker = NULL,
                 running_key = NULL
             WHERE state = 'running' AND worker = $1 AND id = ANY($2)",
        )
        .bind(worker)
        .bind(ids(jobs))
        .execute(&self.pool)
        .await
        .map_err(|e| op_error(format!("put back {} unfinished jobs", jobs.len()), e))?;
        Ok(())
    }

    async fn rescue(&self) -> Result<u64, Error> {
        let result = sqlx::query(
            "UPDATE errand_jobs
             SET state = CASE WHEN attempt >= max_attempts THEN 'dead' ELSE 'retryable' END,
                 finished_at = CASE WHEN attempt >= max_attempts THEN errand_now_ms() END,
                 run_at = errand_now_ms(),
                 lease_until = NULL,
                 running_key = NULL,
                 unique_key = errand_key_after(unique_strategy,
                     CASE WHEN attempt >= max_attempts THEN 'dead' ELSE 'retryable' END, unique_key),
                 death_pending = attempt >= max_attempts,
                 cancel_requested = false,
                 errors = (CASE WHEN jsonb_array_length(errors) >= $3 THEN errors - $4::int ELSE errors END)
                     || jsonb_build_array(jsonb_build_object(
                     'attempt', attempt, 'kind', 'lease_lost',
                     'message', $1 || COALESCE(worker, '?') || $2,
                     'at', errand_now_ms(), 'duration_ms', errand_now_ms() - COALESCE(attempted_at, errand_now_ms()),
                     'worker', COALESCE(worker, '?')))
             WHERE id IN (
                 -- SKIP LOCKED: a job whose row a `complete_in` transaction holds is left alone;
                 -- it is about to complete, or its worker still renews it.
                 SELECT id FROM errand_jobs WHERE state = 'running' AND lease_until < errand_now_ms()
                 FOR UPDATE SKIP LOCKED)",
        )
        .bind(LEASE_LOST_BEFORE)
        .bind(LEASE_LOST_AFTER)
        .bind(MAX_ERRORS as i32)
        .bind(KEEP_FIRST_ERRORS as i32)
        .execute(&self.pool)
        .await
        .map_err(|e| op_error("rescue jobs whose lease ran out", e))?;
        Ok(result.rows_affected())
    }

    async fn job(&self, id: JobId) -> Result<Option<JobInfo>, Error> {
        let row = sqlx::query(&format!("{SELECT_JOB} WHERE id = $1"))
            .bind(id.get())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| op_error(format!("read job {id}"), e))?;
        row.map(|row| job_info(&row)).transpose()
    }

    async fn complete_many(&self, runs: &[(JobId, i64)]) -> Result<Vec<JobId>, Error> {
        let ids: Vec<i64> = runs.iter().map(|(id, _)| id.get()).collect();
        let fences: Vec<i64> = runs.iter().map(|(_, fence)| *fence).collect();
        let done: Vec<i64> = sqlx::query_scalar(
            "UPDATE errand_jobs j
             SET state = 'completed', finished_at = errand_now_ms(), lease_until = NULL, running_key = NULL,
                 unique_key = errand_key_after(j.unique_strategy, 'completed', j.unique_key)
             FROM unnest($1::bigint[], $2::bigint[]) AS d(id, fence)
             WHERE j.id = d.id AND j.fence = d.fence AND j.state = 'running'
             RETURNING j.id",
        )
        .bind(&ids)
        .bind(&fences)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| op_error(format!("mark {} jobs completed", runs.len()), e))?;
        Ok(done.into_iter().map(JobId::new).collect())
    }

    async fn take_running_key(
        &self,
        id: JobId,
        fence: i64,
        hold: Option<Duration>,
    ) -> Result<bool, Error> {
        if let Some(hold) = hold {
            // `unique_for` caps the hold: a run that has held the key that long gives it up.
            sqlx::query(
                "UPDATE errand_jobs SET running_key = NULL
                 WHERE running_key IS NOT NULL AND attempted_at <= errand_now_ms() - $2
                   AND (kind, running_key) = (SELECT kind, idempotency_key FROM errand_jobs WHERE id = $1)
                   AND id <> $1",
            )
            .bind(id.get())
            .bind(duration_millis(hold))

            .execute(&self.pool)
            .await
            .map_err(|e| op_error(format!("release an expired running key for job {id}"), e))?;
        }
        let taken = sqlx::query(
            "UPDATE errand_jobs SET running_key = idempotency_key
             WHERE id = $1 AND fence = $2 AND state = 'running'",
        )
        .bind(id.get())
        .bind(fence)
        .execute(&self.pool)
        .await;
        match taken {
            Ok(done) => Ok(done.rows_affected() == 1),
            // The unique index refused: another running job of this kind holds the key.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
            Err(e) => Err(op_error(format!("take the running key of job {id}"), e)),
        }
    }

    async fn step_result(&self, scope: &str, name: &str) -> Result<Option<String>, Error> {
        sqlx::query_scalar("SELECT result FROM errand_steps WHERE scope = $1 AND name = $2")
            .bind(scope)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| op_error(format!("read step `{name}` of `{scope}`"), e))
    }

    async fn record_step(
        &self,
        owner: &StepOwner<'_>,
        name: &str,
        result: &str,
    ) -> Result<(), Error> {
        let scope = owner.scope;
        sqlx::query(
            "INSERT INTO errand_steps (scope, name, result, created_at, kind, job_key, job_id)
             VALUES ($1, $2, $3, errand_now_ms(), $4, $5, $6)
             ON CONFLICT DO NOTHING",
        )
        .bind(scope)
        .bind(name)
        .bind(result)
        .bind(owner.kind)
        .bind(owner.key)
        .bind(owner.job.get())
        .execute(&self.pool)
        .await
        .map_err(|e| op_error(format!("record step `{name}` of `{scope}`"), e))?;
        Ok(())
    }

    async fn cancel(&self, id: JobId, error: &AttemptError) -> Result<Cancellation, Error> {
        let op = |e| op_error(format!("cancel job {id}"), e);
        let error =
            serde_json::to_string(&StoredAttempt::from(error)).map_err(|e| Error::Corrupt {
                store: STORE,
                id,
                reason: format!("cannot encode an attempt error: {e}"),
            })?;
        let cancelled = sqlx::query(
            "UPDATE errand_jobs
             SET state = 'cancelled', finished_at = errand_now_ms(), lease_until = NULL,
                 unique_key = errand_key_after(unique_strategy, 'cancelled', unique_key),
                 errors = errors || jsonb_build_array(jsonb_set(jsonb_set($2::jsonb, '{attempt}', to_jsonb(attempt)), '{at}', to_jsonb(errand_now_ms())))
             WHERE id = $1 AND state IN ('scheduled', 'available', 'retryable', 'pending')",
        )
        .bind(id.get())
        .bind(&error)
        .execute(&self.pool)
        .await
        .map_err(op)?;
        if cancelled.rows_affected() == 1 {
            return Ok(Cancellation::Cancelled);
        }
        let requested = sqlx::query(
            "UPDATE errand_jobs SET cancel_requested = true WHERE id = $1 AND state = 'running'",
        )
        .bind(id.get())
        .execute(&self.pool)
        .await
        .map_err(op)?;
        if requested.rows_affected() == 1 {
            return Ok(Cancellation::Requested);
        }
        Ok(match self.job(id).await? {
            Some(job) => Cancellation::AlreadyFinished(job.state),
            None => Cancellation::NotFound,
        })
    }

    async fn claim_deaths(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<(JobInfo, u32)>, Error> {
        let taken: Vec<(i64, i32)> = sqlx::query_as(
            "UPDATE errand_jobs SET death_until = errand_now_ms() + $2, death_deliveries = death_deliveries + 1
             WHERE id IN (SELECT id FROM errand_jobs
                          WHERE death_pending AND (death_until IS NULL OR death_until < errand_now_ms())
                          ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
             RETURNING id, death_deliveries",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(duration_millis(lease))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| op_error("claim deaths for their handlers", e))?;
        let mut deaths = Vec::with_capacity(taken.len());
        for (id, deliveries) in taken {
            if let Some(job) = self.job(JobId::new(id)).await? {
                deaths.push((job, u32::try_from(deliveries).unwrap_or(u32::MAX)));
            }
        }
        Ok(deaths)
    }

    async fn death_delivered(&self, id: JobId) -> Result<(), Error> {
        sqlx::query(
            "UPDATE errand_jobs SET death_pending = false, death_until = NULL WHERE id = $1",
        )
        .bind(id.get())
        .execute(&self.pool)
        .await
        .map_err(|e| op_error(format!("mark the death of job {id} delivered"), e))?;
        Ok(())
    }

    async fn dead_jobs(
        &self,
        filter: &DeadQuery,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<JobInfo>, Error> {
        let rows = bind_dead(
            filter,
            sqlx::query(&format!(
                "{SELECT_JOB} WHERE {DEAD_FILTER} AND id > $6 ORDER BY id LIMIT $7"
            )),
        )
        .bind(after.map_or(0, JobId::get))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| op_error("list dead jobs", e))?;
        rows.iter().map(job_info).collect()
    }

    async fn retry_dead(&self, filter: &DeadQuery) -> Result<u64, Error> {
        // A job unique until executed takes its key back, and is retried only while no other
        // job holds that key: otherwise it would run beside its duplicate.
        let retried = bind_dead(
            filter,
            sqlx::query(&format!(
                "UPDATE errand_jobs
             SET state = 'available', attempt = 0, run_at = errand_now_ms(), finished_at = NULL,
                 lease_until = NULL, death_pending = false, death_until = NULL, death_deliveries = 0,
                 cancel_requested = false,
                 unique_key = CASE WHEN unique_strategy IN ('until_executing', 'until_executed')
                                   THEN idempotency_key ELSE unique_key END
             WHERE {DEAD_FILTER}{RETRY_KEY_FREE}"
            )),
        )
        .execute(&self.pool)
        .await
        .map_err(|e| op_error("retry dead jobs", e))?;
        Ok(retried.rows_affected())
    }

    async fn delete_dead(&self, filter: &DeadQuery) -> Result<u64, Error> {
        let deleted = bind_dead(
            filter,
            sqlx::query(&format!("DELETE FROM errand_jobs WHERE {DEAD_FILTER}")),
        )
        .execute(&self.pool)
        .await
        .map_err(|e| op_error("delete dead jobs", e))?;
        Ok(deleted.rows_affected())
    }

    async fn try_lock(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, Error> {
        let held: Option<String> = sqlx::query_scalar(
            "INSERT INTO errand_locks (name, holder, until) VALUES ($1, $2, errand_now_ms() + $3)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
             WHERE errand_locks.until < errand_now_ms() OR errand_locks.holder = excluded.holder
             RETURNING holder",
        )
        .bind(name)
        .bind(holder)
        .bind(duration_millis(ttl))
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| op_error(format!("take the lock `{name}`"), e))?;
        Ok(held.is_some())
    }

    async fn prune(&self, retention: &Retention, batch: usize) -> Result<u64, Error> {
        // One statement per kind of row, each a range of one index, so that a backlog of
        // millions costs each batch an index scan, not a table scan (the single statement this
        // replaced, `id IN (..) OR id IN (..)`, could use no index). With 1,000,000 jobs and
        // 200,000 ledger records of which 1% are due, `EXPLAIN` shows: a `Bitmap Index Scan on
        // errand_jobs_finished` under the `LIMIT` of the first two; an `Index Only Scan
        // Backward using errand_jobs_finished` for the surplus of dead jobs; and for the
        // ledger, an `Index Scan using errand_steps_created` whose two `NOT EXISTS` are index
        // look-ups (`errand_jobs_key`, `errand_jobs_pkey`), deleted by a `Tid Scan`. Where most
        // rows are due, the planner rightly prefers a sequential scan that stops at the limit.
        let batch = i64::try_from(batch).unwrap_or(i64::MAX);
        let statements: [(&str, i64, &str); 4] = [
            (
                "DELETE FROM errand_jobs WHERE id IN (
                     SELECT id FROM errand_jobs
                     WHERE state IN ('completed', 'cancelled') AND finished_at < errand_now_ms() - $1
                     LIMIT $2)",
                duration_millis(retention.finished_for),
                "prune finished jobs",
            ),
            (
                "DELETE FROM errand_jobs WHERE id IN (
                     SELECT id FROM errand_jobs
                     WHERE state = 'dead' AND finished_at < errand_now_ms() - $1
                     LIMIT $2)",
                duration_millis(retention.dead_for),
                "prune old dead jobs",
            ),
            (
                "DELETE FROM errand_jobs WHERE id IN (
                     SELECT id FROM errand_jobs WHERE state = 'dead'
                     ORDER BY finished_at DESC, id DESC OFFSET $1 LIMIT $2)
                 -- A death its handlers have not had an hour to take is kept until then
                 -- (DEATH_DELIVERY_WINDOW).
                 AND NOT (death_pending AND finished_at > errand_now_ms() - 3600000)",
                i64::try_from(retention.max_dead).unwrap_or(i64::MAX),
                "prune surplus dead jobs",
            ),
            (
                "DELETE FROM errand_steps WHERE ctid = ANY (ARRAY(
                 SELECT ctid FROM errand_steps s
                 WHERE s.created_at < errand_now_ms() - $1
                   AND NOT EXISTS (SELECT 1 FROM errand_jobs j
                                   WHERE j.kind = s.kind AND j.idempotency_key = s.job_key
                                     AND j.state NOT IN ('completed', 'cancelled', 'dead'))
                   AND NOT EXISTS (SELECT 1 FROM errand_jobs j
                                   WHERE s.job_key IS NULL AND j.id = s.job_id
                                     AND j.state NOT IN ('completed', 'cancelled', 'dead'))
                 LIMIT $2))",
                duration_millis(retention.steps_for),
                "prune the effect ledger",
            ),
        ];
        let mut deleted = 0;
        for (sql, bound, op) in statements {
            let done = sqlx::query(sql)
                .bind(bound)
                .bind(batch)
                .execute(&self.pool)
                .await
                .map_err(|e| op_error(op, e))?;
            deleted += done.rows_affected();
        }
        Ok(deleted)
    }

    async fn enqueue_many(&self, jobs: &[NewJob]) -> Result<Vec<JobId>, Error> {
        let kinds: Vec<&str> = jobs.iter().map(|j| j.kind).collect();
        let queues: Vec<&str> = jobs.iter().map(|j| j.queue.as_str()).collect();
        let args: Vec<&str> = jobs.iter().map(|j| j.args.as_str()).collect();
        let priorities: Vec<i16> = jobs.iter().map(|j| i16::from(j.priority)).collect();
        let max_attempts: Vec<i32> = jobs
            .iter()
            .map(|j| i32::try_from(j.max_attempts).unwrap_or(i32::MAX))
            .collect();
        let keys: Vec<Option<&str>> = jobs.iter().map(|j| j.key.as_deref()).collect();
        let (delays, ats): (Vec<Option<i64>>, Vec<Option<i64>>) =
            jobs.iter().map(|j| j.run_at.delay_or_at_ms()).unzip();
        // One statement, one array per column.
        let mut ids: Vec<i64> = sqlx::query_scalar(
            "INSERT INTO errand_jobs (kind, queue, args, state, priority, max_attempts, idempotency_key, run_at, created_at)
             SELECT kind, queue, args::jsonb,
                    CASE WHEN COALESCE(at, errand_now_ms() + delay) > errand_now_ms() THEN 'scheduled' ELSE 'available' END,
                    priority, max_attempts, key, COALESCE(at, errand_now_ms() + delay), errand_now_ms()
             FROM unnest($1::text[], $2::text[], $3::text[], $4::smallint[], $5::int[], $6::text[], $7::bigint[], $8::bigint[])
                  AS t(kind, queue, args, priority, max_attempts, key, delay, at)
             RETURNING id",
        )
        .bind(&kinds)
        .bind(&queues)
        .bind(&args)
        .bind(&priorities)
        .bind(&max_attempts)
        .bind(&keys)
        .bind(&delays)
        .bind(&ats)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| op_error(format!("enqueue {} jobs", jobs.len()), e))?;
        // Ids rise in insertion order.
        ids.sort_unstable();
        Ok(ids.into_iter().map(JobId::new).collect())
    }

    async fn jobs(&self, kind: Option<&str>) -> Result<Vec<JobInfo>, Error> {
        let rows = sqlx::query(&format!(
            "{SELECT_JOB} WHERE $1::text IS NULL OR kind = $1 ORDER BY id"
        ))
        .bind(kind)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| op_error("list jobs", e))?;
        rows.iter().map(job_info).collect()
    }
}

/// Claims, for each queue `$1[i]`, up to `$2[i]` available jobs of the kinds `$5`, most urgent
/// first, for worker `$4` with a lease of `$3` ms. It reads only the `errand_jobs_available`
/// index: jobs waiting for their time are not in it (see [`PROMOTE`]).
pub(crate) const CLAIM: &str = "WITH picked AS (
         SELECT j.id
         FROM unnest($1::text[], $2::int[]) AS w(queue, n)
         CROSS JOIN LATERAL (
             SELECT id FROM errand_jobs
             WHERE queue = w.queue AND state = 'available' AND kind = ANY($5)
             ORDER BY priority, run_at, id
             LIMIT w.n
             FOR UPDATE SKIP LOCKED
         ) j
     )
     UPDATE errand_jobs
     SET state = 'running', attempt = attempt + 1, fence = fence + 1,
         attempted_at = errand_now_ms(), lease_until = errand_now_ms() + $3, worker = $4,
         unique_key = errand_key_after(unique_strategy, 'running', unique_key)
     WHERE id IN (SELECT id FROM picked)
     RETURNING id, kind, queue, args::text AS args, attempt, max_attempts, idempotency_key, fence,
               priority, run_at";

/// Makes up to `$1` due `scheduled` and `retryable` jobs `available`, walking only due rows of
/// the `errand_jobs_due` index.
const PROMOTE: &str = "UPDATE errand_jobs SET state = 'available'
     WHERE id IN (SELECT id FROM errand_jobs
                  WHERE state IN ('scheduled', 'retryable') AND run_at <= errand_now_ms()
                  ORDER BY run_at LIMIT $1 FOR UPDATE SKIP LOCKED)";

/// The dead jobs a [`DeadQuery`] picks, binding `$1` id, `$2` kind, `$3` queue, `$4` died at or
/// after, `$5` died before: a condition whose value is NULL holds.
const DEAD_FILTER: &str =
    "state = 'dead' AND ($1::bigint IS NULL OR id = $1) AND ($2::text IS NULL OR kind = $2)
    AND ($3::text IS NULL OR queue = $3) AND ($4::bigint IS NULL OR finished_at >= $4)
    AND ($5::bigint IS NULL OR finished_at < $5)";

/// The condition a dead unique job's retry adds: its key is free, and it is the oldest dead
/// job of its key in a bulk retry.
const RETRY_KEY_FREE: &str = "
             AND NOT (COALESCE(unique_strategy, '') IN ('until_executing', 'until_executed') AND (
                 EXISTS (SELECT 1 FROM errand_jobs held
                         WHERE held.kind = errand_jobs.kind AND held.unique_key = errand_jobs.idempotency_key)
                 -- Of several dead jobs with one key, a bulk retry takes the oldest.
                 OR ($1::bigint IS NULL AND EXISTS (
                     SELECT 1 FROM errand_jobs twin
                     WHERE twin.kind = errand_jobs.kind AND twin.idempotency_key = errand_jobs.idempotency_key
                       AND twin.state = 'dead' AND twin.id < errand_jobs.id))))";

/// Binds a [`DeadQuery`] to the five parameters [`DEAD_FILTER`] names.
fn bind_dead<'q>(filter: &'q DeadQuery, query: PgQuery<'q>) -> PgQuery<'q> {
    query
        .bind(filter.id.map(JobId::get))
        .bind(filter.kind.as_deref())
        .bind(filter.queue.as_deref())
        .bind(filter.after_ms)
        .bind(filter.before_ms)
}

/// The columns `job_from_row` reads, as 64-bit integers and text.
const SELECT_JOB: &str = "SELECT id, kind, queue, args::text AS args, state, priority::bigint AS priority,
    attempt::bigint AS attempt, max_attempts::bigint AS max_attempts, idempotency_key, run_at, created_at,
    attempted_at, finished_at, errors::text AS errors FROM errand_jobs";

fn job_info(row: &PgRow) -> Result<JobInfo, Error> {
    job_from_row(row, STORE)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With 1,000,000 retries backing off (an outage's worth) and a few available jobs, a claim
    /// asking for more than there is reads the available ones through their index and walks
    /// none of the waiting ones. (Before the claim index held only `available` jobs, the same
    /// claim filtered out all 1,000,000 on every poll.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_claim_walks_no_waiting_jobs() {
        let url = std::env::var("ERRAND_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let schema = format!("errand_plan_{}", std::process::id());
        let store = match PostgresStore::connect(&url, &schema, 2, true).await {
            Ok(store) => store,
            Err(err) if std::env::var_os("CI").is_none() => {
                eprintln!("SKIPPED (PostgreSQL): {err}");
                return;
            }
            Err(err) => panic!("PostgreSQL is required when CI is set: {err}"),
        };
        let fill = "INSERT INTO errand_jobs (kind, queue, args, state, priority, max_attempts, run_at, created_at)
                    SELECT 'k', 'q', '{}', $1, 5, 25, errand_now_ms() + $2, 0 FROM generate_series(1, $3)";
        for (state, offset, count) in [
            ("retryable", 3_600_000i64, 1_000_000i64),
            ("available", -1000, 10),
        ] {
            sqlx::query(fill)
                .bind(state)
                .bind(offset)
                .bind(count)
                .execute(&store.pool)
                .await
                .expect("fill the table");
        }
        sqlx::query("ANALYZE errand_jobs")
            .execute(&store.pool)
            .await
            .expect("analyze");
        let plan: Vec<String> =
            sqlx::query_scalar(&format!("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {CLAIM}"))
                .bind(vec!["q"])
                .bind(vec![100i32])
                .bind(30_000i64)
                .bind("plan-test")
                .bind(vec!["k"])
                .fetch_all(&store.pool)
                .await
                .expect("explain the claim");
        let plan = plan.join("\n");
        let removed: u64 = plan
            .lines()
            .filter_map(|line| line.trim().strip_prefix("Rows Removed by Filter: "))
            .filter_map(|n| n.trim().parse::<u64>().ok())
            .sum();
        // The whole statement's pages, from the top node's `Buffers: shared hit=.. read=..`
        // (the claim that walked every waiting job touched about 5,000).
        let pages: u64 = plan
            .lines()
            .find_map(|line| line.trim().strip_prefix("Buffers: shared "))
            .map(|counts| {
                counts
                    .split_whitespace()
                    .filter_map(|c| c.split_once('='))
                    .filter(|(name, _)| matches!(*name, "hit" | "read"))
                    .filter_map(|(_, n)| n.parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(u64::MAX);
        let drop =
            sqlx::query_scalar::<_, String>("SELECT format('DROP SCHEMA %I CASCADE', $1::text)")
                .bind(&schema)
                .fetch_one(&store.pool)
                .await
                .expect("build DROP SCHEMA");
        sqlx::raw_sql(&drop)
            .execute(&store.pool)
            .await
            .expect("drop the test schema");
        assert!(plan.contains("errand_jobs_available"), "{plan}");
        assert!(!plan.contains("Seq Scan"), "{plan}");
        assert!(removed < 1000, "the claim walked {removed} rows:\n{plan}");
        assert!(pages < 500, "the claim read {pages} pages:\n{plan}");
        assert!(
            plan.contains("rows=10 "),
            "claimed the 10 available jobs:\n{plan}"
        );
    }
}
