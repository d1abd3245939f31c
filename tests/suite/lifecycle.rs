//! A job's life: enqueue, run, complete; schedules, priorities, queues, snooze and cancel.

use std::time::{Duration, SystemTime};

use errand::{FailureKind, JobState};

use errand_tests::common::{job, records, tag, work_until_final, worker, TestStore};
use errand_tests::jobs::*;

errand_tests::per_store!(
    enqueued_job_completes,
    delayed_job_waits_for_its_time,
    lower_priority_number_runs_first,
    worker_serves_only_its_queues,
    snooze_spends_no_attempt,
    cancel_outcome_stops_the_job,
);

async fn enqueued_job_completes(store: TestStore) {
    let client = &store.client;
    let t = tag("complete");
    let enqueued = succeed::enqueue(client, t.clone()).await.unwrap();
    assert_eq!(enqueued.duplicate_of, None);

    let queued = job(client, enqueued.id).await;
    assert_eq!(queued.state, JobState::Available);
    assert_eq!(
        (queued.kind.as_str(), queued.queue.as_str()),
        ("succeed", "default")
    );
    assert_eq!(queued.args, serde_json::json!({ "tag": t }));
    assert_eq!(
        (queued.attempt, queued.max_attempts, queued.priority),
        (0, 26, 5)
    );
    assert!(queued.attempted_at.is_none() && queued.finished_at.is_none());

    let runs = worker(client, &["default"]).run_until_idle().await.unwrap();
    assert_eq!(runs, 1);
    let done = job(client, enqueued.id).await;
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(done.attempt, 1);
    assert!(done.errors.is_empty());
    assert!(done.finished_at.is_some() && done.attempted_at.is_some());
    assert_eq!(records(&t), ["ran"]);
}

async fn delayed_job_waits_for_its_time(store: TestStore) {
    let client = &store.client;
    let (later, past) = (tag("later"), tag("past"));
    let waiting = succeed::with(later.clone())
        .delay(Duration::from_secs(3600))
        .enqueue(client)
        .await
        .unwrap();
    let due = succeed::with(past.clone())
        .run_at(SystemTime::now() - Duration::from_secs(5))
        .enqueue(client)
        .await
        .unwrap();
    assert_eq!(job(client, waiting.id).await.state, JobState::Scheduled);
    assert_eq!(job(client, due.id).await.state, JobState::Available);

    worker(client, &["default"]).run_until_idle().await.unwrap();
    assert_eq!(job(client, waiting.id).await.state, JobState::Scheduled);
    assert!(records(&later).is_empty());
    assert_eq!(job(client, due.id).await.state, JobState::Completed);
    let scheduled = job(client, waiting.id).await.run_at;
    assert!(scheduled > SystemTime::now() + Duration::from_secs(3500));
}

async fn lower_priority_number_runs_first(store: TestStore) {
    let client = &store.client;
    let t = tag("priority");
    in_first::with(t.clone(), "last".into())
        .priority(9)
        .enqueue(client)
        .await
        .unwrap();
    in_first::with(t.clone(), "middle".into())
        .enqueue(client)
        .await
        .unwrap();
    in_first::with(t.clone(), "first".into())
        .priority(0)
        .enqueue(client)
        .await
        .unwrap();
    worker(client, &["first"])
        .concurrency(1)
        .run_until_idle()
        .await
        .unwrap();
    assert_eq!(records(&t), ["first", "middle", "last"]);
}

async fn worker_serves_only_its_queues(store: TestStore) {
    let client = &store.client;
    let t = tag("queues");
    let a = in_first::enqueue(client, t.clone(), "a".into())
        .await
        .unwrap();
    let b = in_second::enqueue(client, t.clone(), "b".into())
        .await
        .unwrap();
    let moved = in_first::with(t.clone(), "moved".into())
        .queue("second")
        .enqueue(client)
        .await
        .unwrap();
    assert_eq!(job(client, moved.id).await.queue, "second");

    worker(client, &["first"]).run_until_idle().await.unwrap();
    assert_eq!(job(client, a.id).await.state, JobState::Completed);
    assert_eq!(job(client, b.id).await.state, JobState::Available);
    assert_eq!(job(client, moved.id).await.state, JobState::Available);

    errand::Worker::new(client.clone())
        .queues([("first", 3), ("second", 1)])
        .run_until_idle()
        .await
        .unwrap();
    let mut ran = records(&t);
    ran.sort();
    assert_eq!(ran, ["a", "b", "moved"]);
}

async fn snooze_spends_no_attempt(store: TestStore) {
    let client = &store.client;
    let t = tag("snooze");
    let id = snoozes::enqueue(client, t.clone(), 3).await.unwrap().id;
    work_until_final(worker(client, &["default"]), client, &[id]).await;
    let done = job(client, id).await;
    assert_eq!(done.state, JobState::Completed);
    // Four runs, yet one attempt: `retry = 0` would have made a spent attempt fatal.
    assert_eq!(records(&t).len(), 4);
    assert_eq!((done.attempt, done.max_attempts), (1, 1));
    assert!(done.errors.is_empty());
}

async fn cancel_outcome_stops_the_job(store: TestStore) {
    let client = &store.client;
    let t = tag("cancel");
    let id = cancels::enqueue(client, t.clone()).await.unwrap().id;
    worker(client, &["default"]).run_until_idle().await.unwrap();
    let done = job(client, id).await;
    assert_eq!(done.state, JobState::Cancelled);
    assert_eq!(records(&t), ["ran"]);
    assert_eq!(done.errors.len(), 1);
    assert_eq!(done.errors[0].kind, FailureKind::Cancelled);
    assert_eq!(done.errors[0].message, "the order was refunded");
}

errand_tests::per_store!(local_enqueue_wakes_an_idle_worker);

async fn local_enqueue_wakes_an_idle_worker(store: TestStore) {
    let client = store.client.clone();
    let t = tag("wake");
    // An hour between polls: only the enqueue's wake-up can start the job in time.
    let idle = errand::Worker::new(client.clone()).poll_interval(Duration::from_secs(3600));
    let enqueuer = client.clone();
    let watched = t.clone();
    idle.run_until(async move {
        // Let the worker claim once, find nothing, and go idle before the job exists.
        tokio::task::yield_now().await;
        succeed::enqueue(&enqueuer, watched.clone()).await.unwrap();
        errand_tests::common::wait_for("the woken worker to run the job", || async {
            !records(&watched).is_empty()
        })
        .await;
    })
    .await
    .unwrap();
    assert_eq!(records(&t), ["ran"]);
}

/// Every public future is `Send + 'static` when its inputs are owned, so users can
/// `tokio::spawn` code that connects, enqueues, reads and works. Compiling this is half the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_futures_can_be_spawned() {
    let sqlite_dir = tempfile::tempdir().unwrap();
    let mut urls = vec![(
        format!("sqlite://{}", sqlite_dir.path().join("spawn.db").display()),
        None,
    )];
    if let Some(pg) = errand_tests::common::postgres().await {
        urls.push((pg.url.clone().unwrap(), Some(pg)));
    }
    for (url, pg) in urls {
        let schema = pg
            .as_ref()
            .and_then(|s| s.schema.clone())
            .unwrap_or_else(|| "public".to_owned());
        let t = tag("spawned");
        let tag_in_task = t.clone();
        let spawned = tokio::spawn(async move {
            let client =
                errand::Client::connect_with(&url, errand::Config::default().schema(schema))
                    .await?;
            let id = succeed::enqueue(&client, tag_in_task).await?.id;
            errand::Worker::new(client.clone()).run_until_idle().await?;
            let state = client.job(id).await?.map(|job| job.state);
            Ok::<_, errand::Error>(state)
        });
        assert_eq!(spawned.await.unwrap().unwrap(), Some(JobState::Completed));
        assert_eq!(records(&t), ["ran"]);
        if let Some(pg) = pg {
            pg.clean_up().await;
        }
    }
}

errand_tests::per_store!(enqueue_many_stores_every_job_in_order);

async fn enqueue_many_stores_every_job_in_order(store: TestStore) {
    let client = &store.client;
    let t = tag("many");
    // Three statements of up to 1,000 jobs each, one of them partial.
    let requests = (0..2_500).map(|n| count_run::with(t.clone(), n));
    let enqueued = client.enqueue_many(requests).await.unwrap();
    assert_eq!(enqueued.len(), 2_500);
    for (n, e) in enqueued.iter().enumerate().step_by(499) {
        let stored = job(client, e.id).await;
        assert_eq!(
            stored.args["n"],
            serde_json::json!(n),
            "ids come back in request order"
        );
        assert_eq!(
            (stored.kind.as_str(), stored.queue.as_str(), stored.state),
            ("count_run", "race", JobState::Available)
        );
    }
    let ran = worker(client, &["race"])
        .concurrency(16)
        .run_until_idle()
        .await
        .unwrap();
    assert_eq!(ran, 2_500);
    assert_eq!(records(&t).len(), 2_500);
}
