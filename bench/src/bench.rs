//! `errand-bench bench`: each workload through errand and through the fastest raw SQL that does
//! the same work (the limit: the best of several batch sizes and connection counts, on a table
//! with errand's columns and indexes and none of its triggers), on the same database in the
//! same run; medians of several runs.

use std::process::Stdio;
use std::time::{Duration, Instant};

use errand::{Client, Config};
use tokio::io::{AsyncBufReadExt, BufReader};

use futures_util::future::join_all;

use errand_bench::jobs::{fair_noop, latency_probe, limited_noop, noop, now_us, sleeps};
use errand_bench::BoxError;

use crate::postgres_url;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreKind {
    Sqlite,
    Postgres,
}

impl StoreKind {
    fn name(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
        }
    }
}

const ENQUEUE_JOBS: i64 = 10_000;
const ENQUEUE_MANY_JOBS: i64 = 100_000;
const DRAIN_JOBS: i64 = 10_000;
const LATENCY_JOBS: i64 = 500;
const CONCURRENCY: usize = 16;
/// The wide worker's concurrency, the second drain figure.
const WIDE: usize = 128;
/// The scale workloads (PostgreSQL): worker processes, backlog rows of each kind, slow jobs
/// and their concurrency.
const PROCS: [usize; 3] = [1, 2, 4];
const BACKLOG_ROWS: i64 = 1_000_000;
/// The held-back drain's rows of each way a job is held back: four ways, a million in all.
const HELD_BACK_ROWS: i64 = 250_000;
const SLOW_JOBS: i64 = 10_000;
const SLOW_JOB_MS: u64 = 10;
const SLOW_CONCURRENCY: usize = 256;
/// Long jobs shared by several workers: worker processes, the concurrency of each, the jobs and
/// how long each takes.
const SHARED_PROCS: usize = 4;
const SHARED_CONCURRENCY: usize = 4;
const SHARED_JOBS: u64 = 48;
const SHARED_JOB_MS: u64 = 1_000;
const BENCH_SCHEMA: &str = "errand_bench";

/// The batch sizes and connection counts the drain limit tries; it reports the best.
const LIMIT_BATCHES: [i64; 4] = [16, 100, 128, 256];
const LIMIT_CONNECTIONS: [u32; 3] = [1, 4, 16];

/// The limit's table on PostgreSQL: errand's columns, defaults and indexes, none of its
/// triggers (what errand adds per job, such as its NOTIFY trigger, is errand's cost). SQLite's
/// errand table has no triggers, so the limit uses it as it is.
const LIMIT_TABLE_PG: &str = "limit_jobs";

/// A fresh database for one measurement.
pub(crate) struct Target {
    url: String,
    _dir: Option<tempfile::TempDir>,
}

/// A plain connection pool on the target, for the limit's own SQL.
pub(crate) enum Raw {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Target {
    pub(crate) async fn fresh(kind: StoreKind) -> Result<(Target, Client, Raw), BoxError> {
        let (url, dir) = match kind {
            StoreKind::Sqlite => {
                let dir = tempfile::tempdir()?;
                (
                    format!("sqlite://{}", dir.path().join("bench.db").display()),
                    Some(dir),
                )
            }
            StoreKind::Postgres => (postgres_url(), None),
        };
        let raw = match kind {
            StoreKind::Sqlite => {
                // Tuned as errand's own pool is (WAL, synchronous=NORMAL): a limit with
                // stricter durability than errand's would measure the wrong thing.
                let options: sqlx::sqlite::SqliteConnectOptions = url.parse()?;
                let options = options
                    .create_if_missing(true)
                    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(30));
                let pool = sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(4)
                    .connect_with(options)
                    .await?;
                Raw::Sqlite(pool)
            }
            StoreKind::Postgres => {
                let options: sqlx::postgres::PgConnectOptions = url.parse()?;
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(4)
                    .connect_with(options.clone().options([("search_path", BENCH_SCHEMA)]))
                    .await?;
                // The schema is this program's own constant.
                sqlx::query("DROP SCHEMA IF EXISTS errand_bench CASCADE")
                    .execute(&pool)
                    .await?;
                pool.close().await;
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(LIMIT_CONNECTIONS.iter().copied().max().unwrap_or(1))
                    .connect_with(options.options([("search_path", BENCH_SCHEMA)]))
                    .await?;
                Raw::Postgres(pool)
            }
        };
        let client = Client::connect_with(&url, Config::default().schema(BENCH_SCHEMA)).await?;
        raw.create_limit_table().await?;
        Ok((Target { url, _dir: dir }, client, raw))
    }

    /// A worker process on this target running `concurrency` jobs at once, with errand's
    /// other defaults; returns it once it is ready.
    async fn worker(
        &self,
        concurrency: usize,
        poll: Duration,
    ) -> Result<(tokio::process::Child, u32), BoxError> {
        self.worker_on("bench", concurrency, poll).await
    }

    /// A worker process as [`Target::worker`], of the comma-separated `queues`.
    async fn worker_on(
        &self,
        queues: &str,
        concurrency: usize,
        poll: Duration,
    ) -> Result<(tokio::process::Child, u32), BoxError> {
        self.worker_with(queues, concurrency, poll, &[]).await
    }

    /// A worker process as [`Target::worker_on`], given the further flags `extra` (see
    /// `errand-bench worker`).
    pub(crate) async fn worker_with(
        &self,
        queues: &str,
        concurrency: usize,
        poll: Duration,
        extra: &[&str],
    ) -> Result<(tokio::process::Child, u32), BoxError> {
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .args(["worker", "--url", &self.url, "--schema", BENCH_SCHEMA])
            .args(extra)
            .args(["--queue", queues])
            .args([
                "--concurrency",
                &concurrency.to_string(),
                "--poll-ms",
                &poll.as_millis().to_string(),
            ])
            // `ERRAND_BENCH_PREFETCH=N` fixes every worker's buffer, to compare with the
            // worker's own sizing (the default).
            .args(
                std::env::var("ERRAND_BENCH_PREFETCH")
                    .ok()
                    .map(|n| ["--prefetch".to_owned(), n])
                    .into_iter()
                    .flatten(),
            )
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().ok_or("the worker exited at once")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let line = BufReader::new(stdout).lines().next_line().await?;
        if line.as_deref() != Some("ready") {
            return Err(format!("the worker did not start: {line:?}").into());
        }
        Ok((child, pid))
    }
}

impl Raw {
    pub(crate) async fn scalar(&self, sqlite: &str, postgres: &str) -> Result<i64, BoxError> {
        // The table names spliced into the limit's statements are this program's constants.
        Ok(match self {
            Raw::Sqlite(pool) => sqlx::query_scalar(sqlite).fetch_one(pool).await?,
            Raw::Postgres(pool) => sqlx::query_scalar(postgres).fetch_one(pool).await?,
        })
    }

    /// Jobs not yet completed: counted through the three partial indexes (available, due,
    /// running), so
    /// that watching the drain costs the database next to nothing.
    /// (Waiting jobs count when due within the hour: the backlog's scheduled jobs, a day
    /// away, do not, and are not walked.)
    async fn remaining(&self) -> Result<i64, BoxError> {
        let sqlite = "SELECT (SELECT count(*) FROM errand_jobs WHERE state = 'available')
                        + (SELECT count(*) FROM errand_jobs WHERE state IN ('scheduled', 'retryable'))
                        + (SELECT count(*) FROM errand_jobs WHERE state = 'running')";
        let postgres = "SELECT (SELECT count(*) FROM errand_jobs WHERE state = 'available')
                        + (SELECT count(*) FROM errand_jobs WHERE state IN ('scheduled', 'retryable')
                                                             AND run_at < errand_now_ms() + 3600000)
                        + (SELECT count(*) FROM errand_jobs WHERE state = 'running')";
        self.scalar(sqlite, postgres).await
    }

    /// Whether a job is still to complete: two probes of an index, so that watching a drain
    /// every few milliseconds costs the database next to nothing.
    async fn any_left(&self) -> Result<bool, BoxError> {
        let sql = "SELECT CASE WHEN EXISTS (SELECT 1 FROM errand_jobs WHERE state = 'available')
                            OR EXISTS (SELECT 1 FROM errand_jobs WHERE state = 'running')
                          THEN CAST(1 AS BIGINT) ELSE CAST(0 AS BIGINT) END";
        Ok(self.scalar(sql, sql).await? == 1)
    }

    /// Whether a job of `kind` is still to complete (two probes of indexes).
    async fn any_left_of(&self, kind: &str) -> Result<bool, BoxError> {
        let sql = |p: &str| {
            format!(
                "SELECT CASE WHEN EXISTS (SELECT 1 FROM errand_jobs WHERE kind = {p} AND state = 'available')
                              OR EXISTS (SELECT 1 FROM errand_jobs WHERE kind = {p} AND state = 'running')
                            THEN CAST(1 AS BIGINT) ELSE CAST(0 AS BIGINT) END"
            )
        };
        let left: i64 = match self {
            Raw::Sqlite(pool) => {
                sqlx::query_scalar(&sql("?1"))
                    .bind(kind)
                    .fetch_one(pool)
                    .await?
            }
            Raw::Postgres(pool) => {
                sqlx::query_scalar(&sql("$1"))
                    .bind(kind)
                    .fetch_one(pool)
                    .await?
            }
        };
        Ok(left == 1)
    }

    /// The table the limit works on (see [`LIMIT_TABLE_PG`]).
    fn table(&self) -> &'static str {
        match self {
            Raw::Sqlite(_) => "errand_jobs",
            Raw::Postgres(_) => LIMIT_TABLE_PG,
        }
    }

    async fn create_limit_table(&self) -> Result<(), BoxError> {
        if let Raw::Postgres(pool) = self {
            // LIKE copies columns, defaults and indexes, never triggers.
            sqlx::query("CREATE TABLE limit_jobs (LIKE errand_jobs INCLUDING ALL)")
                .execute(pool)
                .await?;
        }
        Ok(())
    }

    /// The limit of `enqueue`: one minimal prepared insert per job, each its own statement,
    /// from `connections` connections at once.
    async fn insert_one_by_one(&self, jobs: i64, connections: u32) -> Result<(), BoxError> {
        let table = self.table();
        let per = jobs / i64::from(connections);
        let tasks = (0..i64::from(connections)).map(|c| async move {
            for n in c * per..(c + 1) * per {
                let args = format!("{{\"order_id\":{n}}}");
                let now = now_us() / 1000;
                match self {
                    Raw::Sqlite(pool) => {
                        sqlx::query(&format!(
                            "INSERT INTO {table} (kind, queue, args, state, priority, max_attempts, run_at, created_at)
                             VALUES ('bench_noop', 'bench', ?1, 'available', 5, 26, ?2, ?2)"
                        ))
                        .bind(args)
                        .bind(now)
                        .execute(pool)
                        .await?;
                    }
                    Raw::Postgres(pool) => {
                        sqlx::query(&format!(
                            "INSERT INTO {table} (kind, queue, args, state, priority, max_attempts, run_at, created_at)
                             VALUES ('bench_noop', 'bench', $1::jsonb, 'available', 5, 26, $2, $2)"
                        ))
                        .bind(args)
                        .bind(now)
                        .execute(pool)
                        .await?;
                    }
                }
            }
            Ok::<(), BoxError>(())
        });
        for done in join_all(tasks).await {
            done?;
        }
        Ok(())
    }

    /// A limit of `enqueue_many`: multi-row inserts of 1,000 jobs.
    async fn insert_in_chunks(&self, jobs: i64) -> Result<(), BoxError> {
        let table = self.table();
        for start in (0..jobs).step_by(1000) {
            let args: Vec<String> = (start..(start + 1000).min(jobs))
                .map(|n| format!("{{\"order_id\":{n}}}"))
                .collect();
            let now = now_us() / 1000;
            match self {
                Raw::Sqlite(pool) => {
                    let array = format!("[{}]", args.join(","));
                    sqlx::query(&format!(
                        "INSERT INTO {table} (kind, queue, args, state, priority, max_attempts, run_at, created_at)
                         SELECT 'bench_noop', 'bench', value, 'available', 5, 26, ?2, ?2 FROM json_each(?1)"
                    ))
                    .bind(array)
                    .bind(now)
                    .execute(pool)
                    .await?;
                }
                Raw::Postgres(pool) => {
                    sqlx::query(&format!(
                        "INSERT INTO {table} (kind, queue, args, state, priority, max_attempts, run_at, created_at)
                         SELECT 'bench_noop', 'bench', a::jsonb, 'available', 5, 26, $2, $2 FROM unnest($1::text[]) AS a"
                    ))
                    .bind(&args)
                    .bind(now)
                    .execute(pool)
                    .await?;
                }
            }
        }
        Ok(())
    }

    /// A limit of `enqueue_many` on PostgreSQL: `COPY` of every job in one stream. `None` on
    /// SQLite, which has no `COPY`.
    async fn copy_in(&self, jobs: i64) -> Result<Option<()>, BoxError> {
        let Raw::Postgres(pool) = self else {
            return Ok(None);
        };
        let now = now_us() / 1000;
        let mut data = String::with_capacity(jobs as usize * 64);
        for n in 0..jobs {
            data.push_str(&format!(
                "bench_noop\tbench\t{{\"order_id\":{n}}}\tavailable\t5\t26\t{now}\t{now}\n"
            ));
        }
        let mut conn = pool.acquire().await?;
        let mut copy = conn
            .copy_in_raw(
                "COPY limit_jobs (kind, queue, args, state, priority, max_attempts, run_at, created_at) FROM STDIN",
            )
            .await?;
        copy.send(data.as_bytes()).await?;
        copy.finish().await?;
        Ok(Some(()))
    }

    /// Adds `rows` completed jobs (finished now, so retention keeps them) and `rows` jobs
    /// scheduled a day from now to errand's table, and analyzes it.
    async fn fill_backlog(&self, rows: i64) -> Result<(), BoxError> {
        let Raw::Postgres(pool) = self else {
            return Err("the backlog workload runs on PostgreSQL".into());
        };
        sqlx::query(
            "INSERT INTO errand_jobs (kind, queue, args, state, priority, max_attempts, attempt,
                                      run_at, created_at, attempted_at, finished_at)
             SELECT 'bench_backlog', 'bench', jsonb_build_object('order_id', g),
                    CASE WHEN g % 2 = 0 THEN 'completed' ELSE 'scheduled' END, 5, 26,
                    CASE WHEN g % 2 = 0 THEN 1 ELSE 0 END,
                    errand_now_ms() + CASE WHEN g % 2 = 0 THEN 0 ELSE 86400000 END,
                    errand_now_ms(), errand_now_ms(),
                    CASE WHEN g % 2 = 0 THEN errand_now_ms() END
             FROM generate_series(1, $1 * 2) AS g",
        )
        .bind(rows)
        .execute(pool)
        .await?;
        sqlx::query("VACUUM ANALYZE errand_jobs")
            .execute(pool)
            .await?;
        Ok(())
    }

    /// Adds `rows` jobs held back in each of four ways to errand's table, and analyzes it:
    /// available under a limit whose 64 slots running jobs hold (`bench_limited`, their leases
    /// a day long), available in a paused queue (`bench_paused`, which the workers serve),
    /// pending on a parent, and scheduled for tomorrow. None is a no-op job.
    async fn fill_held_back(&self, rows: i64) -> Result<(), BoxError> {
        let Raw::Postgres(pool) = self else {
            return Err("the held-back workload runs on PostgreSQL".into());
        };
        let fill = "INSERT INTO errand_jobs (kind, queue, args, state, priority, max_attempts,
                                            attempt, run_at, created_at, attempted_at,
                                            lease_until, limit_key, waiting_on)
             SELECT $1, $2, jsonb_build_object('order_id', g, 'ms', 1), $3, 5, 26,
                    CASE WHEN $3 = 'running' THEN 1 ELSE 0 END, errand_now_ms() + $4,
                    errand_now_ms(), CASE WHEN $3 = 'running' THEN errand_now_ms() END,
                    CASE WHEN $3 = 'running' THEN errand_now_ms() + 86400000 END, $5, $6
             FROM generate_series(1, $7) AS g";
        let limited = Some("bench_limited");
        // kind, queue, state, run time from now (ms), limit key, parents waited on, rows.
        type Way = (
            &'static str,
            &'static str,
            &'static str,
            i64,
            Option<&'static str>,
            i32,
            i64,
        );
        let ways: [Way; 5] = [
            ("bench_limited", "bench", "running", 0, limited, 0, 64),
            ("bench_limited", "bench", "available", 0, limited, 0, rows),
            ("bench_sleep", "bench_paused", "available", 0, None, 0, rows),
            ("bench_sleep", "bench", "pending", 0, None, 1, rows),
            (
                "bench_sleep",
                "bench",
                "scheduled",
                86_400_000,
                None,
                0,
                rows,
            ),
        ];
        for (kind, queue, state, offset, limit_key, waiting_on, count) in ways {
            sqlx::query(fill)
                .bind(kind)
                .bind(queue)
                .bind(state)
                .bind(offset)
                .bind(limit_key)
                .bind(waiting_on)
                .bind(count)
                .execute(pool)
                .await?;
        }
        for setup in [
            "INSERT INTO errand_limit_slots (limit_key, purpose, n, job_id)
             SELECT 'bench_limited', 'running', row_number() OVER (ORDER BY id), id
             FROM errand_jobs WHERE state = 'running'",
            "INSERT INTO errand_queues (queue, paused_at, updated_at)
             VALUES ('bench_paused', errand_now_ms(), errand_now_ms())",
            "VACUUM ANALYZE errand_jobs",
        ] {
            sqlx::query(setup).execute(pool).await?;
        }
        Ok(())
    }

    /// Adds `jobs` available no-op jobs to errand's table in one statement, so that they all
    /// become visible at once.
    async fn fill_errand(&self, jobs: i64) -> Result<(), BoxError> {
        let sqlite = "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < ?1)
             INSERT INTO errand_jobs (kind, queue, args, state, priority, max_attempts, run_at, created_at)
             SELECT 'bench_noop', 'bench', json_object('order_id', n), 'available', 5, 26,
                    unixepoch('subsec') * 1000, unixepoch('subsec') * 1000 FROM g";
        let postgres = "INSERT INTO errand_jobs (kind, queue, args, state, priority, max_attempts, run_at, created_at)
             SELECT 'bench_noop', 'bench', jsonb_build_object('order_id', g), 'available', 5, 26,
                    errand_now_ms(), errand_now_ms() FROM generate_series(1, $1) AS g";
        match self {
            Raw::Sqlite(pool) => {
                sqlx::query(sqlite).bind(jobs).execute(pool).await?;
            }
            Raw::Postgres(pool) => {
                sqlx::query(postgres).bind(jobs).execute(pool).await?;
            }
        }
        Ok(())
    }

    /// The milliseconds from the first claim of a job of `kind` to the last completion, on
    /// the database's clock.
    async fn drain_span_ms(&self, kind: &str) -> Result<i64, BoxError> {
        let sqlite = "SELECT max(finished_at) - min(attempted_at) FROM errand_jobs
                      WHERE kind = ?1 AND state = 'completed'";
        let postgres = "SELECT max(finished_at) - min(attempted_at) FROM errand_jobs
                        WHERE kind = $1 AND state = 'completed'";
        match self {
            Raw::Sqlite(pool) => Ok(sqlx::query_scalar(sqlite)
                .bind(kind)
                .fetch_one(pool)
                .await?),
            Raw::Postgres(pool) => Ok(sqlx::query_scalar(postgres)
                .bind(kind)
                .fetch_one(pool)
                .await?),
        }
    }

    /// Fills the limit's table with `jobs` available jobs.
    async fn fill(&self, jobs: i64) -> Result<(), BoxError> {
        self.insert_in_chunks(jobs).await
    }

    /// A limit of `drain`: `connections` connections each claim `batch` jobs (`FOR UPDATE SKIP
    /// LOCKED` on PostgreSQL) and complete them in one statement, until nothing is left. With
    /// `batch` 0, each round trip claims and completes one job in one statement: the floor.
    async fn claim_and_complete_all(&self, batch: i64, connections: u32) -> Result<(), BoxError> {
        let table = self.table();
        let one = |_: u32| async move {
            loop {
                let now = now_us() / 1000;
                let done = match self {
                    Raw::Sqlite(pool) if batch == 0 => sqlx::query(&format!(
                        "UPDATE {table} SET state = 'completed', attempt = attempt + 1, attempted_at = ?1, finished_at = ?1
                         WHERE id = (SELECT id FROM {table} WHERE queue = 'bench' AND state = 'available'
                                     ORDER BY priority, run_at, id LIMIT 1)"
                    ))
                    .bind(now)
                    .execute(pool)
                    .await?
                    .rows_affected() as usize,
                    Raw::Postgres(pool) if batch == 0 => sqlx::query(&format!(
                        "UPDATE {table} SET state = 'completed', attempt = attempt + 1, attempted_at = $1, finished_at = $1
                         WHERE id = (SELECT id FROM {table} WHERE queue = 'bench' AND state = 'available'
                                     ORDER BY priority, run_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)"
                    ))
                    .bind(now)
                    .execute(pool)
                    .await?
                    .rows_affected() as usize,
                    Raw::Sqlite(pool) => {
                        let ids: Vec<i64> = sqlx::query_scalar(&format!(
                            "UPDATE {table} SET state = 'running', attempt = attempt + 1, attempted_at = ?2
                             WHERE id IN (SELECT id FROM {table} WHERE queue = 'bench' AND state = 'available'
                                          ORDER BY priority, run_at, id LIMIT ?1)
                             RETURNING id"
                        ))
                        .bind(batch)
                        .bind(now)
                        .fetch_all(pool)
                        .await?;
                        let list = format!(
                            "[{}]",
                            ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
                        );
                        sqlx::query(&format!(
                            "UPDATE {table} SET state = 'completed', finished_at = ?2
                             WHERE id IN (SELECT value FROM json_each(?1))"
                        ))
                        .bind(list)
                        .bind(now)
                        .execute(pool)
                        .await?;
                        ids.len()
                    }
                    Raw::Postgres(pool) => {
                        let ids: Vec<i64> = sqlx::query_scalar(&format!(
                            "UPDATE {table} SET state = 'running', attempt = attempt + 1, attempted_at = $2
                             WHERE id IN (SELECT id FROM {table} WHERE queue = 'bench' AND state = 'available'
                                          ORDER BY priority, run_at, id LIMIT $1 FOR UPDATE SKIP LOCKED)
                             RETURNING id"
                        ))
                        .bind(batch)
                        .bind(now)
                        .fetch_all(pool)
                        .await?;
                        sqlx::query(&format!(
                            "UPDATE {table} SET state = 'completed', finished_at = $2 WHERE id = ANY($1)"
                        ))
                        .bind(&ids)
                        .bind(now)
                        .execute(pool)
                        .await?;
                        ids.len()
                    }
                };
                if done == 0 {
                    return Ok::<(), BoxError>(());
                }
            }
        };
        for done in join_all((0..connections).map(one)).await {
            done?;
        }
        Ok(())
    }

    /// Jobs of the limit's table not yet completed.
    async fn limit_remaining(&self) -> Result<i64, BoxError> {
        let sql = format!(
            "SELECT count(*) FROM {} WHERE state <> 'completed'",
            self.table()
        );
        self.scalar(&sql, &sql).await
    }

    async fn create_latency_table(&self) -> Result<(), BoxError> {
        let sql =
            "CREATE TABLE bench_latency (sent_us BIGINT NOT NULL, started_us BIGINT NOT NULL)";
        match self {
            Raw::Sqlite(pool) => {
                sqlx::query(sql).execute(pool).await?;
            }
            Raw::Postgres(pool) => {
                sqlx::query(sql).execute(pool).await?;
            }
        }
        Ok(())
    }

    async fn latencies_ms(&self) -> Result<Vec<f64>, BoxError> {
        let sql = "SELECT started_us - sent_us FROM bench_latency";
        let micros: Vec<i64> = match self {
            Raw::Sqlite(pool) => sqlx::query_scalar(sql).fetch_all(pool).await?,
            Raw::Postgres(pool) => sqlx::query_scalar(sql).fetch_all(pool).await?,
        };
        Ok(micros.into_iter().map(|us| us as f64 / 1000.0).collect())
    }
}

/// Polls until `done` or the deadline.
async fn wait_until<F, Fut>(limit: Duration, mut done: F) -> Result<(), BoxError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, BoxError>>,
{
    let deadline = Instant::now() + limit;
    while !done().await? {
        if Instant::now() > deadline {
            return Err("timed out".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

fn rate(jobs: i64, took: Duration) -> f64 {
    jobs as f64 / took.as_secs_f64()
}

/// Peak resident memory of process `pid`, in MB.
fn peak_rss_mb(pid: u32) -> Result<f64, BoxError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or("no VmHWM in /proc/<pid>/status")?;
    Ok(kb / 1024.0)
}

/// One run of every workload on `kind`: (workload, value, limit).
async fn measure(kind: StoreKind) -> Result<Vec<(String, f64, Option<f64>)>, BoxError> {
    let mut figures: Vec<(String, f64, Option<f64>)> = Vec::new();
    let mut push =
        |name: &str, value: f64, limit: Option<f64>| figures.push((name.to_owned(), value, limit));

    // Each workload gets a fresh database, and drops its clients and pools when done.
    let enqueue = {
        let (_t, client, _raw) = Target::fresh(kind).await?;
        let started = Instant::now();
        for n in 0..ENQUEUE_JOBS {
            noop::with(n).enqueue(&client).await?;
        }
        rate(ENQUEUE_JOBS, started.elapsed())
    };
    // errand enqueues one job at a time from one task: its limit is one connection's prepared
    // inserts; sixteen connections' is shown beside it.
    let mut singles = Vec::new();
    for connections in [1, 16] {
        let (_t, _client, raw) = Target::fresh(kind).await?;
        let started = Instant::now();
        raw.insert_one_by_one(ENQUEUE_JOBS, connections).await?;
        singles.push(rate(ENQUEUE_JOBS, started.elapsed()));
    }
    push("enqueue", enqueue, Some(singles[0]));
    push("limit_enqueue_c16", singles[1], None);

    let many = {
        let (_t, client, _raw) = Target::fresh(kind).await?;
        let started = Instant::now();
        client
            .enqueue_many((0..ENQUEUE_MANY_JOBS).map(noop::with))
            .await?;
        rate(ENQUEUE_MANY_JOBS, started.elapsed())
    };
    let chunks = {
        let (_t, _client, raw) = Target::fresh(kind).await?;
        let started = Instant::now();
        raw.insert_in_chunks(ENQUEUE_MANY_JOBS).await?;
        rate(ENQUEUE_MANY_JOBS, started.elapsed())
    };
    let copy = {
        let (_t, _client, raw) = Target::fresh(kind).await?;
        let started = Instant::now();
        raw.copy_in(ENQUEUE_MANY_JOBS)
            .await?
            .map(|()| rate(ENQUEUE_MANY_JOBS, started.elapsed()))
    };
    push("enqueue_many", many, Some(chunks.max(copy.unwrap_or(0.0))));
    push("limit_enqueue_many_rows", chunks, None);
    if let Some(copy) = copy {
        push("limit_enqueue_many_copy", copy, None);
    }

    let (drain, rss) = errand_drain(kind, CONCURRENCY, 1, Backlog::None).await?;
    let (drain_wide, _) = errand_drain(kind, WIDE, 1, Backlog::None).await?;
    // The drain's limit: the best of every batch size and connection count tried, each shown;
    // beside it the floor, one job claimed and completed per round trip.
    let mut tried = Vec::new();
    for batch in LIMIT_BATCHES {
        for connections in LIMIT_CONNECTIONS {
            let name = format!("limit_drain_b{batch}_c{connections}");
            tried.push((name, drain_limit(kind, batch, connections).await?));
        }
    }
    for connections in [1, 16] {
        let name = format!("limit_drain_floor_c{connections}");
        tried.push((name, drain_limit(kind, 0, connections).await?));
    }
    let best = tried
        .iter()
        .filter(|(name, _)| !name.contains("floor"))
        .map(|(_, value)| *value)
        .fold(0.0, f64::max);
    push("drain", drain, Some(best));
    push("drain_c128", drain_wide, Some(best));
    let from_start = drain_from_start(kind, CONCURRENCY).await?;
    push("drain_from_start", from_start, Some(best));
    let from_start_wide = drain_from_start(kind, WIDE).await?;
    push("drain_c128_from_start", from_start_wide, Some(best));
    for (name, value) in &tried {
        push(name, *value, None);
    }

    // How cost grows, on PostgreSQL: more worker processes on one database; a table holding
    // a million completed and a million scheduled jobs; slow jobs at a wide concurrency.
    if kind == StoreKind::Postgres {
        for procs in PROCS {
            let (rate, _) = errand_drain(kind, CONCURRENCY, procs, Backlog::None).await?;
            push(&format!("drain_procs_{procs}"), rate, Some(best));
        }
        let (backlog, _) =
            errand_drain(kind, CONCURRENCY, 1, Backlog::Finished(BACKLOG_ROWS)).await?;
        push("drain_backlog", backlog, Some(drain));
        let held = Backlog::HeldBack(HELD_BACK_ROWS);
        let (held_back, _) = errand_drain(kind, CONCURRENCY, 1, held).await?;
        push("drain_held_back", held_back, Some(drain));
        let mixed = mixed_drain(kind).await?;
        push("drain_mixed", mixed, Some(drain));
        let slow = slow_drain(kind).await?;
        let ideal = SLOW_CONCURRENCY as f64 * 1000.0 / SLOW_JOB_MS as f64;
        push("drain_slow_jobs", slow, Some(ideal));
        let shared = shared_slow_drain(kind).await?;
        let ideal = (SHARED_PROCS * SHARED_CONCURRENCY) as f64 * 1000.0 / SHARED_JOB_MS as f64;
        push("drain_long_jobs_shared", shared, Some(ideal));
    }

    // SQLite has no notifications between processes: an idle worker there finds new jobs by
    // polling, so poll often; on PostgreSQL, NOTIFY wakes it and the poll stays slow.
    let mut latencies = {
        let (target, client, raw) = Target::fresh(kind).await?;
        raw.create_latency_table().await?;
        let poll = if kind == StoreKind::Sqlite {
            Duration::from_millis(5)
        } else {
            Duration::from_secs(1)
        };
        let (mut worker, _) = target.worker(CONCURRENCY, poll).await?;
        tokio::time::sleep(Duration::from_millis(300)).await; // let it claim nothing and go idle
        let mut ticks = tokio::time::interval(Duration::from_millis(5));
        for _ in 0..LATENCY_JOBS {
            ticks.tick().await;
            latency_probe::enqueue(&client, now_us()).await?;
        }
        let counted = "SELECT count(*) FROM bench_latency";
        wait_until(Duration::from_secs(60), || async {
            Ok(raw.scalar(counted, counted).await? == LATENCY_JOBS)
        })
        .await?;
        worker.kill().await?;
        raw.latencies_ms().await?
    };
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1)];
    push("latency_p50", at(0.50), None);
    push("latency_p99", at(0.99), None);
    push("latency_max", at(1.0), None);
    push("rss", rss, None);
    Ok(figures)
}

/// What else the table holds during a drain.
#[derive(Clone, Copy)]
enum Backlog {
    None,
    /// This many completed jobs (within retention) and this many scheduled for tomorrow.
    Finished(i64),
    /// This many jobs held back in each of four ways (see [`Raw::fill_held_back`]).
    HeldBack(i64),
}

/// errand's drain of [`DRAIN_JOBS`] no-op jobs by `procs` worker processes of `concurrency`
/// each, in jobs/s, and the first worker's peak RSS in MB. With `backlog`, the table also
/// holds that many completed jobs (within retention) and that many scheduled for later.
///
/// The workers start first and wait, idle; the jobs arrive in one committed statement; the
/// rate is taken from the database's own times, the first claim's to the last completion's,
/// so that no process's start-up counts.
async fn errand_drain(
    kind: StoreKind,
    concurrency: usize,
    procs: usize,
    backlog: Backlog,
) -> Result<(f64, f64), BoxError> {
    let (target, _client, raw) = Target::fresh(kind).await?;
    let queues = match backlog {
        Backlog::None => "bench",
        Backlog::Finished(rows) => {
            raw.fill_backlog(rows).await?;
            "bench"
        }
        Backlog::HeldBack(rows) => {
            raw.fill_held_back(rows).await?;
            "bench,bench_paused"
        }
    };
    let mut workers = Vec::new();
    for _ in 0..procs {
        let poll = Duration::from_millis(100);
        workers.push(target.worker_on(queues, concurrency, poll).await?);
    }
    raw.fill_errand(DRAIN_JOBS).await?;
    wait_until(Duration::from_secs(600), || async {
        Ok(!raw.any_left_of("bench_noop").await?)
    })
    .await?;
    let took_ms = raw.drain_span_ms("bench_noop").await?;
    let drain = DRAIN_JOBS as f64 * 1000.0 / took_ms.max(1) as f64;
    let rss = peak_rss_mb(workers[0].1)?;
    for (mut worker, _) in workers {
        worker.kill().await?;
    }
    Ok((drain, rss))
}

/// errand's drain of [`DRAIN_JOBS`] no-op jobs at `concurrency`, in jobs/s, timed as a user
/// with a backlog sees it: the jobs are committed, then the clock starts, a worker process
/// starts, and the clock stops when this client sees the last job completed.
async fn drain_from_start(kind: StoreKind, concurrency: usize) -> Result<f64, BoxError> {
    let (target, _client, raw) = Target::fresh(kind).await?;
    raw.fill_errand(DRAIN_JOBS).await?;
    let started = Instant::now();
    let (mut worker, _) = target
        .worker(concurrency, Duration::from_millis(100))
        .await?;
    let deadline = started + Duration::from_secs(600);
    while raw.any_left().await? {
        if Instant::now() > deadline {
            return Err("the drain timed out".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    worker.kill().await?;
    Ok(rate(DRAIN_JOBS, took))
}

/// errand's drain of [`SLOW_JOBS`] jobs that each sleep [`SLOW_JOB_MS`], at
/// [`SLOW_CONCURRENCY`], in jobs/s, timed on the database's clock as the other drains.
async fn slow_drain(kind: StoreKind) -> Result<f64, BoxError> {
    let (target, client, raw) = Target::fresh(kind).await?;
    let (mut worker, _) = target
        .worker(SLOW_CONCURRENCY, Duration::from_millis(100))
        .await?;
    client
        .enqueue_many((0..SLOW_JOBS).map(|_| sleeps::with(SLOW_JOB_MS)))
        .await?;
    wait_until(Duration::from_secs(600), || async {
        Ok(raw.remaining().await? == 0)
    })
    .await?;
    let took_ms = raw.drain_span_ms("bench_sleep").await?;
    worker.kill().await?;
    Ok(SLOW_JOBS as f64 * 1000.0 / took_ms.max(1) as f64)
}

/// errand's drain of [`DRAIN_JOBS`] jobs at [`CONCURRENCY`], a third plain no-op jobs, a third
/// taking turns among 100 tenants (`fair_by`), a third under a limit of 64 at once, in jobs/s,
/// on the database's clock as the other drains (PostgreSQL).
async fn mixed_drain(kind: StoreKind) -> Result<f64, BoxError> {
    let (target, client, raw) = Target::fresh(kind).await?;
    let (mut worker, _) = target
        .worker(CONCURRENCY, Duration::from_millis(100))
        .await?;
    let third = DRAIN_JOBS / 3;
    // One transaction, so that all three kinds become available at once.
    let mut tx = client.begin::<sqlx::Postgres>().await?;
    let plain = (0..DRAIN_JOBS - 2 * third).map(noop::with);
    client.enqueue_many_tx(&mut tx, plain).await?;
    let fair = (0..third).map(|n| fair_noop::with(n % 100, n));
    client.enqueue_many_tx(&mut tx, fair).await?;
    let limited = (0..third).map(limited_noop::with);
    client.enqueue_many_tx(&mut tx, limited).await?;
    tx.commit().await?;
    wait_until(Duration::from_secs(600), || async {
        Ok(!raw.any_left().await?)
    })
    .await?;
    let mut took_ms = 0;
    for kind in ["bench_noop", "bench_fair", "bench_limited"] {
        took_ms = took_ms.max(raw.drain_span_ms(kind).await?);
    }
    worker.kill().await?;
    Ok(DRAIN_JOBS as f64 * 1000.0 / took_ms.max(1) as f64)
}

/// [`SHARED_JOBS`] jobs of [`SHARED_JOB_MS`] each, drained by [`SHARED_PROCS`] workers of
/// [`SHARED_CONCURRENCY`], in jobs/s, from the enqueue's commit to the last completion this
/// client sees. A worker that claimed jobs it cannot start while another sits idle makes the
/// drain take longer than the slots need.
async fn shared_slow_drain(kind: StoreKind) -> Result<f64, BoxError> {
    let (target, client, raw) = Target::fresh(kind).await?;
    let mut workers = Vec::new();
    for _ in 0..SHARED_PROCS {
        let poll = Duration::from_millis(100);
        workers.push(target.worker(SHARED_CONCURRENCY, poll).await?);
    }
    client
        .enqueue_many((0..SHARED_JOBS).map(|_| sleeps::with(SHARED_JOB_MS)))
        .await?;
    let started = Instant::now();
    wait_until(Duration::from_secs(600), || async {
        Ok(!raw.any_left().await?)
    })
    .await?;
    let took = started.elapsed();
    for (mut worker, _) in workers {
        worker.kill().await?;
    }
    Ok(rate(SHARED_JOBS as i64, took))
}

/// The limit's drain of [`DRAIN_JOBS`] jobs, in jobs/s, claiming `batch` at a time (0: one
/// per round trip) over `connections` connections.
async fn drain_limit(kind: StoreKind, batch: i64, connections: u32) -> Result<f64, BoxError> {
    let (_t, _client, raw) = Target::fresh(kind).await?;
    raw.fill(DRAIN_JOBS).await?;
    let started = Instant::now();
    raw.claim_and_complete_all(batch, connections).await?;
    let took = started.elapsed();
    let left = raw.limit_remaining().await?;
    if left != 0 {
        return Err(format!("the limit's drain left {left} jobs").into());
    }
    Ok(rate(DRAIN_JOBS, took))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn unit(workload: &str) -> &'static str {
    match workload {
        "rss" => "MB",
        w if w.starts_with("latency") => "ms",
        _ => "jobs/s",
    }
}

pub(crate) async fn run(stores: &[StoreKind], runs: usize) -> Result<(), BoxError> {
    let runs = runs.max(1);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "# errand-bench: medians of {runs} runs, {cores} cores, release build: {}",
        !cfg!(debug_assertions)
    );
    let mut results = Vec::new();
    for &kind in stores {
        let mut all: Vec<Vec<(String, f64, Option<f64>)>> = Vec::new();
        for run in 1..=runs {
            eprintln!("{}: run {run} of {runs}", kind.name());
            all.push(measure(kind).await?);
        }
        println!(
            "\n## {}\n\n| workload | errand | limit | errand / limit |\n| --- | --- | --- | --- |",
            kind.name()
        );
        for (i, (workload, _, limit)) in all[0].iter().enumerate() {
            let value = median(&mut all.iter().map(|r| r[i].1).collect::<Vec<_>>());
            let limit =
                limit.map(|_| median(&mut all.iter().filter_map(|r| r[i].2).collect::<Vec<_>>()));
            let unit = unit(workload);
            match limit {
                Some(limit) => println!(
                    "| {workload} | {value:.0} {unit} | {limit:.0} {unit} | {:.2} |",
                    value / limit
                ),
                None => println!("| {workload} | {value:.2} {unit} | | |"),
            }
            results.push((kind.name(), workload.clone(), value, unit, limit));
        }
    }
    println!();
    for (store, workload, value, unit, limit) in results {
        match limit {
            Some(limit) => println!(
                "RESULT store={store} workload={workload} value={value:.0} unit={unit} limit={limit:.0} ratio={:.2}",
                value / limit
            ),
            None => println!("RESULT store={store} workload={workload} value={value:.2} unit={unit}"),
        }
    }
    Ok(())
}
