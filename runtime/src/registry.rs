//! How a worker finds the jobs linked into its binary: each `#[job]` submits a [`Registration`]
//! to `inventory`, and the worker collects them by kind name at start.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use crate::classify::{Classify, Failure, FailureKind};
use crate::context::Context;
use crate::definition::{Job, JobFuture};
use crate::error::Error;
use crate::job::{JobOptions, Outcome};
use crate::request::keys_of;
use crate::schedule::Periodic;
use crate::store::Keys;

/// What a `#[job]` function may return.
#[diagnostic::on_unimplemented(
    message = "`#[job]` functions must return `Result<(), E>` or `Result<errand::Outcome, E>` where `E: errand::Classify`, not `{Self}`",
    label = "unsupported return type for a job"
)]
pub trait IntoOutcome {
    /// The run's outcome, or its classified failure.
    fn into_outcome(self) -> Result<Outcome, Failure>;
}

impl<E: Classify> IntoOutcome for Result<(), E> {
    fn into_outcome(self) -> Result<Outcome, Failure> {
        self.map(|()| Outcome::Done).map_err(Failure::from_error)
    }
}

impl<E: Classify> IntoOutcome for Result<Outcome, E> {
    fn into_outcome(self) -> Result<Outcome, Failure> {
        self.map_err(Failure::from_error)
    }
}

/// One job kind linked into the binary.
pub struct Registration {
    pub(crate) kind: &'static str,
    pub(crate) options: JobOptions,
    pub(crate) start: fn(Context, &str) -> Result<JobFuture, serde_json::Error>,
    /// The keys this build stores a job of the kind with, from its stored arguments.
    pub(crate) keys: fn(&str) -> Result<Keys, serde_json::Error>,
    /// The schedule `#[job(cron = ..)]` declared: run by every worker of the job's queue.
    pub(crate) periodic: Option<fn() -> Periodic>,
}

impl Registration {
    /// The registration of `J`.
    pub const fn of<J: Job>() -> Registration {
        Registration {
            kind: J::KIND,
            options: J::OPTIONS,
            start: start::<J>,
            keys: keys::<J>,
            periodic: None,
        }
    }

    /// With the schedule `#[job(cron = ..)]` declared.
    pub const fn periodic(mut self, schedule: fn() -> Periodic) -> Registration {
        self.periodic = Some(schedule);
        self
    }
}

/// Decodes the stored arguments and starts the job's future.
fn start<J: Job>(ctx: Context, args: &str) -> Result<JobFuture, serde_json::Error> {
    let args: J::Args = serde_json::from_str(args)?;
    Ok(J::run(ctx, args))
}

/// Decodes the stored arguments and renders the keys this build stores them with.
fn keys<J: Job>(args: &str) -> Result<Keys, serde_json::Error> {
    let args: J::Args = serde_json::from_str(args)?;
    Ok(keys_of::<J>(&args))
}

inventory::collect!(Registration);

/// Every registered job, by kind. Two registrations of one kind are an error: a worker could not
/// tell which function a stored job means.
pub(crate) fn registry() -> Result<HashMap<&'static str, &'static Registration>, Error> {
    let mut map = HashMap::new();
    for registration in inventory::iter::<Registration> {
        if map.insert(registration.kind, registration).is_some() {
            return Err(Error::DuplicateKind {
                kind: registration.kind.to_owned(),
            });
        }
    }
    Ok(map)
}

/// Turns a panic inside the job's future into a [`Failure`], so it retries like any transient
/// error and never reaches the worker.
pub(crate) struct CatchPanic(pub(crate) JobFuture);

impl Future for CatchPanic {
    type Output = Result<Outcome, Failure>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let fut = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(poll) => poll,
            Err(payload) => Poll::Ready(Err(Failure::new(
                FailureKind::Panic,
                panic_message(&*payload),
            ))),
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    format!("panicked: {}", panic_text(payload))
}

/// The message a panic was raised with.
pub(crate) fn panic_text(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic with a non-string payload")
}

/// Compile-time checks the expansion of `#[job]` calls, spanned on the user's tokens.
pub mod check {
    /// A job argument: stored as JSON and decoded later, in another process. `#[job]`'s
    /// stored-arguments struct writes and reads each parameter through this trait's functions,
    /// spanned on the parameter's type: a type that is not serializable fails the one
    /// requirement `T: JobArg` there, which rustc reports once, with the message below.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot be a job argument: it must implement `Serialize` and `Deserialize`, and be `Send + 'static`",
        label = "job arguments are stored as JSON",
        note = "derive them: `#[derive(serde::Serialize, serde::Deserialize)]` on `{Self}`, or pass an id and load the value in the job"
    )]
    pub trait JobArg: Sized {
        /// Writes the value as field `name` of a struct, as serde's derive does.
        fn serialize_field<S: serde::ser::SerializeStruct>(
            &self,
            fields: &mut S,
            name: &'static str,
        ) -> Result<(), S::Error>;

        /// Reads a value, as serde's derive does.
        fn deserialize<'de, D: serde::Deserializer<'de>>(deserializer: D)
            -> Result<Self, D::Error>;
    }

    // Not recommended, so that rustc reports `JobArg` and its message rather than each serde
    // trait this impl needs.
    #[diagnostic::do_not_recommend]
    impl<T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static> JobArg for T {
        fn serialize_field<S: serde::ser::SerializeStruct>(
            &self,
            fields: &mut S,
            name: &'static str,
        ) -> Result<(), S::Error> {
            fields.serialize_field(name, self)
        }

        fn deserialize<'de, D: serde::Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Self, D::Error> {
            <T as serde::Deserialize>::deserialize(deserializer)
        }
    }

    /// Fails to compile unless the job's future can move between worker threads.
    pub fn assert_send<F: std::future::Future + Send>(future: F) -> F {
        future
    }

    /// What `#[retry_after]` accepts.
    #[diagnostic::on_unimplemented(
        message = "`#[retry_after]` needs a `std::time::Duration` field, not `{Self}`",
        label = "not a `Duration`",
        note = "`#[retry_after]` accepts `Duration` and `Option<Duration>`"
    )]
    pub trait RetryAfter {
        /// The delay this field asks for.
        fn retry_after(&self) -> Option<std::time::Duration>;
    }

    impl RetryAfter for std::time::Duration {
        fn retry_after(&self) -> Option<std::time::Duration> {
            Some(*self)
        }
    }

    impl RetryAfter for Option<std::time::Duration> {
        fn retry_after(&self) -> Option<std::time::Duration> {
            *self
        }
    }
}
