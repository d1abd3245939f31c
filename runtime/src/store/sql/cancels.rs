//! Cancellations: a waiting job is cancelled at once; a running one is asked to stop, and its
//! worker learns of it: PostgreSQL notifies the worker in the statement that asks
//! (`request_cancel`); a store without notifications is asked by each busy worker every poll
//! interval, with the statement here.

use super::{encode_error, first, named, op_error, Both, Dialect, Named, SqlRow, SqlStore, Value};
use crate::dead::Cancellation;
use crate::error::Error;
use crate::info::AttemptError;
use crate::job::{JobId, JobState};

/// `id, error, now`: cancels a job that has not started.
pub(super) static CANCEL: Named = Named::new(Both {
    postgres: "UPDATE errand_jobs
        SET state = 'cancelled', finished_at = errand_now_ms(), lease_until = NULL,
            unique_key = errand_key_after(unique_strategy, 'cancelled', unique_key),
            errors = errors || jsonb_build_array(jsonb_set(jsonb_set($error::jsonb, '{attempt}',
                to_jsonb(attempt)), '{at}', to_jsonb(errand_now_ms())))
        WHERE id = $id AND state IN ('scheduled', 'available', 'retryable', 'pending')",
    sqlite: concat!(
        "UPDATE errand_jobs
        SET state = 'cancelled', finished_at = $now, lease_until = NULL,
            unique_key = ",
        lite_key_after!("'cancelled'"),
        ",
            errors = json_insert(errors, '$[#]', json_set(json($error), '$.attempt', attempt, '$.at', $now))
        WHERE id = $id AND state IN ('scheduled', 'available', 'retryable', 'pending')"
    ),
});

/// `id`: asks a running job to stop.
pub(super) static REQUEST_CANCEL: Named = Named::new(Both {
    // Tells the job's worker at once: `!id` on the schema's channel (see `Wake::Cancel`).
    postgres: "UPDATE errand_jobs SET cancel_requested = true WHERE id = $id AND state = 'running'
        RETURNING pg_notify('errand_' || current_schema(), '!' || id)",
    sqlite: "UPDATE errand_jobs SET cancel_requested = 1 WHERE id = $id AND state = 'running'",
});

/// `id`: the job's state, its row locked until the cancel commits, so that the state the
/// cancel acts on is the state it read (SQLite's write transaction locks the whole file).
static LOCK: Named = Named::new(Both {
    postgres: "SELECT state FROM errand_jobs WHERE id = $id FOR UPDATE",
    sqlite: "SELECT state FROM errand_jobs WHERE id = $id",
});

/// `worker`: the ids of the worker's running jobs whose cancellation was asked.
static REQUESTED: Named = Named::same(
    "SELECT id FROM errand_jobs
        WHERE state = 'running' AND worker = $worker AND cancel_requested",
);

impl<D: Dialect> SqlStore<D> {
    /// Cancels job `id` (recording `error` as its last attempt's) if it waits, asks its worker
    /// to stop it if it runs, in one transaction: a run that ends meanwhile waits for the
    /// cancel, and the cancel then meets the state it left, never a state between two reads.
    pub(crate) async fn cancel(
        &self,
        id: JobId,
        error: &AttemptError,
    ) -> Result<Cancellation, Error> {
        let op = || format!("cancel job {id}");
        let error = encode_error::<D>(id, error)?;
        let mut tx = self.begin_write().await?;
        let read = LOCK
            .fetch::<D>(&mut tx, params![id: id.get()], &self.clock)
            .await;
        let Some(row) = first(read.map_err(|e| op_error::<D>(op(), e))?) else {
            return Ok(Cancellation::NotFound);
        };
        let stored = row.text(0).map_err(|e| op_error::<D>(op(), e))?;
        let state = JobState::parse(&stored).ok_or_else(|| Error::Corrupt {
            store: D::STORE,
            id,
            reason: format!("unknown state `{stored}`"),
        })?;
        let (stmt, values, answer) = match state {
            JobState::Running => (
                &REQUEST_CANCEL,
                params![id: id.get()],
                Cancellation::Requested,
            ),
            JobState::Completed | JobState::Cancelled | JobState::Dead => {
                return Ok(Cancellation::AlreadyFinished(state))
            }
            JobState::Scheduled | JobState::Available | JobState::Retryable | JobState::Pending => {
                (
                    &CANCEL,
                    params![id: id.get(), error: error.as_str(), now: Value::Now],
                    Cancellation::Cancelled,
                )
            }
        };
        let changed = stmt.execute::<D>(&mut tx, values, &self.clock).await;
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
        let rows = self.rows(&REQUESTED, params![worker], op).await?;
        rows.iter()
            .map(|row| {
                row.int(0)
                    .map(JobId::new)
                    .map_err(|e| super::op_error::<D>(op(), e))
            })
            .collect()
    }
}
