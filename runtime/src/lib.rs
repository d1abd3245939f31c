//! errand: background jobs that are safe to run twice.
//!
//! A job is an ordinary `async fn` with one attribute. `#[job]` makes it a typed, registered,
//! serializable job with an idempotency key, a retry policy and an error classification; a
//! [`Worker`] runs it from a database, retries what is transient, buries what is permanent, and
//! rescues what a crashed worker left behind.
//!
//! ```no_run
//! use std::time::Duration;
//! use errand::{job, Client, Context, JobError, Worker};
//!
//! #[derive(Debug, thiserror::Error, JobError)]
//! pub enum ChargeError {
//!     #[error("payment gateway timed out")]
//!     #[transient]
//!     GatewayTimeout,
//!     #[error("rate limited")]
//!     #[transient]
//!     RateLimited { #[retry_after] wait: Duration },
//!     #[error("card declined: {0}")]
//!     #[permanent]
//!     Declined(String),
//! }
//!
//! #[job(queue = "critical", retry = 5, key = "charge-<order_id>")]
//! async fn charge_order(ctx: &Context, order_id: i64, amount_cents: i64) -> Result<(), ChargeError> {
//!     let _key = ctx.idempotency_key(); // "charge-42": pass it to the payment API
//!     Ok(())
//! }
//!
//! # async fn demo() -> Result<(), errand::Error> {
//! let client = Client::connect("sqlite://jobs.db").await?;
//! charge_order::with(42, 2500).delay(Duration::from_secs(30)).enqueue(&client).await?;
//! assert_eq!(charge_order::key(&42), "charge-42");
//!
//! Worker::new(client).queues([("critical", 10), ("default", 1)]).run().await?;
//! # Ok(()) }
//! ```
//!
//! # `#[job]` options
//!
//! | option | values | default |
//! | --- | --- | --- |
//! | `queue` | name of `[a-z0-9_-]`, 1 to 64 characters | `"default"` |
//! | `retry` | attempts after the first, `0..=100`, or `false` | `25` |
//! | `backoff` | `"exponential"` (with jitter), `"linear"`, `"constant"`, or a path to `fn(u32) -> Duration` ([`Backoff`]) | `"exponential"` |
//! | `unique` | `"until_executing"`, `"until_executed"`, `"while_executing"`, `"until_expired"` (needs `key`) | none |
//! | `unique_for` | duration, `"90s"`, `"24h"`; required by `until_expired` | none |
//! | `on_conflict` | `"skip"`, `"replace"`, `"reject"` | `"skip"` |
//! | `key` | template of text and `<param>` or `<param.field>` placeholders | none |
//! | `priority` | `0..=9`, lower runs first within a queue | `5` |
//! | `timeout` | duration; a run past it fails transiently | none |
//! | `expires_in`, `cron`, `timezone`, `catch_up`, `concurrency`, `rate`, `concurrency_key`, `fair_by` | see "Scheduling and limits" in the README ([`Periodic`], [`Rate`]) | none |
//! | `compensate` | the `#[job]` that undoes this one in a [`Saga`], taking the same arguments ([`Compensated`]) | none |
//! | `name` | stable kind name stored with the job | the fn's name |
//!
//! A unique job's duplicates are refused by the database (a unique index), per kind and key;
//! [`Request::enqueue`] says what `on_conflict` does. [`Context::step`] records a step's result
//! once per job key, so a job that runs twice has its effects once.
//!
//! # What `#[job]` generates
//!
//! Beside the function, which stays callable as written, a struct of the same name with:
//! `with(args..)` returning a typed [`Request`]; `enqueue(&client, args..)`; `key(&args..)`
//! (for a job with a `key` template: the same function the runtime uses, taking the parameters
//! the template names, in the function's order); the [`Job`] impl; and a registration, so every
//! [`Worker`] in the binary knows the job with no list to keep.
//!
//! # Errors and retries
//!
//! A job returns `Result<(), E>` or `Result<`[`Outcome`]`, E>` where `E:` [`Classify`]. A transient
//! error is retried after the job's [`Backoff`] (or the error's `#[retry_after]`), until the job
//! runs out of attempts; a permanent error makes it dead at once. A panic and a timeout are
//! transient. Every attempt's error is kept on the job ([`Client::job`]).
//!
//! # Workflows
//!
//! Jobs can wait on others ([`Request::after`]), form a graph of named steps ([`Workflow`]),
//! a batch with callbacks ([`Batch`]), or a saga whose steps are undone in reverse order when a
//! later one dies ([`Saga`]). The database releases each waiting job in the statement that
//! finishes what it waits on; [`Client::workflow`], [`Client::batch`] and [`Client::saga`]
//! show where each stands.
//!
//! # Stores
//!
//! [`Client::connect`] picks the store from the URL: `sqlite://jobs.db` (the `sqlite` feature, on
//! by default) for one machine with no server, `postgres://...` (the `postgres` feature) for many
//! workers on many machines. Both keep every state change to one atomic statement, hold running
//! jobs under a renewed lease, and rescue the jobs of workers that died.
//!
//! # Testing
//!
//! [`testing::TestClient`] needs no database: it records what was enqueued and runs jobs inline.

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
// Built without a store (neither `sqlite` nor `postgres`), every store call is unreachable, and
// what only the stores read is unused: jobs can still be declared.
#![cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(unused_variables, dead_code, unused_imports, unreachable_code)
)]
#![warn(missing_docs)]

mod batch;
mod classify;
mod client;
/// For `errand-model`'s conformance tests only: not part of errand's API.
#[cfg(feature = "conformance")]
#[doc(hidden)]
pub mod conformance;
mod context;
mod dead;
mod definition;
mod error;
mod info;
mod job;
pub mod metrics;
pub mod migrations;
mod query;
mod registry;
mod request;
mod retry;
mod saga;
mod schedule;
mod store;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub mod testing;
mod trace;
mod transaction;
mod worker;
mod workflow;

pub use errand_macros::{job, JobError};

pub use crate::batch::{Batch, BatchInfo, EnqueuedBatch};
pub use crate::classify::{Classify, ErrorClass, FailureKind};
pub use crate::client::{Client, Config, StoreDatabase};
pub use crate::context::Context;
pub use crate::dead::{Cancellation, DeadFilter, Death, DeathReason, Retention, Retried};
pub use crate::definition::Job;
pub use crate::error::Error;
pub use crate::info::{AttemptError, JobInfo};
pub use crate::info::{CatchUp, ScheduleInfo};
pub use crate::info::{WorkflowId, WorkflowInfo, WorkflowState, WorkflowStep};
pub use crate::job::{
    JobId, JobOptions, JobState, OnConflict, OnDependencyFailure, Outcome, Rate, Unique,
    UniqueStrategy, UnknownState,
};
pub use crate::query::{JobFilter, Page, QueueStats, StateCounts, Throughput};
pub use crate::request::{EnqueueOutcome, Enqueued, Request};
pub use crate::retry::Backoff;
pub use crate::saga::{
    Compensated, EnqueuedSaga, EnqueuedSagaStep, Saga, SagaInfo, SagaState, SagaStep,
};
pub use crate::schedule::Periodic;
pub use crate::trace::{set_trace_propagation, TracePropagation};
pub use crate::transaction::Transaction;
pub use crate::worker::{DeathHandlerError, Worker, WorkerHandle};
pub use crate::workflow::{EnqueuedWorkflow, Workflow};

/// For macro expansions only, not public API: may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use inventory;
    pub use serde;
    pub use serde_json;

    pub use crate::classify::Failure;
    pub use crate::definition::JobFuture;
    pub use crate::registry::check::{assert_send, JobArg, RetryAfter};
    pub use crate::registry::{IntoOutcome, Registration};

    /// Writes a value rendered into a key template before another placeholder, percent-encoding
    /// `separator` (the first character of the text after it) and `%`, so that the separator
    /// in the key always ends the value and different arguments never render one key.
    pub fn push_key_value(key: &mut String, value: &dyn core::fmt::Display, separator: char) {
        use core::fmt::Write as _;
        let rendered = value.to_string();
        for c in rendered.chars() {
            if c == separator || c == '%' {
                let mut utf8 = [0; 4];
                for byte in c.encode_utf8(&mut utf8).bytes() {
                    // Writing to a `String` cannot fail.
                    let _ = write!(key, "%{byte:02X}");
                }
            } else {
                key.push(c);
            }
        }
    }

    /// `my_job::with(..)`'s body.
    pub fn new_request<J: crate::Job>(args: J::Args) -> crate::Request<J> {
        crate::Request::new(args)
    }
}
