//! Migrations: each applied once, in order, under the store's lock, with its checksum checked
//! against the one this build ships; and the check that the database is not ahead of the
//! build.

use super::{first, named, op_error, Conn, Dialect, SqlRow, SqlStore, Value};
use super::{Both, Named};
use crate::error::Error;
use crate::store::{BoxFuture, Clock};

/// Creates the migrations' bookkeeping table.
pub(super) const BOOKKEEPING: Both = Both {
    postgres: crate::migrations::POSTGRES_BOOKKEEPING,
    sqlite: crate::migrations::SQLITE_BOOKKEEPING,
};

/// No parameters: `1` when the bookkeeping table exists, else `0`.
pub(super) const HAS_BOOKKEEPING: Both = Both {
    postgres:
        "SELECT (CASE WHEN to_regclass('errand_migrations') IS NULL THEN 0 ELSE 1 END)::bigint",
    sqlite:
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'errand_migrations'",
};

/// No parameters: `1` when the bookkeeping table has its `checksum` column, else `0`.
pub(super) const HAS_CHECKSUMS: Both = Both {
    postgres: "SELECT count(*) FROM pg_attribute
        WHERE attrelid = to_regclass('errand_migrations') AND attname = 'checksum' AND NOT attisdropped",
    sqlite: "SELECT count(*) FROM pragma_table_info('errand_migrations') WHERE name = 'checksum'",
};

/// Adds the `checksum` column to a bookkeeping table that predates it.
pub(super) const ADD_CHECKSUMS: Both = Both {
    postgres: "ALTER TABLE errand_migrations ADD COLUMN IF NOT EXISTS checksum TEXT",
    sqlite: "ALTER TABLE errand_migrations ADD COLUMN checksum TEXT",
};

/// No parameters: `version, checksum` of every applied migration.
pub(super) const APPLIED: Both = Both {
    postgres: "SELECT version, checksum FROM errand_migrations ORDER BY version",
    sqlite: "SELECT version, checksum FROM errand_migrations ORDER BY version",
};

/// `version, checksum, now`.
pub(super) static RECORD_MIGRATION: Named = Named::new(Both {
    postgres: "INSERT INTO errand_migrations (version, checksum) VALUES ($version, $checksum)",
    sqlite: "INSERT INTO errand_migrations (version, checksum, applied_at) VALUES ($version, $checksum, $now)",
});

/// `version, checksum`: records the checksum of a migration applied before errand kept
/// them.
pub(super) static SET_CHECKSUM: Named =
    Named::same("UPDATE errand_migrations SET checksum = $checksum WHERE version = $version");

impl<D: Dialect> SqlStore<D> {
    /// Applies the migrations the database lacks, each once, in one transaction.
    pub(crate) fn migrate(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let mut conn = self.conn(named("open a connection to migrate")).await?;
            self.dialect
                .begin_migrations(&mut conn)
                .await
                .map_err(failed::<D>(0))?;
            let result = apply_migrations::<D>(&mut conn).await;
            let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
            let ended = D::raw(&mut conn, end).await;
            result?;
            ended.map_err(failed::<D>(0))
        })
    }

    /// Fails unless the database has every migration this errand knows, unchanged.
    pub(crate) async fn check_version(&self) -> Result<(), Error> {
        let mut conn = self.conn(named("read the schema's version")).await?;
        let found = applied::<D>(&mut conn).await?;
        let needed = crate::migrations::latest(D::MIGRATIONS);
        let found = found.last().map_or(0, |(version, _)| *version);
        if found < needed {
            return Err(Error::SchemaBehind {
                store: D::STORE,
                found,
                needed,
            });
        }
        Ok(())
    }
}

/// The error of migration `version` (0: the bookkeeping around them).
pub(crate) fn failed<D: Dialect>(version: i64) -> impl Fn(sqlx::Error) -> Error {
    move |source| Error::Migrate {
        store: D::STORE,
        version,
        source,
    }
}

/// Whether `sql`, a question about the schema, answers `1`.
pub(crate) fn is_one<'c, D: Dialect>(
    conn: &'c mut Conn<D>,
    sql: &'static str,
) -> BoxFuture<'c, Result<bool, sqlx::Error>> {
    Box::pin(async move {
        let rows = D::fetch(conn, sql, vec![], &Clock::default()).await?;
        Ok(first(rows).map(|row| row.int(0)).transpose()? == Some(1))
    })
}

/// The migrations applied to the database, each with its recorded checksum; none when errand
/// never migrated it. Fails when an applied migration's checksum differs from this errand's.
pub(crate) fn applied<D: Dialect>(
    conn: &mut Conn<D>,
) -> BoxFuture<'_, Result<Vec<(i64, String)>, Error>> {
    Box::pin(async move {
        let op = |e| op_error::<D>("read the applied migrations", e);
        if !is_one::<D>(conn, HAS_BOOKKEEPING.of::<D>())
            .await
            .map_err(op)?
        {
            return Ok(Vec::new());
        }
        if !is_one::<D>(conn, HAS_CHECKSUMS.of::<D>())
            .await
            .map_err(op)?
        {
            // Recorded before errand kept checksums: nothing to compare against.
            let rows = D::fetch(
                conn,
                "SELECT version FROM errand_migrations ORDER BY version",
                vec![],
                &Clock::default(),
            );
            let rows = rows.await.map_err(op)?;
            return rows
                .iter()
                .map(|r| Ok((r.int(0).map_err(op)?, String::new())))
                .collect();
        }
        let rows = D::fetch(conn, APPLIED.of::<D>(), vec![], &Clock::default())
            .await
            .map_err(op)?;
        let mut applied = Vec::with_capacity(rows.len());
        for row in rows {
            let version = row.int(0).map_err(op)?;
            let recorded = row.opt_text(1).map_err(op)?.unwrap_or_default();
            let known = D::MIGRATIONS.iter().find(|m| m.version == version);
            if let Some(migration) = known {
                let expected = migration.checksum();
                if !recorded.is_empty() && recorded != expected {
                    return Err(Error::MigrationChanged {
                        store: D::STORE,
                        version,
                        name: migration.name,
                    });
                }
            }
            applied.push((version, recorded));
        }
        Ok(applied)
    })
}

/// Applies every migration to a connection no other can see (a private database in memory),
/// in one transaction.
#[cfg(feature = "sqlite")]
pub(crate) fn migrate_connection<D: Dialect>(
    conn: &mut Conn<D>,
) -> BoxFuture<'_, Result<(), Error>> {
    Box::pin(async move {
        D::raw(conn, "BEGIN").await.map_err(failed::<D>(0))?;
        let result = apply_migrations::<D>(conn).await;
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let ended = D::raw(conn, end).await;
        result?;
        ended.map_err(failed::<D>(0))
    })
}

/// The migrations, inside the migrating transaction.
pub(crate) fn apply_migrations<D: Dialect>(conn: &mut Conn<D>) -> BoxFuture<'_, Result<(), Error>> {
    Box::pin(async move {
        D::raw(conn, BOOKKEEPING.of::<D>())
            .await
            .map_err(failed::<D>(0))?;
        if !is_one::<D>(conn, HAS_CHECKSUMS.of::<D>())
            .await
            .map_err(failed::<D>(0))?
        {
            D::raw(conn, ADD_CHECKSUMS.of::<D>())
                .await
                .map_err(failed::<D>(0))?;
        }
        let applied = applied::<D>(conn).await?;
        let current = applied.last().map_or(0, |(version, _)| *version);
        // Migrations recorded before errand kept checksums get theirs now: they were applied
        // from the same text, which a checksum from now on keeps from changing unnoticed.
        for (version, recorded) in &applied {
            if !recorded.is_empty() {
                continue;
            }
            if let Some(migration) = D::MIGRATIONS.iter().find(|m| m.version == *version) {
                let checksum = migration.checksum();
                let record = params![version: *version, checksum: checksum.as_str()];
                SET_CHECKSUM
                    .execute::<D>(conn, record, &Clock::default())
                    .await
                    .map_err(failed::<D>(*version))?;
            }
        }
        for migration in D::MIGRATIONS.iter().filter(|m| m.version > current) {
            let version = migration.version;
            D::raw(conn, migration.sql)
                .await
                .map_err(failed::<D>(version))?;
            let checksum = migration.checksum();
            let record = params![version, checksum: checksum.as_str(), now: Value::Now];
            RECORD_MIGRATION
                .execute::<D>(conn, record, &Clock::default())
                .await
                .map_err(failed::<D>(version))?;
        }
        Ok(())
    })
}
