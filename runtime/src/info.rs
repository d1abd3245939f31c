//! What the store says of what it holds: a job ([`JobInfo`], with its history of
//! [`AttemptError`]s), a workflow ([`WorkflowInfo`]) and a schedule ([`ScheduleInfo`]), as the
//! client returns them.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::classify::FailureKind;
use crate::job::{JobId, JobState};

/// A stored job, as returned by [`Client::job`](crate::Client::job).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct JobInfo {
    /// The job's id.
    pub id: JobId,
    /// Its kind name.
    pub kind: String,
    /// Its queue.
    pub queue: String,
    /// Its arguments, as stored. If the stored text is not JSON at all (a row written by hand,
    /// which dies as undecodable when claimed), the raw text as a JSON string.
    pub args: serde_json::Value,
    /// Where it is in its life.
    pub state: JobState,
    /// Attempts spent so far (a snooze or a graceful shutdown spends none).
    pub attempt: u32,
    /// The most attempts it gets: the first plus its `retry` count.
    pub max_attempts: u32,
    /// 0 (first) to 9 (last).
    pub priority: u8,
    /// Its rendered key, for a job with a `key` template.
    pub key: Option<String>,
    /// When it was enqueued.
    pub created_at: SystemTime,
    /// When it runs (next, or last).
    pub run_at: SystemTime,
    /// When its latest attempt started.
    pub attempted_at: Option<SystemTime>,
    /// When it completed, was cancelled or died.
    pub finished_at: Option<SystemTime>,
    /// Every failed attempt, oldest first.
    pub errors: Vec<AttemptError>,
    /// Its labels (`Request::tags`).
    pub tags: Vec<String>,
    /// The caller's data stored with it (`Request::meta`): a JSON object, `{}` when none.
    pub meta: serde_json::Value,
    /// The run time limit its request set, overriding the job's `timeout`.
    pub timeout: Option<Duration>,
    /// Its deadline: if it has not started by then, it is cancelled as expired
    /// (`#[job(expires_in = ..)]`, [`Request::expires_at`](crate::Request::expires_at)).
    pub expires_at: Option<SystemTime>,
    /// The workflow it is a step of ([`Workflow`](crate::Workflow)).
    pub workflow: Option<crate::WorkflowId>,
    /// Its step's name in that workflow.
    pub step: Option<String>,
}

impl JobInfo {
    /// Decodes the arguments, e.g. into a job's `Args`.
    pub fn args_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.args)
    }
}

/// One failed attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttemptError {
    /// The attempt's number, from 1.
    pub attempt: u32,
    /// Why it failed.
    pub kind: FailureKind,
    /// The error's message.
    pub message: String,
    /// When the attempt ended.
    pub at: SystemTime,
    /// How long the attempt ran.
    pub duration: Duration,
    /// The worker that ran it.
    pub worker: String,
}

/// [`AttemptError`] as stored: a JSON object in the job's `errors` array.
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredAttempt {
    pub attempt: u32,
    pub kind: FailureKind,
    pub message: String,
    pub at: i64,
    pub duration_ms: i64,
    pub worker: String,
}

impl From<&AttemptError> for StoredAttempt {
    fn from(e: &AttemptError) -> Self {
        StoredAttempt {
            attempt: e.attempt,
            kind: e.kind,
            message: e.message.clone(),
            at: to_millis(e.at),
            duration_ms: i64::try_from(e.duration.as_millis()).unwrap_or(i64::MAX),
            worker: e.worker.clone(),
        }
    }
}

impl From<StoredAttempt> for AttemptError {
    fn from(s: StoredAttempt) -> Self {
        AttemptError {
            attempt: s.attempt,
            kind: s.kind,
            message: s.message,
            at: from_millis(s.at),
            duration: Duration::from_millis(u64::try_from(s.duration_ms).unwrap_or(0)),
            worker: s.worker,
        }
    }
}

/// The longest duration and the furthest time errand stores, in milliseconds: about 1,000
/// years, far enough to mean "never", and small enough that adding one to a clock reading
/// never overflows a 64-bit integer (PostgreSQL's `bigint` errs where SQLite would saturate).
pub(crate) const MAX_MILLIS: i64 = 1_000 * 366 * 86_400 * 1_000;

/// Milliseconds since the Unix epoch, as stored, within `±MAX_MILLIS`.
pub(crate) fn to_millis(t: SystemTime) -> i64 {
    let ms = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
    };
    ms.clamp(-MAX_MILLIS, MAX_MILLIS)
}

pub(crate) fn from_millis(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// A duration in milliseconds, at most `MAX_MILLIS`: `Duration::MAX` as a delay, a lease or a
/// retention means "about forever", never an overflow.
pub(crate) fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).map_or(MAX_MILLIS, |ms| ms.min(MAX_MILLIS))
}

/// A workflow's id, unique within its store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkflowId(i64);

impl WorkflowId {
    /// The id as stored.
    pub const fn get(self) -> i64 {
        self.0
    }

    pub(crate) const fn new(id: i64) -> Self {
        WorkflowId(id)
    }
}

impl From<i64> for WorkflowId {
    fn from(id: i64) -> WorkflowId {
        WorkflowId(id)
    }
}

impl std::fmt::Display for WorkflowId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a workflow stands, from its steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkflowState {
    /// Some step has not finished.
    Running,
    /// Every step completed.
    Completed,
    /// Every step finished, and one died (the steps that waited on it were cancelled).
    Failed,
    /// Every step finished, none died, and one was cancelled.
    Cancelled,
}

/// One step of a workflow, from [`Client::workflow`](crate::Client::workflow).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WorkflowStep {
    /// The step's name.
    pub name: String,
    /// Its job: state, attempts, errors.
    pub job: JobInfo,
    /// The steps it waits on, by name.
    pub after: Vec<String>,
}

/// A whole workflow, from [`Client::workflow`](crate::Client::workflow).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WorkflowInfo {
    /// Its id.
    pub id: WorkflowId,
    /// The name it was given.
    pub name: String,
    /// When it was enqueued.
    pub created_at: SystemTime,
    /// Where it stands.
    pub state: WorkflowState,
    /// Its steps, in the order they were stored.
    pub steps: Vec<WorkflowStep>,
    /// What it was stored as: `workflow`, `batch` or `saga`.
    pub(crate) kind: String,
}

impl WorkflowInfo {
    /// Step `name`.
    pub fn step(&self, name: &str) -> Option<&WorkflowStep> {
        self.steps.iter().find(|s| s.name == name)
    }

    pub(crate) fn from_parts(
        id: WorkflowId,
        (name, kind): (String, String),
        created_at: SystemTime,
        jobs: Vec<JobInfo>,
        edges: &[(JobId, JobId)],
    ) -> WorkflowInfo {
        let names: HashMap<JobId, String> = jobs
            .iter()
            .map(|j| (j.id, j.step.clone().unwrap_or_else(|| j.id.to_string())))
            .collect();
        let mut parents: HashMap<JobId, Vec<JobId>> = HashMap::new();
        for (parent, child) in edges {
            parents.entry(*child).or_default().push(*parent);
        }
        let steps: Vec<WorkflowStep> = jobs
            .into_iter()
            .map(|job| {
                let after = parents
                    .get(&job.id)
                    .into_iter()
                    .flatten()
                    .map(|parent| {
                        names
                            .get(parent)
                            .cloned()
                            .unwrap_or_else(|| format!("job {parent}"))
                    })
                    .collect();
                WorkflowStep {
                    name: names.get(&job.id).cloned().unwrap_or_default(),
                    job,
                    after,
                }
            })
            .collect();
        let states: Vec<JobState> = steps.iter().map(|s| s.job.state).collect();
        let state = if !states.iter().all(|s| s.is_final()) {
            WorkflowState::Running
        } else if states.contains(&JobState::Dead) {
            WorkflowState::Failed
        } else if states.contains(&JobState::Cancelled) {
            WorkflowState::Cancelled
        } else {
            WorkflowState::Completed
        };
        WorkflowInfo {
            id,
            name,
            created_at,
            state,
            steps,
            kind,
        }
    }
}

/// What a schedule does with the slots it missed while no worker ran it (a deploy, an outage).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CatchUp {
    /// Missed slots are skipped. A slot runs only if a worker sees it at most
    /// [`CatchUp::ON_TIME`] late. The default, as in cron.
    #[default]
    None,
    /// Of the slots missed, only the latest runs: a cleanup or a sync that only needs to have
    /// run once since.
    Latest,
    /// Every missed slot runs, in order, but at most the latest `max` of them: a report per
    /// hour that must exist for every hour.
    All {
        /// The most slots run at once after a stop; older ones are skipped.
        max: u32,
    },
}

impl CatchUp {
    /// How late a slot may be seen and still run under [`CatchUp::None`].
    pub const ON_TIME: Duration = Duration::from_secs(60);

    /// `CatchUp::All` with the cap `#[job(catch_up = "all")]` sets.
    pub const ALL: CatchUp = CatchUp::All { max: 24 };

    /// As stored: `none`, `latest`, or `all:<max>`.
    pub(crate) fn as_stored(self) -> String {
        match self {
            CatchUp::None => "none".to_owned(),
            CatchUp::Latest => "latest".to_owned(),
            CatchUp::All { max } => format!("all:{max}"),
        }
    }

    pub(crate) fn from_stored(stored: &str) -> CatchUp {
        match stored.split_once(':') {
            _ if stored == "latest" => CatchUp::Latest,
            Some(("all", max)) => max.parse().map_or(CatchUp::ALL, |max| CatchUp::All { max }),
            _ => CatchUp::None,
        }
    }
}

/// A stored schedule, from [`Client::schedules`](crate::Client::schedules).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScheduleInfo {
    /// Its name (the job's kind, unless [`Periodic::name`](crate::Periodic::name) named it).
    pub name: String,
    /// Its cron expression.
    pub cron: String,
    /// The time zone the expression is read in.
    pub timezone: String,
    /// The kind of job it enqueues.
    pub kind: String,
    /// The queue it enqueues to.
    pub queue: String,
    /// What it does with missed slots.
    pub catch_up: CatchUp,
    /// The latest slot it enqueued a job for.
    pub last_run: Option<SystemTime>,
    /// The job it enqueued for that slot.
    pub last_job: Option<JobId>,
    /// Its next slot, as the last worker that ran it computed.
    pub next_run: Option<SystemTime>,
    /// When a worker that runs it last looked at it: a schedule removed from the code is no
    /// longer seen, and is forgotten a day later.
    pub last_seen: SystemTime,
}
