//! Rolling deploys: a job's options change while jobs of its kind wait. A job runs under the
//! options of the build that claims it, and no change of options strands a job.
//!
//! Jobs "stored by an earlier build" are made here as that build stored them: enqueued, then
//! their rows rewritten with SQL to lack what the earlier build did not write (a limit key,
//! a fair key), or to carry what a later build no longer reads.

use std::time::Duration;

use errand::JobId;
use errand_tests::common::{records, tag, work_until_final, worker, TestStore};
use errand_tests::jobs::{limited_pair, succeed, tenant_job};
use errand_tests::per_sql_store;

per_sql_store!(
    a_limit_added_to_a_backlog_frees_its_slots,
    jobs_stored_without_the_limit_key_run_once_adopted,
    fair_by_added_to_a_backlog_still_runs_it,
    options_removed_from_a_backlog_still_run_it,
    a_kind_a_live_worker_knows_is_never_buried,
    a_paused_queue_is_never_buried,
    a_worker_is_live_from_its_start_to_its_stop,
    a_rolling_deploy_strands_nothing,
);

/// The older build's worker binary, and the newer one's: the same deploy kinds with other
/// options (see `tests/src/bin/`).
const OLD: &str = env!("CARGO_BIN_EXE_errand-test-worker");
const NEW: &str = env!("CARGO_BIN_EXE_errand-test-worker-next");

/// Stores a job of a kind this binary does not know, due since long ago (past any grace).
async fn store_unknown_job(store: &TestStore, queue: &str) -> JobId {
    store
        .sql(&format!(
            "INSERT INTO errand_jobs (kind, queue, args, state, priority, max_attempts, run_at, created_at)
             VALUES ('from_the_future', '{queue}', '{{}}', 'available', 5, 5, 0, 0)"
        ))
        .await;
    let id = store
        .scalar("SELECT max(id) FROM errand_jobs WHERE kind = 'from_the_future'")
        .await;
    serde_json::from_value(serde_json::json!(id)).unwrap()
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since.as_millis()).unwrap()
}

/// Records a live worker of another build, that knows `kind`, last seen `seen_at`.
async fn other_build_worker(store: &TestStore, kind: &str, seen_at: i64) {
    let kinds = if store.schema.is_some() {
        format!("ARRAY['{kind}']")
    } else {
        format!("'[\"{kind}\"]'")
    };
    let queues = if store.schema.is_some() {
        "ARRAY['default']"
    } else {
        "'[\"default\"]'"
    };
    store
        .sql(&format!(
            "INSERT INTO errand_workers (id, host, pid, queues, kinds, concurrency, started_at, seen_at)
             VALUES ('newer-build', 'elsewhere', 1, {queues}, {kinds}, 8, {seen_at}, {seen_at})
             ON CONFLICT (id) DO UPDATE SET seen_at = {seen_at}"
        ))
        .await;
}

/// A worker of an older build, beside a live one of a newer build that knows a kind it does
/// not, never buries that kind's jobs, however long they waited; once no live worker knows the
/// kind, it buries them as before.
async fn a_kind_a_live_worker_knows_is_never_buried(store: TestStore) {
    let client = &store.client;
    let id = store_unknown_job(&store, "default").await;
    other_build_worker(&store, "from_the_future", now_ms()).await;
    worker(client, &["default"]).run_until_idle().await.unwrap();
    let waiting = client.job(id).await.unwrap().unwrap();
    assert_eq!(
        waiting.state,
        errand::JobState::Available,
        "{:?}",
        waiting.errors
    );
    // The newer build's worker stopped renewing its row long ago.
    other_build_worker(&store, "from_the_future", 0).await;
    worker(client, &["default"]).run_until_idle().await.unwrap();
    let dead = client.job(id).await.unwrap().unwrap();
    assert_eq!(dead.state, errand::JobState::Dead);
}

/// A paused queue's jobs wait, whatever their kind: never buried while the queue is paused.
async fn a_paused_queue_is_never_buried(store: TestStore) {
    let client = &store.client;
    let id = store_unknown_job(&store, "default").await;
    client.pause_queue("default").await.unwrap();
    worker(client, &["default"]).run_until_idle().await.unwrap();
    let waiting = client.job(id).await.unwrap().unwrap();
    assert_eq!(
        waiting.state,
        errand::JobState::Available,
        "{:?}",
        waiting.errors
    );
    client.resume_queue("default").await.unwrap();
    worker(client, &["default"]).run_until_idle().await.unwrap();
    let dead = client.job(id).await.unwrap().unwrap();
    assert_eq!(dead.state, errand::JobState::Dead);
}

/// The ids of what `enqueue_many` enqueued.
fn ids_of(enqueued: Vec<errand::Enqueued>) -> Vec<JobId> {
    enqueued.iter().map(|e| e.id).collect()
}

/// Running slots held at the moment.
async fn held_slots(store: &TestStore) -> i64 {
    store
        .scalar("SELECT count(*) FROM errand_limit_slots WHERE job_id IS NOT NULL")
        .await
}

/// `concurrency = 2` added to a kind whose jobs were stored without a limit key: they run two
/// at a time under the new build, and each frees its slot when it stops running, so the
/// whole backlog runs (before, the first two kept their slots and the kind never ran again).
async fn a_limit_added_to_a_backlog_frees_its_slots(store: TestStore) {
    let client = &store.client;
    let ids: Vec<JobId> = ids_of(
        client
            .enqueue_many((0..6).map(limited_pair::with))
            .await
            .unwrap(),
    );
    store
        .sql("UPDATE errand_jobs SET limit_key = NULL WHERE kind = 'limited_pair'")
        .await;
    work_until_final(worker(client, &["limited"]), client, &ids).await;
    for id in &ids {
        let job = client.job(*id).await.unwrap().unwrap();
        assert_eq!(job.state, errand::JobState::Completed, "job {id}");
    }
    assert_eq!(
        held_slots(&store).await,
        0,
        "slots held after every job ran"
    );
}

/// During a rolling deploy the old build goes on storing jobs without the limit's key. The new
/// build's claims do not take them (no claim reads a limited kind's jobs without their key: a
/// job takes slots only with the key that frees them); a worker adopts them (as it starts, then
/// every 30 s) and they run, freeing their slots. (Before issue 23's fix, such jobs kept their
/// slots and the rest never ran.)
async fn jobs_stored_without_the_limit_key_run_once_adopted(store: TestStore) {
    let client = &store.client;
    let handle = worker(client, &["limited"]).spawn();
    // The worker is past its first adoption once it has run a job.
    let first = limited_pair::enqueue(client, -1).await.unwrap().id;
    errand_tests::common::wait_for("the first job", || async {
        client.job(first).await.unwrap().unwrap().state == errand::JobState::Completed
    })
    .await;
    // Stored as the old build stores them: no limit key, all at once.
    let strip = "UPDATE errand_jobs SET limit_key = NULL WHERE kind = 'limited_pair' AND state = 'available'";
    let mut ids = Vec::new();
    if store.schema.is_some() {
        let mut tx = client.begin::<sqlx::Postgres>().await.unwrap();
        for n in 0..6 {
            ids.push(limited_pair::with(n).enqueue_tx(&mut tx).await.unwrap().id);
        }
        sqlx::query(strip).execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
    } else {
        let mut tx = client.begin::<sqlx::Sqlite>().await.unwrap();
        for n in 0..6 {
            ids.push(limited_pair::with(n).enqueue_tx(&mut tx).await.unwrap().id);
        }
        sqlx::query(strip).execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
    }
    // A job stored with its key after them runs; they, first in line, wait for their key.
    let keyed = limited_pair::with(6).enqueue(client).await.unwrap().id;
    errand_tests::common::wait_for("the job stored with its key", || async {
        client.job(keyed).await.unwrap().unwrap().state == errand::JobState::Completed
    })
    .await;
    for id in &ids {
        let job = client.job(*id).await.unwrap().unwrap();
        assert_eq!(
            job.state,
            errand::JobState::Available,
            "job {id} ran unkeyed"
        );
    }
    handle.shutdown().await.unwrap();
    // The next worker adopts them as it starts.
    let handle = worker(client, &["limited"]).spawn();
    errand_tests::common::wait_for_within(
        std::time::Duration::from_secs(20),
        "the jobs stored without a limit key",
        || errand_tests::common::all_final(client, &ids),
    )
    .await;
    handle.shutdown().await.unwrap();
    for id in &ids {
        let job = client.job(*id).await.unwrap().unwrap();
        assert_eq!(job.state, errand::JobState::Completed, "job {id}");
    }
    assert_eq!(
        held_slots(&store).await,
        0,
        "slots held after every job ran"
    );
}

/// `fair_by` added to a kind whose jobs were stored without a fair key: they run, taking
/// their turn as one key beside the keyed jobs.
async fn fair_by_added_to_a_backlog_still_runs_it(store: TestStore) {
    let client = &store.client;
    let t = tag("fair-added");
    let mut ids: Vec<JobId> = ids_of(
        client
            .enqueue_many((0..5).map(|n| tenant_job::with(t.clone(), "old".into(), n)))
            .await
            .unwrap(),
    );
    store
        .sql("UPDATE errand_jobs SET fair_key = NULL WHERE kind = 'tenant_job'")
        .await;
    ids.extend(ids_of(
        client
            .enqueue_many((0..5).map(|n| tenant_job::with(t.clone(), "new".into(), n)))
            .await
            .unwrap(),
    ));
    work_until_final(worker(client, &["fair"]), client, &ids).await;
    let ran = records(&t);
    assert_eq!(ran.iter().filter(|a| *a == "old").count(), 5, "{ran:?}");
    assert_eq!(ran.iter().filter(|a| *a == "new").count(), 5, "{ran:?}");
}

/// A kind that lost its limit and its `fair_by` in this build, with jobs stored while it had
/// them (a limit key, a fair key): a worker clears their keys (no claim of this build reads
/// them so) and they run as plain jobs, holding no slot.
async fn options_removed_from_a_backlog_still_run_it(store: TestStore) {
    let client = &store.client;
    let t = tag("options-removed");
    let ids: Vec<JobId> = ids_of(
        client
            .enqueue_many((0..5).map(|_| succeed::with(t.clone())))
            .await
            .unwrap(),
    );
    store
        .sql("UPDATE errand_jobs SET limit_key = 'succeed', fair_key = 'acme' WHERE kind = 'succeed'")
        .await;
    work_until_final(worker(client, &["default"]), client, &ids).await;
    assert_eq!(records(&t).len(), 5);
    assert_eq!(held_slots(&store).await, 0);
    let keyed = "SELECT count(*) FROM errand_jobs
                 WHERE kind = 'succeed' AND (limit_key IS NOT NULL OR fair_key IS NOT NULL)";
    assert_eq!(store.scalar(keyed).await, 0, "keys left on the jobs");
}

/// A worker's row among the live workers, with the kinds it knows, is there from its start to
/// its stop.
async fn a_worker_is_live_from_its_start_to_its_stop(store: TestStore) {
    let handle = worker(&store.client, &["default"]).spawn();
    let knows_succeed = if store.schema.is_some() {
        "SELECT count(*) FROM errand_workers WHERE 'succeed' = ANY(kinds) AND 'default' = ANY(queues)"
    } else {
        "SELECT count(*) FROM errand_workers w, json_each(w.kinds) k, json_each(w.queues) q
         WHERE k.value = 'succeed' AND q.value = 'default'"
    };
    errand_tests::common::wait_for("the worker's row", || async {
        store.scalar(knows_succeed).await == 1
    })
    .await;
    handle.shutdown().await.unwrap();
    assert_eq!(store.scalar("SELECT count(*) FROM errand_workers").await, 0);
}

/// Has build `bin` enqueue its deploy jobs: `n` limited, `n` fair, and `n / 4` of the kind only
/// it knows.
async fn enqueue_as(bin: &str, store: &TestStore, n: usize) {
    let output = tokio::process::Command::new(bin)
        .args(["enqueue-deploy", &n.to_string()])
        .env("DATABASE_URL", store.url.as_deref().unwrap())
        .env("ERRAND_SCHEMA", store.schema.as_deref().unwrap_or(""))
        .output()
        .await
        .expect("run the enqueuing process");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A rolling deploy, as it happens, over a backlog the older build stored (a kind with no
/// limit yet, a kind with no `fair_by` yet, and a kind the newer build dropped).
/// - One after the other: the newer build's worker runs alone. It adopts the older jobs and
///   runs them under its options, and leaves the kind it does not know waiting: not run, not
///   buried.
/// - Side by side: the older worker starts again beside it; the newer build enqueues jobs of
///   its own (and a kind only it knows); the older worker stops once its own kind is done.
///
/// Every job ends completed, the limit holds for the runs of the build that has it, and no
/// slot stays held.
async fn a_rolling_deploy_strands_nothing(store: TestStore) {
    use errand_tests::processes::{Options, WorkerProcess};
    let url = store.url.clone().unwrap();
    let schema = store.schema.clone().unwrap_or_default();
    let options = Options {
        queue: Some("deploy".to_owned()),
        concurrency: 4,
        ..Options::default()
    };
    let left = |kind: &str| {
        format!("SELECT count(*) FROM errand_jobs WHERE kind = '{kind}' AND state <> 'completed'")
    };
    enqueue_as(OLD, &store, 40).await;
    let new = WorkerProcess::start_with(NEW, &url, &schema, &options).await;
    let new_pid = new.pid;
    errand_tests::common::wait_for_within(
        Duration::from_secs(60),
        "the newer build to run the older build's backlog",
        || async {
            store.scalar(&left("deploy_job")).await == 0
                && store.scalar(&left("deploy_fair")).await == 0
        },
    )
    .await;
    let waiting =
        "SELECT count(*) FROM errand_jobs WHERE kind = 'old_only' AND state = 'available'";
    assert_eq!(
        store.scalar(waiting).await,
        10,
        "the kind only the older build knows waits"
    );

    let old = WorkerProcess::start_with(OLD, &url, &schema, &options).await;
    enqueue_as(NEW, &store, 40).await;
    errand_tests::common::wait_for_within(
        Duration::from_secs(60),
        "the older build to run the kind only it knows",
        || async { store.scalar(&left("old_only")).await == 0 },
    )
    .await;
    old.terminate().await;
    errand_tests::common::wait_for_within(
        Duration::from_secs(60),
        "the newer build to run every other job",
        || async {
            store
                .scalar("SELECT count(*) FROM errand_jobs WHERE state <> 'completed'")
                .await
                == 0
        },
    )
    .await;
    new.terminate().await;
    for (kind, count) in [
        ("deploy_job", 80),
        ("deploy_fair", 80),
        ("old_only", 10),
        ("new_only", 10),
    ] {
        let done = format!(
            "SELECT count(*) FROM errand_jobs WHERE kind = '{kind}' AND state = 'completed'"
        );
        assert_eq!(store.scalar(&done).await, count, "{kind}");
    }
    // The limit, for the runs of the build that has it: never more than two at once.
    let runs: Vec<(i64, i64)> = {
        let rows = format!(
            "SELECT attempted_at, finished_at FROM errand_jobs
             WHERE kind = 'deploy_job' AND worker LIKE '%:{new_pid}:%'"
        );
        intervals(&store, &rows).await
    };
    assert!(!runs.is_empty(), "the newer build ran some limited jobs");
    assert!(
        errand_tests::common::most_at_once(&runs) <= 2,
        "{} at once",
        errand_tests::common::most_at_once(&runs)
    );
    assert_eq!(
        held_slots(&store).await,
        0,
        "slots held after every job ran"
    );
}

/// `(start, end)` of each row `query` returns, from the store's own database.
async fn intervals(store: &TestStore, query: &str) -> Vec<(i64, i64)> {
    if store.schema.is_some() {
        sqlx::query_as(query)
            .fetch_all(&store.postgres_pool().await)
            .await
            .unwrap()
    } else {
        let pool = sqlx::SqlitePool::connect(store.url.as_deref().unwrap())
            .await
            .unwrap();
        let rows = sqlx::query_as(query).fetch_all(&pool).await.unwrap();
        pool.close().await;
        rows
    }
}
