//! [`Request`]: a typed, not-yet-enqueued job, built by `my_job::with(args..)`.

use std::marker::PhantomData;
use std::time::{Duration, SystemTime};

use crate::definition::Job;
use crate::error::Error;
use crate::job::JobId;
use crate::job::{OnConflict, OnDependencyFailure};
use crate::store::{Expiry, Inserted, Keys, NewJob, RunAt};
use crate::transaction::Transaction;

/// The largest arguments a job may have, as JSON, unless the client's configuration says
/// otherwise ([`Config::max_args_bytes`](crate::Config::max_args_bytes)).
pub(crate) const DEFAULT_MAX_ARGS_BYTES: usize = 1024 * 1024;

/// A job with its arguments, ready to enqueue. `#[job]` generates `my_job::with(args..)` to
/// build one; the arguments' types are checked by the compiler.
///
/// ```no_run
/// use std::time::Duration;
/// use errand::{job, Client};
///
/// #[job(queue = "mail")]
/// async fn send_receipt(order_id: i64, email: String) -> Result<(), std::io::Error> {
///     Ok(())
/// }
///
/// # async fn demo(client: Client) -> Result<(), errand::Error> {
/// let enqueued = send_receipt::with(42, "ada@example.com".to_owned())
///     .delay(Duration::from_secs(30))
///     .priority(1)
///     .enqueue(&client)
///     .await?;
/// println!("job {}", enqueued.id);
/// # Ok(()) }
/// ```
#[must_use = "a request does nothing until it is enqueued"]
pub struct Request<J: Job> {
    args: J::Args,
    run_at: RunAt,
    priority: Option<u8>,
    queue: Option<String>,
    retry: Option<u32>,
    timeout: Option<Duration>,
    expires: Option<Expiry>,
    after: Vec<JobId>,
    on_dependency_failure: OnDependencyFailure,
    tags: Vec<String>,
    meta: Option<serde_json::Value>,
    job: PhantomData<fn() -> J>,
}

/// The result of an enqueue: which job will run, and what the enqueue did.
///
/// ```no_run
/// # use errand::{job, EnqueueOutcome};
/// # #[job(unique = "until_executed", key = "charge-<order_id>")]
/// # async fn charge(order_id: i64) -> Result<(), std::io::Error> { Ok(()) }
/// # async fn demo(client: &errand::Client) -> Result<(), errand::Error> {
/// let enqueued = charge::enqueue(client, 42).await?;
/// match enqueued.outcome {
///     EnqueueOutcome::New => println!("job {} will charge order 42", enqueued.id),
///     EnqueueOutcome::Duplicate => println!("job {} already charges order 42", enqueued.id),
///     EnqueueOutcome::Replaced => println!("job {} was updated", enqueued.id),
///     _ => {}
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Enqueued {
    /// The job that will run.
    pub id: JobId,
    /// For a unique job whose key was taken: the job that holds it (then `id` is that job too).
    pub duplicate_of: Option<JobId>,
    /// What the enqueue did.
    pub outcome: EnqueueOutcome,
}

/// What an enqueue did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnqueueOutcome {
    /// Stored a new job.
    New,
    /// Stored nothing: a job holding the key exists, and runs instead (`on_conflict = "skip"`,
    /// the default).
    Duplicate,
    /// Gave the job holding the key, which had not started, this request's arguments, queue,
    /// priority and run time (`on_conflict = "replace"`).
    Replaced,
}

impl<J: Job> Request<J> {
    pub(crate) fn new(args: J::Args) -> Request<J> {
        Request {
            args,
            run_at: RunAt::Now,
            priority: None,
            queue: None,
            retry: None,
            timeout: None,
            expires: None,
            after: Vec::new(),
            on_dependency_failure: OnDependencyFailure::Cancel,
            tags: Vec::new(),
            meta: None,
            job: PhantomData,
        }
    }

    /// Run no sooner than `delay` from now.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.run_at = RunAt::After(delay);
        self
    }

    /// Run no sooner than `time`.
    pub fn run_at(mut self, time: SystemTime) -> Self {
        self.run_at = RunAt::At(time);
        self
    }

    /// Override the job's priority: 0 runs first, 9 last.
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Override the job's `retry`: how many times it is retried after its first attempt fails
    /// with a transient error, from 0 to 100 (so it gets `retry + 1` attempts in all).
    ///
    /// ```no_run
    /// # #[errand::job(retry = 5)]
    /// # async fn sync_account(id: i64) -> Result<(), std::io::Error> { Ok(()) }
    /// # async fn demo(client: errand::Client) -> Result<(), errand::Error> {
    /// // A user waits on this one: fail fast rather than retry for hours.
    /// sync_account::with(7).retry(1).enqueue(&client).await?;
    /// # Ok(()) }
    /// ```
    pub fn retry(mut self, retry: u32) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Override the job's `timeout`: a run still going after `timeout` is stopped and counts
    /// as a transient failure.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Discard the job, unrun, if it has not started by `time`: it is cancelled with the
    /// reason [`FailureKind::Expired`](crate::FailureKind::Expired), and never runs late. A retry
    /// due after `time` is discarded too. Overrides the job's `expires_in`.
    ///
    /// ```no_run
    /// # use std::time::{Duration, SystemTime};
    /// # #[errand::job]
    /// # async fn send_otp(user_id: i64) -> Result<(), std::io::Error> { Ok(()) }
    /// # async fn demo(client: errand::Client) -> Result<(), errand::Error> {
    /// // A one-time password is useless after five minutes.
    /// send_otp::with(7)
    ///     .expires_at(SystemTime::now() + Duration::from_secs(300))
    ///     .enqueue(&client)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn expires_at(mut self, time: SystemTime) -> Self {
        self.expires = Some(Expiry::At(time));
        self
    }

    /// Discard the job, unrun, if it has not started `window` after its run time (as
    /// [`Request::expires_at`]). Overrides the job's `expires_in`.
    pub fn expires_in(mut self, window: Duration) -> Self {
        self.expires = Some(Expiry::After(window));
        self
    }

    /// Keep the job `pending` until every one of `jobs` has completed. If one of them dies or
    /// is cancelled, this job is cancelled too, with an error that names it (and so are the
    /// jobs that wait on this one), unless [`Request::on_dependency_failure`] says to run it
    /// anyway. The database releases it in the statement that completes the last of them. A
    /// job it waits on that has already finished counts as it finished; one that does not
    /// exist (or was pruned) fails the enqueue with [`Error::UnknownDependency`].
    ///
    /// ```no_run
    /// # #[errand::job] async fn charge(order_id: i64) -> Result<(), std::io::Error> { Ok(()) }
    /// # #[errand::job] async fn ship(order_id: i64) -> Result<(), std::io::Error> { Ok(()) }
    /// # async fn demo(client: errand::Client) -> Result<(), errand::Error> {
    /// let charged = charge::enqueue(&client, 42).await?;
    /// ship::with(42).after([charged.id]).enqueue(&client).await?; // ships once charged
    /// # Ok(()) }
    /// ```
    pub fn after(mut self, jobs: impl IntoIterator<Item = JobId>) -> Self {
        self.after = jobs.into_iter().collect();
        self
    }

    /// What this job does when a job it waits on ([`Request::after`]) dies or is cancelled:
    /// [`OnDependencyFailure::Cancel`] (the default) or [`OnDependencyFailure::Run`].
    pub fn on_dependency_failure(mut self, on_failure: OnDependencyFailure) -> Self {
        self.on_dependency_failure = on_failure;
        self
    }

    /// Labels to find the job by ([`JobFilter::tag`](crate::JobFilter::tag)), shown with it
    /// ([`JobInfo::tags`](crate::JobInfo::tags)) and on its runs' spans (`job.tags`). Keep them
    /// few and short: a customer tier, a campaign, a tenant.
    ///
    /// ```no_run
    /// # #[errand::job]
    /// # async fn send_newsletter(user_id: i64) -> Result<(), std::io::Error> { Ok(()) }
    /// # async fn demo(client: errand::Client) -> Result<(), errand::Error> {
    /// send_newsletter::with(7)
    ///     .tags(["campaign-2026-11", "tier-gold"])
    ///     .meta(serde_json::json!({ "requested_by": "ops@example.com" }))
    ///     .enqueue(&client)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn tags<I, S>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    /// The caller's data stored with the job, a JSON object: who asked for it, a trace or
    /// request id. Shown on [`JobInfo::meta`](crate::JobInfo::meta) and on its runs' spans
    /// (`job.meta`); the job's function does not receive it (its arguments are what it needs).
    pub fn meta(mut self, meta: serde_json::Value) -> Self {
        self.meta = Some(meta);
        self
    }

    /// Send to this queue instead of the job's own.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// The arguments.
    pub fn args(&self) -> &J::Args {
        &self.args
    }

    /// The job's key for these arguments, if it has a `key` template.
    pub fn key(&self) -> Option<String> {
        J::key(&self.args)
    }

    /// The queue it will be stored in.
    #[cfg(feature = "sqlite")]
    pub(crate) fn queue_name(&self) -> String {
        self.queue
            .clone()
            .unwrap_or_else(|| J::OPTIONS.queue.to_owned())
    }

    /// Stores the job inside the caller's transaction (the transactional outbox): if the
    /// transaction rolls back, the job never existed; once it commits, the job runs.
    ///
    /// The transaction must be on the database the workers use. On PostgreSQL, idle workers
    /// are notified when the transaction commits; on SQLite, they find the job at their next
    /// poll. The arguments limit is the default one (1 MiB), as no client is at hand.
    ///
    /// ```no_run
    /// # use errand::job;
    /// # #[job] async fn send_receipt(order_id: i64) -> Result<(), std::io::Error> { Ok(()) }
    /// # async fn demo(pool: sqlx::SqlitePool) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = pool.begin().await?;
    /// sqlx::query("UPDATE orders SET paid = 1 WHERE id = ?").bind(42).execute(&mut *tx).await?;
    /// send_receipt::with(42).enqueue_tx(&mut tx).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn enqueue_tx<T: Transaction>(self, tx: &mut T) -> Result<Enqueued, Error> {
        let job = self.into_new_job(DEFAULT_MAX_ARGS_BYTES)?;
        let inserted = tx.insert_job(&job).await?;
        enqueued(&job, inserted)
    }

    pub(crate) fn into_new_job(self, max_args_bytes: usize) -> Result<NewJob, Error> {
        let kind = J::KIND;
        let args = serde_json::to_string(&self.args)
            .map_err(|source| Error::Serialize { kind, source })?;
        if args.len() > max_args_bytes {
            return Err(Error::ArgsTooLarge {
                kind,
                size: args.len(),
                limit: max_args_bytes,
            });
        }
        let queue = self.queue.unwrap_or_else(|| J::OPTIONS.queue.to_owned());
        check_queue_name(&queue)?;
        let priority = self.priority.unwrap_or(J::OPTIONS.priority);
        if priority > 9 {
            return Err(Error::InvalidPriority { kind, priority });
        }
        // The enqueuing code's trace context, when a propagation is installed (and the caller
        // did not store one of its own).
        let meta = match (crate::trace::inject(), self.meta) {
            (None, meta) => meta,
            (Some(trace), None) => Some(serde_json::json!({ crate::trace::META_KEY: trace })),
            (Some(trace), Some(serde_json::Value::Object(mut map))) => {
                map.entry(crate::trace::META_KEY).or_insert(trace);
                Some(serde_json::Value::Object(map))
            }
            (Some(_), other) => other,
        };
        let meta = match meta {
            None => None,
            Some(serde_json::Value::Object(map)) if map.is_empty() => None,
            Some(map @ serde_json::Value::Object(_)) => Some(map.to_string()),
            Some(other) => {
                return Err(Error::InvalidMeta {
                    kind,
                    found: other.to_string().chars().take(80).collect(),
                })
            }
        };
        let max_attempts = match self.retry {
            None => J::OPTIONS.max_attempts(),
            Some(retry) if retry <= MAX_RETRY => retry + 1,
            Some(retry) => return Err(Error::InvalidRetry { kind, retry }),
        };
        let key = J::key(&self.args);
        let Keys {
            limit: limit_key,
            fair: fair_key,
        } = keys_of::<J>(&self.args);
        if let Some(key) = &key {
            if key.len() > MAX_KEY_BYTES {
                return Err(Error::KeyTooLong {
                    kind,
                    len: key.len(),
                    limit: MAX_KEY_BYTES,
                });
            }
        }
        Ok(NewJob {
            kind,
            queue,
            key,
            args,
            priority,
            max_attempts,
            run_at: self.run_at,
            unique: J::OPTIONS.unique,
            tags: self.tags,
            meta,
            timeout_ms: self.timeout.map(crate::info::duration_millis),
            expires: self
                .expires
                .or_else(|| J::OPTIONS.expires_in.map(Expiry::After)),
            limit_key,
            fair_key,
            after: self.after,
            on_dependency_failure: self.on_dependency_failure,
            any_of: Vec::new(),
            workflow: None,
        })
    }
}

/// The most retries a job can ask for, as `#[job(retry = ..)]` allows.
const MAX_RETRY: u32 = 100;

/// The longest rendered key errand stores.
pub const MAX_KEY_BYTES: usize = 512;

/// What the caller learns of an insert, applying `on_conflict = "reject"`.
pub(crate) fn enqueued(job: &NewJob, inserted: Inserted) -> Result<Enqueued, Error> {
    match inserted {
        Inserted::New(id) => Ok(Enqueued {
            id,
            duplicate_of: None,
            outcome: EnqueueOutcome::New,
        }),
        Inserted::Duplicate(existing) if job.on_conflict() == OnConflict::Reject => {
            Err(Error::Duplicate {
                kind: job.kind,
                key: job.key.clone().unwrap_or_default(),
                existing,
            })
        }
        Inserted::Duplicate(existing) => Ok(Enqueued {
            id: existing,
            duplicate_of: Some(existing),
            outcome: EnqueueOutcome::Duplicate,
        }),
        Inserted::Replaced(existing) => Ok(Enqueued {
            id: existing,
            duplicate_of: Some(existing),
            outcome: EnqueueOutcome::Replaced,
        }),
    }
}

impl<J: Job> std::fmt::Debug for Request<J>
where
    J::Args: std::fmt::Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("kind", &J::KIND)
            .field("args", &self.args)
            .field("run_at", &self.run_at)
            .field("priority", &self.priority)
            .field("queue", &self.queue)
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .field("expires", &self.expires)
            .field("after", &self.after)
            .field("tags", &self.tags)
            .field("meta", &self.meta)
            .finish()
    }
}

/// Queue names are `[a-z0-9_-]{1,64}`, as `#[job(queue = ...)]` checks at compile time.
pub(crate) fn check_queue_name(queue: &str) -> Result<(), Error> {
    let reason = if queue.is_empty() || queue.len() > 64 {
        format!("expected 1 to 64 characters, found {}", queue.len())
    } else if let Some(c) = queue
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))
    {
        format!("`{c}` is not allowed; use lowercase letters, digits, `_` and `-`")
    } else {
        return Ok(());
    };
    Err(Error::InvalidQueue {
        queue: queue.to_owned(),
        reason,
    })
}

/// The keys a job of `J` with `args` is stored with.
pub(crate) fn keys_of<J: Job>(args: &J::Args) -> Keys {
    let kind = J::KIND;
    Keys {
        limit: J::OPTIONS.is_limited().then(|| match J::limit_key(args) {
            Some(key) => format!("{kind}:{key}"),
            None => kind.to_owned(),
        }),
        fair: J::OPTIONS.fair.then(|| J::fair_key(args)).flatten(),
    }
}
