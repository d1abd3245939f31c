//! The pruner: deletes what retention lets go (finished jobs, surplus dead jobs, ledger
//! entries no job needs), in small batches, one node at a time through a lease row; then, on
//! PostgreSQL, vacuums errand's tables that hold many dead rows (see `store/sql/vacuum.rs`).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Runner;
use crate::dead::Retention;
use crate::error::Error;
use crate::store::Backend;

/// The lock that keeps pruning to one node at a time.
const PRUNE_LOCK: &str = "errand.prune";
/// Rows deleted per statement, so that no prune holds locks for long.
const PRUNE_BATCH: usize = 1000;
/// Batches between two renewals of the pruning lock. A round goes on until a batch comes back
/// short: with a fixed number of batches a round, pruning could delete at most that many rows
/// a period, and a faster stream of completions would grow the table for ever.
const BATCHES_PER_RENEWAL: usize = 100;

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
        let renew = || store.try_lock(PRUNE_LOCK, &runner.id, every * 2);
        let pruned = round(store, &runner.settings.retention, &stop, renew).await;
        if pruned > 0 {
            tracing::info!(worker = %runner.id, rows = pruned, "pruned finished jobs");
        }
        if stop.is_cancelled() {
            continue;
        }
        match store.vacuum_behind().await {
            Ok(vacuumed) => {
                for (table, dead) in vacuumed {
                    tracing::info!(worker = %runner.id, table, dead_rows = dead, "vacuumed a table holding many dead rows");
                }
            }
            Err(err) => {
                tracing::warn!(worker = %runner.id, error = %err, "vacuuming errand's tables failed");
            }
        }
    }
}

/// One round of pruning: batches until one comes back short, or `stop` fires, or `renew` (run
/// every [`BATCHES_PER_RENEWAL`] batches, to keep the lock) says the lock is lost. Returns how
/// many rows went.
async fn round<R, F>(
    store: &Backend,
    retention: &Retention,
    stop: &CancellationToken,
    mut renew: R,
) -> u64
where
    R: FnMut() -> F,
    F: std::future::Future<Output = Result<bool, Error>>,
{
    let mut pruned = 0;
    let mut batches = 0;
    while !stop.is_cancelled() {
        if batches > 0 && batches % BATCHES_PER_RENEWAL == 0 {
            match renew().await {
                Ok(true) => {}
                Ok(false) => break,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot keep the pruning lock");
                    break;
                }
            }
        }
        batches += 1;
        match store.prune(retention, PRUNE_BATCH).await {
            Ok(deleted) => {
                pruned += deleted;
                if deleted < PRUNE_BATCH as u64 {
                    break;
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "pruning finished jobs failed");
                break;
            }
        }
    }
    pruned
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    /// A round goes on while it finds full batches: a backlog of finished jobs larger than
    /// [`BATCHES_PER_RENEWAL`] batches goes in one round, so that pruning keeps up with any
    /// rate of completions, whatever the period between rounds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_round_prunes_until_nothing_is_left() {
        let path = std::env::temp_dir().join(format!("errand-prune-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let store = SqliteStore::connect(&url, true)
            .await
            .expect("open the file");
        let finished = (BATCHES_PER_RENEWAL * PRUNE_BATCH * 3 / 2) as i64;
        sqlx::query(
            "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < ?1)
             INSERT INTO errand_jobs (kind, queue, args, state, priority, max_attempts, run_at,
                                      created_at, finished_at)
             SELECT 'done', 'default', '{}', 'completed', 0, 1, 0, 0, 0 FROM g",
        )
        .bind(finished)
        .execute(&store.pool)
        .await
        .expect("fill the table");
        let pool = store.pool.clone();
        let store = Backend::Sqlite(store);
        let mut renewals = 0;
        let renew = || {
            renewals += 1;
            std::future::ready(Ok(true))
        };
        let retention = Retention::default().keep_finished_for(std::time::Duration::ZERO);
        let pruned = round(&store, &retention, &CancellationToken::new(), renew).await;
        assert_eq!(pruned, finished as u64);
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM errand_jobs")
            .fetch_one(&pool)
            .await
            .expect("count the jobs");
        assert_eq!(left, 0);
        assert_eq!(
            renewals, 1,
            "the lock is renewed every {BATCHES_PER_RENEWAL} batches"
        );
        drop(store);
        let _ = std::fs::remove_file(&path);
    }
}
