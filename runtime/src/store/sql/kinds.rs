//! What a build knows of job kinds, and what its workers do about jobs stored by another
//! build: a rolling deploy runs old and new builds side by side while jobs wait for days.
//!
//! A job stored by a build whose kind had no limit or no `fair_by` lacks the key a build with
//! those options claims it by, and one stored by a build whose kind had options it no longer
//! has carries keys no claim of this build reads (each claim reads an index of its own jobs
//! only). A worker that knows such a kind *adopts* the jobs waiting so: it renders the keys from
//! their arguments, as its own enqueue would, and writes them (none, for a kind without
//! options), so that the job runs under the options of the build that claims it.

use super::{count, named, Both, Dialect, Named, SqlRow, SqlStore, Value};
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
pub(super) static UNKEYED: Named = Named::new(Both {
    postgres: "(SELECT id, kind, args::text FROM errand_jobs
         WHERE kind = ANY($kinds) AND state IN ('available', 'scheduled', 'retryable', 'pending')
           AND ((fair_key IS NULL AND kind = ANY($fair_kinds)) OR (limit_key IS NULL AND kind = ANY($limited_kinds)))
         ORDER BY id LIMIT $limit)
        UNION ALL
        (SELECT j.id, j.kind, j.args::text FROM unnest($plain_kinds::text[]) AS k(kind)
         CROSS JOIN LATERAL (
             SELECT id, kind, args FROM errand_jobs
             WHERE kind = k.kind AND state IN ('available', 'scheduled', 'retryable', 'pending')
               AND (limit_key IS NOT NULL OR fair_key IS NOT NULL)
             ORDER BY id LIMIT $limit) j
         ORDER BY j.id LIMIT $limit)
        ORDER BY id LIMIT $limit",
    sqlite: "SELECT * FROM (SELECT id, kind, args FROM errand_jobs INDEXED BY errand_jobs_kind
             WHERE kind IN (SELECT value FROM json_each($kinds))
               AND state IN ('available', 'scheduled', 'retryable', 'pending')
               AND ((fair_key IS NULL AND kind IN (SELECT value FROM json_each($fair_kinds)))
                    OR (limit_key IS NULL AND kind IN (SELECT value FROM json_each($limited_kinds))))
             LIMIT $limit)
        UNION ALL
        SELECT * FROM (SELECT id, kind, args FROM errand_jobs INDEXED BY errand_jobs_keyed
             WHERE kind IN (SELECT value FROM json_each($plain_kinds))
               AND state IN ('available', 'scheduled', 'retryable', 'pending')
               AND (limit_key IS NOT NULL OR fair_key IS NOT NULL)
             LIMIT $limit)
        ORDER BY id LIMIT $limit",
});

/// `ids, limit_keys, fair_keys` (parallel): gives each waiting job the keys its kind has
/// now, and only those.
static ADOPT: Named = Named::new(Both {
    postgres: "UPDATE errand_jobs j
        SET limit_key = t.limit_key, fair_key = t.fair_key
        FROM unnest($ids::bigint[], $limit_keys::text[], $fair_keys::text[]) AS t(id, limit_key, fair_key)
        WHERE j.id = t.id AND j.state IN ('available', 'scheduled', 'retryable', 'pending')",
    sqlite: "UPDATE errand_jobs
        SET limit_key = t.limit_key, fair_key = t.fair_key
        FROM (SELECT i.value AS id, l.value AS limit_key, f.value AS fair_key
              FROM json_each($ids) i JOIN json_each($limit_keys) l ON l.key = i.key
              JOIN json_each($fair_keys) f ON f.key = i.key) t
        WHERE errand_jobs.id = t.id
          AND errand_jobs.state IN ('available', 'scheduled', 'retryable', 'pending')",
});

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
        let find = params![kinds: Value::Texts(kinds), fair_kinds: Value::Texts(fair.to_vec()), limited_kinds: Value::Texts(limited.to_vec()), plain_kinds: Value::Texts(plain.to_vec()), limit: count(limit)];
        let rows = self.rows(&UNKEYED, find, op).await?;
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
        let adopt = params![ids: Value::Ints(jobs.iter().map(|(id, _)| id.get()).collect()), limit_keys: Value::OptTexts(jobs.iter().map(|(_, k)| k.limit.as_deref()).collect()), fair_keys: Value::OptTexts(jobs.iter().map(|(_, k)| k.fair.as_deref()).collect())];
        self.run(&ADOPT, adopt, op).await
    }
}

/// `id, host, pid, queues, kinds, concurrency, now`: writes the worker's row, or renews it.
static HEARTBEAT: Named = Named::new(Both {
    postgres:
        "INSERT INTO errand_workers (id, host, pid, queues, kinds, concurrency, started_at, seen_at)
        VALUES ($id, $host, $pid, $queues, $kinds, $concurrency, errand_now_ms(), errand_now_ms())
        ON CONFLICT (id) DO UPDATE SET seen_at = errand_now_ms(), queues = EXCLUDED.queues,
            kinds = EXCLUDED.kinds, concurrency = EXCLUDED.concurrency",
    sqlite:
        "INSERT INTO errand_workers (id, host, pid, queues, kinds, concurrency, started_at, seen_at)
        VALUES ($id, $host, $pid, $queues, $kinds, $concurrency, $now, $now)
        ON CONFLICT (id) DO UPDATE SET seen_at = $now, queues = excluded.queues,
            kinds = excluded.kinds, concurrency = excluded.concurrency",
});

/// `id`: removes a worker that stops.
static LEAVE: Named = Named::same("DELETE FROM errand_workers WHERE id = $id");

/// `id`: gives up the locks a worker that stops holds (rescue, pruning, sampling), so that
/// another node takes them at once rather than when they run out (two thirds of the stopped
/// worker's lease: 20 s by default).
static RELEASE_LOCKS: Named = Named::same("DELETE FROM errand_locks WHERE holder = $id");

/// `stale_ms, now`: removes the rows of workers not seen for `stale_ms` (killed).
static FORGET: Named = Named::new(Both {
    postgres: "DELETE FROM errand_workers WHERE seen_at < errand_now_ms() - $stale",
    sqlite: "DELETE FROM errand_workers WHERE seen_at < $now - $stale",
});

impl<D: Dialect> SqlStore<D> {
    /// Writes (or renews) `worker`'s row among the live workers.
    pub(crate) async fn heartbeat(&self, worker: &Presence<'_>) -> Result<(), Error> {
        let op = || format!("record worker `{}` as live", worker.id);
        let row = params![id: worker.id, host: worker.host, pid: i64::from(worker.pid), queues: Value::Texts(worker.queues.clone()), kinds: Value::Texts(worker.kinds.to_vec()), concurrency: count(worker.concurrency), now: Value::Now];
        self.run(&HEARTBEAT, row, op).await.map(drop)
    }

    /// Removes `worker`'s row and gives up its locks, as it stops.
    pub(crate) async fn leave(&self, worker: &str) -> Result<(), Error> {
        let op = || format!("remove worker `{worker}` from the live workers");
        self.run(&LEAVE, params![id: worker], op).await?;
        let op = || format!("give up the locks of worker `{worker}`");
        self.run(&RELEASE_LOCKS, params![id: worker], op)
            .await
            .map(drop)
    }

    /// Removes the rows of workers not seen for `stale`; returns how many.
    pub(crate) async fn forget_workers(&self, stale: std::time::Duration) -> Result<u64, Error> {
        let op = named("forget workers that stopped without saying so");
        let forget = params![stale: super::duration_millis(stale), now: Value::Now];
        self.run(&FORGET, forget, op).await
    }
}
