//! Jobs claimed beyond the free slots (`Worker::prefetch`) wait in the worker for a slot: they
//! are leased like running jobs, shutdown puts them back without spending an attempt, and a
//! cancellation that reaches one before it starts means it never runs.

use std::time::Duration;

use errand::{Cancellation, JobId, JobState};

use errand_tests::common::{gate, job, records, tag, wait_for, wait_for_within, worker, TestStore};
use errand_tests::jobs::*;

errand_tests::per_sql_store!(
    shutdown_puts_prefetched_jobs_back,
    a_prefetched_job_cancelled_before_it_starts_never_runs
);
errand_tests::per_store!(
    a_queue_paused_while_jobs_wait_in_the_buffer_starts_none,
    a_buffered_job_past_its_deadline_never_starts
);

/// Sixteen jobs wait in a worker's buffer behind one that blocks; the queue is paused; the
/// blocking job ends, a while later: none of the sixteen starts. They go back to the queue, no attempt spent,
/// and run once it is resumed. (Before, they started as slots freed, paused or not.)
async fn a_queue_paused_while_jobs_wait_in_the_buffer_starts_none(store: TestStore) {
    let client = &store.client;
    let (first, t) = (tag("buffer-blocker"), tag("buffer-paused"));
    let blocker = blocks::enqueue(client, first.clone()).await.unwrap().id;
    let mut buffered = Vec::new();
    for _ in 0..16 {
        buffered.push(succeed::enqueue(client, t.clone()).await.unwrap().id);
    }
    let handle = worker(client, &["default"])
        .concurrency(1)
        .prefetch(16)
        .spawn();
    wait_for(
        "one job to run and sixteen to wait in the buffer",
        || async {
            let mut claimed = records(&first).len() == 1;
            for id in &buffered {
                claimed &= job(client, *id).await.state == JobState::Running;
            }
            claimed
        },
    )
    .await;
    client.pause_queue("default").await.unwrap();
    // The jobs sit in the buffer a while, as behind a slow job (a job that waited less than
    // 100 ms starts as if the pause came just after it started).
    tokio::time::sleep(Duration::from_millis(150)).await;
    gate(&first).add_permits(1);
    wait_for("the buffered jobs to go back", || async {
        let mut back = job(client, blocker).await.state == JobState::Completed;
        for id in &buffered {
            back &= job(client, *id).await.state == JobState::Available;
        }
        back
    })
    .await;
    assert!(
        records(&t).is_empty(),
        "ran while paused: {:?}",
        records(&t)
    );
    for id in &buffered {
        assert_eq!(
            job(client, *id).await.attempt,
            0,
            "job {id} spent an attempt"
        );
    }
    client.resume_queue("default").await.unwrap();
    wait_for("the jobs to run once resumed", || async {
        records(&t).len() == 16
    })
    .await;
    handle.shutdown().await.unwrap();
}

/// A job whose deadline passes while it waits in a worker's buffer is cancelled as expired
/// when its turn comes, no attempt spent, and never runs.
async fn a_buffered_job_past_its_deadline_never_starts(store: TestStore) {
    let client = &store.client;
    let (first, t) = (tag("deadline-blocker"), tag("deadline-buffered"));
    blocks::enqueue(client, first.clone()).await.unwrap();
    let late = succeed::with(t.clone())
        .expires_in(Duration::from_millis(300))
        .enqueue(client)
        .await
        .unwrap()
        .id;
    let handle = worker(client, &["default"])
        .concurrency(1)
        .prefetch(4)
        .spawn();
    wait_for("the job to wait in the buffer", || async {
        records(&first).len() == 1 && job(client, late).await.state == JobState::Running
    })
    .await;
    // Past its deadline, by the store's clock, before the slot frees.
    wait_for_within(Duration::from_secs(10), "the deadline to pass", || async {
        job(client, late)
            .await
            .expires_at
            .is_some_and(|at| at <= std::time::SystemTime::now())
    })
    .await;
    gate(&first).add_permits(1);
    wait_for("the late job to end", || async {
        job(client, late).await.state.is_final()
    })
    .await;
    handle.shutdown().await.unwrap();
    let ended = job(client, late).await;
    assert_eq!(ended.state, JobState::Cancelled);
    assert_eq!(
        ended.errors.last().map(|e| e.kind),
        Some(errand::FailureKind::Expired)
    );
    assert_eq!(ended.attempt, 0);
    assert!(records(&t).is_empty());
}

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
    // It never began: its attempt is given back, so that a saga would not undo it.
    assert_eq!(b.attempt, 0);
    assert!(
        b.errors
            .iter()
            .any(|e| e.message.contains("before it started")),
        "{:?}",
        b.errors
    );
    assert_eq!(job(client, a).await.state, JobState::Completed);
}

/// While the store fails, jobs already in a worker's buffer keep starting as slots free: the
/// claim loop backs off the store, not the running of what it claimed. (Before, it slept inside
/// its select for each backoff, 200 ms doubling up to 25.6 s, and started one job per wake:
/// ten buffered jobs of 100 ms each took most of a minute.) On PostgreSQL, with the jobs table
/// renamed away under the worker, so that every exchange fails at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_jobs_keep_starting_while_the_store_fails() {
    errand_tests::common::on_postgres(buffered_jobs_start_while_the_store_fails).await
}

async fn buffered_jobs_start_while_the_store_fails(store: TestStore) {
    let client = &store.client;
    let (first, t) = (tag("failing-blocker"), tag("failing-buffered"));
    blocks::enqueue(client, first.clone()).await.unwrap();
    let mut buffered = Vec::new();
    for _ in 0..10 {
        let slow = takes_a_while::enqueue(client, t.clone(), 100).await;
        buffered.push(slow.unwrap().id);
    }
    let handle = worker(client, &["default"])
        .concurrency(1)
        .prefetch(16)
        .spawn();
    wait_for("one job to run and ten to wait in the buffer", || async {
        let mut claimed = records(&first).len() == 1;
        for id in &buffered {
            claimed &= job(client, *id).await.state == JobState::Running;
        }
        claimed
    })
    .await;
    store
        .sql("ALTER TABLE errand_jobs RENAME TO errand_jobs_away")
        .await;
    gate(&first).add_permits(1);
    wait_for_within(
        Duration::from_secs(5),
        "the ten buffered jobs to run while the store fails",
        || async { records(&t).len() == 10 },
    )
    .await;
    store
        .sql("ALTER TABLE errand_jobs_away RENAME TO errand_jobs")
        .await;
    wait_for("every job to complete once the store is back", || async {
        let mut done = true;
        for id in &buffered {
            done &= job(client, *id).await.state == JobState::Completed;
        }
        done
    })
    .await;
    handle.shutdown().await.unwrap();
}
