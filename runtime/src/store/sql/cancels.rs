//! Cancellations of running jobs, as their workers learn of them: PostgreSQL notifies the
//! worker in the statement that asks (`request_cancel`); a store without notifications is
//! asked by each busy worker every poll interval, with the statement here.

use super::{named, Both, Dialect, SqlRow, SqlStore, Value};
use crate::error::Error;
use crate::job::JobId;

/// `worker`: the ids of the worker's running jobs whose cancellation was asked.
const REQUESTED: Both = Both {
    postgres: "SELECT id FROM errand_jobs
        WHERE state = 'running' AND worker = $1 AND cancel_requested",
    sqlite: "SELECT id FROM errand_jobs
        WHERE state = 'running' AND worker = ?1 AND cancel_requested",
};

impl<D: Dialect> SqlStore<D> {
    /// The running jobs of `worker` whose cancellation was asked.
    pub(crate) async fn cancels_requested(&self, worker: &str) -> Result<Vec<JobId>, Error> {
        let op = named("read the cancellations asked of running jobs");
        let rows = self.fetch(REQUESTED.of::<D>(), values![worker], op).await?;
        rows.iter()
            .map(|row| {
                row.int(0)
                    .map(JobId::new)
                    .map_err(|e| super::op_error::<D>(op(), e))
            })
            .collect()
    }
}
