//! Fairness (`#[job(fair_by = ..)]`): jobs of one queue taken in turns by key, every key's
//! most urgent before any key's second, the key served longest ago first.

use super::claims::claimed_row;
use super::{count, op_error, Both, Dialect, Named, SqlRow, SqlStore, Value};
use crate::error::Error;
use crate::store::Claimed;

/// `queue, limit, kinds, lease, worker, now`: claims up to `limit` available jobs of the
/// fair `kinds` from `queue`, taking each `fair_key`'s jobs in turn (every key's most urgent
/// before any key's second; among keys, the one served longest ago first), returning what
/// `CLAIM` returns and the job's `fair_key`.
pub(super) static CLAIM_FAIR: Named = Named::new(Both {
    // The distinct keys are read by skipping through `errand_jobs_fair` (a recursive CTE:
    // one index probe per key), then each key's first jobs from the same index.
    postgres: concat!(
        "WITH RECURSIVE keys AS (
            (SELECT fair_key FROM errand_jobs
             WHERE queue = $queue AND state = 'available' AND fair_key IS NOT NULL
             ORDER BY fair_key LIMIT 1)
            UNION ALL
            SELECT (SELECT j.fair_key FROM errand_jobs j
                    WHERE j.queue = $queue AND j.state = 'available' AND j.fair_key IS NOT NULL
                      AND j.fair_key > k.fair_key
                    ORDER BY j.fair_key LIMIT 1)
            FROM keys k WHERE k.fair_key IS NOT NULL
        ), heads AS (
            SELECT h.id, h.priority, h.run_at, t.served_at,
                   row_number() OVER (PARTITION BY h.fair_key ORDER BY h.priority, h.run_at, h.id) AS turn
            FROM keys k CROSS JOIN LATERAL (
                SELECT id, fair_key, priority, run_at FROM errand_jobs
                WHERE queue = $queue AND state = 'available' AND fair_key = k.fair_key AND kind = ANY($kinds)
                  AND ",
        unexpired!("errand_now_ms()"),
        "
                ORDER BY priority, run_at, id LIMIT $limit) h
            LEFT JOIN errand_fair_turns t ON t.queue = $queue AND t.fair_key = h.fair_key
            WHERE k.fair_key IS NOT NULL
        ), picked AS (
            SELECT id FROM errand_jobs
            WHERE id IN (SELECT id FROM heads
                         ORDER BY turn, served_at NULLS FIRST, priority, run_at, id LIMIT $limit)
              AND state = 'available'
              AND NOT ",
        paused!("$queue"),
        "
            FOR UPDATE SKIP LOCKED
        )
        UPDATE errand_jobs ",
        pg_claim_set!("$lease", "$worker"),
        " WHERE id IN (SELECT id FROM picked) ",
        pg_claim_returning!(),
        ", fair_key",
    ),
    sqlite: concat!(
        "UPDATE errand_jobs ",
        lite_claim_set!("$now", "$lease", "$worker"),
        "
        WHERE id IN (
            WITH RECURSIVE keys(fair_key) AS (
                SELECT (SELECT fair_key FROM errand_jobs
                        WHERE queue = $queue AND state = 'available' AND fair_key IS NOT NULL
                        ORDER BY fair_key LIMIT 1)
                UNION ALL
                SELECT (SELECT j.fair_key FROM errand_jobs j
                        WHERE j.queue = $queue AND j.state = 'available' AND j.fair_key IS NOT NULL
                          AND j.fair_key > k.fair_key
                        ORDER BY j.fair_key LIMIT 1)
                FROM keys k WHERE k.fair_key IS NOT NULL
            ), heads AS (
                SELECT j.id, j.fair_key, j.priority, j.run_at,
                       row_number() OVER (PARTITION BY j.fair_key ORDER BY j.priority, j.run_at, j.id) AS turn
                FROM keys k JOIN errand_jobs j ON j.id IN (
                    SELECT id FROM errand_jobs
                    WHERE queue = $queue AND state = 'available' AND fair_key = k.fair_key
                      AND kind IN (SELECT value FROM json_each($kinds))
                      AND ",
        unexpired!("$now"),
        "
                    ORDER BY priority, run_at, id
                    LIMIT $limit)
                WHERE k.fair_key IS NOT NULL
                  AND NOT ",
        paused!("$queue"),
        "
            )
            SELECT h.id FROM heads h
            LEFT JOIN errand_fair_turns t ON t.queue = $queue AND t.fair_key = h.fair_key
            ORDER BY h.turn, t.served_at NULLS FIRST, h.priority, h.run_at, h.id
            LIMIT $limit) ",
        lite_claim_returning!(),
        ", fair_key",
    ),
});

/// `queue, keys, now`: records that these keys were served now.
pub(super) static FAIR_SERVED: Named = Named::new(Both {
    postgres: "INSERT INTO errand_fair_turns (queue, fair_key, served_at)
        SELECT $queue, k, errand_now_ms() FROM unnest($keys::text[]) AS k
        ON CONFLICT (queue, fair_key) DO UPDATE SET served_at = EXCLUDED.served_at",
    sqlite: "INSERT INTO errand_fair_turns (queue, fair_key, served_at)
        SELECT $queue, value, $now FROM json_each($keys) WHERE true
        ON CONFLICT (queue, fair_key) DO UPDATE SET served_at = excluded.served_at",
});

impl<D: Dialect> SqlStore<D> {
    /// Claims up to `room` available jobs of the fair `kinds` from `queue`, each key's in turn.
    pub(crate) async fn claim_fair(
        &self,
        queue: &str,
        room: usize,
        kinds: &[&str],
        worker: &str,
        lease: std::time::Duration,
    ) -> Result<Vec<Claimed>, Error> {
        let op = || format!("claim fair jobs from `{queue}`");
        let claim = params![queue, limit: count(room), kinds: Value::Texts(kinds.to_vec()), lease: Value::Lease(lease), worker, now: Value::Now];
        let err = |e| op_error::<D>(op(), e);
        let mut tx = self.begin_write().await?;
        let rows = CLAIM_FAIR
            .fetch::<D>(&mut tx, claim, &self.clock)
            .await
            .map_err(err)?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let (order, job) = claimed_row(row).map_err(err)?;
            claimed.push((row.text(15).map_err(err)?, order, job));
        }
        let mut keys: Vec<&str> = claimed.iter().map(|(key, _, _)| key.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        if !keys.is_empty() {
            let served = params![queue, keys: Value::Texts(keys), now: Value::Now];
            FAIR_SERVED
                .execute::<D>(&mut tx, served, &self.clock)
                .await
                .map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        Ok(in_turns(claimed))
    }
}

/// Fair claims in the order they start: each key's first, then each key's second, and so on,
/// each key's jobs (and each turn's) by priority, run time and id.
fn in_turns(mut claimed: Vec<(String, (i64, i64), Claimed)>) -> Vec<Claimed> {
    claimed.sort_by(|(k1, o1, j1), (k2, o2, j2)| (k1, o1, j1.id).cmp(&(k2, o2, j2.id)));
    let mut turns: Vec<(usize, (i64, i64), Claimed)> = Vec::with_capacity(claimed.len());
    let mut turn = 0;
    let mut last: Option<String> = None;
    for (key, order, job) in claimed {
        turn = if last.as_deref() == Some(key.as_str()) {
            turn + 1
        } else {
            0
        };
        last = Some(key);
        turns.push((turn, order, job));
    }
    turns.sort_by(|(t1, o1, j1), (t2, o2, j2)| (t1, o1, j1.id).cmp(&(t2, o2, j2.id)));
    turns.into_iter().map(|(_, _, job)| job).collect()
}
