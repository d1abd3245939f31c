//! What `#[job]` writes for an `async fn`: an implementation of [`Job`], which names the kind,
//! carries its options, renders its keys and runs it.

use std::future::Future;
use std::pin::Pin;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::classify::Failure;
use crate::context::Context;
use crate::job::{JobOptions, Outcome};

/// The future of one run of a job.
pub type JobFuture = Pin<Box<dyn Future<Output = Result<Outcome, Failure>> + Send>>;

/// A background job: implemented by `#[job]` on an `async fn`, never by hand.
///
/// The macro writes, beside the function, a struct of the same name that implements this trait,
/// so `charge_order::with(..)` and `Job` methods are reached through the function's name.
pub trait Job: Sized + Send + Sync + 'static {
    /// The function's parameters (all but `&Context`), stored as JSON by name.
    type Args: Serialize + DeserializeOwned + Send + 'static;
    /// The stable name stored with each job: the function's name, or `#[job(name = "...")]`.
    const KIND: &'static str;
    /// The options given in `#[job(...)]`.
    const OPTIONS: JobOptions;

    /// The rendered `key` template for these arguments, if the job has one.
    fn key(args: &Self::Args) -> Option<String>;

    /// The rendered `concurrency_key` template for these arguments, if the job has one: its
    /// `concurrency` and `rate` apply per value of it.
    fn limit_key(args: &Self::Args) -> Option<String> {
        let _ = args;
        None
    }

    /// The rendered `fair_by` template for these arguments, if the job has one: claims take the
    /// waiting jobs of each value in turn.
    fn fair_key(args: &Self::Args) -> Option<String> {
        let _ = args;
        None
    }

    /// Runs the job's function. Called by the worker.
    #[doc(hidden)]
    fn run(ctx: Context, args: Self::Args) -> JobFuture;
}
