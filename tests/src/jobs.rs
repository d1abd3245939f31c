//! The jobs the tests enqueue. Each takes a `tag` so that it records its runs apart from other
//! tests running in the same process.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use errand::{job, Context, JobError, Outcome};
use serde::{Deserialize, Serialize};

use crate::common::{gate, record, records};

#[derive(Debug, thiserror::Error, JobError)]
pub enum TestError {
    #[error("flaky on attempt {0}")]
    #[transient]
    Flaky(u32),
    #[error("broken: {0}")]
    #[permanent]
    Broken(String),
    #[error("come back later")]
    #[transient]
    Later {
        #[retry_after]
        wait: Duration,
    },
    #[error(transparent)]
    #[transient]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    #[transient]
    Errand(#[from] errand::Error),
}

/// Retries after 10 ms, so tests on real stores take milliseconds.
pub fn fast(_attempt: u32) -> Duration {
    Duration::from_millis(10)
}

#[job(backoff = fast)]
pub async fn succeed(tag: String) -> Result<(), TestError> {
    record(&tag, "ran");
    Ok(())
}

#[job(retry = 5, backoff = fast)]
pub async fn flaky(ctx: &Context, tag: String, failures: u32) -> Result<(), TestError> {
    record(&tag, ctx.attempt());
    if ctx.attempt() <= failures {
        return Err(TestError::Flaky(ctx.attempt()));
    }
    Ok(())
}

#[job(retry = 5, backoff = fast)]
pub async fn broken(tag: String) -> Result<(), TestError> {
    record(&tag, "ran");
    Err(TestError::Broken("the card was declined".to_owned()))
}

#[job(retry = 2, backoff = fast)]
pub async fn always_fails(ctx: &Context, tag: String) -> Result<(), TestError> {
    record(&tag, ctx.attempt());
    Err(TestError::Flaky(ctx.attempt()))
}

#[job(retry = 3)]
pub async fn rate_limited(tag: String) -> Result<(), TestError> {
    record(&tag, "ran");
    Err(TestError::Later {
        wait: Duration::from_secs(3600),
    })
}

/// Snoozes `times` times, then completes.
#[job(retry = 0, backoff = fast)]
pub async fn snoozes(tag: String, times: usize) -> Result<Outcome, TestError> {
    record(&tag, "ran");
    if records(&tag).len() <= times {
        return Ok(Outcome::Snooze(Duration::from_millis(10)));
    }
    Ok(Outcome::Done)
}

#[job(backoff = fast)]
pub async fn cancels(tag: String) -> Result<Outcome, TestError> {
    record(&tag, "ran");
    Ok(Outcome::Cancel("the order was refunded".to_owned()))
}

#[job(retry = 3, backoff = fast)]
pub async fn panics_once(ctx: &Context, tag: String) -> Result<(), TestError> {
    record(&tag, ctx.attempt());
    if ctx.attempt() == 1 {
        panic!("boom on the first attempt");
    }
    Ok(())
}

#[job(retry = 3, backoff = fast, timeout = "200ms")]
pub async fn slow_once(ctx: &Context, tag: String) -> Result<(), TestError> {
    record(&tag, ctx.attempt());
    if ctx.attempt() == 1 {
        // Never returns: the worker must give up on it at the timeout.
        std::future::pending::<()>().await;
    }
    Ok(())
}

/// Records that it started, then waits until the test opens its gate.
#[job(backoff = fast)]
pub async fn blocks(ctx: &Context, tag: String) -> Result<(), TestError> {
    record(&tag, format!("started attempt {}", ctx.attempt()));
    let gate = gate(&tag);
    let _permit = gate
        .acquire()
        .await
        .map_err(|_| TestError::Broken("gate closed".into()))?;
    record(&tag, "finished");
    Ok(())
}

/// Records its number after 5 ms: a drain of a thousand takes one worker of 16 slots about
/// 300 ms, long enough for a second worker started beside it to take its share.
#[job(queue = "race", backoff = fast)]
pub async fn count_run(tag: String, n: u32) -> Result<(), TestError> {
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    record(&tag, n);
    Ok(())
}

#[job(key = "charge-<order_id>", backoff = fast)]
pub async fn charge(
    ctx: &Context,
    tag: String,
    order_id: i64,
    amount_cents: i64,
) -> Result<(), TestError> {
    record(&tag, ctx.idempotency_key());
    let _ = (order_id, amount_cents);
    Ok(())
}

#[job(key = "ship-<order.id>-to-<order.address.city>")]
pub async fn ship(order: Order) -> Result<(), TestError> {
    let _ = order;
    Ok(())
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: u64,
    pub address: Address,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Address {
    pub city: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    pub text: String,
    pub nested: Nested,
    pub maybe: Option<String>,
    pub nothing: Option<String>,
    pub smallest: i64,
    pub largest: u64,
    pub ratio: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Nested {
    pub list: Vec<Option<i64>>,
    pub map: BTreeMap<String, u32>,
}

/// Records its arguments as JSON, to compare with what was enqueued.
#[job]
pub async fn round_trip(
    tag: String,
    payload: Payload,
    label: Option<String>,
) -> Result<(), TestError> {
    record(
        &tag,
        serde_json::to_string(&(payload, label)).map_err(|e| TestError::Broken(e.to_string()))?,
    );
    Ok(())
}

#[job(queue = "first", backoff = fast)]
pub async fn in_first(tag: String, label: String) -> Result<(), TestError> {
    record(&tag, label);
    Ok(())
}

#[job(queue = "second", backoff = fast)]
pub async fn in_second(tag: String, label: String) -> Result<(), TestError> {
    record(&tag, label);
    Ok(())
}

// Jobs for worker processes: they record each run in the test's own table, `test_runs`, on the
// database the worker process was pointed at.

static RECORDER: OnceLock<sqlx::PgPool> = OnceLock::new();

/// Where process jobs record their runs: set once per process (by the worker process at start,
/// or by the one test in the suite that runs `pay_in_tx` in-process).
pub fn set_recorder(pool: sqlx::PgPool) {
    let _ = RECORDER.set(pool);
}

/// The pool set by [`set_recorder`], if any.
pub fn recorder() -> Option<&'static sqlx::PgPool> {
    RECORDER.get()
}

async fn record_run(ctx: &Context, n: i64, event: &str) -> Result<(), TestError> {
    let pool = RECORDER
        .get()
        .ok_or_else(|| TestError::Broken("no recorder in this process".into()))?;
    sqlx::query("INSERT INTO test_runs (n, pid, attempt, event) VALUES ($1, $2, $3, $4)")
        .bind(n)
        .bind(i64::from(std::process::id()))
        .bind(i64::from(ctx.attempt()))
        .bind(event)
        .execute(pool)
        .await?;
    Ok(())
}

/// Records every run: a job run twice would leave two rows.
#[job(queue = "procs", retry = 20, backoff = fast)]
pub async fn recorded_run(ctx: &Context, n: i64) -> Result<(), TestError> {
    record_run(ctx, n, "ran").await
}

/// Starts, then on its first attempt hangs until its worker is killed.
#[job(queue = "procs", retry = 20, backoff = fast)]
pub async fn hangs_on_first_attempt(ctx: &Context, n: i64) -> Result<(), TestError> {
    record_run(ctx, n, "started").await?;
    if ctx.attempt() == 1 {
        std::future::pending::<()>().await;
    }
    record_run(ctx, n, "finished").await
}

/// The table process jobs record into, in `pool`'s schema.
pub async fn create_runs_table(pool: &sqlx::PgPool) {
    sqlx::query("CREATE TABLE IF NOT EXISTS test_runs (n BIGINT NOT NULL, pid BIGINT NOT NULL, attempt BIGINT NOT NULL, event TEXT NOT NULL)")
        .execute(pool)
        .await
        .expect("create test_runs");
    sqlx::query("CREATE TABLE IF NOT EXISTS test_gates (name TEXT NOT NULL)")
        .execute(pool)
        .await
        .expect("create test_gates");
    sqlx::query("ALTER TABLE test_runs ADD COLUMN IF NOT EXISTS at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()")
        .execute(pool)
        .await
        .expect("add test_runs.at");
}

/// Records its start, runs until `deaths` deaths have been handled (recorded in `deaths`), and
/// records its end: it runs through a burst of death handlers, and a job run twice (its lease
/// lost meanwhile) leaves two starts.
#[job(queue = "procs", retry = 20, backoff = fast)]
pub async fn recorded_long_run(ctx: &Context, n: i64, deaths: i64) -> Result<(), TestError> {
    record_run(ctx, n, "started").await?;
    let pool = RECORDER
        .get()
        .ok_or_else(|| TestError::Broken("no recorder in this process".into()))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let handled: i64 = sqlx::query_scalar("SELECT count(DISTINCT job_id) FROM deaths")
            .fetch_one(pool)
            .await?;
        if handled >= deaths {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err(TestError::Broken(format!(
                "only {handled} of {deaths} deaths handled"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    record_run(ctx, n, "finished").await
}

/// Takes a little while, so that some runs are under way when the database restarts.
#[job(queue = "procs", retry = 20, backoff = fast)]
pub async fn recorded_slow_run(ctx: &Context, n: i64) -> Result<(), TestError> {
    tokio::time::sleep(Duration::from_millis(20)).await;
    record_run(ctx, n, "ran").await
}

/// Writes its effect and completes itself in one transaction on the test's PostgreSQL schema,
/// then fails if told to: the completion must stand, and the effect must not repeat.
#[job(retry = 3, backoff = fast)]
pub async fn pay_in_tx(
    ctx: &Context,
    order_id: i64,
    fail_after_commit: bool,
) -> Result<(), TestError> {
    let pool = RECORDER
        .get()
        .ok_or_else(|| TestError::Broken("no recorder in this process".into()))?;
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO payments (order_id) VALUES ($1)")
        .bind(order_id)
        .execute(&mut *tx)
        .await?;
    ctx.complete_in(&mut tx)
        .await
        .map_err(|e| TestError::Broken(e.to_string()))?;
    tx.commit().await?;
    if fail_after_commit {
        return Err(TestError::Flaky(ctx.attempt()));
    }
    Ok(())
}

/// Attempt 1 waits for the gate `resume-1` and then fails for good; later attempts wait for the
/// gate `finish-<attempt>` and succeed. A test stalls the worker of attempt 1, lets another
/// worker take the job over, and opens the gates in the order it needs.
#[job(queue = "procs", retry = 20, backoff = fast)]
pub async fn stalls_then_fails(ctx: &Context, n: i64) -> Result<(), TestError> {
    record_run(ctx, n, "started").await?;
    if ctx.attempt() == 1 {
        wait_for_gate("resume-1").await?;
        record_run(ctx, n, "resumed").await?;
        return Err(TestError::Broken("a stale run's failure".to_owned()));
    }
    wait_for_gate(&format!("finish-{}", ctx.attempt())).await?;
    record_run(ctx, n, "finished").await
}

/// Waits until the test inserts `name` into `test_gates`.
async fn wait_for_gate(name: &str) -> Result<(), TestError> {
    let pool = RECORDER
        .get()
        .ok_or_else(|| TestError::Broken("no recorder in this process".into()))?;
    loop {
        let open: i64 = sqlx::query_scalar("SELECT count(*) FROM test_gates WHERE name = $1")
            .bind(name)
            .fetch_one(pool)
            .await?;
        if open > 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens gate `name` for [`stalls_then_fails`].
pub async fn open_gate(pool: &sqlx::PgPool, name: &str) {
    sqlx::query("INSERT INTO test_gates (name) VALUES ($1)")
        .bind(name)
        .execute(pool)
        .await
        .expect("open a gate");
}

// Unique jobs: one job per strategy, each behaving as its `mode` says, so a test can put a job
// of each strategy in each state and then try a duplicate.

/// What a unique test job does on its run: `ok`, `block` (until its tag's gate opens), `fail`
/// (transiently, back in an hour), `die` (permanently) or `cancel`.
async fn behave(ctx: &Context, tag: &str, mode: &str) -> Result<Outcome, TestError> {
    record(tag, format!("{mode}:{}", ctx.attempt()));
    match mode {
        "block" => {
            let gate = gate(tag);
            let _permit = gate
                .acquire()
                .await
                .map_err(|_| TestError::Broken("gate closed".into()))?;
            Ok(Outcome::Done)
        }
        "fail" => Err(TestError::Later {
            wait: Duration::from_secs(3600),
        }),
        "die" => Err(TestError::Broken("dies".to_owned())),
        "cancel" => Ok(Outcome::Cancel("cancelled".to_owned())),
        _ => Ok(Outcome::Done),
    }
}

#[job(unique = "until_executing", key = "u-<id>", retry = 3, backoff = fast)]
pub async fn until_executing_job(
    ctx: &Context,
    tag: String,
    id: i64,
    mode: String,
) -> Result<Outcome, TestError> {
    let _ = id; // in the key only
    let _ = id; // in the key only
    behave(ctx, &tag, &mode).await
}

#[job(unique = "until_executed", key = "u-<id>", retry = 3, backoff = fast)]
pub async fn until_executed_job(
    ctx: &Context,
    tag: String,
    id: i64,
    mode: String,
) -> Result<Outcome, TestError> {
    let _ = id; // in the key only
    let _ = id; // in the key only
    behave(ctx, &tag, &mode).await
}

#[job(unique = "while_executing", key = "u-<id>", retry = 3, backoff = fast)]
pub async fn while_executing_job(
    ctx: &Context,
    tag: String,
    id: i64,
    mode: String,
) -> Result<Outcome, TestError> {
    let _ = id; // in the key only
    let _ = id; // in the key only
    behave(ctx, &tag, &mode).await
}

#[job(unique = "until_expired", unique_for = "1h", key = "u-<id>", retry = 3, backoff = fast)]
pub async fn until_expired_job(
    ctx: &Context,
    tag: String,
    id: i64,
    mode: String,
) -> Result<Outcome, TestError> {
    let _ = id; // in the key only
    let _ = id; // in the key only
    behave(ctx, &tag, &mode).await
}

#[job(unique = "until_expired", unique_for = "1s", key = "short-<id>")]
pub async fn expires_soon(id: i64) -> Result<(), TestError> {
    let _ = id; // in the key only
    Ok(())
}

#[job(unique = "until_executed", key = "r-<id>", on_conflict = "replace", backoff = fast)]
pub async fn replaceable(
    ctx: &Context,
    tag: String,
    id: i64,
    mode: String,
) -> Result<Outcome, TestError> {
    let _ = id; // in the key only
    let _ = id; // in the key only
    behave(ctx, &tag, &mode).await
}

#[job(unique = "until_executed", key = "x-<id>", on_conflict = "reject")]
pub async fn rejecting(id: i64) -> Result<(), TestError> {
    let _ = id;
    Ok(())
}

#[job(key = "k-<text>")]
pub async fn long_key(text: String) -> Result<(), TestError> {
    let _ = text;
    Ok(())
}

// The effect ledger.

/// Its step records an effect and returns the attempt it ran in; attempt 1 then fails.
#[job(key = "lf-<order>", retry = 3, backoff = fast)]
pub async fn ledger_flaky(ctx: &Context, tag: String, order: i64) -> Result<(), TestError> {
    let _ = order; // in the key only
    let ran_in: u32 = ctx
        .step("effect", async {
            record(&tag, "effect");
            Ok::<_, TestError>(ctx.attempt())
        })
        .await?;
    record(&tag, format!("got {ran_in} as {}", ctx.step_key("effect")));
    if ctx.attempt() == 1 {
        return Err(TestError::Flaky(1));
    }
    Ok(())
}

/// Its step fails on attempt 1 and succeeds on attempt 2.
#[job(key = "ls-<order>", retry = 3, backoff = fast)]
pub async fn ledger_step_fails(ctx: &Context, tag: String, order: i64) -> Result<(), TestError> {
    let _ = order; // in the key only
    let got: u32 = ctx
        .step("effect", async {
            record(&tag, format!("try {}", ctx.attempt()));
            if ctx.attempt() == 1 {
                return Err(TestError::Flaky(1));
            }
            Ok(ctx.attempt())
        })
        .await?;
    record(&tag, format!("got {got}"));
    Ok(())
}

/// A step in a job without a key: its ledger is the job's own.
#[job(backoff = fast)]
pub async fn ledger_keyless(ctx: &Context, tag: String) -> Result<(), TestError> {
    let id = ctx.id().get();
    let got: i64 = ctx
        .step("effect", async {
            record(&tag, "effect");
            Ok::<_, TestError>(id)
        })
        .await?;
    record(&tag, format!("got {}", got == id));
    Ok(())
}

/// Charges a fake gateway through the ledger, then hangs on its first attempt so that a test
/// can kill its worker between the charge and the completion.
#[job(queue = "procs", unique = "until_executed", key = "pay-<order_id>", retry = 20, backoff = fast)]
pub async fn pay_with_ledger(ctx: &Context, order_id: i64) -> Result<(), TestError> {
    let pool = RECORDER
        .get()
        .ok_or_else(|| TestError::Broken("no recorder in this process".into()))?;
    let step_key = ctx.step_key("charge");
    let charge: i64 = ctx
        .step("charge", async {
            // A gateway that charges every request: only the ledger keeps this to one charge.
            let id = sqlx::query_scalar(
                "INSERT INTO gateway_charges (order_id, step_key) VALUES ($1, $2) RETURNING id",
            )
            .bind(order_id)
            .bind(&step_key)
            .fetch_one(pool)
            .await?;
            Ok::<_, TestError>(id)
        })
        .await?;
    record_run(ctx, charge, "charged").await?;
    if ctx.attempt() == 1 {
        std::future::pending::<()>().await;
    }
    record_run(ctx, charge, "completed").await
}

/// No two of these run at once, on any node: they share one key.
#[job(queue = "procs", unique = "while_executing", key = "exclusive", retry = 20, backoff = fast)]
pub async fn exclusive_section(ctx: &Context, n: i64) -> Result<(), TestError> {
    record_run(ctx, n, "start").await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    record_run(ctx, n, "end").await
}

// Failures as a workflow.

/// Fails transiently on every one of its 41 attempts.
#[job(retry = 40, backoff = fast)]
pub async fn fails_forty_times(ctx: &Context) -> Result<(), TestError> {
    Err(TestError::Flaky(ctx.attempt()))
}

/// Starts, then waits until its run is cancelled.
#[job(backoff = fast)]
pub async fn waits_for_cancel(ctx: &Context, tag: String) -> Result<(), TestError> {
    record(&tag, "started");
    ctx.cancelled().await;
    record(&tag, "saw the cancellation");
    Ok(())
}

/// Ends as its number says: 0 completes, 1 fails permanently, 2 fails transiently until it
/// runs out of retries, 3 fails transiently once and then completes.
#[job(queue = "procs", retry = 2, backoff = fast)]
pub async fn mixed_failure(ctx: &Context, n: i64) -> Result<(), TestError> {
    match n % 4 {
        1 => Err(TestError::Broken(format!("job {n} is broken"))),
        2 => Err(TestError::Flaky(ctx.attempt())),
        3 if ctx.attempt() == 1 => Err(TestError::Flaky(1)),
        _ => Ok(()),
    }
}

/// Panics when dropped: a value a job holds when its timeout cuts it off.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("dropped a value whose Drop panics");
        }
    }
}

/// On its first attempt, holds a value whose `Drop` panics until its timeout cuts it off: the
/// panic comes when the worker drops the job's future, outside the job's own code.
#[job(retry = 3, backoff = fast, timeout = "100ms")]
pub async fn panics_when_cut_off(ctx: &Context, tag: String) -> Result<(), TestError> {
    record(&tag, format!("attempt {}", ctx.attempt()));
    if ctx.attempt() == 1 {
        let _held = PanicsOnDrop;
        std::future::pending::<()>().await;
    }
    Ok(())
}

/// Charges through the ledger under a key of two values: `("x-y", "z")` and `("x", "y-z")`
/// must not share a key, or the second would get the first's recorded charge.
#[job(key = "pair-<a>-<b>", backoff = fast)]
pub async fn ledger_pair(
    ctx: &Context,
    tag: String,
    a: String,
    b: String,
) -> Result<(), TestError> {
    let charged: String = ctx
        .step("charge", async { Ok::<_, TestError>(format!("{a}|{b}")) })
        .await?;
    record(&tag, charged);
    Ok(())
}

/// Snoozes for `Duration::MAX`, or asks to be retried after it: the store must clamp, never
/// overflow.
#[job(retry = 3)]
pub async fn waits_forever(snooze: bool) -> Result<Outcome, TestError> {
    if snooze {
        Ok(Outcome::Snooze(Duration::MAX))
    } else {
        Err(TestError::Later {
            wait: Duration::MAX,
        })
    }
}

/// A pool on the test server whose connections reach `schema` only if `reach` says so.
async fn pool_on(schema: &str, reach: bool) -> Result<sqlx::PgPool, TestError> {
    let mut options: sqlx::postgres::PgConnectOptions = crate::common::postgres_url()
        .parse()
        .map_err(|e: sqlx::Error| TestError::Broken(e.to_string()))?;
    if reach {
        options = options.options([("search_path", schema)]);
    }
    Ok(sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?)
}

/// The documented `complete_in` pattern, on a transaction whose connection cannot see errand's
/// schema: `complete_in` fails, `?` fails the job, and nothing is completed without its writes.
#[job(retry = 0)]
pub async fn completes_in_a_blind_transaction(
    ctx: &Context,
    schema: String,
) -> Result<(), TestError> {
    let pool = pool_on(&schema, false).await?;
    let mut tx = pool.begin().await?;
    ctx.complete_in(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Pays inside a REPEATABLE READ transaction and completes in it. On attempt 1 it waits, with
/// its snapshot taken, until its worker renewed the lease: then `complete_in` meets a
/// serialization failure, the transaction rolls back, and the job retries.
#[job(retry = 3, backoff = fast)]
pub async fn pays_in_repeatable_read(
    ctx: &Context,
    schema: String,
    order_id: i64,
) -> Result<(), TestError> {
    let pool = pool_on(&schema, true).await?;
    let watcher = pool_on(&schema, true).await?;
    let lease = || {
        sqlx::query_scalar::<_, Option<i64>>("SELECT lease_until FROM errand_jobs WHERE id = $1")
            .bind(ctx.id().get())
            .fetch_one(&watcher)
    };
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *tx)
        .await?;
    let before =
        sqlx::query_scalar::<_, Option<i64>>("SELECT lease_until FROM errand_jobs WHERE id = $1")
            .bind(ctx.id().get())
            .fetch_one(&mut *tx)
            .await?;
    if ctx.attempt() == 1 {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while lease().await? == before {
            if std::time::Instant::now() > deadline {
                return Err(TestError::Broken("the lease was never renewed".into()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    sqlx::query("INSERT INTO payments (order_id) VALUES ($1)")
        .bind(order_id)
        .execute(&mut *tx)
        .await?;
    ctx.complete_in(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Records `effect` when its ledger step runs: a step that returns its recorded result leaves
/// no record.
#[job(key = "lc-<key>", backoff = fast)]
pub async fn ledger_counted(ctx: &Context, tag: String, key: String) -> Result<(), TestError> {
    let _ = &key; // in the key only
    ctx.step("effect", async {
        record(&tag, "effect");
        Ok::<_, TestError>(())
    })
    .await
}

/// `while_executing`, with the hold capped at 300 ms.
#[job(unique = "while_executing", unique_for = "300ms", key = "wc-<id>", retry = 3, backoff = fast)]
pub async fn while_executing_capped(
    ctx: &Context,
    tag: String,
    id: i64,
    mode: String,
) -> Result<Outcome, TestError> {
    let _ = id; // in the key only
    behave(ctx, &tag, &mode).await
}

/// Records when it started, in milliseconds since the epoch.
#[job(queue = "timely")]
pub async fn records_start(tag: String) -> Result<(), TestError> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    record(&tag, now.map_or(0, |d| d.as_millis()));
    Ok(())
}

/// Discarded unless started within an hour of its run time.
#[job(expires_in = "1h", backoff = fast)]
pub async fn expiring(tag: String) -> Result<(), TestError> {
    record(&tag, "ran");
    Ok(())
}

/// Declares its schedule: every day at 02:30 in Berlin, a time that the spring-forward skips
/// and the fall-back repeats.
#[job(
    queue = "berlin",
    cron = "30 2 * * *",
    timezone = "Europe/Berlin",
    catch_up = "all"
)]
pub async fn berlin_night() -> Result<(), TestError> {
    Ok(())
}

/// At most two run at once across every node; each takes 30 ms, and records its start and end
/// where a recorder is set (worker processes on PostgreSQL).
#[job(queue = "limited", concurrency = 2, retry = 5, backoff = fast)]
pub async fn limited_pair(ctx: &Context, n: i64) -> Result<(), TestError> {
    if RECORDER.get().is_some() {
        record_run(ctx, n, "started").await?;
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    if RECORDER.get().is_some() {
        record_run(ctx, n, "finished").await?;
    }
    Ok(())
}

/// At most five start per second across every node.
#[job(queue = "limited", rate = "5/1s", retry = 5, backoff = fast)]
pub async fn metered(n: i64) -> Result<(), TestError> {
    let _ = n;
    Ok(())
}

/// At most five start per second across every node; records when it began (milliseconds of
/// the system clock) and takes 300 ms, so that a busy worker holds claimed ones in its buffer.
#[job(queue = "metered", rate = "5/1s", retry = 5, backoff = fast)]
pub async fn metered_slow(tag: String, n: i64) -> Result<(), TestError> {
    let _ = n;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    record(&tag, now);
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(())
}

/// Takes `ms` in the queue `metered`, holding a worker's slot.
#[job(queue = "metered", backoff = fast)]
pub async fn occupies(ms: u64) -> Result<(), TestError> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(())
}

/// At most one runs at once per account, across every node.
#[job(
    queue = "limited",
    concurrency = 1,
    concurrency_key = "<account>",
    retry = 5,
    backoff = fast
)]
pub async fn per_account(tag: String, account: String, n: i64) -> Result<(), TestError> {
    record(&tag, format!("{account} {n} start"));
    tokio::time::sleep(Duration::from_millis(10)).await;
    record(&tag, format!("{account} {n} end"));
    Ok(())
}

/// Claims take turns between accounts.
#[job(queue = "fair", fair_by = "<account>", backoff = fast)]
pub async fn tenant_job(tag: String, account: String, n: i64) -> Result<(), TestError> {
    let _ = n;
    record(&tag, account);
    Ok(())
}

/// Adds `more` jobs like itself (with `more` one less) to its own batch, then records.
#[job(queue = "first", backoff = fast)]
pub async fn grows_batch(ctx: &Context, tag: String, more: u32) -> Result<(), TestError> {
    if more > 0 {
        ctx.add_to_batch(grows_batch::with(tag.clone(), more - 1))
            .await?;
    }
    record(&tag, format!("grew {more}"));
    Ok(())
}

// Sagas, in process.

/// A saga step: records `label`, and dies at once when `fail`.
#[job(queue = "first", backoff = fast, compensate = undo_step)]
pub async fn saga_step(tag: String, label: String, fail: bool) -> Result<(), TestError> {
    record(&tag, &label);
    if fail {
        return Err(TestError::Broken(format!("step {label} failed")));
    }
    Ok(())
}

/// A saga step that records `label`, then waits until the test opens the tag's gate.
#[job(queue = "first", backoff = fast)]
pub async fn gated_step(tag: String, label: String) -> Result<(), TestError> {
    record(&tag, &label);
    let gate = gate(&tag);
    let _permit = gate
        .acquire()
        .await
        .map_err(|_| TestError::Broken("gate closed".into()))?;
    Ok(())
}

/// Undoes a `saga_step` (same arguments): records `undo <label>`; dies when the label starts
/// with `stuck`.
#[job(queue = "first", backoff = fast)]
pub async fn undo_step(tag: String, label: String, fail: bool) -> Result<(), TestError> {
    record(&tag, format!("undo {label}"));
    if label.starts_with("stuck") {
        return Err(TestError::Broken(format!(
            "cannot undo {label} (failed: {fail})"
        )));
    }
    Ok(())
}

/// Charges through the effect ledger, which records the charge's id for the refund to read.
#[job(queue = "first", backoff = fast, compensate = refund_card)]
pub async fn charge_card(ctx: &Context, tag: String, order: i64) -> Result<(), TestError> {
    let gateway = async { Ok::<_, TestError>(format!("ch-{order}")) };
    let charge: String = ctx.step("gateway", gateway).await?;
    record(&tag, format!("charge {charge}"));
    Ok(())
}

/// Refunds what step `charge_card` of its saga recorded.
#[job(queue = "first", backoff = fast)]
pub async fn refund_card(ctx: &Context, tag: String, order: i64) -> Result<(), TestError> {
    let charge: Option<String> = ctx.result_of("charge_card", "gateway").await?;
    let charge = charge.unwrap_or_else(|| format!("no charge of order {order}"));
    record(&tag, format!("refund {charge}"));
    Ok(())
}

// Sagas run by worker processes: each run that completes records itself in `test_runs` in the
// transaction that completes the job, so a row is a run that happened exactly once.

async fn record_and_complete(ctx: &Context, n: i64, event: String) -> Result<(), TestError> {
    let pool = RECORDER
        .get()
        .ok_or_else(|| TestError::Broken("no recorder in this process".into()))?;
    // A few milliseconds of work, so that a worker killed at random is often killed mid-job.
    tokio::time::sleep(Duration::from_millis(fastrand::u64(0..15))).await;
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO test_runs (n, pid, attempt, event) VALUES ($1, $2, $3, $4)")
        .bind(n)
        .bind(i64::from(std::process::id()))
        .bind(i64::from(ctx.attempt()))
        .bind(event)
        .execute(&mut *tx)
        .await?;
    ctx.complete_in(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Step `step` of saga `n`, which dies when it is step `fails_at`.
#[job(queue = "procs", retry = 20, backoff = fast, compensate = process_undo)]
pub async fn process_step(
    ctx: &Context,
    n: i64,
    step: i64,
    fails_at: i64,
) -> Result<(), TestError> {
    if step == fails_at {
        return Err(TestError::Broken(format!("saga {n} fails at step {step}")));
    }
    record_and_complete(ctx, n, format!("step {step}")).await
}

/// Undoes step `step` of saga `n`.
#[job(queue = "procs", retry = 20, backoff = fast)]
pub async fn process_undo(
    ctx: &Context,
    n: i64,
    step: i64,
    fails_at: i64,
) -> Result<(), TestError> {
    let _ = fails_at;
    record_and_complete(ctx, n, format!("undo {step}")).await
}

/// Clients that jobs reach by their tag, for jobs that open transactions of their own.
static SHARED_CLIENTS: Mutex<Vec<(String, errand::Client)>> = Mutex::new(Vec::new());

/// Lets the jobs of `tag` reach `client` ([`shared_client`]).
pub fn share_client(tag: &str, client: errand::Client) {
    SHARED_CLIENTS
        .lock()
        .unwrap()
        .push((tag.to_owned(), client));
}

/// The client shared for `tag`.
pub fn shared_client(tag: &str) -> errand::Client {
    let clients = SHARED_CLIENTS.lock().unwrap();
    let found = clients.iter().find(|(t, _)| t == tag);
    found
        .map(|(_, c)| c.clone())
        .expect("a client shared for the tag")
}

/// Holds a transaction of its own on the tag's client (SQLite) while it records a ledger step,
/// then enqueues a `succeed` an hour ahead in the transaction and completes in it.
#[job(retry = 0)]
pub async fn steps_while_holding_a_transaction(
    ctx: &Context,
    tag: String,
) -> Result<(), TestError> {
    let client = shared_client(&tag);
    let mut tx = client.begin::<sqlx::Sqlite>().await?;
    let n: i64 = ctx.step("count", async { Ok::<_, TestError>(7) }).await?;
    record(&tag, n);
    succeed::with(tag.clone())
        .delay(Duration::from_secs(3600))
        .enqueue_tx(&mut tx)
        .await?;
    ctx.complete_in(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Records `ran`, then takes `ms`, holding its slot.
#[job(backoff = fast)]
pub async fn takes_a_while(tag: String, ms: u64) -> Result<(), TestError> {
    record(&tag, "ran");
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(())
}

/// One at a time across the cluster: records `label`, waits for the tag's gate when `wait`,
/// then fails for good when `fail`.
#[job(queue = "limited", concurrency = 1, retry = 0)]
pub async fn limited_one(
    tag: String,
    label: String,
    wait: bool,
    fail: bool,
) -> Result<(), TestError> {
    record(&tag, &label);
    if wait {
        let gate = gate(&tag);
        let _permit = gate
            .acquire()
            .await
            .map_err(|_| TestError::Broken("gate closed".into()))?;
    }
    if fail {
        return Err(TestError::Broken(format!("{label} failed")));
    }
    Ok(())
}

/// One at a time across the cluster, leaving running each way there is: records
/// `label attempt N`; on its first attempt fails (`retry`), snoozes (`snooze`), or waits for
/// the tag's gate (`block`: for a crash or a shutdown to meet it); then completes.
#[job(queue = "limited", concurrency = 1, retry = 5, backoff = fast)]
pub async fn limited_way_out(
    ctx: &Context,
    tag: String,
    label: String,
    way: String,
) -> Result<Outcome, TestError> {
    record(&tag, format!("{label} attempt {}", ctx.attempt()));
    match way.as_str() {
        "retry" if ctx.attempt() == 1 => Err(TestError::Flaky(1)),
        "snooze"
            if records(&tag)
                .iter()
                .filter(|r| r.starts_with(&label))
                .count()
                == 1 =>
        {
            Ok(Outcome::Snooze(Duration::from_millis(10)))
        }
        "block" => {
            // Each run takes a permit of its own: a permit is not given back.
            let gate = gate(&tag);
            let permit = gate.acquire().await;
            permit
                .map_err(|_| TestError::Broken("gate closed".into()))?
                .forget();
            Ok(Outcome::Done)
        }
        _ => Ok(Outcome::Done),
    }
}
