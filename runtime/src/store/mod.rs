//! Storage: the one module family that knows SQL.
//!
//! A store keeps jobs and carries out the worker's decisions, each state change in one atomic
//! statement. The worker decides (complete, retry at, snooze, dead); the store never reads a job,
//! changes it in Rust and writes it back. [`Backend`] picks the store a [`Client`](crate::Client)
//! was connected to.

use std::future::Future;

pub(crate) use crate::dead::DeadQuery;

#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod sql;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;

mod backend;
mod clock;
mod records;

pub(crate) use backend::{with_write_transaction, Backend, Wake};
pub(crate) use clock::Clock;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) use clock::SYSTEM_CLOCK;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) use records::job_from_row;
pub(crate) use records::{
    ledger_scope, Claimed, Exchange, Expiry, Finish, Keys, KindLimit, Presence, Promoted, Release,
    RunAt, RunId, ScheduleRecord, Slot, Startable, StepOwner, DEATH_DELIVERY_WINDOW, FORGET_AFTER,
    HEARTBEAT_EVERY, KEEP_FIRST_ERRORS, LEASE_LOST_AFTER, LEASE_LOST_BEFORE, MAX_ERRORS,
    UNKNOWN_KIND_AFTER, UNKNOWN_KIND_BEFORE, WORKER_STALE,
};
pub use records::{Inserted, NewJob};

/// A boxed `Send` future. Store functions that hold a connection borrowed from their caller
/// across awaits return one: rustc cannot prove such futures `Send` for every lifetime once
/// they sit inside another future, which stops users from `tokio::spawn`ing code that awaits
/// them. Boxing checks `Send` once, here, with the lifetimes known.
pub(crate) type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;
