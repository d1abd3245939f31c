//! The PostgreSQL store: many workers on many machines.
//!
//! Claims take a batch across queues in one statement with `FOR UPDATE SKIP LOCKED`, so workers
//! never wait on each other's rows and never take the same job. Every time comes from the
//! database's clock (`errand_now_ms()`), so machines with skewed clocks agree on what is due and
//! which lease ran out. When a job becomes available, `errand_<schema>` is notified (by the
//! inserting statement itself, once per queue, through `errand_wake`; by a trigger for updates),
//! and workers `LISTEN` on it.
//!
//! The store's tables live in one schema (`public` unless [`Config::schema`](crate::Config::schema)
//! says otherwise), reached through the connections' `search_path`; no statement names it.
//!
//! What happens when lives in [`sql`](super::sql); this module holds PostgreSQL's statements
//! and how to connect.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow};
use sqlx::PgConnection;

use crate::error::{redact, Error};
use crate::info::duration_millis;
use crate::job::JobId;
use crate::migrations::Migration;
use crate::store::sql::{self, op_error, Dialect, SqlStore, Value};
use crate::store::{BoxFuture, Clock, Inserted, NewJob, SYSTEM_CLOCK};

/// PostgreSQL, and what it takes to open a connection of errand's own outside the pool.
#[derive(Clone, Debug)]
pub(crate) struct Postgres {
    /// For `LISTEN`. Boxed: the options are large, and the store is one variant of a small enum.
    options: Box<PgConnectOptions>,
    schema: String,
}

pub(crate) type PostgresStore = SqlStore<Postgres>;

/// The notification payload that says a job was scheduled for later; queue names cannot be
/// `*`.
pub(crate) const SCHEDULED: &str = "*";

/// The prefix of a notification's queue that says the job has limits or `fair_by`; queue
/// names cannot contain `+`.
pub(crate) const SPECIAL: &str = "+";

/// The prefix of a notification that names a running job whose cancellation was asked; queue
/// names cannot contain `!`.
pub(crate) const CANCEL: &str = "!";

/// How long connecting may take before `Client::connect` gives up with the cause.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The most connections of the hot path's pool ([`SqlStore::hot`]): each worker's claim loop
/// holds one for a round trip at a time, and its lease keeper one now and then.
const HOT_CONNECTIONS: u32 = 4;

impl SqlStore<Postgres> {
    pub(crate) fn connect<'a>(
        url: &'a str,
        schema: &'a str,
        max_connections: u32,
        migrate: bool,
    ) -> BoxFuture<'a, Result<PostgresStore, Error>> {
        Box::pin(async move {
            let options = PgConnectOptions::from_str(url)
                .map_err(|e| Error::InvalidUrl {
                    url: redact(url),
                    reason: e.to_string(),
                })?
                // A startup parameter, not SQL: the schema name never becomes part of a statement.
                .options([("search_path", schema)]);
            let connect_error = |source| Error::Connect {
                store: Postgres::STORE,
                url: format!(
                    "{} ({}:{})",
                    redact(url),
                    options.get_host(),
                    options.get_port()
                ),
                source,
            };
            // One connection first, on its own: a pool retries until its acquire timeout and
            // then reports only that it timed out; this reports the cause (refused, unknown
            // host, authentication failed) at once.
            let probe = tokio::time::timeout(
                CONNECT_TIMEOUT,
                <PgConnection as sqlx::Connection>::connect_with(&options),
            )
            .await
            .map_err(|_| {
                connect_error(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {CONNECT_TIMEOUT:?}"),
                )))
            })?
            .map_err(connect_error)?;
            let _ = sqlx::Connection::close(probe).await;
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options.clone())
                .await
                .map_err(connect_error)?;
            // Opened on first use: a client that only enqueues never opens one. Its statements
            // read a few pages each, and never need a plan compiled (see `BEGIN_WRITE`).
            let hot = PgPoolOptions::new()
                .max_connections(max_connections.clamp(1, HOT_CONNECTIONS))
                .acquire_timeout(Duration::from_secs(10))
                .connect_lazy_with(
                    options
                        .clone()
                        .options([("plan_cache_mode", "force_generic_plan"), ("jit", "off")]),
                );
            let store = SqlStore {
                pool,
                hot,
                dialect: Postgres {
                    options: Box::new(options),
                    schema: schema.to_owned(),
                },
                // PostgreSQL's statements read the database's clock.
                clock: Clock::default(),
            };
            if migrate {
                store.migrate().await?;
            } else {
                store.check_version().await?;
            }
            Ok(store)
        })
    }

    /// A listener for this schema's "job available" notifications.
    ///
    /// The listener holds its connection for as long as it lives, so it gets one of its own,
    /// outside the client's pool: a pool of one connection must still serve claims.
    pub(crate) async fn listen(&self) -> Result<PgListener, Error> {
        let own = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_lazy_with((*self.dialect.options).clone());
        let mut listener = PgListener::connect_with(&own)
            .await
            .map_err(|e| op_error::<Postgres>("open a LISTEN connection", e))?;
        listener
            .listen(&format!("errand_{}", self.dialect.schema))
            .await
            .map_err(|e| op_error::<Postgres>("LISTEN for available jobs", e))?;
        Ok(listener)
    }
}

/// Inserts a job in the caller's transaction (see [`sql::insert`]).
pub(crate) fn insert<'a>(
    conn: &'a mut PgConnection,
    job: &'a NewJob,
) -> BoxFuture<'a, Result<Inserted, Error>> {
    sql::enqueue::insert::<Postgres>(conn, job, &SYSTEM_CLOCK)
}

/// Inserts jobs in the caller's transaction (see [`sql::insert_many`]).
pub(crate) fn insert_many<'a>(
    conn: &'a mut PgConnection,
    jobs: &'a [NewJob],
) -> BoxFuture<'a, Result<Vec<JobId>, Error>> {
    sql::enqueue::insert_many::<Postgres>(conn, jobs, &SYSTEM_CLOCK)
}

/// Stores a workflow in the caller's transaction; its id.
pub(crate) fn insert_workflow<'a>(
    conn: &'a mut PgConnection,
    name: &'a str,
    kind: &'static str,
) -> BoxFuture<'a, Result<i64, Error>> {
    sql::workflows::insert_workflow::<Postgres>(conn, name, kind, &SYSTEM_CLOCK)
}

/// Completes a running job in the caller's transaction (see [`sql::complete`]).
pub(crate) fn complete(
    conn: &mut PgConnection,
    id: JobId,
    fence: i64,
) -> BoxFuture<'_, Result<bool, Error>> {
    sql::runs::complete::<Postgres>(conn, id, fence, &SYSTEM_CLOCK)
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

fn query<'q>(sql: &'q str, values: Vec<Value<'q>>, _clock: &Clock) -> PgQuery<'q> {
    values
        .into_iter()
        .fold(sqlx::query(sql), |query, value| match value {
            Value::Int(v) => query.bind(v),
            Value::Bool(v) => query.bind(v),
            Value::Text(v) => query.bind(v),
            Value::Texts(v) => query.bind(v),
            Value::OwnedTexts(v) => query.bind(v),
            Value::Ints(v) => query.bind(v),
            Value::OptTexts(v) => query.bind(v),
            Value::OptInts(v) => query.bind(v),
            Value::Json(v) => query.bind(v),
            // The statements read the database's clock themselves; the parameter is unused.
            Value::Now | Value::Wall => query.bind(None::<i64>),
            Value::Lease(lease) => query.bind(duration_millis(lease)),
        })
}

impl Dialect for Postgres {
    type Db = sqlx::Postgres;
    type Row = PgRow;

    const STORE: &'static str = "postgres";
    const MIGRATIONS: &'static [Migration] = crate::migrations::POSTGRES;
    const CLAIMS_ALL_QUEUES: bool = true;
    // Sent as one simple query: one round trip. errand's statements read a few pages each,
    // but some are estimated costly (a recursive skip through a million rows' keys is costed
    // as if it read them): with JIT on, PostgreSQL compiled each fair and limited claim, 40 ms
    // of compiling to read 9 pages, and a drain beside a million held-back jobs ran at a tenth
    // of its pace. Users' own transactions (`Client::begin`) keep the server's setting.
    const BEGIN_WRITE: &'static str = "BEGIN; SET LOCAL jit = off";

    sql::dialect_io!(PgConnection, PgRow, query);

    /// A transaction holding an advisory lock per schema, so that processes that start together
    /// wait for one another; the schema is created in it.
    fn begin_migrations<'c>(
        &'c self,
        conn: &'c mut PgConnection,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        Box::pin(async move {
            Self::raw(conn, "BEGIN").await?;
            let schema = vec![Value::from(self.schema.as_str())];
            let lock = "SELECT pg_advisory_xact_lock(hashtext('errand migrations ' || $1))";
            Self::execute(conn, lock, schema.clone(), &SYSTEM_CLOCK).await?;
            // `format('%I')` quotes the name on the server: it is bound as a value, never spliced.
            let format = "SELECT format('CREATE SCHEMA IF NOT EXISTS %I', $1::text)";
            let create = Self::fetch(conn, format, schema, &SYSTEM_CLOCK).await?;
            let create: String = match create.first() {
                Some(row) => sqlx::Row::try_get(row, 0)?,
                None => return Err(sqlx::Error::RowNotFound),
            };
            Self::raw(conn, &create).await
        })
    }

    fn param(n: usize) -> String {
        format!("${n}")
    }

    fn among(column: &str, n: usize) -> String {
        format!("{column} = ANY(${n})")
    }

    fn has_tag(n: usize) -> String {
        format!("id IN (SELECT job_id FROM errand_job_tags WHERE tag = ${n})")
    }

    fn many_values<'a>(jobs: &'a [NewJob]) -> Vec<(&'static str, Value<'a>)> {
        // One array per column.
        let (delays, ats) = jobs.iter().map(|j| j.run_at.delay_or_at_ms()).unzip();
        sql::params![
            kinds: Value::Texts(jobs.iter().map(|j| j.kind).collect()),
            queues: Value::Texts(jobs.iter().map(|j| j.queue.as_str()).collect()),
            args: Value::Texts(jobs.iter().map(|j| j.args.as_str()).collect()),
            priorities: Value::Ints(jobs.iter().map(|j| i64::from(j.priority)).collect()),
            max_attempts: Value::Ints(jobs.iter().map(|j| i64::from(j.max_attempts)).collect()),
            keys: Value::OptTexts(jobs.iter().map(|j| j.key.as_deref()).collect()),
            delays: Value::OptInts(delays),
            ats: Value::OptInts(ats),
            // Each job's tags as a JSON array: PostgreSQL has no arrays of arrays of lengths
            // that differ.
            tags: Value::OwnedTexts(jobs.iter().map(NewJob::tags_json).collect()),
            metas: Value::Texts(jobs.iter().map(NewJob::meta_json).collect()),
            timeouts: Value::OptInts(jobs.iter().map(|j| j.timeout_ms).collect()),
            expires_afters: Value::OptInts(jobs.iter().map(|j| j.expiry_ms().0).collect()),
            expires_ats: Value::OptInts(jobs.iter().map(|j| j.expiry_ms().1).collect()),
            limit_keys: Value::OptTexts(jobs.iter().map(|j| j.limit_key.as_deref()).collect()),
            fair_keys: Value::OptTexts(jobs.iter().map(|j| j.fair_key.as_deref()).collect()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_worker_never_buries_a_kind_it_knows() {
        let schema = format!("errand_burial_{}", std::process::id());
        let Some(store) = test_store(&schema).await else {
            return;
        };
        sql::maintenance::check_burial_spares_known_kinds(&store).await;
        drop_schema(&store, &schema).await;
    }

    /// With 1,000,000 retries backing off (an outage's worth) and a few available jobs, a claim
    /// asking for more than there is reads the available ones through their index and walks
    /// none of the waiting ones. (Before the claim index held only `available` jobs, the same
    /// claim filtered out all 1,000,000 on every poll.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_claim_walks_no_waiting_jobs() {
        let schema = format!("errand_plan_{}", std::process::id());
        let Some(store) = test_store(&schema).await else {
            return;
        };
        let fill = "INSERT INTO errand_jobs (kind, queue, args, state, priority, max_attempts, run_at, created_at)
                    SELECT 'k', 'q', '{}', $1, 5, 25, errand_now_ms() + $2, 0 FROM generate_series(1, $3)";
        for (state, offset, count) in [
            ("retryable", 3_600_000i64, 1_000_000i64),
            ("available", -1000, 10),
        ] {
            sqlx::query(fill)
                .bind(state)
                .bind(offset)
                .bind(count)
                .execute(&store.pool)
                .await
                .expect("fill the table");
        }
        sqlx::query("ANALYZE errand_jobs")
            .execute(&store.pool)
            .await
            .expect("analyze");
        // With the values (the main pool's custom plans), and as the hot path's pool runs
        // them: one generic plan each, the combined statement also completing three runs.
        let mut plans = Vec::new();
        let mut conn = store.pool.acquire().await.expect("a connection");
        let lease = std::time::Duration::from_secs(30);
        let claim = || {
            sql::params![
                queues: Value::Texts(vec!["q"]),
                limits: Value::Ints(vec![100]),
                lease: Value::Lease(lease),
                worker: "plan-test",
                kinds: Value::Texts(vec!["k"]),
                now: Value::Now,
            ]
        };
        let (claim_sql, values) = sql::claims::CLAIM.bind::<Postgres>(claim()).expect("bind");
        let explain = format!("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {claim_sql}");
        let custom = query(&explain, values, &SYSTEM_CLOCK);
        plans.push(("custom", in_rollback(&mut conn, custom).await));
        // The hot pool's generic plans: each statement prepared with its parameters' types
        // and run with literal arguments, in the order the statement numbers them.
        let mut hot = store.hot.acquire().await.expect("a hot connection");
        let argument = |name: &str| match name {
            "queues" => ("text[]", "ARRAY['q']"),
            "limits" => ("bigint[]", "ARRAY[100]"),
            "kinds" => ("text[]", "ARRAY['k']"),
            "lease" => ("bigint", "30000"),
            "worker" => ("text", "'plan-test'"),
            "ids" => ("bigint[]", "ARRAY[1, 2, 3]"),
            "fences" => ("bigint[]", "ARRAY[1, 1, 1]"),
            other => panic!("no argument for `${other}`"),
        };
        let mut exchange = claim();
        exchange.extend(sql::params![
            ids: Value::Ints(vec![1, 2, 3]),
            fences: Value::Ints(vec![1, 1, 1]),
        ]);
        for (name, statement, values) in [
            ("claim", &sql::claims::CLAIM, claim()),
            (
                "complete_and_claim",
                &sql::claims::COMPLETE_AND_CLAIM,
                exchange,
            ),
        ] {
            let (text, _) = statement.bind::<Postgres>(values).expect("bind");
            let names = statement.names::<Postgres>();
            let types: Vec<&str> = names.iter().map(|n| argument(n).0).collect();
            let arguments: Vec<&str> = names.iter().map(|n| argument(n).1).collect();
            sqlx::raw_sql(&format!("PREPARE {name}({}) AS {text}", types.join(", ")))
                .execute(&mut *hot)
                .await
                .expect("prepare");
            let explain = format!(
                "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE {name}({})",
                arguments.join(", ")
            );
            let generic = sqlx::query(&explain);
            plans.push((name, in_rollback(&mut hot, generic).await));
        }
        drop((conn, hot));
        drop_schema(&store, &schema).await;
        for (name, plan) in plans {
            assert_reads_only_available(name, &plan);
        }
    }

    /// With 1,000,000 jobs held back in each way a job waits (under a limit whose key is
    /// full, one tenant's backlog of a fair kind, in a paused queue, pending on a parent,
    /// scheduled for tomorrow) and ten jobs to take, every claim (plain, limited, fair, and the
    /// worker's combined exchange) and the promotion read a few pages: none walks what it
    /// cannot take. (Before the claims' indexes held only jobs they can take, the plain claim
    /// walked the limited and fair backlogs row by row, and the limited claim counted the
    /// slots of every limited job.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn claims_walk_no_held_back_jobs() {
        use sql::held_back_cases::{AGED, FILL, HOLD_SLOT, PAUSE};
        let schema = format!("errand_held_back_plan_{}", std::process::id());
        let Some(store) = test_store(&schema).await else {
            return;
        };
        let fill = "INSERT INTO errand_jobs (kind, queue, args, state, priority, max_attempts,
                        run_at, created_at, limit_key, fair_key, waiting_on)
                    SELECT $1, $2, '{}', $3, 5, 25, errand_now_ms() + $4, 0, $5, $6, $7
                    FROM generate_series(1, $8)";
        for (kind, queue, state, offset, limit_key, fair_key, waiting_on, count) in FILL {
            sqlx::query(fill)
                .bind(kind)
                .bind(queue)
                .bind(state)
                .bind(offset)
                .bind(limit_key)
                .bind(fair_key)
                .bind(i32::try_from(waiting_on).expect("a small count"))
                .bind(count)
                .execute(&store.pool)
                .await
                .expect("fill the table");
        }
        for setup in [HOLD_SLOT, PAUSE, AGED, "VACUUM ANALYZE errand_jobs"] {
            sqlx::raw_sql(setup)
                .execute(&store.pool)
                .await
                .expect("set up the backlog");
        }
        let mut plans = Vec::new();
        let cases = sql::held_back_cases::claims::<Postgres>().into_iter();
        for sql::held_back_cases::Case {
            name,
            statement,
            values,
            rows,
            index,
            pages,
        } in cases
        {
            let (sql, values) = statement.bind::<Postgres>(values).expect("bind");
            let mut conn = store.pool.acquire().await.expect("a connection");
            sqlx::raw_sql("BEGIN")
                .execute(&mut *conn)
                .await
                .expect("begin");
            let explain = format!("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}");
            let plan: Vec<String> = query(&explain, values, &SYSTEM_CLOCK)
                .fetch_all(&mut *conn)
                .await
                .expect("explain")
                .iter()
                .map(|row| sqlx::Row::get::<String, _>(row, 0))
                .collect();
            sqlx::raw_sql("ROLLBACK")
                .execute(&mut *conn)
                .await
                .expect("roll back");
            plans.push((name, plan.join("\n"), rows, index, pages));
        }
        drop_schema(&store, &schema).await;
        for (name, plan, rows, index, pages) in plans {
            // What finding the jobs read: a claim's `picked` part (the rest writes the rows
            // it found, each a few pages of every index its new state is in), or the whole.
            let read = plan
                .split_once("CTE picked")
                .map_or(pages_read(&plan), |(_, picking)| pages_read(picking));
            let whole = pages_read(&plan);
            eprintln!("{name}: {read} pages to find {rows} rows, {whole} in all");
            assert!(
                !plan.contains("Seq Scan on errand_jobs "),
                "{name} walks the table:\n{plan}"
            );
            assert!(plan.contains(index), "{name} reads no {index}:\n{plan}");
            assert!(read < pages, "{name} read {read} pages:\n{plan}");
            assert!(
                plan.lines()
                    .next()
                    .is_some_and(|l| l.contains(&format!("rows={rows} "))),
                "{name} found {rows} rows:\n{plan}"
            );
        }
    }

    /// With 1,000,000 completed jobs kept by retention, every listing an operator asks for
    /// (by state, queue, kind, key or time, newest or oldest first) and every count of a state
    /// or kind reads an index and a few pages, never the table.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn listings_read_an_index_at_a_million_jobs() {
        let schema = format!("errand_listing_plan_{}", std::process::id());
        let Some(store) = test_store(&schema).await else {
            return;
        };
        let fill = "INSERT INTO errand_jobs (kind, queue, args, state, priority, max_attempts,
                        idempotency_key, run_at, created_at, finished_at, tags)
                    SELECT $1, $2, '{}', $3, 5, 25, $1 || '-' || g, g, g, g,
                           CASE WHEN $5 THEN ARRAY['vip'] ELSE '{}' END
                    FROM generate_series(1, $4) AS g";
        for (kind, queue, state, count, tagged) in sql::listing::cases::FILL {
            sqlx::query(fill)
                .bind(kind)
                .bind(queue)
                .bind(state)
                .bind(count)
                .bind(tagged)
                .execute(&store.pool)
                .await
                .expect("fill the table");
        }
        sqlx::raw_sql("VACUUM ANALYZE errand_jobs")
            .execute(&store.pool)
            .await
            .expect("vacuum");
        let mut plans = Vec::new();
        for (name, filter, page) in sql::listing::cases::listings() {
            let (sql, values) = sql::listing::listing::<Postgres>(&filter, page);
            plans.push((name, explain(&store, &sql, values).await));
        }
        for (name, filter) in sql::listing::cases::counts() {
            let (sql, values) = sql::listing::counting::<Postgres>(&filter);
            plans.push((name, explain(&store, &sql, values).await));
        }
        drop_schema(&store, &schema).await;
        for (name, plan) in plans {
            assert!(
                !plan.contains("Seq Scan"),
                "{name} walks the table:\n{plan}"
            );
            assert!(plan.contains("Index"), "{name} reads no index:\n{plan}");
            let pages = pages_read(&plan);
            // A listing by tag reads every job with the tag through the tags' index (2,000
            // here, a few pages each), then sorts them: bounded by the tag, not the table.
            let most = if name == "a tag" { 5 * 2_000 } else { 500 };
            assert!(pages < most, "{name} read {pages} pages:\n{plan}");
        }
    }

    /// The plan of `sql` with `values`, run.
    async fn explain(store: &PostgresStore, sql: &str, values: Vec<Value<'_>>) -> String {
        let explain = format!("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}");
        let rows = query(&explain, values, &SYSTEM_CLOCK)
            .fetch_all(&store.pool)
            .await
            .expect("explain");
        rows.iter()
            .map(|row| sqlx::Row::get::<String, _>(row, 0))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The pages a plan's whole statement read, from its top node's `Buffers: shared hit=..
    /// read=..` line (all of them when the line is missing).
    fn pages_read(plan: &str) -> u64 {
        plan.lines()
            .find_map(|line| line.trim().strip_prefix("Buffers: shared "))
            .map(|counts| {
                counts
                    .split_whitespace()
                    .filter_map(|c| c.split_once('='))
                    .filter(|(name, _)| matches!(*name, "hit" | "read"))
                    .filter_map(|(_, n)| n.parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(u64::MAX)
    }

    /// A store in a fresh schema of the test database; `None` (the test skipped) when there is
    /// no PostgreSQL and CI is not set.
    async fn test_store(schema: &str) -> Option<PostgresStore> {
        let url = std::env::var("ERRAND_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        match PostgresStore::connect(&url, schema, 2, true).await {
            Ok(store) => Some(store),
            Err(err) if std::env::var_os("CI").is_none() => {
                eprintln!("SKIPPED (PostgreSQL): {err}");
                None
            }
            Err(err) => panic!("PostgreSQL is required when CI is set: {err}"),
        }
    }

    async fn drop_schema(store: &PostgresStore, schema: &str) {
        let drop =
            sqlx::query_scalar::<_, String>("SELECT format('DROP SCHEMA %I CASCADE', $1::text)")
                .bind(schema)
                .fetch_one(&store.pool)
                .await
                .expect("build DROP SCHEMA");
        sqlx::raw_sql(&drop)
            .execute(&store.pool)
            .await
            .expect("drop the test schema");
    }

    /// Runs an EXPLAIN ANALYZE of a claim in a transaction it rolls back; returns the plan.
    async fn in_rollback(conn: &mut PgConnection, explain: PgQuery<'_>) -> String {
        sqlx::raw_sql("BEGIN")
            .execute(&mut *conn)
            .await
            .expect("begin");
        let rows = explain.fetch_all(&mut *conn).await.expect("explain");
        let plan: Vec<String> = rows.iter().map(|row| sqlx::Row::get(row, 0)).collect();
        sqlx::raw_sql("ROLLBACK")
            .execute(&mut *conn)
            .await
            .expect("roll back");
        plan.join("\n")
    }

    /// Fails unless the claim in `plan` read the plain claim's index and little else.
    fn assert_reads_only_available(name: &str, plan: &str) {
        let removed: u64 = plan
            .lines()
            .filter_map(|line| line.trim().strip_prefix("Rows Removed by Filter: "))
            .filter_map(|n| n.trim().parse::<u64>().ok())
            .sum();
        // The claim that walked every waiting job touched about 5,000 pages.
        let pages = pages_read(plan);
        assert!(plan.contains("errand_jobs_plain"), "{name}: {plan}");
        assert!(!plan.contains("Seq Scan"), "{name}: {plan}");
        assert!(removed < 1000, "{name} walked {removed} rows:\n{plan}");
        assert!(pages < 500, "{name} read {pages} pages:\n{plan}");
        assert!(
            plan.contains("rows=10 "),
            "{name} claimed the 10 available jobs:\n{plan}"
        );
    }
}
