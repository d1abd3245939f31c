//! Unique jobs: for jobs of one kind with one key, each strategy refuses a duplicate enqueue in
//! exactly the states its table says, on every store; the database decides, even when many
//! enqueue at once.

use std::time::Duration;

use errand::{Client, EnqueueOutcome, Enqueued, Error, JobId, JobState};
use errand_tests::common::{gate, job, records, tag, wait_for, worker, TestStore};
use errand_tests::jobs::*;

errand_tests::per_store!(
    each_strategy_refuses_duplicates_in_the_states_it_promises,
    fifty_enqueues_of_one_key_at_once_leave_one_job,
    replace_swaps_the_arguments_of_a_job_that_has_not_started,
    reject_names_the_existing_job,
    until_expired_lets_the_key_go_after_unique_for,
    keys_longer_than_the_limit_are_refused,
    a_retried_dead_job_takes_its_key_back,
    which_strategies_let_two_of_one_key_run_at_once,
    unique_for_caps_how_long_a_running_key_holds,
);

const STATES: [JobState; 7] = [
    JobState::Scheduled,
    JobState::Available,
    JobState::Running,
    JobState::Retryable,
    JobState::Completed,
    JobState::Cancelled,
    JobState::Dead,
];

/// Whether a duplicate is refused while the first job is in each of `STATES`.
fn refuses(strategy: &str, state: JobState) -> bool {
    use JobState::*;
    match strategy {
        "until_executing" => matches!(state, Scheduled | Available | Retryable),
        "until_executed" => matches!(state, Scheduled | Available | Retryable | Running),
        "while_executing" => false,
        "until_expired" => true,
        other => unreachable!("{other}"),
    }
}

/// Enqueues a job of `strategy` with key id `id`, behaving as `mode`, optionally parked in a
/// queue no worker serves, optionally an hour from now.
async fn enqueue(
    client: &Client,
    strategy: &str,
    tag: &str,
    id: i64,
    mode: &str,
    parked: bool,
    later: bool,
) -> Enqueued {
    macro_rules! go {
        ($job:ident) => {{
            let mut request = $job::with(tag.to_owned(), id, mode.to_owned());
            if parked {
                request = request.queue("parked");
            }
            if later {
                request = request.delay(Duration::from_secs(3600));
            }
            request.enqueue(client).await.unwrap()
        }};
    }
    match strategy {
        "until_executing" => go!(until_executing_job),
        "until_executed" => go!(until_executed_job),
        "while_executing" => go!(while_executing_job),
        "until_expired" => go!(until_expired_job),
        other => unreachable!("{other}"),
    }
}

async fn each_strategy_refuses_duplicates_in_the_states_it_promises(store: TestStore) {
    let client = &store.client;
    let t = tag("unique-table");
    let strategies = [
        "until_executing",
        "until_executed",
        "while_executing",
        "until_expired",
    ];
    // Put one first job of each strategy in each state, each under its own key.
    let mut firsts: Vec<(&str, JobState, i64, JobId)> = Vec::new();
    for (s, strategy) in strategies.iter().enumerate() {
        for (n, state) in STATES.iter().enumerate() {
            let id = (s * 10 + n) as i64;
            let (mode, parked, later) = match state {
                JobState::Scheduled => ("ok", false, true),
                JobState::Available => ("ok", true, false),
                JobState::Running => ("block", false, false),
                JobState::Retryable => ("fail", false, false),
                JobState::Completed => ("ok", false, false),
                JobState::Cancelled => ("cancel", false, false),
                JobState::Dead => ("die", false, false),
                other => unreachable!("{other}"),
            };
            let first = enqueue(client, strategy, &t, id, mode, parked, later).await;
            assert_eq!(
                first.duplicate_of, None,
                "{strategy} {state}: the first job is new"
            );
            firsts.push((strategy, *state, id, first.id));
        }
    }
    let background = worker(client, &["default"]);
    let watched = (client.clone(), firsts.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let working = tokio::spawn(background.run_until(async move {
        let _ = stopped.await;
    }));
    wait_for("every first job to reach its state", || async {
        for (_, state, _, id) in &watched.1 {
            if job(&watched.0, *id).await.state != *state {
                return false;
            }
        }
        true
    })
    .await;

    for (strategy, state, id, first) in &firsts {
        let second = enqueue(client, strategy, &t, *id, "ok", true, false).await;
        if refuses(strategy, *state) {
            assert_eq!(
                second.duplicate_of,
                Some(*first),
                "{strategy} must refuse a duplicate while {state}"
            );
            assert_eq!(second.id, *first);
        } else {
            assert_eq!(
                second.duplicate_of, None,
                "{strategy} must accept a duplicate while {state}"
            );
            assert_ne!(second.id, *first);
        }
        let held = job(client, *first).await;
        assert_eq!(
            held.state, *state,
            "{strategy}: the duplicate left the first job alone"
        );
    }

    gate(&t).add_permits(100);
    let _ = stop.send(());
    working.await.unwrap().unwrap();
}

async fn fifty_enqueues_of_one_key_at_once_leave_one_job(store: TestStore) {
    let client = &store.client;
    let t = tag("race-key");
    let enqueues = (0..50).map(|_| {
        let (client, t) = (client.clone(), t.clone());
        tokio::spawn(async move {
            until_executed_job::with(t, 7, "ok".into())
                .queue("parked")
                .enqueue(&client)
                .await
        })
    });
    let mut results = Vec::new();
    for enqueue in enqueues.collect::<Vec<_>>() {
        results.push(enqueue.await.unwrap().unwrap());
    }
    let new: Vec<&Enqueued> = results
        .iter()
        .filter(|e| e.duplicate_of.is_none())
        .collect();
    assert_eq!(new.len(), 1, "exactly one enqueue inserts");
    assert!(
        results.iter().all(|e| e.id == new[0].id),
        "every duplicate names the one job"
    );
}

async fn replace_swaps_the_arguments_of_a_job_that_has_not_started(store: TestStore) {
    let client = &store.client;
    let t = tag("replace");
    let first = replaceable::with(t.clone(), 1, "old".into())
        .queue("parked")
        .enqueue(client)
        .await
        .unwrap();
    let second = replaceable::with(t.clone(), 1, "ok".into())
        .queue("parked")
        .delay(Duration::from_secs(600))
        .enqueue(client)
        .await
        .unwrap();
    assert_eq!(first.outcome, EnqueueOutcome::New);
    assert_eq!((second.id, second.duplicate_of), (first.id, Some(first.id)));
    assert_eq!(second.outcome, EnqueueOutcome::Replaced);
    let replaced = job(client, first.id).await;
    assert_eq!(replaced.args["mode"], "ok");
    assert_eq!(
        replaced.state,
        JobState::Scheduled,
        "the schedule was replaced too"
    );

    // A job that has started keeps its arguments.
    let running_tag = tag("replace-running");
    let running = replaceable::enqueue(client, running_tag.clone(), 2, "block".into())
        .await
        .unwrap()
        .id;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let working = tokio::spawn(worker(client, &["default"]).run_until(async move {
        let _ = stopped.await;
    }));
    wait_for("the job to run", || async {
        job(client, running).await.state == JobState::Running
    })
    .await;
    let late = replaceable::with(running_tag.clone(), 2, "ok".into())
        .enqueue(client)
        .await
        .unwrap();
    assert_eq!(late.duplicate_of, Some(running));
    assert_eq!(
        late.outcome,
        EnqueueOutcome::Duplicate,
        "a running job is not replaced"
    );
    assert_eq!(job(client, running).await.args["mode"], "block");
    gate(&running_tag).add_permits(1);
    let _ = stop.send(());
    working.await.unwrap().unwrap();
}

async fn reject_names_the_existing_job(store: TestStore) {
    let client = &store.client;
    let first = rejecting::enqueue(client, 9).await.unwrap().id;
    match rejecting::enqueue(client, 9).await {
        Err(Error::Duplicate {
            kind,
            key,
            existing,
        }) => {
            assert_eq!((kind, key.as_str(), existing), ("rejecting", "x-9", first));
        }
        other => panic!("expected a Duplicate error, got {other:?}"),
    }
    let err = rejecting::enqueue(client, 9).await.unwrap_err();
    assert!(err.to_string().contains(&format!("job {first}")), "{err}");
}

async fn until_expired_lets_the_key_go_after_unique_for(store: TestStore) {
    let client = &store.client;
    let first = expires_soon::enqueue(client, 1).await.unwrap();
    assert_eq!(
        expires_soon::enqueue(client, 1).await.unwrap().duplicate_of,
        Some(first.id)
    );
    // The key holds for one second from the first enqueue; poll until a duplicate is accepted.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let second = loop {
        let attempt = expires_soon::enqueue(client, 1).await.unwrap();
        if attempt.duplicate_of.is_none() {
            break attempt.id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the key never expired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (first, second) = (job(client, first.id).await, job(client, second).await);
    let held = second.created_at.duration_since(first.created_at).unwrap();
    assert!(
        held >= Duration::from_secs(1),
        "the key was let go after {held:?}"
    );
}

async fn keys_longer_than_the_limit_are_refused(store: TestStore) {
    let err = long_key::enqueue(&store.client, "x".repeat(600))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::KeyTooLong {
                kind: "long_key",
                limit: 512,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(long_key::enqueue(&store.client, "x".repeat(100))
        .await
        .is_ok());
}

/// A dead `until_executed` job that is retried holds its key again: a duplicate enqueued after
/// the retry is refused, and a dead job whose key another job took meanwhile stays dead rather
/// than run beside it.
async fn a_retried_dead_job_takes_its_key_back(store: TestStore) {
    let client = &store.client;
    let t = tag("retry-dead-key");
    let dead = enqueue(client, "until_executed", &t, 1, "die", false, false)
        .await
        .id;
    worker(client, &["default"]).run_until_idle().await.unwrap();
    assert_eq!(job(client, dead).await.state, JobState::Dead);
    assert!(client.retry_dead(dead).await.unwrap());
    let duplicate = enqueue(client, "until_executed", &t, 1, "ok", true, false).await;
    assert_eq!(
        duplicate.duplicate_of,
        Some(dead),
        "the retried job holds its key again"
    );

    // Dead again; a new job takes the free key; retrying the dead one must not let both run.
    worker(client, &["default"]).run_until_idle().await.unwrap();
    assert_eq!(job(client, dead).await.state, JobState::Dead);
    let taker = enqueue(client, "until_executed", &t, 1, "ok", true, false).await;
    assert_eq!(taker.duplicate_of, None);
    assert!(!client.retry_dead(dead).await.unwrap(), "its key is taken");
    assert_eq!(
        client
            .retry_all_dead(&errand::DeadFilter::all())
            .await
            .unwrap()
            .retried,
        0
    );
    assert_eq!(job(client, dead).await.state, JobState::Dead);
}

/// The table's last column: with a first job running, whether a second job of its key can run
/// beside it. `until_executing` lets one in once the first started, and it runs at once, as in
/// Sidekiq; `until_executed` and `until_expired` refuse it; `while_executing` accepts it but
/// holds it back (snoozing) until the first ends.
async fn which_strategies_let_two_of_one_key_run_at_once(store: TestStore) {
    let client = &store.client;
    let background = worker(client, &["default"]);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let working = tokio::spawn(background.run_until(async move {
        let _ = stopped.await;
    }));
    for (n, strategy) in [
        "until_executing",
        "until_executed",
        "while_executing",
        "until_expired",
    ]
    .into_iter()
    .enumerate()
    {
        let t = tag(&format!("run-at-once-{strategy}"));
        let key = 500 + n as i64;
        let first = enqueue(client, strategy, &t, key, "block", false, false)
            .await
            .id;
        wait_for("the first job to start", || async {
            records(&t).contains(&"block:1".to_owned())
        })
        .await;
        let second = enqueue(client, strategy, &t, key, "ok", false, false).await;
        match strategy {
            "until_executing" => {
                assert_eq!(second.duplicate_of, None);
                wait_for("the second job to run beside the first", || async {
                    records(&t).contains(&"ok:1".to_owned())
                })
                .await;
                assert_eq!(job(client, first).await.state, JobState::Running);
            }
            "while_executing" => {
                assert_eq!(second.duplicate_of, None);
                // Claimed, found the key held, and put back to wait: without running.
                wait_for("the second job to be claimed and held back", || async {
                    let held = job(client, second.id).await;
                    held.attempted_at.is_some() && held.state == JobState::Scheduled
                })
                .await;
                assert!(
                    !records(&t).contains(&"ok:1".to_owned()),
                    "{:?}",
                    records(&t)
                );
                assert_eq!(job(client, first).await.state, JobState::Running);
            }
            _ => {
                assert_eq!(second.duplicate_of, Some(first), "{strategy}");
                assert_eq!(second.outcome, EnqueueOutcome::Duplicate, "{strategy}");
            }
        }
        gate(&t).add_permits(1);
        wait_for("both to finish", || async {
            job(client, first).await.state.is_final()
                && job(client, second.id).await.state.is_final()
        })
        .await;
        assert_eq!(job(client, second.id).await.state, JobState::Completed);
    }
    let _ = stop.send(());
    working.await.unwrap().unwrap();
}

/// `unique_for` caps a `while_executing` hold too: once the first run has held the key that
/// long, a second job of the key may run.
async fn unique_for_caps_how_long_a_running_key_holds(store: TestStore) {
    let client = &store.client;
    let t = tag("while-executing-capped");
    let first = while_executing_capped::enqueue(client, t.clone(), 1, "block".into())
        .await
        .unwrap()
        .id;
    let background = worker(client, &["default"]);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let working = tokio::spawn(background.run_until(async move {
        let _ = stopped.await;
    }));
    wait_for("the first job to start", || async {
        records(&t).contains(&"block:1".to_owned())
    })
    .await;
    let second = while_executing_capped::enqueue(client, t.clone(), 1, "ok".into())
        .await
        .unwrap()
        .id;
    wait_for("the second job to run once the hold ran out", || async {
        records(&t).contains(&"ok:1".to_owned())
    })
    .await;
    assert_eq!(job(client, first).await.state, JobState::Running);
    gate(&t).add_permits(1);
    wait_for("both to finish", || async {
        job(client, first).await.state.is_final() && job(client, second).await.state.is_final()
    })
    .await;
    let _ = stop.send(());
    working.await.unwrap().unwrap();
}
