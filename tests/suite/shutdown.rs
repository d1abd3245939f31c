//! Stopping: a graceful shutdown lets running jobs finish within the grace period and puts the
//! rest back without spending an attempt; a worker that dies leaves a lease that runs out, and
//! another worker rescues the job.

use std::time::Duration;

use errand::{FailureKind, JobState};

use errand_tests::common::{
    gate, job, records, tag, wait_for, work_until_final, worker, TestStore,
};
use errand_tests::jobs::*;

errand_tests::per_store!(
    shutdown_puts_unfinished_jobs_back,
    shutdown_waits_for_jobs_within_grace,
    expired_lease_is_rescued,
    a_spawned_worker_shuts_down_gracefully,
    an_aborted_worker_stops_where_it_is,
);

async fn a_spawned_worker_shuts_down_gracefully(store: TestStore) {
    let client = &store.client;
    let t = tag("spawned");
    let id = blocks::enqueue(client, t.clone()).await.unwrap().id;
    let handle = worker(client, &["default"])
        .grace_period(Duration::from_secs(60))
        .spawn();
    wait_for("the job to start", || async { !records(&t).is_empty() }).await;
    assert!(!handle.is_finished());
    let stopping = tokio::spawn(handle.shutdown());
    // Within its grace period, the running job finishes and is recorded before the worker
    // stops.
    gate(&t).add_permits(1);
    stopping.await.unwrap().unwrap();
    assert_eq!(job(client, id).await.state, JobState::Completed);
}

async fn an_aborted_worker_stops_where_it_is(store: TestStore) {
    let client = &store.client;
    let t = tag("aborted");
    let id = blocks::enqueue(client, t.clone()).await.unwrap().id;
    let handle = worker(client, &["default"]).spawn();
    wait_for("the job to start", || async { !records(&t).is_empty() }).await;
    handle.abort();
    wait_for("the worker to stop", || async { handle.is_finished() }).await;
    handle.shutdown().await.unwrap();
    // Nothing put it back: its lease runs out, and the rescue takes it.
    assert_eq!(job(client, id).await.state, JobState::Running);
    gate(&t).add_permits(1);
}

async fn shutdown_puts_unfinished_jobs_back(store: TestStore) {
    let client = &store.client;
    let t = tag("put-back");
    let id = blocks::enqueue(client, t.clone()).await.unwrap().id;
    let started = t.clone();
    worker(client, &["default"])
        .grace_period(Duration::from_millis(100))
        .run_until(async move {
            wait_for("the job to start", || async {
                !records(&started).is_empty()
            })
            .await
        })
        .await
        .unwrap();

    let back = job(client, id).await;
    assert_eq!(back.state, JobState::Available);
    assert_eq!(back.attempt, 0, "a shutdown must not spend an attempt");
    assert!(back.errors.is_empty());
    assert_eq!(records(&t), ["started attempt 1"]);

    gate(&t).add_permits(1);
    work_until_final(worker(client, &["default"]), client, &[id]).await;
    let done = job(client, id).await;
    assert_eq!((done.state, done.attempt), (JobState::Completed, 1));
    assert_eq!(
        records(&t),
        ["started attempt 1", "started attempt 1", "finished"]
    );
}

async fn shutdown_waits_for_jobs_within_grace(store: TestStore) {
    let client = &store.client;
    let t = tag("grace");
    let id = blocks::enqueue(client, t.clone()).await.unwrap().id;
    let started = t.clone();
    worker(client, &["default"])
        .grace_period(Duration::from_secs(30))
        .run_until(async move {
            wait_for("the job to start", || async {
                !records(&started).is_empty()
            })
            .await;
            // Let the job finish only as the shutdown begins: the worker must wait for it.
            gate(&started).add_permits(1);
        })
        .await
        .unwrap();
    let done = job(client, id).await;
    assert_eq!((done.state, done.attempt), (JobState::Completed, 1));
    assert_eq!(records(&t), ["started attempt 1", "finished"]);
}

async fn expired_lease_is_rescued(store: TestStore) {
    let client = &store.client;
    let t = tag("rescue");
    let id = blocks::enqueue(client, t.clone()).await.unwrap().id;
    let crashing = worker(client, &["default"]).lease(Duration::from_secs(2));
    let crashed_id = crashing.id().to_owned();
    let handle = tokio::spawn(crashing.run_until(std::future::pending()));
    wait_for("the job to start", || async { !records(&t).is_empty() }).await;
    // Dropping the worker mid-job, with no shutdown, is what a crash leaves behind.
    handle.abort();
    assert!(handle.await.unwrap_err().is_cancelled());
    assert_eq!(job(client, id).await.state, JobState::Running);

    gate(&t).add_permits(1);
    let rescuer = worker(client, &["default"]).lease(Duration::from_secs(2));
    work_until_final(rescuer, client, &[id]).await;
    let done = job(client, id).await;
    assert_eq!((done.state, done.attempt), (JobState::Completed, 2));
    assert_eq!(done.errors.len(), 1);
    assert_eq!(done.errors[0].kind, FailureKind::LeaseLost);
    assert_eq!(done.errors[0].attempt, 1);
    assert_eq!(done.errors[0].worker, crashed_id);
    assert!(
        done.errors[0].message.contains(&crashed_id),
        "{}",
        done.errors[0].message
    );
    assert_eq!(
        records(&t),
        ["started attempt 1", "started attempt 2", "finished"]
    );
}
