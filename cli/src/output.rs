//! What the commands print: aligned tables for people, JSON for scripts (`--json`).

use std::time::{Duration, SystemTime};

use errand::migrations::Migration;
use errand::{AttemptError, Cancellation, JobInfo, QueueStats};
use serde_json::{json, Value};

/// Where a command's result goes, and in which form.
pub(crate) struct Out {
    pub json: bool,
}

impl Out {
    fn print_json(&self, value: &Value) {
        // A `Value` always serializes.
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    }

    pub(crate) fn queues(&self, queues: &[QueueStats]) {
        if self.json {
            let rows: Vec<Value> = queues
                .iter()
                .map(|q| {
                    json!({
                        "queue": q.queue,
                        "counts": counts_json(q),
                        "oldest_available_seconds": q.oldest_available.map(|d| d.as_secs_f64()),
                        "paused": q.paused,
                    })
                })
                .collect();
            return self.print_json(&Value::Array(rows));
        }
        let mut table = Table::new([
            "QUEUE",
            "AVAILABLE",
            "SCHEDULED",
            "RUNNING",
            "RETRYABLE",
            "PENDING",
            "DEAD",
            "COMPLETED",
            "CANCELLED",
            "OLDEST WAITING",
            "PAUSED",
        ]);
        for q in queues {
            let c = &q.counts;
            table.row([
                q.queue.clone(),
                c.available.to_string(),
                c.scheduled.to_string(),
                c.running.to_string(),
                c.retryable.to_string(),
                c.pending.to_string(),
                c.dead.to_string(),
                c.completed.to_string(),
                c.cancelled.to_string(),
                q.oldest_available.map_or("-".to_owned(), age),
                if q.paused { "yes" } else { "no" }.to_owned(),
            ]);
        }
        table.print("no queues have jobs");
    }

    pub(crate) fn jobs(&self, jobs: &[JobInfo]) {
        if self.json {
            return self.print_json(&Value::Array(jobs.iter().map(job_json).collect()));
        }
        let mut table = Table::new([
            "ID",
            "KIND",
            "QUEUE",
            "STATE",
            "ATTEMPT",
            "CREATED",
            "KEY",
            "LAST ERROR",
        ]);
        for job in jobs {
            let error = job.errors.last().map_or("-".to_owned(), |e| {
                let mut message = e.message.replace('\n', " ");
                if message.chars().count() > 60 {
                    message = message.chars().take(59).chain(['…']).collect();
                }
                message
            });
            table.row([
                job.id.to_string(),
                job.kind.clone(),
                job.queue.clone(),
                job.state.to_string(),
                format!("{}/{}", job.attempt, job.max_attempts),
                since(job.created_at),
                job.key.clone().unwrap_or_else(|| "-".to_owned()),
                error,
            ]);
        }
        table.print("no jobs match");
    }

    pub(crate) fn job(&self, job: &JobInfo) {
        if self.json {
            return self.print_json(&job_json(job));
        }
        let optional = |t: Option<SystemTime>| t.map_or("-".to_owned(), timestamp);
        let fields = [
            ("id", job.id.to_string()),
            ("kind", job.kind.clone()),
            ("queue", job.queue.clone()),
            ("state", job.state.to_string()),
            (
                "attempts",
                format!("{} of {}", job.attempt, job.max_attempts),
            ),
            ("priority", job.priority.to_string()),
            ("key", job.key.clone().unwrap_or_else(|| "-".to_owned())),
            ("tags", tags(&job.tags)),
            ("created", timestamp(job.created_at)),
            ("runs at", timestamp(job.run_at)),
            ("attempted", optional(job.attempted_at)),
            ("finished", optional(job.finished_at)),
            ("expires", optional(job.expires_at)),
            (
                "workflow",
                match (job.workflow, &job.step) {
                    (Some(id), Some(step)) => format!("{id}, step {step}"),
                    (Some(id), None) => id.to_string(),
                    _ => "-".to_owned(),
                },
            ),
        ];
        for (name, value) in fields {
            println!("{name:<10} {value}");
        }
        println!("arguments:");
        println!("{}", indent(&pretty(&job.args)));
        if job.meta.as_object().is_some_and(|m| !m.is_empty()) {
            println!("meta:");
            println!("{}", indent(&pretty(&job.meta)));
        }
        if job.errors.is_empty() {
            println!("errors: none");
        } else {
            println!("errors:");
            for e in &job.errors {
                println!(
                    "  attempt {} at {} ({}, after {}): {}",
                    e.attempt,
                    timestamp(e.at),
                    e.kind,
                    age(e.duration),
                    e.message
                );
            }
        }
    }

    pub(crate) fn cancelled(&self, id: i64, outcome: &Cancellation) {
        let (status, text) = match outcome {
            Cancellation::Cancelled => ("cancelled", "cancelled".to_owned()),
            Cancellation::Requested => (
                "requested",
                "running: asked to stop, it becomes cancelled when it returns".to_owned(),
            ),
            Cancellation::AlreadyFinished(state) => {
                ("already_finished", format!("not cancelled: it is {state}"))
            }
            Cancellation::NotFound => ("not_found", "not cancelled: no job has this id".to_owned()),
            _ => ("unknown", "not cancelled".to_owned()),
        };
        if self.json {
            return self.print_json(&json!({ "id": id, "cancellation": status }));
        }
        println!("job {id}: {text}");
    }

    pub(crate) fn acted_on(&self, act: &str, id: i64, done: bool) {
        if self.json {
            return self.print_json(&json!({ "id": id, act: done }));
        }
        if done {
            println!("job {id}: {act}");
        }
    }

    pub(crate) fn acted_on_all(&self, act: &str, count: u64) {
        if self.json {
            return self.print_json(&json!({ act: count }));
        }
        println!("{count} dead jobs {act}");
    }

    pub(crate) fn retried_all(&self, retried: u64, skipped: u64) {
        if self.json {
            return self.print_json(&json!({ "retried": retried, "skipped": skipped }));
        }
        println!("{retried} dead jobs retried");
        if skipped > 0 {
            println!(
                "{skipped} skipped: their death was acted on (a saga compensated, a workflow's \
                 dependents cancelled); retrying them would run them again after that"
            );
        }
    }

    pub(crate) fn paused(&self, queue: &str, paused: bool, changed: bool) {
        if self.json {
            return self
                .print_json(&json!({ "queue": queue, "paused": paused, "changed": changed }));
        }
        let state = if paused { "paused" } else { "running" };
        let already = if changed { "" } else { "already " };
        println!("queue {queue}: {already}{state}");
    }

    pub(crate) fn migrations(&self, migrations: &[Migration]) {
        if self.json {
            let rows: Vec<Value> = migrations
                .iter()
                .map(|m| json!({ "version": m.version, "name": m.name, "sql": m.sql, "checksum": m.checksum() }))
                .collect();
            return self.print_json(&Value::Array(rows));
        }
        for m in migrations {
            println!(
                "-- migration {} ({})\n{}\n",
                m.version,
                m.name,
                m.sql.trim_end()
            );
        }
    }

    pub(crate) fn migrated(&self, migrations: &[Migration]) {
        let version = migrations.iter().map(|m| m.version).max().unwrap_or(0);
        if self.json {
            return self.print_json(&json!({ "version": version }));
        }
        println!("errand's tables are at version {version}");
    }

    pub(crate) fn pruned(&self, rows: u64) {
        if self.json {
            return self.print_json(&json!({ "deleted": rows }));
        }
        println!("{rows} rows deleted");
    }
}

fn counts_json(q: &QueueStats) -> Value {
    let c = &q.counts;
    json!({
        "pending": c.pending, "scheduled": c.scheduled, "available": c.available,
        "running": c.running, "retryable": c.retryable, "completed": c.completed,
        "cancelled": c.cancelled, "dead": c.dead,
    })
}

fn job_json(job: &JobInfo) -> Value {
    let at = |t: Option<SystemTime>| t.map(timestamp);
    json!({
        "id": job.id.get(),
        "kind": job.kind,
        "queue": job.queue,
        "state": job.state.as_str(),
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "priority": job.priority,
        "key": job.key,
        "args": job.args,
        "tags": job.tags,
        "meta": job.meta,
        "created_at": timestamp(job.created_at),
        "run_at": timestamp(job.run_at),
        "attempted_at": at(job.attempted_at),
        "finished_at": at(job.finished_at),
        "expires_at": at(job.expires_at),
        "workflow": job.workflow.map(|w| w.get()),
        "step": job.step,
        "errors": job.errors.iter().map(error_json).collect::<Vec<_>>(),
    })
}

fn error_json(e: &AttemptError) -> Value {
    json!({
        "attempt": e.attempt,
        "kind": e.kind.as_str(),
        "message": e.message,
        "at": timestamp(e.at),
        "duration_ms": u64::try_from(e.duration.as_millis()).unwrap_or(u64::MAX),
        "worker": e.worker,
    })
}

/// RFC 3339, in UTC, to the millisecond.
fn timestamp(t: SystemTime) -> String {
    match jiff::Timestamp::try_from(t) {
        Ok(ts) => format!("{ts:.3}"),
        Err(_) => "-".to_owned(),
    }
}

/// How long ago `t` was, roughly: `12s ago`, `3m ago`, `2h ago`, `5d ago`.
fn since(t: SystemTime) -> String {
    match SystemTime::now().duration_since(t) {
        Ok(ago) => format!("{} ago", age(ago)),
        Err(_) => "in the future".to_owned(),
    }
}

/// A duration, roughly, in its largest unit.
fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        1..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn tags(tags: &[String]) -> String {
    if tags.is_empty() {
        "-".to_owned()
    } else {
        tags.join(", ")
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Rows of text under headings, printed with each column as wide as its widest cell.
struct Table<const N: usize> {
    rows: Vec<[String; N]>,
}

impl<const N: usize> Table<N> {
    fn new(headings: [&str; N]) -> Self {
        Table {
            rows: vec![headings.map(str::to_owned)],
        }
    }

    fn row(&mut self, cells: [String; N]) {
        self.rows.push(cells);
    }

    /// Prints the table, or `empty` when it has no rows under its headings.
    fn print(&self, empty: &str) {
        if self.rows.len() == 1 {
            println!("{empty}");
            return;
        }
        let mut widths = [0; N];
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        for row in &self.rows {
            let mut line = String::new();
            for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
                if i + 1 == N {
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', width - cell.chars().count() + 2));
                }
            }
            println!("{}", line.trim_end());
        }
    }
}
