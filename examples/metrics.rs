//! errand's metrics in Prometheus's text format, served over HTTP by
//! `metrics-exporter-prometheus`.
//!
//! ```sh
//! cargo run --example metrics            # runs some jobs, prints errand's metrics, exits
//! cargo run --example metrics -- --serve # and keeps serving http://127.0.0.1:9464/metrics
//! ```
//!
//! It installs the exporter, runs a worker over an SQLite file with jobs that complete, retry,
//! snooze and die, samples the queues' gauges, then fetches its own `/metrics` page and prints
//! errand's lines. It exits non-zero if a metric it expects is missing.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use errand::{job, Client, JobError, Outcome, Worker};
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, thiserror::Error, JobError)]
enum MailError {
    #[error("mail server busy")]
    #[transient]
    Busy,
    #[error("no such mailbox")]
    #[permanent]
    NoMailbox,
}

fn quick(_attempt: u32) -> Duration {
    Duration::from_millis(20)
}

#[job(queue = "mail", retry = 2, backoff = quick)]
async fn send_email(to: String) -> Result<Outcome, MailError> {
    match to.as_str() {
        "busy@example.com" => Err(MailError::Busy),
        "nobody@example.com" => Err(MailError::NoMailbox),
        _ => Ok(Outcome::Done),
    }
}

const ADDRESS: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9464));

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    PrometheusBuilder::new()
        .with_http_listener(ADDRESS)
        .install()?;
    errand::metrics::describe_metrics();

    let path = std::env::temp_dir().join("errand-metrics.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let client = Client::connect(&format!("sqlite://{}", path.display())).await?;
    for to in [
        "ada@example.com",
        "grace@example.com",
        "busy@example.com",
        "nobody@example.com",
    ] {
        send_email::enqueue(&client, to.to_owned()).await?;
    }
    // A job no worker here takes: the `reports` queue's gauges show it waiting.
    send_email::with("later@example.com".into())
        .queue("reports")
        .enqueue(&client)
        .await?;

    let worker = Worker::new(client.clone())
        .queues([("mail", 1)])
        .poll_interval(Duration::from_millis(20))
        .queue_metrics(Some(Duration::from_millis(200)))
        .spawn();
    let mut page = String::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        page = scrape().await?;
        // Both undeliverable emails dead (one permanent, one out of retries), and sampled.
        if page.contains("errand_queue_jobs{queue=\"mail\",state=\"dead\"} 2") {
            break;
        }
    }
    for line in page.lines().filter(|l| l.starts_with("errand_")) {
        println!("{line}");
    }
    let expected = [
        "errand_jobs_enqueued_total",
        "errand_jobs_completed_total",
        "errand_jobs_retried_total",
        "errand_jobs_dead_total",
        "errand_job_duration_seconds",
        "errand_job_wait_seconds",
        "errand_queue_jobs",
        "errand_queue_oldest_available_seconds",
    ];
    let missing: Vec<&str> = expected
        .into_iter()
        .filter(|name| !page.contains(name))
        .collect();
    if std::env::args().any(|a| a == "--serve") {
        println!("\nserving http://{ADDRESS}/metrics; Ctrl-C stops");
        tokio::signal::ctrl_c().await?;
    }
    worker.shutdown().await?;
    if !missing.is_empty() {
        return Err(format!("metrics missing: {missing:?}").into());
    }
    Ok(())
}

/// The exporter's page, fetched as Prometheus would.
async fn scrape() -> Result<String, Box<dyn std::error::Error>> {
    let mut stream = tokio::net::TcpStream::connect(ADDRESS).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}
