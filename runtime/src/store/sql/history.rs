//! What finished when: the jobs that completed, died or were cancelled, per minute.

use super::{named, op_error, Dialect, SqlRow, SqlStore};
use super::{Both, Named};
use crate::error::Error;
use crate::query::Throughput;

/// `since`: `state, minute, count` of the jobs that finished (completed, died, were
/// cancelled) at or after `since` (ms), per minute (its start, in ms).
pub(super) static FINISHED_PER_MINUTE: Named = Named::new(Both {
    // One aggregate per state, each over its range of the finished index (state,
    // finished_at): hashed, not one sort of every job finished in the window.
    postgres: "SELECT 'completed', (finished_at / 60000) * 60000 AS minute, count(*) FROM errand_jobs
        WHERE state = 'completed' AND finished_at >= $since GROUP BY minute
        UNION ALL SELECT 'dead', (finished_at / 60000) * 60000 AS minute, count(*) FROM errand_jobs
        WHERE state = 'dead' AND finished_at >= $since GROUP BY minute
        UNION ALL SELECT 'cancelled', (finished_at / 60000) * 60000 AS minute, count(*) FROM errand_jobs
        WHERE state = 'cancelled' AND finished_at >= $since GROUP BY minute
        ORDER BY minute",
    // One aggregate per state, each over its range of the finished index (state,
    // finished_at): hashed, not one sort of every job finished in the window.
    sqlite: "SELECT 'completed', (finished_at / 60000) * 60000 AS minute, count(*) FROM errand_jobs
        WHERE state = 'completed' AND finished_at >= $since GROUP BY minute
        UNION ALL SELECT 'dead', (finished_at / 60000) * 60000 AS minute, count(*) FROM errand_jobs
        WHERE state = 'dead' AND finished_at >= $since GROUP BY minute
        UNION ALL SELECT 'cancelled', (finished_at / 60000) * 60000 AS minute, count(*) FROM errand_jobs
        WHERE state = 'cancelled' AND finished_at >= $since GROUP BY minute
        ORDER BY minute",
});

impl<D: Dialect> SqlStore<D> {
    /// The jobs that finished since `since_ms`, per minute, oldest minute first; minutes in
    /// which none finished are left out.
    pub(crate) async fn throughput(&self, since_ms: i64) -> Result<Vec<Throughput>, Error> {
        let op = named("count the jobs finished per minute");
        let rows = self
            .rows(&FINISHED_PER_MINUTE, params![since: since_ms], op)
            .await?;
        let mut minutes: Vec<Throughput> = Vec::new();
        for row in &rows {
            let err = |e| op_error::<D>(op(), e);
            let (state, minute) = (row.text(0).map_err(err)?, row.int(1).map_err(err)?);
            let count = u64::try_from(row.int(2).map_err(err)?).unwrap_or(0);
            let start = crate::info::from_millis(minute);
            let at = match minutes.last() {
                Some(last) if last.minute == start => minutes.len() - 1,
                _ => {
                    minutes.push(Throughput::new(start));
                    minutes.len() - 1
                }
            };
            let counts = &mut minutes[at];
            match state.as_str() {
                "completed" => counts.completed += count,
                "dead" => counts.dead += count,
                _ => counts.cancelled += count,
            }
        }
        Ok(minutes)
    }
}
