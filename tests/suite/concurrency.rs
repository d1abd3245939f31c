//! Two workers on one SQLite file (separate clients, separate connection pools) never run the
//! same job twice.

use std::collections::HashMap;

use errand::{Client, JobState};

use errand_tests::common::{job, records, sqlite, tag, worker};
use errand_tests::jobs::*;

const JOBS: u32 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_one_sqlite_file_run_each_job_once() {
    let store = sqlite().await;
    let url = store.url.clone().unwrap();
    let other = Client::connect(&url).await.unwrap();
    let t = tag("race");
    let mut ids = Vec::new();
    for n in 0..JOBS {
        ids.push(
            count_run::enqueue(&store.client, t.clone(), n)
                .await
                .unwrap()
                .id,
        );
    }

    let (a, b) = tokio::join!(
        worker(&store.client, &["race"])
            .concurrency(16)
            .run_until_idle(),
        worker(&other, &["race"]).concurrency(16).run_until_idle(),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a + b, JOBS as usize, "runs: {a} + {b}");
    assert!(
        a > 0 && b > 0,
        "both workers should have taken jobs: {a} + {b}"
    );

    let mut counts: HashMap<String, usize> = HashMap::new();
    for n in records(&t) {
        *counts.entry(n).or_default() += 1;
    }
    assert_eq!(counts.len(), JOBS as usize, "every job ran");
    assert!(counts.values().all(|c| *c == 1), "a job ran twice");
    for id in ids {
        let done = job(&store.client, id).await;
        assert_eq!((done.state, done.attempt), (JobState::Completed, 1));
    }
}
