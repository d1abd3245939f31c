//! Vacuuming errand's own tables when they hold many dead rows.
//!
//! Every job leaves dead row versions behind it (its claim, its completion and its pruning each
//! write a new version, and each version an entry in every index), which only a vacuum frees.
//! Autovacuum looks at a table at most once a minute (`autovacuum_naptime`), and by default only
//! once a fifth of it is dead, at a throttled pace; a queue that moves thousands of jobs a second
//! makes a million dead rows in that minute. Measured with `errand-bench sustained` (2,000,000
//! jobs): with autovacuum off the drain fell from 4,000 to 2,000 jobs/s within two minutes;
//! with the server's default autovacuum the table and its indexes grew to 1.1 GB and the last
//! minute ran at 0.73 of the first; with this vacuum, run after each pruning round, they stayed
//! under 600 MB. So after each round the pruner vacuums (and analyzes) those of errand's
//! tables that hold more dead rows than [`DEAD_ROWS`] and a fifth of their live ones, unless a
//! vacuum (autovacuum's or another node's) is already at work on it. Where autovacuum keeps up,
//! the threshold is never reached and errand does nothing. SQLite reuses a deleted row's space
//! itself: nothing to do there.

use super::{named, op_error, Named, SqlRow, SqlStore, Value};
use crate::error::Error;
use crate::store::postgres::Postgres;

/// errand's tables, the only ones it vacuums: the names come from this list, never from the
/// database or the caller.
const TABLES: [&str; 11] = [
    "errand_jobs",
    "errand_limit_slots",
    "errand_fair_turns",
    "errand_workers",
    "errand_locks",
    "errand_steps",
    "errand_job_deps",
    "errand_job_tags",
    "errand_workflows",
    "errand_queues",
    "errand_schedules",
];

/// How many dead rows a table holds before errand vacuums it, at least (and a fifth of its
/// live rows).
const DEAD_ROWS: i64 = 10_000;

/// Those of `tables` in the store's schema that hold more than `dead_rows` dead rows (and a
/// fifth of their live ones) and that no vacuum is at work on, with how many.
static BEHIND: Named = Named::only(
    "SELECT s.relname::text, s.n_dead_tup
    FROM pg_stat_user_tables s
    WHERE s.schemaname = current_schema() AND s.relname = ANY($tables)
      AND s.n_dead_tup > $dead_rows + s.n_live_tup / 5
      AND NOT EXISTS (SELECT 1 FROM pg_stat_progress_vacuum p WHERE p.relid = s.relid)
    ORDER BY s.relname",
);

impl SqlStore<Postgres> {
    /// Vacuums and analyzes those of errand's tables that hold many dead rows and that no
    /// vacuum is at work on (see the module's documentation); returns each one vacuumed, with
    /// its dead rows before.
    pub(crate) async fn vacuum_behind(&self) -> Result<Vec<(&'static str, i64)>, Error> {
        let op = named("find errand's tables that hold many dead rows");
        let rows = self
            .rows(
                &BEHIND,
                params![tables: Value::Texts(TABLES.to_vec()), dead_rows: DEAD_ROWS],
                op,
            )
            .await?;
        let mut vacuumed = Vec::new();
        for row in &rows {
            let err = |e| op_error::<Postgres>("read a table's dead rows".to_owned(), e);
            let (name, dead) = (row.text(0).map_err(err)?, row.int(1).map_err(err)?);
            let Some(table) = TABLES.iter().find(|t| **t == name) else {
                continue;
            };
            // VACUUM runs outside a transaction, on a connection of its own; it takes no lock
            // that claims, completions or enqueues wait for. An autovacuum that starts on the
            // table meanwhile skips it; a vacuum by another node waits for this one.
            let op = || format!("vacuum {table}");
            let mut conn = self.conn(op).await?;
            <Postgres as super::Dialect>::raw(&mut conn, &format!("VACUUM (ANALYZE) {table}"))
                .await
                .map_err(|e| op_error::<Postgres>(op(), e))?;
            vacuumed.push((*table, dead));
        }
        Ok(vacuumed)
    }
}
