//! Cancelling what is running: a cancel asked while a job runs is never followed by the job's
//! completion, whether or not its worker learned of it before the run returned.

use std::time::Duration;

use errand::{Cancellation, JobState};
use errand_tests::common::{gate, job, records, tag, wait_for, wait_for_within, TestStore};
use errand_tests::jobs::{blocks, waits_for_cancel};
use errand_tests::per_store;

per_store!(
    a_run_that_returns_after_its_cancel_ends_cancelled,
    a_cancel_reaches_a_running_job_promptly,
);

/// The run returns `Ok` right after the cancel, long before its worker renews its lease (and
/// so reads the request): the job still ends `cancelled`, as `Requested` promised, not
/// `completed`.
async fn a_run_that_returns_after_its_cancel_ends_cancelled(store: TestStore) {
    let client = &store.client;
    let t = tag("cancel-then-return");
    let id = blocks::enqueue(client, t.clone()).await.unwrap().id;
    let handle = errand::Worker::new(client.clone())
        .concurrency(1)
        .poll_interval(Duration::from_millis(10))
        .spawn();
    wait_for("the job to start", || async { records(&t).len() == 1 }).await;
    assert_eq!(client.cancel(id).await.unwrap(), Cancellation::Requested);
    gate(&t).add_permits(1);
    wait_for("the job to end", || async {
        job(client, id).await.state.is_final()
    })
    .await;
    handle.shutdown().await.unwrap();
    let ended = job(client, id).await;
    assert_eq!(ended.state, JobState::Cancelled, "{:?}", ended.errors);
    assert_eq!(records(&t), ["started attempt 1", "finished"]);
}

/// A cancel reaches a running job long before its worker's next lease renewal (20 s away
/// here): on PostgreSQL through the notification the cancel sends, elsewhere at the worker's
/// next poll.
async fn a_cancel_reaches_a_running_job_promptly(store: TestStore) {
    let client = &store.client;
    let t = tag("cancel-promptly");
    let id = waits_for_cancel::enqueue(client, t.clone())
        .await
        .unwrap()
        .id;
    let handle = errand::Worker::new(client.clone())
        .lease(Duration::from_secs(60))
        .poll_interval(Duration::from_millis(50))
        .spawn();
    wait_for("the job to start", || async { records(&t).len() == 1 }).await;
    assert_eq!(client.cancel(id).await.unwrap(), Cancellation::Requested);
    wait_for_within(
        Duration::from_secs(5),
        "the run to see its cancellation",
        || async { records(&t).len() == 2 },
    )
    .await;
    wait_for("the job to end", || async {
        job(client, id).await.state.is_final()
    })
    .await;
    handle.shutdown().await.unwrap();
    assert_eq!(job(client, id).await.state, JobState::Cancelled);
}
