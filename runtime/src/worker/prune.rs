//! The pruner: deletes what retention lets go (finished jobs, surplus dead jobs, ledger
//! entries no job needs), in small batches, one node at a time through a lease row.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Runner;
use crate::error::Error;
use crate::store::Store;

/// The lock that keeps pruning to one node at a time.
const PRUNE_LOCK: &str = "errand.prune";
/// Rows deleted per statement, so that no prune holds locks for long.
const PRUNE_BATCH: usize = 1000;
/// Batches per pruning round; the next round carries on.
const MAX_PRUNE_BATCHES: usize = 100;

pub(super) async fn prune(runner: Arc<Runner>, stop: CancellationToken) -> Result<(), Error> {
    let every = runner.settings.prune_every;
    let store = runner.client.store();
    loop {
        // The first round waits a period, so that short-lived workers leave pruning to
        // long-running ones.
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return Ok(()),
        }
        match store.try_lock(PRUNE_LOCK, &runner.id, every * 2).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(err) => {
                tracing::warn!(worker = %runner.id, error = %err, "cannot take the pruning lock");
                continue;
            }
        }
        let mut pruned = 0;
        for _ in 0..MAX_PRUNE_BATCHES {
            if stop.is_cancelled() {
                break;
            }
            match store.prune(&runner.settings.retention, PRUNE_BATCH).await {
                Ok(deleted) => {
                    pruned += deleted;
                    if deleted < PRUNE_BATCH as u64 {
                        break;
                    }
                }
                Err(err) => {
                    tracing::warn!(worker = %runner.id, error = %err, "pruning finished jobs failed");
                    break;
                }
            }
        }
        if pruned > 0 {
            tracing::info!(worker = %runner.id, rows = pruned, "pruned finished jobs");
        }
    }
}
