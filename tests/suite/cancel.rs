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

/// A cancel that meets a run ending at the same moment still cancels the job: here the run
/// fails (the job goes from `running` to `retryable`) while the cancel waits for the job's row.
/// A cancel that first tried the waiting states and then the running one, each in a statement
/// of its own, found neither and answered `AlreadyFinished(Retryable)`, and the job ran again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_racing_a_failing_run_cancels() {
    errand_tests::common::on_postgres(|store| async move {
        let client = &store.client;
        let id = errand_tests::jobs::succeed::enqueue(client, tag("cancel-race"))
            .await
            .unwrap()
            .id;
        let pool = store.postgres_pool().await;
        let running = format!("UPDATE errand_jobs SET state = 'running' WHERE id = {id}");
        store.sql(&running).await;
        // The run's failure, held in a transaction that locks the job's row.
        let mut failing = pool.begin().await.unwrap();
        sqlx::query("SELECT 1 FROM errand_jobs WHERE id = $1 FOR UPDATE")
            .bind(id.get())
            .execute(&mut *failing)
            .await
            .unwrap();
        let cancelling = tokio::spawn({
            let client = client.clone();
            async move { client.cancel(id).await }
        });
        wait_for("the cancel to wait for the job's row", || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE wait_event_type = 'Lock' AND query LIKE '%errand_jobs%'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            waiting == 1
        })
        .await;
        sqlx::query("UPDATE errand_jobs SET state = 'retryable' WHERE id = $1")
            .bind(id.get())
            .execute(&mut *failing)
            .await
            .unwrap();
        failing.commit().await.unwrap();
        let answer = cancelling.await.unwrap().unwrap();
        assert_eq!(answer, Cancellation::Cancelled);
        assert_eq!(job(client, id).await.state, JobState::Cancelled);
    })
    .await;
}
