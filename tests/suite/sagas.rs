//! Sagas: steps in order, and when one dies, the compensations of the steps that completed, in
//! reverse order, each once; on every store.

use std::sync::{Arc, Mutex};

use errand::{
    Cancellation, Client, EnqueuedSaga, FailureKind, JobId, JobState, Saga, SagaInfo, SagaState,
};
use errand_tests::common::{records, tag, wait_for, work_until_final, worker, TestStore};
use errand_tests::jobs::{charge_card, gated_step, in_first, refund_card, saga_step, undo_step};
use errand_tests::per_store;

per_store!(
    a_saga_that_completes_needs_no_compensation,
    a_dying_step_is_compensated_in_reverse_order,
    only_completed_steps_are_compensated,
    a_dead_compensation_fails_the_saga_and_the_others_still_run,
    a_saga_refuses_to_be_empty,
    cancelling_a_saga_undoes_its_completed_steps,
    a_step_that_returns_after_the_saga_was_cancelled_is_undone,
    a_step_cancelled_while_the_one_before_runs_has_that_one_undone,
    reading_a_step_outside_a_workflow_is_a_clear_error
);

/// Every job of the saga: its steps and its compensations.
fn jobs_of(saga: &EnqueuedSaga) -> Vec<JobId> {
    saga.steps
        .iter()
        .flat_map(|s| std::iter::once(s.job).chain(s.compensation))
        .collect()
}

async fn run(client: &Client, saga: &EnqueuedSaga) -> SagaInfo {
    work_until_final(worker(client, &["first"]), client, &jobs_of(saga)).await;
    client
        .saga(saga.id)
        .await
        .unwrap()
        .expect("the saga exists")
}

/// Each step's state, and its compensation's.
fn states_of(info: &SagaInfo) -> Vec<(JobState, Option<JobState>)> {
    info.steps
        .iter()
        .map(|s| (s.job.state, s.compensation.as_ref().map(|c| c.state)))
        .collect()
}

fn step(tag: &str, label: &str, fail: bool) -> errand::Request<saga_step> {
    saga_step::with(tag.to_owned(), label.to_owned(), fail)
}

/// Every step completes: the saga is completed, and each compensation was cancelled as not
/// needed, without running. The last step's compensation is never stored.
async fn a_saga_that_completes_needs_no_compensation(store: TestStore) {
    let client = &store.client;
    let t = tag("saga-ok");
    let saga = Saga::new("checkout")
        .step(
            step(&t, "reserve", false),
            undo_step::with(t.clone(), "reserve".into(), false),
        )
        .compensated_step(charge_card::with(t.clone(), 42))
        .compensated_step(step(&t, "ship", false))
        .enqueue(client)
        .await
        .unwrap();
    let names: Vec<&str> = saga.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["saga_step", "charge_card", "saga_step#2"]);
    assert!(saga.steps[0].compensation.is_some());
    assert!(saga.steps[1].compensation.is_some());
    assert_eq!(
        saga.steps[2].compensation, None,
        "the last step's is never needed"
    );
    assert_eq!(
        client.saga(saga.id).await.unwrap().unwrap().state,
        SagaState::Running
    );

    let info = run(client, &saga).await;
    assert_eq!(records(&t), ["reserve", "charge ch-42", "ship"]);
    assert_eq!(info.state, SagaState::Completed);
    assert_eq!(info.name, "checkout");
    for step in &info.steps[..2] {
        let compensation = step.compensation.as_ref().unwrap();
        assert_eq!(compensation.state, JobState::Cancelled, "{}", step.name);
        assert_eq!(compensation.attempt, 0);
        let error = compensation.errors.last().unwrap();
        assert_eq!(error.kind, FailureKind::Cancelled);
        assert!(
            error.message.starts_with("not needed: job "),
            "{}",
            error.message
        );
    }
    assert!(info.compensations_run().is_empty());
    // A workflow id that is not a saga's is no saga.
    let other = errand::Workflow::new("plain")
        .add("only", in_first::with(t.clone(), "x".into()))
        .enqueue(client)
        .await
        .unwrap();
    assert!(client.saga(other.id).await.unwrap().is_none());
}

/// The last step dies: the steps before it are undone, the latest first, each once; the
/// refund reads the charge's id that the charge recorded.
async fn a_dying_step_is_compensated_in_reverse_order(store: TestStore) {
    let client = &store.client;
    let t = tag("saga-undo");
    let saga = Saga::new("checkout")
        .compensated_step(step(&t, "reserve", false))
        .compensated_step(charge_card::with(t.clone(), 7))
        .compensated_step(step(&t, "ship", true))
        .enqueue(client)
        .await
        .unwrap();
    let info = run(client, &saga).await;
    assert_eq!(
        records(&t),
        [
            "reserve",
            "charge ch-7",
            "ship",
            "refund ch-7",
            "undo reserve"
        ]
    );
    assert_eq!(info.state, SagaState::Compensated);
    assert_eq!(info.step("saga_step#2").unwrap().job.state, JobState::Dead);
    let run: Vec<&str> = info
        .compensations_run()
        .iter()
        .map(|c| c.kind.as_str())
        .collect();
    assert_eq!(run, ["refund_card", "undo_step"]);
    for c in info.compensations_run() {
        assert_eq!((c.state, c.attempt), (JobState::Completed, 1));
        assert_eq!(c.workflow, Some(saga.id));
    }
}

/// A step in the middle dies: the steps after it are cancelled, naming it, and only the steps
/// before it that have a compensation are undone.
async fn only_completed_steps_are_compensated(store: TestStore) {
    let client = &store.client;
    let t = tag("saga-middle");
    let saga = Saga::new("four")
        .compensated_step(step(&t, "a", false))
        .step_without_compensation(step(&t, "b", false))
        .compensated_step(step(&t, "c", true))
        .compensated_step(step(&t, "d", false))
        .enqueue(client)
        .await
        .unwrap();
    let info = run(client, &saga).await;
    assert_eq!(records(&t), ["a", "b", "c", "undo a"]);
    assert_eq!(info.state, SagaState::Compensated);
    assert_eq!(
        states_of(&info),
        [
            (JobState::Completed, Some(JobState::Completed)),
            (JobState::Completed, None),
            (JobState::Dead, Some(JobState::Cancelled)),
            (JobState::Cancelled, None),
        ]
    );
    let d = &info.steps[3].job;
    let c = info.steps[2].job.id;
    assert_eq!(
        d.errors.last().unwrap().message,
        format!("job {c} (saga_step#3) that it depends on died")
    );

    // A saga whose first step dies has nothing to undo.
    let t = tag("saga-first");
    let saga = Saga::new("none")
        .compensated_step(step(&t, "a", true))
        .compensated_step(step(&t, "b", false))
        .enqueue(client)
        .await
        .unwrap();
    let info = run(client, &saga).await;
    assert_eq!(records(&t), ["a"]);
    assert_eq!(info.state, SagaState::Compensated);
    assert!(info.compensations_run().is_empty());
}

/// A compensation that dies does not stop the ones before it; the saga ends failed, and the
/// death handlers hear of the compensation.
async fn a_dead_compensation_fails_the_saga_and_the_others_still_run(store: TestStore) {
    let client = &store.client;
    let t = tag("saga-stuck");
    let saga = Saga::new("stuck")
        .compensated_step(step(&t, "first", false))
        .compensated_step(step(&t, "stuck", false))
        .compensated_step(step(&t, "last", true))
        .enqueue(client)
        .await
        .unwrap();
    let heard: Arc<Mutex<Vec<(String, JobId)>>> = Arc::default();
    let seen = heard.clone();
    let worker = worker(client, &["first"]).on_death(move |death| {
        let seen = seen.clone();
        async move {
            seen.lock()
                .unwrap()
                .push((death.job.kind.clone(), death.job.id));
            Ok(())
        }
    });
    let (watched, listened) = (client.clone(), heard.clone());
    worker
        .run_until(async move {
            wait_for("the saga to fail and its handler to hear", || async {
                let info = watched.saga(saga.id).await.unwrap().unwrap();
                let undo = info.steps[1].compensation.as_ref().map(|c| c.id);
                info.state == SagaState::Failed
                    && listened
                        .lock()
                        .unwrap()
                        .iter()
                        .any(|(_, id)| Some(*id) == undo)
            })
            .await
        })
        .await
        .unwrap();
    let info = client.saga(saga.id).await.unwrap().unwrap();
    // The stuck undo dies of a permanent error; the first step's undo runs after it.
    assert_eq!(
        records(&t),
        ["first", "stuck", "last", "undo stuck", "undo first"]
    );
    assert_eq!(info.state, SagaState::Failed);
    let stuck = info.steps[1].compensation.as_ref().unwrap();
    assert_eq!(stuck.state, JobState::Dead);
    assert_eq!(
        info.steps[0].compensation.as_ref().unwrap().state,
        JobState::Completed
    );
    let heard = heard.lock().unwrap().clone();
    assert!(
        heard.contains(&("undo_step".to_owned(), stuck.id)),
        "the death handler heard of the compensation: {heard:?}"
    );

    // An operator's retries: the dead step was undone by the compensations its death released,
    // so running it again is refused, by name, and Retry all skips it; the dead compensation
    // is what the operator must retry, and may. (Before, both were retried: the step ran
    // again after its undo.)
    let last = info.steps[2].job.id;
    let refused = client.retry_dead(last).await.unwrap_err();
    let why = refused.to_string();
    assert!(
        matches!(refused, errand::Error::RetryRefused { id, .. } if id == last),
        "{why}"
    );
    assert!(
        why.contains(&format!("saga {}", saga.id)) && why.contains("Failed"),
        "{why}"
    );
    let done = client
        .retry_all_dead(&errand::DeadFilter::all())
        .await
        .unwrap();
    assert_eq!((done.retried, done.skipped), (1, 1));
    assert_eq!(
        client.job(last).await.unwrap().unwrap().state,
        JobState::Dead
    );
    assert_eq!(
        client.job(stuck.id).await.unwrap().unwrap().state,
        JobState::Available
    );
}

async fn a_saga_refuses_to_be_empty(store: TestStore) {
    let err = Saga::new("empty").enqueue(&store.client).await.unwrap_err();
    assert!(
        matches!(&err, errand::Error::InvalidWorkflow { name, .. } if name == "empty"),
        "{err}"
    );
    assert!(err.to_string().contains("it has no steps"), "{err}");
}

/// `Context::result_of` in a job that is no step, or for a step its workflow does not have,
/// fails the job permanently with an error naming the problem.
async fn reading_a_step_outside_a_workflow_is_a_clear_error(store: TestStore) {
    let client = &store.client;
    let t = tag("result-of");
    let alone = refund_card::with(t.clone(), 5)
        .enqueue(client)
        .await
        .unwrap();
    // A saga whose refund looks for `charge_card`, which it does not have.
    let saga = Saga::new("no-charge")
        .step(step(&t, "a", false), refund_card::with(t.clone(), 6))
        .step_without_compensation(step(&t, "b", true))
        .enqueue(client)
        .await
        .unwrap();
    let mut ids = jobs_of(&saga);
    ids.push(alone.id);
    work_until_final(worker(client, &["first"]), client, &ids).await;
    let alone = errand_tests::common::job(client, alone.id).await;
    assert_eq!(alone.state, JobState::Dead);
    let error = &alone.errors.last().unwrap().message;
    assert!(error.contains("is no step of a workflow"), "{error}");
    let refund = saga.steps[0].compensation.unwrap();
    let refund = errand_tests::common::job(client, refund).await;
    assert_eq!(refund.state, JobState::Dead);
    let error = &refund.errors.last().unwrap().message;
    assert_eq!(
        error,
        &format!("workflow {} has no step named `charge_card`", saga.id)
    );
    assert!(records(&t).iter().all(|r| !r.starts_with("refund")));
}

/// `Client::cancel_saga` cancels the step the saga is at, and the steps that completed are
/// undone, the latest first, as for a death; the saga ends `Cancelled`.
async fn cancelling_a_saga_undoes_its_completed_steps(store: TestStore) {
    let client = &store.client;
    let t = tag("saga-cancel");
    let saga = Saga::new("order")
        .compensated_step(step(&t, "a", false))
        .compensated_step(step(&t, "b", false))
        .compensated_step(step(&t, "c", false).delay(std::time::Duration::from_secs(3600)))
        .compensated_step(step(&t, "d", false))
        .enqueue(client)
        .await
        .unwrap();
    let c = saga.steps[2].job;
    let watched = client.clone();
    worker(client, &["first"])
        .run_until(async move {
            wait_for("step c to wait for its time", || async {
                let c = watched.job(c).await.unwrap().unwrap();
                c.state == JobState::Scheduled
            })
            .await
        })
        .await
        .unwrap();
    assert_eq!(records(&t), ["a", "b"]);
    assert_eq!(
        client.cancel_saga(saga.id).await.unwrap(),
        Cancellation::Cancelled
    );
    let info = run(client, &saga).await;
    assert_eq!(records(&t), ["a", "b", "undo b", "undo a"]);
    assert_eq!(info.state, SagaState::Cancelled);
    assert_eq!(
        states_of(&info),
        [
            (JobState::Completed, Some(JobState::Completed)),
            (JobState::Completed, Some(JobState::Completed)),
            (JobState::Cancelled, Some(JobState::Cancelled)),
            (JobState::Cancelled, None),
        ]
    );
    let d = &info.steps[3].job;
    assert_eq!(
        d.errors.last().unwrap().message,
        format!("job {c} (saga_step#3) that it depends on was cancelled")
    );
    // Nothing is left to cancel.
    assert_eq!(
        client.cancel_saga(saga.id).await.unwrap(),
        Cancellation::AlreadyFinished(JobState::Cancelled)
    );
}

/// The customer cancels while the charge runs, and the charge returns `Ok` before its worker
/// reads the request: the charge may have acted, so it ends cancelled and is undone by its own
/// compensation, then the step before it; the step after it never runs. (Before, the charge
/// completed, the next step shipped, and nothing was undone.)
async fn a_step_that_returns_after_the_saga_was_cancelled_is_undone(store: TestStore) {
    let client = &store.client;
    let t = tag("saga-cancel-running");
    let saga = Saga::new("order")
        .compensated_step(step(&t, "reserve", false))
        .step(
            gated_step::with(t.clone(), "charge".into()),
            undo_step::with(t.clone(), "charge".into(), false),
        )
        .compensated_step(step(&t, "ship", false))
        .enqueue(client)
        .await
        .unwrap();
    let handle = worker(client, &["first"]).spawn();
    wait_for("the charge to run", || async { records(&t).len() == 2 }).await;
    assert_eq!(
        client.cancel_saga(saga.id).await.unwrap(),
        Cancellation::Requested
    );
    errand_tests::common::gate(&t).add_permits(1);
    wait_for("the saga to end", || async {
        client.saga(saga.id).await.unwrap().unwrap().state != SagaState::Running
            && errand_tests::common::all_final(client, &jobs_of(&saga)).await
    })
    .await;
    handle.shutdown().await.unwrap();
    let info = client.saga(saga.id).await.unwrap().unwrap();
    assert_eq!(
        records(&t),
        ["reserve", "charge", "undo charge", "undo reserve"]
    );
    assert_eq!(info.state, SagaState::Cancelled);
    assert_eq!(
        states_of(&info),
        [
            (JobState::Completed, Some(JobState::Completed)),
            (JobState::Cancelled, Some(JobState::Completed)),
            (JobState::Cancelled, None),
        ]
    );
}

/// An operator cancels the charge, still waiting, while the reservation before it runs; the
/// reservation then completes. It must be undone: the saga cannot go on. (Before, found by the
/// model of the workflow rules: the charge's cancellation was taken, rightly, as not a failure
/// while the reservation ran, but nothing undid the reservation when it completed; its
/// compensation was cancelled as not needed.)
async fn a_step_cancelled_while_the_one_before_runs_has_that_one_undone(store: TestStore) {
    let client = &store.client;
    let t = tag("saga-cancel-next");
    let saga = Saga::new("order")
        .step(
            gated_step::with(t.clone(), "reserve".into()),
            undo_step::with(t.clone(), "reserve".into(), false),
        )
        .compensated_step(step(&t, "charge", false))
        .compensated_step(step(&t, "ship", false))
        .enqueue(client)
        .await
        .unwrap();
    let handle = worker(client, &["first"]).spawn();
    wait_for("the reservation to run", || async {
        records(&t).len() == 1
    })
    .await;
    let charge = saga.steps[1].job;
    assert_eq!(
        client.cancel(charge).await.unwrap(),
        Cancellation::Cancelled
    );
    errand_tests::common::gate(&t).add_permits(1);
    wait_for("the saga to end", || async {
        client.saga(saga.id).await.unwrap().unwrap().state != SagaState::Running
            && errand_tests::common::all_final(client, &jobs_of(&saga)).await
    })
    .await;
    handle.shutdown().await.unwrap();
    let info = client.saga(saga.id).await.unwrap().unwrap();
    assert_eq!(records(&t), ["reserve", "undo reserve"]);
    assert_eq!(info.state, SagaState::Cancelled);
    assert_eq!(
        states_of(&info),
        [
            (JobState::Completed, Some(JobState::Completed)),
            (JobState::Cancelled, Some(JobState::Cancelled)),
            (JobState::Cancelled, None),
        ]
    );
}
