//! Expansions stay warning-free in a crate that denies warnings.
#![deny(warnings)]
#![deny(missing_docs)]

use errand::{job, Context, JobError};

/// Errors of the job below.
#[derive(Debug, thiserror::Error, JobError)]
pub enum SyncError {
    /// Try again.
    #[error("busy")]
    #[transient]
    Busy,
}

/// A private job.
#[job(key = "sync-<account_id>")]
async fn sync_account(ctx: &Context, account_id: i64) -> Result<(), SyncError> {
    let _ = (ctx.attempt(), account_id);
    Ok(())
}

/// A public job.
#[job(queue = "bulk")]
pub async fn rebuild_index(shard: u32, full: bool) -> Result<(), SyncError> {
    let _ = (shard, full);
    Ok(())
}

fn main() {
    assert_eq!(sync_account::key(&1), "sync-1");
    let _ = rebuild_index::with(1, true);
}
