//! Workflows and sagas far deeper than any trigger may nest: a death, a cancel or a completion
//! settles every job it decides, however long the chain, on every store.

use std::time::Duration;

use errand::{Client, EnqueuedSaga, JobId, JobState, Saga, SagaState, Workflow};
use errand_tests::common::{job, records, tag, wait_for_within, worker, TestStore};
use errand_tests::jobs::{saga_step, undo_step};
use errand_tests::per_store;

per_store!(
    a_chain_of_ten_thousand_jobs_is_cancelled_when_its_head_dies,
    a_saga_of_two_thousand_steps_settles_when_its_first_step_dies,
    a_cancelled_saga_of_two_thousand_steps_settles,
    a_saga_of_two_thousand_steps_completes
);

/// Runs a worker on `first` until `done` holds (60 s at most: the chains are long).
async fn work_until<F, Fut>(client: &Client, what: &str, done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let handle = worker(client, &["first"]).spawn();
    // The chain of 10,000 settles in about 35 s on PostgreSQL on an idle 2-core machine, and
    // took longer than a minute beside the rest of the suite.
    wait_for_within(Duration::from_secs(180), what, done).await;
    handle.shutdown().await.unwrap();
}

/// How many of `states` are in each state, in the order first seen.
fn census(states: impl IntoIterator<Item = JobState>) -> Vec<(JobState, usize)> {
    let mut counts: Vec<(JobState, usize)> = Vec::new();
    for state in states {
        match counts.iter_mut().find(|(s, _)| *s == state) {
            Some((_, n)) => *n += 1,
            None => counts.push((state, 1)),
        }
    }
    counts
}

/// Works `saga` until its first step's compensation, decided last, is final; then returns
/// the saga's state, and how many of its steps, then of its compensations, are in each state.
async fn settle(
    client: &Client,
    saga: &EnqueuedSaga,
) -> (SagaState, Vec<(JobState, usize)>, Vec<(JobState, usize)>) {
    let last = saga.steps[0].compensation.expect("the first step's");
    work_until(client, "the saga to settle", || async {
        job(client, last).await.state.is_final()
    })
    .await;
    let info = client
        .saga(saga.id)
        .await
        .unwrap()
        .expect("the saga exists");
    let steps = census(info.steps.iter().map(|s| s.job.state));
    let compensations = info.steps.iter().filter_map(|s| s.compensation.as_ref());
    (info.state, steps, census(compensations.map(|c| c.state)))
}

/// A chain of 10,000 jobs, each after the one before: the first dies, and its death cancels
/// the other 9,999, each naming the job it waited on. (SQLite nests a trigger at most 1,000
/// deep; the cancellation once failed the dying job's statement, and the job was rescued and
/// failed again, forever.)
async fn a_chain_of_ten_thousand_jobs_is_cancelled_when_its_head_dies(store: TestStore) {
    let client = &store.client;
    let t = tag("long-chain");
    let mut chain = Workflow::new("long chain").add(
        "0",
        saga_step::with(t.clone(), "head".into(), true).retry(0),
    );
    for i in 1..10_000 {
        let previous = (i - 1).to_string();
        chain = chain.add_after(
            &i.to_string(),
            saga_step::with(t.clone(), i.to_string(), false),
            [previous],
        );
    }
    let chain = chain.enqueue(client).await.unwrap();
    let ids: Vec<JobId> = (0..10_000)
        .map(|i| chain.job(&i.to_string()).expect("every step is stored"))
        .collect();
    let last = ids[9_999];
    work_until(client, "the chain's last job to be cancelled", || async {
        job(client, last).await.state.is_final()
    })
    .await;
    assert_eq!(job(client, ids[0]).await.state, JobState::Dead);
    let info = client.workflow(chain.id).await.unwrap().unwrap();
    assert_eq!(
        census(info.steps.iter().map(|s| s.job.state)),
        [(JobState::Dead, 1), (JobState::Cancelled, 9_999)]
    );
    let last = job(client, last).await;
    assert_eq!(
        last.errors[0].message,
        format!("job {} (9998) that it depends on was cancelled", ids[9_998])
    );
    assert_eq!(records(&t), ["head"], "no job after the head ran");
}

/// A saga of 2,000 steps, each with a compensation, whose first step dies: every later step is
/// cancelled, and every compensation with it as not needed (each waits on the one after it, so
/// they are decided one after another, 2,000 deep). The saga is compensated: nothing completed,
/// so nothing needed undoing.
async fn a_saga_of_two_thousand_steps_settles_when_its_first_step_dies(store: TestStore) {
    let client = &store.client;
    let t = tag("long-saga");
    let saga = long_saga(&t, true).enqueue(client).await.unwrap();
    assert_eq!(
        settle(client, &saga).await,
        (
            SagaState::Compensated,
            vec![(JobState::Dead, 1), (JobState::Cancelled, 1_999)],
            vec![(JobState::Cancelled, 1_999)]
        )
    );
    assert_eq!(records(&t), ["0"], "no other step and no compensation ran");
}

/// A saga of 2,000 steps cancelled before any ran: every step and compensation is cancelled,
/// and the saga says so.
async fn a_cancelled_saga_of_two_thousand_steps_settles(store: TestStore) {
    let client = &store.client;
    let t = tag("long-saga-cancelled");
    let saga = long_saga(&t, false).enqueue(client).await.unwrap();
    client.cancel_saga(saga.id).await.unwrap();
    assert_eq!(
        settle(client, &saga).await,
        (
            SagaState::Cancelled,
            vec![(JobState::Cancelled, 2_000)],
            vec![(JobState::Cancelled, 1_999)]
        )
    );
    assert!(records(&t).is_empty(), "{:?}", records(&t));
}

/// A saga of 2,000 steps that all complete: the last one's completion cancels every
/// compensation as not needed, one after another, 2,000 deep, in its own statement.
async fn a_saga_of_two_thousand_steps_completes(store: TestStore) {
    let client = &store.client;
    let t = tag("long-saga-completes");
    let saga = long_saga(&t, false).enqueue(client).await.unwrap();
    assert_eq!(
        settle(client, &saga).await,
        (
            SagaState::Completed,
            vec![(JobState::Completed, 2_000)],
            vec![(JobState::Cancelled, 1_999)]
        )
    );
    assert_eq!(
        records(&t).len(),
        2_000,
        "each step ran once, no compensation"
    );
}

/// 2,000 steps, each undone by an `undo_step`; the first fails (once, for good) if `fail`.
fn long_saga(t: &str, fail: bool) -> Saga {
    let mut saga = Saga::new("long saga");
    for i in 0..2_000 {
        let first = i == 0;
        saga = saga.step(
            saga_step::with(t.to_owned(), i.to_string(), fail && first).retry(0),
            undo_step::with(t.to_owned(), i.to_string(), false),
        );
    }
    saga
}
