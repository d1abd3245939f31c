//! Concurrent histories against a real PostgreSQL, checked for linearizability with the model's
//! [`StoreSpec`] as the sequential specification: several tasks enqueue one key, claim, renew,
//! finish, complete in batches, expire leases and rescue at once, each call recorded as it is
//! made and as it returns; some order of the calls, consistent with real time, must give every
//! result the store gave.
//!
//! PostgreSQL's claim, renewal and rescue skip rows other statements hold (`SKIP LOCKED`), so
//! for them the spec accepts any subset of the rows they could take, each taken exactly as the
//! spec takes it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use errand::conformance::{ConformanceStore, End};
use errand_model::{Faults, JobState, Outcome, StoreSpec, Strategy};
use stateright::semantics::{ConsistencyTester, LinearizabilityTester, SequentialSpec};

const MAX_ATTEMPTS: u8 = 3;

#[derive(Clone, Debug)]
enum Op {
    Enqueue,
    Claim(u8),
    Renew(u8, Vec<(i64, i64)>),
    Finish(i64, i64, Outcome),
    CompleteMany(Vec<(i64, i64)>),
    ExpireAll,
    Rescue,
}

#[derive(Clone, Debug, PartialEq)]
enum Ret {
    Enqueued(i64, bool),
    Runs(Vec<(i64, i64, u32)>),
    Renewed(Vec<(i64, i64, bool)>),
    Flag(bool),
    Ids(Vec<i64>),
}

/// The spec, and the store's id of each of its jobs as the history assigned them.
#[derive(Clone, Debug)]
struct Spec {
    spec: StoreSpec,
    ids: Vec<i64>,
}

impl Spec {
    fn new() -> Spec {
        Spec {
            spec: StoreSpec::new(Strategy::UntilExecuted, MAX_ATTEMPTS, Faults::default()),
            ids: Vec::new(),
        }
    }

    fn index(&self, id: i64) -> Option<usize> {
        self.ids.iter().position(|&known| known == id)
    }

    fn runs(&self, runs: &[(i64, i64)]) -> Option<Vec<(usize, u8)>> {
        runs.iter()
            .map(|&(id, fence)| Some((self.index(id)?, u8::try_from(fence).ok()?)))
            .collect()
    }

    fn store_ids(&self, ids: Vec<usize>) -> Vec<i64> {
        let mut ids: Vec<i64> = ids.into_iter().map(|i| self.ids[i]).collect();
        ids.sort_unstable();
        ids
    }
}

impl SequentialSpec for Spec {
    type Op = Op;
    type Ret = Ret;

    /// Unused: every step is judged by [`Spec::is_valid_step`].
    fn invoke(&mut self, _: &Op) -> Ret {
        Ret::Flag(false)
    }

    fn is_valid_step(&mut self, op: &Op, ret: &Ret) -> bool {
        let spec = &mut self.spec;
        match (op, ret) {
            (Op::Enqueue, &Ret::Enqueued(id, new)) => match spec.enqueue() {
                errand_model::spec::Inserted::New(_) if new && !self.ids.contains(&id) => {
                    self.ids.push(id);
                    true
                }
                errand_model::spec::Inserted::Duplicate(holder) => !new && self.ids[holder] == id,
                _ => false,
            },
            (&Op::Claim(worker), Ret::Runs(runs)) => runs.iter().all(|&(id, fence, attempt)| {
                let Some(index) = self.ids.iter().position(|&known| known == id) else {
                    return false;
                };
                let taken = self.spec.claim(index, worker);
                taken == Some((fence as u8, attempt as u8))
            }),
            (Op::Renew(worker, asked), Ret::Renewed(renewed)) => {
                let (Some(_), Some(taken)) = (
                    self.runs(asked),
                    self.runs(
                        &renewed
                            .iter()
                            .map(|&(id, f, _)| (id, f))
                            .collect::<Vec<_>>(),
                    ),
                ) else {
                    return false;
                };
                let subset = renewed.iter().all(|&(id, f, _)| asked.contains(&(id, f)));
                let got: Vec<(i64, i64, bool)> = self
                    .spec
                    .renew(*worker, &taken)
                    .into_iter()
                    .map(|(i, f, c)| (self.ids[i], i64::from(f), c))
                    .collect();
                subset && &got == renewed
            }
            (&Op::Finish(id, fence, outcome), &Ret::Flag(done)) => {
                match (self.index(id), u8::try_from(fence)) {
                    (Some(index), Ok(fence)) => self.spec.finish(index, fence, outcome) == done,
                    _ => false,
                }
            }
            (Op::CompleteMany(runs), Ret::Ids(done)) => match self.runs(runs) {
                Some(runs) => {
                    let completed = self.spec.complete_many(&runs);
                    &self.store_ids(completed) == done
                }
                None => false,
            },
            (Op::ExpireAll, Ret::Ids(expired)) => {
                let running: Vec<usize> = (0..spec.rows.len())
                    .filter(|&i| spec.rows[i].state == JobState::Running)
                    .collect();
                for &i in &running {
                    spec.expire_lease(i);
                }
                &self.store_ids(running) == expired
            }
            (Op::Rescue, Ret::Ids(rescued)) => {
                let indexes: Option<Vec<usize>> =
                    rescued.iter().map(|&id| self.index(id)).collect();
                match indexes {
                    Some(indexes) => self.spec.rescue_only(&indexes),
                    None => false,
                }
            }
            _ => false,
        }
    }
}

type Tester = Arc<Mutex<LinearizabilityTester<u8, Spec>>>;

/// Calls in flight now, and the most ever in flight at once: a history whose calls never
/// overlapped would prove nothing about concurrency.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static MOST_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Records `op` by `thread`, runs it, records what it returned.
async fn call<F>(tester: &Tester, thread: u8, op: Op, run: F) -> Ret
where
    F: std::future::Future<Output = Result<Ret, errand::Error>>,
{
    tester
        .lock()
        .expect("the tester's lock")
        .on_invoke(thread, op)
        .expect("a well-formed history");
    let now = IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1;
    MOST_IN_FLIGHT.fetch_max(now, Ordering::SeqCst);
    let ret = run.await;
    IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    let ret = match ret {
        Ok(ret) => ret,
        Err(err) => panic!("store operation failed: {err}"),
    };
    tester
        .lock()
        .expect("the tester's lock")
        .on_return(thread, ret.clone())
        .expect("a well-formed history");
    ret
}

async fn worker(store: Arc<ConformanceStore>, tester: Tester, thread: u8) {
    let name = format!("w{thread}");
    for round in 0..3 {
        let op = Op::Claim(thread);
        let claimed = call(&tester, thread, op, async {
            let mut runs = store.claim(&name).await?;
            runs.sort_unstable();
            Ok(Ret::Runs(runs))
        })
        .await;
        let Ret::Runs(runs) = claimed else { continue };
        let pairs: Vec<(i64, i64)> = runs.iter().map(|&(id, f, _)| (id, f)).collect();
        let op = Op::Renew(thread, pairs.clone());
        call(&tester, thread, op, async {
            Ok(Ret::Renewed(store.renew(&name, &pairs).await?))
        })
        .await;
        let mut batch = Vec::new();
        for (n, &(id, fence)) in pairs.iter().enumerate() {
            if (n + round) % 2 == 0 {
                batch.push((id, fence));
                continue;
            }
            let op = Op::Finish(id, fence, Outcome::Retry);
            call(&tester, thread, op, async {
                Ok(Ret::Flag(store.finish(id, fence, End::Retry).await?))
            })
            .await;
        }
        let op = Op::CompleteMany(batch.clone());
        call(&tester, thread, op, async {
            Ok(Ret::Ids(store.complete_many(&batch).await?))
        })
        .await;
    }
}

/// One history: an enqueuer, two workers and a rescuer at once.
async fn history(url: &str, schema: &str) -> (bool, String) {
    let store = match ConformanceStore::connect(url, schema, u32::from(MAX_ATTEMPTS)).await {
        Ok(store) => Arc::new(store),
        Err(err) => panic!("PostgreSQL at {url}: {err}"),
    };
    let tester: Tester = Arc::new(Mutex::new(LinearizabilityTester::new(Spec::new())));
    let enqueuer = {
        let (store, tester) = (store.clone(), tester.clone());
        tokio::spawn(async move {
            for _ in 0..4 {
                call(&tester, 0, Op::Enqueue, async {
                    let (id, new) = store.enqueue("until_executed").await?;
                    Ok(Ret::Enqueued(id, new))
                })
                .await;
                tokio::task::yield_now().await;
            }
        })
    };
    let workers: Vec<_> = [1, 2]
        .into_iter()
        .map(|thread| tokio::spawn(worker(store.clone(), tester.clone(), thread)))
        .collect();
    let rescuer = {
        let (store, tester) = (store.clone(), tester.clone());
        tokio::spawn(async move {
            for _ in 0..2 {
                call(&tester, 3, Op::ExpireAll, async {
                    Ok(Ret::Ids(store.expire_all_leases().await?))
                })
                .await;
                call(&tester, 3, Op::Rescue, async {
                    Ok(Ret::Ids(store.rescue().await?))
                })
                .await;
            }
        })
    };
    for task in workers.into_iter().chain([enqueuer, rescuer]) {
        task.await.expect("a task of the history");
    }
    store.drop_schema(schema).await;
    let tester = tester.lock().expect("the tester's lock");
    (tester.is_consistent(), format!("{tester:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_histories_on_postgres_are_linearizable() {
    let url = std::env::var("ERRAND_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    // Without a server the test says so and passes, as the suite's do, unless `CI` is set.
    if let Err(err) = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await {
        if std::env::var_os("CI").is_some() {
            panic!("PostgreSQL is required when CI is set, but {url} did not answer: {err}");
        }
        eprintln!("SKIPPED (PostgreSQL): {url}: {err}");
        return;
    }
    for n in 0..20 {
        let schema = format!("errand_linear_{}_{n}", std::process::id());
        let (linearizable, history) = history(&url, &schema).await;
        assert!(linearizable, "history {n} is not linearizable: {history}");
    }
    let most = MOST_IN_FLIGHT.load(Ordering::SeqCst);
    assert!(
        most >= 3,
        "at most {most} calls were ever in flight at once"
    );
}

/// The check has teeth: a history in which two claims, one after the other, both take the job
/// under the same fence is refused.
#[test]
fn a_job_claimed_twice_under_one_fence_is_not_linearizable() {
    let mut tester = LinearizabilityTester::new(Spec::new());
    let steps = [
        (0, Op::Enqueue, Ret::Enqueued(1, true)),
        (1, Op::Claim(1), Ret::Runs(vec![(1, 1, 1)])),
        (2, Op::Claim(2), Ret::Runs(vec![(1, 1, 1)])),
    ];
    for (thread, op, ret) in steps {
        tester.on_invoke(thread, op).unwrap();
        tester.on_return(thread, ret).unwrap();
    }
    assert!(!tester.is_consistent());

    // And the same history with the second claim taking nothing is accepted.
    let mut tester = LinearizabilityTester::new(Spec::new());
    let steps = [
        (0, Op::Enqueue, Ret::Enqueued(1, true)),
        (1, Op::Claim(1), Ret::Runs(vec![(1, 1, 1)])),
        (2, Op::Claim(2), Ret::Runs(vec![])),
    ];
    for (thread, op, ret) in steps {
        tester.on_invoke(thread, op).unwrap();
        tester.on_return(thread, ret).unwrap();
    }
    assert!(tester.is_consistent());
}
