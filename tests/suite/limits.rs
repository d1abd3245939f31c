//! Limits across the cluster: `concurrency`, `concurrency_key` and `rate`, held by the database
//! for every node.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use errand::{JobFilter, JobInfo, JobState, Page};
use errand_tests::common::{gate, job, records, tag, wait_for, wait_for_within, worker, TestStore};
use errand_tests::jobs::{
    limited_one, limited_pair, limited_way_out, metered, metered_slow, occupies, per_account,
};
use errand_tests::processes::{Options, WorkerProcess};
use errand_tests::{per_sql_store, per_store};

const WORKER: &str = env!("CARGO_BIN_EXE_errand-test-worker");

per_sql_store!(
    concurrency_holds_across_two_processes,
    a_rate_holds_across_two_processes,
    a_start_slot_reserved_by_a_job_that_never_began_is_freed
);
per_store!(
    a_concurrency_key_limits_each_key_apart,
    a_rate_holds_when_jobs_start,
    a_saturated_limit_goes_on_without_waiting_for_a_poll,
    a_limited_job_that_dies_or_is_cancelled_while_running_frees_its_slot,
    every_other_way_out_of_running_frees_a_limited_slot
);

fn millis(t: SystemTime) -> i64 {
    i64::try_from(t.duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

/// Every job of `kind`, once all `expected` have completed.
async fn completed(store: &TestStore, kind: &str, expected: u64) -> Vec<JobInfo> {
    let client = &store.client;
    let done = JobFilter::all().kind(kind).state(JobState::Completed);
    wait_for("the limited jobs", || async {
        client.count(&done).await.unwrap() == expected
    })
    .await;
    client.jobs(&done, Page::first(1000)).await.unwrap()
}

async fn start_workers(store: &TestStore) -> Vec<WorkerProcess> {
    let url = store.url.clone().unwrap();
    let schema = store.schema.clone().unwrap_or_default();
    let options = Options {
        queue: Some("limited".to_owned()),
        concurrency: 8,
        ..Options::default()
    };
    let mut workers = Vec::new();
    for _ in 0..2 {
        workers.push(WorkerProcess::start_with(WORKER, &url, &schema, &options).await);
    }
    workers
}

/// `concurrency = 2`: two worker processes of 8 slots each never run more than two jobs of the
/// kind at once (each job's hold on its slot, from its claim to its completion, as the
/// database recorded it; and on PostgreSQL each run's own start and end), and do run two.
async fn concurrency_holds_across_two_processes(store: TestStore) {
    const JOBS: i64 = 40;
    let recorder = match store.schema {
        Some(_) => {
            let pool = store.postgres_pool().await;
            errand_tests::jobs::create_runs_table(&pool).await;
            Some(pool)
        }
        None => None,
    };
    let client = &store.client;
    client
        .enqueue_many((0..JOBS).map(limited_pair::with))
        .await
        .unwrap();
    let started = Instant::now();
    let workers = start_workers(&store).await;
    let jobs = completed(&store, "limited_pair", JOBS as u64).await;
    let took = started.elapsed();
    for worker in workers {
        worker.terminate().await;
    }
    let held: Vec<(i64, i64)> = jobs
        .iter()
        .map(|j| {
            (
                millis(j.attempted_at.unwrap()),
                millis(j.finished_at.unwrap()),
            )
        })
        .collect();
    assert_eq!(
        errand_tests::common::most_at_once(&held),
        2,
        "slots held at once"
    );
    if let Some(pool) = recorder {
        let runs: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT (extract(epoch FROM min(at)) * 1e6)::bigint, (extract(epoch FROM max(at)) * 1e6)::bigint
             FROM test_runs GROUP BY n, attempt",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(runs.len(), JOBS as usize, "each job ran once");
        assert!(
            errand_tests::common::most_at_once(&runs) <= 2,
            "runs at once: {}",
            errand_tests::common::most_at_once(&runs)
        );
    }
    // The limit's own bound: 40 jobs of 30 ms, two at a time.
    let bound = Duration::from_millis(30 * JOBS as u64 / 2);
    println!(
        "{JOBS} jobs in {took:?} (worker start included); two at a time they take at least {bound:?}"
    );
}

/// `rate = "5/1s"`: two worker processes start at most five jobs of the kind in any second.
async fn a_rate_holds_across_two_processes(store: TestStore) {
    const JOBS: i64 = 15;
    let client = &store.client;
    client
        .enqueue_many((0..JOBS).map(metered::with))
        .await
        .unwrap();
    let workers = start_workers(&store).await;
    let jobs = completed(&store, "metered", JOBS as u64).await;
    for worker in workers {
        worker.terminate().await;
    }
    let mut starts: Vec<i64> = jobs
        .iter()
        .map(|j| millis(j.attempted_at.unwrap()))
        .collect();
    starts.sort_unstable();
    for (i, start) in starts.iter().enumerate() {
        let in_window = starts[i..]
            .iter()
            .take_while(|t| **t < start + 1000)
            .count();
        assert!(
            in_window <= 5,
            "{in_window} starts in the second from {start}: {starts:?}"
        );
    }
    let span = starts[starts.len() - 1] - starts[0];
    assert!(
        span >= 2000,
        "15 starts at 5 a second span at least 2 s, not {span} ms"
    );
    println!("15 starts over {span} ms");
}

/// `concurrency = 1, concurrency_key = "<account>"`: one job per account at a time, while the
/// accounts run beside each other; a job waiting for its account spends no attempt.
async fn a_concurrency_key_limits_each_key_apart(store: TestStore) {
    let client = &store.client;
    let t = tag("per-account");
    let accounts = ["acme", "globex", "initech"];
    let mut requests = Vec::new();
    for n in 0..5 {
        for account in accounts {
            requests.push(per_account::with(t.clone(), account.to_owned(), n));
        }
    }
    client.enqueue_many(requests).await.unwrap();
    let handle = errand::Worker::new(client.clone())
        .queues([("limited", 1)])
        .concurrency(8)
        .poll_interval(Duration::from_millis(10))
        .spawn();
    let _ = completed(&store, "per_account", 15).await;
    handle.shutdown().await.unwrap();
    let log = records(&t);
    let mut running: Vec<&str> = Vec::new();
    let mut most_accounts = 0;
    for event in &log {
        let mut words = event.split(' ');
        let account = words.next().unwrap();
        if event.ends_with("start") {
            assert!(
                !running.contains(&account),
                "two jobs of {account} at once: {log:?}"
            );
            running.push(account);
            most_accounts = most_accounts.max(running.len());
        } else {
            running.retain(|a| *a != account);
        }
    }
    assert!(most_accounts >= 2, "accounts ran one at a time: {log:?}");
    let all = client
        .jobs(&JobFilter::all().kind("per_account"), Page::first(100))
        .await
        .unwrap();
    assert!(
        all.iter().all(|j| j.attempt == 1),
        "waiting spent no attempt"
    );
}

/// `rate = "5/1s"` holds for the job functions' own starts, not only for the claims: while
/// slow plain jobs fill a worker's eight slots for 2.5 s, its limited claims go on taking rate
/// slots into its buffer, and the buffered jobs start when the slots free. (Before, a start
/// slot counted from the claim, so every second's claim took five more, and eight began at
/// once when the plain jobs ended.)
async fn a_rate_holds_when_jobs_start(store: TestStore) {
    const JOBS: i64 = 15;
    let client = &store.client;
    let t = tag("metered-starts");
    client
        .enqueue_many((0..8).map(|_| occupies::with(2500)))
        .await
        .unwrap();
    client
        .enqueue_many((0..JOBS).map(|n| metered_slow::with(t.clone(), n)))
        .await
        .unwrap();
    let handle = errand::Worker::new(client.clone())
        .queues([("metered", 1)])
        .concurrency(8)
        .prefetch(16)
        .poll_interval(Duration::from_millis(10))
        .spawn();
    let _ = completed(&store, "metered_slow", JOBS as u64).await;
    handle.shutdown().await.unwrap();
    let mut starts: Vec<i64> = records(&t).iter().map(|s| s.parse().unwrap()).collect();
    starts.sort_unstable();
    assert_eq!(starts.len(), JOBS as usize);
    // The window less a margin for the time between a start's record and its slot's.
    for (i, start) in starts.iter().enumerate() {
        let in_window = starts[i..].iter().take_while(|t| **t < start + 950).count();
        assert!(
            in_window <= 5,
            "{in_window} starts within 950 ms of {start}: {starts:?}"
        );
    }
}

/// `concurrency = 2`, a worker that polls every 5 s and is kept busy by plain jobs: as each
/// limited job ends, the slot it frees is taken by the next at once, not at the next poll.
/// (Before, on SQLite, where no notification says a slot freed, two ran per poll.)
async fn a_saturated_limit_goes_on_without_waiting_for_a_poll(store: TestStore) {
    const JOBS: i64 = 12;
    let client = &store.client;
    client
        .enqueue_many((0..JOBS).map(limited_pair::with))
        .await
        .unwrap();
    // Plain jobs keep the worker busy, so that its claims do find jobs.
    let t = tag("beside-the-limit");
    client
        .enqueue_many((0..3000).map(|_| errand_tests::jobs::succeed::with(t.clone())))
        .await
        .unwrap();
    let handle = errand::Worker::new(client.clone())
        .queues([("limited", 1), ("default", 1)])
        .concurrency(8)
        .poll_interval(Duration::from_secs(5))
        .spawn();
    let done = JobFilter::all()
        .kind("limited_pair")
        .state(JobState::Completed);
    errand_tests::common::wait_for_within(
        Duration::from_secs(30),
        "the limited jobs to run back to back",
        || async { client.count(&done).await.unwrap() == JOBS as u64 },
    )
    .await;
    handle.shutdown().await.unwrap();
    let mut at: Vec<i64> = client
        .jobs(&done, Page::first(100))
        .await
        .unwrap()
        .iter()
        .map(|j| millis(j.attempted_at.unwrap()))
        .collect();
    at.sort_unstable();
    let gap = at.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    assert!(gap < 2_000, "a start waited {gap} ms for a poll: {at:?}");
}

/// A rate-limited job claimed into a worker's buffer reserves a start slot; put back at
/// shutdown without having begun, it frees the slot (else the rate's slots would run out).
async fn a_start_slot_reserved_by_a_job_that_never_began_is_freed(store: TestStore) {
    let client = &store.client;
    let t = tag("reserved");
    occupies::enqueue(client, 2500).await.unwrap();
    client
        .enqueue_many((0..3).map(|n| metered_slow::with(t.clone(), n)))
        .await
        .unwrap();
    let reserved = "SELECT count(*) FROM errand_limit_slots
        WHERE purpose = 'start' AND job_id IS NOT NULL AND taken_at IS NULL";
    let handle = errand::Worker::new(client.clone())
        .queues([("metered", 1)])
        .concurrency(1)
        .prefetch(4)
        .grace_period(Duration::from_millis(100))
        .poll_interval(Duration::from_millis(10))
        .spawn();
    wait_for("the limited jobs to wait in the buffer", || async {
        store.scalar(reserved).await == 3
    })
    .await;
    handle.shutdown().await.unwrap();
    assert!(records(&t).is_empty(), "none began");
    assert_eq!(store.scalar(reserved).await, 0, "reserved slots kept");
}

/// A limited job (one at a time) that dies, and one cancelled while it runs, each give their slot
/// back: the next job of the kind runs. (No test let a limited job die or be cancelled while
/// running: the trigger that frees the slot could skip those ways out unnoticed.)
async fn a_limited_job_that_dies_or_is_cancelled_while_running_frees_its_slot(store: TestStore) {
    let client = &store.client;
    let t = tag("limited-one");
    let handle = worker(client, &["limited"]).spawn();
    let within = Duration::from_secs(10);
    let dies = limited_one::with(t.clone(), "dies".into(), false, true)
        .enqueue(client)
        .await
        .unwrap();
    wait_for_within(within, "the first job to die", || async {
        job(client, dies.id).await.state == JobState::Dead
    })
    .await;
    let cancelled = limited_one::with(t.clone(), "cancelled".into(), true, false)
        .enqueue(client)
        .await
        .unwrap();
    wait_for_within(within, "the second job to start", || async {
        records(&t).len() == 2
    })
    .await;
    client.cancel(cancelled.id).await.unwrap();
    gate(&t).add_permits(1);
    wait_for_within(within, "the second job to end cancelled", || async {
        job(client, cancelled.id).await.state == JobState::Cancelled
    })
    .await;
    let last = limited_one::with(t.clone(), "last".into(), false, false)
        .enqueue(client)
        .await
        .unwrap();
    wait_for_within(within, "the last job to run in the freed slot", || async {
        job(client, last.id).await.state == JobState::Completed
    })
    .await;
    handle.shutdown().await.unwrap();
    assert_eq!(records(&t), ["dies", "cancelled", "last"]);
}

/// The other ways a limited job (one at a time) leaves `running`, each followed by a run that
/// needs the slot back: a retry and a snooze (the same job's next attempt), a rescue after its
/// worker crashed, and a release when its worker shut down.
async fn every_other_way_out_of_running_frees_a_limited_slot(store: TestStore) {
    let client = &store.client;
    let t = tag("limited-ways");
    let within = Duration::from_secs(15);
    let way =
        |label: &str, way: &str| limited_way_out::with(t.clone(), label.to_owned(), way.to_owned());
    let completed = |id| async move { job(client, id).await.state == JobState::Completed };
    // This worker has the default lease (30 s), the next ones 1 s: as it stops it gives up the
    // rescue lock, which it took for 20 s, so that the others rescue at once.
    let lease = Duration::from_secs(1);
    let handle = worker(client, &["limited"]).spawn();
    for (label, how) in [("retried", "retry"), ("snoozed", "snooze")] {
        let id = way(label, how).enqueue(client).await.unwrap().id;
        wait_for_within(within, label, || completed(id)).await;
    }
    handle.shutdown().await.unwrap();

    // A crash: the run is dropped where it waits; another worker rescues it once its lease
    // runs out, and its next attempt takes the slot.
    let crashed = way("crashed", "block").enqueue(client).await.unwrap().id;
    let first = worker(client, &["limited"]).lease(lease).spawn();
    wait_for_within(within, "the run to start", || async {
        records(&t).iter().any(|r| r == "crashed attempt 1")
    })
    .await;
    first.abort();
    // Its run is gone before the gate opens, so that only the next attempt passes it.
    wait_for_within(within, "the crashed worker to stop", || async {
        first.is_finished()
    })
    .await;
    gate(&t).add_permits(1);
    let second = worker(client, &["limited"])
        .lease(lease)
        .grace_period(Duration::from_millis(200))
        .spawn();
    wait_for_within(within, "the rescued job to run again", || {
        completed(crashed)
    })
    .await;
    // A shutdown: the run outlives the grace period and is put back; a new worker runs it.
    let released = way("released", "block").enqueue(client).await.unwrap().id;
    wait_for_within(within, "the run to start", || async {
        records(&t).iter().any(|r| r == "released attempt 1")
    })
    .await;
    second.shutdown().await.unwrap();
    assert_eq!(job(client, released).await.state, JobState::Available);
    gate(&t).add_permits(1);
    let third = worker(client, &["limited"]).lease(lease).spawn();
    wait_for_within(within, "the released job to run again", || {
        completed(released)
    })
    .await;
    third.shutdown().await.unwrap();
}
