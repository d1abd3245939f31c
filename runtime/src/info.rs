//! What is known of a stored job: [`JobInfo`] and its history of [`AttemptError`]s.

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
