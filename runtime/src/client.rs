//! The [`Client`]: a handle on a store, for enqueuing jobs and reading them back.

use std::sync::Arc;

use tokio::sync::watch;

use crate::error::{redact, Error};
use crate::info::JobInfo;
use crate::job::JobId;
use crate::store::{memory::MemoryStore, Backend, Store};

/// A handle on errand's store. Cheap to clone; clones share one connection pool.
///
/// ```no_run
/// # async fn demo() -> Result<(), errand::Error> {
/// // Embedded: a file next to the program, created if missing.
/// let client = errand::Client::connect("sqlite://jobs.db").await?;
/// // Or in memory, for one process.
/// let scratch = errand::Client::connect("sqlite::memory:").await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Backend,
    config: Config,
    /// Bumped on every enqueue through this client, so its local workers wake at once.
    enqueued: watch::Sender<u64>,
}

/// Client settings.
///
/// ```
/// let config = errand::Config::default().max_args_bytes(64 * 1024);
/// assert_eq!(config.max_args_bytes_limit(), 64 * 1024);
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    max_args_bytes: usize,
}

impl Config {
    /// The default limit on a job's serialized arguments: 1 MiB.
    pub const DEFAULT_MAX_ARGS_BYTES: usize = 1024 * 1024;

    /// Refuse to enqueue jobs whose serialized arguments are larger than this.
    pub fn max_args_bytes(mut self, limit: usize) -> Self {
        self.max_args_bytes = limit;
        self
    }

    /// The current arguments limit.
    pub fn max_args_bytes_limit(&self) -> usize {
        self.max_args_bytes
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_args_bytes: Config::DEFAULT_MAX_ARGS_BYTES,
        }
    }
}

impl Client {
    /// Connects to the store at `url` and brings its schema up to date.
    ///
    /// - `sqlite://path/to/jobs.db` (created if missing; add `?mode=rw` to require it exists)
    /// - `sqlite::memory:` (one process, gone when the client is dropped)
    pub async fn connect(url: &str) -> Result<Client, Error> {
        Client::connect_with(url, Config::default()).await
    }

    /// [`Client::connect`] with settings.
    pub async fn connect_with(url: &str, config: Config) -> Result<Client, Error> {
        let store = if url.starts_with("sqlite:") {
            connect_sqlite(url).await?
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Err(Error::InvalidUrl {
                url: redact(url),
                reason:
                    "the PostgreSQL store is not part of this release yet; use a `sqlite://` URL"
                        .to_owned(),
            });
        } else {
            return Err(Error::InvalidUrl {
                url: redact(url),
                reason: "expected a URL starting with `sqlite:` (e.g. `sqlite://jobs.db`)"
                    .to_owned(),
            });
        };
        Ok(Client::from_backend(store, config))
    }

    pub(crate) fn from_backend(store: Backend, config: Config) -> Client {
        let (enqueued, _) = watch::channel(0);
        Client {
            inner: Arc::new(Inner {
                store,
                config,
                enqueued,
            }),
        }
    }

    /// Brings the store's schema up to date. [`Client::connect`] already does; this is for
    /// deployments that migrate in a separate step.
    pub async fn migrate(&self) -> Result<(), Error> {
        match &self.inner.store {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(store) => store.migrate().await,
            Backend::Memory(_) => Ok(()),
        }
    }

    /// What is known of job `id`: its state, attempts, arguments, key and every attempt's error.
    ///
    /// ```no_run
    /// # async fn demo(client: errand::Client, id: errand::JobId) -> Result<(), errand::Error> {
    /// if let Some(job) = client.job(id).await? {
    ///     println!("{} is {} after {} attempts", job.kind, job.state, job.attempt);
    ///     for error in &job.errors {
    ///         println!("  attempt {}: {} ({})", error.attempt, error.message, error.kind);
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn job(&self, id: JobId) -> Result<Option<JobInfo>, Error> {
        self.inner.store.job(id).await
    }

    pub(crate) fn store(&self) -> &Backend {
        &self.inner.store
    }

    pub(crate) fn config(&self) -> &Config {
        &self.inner.config
    }

    pub(crate) fn memory(&self) -> Option<&MemoryStore> {
        match &self.inner.store {
            Backend::Memory(store) => Some(store),
            #[cfg(feature = "sqlite")]
            _ => None,
        }
    }

    /// Wakes this client's workers: a job was just enqueued.
    pub(crate) fn notify_enqueued(&self) {
        self.inner.enqueued.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(crate) fn subscribe_enqueued(&self) -> watch::Receiver<u64> {
        self.inner.enqueued.subscribe()
    }
}

#[cfg(feature = "sqlite")]
async fn connect_sqlite(url: &str) -> Result<Backend, Error> {
    Ok(Backend::Sqlite(
        crate::store::sqlite::SqliteStore::connect(url).await?,
    ))
}

#[cfg(not(feature = "sqlite"))]
async fn connect_sqlite(url: &str) -> Result<Backend, Error> {
    Err(Error::InvalidUrl {
        url: redact(url),
        reason: "errand was built without its `sqlite` feature".to_owned(),
    })
}
