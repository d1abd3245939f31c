//! What a build knows of job kinds, and what its workers do about jobs stored by another
//! build: a rolling deploy runs old and new builds side by side while jobs wait for days.
//!
//! A job stored by a build whose kind had no limit or no `fair_by` lacks the key a build with
//! those options claims it by, and one stored by a build whose kind had options it no longer
//! has carries keys no claim of this build reads (each claim reads an index of its own jobs
//! only). A worker that knows such a kind *adopts* the jobs waiting so: it renders the keys from
//! their arguments, as its own enqueue would, and writes them (none, for a kind without
//! options), so that the job runs under the options of the build that claims it.

use super::{count, named, Both, Dialect, SqlRow, SqlStore, Value};
use crate::error::Error;
use crate::job::JobId;
use crate::store::Keys;
use crate::store::Presence;

/// `kinds, fair_kinds, limited_kinds, plain_kinds, limit`: up to `limit` waiting jobs of
/// `kinds` that lack the fair key (of a fair kind) or the limit key (of a limited kind), and of
/// `plain_kinds` that carry either key (read kind by kind from `errand_jobs_keyed`, which holds
/// keyed jobs only: a probe of an empty range each, as a rule): `id, kind, args`. (The first
/// part reads the waiting jobs of the fair and limited kinds, through `errand_jobs_kind`.)
/// SQLite's parts read their index in its order and stop at `limit`: with an `ORDER BY id`,
/// each would sort every match of its kinds first.
pub(super) const UNKEYED: Both = Both {
    postgres: "(SELECT id, kind, args::text FROM errand_jobs
         WHERE kind = ANY($1) AND state IN ('available', 'scheduled', 'retryable', 'pending')
           AND ((fair_key IS NULL AND kind = ANY($2)) OR (limit_key IS NULL AND kind = ANY($3)))
         ORDER BY id LIMIT $5)
        UNION ALL
        (SELECT j.id, j.kind, j.args::text FROM unnest($4::text[]) AS k(kind)
         CROSS JOIN LATERAL (
             SELECT id, kind, args FROM errand_jobs
             WHERE kind = k.kind AND state IN ('available', 'scheduled', 'retryable', 'pending')
               AND (limit_key IS NOT NULL OR fair_key IS NOT NULL)
             ORDER BY id LIMIT $5) j
         ORDER BY j.id LIMIT $5)
        ORDER BY id LIMIT $5",
    sqlite: "SELECT * FROM (SELECT id, kind, args FROM errand_jobs INDEXED BY errand_jobs_kind
             WHERE kind IN (SELECT value FROM json_each(?1))
               AND state IN ('available', 'scheduled', 'retryable', 'pending')
               AND ((fair_key IS NULL AND kind IN (SELECT value FROM json_each(?2)))
                    OR (limit_key IS NULL AND kind IN (SELECT value FROM json_each(?3))))
             LIMIT ?5)
        UNION ALL
        SELECT * FROM (SELECT id, kind, args FROM errand_jobs INDEXED BY errand_jobs_keyed
             WHERE kind IN (SELECT value FROM json_each(?4))
               AND state IN ('available', 'scheduled', 'retryable', 'pending')
               AND (limit_key IS NOT NULL OR fair_key IS NOT NULL)
             LIMIT ?5)
        ORDER BY id LIMIT ?5",
};

/// `ids, limit_keys, fair_keys` (parallel): gives each waiting job the keys its kind has
/// now, and only those.
const ADOPT: Both = Both {
    postgres: "UPDATE errand_jobs j
        SET limit_key = t.limit_key, fair_key = t.fair_key
        FROM unnest($1::bigint[], $2::text[], $3::text[]) AS t(id, limit_key, fair_key)
        WHERE j.id = t.id AND j.state IN ('available', 'scheduled', 'retryable', 'pending')",
    sqlite: "UPDATE errand_jobs
        SET limit_key = t.limit_key, fair_key = t.fair_key
        FROM (SELECT i.value AS id, l.value AS limit_key, f.value AS fair_key
              FROM json_each(?1) i JOIN json_each(?2) l ON l.key = i.key
              JOIN json_each(?3) f ON f.key = i.key) t
        WHERE errand_jobs.id = t.id
          AND errand_jobs.state IN ('available', 'scheduled', 'retryable', 'pending')",
};

impl<D: Dialect> SqlStore<D> {
    /// Up to `limit` waiting jobs of `fair` kinds without a fair key, of `limited` kinds
    /// without a limit key, or of `plain` kinds with either: each job's id, kind and stored
    /// arguments.
    pub(crate) async fn unkeyed(
        &self,
        fair: &[&str],
        limited: &[&str],
        plain: &[&str],
        limit: usize,
    ) -> Result<Vec<(JobId, String, String)>, Error> {
        let op = named("find jobs stored without the keys of their kind's options");
        let kinds: Vec<&str> = fair.iter().chain(limited).copied().collect();
        let find = values![
            Value::Texts(kinds),
            Value::Texts(fair.to_vec()),
            Value::Texts(limited.to_vec()),
            Value::Texts(plain.to_vec()),
            count(limit),
        ];
        let rows = self.fetch(UNKEYED.of::<D>(), find, op).await?;
        let err = |e| super::op_error::<D>(op(), e);
        rows.iter()
            .map(|row| {
                Ok((
                    JobId::new(row.int(0).map_err(err)?),
                    row.text(1).map_err(err)?,
                    row.text(2).map_err(err)?,
                ))
            })
            .collect()
    }

    /// Writes each job's keys as `jobs` gives them, if it still waits; returns how many
    /// changed.
    pub(crate) async fn adopt(&self, jobs: &[(JobId, Keys)]) -> Result<u64, Error> {
        let op = named("write the keys of jobs stored without them");
        let adopt = values![
            Value::Ints(jobs.iter().map(|(id, _)| id.get()).collect()),
            Value::OptTexts(jobs.iter().map(|(_, k)| k.limit.as_deref()).collect()),
            Value::OptTexts(jobs.iter().map(|(_, k)| k.fair.as_deref()).collect()),
        ];
        self.execute(ADOPT.of::<D>(), adopt, op).await
    }
}

/// `id, host, pid, queues, kinds, concurrency, now`: writes the worker's row, or renews it.
const HEARTBEAT: Both = Both {
    postgres:
        "INSERT INTO errand_workers (id, host, pid, queues, kinds, concurrency, started_at, seen_at)
        VALUES ($1, $2, $3, $4, $5, $6, errand_now_ms(), errand_now_ms())
        ON CONFLICT (id) DO UPDATE SET seen_at = errand_now_ms(), queues = EXCLUDED.queues,
            kinds = EXCLUDED.kinds, concurrency = EXCLUDED.concurrency",
    sqlite:
        "INSERT INTO errand_workers (id, host, pid, queues, kinds, concurrency, started_at, seen_at)
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
        ON CONFLICT (id) DO UPDATE SET seen_at = ?7, queues = excluded.queues,
            kinds = excluded.kinds, concurrency = excluded.concurrency",
};

/// `id`: removes a worker that stops.
const LEAVE: Both = Both {
    postgres: "DELETE FROM errand_workers WHERE id = $1",
    sqlite: "DELETE FROM errand_workers WHERE id = ?1",
};

/// `id`: gives up the locks a worker that stops holds (rescue, pruning, sampling), so that
/// another node takes them at once rather than when they run out (two thirds of the stopped
/// worker's lease: 20 s by default).
const RELEASE_LOCKS: Both = Both {
    postgres: "DELETE FROM errand_locks WHERE holder = $1",
    sqlite: "DELETE FROM errand_locks WHERE holder = ?1",
};

/// `stale_ms, now`: removes the rows of workers not seen for `stale_ms` (killed).
const FORGET: Both = Both {
    postgres: "DELETE FROM errand_workers WHERE seen_at < errand_now_ms() - $1",
    sqlite: "DELETE FROM errand_workers WHERE seen_at < ?2 - ?1",
};

impl<D: Dialect> SqlStore<D> {
    /// Writes (or renews) `worker`'s row among the live workers.
    pub(crate) async fn heartbeat(&self, worker: &Presence<'_>) -> Result<(), Error> {
        let op = || format!("record worker `{}` as live", worker.id);
        let row = values![
            worker.id,
            worker.host,
            i64::from(worker.pid),
            Value::Texts(worker.queues.clone()),
            Value::Texts(worker.kinds.to_vec()),
            count(worker.concurrency),
            Value::Now,
        ];
        self.execute(HEARTBEAT.of::<D>(), row, op).await.map(drop)
    }

    /// Removes `worker`'s row and gives up its locks, as it stops.
    pub(crate) async fn leave(&self, worker: &str) -> Result<(), Error> {
        let op = || format!("remove worker `{worker}` from the live workers");
        self.execute(LEAVE.of::<D>(), values![worker], op).await?;
        let op = || format!("give up the locks of worker `{worker}`");
        self.execute(RELEASE_LOCKS.of::<D>(), values![worker], op)
            .await
            .map(drop)
    }

    /// Removes the rows of workers not seen for `stale`; returns how many.
    pub(crate) async fn forget_workers(&self, stale: std::time::Duration) -> Result<u64, Error> {
        let op = named("forget workers that stopped without saying so");
        let forget = values![super::duration_millis(stale), Value::Now];
        self.execute(FORGET.of::<D>(), forget, op).await
    }
}
