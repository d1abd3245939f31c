//! What errand's benchmark and chaos run share between their two worker builds: the job kinds
//! both declare alike, where jobs record what they did, and the worker process's body.
//! `errand-bench` is the older build of the chaos run's rolling deploy,
//! `errand-bench-chaos-next` the newer: it declares `chaos_effect` with a cluster-wide limit.

pub mod jobs;
pub mod worker;

/// The value after `--name` in `args`, if any.
pub fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
