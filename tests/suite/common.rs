//! Fresh stores, a record of runs shared with the jobs, and waits with deadlines.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use errand::{Client, JobId, JobInfo, Worker};
use tempfile::TempDir;
use tokio::sync::Semaphore;

/// A store for one test: a client, and the SQLite file's folder kept alive with it.
pub struct TestStore {
    pub client: Client,
    /// The SQLite URL, for tests that open the same file another way.
    pub url: Option<String>,
    _dir: Option<TempDir>,
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
        _dir: Some(dir),
    }
}

/// A fresh in-memory store (the one behind `errand::testing::TestClient`).
pub fn memory() -> TestStore {
    let test = errand::testing::TestClient::new();
    TestStore {
        client: test.client().clone(),
        url: None,
        _dir: None,
    }
}

/// Runs `body` against every store, each test with its own database.
macro_rules! per_store {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(crate::common::sqlite().await).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                super::$name(crate::common::memory()).await
            }
        }
    )*};
}
pub(crate) use per_store;

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
pub async fn wait_for<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
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
