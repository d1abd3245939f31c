//! The SQL stores, organised by concern: each file below holds one part of what a store does,
//! its control flow written once and each statement written for both dialects side by side
//! (a [`Both`]), so that a difference between PostgreSQL and SQLite is seen rather than hunted.
//!
//! | file | what it does |
//! | --- | --- |
//! | `enqueue` | inserts jobs: one (unique keys, dependencies), many, a replacement |
//! | `claims` | the plain claim, with the completions it carries; claims of chosen jobs; aging |
//! | `limits` | the claim of limited jobs and the slots of their keys |
//! | `fairness` | the claim of `fair_by` jobs, in turns by key |
//! | `due` | waiting jobs coming due, expired ones cancelled, the next due time |
//! | `runs` | a run after its claim: start, running key, renewals, completion, release |
//! | `cancels` | cancelling jobs, waiting or running |
//! | `dead` | the dead set and the delivery of deaths to handlers |
//! | `ledger` | the effect ledger's steps |
//! | `workflows` | workflows, their steps and dependents |
//! | `schedules` | cron schedules and their slots |
//! | `queues` | pausing queues, their statistics |
//! | `listing` | reading jobs: by id, listings and counts |
//! | `history` | what finished when, per minute |
//! | `kinds` | what a build knows of job kinds, and jobs stored by other builds |
//! | `maintenance` | rescue, burial of unknown kinds, pruning, locks |
//! | `bookkeeping` | pruning the rows that describe jobs (workflows, slots, turns, schedules) |
//! | `vacuum` | vacuuming errand's tables on PostgreSQL |
//! | `migrate` | applying and checking migrations |
//! | `fragments` | pieces of SQL several statements share |
//!
//! This file holds what they share: how a [`Value`] is bound and a row read, the [`Dialect`]
//! (what truly differs between databases: binding, a claim across queues, a bulk insert's
//! parameters), and the [`SqlStore`] with its connections. A statement names its parameters
//! (`$id`, `$lease`) and is bound by name ([`Named`], [`params!`]), in either dialect; every
//! time among them is in milliseconds since the epoch, every duration in milliseconds.
//! `$now` ([`Value::Now`]) is the current time for a dialect that reads it in Rust: SQLite,
//! whose database runs in this process, binds this process's clock; PostgreSQL's statements
//! call `errand_now_ms()` instead and leave it unbound.

use std::time::Duration;

use crate::error::Error;
use crate::info::{duration_millis, AttemptError, JobInfo, StoredAttempt};
use crate::job::JobId;
use crate::migrations::Migration;
use crate::store::{BoxFuture, Clock, NewJob};

/// A connection of dialect `D`'s database.
pub(crate) type Conn<D> = <<D as Dialect>::Db as sqlx::Database>::Connection;

/// One bound parameter.
#[derive(Clone, Debug)]
pub(crate) enum Value<'a> {
    Int(Option<i64>),
    Bool(bool),
    Text(Option<&'a str>),
    /// A list: a PostgreSQL array, an SQLite JSON array.
    Texts(Vec<&'a str>),
    /// A list: a PostgreSQL array, an SQLite JSON array.
    Ints(Vec<i64>),
    /// A list of texts built for the statement (PostgreSQL's bulk insert).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    OwnedTexts(Vec<String>),
    /// A list with NULLs (PostgreSQL's bulk insert).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    OptTexts(Vec<Option<&'a str>>),
    /// A list with NULLs (PostgreSQL's bulk insert).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    OptInts(Vec<Option<i64>>),
    /// JSON text the dialect built (SQLite's bulk insert).
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    Json(String),
    /// The current time, in milliseconds since the epoch (see the module docs).
    Now,
    /// The system's time, in milliseconds since the epoch, even on a store whose clock a test
    /// moved ahead: leases measure how long a run has really gone unheard, so moving a test's
    /// clock must not make a live run look lost.
    Wall,
    /// A lease's length, in milliseconds, to be added to [`Value::Now`]: on a store whose clock
    /// a test moved ahead, less that offset, so that the lease ends at a [`Value::Wall`] time.
    Lease(Duration),
}

impl From<i64> for Value<'_> {
    fn from(value: i64) -> Self {
        Value::Int(Some(value))
    }
}

impl From<Option<i64>> for Value<'_> {
    fn from(value: Option<i64>) -> Self {
        Value::Int(value)
    }
}

impl From<bool> for Value<'_> {
    fn from(value: bool) -> Self {
        Value::Bool(value)
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(value: &'a str) -> Self {
        Value::Text(Some(value))
    }
}

impl<'a> From<Option<&'a str>> for Value<'a> {
    fn from(value: Option<&'a str>) -> Self {
        Value::Text(value)
    }
}

/// The parameters of a [`Named`] statement, by name: `params![id: id.get(), now: Value::Now]`
/// binds `$id` and `$now`; `params![queue]` binds `$queue` to the variable `queue`.
macro_rules! params {
    (@value $name:ident) => {
        $name
    };
    (@value $name:ident $value:expr) => {
        $value
    };
    ($($name:ident $(: $value:expr)?),* $(,)?) => {
        vec![$((
            stringify!($name),
            $crate::store::sql::Value::from($crate::store::sql::params!(@value $name $($value)?)),
        )),*]
    };
}
pub(crate) use params;

pub(crate) fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A row a statement returned, read by column position.
pub(crate) trait SqlRow: Send {
    fn int(&self, column: usize) -> Result<i64, sqlx::Error>;
    fn text(&self, column: usize) -> Result<String, sqlx::Error>;
    fn opt_text(&self, column: usize) -> Result<Option<String>, sqlx::Error>;
    fn opt_int(&self, column: usize) -> Result<Option<i64>, sqlx::Error>;
    fn flag(&self, column: usize) -> Result<bool, sqlx::Error>;
    /// A row of `listing::SELECT_JOBS`'s columns.
    fn job(&self, store: &'static str) -> Result<JobInfo, Error>;
}

impl<R> SqlRow for R
where
    R: sqlx::Row + Send,
    usize: sqlx::ColumnIndex<R>,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn int(&self, column: usize) -> Result<i64, sqlx::Error> {
        self.try_get(column)
    }

    fn text(&self, column: usize) -> Result<String, sqlx::Error> {
        self.try_get(column)
    }

    fn opt_text(&self, column: usize) -> Result<Option<String>, sqlx::Error> {
        self.try_get(column)
    }

    fn opt_int(&self, column: usize) -> Result<Option<i64>, sqlx::Error> {
        self.try_get(column)
    }

    fn flag(&self, column: usize) -> Result<bool, sqlx::Error> {
        self.try_get(column)
    }

    fn job(&self, store: &'static str) -> Result<JobInfo, Error> {
        crate::store::job_from_row(self, store)
    }
}

/// What differs between SQL databases. Implemented by a unit (SQLite) or a small struct
/// (PostgreSQL: what it needs to open a `LISTEN` connection) held by the [`SqlStore`].
pub(crate) trait Dialect: Send + Sync + Sized + 'static {
    type Db: sqlx::Database;
    type Row: SqlRow;

    /// The store's name in errors.
    const STORE: &'static str;
    /// Its migrations, oldest first.
    const MIGRATIONS: &'static [Migration];
    /// Whether `claims::CLAIM` claims from every queue at once; otherwise it is run once
    /// per queue, with one-element lists.
    const CLAIMS_ALL_QUEUES: bool;
    /// What opens a transaction that writes: SQLite takes its write lock at once, so that a
    /// transaction that reads first cannot fail to upgrade later.
    const BEGIN_WRITE: &'static str;

    /// Runs one statement, [`Value::Now`] read from `clock`; returns how many rows it
    /// changed.
    fn execute<'c>(
        conn: &'c mut Conn<Self>,
        sql: &'c str,
        values: Vec<Value<'c>>,
        clock: &Clock,
    ) -> BoxFuture<'c, Result<u64, sqlx::Error>>;

    /// Runs one statement, [`Value::Now`] read from `clock`; returns the rows it returned.
    fn fetch<'c>(
        conn: &'c mut Conn<Self>,
        sql: &'c str,
        values: Vec<Value<'c>>,
        clock: &Clock,
    ) -> BoxFuture<'c, Result<Vec<Self::Row>, sqlx::Error>>;

    /// Runs several statements in one string, unprepared, as migrations are.
    fn raw<'c>(conn: &'c mut Conn<Self>, sql: &'c str) -> BoxFuture<'c, Result<(), sqlx::Error>>;

    /// Opens the transaction migrations run in, holding whatever lock makes processes that
    /// start together apply each migration once.
    fn begin_migrations<'c>(
        &'c self,
        conn: &'c mut Conn<Self>,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>>;

    /// The placeholder of the `n`th parameter, from 1.
    fn param(n: usize) -> String;

    /// SQL that holds when `column` is among the list bound as the `n`th parameter
    /// ([`Value::Texts`] or [`Value::Ints`]).
    fn among(column: &str, n: usize) -> String;

    /// SQL that holds when a job's tags include the text bound as the `n`th parameter.
    fn has_tag(n: usize) -> String;

    /// The parameters of `enqueue::INSERT_MANY` for `jobs`, by name.
    fn many_values<'a>(jobs: &'a [NewJob]) -> Vec<(&'static str, Value<'a>)>;
}

/// A dialect's [`Dialect::execute`], [`Dialect::fetch`] and [`Dialect::raw`], given its
/// connection and row types and a function `query(sql, values, clock)` that binds its values.
macro_rules! dialect_io {
    ($conn:ty, $row:ty, $query:ident) => {
        fn execute<'c>(
            conn: &'c mut $conn,
            sql: &'c str,
            values: Vec<Value<'c>>,
            clock: &$crate::store::Clock,
        ) -> BoxFuture<'c, Result<u64, sqlx::Error>> {
            let query = $query(sql, values, clock);
            Box::pin(async move {
                let done = query.execute(conn).await?;
                Ok(done.rows_affected())
            })
        }

        fn fetch<'c>(
            conn: &'c mut $conn,
            sql: &'c str,
            values: Vec<Value<'c>>,
            clock: &$crate::store::Clock,
        ) -> BoxFuture<'c, Result<Vec<$row>, sqlx::Error>> {
            Box::pin($query(sql, values, clock).fetch_all(conn))
        }

        fn raw<'c>(conn: &'c mut $conn, sql: &'c str) -> BoxFuture<'c, Result<(), sqlx::Error>> {
            Box::pin(async move { sqlx::Executor::execute(conn, sql).await.map(|_| ()) })
        }
    };
}
pub(crate) use dialect_io;

/// The name of an operation in its error, written when it fails.
pub(crate) trait Op: Fn() -> String + Send + Sync {}
impl<F: Fn() -> String + Send + Sync> Op for F {}

/// A fixed operation name.
/// One statement written for each dialect, side by side in the file that runs it, so that a
/// difference between the two is seen rather than hunted.
pub(crate) struct Both {
    pub(crate) postgres: &'static str,
    pub(crate) sqlite: &'static str,
}

impl Both {
    /// The statement in `D`'s dialect.
    pub(crate) fn of<D: Dialect>(&self) -> &'static str {
        if D::STORE == "postgres" {
            self.postgres
        } else {
            self.sqlite
        }
    }
}

/// A statement whose parameters are named, `$name` in either dialect's text (`$id`,
/// `$run_at::bigint`), and bound by name ([`params!`]): a reader sees what each parameter is
/// where it is used, and a name left without a value is an error rather than a shifted
/// position. A value the statement does not name is left out: one dialect may read `$now`
/// where the other reads its own clock. Each dialect's text, its names
/// turned into the positional parameters the driver binds, is made once, on first use; a
/// binding then only puts the values in that order.
pub(crate) struct Named {
    both: Both,
    compiled: [std::sync::OnceLock<Positional>; 2],
}

/// A [`Named`] statement's text in one dialect: `$1`/`?1`-style, and its names in the order of
/// those positions.
struct Positional {
    sql: String,
    names: Vec<&'static str>,
}

impl Named {
    pub(crate) const fn new(both: Both) -> Named {
        Named {
            both,
            compiled: [std::sync::OnceLock::new(), std::sync::OnceLock::new()],
        }
    }

    /// A statement that only one dialect runs, where the other does the same work its own way
    /// (see `due`).
    pub(crate) const fn only(sql: &'static str) -> Named {
        Named::same(sql)
    }

    /// A statement whose text is the same in both dialects.
    pub(crate) const fn same(sql: &'static str) -> Named {
        Named::new(Both {
            postgres: sql,
            sqlite: sql,
        })
    }

    /// `D`'s text of the statement, and `values` in the order it binds them (those it does not
    /// name left out).
    pub(crate) fn bind<'s, 'v, D: Dialect>(
        &'s self,
        mut values: Vec<(&'static str, Value<'v>)>,
    ) -> Result<(&'s str, Vec<Value<'v>>), sqlx::Error> {
        let which = usize::from(D::STORE != "postgres");
        let compiled = self.compiled[which].get_or_init(|| positional::<D>(self.both.of::<D>()));
        let mut bound = Vec::with_capacity(compiled.names.len());
        for name in &compiled.names {
            let Some(at) = values.iter().position(|(given, _)| given == name) else {
                return Err(sqlx::Error::Protocol(format!(
                    "no value bound for `${name}` in: {}",
                    compiled.sql
                )));
            };
            bound.push(values.swap_remove(at).1);
        }
        Ok((&compiled.sql, bound))
    }

    /// The statement's names in the order of `D`'s positions.
    #[cfg(all(test, feature = "postgres"))]
    pub(crate) fn names<D: Dialect>(&self) -> Vec<&'static str> {
        let which = usize::from(D::STORE != "postgres");
        let compiled = self.compiled[which].get_or_init(|| positional::<D>(self.both.of::<D>()));
        compiled.names.clone()
    }

    /// Runs the statement on `conn` with `values`; returns how many rows it changed.
    pub(crate) fn execute<'c, D: Dialect>(
        &'static self,
        conn: &'c mut Conn<D>,
        values: Vec<(&'static str, Value<'c>)>,
        clock: &Clock,
    ) -> BoxFuture<'c, Result<u64, sqlx::Error>> {
        match self.bind::<D>(values) {
            Ok((sql, values)) => D::execute(conn, sql, values, clock),
            Err(err) => Box::pin(std::future::ready(Err(err))),
        }
    }

    /// Runs the statement on `conn` with `values`; returns its rows.
    pub(crate) fn fetch<'c, D: Dialect>(
        &'static self,
        conn: &'c mut Conn<D>,
        values: Vec<(&'static str, Value<'c>)>,
        clock: &Clock,
    ) -> BoxFuture<'c, Result<Vec<D::Row>, sqlx::Error>> {
        match self.bind::<D>(values) {
            Ok((sql, values)) => D::fetch(conn, sql, values, clock),
            Err(err) => Box::pin(std::future::ready(Err(err))),
        }
    }
}

/// `sql` with each `$name` (a lowercase identifier after `$`) replaced by `D`'s positional
/// parameter, one position per distinct name in the order they first appear.
fn positional<D: Dialect>(sql: &'static str) -> Positional {
    let mut out = String::with_capacity(sql.len());
    let mut names: Vec<&'static str> = Vec::new();
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let len = after
            .char_indices()
            .find(|&(i, c)| !(c == '_' || c.is_ascii_lowercase() || (i > 0 && c.is_ascii_digit())))
            .map_or(after.len(), |(i, _)| i);
        if len == 0 {
            // Not a name: `$.path` in SQLite's JSON, `$1` in a statement still positional.
            out.push('$');
            rest = after;
            continue;
        }
        let name = &after[..len];
        let n = match names.iter().position(|known| *known == name) {
            Some(i) => i + 1,
            None => {
                names.push(name);
                names.len()
            }
        };
        out.push_str(&D::param(n));
        rest = &after[len..];
    }
    out.push_str(rest);
    Positional { sql: out, names }
}

fn named(op: &'static str) -> impl Op + Copy {
    move || op.to_owned()
}

/// A store on a SQL database of dialect `D`.
#[derive(Debug)]
pub(crate) struct SqlStore<D: Dialect> {
    pub(crate) pool: sqlx::Pool<D::Db>,
    /// The pool of the worker's hot path: plain claims, completions and renewals. On
    /// PostgreSQL its connections keep one generic plan per statement (`plan_cache_mode =
    /// force_generic_plan`): these statements run constantly, and PostgreSQL's default, planning
    /// each execution anew with its values, took about as long as running them. Their generic
    /// plans are checked by a test. Other statements (listings whose filters are optional, the
    /// fair and limited claims, whose generic plans read every available job) keep plans made
    /// for their values. On SQLite, the main pool.
    pub(crate) hot: sqlx::Pool<D::Db>,
    pub(crate) dialect: D,
    /// What [`Value::Now`] reads.
    pub(crate) clock: Clock,
}

impl<D: Dialect + Clone> Clone for SqlStore<D> {
    fn clone(&self) -> Self {
        SqlStore {
            pool: self.pool.clone(),
            hot: self.hot.clone(),
            dialect: self.dialect.clone(),
            clock: self.clock.clone(),
        }
    }
}

pub(crate) fn op_error<D: Dialect>(op: impl Into<String>, source: sqlx::Error) -> Error {
    Error::Store {
        store: D::STORE,
        op: op.into(),
        source,
    }
}

pub(crate) fn encode_error<D: Dialect>(id: JobId, error: &AttemptError) -> Result<String, Error> {
    serde_json::to_string(&StoredAttempt::from(error)).map_err(|e| Error::Corrupt {
        store: D::STORE,
        id,
        reason: format!("cannot encode an attempt error: {e}"),
    })
}

pub(crate) fn first<T>(rows: Vec<T>) -> Option<T> {
    rows.into_iter().next()
}

async fn acquire<D: Dialect>(
    pool: &sqlx::Pool<D::Db>,
    op: impl Op,
) -> Result<sqlx::pool::PoolConnection<D::Db>, Error> {
    pool.acquire().await.map_err(|e| op_error::<D>(op(), e))
}

/// Runs the named statement `stmt` on a connection of `pool`; returns its rows.
async fn rows_on<D: Dialect>(
    pool: &sqlx::Pool<D::Db>,
    stmt: &'static Named,
    values: Vec<(&'static str, Value<'_>)>,
    clock: &Clock,
    op: impl Op,
) -> Result<Vec<D::Row>, Error> {
    let mut conn = acquire::<D>(pool, &op).await?;
    stmt.fetch::<D>(&mut conn, values, clock)
        .await
        .map_err(|e| op_error::<D>(op(), e))
}

async fn fetch_on<D: Dialect>(
    mut conn: sqlx::pool::PoolConnection<D::Db>,
    sql: &str,
    values: Vec<Value<'_>>,
    clock: &Clock,
    op: impl Op,
) -> Result<Vec<D::Row>, Error> {
    D::fetch(&mut conn, sql, values, clock)
        .await
        .map_err(|e| op_error::<D>(op(), e))
}

impl<D: Dialect> SqlStore<D> {
    // Each operation's name is written only when it fails (`op`): claims, completions and
    // renewals run constantly and must not format a message each time.

    /// A transaction that writes ([`Dialect::BEGIN_WRITE`]), for an operation of several
    /// statements.
    pub(crate) async fn begin_write(&self) -> Result<sqlx::Transaction<'static, D::Db>, Error> {
        self.pool
            .begin_with(D::BEGIN_WRITE)
            .await
            .map_err(|e| op_error::<D>("begin a transaction", e))
    }

    /// A connection from the pool, for `op`.
    async fn conn(&self, op: impl Op) -> Result<sqlx::pool::PoolConnection<D::Db>, Error> {
        acquire::<D>(&self.pool, op).await
    }

    /// A connection from the hot path's pool ([`SqlStore::hot`]), for `op`.
    async fn hot_conn(&self, op: impl Op) -> Result<sqlx::pool::PoolConnection<D::Db>, Error> {
        acquire::<D>(&self.hot, op).await
    }

    /// Runs one statement on a pooled connection; returns its rows.
    async fn fetch(
        &self,
        sql: &str,
        values: Vec<Value<'_>>,
        op: impl Op,
    ) -> Result<Vec<D::Row>, Error> {
        let conn = self.conn(&op).await?;
        fetch_on::<D>(conn, sql, values, &self.clock, op).await
    }

    /// Runs the named statement `stmt` on a pooled connection; returns how many rows it
    /// changed.
    async fn run(
        &self,
        stmt: &'static Named,
        values: Vec<(&'static str, Value<'_>)>,
        op: impl Op,
    ) -> Result<u64, Error> {
        let mut conn = self.conn(&op).await?;
        stmt.execute::<D>(&mut conn, values, &self.clock)
            .await
            .map_err(|e| op_error::<D>(op(), e))
    }

    /// Runs the named statement `stmt` on a pooled connection; returns its rows.
    async fn rows(
        &self,
        stmt: &'static Named,
        values: Vec<(&'static str, Value<'_>)>,
        op: impl Op,
    ) -> Result<Vec<D::Row>, Error> {
        rows_on::<D>(&self.pool, stmt, values, &self.clock, op).await
    }

    /// Runs the named statement `stmt` of the hot path on its pool; returns its rows.
    async fn rows_hot(
        &self,
        stmt: &'static Named,
        values: Vec<(&'static str, Value<'_>)>,
        op: impl Op,
    ) -> Result<Vec<D::Row>, Error> {
        rows_on::<D>(&self.hot, stmt, values, &self.clock, op).await
    }
}

/// What the stores' claim plan tests fill: a backlog held back in each way a job waits, and a
/// few jobs a claim can take.
/// What the stores' plan tests fill and list: a million completed jobs kept by retention, and a
/// few of a rarer kind and queue inserted first, so that a listing that walked the ids from the
/// newest would pass the million before finding them.
// After the macros above, which they use.
#[macro_use]
mod fragments;
mod bookkeeping;
mod cancels;
pub(crate) mod claims;
mod dead;
pub(crate) mod due;
pub(crate) mod enqueue;
mod fairness;
#[cfg(test)]
pub(crate) mod held_back_cases;
mod history;
mod kinds;
mod ledger;
mod limits;
pub(crate) mod listing;
pub(crate) mod maintenance;
pub(crate) mod migrate;
mod queues;
pub(crate) mod runs;
mod schedules;
#[cfg(feature = "postgres")]
mod vacuum;
pub(crate) mod workflows;

#[cfg(all(test, feature = "sqlite", feature = "postgres"))]
mod tests {
    use super::{Both, Named, Value};
    use crate::store::postgres::Postgres;
    use crate::store::sqlite::Sqlite;

    static PICK: Named = Named::new(Both {
        postgres: "SELECT $id::bigint, jsonb_build_object('n', $n) WHERE $id > 0",
        sqlite: "SELECT $id, json_set('{}', '$.n', $n), '$[#]' WHERE $id > $now",
    });

    /// Each name becomes one position, in the order names first appear, whatever order the
    /// values come in; JSON paths and casts are left alone; a value the statement does not
    /// name is left out.
    #[test]
    fn named_parameters_bind_by_name() {
        let values = || params![n: "x", now: Value::Now, id: 7i64];
        let (sql, bound) = PICK.bind::<Postgres>(values()).expect("bind");
        assert_eq!(
            sql,
            "SELECT $1::bigint, jsonb_build_object('n', $2) WHERE $1 > 0"
        );
        assert!(matches!(
            bound[..],
            [Value::Int(Some(7)), Value::Text(Some("x"))]
        ));
        let (sql, bound) = PICK.bind::<Sqlite>(values()).expect("bind");
        assert_eq!(
            sql,
            "SELECT ?1, json_set('{}', '$.n', ?2), '$[#]' WHERE ?1 > ?3"
        );
        assert!(matches!(
            bound[..],
            [Value::Int(Some(7)), Value::Text(Some("x")), Value::Now]
        ));
    }

    /// A name left without a value is an error that names it, not a NULL bound in its place.
    #[test]
    fn a_missing_value_is_an_error() {
        let err = PICK
            .bind::<Sqlite>(params![id: 7i64, n: "x"])
            .expect_err("`$now` has no value");
        assert!(err.to_string().contains("`$now`"), "{err}");
    }
}
