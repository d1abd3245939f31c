//! The lease keeper: renews the lease of every run this worker executes, every third of the
//! lease, whatever else the worker is doing. A renewal that cannot reach the database is
//! retried sooner; a run whose lease has surely run out (no renewal reached the database for a
//! whole lease) is stopped locally, so that it writes nothing more: another worker may already
//! own its job.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::runs::RunId;
use super::{store_backoff, Runner};
use crate::error::Error;

pub(super) async fn keep(runner: Arc<Runner>, stop: CancellationToken) -> Result<(), Error> {
    let lease = runner.settings.lease;
    let every = lease / 3;
    let mut failures = 0u32;
    loop {
        let wait = if failures == 0 {
            every
        } else {
            store_backoff(failures).min(every)
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return Ok(()),
        }
        let runs = runner.runs.snapshot();
        if runs.is_empty() {
            failures = 0;
            continue;
        }
        let sent_at = Instant::now();
        match runner.client.store().renew(&runner.id, &runs, lease).await {
            Ok(renewed) => {
                failures = 0;
                runner.runs.renewed(sent_at, &renewed);
            }
            Err(err) => {
                failures += 1;
                tracing::warn!(worker = %runner.id, runs = runs.len(), error = %err, "renewing leases failed; retrying");
            }
        }
        for RunId { id, fence } in runner.runs.expire(lease) {
            tracing::error!(worker = %runner.id, job.id = %id, fence, "no renewal reached the database for a whole lease; stopping the run, whose job may already run elsewhere");
        }
    }
}
