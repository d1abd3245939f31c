//! Error classification: whether retrying a failed job can help.

use std::fmt;
use std::time::Duration;

/// Whether a failure is worth retrying.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Retrying can help (a timeout, a lost connection): retry with backoff.
    Transient,
    /// Retrying cannot help (a declined card, bad input): the job dies at once.
    Permanent,
}

/// Classifies a job's error, so the worker knows whether to retry.
///
/// A job's error type implements [`Classify`], normally through `#[derive(JobError)]`:
///
/// ```
/// use std::time::Duration;
/// use errand::{Classify, ErrorClass, JobError};
///
/// #[derive(Debug, thiserror::Error, JobError)]
/// enum ChargeError {
///     #[error("gateway timed out")]
///     #[transient]
///     Timeout,
///     #[error("rate limited")]
///     #[transient]
///     RateLimited { #[retry_after] wait: Duration },
///     #[error("card declined")]
///     #[permanent]
///     Declined,
/// }
///
/// assert_eq!(ChargeError::Timeout.class(), ErrorClass::Transient);
/// assert_eq!(ChargeError::Declined.class(), ErrorClass::Permanent);
/// let limited = ChargeError::RateLimited { wait: Duration::from_secs(7) };
/// assert_eq!(limited.retry_after(), Some(Duration::from_secs(7)));
/// ```
///
/// errand also classifies the error types jobs commonly return as they are:
///
/// | type | class |
/// | --- | --- |
/// | `std::io::Error` | transient, except `InvalidInput`, `InvalidData`, `Unsupported`, `PermissionDenied`: permanent |
/// | `sqlx::Error` | transient (connection, pool, I/O, database errors), except errors of the query or its types (`ColumnNotFound`, `ColumnDecode`, `Decode`, `TypeNotFound`, `ColumnIndexOutOfBounds`, `Configuration`, `Encode`): permanent |
/// | `serde_json::Error` | permanent (the same data fails the same way), except I/O errors: transient |
/// | `Box<dyn Error + Send + Sync>`, `String` | transient |
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a job's error type: it does not implement `errand::Classify`",
    label = "this error type does not say whether a retry can help",
    note = "derive it: `#[derive(Debug, thiserror::Error, errand::JobError)]`, and mark each variant `#[transient]` or `#[permanent]`",
    note = "or return an error errand classifies as transient: `Box<dyn std::error::Error + Send + Sync>` (a box without `Send + Sync` cannot cross threads), `std::io::Error`, `String`, `sqlx::Error` or `errand::Error`"
)]
pub trait Classify: fmt::Display {
    /// Transient (retry) or permanent (dead at once).
    fn class(&self) -> ErrorClass;

    /// How long to wait before the next attempt, overriding the job's backoff.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

impl Classify for std::io::Error {
    fn class(&self) -> ErrorClass {
        use std::io::ErrorKind::*;
        match self.kind() {
            InvalidInput | InvalidData | Unsupported | PermissionDenied => ErrorClass::Permanent,
            _ => ErrorClass::Transient,
        }
    }
}

impl Classify for sqlx::Error {
    fn class(&self) -> ErrorClass {
        use sqlx::Error::*;
        match self {
            Configuration(_)
            | ColumnNotFound(_)
            | ColumnIndexOutOfBounds { .. }
            | ColumnDecode { .. }
            | Decode(_)
            | Encode(_)
            | TypeNotFound { .. } => ErrorClass::Permanent,
            _ => ErrorClass::Transient,
        }
    }
}

impl Classify for serde_json::Error {
    fn class(&self) -> ErrorClass {
        match self.classify() {
            serde_json::error::Category::Io => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        }
    }
}

impl Classify for Box<dyn std::error::Error + Send + Sync> {
    fn class(&self) -> ErrorClass {
        ErrorClass::Transient
    }
}

impl Classify for String {
    fn class(&self) -> ErrorClass {
        ErrorClass::Transient
    }
}

/// Why one attempt failed, as recorded in a job's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// The job returned a transient error.
    Transient,
    /// The job returned a permanent error.
    Permanent,
    /// The job panicked (treated as transient).
    Panic,
    /// The job ran past its timeout (treated as transient).
    Timeout,
    /// The worker running it stopped renewing its lease: killed, or stalled.
    LeaseLost,
    /// No job of this kind is registered in the worker that claimed it.
    UnknownKind,
    /// The stored arguments do not decode into the job's parameters.
    Undecodable,
    /// The job ended itself with [`Outcome::Cancel`](crate::Outcome::Cancel).
    Cancelled,
    /// It had not started by its deadline (`#[job(expires_in = ..)]`,
    /// [`Request::expires_at`](crate::Request::expires_at)), and was cancelled unrun.
    Expired,
}

impl FailureKind {
    /// The stored name, e.g. `"lease_lost"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            FailureKind::Transient => "transient",
            FailureKind::Permanent => "permanent",
            FailureKind::Panic => "panic",
            FailureKind::Timeout => "timeout",
            FailureKind::LeaseLost => "lease_lost",
            FailureKind::UnknownKind => "unknown_kind",
            FailureKind::Undecodable => "undecodable",
            FailureKind::Cancelled => "cancelled",
            FailureKind::Expired => "expired",
        }
    }

    /// Whether retrying can help. An unknown kind is not: the worker already waited the grace
    /// period for a worker that knows it.
    pub const fn is_retryable(self) -> bool {
        !matches!(
            self,
            FailureKind::Permanent
                | FailureKind::Undecodable
                | FailureKind::Cancelled
                | FailureKind::Expired
                | FailureKind::UnknownKind
        )
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_errors_are_classified() {
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow");
        assert_eq!(io.class(), ErrorClass::Transient);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, "bad");
        assert_eq!(io.class(), ErrorClass::Permanent);
        assert_eq!(sqlx::Error::PoolTimedOut.class(), ErrorClass::Transient);
        assert_eq!(
            sqlx::Error::ColumnNotFound("x".into()).class(),
            ErrorClass::Permanent
        );
        let json = serde_json::from_str::<u8>("x").unwrap_err();
        assert_eq!(json.class(), ErrorClass::Permanent);
        let boxed: Box<dyn std::error::Error + Send + Sync> = "oops".into();
        assert_eq!(boxed.class(), ErrorClass::Transient);
    }
}

/// A failed run, reduced to what the store records.
#[derive(Debug)]
pub struct Failure {
    pub(crate) kind: FailureKind,
    pub(crate) message: String,
    pub(crate) retry_after: Option<Duration>,
}

impl Failure {
    pub(crate) fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    pub(crate) fn from_error<E: Classify>(err: E) -> Failure {
        let kind = match err.class() {
            ErrorClass::Transient => FailureKind::Transient,
            ErrorClass::Permanent => FailureKind::Permanent,
        };
        Failure {
            kind,
            message: err.to_string(),
            retry_after: err.retry_after(),
        }
    }
}
