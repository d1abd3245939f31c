//! Vacuuming errand's own tables on a PostgreSQL server that does not.
//!
//! Every job leaves dead row versions behind it (its claim, its completion and its pruning each
//! write a new version, and each version an entry in every index), which only a vacuum frees.
//! Autovacuum does this on a default server. Where it is off (for the server, or for the table
//! with `autovacuum_enabled = false`), the table and its indexes grow for ever and claims walk
//! ever more dead entries: measured with `errand-bench sustained`, the drain fell from 6,000 to
//! 2,000 jobs/s within seventy seconds. So the pruner, after each round, vacuums (and analyzes)
//! those of errand's tables that autovacuum leaves alone and that hold more dead rows than
//! [`DEAD_ROWS`] and a fifth of their live ones. Where autovacuum runs, errand never vacuums.
//! SQLite reuses a deleted row's space itself: nothing to do there.

use super::{named, op_error, SqlRow, SqlStore, Value};
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

/// `tables, dead rows`: those of `tables` in the store's schema that autovacuum leaves alone
/// and that hold more dead rows than the threshold, with how many.
const UNATTENDED: &str = "SELECT s.relname::text, s.n_dead_tup
    FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
    WHERE s.schemaname = current_schema() AND s.relname = ANY($1)
      AND s.n_dead_tup > $2 + s.n_live_tup / 5
      AND NOT (current_setting('autovacuum')::bool
               AND COALESCE((SELECT o.option_value::bool FROM pg_options_to_table(c.reloptions) o
                             WHERE o.option_name = 'autovacuum_enabled'), true))
    ORDER BY s.relname";

impl SqlStore<Postgres> {
    /// Vacuums and analyzes those of errand's tables that autovacuum leaves alone and that
    /// hold many dead rows (see the module's documentation); returns each one vacuumed, with
    /// its dead rows before.
    pub(crate) async fn vacuum_unattended(&self) -> Result<Vec<(&'static str, i64)>, Error> {
        let op = named("find errand's tables that nothing vacuums");
        let rows = self
            .fetch(
                UNATTENDED,
                values![Value::Texts(TABLES.to_vec()), DEAD_ROWS],
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
            // that claims, completions or enqueues wait for.
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
