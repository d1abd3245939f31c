//! Failures: transient ones retry with backoff, permanent ones die at once, panics and timeouts
//! are transient, and every attempt's error is kept.

use std::time::{Duration, SystemTime};

use errand::{FailureKind, JobState};

use errand_tests::common::{job, records, tag, work_until_final, worker, TestStore};
use errand_tests::jobs::*;

errand_tests::per_store!(
    transient_failure_is_retried_then_completes,
    permanent_failure_dies_after_one_attempt,
    exhausted_retries_die_with_every_error,
    panic_is_a_transient_failure,
    timeout_is_a_transient_failure,
    retry_after_sets_the_next_attempt,
    a_request_overrides_the_retry_count,
);

async fn a_request_overrides_the_retry_count(store: TestStore) {
    let client = &store.client;
    // `always_fails` has `retry = 2`; this one asks for none.
    let t = tag("retry-override");
    let id = always_fails::with(t.clone())
        .retry(0)
        .enqueue(client)
        .await
        .unwrap()
        .id;
    assert_eq!(job(client, id).await.max_attempts, 1);
    work_until_final(worker(client, &["default"]), client, &[id]).await;
    let dead = job(client, id).await;
    assert_eq!((dead.state, dead.attempt), (JobState::Dead, 1));
    assert_eq!(records(&t), ["1"]);

    let more = always_fails::with(t.clone())
        .retry(4)
        .enqueue(client)
        .await
        .unwrap();
    assert_eq!(job(client, more.id).await.max_attempts, 5);
    match always_fails::with(t).retry(101).enqueue(client).await {
        Err(errand::Error::InvalidRetry { kind, retry }) => {
            assert_eq!((kind, retry), ("always_fails", 101));
        }
        other => panic!("expected InvalidRetry, got {other:?}"),
    }
}

async fn transient_failure_is_retried_then_completes(store: TestStore) {
    let client = &store.client;
    let t = tag("flaky");
    let id = flaky::enqueue(client, t.clone(), 2).await.unwrap().id;
    let w = worker(client, &["default"]);
    let worker_id = w.id().to_owned();
    work_until_final(w, client, &[id]).await;

    let done = job(client, id).await;
    assert_eq!(done.state, JobState::Completed);
    assert_eq!((done.attempt, done.max_attempts), (3, 6));
    assert_eq!(records(&t), ["1", "2", "3"]);
    assert_eq!(done.errors.len(), 2);
    for (i, error) in done.errors.iter().enumerate() {
        let attempt = i as u32 + 1;
        assert_eq!(error.attempt, attempt);
        assert_eq!(error.kind, FailureKind::Transient);
        assert_eq!(error.message, format!("flaky on attempt {attempt}"));
        assert_eq!(error.worker, worker_id);
        assert!(error.at <= SystemTime::now());
    }
}

async fn permanent_failure_dies_after_one_attempt(store: TestStore) {
    let client = &store.client;
    let t = tag("broken");
    let id = broken::enqueue(client, t.clone()).await.unwrap().id;
    work_until_final(worker(client, &["default"]), client, &[id]).await;

    let dead = job(client, id).await;
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!((dead.attempt, dead.max_attempts), (1, 6));
    assert_eq!(records(&t), ["ran"]);
    assert_eq!(dead.errors.len(), 1);
    assert_eq!(dead.errors[0].kind, FailureKind::Permanent);
    assert_eq!(dead.errors[0].message, "broken: the card was declined");
    assert!(dead.finished_at.is_some());
}

async fn exhausted_retries_die_with_every_error(store: TestStore) {
    let client = &store.client;
    let t = tag("exhausted");
    let id = always_fails::enqueue(client, t.clone()).await.unwrap().id;
    work_until_final(worker(client, &["default"]), client, &[id]).await;

    let dead = job(client, id).await;
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!((dead.attempt, dead.max_attempts), (3, 3));
    assert_eq!(records(&t), ["1", "2", "3"]);
    let attempts: Vec<u32> = dead.errors.iter().map(|e| e.attempt).collect();
    assert_eq!(attempts, [1, 2, 3]);
    assert!(dead.errors.iter().all(|e| e.kind == FailureKind::Transient));
}

async fn panic_is_a_transient_failure(store: TestStore) {
    let client = &store.client;
    let t = tag("panic");
    let id = panics_once::enqueue(client, t.clone()).await.unwrap().id;
    let other = succeed::enqueue(client, tag("beside-panic"))
        .await
        .unwrap()
        .id;
    work_until_final(worker(client, &["default"]), client, &[id, other]).await;

    let done = job(client, id).await;
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(done.attempt, 2);
    assert_eq!(done.errors.len(), 1);
    assert_eq!(done.errors[0].kind, FailureKind::Panic);
    assert_eq!(
        done.errors[0].message,
        "panicked: boom on the first attempt"
    );
    assert_eq!(job(client, other).await.state, JobState::Completed);
}

async fn timeout_is_a_transient_failure(store: TestStore) {
    let client = &store.client;
    let t = tag("timeout");
    let id = slow_once::enqueue(client, t.clone()).await.unwrap().id;
    work_until_final(worker(client, &["default"]), client, &[id]).await;

    let done = job(client, id).await;
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(records(&t), ["1", "2"]);
    assert_eq!(done.errors.len(), 1);
    assert_eq!(done.errors[0].kind, FailureKind::Timeout);
    assert_eq!(done.errors[0].message, "timed out after 200ms");
    assert!(done.errors[0].duration >= Duration::from_millis(200));
}

async fn retry_after_sets_the_next_attempt(store: TestStore) {
    let client = &store.client;
    let t = tag("retry-after");
    let id = rate_limited::enqueue(client, t.clone()).await.unwrap().id;
    worker(client, &["default"]).run_until_idle().await.unwrap();

    let waiting = job(client, id).await;
    assert_eq!(waiting.state, JobState::Retryable);
    assert_eq!(records(&t), ["ran"]);
    // The error asked for an hour; the default backoff would have said about 15 seconds.
    let wait = waiting.run_at.duration_since(waiting.errors[0].at).unwrap();
    assert!(
        wait >= Duration::from_secs(3590) && wait <= Duration::from_secs(3610),
        "{wait:?}"
    );
}
