//! Batches: jobs tracked together, with callbacks enqueued once every one of them has finished.
//!
//! A batch is a [`Workflow`] whose steps are its jobs, and whose callbacks are steps that wait
//! on all of them: `on_complete` however they end, `on_success` only if none died or was
//! cancelled. So the database releases a callback in the statement that finishes the batch's
//! last job, once, on whichever node finishes it.

use crate::client::Client;
use crate::definition::Job;
use crate::error::Error;
use crate::info::JobInfo;
use crate::info::WorkflowId;
use crate::job::{JobId, OnDependencyFailure};
use crate::query::StateCounts;
use crate::request::Request;
use crate::store::NewJob;
use crate::workflow::Workflow;

/// The step names of a batch's callbacks.
const ON_SUCCESS: &str = "on_success";
const ON_COMPLETE: &str = "on_complete";

/// Jobs enqueued together, with callbacks when they have all finished.
///
/// ```no_run
/// # #[errand::job] async fn resize(image_id: i64) -> Result<(), std::io::Error> { Ok(()) }
/// # #[errand::job] async fn publish_album(album_id: i64) -> Result<(), std::io::Error> { Ok(()) }
/// # #[errand::job] async fn report(album_id: i64) -> Result<(), std::io::Error> { Ok(()) }
/// # async fn demo(client: errand::Client) -> Result<(), errand::Error> {
/// let batch = (1..=100)
///     .fold(errand::Batch::new(), |batch, image| batch.add(resize::with(image)))
///     .on_success(publish_album::with(7)) // once, if every resize completed
///     .on_complete(report::with(7)) // once, however they ended
///     .enqueue(&client)
///     .await?;
/// let status = client.batch(batch.id).await?;
/// # Ok(()) }
/// ```
///
/// A job of the batch can add jobs to it while the batch is open (until its last job has
/// finished): [`Client::add_to_batch`]. The callbacks then wait for those too.
#[must_use = "a batch does nothing until it is enqueued"]
#[derive(Default)]
pub struct Batch {
    jobs: Vec<Result<NewJob, Error>>,
    on_success: Option<Result<NewJob, Error>>,
    on_complete: Option<Result<NewJob, Error>>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("jobs", &self.jobs.len())
            .field("on_success", &self.on_success.is_some())
            .field("on_complete", &self.on_complete.is_some())
            .finish()
    }
}

fn new_job<J: Job>(request: Request<J>) -> Result<NewJob, Error> {
    request.into_new_job(crate::Config::DEFAULT_MAX_ARGS_BYTES)
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// A job of the batch.
    // Named as `Workflow::add`: it adds a job, it does not sum batches.
    #[allow(clippy::should_implement_trait)]
    pub fn add<J: Job>(mut self, request: Request<J>) -> Self {
        self.jobs.push(new_job(request));
        self
    }

    /// Enqueued once every job of the batch has completed; cancelled if one died or was
    /// cancelled.
    pub fn on_success<J: Job>(mut self, request: Request<J>) -> Self {
        self.on_success = Some(new_job(request));
        self
    }

    /// Enqueued once every job of the batch has finished, however it finished.
    pub fn on_complete<J: Job>(mut self, request: Request<J>) -> Self {
        self.on_complete = Some(new_job(
            request.on_dependency_failure(OnDependencyFailure::Run),
        ));
        self
    }

    /// Stores the batch, its jobs and its callbacks in one transaction.
    pub async fn enqueue(self, client: &Client) -> Result<EnqueuedBatch, Error> {
        let (workflow, names) = self.into_workflow();
        let enqueued = workflow.enqueue(client).await?;
        let jobs = enqueued
            .steps
            .iter()
            .filter(|(name, _)| names.contains(name))
            .map(|(_, id)| *id)
            .collect();
        Ok(EnqueuedBatch {
            id: enqueued.id,
            jobs,
        })
    }

    /// The batch as a workflow: its jobs as steps `job-0`, `job-1`, ..., each callback a step
    /// after all of them. Also the jobs' step names.
    fn into_workflow(self) -> (Workflow, Vec<String>) {
        let names: Vec<String> = (0..self.jobs.len()).map(|i| format!("job-{i}")).collect();
        let mut workflow = Workflow::new("batch").of_kind("batch");
        for (name, job) in names.iter().zip(self.jobs) {
            workflow = workflow.add_job(name, job, &[]);
        }
        for (name, callback) in [
            (ON_SUCCESS, self.on_success),
            (ON_COMPLETE, self.on_complete),
        ] {
            if let Some(callback) = callback {
                workflow = workflow.add_job(name, callback, &names);
            }
        }
        (workflow, names)
    }
}

/// What [`Batch::enqueue`] stored.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EnqueuedBatch {
    /// The batch's id (that of the workflow it is), for [`Client::batch`].
    pub id: WorkflowId,
    /// Its jobs, in the order they were added.
    pub jobs: Vec<JobId>,
}

/// A batch at a glance, from [`Client::batch`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BatchInfo {
    /// Its id.
    pub id: WorkflowId,
    /// Its jobs (callbacks aside), by state.
    pub counts: StateCounts,
    /// How many jobs it has (callbacks aside).
    pub total: u64,
    /// Whether every job has finished: then no job can be added.
    pub finished: bool,
    /// The `on_success` callback's job, if it has one.
    pub on_success: Option<JobInfo>,
    /// The `on_complete` callback's job, if it has one.
    pub on_complete: Option<JobInfo>,
}

/// Adding to a job's own batch.
impl crate::Context {
    /// Adds a job to the batch this job belongs to, while the batch is open: its callbacks wait
    /// for the new job too (Sidekiq Pro's reopening). Fails with [`Error::NotInBatch`] for a
    /// job of no batch.
    ///
    /// ```no_run
    /// # use errand::{job, Context};
    /// #[job]
    /// async fn crawl(ctx: &Context, page: String) -> Result<(), errand::Error> {
    ///     for link in ["https://example.com/a", "https://example.com/b"] {
    ///         ctx.add_to_batch(crawl::with(link.to_owned())).await?;
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub async fn add_to_batch<J: Job>(&self, request: Request<J>) -> Result<JobId, Error> {
        let store = self.store();
        let batch = store.job(self.id()).await?.and_then(|me| me.workflow);
        let Some(batch) = batch else {
            return Err(Error::NotInBatch { id: self.id() });
        };
        let job = new_job(request)?;
        store
            .add_to_batch(batch, job, &[ON_SUCCESS, ON_COMPLETE])
            .await
    }
}

/// Batches (with [`Batch`]).
impl Client {
    /// Batch `id`: its jobs by state, and its callbacks; `None` if it does not exist.
    pub async fn batch(&self, id: WorkflowId) -> Result<Option<BatchInfo>, Error> {
        let Some(workflow) = self.workflow(id).await? else {
            return Ok(None);
        };
        let mut info = BatchInfo {
            id,
            counts: StateCounts::default(),
            total: 0,
            finished: true,
            on_success: None,
            on_complete: None,
        };
        for step in workflow.steps {
            match step.name.as_str() {
                ON_SUCCESS => info.on_success = Some(step.job),
                ON_COMPLETE => info.on_complete = Some(step.job),
                _ => {
                    info.counts.add(step.job.state, 1);
                    info.total += 1;
                    info.finished &= step.job.state.is_final();
                }
            }
        }
        Ok(Some(info))
    }

    /// Adds a job to open batch `id` (one whose jobs have not all finished), typically from a
    /// job of the batch: its callbacks wait for this job too. Fails with
    /// [`Error::BatchClosed`] once every job of the batch has finished and its callbacks were
    /// released.
    ///
    /// ```no_run
    /// # #[errand::job] async fn crawl(page: String) -> Result<(), errand::Error> { Ok(()) }
    /// # async fn demo(ctx: &errand::Context, client: &errand::Client, batch: errand::WorkflowId) -> Result<(), errand::Error> {
    /// // Inside a job of the batch: crawl the links it found, as part of the same batch.
    /// client.add_to_batch(batch, crawl::with("https://example.com/next".into())).await?;
    /// # Ok(()) }
    /// ```
    pub async fn add_to_batch<J: Job>(
        &self,
        id: WorkflowId,
        request: Request<J>,
    ) -> Result<JobId, Error> {
        let job = request.into_new_job(self.config().max_args_bytes_limit())?;
        let added = self
            .store()
            .add_to_batch(id, job, &[ON_SUCCESS, ON_COMPLETE])
            .await?;
        self.notify_enqueued();
        Ok(added)
    }
}
