//! The errors errand's API returns. Each says which job, which store and which operation.

use crate::job::JobId;

/// An error from the client, a store or a worker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database URL cannot be used.
    #[error("invalid database URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL, with any password removed.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The database could not be opened or reached.
    #[error("cannot connect to the {store} database at `{url}`: {source}")]
    Connect {
        /// `"sqlite"` or `"postgres"`.
        store: &'static str,
        /// The URL, with any password removed.
        url: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// The database's schema is older than this errand needs, and the client was told not to
    /// migrate it ([`Config::migrate(false)`](crate::Config::migrate)).
    #[error("the {store} schema is at version {found}, but this errand needs version {needed}: apply errand's migrations (`errand::migrations`), or connect once with migrations on")]
    SchemaBehind {
        /// `"sqlite"` or `"postgres"`.
        store: &'static str,
        /// The version found (0: errand's tables are missing).
        found: i64,
        /// The version this errand needs.
        needed: i64,
    },
    /// A migration the database has applied differs from this errand's text of it: its
    /// file was edited after it ran, or the database was migrated by another errand build
    /// with different migrations. errand will not guess which schema is right.
    #[error("migration {version} (`{name}`) applied to the {store} database differs from this errand's: its checksum does not match; restore the migration's original text, or migrate a fresh database")]
    MigrationChanged {
        /// `"sqlite"` or `"postgres"`.
        store: &'static str,
        /// The migration's version.
        version: i64,
        /// Its name.
        name: &'static str,
    },
    /// Bringing the database's schema up to date failed.
    #[error("migrating the {store} database to version {version} failed: {source}")]
    Migrate {
        /// `"sqlite"` or `"postgres"`.
        store: &'static str,
        /// The migration that failed.
        version: i64,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// A store operation failed.
    #[error("{store} store failed to {op}: {source}")]
    Store {
        /// `"sqlite"` or `"postgres"`.
        store: &'static str,
        /// What it was doing, e.g. `"enqueue a charge_order job"`.
        op: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// The database holds something errand cannot read back.
    #[error("job {id} in the {store} store is corrupt: {reason}")]
    Corrupt {
        /// `"sqlite"`, `"postgres"` or `"memory"`.
        store: &'static str,
        /// The job.
        id: JobId,
        /// What could not be read.
        reason: String,
    },
    /// The job is no longer running under this worker: its lease ran out and another worker
    /// took it, or it already finished.
    #[error("job {id} is no longer running under this worker; roll back what it wrote")]
    NotRunning {
        /// The job.
        id: JobId,
    },
    /// A unique job's key is taken ([`OnConflict::Reject`](crate::OnConflict::Reject)).
    #[error("a `{kind}` job with key `{key}` already exists: job {existing}")]
    Duplicate {
        /// The job's kind.
        kind: &'static str,
        /// The key.
        key: String,
        /// The job that holds the key.
        existing: JobId,
    },
    /// A unique job's key kept changing hands while it was being enqueued.
    #[error(
        "the key `{key}` of a `{kind}` job changed hands three times during one enqueue; try again"
    )]
    KeyContended {
        /// The job's kind.
        kind: &'static str,
        /// The key.
        key: String,
    },
    /// A rendered key is longer than errand stores.
    #[error("the key of a `{kind}` job is {len} bytes, over the limit of {limit}; shorten the key template")]
    KeyTooLong {
        /// The job's kind.
        kind: &'static str,
        /// The rendered key's length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A step of the effect ledger could not record or read back its result.
    #[error("step `{step}` of `{scope}`: {reason}")]
    Step {
        /// The step's name.
        step: String,
        /// The job key (or job) the step belongs to.
        scope: String,
        /// What went wrong.
        reason: String,
    },
    /// A job's arguments could not be serialized.
    #[error("cannot serialize the arguments of a `{kind}` job: {source}")]
    Serialize {
        /// The job's kind.
        kind: &'static str,
        /// serde_json's error.
        source: serde_json::Error,
    },
    /// A job's serialized arguments exceed the client's limit.
    #[error("the arguments of a `{kind}` job are {size} bytes, over the limit of {limit} bytes; store large data elsewhere and pass its id")]
    ArgsTooLarge {
        /// The job's kind.
        kind: &'static str,
        /// The serialized size.
        size: usize,
        /// The limit ([`Config::max_args_bytes`](crate::Config::max_args_bytes)).
        limit: usize,
    },
    /// A queue name is not `[a-z0-9_-]{1,64}`.
    #[error("invalid queue name `{queue}`: {reason}")]
    InvalidQueue {
        /// The name as given.
        queue: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A priority is not `0..=9`.
    #[error(
        "priority {priority} for a `{kind}` job is out of range; expected 0 (first) to 9 (last)"
    )]
    InvalidPriority {
        /// The job's kind.
        kind: &'static str,
        /// The priority as given.
        priority: u8,
    },
    /// A request's meta is not a JSON object.
    #[error("the meta of a `{kind}` job must be a JSON object, e.g. `json!({{\"by\": \"ops\"}})`, not `{found}`")]
    InvalidMeta {
        /// The job's kind.
        kind: &'static str,
        /// The start of what was given.
        found: String,
    },
    /// A request's retry count is out of range.
    #[error("`retry({retry})` for a `{kind}` job is out of range; expected 0 to 100 retries")]
    InvalidRetry {
        /// The job's kind.
        kind: &'static str,
        /// The retry count as given.
        retry: u32,
    },
    /// Two `#[job]` functions linked into one binary have the same kind name.
    #[error("two jobs are registered as `{kind}`; give one of them `#[job(name = \"...\")]`")]
    DuplicateKind {
        /// The kind name.
        kind: String,
    },
    /// A job was enqueued to wait on a job that does not exist (or was pruned).
    #[error(
        "job {depends_on}, which a `{kind}` job would wait on, does not exist (or was pruned)"
    )]
    UnknownDependency {
        /// The kind of the job being enqueued.
        kind: &'static str,
        /// The job it names.
        depends_on: JobId,
    },
    /// A dead job whose death was acted on was not retried.
    #[error("job {id} is not retried: {reason}")]
    RetryRefused {
        /// The job.
        id: crate::job::JobId,
        /// Why, naming its saga or workflow and where that stands.
        reason: String,
    },
    /// A job cannot be added to a batch: every job of it has finished (its callbacks were
    /// released), or it does not exist.
    #[error("batch {batch} is finished (its callbacks were released), or does not exist: no job can be added to it")]
    BatchClosed {
        /// The batch.
        batch: crate::WorkflowId,
    },
    /// A job that belongs to no batch asked to add a job to its batch.
    #[error("job {id} belongs to no batch")]
    NotInBatch {
        /// The job.
        id: JobId,
    },
    /// A job that is no step of a workflow, saga or batch asked for another step's result
    /// ([`Context::result_of`](crate::Context::result_of)).
    #[error("job {id} is no step of a workflow, saga or batch, so it has no other steps to read")]
    NotInWorkflow {
        /// The job.
        id: JobId,
    },
    /// A step asked for the result of a step its workflow does not have.
    #[error("workflow {workflow} has no step named `{step}`")]
    UnknownStep {
        /// The workflow, saga or batch.
        workflow: crate::WorkflowId,
        /// The name asked for.
        step: String,
    },
    /// A workflow cannot be built: a step named twice, a dependency on a step that does not
    /// exist, or a cycle.
    #[error("invalid workflow `{name}`: {reason}")]
    InvalidWorkflow {
        /// The workflow's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A periodic job's schedule cannot run: its cron expression, time zone or request is
    /// invalid, or two schedules of one worker share a name.
    #[error("invalid schedule `{name}`: {reason}")]
    InvalidSchedule {
        /// The schedule's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A worker was configured in a way that cannot run.
    #[error("invalid worker configuration: {0}")]
    InvalidWorker(String),
    /// One of a worker's background services (the lease keeper, the rescuer, the pruner, the
    /// death notifier) kept failing, so the worker stopped rather than run on half-alive.
    #[error("the worker's {service} failed {failures} times within a minute (last: {reason}); the worker stopped")]
    ServiceFailed {
        /// The service.
        service: &'static str,
        /// How many failures within the window.
        failures: usize,
        /// The last failure.
        reason: String,
    },
    /// [`Client::begin`](crate::Client::begin) was asked for a transaction of another database
    /// than the client's store.
    #[error("this client's store is {found}; `Client::begin::<{wanted}>` needs a {wanted} store")]
    WrongStore {
        /// The database asked for (`"sqlite"` or `"postgres"`).
        wanted: &'static str,
        /// The client's store.
        found: &'static str,
    },
    /// The in-memory test client could not finish draining its jobs.
    #[error("drain stopped after {steps} runs with jobs still pending; a job may snooze or retry forever")]
    DrainLimit {
        /// How many runs were made.
        steps: usize,
    },
}

/// Removes passwords from a URL, for messages and logs: the one in its user info
/// (`user:password@`) and any query parameter whose name ends in `password` (`?password=`,
/// `&sslpassword=`), which sqlx accepts too.
pub(crate) fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut redacted = redact_user_info(base);
    if let Some(query) = query {
        redacted.push('?');
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((name, _)) if name.to_ascii_lowercase().ends_with("password") => {
                    format!("{name}=***")
                }
                _ => param.to_owned(),
            })
            .collect();
        redacted.push_str(&params.join("&"));
    }
    redacted
}

fn redact_user_info(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                format!("{scheme}://{user}@{host}{tail}")
            }
        }
        None => url.to_owned(),
    }
}

/// Errors from errand inside a job (a step, `complete_in`, an enqueue) are transient, except those
/// that the same call would meet again.
impl crate::Classify for Error {
    fn class(&self) -> crate::ErrorClass {
        match self {
            Error::Serialize { .. }
            | Error::ArgsTooLarge { .. }
            | Error::InvalidQueue { .. }
            | Error::InvalidRetry { .. }
            | Error::InvalidMeta { .. }
            | Error::InvalidPriority { .. }
            | Error::KeyTooLong { .. }
            | Error::Duplicate { .. }
            | Error::UnknownDependency { .. }
            | Error::InvalidWorkflow { .. }
            | Error::BatchClosed { .. }
            | Error::RetryRefused { .. }
            | Error::NotInBatch { .. }
            | Error::NotInWorkflow { .. }
            | Error::UnknownStep { .. }
            | Error::Step { .. } => crate::ErrorClass::Permanent,
            _ => crate::ErrorClass::Transient,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/jobs"),
            "postgres://app:***@db:5432/jobs"
        );
        assert_eq!(redact("postgres://app@db/jobs"), "postgres://app@db/jobs");
        assert_eq!(
            redact("sqlite://jobs.db?mode=rwc"),
            "sqlite://jobs.db?mode=rwc"
        );
        assert_eq!(redact("sqlite::memory:"), "sqlite::memory:");
        assert_eq!(
            redact("postgres://db/jobs?user=app&password=s3cret&sslmode=disable"),
            "postgres://db/jobs?user=app&password=***&sslmode=disable"
        );
        assert_eq!(
            redact("postgres://app:one@db/jobs?Password=two&sslpassword=three"),
            "postgres://app:***@db/jobs?Password=***&sslpassword=***"
        );
    }
}
