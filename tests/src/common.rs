//! Fresh stores, a record of runs shared with the jobs, and waits with deadlines.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use errand::{Client, Config, JobId, JobInfo, Worker};
use tempfile::TempDir;
use tokio::sync::Semaphore;

/// A store for one test: a client, and what must live as long as it.
pub struct TestStore {
    pub client: Client,
    /// The database URL, for tests that open the same database another way.
    pub url: Option<String>,
    /// The PostgreSQL schema that holds this test's tables.
    pub schema: Option<String>,
    _dir: Option<TempDir>,
}

impl TestStore {
    /// A connection pool on the same database, for tests that check it with SQL of their own.
    pub async fn postgres_pool(&self) -> sqlx::PgPool {
        let url = self.url.as_deref().expect("a PostgreSQL store");
        let schema = self.schema.as_deref().expect("a PostgreSQL store");
        let options: sqlx::postgres::PgConnectOptions = url.parse().expect("URL");
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect_with(options.options([("search_path", schema)]))
            .await
            .expect("connect to PostgreSQL")
    }

    /// Runs `statement` (no parameters) on the store's own database, SQLite or PostgreSQL, as
    /// an earlier build or an operator would; panics on the test client, which has no SQL.
    pub async fn sql(&self, statement: &str) {
        match (&self.url, &self.schema) {
            (Some(_), Some(_)) => {
                sqlx::raw_sql(statement)
                    .execute(&self.postgres_pool().await)
                    .await
                    .unwrap_or_else(|e| panic!("{statement}: {e}"));
            }
            (Some(url), None) => {
                let pool = sqlx::SqlitePool::connect(url).await.expect("open SQLite");
                sqlx::raw_sql(statement)
                    .execute(&pool)
                    .await
                    .unwrap_or_else(|e| panic!("{statement}: {e}"));
                pool.close().await;
            }
            _ => panic!("the test client's store has no SQL of its own"),
        }
    }

    /// The one integer `query` returns, read from the store's own database.
    pub async fn scalar(&self, query: &str) -> i64 {
        match (&self.url, &self.schema) {
            (Some(_), Some(_)) => sqlx::query_scalar(query)
                .fetch_one(&self.postgres_pool().await)
                .await
                .unwrap_or_else(|e| panic!("{query}: {e}")),
            (Some(url), None) => {
                let pool = sqlx::SqlitePool::connect(url).await.expect("open SQLite");
                let value = sqlx::query_scalar(query)
                    .fetch_one(&pool)
                    .await
                    .unwrap_or_else(|e| panic!("{query}: {e}"));
                pool.close().await;
                value
            }
            _ => panic!("the test client's store has no SQL of its own"),
        }
    }

    /// Drops a PostgreSQL test's schema; nothing for the other stores.
    pub async fn clean_up(self) {
        if let (Some(_), Some(schema)) = (&self.url, &self.schema) {
            let pool = self.postgres_pool().await;
            let drop: String =
                sqlx::query_scalar("SELECT format('DROP SCHEMA %I CASCADE', $1::text)")
                    .bind(schema)
                    .fetch_one(&pool)
                    .await
                    .expect("build DROP SCHEMA");
            sqlx::raw_sql(&drop)
                .execute(&pool)
                .await
                .expect("drop the test schema");
        }
    }
}

/// The PostgreSQL server the tests use: `ERRAND_TEST_DATABASE_URL`, or the local one.
pub fn postgres_url() -> String {
    std::env::var("ERRAND_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A fresh schema on the test PostgreSQL server, or `None` (with a note on stderr) when no
/// server answers. When `CI` is set, a missing server fails the test instead.
pub async fn postgres() -> Option<TestStore> {
    let url = postgres_url();
    let schema = format!("errand_test_{}_{}", std::process::id(), unique());
    match Client::connect_with(&url, Config::default().schema(&schema).max_connections(4)).await {
        Ok(client) => Some(TestStore {
            client,
            url: Some(url),
            schema: Some(schema),
            _dir: None,
        }),
        Err(err) if std::env::var_os("CI").is_some() => {
            panic!("PostgreSQL is required when CI is set, but {url} did not answer: {err}")
        }
        Err(err) => {
            eprintln!(
                "SKIPPED (PostgreSQL): no server at {url} ({err}); start one or set ERRAND_TEST_DATABASE_URL"
            );
            None
        }
    }
}

fn unique() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}_{nanos}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A fresh SQLite file in its own temporary folder.
pub async fn sqlite() -> TestStore {
    let dir = tempfile::tempdir().expect("temporary folder");
    let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let client = Client::connect(&url)
        .await
        .expect("connect to a fresh SQLite file");
    TestStore {
        client,
        url: Some(url),
        schema: None,
        _dir: Some(dir),
    }
}

/// A fresh in-memory store (the one behind `errand::testing::TestClient`).
pub fn memory() -> TestStore {
    let test = errand::testing::TestClient::new();
    TestStore {
        client: test.client().clone(),
        url: None,
        schema: None,
        _dir: None,
    }
}

/// Runs each named `async fn(TestStore)` against every store (SQLite, PostgreSQL, in memory),
/// each run with its own database.
#[macro_export]
macro_rules! per_store {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::common::sqlite().await).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $crate::common::on_postgres(super::$name).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                super::$name($crate::common::memory()).await
            }
        }
    )*};
}

/// Like [`per_store!`], for behaviour that needs SQL: SQLite and PostgreSQL only.
#[macro_export]
macro_rules! per_sql_store {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::common::sqlite().await).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $crate::common::on_postgres(super::$name).await
            }
        }
    )*};
}

/// Runs `body` on a fresh PostgreSQL schema and drops it afterwards (skips without a server).
pub async fn on_postgres<F, Fut>(body: F)
where
    F: FnOnce(TestStore) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some(store) = postgres().await else {
        return;
    };
    let cleanup = TestStore {
        client: store.client.clone(),
        url: store.url.clone(),
        schema: store.schema.clone(),
        _dir: None,
    };
    body(store).await;
    cleanup.clean_up().await;
}

/// A tag unique to this test run, so tests sharing the process keep their records apart.
pub fn tag(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{name}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

static RECORDS: Mutex<Option<HashMap<String, Vec<String>>>> = Mutex::new(None);

/// Jobs call this to say they ran, and with what.
pub fn record(tag: &str, what: impl ToString) {
    let mut records = RECORDS.lock().unwrap_or_else(|e| e.into_inner());
    records
        .get_or_insert_with(HashMap::new)
        .entry(tag.to_owned())
        .or_default()
        .push(what.to_string());
}

/// What the jobs of `tag` recorded, in order.
pub fn records(tag: &str) -> Vec<String> {
    let records = RECORDS.lock().unwrap_or_else(|e| e.into_inner());
    records
        .as_ref()
        .and_then(|r| r.get(tag).cloned())
        .unwrap_or_default()
}

static GATES: Mutex<Option<HashMap<String, Arc<Semaphore>>>> = Mutex::new(None);

/// A gate a job waits at until the test opens it.
pub fn gate(tag: &str) -> Arc<Semaphore> {
    let mut gates = GATES.lock().unwrap_or_else(|e| e.into_inner());
    gates
        .get_or_insert_with(HashMap::new)
        .entry(tag.to_owned())
        .or_insert_with(|| Arc::new(Semaphore::new(0)))
        .clone()
}

/// Polls `condition` every 10 ms until it holds; panics with `what` after 30 s.
pub async fn wait_for<F, Fut>(what: &str, condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_for_within(Duration::from_secs(30), what, condition).await
}

/// Polls `condition` every 10 ms until it holds; panics with `what` after `limit`.
pub async fn wait_for_within<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn job(client: &Client, id: JobId) -> JobInfo {
    client
        .job(id)
        .await
        .expect("read job")
        .unwrap_or_else(|| panic!("job {id} does not exist"))
}

/// Whether every job has reached a final state.
pub async fn all_final(client: &Client, ids: &[JobId]) -> bool {
    for id in ids {
        if !job(client, *id).await.state.is_final() {
            return false;
        }
    }
    true
}

/// A worker on `queues` that polls every 10 ms.
pub fn worker(client: &Client, queues: &[&str]) -> Worker {
    Worker::new(client.clone())
        .queues(queues.iter().map(|q| (q.to_string(), 1)))
        .concurrency(8)
        .poll_interval(Duration::from_millis(10))
}

/// Runs `worker` until every job in `ids` is final (or 30 s pass, then panics).
pub async fn work_until_final(worker: Worker, client: &Client, ids: &[JobId]) {
    let watched = client.clone();
    let ids_owned = ids.to_vec();
    worker
        .run_until(
            async move { wait_for("jobs to finish", || all_final(&watched, &ids_owned)).await },
        )
        .await
        .expect("worker ran");
    assert!(all_final(client, ids).await, "jobs did not finish");
}

/// A saga of two steps whose second (`ship`) died and was undone, run to its end on queue
/// `first`: the dead step a retry must refuse. Returns the dead step's job.
pub async fn undone_saga(client: &Client) -> JobId {
    use crate::jobs::saga_step;
    let t = tag("undone-saga");
    let saga = errand::Saga::new("order")
        .compensated_step(saga_step::with(t.clone(), "reserve".into(), false))
        .compensated_step(saga_step::with(t.clone(), "ship".into(), true))
        .enqueue(client)
        .await
        .expect("enqueue the saga");
    let jobs: Vec<JobId> = saga
        .steps
        .iter()
        .flat_map(|s| std::iter::once(s.job).chain(s.compensation))
        .collect();
    work_until_final(worker(client, &["first"]), client, &jobs).await;
    let ship = saga.steps[1].job;
    assert_eq!(job(client, ship).await.state, errand::JobState::Dead);
    ship
}

/// The most of `intervals` (`[start, end)`) that overlap at any instant.
pub fn most_at_once(intervals: &[(i64, i64)]) -> usize {
    let mut edges: Vec<(i64, i32)> = Vec::new();
    for (start, end) in intervals {
        edges.push((*start, 1));
        edges.push((*end, -1));
    }
    // At one instant, ends before starts: `[a, b)` and `[b, c)` do not overlap.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    usize::try_from(most).unwrap_or(0)
}
