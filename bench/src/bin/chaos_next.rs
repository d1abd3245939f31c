//! The chaos run's newer build (see `errand_bench`): the same kinds as `errand-bench`, with
//! `chaos_effect` limited to 24 at once across the cluster, so a limit is added to a kind
//! with a backlog while older workers still run it. `errand-bench-chaos-next worker ...` takes
//! the flags of `errand-bench worker`.

use std::process::ExitCode;

use errand::{job, Context};
use errand_bench::jobs::{complete_with, quick, BenchError};

/// As the older build's, limited to 24 at once across the cluster.
#[job(name = "chaos_effect", queue = "chaos", retry = 50, backoff = quick, concurrency = 24)]
pub async fn chaos_effect(ctx: &Context, n: i64) -> Result<(), BenchError> {
    complete_with(ctx, "INSERT INTO chaos_effects (n) VALUES ($1)", n, None).await
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some("worker") {
        eprintln!("usage: errand-bench-chaos-next worker --url U [flags of errand-bench worker]");
        return ExitCode::from(2);
    }
    match errand_bench::worker::run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("errand-bench-chaos-next: {err}");
            ExitCode::FAILURE
        }
    }
}
