//! The rescuer: makes running jobs whose lease ran out retryable (or dead, with no attempts
//! left), so that a killed worker's jobs run again. One node at a time, through a lease row.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Runner;
use crate::error::Error;
use crate::store::Store;

/// The lock that keeps rescuing to one node at a time.
const RESCUE_LOCK: &str = "errand.rescue";

pub(super) async fn rescue(runner: Arc<Runner>, stop: CancellationToken) -> Result<(), Error> {
    // As often as this worker renews: a killed worker's jobs wait at most a lease and a third.
    let every = runner.settings.lease / 3;
    let store = runner.client.store();
    loop {
        match store.try_lock(RESCUE_LOCK, &runner.id, every * 2).await {
            Ok(true) => match store.rescue().await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::warn!(worker = %runner.id, jobs = n, "rescued jobs whose worker stopped renewing its lease")
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
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return Ok(()),
        }
    }
}
