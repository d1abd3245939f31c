//! `errand::testing::TestClient`: no database, enqueued jobs recorded, drained inline with
//! retries and schedules and no real waiting.

use std::time::Duration;

use errand::testing::TestClient;
use errand::{Error, FailureKind, JobState};

use errand_tests::common::{gate, records, tag, wait_for};
use errand_tests::jobs::*;

#[tokio::test]
async fn records_what_was_enqueued() {
    let test = TestClient::new();
    let t = tag("recorded");
    charge::enqueue(&test, t.clone(), 1, 100).await.unwrap();
    charge::with(t.clone(), 2, 200)
        .delay(Duration::from_secs(60))
        .enqueue(&test)
        .await
        .unwrap();
    succeed::enqueue(&test, t.clone()).await.unwrap();

    let charges = test.enqueued::<charge>().await;
    let orders: Vec<(i64, i64)> = charges
        .iter()
        .map(|c| (c.order_id, c.amount_cents))
        .collect();
    assert_eq!(orders, [(1, 100), (2, 200)]);
    assert_eq!(test.jobs().await.len(), 3);
    assert!(records(&t).is_empty(), "nothing runs until drained");

    test.clear().await;
    assert!(test.jobs().await.is_empty());
}

#[tokio::test]
async fn drain_runs_retries_and_schedules_without_waiting() {
    let test = TestClient::new();
    let (t, later) = (tag("drain"), tag("drain-later"));
    // The default exponential backoff waits 15 s and more between attempts; drain does not.
    flaky_default_backoff::enqueue(&test, t.clone(), 2)
        .await
        .unwrap();
    succeed::with(later.clone())
        .delay(Duration::from_secs(24 * 3600))
        .enqueue(&test)
        .await
        .unwrap();
    broken::enqueue(&test, tag("drain-broken")).await.unwrap();

    let runs = test.drain().await.unwrap();
    assert_eq!(runs, 5);
    assert_eq!(records(&t), ["1", "2", "3"]);
    assert_eq!(records(&later), ["ran"]);
    let flaky = &test.jobs_of::<flaky_default_backoff>().await[0];
    assert_eq!((flaky.state, flaky.attempt), (JobState::Completed, 3));
    let dead = &test.jobs_of::<broken>().await[0];
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.errors[0].kind, FailureKind::Permanent);
}

#[tokio::test]
async fn drain_gives_up_on_a_job_that_never_settles() {
    let test = TestClient::new();
    snoozes::enqueue(&test, tag("forever"), usize::MAX)
        .await
        .unwrap();
    let err = test.drain().await.unwrap_err();
    assert!(matches!(err, Error::DrainLimit { .. }), "{err:?}");
}

#[errand::job(retry = 5)]
async fn flaky_default_backoff(
    ctx: &errand::Context,
    tag: String,
    failures: u32,
) -> Result<(), TestError> {
    errand_tests::common::record(&tag, ctx.attempt());
    if ctx.attempt() <= failures {
        return Err(TestError::Flaky(ctx.attempt()));
    }
    Ok(())
}

#[tokio::test]
async fn assertions_see_waiting_jobs_by_their_arguments() {
    let test = TestClient::new();
    let t = tag("assert");
    charge::enqueue(&test, t.clone(), 1, 100).await.unwrap();
    in_first::enqueue(&test, t.clone(), "a".to_owned())
        .await
        .unwrap();

    test.assert_enqueued::<charge>(|c| c.order_id == 1 && c.amount_cents == 100)
        .await;
    test.refute_enqueued::<charge>(|c| c.order_id == 2).await;
    let first: Vec<String> = test
        .enqueued_in("first")
        .await
        .iter()
        .map(|job| job.kind.clone())
        .collect();
    assert_eq!(first, ["in_first"]);
    assert!(test.enqueued_in("second").await.is_empty());

    // A job that ran no longer waits.
    test.drain().await.unwrap();
    test.refute_enqueued::<charge>(|_| true).await;
    assert!(test.enqueued_in("first").await.is_empty());
}

#[tokio::test]
async fn a_failed_assertion_names_what_was_enqueued() {
    let test = TestClient::new();
    charge::enqueue(&test, tag("assert-fails"), 1, 100)
        .await
        .unwrap();
    let missing = tokio::spawn(async move {
        test.assert_enqueued::<charge>(|c| c.order_id == 2).await;
    })
    .await
    .unwrap_err();
    let message = panic_message(missing);
    assert!(message.contains("testing_client.rs"), "{message}");
    assert!(message.contains(r#""order_id":1"#), "{message}");
    assert!(message.contains("Available"), "{message}");

    let test = TestClient::new();
    charge::enqueue(&test, tag("refute-fails"), 3, 300)
        .await
        .unwrap();
    let present = tokio::spawn(async move {
        test.refute_enqueued::<charge>(|c| c.order_id == 3).await;
    })
    .await
    .unwrap_err();
    let message = panic_message(present);
    assert!(message.contains(r#""order_id":3"#), "{message}");
}

fn panic_message(err: tokio::task::JoinError) -> String {
    let payload = err.into_panic();
    match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .unwrap_or_default(),
    }
}

#[tokio::test]
async fn drain_queue_leaves_the_other_queues() {
    let test = TestClient::new();
    let t = tag("drain-queue");
    in_first::enqueue(&test, t.clone(), "first".to_owned())
        .await
        .unwrap();
    in_second::enqueue(&test, t.clone(), "second".to_owned())
        .await
        .unwrap();
    assert_eq!(test.drain_queue("first").await.unwrap(), 1);
    assert_eq!(records(&t), ["first"]);
    assert_eq!(test.enqueued_in("second").await.len(), 1);
    assert_eq!(test.drain().await.unwrap(), 1);
    assert_eq!(records(&t), ["first", "second"]);
}

#[tokio::test]
async fn advance_moves_the_stores_clock() {
    let test = TestClient::new();
    let t = tag("advance");
    let before = test.now();
    succeed::with(t.clone())
        .delay(Duration::from_secs(3600))
        .enqueue(&test)
        .await
        .unwrap();
    assert_eq!(test.drain_due().await.unwrap(), 0, "not due for an hour");
    assert!(records(&t).is_empty());

    test.advance(Duration::from_secs(3599));
    assert_eq!(test.drain_due().await.unwrap(), 0, "still a second early");
    test.advance(Duration::from_secs(2));
    assert_eq!(test.drain_due().await.unwrap(), 1);
    assert_eq!(records(&t), ["ran"]);
    assert!(test.now().duration_since(before).unwrap() >= Duration::from_secs(3601));

    // The clock is the store's: a key held for an hour is free once the hour has passed.
    let first = until_expired_job::enqueue(&test, t.clone(), 1, "ok".to_owned())
        .await
        .unwrap();
    test.drain_due().await.unwrap();
    let refused = until_expired_job::enqueue(&test, t.clone(), 1, "ok".to_owned())
        .await
        .unwrap();
    assert_eq!(refused.duplicate_of, Some(first.id));
    test.advance(Duration::from_secs(3601));
    let again = until_expired_job::enqueue(&test, t.clone(), 1, "ok".to_owned())
        .await
        .unwrap();
    assert_eq!(
        again.duplicate_of, None,
        "the key expired with the store's clock"
    );
    assert_ne!(again.id, first.id);
}

#[tokio::test]
async fn clear_forgets_jobs_and_recorded_steps() {
    let test = TestClient::new();
    let t = tag("clear");
    succeed::enqueue(&test, t.clone()).await.unwrap();
    test.drain().await.unwrap();
    test.clear().await;
    assert!(test.jobs().await.is_empty());
    // The store still works after a clear.
    succeed::enqueue(&test, t.clone()).await.unwrap();
    assert_eq!(test.drain().await.unwrap(), 1);
}

#[tokio::test]
async fn each_test_client_has_its_own_database() {
    let (a, b) = (TestClient::new(), TestClient::new());
    succeed::enqueue(&a, tag("own-db")).await.unwrap();
    assert_eq!(a.jobs().await.len(), 1);
    assert!(b.jobs().await.is_empty());
    let clone = a.clone();
    assert_eq!(clone.jobs().await.len(), 1, "clones share one database");
}

#[tokio::test]
async fn perform_runs_one_attempt_and_returns_what_was_recorded() {
    let test = TestClient::new();
    let t = tag("perform");
    // Another job of the same queue waits, and is left alone.
    succeed::enqueue(&test, tag("perform-bystander"))
        .await
        .unwrap();

    let done = test.perform(succeed::with(t.clone())).await.unwrap();
    assert_eq!((done.state, done.attempt), (JobState::Completed, 1));
    assert_eq!(done.queue, "default", "reported in the job's own queue");
    assert_eq!(records(&t), ["ran"]);

    let before = test.now();
    let retry = test.perform(flaky::with(t.clone(), 5)).await.unwrap();
    assert_eq!(retry.state, JobState::Retryable);
    assert!(retry.run_at >= before, "retries later");
    assert_eq!(retry.errors.len(), 1);
    assert_eq!(retry.errors[0].kind, FailureKind::Transient);

    let dead = test.perform(broken::with(t.clone())).await.unwrap();
    assert_eq!(
        dead.state,
        JobState::Dead,
        "a permanent error is not retried"
    );
    assert_eq!(dead.errors[0].kind, FailureKind::Permanent);
    assert!(
        dead.errors[0].message.contains("declined"),
        "{:?}",
        dead.errors
    );

    let snoozed = test
        .perform(snoozes::with(tag("perform-snooze"), 1))
        .await
        .unwrap();
    assert_eq!((snoozed.state, snoozed.attempt), (JobState::Scheduled, 0));

    // Performed jobs leave the store; the bystander is still waiting.
    let left: Vec<(String, JobState)> = test
        .jobs()
        .await
        .into_iter()
        .map(|job| (job.kind, job.state))
        .collect();
    assert_eq!(left, [("succeed".to_owned(), JobState::Available)]);
}

#[tokio::test]
async fn perform_refuses_a_job_whose_key_is_taken() {
    let test = TestClient::new();
    let t = tag("perform-unique");
    let first = until_executed_job::enqueue(&test, t.clone(), 1, "ok".to_owned())
        .await
        .unwrap();
    let err = test
        .perform(until_executed_job::with(t.clone(), 1, "ok".to_owned()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Duplicate { existing, .. } if existing == first.id),
        "{err:?}"
    );
}

#[tokio::test]
async fn drain_rounds_stops_after_as_many_rounds() {
    let test = TestClient::new();
    let t = tag("rounds");
    let id = flaky_default_backoff::enqueue(&test, t.clone(), 2)
        .await
        .unwrap()
        .id;
    assert_eq!(test.drain_rounds(1).await.unwrap(), 1);
    let after_one = test.job(id).await.unwrap().unwrap();
    assert_eq!(
        (after_one.state, after_one.attempt),
        (JobState::Retryable, 1)
    );
    assert_eq!(test.drain_rounds(1).await.unwrap(), 1);
    assert_eq!(records(&t), ["1", "2"]);
    assert_eq!(
        test.drain_rounds(5).await.unwrap(),
        1,
        "the third attempt completes"
    );
    let done = test.job(id).await.unwrap().unwrap();
    assert_eq!((done.state, done.attempt), (JobState::Completed, 3));
    assert_eq!(test.drain_rounds(5).await.unwrap(), 0, "nothing left");
}

/// Calls cut off mid-flight (a worker aborted, a timeout) leave the jobs of a database in
/// memory where they were: the test client's, and `sqlite::memory:`'s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_calls_keep_the_in_memory_jobs() {
    let test = errand::testing::TestClient::new();
    cut_off_calls_keep(test.client().clone()).await;
    let client = errand::Client::connect("sqlite::memory:").await.unwrap();
    cut_off_calls_keep(client).await;
}

async fn cut_off_calls_keep(client: errand::Client) {
    let t = errand_tests::common::tag("cut-off");
    let id = errand_tests::jobs::succeed::with(t.clone())
        .enqueue(&client)
        .await
        .unwrap()
        .id;
    for n in 0..2000u64 {
        let cut = std::time::Duration::from_micros(n % 200);
        let _ = tokio::time::timeout(cut, client.queue_stats()).await;
        let _ = tokio::time::timeout(
            cut,
            errand_tests::jobs::succeed::with(t.clone()).enqueue(&client),
        )
        .await;
    }
    let count = client.count(&errand::JobFilter::all()).await;
    assert!(
        client.job(id).await.unwrap().is_some(),
        "the first job is still there: {count:?}"
    );
}

/// One clock everywhere: what a caller's transaction stores on a test client (a job, many
/// jobs, a workflow, a completion) reads the store's clock, not the system's. And a job that
/// holds a transaction of its own while it records a ledger step runs as on a file (a pool of
/// one connection made it wait for itself until the acquire timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_transaction_reads_the_stores_clock() {
    let test = TestClient::new();
    let t = tag("tx-clock");
    share_client(&t, test.client().clone());
    test.advance(Duration::from_secs(2 * 3600));
    let hour = Duration::from_secs(3600);
    let mut tx = test.begin::<sqlx::Sqlite>().await.unwrap();
    succeed::with(t.clone())
        .delay(hour)
        .enqueue_tx(&mut tx)
        .await
        .unwrap();
    test.enqueue_many_tx(&mut tx, [succeed::with(t.clone()).delay(hour)])
        .await
        .unwrap();
    errand::Workflow::new("later")
        .add("only", succeed::with(t.clone()).delay(hour))
        .enqueue_tx(&mut tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    steps_while_holding_a_transaction::enqueue(&test, t.clone())
        .await
        .unwrap();
    let started = test.now();
    assert_eq!(
        test.drain_due().await.unwrap(),
        1,
        "only the job that holds a transaction is due: the three are an hour ahead of the store's clock"
    );
    assert_eq!(records(&t), ["7"]);
    let waiting = test.enqueued_in("default").await;
    assert_eq!(waiting.len(), 4, "{waiting:?}");
    for job in &waiting {
        let due_in = job.run_at.duration_since(started).unwrap_or_default();
        assert!(due_in > Duration::from_secs(3500), "{job:?}");
    }
    let done = test.jobs().await;
    let done = done
        .iter()
        .find(|j| j.kind == "steps_while_holding_a_transaction");
    let finished = done
        .and_then(|j| j.finished_at)
        .expect("completed in its transaction");
    assert!(finished >= started, "completed at the store's time");

    test.advance(hour);
    assert_eq!(test.drain_due().await.unwrap(), 4);
}

/// Moving the clock while a worker runs a job does not make its run look lost: leases are
/// measured in real time, so another worker's rescue leaves it running, and it runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_the_clock_under_a_live_run_does_not_rescue_it() {
    let test = TestClient::new();
    let t = tag("advance-live");
    let enqueued = gated_step::with(t.clone(), "live".into())
        .enqueue(&test)
        .await
        .unwrap();
    let worker = errand::Worker::new(test.client().clone())
        .queues([("first", 1)])
        .lease(Duration::from_secs(3))
        .poll_interval(Duration::from_millis(10))
        .spawn();
    wait_for("the job to start", || async { !records(&t).is_empty() }).await;
    test.advance(Duration::from_secs(3600));
    // A worker's start rescues what has run out, before anything else.
    errand::Worker::new(test.client().clone())
        .queues([("elsewhere", 1)])
        .run_until_idle()
        .await
        .unwrap();
    gate(&t).add_permits(1);
    wait_for("the job to complete", || async {
        let info = test.job(enqueued.id).await.unwrap().unwrap();
        info.state.is_final()
    })
    .await;
    worker.shutdown().await.unwrap();
    let info = test.job(enqueued.id).await.unwrap().unwrap();
    assert_eq!(info.state, JobState::Completed, "{:?}", info.errors);
    assert_eq!(info.attempt, 1);
    assert!(info.errors.is_empty(), "{:?}", info.errors);
    assert_eq!(records(&t), ["live"]);
}
