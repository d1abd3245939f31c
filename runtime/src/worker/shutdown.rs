//! Graceful shutdown: stop claiming, let running jobs finish within the grace period (the lease
//! keeper still renews them), write the completions, and put the rest back without spending an
//! attempt.

use std::collections::HashSet;

use tokio::task::JoinSet;

use super::execute::{log_join, write_completions, PendingCompletion, TaskEnd};
use super::runs::RunId;
use super::{store_backoff, Runner};
use crate::job::JobId;

pub(super) async fn shut_down(
    runner: &Runner,
    mut tasks: JoinSet<TaskEnd>,
    mut completed: Vec<PendingCompletion>,
) {
    if !tasks.is_empty() {
        tracing::info!(worker = %runner.id, running = tasks.len(), grace = ?runner.settings.grace_period, "shutting down: waiting for running jobs");
        let deadline = tokio::time::sleep(runner.settings.grace_period);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                joined = tasks.join_next() => match joined {
                    Some(joined) => {
                        if let Some(TaskEnd::Completed(done)) = log_join(joined) {
                            completed.push(done);
                        }
                    }
                    None => break,
                },
                () = &mut deadline => break,
            }
        }
    }
    // What is still registered is what the tasks were running when the grace period ended
    // (an aborted task's guard removes its run, so look before aborting).
    let registered = runner.runs.snapshot();
    tasks.abort_all();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            // A task that ended between the look and the abort: its job is done, and must be
            // completed, not put back to run again.
            Ok(TaskEnd::Completed(done)) => completed.push(done),
            Ok(_) => {}
            Err(err) if err.is_panic() => {
                tracing::error!(worker = %runner.id, "a job task panicked while stopping");
            }
            Err(_) => {}
        }
    }
    let done: HashSet<RunId> = completed.iter().map(|c| c.run).collect();
    let unfinished: Vec<JobId> = registered
        .into_iter()
        .filter(|run| !done.contains(run))
        .map(|run| run.id)
        .collect();
    // Jobs that completed before the deadline are recorded as completed, not put back.
    for _ in 0..5 {
        if completed.is_empty() || write_completions(runner, &mut completed).await {
            break;
        }
    }
    runner.runs.drain();
    if unfinished.is_empty() {
        tracing::info!(worker = %runner.id, "errand worker stopped");
        return;
    }
    for failures in 1..=5 {
        match runner.client.store().release(&runner.id, &unfinished).await {
            Ok(()) => {
                tracing::info!(worker = %runner.id, jobs = ?unfinished, "put unfinished jobs back");
                return;
            }
            Err(err) => {
                tracing::warn!(worker = %runner.id, error = %err, "putting unfinished jobs back failed");
                tokio::time::sleep(store_backoff(failures)).await;
            }
        }
    }
    tracing::error!(worker = %runner.id, jobs = ?unfinished, "could not put unfinished jobs back; they will be rescued when their leases run out");
}

/// Ctrl-C, or SIGTERM on Unix.
pub(super) async fn signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutdown signal received");
}
