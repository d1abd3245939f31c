//! `errand-bench sustained`: jobs through one worker for minutes, as a production queue runs,
//! with retention pruning what finished: does the throughput hold, and do the table and its
//! indexes stay bounded? (PostgreSQL.)
//!
//! The client keeps a backlog of between [`LOW`] and [`LOW`] + [`BATCH`] available no-op jobs
//! (enqueued with `enqueue_many`, [`BATCH`] at a time) until it has enqueued them all, so the
//! worker never runs dry and never faces more than a few seconds' work; the worker (concurrency
//! 16, its own buffer sizing) keeps finished jobs [`KEEP_FINISHED`] and prunes every
//! [`PRUNE_EVERY`]. Every [`SAMPLE`] it prints the jobs done, the rate since the last line, the
//! table's and its indexes' sizes and the live and dead tuples PostgreSQL counts; at the end,
//! the first full minute's rate against the last full minute's before the enqueuing stopped.

use std::time::{Duration, Instant};

use errand_bench::jobs::noop;
use errand_bench::BoxError;

use crate::bench::{StoreKind, Target};

/// The backlog under which the client enqueues another batch.
const LOW: i64 = 20_000;
/// Jobs per `enqueue_many`.
const BATCH: i64 = 10_000;
/// How often the backlog is looked at.
const TOP_UP_EVERY: Duration = Duration::from_millis(100);
/// How often a line is printed.
const SAMPLE: Duration = Duration::from_secs(10);
/// How long the worker keeps completed jobs.
const KEEP_FINISHED: Duration = Duration::from_secs(60);
/// How often the worker prunes.
const PRUNE_EVERY: Duration = Duration::from_secs(10);
/// The window the first and the last rates are taken over.
const MINUTE: Duration = Duration::from_secs(60);

/// What one sample saw.
struct Sample {
    at: Duration,
    done: i64,
}

pub(crate) async fn run(jobs: i64) -> Result<bool, BoxError> {
    let (target, client, raw) = Target::fresh(StoreKind::Postgres).await?;
    let keep = KEEP_FINISHED.as_millis().to_string();
    let prune = PRUNE_EVERY.as_millis().to_string();
    let extra = ["--keep-finished-ms", &keep, "--prune-ms", &prune];
    let (mut worker, _) = target
        .worker_with("bench", 16, Duration::from_millis(100), &extra)
        .await?;
    println!(
        "# errand-bench sustained: {jobs} no-op jobs on PostgreSQL, a backlog kept at {LOW} to {}, \
         completed jobs kept {}s and pruned every {}s\n",
        LOW + BATCH,
        KEEP_FINISHED.as_secs(),
        PRUNE_EVERY.as_secs()
    );
    println!("| s | done | jobs/s | table MB | indexes MB | live rows | dead rows |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    // Not completed: available or running (two partial indexes).
    let outstanding = "SELECT (SELECT count(*) FROM errand_jobs WHERE state = 'available')
                            + (SELECT count(*) FROM errand_jobs WHERE state = 'running')";
    let started = Instant::now();
    let mut enqueued = 0;
    let mut enqueuing_ended: Option<Duration> = None;
    let mut samples = vec![Sample {
        at: Duration::ZERO,
        done: 0,
    }];
    let mut next_sample = started + SAMPLE;
    let (mut max_table, mut max_indexes) = (0.0f64, 0.0f64);
    loop {
        let left = raw.scalar(outstanding, outstanding).await?;
        if enqueued < jobs && left < LOW {
            let batch = BATCH.min(jobs - enqueued);
            client
                .enqueue_many((enqueued..enqueued + batch).map(noop::with))
                .await?;
            enqueued += batch;
            if enqueued == jobs {
                enqueuing_ended = Some(started.elapsed());
            }
            continue;
        }
        let finished = enqueued == jobs && left == 0;
        if Instant::now() >= next_sample || finished {
            next_sample += SAMPLE;
            let at = started.elapsed();
            let done = enqueued - left;
            let last = samples.last().map_or(0, |s| s.done);
            let since = samples.last().map_or(at, |s| at - s.at);
            let (table, indexes, live, dead) = sizes(&raw).await?;
            max_table = max_table.max(table);
            max_indexes = max_indexes.max(indexes);
            println!(
                "| {} | {done} | {:.0} | {table:.1} | {indexes:.1} | {live} | {dead} |",
                at.as_secs(),
                (done - last) as f64 / since.as_secs_f64().max(0.001)
            );
            samples.push(Sample { at, done });
        }
        if finished {
            break;
        }
        tokio::time::sleep(TOP_UP_EVERY).await;
    }
    worker.kill().await?;
    let total = started.elapsed();
    let rate_between = |from: Duration, to: Duration| -> Option<f64> {
        let at = |t: Duration| samples.iter().rev().find(|s| s.at <= t);
        let (a, b) = (at(from)?, at(to)?);
        (b.at > a.at).then(|| (b.done - a.done) as f64 / (b.at - a.at).as_secs_f64())
    };
    let end = enqueuing_ended.unwrap_or(total);
    let first = rate_between(Duration::ZERO, MINUTE);
    let last = rate_between(end.saturating_sub(MINUTE), end);
    println!();
    println!(
        "RESULT workload=sustained jobs={jobs} seconds={:.0} rate={:.0}",
        total.as_secs_f64(),
        jobs as f64 / total.as_secs_f64()
    );
    println!("RESULT max_table_mb={max_table:.1} max_indexes_mb={max_indexes:.1}");
    match (first, last) {
        (Some(first), Some(last)) => {
            println!(
                "RESULT first_minute={first:.0} last_minute={last:.0} ratio={:.2}",
                last / first
            );
            Ok(true)
        }
        _ => {
            eprintln!("the run was shorter than two minutes: no first and last minute to compare");
            Ok(false)
        }
    }
}

/// The jobs table's size and its indexes' in MB, and its live and dead tuples as PostgreSQL's
/// statistics count them.
async fn sizes(raw: &crate::bench::Raw) -> Result<(f64, f64, i64, i64), BoxError> {
    let mb = |bytes: i64| bytes as f64 / 1_048_576.0;
    let table = "SELECT pg_table_size('errand_jobs')";
    let indexes = "SELECT pg_indexes_size('errand_jobs')";
    let live = "SELECT n_live_tup FROM pg_stat_user_tables WHERE relid = 'errand_jobs'::regclass";
    let dead = "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'errand_jobs'::regclass";
    Ok((
        mb(raw.scalar(table, table).await?),
        mb(raw.scalar(indexes, indexes).await?),
        raw.scalar(live, live).await?,
        raw.scalar(dead, dead).await?,
    ))
}
