//! errand in one file, with no setup: an SQLite file, a handful of jobs, one worker.
//!
//! ```sh
//! cargo run --example quickstart
//! ```
//!
//! One job fails transiently twice and then succeeds, one fails permanently, one carries an
//! idempotency key. The worker runs until every job has finished; the program prints each job's
//! final state, attempts and key, and exits 0 if each ended as expected.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use errand::{job, Client, Context, JobError, JobId, JobState, Worker};

#[derive(Debug, thiserror::Error, JobError)]
enum MailError {
    #[error("mail server busy, try again")]
    #[transient]
    Busy,
    #[error("no such mailbox: {0}")]
    #[permanent]
    NoMailbox(String),
}

/// Retry after 200 ms, 400 ms, ...: short, so the demo takes a second or two.
fn quick_backoff(attempt: u32) -> Duration {
    Duration::from_millis(200 * u64::from(attempt))
}

static NEWSLETTER_CALLS: AtomicU32 = AtomicU32::new(0);

/// Fails twice with a transient error, then succeeds on its third attempt.
#[job(queue = "mail", retry = 5, backoff = quick_backoff)]
async fn send_newsletter(issue: u32) -> Result<(), MailError> {
    if NEWSLETTER_CALLS.fetch_add(1, Ordering::SeqCst) < 2 {
        return Err(MailError::Busy);
    }
    println!("  newsletter #{issue} sent");
    Ok(())
}

/// Fails permanently: no retry can create a mailbox.
#[job(queue = "mail", backoff = quick_backoff)]
async fn send_to(address: String) -> Result<(), MailError> {
    Err(MailError::NoMailbox(address))
}

/// Carries an idempotency key: the same on every attempt, to hand to a payment API.
#[job(queue = "critical", retry = 5, key = "charge-<order_id>", backoff = quick_backoff)]
async fn charge_order(ctx: &Context, order_id: i64, amount_cents: i64) -> Result<(), MailError> {
    println!(
        "  charging order {order_id}: {amount_cents} cents, idempotency key {}",
        ctx.idempotency_key()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_target(false)
        .init();

    let path = std::env::temp_dir().join("errand-quickstart.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let client = Client::connect(&format!("sqlite://{}", path.display())).await?;
    println!("store: {}", path.display());

    let jobs: Vec<(&str, JobState, JobId)> = vec![
        (
            "send_newsletter(7)",
            JobState::Completed,
            send_newsletter::enqueue(&client, 7).await?.id,
        ),
        (
            "send_to(\"nobody@example.com\")",
            JobState::Dead,
            send_to::with("nobody@example.com".into())
                .enqueue(&client)
                .await?
                .id,
        ),
        (
            "charge_order(42, 2500)",
            JobState::Completed,
            charge_order::enqueue(&client, 42, 2500).await?.id,
        ),
    ];

    let worker = Worker::new(client.clone())
        .queues([("critical", 10), ("mail", 5)])
        .concurrency(4)
        .poll_interval(Duration::from_millis(50));
    let ids: Vec<JobId> = jobs.iter().map(|(_, _, id)| *id).collect();
    worker.run_until(all_finished(&client, &ids)).await?;

    println!("\n{:<32} {:<10} {:>8}  key", "job", "state", "attempts");
    let mut as_expected = true;
    for (label, expected, id) in &jobs {
        let Some(job) = client.job(*id).await? else {
            return Err(format!("job {id} disappeared").into());
        };
        println!(
            "{label:<32} {:<10} {:>8}  {}",
            job.state.as_str(),
            format!("{}/{}", job.attempt, job.max_attempts),
            job.key.as_deref().unwrap_or("-")
        );
        for error in &job.errors {
            println!(
                "    attempt {}: {} ({})",
                error.attempt, error.message, error.kind
            );
        }
        as_expected &= job.state == *expected;
    }
    if !as_expected {
        return Err("a job did not end in the state it should have".into());
    }
    Ok(())
}

/// Resolves once every job has reached a final state, or after 60 s.
async fn all_finished(client: &Client, ids: &[JobId]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let mut done = true;
        for id in ids {
            done &= matches!(client.job(*id).await, Ok(Some(job)) if job.state.is_final());
        }
        if done {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("gave up waiting for the jobs to finish");
}
