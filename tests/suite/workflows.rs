//! Dependencies between jobs (`Request::after`) and workflows: jobs wait `pending` until what
//! they depend on has completed, and are cancelled when it fails.

use std::time::Duration;

use errand::{Error, FailureKind, JobId, JobState, OnDependencyFailure, Workflow, WorkflowState};
use errand_tests::common::{job, records, tag, wait_for, worker, TestStore};
use errand_tests::jobs::{broken, in_first};
use errand_tests::{per_sql_store, per_store};

per_store!(
    a_dependent_waits_for_its_dependencies,
    a_failed_dependency_cancels_what_waits_on_it,
    dependencies_that_already_finished,
    a_workflow_reports_and_cancels_its_steps,
    a_dag_of_a_thousand_jobs_runs_in_topological_order,
    bad_workflows_are_refused_whole,
    a_dead_step_whose_dependents_were_cancelled_is_not_retried,
    run_until_idle_runs_what_its_last_completion_released
);
per_sql_store!(a_workflow_in_a_rolled_back_transaction_never_existed);

/// Runs a worker of `first` and `default` until every job in `ids` is final.
async fn run_until_final(store: &TestStore, ids: &[JobId]) {
    let client = &store.client;
    let handle = worker(client, &["first", "default"]).spawn();
    wait_for("the jobs to finish", || async {
        for id in ids {
            if !job(client, *id).await.state.is_final() {
                return false;
            }
        }
        true
    })
    .await;
    handle.shutdown().await.unwrap();
}

fn millis(t: std::time::SystemTime) -> u128 {
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
}

/// A job after two others is `pending` until both have completed, and starts after both.
async fn a_dependent_waits_for_its_dependencies(store: TestStore) {
    let client = &store.client;
    let t = tag("after");
    let a = in_first::with(t.clone(), "a".into())
        .delay(Duration::from_millis(200))
        .enqueue(client)
        .await
        .unwrap();
    let b = in_first::with(t.clone(), "b".into())
        .enqueue(client)
        .await
        .unwrap();
    let c = in_first::with(t.clone(), "c".into())
        .after([a.id, b.id])
        .enqueue(client)
        .await
        .unwrap();
    assert_eq!(job(client, c.id).await.state, JobState::Pending);
    run_until_final(&store, &[a.id, b.id, c.id]).await;
    assert_eq!(
        records(&t).last().map(String::as_str),
        Some("c"),
        "{:?}",
        records(&t)
    );
    let c_info = job(client, c.id).await;
    assert_eq!(c_info.state, JobState::Completed);
    for parent in [a.id, b.id] {
        let finished = job(client, parent).await.finished_at.unwrap();
        assert!(millis(c_info.attempted_at.unwrap()) >= millis(finished));
    }
}

/// A parent that dies cancels its dependents, and theirs, each with an error that names the
/// job it waited on; a dependent that runs anyway runs.
async fn a_failed_dependency_cancels_what_waits_on_it(store: TestStore) {
    let client = &store.client;
    let t = tag("failed-dependency");
    let a = broken::with(t.clone()).enqueue(client).await.unwrap();
    let b = in_first::with(t.clone(), "b".into())
        .after([a.id])
        .enqueue(client)
        .await
        .unwrap();
    let c = in_first::with(t.clone(), "c".into())
        .after([b.id])
        .enqueue(client)
        .await
        .unwrap();
    let anyway = in_first::with(t.clone(), "cleanup".into())
        .after([a.id])
        .on_dependency_failure(OnDependencyFailure::Run)
        .enqueue(client)
        .await
        .unwrap();
    run_until_final(&store, &[a.id, b.id, c.id, anyway.id]).await;
    assert_eq!(job(client, a.id).await.state, JobState::Dead);
    let b_info = job(client, b.id).await;
    assert_eq!(b_info.state, JobState::Cancelled);
    assert_eq!(b_info.attempt, 0);
    assert_eq!(b_info.errors[0].kind, FailureKind::Cancelled);
    assert_eq!(
        b_info.errors[0].message,
        format!("job {} that it depends on died", a.id)
    );
    let c_info = job(client, c.id).await;
    assert_eq!(c_info.state, JobState::Cancelled);
    assert_eq!(
        c_info.errors[0].message,
        format!("job {} that it depends on was cancelled", b.id)
    );
    assert_eq!(job(client, anyway.id).await.state, JobState::Completed);
    let ran: Vec<String> = records(&t).into_iter().filter(|r| r != "ran").collect();
    assert_eq!(ran, ["cleanup"]);
}

/// A job after jobs that have finished: completed ones count as done, a dead one cancels it at
/// once, and one that does not exist fails the enqueue.
async fn dependencies_that_already_finished(store: TestStore) {
    let client = &store.client;
    let t = tag("finished-dependency");
    let done = in_first::with(t.clone(), "done".into())
        .enqueue(client)
        .await
        .unwrap();
    let dead = broken::with(t.clone()).enqueue(client).await.unwrap();
    run_until_final(&store, &[done.id, dead.id]).await;
    let after_done = in_first::with(t.clone(), "after done".into())
        .after([done.id])
        .enqueue(client)
        .await
        .unwrap();
    assert_eq!(job(client, after_done.id).await.state, JobState::Available);
    let after_dead = in_first::with(t.clone(), "after dead".into())
        .after([dead.id, done.id])
        .enqueue(client)
        .await
        .unwrap();
    let info = job(client, after_dead.id).await;
    assert_eq!(info.state, JobState::Cancelled);
    assert_eq!(
        info.errors[0].message,
        format!("job {} that it depends on died", dead.id)
    );
    let missing = JobId::from(i64::MAX - 7);
    match in_first::with(t.clone(), "never".into())
        .after([missing])
        .enqueue(client)
        .await
    {
        Err(Error::UnknownDependency { depends_on, .. }) => assert_eq!(depends_on, missing),
        other => panic!("expected UnknownDependency, got {other:?}"),
    }
}

/// `Client::workflow` shows each step with its job and what it waits on; cancelling the
/// workflow cancels the steps that wait.
async fn a_workflow_reports_and_cancels_its_steps(store: TestStore) {
    let client = &store.client;
    let t = tag("workflow");
    let enqueued = Workflow::new("order-7")
        .add_after(
            "ship",
            in_first::with(t.clone(), "ship".into()),
            ["charge", "stock"],
        )
        .add(
            "charge",
            in_first::with(t.clone(), "charge".into()).delay(Duration::from_secs(3600)),
        )
        .add(
            "stock",
            in_first::with(t.clone(), "stock".into()).delay(Duration::from_secs(3600)),
        )
        .enqueue(client)
        .await
        .unwrap();
    let info = client.workflow(enqueued.id).await.unwrap().unwrap();
    assert_eq!(info.name, "order-7");
    assert_eq!(info.state, WorkflowState::Running);
    assert_eq!(info.steps.len(), 3);
    let ship = info.step("ship").unwrap();
    assert_eq!(ship.job.state, JobState::Pending);
    assert_eq!(ship.job.step.as_deref(), Some("ship"));
    assert_eq!(ship.job.workflow, Some(enqueued.id));
    let mut after = ship.after.clone();
    after.sort();
    assert_eq!(after, ["charge", "stock"]);
    assert_eq!(enqueued.job("ship"), Some(ship.job.id));

    assert_eq!(
        client.cancel_workflow(enqueued.id).await.unwrap(),
        2,
        "charge and stock; ship goes with them"
    );
    let info = client.workflow(enqueued.id).await.unwrap().unwrap();
    assert_eq!(info.state, WorkflowState::Cancelled);
    assert!(info
        .steps
        .iter()
        .all(|s| s.job.state == JobState::Cancelled));
    assert!(client
        .workflow(errand::WorkflowId::from(i64::MAX - 3))
        .await
        .unwrap()
        .is_none());
}

/// 1,000 steps, each waiting on up to three random earlier ones: every step runs once, after
/// everything it waits on.
async fn a_dag_of_a_thousand_jobs_runs_in_topological_order(store: TestStore) {
    let client = &store.client;
    let t = tag("dag");
    let mut rng = fastrand::Rng::with_seed(12);
    let mut workflow = Workflow::new("dag");
    let mut edges = Vec::new();
    for i in 0..1000usize {
        let parents: Vec<String> = if i == 0 {
            Vec::new()
        } else {
            let mut p: Vec<usize> = (0..rng.usize(0..=3)).map(|_| rng.usize(0..i)).collect();
            p.sort_unstable();
            p.dedup();
            p.iter().map(|p| format!("s{p}")).collect()
        };
        for parent in &parents {
            edges.push((parent.clone(), format!("s{i}")));
        }
        workflow = workflow.add_after(
            &format!("s{i}"),
            in_first::with(t.clone(), format!("s{i}")),
            parents,
        );
    }
    let enqueued = workflow.enqueue(client).await.unwrap();
    let ids: Vec<JobId> = enqueued.steps.iter().map(|(_, id)| *id).collect();
    let handle = worker(client, &["first"]).spawn();
    wait_for("the workflow", || async { records(&t).len() == 1000 }).await;
    wait_for("its state", || async {
        client.workflow(enqueued.id).await.unwrap().unwrap().state == WorkflowState::Completed
    })
    .await;
    handle.shutdown().await.unwrap();
    let order = records(&t);
    let position = |name: &str| order.iter().position(|r| r == name).unwrap();
    let mut distinct = order.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 1000, "each step ran once");
    for (parent, child) in &edges {
        assert!(
            position(parent) < position(child),
            "{child} ran before {parent}"
        );
    }
    assert_eq!(ids.len(), 1000);
}

/// A cycle, a dependency on no step, and a name used twice are refused before anything is
/// stored.
async fn bad_workflows_are_refused_whole(store: TestStore) {
    let client = &store.client;
    let t = tag("bad-workflow");
    let step = |name: &str| in_first::with(t.clone(), name.to_owned());
    let cases = [
        (
            Workflow::new("cycle")
                .add("a", step("a"))
                .add_after("b", step("b"), ["a", "d"])
                .add_after("c", step("c"), ["b"])
                .add_after("d", step("d"), ["c"]),
            "cycle",
        ),
        (
            Workflow::new("typo")
                .add("a", step("a"))
                .add_after("b", step("b"), ["aa"]),
            "`aa`, which no step is named",
        ),
        (
            Workflow::new("twice")
                .add("a", step("a"))
                .add("a", step("a")),
            "two steps are named `a`",
        ),
    ];
    for (workflow, expected) in cases {
        match workflow.enqueue(client).await {
            Err(Error::InvalidWorkflow { reason, .. }) => {
                assert!(reason.contains(expected), "{reason}")
            }
            other => panic!("expected InvalidWorkflow, got {other:?}"),
        }
    }
    let all = client.count(&errand::JobFilter::all()).await.unwrap();
    assert_eq!(all, 0, "nothing was stored");
}

/// `Workflow::enqueue_tx` stores the steps in the caller's transaction: rolled back, they never
/// existed.
async fn a_workflow_in_a_rolled_back_transaction_never_existed(store: TestStore) {
    let client = &store.client;
    let t = tag("workflow-tx");
    let workflow = || {
        Workflow::new("tx")
            .add("a", in_first::with(t.clone(), "a".into()))
            .add_after("b", in_first::with(t.clone(), "b".into()), ["a"])
    };
    let enqueued = if store.schema.is_some() {
        let mut tx = client.begin::<sqlx::Postgres>().await.unwrap();
        let enqueued = workflow().enqueue_tx(&mut tx).await.unwrap();
        tx.rollback().await.unwrap();
        enqueued
    } else {
        let mut tx = client.begin::<sqlx::Sqlite>().await.unwrap();
        let enqueued = workflow().enqueue_tx(&mut tx).await.unwrap();
        tx.rollback().await.unwrap();
        enqueued
    };
    assert!(client.workflow(enqueued.id).await.unwrap().is_none());
    assert_eq!(client.count(&errand::JobFilter::all()).await.unwrap(), 0);
}

per_store!(
    a_batch_releases_its_callbacks_once,
    a_death_cancels_on_success_but_not_on_complete,
    jobs_add_to_their_own_batch_while_it_is_open
);

/// The callbacks run once, after every job of the batch; the batch's status counts its jobs.
async fn a_batch_releases_its_callbacks_once(store: TestStore) {
    let client = &store.client;
    let t = tag("batch");
    let batch = (0..5)
        .fold(errand::Batch::new(), |b, n| {
            b.add(in_first::with(t.clone(), format!("job {n}")))
        })
        .on_success(in_first::with(t.clone(), "success".into()))
        .on_complete(in_first::with(t.clone(), "complete".into()))
        .enqueue(client)
        .await
        .unwrap();
    assert_eq!(batch.jobs.len(), 5);
    let status = client.batch(batch.id).await.unwrap().unwrap();
    assert_eq!(status.total, 5);
    assert!(!status.finished);
    assert_eq!(status.on_success.as_ref().unwrap().state, JobState::Pending);
    let callbacks = [
        status.on_success.as_ref().unwrap().id,
        status.on_complete.as_ref().unwrap().id,
    ];
    // The worker runs until the callbacks too have finished: they are released by the
    // statement that completes the last job, the moment the batch's jobs are all final.
    run_until_final(&store, &[batch.jobs.clone(), callbacks.to_vec()].concat()).await;
    assert_eq!(records(&t).len(), 7);
    let ran = records(&t);
    let position = |name: &str| ran.iter().position(|r| r == name).unwrap();
    for n in 0..5 {
        assert!(position(&format!("job {n}")) < position("success"));
        assert!(position(&format!("job {n}")) < position("complete"));
    }
    let status = client.batch(batch.id).await.unwrap().unwrap();
    assert_eq!(status.counts.completed, 5);
    assert!(status.finished);
    assert_eq!(status.on_success.unwrap().state, JobState::Completed);
    assert_eq!(status.on_complete.unwrap().state, JobState::Completed);
}

/// A job of the batch dies: `on_success` is cancelled, `on_complete` runs.
async fn a_death_cancels_on_success_but_not_on_complete(store: TestStore) {
    let client = &store.client;
    let t = tag("batch-death");
    let batch = errand::Batch::new()
        .add(in_first::with(t.clone(), "fine".into()))
        .add(broken::with(t.clone()))
        .on_success(in_first::with(t.clone(), "success".into()))
        .on_complete(in_first::with(t.clone(), "complete".into()))
        .enqueue(client)
        .await
        .unwrap();
    let status = client.batch(batch.id).await.unwrap().unwrap();
    let callbacks = [
        status.on_success.unwrap().id,
        status.on_complete.unwrap().id,
    ];
    run_until_final(&store, &[batch.jobs.clone(), callbacks.to_vec()].concat()).await;
    let status = client.batch(batch.id).await.unwrap().unwrap();
    assert_eq!(status.counts.dead, 1);
    assert_eq!(status.counts.completed, 1);
    assert_eq!(status.on_success.unwrap().state, JobState::Cancelled);
    assert_eq!(status.on_complete.unwrap().state, JobState::Completed);
    assert!(!records(&t).contains(&"success".to_owned()));
}

/// A job adds jobs to its own batch while it runs: the callbacks wait for them too; once the
/// batch has finished, adding fails.
async fn jobs_add_to_their_own_batch_while_it_is_open(store: TestStore) {
    use errand_tests::jobs::grows_batch;
    let client = &store.client;
    let t = tag("batch-grows");
    let batch = errand::Batch::new()
        .add(grows_batch::with(t.clone(), 3))
        .on_complete(in_first::with(t.clone(), "complete".into()))
        .enqueue(client)
        .await
        .unwrap();
    let handle = worker(client, &["first"]).spawn();
    wait_for("the callback", || async {
        records(&t).contains(&"complete".to_owned())
    })
    .await;
    handle.shutdown().await.unwrap();
    let mut ran = records(&t);
    assert_eq!(
        ran.pop().as_deref(),
        Some("complete"),
        "the callback ran last"
    );
    ran.sort();
    assert_eq!(ran, ["grew 0", "grew 1", "grew 2", "grew 3"]);
    let status = client.batch(batch.id).await.unwrap().unwrap();
    assert_eq!(status.total, 4);
    assert_eq!(status.counts.completed, 4);
    match client
        .add_to_batch(batch.id, in_first::with(t.clone(), "late".into()))
        .await
    {
        Err(Error::BatchClosed { batch: closed }) => assert_eq!(closed, batch.id),
        other => panic!("expected BatchClosed, got {other:?}"),
    }
}

/// A workflow step died and the step after it was cancelled with it: retrying the dead step
/// alone would leave its dependent cancelled, so it is refused, naming the workflow.
async fn a_dead_step_whose_dependents_were_cancelled_is_not_retried(store: TestStore) {
    let client = &store.client;
    let t = tag("wf-retry");
    let enqueued = Workflow::new("order-9")
        .add("charge", broken::with(t.clone()).queue("first"))
        .add_after("ship", in_first::with(t.clone(), "ship".into()), ["charge"])
        .enqueue(client)
        .await
        .unwrap();
    let (charge, ship) = (
        enqueued.job("charge").unwrap(),
        enqueued.job("ship").unwrap(),
    );
    run_until_final(&store, &[charge, ship]).await;
    assert_eq!(job(client, charge).await.state, JobState::Dead);
    assert_eq!(job(client, ship).await.state, JobState::Cancelled);
    let err = client.retry_dead(charge).await.unwrap_err();
    let why = err.to_string();
    assert!(matches!(err, Error::RetryRefused { .. }), "{why}");
    assert!(
        why.contains("step `charge` of workflow") && why.contains("order-9"),
        "{why}"
    );
    assert_eq!(job(client, charge).await.state, JobState::Dead);
}

/// A worker that runs until idle does not stop while its last completion released a job: a
/// chain of five runs to its end. (On PostgreSQL it stopped after the first: the completion
/// and the claim are one statement, which cannot see the dependent it released.)
async fn run_until_idle_runs_what_its_last_completion_released(store: TestStore) {
    let client = &store.client;
    let t = tag("idle-chain");
    let mut last: Option<JobId> = None;
    let mut ids = Vec::new();
    for n in 0..5 {
        let request = in_first::with(t.clone(), n.to_string());
        let request = match last {
            Some(parent) => request.after([parent]),
            None => request,
        };
        let id = request.enqueue(client).await.unwrap().id;
        ids.push(id);
        last = Some(id);
    }
    worker(client, &["first"]).run_until_idle().await.unwrap();
    assert_eq!(records(&t), ["0", "1", "2", "3", "4"]);
    for id in ids {
        assert_eq!(job(client, id).await.state, JobState::Completed);
    }
}
