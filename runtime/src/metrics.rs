//! Metrics, through the [`metrics`](https://docs.rs/metrics) facade: the application installs
//! the exporter it uses (Prometheus, StatsD, OpenTelemetry), and errand records into it. With no
//! exporter installed, recording does nothing.
//!
//! Every metric is labelled by `kind` and `queue` only, never by a key, an id or an argument, so
//! that their number stays bounded. [`describe_metrics`] gives each its unit and help text.
//!
//! | metric | type | labels | what |
//! | --- | --- | --- | --- |
//! | `errand_jobs_enqueued_total` | counter | `kind`, `queue` | jobs stored by an enqueue (duplicates refused by a unique key are not) |
//! | `errand_jobs_started_total` | counter | `kind`, `queue` | runs started by a worker |
//! | `errand_jobs_completed_total` | counter | `kind`, `queue` | runs that completed |
//! | `errand_jobs_retried_total` | counter | `kind`, `queue` | runs that failed and will be retried |
//! | `errand_jobs_snoozed_total` | counter | `kind`, `queue` | runs that snoozed |
//! | `errand_jobs_cancelled_total` | counter | `kind`, `queue` | runs that ended cancelled (by the job, or by the client while it ran) |
//! | `errand_jobs_dead_total` | counter | `kind`, `queue` | runs after which the job died |
//! | `errand_job_duration_seconds` | histogram | `kind`, `queue` | how long each run took |
//! | `errand_job_wait_seconds` | histogram | `kind`, `queue` | from when a job was due (its run time) to when its run started |
//! | `errand_queue_jobs` | gauge | `queue`, `state` | jobs per queue in `available`, `scheduled`, `running`, `retryable`, `pending` and `dead` |
//! | `errand_queue_oldest_available_seconds` | gauge | `queue` | how long the queue's oldest available job has been due (0 when none) |
//!
//! The gauges are sampled from the database by one node at a time
//! ([`Worker::queue_metrics`](crate::Worker::queue_metrics)): every worker that samples takes
//! a lease in the database first, and only its holder reads the counts.

use std::time::Duration;

use crate::job::JobState;
use crate::query::QueueStats;

/// `errand_jobs_enqueued_total`.
pub const JOBS_ENQUEUED: &str = "errand_jobs_enqueued_total";
/// `errand_jobs_started_total`.
pub const JOBS_STARTED: &str = "errand_jobs_started_total";
/// `errand_jobs_completed_total`.
pub const JOBS_COMPLETED: &str = "errand_jobs_completed_total";
/// `errand_jobs_retried_total`.
pub const JOBS_RETRIED: &str = "errand_jobs_retried_total";
/// `errand_jobs_snoozed_total`.
pub const JOBS_SNOOZED: &str = "errand_jobs_snoozed_total";
/// `errand_jobs_cancelled_total`.
pub const JOBS_CANCELLED: &str = "errand_jobs_cancelled_total";
/// `errand_jobs_dead_total`.
pub const JOBS_DEAD: &str = "errand_jobs_dead_total";
/// `errand_job_duration_seconds`.
pub const JOB_DURATION: &str = "errand_job_duration_seconds";
/// `errand_job_wait_seconds`.
pub const JOB_WAIT: &str = "errand_job_wait_seconds";
/// `errand_queue_jobs`.
pub const QUEUE_JOBS: &str = "errand_queue_jobs";
/// `errand_queue_oldest_available_seconds`.
pub const QUEUE_OLDEST_AVAILABLE: &str = "errand_queue_oldest_available_seconds";

/// Describes every errand metric to the installed recorder: its unit and help text. Call it
/// once, after installing the exporter.
///
/// ```no_run
/// # fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// // e.g. metrics_exporter_prometheus::PrometheusBuilder::new().install()?;
/// errand::metrics::describe_metrics();
/// # Ok(()) }
/// ```
pub fn describe_metrics() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    let counters = [
        (JOBS_ENQUEUED, "Jobs stored by an enqueue"),
        (JOBS_STARTED, "Runs started by a worker"),
        (JOBS_COMPLETED, "Runs that completed"),
        (JOBS_RETRIED, "Runs that failed and will be retried"),
        (JOBS_SNOOZED, "Runs that snoozed"),
        (JOBS_CANCELLED, "Runs that ended cancelled"),
        (JOBS_DEAD, "Runs after which the job died"),
    ];
    for (name, help) in counters {
        describe_counter!(name, Unit::Count, help);
    }
    describe_histogram!(JOB_DURATION, Unit::Seconds, "How long each run took");
    describe_histogram!(
        JOB_WAIT,
        Unit::Seconds,
        "From when a job was due to when its run started"
    );
    describe_gauge!(QUEUE_JOBS, Unit::Count, "Jobs per queue and state");
    describe_gauge!(
        QUEUE_OLDEST_AVAILABLE,
        Unit::Seconds,
        "How long the queue's oldest available job has been due"
    );
}

/// A job stored by an enqueue.
pub(crate) fn enqueued(kind: &'static str, queue: &str) {
    enqueued_many(kind, queue, 1);
}

/// `count` jobs of `kind` stored in `queue` by one statement.
pub(crate) fn enqueued_many(kind: &'static str, queue: &str, count: usize) {
    let count = u64::try_from(count).unwrap_or(u64::MAX);
    ::metrics::counter!(JOBS_ENQUEUED, "kind" => kind, "queue" => queue.to_owned())
        .increment(count);
}

/// A run starts, `waited` after the job was due.
pub(crate) fn started(kind: &str, queue: &str, waited: Duration) {
    let labels = [("kind", kind.to_owned()), ("queue", queue.to_owned())];
    ::metrics::counter!(JOBS_STARTED, &labels).increment(1);
    ::metrics::histogram!(JOB_WAIT, &labels).record(waited.as_secs_f64());
}

/// A run ended, leaving the job in `state`, after `ran`.
pub(crate) fn finished(kind: &str, queue: &str, state: JobState, ran: Duration) {
    let counter = match state {
        JobState::Completed => JOBS_COMPLETED,
        JobState::Retryable => JOBS_RETRIED,
        JobState::Scheduled => JOBS_SNOOZED,
        JobState::Cancelled => JOBS_CANCELLED,
        JobState::Dead => JOBS_DEAD,
        _ => return,
    };
    let labels = [("kind", kind.to_owned()), ("queue", queue.to_owned())];
    ::metrics::counter!(counter, &labels).increment(1);
    ::metrics::histogram!(JOB_DURATION, &labels).record(ran.as_secs_f64());
}

/// The gauges of each queue, from a sample of the database.
pub(crate) fn sampled(stats: &[QueueStats]) {
    for queue in stats {
        let c = &queue.counts;
        for (state, n) in [
            ("available", c.available),
            ("scheduled", c.scheduled),
            ("running", c.running),
            ("retryable", c.retryable),
            ("pending", c.pending),
            ("dead", c.dead),
        ] {
            let labels = [("queue", queue.queue.clone()), ("state", state.to_owned())];
            // Gauges are f64: exact to 2^53 jobs.
            ::metrics::gauge!(QUEUE_JOBS, &labels).set(n as f64);
        }
        let oldest = queue.oldest_available.unwrap_or_default();
        ::metrics::gauge!(QUEUE_OLDEST_AVAILABLE, "queue" => queue.queue.clone())
            .set(oldest.as_secs_f64());
    }
}
