//! Scheduling and control: paused queues, jobs started on time, and deadlines.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use errand::{FailureKind, JobId, JobState};
use errand_tests::common::{job, records, tag, wait_for, worker, TestStore};
use std::str::FromStr as _;

use errand_tests::jobs::{berlin_night, expiring, in_first, in_second, records_start, succeed};
use errand_tests::{per_sql_store, per_store};

per_store!(
    a_paused_queue_runs_nothing_until_resumed,
    deadlines_discard_late_jobs
);
per_sql_store!(a_pause_reaches_workers_through_the_database);

/// Pausing is stored, shows in the queue statistics, and stops claims from the queue while
/// the others go on; resuming lets its jobs run.
async fn a_paused_queue_runs_nothing_until_resumed(store: TestStore) {
    let client = &store.client;
    let t = tag("paused");
    assert!(client.pause_queue("first").await.unwrap(), "it was running");
    assert!(
        !client.pause_queue("first").await.unwrap(),
        "already paused"
    );
    let handle = worker(client, &["first", "second"]).spawn();
    let held = held_while_the_other_queue_runs(client, &t).await;
    let stats = client.queue_stats().await.unwrap();
    let first = stats.iter().find(|q| q.queue == "first").unwrap();
    assert!(first.paused);
    assert_eq!(first.counts.available, 1);
    assert!(!stats.iter().find(|q| q.queue == "second").unwrap().paused);

    assert!(client.resume_queue("first").await.unwrap());
    assert!(
        !client.resume_queue("first").await.unwrap(),
        "already running"
    );
    wait_for("the resumed queue's job", || async {
        job(client, held).await.state == JobState::Completed
    })
    .await;
    handle.shutdown().await.unwrap();
    assert!(client
        .queue_stats()
        .await
        .unwrap()
        .iter()
        .all(|q| !q.paused));
    assert!(matches!(
        client.pause_queue("Not A Queue").await,
        Err(errand::Error::InvalidQueue { .. })
    ));
}

/// Enqueues a job in the paused queue `first`, then one in `second`, for a running worker of
/// both; returns the first once the second has completed while the first still waits. The
/// worker claims from both queues in every exchange, so by then it passed over `first`.
async fn held_while_the_other_queue_runs(client: &errand::Client, t: &str) -> JobId {
    let held = in_first::with(t.to_owned(), "held".into())
        .enqueue(client)
        .await
        .unwrap();
    let passed = in_second::with(t.to_owned(), "passed".into())
        .enqueue(client)
        .await
        .unwrap();
    wait_for("the running queue's job", || async {
        job(client, passed.id).await.state == JobState::Completed
    })
    .await;
    assert_eq!(job(client, held.id).await.state, JobState::Available);
    assert_eq!(records(t), ["passed"]);
    held.id
}

/// A pause written by another client (another node) holds at once, and a resume from it is
/// seen within the worker's poll interval of a second, with no notification in this process.
async fn a_pause_reaches_workers_through_the_database(store: TestStore) {
    let client = &store.client;
    let url = store.url.clone().unwrap();
    let config = match &store.schema {
        Some(schema) => errand::Config::default().schema(schema),
        None => errand::Config::default(),
    };
    let other = errand::Client::connect_with(&url, config).await.unwrap();
    let t = tag("remote-pause");
    let handle = errand::Worker::new(client.clone())
        .queues([("first", 1), ("second", 1)])
        .poll_interval(Duration::from_secs(1))
        .spawn();
    other.pause_queue("first").await.unwrap();
    let held = held_while_the_other_queue_runs(client, &t).await;
    other.resume_queue("first").await.unwrap();
    let resumed = std::time::Instant::now();
    wait_for("the resumed queue's job", || async {
        job(client, held).await.state == JobState::Completed
    })
    .await;
    println!("resumed after {:?}", resumed.elapsed());
    handle.shutdown().await.unwrap();
}

/// A job not started by its deadline is cancelled as expired and never runs; a job within its
/// deadline runs. `#[job(expires_in)]` counts from the run time.
async fn deadlines_discard_late_jobs(store: TestStore) {
    let client = &store.client;
    let t = tag("deadline");
    let now = SystemTime::now();
    let expired = succeed::with(t.clone())
        .expires_at(now - Duration::from_secs(1))
        .enqueue(client)
        .await
        .unwrap();
    // Due after its deadline: it can never start in time.
    let too_late = succeed::with(t.clone())
        .run_at(now + Duration::from_millis(300))
        .expires_at(now + Duration::from_millis(100))
        .enqueue(client)
        .await
        .unwrap();
    let in_time = expiring::with(t.clone()).enqueue(client).await.unwrap();
    let info = job(client, in_time.id).await;
    assert_eq!(
        info.expires_at,
        Some(info.run_at + Duration::from_secs(3600)),
        "expires_in counts from the run time"
    );
    let ids: Vec<JobId> = vec![expired.id, too_late.id, in_time.id];
    let handle = worker(client, &["default"]).spawn();
    wait_for("every job to end", || async {
        for id in &ids {
            if !job(client, *id).await.state.is_final() {
                return false;
            }
        }
        true
    })
    .await;
    handle.shutdown().await.unwrap();
    assert_eq!(records(&t), ["ran"], "only the job within its deadline ran");
    assert_eq!(job(client, in_time.id).await.state, JobState::Completed);
    for id in [expired.id, too_late.id] {
        let info = job(client, id).await;
        assert_eq!(info.state, JobState::Cancelled);
        assert_eq!(info.attempt, 0, "an expired job spends no attempt");
        assert_eq!(info.errors.len(), 1);
        assert_eq!(info.errors[0].kind, FailureKind::Expired);
    }
}

per_sql_store!(scheduled_jobs_start_on_time);

/// A job scheduled for T starts within 100 ms after T on an idle worker, though the worker
/// polls only every 5 s: the last promotion set a timer for the earliest due job, and a job
/// scheduled meanwhile wakes the worker to look again. On PostgreSQL the jobs are enqueued by
/// another client, so the wake-up comes through `NOTIFY`.
async fn scheduled_jobs_start_on_time(store: TestStore) {
    let client = &store.client;
    let enqueuer = match (&store.url, &store.schema) {
        (Some(url), Some(schema)) => {
            errand::Client::connect_with(url, errand::Config::default().schema(schema))
                .await
                .unwrap()
        }
        _ => client.clone(),
    };
    let t = tag("on-time");
    let handle = errand::Worker::new(client.clone())
        .queues([("timely", 1)])
        .poll_interval(Duration::from_secs(5))
        .spawn();
    let mut ids = Vec::new();
    for i in 1..=8u64 {
        let at = SystemTime::now() + Duration::from_millis(150 * i + 200);
        let enqueued = records_start::with(t.clone())
            .run_at(at)
            .enqueue(&enqueuer)
            .await
            .unwrap();
        ids.push(enqueued.id);
    }
    wait_for("the scheduled jobs", || async {
        records(&t).len() == ids.len()
    })
    .await;
    handle.shutdown().await.unwrap();
    let mut lateness = Vec::new();
    for id in &ids {
        let info = job(client, *id).await;
        let due = info.run_at.duration_since(UNIX_EPOCH).unwrap().as_millis();
        let started = info
            .attempted_at
            .unwrap()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis();
        assert!(
            started >= due,
            "job {id} started {} ms early",
            due - started
        );
        lateness.push(started - due);
    }
    lateness.sort_unstable();
    println!("started after their time (ms): {lateness:?}");
    // On a busy 2-core machine one start can be held up; the median and all but the worst
    // must be on time, and even the worst far sooner than a poll.
    assert!(
        lateness[lateness.len() / 2] <= 100,
        "median lateness {lateness:?}"
    );
    assert!(lateness[lateness.len() - 2] <= 100, "lateness {lateness:?}");
    assert!(
        lateness[lateness.len() - 1] <= 1000,
        "lateness {lateness:?}"
    );
}

per_sql_store!(
    catch_up_after_a_stop,
    cron_slots_are_enqueued_once_by_three_processes
);

/// The jobs a schedule tagged `tag` enqueued, oldest first.
async fn slot_jobs(client: &errand::Client, tag: &str) -> Vec<errand::JobInfo> {
    let filter = errand::JobFilter::all().tag(tag);
    client
        .jobs(&filter, errand::Page::first(100))
        .await
        .unwrap()
}

/// Moves schedule `name`'s record of what is done back by `by`, as if the last worker that ran
/// it stopped that long ago.
async fn stop_schedule_for(store: &TestStore, name: &str, by: Duration) {
    let by = i64::try_from(by.as_millis()).unwrap();
    let sql = "UPDATE errand_schedules SET done_until = done_until - $1 WHERE name = $2";
    let changed = match &store.schema {
        Some(_) => {
            let pool = store.postgres_pool().await;
            let done = sqlx::query(sql).bind(by).bind(name).execute(&pool).await;
            done.map(|d| d.rows_affected())
        }
        None => {
            let pool = sqlx::SqlitePool::connect(store.url.as_deref().unwrap())
                .await
                .unwrap();
            let done = sqlx::query(sql).bind(by).bind(name).execute(&pool).await;
            done.map(|d| d.rows_affected())
        }
    };
    assert_eq!(changed.unwrap(), 1);
}

/// After five hours without a worker, an hourly schedule enqueues nothing (`None`: its latest
/// slot is half an hour late), its latest slot (`Latest`), or its latest three (`All { max: 3
/// }`), each once however often a worker looks again; `Client::schedules` lists them.
async fn catch_up_after_a_stop(store: TestStore) {
    let client = &store.client;
    // An hourly slot half an hour from now's minute: the latest is about 30 minutes old.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let minute = (now / 60 % 60 + 30) % 60;
    let cron = format!("{minute} * * * *");
    let policies = [
        ("none", errand::CatchUp::None, 0),
        ("latest", errand::CatchUp::Latest, 1),
        ("all", errand::CatchUp::All { max: 3 }, 3),
    ];
    let t = tag("catch-up");
    let worker = || {
        let mut worker = errand::Worker::new(client.clone());
        for (name, catch_up, _) in policies {
            let tick = succeed::with(t.clone())
                .queue("ticks")
                .tags([format!("{t}-{name}")]);
            let periodic = errand::Periodic::new(&cron, tick)
                .name(name)
                .catch_up(catch_up);
            worker = worker.schedule(periodic);
        }
        worker
    };
    worker().run_until_idle().await.unwrap();
    for (name, _, _) in policies {
        assert!(
            slot_jobs(client, &format!("{t}-{name}")).await.is_empty(),
            "{name}: a new schedule starts from now"
        );
        stop_schedule_for(&store, name, Duration::from_secs(5 * 3600)).await;
    }
    for _ in 0..2 {
        worker().run_until_idle().await.unwrap();
    }
    let schedules = client.schedules().await.unwrap();
    for (name, _, expected) in policies {
        let jobs = slot_jobs(client, &format!("{t}-{name}")).await;
        assert_eq!(jobs.len(), expected, "{name}: {jobs:?}");
        let mut runs: Vec<SystemTime> = jobs.iter().map(|j| j.run_at).collect();
        runs.sort();
        for pair in runs.windows(2) {
            assert_eq!(
                pair[1].duration_since(pair[0]).unwrap(),
                Duration::from_secs(3600),
                "{name}: hourly slots"
            );
        }
        for job in &jobs {
            assert_eq!(job.meta["schedule"], name);
            assert_eq!(job.queue, "ticks");
        }
        let info = schedules.iter().find(|s| s.name == name).unwrap();
        assert_eq!(info.cron, cron);
        assert_eq!(info.timezone, "UTC");
        assert_eq!(info.kind, "succeed");
        assert_eq!(info.last_run, runs.last().copied(), "{name}");
        let latest = SystemTime::now() - Duration::from_secs(60 * 29);
        let next = info.next_run.unwrap();
        assert!(
            next > latest + Duration::from_secs(3600) - Duration::from_secs(120)
                && next < SystemTime::now() + Duration::from_secs(3600),
            "{name}: next run {next:?}"
        );
        if let Some(last) = info.last_run {
            assert_eq!(
                next.duration_since(last).unwrap(),
                Duration::from_secs(3600)
            );
        }
    }
}

/// Three worker processes run one schedule due every second: each slot is enqueued once, and
/// none is missed.
async fn cron_slots_are_enqueued_once_by_three_processes(store: TestStore) {
    use errand_tests::processes::{Options, WorkerProcess};
    const WORKER: &str = env!("CARGO_BIN_EXE_errand-test-worker");
    let url = store.url.clone().unwrap();
    let schema = store.schema.clone().unwrap_or_default();
    let options = Options {
        periodic: Some("* * * * * *".to_owned()),
        ..Options::default()
    };
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(WorkerProcess::start_with(WORKER, &url, &schema, &options).await);
    }
    let client = &store.client;
    let ticks = errand::JobFilter::all().queue("ticks");
    wait_for("five slots", || async {
        client.count(&ticks).await.unwrap() >= 5
    })
    .await;
    for worker in workers {
        worker.terminate().await;
    }
    let jobs = client
        .jobs(&ticks, errand::Page::first(1000))
        .await
        .unwrap();
    let mut slots: Vec<u128> = jobs
        .iter()
        .map(|j| j.run_at.duration_since(UNIX_EPOCH).unwrap().as_millis())
        .collect();
    slots.sort_unstable();
    let mut distinct = slots.clone();
    distinct.dedup();
    assert_eq!(distinct, slots, "a slot was enqueued twice");
    for pair in slots.windows(2) {
        assert_eq!(pair[1] - pair[0], 1000, "a slot was missed: {slots:?}");
    }
    let info = client.schedules().await.unwrap();
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].name, "ticks");
    assert_eq!(
        info[0]
            .last_run
            .map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_millis()),
        slots.last().copied()
    );
}

/// Moves the test client's clock to `time` (a zoned time such as
/// `2027-03-27T00:00:00+01:00[Europe/Berlin]`), which must be ahead of it.
fn advance_to(test: &errand::testing::TestClient, time: &str) {
    let to = jiff::Timestamp::from_str(time.split('[').next().unwrap()).unwrap();
    let to = UNIX_EPOCH + Duration::from_millis(u64::try_from(to.as_millisecond()).unwrap());
    test.advance(to.duration_since(test.now()).unwrap());
}

/// The run times of the `berlin_night` jobs, as RFC 3339 with their offset in Berlin.
async fn berlin_nights(test: &errand::testing::TestClient) -> Vec<String> {
    let tz = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
    let mut runs: Vec<String> = test
        .jobs_of::<berlin_night>()
        .await
        .iter()
        .map(|job| {
            let ms = job.run_at.duration_since(UNIX_EPOCH).unwrap().as_millis();
            let at = jiff::Timestamp::from_millisecond(i64::try_from(ms).unwrap()).unwrap();
            at.to_zoned(tz.clone())
                .strftime("%Y-%m-%dT%H:%M%:z")
                .to_string()
        })
        .collect();
    runs.sort();
    runs
}

/// `#[job(cron = "30 2 * * *", timezone = "Europe/Berlin")]` across both daylight saving time
/// changes, on a test clock: the night the clocks skip 02:30 it runs once at 03:00, the night
/// they pass 02:30 twice it runs once, at the first.
#[tokio::test]
async fn a_schedule_in_a_time_zone_keeps_its_nights_across_daylight_saving_time() {
    let worker = |test: &errand::testing::TestClient| {
        errand::Worker::new(test.client().clone()).queues([("berlin", 1)])
    };
    let spring = errand::testing::TestClient::new();
    advance_to(&spring, "2027-03-27T00:00:00+01:00[Europe/Berlin]");
    worker(&spring).run_until_idle().await.unwrap();
    advance_to(&spring, "2027-03-30T00:00:00+02:00[Europe/Berlin]");
    worker(&spring).run_until_idle().await.unwrap();
    assert_eq!(
        berlin_nights(&spring).await,
        [
            "2027-03-27T02:30+01:00",
            "2027-03-28T03:00+02:00",
            "2027-03-29T02:30+02:00"
        ]
    );
    assert!(spring
        .jobs_of::<berlin_night>()
        .await
        .iter()
        .all(|job| job.state == JobState::Completed));

    let autumn = errand::testing::TestClient::new();
    advance_to(&autumn, "2027-10-30T12:00:00+02:00[Europe/Berlin]");
    worker(&autumn).run_until_idle().await.unwrap();
    advance_to(&autumn, "2027-11-01T12:00:00+01:00[Europe/Berlin]");
    worker(&autumn).run_until_idle().await.unwrap();
    assert_eq!(
        berlin_nights(&autumn).await,
        ["2027-10-31T02:30+02:00", "2027-11-01T02:30+01:00"]
    );
    let schedules = autumn.client().schedules().await.unwrap();
    assert_eq!(schedules.len(), 1);
    assert_eq!(schedules[0].name, "berlin_night");
    assert_eq!(schedules[0].timezone, "Europe/Berlin");
    assert_eq!(schedules[0].catch_up, errand::CatchUp::ALL);
}

per_store!(a_long_wait_ages_a_low_priority_ahead);

/// A job of priority 9 that has waited ten minutes is taken before newer jobs of priority 0
/// with aging of a level a minute, and after them without aging (the default).
async fn a_long_wait_ages_a_low_priority_ahead(store: TestStore) {
    let client = &store.client;
    for aging in [None, Some(Duration::from_secs(60))] {
        let t = tag("aging");
        let waited = SystemTime::now() - Duration::from_secs(600);
        for n in 0..3 {
            in_first::with(t.clone(), format!("urgent {n}"))
                .priority(0)
                .enqueue(client)
                .await
                .unwrap();
        }
        let old = in_first::with(t.clone(), "patient".into())
            .priority(9)
            .run_at(waited)
            .enqueue(client)
            .await
            .unwrap();
        errand::Worker::new(client.clone())
            .queues([("first", 1)])
            .concurrency(1)
            .prefetch(0)
            .priority_aging(aging)
            .run_until_idle()
            .await
            .unwrap();
        let order = records(&t);
        let info = job(client, old.id).await;
        match aging {
            None => {
                assert_eq!(order.last().unwrap(), "patient", "{order:?}");
                assert_eq!(info.priority, 9);
            }
            Some(_) => {
                assert_eq!(order.first().unwrap(), "patient", "{order:?}");
                assert_eq!(
                    info.priority, 0,
                    "nine levels in ten minutes, and no further"
                );
            }
        }
    }
}
