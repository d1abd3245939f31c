//! The effect ledger: a step's result, read before the step runs and recorded once after it.

use super::{op_error, Dialect, SqlRow, SqlStore, Value};
use super::{Both, Named};
use crate::error::Error;
use crate::store::StepOwner;

/// `scope, name`: a step's result.
pub(super) static STEP_RESULT: Named =
    Named::same("SELECT result FROM errand_steps WHERE scope = $scope AND name = $name");

/// `scope, name, result, kind, job_key, job_id, now`.
pub(super) static RECORD_STEP: Named = Named::new(Both {
    postgres: "INSERT INTO errand_steps (scope, name, result, created_at, kind, job_key, job_id)
        VALUES ($scope, $name, $result, errand_now_ms(), $kind, $job_key, $job_id)
        ON CONFLICT DO NOTHING",
    sqlite: "INSERT INTO errand_steps (scope, name, result, created_at, kind, job_key, job_id)
        VALUES ($scope, $name, $result, $now, $kind, $job_key, $job_id)
        ON CONFLICT DO NOTHING",
});

impl<D: Dialect> SqlStore<D> {
    pub(crate) async fn step_result(
        &self,
        scope: &str,
        name: &str,
    ) -> Result<Option<String>, Error> {
        let op = || format!("read step `{name}` of `{scope}`");
        let rows = self.rows(&STEP_RESULT, params![scope, name], op).await?;
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
        let record = params![scope, name, result, kind: owner.kind, job_key: owner.key, job_id: owner.job.get(), now: Value::Now];
        let op = || format!("record step `{name}` of `{scope}`");
        self.run(&RECORD_STEP, record, op).await?;
        Ok(())
    }
}
