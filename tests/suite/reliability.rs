//! Reliability: runs that end outside their job, death handlers called at least once, and
//! settings that would hurt the database.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use errand::{Death, FailureKind, JobId, JobState};
use errand_tests::common::{job, records, tag, wait_for, work_until_final, worker, TestStore};
use errand_tests::jobs::*;
use errand_tests::{per_sql_store, per_store};

per_store!(
    a_task_that_panics_outside_its_job_gives_its_lease_up,
    a_failing_death_handler_is_called_again,
    a_death_cut_off_by_a_crash_is_delivered_again,
);
per_sql_store!(a_zero_poll_interval_is_refused);

/// A value dropped after the job's timeout panics in the worker's task, outside the job. The
/// run must leave the worker's registry, so that its lease runs out and the job is rescued
/// (before the fix, its lease was renewed forever and the job stayed `running`).
async fn a_task_that_panics_outside_its_job_gives_its_lease_up(store: TestStore) {
    let client = &store.client;
    let t = tag("panic-outside");
    let id = panics_when_cut_off::enqueue(client, t.clone())
        .await
        .unwrap()
        .id;
    let w = worker(client, &["default"]).lease(Duration::from_secs(2));
    work_until_final(w, client, &[id]).await;
    let done = job(client, id).await;
    assert_eq!((done.state, done.attempt), (JobState::Completed, 2));
    assert_eq!(done.errors.len(), 1, "{:?}", done.errors);
    assert_eq!(done.errors[0].kind, FailureKind::LeaseLost);
    assert_eq!(records(&t), ["attempt 1", "attempt 2"]);
}

type Calls = Arc<Mutex<Vec<JobId>>>;

/// A death handler that fails is called again once the death's lease ran out, and a death
/// whose handler succeeded is never handed out again.
async fn a_failing_death_handler_is_called_again(store: TestStore) {
    let client = &store.client;
    let id = broken::enqueue(client, tag("handler-retried"))
        .await
        .unwrap()
        .id;
    let calls: Calls = Arc::default();
    let counted = calls.clone();
    let w = worker(client, &["default"])
        .death_handler_timeout(Duration::from_millis(200))
        .on_death(move |death: Death| {
            let first = {
                let mut calls = counted.lock().unwrap();
                calls.push(death.job.id);
                calls.len() == 1
            };
            async move {
                if first {
                    Err::<(), errand::DeathHandlerError>("the pager is down".into())
                } else {
                    Ok(())
                }
            }
        });
    let watched = calls.clone();
    w.run_until(async move {
        wait_for("the handler's second call", || async {
            watched.lock().unwrap().len() >= 2
        })
        .await
    })
    .await
    .unwrap();
    assert_eq!(*calls.lock().unwrap(), [id, id]);
    assert_eq!(job(client, id).await.state, JobState::Dead);
    let late: Calls = Arc::default();
    let seen = late.clone();
    worker(client, &["default"])
        .on_death(move |death: Death| {
            seen.lock().unwrap().push(death.job.id);
            std::future::ready(Ok(()))
        })
        .run_until_idle()
        .await
        .unwrap();
    assert!(
        late.lock().unwrap().is_empty(),
        "a delivered death stays delivered"
    );
}

/// A worker that dies while its death handler runs loses no death: another worker calls its
/// handler once the death's lease ran out (before the fix, the death was marked handled when
/// it was taken, and lost).
async fn a_death_cut_off_by_a_crash_is_delivered_again(store: TestStore) {
    let client = &store.client;
    let id = broken::enqueue(client, tag("handler-crash"))
        .await
        .unwrap()
        .id;
    let first: Calls = Arc::default();
    let counted = first.clone();
    let crashing = worker(client, &["default"])
        .death_handler_timeout(Duration::from_secs(1))
        .on_death(move |death: Death| {
            counted.lock().unwrap().push(death.job.id);
            std::future::pending::<Result<(), errand::DeathHandlerError>>()
        });
    let handle = tokio::spawn(crashing.run_until(std::future::pending()));
    wait_for("the first handler call", || async {
        !first.lock().unwrap().is_empty()
    })
    .await;
    // Dropping the worker mid-handler, with no shutdown, is what a crash leaves behind.
    handle.abort();
    assert!(handle.await.unwrap_err().is_cancelled());

    let second: Calls = Arc::default();
    let counted = second.clone();
    let w = worker(client, &["default"]).on_death(move |death: Death| {
        counted.lock().unwrap().push(death.job.id);
        std::future::ready(Ok(()))
    });
    let watched = second.clone();
    w.run_until(async move {
        wait_for("the death to be delivered again", || async {
            !watched.lock().unwrap().is_empty()
        })
        .await
    })
    .await
    .unwrap();
    assert_eq!(*first.lock().unwrap(), [id]);
    assert_eq!(*second.lock().unwrap(), [id]);
}

async fn a_zero_poll_interval_is_refused(store: TestStore) {
    let result = worker(&store.client, &["default"])
        .poll_interval(Duration::ZERO)
        .run_until_idle()
        .await;
    let err = result.expect_err("a zero poll interval busy-polls the database");
    assert!(err.to_string().contains("poll interval"), "{err}");
}
