//! Fairness within a queue: `fair_by` takes each key's jobs in turn.

use std::time::Duration;

use errand::{JobFilter, JobState};
use errand_tests::common::{records, tag, wait_for, TestStore};
use errand_tests::jobs::tenant_job;
use errand_tests::per_store;

per_store!(one_tenants_backlog_does_not_delay_another);

/// One account's 10,000 jobs, enqueued first, do not hold up another account's 10: claims
/// take the accounts in turn, the one served longest ago first, so that even one job at a
/// time the accounts alternate.
async fn one_tenants_backlog_does_not_delay_another(store: TestStore) {
    let client = &store.client;
    let t = tag("fair");
    client
        .enqueue_many((0..10_000).map(|n| tenant_job::with(t.clone(), "big".into(), n)))
        .await
        .unwrap();
    client
        .enqueue_many((0..10).map(|n| tenant_job::with(t.clone(), "small".into(), n)))
        .await
        .unwrap();
    let handle = errand::Worker::new(client.clone())
        .queues([("fair", 1)])
        .concurrency(1)
        .prefetch(0)
        .poll_interval(Duration::from_millis(10))
        .spawn();
    let small_done = JobFilter::all()
        .kind("tenant_job")
        .state(JobState::Completed);
    wait_for("the small account's jobs", || async {
        records(&t).iter().filter(|a| *a == "small").count() == 10
    })
    .await;
    handle.shutdown().await.unwrap();
    let starts = records(&t);
    let last_small = starts.iter().rposition(|a| a == "small").unwrap();
    println!(
        "the small account's 10th job started {}th of {} (completed: {})",
        last_small + 1,
        starts.len(),
        client.count(&small_done).await.unwrap()
    );
    // Taking turns, the 10 small jobs are among the first 20 claimed; a claim ahead (the
    // prefetch) and the order in which runs finish move them a little.
    assert!(
        last_small < 40,
        "the 10th small job started {}th: {starts:?}",
        last_small + 1
    );
}
