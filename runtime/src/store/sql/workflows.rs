//! Workflows in the SQL stores: their rows, their steps' jobs and the dependencies among them.

use super::{named, op_error, Dialect, SqlRow, SqlStore, Value};
use crate::error::Error;
use crate::info::from_millis;
use crate::info::{WorkflowId, WorkflowInfo};
use crate::job::JobId;

impl<D: Dialect> SqlStore<D> {
    /// Workflow `id` with its steps' jobs and their dependencies.
    pub(crate) async fn workflow(&self, id: WorkflowId) -> Result<Option<WorkflowInfo>, Error> {
        let op = || format!("read workflow {id}");
        let err = |e| op_error::<D>(op(), e);
        let rows = self.fetch(D::SQL.workflow, values![id.get()], op).await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let (name, created_at) = (row.text(0).map_err(err)?, row.int(1).map_err(err)?);
        let kind = row.text(2).map_err(err)?;
        let rows = self
            .fetch(D::SQL.workflow_jobs, values![id.get()], op)
            .await?;
        let jobs = rows
            .iter()
            .map(|row| row.job(D::STORE))
            .collect::<Result<Vec<_>, _>>()?;
        let rows = self
            .fetch(
                D::SQL.workflow_deps,
                values![id.get()],
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
            .fetch(D::SQL.step_scope, values![id.get(), step], op)
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
        let rows = D::fetch(
            &mut tx,
            D::SQL.wait_for_one_more,
            values![id.get(), names.clone()],
            &self.clock,
        )
        .await
        .map_err(err)?;
        let mut waiting = Vec::with_capacity(rows.len());
        for row in &rows {
            waiting.push((row.int(0).map_err(err)?, row.opt_text(1).map_err(err)?));
        }
        if waiting.is_empty() {
            let rows = D::fetch(
                &mut tx,
                D::SQL.count_steps,
                values![id.get(), names],
                &self.clock,
            )
            .await
            .map_err(err)?;
            let callbacks = match rows.first() {
                Some(row) => row.int(0).map_err(err)?,
                None => 0,
            };
            let exists = D::fetch(&mut tx, D::SQL.workflow, values![id.get()], &self.clock)
                .await
                .map_err(err)?;
            if callbacks > 0 || exists.is_empty() {
                return Err(Error::BatchClosed { batch: id });
            }
        }
        job.workflow = Some((id.get(), "added".to_owned()));
        let added = super::insert::<D>(&mut tx, &job, &self.clock).await?.id();
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
            let add = values![added.get(), Value::Ints(jobs), Value::Texts(on_failure)];
            D::execute(&mut tx, D::SQL.add_dependents, add, &self.clock)
                .await
                .map_err(err)?;
            let mark = values![Value::Ints(vec![added.get()])];
            D::fetch(&mut tx, D::SQL.lock_parents, mark, &self.clock)
                .await
                .map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        Ok(added)
    }
}
