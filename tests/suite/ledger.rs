//! The effect ledger: a step that succeeded returns its recorded result on every later run of
//! the same job key, on every store.

use errand::JobState;
use errand_tests::common::{job, records, tag, work_until_final, worker, TestStore};
use errand_tests::jobs::*;

errand_tests::per_store!(
    a_recorded_step_does_not_run_again_on_retry,
    a_failed_step_records_nothing,
    jobs_with_one_key_share_one_ledger,
    jobs_without_a_key_keep_their_own_ledger,
);
errand_tests::per_sql_store!(the_ledger_is_pruned_once_no_job_holds_its_key);

async fn a_recorded_step_does_not_run_again_on_retry(store: TestStore) {
    let client = &store.client;
    let t = tag("ledger-retry");
    let id = ledger_flaky::enqueue(client, t.clone(), 1)
        .await
        .unwrap()
        .id;
    work_until_final(worker(client, &["default"]), client, &[id]).await;
    let done = job(client, id).await;
    assert_eq!((done.state, done.attempt), (JobState::Completed, 2));
    assert_eq!(
        records(&t),
        ["effect", "got 1 as lf-1/effect", "got 1 as lf-1/effect"]
    );
}

async fn a_failed_step_records_nothing(store: TestStore) {
    let client = &store.client;
    let t = tag("ledger-fail");
    let id = ledger_step_fails::enqueue(client, t.clone(), 1)
        .await
        .unwrap()
        .id;
    work_until_final(worker(client, &["default"]), client, &[id]).await;
    assert_eq!(job(client, id).await.state, JobState::Completed);
    assert_eq!(records(&t), ["try 1", "try 2", "got 2"]);
}

async fn jobs_with_one_key_share_one_ledger(store: TestStore) {
    let client = &store.client;
    let t = tag("ledger-shared");
    let a = ledger_flaky::enqueue(client, t.clone(), 7)
        .await
        .unwrap()
        .id;
    let b = ledger_flaky::enqueue(client, t.clone(), 7)
        .await
        .unwrap()
        .id;
    assert_ne!(a, b, "the job is not unique: both run");
    work_until_final(worker(client, &["default"]).concurrency(1), client, &[a, b]).await;
    let effects = records(&t).iter().filter(|r| *r == "effect").count();
    assert_eq!(effects, 1, "one key, one effect: {:?}", records(&t));
}

async fn jobs_without_a_key_keep_their_own_ledger(store: TestStore) {
    let client = &store.client;
    let t = tag("ledger-keyless");
    let a = ledger_keyless::enqueue(client, t.clone()).await.unwrap().id;
    let b = ledger_keyless::enqueue(client, t.clone()).await.unwrap().id;
    work_until_final(worker(client, &["default"]).concurrency(1), client, &[a, b]).await;
    assert_eq!(records(&t), ["effect", "got true", "effect", "got true"]);
}

/// The scopes in the ledger, read with SQL of the test's own.
async fn ledger_scopes(store: &TestStore) -> Vec<String> {
    let sql = "SELECT scope FROM errand_steps ORDER BY scope";
    if store.schema.is_some() {
        let pool = store.postgres_pool().await;
        sqlx::query_scalar(sql).fetch_all(&pool).await.unwrap()
    } else {
        let pool = sqlx::SqlitePool::connect(store.url.as_deref().unwrap())
            .await
            .unwrap();
        sqlx::query_scalar(sql).fetch_all(&pool).await.unwrap()
    }
}

/// Ledger records go once their retention passed and no unfinished job holds their key; a
/// record whose key a waiting job holds stays. A key pruned from the ledger names a new
/// operation: its step runs again.
async fn the_ledger_is_pruned_once_no_job_holds_its_key(store: TestStore) {
    let client = &store.client;
    let (kept, pruned) = (tag("ledger-kept"), tag("ledger-pruned"));
    let first = ledger_counted::enqueue(client, kept.clone(), "kept".into())
        .await
        .unwrap()
        .id;
    let second = ledger_counted::enqueue(client, pruned.clone(), "pruned".into())
        .await
        .unwrap()
        .id;
    work_until_final(worker(client, &["default"]), client, &[first, second]).await;
    // A job that has not run yet holds the key `kept`.
    ledger_counted::with(kept.clone(), "kept".into())
        .queue("parked")
        .enqueue(client)
        .await
        .unwrap();
    assert_eq!(ledger_scopes(&store).await.len(), 2);

    let retention = errand::Retention::default().keep_steps_for(std::time::Duration::ZERO);
    let pruning = worker(client, &["default"])
        .prune_every(std::time::Duration::from_millis(50))
        .retention(retention);
    let watched = &store;
    pruning
        .run_until(async move {
            errand_tests::common::wait_for("the ledger to be pruned", || async {
                ledger_scopes(watched).await.len() == 1
            })
            .await
        })
        .await
        .unwrap();
    assert_eq!(ledger_scopes(&store).await, ["ledger_counted:lc-kept"]);

    let again = ledger_counted::enqueue(client, pruned.clone(), "pruned".into())
        .await
        .unwrap()
        .id;
    work_until_final(worker(client, &["default"]), client, &[again]).await;
    assert_eq!(
        records(&pruned),
        ["effect", "effect"],
        "a pruned key runs anew"
    );
    assert_eq!(records(&kept), ["effect"]);
}
