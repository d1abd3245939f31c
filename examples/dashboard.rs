//! errand's web dashboard over a store with jobs in every state.
//!
//! ```sh
//! cargo run -p errand-web --example dashboard          # an SQLite file in the temp folder
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo run -p errand-web --example dashboard
//! ```
//!
//! It enqueues jobs that complete, retry, die, wait for a later time, wait on another job and
//! get cancelled; pauses a queue; schedules a periodic job; runs a worker; and serves the
//! dashboard on http://127.0.0.1:8080 with a token it prints (`ERRAND_WEB_TOKEN` sets it).
//! Ctrl-C stops it.

use std::time::Duration;

use errand::{job, Client, Config, JobError, Worker};

#[derive(Debug, thiserror::Error, JobError)]
enum DemoError {
    #[error("the mail server is busy")]
    #[transient]
    Busy,
    #[error("card declined: {0}")]
    #[permanent]
    Declined(String),
}

fn slowly(_attempt: u32) -> Duration {
    Duration::from_secs(600)
}

#[job(queue = "mail")]
async fn send_email(to: String) -> Result<(), DemoError> {
    let _ = to;
    Ok(())
}

#[job(queue = "payments", key = "charge-<order_id>")]
async fn charge(order_id: i64, cents: i64) -> Result<(), DemoError> {
    if order_id % 7 == 0 {
        return Err(DemoError::Declined(format!(
            "order {order_id}: {cents} cents over the limit"
        )));
    }
    Ok(())
}

#[job(queue = "mail", retry = 5, backoff = slowly)]
async fn newsletter(issue: u32) -> Result<(), DemoError> {
    let _ = issue;
    Err(DemoError::Busy)
}

#[job(queue = "reports")]
async fn nightly_report(day: String) -> Result<(), DemoError> {
    let _ = day;
    Ok(())
}

#[job(queue = "maintenance", cron = "*/10 * * * * *")]
async fn heartbeat() -> Result<(), DemoError> {
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::ERROR)
        .with_target(false)
        .init();
    let url = match std::env::var("DATABASE_URL") {
        Ok(url) => url,
        Err(_) => {
            let path = std::env::temp_dir().join("errand-dashboard.db");
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
            format!("sqlite://{}", path.display())
        }
    };
    let config = Config::default().schema("errand_dashboard_demo");
    let client = Client::connect_with(&url, config).await?;

    for n in 1..=40 {
        send_email::enqueue(&client, format!("user{n}@example.com")).await?;
        charge::enqueue(&client, n, 1999).await?;
    }
    newsletter::enqueue(&client, 12).await?;
    let later = Duration::from_secs(3600);
    nightly_report::with("2026-11-27".into())
        .delay(later)
        .enqueue(&client)
        .await?;
    let first = charge::enqueue(&client, 100, 500).await?;
    send_email::with("after-the-charge@example.com".into())
        .after([first.id])
        .queue("receipts")
        .enqueue(&client)
        .await?;
    let cancelled = send_email::with("changed-their-mind@example.com".into())
        .delay(later)
        .enqueue(&client)
        .await?;
    client.cancel(cancelled.id).await?;
    client.pause_queue("reports").await?;

    let worker = Worker::new(client.clone())
        .queues([
            ("mail", 2),
            ("payments", 2),
            ("maintenance", 1),
            ("receipts", 1),
        ])
        .concurrency(4)
        .spawn();

    // A demo's token; a real one comes from the environment or a file, and is random.
    let token =
        std::env::var("ERRAND_WEB_TOKEN").unwrap_or_else(|_| "errand-demo-token-change-me".into());
    let app = errand_web::router(client.clone(), errand_web::Auth::token(token.clone()))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    println!("dashboard: http://127.0.0.1:8080/?token={token}   (Ctrl-C stops)");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    worker.shutdown().await?;
    Ok(())
}
