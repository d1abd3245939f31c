//! Supervision of the worker's background services: each runs in a task of its own; one that
//! panics or fails is logged and restarted after a pause; one that keeps failing stops the
//! worker with an error rather than let it run on half-alive.

use std::collections::VecDeque;
use std::future::Future;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::registry::panic_text;

/// A service that failed this many times within [`FAILURE_WINDOW`] is given up.
const MAX_FAILURES: usize = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Runs the service `start` makes until `stop` fires, restarting it when it panics or returns
/// an error. Returns `Ok` once stopped, or an error naming the service when it failed
/// [`MAX_FAILURES`] times within [`FAILURE_WINDOW`].
///
/// The service runs in a `JoinSet` owned by this future: dropping the future aborts it, so no
/// service outlives its worker.
pub(crate) async fn supervise<F, Fut>(
    service: &'static str,
    worker: String,
    stop: CancellationToken,
    start: F,
) -> Result<(), Error>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), Error>> + Send + 'static,
{
    let mut failures: VecDeque<Instant> = VecDeque::new();
    loop {
        let mut task = JoinSet::new();
        task.spawn(start());
        let ended = tokio::select! {
            ended = task.join_next() => ended,
            () = stop.cancelled() => return Ok(()),
        };
        let reason = match ended {
            Some(Ok(Ok(()))) | None => return Ok(()),
            Some(Ok(Err(err))) => err.to_string(),
            Some(Err(err)) if err.is_panic() => {
                format!("panicked: {}", panic_text(&*err.into_panic()))
            }
            Some(Err(err)) => err.to_string(),
        };
        let now = Instant::now();
        failures.push_back(now);
        while failures
            .front()
            .is_some_and(|at| now.duration_since(*at) > FAILURE_WINDOW)
        {
            failures.pop_front();
        }
        if failures.len() >= MAX_FAILURES {
            tracing::error!(%worker, service, reason, "errand service keeps failing; stopping the worker");
            return Err(Error::ServiceFailed {
                service,
                failures: failures.len(),
                reason,
            });
        }
        let pause = Duration::from_millis(100) * (1 << failures.len());
        tracing::error!(%worker, service, reason, restart_in = ?pause, "errand service failed; restarting it");
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = stop.cancelled() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn a_panicking_service_is_restarted() {
        let starts = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let counted = starts.clone();
        let stopper = stop.clone();
        let result = supervise("test", "w".to_owned(), stop, move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            let stopper = stopper.clone();
            async move {
                if n < 2 {
                    panic!("boom {n}");
                }
                stopper.cancel();
                Ok(())
            }
        })
        .await;
        assert!(result.is_ok());
        assert_eq!(starts.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_service_that_keeps_failing_stops_the_worker() {
        let result = supervise(
            "flaky",
            "w".to_owned(),
            CancellationToken::new(),
            || async { Err(Error::InvalidWorker("always".to_owned())) },
        )
        .await;
        match result {
            Err(Error::ServiceFailed {
                service, failures, ..
            }) => {
                assert_eq!(service, "flaky");
                assert_eq!(failures, MAX_FAILURES);
            }
            other => panic!("expected ServiceFailed, got {other:?}"),
        }
    }
}
