//! Failures as a workflow: bounded error history, the dead set, death handlers, cancellation,
//! retention and jobs of unknown kinds, on every store.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use errand::{
    Cancellation, DeadFilter, Death, DeathReason, FailureKind, JobId, JobState, Page, Retention,
};
use errand_tests::common::{job, records, tag, wait_for, work_until_final, worker, TestStore};
use errand_tests::jobs::*;

errand_tests::per_store!(
    history_keeps_the_first_and_the_latest_errors,
    the_dead_set_lists_retries_and_clears,
    death_handlers_run_once_per_death,
    a_failing_death_handler_loses_no_death,
    cancel_stops_waiting_and_running_jobs,
    retention_prunes_finished_and_surplus_dead_jobs,
);

async fn history_keeps_the_first_and_the_latest_errors(store: TestStore) {
    let client = &store.client;
    let id = fails_forty_times::enqueue(client).await.unwrap().id;
    work_until_final(worker(client, &["default"]), client, &[id]).await;
    let dead = job(client, id).await;
    assert_eq!((dead.state, dead.attempt), (JobState::Dead, 41));
    let attempts: Vec<u32> = dead.errors.iter().map(|e| e.attempt).collect();
    let expected: Vec<u32> = (1..=5).chain(22..=41).collect();
    assert_eq!(attempts, expected, "the first 5 and the latest 20 of 41");
}

/// Two jobs that die of a permanent error and one that runs out of retries.
async fn three_deaths(store: &TestStore, t: &str) -> (JobId, JobId, JobId) {
    let client = &store.client;
    let a = broken::enqueue(client, t.to_owned()).await.unwrap().id;
    let b = broken::enqueue(client, t.to_owned()).await.unwrap().id;
    let c = always_fails::enqueue(client, t.to_owned())
        .await
        .unwrap()
        .id;
    (a, b, c)
}

async fn the_dead_set_lists_retries_and_clears(store: TestStore) {
    let client = &store.client;
    let t = tag("dead-set");
    let before = SystemTime::now() - Duration::from_secs(1);
    let (a, b, c) = three_deaths(&store, &t).await;
    work_until_final(worker(client, &["default"]), client, &[a, b, c]).await;

    let all: Vec<JobId> = client
        .dead_jobs(&DeadFilter::all(), Page::first(10))
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(all, [a, b, c]);
    let broken_only = DeadFilter::all().kind("broken");
    let first = client
        .dead_jobs(&broken_only, Page::first(1))
        .await
        .unwrap();
    let second = client
        .dead_jobs(&broken_only, Page::after(first[0].id, 1))
        .await
        .unwrap();
    let third = client
        .dead_jobs(&broken_only, Page::after(second[0].id, 1))
        .await
        .unwrap();
    assert_eq!(
        (first[0].id, second[0].id, third.len()),
        (a, b, 0),
        "paged one at a time"
    );
    assert_eq!(first[0].errors[0].message, "broken: the card was declined");
    let in_time = DeadFilter::all()
        .died_after(before)
        .died_before(SystemTime::now() + Duration::from_secs(1));
    assert_eq!(
        client
            .dead_jobs(&in_time, Page::first(10))
            .await
            .unwrap()
            .len(),
        3
    );
    let later = DeadFilter::all().died_after(SystemTime::now() + Duration::from_secs(60));
    assert!(client
        .dead_jobs(&later, Page::first(10))
        .await
        .unwrap()
        .is_empty());
    assert!(client
        .dead_jobs(&DeadFilter::all().queue("elsewhere"), Page::first(10))
        .await
        .unwrap()
        .is_empty());

    // Retrying one resets its attempts and keeps its history; it dies again, one error more.
    assert!(client.retry_dead(a).await.unwrap());
    let retried = job(client, a).await;
    assert_eq!(
        (retried.state, retried.attempt, retried.errors.len()),
        (JobState::Available, 0, 1)
    );
    work_until_final(worker(client, &["default"]), client, &[a]).await;
    let again = job(client, a).await;
    assert_eq!(
        (again.state, again.attempt, again.errors.len()),
        (JobState::Dead, 1, 2)
    );

    assert_eq!(
        client.retry_all_dead(&broken_only).await.unwrap().retried,
        2
    );
    work_until_final(worker(client, &["default"]), client, &[a, b]).await;
    assert!(client.delete_dead(c).await.unwrap());
    assert!(client.job(c).await.unwrap().is_none());
    assert!(!client.delete_dead(c).await.unwrap(), "already gone");
    assert_eq!(client.delete_all_dead(&DeadFilter::all()).await.unwrap(), 2);
    assert!(client
        .dead_jobs(&DeadFilter::all(), Page::first(10))
        .await
        .unwrap()
        .is_empty());
}

type Seen = Arc<Mutex<Vec<(JobId, DeathReason, Option<FailureKind>)>>>;

fn recording(
    seen: &Seen,
) -> impl Fn(Death) -> std::future::Ready<Result<(), errand::DeathHandlerError>> + Send + Sync + 'static
{
    let seen = seen.clone();
    move |death: Death| {
        seen.lock()
            .unwrap()
            .push((death.job.id, death.reason, death.error.map(|e| e.kind)));
        std::future::ready(Ok(()))
    }
}

async fn death_handlers_run_once_per_death(store: TestStore) {
    let client = &store.client;
    let t = tag("deaths");
    let (a, b, c) = three_deaths(&store, &t).await;
    let fine = succeed::enqueue(client, tag("lives")).await.unwrap().id;
    let seen: Seen = Arc::default();
    let w = worker(client, &["default"]).on_death(recording(&seen));
    let watched = seen.clone();
    w.run_until(async move {
        wait_for("three deaths", || async {
            watched.lock().unwrap().len() >= 3
        })
        .await
    })
    .await
    .unwrap();
    // Another worker with a handler finds no death left to handle.
    let late: Seen = Arc::default();
    worker(client, &["default"])
        .on_death(recording(&late))
        .run_until_idle()
        .await
        .unwrap();

    let mut seen = seen.lock().unwrap().clone();
    seen.sort_by_key(|d| d.0);
    assert_eq!(
        seen,
        [
            (a, DeathReason::Permanent, Some(FailureKind::Permanent)),
            (b, DeathReason::Permanent, Some(FailureKind::Permanent)),
            (
                c,
                DeathReason::RetriesExhausted,
                Some(FailureKind::Transient)
            ),
        ]
    );
    assert!(
        late.lock().unwrap().is_empty(),
        "each death is handled once"
    );
    assert_eq!(job(client, fine).await.state, JobState::Completed);
}

async fn a_failing_death_handler_loses_no_death(store: TestStore) {
    let client = &store.client;
    let id = broken::enqueue(client, tag("handler-fails"))
        .await
        .unwrap()
        .id;
    let calls = Arc::new(Mutex::new(0));
    let counted = calls.clone();
    let w = worker(client, &["default"]).on_death(move |_death| {
        *counted.lock().unwrap() += 1;
        async { Err::<(), errand::DeathHandlerError>("the pager is down".into()) }
    });
    let watched = calls.clone();
    w.run_until(async move {
        wait_for("the handler", || async { *watched.lock().unwrap() == 1 }).await
    })
    .await
    .unwrap();
    assert_eq!(
        job(client, id).await.state,
        JobState::Dead,
        "the job stays dead"
    );
    assert_eq!(
        client
            .dead_jobs(&DeadFilter::all(), Page::first(10))
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn cancel_stops_waiting_and_running_jobs(store: TestStore) {
    let client = &store.client;
    let waiting = succeed::with(tag("never"))
        .delay(Duration::from_secs(3600))
        .enqueue(client)
        .await
        .unwrap()
        .id;
    assert_eq!(
        client.cancel(waiting).await.unwrap(),
        Cancellation::Cancelled
    );
    let cancelled = job(client, waiting).await;
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(
        cancelled.errors.last().map(|e| e.kind),
        Some(FailureKind::Cancelled)
    );
    assert_eq!(
        client.cancel(waiting).await.unwrap(),
        Cancellation::AlreadyFinished(JobState::Cancelled)
    );

    let t = tag("cancel-running");
    let running = waits_for_cancel::enqueue(client, t.clone())
        .await
        .unwrap()
        .id;
    let watched = client.clone();
    let w = worker(client, &["default"]).lease(Duration::from_secs(2));
    let started = t.clone();
    w.run_until(async move {
        // Its function began (the state is `running` from the claim on: a cancel before the
        // function begins means it never runs, which is another test's case).
        wait_for("the job to start", || async {
            records(&started).len() == 1
        })
        .await;
        assert_eq!(
            watched.cancel(running).await.unwrap(),
            Cancellation::Requested
        );
        wait_for("the job to end", || async {
            job(&watched, running).await.state.is_final()
        })
        .await;
    })
    .await
    .unwrap();
    let ended = job(client, running).await;
    assert_eq!(
        ended.state,
        JobState::Cancelled,
        "cancelled although it returned Ok"
    );
    assert_eq!(records(&t), ["started", "saw the cancellation"]);

    let done = succeed::enqueue(client, tag("done")).await.unwrap().id;
    work_until_final(worker(client, &["default"]), client, &[done]).await;
    assert_eq!(
        client.cancel(done).await.unwrap(),
        Cancellation::AlreadyFinished(JobState::Completed)
    );
    let missing: JobId = serde_json::from_value(serde_json::json!(987_654_321)).unwrap();
    assert_eq!(
        client.cancel(missing).await.unwrap(),
        Cancellation::NotFound
    );
}

async fn retention_prunes_finished_and_surplus_dead_jobs(store: TestStore) {
    let client = &store.client;
    let t = tag("retention");
    let done = succeed::enqueue(client, t.clone()).await.unwrap().id;
    let (a, b, c) = three_deaths(&store, &t).await;
    let waiting = succeed::with(t.clone())
        .delay(Duration::from_secs(3600))
        .enqueue(client)
        .await
        .unwrap()
        .id;
    work_until_final(worker(client, &["default"]), client, &[done, a, b, c]).await;
    // The most recent death stays (ties on time go to the higher id).
    let mut deaths = Vec::new();
    for id in [a, b, c] {
        deaths.push((job(client, id).await.finished_at, id));
    }
    let latest = deaths.iter().max().map(|d| d.1);

    let retention = Retention::default()
        .keep_finished_for(Duration::ZERO)
        .max_dead(1);
    let pruning = || {
        worker(client, &["default"])
            .lease(Duration::from_secs(2))
            .prune_every(Duration::from_millis(100))
            .retention(retention.clone())
    };
    let watched = client.clone();
    pruning()
        .run_until(async move {
            wait_for("pruning", || async {
                watched.job(done).await.unwrap().is_none()
            })
            .await;
        })
        .await
        .unwrap();
    // No handler has taken these deaths yet: surplus or not, they stay until one does.
    let listed = client
        .dead_jobs(&DeadFilter::all(), Page::first(10))
        .await
        .unwrap();
    assert_eq!(listed.len(), 3, "undelivered deaths are kept");

    let seen: Seen = Arc::default();
    worker(client, &["default"])
        .on_death(recording(&seen))
        .run_until_idle()
        .await
        .unwrap();
    assert_eq!(seen.lock().unwrap().len(), 3);
    let watched = client.clone();
    pruning()
        .run_until(async move {
            wait_for("surplus dead jobs to go", || async {
                watched
                    .dead_jobs(&DeadFilter::all(), Page::first(10))
                    .await
                    .unwrap()
                    .len()
                    == 1
            })
            .await;
        })
        .await
        .unwrap();
    let kept: Vec<JobId> = client
        .dead_jobs(&DeadFilter::all(), Page::first(10))
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(kept, latest.into_iter().collect::<Vec<_>>());
    assert_eq!(
        job(client, waiting).await.state,
        JobState::Scheduled,
        "waiting jobs are never pruned"
    );
}
