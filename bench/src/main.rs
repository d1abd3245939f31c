//! `errand-bench`: how many jobs errand moves, against the database's own limit, and how many
//! it loses when workers and the database are killed under it.
//!
//! ```sh
//! cargo run --release -p errand-bench -- bench [--store sqlite|postgres] [--runs 3]
//! cargo run --release -p errand-bench -- chaos --jobs 100000
//! cargo run --release -p errand-bench -- sustained --jobs 2000000
//! ```
//!
//! PostgreSQL comes from `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! the benchmark works in the schema `errand_bench`. The chaos run starts a PostgreSQL cluster
//! of its own, so that it can restart it.

mod bench;
mod chaos;
mod effect;
mod sustained;

use std::process::ExitCode;

use errand_bench::flag;

fn usage() -> ExitCode {
    eprintln!(
        "usage: errand-bench bench [--store sqlite|postgres] [--runs N]\n       errand-bench chaos [--jobs N]\n       errand-bench sustained [--jobs N]"
    );
    ExitCode::from(2)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("bench") => {
            let stores = match flag(&args, "--store").as_deref() {
                None => vec![bench::StoreKind::Sqlite, bench::StoreKind::Postgres],
                Some("sqlite") => vec![bench::StoreKind::Sqlite],
                Some("postgres") => vec![bench::StoreKind::Postgres],
                Some(other) => {
                    eprintln!("unknown store `{other}`; expected `sqlite` or `postgres`");
                    return usage();
                }
            };
            let runs = flag(&args, "--runs")
                .and_then(|r| r.parse().ok())
                .unwrap_or(3);
            bench::run(&stores, runs).await
        }
        Some("chaos") => {
            let jobs = flag(&args, "--jobs")
                .and_then(|j| j.parse().ok())
                .unwrap_or(100_000);
            return match chaos::run(jobs).await {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(err) => {
                    eprintln!("chaos run failed: {err}");
                    ExitCode::FAILURE
                }
            };
        }
        Some("sustained") => {
            let jobs = flag(&args, "--jobs")
                .and_then(|j| j.parse().ok())
                .unwrap_or(2_000_000);
            return match sustained::run(jobs).await {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(err) => {
                    eprintln!("sustained run failed: {err}");
                    ExitCode::FAILURE
                }
            };
        }
        Some("worker") => errand_bench::worker::run(&args).await,
        _ => return usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("errand-bench: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The PostgreSQL server to measure.
pub(crate) fn postgres_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}
