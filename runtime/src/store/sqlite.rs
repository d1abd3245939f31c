//! The SQLite store: errand with no server at all.
//!
//! The database runs in WAL mode with a busy timeout, so several workers (in one process or
//! several) can share one file. Every state change is one statement, and SQLite runs one write
//! at a time, so a claim (`UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING ...`) can never
//! hand one job to two workers.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqliteConnection, SqlitePool};

use crate::dead::{Cancellation, Retention};
use crate::error::{redact, Error};
use crate::info::{duration_millis, to_millis, AttemptError, JobInfo, StoredAttempt};
use crate::job::OnConflict;
use crate::job::{JobId, JobState};
use crate::store::{
    job_from_row, BoxFuture, Claimed, DeadQuery, Finish, Inserted, NewJob, RunId, StepOwner, Store,
    DEATH_DELIVERY_WINDOW, KEEP_FIRST_ERRORS, LEASE_LOST_AFTER, LEASE_LOST_BEFORE, MAX_ERRORS,
    UNKNOWN_KIND_AFTER, UNKNOWN_KIND_BEFORE,
};

const STORE: &str = "sqlite";

/// The one rule of unique keys, as PostgreSQL's `errand_key_after` (migration 0007) has it:
/// the key a job holds once it moves to the state `$state` (SQL text), given its `unique_key`.
/// A finished job keeps its key only under `until_expired`; a running `until_executing` job
/// gives it up; every other move keeps it.
macro_rules! key_after {
    ($state:literal) => {
        concat!(
            "CASE WHEN ",
            $state,
            " IN ('completed', 'cancelled', 'dead') THEN ",
            "CASE WHEN unique_strategy = 'until_expired' THEN unique_key END ",
            "WHEN ",
            $state,
            " = 'running' THEN ",
            "CASE WHEN unique_strategy = 'until_executing' THEN NULL ELSE unique_key END ",
            "ELSE unique_key END"
        )
    };
}

/// How long a statement waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub(crate) struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    pub(crate) fn connect(url: &str, migrate: bool) -> BoxFuture<'_, Result<SqliteStore, Error>> {
        Box::pin(async move {
            let invalid = |reason: String| Error::InvalidUrl {
                url: redact(url),
                reason,
            };
            let mut options =
                SqliteConnectOptions::from_str(url).map_err(|e| invalid(e.to_string()))?;
            // `sqlite://jobs.db` should create the file, as users expect; an explicit `mode=` wins.
            if !url.contains("mode=") {
                options = options.create_if_missing(true);
            }
            let options = options
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(BUSY_TIMEOUT)
                .foreign_keys(true);
            let in_memory = url.contains(":memory:") || url.contains("mode=memory");
            let pool = if in_memory {
                // Each connection to `:memory:` would be its own empty database: keep exactly one,
                // forever.
                SqlitePoolOptions::new()
                    .min_connections(1)
                    .max_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
            } else {
                SqlitePoolOptions::new().max_connections(4)
            }
            .connect_with(options)
            .await
            .map_err(|source| Error::Connect {
                store: STORE,
                url: redact(url),
                source,
            })?;
            let store = SqliteStore { pool };
            if migrate {
                store.migrate().await?;
            } else {
                store.check_version().await?;
            }
            Ok(store)
        })
    }

    /// Fails unless the database has every migration this errand knows.
    async fn check_version(&self) -> Result<(), Error> {
        let needed = crate::migrations::latest(crate::migrations::SQLITE);
        let table: Option<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'errand_migrations'",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| op_error("read the schema's version", e))?;
        let found = match table {
            None => 0,
            Some(_) => sqlx::query_scalar::<_, i64>(
                "SELECT COALESCE(MAX(version), 0) FROM errand_migrations",
            )
            .fetch_one(&self.pool)
            .await
            .map_err(|e| op_error("read the schema's version", e))?,
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

    /// Applies the migrations this database lacks, under SQLite's write lock so that processes
    /// starting together apply each one once.
    pub(crate) fn migrate(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let mut conn = self
                .pool
                .acquire()
                .await
                .map_err(|e| op_error("open a connection to migrate", e))?;
            let migrate_error = |version| {
                move |source| Error::Migrate {
                    store: STORE,
                    version,
                    source,
                }
            };
            raw(&mut conn, "BEGIN IMMEDIATE")
                .await
                .map_err(migrate_error(0))?;
            let result = apply_migrations(&mut conn).await;
            let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
            let ended = raw(&mut conn, end).await;
            result?;
            ended.map_err(migrate_error(0))?;
            Ok(())
        })
    }
}

/// The migrations, inside the migrating transaction. Each statement goes through a boxed
/// helper ([`raw`], [`run`], [`row`]) so that this future stays provably `Send`.
fn apply_migrations(conn: &mut SqliteConnection) -> BoxFuture<'_, Result<(), Error>> {
    Box::pin(async move {
        let migrate_error = |version| {
            move |source| Error::Migrate {
                store: STORE,
                version,
                source,
            }
        };
        raw(conn, crate::migrations::SQLITE_BOOKKEEPING)
            .await
            .map_err(migrate_error(0))?;
        let current = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM errand_migrations");
        let current: i64 = row(conn, current)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(migrate_error(0))?;
        for crate::migrations::Migration { version, sql, .. } in crate::migrations::SQLITE
            .iter()
            .filter(|m| m.version > current)
        {
            raw(conn, sql).await.map_err(migrate_error(*version))?;
            let record =
                sqlx::query("INSERT INTO errand_migrations (version, applied_at) VALUES (?1, ?2)")
                    .bind(version)
                    .bind(now_ms());
            run(conn, record).await.map_err(migrate_error(*version))?;
        }
        Ok(())
    })
}

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

fn run<'c>(
    conn: &'c mut SqliteConnection,
    query: SqliteQuery<'c>,
) -> BoxFuture<'c, Result<(), sqlx::Error>> {
    Box::pin(async move { query.execute(conn).await.map(|_| ()) })
}

fn maybe_row<'c>(
    conn: &'c mut SqliteConnection,
    query: SqliteQuery<'c>,
) -> BoxFuture<'c, Result<Option<SqliteRow>, sqlx::Error>> {
    Box::pin(query.fetch_optional(conn))
}

fn row<'c>(
    conn: &'c mut SqliteConnection,
    query: SqliteQuery<'c>,
) -> BoxFuture<'c, Result<SqliteRow, sqlx::Error>> {
    Box::pin(query.fetch_one(conn))
}

/// Runs `sql` (one or more statements) on `conn`. Boxed so that callers awaiting several
/// statements on one connection stay provably `Send` (see [`BoxFuture`]).
fn raw<'c>(conn: &'c mut SqliteConnection, sql: &'c str) -> BoxFuture<'c, Result<(), sqlx::Error>> {
    Box::pin(async move { sqlx::Executor::execute(conn, sql).await.map(|_| ()) })
}

fn now_ms() -> i64 {
    to_millis(SystemTime::now())
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
/// key at once, exactly one inserts.
pub(crate) fn insert<'a>(
    conn: &'a mut SqliteConnection,
    job: &'a NewJob,
) -> BoxFuture<'a, Result<Inserted, Error>> {
    Box::pin(async move {
        let op = |e| op_error(format!("enqueue a `{}` job", job.kind), e);
        let now = now_ms();
        let run_at = job.run_at.at_ms(now);
        let state = if run_at > now {
            JobState::Scheduled
        } else {
            JobState::Available
        };
        let unique_key = job.unique_key();
        // A holder can release the key between our insert and our look-up; then try again.
        for _ in 0..3 {
            if let Some(key) = unique_key {
                let expire = sqlx::query(
                    "UPDATE errand_jobs SET unique_key = NULL
                     WHERE kind = ?1 AND unique_key = ?2 AND unique_until IS NOT NULL AND unique_until <= ?3",
                )
                .bind(job.kind)
                .bind(key)
                .bind(now);
                run(conn, expire).await.map_err(op)?;
            }
            let insert = sqlx::query(
                "INSERT INTO errand_jobs (kind, queue, args, state, priority, max_attempts, idempotency_key,
                                          run_at, created_at, unique_key, unique_strategy, unique_until)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?9 + ?12)
                 ON CONFLICT DO NOTHING
                 RETURNING id",
            )
            .bind(job.kind)
            .bind(&job.queue)
            .bind(&job.args)
            .bind(state.as_str())
            .bind(i64::from(job.priority))
            .bind(i64::from(job.max_attempts))
            .bind(job.key.as_deref())
            .bind(run_at)
            .bind(now)
            .bind(unique_key)
            .bind(job.unique_strategy())
            .bind(job.unique_for_ms());
            if let Some(row) = maybe_row(conn, insert).await.map_err(op)? {
                return Ok(Inserted::New(JobId::new(row.try_get(0).map_err(op)?)));
            }
            let Some(key) = unique_key else { continue };
            let holder =
                sqlx::query("SELECT id FROM errand_jobs WHERE kind = ?1 AND unique_key = ?2")
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
                "UPDATE errand_jobs SET args = ?2, queue = ?3, priority = ?4, run_at = ?5, state = ?6
                 WHERE id = ?1 AND state IN ('scheduled', 'available', 'retryable')
                 RETURNING id",
            )
            .bind(holder.get())
            .bind(&job.args)
            .bind(&job.queue)
            .bind(i64::from(job.priority))
            .bind(run_at)
            .bind(state.as_str());
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
    conn: &mut SqliteConnection,
    id: JobId,
    fence: i64,
) -> BoxFuture<'_, Result<bool, Error>> {
    Box::pin(async move {
        let done = sqlx::query(concat!(
            "UPDATE errand_jobs
             SET state = 'completed', finished_at = ?3, lease_until = NULL, running_key = NULL,
                 unique_key = ",
            key_after!("'completed'"),
            "
             WHERE id = ?1 AND fence = ?2 AND state = 'running'"
        ))
        .bind(id.get())
        .bind(fence)
        .bind(now_ms())
        .execute(&mut *conn)
        .await
        .map_err(|e| op_error(format!("complete job {id} in a transaction"), e))?;
        Ok(done.rows_affected() == 1)
    })
}

/// A JSON array of strings, for `IN (SELECT value FROM json_each(?))`.
fn json_strings(values: &[&str]) -> String {
    // Serializing strings cannot fail.
    serde_json::to_string(values).unwrap_or_else(|_| "[]".to_owned())
}

/// A JSON array of `[id, fence]` pairs, for `(id, fence) IN (SELECT ... FROM json_each(?))`.
fn run_pairs(runs: &[RunId]) -> String {
    let pairs: Vec<(i64, i64)> = runs.iter().map(|r| (r.id.get(), r.fence)).collect();
    // Serializing pairs of integers cannot fail.
    serde_json::to_string(&pairs).unwrap_or_else(|_| "[]".to_owned())
}

/// A JSON array of ids, for `IN (SELECT value FROM json_each(?))`: one bound value, any length.
fn id_array(ids: &[JobId]) -> String {
    let ids: Vec<i64> = ids.iter().map(|id| id.get()).collect();
    // Serializing a Vec<i64> cannot fail.
    serde_json::to_string(&ids).unwrap_or_else(|_| "[]".to_owned())
}

impl SqliteStore {
    /// One queue's part of a claim: for SQL stores, one statement.
    async fn claim_queue(
        &self,
        queue: &str,
        limit: usize,
        kinds: &str,
        worker: &str,
        lease: Duration,
    ) -> Result<Vec<Claimed>, Error> {
        let now = now_ms();
        let rows = sqlx::query(
            concat!("UPDATE errand_jobs
             SET state = 'running', attempt = attempt + 1, fence = fence + 1,
                 attempted_at = ?1, lease_until = ?2, worker = ?3,
                 unique_key = ", key_after!("'running'"), "
             WHERE id IN (
                 SELECT id FROM errand_jobs
                 WHERE queue = ?4 AND state = 'available' AND kind IN (SELECT value FROM json_each(?6))
                 ORDER BY priority, run_at, id
                 LIMIT ?5)
             RETURNING id, kind, queue, args, attempt, max_attempts, idempotency_key, fence, priority, run_at"),
        )
        .bind(now)
        .bind(now.saturating_add(duration_millis(lease)))
        .bind(worker)
        .bind(queue)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(kinds)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| op_error(format!("claim jobs from queue `{queue}`"), e))?;
        let mut claimed = rows
            .iter()
            .map(|row| {
                let order = (
                    row.try_get::<i64, _>("priority")?,
                    row.try_get::<i64, _>("run_at")?,
                );
                let job = Claimed {
                    id: JobId::new(row.try_get("id")?),
                    kind: row.try_get("kind")?,
                    queue: row.try_get("queue")?,
                    args: row.try_get("args")?,
                    attempt: u32::try_from(row.try_get::<i64, _>("attempt")?).unwrap_or(u32::MAX),
                    max_attempts: u32::try_from(row.try_get::<i64, _>("max_attempts")?)
                        .unwrap_or(u32::MAX),
                    key: row.try_get("idempotency_key")?,
                    fence: row.try_get("fence")?,
                };
                Ok((order, job))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(|e| op_error(format!("read jobs claimed from queue `{queue}`"), e))?;
        // RETURNING gives rows in no particular order; start the most urgent first.
        claimed.sort_by_key(|(order, job)| (*order, job.id));
        Ok(claimed.into_iter().map(|(_, job)| job).collect())
    }
}

impl Store for SqliteStore {
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
        let kinds = json_strings(kinds);
        let mut claimed = Vec::new();
        for (queue, limit) in wanted {
            claimed.extend(
                self.claim_queue(queue, *limit, &kinds, worker, lease)
                    .await?,
            );
        }
        Ok(claimed)
    }

    async fn promote(&self, limit: usize) -> Result<u64, Error> {
        let promoted = sqlx::query(
            "UPDATE errand_jobs SET state = 'available'
             WHERE id IN (SELECT id FROM errand_jobs
                          WHERE state IN ('scheduled', 'retryable') AND run_at <= ?1
                          ORDER BY run_at LIMIT ?2)",
        )
        .bind(now_ms())
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
        let now = now_ms();
        let buried = sqlx::query(
            concat!("UPDATE errand_jobs
             SET state = 'dead', finished_at = ?1, lease_until = NULL, death_pending = 1,
                 unique_key = ", key_after!("'dead'"), ",
                 errors = json_insert(
                     CASE WHEN json_array_length(errors) >= ?7 THEN json_remove(errors, ?8) ELSE errors END,
                     '$[#]', json_object(
                     'attempt', attempt, 'kind', 'unknown_kind', 'message', ?5 || kind || ?6,
                     'at', ?1, 'duration_ms', 0, 'worker', ?9))
             WHERE state = 'available' AND run_at <= ?2
               AND queue IN (SELECT value FROM json_each(?3))
               AND kind NOT IN (SELECT value FROM json_each(?4))"),
        )
        .bind(now)
        .bind(now.saturating_sub(duration_millis(grace)))
        .bind(json_strings(queues))
        .bind(json_strings(kinds))
        .bind(UNKNOWN_KIND_BEFORE)
        .bind(UNKNOWN_KIND_AFTER)
        .bind(MAX_ERRORS as i64)
        .bind(format!("$[{KEEP_FIRST_ERRORS}]"))
        .bind(worker)
        .execute(&self.pool)
        .await
        .map_err(|e| op_error("bury jobs of kinds no worker knows", e))?;
        Ok(buried.rows_affected())
    }

    async fn finish(&self, id: JobId, fence: i64, finish: &Finish) -> Result<bool, Error> {
        let now = now_ms();
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
            concat!("UPDATE errand_jobs
             SET state = ?3,
                 run_at = COALESCE(?4, run_at),
                 attempt = attempt - ?5,
                 finished_at = ?6,
                 lease_until = NULL,
                 running_key = NULL,
                 -- A retried or snoozed `until_executing` job takes its key back if it is free.
                 unique_key = CASE
                     WHEN ?6 IS NULL AND unique_strategy = 'until_executing' AND NOT EXISTS (
                         SELECT 1 FROM errand_jobs held
                         WHERE held.kind = errand_jobs.kind AND held.unique_key = errand_jobs.idempotency_key)
                     THEN idempotency_key
                     ELSE ", key_after!("?3"), " END,
                 cancel_requested = 0,
                 death_pending = ?3 = 'dead',
                 errors = CASE WHEN ?7 IS NULL THEN errors ELSE json_insert(
                     CASE WHEN json_array_length(errors) >= ?8 THEN json_remove(errors, ?9) ELSE errors END,
                     '$[#]', json_set(json(?7), '$.at', ?10)) END
             WHERE id = ?1 AND fence = ?2 AND state = 'running'"),
        )
        .bind(id.get())
        .bind(fence)
        .bind(finish.state.as_str())
        .bind(finish.run_after.map(|d| now.saturating_add(duration_millis(d))))
        .bind(i64::from(finish.refund_attempt))
        .bind(finish.state.is_final().then_some(now))
        .bind(error)
        .bind(MAX_ERRORS as i64)
        .bind(format!("$[{KEEP_FIRST_ERRORS}]"))
        .bind(now)
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
        let renewed: Vec<(i64, i64, bool)> = sqlx::query_as(
            "UPDATE errand_jobs SET lease_until = ?1
             WHERE state = 'running' AND worker = ?2 AND (id, fence) IN (
                 SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?3))
             RETURNING id, fence, cancel_requested",
        )
        .bind(now_ms().saturating_add(duration_millis(lease)))
        .bind(worker)
        .bind(run_pairs(runs))
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

    async fn release(&self, worker: &str, ids: &[JobId]) -> Result<(), Error> {
        sqlx::query(
            "UPDATE errand_jobs
             SET state = 'available', attempt = attempt - 1, lease_until = NULL, worker = NULL,
                 running_key = NULL
             WHERE state = 'running' AND worker = ?1 AND id IN (SELECT value FROM json_each(?2))",
        )
        .bind(worker)
        .bind(id_array(ids))
        .execute(&self.pool)
        .await
        .map_err(|e| op_error(format!("put back {} unfinished jobs", ids.len()), e))?;
        Ok(())
    }

    async fn rescue(&self) -> Result<u64, Error> {
        let now = now_ms();
        let result = sqlx::query(
            concat!("UPDATE errand_jobs
             SET state = CASE WHEN attempt >= max_attempts THEN 'dead' ELSE 'retryable' END,
                 finished_at = CASE WHEN attempt >= max_attempts THEN ?1 END,
                 run_at = ?1,
                 lease_until = NULL,
                 running_key = NULL,
                 unique_key = ", key_after!("CASE WHEN attempt >= max_attempts THEN 'dead' ELSE 'retryable' END"), ",
                 death_pending = attempt >= max_attempts,
                 cancel_requested = 0,
                 errors = json_insert(
                     CASE WHEN json_array_length(errors) >= ?4 THEN json_remove(errors, ?5) ELSE errors END,
                     '$[#]', json_object(
                     'attempt', attempt, 'kind', 'lease_lost',
                     'message', ?2 || COALESCE(worker, '?') || ?3,
                     'at', ?1, 'duration_ms', ?1 - COALESCE(attempted_at, ?1),
                     'worker', COALESCE(worker, '?')))
             WHERE state = 'running' AND lease_until < ?1"),
        )
        .bind(now)
        .bind(LEASE_LOST_BEFORE)
        .bind(LEASE_LOST_AFTER)
        .bind(MAX_ERRORS as i64)
        .bind(format!("$[{KEEP_FIRST_ERRORS}]"))
        .execute(&self.pool)
        .await
        .map_err(|e| op_error("rescue jobs whose lease ran out", e))?;
        Ok(result.rows_affected())
    }

    async fn job(&self, id: JobId) -> Result<Option<JobInfo>, Error> {
        let row = sqlx::query(&format!("{SELECT_JOB} WHERE id = ?1"))
            .bind(id.get())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| op_error(format!("read job {id}"), e))?;
        row.map(|row| job_info(&row)).transpose()
    }

    async fn complete_many(&self, runs: &[(JobId, i64)]) -> Result<Vec<JobId>, Error> {
        let pairs: Vec<(i64, i64)> = runs.iter().map(|(id, fence)| (id.get(), *fence)).collect();
        // Serializing pairs of integers cannot fail.
        let pairs = serde_json::to_string(&pairs).unwrap_or_else(|_| "[]".to_owned());
        let done: Vec<i64> = sqlx::query_scalar(concat!(
            "UPDATE errand_jobs
             SET state = 'completed', finished_at = ?1, lease_until = NULL, running_key = NULL,
                 unique_key = ",
            key_after!("'completed'"),
            "
             WHERE state = 'running' AND (id, fence) IN (
                 SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?2))
             RETURNING id"
        ))
        .bind(now_ms())
        .bind(pairs)
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
                 WHERE running_key IS NOT NULL AND attempted_at <= ?3 - ?2
                   AND (kind, running_key) = (SELECT kind, idempotency_key FROM errand_jobs WHERE id = ?1)
                   AND id <> ?1",
            )
            .bind(id.get())
            .bind(duration_millis(hold))
            .bind(now_ms())
            .execute(&self.pool)
            .await
            .map_err(|e| op_error(format!("release an expired running key for job {id}"), e))?;
        }
        let taken = sqlx::query(
            "UPDATE errand_jobs SET running_key = idempotency_key
             WHERE id = ?1 AND fence = ?2 AND state = 'running'",
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
        sqlx::query_scalar("SELECT result FROM errand_steps WHERE scope = ?1 AND name = ?2")
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
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT DO NOTHING",
        )
        .bind(scope)
        .bind(name)
        .bind(result)
        .bind(now_ms())
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
            concat!("UPDATE errand_jobs
             SET state = 'cancelled', finished_at = ?2, lease_until = NULL,
                 unique_key = ", key_after!("'cancelled'"), ",
                 errors = json_insert(errors, '$[#]', json_set(json(?3), '$.attempt', attempt, '$.at', ?2))
             WHERE id = ?1 AND state IN ('scheduled', 'available', 'retryable', 'pending')"),
        )
        .bind(id.get())
        .bind(now_ms())
        .bind(&error)
        .execute(&self.pool)
        .await
        .map_err(op)?;
        if cancelled.rows_affected() == 1 {
            return Ok(Cancellation::Cancelled);
        }
        let requested = sqlx::query(
            "UPDATE errand_jobs SET cancel_requested = 1 WHERE id = ?1 AND state = 'running'",
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
        let now = now_ms();
        let taken: Vec<(i64, i64)> = sqlx::query_as(
            "UPDATE errand_jobs SET death_until = ?2, death_deliveries = death_deliveries + 1
             WHERE id IN (SELECT id FROM errand_jobs
                          WHERE death_pending = 1 AND (death_until IS NULL OR death_until < ?3)
                          ORDER BY id LIMIT ?1)
             RETURNING id, death_deliveries",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(now.saturating_add(duration_millis(lease)))
        .bind(now)
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
        sqlx::query("UPDATE errand_jobs SET death_pending = 0, death_until = NULL WHERE id = ?1")
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
                "{SELECT_JOB} WHERE {DEAD_FILTER} AND id > ?6 ORDER BY id LIMIT ?7"
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
        let retried = bind_dead(filter, sqlx::query(&format!(
            "UPDATE errand_jobs
             SET state = 'available', attempt = 0, run_at = ?6, finished_at = NULL, lease_until = NULL,
                 death_pending = 0, death_until = NULL, death_deliveries = 0, cancel_requested = 0,
                 unique_key = CASE WHEN unique_strategy IN ('until_executing', 'until_executed')
                                   THEN idempotency_key ELSE unique_key END
             WHERE {DEAD_FILTER}{RETRY_KEY_FREE}"
        )))
        .bind(now_ms())
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
        let now = now_ms();
        let held: Option<String> = sqlx::query_scalar(
            "INSERT INTO errand_locks (name, holder, until) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
             WHERE errand_locks.until < ?4 OR errand_locks.holder = excluded.holder
             RETURNING holder",
        )
        .bind(name)
        .bind(holder)
        .bind(now.saturating_add(duration_millis(ttl)))
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| op_error(format!("take the lock `{name}`"), e))?;
        Ok(held.is_some())
    }

    async fn prune(&self, retention: &Retention, batch: usize) -> Result<u64, Error> {
        // One statement per kind of row, each a range of one index (see the PostgreSQL store).
        let now = now_ms();
        let ago = |keep| now.saturating_sub(duration_millis(keep));
        let batch = i64::try_from(batch).unwrap_or(i64::MAX);
        let statements: [(&str, i64, &str); 4] = [
            (
                "DELETE FROM errand_jobs WHERE id IN (
                     SELECT id FROM errand_jobs
                     WHERE state IN ('completed', 'cancelled') AND finished_at < ?1 LIMIT ?2)",
                ago(retention.finished_for),
                "prune finished jobs",
            ),
            (
                "DELETE FROM errand_jobs WHERE id IN (
                     SELECT id FROM errand_jobs
                     WHERE state = 'dead' AND finished_at < ?1 LIMIT ?2)",
                ago(retention.dead_for),
                "prune old dead jobs",
            ),
            (
                "DELETE FROM errand_jobs WHERE id IN (
                     SELECT id FROM errand_jobs WHERE state = 'dead'
                     ORDER BY finished_at DESC, id DESC LIMIT ?2 OFFSET ?1)
                 -- A death its handlers have not had an hour to take is kept until then.
                 AND NOT (death_pending = 1 AND finished_at > ?3)",
                i64::try_from(retention.max_dead).unwrap_or(i64::MAX),
                "prune surplus dead jobs",
            ),
            (
                "DELETE FROM errand_steps WHERE (scope, name) IN (
                 SELECT scope, name FROM errand_steps s
                 WHERE s.created_at < ?1
                   AND NOT EXISTS (SELECT 1 FROM errand_jobs j
                                   WHERE j.kind = s.kind AND j.idempotency_key = s.job_key
                                     AND j.state NOT IN ('completed', 'cancelled', 'dead'))
                   AND NOT EXISTS (SELECT 1 FROM errand_jobs j
                                   WHERE s.job_key IS NULL AND j.id = s.job_id
                                     AND j.state NOT IN ('completed', 'cancelled', 'dead'))
                 LIMIT ?2)",
                ago(retention.steps_for),
                "prune the effect ledger",
            ),
        ];
        let delivery_window = ago(DEATH_DELIVERY_WINDOW);
        let mut deleted = 0;
        for (sql, bound, op) in statements {
            let done = sqlx::query(sql)
                .bind(bound)
                .bind(batch)
                .bind(delivery_window)
                .execute(&self.pool)
                .await
                .map_err(|e| op_error(op, e))?;
            deleted += done.rows_affected();
        }
        Ok(deleted)
    }

    async fn enqueue_many(&self, jobs: &[NewJob]) -> Result<Vec<JobId>, Error> {
        let now = now_ms();
        let rows: Vec<serde_json::Value> = jobs
            .iter()
            .map(|job| {
                let run_at = job.run_at.at_ms(now);
                let state = if run_at > now {
                    JobState::Scheduled
                } else {
                    JobState::Available
                };
                serde_json::json!([
                    job.kind,
                    job.queue,
                    job.args,
                    state.as_str(),
                    job.priority,
                    job.max_attempts,
                    job.key,
                    run_at
                ])
            })
            .collect();
        // One bound JSON array holds the whole batch: one statement, any number of rows.
        let mut ids: Vec<i64> = sqlx::query_scalar(
            "INSERT INTO errand_jobs (kind, queue, args, state, priority, max_attempts, idempotency_key, run_at, created_at)
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, value ->> 6,
                    value ->> 7, ?2
             FROM json_each(?1)
             RETURNING id",
        )
        .bind(serde_json::Value::Array(rows).to_string())
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| op_error(format!("enqueue {} jobs", jobs.len()), e))?;
        // Ids rise in insertion order.
        ids.sort_unstable();
        Ok(ids.into_iter().map(JobId::new).collect())
    }

    async fn jobs(&self, kind: Option<&str>) -> Result<Vec<JobInfo>, Error> {
        let rows = sqlx::query(&format!(
            "{SELECT_JOB} WHERE ?1 IS NULL OR kind = ?1 ORDER BY id"
        ))
        .bind(kind)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| op_error("list jobs", e))?;
        rows.iter().map(job_info).collect()
    }
}

/// The dead jobs a [`DeadQuery`] picks, binding `?1` id, `?2` kind, `?3` queue, `?4` died at or
/// after, `?5` died before: a condition whose value is NULL holds.
const DEAD_FILTER: &str = "state = 'dead' AND (?1 IS NULL OR id = ?1) AND (?2 IS NULL OR kind = ?2)
    AND (?3 IS NULL OR queue = ?3) AND (?4 IS NULL OR finished_at >= ?4) AND (?5 IS NULL OR finished_at < ?5)";

/// The condition a dead unique job's retry adds: its key is free, and it is the oldest dead
/// job of its key in a bulk retry.
const RETRY_KEY_FREE: &str = "
             AND NOT (COALESCE(unique_strategy, '') IN ('until_executing', 'until_executed') AND (
                 EXISTS (SELECT 1 FROM errand_jobs held
                         WHERE held.kind = errand_jobs.kind AND held.unique_key = errand_jobs.idempotency_key)
                 -- Of several dead jobs with one key, a bulk retry takes the oldest.
                 OR (?1 IS NULL AND EXISTS (
                     SELECT 1 FROM errand_jobs twin
                     WHERE twin.kind = errand_jobs.kind AND twin.idempotency_key = errand_jobs.idempotency_key
                       AND twin.state = 'dead' AND twin.id < errand_jobs.id))))";

/// Binds a [`DeadQuery`] to the five parameters [`DEAD_FILTER`] names.
fn bind_dead<'q>(filter: &'q DeadQuery, query: SqliteQuery<'q>) -> SqliteQuery<'q> {
    query
        .bind(filter.id.map(JobId::get))
        .bind(filter.kind.as_deref())
        .bind(filter.queue.as_deref())
        .bind(filter.after_ms)
        .bind(filter.before_ms)
}

const SELECT_JOB: &str =
    "SELECT id, kind, queue, args, state, priority, attempt, max_attempts, idempotency_key,
    run_at, created_at, attempted_at, finished_at, errors FROM errand_jobs";

fn job_info(row: &SqliteRow) -> Result<JobInfo, Error> {
    job_from_row(row, STORE)
}
