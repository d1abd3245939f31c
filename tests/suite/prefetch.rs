//! Jobs claimed beyond the free slots (`Worker::prefetch`) wait in the worker for a slot: they
//! are leased like running jobs, shutdown puts them back without spending an attempt, and a
//! cancellation that reaches one before it starts means it never runs.

use std::time::Duration;

use errand::{Cancellation, JobId, JobState};

use errand_tests::common::{gate, job, records, tag, wait_for, worker, TestStore};
use errand_tests::jobs::*;

errand_tests::per_sql_store!(
    shutdown_puts_prefetched_jobs_back,
    a_prefetched_job_cancelled_before_it_starts_never_runs
);

/// The job's `lease_until`, read with SQL of the test's own.
async fn lease_until(store: &TestStore, id: JobId) -> Option<i64> {
    let url = store.url.as_deref().expect("a SQL store");
    if store.schema.is_some() {
        let pool = store.postgres_pool().await;
        sqlx::query_scalar("SELECT lease_until FROM errand_jobs WHERE id = $1")
            .bind(id.get())
            .fetch_one(&pool)
            .await
            .expect("read the lease")
    } else {
        let pool = sqlx::SqlitePool::connect(url).await.expect("open SQLite");
        sqlx::query_scalar("SELECT lease_until FROM errand_jobs WHERE id = ?1")
            .bind(id.get())
            .fetch_one(&pool)
            .await
            .expect("read the lease")
    }
}

async fn shutdown_puts_prefetched_jobs_back(store: TestStore) {
    let client = &store.client;
    let t = tag("prefetch");
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(blocks::enqueue(client, t.clone()).await.unwrap().id);
    }
    // One slot and three places in the buffer: the first job runs (and blocks), the other
    // three are claimed and wait.
    let waiting = ids[1..].to_vec();
    let started = t.clone();
    worker(client, &["default"])
        .concurrency(1)
        .prefetch(3)
        .grace_period(Duration::from_millis(100))
        .run_until(async {
            wait_for("one job to run and three to wait in the buffer", || async {
                let mut claimed = records(&started).len() == 1;
                for id in &waiting {
                    claimed &= job(client, *id).await.state == JobState::Running;
                }
                claimed
            })
            .await
        })
        .await
        .unwrap();

    assert_eq!(
        records(&t),
        ["started attempt 1"],
        "only the slot's job ran"
    );
    for id in &ids {
        let back = job(client, *id).await;
        assert_eq!(back.state, JobState::Available, "job {id} is put back");
        assert_eq!(
            back.attempt, 0,
            "job {id}: a shutdown must not spend an attempt"
        );
        assert!(back.errors.is_empty());
    }
}

async fn a_prefetched_job_cancelled_before_it_starts_never_runs(store: TestStore) {
    let client = &store.client;
    let (ta, tb) = (tag("prefetch-a"), tag("prefetch-b"));
    let a = blocks::enqueue(client, ta.clone()).await.unwrap().id;
    let b = blocks::enqueue(client, tb.clone()).await.unwrap().id;
    let started = ta.clone();
    worker(client, &["default"])
        .concurrency(1)
        .prefetch(1)
        // Renewed every 100 ms: renewals carry the cancellation to the worker.
        .lease(Duration::from_millis(300))
        .run_until(async {
            wait_for("A to run and B to wait in the buffer", || async {
                records(&started).len() == 1 && job(client, b).await.state == JobState::Running
            })
            .await;
            let requested = client.cancel(b).await.unwrap();
            assert_eq!(
                requested,
                Cancellation::Requested,
                "B is claimed: its worker is asked"
            );
            // Two renewals after the request: the first told the worker, which handled it
            // before sending the second.
            for _ in 0..2 {
                let before = lease_until(&store, b).await;
                wait_for("a renewal of B's lease", || async {
                    lease_until(&store, b).await > before
                })
                .await;
            }
            gate(&ta).add_permits(1);
            wait_for("B to be cancelled", || async {
                job(client, b).await.state == JobState::Cancelled
            })
            .await;
        })
        .await
        .unwrap();

    assert!(records(&tb).is_empty(), "B never ran: {:?}", records(&tb));
    let b = job(client, b).await;
    assert_eq!(b.state, JobState::Cancelled);
    assert!(
        b.errors
            .iter()
            .any(|e| e.message.contains("before it started")),
        "{:?}",
        b.errors
    );
    assert_eq!(job(client, a).await.state, JobState::Completed);
}
