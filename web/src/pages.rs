//! The pages, server-rendered with maud: every value interpolated is escaped, so a job's
//! arguments, errors, keys and kinds render as text, whatever they contain.

use std::time::{Duration, SystemTime};

use errand::{JobInfo, QueueStats, ScheduleInfo, Throughput};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::Deserialize;

/// Where the dashboard is mounted (`""`, or `/errand` when nested there).
pub(crate) struct Base(pub String);

impl Base {
    /// Where the dashboard serving a request is mounted: the part of its original path
    /// (`original`, absent outside a nested router) that the nested router stripped from `uri`.
    pub(crate) fn of_request(
        original: Option<&axum::extract::OriginalUri>,
        uri: &axum::http::Uri,
    ) -> Base {
        let inner = uri.path().trim_end_matches('/');
        let full = original.map_or(inner, |o| o.0.path().trim_end_matches('/'));
        Base(full.strip_suffix(inner).unwrap_or("").to_owned())
    }

    /// `path` under the base: the dashboard's root is the base itself (`/errand`, as axum
    /// routes a nested router's root), or `/` when it is not nested.
    pub(crate) fn at(&self, path: &str) -> String {
        match (self.0.is_empty(), path) {
            (false, "/") => self.0.clone(),
            _ => format!("{}{path}", self.0),
        }
    }
}

const CSS: &str = "
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d2430; background: #f6f7f9; }
nav { background: #1d2430; padding: 10px 20px; display: flex; gap: 18px; align-items: center; }
nav a { color: #e8ecf2; text-decoration: none; font-weight: 600; }
nav .brand { color: #8fd19e; margin-right: 12px; }
main { padding: 16px 20px; }
h1 { font-size: 20px; margin: 4px 0 14px; }
h2 { font-size: 16px; margin: 20px 0 8px; }
table { border-collapse: collapse; background: #fff; width: 100%; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid #e3e6eb; vertical-align: top; }
th { background: #eef1f5; font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #fff; border: 1px solid #e3e6eb; padding: 10px; overflow: auto; }
.state { padding: 1px 6px; border-radius: 8px; font-size: 12px; background: #e3e6eb; }
.dead, .s-dead { color: #b3261e; }
.s-completed { color: #1e7b34; }
.s-running { color: #1a5fb4; }
form.inline { display: inline; }
button { cursor: pointer; border: 1px solid #b8bfca; background: #fff; border-radius: 4px; padding: 2px 10px; }
button.danger { border-color: #b3261e; color: #b3261e; }
.muted { color: #6b7380; }
td.muted { white-space: nowrap; }
.notice { background: #fff7e0; border: 1px solid #e8d18a; padding: .5em .75em; border-radius: 4px; }
.filters { margin-bottom: 12px; display: flex; gap: 8px; align-items: center; }
.legend span { margin-right: 14px; }
dl { display: grid; grid-template-columns: 130px 1fr; gap: 4px 12px; background: #fff; padding: 12px; border: 1px solid #e3e6eb; }
dt { font-weight: 600; }
dd { margin: 0; word-break: break-all; }
";

/// The dashboard's one script: a confirmation before the forms that say they need one.
const SCRIPT: &str = "document.querySelectorAll('form[data-confirm]').forEach(function (form) {
  form.addEventListener('submit', function (event) {
    if (!window.confirm(form.dataset.confirm)) { event.preventDefault(); }
  });
});";

fn layout(base: &Base, nonce: &str, title: &str, refresh: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if refresh {
                    meta http-equiv="refresh" content="5";
                }
                title { (title) " · errand" }
                style { (PreEscaped(CSS)) }
            }
            body {
                nav {
                    a.brand href=(base.at("/")) { "errand" }
                    a href=(base.at("/")) { "Queues" }
                    a href=(base.at("/jobs")) { "Jobs" }
                    a href=(base.at("/dead")) { "Dead" }
                    a href=(base.at("/schedules")) { "Schedules" }
                }
                main { (body) }
                script nonce=(nonce) { (PreEscaped(SCRIPT)) }
            }
        }
    }
}

/// A POST button with the CSRF token.
fn action(url: &str, csrf: &str, label: &str, confirm: Option<&str>, danger: bool) -> Markup {
    html! {
        form.inline method="post" action=(url) data-confirm=[confirm] {
            input type="hidden" name="csrf" value=(csrf);
            button.danger[danger] type="submit" { (label) }
        }
    }
}

pub(crate) fn queues(
    base: &Base,
    csrf: &str,
    nonce: &str,
    stats: &[QueueStats],
    minutes: &[Throughput],
) -> Markup {
    let body = html! {
        h1 { "Queues" }
        @if stats.is_empty() {
            p.muted { "No queue has jobs yet." }
        } @else {
            table {
                thead { tr {
                    th { "Queue" }
                    th.n { "Available" } th.n { "Scheduled" } th.n { "Running" } th.n { "Retryable" }
                    th.n { "Pending" } th.n { "Dead" } th.n { "Completed" } th.n { "Cancelled" }
                    th.n { "Oldest waiting" } th { "" }
                } }
                tbody {
                    @for q in stats {
                        @let c = &q.counts;
                        tr {
                            td {
                                a href=(format!("{}?queue={}", base.at("/jobs"), url_encode(&q.queue))) { (q.queue) }
                                @if q.paused { " " span.state { "paused" } }
                            }
                            td.n { (c.available) } td.n { (c.scheduled) } td.n { (c.running) }
                            td.n { (c.retryable) } td.n { (c.pending) }
                            td.n.dead { (c.dead) } td.n { (c.completed) } td.n { (c.cancelled) }
                            td.n { (q.oldest_available.map_or("-".to_owned(), age)) }
                            td {
                                @let path = format!("/queues/{}/", url_encode(&q.queue));
                                @if q.paused {
                                    (action(&base.at(&format!("{path}resume")), csrf, "Resume", None, false))
                                } @else {
                                    (action(&base.at(&format!("{path}pause")), csrf, "Pause", None, false))
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Finished per minute, last hour" }
        (plot(minutes))
    };
    layout(base, nonce, "Queues", true, body)
}

/// Bars per minute for the last hour: completed, and dead above them.
fn plot(minutes: &[Throughput]) -> Markup {
    const SLOTS: u64 = 60;
    const WIDTH: u64 = 10;
    const HEIGHT: u64 = 120;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        / 60;
    let slot_of = |t: SystemTime| {
        let minute = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            / 60;
        (SLOTS - 1).checked_sub(now.saturating_sub(minute))
    };
    let mut slots = [(0u64, 0u64); SLOTS as usize];
    for m in minutes {
        if let Some(slot) = slot_of(m.minute) {
            let entry = &mut slots[slot as usize];
            entry.0 += m.completed;
            entry.1 += m.dead;
        }
    }
    let top = slots.iter().map(|(c, d)| c + d).max().unwrap_or(0).max(1);
    let completed: u64 = slots.iter().map(|s| s.0).sum();
    let dead: u64 = slots.iter().map(|s| s.1).sum();
    let scale = |n: u64| n * HEIGHT / top;
    html! {
        svg width=(SLOTS * WIDTH) height=(HEIGHT + 2) role="img" aria-label="jobs finished per minute" style="background:#fff;border:1px solid #e3e6eb" {
            @for (i, (c, d)) in slots.iter().enumerate() {
                @let x = i as u64 * WIDTH + 1;
                @let hc = scale(*c);
                @let hd = scale(*d);
                rect x=(x) y=(HEIGHT + 1 - hc) width=(WIDTH - 2) height=(hc) fill="#3c9a55" {
                    title { (c) " completed" }
                }
                rect x=(x) y=(HEIGHT + 1 - hc - hd) width=(WIDTH - 2) height=(hd) fill="#c0392b" {
                    title { (d) " died" }
                }
            }
        }
        p.legend.muted {
            span.s-completed { "■ " (completed) " completed" }
            span.dead { "■ " (dead) " died" }
            span { "peak " (top) " a minute" }
        }
    }
}

pub(crate) fn jobs(
    base: &Base,
    nonce: &str,
    query: &JobsQuery,
    jobs: &[JobInfo],
    page: usize,
) -> Markup {
    let states = errand::JobState::ALL;
    let body = html! {
        h1 { "Jobs" }
        form.filters method="get" action=(base.at("/jobs")) {
            label { "State " select name="state" {
                option value="" { "any" }
                @for s in states {
                    option value=(s.as_str()) selected[query.state() == Some(s.as_str())] { (s.as_str()) }
                }
            } }
            label { "Kind " input name="kind" value=[query.kind()]; }
            label { "Queue " input name="queue" value=[query.queue()]; }
            button type="submit" { "Filter" }
        }
        (job_table(base, jobs))
        @if jobs.len() == page {
            @if let Some(last) = jobs.last() {
                p { a href=(next_page(base, query, last.id.get())) { "Older →" } }
            }
        }
    };
    layout(base, nonce, "Jobs", true, body)
}

fn next_page(base: &Base, query: &JobsQuery, before: i64) -> String {
    let mut url = format!("{}?before={before}", base.at("/jobs"));
    for (name, value) in [
        ("state", query.state()),
        ("kind", query.kind()),
        ("queue", query.queue()),
    ] {
        if let Some(value) = value {
            url.push_str(&format!("&{name}={}", url_encode(value)));
        }
    }
    url
}

fn job_table(base: &Base, jobs: &[JobInfo]) -> Markup {
    html! {
        @if jobs.is_empty() {
            p.muted { "No jobs match." }
        } @else {
            table {
                thead { tr {
                    th { "Id" } th { "Kind" } th { "Queue" } th { "State" } th.n { "Attempt" }
                    th { "Created" } th { "Key" } th { "Last error" }
                } }
                tbody {
                    @for job in jobs {
                        tr {
                            td { a href=(base.at(&format!("/jobs/{}", job.id))) { (job.id) } }
                            td { (job.kind) }
                            td { (job.queue) }
                            td { span class=(format!("state s-{}", job.state)) { (job.state) } }
                            td.n { (job.attempt) "/" (job.max_attempts) }
                            td.muted { (since(job.created_at)) }
                            td { (job.key.as_deref().unwrap_or("-")) }
                            td { (job.errors.last().map_or("-", |e| e.message.as_str())) }
                        }
                    }
                }
            }
        }
    }
}

pub(crate) fn job(base: &Base, csrf: &str, nonce: &str, job: &JobInfo) -> Markup {
    let at = |t: Option<SystemTime>| t.map_or("-".to_owned(), timestamp);
    let args = serde_json::to_string_pretty(&job.args).unwrap_or_else(|_| job.args.to_string());
    let body = html! {
        h1 { "Job " (job.id) " " span class=(format!("state s-{}", job.state)) { (job.state) } }
        p {
            @if !job.state.is_final() {
                (action(&base.at(&format!("/jobs/{}/cancel", job.id)), csrf, "Cancel", Some("Cancel this job?"), true))
            }
            @if job.state == errand::JobState::Dead {
                (action(&base.at(&format!("/jobs/{}/retry", job.id)), csrf, "Retry", None, false))
                " "
                (action(&base.at(&format!("/jobs/{}/delete", job.id)), csrf, "Delete", Some("Delete this dead job?"), true))
            }
        }
        dl {
            dt { "Kind" } dd { (job.kind) }
            dt { "Queue" } dd { (job.queue) }
            dt { "Attempts" } dd { (job.attempt) " of " (job.max_attempts) }
            dt { "Priority" } dd { (job.priority) }
            dt { "Key" } dd { (job.key.as_deref().unwrap_or("-")) }
            dt { "Tags" } dd { @if job.tags.is_empty() { "-" } @else { (job.tags.join(", ")) } }
            dt { "Created" } dd { (timestamp(job.created_at)) }
            dt { "Runs at" } dd { (timestamp(job.run_at)) }
            dt { "Attempted" } dd { (at(job.attempted_at)) }
            dt { "Finished" } dd { (at(job.finished_at)) }
            dt { "Expires" } dd { (at(job.expires_at)) }
            @if let Some(workflow) = job.workflow {
                dt { "Workflow" } dd { (workflow) @if let Some(step) = &job.step { ", step " (step) } }
            }
        }
        h2 { "Arguments" }
        pre.args { (args) }
        @if job.meta.as_object().is_some_and(|m| !m.is_empty()) {
            h2 { "Meta" }
            pre { (serde_json::to_string_pretty(&job.meta).unwrap_or_default()) }
        }
        h2 { "Attempts" }
        @if job.errors.is_empty() {
            p.muted { "No failed attempt." }
        } @else {
            table {
                thead { tr { th.n { "Attempt" } th { "At" } th { "Kind" } th.n { "Took" } th { "Worker" } th { "Error" } } }
                tbody {
                    @for e in &job.errors {
                        tr {
                            td.n { (e.attempt) }
                            td { (timestamp(e.at)) }
                            td { (e.kind) }
                            td.n { (age(e.duration)) }
                            td.muted { (e.worker) }
                            td.error { (e.message) }
                        }
                    }
                }
            }
        }
    };
    layout(base, nonce, &format!("Job {}", job.id), false, body)
}

pub(crate) fn dead(
    base: &Base,
    csrf: &str,
    nonce: &str,
    jobs: &[JobInfo],
    total: u64,
    page: usize,
    skipped: Option<u64>,
) -> Markup {
    let body = html! {
        h1 { "Dead jobs " span.muted { "(" (total) ")" } }
        @if let Some(skipped) = skipped.filter(|n| *n > 0) {
            p.notice {
                (skipped) " skipped by Retry all: their death was acted on (a saga compensated, a workflow's dependents cancelled), so retrying them would run them again after that. Open one to see why."
            }
        }
        @if total > 0 {
            p {
                (action(&base.at("/dead/retry-all"), csrf, "Retry all", Some(&format!("Retry all {total} dead jobs?")), false))
                " "
                (action(&base.at("/dead/delete-all"), csrf, "Delete all", Some(&format!("Delete all {total} dead jobs? This cannot be undone.")), true))
            }
        }
        @if jobs.is_empty() {
            p.muted { "No dead jobs." }
        } @else {
            table {
                thead { tr { th { "Id" } th { "Kind" } th { "Queue" } th { "Died" } th { "Error" } th { "" } } }
                tbody {
                    @for job in jobs {
                        tr {
                            td { a href=(base.at(&format!("/jobs/{}", job.id))) { (job.id) } }
                            td { (job.kind) }
                            td { (job.queue) }
                            td.muted { (job.finished_at.map_or("-".to_owned(), since)) }
                            td { (job.errors.last().map_or("-", |e| e.message.as_str())) }
                            td {
                                (action(&base.at(&format!("/jobs/{}/retry", job.id)), csrf, "Retry", None, false))
                                " "
                                (action(&base.at(&format!("/jobs/{}/delete", job.id)), csrf, "Delete", Some("Delete this dead job?"), true))
                            }
                        }
                    }
                }
            }
            @if jobs.len() == page {
                @if let Some(last) = jobs.last() {
                    p { a href=(format!("{}?before={}", base.at("/dead"), last.id)) { "Older →" } }
                }
            }
        }
    };
    layout(base, nonce, "Dead jobs", false, body)
}

pub(crate) fn schedules(base: &Base, nonce: &str, schedules: &[ScheduleInfo]) -> Markup {
    let at = |t: Option<SystemTime>| t.map_or("-".to_owned(), timestamp);
    let body = html! {
        h1 { "Schedules" }
        @if schedules.is_empty() {
            p.muted { "No periodic jobs are scheduled." }
        } @else {
            table {
                thead { tr { th { "Name" } th { "Cron" } th { "Time zone" } th { "Kind" } th { "Queue" } th { "Last run" } th { "Next run" } th { "Last seen" } } }
                tbody {
                    @for s in schedules {
                        tr {
                            td { (s.name) }
                            td { code { (s.cron) } }
                            td { (s.timezone) }
                            td { (s.kind) }
                            td { (s.queue) }
                            td { (at(s.last_run)) }
                            td { (at(s.next_run)) }
                            td.muted { (since(s.last_seen)) }
                        }
                    }
                }
            }
        }
    };
    layout(base, nonce, "Schedules", true, body)
}

fn timestamp(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t).map_or_else(|_| "-".to_owned(), |ts| format!("{ts:.3}"))
}

fn since(t: SystemTime) -> String {
    SystemTime::now()
        .duration_since(t)
        .map_or_else(|_| "just now".to_owned(), |d| format!("{} ago", age(d)))
}

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

/// A value as one component of a URL: everything but unreserved characters percent-encoded.
fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The jobs page's filters and position, as its query string carries them.
#[derive(Deserialize, Default)]
pub(crate) struct JobsQuery {
    pub state: Option<String>,
    pub kind: Option<String>,
    pub queue: Option<String>,
    pub before: Option<i64>,
}

impl JobsQuery {
    fn nonempty(value: &Option<String>) -> Option<&str> {
        value.as_deref().map(str::trim).filter(|v| !v.is_empty())
    }

    pub(crate) fn state(&self) -> Option<&str> {
        Self::nonempty(&self.state)
    }

    pub(crate) fn kind(&self) -> Option<&str> {
        Self::nonempty(&self.kind)
    }

    pub(crate) fn queue(&self) -> Option<&str> {
        Self::nonempty(&self.queue)
    }
}
