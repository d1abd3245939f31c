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
use crate::store::sql::{self, Dialect, SqlStore, Value};
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
                    sql::migrate::migrate_connection::<Sqlite>(conn)
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
        sql::enqueue::insert::<Sqlite>(conn, job, &clock).await
    })
}

/// Inserts jobs in the caller's transaction (see [`sql::insert_many`]).
pub(crate) fn insert_many<'a>(
    conn: &'a mut SqliteConnection,
    jobs: &'a [NewJob],
) -> BoxFuture<'a, Result<Vec<JobId>, Error>> {
    Box::pin(async move {
        let clock = clock_of(conn).await;
        sql::enqueue::insert_many::<Sqlite>(conn, jobs, &clock).await
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
        sql::workflows::insert_workflow::<Sqlite>(conn, name, kind, &clock).await
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
        sql::runs::complete::<Sqlite>(conn, id, fence, &clock).await
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

    fn many_values<'a>(jobs: &'a [NewJob]) -> Vec<(&'static str, Value<'a>)> {
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
        sql::params![
            rows: Value::Json(serde_json::Value::Array(rows).to_string()),
            now: Value::Now,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_worker_never_buries_a_kind_it_knows() {
        let store = SqliteStore::in_memory(Clock::default());
        sql::maintenance::check_burial_spares_known_kinds(&store).await;
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
        for (kind, queue, state, count, tagged) in sql::listing::cases::FILL {
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
        for (name, filter, page) in sql::listing::cases::listings() {
            let (sql, values) = sql::listing::listing::<Sqlite>(&filter, page);
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
        for (name, filter) in sql::listing::cases::counts() {
            let (sql, values) = sql::listing::counting::<Sqlite>(&filter);
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
        use sql::held_back_cases::{AGED, FILL, HOLD_SLOT, PAUSE};
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
        for setup in [HOLD_SLOT, PAUSE, AGED, "ANALYZE"] {
            sqlx::query(setup)
                .execute(&store.pool)
                .await
                .expect("set up the backlog");
        }
        let cases = sql::held_back_cases::claims::<Sqlite>().into_iter();
        for sql::held_back_cases::Case {
            name,
            statement,
            values,
            index,
            ..
        } in cases
        {
            let (sql, values) = statement.bind::<Sqlite>(values).expect("bind");
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
