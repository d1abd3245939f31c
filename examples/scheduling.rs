//! Scheduling and limits, each shown once on an SQLite file, with what happened printed:
//! periodic jobs, a job started on time, a paused queue, a deadline, a concurrency limit, a
//! rate limit, fairness between tenants and priority aging.
//!
//! ```sh
//! cargo run --example scheduling
//! ```
//!
//! It takes about ten seconds, and exits 0 if each feature behaved as it should.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use errand::{job, Client, JobFilter, JobState, Page, Worker};

#[derive(Debug, thiserror::Error, errand::JobError)]
#[error("demo failure")]
#[transient]
struct DemoError;

/// What the jobs did, in order.
static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn log(line: String) {
    LOG.lock().unwrap_or_else(|e| e.into_inner()).push(line);
}

fn logged(prefix: &str) -> Vec<String> {
    let log = LOG.lock().unwrap_or_else(|e| e.into_inner());
    log.iter()
        .filter(|l| l.starts_with(prefix))
        .cloned()
        .collect()
}

fn millis_now() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Declared periodic: every second, by whichever worker of `demo` gets there first.
#[job(queue = "demo", cron = "* * * * * *")]
async fn heartbeat() -> Result<(), DemoError> {
    log(format!("heartbeat at {}", millis_now() % 100_000));
    Ok(())
}

/// Scheduled with arguments on the worker, every two seconds.
#[job(queue = "demo")]
async fn report(name: String) -> Result<(), DemoError> {
    log(format!("report {name}"));
    Ok(())
}

#[job(queue = "demo")]
async fn remind(what: String) -> Result<(), DemoError> {
    log(format!("remind {what} at {}", millis_now()));
    Ok(())
}

#[job(queue = "mail")]
async fn send_mail(to: String) -> Result<(), DemoError> {
    log(format!("mail {to}"));
    Ok(())
}

static RUNNING: AtomicUsize = AtomicUsize::new(0);
static MOST_RUNNING: AtomicUsize = AtomicUsize::new(0);

/// At most two at once, on every node together.
#[job(queue = "demo", concurrency = 2)]
async fn call_partner(n: u32) -> Result<(), DemoError> {
    let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
    MOST_RUNNING.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    RUNNING.fetch_sub(1, Ordering::SeqCst);
    log(format!("partner call {n}"));
    Ok(())
}

/// At most three starts in any second.
#[job(queue = "demo", rate = "3/1s")]
async fn sms(n: u32) -> Result<(), DemoError> {
    log(format!("sms {n} at {}", millis_now()));
    Ok(())
}

/// Claims take tenants in turn.
#[job(queue = "exports", fair_by = "<tenant>")]
async fn export(tenant: String, n: u32) -> Result<(), DemoError> {
    log(format!("export {tenant} {n}"));
    Ok(())
}

#[job(queue = "ordered")]
async fn task(label: String) -> Result<(), DemoError> {
    log(format!("task {label}"));
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_target(false)
        .init();
    let path = std::env::temp_dir().join("errand-scheduling.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let client = Client::connect(&format!("sqlite://{}", path.display())).await?;
    let mut ok = true;

    // A paused queue, a job due in 700 ms, and one that expires before it is due.
    client.pause_queue("mail").await?;
    let mail = send_mail::enqueue(&client, "ada@example.com".into()).await?;
    let due = SystemTime::now() + Duration::from_millis(700);
    let on_time = remind::with("standup".into())
        .run_at(due)
        .enqueue(&client)
        .await?;
    let late = remind::with("flash sale".into())
        .delay(Duration::from_millis(500))
        .expires_at(SystemTime::now() + Duration::from_millis(200))
        .enqueue(&client)
        .await?;
    client.enqueue_many((1..=6).map(call_partner::with)).await?;
    client.enqueue_many((1..=6).map(sms::with)).await?;
    let big = (1..=20).map(|n| export::with("big-corp".into(), n));
    client.enqueue_many(big).await?;
    client
        .enqueue_many((1..=3).map(|n| export::with("small-shop".into(), n)))
        .await?;
    for n in 1..=3 {
        task::with(format!("urgent {n}"))
            .priority(0)
            .enqueue(&client)
            .await?;
    }
    let waited = SystemTime::now() - Duration::from_secs(600);
    let patient = task::with("patient (priority 9, waiting 10 minutes)".into())
        .priority(9)
        .run_at(waited)
        .enqueue(&client)
        .await?;

    let worker = Worker::new(client.clone())
        .queues([("demo", 4), ("mail", 1), ("exports", 1), ("ordered", 1)])
        .concurrency(4)
        .periodic("*/2 * * * * *", report::with("sales".into()))
        .priority_aging(Some(Duration::from_secs(60)))
        .poll_interval(Duration::from_secs(1))
        .spawn();
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(3500) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    println!("== a paused queue");
    let waiting = client.job(mail.id).await?.map(|j| j.state);
    println!("mail job while `mail` is paused: {waiting:?}");
    ok &= waiting == Some(JobState::Available);
    client.resume_queue("mail").await?;

    println!("\n== a job scheduled for a time");
    if let Some(job) = client.job(on_time.id).await? {
        let due = job.run_at.duration_since(UNIX_EPOCH)?.as_millis();
        let started = job
            .attempted_at
            .map(|t| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis()));
        let lateness = started.map(|s| s.saturating_sub(due));
        println!("due at its time, started {lateness:?} ms after it (polling every second)");
        ok &= lateness.is_some_and(|ms| ms < 1000);
    }

    println!("\n== a deadline");
    if let Some(job) = client.job(late.id).await? {
        let why = job.errors.last().map(|e| e.kind.as_str());
        println!("a reminder due after its deadline: {} ({why:?})", job.state);
        ok &= job.state == JobState::Cancelled && why == Some("expired");
    }

    println!("\n== periodic jobs");
    let beats = logged("heartbeat");
    println!(
        "heartbeat (`cron = \"* * * * * *\"`) ran {} times: {beats:?}",
        beats.len()
    );
    println!("report (`*/2 * * * * *`): {:?}", logged("report"));
    for schedule in client.schedules().await? {
        println!(
            "  schedule {:<10} `{}` {} last run {:?}",
            schedule.name, schedule.cron, schedule.timezone, schedule.last_run
        );
    }
    ok &= beats.len() >= 2;

    println!("\n== a concurrency limit");
    let most = MOST_RUNNING.load(Ordering::SeqCst);
    println!("call_partner (`concurrency = 2`): at most {most} at once, of 4 slots");
    ok &= most == 2;

    println!("\n== a rate limit");
    let sms = logged("sms");
    println!("sms (`rate = \"3/1s\"`): {sms:?}");
    ok &= sms.len() >= 3;

    println!("\n== fairness");
    let exports: Vec<String> = logged("export")
        .iter()
        .take(8)
        .map(|l| l.trim_start_matches("export ").to_owned())
        .collect();
    println!("the first exports (big-corp enqueued its 20 first): {exports:?}");
    ok &= exports
        .iter()
        .filter(|e| e.starts_with("small-shop"))
        .count()
        == 3;

    println!("\n== priority aging");
    let aged = client.job(patient.id).await?.map(|j| j.priority);
    println!("started: {:?}", logged("task"));
    println!("the patient job's priority after ten minutes of waiting: {aged:?}");
    ok &= aged == Some(0);

    worker.shutdown().await?;
    let dead = client
        .jobs(&JobFilter::all().state(JobState::Dead), Page::first(10))
        .await?;
    ok &= dead.is_empty();
    if !ok {
        return Err("a feature did not behave as it should".into());
    }
    Ok(())
}
