//! Group commit for completions: runs that finish at about the same time are marked completed
//! by one statement instead of one each.
//!
//! The first run to finish becomes the batch's leader: it yields once, so that runs finishing
//! alongside it can join, then writes the whole batch. A run counts as completed only once that
//! statement has committed, and its worker keeps renewing its lease until then, so batching
//! changes the number of round trips, never what "completed" means.

use std::sync::{Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::error::Error;
use crate::job::JobId;
use crate::store::{Backend, Store};

/// The answer a run gets: whether its completion was written (`false`: it had been taken from
/// this worker), or why the batch failed.
type Reply = Result<bool, String>;

#[derive(Default)]
pub(crate) struct Completions {
    pending: Mutex<Vec<(JobId, i64, oneshot::Sender<Reply>)>>,
    #[cfg(test)]
    batches: std::sync::atomic::AtomicUsize,
}

impl Completions {
    fn pending(&self) -> MutexGuard<'_, Vec<(JobId, i64, oneshot::Sender<Reply>)>> {
        // The list holds plain values; a panic elsewhere cannot leave it half-updated.
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Marks run `fence` of job `id` completed, with whatever other runs finish alongside it.
    pub(crate) async fn complete(
        &self,
        store: &Backend,
        id: JobId,
        fence: i64,
    ) -> Result<bool, Error> {
        let (reply, answer) = oneshot::channel();
        let leader = {
            let mut pending = self.pending();
            pending.push((id, fence, reply));
            pending.len() == 1
        };
        if leader {
            tokio::task::yield_now().await;
            let batch = std::mem::take(&mut *self.pending());
            let runs: Vec<(JobId, i64)> =
                batch.iter().map(|(id, fence, _)| (*id, *fence)).collect();
            #[cfg(test)]
            self.batches
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let result = store.complete_many(&runs).await;
            for (id, _, reply) in batch {
                let answer = match &result {
                    Ok(done) => Ok(done.contains(&id)),
                    Err(err) => Err(err.to_string()),
                };
                // A run that stopped waiting (its worker is shutting down) needs no answer.
                let _ = reply.send(answer);
            }
        }
        match answer.await {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(message)) => Err(Error::Batch { message }),
            // The leader was stopped before it wrote the batch.
            Err(_) => Err(Error::Batch {
                message: "the batch was abandoned by a stopped run".to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::{NewJob, RunAt};

    #[tokio::test(flavor = "current_thread")]
    async fn runs_finishing_together_share_one_statement() {
        let store = Backend::Memory(MemoryStore::default());
        for n in 0..20 {
            let job = NewJob {
                kind: "noop",
                queue: "default".to_owned(),
                args: format!("{{\"n\":{n}}}"),
                priority: 5,
                max_attempts: 1,
                run_at: RunAt::Now,
                key: None,
                unique: None,
            };
            store.enqueue(&job).await.unwrap();
        }
        let claimed = store
            .claim(&[("default", 20)], "w", Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(claimed.len(), 20);
        let completions = Arc::new(Completions::default());
        let mut runs = tokio::task::JoinSet::new();
        for (i, job) in claimed.iter().enumerate() {
            let (store, completions) = (store.clone(), completions.clone());
            // One stale fence: that run lost its job and must not complete it.
            let fence = if i == 0 { job.fence + 1 } else { job.fence };
            let id = job.id;
            runs.spawn(async move { (id, completions.complete(&store, id, fence).await.unwrap()) });
        }
        let mut written = 0;
        while let Some(joined) = runs.join_next().await {
            let (id, done) = joined.unwrap();
            assert_eq!(done, id != claimed[0].id);
            written += usize::from(done);
        }
        assert_eq!(written, 19);
        assert_eq!(
            completions
                .batches
                .load(std::sync::atomic::Ordering::SeqCst),
            1
        );
        assert_eq!(
            store.job(claimed[0].id).await.unwrap().unwrap().state,
            crate::JobState::Running
        );
    }
}
