//! Workflows in the SQL stores: their rows, their steps' jobs and the dependencies among them.

use super::{first, Conn};
use super::{named, op_error, Dialect, SqlRow, SqlStore, Value};
use super::{Both, Named};
use crate::error::Error;
use crate::info::from_millis;
use crate::info::{WorkflowId, WorkflowInfo};
use crate::job::JobId;
use crate::store::{BoxFuture, Clock};

/// `id`: the columns [`SqlRow::job`] reads of a workflow's jobs, by id.
pub(super) static WORKFLOW_JOBS: Named = Named::new(Both {
    postgres: concat!(pg_select_job!(), " WHERE workflow_id = $id ORDER BY id"),
    sqlite: concat!(lite_select_job!(), " WHERE workflow_id = $id ORDER BY id"),
});

/// `name, kind, now`: a new workflow; returns its id.
pub(super) static INSERT_WORKFLOW: Named = Named::new(Both {
    postgres: "INSERT INTO errand_workflows (name, kind, created_at)
        VALUES ($name, $kind, errand_now_ms()) RETURNING id",
    sqlite: "INSERT INTO errand_workflows (name, kind, created_at) VALUES ($name, $kind, $now)
        RETURNING id",
});

/// `id`: `name, created_at, kind` of a workflow.
pub(super) static WORKFLOW: Named =
    Named::same("SELECT name, created_at, kind FROM errand_workflows WHERE id = $id");

/// `workflow, steps`: counts one more job for each of the workflow's steps named in `steps`
/// that still waits; returns `id, step` of each.
pub(super) static WAIT_FOR_ONE_MORE: Named = Named::new(Both {
    postgres: "UPDATE errand_jobs SET waiting_on = waiting_on + 1
        WHERE workflow_id = $workflow AND step = ANY($steps) AND state = 'pending'
        RETURNING id, step",
    sqlite: "UPDATE errand_jobs SET waiting_on = waiting_on + 1
        WHERE workflow_id = $workflow AND step IN (SELECT value FROM json_each($steps)) AND state = 'pending'
        RETURNING id, step",
});

/// `workflow, steps`: how many of the workflow's steps are named in `steps`.
pub(super) static COUNT_STEPS: Named = Named::new(Both {
    postgres:
        "SELECT count(*) FROM errand_jobs WHERE workflow_id = $workflow AND step = ANY($steps)",
    sqlite: "SELECT count(*) FROM errand_jobs
        WHERE workflow_id = $workflow AND step IN (SELECT value FROM json_each($steps))",
});

/// `parent, jobs, on_failures` (the last two parallel): records that each of `jobs` waits
/// on `parent`.
pub(super) static ADD_DEPENDENTS: Named = Named::new(Both {
    postgres: "INSERT INTO errand_job_deps (depends_on, job_id, on_failure)
        SELECT $parent, t.job, t.on_failure FROM unnest($jobs::bigint[], $on_failures::text[]) AS t(job, on_failure)",
    sqlite: "INSERT INTO errand_job_deps (depends_on, job_id, on_failure)
        SELECT $parent, j.value, f.value FROM json_each($jobs) j JOIN json_each($on_failures) f ON f.key = j.key",
});

/// `id`: `depends_on, job_id` of every dependency among a workflow's jobs.
pub(super) static WORKFLOW_DEPS: Named = Named::same(
    "SELECT d.depends_on, d.job_id FROM errand_job_deps d
        JOIN errand_jobs j ON j.id = d.job_id WHERE j.workflow_id = $workflow",
);

/// `workflow, step`: the `kind, idempotency_key, id` of the workflow's job of that step.
pub(super) static STEP_SCOPE: Named = Named::same(
    "SELECT kind, idempotency_key, id FROM errand_jobs
        WHERE workflow_id = $workflow AND step = $step ORDER BY id LIMIT 1",
);

impl<D: Dialect> SqlStore<D> {
    /// Workflow `id` with its steps' jobs and their dependencies.
    pub(crate) async fn workflow(&self, id: WorkflowId) -> Result<Option<WorkflowInfo>, Error> {
        let op = || format!("read workflow {id}");
        let err = |e| op_error::<D>(op(), e);
        let rows = self.rows(&WORKFLOW, params![id: id.get()], op).await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let (name, created_at) = (row.text(0).map_err(err)?, row.int(1).map_err(err)?);
        let kind = row.text(2).map_err(err)?;
        let rows = self.rows(&WORKFLOW_JOBS, params![id: id.get()], op).await?;
        let jobs = rows
            .iter()
            .map(|row| row.job(D::STORE))
            .collect::<Result<Vec<_>, _>>()?;
        let rows = self
            .rows(
                &WORKFLOW_DEPS,
                params![workflow: id.get()],
                named("read a workflow's dependencies"),
            )
            .await?;
        let mut edges = Vec::with_capacity(rows.len());
        for row in &rows {
            edges.push((
                JobId::new(row.int(0).map_err(err)?),
                JobId::new(row.int(1).map_err(err)?),
            ));
        }
        Ok(Some(WorkflowInfo::from_parts(
            id,
            (name, kind),
            from_millis(created_at),
            jobs,
            &edges,
        )))
    }

    /// Where the effect ledger records the steps of step `step` of workflow `id`.
    pub(crate) async fn step_scope(
        &self,
        id: WorkflowId,
        step: &str,
    ) -> Result<Option<String>, Error> {
        let op = || format!("find step `{step}` of workflow {id}");
        let err = |e| op_error::<D>(op(), e);
        let rows = self
            .rows(&STEP_SCOPE, params![workflow: id.get(), step], op)
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let (kind, key) = (row.text(0).map_err(err)?, row.opt_text(1).map_err(err)?);
        let job = JobId::new(row.int(2).map_err(err)?);
        Ok(Some(crate::store::ledger_scope(&kind, key.as_deref(), job)))
    }

    /// Adds `job` to batch `id` in one transaction, as a job its callbacks (`callbacks`, by
    /// step name) wait on; fails if they were released already.
    pub(crate) async fn add_to_batch(
        &self,
        id: WorkflowId,
        mut job: crate::store::NewJob,
        callbacks: &[&str],
    ) -> Result<JobId, Error> {
        let op = || format!("add a job to batch {id}");
        let err = |e| op_error::<D>(op(), e);
        let mut tx = self.begin_write().await?;
        let names = Value::Texts(callbacks.to_vec());
        let rows = WAIT_FOR_ONE_MORE
            .fetch::<D>(
                &mut tx,
                params![workflow: id.get(), steps: names.clone()],
                &self.clock,
            )
            .await
            .map_err(err)?;
        let mut waiting = Vec::with_capacity(rows.len());
        for row in &rows {
            waiting.push((row.int(0).map_err(err)?, row.opt_text(1).map_err(err)?));
        }
        if waiting.is_empty() {
            let rows = COUNT_STEPS
                .fetch::<D>(
                    &mut tx,
                    params![workflow: id.get(), steps: names],
                    &self.clock,
                )
                .await
                .map_err(err)?;
            let callbacks = match rows.first() {
                Some(row) => row.int(0).map_err(err)?,
                None => 0,
            };
            let exists = WORKFLOW
                .fetch::<D>(&mut tx, params![id: id.get()], &self.clock)
                .await
                .map_err(err)?;
            if callbacks > 0 || exists.is_empty() {
                return Err(Error::BatchClosed { batch: id });
            }
        }
        job.workflow = Some((id.get(), "added".to_owned()));
        let added = super::enqueue::insert::<D>(&mut tx, &job, &self.clock)
            .await?
            .id();
        if !waiting.is_empty() {
            let on_failure = waiting
                .iter()
                .map(|(_, step)| {
                    if step.as_deref() == Some("on_complete") {
                        "run"
                    } else {
                        "cancel"
                    }
                })
                .collect();
            let jobs = waiting.iter().map(|(callback, _)| *callback).collect();
            let add = params![parent: added.get(), jobs: Value::Ints(jobs), on_failures: Value::Texts(on_failure)];
            ADD_DEPENDENTS
                .execute::<D>(&mut tx, add, &self.clock)
                .await
                .map_err(err)?;
            let mark = params![ids: Value::Ints(vec![added.get()])];
            let (sql, mark) = super::enqueue::LOCK_PARENTS.bind::<D>(mark).map_err(err)?;
            D::fetch(&mut tx, sql, mark, &self.clock)
                .await
                .map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        Ok(added)
    }
}

/// Stores a workflow named `name` of kind `kind` on `conn`; its id.
pub(crate) fn insert_workflow<'a, D: Dialect>(
    conn: &'a mut Conn<D>,
    name: &'a str,
    kind: &'static str,
    clock: &'a Clock,
) -> BoxFuture<'a, Result<i64, Error>> {
    Box::pin(async move {
        let op = |e| op_error::<D>(format!("store workflow `{name}`"), e);
        let rows = INSERT_WORKFLOW
            .fetch::<D>(conn, params![name, kind, now: Value::Now], clock)
            .await
            .map_err(op)?;
        let row = first(rows).ok_or_else(|| op(sqlx::Error::RowNotFound))?;
        row.int(0).map_err(op)
    })
}
