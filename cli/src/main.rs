//! `errand`: look at and act on an errand store from a shell.
//!
//! ```sh
//! errand --database-url sqlite:///tmp/errand-quickstart.db queues
//! DATABASE_URL=postgres://app@db/prod errand jobs --state dead --kind charge_order --since 1h
//! errand retry --dead --kind charge_order
//! ```
//!
//! Tables for people, `--json` for scripts. Exit codes: 0 done; 1 the store failed (cannot
//! connect, a query failed); 2 bad usage; 3 the database has no errand tables, or older ones
//! (run `errand migrate`); 4 a job named on the command line does not exist, or is not in a
//! state the command acts on (the others were acted on).

mod output;

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Args, Parser, Subcommand};
use errand::{
    Cancellation, Client, Config, DeadFilter, Error, JobFilter, JobId, JobState, Page, Retention,
};

use crate::output::Out;

#[derive(Parser, Debug)]
#[command(
    name = "errand",
    version,
    about = "Look at and act on an errand job store"
)]
struct Cli {
    /// The store: `sqlite://path/to/jobs.db` or `postgres://user@host/db`.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,
    /// PostgreSQL only: the schema errand's tables are in.
    #[arg(long, env = "ERRAND_SCHEMA", global = true)]
    schema: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Each queue: jobs per state, how long the oldest available job has waited, paused.
    Queues,
    /// Jobs, newest first, filtered.
    Jobs(JobsArgs),
    /// One job: its arguments, key, tags, meta and every attempt's error.
    Job {
        /// The job's id.
        id: i64,
    },
    /// Makes dead jobs available again, with fresh attempts.
    Retry(DeadArgs),
    /// Cancels jobs: waiting ones at once, running ones are asked to stop.
    Cancel {
        /// The jobs' ids.
        #[arg(required = true)]
        ids: Vec<i64>,
    },
    /// Deletes dead jobs.
    Delete(DeadArgs),
    /// Pauses a queue: its jobs wait until it is resumed.
    Pause {
        /// The queue.
        queue: String,
    },
    /// Resumes a paused queue.
    Resume {
        /// The queue.
        queue: String,
    },
    /// Brings the store's schema up to date (or, with `--print`, prints the SQL).
    Migrate {
        /// Print every migration's SQL for the URL's store instead of applying them.
        #[arg(long)]
        print: bool,
    },
    /// Serves the web dashboard.
    Web(WebArgs),
    /// Deletes now what the retention lets go: finished jobs, surplus dead jobs, old ledger
    /// records.
    Prune {
        /// Keep completed and cancelled jobs this long after they finished.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1day")]
        keep_finished: Duration,
        /// Keep dead jobs this long after they died.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "180days")]
        keep_dead: Duration,
        /// Keep at most this many dead jobs.
        #[arg(long, default_value_t = 10_000)]
        max_dead: usize,
    },
}

#[derive(Args, Debug)]
struct WebArgs {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// The token every request must carry (`?token=` once in a browser, or
    /// `Authorization: Bearer`), at least 16 characters. Prefer ERRAND_WEB_TOKEN or
    /// --token-file: a command line is visible to every user of the machine.
    #[arg(long, env = "ERRAND_WEB_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Reads the token from this file (its first line).
    #[arg(long, conflicts_with = "token")]
    token_file: Option<std::path::PathBuf>,
    /// Marks the session cookie `Secure` (behind an HTTPS proxy that does not send
    /// `X-Forwarded-Proto`).
    #[arg(long)]
    secure_cookies: bool,
    /// HTTP basic authentication instead, as `user:password`.
    #[arg(
        long,
        env = "ERRAND_WEB_BASIC",
        hide_env_values = true,
        conflicts_with = "token"
    )]
    basic: Option<String>,
    /// No credentials at all: only for a dashboard that nothing but a trusted network reaches.
    #[arg(long, conflicts_with_all = ["token", "token_file", "basic"])]
    no_auth: bool,
}

#[derive(Args, Debug)]
struct JobsArgs {
    /// Only jobs in this state (repeatable).
    #[arg(long = "state", value_parser = parse_state)]
    states: Vec<JobState>,
    /// Only jobs of this kind.
    #[arg(long)]
    kind: Option<String>,
    /// Only jobs of this queue.
    #[arg(long)]
    queue: Option<String>,
    /// Only jobs with this tag.
    #[arg(long)]
    tag: Option<String>,
    /// Only jobs enqueued within this long, e.g. `1h`, `30m`, `2days`.
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<Duration>,
    /// At most this many jobs.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Only jobs older than this id (the next page: the last id printed).
    #[arg(long)]
    before: Option<i64>,
}

#[derive(Args, Debug)]
struct DeadArgs {
    /// The jobs' ids.
    #[arg(required_unless_present = "dead", conflicts_with = "dead")]
    ids: Vec<i64>,
    /// Every dead job matching the filters instead.
    #[arg(long)]
    dead: bool,
    /// With `--dead`: only jobs of this kind.
    #[arg(long, requires = "dead")]
    kind: Option<String>,
    /// With `--dead`: only jobs of this queue.
    #[arg(long, requires = "dead")]
    queue: Option<String>,
    /// With `--dead`: only jobs that died within this long.
    #[arg(long, requires = "dead", value_parser = humantime::parse_duration)]
    since: Option<Duration>,
}

fn parse_state(s: &str) -> Result<JobState, String> {
    s.parse().map_err(|_| {
        format!(
            "unknown state `{s}`; expected one of {}",
            JobState::ALL.map(|s| s.as_str()).join(", ")
        )
    })
}

/// What ended a command, as its exit code and message.
enum Failure {
    /// 1: the store failed.
    Store(Error),
    /// 2: bad usage that the parser could not see.
    Usage(String),
    /// 3: no errand tables, or older ones.
    NotSetUp(String),
    /// 4: a named job was not acted on.
    NotActedOn,
}

impl From<Error> for Failure {
    fn from(err: Error) -> Failure {
        match err {
            Error::SchemaBehind { found: 0, .. } => Failure::NotSetUp(
                "the database has no errand tables: run `errand migrate` first".to_owned(),
            ),
            Error::SchemaBehind { found, needed, .. } => Failure::NotSetUp(format!(
                "errand's tables are at version {found}, and this errand needs {needed}: run `errand migrate`"
            )),
            other => Failure::Store(other),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Store(err)) => {
            eprintln!("error: {err}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::NotSetUp(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(3)
        }
        Err(Failure::NotActedOn) => ExitCode::from(4),
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let out = Out { json: cli.json };
    let Some(url) = cli.database_url.as_deref() else {
        return Err(Failure::Usage(
            "no store: pass --database-url or set DATABASE_URL (sqlite://jobs.db, postgres://user@host/db)"
                .to_owned(),
        ));
    };
    if let Command::Migrate { print: true } = cli.command {
        out.migrations(store_of(url)?);
        return Ok(());
    }
    let migrating = matches!(cli.command, Command::Migrate { .. });
    if !migrating {
        if let Some(path) = sqlite_path(url) {
            if !std::path::Path::new(path).exists() {
                return Err(Failure::NotSetUp(format!(
                    "no database at {path}: check the URL, or create it with `errand migrate`"
                )));
            }
        }
    }
    let mut config = Config::default().migrate(migrating).max_connections(2);
    if let Some(schema) = &cli.schema {
        config = config.schema(schema);
    }
    let client = Client::connect_with(url, config).await.map_err(|err| {
        match (Failure::from(err), &cli.schema) {
            (Failure::NotSetUp(message), Some(schema)) => Failure::NotSetUp(format!(
                "{message} (schema `{schema}`; is it the right one?)"
            )),
            (failure, _) => failure,
        }
    })?;
    match cli.command {
        Command::Queues => out.queues(&client.queue_stats().await?),
        Command::Jobs(args) => {
            let mut filter = JobFilter::all().states(args.states);
            if let Some(kind) = args.kind {
                filter = filter.kind(kind);
            }
            if let Some(queue) = args.queue {
                filter = filter.queue(queue);
            }
            if let Some(tag) = args.tag {
                filter = filter.tag(tag);
            }
            if let Some(since) = args.since {
                filter = filter.created_after(ago(since));
            }
            let page = match args.before {
                Some(id) => Page::after(JobId::from(id), args.limit),
                None => Page::first(args.limit),
            };
            out.jobs(&client.jobs(&filter, page.newest_first()).await?);
        }
        Command::Job { id } => match client.job(JobId::from(id)).await? {
            Some(job) => out.job(&job),
            None => {
                eprintln!("error: no job {id}");
                return Err(Failure::NotActedOn);
            }
        },
        Command::Retry(args) => return retry_or_delete(&client, &out, args, Act::Retry).await,
        Command::Delete(args) => return retry_or_delete(&client, &out, args, Act::Delete).await,
        Command::Cancel { ids } => {
            let mut missed = false;
            for id in ids {
                let outcome = client.cancel(JobId::from(id)).await?;
                missed |= !matches!(outcome, Cancellation::Cancelled | Cancellation::Requested);
                out.cancelled(id, &outcome);
            }
            if missed {
                return Err(Failure::NotActedOn);
            }
        }
        Command::Pause { queue } => {
            let changed = client.pause_queue(&queue).await?;
            out.paused(&queue, true, changed);
        }
        Command::Resume { queue } => {
            let changed = client.resume_queue(&queue).await?;
            out.paused(&queue, false, changed);
        }
        Command::Migrate { .. } => {
            // Connecting with migrations on applied them.
            out.migrated(store_of(url)?);
        }
        Command::Web(args) => return serve(client, args).await,
        Command::Prune {
            keep_finished,
            keep_dead,
            max_dead,
        } => {
            let retention = Retention::default()
                .keep_finished_for(keep_finished)
                .keep_dead_for(keep_dead)
                .max_dead(max_dead);
            out.pruned(client.prune(&retention).await?);
        }
    }
    Ok(())
}

/// Serves the dashboard until Ctrl-C or SIGTERM.
async fn serve(client: Client, args: WebArgs) -> Result<(), Failure> {
    let token = match (&args.token, &args.token_file) {
        (_, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Failure::Usage(format!(
                    "cannot read the token file {}: {e}",
                    path.display()
                ))
            })?;
            Some(text.lines().next().unwrap_or("").trim().to_owned())
        }
        (token, None) => token.clone(),
    };
    let auth = match (token, args.basic, args.no_auth) {
        (Some(token), _, _) => errand_web::Auth::token(token),
        (None, Some(basic), _) => match basic.split_once(':') {
            Some((user, password)) => errand_web::Auth::basic(user, password),
            None => {
                return Err(Failure::Usage(
                    "--basic takes `user:password`".to_owned(),
                ))
            }
        },
        (None, None, true) => errand_web::Auth::TrustedNetwork,
        (None, None, false) => {
            return Err(Failure::Usage(
                "the dashboard needs credentials: pass --token (or ERRAND_WEB_TOKEN), --basic user:password, or --no-auth for a trusted network"
                    .to_owned(),
            ))
        }
    };
    let open = matches!(auth, errand_web::Auth::TrustedNetwork);
    let app = errand_web::Dashboard::new(client, auth)
        .secure_cookies(args.secure_cookies)
        .router()
        .map_err(|e| Failure::Usage(e.to_string()))?;
    if open && !args.listen.ip().is_loopback() {
        eprintln!(
            "warning: --no-auth on {}, beyond this machine: anyone who reaches it can retry, cancel and delete jobs",
            args.listen
        );
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Failure::Usage(format!("cannot listen on {}: {e}", args.listen)))?;
    eprintln!("errand's dashboard on http://{}/", args.listen);
    axum::serve(listener, app)
        .with_graceful_shutdown(stop_signal())
        .await
        .map_err(|e| Failure::Usage(format!("serving the dashboard failed: {e}")))
}

/// Resolves at Ctrl-C or SIGTERM (what containers and service managers send).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[derive(Clone, Copy)]
enum Act {
    Retry,
    Delete,
}

async fn retry_or_delete(
    client: &Client,
    out: &Out,
    args: DeadArgs,
    act: Act,
) -> Result<(), Failure> {
    if args.dead {
        let mut filter = DeadFilter::all();
        if let Some(kind) = args.kind {
            filter = filter.kind(kind);
        }
        if let Some(queue) = args.queue {
            filter = filter.queue(queue);
        }
        if let Some(since) = args.since {
            filter = filter.died_after(ago(since));
        }
        match act {
            Act::Retry => {
                let done = client.retry_all_dead(&filter).await?;
                out.retried_all(done.retried, done.skipped);
            }
            Act::Delete => {
                let count = client.delete_all_dead(&filter).await?;
                out.acted_on_all(act_name(act), count);
            }
        }
        return Ok(());
    }
    let mut missed = false;
    for id in args.ids {
        let id = JobId::from(id);
        let done = match act {
            Act::Retry => match client.retry_dead(id).await {
                Err(Error::RetryRefused { reason, .. }) => {
                    missed = true;
                    eprintln!("error: job {id} was not retried: {reason}");
                    out.acted_on(act_name(act), id.get(), false);
                    continue;
                }
                done => done?,
            },
            Act::Delete => client.delete_dead(id).await?,
        };
        if !done {
            missed = true;
            let why = match client.job(id).await? {
                Some(job) => format!("it is {}, not dead", job.state),
                None => "no job has this id".to_owned(),
            };
            eprintln!("error: job {id} was not {}: {why}", act_name(act));
        }
        out.acted_on(act_name(act), id.get(), done);
    }
    if missed {
        return Err(Failure::NotActedOn);
    }
    Ok(())
}

fn act_name(act: Act) -> &'static str {
    match act {
        Act::Retry => "retried",
        Act::Delete => "deleted",
    }
}

/// `since` ago, by this machine's clock.
fn ago(since: Duration) -> SystemTime {
    SystemTime::now()
        .checked_sub(since)
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The file an SQLite URL names, if it is one (and not in memory).
fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite:")?;
    let path = rest.strip_prefix("//").unwrap_or(rest);
    let path = path.split('?').next().unwrap_or(path);
    (!path.is_empty() && path != ":memory:").then_some(path)
}

/// The migrations of the URL's store.
fn store_of(url: &str) -> Result<&'static [errand::migrations::Migration], Failure> {
    if url.starts_with("sqlite:") {
        Ok(errand::migrations::SQLITE)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(errand::migrations::POSTGRES)
    } else {
        Err(Failure::Usage(
            "the URL names no store errand knows: expected sqlite://path or postgres://user@host/db"
                .to_owned(),
        ))
    }
}
