//! `errand::testing::TestClient`: no database, enqueued jobs recorded, drained inline with
//! retries and schedules and no real waiting.

use std::time::Duration;

use errand::testing::TestClient;
use errand::{Error, FailureKind, JobState};

use errand_tests::common::{records, tag};
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

    test.clear();
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
