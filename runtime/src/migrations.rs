//! errand's schema changes, as SQL, for teams that run migrations with their own tool.
//!
//! [`Client::connect`](crate::Client::connect) applies them itself by default. To apply them
//! elsewhere (a migration tool, a deploy step with a privileged role), connect with
//! [`Config::migrate(false)`](crate::Config::migrate): the client then only checks that the
//! schema is at [`POSTGRES`]'s (or [`SQLITE`]'s) last version, and fails with
//! [`Error::SchemaBehind`](crate::Error::SchemaBehind) when it is not.
//!
//! Apply each migration once, in order, in errand's schema, and record it with its
//! [`checksum`](Migration::checksum) in the table [`POSTGRES_BOOKKEEPING`] creates, as errand's
//! own runner does. Every connect compares the recorded checksums with its own and refuses a
//! database migrated from a different text
//! ([`Error::MigrationChanged`](crate::Error::MigrationChanged)).
//!
//! ```no_run
//! # async fn demo(pool: sqlx::PgPool) -> Result<(), sqlx::Error> {
//! let mut tx = pool.begin().await?;
//! sqlx::raw_sql(errand::migrations::POSTGRES_BOOKKEEPING).execute(&mut *tx).await?;
//! for migration in errand::migrations::POSTGRES {
//!     sqlx::raw_sql(migration.sql).execute(&mut *tx).await?;
//!     sqlx::query("INSERT INTO errand_migrations (version, checksum) VALUES ($1, $2)")
//!         .bind(migration.version)
//!         .bind(migration.checksum())
//!         .execute(&mut *tx)
//!         .await?;
//! }
//! tx.commit().await
//! # }
//! ```
//! (A real tool applies only the versions above the highest recorded one.)
//!
//! errand keeps its own bookkeeping rather than sqlx's `_sqlx_migrations`: that table's name is
//! fixed, so errand's versions would mix with an application's own sqlx migrations in the same
//! schema (always, on SQLite), and each side's migrator would refuse the other's versions.

/// One schema change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Migration {
    /// Its number: migrations apply in rising order, each once.
    pub version: i64,
    /// What it is for, as its file is named.
    pub name: &'static str,
    /// Its statements.
    pub sql: &'static str,
}

impl Migration {
    /// The SHA-256 of its statements, in lowercase hex, as recorded when it is applied: a
    /// migration whose recorded checksum differs was changed after it ran, and errand refuses
    /// the database ([`Error::MigrationChanged`](crate::Error::MigrationChanged)).
    pub fn checksum(&self) -> String {
        use sha2::Digest;
        use std::fmt::Write;

        let digest = sha2::Sha256::digest(self.sql.as_bytes());
        digest
            .iter()
            .fold(String::with_capacity(64), |mut hex, byte| {
                // Writing to a String cannot fail.
                let _ = write!(hex, "{byte:02x}");
                hex
            })
    }
}

/// Both stores' lists from one list of names: each migration has a file of that name in
/// `migrations/postgres/` and in `migrations/sqlite/`.
macro_rules! migrations {
    ($($version:literal $name:literal),* $(,)?) => {
        /// PostgreSQL's migrations, oldest first.
        pub const POSTGRES: &[Migration] = &[$(Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!("../migrations/postgres/", $name, ".sql")),
        }),*];

        /// SQLite's migrations, oldest first.
        pub const SQLITE: &[Migration] = &[$(Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!("../migrations/sqlite/", $name, ".sql")),
        }),*];
    };
}

migrations!(
    1 "0001_jobs",
    2 "0002_unique_and_steps",
    3 "0003_failures",
    4 "0004_death_leases",
    5 "0005_retention",
    6 "0006_claim_available",
    7 "0007_key_rule",
    8 "0008_wake_per_statement",
    9 "0009_listings",
    10 "0010_tags_meta_timeout",
    11 "0011_tag_index",
    12 "0012_queues_deadlines_schedules",
    13 "0013_dependencies",
    14 "0014_sagas",
    15 "0015_deploys",
    16 "0016_long_workflows",
    17 "0017_saga_stops",
    18 "0018_claimable_indexes",
    19 "0019_unknown_kinds_index",
    20 "0020_aging_index",
);

/// The table in which errand records which migrations a PostgreSQL schema has.
pub const POSTGRES_BOOKKEEPING: &str = "CREATE TABLE IF NOT EXISTS errand_migrations (
    version    BIGINT PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    checksum   TEXT)";

/// The table in which errand records which migrations an SQLite database has.
pub const SQLITE_BOOKKEEPING: &str = "CREATE TABLE IF NOT EXISTS errand_migrations (
    version    INTEGER PRIMARY KEY,
    applied_at INTEGER NOT NULL DEFAULT 0,
    checksum   TEXT)";

/// The version a schema must have for this errand.
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn latest(migrations: &[Migration]) -> i64 {
    migrations.last().map_or(0, |m| m.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_rise_by_one_and_both_stores_agree() {
        for list in [POSTGRES, SQLITE] {
            for (i, migration) in list.iter().enumerate() {
                assert_eq!(migration.version, i as i64 + 1, "{}", migration.name);
                assert!(migration
                    .name
                    .starts_with(&format!("{:04}_", migration.version)));
            }
        }
        assert_eq!(latest(POSTGRES), latest(SQLITE));
    }
}
