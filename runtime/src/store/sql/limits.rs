//! Limits across the cluster (`#[job(concurrency = .., rate = ..)]`): the claim of limited
//! jobs and the slots it takes.
//!
//! A limited job starts only by taking free slots of its limit's key, in the transaction that
//! claims it: a `running` slot for a concurrency limit (free while no running job holds it; a
//! trigger frees it when its job stops running, however it stops), and a `start` slot for a
//! rate limit (free again a window after it was taken). There are at most `concurrency` running
//! slots and `max` start slots per key, and a slot is taken under a row lock (PostgreSQL) or
//! the database's single writer (SQLite), so no two nodes take one slot: at most `concurrency`
//! jobs of a key run at once, and at most `max` start in any window.

use std::collections::HashMap;

use super::claims::{claimed_row, in_start_order, CLAIM_IDS};
use super::{count, op_error, Both, Dialect, Named, SqlRow, SqlStore, Value};
use crate::error::Error;
use crate::info::duration_millis;
use crate::store::{Claimed, KindLimit};

/// `queues, kinds, max_running, max_starts, windows, scan, now` (the last four lists
/// parallel to `kinds`, NULL where a kind has no such limit): returns `id, limit_key` of up
/// to `scan` available jobs of those kinds whose limit is not full, most urgent first,
/// locked for the transaction where the store locks rows.
pub(super) static LIMIT_CANDIDATES: Named = Named::new(Both {
    // The keys of each queue's available limited jobs are read by skipping through
    // `errand_jobs_limited` (a recursive CTE: one index probe per key); each key's slots are
    // counted once, and only a key with a free slot has its first jobs read, at most as many
    // as it has free slots: a full key's backlog is never read.
    postgres: concat!(
        "WITH RECURSIVE keys(queue, limit_key) AS (
            SELECT q.queue, (SELECT j.limit_key FROM errand_jobs j
                             WHERE j.queue = q.queue AND j.state = 'available'
                               AND j.limit_key IS NOT NULL
                             ORDER BY j.limit_key LIMIT 1)
            FROM unnest($queues::text[]) AS q(queue)
            WHERE NOT ",
        paused!("q.queue"),
        "
            UNION ALL
            SELECT k.queue, (SELECT j.limit_key FROM errand_jobs j
                             WHERE j.queue = k.queue AND j.state = 'available'
                               AND j.limit_key > k.limit_key
                             ORDER BY j.limit_key LIMIT 1)
            FROM keys k WHERE k.limit_key IS NOT NULL
        ), room AS (
            SELECT k.queue, k.limit_key, l.kind,
                   LEAST(COALESCE(l.max_running - c.running, $scan), COALESCE(l.max_starts - c.starts, $scan), $scan) AS free
            FROM keys k
            JOIN unnest($kinds::text[], $max_running::bigint[], $max_starts::bigint[], $windows::bigint[])
                 AS l(kind, max_running, max_starts, window_ms)
              ON k.limit_key = l.kind OR starts_with(k.limit_key, l.kind || ':')
            CROSS JOIN LATERAL (
                SELECT count(*) FILTER (WHERE s.purpose = 'running' AND s.job_id IS NOT NULL) AS running,
                       count(*) FILTER (WHERE s.purpose = 'start'
                                          AND ((s.taken_at IS NULL AND s.job_id IS NOT NULL)
                                               OR s.taken_at > errand_now_ms() - l.window_ms)) AS starts
                FROM errand_limit_slots s WHERE s.limit_key = k.limit_key) c
        )
        SELECT j.id, j.limit_key, j.kind FROM room r
        CROSS JOIN LATERAL (
            SELECT id, limit_key, kind, priority, run_at FROM errand_jobs
            WHERE queue = r.queue AND state = 'available' AND limit_key = r.limit_key
              AND kind = r.kind AND ",
        unexpired!("errand_now_ms()"),
        "
            ORDER BY priority, run_at, id
            LIMIT r.free
            FOR UPDATE SKIP LOCKED) j
        WHERE r.free > 0
        ORDER BY j.priority, j.run_at, j.id
        LIMIT $scan",
    ),
    // As PostgreSQL's: one probe of `errand_jobs_limited` per key, and the first jobs only of
    // keys with a free slot (up to `$scan` each: SQLite's LIMIT cannot read a row; the claim takes
    // no more than the free slots).
    sqlite: concat!(
        "WITH RECURSIVE l AS (
            SELECT k.value AS kind, r.value AS max_running, s.value AS max_starts, w.value AS window_ms
            FROM json_each($kinds) k
            JOIN json_each($max_running) r ON r.key = k.key
            JOIN json_each($max_starts) s ON s.key = k.key
            JOIN json_each($windows) w ON w.key = k.key
        ), keys(queue, limit_key) AS (
            SELECT q.value, (SELECT j.limit_key FROM errand_jobs j
                             WHERE j.queue = q.value AND j.state = 'available'
                               AND j.limit_key IS NOT NULL
                             ORDER BY j.limit_key LIMIT 1)
            FROM json_each($queues) q
            WHERE NOT ",
        paused!("q.value"),
        "
            UNION ALL
            SELECT k.queue, (SELECT j.limit_key FROM errand_jobs j
                             WHERE j.queue = k.queue AND j.state = 'available'
                               AND j.limit_key IS NOT NULL AND j.limit_key > k.limit_key
                             ORDER BY j.limit_key LIMIT 1)
            FROM keys k WHERE k.limit_key IS NOT NULL
        ), room AS (
            SELECT k.queue, k.limit_key, l.kind FROM keys k
            JOIN l ON k.limit_key = l.kind OR substr(k.limit_key, 1, length(l.kind) + 1) = l.kind || ':'
            WHERE (l.max_running IS NULL OR l.max_running > (
                      SELECT count(*) FROM errand_limit_slots s
                      WHERE s.limit_key = k.limit_key AND s.purpose = 'running'
                        AND s.job_id IS NOT NULL))
              AND (l.max_starts IS NULL OR l.max_starts > (
                      SELECT count(*) FROM errand_limit_slots s
                      WHERE s.limit_key = k.limit_key AND s.purpose = 'start'
                        AND ((s.taken_at IS NULL AND s.job_id IS NOT NULL)
                             OR s.taken_at > $now - l.window_ms)))
        )
        SELECT j.id, j.limit_key, j.kind FROM room r
        JOIN errand_jobs j ON j.id IN (
            SELECT id FROM errand_jobs
            WHERE queue = r.queue AND state = 'available' AND limit_key = r.limit_key
              AND kind = r.kind AND ",
        unexpired!("$now"),
        "
            ORDER BY priority, run_at, id
            LIMIT $scan)
        ORDER BY j.priority, j.run_at, j.id
        LIMIT $scan",
    ),
});

/// `keys, windows, now`: returns `limit_key, purpose, n` of the free slots of those limit
/// keys (`windows` parallel to `keys`: each key's rate window, NULL without one), locked.
pub(super) static LIMIT_FREE_SLOTS: Named = Named::new(Both {
    postgres: "SELECT s.limit_key, s.purpose, s.n::bigint FROM errand_limit_slots s
        JOIN unnest($keys::text[], $windows::bigint[]) AS k(limit_key, window_ms) ON k.limit_key = s.limit_key
        WHERE (s.purpose = 'running' AND s.job_id IS NULL)
           OR (s.purpose = 'start' AND (s.job_id IS NULL OR s.taken_at <= errand_now_ms() - k.window_ms))
        FOR UPDATE OF s SKIP LOCKED",
    sqlite: "SELECT s.limit_key, s.purpose, s.n FROM errand_limit_slots s
        JOIN (SELECT k.value AS limit_key, w.value AS window_ms
              FROM json_each($keys) k JOIN json_each($windows) w ON w.key = k.key) k
          ON k.limit_key = s.limit_key
        WHERE (s.purpose = 'running' AND s.job_id IS NULL)
           OR (s.purpose = 'start' AND (s.job_id IS NULL OR s.taken_at <= $now - k.window_ms))",
});

/// `keys`: returns `limit_key, purpose, max(n)` of the slots those keys have.
pub(super) static LIMIT_SLOT_COUNTS: Named = Named::new(Both {
    postgres: "SELECT limit_key, purpose, max(n)::bigint FROM errand_limit_slots
        WHERE limit_key = ANY($keys) GROUP BY limit_key, purpose",
    sqlite: "SELECT limit_key, purpose, max(n) FROM errand_limit_slots
        WHERE limit_key IN (SELECT value FROM json_each($keys)) GROUP BY limit_key, purpose",
});

/// `keys, purposes, ns` (parallel): adds slots; returns `limit_key, purpose, n` of those it
/// added.
pub(super) static LIMIT_ADD_SLOTS: Named = Named::new(Both {
    postgres: "INSERT INTO errand_limit_slots (limit_key, purpose, n)
        SELECT * FROM unnest($keys::text[], $purposes::text[], $ns::int[])
        ON CONFLICT DO NOTHING
        RETURNING limit_key, purpose, n::bigint",
    sqlite: "INSERT INTO errand_limit_slots (limit_key, purpose, n)
        SELECT k.value, p.value, n.value
        FROM json_each($keys) k JOIN json_each($purposes) p ON p.key = k.key JOIN json_each($ns) n ON n.key = k.key
        WHERE true
        ON CONFLICT DO NOTHING
        RETURNING limit_key, purpose, n",
});

/// `keys, purposes, ns, jobs, now` (parallel): takes slots for jobs.
pub(super) static LIMIT_TAKE_SLOTS: Named = Named::new(Both {
    postgres: "UPDATE errand_limit_slots s
        SET job_id = t.job,
            -- A start slot is reserved, and marked when its job begins (`mark_started`).
            taken_at = CASE WHEN s.purpose = 'start' THEN NULL ELSE s.taken_at END
        FROM unnest($keys::text[], $purposes::text[], $ns::int[], $jobs::bigint[]) AS t(limit_key, purpose, n, job)
        WHERE s.limit_key = t.limit_key AND s.purpose = t.purpose AND s.n = t.n",
    sqlite: "UPDATE errand_limit_slots
        SET job_id = t.job,
            -- A start slot is reserved, and marked when its job begins (`mark_started`).
            taken_at = CASE WHEN errand_limit_slots.purpose = 'start' THEN NULL ELSE taken_at END
        FROM (SELECT k.value AS limit_key, p.value AS purpose, n.value AS n, j.value AS job
              FROM json_each($keys) k JOIN json_each($purposes) p ON p.key = k.key
              JOIN json_each($ns) n ON n.key = k.key JOIN json_each($jobs) j ON j.key = k.key) t
        WHERE errand_limit_slots.limit_key = t.limit_key AND errand_limit_slots.purpose = t.purpose
          AND errand_limit_slots.n = t.n",
});

/// `id, fence, now`: marks the start slot job `id` reserved as taken now, as its run begins
/// under `fence`: the slot is free again a window after this.
static MARK_STARTED: Named = Named::new(Both {
    postgres: "UPDATE errand_limit_slots s SET taken_at = errand_now_ms()
        FROM errand_jobs j
        WHERE j.id = $id AND j.fence = $fence AND j.state = 'running'
          AND s.limit_key = j.limit_key AND s.purpose = 'start' AND s.job_id = j.id
          AND s.taken_at IS NULL",
    sqlite: "UPDATE errand_limit_slots SET taken_at = $now
        WHERE purpose = 'start' AND job_id = $id AND taken_at IS NULL
          AND limit_key = (SELECT limit_key FROM errand_jobs
                           WHERE id = $id AND fence = $fence AND state = 'running')",
});

/// How many candidate jobs a limited claim looks at per place it fills: past those whose key
/// has no slot left.
const SCAN_PER_PLACE: usize = 4;

const RUNNING: &str = "running";

const START: &str = "start";

/// One slot of one limit key.
type SlotId = (String, &'static str, i64);

impl<D: Dialect> SqlStore<D> {
    /// Claims up to `room` available jobs of the limited kinds `limits` from `queues`, each only
    /// with the slots its limits need, for `worker`.
    pub(crate) async fn claim_limited(
        &self,
        queues: &[&str],
        limits: &[KindLimit],
        room: usize,
        worker: &str,
        lease: std::time::Duration,
    ) -> Result<Vec<Claimed>, Error> {
        let op = || format!("claim limited jobs from {queues:?}");
        let err = |e| op_error::<D>(op(), e);
        if limits.is_empty() || room == 0 {
            return Ok(Vec::new());
        }
        let by_kind: HashMap<&str, &KindLimit> = limits.iter().map(|l| (l.kind, l)).collect();
        // One time for the whole claim where the store reads it from this process (SQLite), so
        // that a start slot's time and its job's start are the same, read once the transaction
        // holds the database's write lock: slots freed before are freed before this time, so
        // the claim is recorded after the end of the run that held its slot. PostgreSQL reads
        // its own (see `claim_ids`).
        let mut tx = self.begin_write().await?;
        let now = self.clock.now_ms();
        let candidates = params![queues: Value::Texts(queues.to_vec()), kinds: Value::Texts(limits.iter().map(|l| l.kind).collect()), max_running: Value::OptInts(
                limits
                    .iter()
                    .map(|l| l.max_running.map(i64::from))
                    .collect()
            ), max_starts: Value::OptInts(
                limits
                    .iter()
                    .map(|l| l.rate.map(|r| i64::from(r.max)))
                    .collect()
            ), windows: Value::OptInts(
                limits
                    .iter()
                    .map(|l| l.rate.map(|r| duration_millis(r.per)))
                    .collect()
            ), scan: count(room * SCAN_PER_PLACE), now: Value::from(now)];
        let rows = super::limits::LIMIT_CANDIDATES
            .fetch::<D>(&mut tx, candidates, &self.clock)
            .await
            .map_err(err)?;
        let mut jobs: Vec<(i64, String)> = Vec::with_capacity(rows.len());
        // Each key's limits: those of its jobs' kind.
        let mut keys: Vec<(String, &KindLimit)> = Vec::new();
        for row in &rows {
            let (id, key, kind) = (row.int(0), row.text(1), row.text(2));
            let (id, key, kind) = (id.map_err(err)?, key.map_err(err)?, kind.map_err(err)?);
            let Some(limit) = by_kind.get(kind.as_str()) else {
                continue;
            };
            if !keys.iter().any(|(k, _)| *k == key) {
                keys.push((key.clone(), limit));
            }
            jobs.push((id, key));
        }
        if jobs.is_empty() {
            tx.commit().await.map_err(err)?;
            return Ok(Vec::new());
        }
        let key_names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
        let windows = keys
            .iter()
            .map(|(_, l)| l.rate.map(|r| duration_millis(r.per)))
            .collect();
        let free = params![keys: Value::Texts(key_names.clone()), windows: Value::OptInts(windows), now: Value::from(now)];
        let rows = super::limits::LIMIT_FREE_SLOTS
            .fetch::<D>(&mut tx, free, &self.clock)
            .await
            .map_err(err)?;
        let mut free: Vec<SlotId> = slots(&rows).map_err(err)?;
        free.sort();
        // Slots a key lacks are added up to its limit; a slot this transaction adds is its own
        // until it commits.
        let counts = params![keys: Value::Texts(key_names)];
        let rows = super::limits::LIMIT_SLOT_COUNTS
            .fetch::<D>(&mut tx, counts, &self.clock)
            .await
            .map_err(err)?;
        let existing = slots(&rows).map_err(err)?;
        let wanted = slots_to_add(&keys, &jobs, &existing, &free);
        if !wanted.is_empty() {
            let add = params![keys: Value::Texts(wanted.iter().map(|(k, _, _)| k.as_str()).collect()), purposes: Value::Texts(wanted.iter().map(|(_, p, _)| *p).collect()), ns: Value::Ints(wanted.iter().map(|(_, _, n)| *n).collect())];
            let rows = super::limits::LIMIT_ADD_SLOTS
                .fetch::<D>(&mut tx, add, &self.clock)
                .await
                .map_err(err)?;
            free.extend(slots(&rows).map_err(err)?);
            free.sort();
        }
        // Jobs take slots in their order, each both of its key's slots or none.
        let mut taken: Vec<(SlotId, i64)> = Vec::new();
        let mut ids = Vec::new();
        for (id, key) in &jobs {
            if ids.len() == room {
                break;
            }
            let Some((_, limit)) = keys.iter().find(|(k, _)| k == key) else {
                continue;
            };
            let mut take = |purpose: &'static str, max: Option<u32>| -> Option<Option<SlotId>> {
                let Some(max) = max.map(i64::from) else {
                    return Some(None);
                };
                let at = free
                    .iter()
                    .position(|(k, p, n)| k == key && *p == purpose && *n <= max)?;
                Some(Some(free.remove(at)))
            };
            let Some(running) = take(RUNNING, limit.max_running) else {
                continue;
            };
            let Some(start) = take(START, limit.rate.map(|r| r.max)) else {
                // Its running slot goes back: another job of the key cannot start either.
                free.extend(running);
                continue;
            };
            taken.extend(running.into_iter().chain(start).map(|slot| (slot, *id)));
            ids.push(*id);
        }
        if ids.is_empty() {
            tx.commit().await.map_err(err)?;
            return Ok(Vec::new());
        }
        let take = params![keys: Value::Texts(taken.iter().map(|((k, _, _), _)| k.as_str()).collect()), purposes: Value::Texts(taken.iter().map(|((_, p, _), _)| *p).collect()), ns: Value::Ints(taken.iter().map(|((_, _, n), _)| *n).collect()), jobs: Value::Ints(taken.iter().map(|(_, job)| *job).collect()), now: Value::from(now)];
        super::limits::LIMIT_TAKE_SLOTS
            .execute::<D>(&mut tx, take, &self.clock)
            .await
            .map_err(err)?;
        let claim = params![ids: Value::Ints(ids), lease: Value::Lease(lease), worker, now: Value::from(now)];
        let rows = CLAIM_IDS
            .fetch::<D>(&mut tx, claim, &self.clock)
            .await
            .map_err(err)?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            claimed.push(claimed_row(row).map_err(err)?);
        }
        tx.commit().await.map_err(err)?;
        Ok(in_start_order(claimed))
    }
}

impl<D: Dialect> SqlStore<D> {
    /// Marks the start of job `id`'s run under `fence`, whose claim reserved a start slot of
    /// its rate limit: the limit counts starts, not claims.
    pub(crate) async fn mark_started(
        &self,
        id: crate::job::JobId,
        fence: i64,
    ) -> Result<(), Error> {
        let op = || format!("mark the start of job {id} against its rate limit");
        let mark = params![id: id.get(), fence, now: Value::Now];
        self.run(&MARK_STARTED, mark, op).await.map(drop)
    }
}

/// Rows of `limit_key, purpose, n`.
fn slots<R: SqlRow>(rows: &[R]) -> Result<Vec<SlotId>, sqlx::Error> {
    rows.iter()
        .map(|row| {
            let purpose = if row.text(1)? == RUNNING {
                RUNNING
            } else {
                START
            };
            Ok((row.text(0)?, purpose, row.int(2)?))
        })
        .collect()
}

/// The slots a limited claim adds before it takes them: each key's, up to its limit, as many as
/// its candidate jobs need beyond the free ones. Sorted: inserted in one order on every node,
/// so that two claims creating the first slots of two keys never wait on each other's in
/// opposite order (a deadlock on PostgreSQL), whatever order each read its candidates in.
fn slots_to_add(
    keys: &[(String, &KindLimit)],
    jobs: &[(i64, String)],
    existing: &[SlotId],
    free: &[SlotId],
) -> Vec<SlotId> {
    let mut wanted: Vec<SlotId> = Vec::new();
    for (key, limit) in keys {
        let needed = jobs.iter().filter(|(_, k)| k == key).count();
        for (purpose, max) in [
            (RUNNING, limit.max_running),
            (START, limit.rate.map(|r| r.max)),
        ] {
            let Some(max) = max.map(i64::from) else {
                continue;
            };
            let have = existing
                .iter()
                .find(|(k, p, _)| k == key && *p == purpose)
                .map_or(0, |(_, _, n)| *n);
            let free_now = free
                .iter()
                .filter(|(k, p, n)| k == key && *p == purpose && *n <= max)
                .count();
            let short = i64::try_from(needed.saturating_sub(free_now)).unwrap_or(i64::MAX);
            for n in (have + 1)..=(have.saturating_add(short)).min(max) {
                wanted.push((key.clone(), purpose, n));
            }
        }
    }
    wanted.sort();
    wanted
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two claims that read the same keys' candidates in opposite orders add their first slots
    /// in one order: neither can hold one key's new slot while waiting on the other's.
    #[test]
    fn slots_are_added_in_one_order_whatever_the_candidates_order() {
        let limit = KindLimit {
            kind: "mail",
            max_running: Some(2),
            rate: None,
        };
        let jobs = |keys: &[&str]| -> Vec<(i64, String)> {
            keys.iter()
                .enumerate()
                .map(|(i, k)| (i as i64, (*k).to_owned()))
                .collect()
        };
        let keys = |keys: &[&str]| -> Vec<(String, &KindLimit)> {
            keys.iter().map(|k| ((*k).to_owned(), &limit)).collect()
        };
        let ab = slots_to_add(
            &keys(&["mail:a", "mail:b"]),
            &jobs(&["mail:a", "mail:b", "mail:b"]),
            &[],
            &[],
        );
        let ba = slots_to_add(
            &keys(&["mail:b", "mail:a"]),
            &jobs(&["mail:b", "mail:a", "mail:b"]),
            &[],
            &[],
        );
        assert_eq!(ab, ba);
        assert_eq!(
            ab,
            [
                ("mail:a".to_owned(), RUNNING, 1),
                ("mail:b".to_owned(), RUNNING, 1),
                ("mail:b".to_owned(), RUNNING, 2),
            ]
        );
        // Free slots count, and a key never gets more than its limit.
        let free = [("mail:a".to_owned(), RUNNING, 1)];
        let existing = [("mail:a".to_owned(), RUNNING, 1)];
        let more = slots_to_add(
            &keys(&["mail:a"]),
            &jobs(&["mail:a", "mail:a", "mail:a"]),
            &existing,
            &free,
        );
        assert_eq!(more, [("mail:a".to_owned(), RUNNING, 2)]);
    }
}
