//! The SQLite store: errand with no server at all.
//!
//! The database runs in WAL mode with a busy timeout, so several workers (in one process or
//! several) can share one file. Every state change is one statement, and SQLite runs one write
//! at a time, so a claim (`UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING ...`) can never
//! hand one job to two workers.
//!
//! The database runs inside this process, so its clock is this process's: statements take the
//! time as a bound parameter ([`Value::Now`]) rather than each reading it.
//!
//! What happens when lives in [`sql`](super::sql); this module holds SQLite's statements and
//! how to connect.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::SqliteConnection;

use crate::error::{redact, Error};
use crate::info::duration_millis;
use crate::job::JobId;
use crate::migrations::Migration;
use crate::store::sql::{self, Dialect, SqlStore, Statements, Value};
use crate::store::{BoxFuture, Clock, Inserted, NewJob, SYSTEM_CLOCK};

/// SQLite.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sqlite;

pub(crate) type SqliteStore = SqlStore<Sqlite>;

/// How long a statement waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

impl SqlStore<Sqlite> {
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
                .foreign_keys(true)
                // The triggers that cancel a failed job's dependents cancel theirs by firing
                // again (migration 13).
                .pragma("recursive_triggers", "ON");
            let in_memory = url.contains(":memory:") || url.contains("mode=memory");
            let pool = if in_memory {
                // Kept alive by a second connection, as the test client's (see `Anchor`).
                let anchor = Anchor::new(options.clone());
                one_connection()
                    .min_connections(1)
                    .after_connect(move |_, _| {
                        let anchor = anchor.clone();
                        Box::pin(async move { anchor.hold().await })
                    })
            } else {
                SqlitePoolOptions::new().max_connections(4)
            }
            .connect_with(options)
            .await
            .map_err(|source| Error::Connect {
                store: Sqlite::STORE,
                url: redact(url),
                source,
            })?;
            let store = SqlStore {
                hot: pool.clone(),
                pool,
                dialect: Sqlite,
                clock: Clock::default(),
            };
            if migrate {
                store.migrate().await?;
            } else {
                store.check_version().await?;
            }
            Ok(store)
        })
    }
}

impl SqlStore<Sqlite> {
    /// A private database in memory whose statements read `clock`, for a
    /// [`TestClient`](crate::testing::TestClient). Its connections open on first use, the
    /// first applies the migrations then, so this needs no `.await`.
    ///
    /// The database lives in SQLite's `memdb` file system, which several connections share
    /// and lock like a file: a job that holds a transaction of its own (`Client::begin`) and
    /// records a step on another connection works as it does on a file, where a pool of one
    /// connection made it wait for itself.
    pub(crate) fn in_memory(clock: Clock) -> SqliteStore {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("/errand-memory-{}-{n}", std::process::id());
        clock.register_database(&name);
        let options = SqliteConnectOptions::new()
            .filename(&name)
            .vfs("memdb")
            .journal_mode(SqliteJournalMode::Memory)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            .pragma("recursive_triggers", "ON");
        let anchor = Anchor::new(options.clone());
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .idle_timeout(None)
            .max_lifetime(None)
            .after_connect(move |conn, _| {
                let anchor = anchor.clone();
                let name = name.clone();
                Box::pin(async move {
                    anchor.hold().await?;
                    sql::migrate_connection::<Sqlite>(conn)
                        .await
                        .map_err(|err| sqlx::Error::Configuration(Box::new(err)))?;
                    // Its name, by which a caller's transaction finds its clock.
                    sqlx::query(
                        "CREATE TABLE IF NOT EXISTS errand_test_database (name TEXT NOT NULL)",
                    )
                    .execute(&mut *conn)
                    .await?;
                    sqlx::query(
                        "INSERT INTO errand_test_database (name)
                         SELECT ?1 WHERE NOT EXISTS (SELECT 1 FROM errand_test_database)",
                    )
                    .bind(name)
                    .execute(&mut *conn)
                    .await?;
                    Ok(())
                })
            })
            .connect_lazy_with(options);
        SqlStore {
            hot: pool.clone(),
            pool,
            dialect: Sqlite,
            clock,
        }
    }
}

/// A second, idle connection to a database in memory, opened with the pool's first: SQLite
/// drops such a database when its last connection closes, and the pool closes its connection
/// when a call using it is cut off mid-flight (a timeout, an aborted task). Without the anchor,
/// the pool's next connection would open a new, empty database; with it, the jobs stay.
#[derive(Clone)]
struct Anchor {
    options: SqliteConnectOptions,
    conn: std::sync::Arc<tokio::sync::Mutex<Option<SqliteConnection>>>,
}

impl Anchor {
    fn new(options: SqliteConnectOptions) -> Anchor {
        Anchor {
            options,
            conn: std::sync::Arc::default(),
        }
    }

    /// Opens the anchor, once, while a connection of the pool holds the database open.
    async fn hold(&self) -> Result<(), sqlx::Error> {
        let mut conn = self.conn.lock().await;
        if conn.is_none() {
            *conn = Some(sqlx::ConnectOptions::connect(&self.options).await?);
        }
        Ok(())
    }
}

/// A pool of one connection, kept forever: each connection to `:memory:` would be its own
/// empty database.
fn one_connection() -> SqlitePoolOptions {
    SqlitePoolOptions::new()
        .max_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
}

/// Inserts a job in the caller's transaction (see [`sql::insert`]).
pub(crate) fn insert<'a>(
    conn: &'a mut SqliteConnection,
    job: &'a NewJob,
) -> BoxFuture<'a, Result<Inserted, Error>> {
    Box::pin(async move {
        let clock = clock_of(conn).await;
        sql::insert::<Sqlite>(conn, job, &clock).await
    })
}

/// Inserts jobs in the caller's transaction (see [`sql::insert_many`]).
pub(crate) fn insert_many<'a>(
    conn: &'a mut SqliteConnection,
    jobs: &'a [NewJob],
) -> BoxFuture<'a, Result<Vec<JobId>, Error>> {
    Box::pin(async move {
        let clock = clock_of(conn).await;
        sql::insert_many::<Sqlite>(conn, jobs, &clock).await
    })
}

/// Stores a workflow in the caller's transaction; its id.
pub(crate) fn insert_workflow<'a>(
    conn: &'a mut SqliteConnection,
    name: &'a str,
    kind: &'static str,
) -> BoxFuture<'a, Result<i64, Error>> {
    Box::pin(async move {
        let clock = clock_of(conn).await;
        sql::insert_workflow::<Sqlite>(conn, name, kind, &clock).await
    })
}

/// Completes a running job in the caller's transaction (see [`sql::complete`]).
pub(crate) fn complete(
    conn: &mut SqliteConnection,
    id: JobId,
    fence: i64,
) -> BoxFuture<'_, Result<bool, Error>> {
    Box::pin(async move {
        let clock = clock_of(conn).await;
        sql::complete::<Sqlite>(conn, id, fence, &clock).await
    })
}

/// The clock of the store whose database `conn` is on: a test's, for a
/// [`TestClient`](crate::testing::TestClient)'s database in memory, so that what a caller's
/// transaction stores reads the same time as the rest; the system's otherwise. Asks the
/// database its name only while this process has a test clock.
async fn clock_of(conn: &mut SqliteConnection) -> Clock {
    if !Clock::any_registered() {
        return SYSTEM_CLOCK;
    }
    // Only a test client's database has the table; on any other, the query fails.
    let name: Result<String, _> = sqlx::query_scalar("SELECT name FROM errand_test_database")
        .fetch_one(conn)
        .await;
    name.map_or(SYSTEM_CLOCK, |name| Clock::of_database(&name))
}

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

/// A JSON array, for `IN (SELECT value FROM json_each(?))`: one bound value, any length.
fn json_array<T: serde::Serialize>(values: &[T]) -> String {
    // Serializing strings and integers cannot fail.
    serde_json::to_string(values).unwrap_or_else(|_| "[]".to_owned())
}

fn query<'q>(sql: &'q str, values: Vec<Value<'q>>, clock: &Clock) -> SqliteQuery<'q> {
    let now = clock.now_ms();
    values
        .into_iter()
        .fold(sqlx::query(sql), |query, value| match value {
            Value::Int(v) => query.bind(v),
            Value::Bool(v) => query.bind(v),
            Value::Text(v) => query.bind(v),
            Value::Texts(v) => query.bind(json_array(&v)),
            Value::OwnedTexts(v) => query.bind(json_array(&v)),
            Value::Ints(v) => query.bind(json_array(&v)),
            Value::OptTexts(v) => query.bind(json_array(&v)),
            Value::OptInts(v) => query.bind(json_array(&v)),
            Value::Json(v) => query.bind(v),
            Value::Now => query.bind(now),
            Value::Wall => query.bind(SYSTEM_CLOCK.now_ms()),
            Value::Lease(lease) => {
                query.bind(duration_millis(lease).saturating_sub(clock.offset_ms()))
            }
        })
}

impl Dialect for Sqlite {
    type Db = sqlx::Sqlite;
    type Row = SqliteRow;

    const STORE: &'static str = "sqlite";
    const SQL: &'static Statements = &STATEMENTS;
    const MIGRATIONS: &'static [Migration] = crate::migrations::SQLITE;
    /// SQLite has no lateral join to take a limit per queue in one statement.
    const CLAIMS_ALL_QUEUES: bool = false;
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";

    sql::dialect_io!(SqliteConnection, SqliteRow, query);

    /// SQLite's write lock, taken at once, so that processes starting together apply each
    /// migration once.
    fn begin_migrations<'c>(
        &'c self,
        conn: &'c mut SqliteConnection,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        Self::raw(conn, "BEGIN IMMEDIATE")
    }

    fn param(n: usize) -> String {
        format!("?{n}")
    }

    fn among(column: &str, n: usize) -> String {
        format!("{column} IN (SELECT value FROM json_each(?{n}))")
    }

    fn has_tag(n: usize) -> String {
        format!("id IN (SELECT job_id FROM errand_job_tags WHERE tag = ?{n})")
    }

    fn many_values<'a>(jobs: &'a [NewJob]) -> Vec<Value<'a>> {
        // One JSON array holds the whole batch: one statement, any number of rows.
        let rows: Vec<serde_json::Value> = jobs
            .iter()
            .map(|job| {
                let (delay, at) = job.run_at.delay_or_at_ms();
                serde_json::json!([
                    job.kind,
                    job.queue,
                    job.args,
                    job.priority,
                    job.max_attempts,
                    job.key,
                    delay,
                    at,
                    job.tags,
                    job.meta_value(),
                    job.timeout_ms,
                    job.expiry_ms().0,
                    job.expiry_ms().1,
                    job.limit_key,
                    job.fair_key
                ])
            })
            .collect();
        vec![
            Value::Json(serde_json::Value::Array(rows).to_string()),
            Value::Now,
        ]
    }
}

/// What a claim sets on a job it takes, at time `$now`, for worker `$worker` with a lease of
/// `$lease` ms.
macro_rules! claim_set {
    ($now:literal, $lease:literal, $worker:literal) => {
        concat!(
            "SET state = 'running', attempt = attempt + 1, fence = fence + 1, attempted_at = ",
            $now,
            ", lease_until = ",
            $now,
            " + ",
            $lease,
            ", worker = ",
            $worker,
            ", unique_key = ",
            key_after!("'running'")
        )
    };
}

/// What a claim returns of each job it took (see `claimed_row`).
macro_rules! claim_returning {
    () => {
        "RETURNING id, kind, queue, args, attempt, max_attempts, idempotency_key, fence, priority,
                  run_at, timeout_ms, NULLIF(tags, '[]'), NULLIF(meta, '{}'), workflow_id, step"
    };
}

/// The one rule of unique keys, as PostgreSQL's `errand_key_after` (migration 0007) has it:
/// the key a job holds once it moves to the state `$state` (SQL text), given its `unique_key`.
/// A finished job keeps its key only under `until_expired`; a running `until_executing` job
/// gives it up; every other move keeps it.
/// The state a run that returned `Ok` ends in: `completed`, unless its cancellation was asked
/// meanwhile (its worker may not have read the request yet): then `cancelled`, as
/// [`Cancellation::Requested`](crate::Cancellation::Requested) promised.
macro_rules! completed_unless_cancelled {
    () => {
        "(CASE WHEN cancel_requested THEN 'cancelled' ELSE 'completed' END)"
    };
}

/// A job's errors, with the cancellation's entry added at `$now` when its cancellation was
/// asked while it ran (see [`completed_unless_cancelled!`]).
macro_rules! with_cancel_error {
    ($now:literal) => {
        concat!(
            "CASE WHEN cancel_requested THEN json_insert(errors, '$[#]', json_object(
                'attempt', attempt, 'kind', 'cancelled',
                'message', 'cancelled by the client while running', 'at', ",
            $now,
            ", 'duration_ms', ",
            $now,
            " - COALESCE(attempted_at, ",
            $now,
            "), 'worker', COALESCE(worker, ''))) ELSE errors END"
        )
    };
}

macro_rules! key_after {
    ($state:expr) => {
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

/// The dead jobs a [`DeadQuery`](crate::store::DeadQuery) picks, binding `?1` id, `?2` kind,
/// `?3` queue, `?4` died at or after, `?5` died before: a condition whose value is NULL holds.
macro_rules! dead_filter {
    () => {
        "state = 'dead' AND (?1 IS NULL OR id = ?1) AND (?2 IS NULL OR kind = ?2)
         AND (?3 IS NULL OR queue = ?3) AND (?4 IS NULL OR finished_at >= ?4)
         AND (?5 IS NULL OR finished_at < ?5)"
    };
}

/// The columns [`SqlRow::job`](super::sql::SqlRow::job) reads.
macro_rules! select_job {
    () => {
        "SELECT id, kind, queue, args, state, priority, attempt, max_attempts, idempotency_key,
         run_at, created_at, attempted_at, finished_at, errors, tags, meta, timeout_ms, expires_at,
         workflow_id, step FROM errand_jobs"
    };
}

/// A job's error history with one more entry, `$entry` (SQL for a JSON object), keeping the
/// first `$keep` and the latest of at most `$max` entries.
macro_rules! append_error {
    ($max:literal, $keep:literal, $entry:literal) => {
        concat!(
            "json_insert(CASE WHEN json_array_length(errors) >= ",
            $max,
            " THEN json_remove(errors, '$[' || ",
            $keep,
            " || ']') ELSE errors END, '$[#]', ",
            $entry,
            ")"
        )
    };
}

/// The dead job's death was acted on: a job that waits on it was cancelled with it, or
/// released to run because it died (a saga's compensations, a dependent that runs anyway).
/// Retrying it would run it again after them, so retries refuse it. A compensation's own death
/// only releases the compensation before it ('when_ran'): it may be retried.
macro_rules! death_settled {
    () => {
        "errand_jobs.has_dependents AND EXISTS (
             SELECT 1 FROM errand_job_deps d JOIN errand_jobs dep ON dep.id = d.job_id
             WHERE d.depends_on = errand_jobs.id AND d.on_failure IN ('cancel', 'run', 'when_failed')
               AND dep.state <> 'pending')"
    };
}

static STATEMENTS: Statements = Statements {
    expire_key: "UPDATE errand_jobs SET unique_key = NULL
        WHERE kind = ?1 AND unique_key = ?2 AND unique_until IS NOT NULL AND unique_until <= ?3",
    // `WHERE true` tells SQLite's parser that `ON CONFLICT` belongs to the insert.
    insert: "INSERT INTO errand_jobs (kind, queue, args, state, priority, max_attempts, idempotency_key,
                                      run_at, created_at, unique_key, unique_strategy, unique_until,
                                      tags, meta, timeout_ms, expires_at, limit_key, fair_key,
                                      waiting_on, workflow_id, step)
        SELECT ?1, ?2, ?3,
               CASE WHEN ?20 > 0 THEN 'pending' WHEN t.run_at > ?12 THEN 'scheduled' ELSE 'available' END,
               ?4, ?5, ?6, t.run_at, ?12, ?9, ?10, ?12 + ?11, ?13, ?14, ?15,
               COALESCE(?17, t.run_at + ?16), ?18, ?19, ?20, ?21, ?22
        FROM (SELECT COALESCE(?8, ?12 + ?7) AS run_at) t WHERE true
        ON CONFLICT DO NOTHING
        RETURNING id",
    key_holder: "SELECT id FROM errand_jobs WHERE kind = ?1 AND unique_key = ?2",
    replace: "UPDATE errand_jobs
        SET args = ?2, queue = ?3, priority = ?4, run_at = COALESCE(?6, ?7 + ?5),
            state = CASE WHEN COALESCE(?6, ?7 + ?5) > ?7 THEN 'scheduled' ELSE 'available' END
        WHERE id = ?1 AND state IN ('scheduled', 'available', 'retryable')
        RETURNING id",
    insert_many: "INSERT INTO errand_jobs (kind, queue, args, state, priority, max_attempts, idempotency_key, run_at, created_at,
                                           tags, meta, timeout_ms, expires_at, limit_key, fair_key)
        SELECT value ->> 0, value ->> 1, value ->> 2,
               CASE WHEN COALESCE(value ->> 7, ?2 + (value ->> 6)) > ?2 THEN 'scheduled' ELSE 'available' END,
               value ->> 3, value ->> 4, value ->> 5, COALESCE(value ->> 7, ?2 + (value ->> 6)), ?2,
               value -> 8, value -> 9, value ->> 10,
               COALESCE(value ->> 12, COALESCE(value ->> 7, ?2 + (value ->> 6)) + (value ->> 11)),
               value ->> 13, value ->> 14
        FROM json_each(?1)
        RETURNING id",
    // One queue a statement: `?1` and `?2` hold one element each.
    claim: concat!(
        "UPDATE errand_jobs ",
        claim_set!("?6", "?3", "?4"),
        "
        WHERE id IN (
            -- Pinned: with an index of available jobs by kind beside it (migration 19),
            -- SQLite's planner chose to read the whole queue through `errand_jobs_queue_state`
            -- and sort it.
            SELECT id FROM errand_jobs INDEXED BY errand_jobs_plain
            WHERE queue = (?1 ->> 0) AND state = 'available' AND kind IN (SELECT value FROM json_each(?5))
              AND limit_key IS NULL AND fair_key IS NULL
              AND (expires_at IS NULL OR expires_at > ?6)
              AND NOT EXISTS (SELECT 1 FROM errand_queues p
                              WHERE p.queue = (?1 ->> 0) AND p.paused_at IS NOT NULL)
            ORDER BY priority, run_at, id
            LIMIT (?2 ->> 0)) ",
        claim_returning!()
    ),
    age: "UPDATE errand_jobs
        SET base_priority = COALESCE(base_priority, priority),
            priority = max(0, COALESCE(base_priority, priority) - (?4 - run_at) / ?2)
        WHERE id IN (SELECT id FROM errand_jobs
                     WHERE queue IN (SELECT value FROM json_each(?1)) AND state = 'available'
                       AND priority > 0 AND run_at <= ?4 - ?2
                       AND COALESCE(base_priority, priority) - (?4 - run_at) / ?2 < priority
                     LIMIT ?3)",
    pause_queue: "INSERT INTO errand_queues (queue, paused_at, updated_at) VALUES (?1, ?2, ?2)
        ON CONFLICT (queue) DO UPDATE SET paused_at = ?2, updated_at = ?2
        WHERE errand_queues.paused_at IS NULL",
    resume_queue: "UPDATE errand_queues SET paused_at = NULL, updated_at = ?2
        WHERE queue = ?1 AND paused_at IS NOT NULL",
    paused_queues: "SELECT queue FROM errand_queues WHERE paused_at IS NOT NULL",
    register_schedule: "INSERT INTO errand_schedules
            (name, cron, timezone, kind, queue, catch_up, done_until, seen_at, created_at)
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?7)
        ON CONFLICT (name) DO UPDATE SET cron = excluded.cron, timezone = excluded.timezone,
            kind = excluded.kind, queue = excluded.queue, catch_up = excluded.catch_up,
            seen_at = excluded.seen_at
        RETURNING done_until, ?7",
    advance_schedule: "UPDATE errand_schedules
        SET done_until = ?2, last_run = CASE WHEN ?3 THEN ?2 ELSE last_run END, next_run = ?4
        WHERE name = ?1 AND done_until < ?2",
    schedule_job: "UPDATE errand_schedules SET last_job = ?2 WHERE name = ?1",
    schedule_next: "UPDATE errand_schedules SET next_run = ?2
        WHERE name = ?1 AND next_run IS NOT ?2",
    schedules: "SELECT name, cron, timezone, kind, queue, catch_up, last_run, last_job, next_run, seen_at
        FROM errand_schedules ORDER BY name",
    // As PostgreSQL's: one probe of `errand_jobs_limited` per key, and the first jobs only of
    // keys with a free slot (up to `?6` each: SQLite's LIMIT cannot read a row; the claim takes
    // no more than the free slots).
    limit_candidates: "WITH RECURSIVE l AS (
            SELECT k.value AS kind, r.value AS max_running, s.value AS max_starts, w.value AS window_ms
            FROM json_each(?2) k
            JOIN json_each(?3) r ON r.key = k.key
            JOIN json_each(?4) s ON s.key = k.key
            JOIN json_each(?5) w ON w.key = k.key
        ), keys(queue, limit_key) AS (
            SELECT q.value, (SELECT j.limit_key FROM errand_jobs j
                             WHERE j.queue = q.value AND j.state = 'available'
                               AND j.limit_key IS NOT NULL
                             ORDER BY j.limit_key LIMIT 1)
            FROM json_each(?1) q
            WHERE NOT EXISTS (SELECT 1 FROM errand_queues p
                              WHERE p.queue = q.value AND p.paused_at IS NOT NULL)
            UNION ALL
            SELECT k.queue, (SELECT j.limit_key FROM errand_jobs j
                             WHERE j.queue = k.queue AND j.state = 'available'
                               AND j.limit_key IS NOT NULL AND j.limit_key > k.limit_key
                             ORDER BY j.limit_key LIMIT 1)
            FROM keys k WHERE k.limit_key IS NOT NULL
        ), room AS (
            SELECT k.queue, k.limit_key, l.kind FROM keys k
            JOIN l ON k.limit_key = l.kind OR substr(k.limit_key, 1, length(l.kind) + 1) = l.kind || ':'
            WHERE (l.max_running IS NULL OR l.max_running > (
                      SELECT count(*) FROM errand_limit_slots s
                      WHERE s.limit_key = k.limit_key AND s.purpose = 'running'
                        AND s.job_id IS NOT NULL))
              AND (l.max_starts IS NULL OR l.max_starts > (
                      SELECT count(*) FROM errand_limit_slots s
                      WHERE s.limit_key = k.limit_key AND s.purpose = 'start'
                        AND ((s.taken_at IS NULL AND s.job_id IS NOT NULL)
                             OR s.taken_at > ?7 - l.window_ms)))
        )
        SELECT j.id, j.limit_key, j.kind FROM room r
        JOIN errand_jobs j ON j.id IN (
            SELECT id FROM errand_jobs
            WHERE queue = r.queue AND state = 'available' AND limit_key = r.limit_key
              AND kind = r.kind AND (expires_at IS NULL OR expires_at > ?7)
            ORDER BY priority, run_at, id
            LIMIT ?6)
        ORDER BY j.priority, j.run_at, j.id
        LIMIT ?6",
    limit_free_slots: "SELECT s.limit_key, s.purpose, s.n FROM errand_limit_slots s
        JOIN (SELECT k.value AS limit_key, w.value AS window_ms
              FROM json_each(?1) k JOIN json_each(?2) w ON w.key = k.key) k
          ON k.limit_key = s.limit_key
        WHERE (s.purpose = 'running' AND s.job_id IS NULL)
           OR (s.purpose = 'start' AND (s.job_id IS NULL OR s.taken_at <= ?3 - k.window_ms))",
    limit_slot_counts: "SELECT limit_key, purpose, max(n) FROM errand_limit_slots
        WHERE limit_key IN (SELECT value FROM json_each(?1)) GROUP BY limit_key, purpose",
    limit_add_slots: "INSERT INTO errand_limit_slots (limit_key, purpose, n)
        SELECT k.value, p.value, n.value
        FROM json_each(?1) k JOIN json_each(?2) p ON p.key = k.key JOIN json_each(?3) n ON n.key = k.key
        WHERE true
        ON CONFLICT DO NOTHING
        RETURNING limit_key, purpose, n",
    limit_take_slots: "UPDATE errand_limit_slots
        SET job_id = t.job,
            -- A start slot is reserved, and marked when its job begins (`mark_started`).
            taken_at = CASE WHEN errand_limit_slots.purpose = 'start' THEN NULL ELSE taken_at END
        FROM (SELECT k.value AS limit_key, p.value AS purpose, n.value AS n, j.value AS job
              FROM json_each(?1) k JOIN json_each(?2) p ON p.key = k.key
              JOIN json_each(?3) n ON n.key = k.key JOIN json_each(?4) j ON j.key = k.key) t
        WHERE errand_limit_slots.limit_key = t.limit_key AND errand_limit_slots.purpose = t.purpose
          AND errand_limit_slots.n = t.n",
    claim_fair: concat!(
        "UPDATE errand_jobs ",
        claim_set!("?6", "?4", "?5"),
        "
        WHERE id IN (
            WITH RECURSIVE keys(fair_key) AS (
                SELECT (SELECT fair_key FROM errand_jobs
                        WHERE queue = ?1 AND state = 'available' AND fair_key IS NOT NULL
                        ORDER BY fair_key LIMIT 1)
                UNION ALL
                SELECT (SELECT j.fair_key FROM errand_jobs j
                        WHERE j.queue = ?1 AND j.state = 'available' AND j.fair_key IS NOT NULL
                          AND j.fair_key > k.fair_key
                        ORDER BY j.fair_key LIMIT 1)
                FROM keys k WHERE k.fair_key IS NOT NULL
            ), heads AS (
                SELECT j.id, j.fair_key, j.priority, j.run_at,
                       row_number() OVER (PARTITION BY j.fair_key ORDER BY j.priority, j.run_at, j.id) AS turn
                FROM keys k JOIN errand_jobs j ON j.id IN (
                    SELECT id FROM errand_jobs
                    WHERE queue = ?1 AND state = 'available' AND fair_key = k.fair_key
                      AND kind IN (SELECT value FROM json_each(?3))
                      AND (expires_at IS NULL OR expires_at > ?6)
                    ORDER BY priority, run_at, id
                    LIMIT ?2)
                WHERE k.fair_key IS NOT NULL
                  AND NOT EXISTS (SELECT 1 FROM errand_queues p
                                  WHERE p.queue = ?1 AND p.paused_at IS NOT NULL)
            )
            SELECT h.id FROM heads h
            LEFT JOIN errand_fair_turns t ON t.queue = ?1 AND t.fair_key = h.fair_key
            ORDER BY h.turn, t.served_at NULLS FIRST, h.priority, h.run_at, h.id
            LIMIT ?2) ",
        claim_returning!(),
        ", fair_key"
    ),
    fair_served: "INSERT INTO errand_fair_turns (queue, fair_key, served_at)
        SELECT ?1, value, ?3 FROM json_each(?2) WHERE true
        ON CONFLICT (queue, fair_key) DO UPDATE SET served_at = excluded.served_at",
    lock_parents: "UPDATE errand_jobs SET has_dependents = 1
        WHERE id IN (SELECT value FROM json_each(?1))
        RETURNING id, state, step",
    add_deps: "INSERT INTO errand_job_deps (depends_on, job_id, on_failure)
        SELECT p.value, ?2, m.value FROM json_each(?1) p JOIN json_each(?3) m ON m.key = p.key
        WHERE true ON CONFLICT DO NOTHING",
    insert_workflow: "INSERT INTO errand_workflows (name, kind, created_at) VALUES (?1, ?2, ?3)
        RETURNING id",
    workflow: "SELECT name, created_at, kind FROM errand_workflows WHERE id = ?1",
    workflow_jobs: concat!(select_job!(), " WHERE workflow_id = ?1 ORDER BY id"),
    wait_for_one_more: "UPDATE errand_jobs SET waiting_on = waiting_on + 1
        WHERE workflow_id = ?1 AND step IN (SELECT value FROM json_each(?2)) AND state = 'pending'
        RETURNING id, step",
    count_steps: "SELECT count(*) FROM errand_jobs
        WHERE workflow_id = ?1 AND step IN (SELECT value FROM json_each(?2))",
    // One aggregate per state, each over its range of the finished index (state,
    // finished_at): hashed, not one sort of every job finished in the window.
    finished_per_minute: "SELECT 'completed', (finished_at / 60000) * 60000 AS minute, count(*) FROM errand_jobs
        WHERE state = 'completed' AND finished_at >= ?1 GROUP BY minute
        UNION ALL SELECT 'dead', (finished_at / 60000) * 60000 AS minute, count(*) FROM errand_jobs
        WHERE state = 'dead' AND finished_at >= ?1 GROUP BY minute
        UNION ALL SELECT 'cancelled', (finished_at / 60000) * 60000 AS minute, count(*) FROM errand_jobs
        WHERE state = 'cancelled' AND finished_at >= ?1 GROUP BY minute
        ORDER BY minute",
    step_scope: "SELECT kind, idempotency_key, id FROM errand_jobs
        WHERE workflow_id = ?1 AND step = ?2 ORDER BY id LIMIT 1",
    add_dependents: "INSERT INTO errand_job_deps (depends_on, job_id, on_failure)
        SELECT ?1, j.value, f.value FROM json_each(?2) j JOIN json_each(?3) f ON f.key = j.key",
    workflow_deps: "SELECT d.depends_on, d.job_id FROM errand_job_deps d
        JOIN errand_jobs j ON j.id = d.job_id WHERE j.workflow_id = ?1",
    claim_ids: concat!(
        "UPDATE errand_jobs ",
        claim_set!("?4", "?2", "?3"),
        "
        WHERE id IN (SELECT value FROM json_each(?1)) AND state = 'available' ",
        claim_returning!()
    ),
    bury_unknown: concat!(
        "UPDATE errand_jobs
        SET state = 'dead', finished_at = ?9, lease_until = NULL, death_pending = 1,
            unique_key = ",
        key_after!("'dead'"),
        ",
            errors = ",
        append_error!(
            "?6",
            "?7",
            "json_object('attempt', attempt, 'kind', 'unknown_kind', 'message', ?4 || kind || ?5,
                'at', ?9, 'duration_ms', 0, 'worker', ?8)"
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
            CROSS JOIN json_each(?2) q
            CROSS JOIN errand_jobs j INDEXED BY errand_jobs_available_kinds
              ON j.kind = k.kind AND j.queue = q.value AND j.state = 'available'
                 AND j.run_at <= ?9 - ?1
            WHERE k.kind IS NOT NULL AND k.kind NOT IN (SELECT value FROM json_each(?3))
              AND NOT EXISTS (SELECT 1 FROM errand_workers w, json_each(w.kinds) wk
                              WHERE w.seen_at > ?9 - ?10 AND wk.value = k.kind)
              AND NOT EXISTS (SELECT 1 FROM errand_queues p
                              WHERE p.queue = q.value AND p.paused_at IS NOT NULL)
            LIMIT ?11)"
    ),
    finish: concat!(
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
        key_after!("(CASE WHEN cancel_requested AND ?3 <> 'dead' THEN 'cancelled' ELSE ?3 END)"),
        " END,
            cancel_requested = 0,
            death_pending = ?3 = 'dead',
            errors = CASE WHEN ?7 IS NULL THEN errors ELSE ",
        append_error!("?8", "?9", "json_set(json(?7), '$.at', ?10)"),
        " END
        WHERE id = ?1 AND fence = ?2 AND state = 'running'"
    ),
    complete: concat!(
        "UPDATE errand_jobs
        SET state = ",
        completed_unless_cancelled!(),
        ", finished_at = ?3, lease_until = NULL, running_key = NULL,
            cancel_requested = 0, unique_key = ",
        key_after!(completed_unless_cancelled!()),
        ", errors = ",
        with_cancel_error!("?3"),
        "
        WHERE id = ?1 AND fence = ?2 AND state = 'running'"
    ),
    complete_many: concat!(
        "UPDATE errand_jobs
        SET state = ",
        completed_unless_cancelled!(),
        ", finished_at = ?3, lease_until = NULL, running_key = NULL,
            cancel_requested = 0, unique_key = ",
        key_after!(completed_unless_cancelled!()),
        ", errors = ",
        with_cancel_error!("?3"),
        "
        WHERE id IN (SELECT value FROM json_each(?1))
          AND (id, fence) IN (SELECT value, ?2 ->> key FROM json_each(?1))
          -- `+`: found by id, through the primary key, not among all running jobs.
          AND +state = 'running'
        RETURNING id"
    ),
    // SQLite has no data-modifying subqueries: the two run in one transaction.
    complete_and_claim: None,
    renew: "UPDATE errand_jobs SET lease_until = ?5 + ?1
        WHERE id IN (SELECT value FROM json_each(?3))
          AND (id, fence) IN (SELECT value, ?4 ->> key FROM json_each(?3))
          -- `+`: found by id, through the primary key, not among all running jobs.
          AND +state = 'running' AND worker = ?2
        RETURNING id, fence, cancel_requested",
    // A job whose cancellation was asked is not put back: it ends cancelled.
    release: concat!(
        "UPDATE errand_jobs
        SET state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'available' END,
            finished_at = CASE WHEN cancel_requested THEN ?3 END,
            unique_key = CASE WHEN cancel_requested THEN ",
        key_after!("'cancelled'"),
        " ELSE unique_key END,
            errors = ",
        with_cancel_error!("?3"),
        ", attempt = CASE WHEN cancel_requested THEN attempt ELSE attempt - 1 END,
            lease_until = NULL, worker = NULL, running_key = NULL,
            cancel_requested = 0
        WHERE state = 'running' AND worker = ?1 AND id IN (SELECT value FROM json_each(?2))"
    ),
    rescue: concat!(
        "UPDATE errand_jobs
        -- A job whose cancellation was asked before its worker stopped ends cancelled.
        SET state = CASE WHEN cancel_requested THEN 'cancelled'
                         WHEN attempt >= max_attempts THEN 'dead' ELSE 'retryable' END,
            finished_at = CASE WHEN cancel_requested OR attempt >= max_attempts THEN ?5 END,
            run_at = ?5,
            lease_until = NULL,
            running_key = NULL,
            unique_key = ",
        key_after!("(CASE WHEN cancel_requested THEN 'cancelled'
                          WHEN attempt >= max_attempts THEN 'dead' ELSE 'retryable' END)"),
        ",
            death_pending = NOT cancel_requested AND attempt >= max_attempts,
            cancel_requested = 0,
            errors = ",
        append_error!(
            "?3",
            "?4",
            "json_object('attempt', attempt, 'kind', 'lease_lost',
                'message', ?1 || COALESCE(worker, '?') || ?2, 'at', ?5,
                'duration_ms', ?5 - COALESCE(attempted_at, ?5), 'worker', COALESCE(worker, '?'))"
        ),
        "
        WHERE state = 'running' AND lease_until < ?6
        RETURNING id"
    ),
    job: concat!(select_job!(), " WHERE id = ?1"),
    select_jobs: select_job!(),
    queue_counts: "SELECT queue, state, count(*) FROM errand_jobs GROUP BY queue, state",
    oldest_available: "SELECT queue, ?1 - min(run_at) FROM errand_jobs
        WHERE state = 'available' GROUP BY queue",
    expire_running_key: "UPDATE errand_jobs SET running_key = NULL
        WHERE running_key IS NOT NULL AND attempted_at <= ?3 - ?2
          AND (kind, running_key) = (SELECT kind, idempotency_key FROM errand_jobs WHERE id = ?1)
          AND id <> ?1",
    take_running_key: "UPDATE errand_jobs SET running_key = idempotency_key
        WHERE id = ?1 AND fence = ?2 AND state = 'running'",
    step_result: "SELECT result FROM errand_steps WHERE scope = ?1 AND name = ?2",
    record_step: "INSERT INTO errand_steps (scope, name, result, created_at, kind, job_key, job_id)
        VALUES (?1, ?2, ?3, ?7, ?4, ?5, ?6)
        ON CONFLICT DO NOTHING",
    cancel: concat!(
        "UPDATE errand_jobs
        SET state = 'cancelled', finished_at = ?3, lease_until = NULL,
            unique_key = ",
        key_after!("'cancelled'"),
        ",
            errors = json_insert(errors, '$[#]', json_set(json(?2), '$.attempt', attempt, '$.at', ?3))
        WHERE id = ?1 AND state IN ('scheduled', 'available', 'retryable', 'pending')"
    ),
    request_cancel: "UPDATE errand_jobs SET cancel_requested = 1 WHERE id = ?1 AND state = 'running'",
    claim_deaths: "UPDATE errand_jobs SET death_until = ?3 + ?2, death_deliveries = death_deliveries + 1
        WHERE id IN (SELECT id FROM errand_jobs
                     WHERE death_pending = 1 AND (death_until IS NULL OR death_until < ?3)
                     ORDER BY id LIMIT ?1)
        RETURNING id, death_deliveries",
    death_delivered: "UPDATE errand_jobs SET death_pending = 0, death_until = NULL WHERE id = ?1",
    // As PostgreSQL's: the key comes back only while no other job holds it.
    retry_dead: concat!(
        "UPDATE errand_jobs
        SET state = 'available', attempt = 0, run_at = ?6, finished_at = NULL, lease_until = NULL,
            death_pending = 0, death_until = NULL, death_deliveries = 0, cancel_requested = 0,
            unique_key = CASE WHEN unique_strategy IN ('until_executing', 'until_executed')
                              THEN idempotency_key ELSE unique_key END
        WHERE ",
        dead_filter!(),
        "
          AND NOT (COALESCE(unique_strategy, '') IN ('until_executing', 'until_executed') AND (
              EXISTS (SELECT 1 FROM errand_jobs held
                      WHERE held.kind = errand_jobs.kind AND held.unique_key = errand_jobs.idempotency_key)
              OR (?1 IS NULL AND EXISTS (
                  SELECT 1 FROM errand_jobs twin
                  WHERE twin.kind = errand_jobs.kind AND twin.idempotency_key = errand_jobs.idempotency_key
                    AND twin.state = 'dead' AND twin.id < errand_jobs.id))))
          AND NOT (",
        death_settled!(),
        ")"
    ),
    refused_dead: concat!(
        "SELECT count(*) FROM errand_jobs WHERE ",
        dead_filter!(),
        " AND ",
        death_settled!()
    ),
    delete_dead: concat!("DELETE FROM errand_jobs WHERE ", dead_filter!()),
    try_lock: "INSERT INTO errand_locks (name, holder, until) VALUES (?1, ?2, ?4 + ?3)
        ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
        WHERE errand_locks.until < ?4 OR errand_locks.holder = excluded.holder
        RETURNING holder",
    prune: [
        (
            "DELETE FROM errand_jobs WHERE id IN (
                SELECT id FROM errand_jobs
                WHERE state IN ('completed', 'cancelled') AND finished_at < ?3 - ?1 LIMIT ?2)",
            "prune finished jobs",
        ),
        (
            "DELETE FROM errand_jobs WHERE id IN (
                SELECT id FROM errand_jobs
                WHERE state = 'dead' AND finished_at < ?3 - ?1 LIMIT ?2)",
            "prune old dead jobs",
        ),
        (
            "DELETE FROM errand_jobs WHERE id IN (
                SELECT id FROM errand_jobs WHERE state = 'dead'
                ORDER BY finished_at DESC, id DESC LIMIT ?2 OFFSET ?1)
            -- A death its handlers have not had the delivery window to take is kept until then.
            AND NOT (death_pending = 1 AND finished_at > ?3 - ?4)",
            "prune surplus dead jobs",
        ),
        (
            "DELETE FROM errand_steps WHERE (scope, name) IN (
                SELECT scope, name FROM errand_steps s
                WHERE s.created_at < ?3 - ?1
                  AND NOT EXISTS (SELECT 1 FROM errand_jobs j
                                  WHERE j.kind = s.kind AND j.idempotency_key = s.job_key
                                    AND j.state NOT IN ('completed', 'cancelled', 'dead'))
                  AND NOT EXISTS (SELECT 1 FROM errand_jobs j
                                  WHERE s.job_key IS NULL AND j.id = s.job_id
                                    AND j.state NOT IN ('completed', 'cancelled', 'dead'))
                LIMIT ?2)",
            "prune the effect ledger",
        ),
    ],
    bookkeeping: crate::migrations::SQLITE_BOOKKEEPING,
    has_bookkeeping: "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'errand_migrations'",
    has_checksums: "SELECT count(*) FROM pragma_table_info('errand_migrations') WHERE name = 'checksum'",
    add_checksums: "ALTER TABLE errand_migrations ADD COLUMN checksum TEXT",
    applied: "SELECT version, checksum FROM errand_migrations ORDER BY version",
    record_migration: "INSERT INTO errand_migrations (version, checksum, applied_at) VALUES (?1, ?2, ?3)",
    set_checksum: "UPDATE errand_migrations SET checksum = ?2 WHERE version = ?1",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_worker_never_buries_a_kind_it_knows() {
        let store = SqliteStore::in_memory(Clock::default());
        sql::check_burial_spares_known_kinds(&store).await;
    }

    /// As on PostgreSQL: with 1,000,000 completed jobs, every listing an operator asks for
    /// searches an index, and none sorts what it found (a sort means it read every match).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn listings_search_an_index_at_a_million_jobs() {
        let store = SqliteStore::in_memory(Clock::default());
        let fill = "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < ?4)
                    INSERT INTO errand_jobs (kind, queue, args, state, priority, max_attempts,
                        idempotency_key, run_at, created_at, finished_at, tags)
                    SELECT ?1, ?2, '{}', ?3, 5, 25, ?1 || '-' || n, n, n, n,
                           CASE WHEN ?5 THEN '[\"vip\"]' ELSE '[]' END FROM g";
        for (kind, queue, state, count, tagged) in sql::listing_cases::FILL {
            sqlx::query(fill)
                .bind(kind)
                .bind(queue)
                .bind(state)
                .bind(count)
                .bind(tagged)
                .execute(&store.pool)
                .await
                .expect("fill the table");
        }
        sqlx::query("ANALYZE")
            .execute(&store.pool)
            .await
            .expect("analyze");
        for (name, filter, page) in sql::listing_cases::listings() {
            let (sql, values) = sql::listing::<Sqlite>(&filter, page);
            let plan = explain(&store, &sql, values).await;
            assert!(plan.contains("USING"), "{name} reads no index:\n{plan}");
            assert!(
                !plan
                    .lines()
                    .any(|l| l.trim_end().ends_with("SCAN errand_jobs")),
                "{name} walks the table:\n{plan}"
            );
            // A listing read state by state sorts only its branches' pages.
            assert!(
                !plan.contains("TEMP B-TREE FOR ORDER BY") || plan.contains("CO-ROUTINE"),
                "{name} sorts every match:\n{plan}"
            );
        }
        for (name, filter) in sql::listing_cases::counts() {
            let (sql, values) = sql::counting::<Sqlite>(&filter);
            let plan = explain(&store, &sql, values).await;
            assert!(plan.contains("USING COVERING INDEX"), "{name}:\n{plan}");
        }
    }

    /// As on PostgreSQL: with 1,000,000 jobs held back in each way a job waits and ten to
    /// take, each claim and the promotion search an index of jobs it can take (or, the
    /// limited and fair claims, one probe per key) and never walk the table or sort every
    /// match.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn claims_walk_no_held_back_jobs() {
        use sql::held_back_cases::{FILL, HOLD_SLOT, PAUSE};
        // A file: the backlogs outgrow an in-memory database's cap.
        let path = std::env::temp_dir().join(format!("errand-held-back-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let store = SqliteStore::connect(&url, true)
            .await
            .expect("open the file");
        let fill = "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < ?8)
                    INSERT INTO errand_jobs (kind, queue, args, state, priority, max_attempts,
                        run_at, created_at, limit_key, fair_key, waiting_on)
                    SELECT ?1, ?2, '{}', ?3, 5, 25, ?9 + ?4, 0, ?5, ?6, ?7 FROM g";
        let now = SYSTEM_CLOCK.now_ms();
        for (kind, queue, state, offset, limit_key, fair_key, waiting_on, count) in FILL {
            sqlx::query(fill)
                .bind(kind)
                .bind(queue)
                .bind(state)
                .bind(offset)
                .bind(limit_key)
                .bind(fair_key)
                .bind(waiting_on)
                .bind(count)
                .bind(now)
                .execute(&store.pool)
                .await
                .expect("fill the table");
        }
        for setup in [HOLD_SLOT, PAUSE, "ANALYZE"] {
            sqlx::query(setup)
                .execute(&store.pool)
                .await
                .expect("set up the backlog");
        }
        let cases = sql::held_back_cases::claims::<Sqlite>().into_iter();
        for sql::held_back_cases::Case {
            name,
            sql,
            values,
            index,
            ..
        } in cases
        {
            let steps = plan_steps(&store, sql, values).await;
            let plan = steps
                .iter()
                .map(|(_, _, detail)| detail.as_str())
                .collect::<Vec<_>>()
                .join("\n");
            assert!(plan.contains(index), "{name} reads no {index}:\n{plan}");
            assert!(
                !plan.lines().any(|l| {
                    let l = l.trim();
                    l.starts_with("SCAN errand_jobs") || l == "SCAN j" || l.starts_with("SCAN j ")
                }),
                "{name} walks the table:\n{plan}"
            );
            // A sort of what one probe per key found (rows looked up by id) is bounded by the
            // keys; a sort beside a range search of an index would read every match.
            for (_, parent, detail) in &steps {
                if detail.contains("TEMP B-TREE") {
                    let ranged = steps.iter().any(|(_, p, d)| {
                        let jobs =
                            d.starts_with("SEARCH errand_jobs ") || d.starts_with("SEARCH j ");
                        p == parent && jobs && d.contains(" INDEX ")
                    });
                    assert!(!ranged, "{name} sorts every match:\n{plan}");
                }
            }
        }
        store.pool.close().await;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    /// SQLite's query plan for `sql` with `values`: each step's id, its parent's, and what
    /// it does.
    async fn plan_steps(
        store: &SqliteStore,
        sql: &str,
        values: Vec<Value<'_>>,
    ) -> Vec<(i64, i64, String)> {
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let rows = query(&explain, values, &SYSTEM_CLOCK)
            .fetch_all(&store.pool)
            .await
            .expect("explain");
        rows.iter()
            .map(|row| {
                let id: i64 = sqlx::Row::get(row, 0);
                let parent: i64 = sqlx::Row::get(row, 1);
                (id, parent, sqlx::Row::get::<String, _>(row, 3))
            })
            .collect()
    }

    /// SQLite's query plan for `sql` with `values`, one step per line.
    async fn explain(store: &SqliteStore, sql: &str, values: Vec<Value<'_>>) -> String {
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let rows = query(&explain, values, &SYSTEM_CLOCK)
            .fetch_all(&store.pool)
            .await
            .expect("explain");
        rows.iter()
            .map(|row| sqlx::Row::get::<String, _>(row, 3))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
