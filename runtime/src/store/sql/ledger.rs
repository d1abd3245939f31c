//! The effect ledger: a step's result, read before the step runs and recorded once after it.

use super::Both;
use super::{op_error, Dialect, SqlRow, SqlStore, Value};
use crate::error::Error;
use crate::store::StepOwner;

/// `scope, name`: a step's result.
pub(super) const STEP_RESULT: Both = Both {
    postgres: "SELECT result FROM errand_steps WHERE scope = $1 AND name = $2",
    sqlite: "SELECT result FROM errand_steps WHERE scope = ?1 AND name = ?2",
};

/// `scope, name, result, kind, job_key, job_id, now`.
pub(super) const RECORD_STEP: Both = Both {
    postgres: "INSERT INTO errand_steps (scope, name, result, created_at, kind, job_key, job_id)
        VALUES ($1, $2, $3, errand_now_ms(), $4, $5, $6)
        ON CONFLICT DO NOTHING",
    sqlite: "INSERT INTO errand_steps (scope, name, result, created_at, kind, job_key, job_id)
        VALUES (?1, ?2, ?3, ?7, ?4, ?5, ?6)
        ON CONFLICT DO NOTHING",
};

impl<D: Dialect> SqlStore<D> {
    pub(crate) async fn step_result(
        &self,
        scope: &str,
        name: &str,
    ) -> Result<Option<String>, Error> {
        let op = || format!("read step `{name}` of `{scope}`");
        let rows = self
            .fetch(STEP_RESULT.of::<D>(), values![scope, name], op)
            .await?;
        rows.first()
            .map(|row| row.text(0))
            .transpose()
            .map_err(|e| op_error::<D>(op(), e))
    }

    pub(crate) async fn record_step(
        &self,
        owner: &StepOwner<'_>,
        name: &str,
        result: &str,
    ) -> Result<(), Error> {
        let scope = owner.scope;
        let record = values![
            scope,
            name,
            result,
            owner.kind,
            owner.key,
            owner.job.get(),
            Value::Now
        ];
        let op = || format!("record step `{name}` of `{scope}`");
        self.execute(RECORD_STEP.of::<D>(), record, op).await?;
        Ok(())
    }
}
