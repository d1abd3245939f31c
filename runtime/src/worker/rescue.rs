//! The rescuer: makes running jobs whose lease ran out retryable (or dead, with no attempts
//! left), so that a killed worker's jobs run again, one node at a time through a lease row;
//! adopts jobs stored by a build without this one's limits or `fair_by` ([`super::adopt`]);
//! and buries the jobs of this worker's queues whose kind no live worker knows and none took
//! within the grace period.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::Runner;
use crate::error::Error;

/// The lock that keeps rescuing to one node at a time.
const RESCUE_LOCK: &str = "errand.rescue";

/// How often at most a worker looks for jobs of kinds nobody knows: the grace is long (an hour
/// by default), and the look reads every available job of the worker's queues.
const BURY_EVERY: Duration = Duration::from_secs(30);

pub(super) async fn rescue(runner: Arc<Runner>, stop: CancellationToken) -> Result<(), Error> {
    // As often as this worker renews: a killed worker's jobs wait at most a lease and a third.
    // The worker made the first pass of both before it started this service.
    let every = runner.settings.lease / 3;
    let mut last_bury = Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return Ok(()),
        }
        rescue_expired(&runner).await;
        if last_bury.elapsed() >= BURY_EVERY {
            last_bury = Instant::now();
            super::adopt::adopt(&runner).await;
            bury_unknown(&runner).await;
        }
    }
}

/// One pass of each, as a worker starts.
pub(super) async fn once(runner: &Runner) {
    rescue_expired(runner).await;
    super::adopt::adopt(runner).await;
    bury_unknown(runner).await;
}

/// Rescues jobs whose lease ran out, if this node holds the rescue lock.
async fn rescue_expired(runner: &Runner) {
    let store = runner.client.store();
    let every = runner.settings.lease / 3;
    match store.try_lock(RESCUE_LOCK, &runner.id, every * 2).await {
        Ok(true) => match store.rescue().await {
            Ok(ids) if ids.is_empty() => {}
            Ok(ids) => {
                tracing::warn!(worker = %runner.id, jobs = ?ids, "rescued jobs whose worker stopped renewing its lease")
            }
            Err(err) => {
                tracing::warn!(worker = %runner.id, error = %err, "rescuing jobs with expired leases failed")
            }
        },
        Ok(false) => {}
        Err(err) => {
            tracing::warn!(worker = %runner.id, error = %err, "cannot take the rescue lock")
        }
    }
}

/// How many jobs of unknown kinds one statement buries.
const BURY_BATCH: usize = 1_000;

/// How many statements a pass of the burial runs at most.
const BURY_BATCHES: usize = 10;

/// Buries the jobs of this worker's queues whose kind no live worker knows (see
/// [`super::presence`]) and none took within the grace: [`BURY_BATCH`] a statement, up to
/// [`BURY_BATCHES`] statements a pass (the rest at the next pass).
async fn bury_unknown(runner: &Runner) {
    let store = runner.client.store();
    // Each worker judges by its own registry: a kind it knows is never buried by it.
    let queues: Vec<&str> = runner
        .settings
        .queues
        .iter()
        .map(|(q, _)| q.as_str())
        .collect();
    let grace = runner.settings.unknown_kind_grace;
    let mut buried = 0;
    for _ in 0..BURY_BATCHES {
        let batch = store.bury_unknown(&queues, &runner.kinds, grace, &runner.id, BURY_BATCH);
        match batch.await {
            Ok(n) => {
                buried += n;
                if n < BURY_BATCH as u64 {
                    break;
                }
            }
            Err(err) => {
                tracing::warn!(worker = %runner.id, error = %err, "burying jobs of unknown kinds failed");
                break;
            }
        }
    }
    if buried > 0 {
        tracing::error!(worker = %runner.id, jobs = buried, ?grace, "jobs of kinds no worker knows died after the grace period");
        runner.deaths.notify_one();
    }
}
