//! Cancellations: a waiting job is cancelled at once; a running one is asked to stop, and its
//! worker learns of it: PostgreSQL notifies the worker in the statement that asks
//! (`request_cancel`); a store without notifications is asked by each busy worker every poll
//! interval, with the statement here.

use super::{encode_error, first, named, op_error, Both, Dialect, SqlRow, SqlStore, Value};
use crate::dead::Cancellation;
use crate::error::Error;
use crate::info::AttemptError;
use crate::job::{JobId, JobState};

/// `id`: the job's state, its row locked until the cancel commits, so that the state the
/// cancel acts on is the state it read (SQLite's write transaction locks the whole file).
const LOCK: Both = Both {
    postgres: "SELECT state FROM errand_jobs WHERE id = $1 FOR UPDATE",
    sqlite: "SELECT state FROM errand_jobs WHERE id = ?1",
};

/// `worker`: the ids of the worker's running jobs whose cancellation was asked.
const REQUESTED: Both = Both {
    postgres: "SELECT id FROM errand_jobs
        WHERE state = 'running' AND worker = $1 AND cancel_requested",
    sqlite: "SELECT id FROM errand_jobs
        WHERE state = 'running' AND worker = ?1 AND cancel_requested",
};

impl<D: Dialect> SqlStore<D> {
    /// Cancels job `id` (recording `error` as its last attempt's) if it waits, asks its worker
    /// to stop it if it runs, in one transaction: a run that ends meanwhile waits for the
    /// cancel, and the cancel then meets the state it left, never a state between two reads.
    pub(crate) async fn cancel_job(
        &self,
        id: JobId,
        error: &AttemptError,
    ) -> Result<Cancellation, Error> {
        let op = || format!("cancel job {id}");
        let error = encode_error::<D>(id, error)?;
        let mut tx = self.begin_write().await?;
        let read = D::fetch(&mut tx, LOCK.of::<D>(), values![id.get()], &self.clock).await;
        let Some(row) = first(read.map_err(|e| op_error::<D>(op(), e))?) else {
            return Ok(Cancellation::NotFound);
        };
        let stored = row.text(0).map_err(|e| op_error::<D>(op(), e))?;
        let state = JobState::parse(&stored).ok_or_else(|| Error::Corrupt {
            store: D::STORE,
            id,
            reason: format!("unknown state `{stored}`"),
        })?;
        let (sql, values, answer) = match state {
            JobState::Running => (
                D::SQL.request_cancel,
                values![id.get()],
                Cancellation::Requested,
            ),
            JobState::Completed | JobState::Cancelled | JobState::Dead => {
                return Ok(Cancellation::AlreadyFinished(state))
            }
            JobState::Scheduled | JobState::Available | JobState::Retryable | JobState::Pending => {
                (
                    D::SQL.cancel,
                    values![id.get(), error.as_str(), Value::Now],
                    Cancellation::Cancelled,
                )
            }
        };
        let changed = D::execute(&mut tx, sql, values, &self.clock).await;
        if changed.map_err(|e| op_error::<D>(op(), e))? != 1 {
            return Err(Error::Corrupt {
                store: D::STORE,
                id,
                reason: format!("a job `{stored}` under lock could not be cancelled"),
            });
        }
        tx.commit().await.map_err(|e| op_error::<D>(op(), e))?;
        Ok(answer)
    }

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
