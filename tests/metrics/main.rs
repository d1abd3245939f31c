//! errand's metrics, read back from a real exporter (Prometheus text) after real runs on each
//! store: counters by kind and queue, histograms of run time and wait, and the queues' gauges
//! sampled by a worker.
//!
//! Its own test binary: a metrics recorder is global to the process.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use errand::Worker;
use errand_tests::common::{postgres, sqlite, tag, wait_for, TestStore};
use errand_tests::jobs::{always_fails, cancels, snoozes, succeed};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

fn exporter() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .install_recorder()
            .expect("install the recorder");
        errand::metrics::describe_metrics();
        handle
    })
}

/// The value of the sample `name` whose labels include each of `labels`, summed over the
/// samples that match; 0 when none does.
fn value(name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = exporter().render();
    let mut sum = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, number)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, rendered) = match series.split_once('{') {
            Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let found: BTreeMap<&str, &str> = rendered
            .split(',')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        if labels.iter().all(|(k, v)| found.get(k) == Some(v)) {
            sum += number.parse::<f64>().unwrap_or(f64::NAN);
        }
    }
    sum
}

async fn check_counts_and_gauges(store: TestStore, name: &str) {
    exporter();
    let client = &store.client;
    let (queue, idle) = (format!("metrics-{name}"), format!("metrics-{name}-idle"));
    let t = tag("metrics");
    for _ in 0..2 {
        succeed::with(t.clone())
            .queue(&queue)
            .enqueue(client)
            .await
            .unwrap();
    }
    always_fails::with(tag("metrics-fails"))
        .queue(&queue)
        .enqueue(client)
        .await
        .unwrap();
    snoozes::with(tag("metrics-snoozes"), 1)
        .queue(&queue)
        .enqueue(client)
        .await
        .unwrap();
    cancels::with(t.clone())
        .queue(&queue)
        .enqueue(client)
        .await
        .unwrap();
    succeed::with(t.clone())
        .queue(&idle)
        .delay(Duration::ZERO)
        .enqueue(client)
        .await
        .unwrap();

    let handle = Worker::new(client.clone())
        .queues([(queue.clone(), 1)])
        .poll_interval(Duration::from_millis(10))
        .queue_metrics(Some(Duration::from_millis(50)))
        .spawn();
    let q = queue.as_str();
    wait_for(
        "every run to end and the sample to show the dead job",
        || async {
            value("errand_queue_jobs", &[("queue", q), ("state", "dead")]) == 1.0
                && value("errand_queue_jobs", &[("queue", q), ("state", "scheduled")]) == 0.0
                && value("errand_queue_jobs", &[("queue", q), ("state", "retryable")]) == 0.0
                && value("errand_queue_jobs", &[("queue", q), ("state", "available")]) == 0.0
        },
    )
    .await;
    handle.shutdown().await.unwrap();

    let of = |kind: &'static str| [("kind", kind), ("queue", q)];
    assert_eq!(value("errand_jobs_enqueued_total", &[("queue", q)]), 5.0);
    assert_eq!(value("errand_jobs_enqueued_total", &of("succeed")), 2.0);
    assert_eq!(value("errand_jobs_started_total", &of("succeed")), 2.0);
    assert_eq!(value("errand_jobs_completed_total", &of("succeed")), 2.0);
    // Three attempts: two retried, then dead.
    assert_eq!(value("errand_jobs_started_total", &of("always_fails")), 3.0);
    assert_eq!(value("errand_jobs_retried_total", &of("always_fails")), 2.0);
    assert_eq!(value("errand_jobs_dead_total", &of("always_fails")), 1.0);
    assert_eq!(value("errand_jobs_snoozed_total", &of("snoozes")), 1.0);
    assert_eq!(value("errand_jobs_completed_total", &of("snoozes")), 1.0);
    assert_eq!(value("errand_jobs_cancelled_total", &of("cancels")), 1.0);
    // One observation per run, of run time and of wait.
    assert_eq!(
        value("errand_job_duration_seconds_count", &[("queue", q)]),
        8.0
    );
    assert_eq!(value("errand_job_wait_seconds_count", &of("succeed")), 2.0);
    // The idle queue's job waits, and its age shows.
    let i = idle.as_str();
    assert_eq!(
        value("errand_queue_jobs", &[("queue", i), ("state", "available")]),
        1.0
    );
    assert!(value("errand_queue_oldest_available_seconds", &[("queue", i)]) > 0.0);
    // Bounded labels: no id, key or argument.
    let text = exporter().render();
    for line in text.lines().filter(|l| l.contains(q)) {
        let labels = line.split_once('{').map_or("", |(_, rest)| rest);
        for label in labels.split(',').filter_map(|p| p.split_once('=')) {
            assert!(
                ["kind", "queue", "state", "quantile", "le"].contains(&label.0),
                "unexpected label in {line}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_runs_are_counted() {
    check_counts_and_gauges(sqlite().await, "sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_runs_are_counted() {
    let Some(store) = postgres().await else {
        return;
    };
    check_counts_and_gauges(store, "postgres").await;
}
