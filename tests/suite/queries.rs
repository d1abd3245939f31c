//! Reading jobs: `Client::jobs` with filters and keyset pages, `Client::count` and
//! `Client::queue_stats`.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use errand::{Client, JobFilter, JobId, JobState, Page};

use errand_tests::common::{tag, worker, TestStore};
use errand_tests::jobs::*;

errand_tests::per_store!(
    listings_filter_by_state_queue_kind_key_and_time,
    pages_walk_every_job_once_in_either_order,
    queue_stats_count_each_queue_by_state,
    throughput_counts_finished_jobs_per_minute,
);

/// 10 completed in `first`, 10 available in `second`, 3 scheduled and 2 dead in `default`,
/// then one available `until_executed_job` with key `u-42`. Returns when the setup started.
async fn fill(client: &Client) -> SystemTime {
    let started = SystemTime::now() - Duration::from_secs(1);
    let t = tag("queries");
    for i in 0..10 {
        in_first::enqueue(client, t.clone(), format!("f{i}"))
            .await
            .unwrap();
        in_second::enqueue(client, t.clone(), format!("s{i}"))
            .await
            .unwrap();
    }
    for _ in 0..3 {
        succeed::with(t.clone())
            .delay(Duration::from_secs(3600))
            .enqueue(client)
            .await
            .unwrap();
    }
    for _ in 0..2 {
        broken::enqueue(client, t.clone()).await.unwrap();
    }
    let runs = worker(client, &["first", "default"])
        .run_until_idle()
        .await
        .unwrap();
    assert_eq!(runs, 12);
    until_executed_job::enqueue(client, t, 42, "ok".to_owned())
        .await
        .unwrap();
    started
}

async fn ids(client: &Client, filter: &JobFilter, page: Page) -> Vec<JobId> {
    let jobs = client.jobs(filter, page).await.unwrap();
    jobs.iter().map(|job| job.id).collect()
}

/// Every listing's count agrees with it.
async fn listed(client: &Client, filter: &JobFilter) -> Vec<errand::JobInfo> {
    let jobs = client.jobs(filter, Page::first(1000)).await.unwrap();
    let counted = client.count(filter).await.unwrap();
    assert_eq!(counted, jobs.len() as u64, "count of {filter:?}");
    jobs
}

async fn listings_filter_by_state_queue_kind_key_and_time(store: TestStore) {
    let client = &store.client;
    let started = fill(client).await;

    let all = listed(client, &JobFilter::all()).await;
    assert_eq!(all.len(), 26);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "oldest first");

    let completed = listed(client, &JobFilter::all().state(JobState::Completed)).await;
    assert_eq!(completed.len(), 10);
    assert!(completed.iter().all(|j| j.kind == "in_first"));

    let second = listed(client, &JobFilter::all().queue("second")).await;
    assert_eq!(second.len(), 10);
    assert!(second.iter().all(|j| j.state == JobState::Available));

    let waiting = JobFilter::all().states([JobState::Available, JobState::Scheduled]);
    let waiting = listed(client, &waiting).await;
    assert_eq!(waiting.len(), 14);
    assert!(
        waiting.windows(2).all(|w| w[0].id < w[1].id),
        "merged in id order"
    );

    let in_default = JobFilter::all()
        .queue("default")
        .states([JobState::Dead, JobState::Scheduled]);
    let in_default = listed(client, &in_default).await;
    let states: Vec<JobState> = in_default.iter().map(|j| j.state).collect();
    assert_eq!(
        states,
        [
            JobState::Scheduled,
            JobState::Scheduled,
            JobState::Scheduled,
            JobState::Dead,
            JobState::Dead
        ]
    );

    let dead = JobFilter::all().kind("broken").state(JobState::Dead);
    assert_eq!(listed(client, &dead).await.len(), 2);
    assert!(listed(
        client,
        &JobFilter::all().kind("broken").state(JobState::Completed)
    )
    .await
    .is_empty());

    let keyed = listed(client, &JobFilter::all().key("u-42")).await;
    assert_eq!(keyed.len(), 1);
    assert_eq!(keyed[0].kind, "until_executed_job");
    let keyed = JobFilter::all().kind("until_executed_job").key("u-42");
    assert_eq!(listed(client, &keyed).await.len(), 1);
    assert!(listed(client, &JobFilter::all().key("u-43"))
        .await
        .is_empty());

    let later = SystemTime::now() + Duration::from_secs(3600 * 24);
    assert!(listed(client, &JobFilter::all().created_after(later))
        .await
        .is_empty());
    assert_eq!(
        listed(client, &JobFilter::all().created_before(later))
            .await
            .len(),
        26
    );
    assert!(listed(client, &JobFilter::all().created_before(started))
        .await
        .is_empty());
    let finished = listed(client, &JobFilter::all().finished_after(started)).await;
    assert_eq!(finished.len(), 12, "the completed and the dead");
    assert!(listed(client, &JobFilter::all().finished_before(started))
        .await
        .is_empty());

    // The dead set is the same listing.
    let dead_set = client
        .dead_jobs(&errand::DeadFilter::all(), Page::first(10))
        .await
        .unwrap();
    assert_eq!(dead_set.len(), 2);
}

async fn pages_walk_every_job_once_in_either_order(store: TestStore) {
    let client = &store.client;
    fill(client).await;
    let everything = ids(client, &JobFilter::all(), Page::first(100)).await;

    for (filter, expected) in [
        (JobFilter::all(), everything.clone()),
        (JobFilter::all().queue("second"), Vec::new()),
        (
            JobFilter::all().states([JobState::Completed, JobState::Available]),
            Vec::new(),
        ),
    ] {
        let expected = if expected.is_empty() {
            ids(client, &filter, Page::first(100)).await
        } else {
            expected
        };
        for newest_first in [false, true] {
            let mut page = Page::first(4);
            if newest_first {
                page = page.newest_first();
            }
            let mut walked = Vec::new();
            loop {
                let got = ids(client, &filter, page).await;
                assert!(got.len() <= 4);
                match got.last() {
                    Some(last) => page = page.next(*last),
                    None => break,
                }
                walked.extend(got);
            }
            let mut want = expected.clone();
            if newest_first {
                want.reverse();
            }
            assert_eq!(walked, want, "{filter:?}, newest first: {newest_first}");
            let unique: HashSet<JobId> = walked.iter().copied().collect();
            assert_eq!(unique.len(), walked.len());
        }
    }

    // An id from a log line or a URL pages the same.
    let third: JobId = everything[2].to_string().parse().unwrap();
    assert_eq!(third, JobId::from(everything[2].get()));
    let after = ids(client, &JobFilter::all(), Page::after(third, 2)).await;
    assert_eq!(after, everything[3..5]);
}

async fn queue_stats_count_each_queue_by_state(store: TestStore) {
    let client = &store.client;
    assert!(client.queue_stats().await.unwrap().is_empty());
    fill(client).await;

    let stats = client.queue_stats().await.unwrap();
    let names: Vec<&str> = stats.iter().map(|s| s.queue.as_str()).collect();
    assert_eq!(names, ["default", "first", "second"]);
    let (default, first, second) = (&stats[0], &stats[1], &stats[2]);
    assert_eq!(
        (
            default.counts.scheduled,
            default.counts.dead,
            default.counts.available
        ),
        (3, 2, 1)
    );
    assert_eq!(default.counts.get(JobState::Dead), 2);
    assert_eq!((first.counts.completed, first.counts.available), (10, 0));
    assert_eq!(first.oldest_available, None);
    assert_eq!(second.counts.available, 10);
    let waited = second.oldest_available.expect("second has available jobs");
    assert!(waited < Duration::from_secs(600), "{waited:?}");
}

/// `Client::throughput` counts the jobs that finished in the window, per minute and state; a
/// job that has not finished is not counted.
async fn throughput_counts_finished_jobs_per_minute(store: TestStore) {
    let client = &store.client;
    assert!(client
        .throughput(Duration::from_secs(3600))
        .await
        .unwrap()
        .is_empty());
    fill(client).await;
    let t = tag("throughput");
    let cancelled = succeed::with(t.clone())
        .delay(Duration::from_secs(3600))
        .enqueue(client)
        .await
        .unwrap();
    client.cancel(cancelled.id).await.unwrap();
    let minutes = client.throughput(Duration::from_secs(3600)).await.unwrap();
    let sum = |f: fn(&errand::Throughput) -> u64| minutes.iter().map(f).sum::<u64>();
    assert_eq!(sum(|m| m.completed), 10, "{minutes:?}");
    assert_eq!(sum(|m| m.dead), 2, "{minutes:?}");
    assert_eq!(sum(|m| m.cancelled), 1, "{minutes:?}");
    // Each minute starts on a minute, and they come oldest first.
    for m in &minutes {
        let secs = m.minute.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(secs.as_millis() % 60_000, 0);
        assert!(m.minute <= SystemTime::now());
    }
    assert!(minutes.windows(2).all(|w| w[0].minute < w[1].minute));
}
