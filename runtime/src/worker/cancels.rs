//! The cancel watcher, for stores that do not notify: while this worker runs jobs, it asks
//! every poll interval which of them had their cancellation asked, and tells those runs at
//! once ([`Context::is_cancelled`](crate::Context::is_cancelled)). On PostgreSQL the claim
//! loop hears of each cancel from the notification the cancel sends, and this service does
//! not run. Either way the lease keeper's renewals read the request too.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Runner;
use crate::error::Error;

pub(super) async fn watch(runner: Arc<Runner>, stop: CancellationToken) -> Result<(), Error> {
    loop {
        tokio::select! {
            () = tokio::time::sleep(runner.settings.poll_interval) => {}
            () = stop.cancelled() => return Ok(()),
        }
        if runner.runs.is_empty() {
            continue;
        }
        match runner.client.store().cancels_requested(&runner.id).await {
            Ok(ids) => {
                for id in ids {
                    runner.runs.cancel_job(id);
                }
            }
            Err(err) => {
                tracing::warn!(worker = %runner.id, error = %err, "reading the cancellations asked of running jobs failed")
            }
        }
    }
}
