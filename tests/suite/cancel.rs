//! Cancelling what is running: a cancel asked while a job runs is never followed by the job's
//! completion, whether or not its worker learned of it before the run returned.

use std::time::Duration;

use errand::{Cancellation, JobState};
use errand_tests::common::{gate, job, records, tag, wait_for, TestStore};
use errand_tests::jobs::blocks;
use errand_tests::per_store;

per_store!(a_run_that_returns_after_its_cancel_ends_cancelled);

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
