//! What the conformance tests share: a real store to drive, on a SQLite file or in a
//! PostgreSQL schema of its own, with the runtime that drives it.

use errand::conformance::ConformanceStore;

/// Attempts each job of the conformance tests has.
pub const MAX_ATTEMPTS: u8 = 2;

/// A fresh, migrated, empty store.
pub struct Opened {
    pub runtime: tokio::runtime::Runtime,
    pub store: ConformanceStore,
    schema: String,
    _dir: Option<tempfile::TempDir>,
}

impl Opened {
    /// Runs one store operation to its end; a failed operation fails the test.
    pub fn run<T>(&self, f: impl std::future::Future<Output = Result<T, errand::Error>>) -> T {
        match self.runtime.block_on(f) {
            Ok(value) => value,
            Err(err) => panic!("store operation failed: {err}"),
        }
    }
}

impl Drop for Opened {
    /// Drops a PostgreSQL test schema (nothing on SQLite) however the case ended: a case that
    /// fails, and every case of its shrinking, ends in a panic that skips `teardown`.
    fn drop(&mut self) {
        if !self.schema.is_empty() {
            self.runtime.block_on(self.store.drop_schema(&self.schema));
        }
    }
}

/// Where a test's store lives.
pub trait Target {
    fn open() -> Opened;
}

pub struct Sqlite;

impl Target for Sqlite {
    fn open() -> Opened {
        let runtime = runtime();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite://{}", dir.path().join("conformance.db").display());
        let store = connect(&runtime, &url, "public");
        Opened {
            runtime,
            store,
            schema: String::new(),
            _dir: Some(dir),
        }
    }
}

pub struct Postgres;

static SCHEMAS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Target for Postgres {
    fn open() -> Opened {
        let runtime = runtime();
        let url = postgres_url();
        let n = SCHEMAS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let schema = format!("errand_conformance_{}_{n}", std::process::id());
        let store = connect(&runtime, &url, &schema);
        Opened {
            runtime,
            store,
            schema,
            _dir: None,
        }
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => panic!("a tokio runtime: {err}"),
    }
}

fn connect(runtime: &tokio::runtime::Runtime, url: &str, schema: &str) -> ConformanceStore {
    match runtime.block_on(ConformanceStore::connect(
        url,
        schema,
        u32::from(MAX_ATTEMPTS),
    )) {
        Ok(store) => store,
        Err(err) => panic!("connect to {url}: {err}"),
    }
}

/// Whether the test PostgreSQL server answers. Without one, the PostgreSQL tests say so and
/// pass, as the suite's do, unless `CI` is set.
pub fn postgres_answers() -> bool {
    static ANSWERS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ANSWERS.get_or_init(|| {
        let url = postgres_url();
        let probe = runtime()
            .block_on(async { <sqlx::PgConnection as sqlx::Connection>::connect(&url).await });
        match probe {
            Ok(_) => true,
            Err(err) if std::env::var_os("CI").is_none() => {
                eprintln!("SKIPPED (PostgreSQL): {url}: {err}");
                false
            }
            Err(err) => {
                panic!("PostgreSQL is required when CI is set, but {url} did not answer: {err}")
            }
        }
    })
}

pub fn postgres_url() -> String {
    std::env::var("ERRAND_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

pub fn worker_name(worker: u8) -> String {
    format!("w{worker}")
}
