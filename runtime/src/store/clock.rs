//! The time a store reads.

use std::time::{Duration, SystemTime};

/// What time a store reads: the system's, or for a [`TestClient`](crate::testing::TestClient)
/// the system's plus an offset that only the test moves, forward. PostgreSQL always reads its
/// own (`errand_now_ms()`); SQLite binds this clock's time to its statements.
#[derive(Clone, Debug, Default)]
pub(crate) struct Clock {
    /// Milliseconds added to the system's time, when a test can move it.
    offset: Option<std::sync::Arc<std::sync::atomic::AtomicI64>>,
}

/// The adjustable clocks of this process's test stores, by the name of their database.
#[cfg(feature = "sqlite")]
type Registered = (String, std::sync::Weak<std::sync::atomic::AtomicI64>);
#[cfg(feature = "sqlite")]
static TEST_CLOCKS: std::sync::Mutex<Vec<Registered>> = std::sync::Mutex::new(Vec::new());

/// The system's clock, for statements run in a caller's own transaction.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) const SYSTEM_CLOCK: Clock = Clock { offset: None };

impl Clock {
    /// A clock that reads the system's time until [`Clock::advance`] moves it ahead.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) fn adjustable() -> Clock {
        Clock {
            offset: Some(std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0))),
        }
    }

    /// Now, in milliseconds since the epoch.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) fn now_ms(&self) -> i64 {
        let system = crate::info::to_millis(SystemTime::now());
        match &self.offset {
            Some(offset) => system.saturating_add(offset.load(std::sync::atomic::Ordering::SeqCst)),
            None => system,
        }
    }

    /// Records that the database in memory named `name` reads this clock, for statements run
    /// in a caller's transaction on it ([`Clock::of_database`]); nothing for the system's.
    #[cfg(feature = "sqlite")]
    pub(crate) fn register_database(&self, name: &str) {
        if let Some(offset) = &self.offset {
            let mut clocks = TEST_CLOCKS.lock().unwrap_or_else(|e| e.into_inner());
            clocks.retain(|(_, clock)| clock.strong_count() > 0);
            clocks.push((name.to_owned(), std::sync::Arc::downgrade(offset)));
        }
    }

    /// Whether any test clock was registered in this process.
    #[cfg(feature = "sqlite")]
    pub(crate) fn any_registered() -> bool {
        let clocks = TEST_CLOCKS.lock().unwrap_or_else(|e| e.into_inner());
        !clocks.is_empty()
    }

    /// The clock registered for the database named `name`, or the system's.
    #[cfg(feature = "sqlite")]
    pub(crate) fn of_database(name: &str) -> Clock {
        let clocks = TEST_CLOCKS.lock().unwrap_or_else(|e| e.into_inner());
        let offset = clocks
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, clock)| clock.upgrade());
        Clock { offset }
    }

    /// How far ahead of the system's time this clock reads, in milliseconds.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) fn offset_ms(&self) -> i64 {
        self.offset
            .as_ref()
            .map_or(0, |offset| offset.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Moves an adjustable clock ahead by `by` (the system's clock cannot be moved).
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) fn advance(&self, by: Duration) {
        if let Some(offset) = &self.offset {
            let by = crate::info::duration_millis(by);
            offset.fetch_add(by, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Moves an adjustable clock ahead to `to_ms`, if it reads earlier.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) fn advance_to(&self, to_ms: i64) {
        let behind = to_ms.saturating_sub(self.now_ms());
        if behind > 0 {
            self.advance(Duration::from_millis(behind.unsigned_abs()));
        }
    }
}
