//! Shared pieces of errand's integration tests: fresh stores for each test, the jobs the tests
//! enqueue, and helpers to run worker processes and throwaway PostgreSQL servers.

pub mod common;
pub mod jobs;
pub mod processes;
pub mod worker_process;
