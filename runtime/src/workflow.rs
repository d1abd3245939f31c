//! Workflows: jobs that wait on each other, declared as a graph of named steps and enqueued in
//! one transaction.
//!
//! A step waits on the steps it names ([`Workflow::add_after`]) as [`Request::after`] makes any
//! job wait: `pending` until each of them has completed, released by the database in the
//! statement that completes the last one, and cancelled (with the jobs that wait on it) when
//! one of them dies or is cancelled.

use std::collections::HashMap;

use crate::client::Client;
use crate::definition::Job;
use crate::error::Error;
use crate::job::JobId;
use crate::request::Request;
use crate::store::NewJob;
use crate::transaction::Transaction;

use crate::info::{WorkflowId, WorkflowInfo};

/// A graph of jobs, each a named step that may wait on others, enqueued together.
///
/// ```no_run
/// # #[errand::job] async fn charge(order_id: i64) -> Result<(), std::io::Error> { Ok(()) }
/// # #[errand::job] async fn reserve_stock(order_id: i64) -> Result<(), std::io::Error> { Ok(()) }
/// # #[errand::job] async fn ship(order_id: i64) -> Result<(), std::io::Error> { Ok(()) }
/// # async fn demo(client: errand::Client) -> Result<(), errand::Error> {
/// let order = errand::Workflow::new("order-42")
///     .add("charge", charge::with(42))
///     .add("stock", reserve_stock::with(42))
///     .add_after("ship", ship::with(42), ["charge", "stock"]) // once both completed
///     .enqueue(&client)
///     .await?;
/// let picture = client.workflow(order.id).await?;
/// # Ok(()) }
/// ```
///
/// Steps may be added in any order. Enqueuing checks the graph first: a step named twice, a
/// step that waits on a name no step has, or a cycle fails with [`Error::InvalidWorkflow`],
/// and nothing is stored. Then every step is stored in one transaction (or the caller's, with
/// [`Workflow::enqueue_tx`]): all of them, or none.
#[must_use = "a workflow does nothing until it is enqueued"]
pub struct Workflow {
    name: String,
    /// What it is stored as: `workflow`, or `batch` or `saga` for those built on it.
    kind: &'static str,
    steps: Vec<Step>,
}

struct Step {
    name: String,
    job: Result<NewJob, Error>,
    after: Vec<String>,
}

impl std::fmt::Debug for Workflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let steps: Vec<(&str, &[String])> = self
            .steps
            .iter()
            .map(|s| (s.name.as_str(), s.after.as_slice()))
            .collect();
        f.debug_struct("Workflow")
            .field("name", &self.name)
            .field("steps", &steps)
            .finish()
    }
}

impl Workflow {
    /// An empty workflow; its name is stored with it, for people.
    pub fn new(name: impl Into<String>) -> Workflow {
        Workflow {
            name: name.into(),
            kind: "workflow",
            steps: Vec::new(),
        }
    }

    /// The same workflow, stored as a `batch` or a `saga`.
    pub(crate) fn of_kind(mut self, kind: &'static str) -> Self {
        self.kind = kind;
        self
    }

    /// A step that waits on nothing.
    pub fn add<J: Job>(self, step: &str, request: Request<J>) -> Self {
        self.add_after(step, request, std::iter::empty::<&str>())
    }

    /// A step that waits until each of the steps named in `after` has completed.
    pub fn add_after<J: Job, I, S>(mut self, step: &str, request: Request<J>, after: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.steps.push(Step {
            name: step.to_owned(),
            job: request.into_new_job(crate::Config::DEFAULT_MAX_ARGS_BYTES),
            after: after.into_iter().map(|s| s.as_ref().to_owned()).collect(),
        });
        self
    }

    /// A step of a job already made from its request.
    pub(crate) fn add_job(
        mut self,
        step: &str,
        job: Result<NewJob, Error>,
        after: &[String],
    ) -> Self {
        self.steps.push(Step {
            name: step.to_owned(),
            job,
            after: after.to_vec(),
        });
        self
    }

    /// Stores every step in one transaction; see [`Workflow`].
    pub async fn enqueue(self, client: &Client) -> Result<EnqueuedWorkflow, Error> {
        let order = self.order()?;
        let enqueued = crate::store::with_write_transaction!(client.store(), tx => {
            self.insert(&order, &mut tx).await
        })?;
        client.notify_enqueued();
        Ok(enqueued)
    }

    /// Stores every step inside the caller's transaction (the transactional outbox): if it
    /// rolls back, the workflow never existed.
    pub async fn enqueue_tx<T: Transaction>(self, tx: &mut T) -> Result<EnqueuedWorkflow, Error> {
        let order = self.order()?;
        self.insert(&order, tx).await
    }

    /// The steps' indexes in an order where each comes after those it waits on; or what is
    /// wrong with the graph.
    fn order(&self) -> Result<Vec<usize>, Error> {
        let invalid = |reason: String| Error::InvalidWorkflow {
            name: self.name.clone(),
            reason,
        };
        if self.steps.is_empty() {
            return Err(invalid("it has no steps".to_owned()));
        }
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, step) in self.steps.iter().enumerate() {
            if index.insert(step.name.as_str(), i).is_some() {
                return Err(invalid(format!("two steps are named `{}`", step.name)));
            }
        }
        let mut waiting: Vec<usize> = vec![0; self.steps.len()];
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); self.steps.len()];
        for (i, step) in self.steps.iter().enumerate() {
            for name in &step.after {
                let Some(&parent) = index.get(name.as_str()) else {
                    let known: Vec<&str> = self.steps.iter().map(|s| s.name.as_str()).collect();
                    return Err(invalid(format!(
                        "step `{}` waits on `{name}`, which no step is named; the steps are {known:?}",
                        step.name
                    )));
                };
                waiting[i] += 1;
                dependents[parent].push(i);
            }
        }
        // Kahn's algorithm: what is left once no step is free waits on itself.
        let mut order = Vec::with_capacity(self.steps.len());
        let mut free: Vec<usize> = (0..self.steps.len()).filter(|i| waiting[*i] == 0).collect();
        while let Some(i) = free.pop() {
            order.push(i);
            for &d in &dependents[i] {
                waiting[d] -= 1;
                if waiting[d] == 0 {
                    free.push(d);
                }
            }
        }
        if order.len() < self.steps.len() {
            let cycle: Vec<&str> = (0..self.steps.len())
                .filter(|i| waiting[*i] > 0)
                .map(|i| self.steps[i].name.as_str())
                .collect();
            return Err(invalid(format!(
                "its steps wait on each other in a cycle, through {cycle:?}"
            )));
        }
        Ok(order)
    }

    /// Inserts the workflow and its steps, in `order`, on `tx`.
    async fn insert<T: Transaction>(
        self,
        order: &[usize],
        tx: &mut T,
    ) -> Result<EnqueuedWorkflow, Error> {
        let id = tx.insert_workflow(&self.name, self.kind).await?;
        let mut steps: Vec<Option<Step>> = self.steps.into_iter().map(Some).collect();
        let mut ids: HashMap<String, JobId> = HashMap::new();
        let mut enqueued = Vec::with_capacity(order.len());
        for &i in order {
            let Some(step) = steps[i].take() else {
                continue;
            };
            let mut job = step.job?;
            job.after = step
                .after
                .iter()
                .filter_map(|name| ids.get(name).copied())
                .collect();
            job.workflow = Some((id, step.name.clone()));
            let job_id = tx.insert_job(&job).await?.id();
            ids.insert(step.name.clone(), job_id);
            enqueued.push((step.name, job_id));
        }
        Ok(EnqueuedWorkflow {
            id: WorkflowId::new(id),
            steps: enqueued,
        })
    }
}

/// What [`Workflow::enqueue`] stored.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EnqueuedWorkflow {
    /// The workflow's id, for [`Client::workflow`].
    pub id: WorkflowId,
    /// Each step's name and job, in the order they were stored (each after those it waits
    /// on). A unique step whose key was taken names the job that holds it.
    pub steps: Vec<(String, JobId)>,
}

impl EnqueuedWorkflow {
    /// The job of step `name`.
    pub fn job(&self, name: &str) -> Option<JobId> {
        self.steps
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| *id)
    }
}

/// Workflows (with [`Workflow`]).
impl Client {
    /// Workflow `id` with every step's job, or `None` if it does not exist.
    pub async fn workflow(&self, id: WorkflowId) -> Result<Option<WorkflowInfo>, Error> {
        self.store().workflow(id).await
    }

    /// Cancels workflow `id`: every step that has not started is cancelled (and the steps that
    /// wait on it with it), every running step is asked to stop. Returns how many steps were
    /// cancelled or asked to stop.
    pub async fn cancel_workflow(&self, id: WorkflowId) -> Result<usize, Error> {
        let Some(workflow) = self.workflow(id).await? else {
            return Ok(0);
        };
        let mut cancelled = 0;
        for step in workflow.steps.iter().filter(|s| !s.job.state.is_final()) {
            use crate::dead::Cancellation;
            if matches!(
                self.cancel(step.job.id).await?,
                Cancellation::Cancelled | Cancellation::Requested
            ) {
                cancelled += 1;
            }
        }
        Ok(cancelled)
    }
}
