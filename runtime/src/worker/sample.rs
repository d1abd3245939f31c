//! The sampler: reads each queue's counts into the metrics' gauges
//! ([`Worker::queue_metrics`](crate::Worker::queue_metrics)), one node at a time through a
//! lease row, so that a cluster of many workers reads them once per period, not once per
//! worker.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Runner;
use crate::error::Error;

/// The lock that keeps sampling to one node at a time.
const SAMPLE_LOCK: &str = "errand.metrics";

pub(super) async fn sample(runner: Arc<Runner>, stop: CancellationToken) -> Result<(), Error> {
    let Some(every) = runner.settings.queue_metrics else {
        return Ok(());
    };
    let store = runner.client.store();
    loop {
        // Held while this node renews it; another takes it two periods after this one stops.
        match store.try_lock(SAMPLE_LOCK, &runner.id, every * 2).await {
            Ok(true) => match runner.client.queue_stats().await {
                Ok(stats) => crate::metrics::sampled(&stats),
                Err(err) => {
                    tracing::warn!(worker = %runner.id, error = %err, "sampling the queues for metrics failed")
                }
            },
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(worker = %runner.id, error = %err, "cannot take the metrics sampling lock")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return Ok(()),
        }
    }
}
