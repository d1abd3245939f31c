//! The runs a worker is executing: what the lease keeper renews and what shutdown puts back.
//!
//! A run is a job under one claim, so it is keyed by the job's id *and* its fence: a worker that
//! claims its own rescued job again holds two runs of one job, and the old one ending must not
//! touch the new one. Every run leaves the registry when its task ends, however it ends (a
//! [`RunGuard`] sees to it), except a completed run, which stays until the claim loop has
//! written its completion.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::context::RunSignal;
pub(crate) use crate::store::RunId;

struct Run {
    signal: RunSignal,
    /// When the last renewal that reached the database was sent (or the claim, before any): the
    /// lease in the database runs out no earlier than this plus the lease.
    renewed_at: Instant,
}

/// The registry, shared by the claim loop, the job tasks and the lease keeper.
#[derive(Default)]
pub(crate) struct Runs {
    map: Mutex<HashMap<RunId, Run>>,
}

impl Runs {
    fn lock(&self) -> MutexGuard<'_, HashMap<RunId, Run>> {
        // Each operation below leaves the map whole before it can panic.
        self.map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a run claimed by a statement sent at `claimed_at`.
    pub(crate) fn insert(&self, run: RunId, claimed_at: Instant) -> RunSignal {
        let signal = RunSignal::default();
        self.lock().insert(
            run,
            Run {
                signal: signal.clone(),
                renewed_at: claimed_at,
            },
        );
        signal
    }

    pub(crate) fn remove(&self, run: RunId) {
        self.lock().remove(&run);
    }

    /// Every run, for renewal.
    pub(crate) fn snapshot(&self) -> Vec<RunId> {
        self.lock().keys().copied().collect()
    }

    /// Records a renewal sent at `sent_at` that reached `renewed`, and fires the tokens of runs
    /// whose cancellation the client requested.
    pub(crate) fn renewed(&self, sent_at: Instant, renewed: &[(RunId, bool)]) {
        let mut map = self.lock();
        for (run, cancel_requested) in renewed {
            if let Some(entry) = map.get_mut(run) {
                entry.renewed_at = entry.renewed_at.max(sent_at);
                if *cancel_requested {
                    entry.signal.cancel();
                }
            }
        }
    }

    /// Tells every run of job `id` that its cancellation was asked; returns whether one was
    /// running here.
    pub(crate) fn cancel_job(&self, id: crate::job::JobId) -> bool {
        let map = self.lock();
        let mut found = false;
        for (run, entry) in map.iter() {
            if run.id == id {
                entry.signal.cancel();
                found = true;
            }
        }
        found
    }

    /// Whether no run is registered.
    pub(crate) fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Marks as lost every run not renewed within `lease`, firing its token; returns them.
    pub(crate) fn expire(&self, lease: Duration) -> Vec<RunId> {
        let map = self.lock();
        let now = Instant::now();
        map.iter()
            .filter(|(_, run)| !run.signal.is_lost() && now >= run.renewed_at + lease)
            .map(|(id, run)| {
                run.signal.lose();
                *id
            })
            .collect()
    }

    /// Takes every run out, for shutdown.
    pub(crate) fn drain(&self) -> Vec<RunId> {
        self.lock().drain().map(|(id, _)| id).collect()
    }
}

/// Removes its run from the registry when dropped, unless disarmed: a task that ends in any way
/// (returns, panics outside the job, is aborted) gives its run up, so no lease is renewed for a
/// run nobody executes.
pub(crate) struct RunGuard {
    runs: Arc<Runs>,
    run: RunId,
    armed: bool,
}

impl RunGuard {
    pub(crate) fn new(runs: Arc<Runs>, run: RunId) -> RunGuard {
        RunGuard {
            runs,
            run,
            armed: true,
        }
    }

    /// Leaves the run registered: its completion is still to be written.
    pub(crate) fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if self.armed {
            self.runs.remove(self.run);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobId;

    fn run(id: i64, fence: i64) -> RunId {
        RunId {
            id: JobId::new(id),
            fence,
        }
    }

    #[test]
    fn two_claims_of_one_job_are_two_runs() {
        let runs = Arc::new(Runs::default());
        let old = run(1, 1);
        let new = run(1, 2);
        runs.insert(old, Instant::now());
        runs.insert(new, Instant::now());
        drop(RunGuard::new(runs.clone(), old));
        assert_eq!(
            runs.snapshot(),
            vec![new],
            "the old run's end leaves the new run"
        );
    }

    #[test]
    fn a_kept_guard_leaves_its_run() {
        let runs = Arc::new(Runs::default());
        runs.insert(run(1, 1), Instant::now());
        RunGuard::new(runs.clone(), run(1, 1)).keep();
        assert_eq!(runs.snapshot().len(), 1);
    }

    #[test]
    fn runs_not_renewed_within_the_lease_are_lost() {
        let runs = Runs::default();
        let long_ago = Instant::now() - Duration::from_secs(10);
        let stale = runs.insert(run(1, 1), long_ago);
        let fresh = runs.insert(run(2, 1), long_ago);
        runs.renewed(Instant::now(), &[(run(2, 1), false)]);
        assert_eq!(runs.expire(Duration::from_secs(5)), vec![run(1, 1)]);
        assert!(stale.is_lost() && stale.is_stopped());
        assert!(!fresh.is_lost() && !fresh.is_stopped());
        assert!(runs.expire(Duration::from_secs(5)).is_empty(), "lost once");
    }

    #[test]
    fn a_requested_cancellation_stops_without_losing() {
        let runs = Runs::default();
        let signal = runs.insert(run(1, 1), Instant::now());
        runs.renewed(Instant::now(), &[(run(1, 1), true)]);
        assert!(signal.is_stopped() && !signal.is_lost());
    }
}
