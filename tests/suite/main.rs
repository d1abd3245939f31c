//! errand's behaviour through its public API, against real SQLite files and the in-memory store.
//! One file per area; `per_store!` runs a body against each store, each with its own database.

mod common;
mod jobs;

mod args_and_keys;
mod bad_input;
mod concurrency;
mod lifecycle;
mod outbox;
mod retries;
mod shutdown;
mod testing_client;
