//! Attribute keys, named once so that parsers, checks and messages agree on their spelling.

/// `#[job(...)]` options, in the order the docs list them.
pub(crate) const QUEUE: &str = "queue";
pub(crate) const RETRY: &str = "retry";
pub(crate) const BACKOFF: &str = "backoff";
pub(crate) const UNIQUE: &str = "unique";
pub(crate) const UNIQUE_FOR: &str = "unique_for";
pub(crate) const ON_CONFLICT: &str = "on_conflict";
pub(crate) const KEY: &str = "key";
pub(crate) const PRIORITY: &str = "priority";
pub(crate) const TIMEOUT: &str = "timeout";
pub(crate) const EXPIRES_IN: &str = "expires_in";
pub(crate) const CRON: &str = "cron";
pub(crate) const TIMEZONE: &str = "timezone";
pub(crate) const CATCH_UP: &str = "catch_up";
pub(crate) const CONCURRENCY: &str = "concurrency";
pub(crate) const CONCURRENCY_KEY: &str = "concurrency_key";
pub(crate) const RATE: &str = "rate";
pub(crate) const FAIR_BY: &str = "fair_by";
pub(crate) const COMPENSATE: &str = "compensate";
pub(crate) const NAME: &str = "name";
pub(crate) const CRATE: &str = "crate";

/// Every `#[job]` option, for "expected one of" messages and suggestions.
pub(crate) const JOB_OPTIONS: &[&str] = &[
    QUEUE,
    RETRY,
    BACKOFF,
    UNIQUE,
    UNIQUE_FOR,
    ON_CONFLICT,
    KEY,
    PRIORITY,
    TIMEOUT,
    EXPIRES_IN,
    CRON,
    TIMEZONE,
    CATCH_UP,
    CONCURRENCY,
    CONCURRENCY_KEY,
    RATE,
    FAIR_BY,
    COMPENSATE,
    NAME,
    CRATE,
];

/// `#[derive(JobError)]` attributes.
pub(crate) const TRANSIENT: &str = "transient";
pub(crate) const PERMANENT: &str = "permanent";
pub(crate) const RETRY_AFTER: &str = "retry_after";
pub(crate) const JOB_ERROR: &str = "job_error";
pub(crate) const DEFAULT: &str = "default";
