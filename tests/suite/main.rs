//! errand's behaviour through its public API, against real SQLite files, a real PostgreSQL
//! server and the in-memory store. One file per area; `per_store!` runs a body against each
//! store, each with its own database (a fresh SQLite file, a fresh PostgreSQL schema).

mod args_and_keys;
mod bad_input;
mod cancel;
mod concurrency;
mod deploys;
mod failures;
mod fairness;
mod ledger;
mod lifecycle;
mod limits;
mod long_workflows;
mod outbox;
mod postgres;
mod prefetch;
mod processes;
mod pruning;
mod queries;
mod reliability;
mod request_options;
mod retries;
mod sagas;
mod scheduling;
mod shutdown;
mod testing_client;
mod unique;
mod workflows;
