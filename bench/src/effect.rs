//! The chaos run's `chaos_effect` as this build (the older) declares it: no limit. The newer
//! build, `errand-bench-chaos-next`, limits it.

use errand::{job, Context};
use errand_bench::jobs::{complete_with, quick, BenchError};

/// Writes its effect and completes in one transaction: an effect recorded twice would be a bug.
#[job(name = "chaos_effect", queue = "chaos", retry = 50, backoff = quick)]
pub async fn chaos_effect(ctx: &Context, n: i64) -> Result<(), BenchError> {
    complete_with(ctx, "INSERT INTO chaos_effects (n) VALUES ($1)", n, None).await
}
