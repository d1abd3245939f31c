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
