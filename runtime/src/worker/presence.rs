//! The worker's presence among the live workers: a row with its host, pid, queues,
//! concurrency and the kinds it knows, written as it starts, renewed every
//! [`HEARTBEAT_EVERY`], and removed as it stops. Rows of workers killed without saying so are
//! removed once stale, by whichever worker renews next.
//!
//! Burying reads it: a job is buried as of an unknown kind only when no live worker knows its
//! kind, so that a worker of an older build never buries the jobs a newer one is there to run.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Runner;
use crate::error::Error;
use crate::store::{Presence, HEARTBEAT_EVERY, WORKER_STALE};

/// Writes or renews this worker's row.
pub(super) async fn announce(runner: &Runner) {
    let presence = Presence {
        id: &runner.id,
        host: &runner.host,
        pid: std::process::id(),
        queues: runner
            .settings
            .queues
            .iter()
            .map(|(q, _)| q.as_str())
            .collect(),
        kinds: &runner.kinds,
        concurrency: runner.settings.concurrency,
    };
    if let Err(err) = runner.client.store().heartbeat(&presence).await {
        tracing::warn!(worker = %runner.id, error = %err, "recording this worker as live failed");
    }
}

/// Renews this worker's row every [`HEARTBEAT_EVERY`] and removes stale ones, until `stop`.
pub(super) async fn keep(runner: Arc<Runner>, stop: CancellationToken) -> Result<(), Error> {
    loop {
        tokio::select! {
            () = tokio::time::sleep(HEARTBEAT_EVERY) => {}
            () = stop.cancelled() => return Ok(()),
        }
        announce(&runner).await;
        if let Err(err) = runner.client.store().forget_workers(WORKER_STALE).await {
            tracing::warn!(worker = %runner.id, error = %err, "removing stale workers failed");
        }
    }
}

/// Removes this worker's row and gives up its locks, as it stops (its services have).
pub(super) async fn leave(runner: &Runner) {
    if let Err(err) = runner.client.store().leave(&runner.id).await {
        tracing::warn!(worker = %runner.id, error = %err, "removing this worker from the live workers failed");
    }
}
