//! The claims beside the plain one: of jobs under limits across the cluster (`#[job(concurrency
//! = .., rate = ..)]`) and of jobs that take turns by key (`#[job(fair_by = ..)]`); and the
//! aging of waiting jobs' priorities, which changes the order claims take them in.
//!
//! A limited job starts only by taking free slots of its limit's key, in the transaction that
//! claims it: a `running` slot for a concurrency limit (free while no running job holds it; a
//! trigger frees it when its job stops running, however it stops), and a `start` slot for a
//! rate limit (free again a window after it was taken). There are at most `concurrency` running
//! slots and `max` start slots per key, and a slot is taken under a row lock (PostgreSQL) or
//! the database's single writer (SQLite), so no two nodes take one slot: at most `concurrency`
//! jobs of a key run at once, and at most `max` start in any window.

use std::collections::HashMap;

use super::{claimed_row, count, duration_millis, in_start_order, op_error, Dialect, SqlRow};
use super::{Both, SqlStore, Value};
use crate::error::Error;
use crate::store::{Claimed, KindLimit};

/// `id, fence, now`: marks the start slot job `id` reserved as taken now, as its run begins
/// under `fence`: the slot is free again a window after this.
const MARK_STARTED: Both = Both {
    postgres: "UPDATE errand_limit_slots s SET taken_at = errand_now_ms()
        FROM errand_jobs j
        WHERE j.id = $1 AND j.fence = $2 AND j.state = 'running'
          AND s.limit_key = j.limit_key AND s.purpose = 'start' AND s.job_id = j.id
          AND s.taken_at IS NULL",
    sqlite: "UPDATE errand_limit_slots SET taken_at = ?3
        WHERE purpose = 'start' AND job_id = ?1 AND taken_at IS NULL
          AND limit_key = (SELECT limit_key FROM errand_jobs
                           WHERE id = ?1 AND fence = ?2 AND state = 'running')",
};

/// `id, fence, now`: whether the running job `id` (under `fence`) may start now: its queue's
/// pause, whether its deadline has passed, and whether its cancellation was asked. No row: the
/// run lost its job.
const STARTABLE: Both = Both {
    postgres: "SELECT EXISTS (SELECT 1 FROM errand_queues q
                              WHERE q.queue = j.queue AND q.paused_at IS NOT NULL),
                      COALESCE(j.expires_at <= errand_now_ms(), false), j.cancel_requested
        FROM errand_jobs j WHERE j.id = $1 AND j.fence = $2 AND j.state = 'running'",
    sqlite: "SELECT EXISTS (SELECT 1 FROM errand_queues q
                            WHERE q.queue = j.queue AND q.paused_at IS NOT NULL),
                    COALESCE(j.expires_at <= ?3, 0), j.cancel_requested
        FROM errand_jobs j WHERE j.id = ?1 AND j.fence = ?2 AND j.state = 'running'",
};

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
        let candidates = values![
            Value::Texts(queues.to_vec()),
            Value::Texts(limits.iter().map(|l| l.kind).collect()),
            Value::OptInts(
                limits
                    .iter()
                    .map(|l| l.max_running.map(i64::from))
                    .collect()
            ),
            Value::OptInts(
                limits
                    .iter()
                    .map(|l| l.rate.map(|r| i64::from(r.max)))
                    .collect()
            ),
            Value::OptInts(
                limits
                    .iter()
                    .map(|l| l.rate.map(|r| duration_millis(r.per)))
                    .collect()
            ),
            count(room * SCAN_PER_PLACE),
            Value::from(now),
        ];
        let rows = D::fetch(&mut tx, D::SQL.limit_candidates, candidates, &self.clock)
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
        let free = values![
            Value::Texts(key_names.clone()),
            Value::OptInts(windows),
            Value::from(now)
        ];
        let rows = D::fetch(&mut tx, D::SQL.limit_free_slots, free, &self.clock)
            .await
            .map_err(err)?;
        let mut free: Vec<SlotId> = slots(&rows).map_err(err)?;
        free.sort();
        // Slots a key lacks are added up to its limit; a slot this transaction adds is its own
        // until it commits.
        let counts = values![Value::Texts(key_names)];
        let rows = D::fetch(&mut tx, D::SQL.limit_slot_counts, counts, &self.clock)
            .await
            .map_err(err)?;
        let existing = slots(&rows).map_err(err)?;
        let wanted = slots_to_add(&keys, &jobs, &existing, &free);
        if !wanted.is_empty() {
            let add = values![
                Value::Texts(wanted.iter().map(|(k, _, _)| k.as_str()).collect()),
                Value::Texts(wanted.iter().map(|(_, p, _)| *p).collect()),
                Value::Ints(wanted.iter().map(|(_, _, n)| *n).collect()),
            ];
            let rows = D::fetch(&mut tx, D::SQL.limit_add_slots, add, &self.clock)
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
        let take = values![
            Value::Texts(taken.iter().map(|((k, _, _), _)| k.as_str()).collect()),
            Value::Texts(taken.iter().map(|((_, p, _), _)| *p).collect()),
            Value::Ints(taken.iter().map(|((_, _, n), _)| *n).collect()),
            Value::Ints(taken.iter().map(|(_, job)| *job).collect()),
            Value::from(now),
        ];
        D::execute(&mut tx, D::SQL.limit_take_slots, take, &self.clock)
            .await
            .map_err(err)?;
        let claim = values![
            Value::Ints(ids),
            Value::Lease(lease),
            worker,
            Value::from(now),
        ];
        let rows = D::fetch(&mut tx, D::SQL.claim_ids, claim, &self.clock)
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
    /// Whether a claimed job that waited in its worker's buffer may start now.
    pub(crate) async fn startable(
        &self,
        id: crate::job::JobId,
        fence: i64,
    ) -> Result<crate::store::Startable, Error> {
        use crate::store::Startable;
        let op = || format!("check that job {id} may start");
        let rows = self
            .fetch(
                STARTABLE.of::<D>(),
                values![id.get(), fence, Value::Now],
                op,
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(Startable::Lost);
        };
        let err = |e| op_error::<D>(op(), e);
        Ok(if row.flag(0).map_err(err)? {
            Startable::Paused
        } else if row.flag(1).map_err(err)? {
            Startable::Expired
        } else if row.flag(2).map_err(err)? {
            Startable::Cancelled
        } else {
            Startable::Yes
        })
    }

    /// Marks the start of job `id`'s run under `fence`, whose claim reserved a start slot of
    /// its rate limit: the limit counts starts, not claims.
    pub(crate) async fn mark_started(
        &self,
        id: crate::job::JobId,
        fence: i64,
    ) -> Result<(), Error> {
        let op = || format!("mark the start of job {id} against its rate limit");
        let mark = values![id.get(), fence, Value::Now];
        self.execute(MARK_STARTED.of::<D>(), mark, op)
            .await
            .map(drop)
    }
}

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
        let claim = values![
            queue,
            count(room),
            Value::Texts(kinds.to_vec()),
            Value::Lease(lease),
            worker,
            Value::Now,
        ];
        let err = |e| op_error::<D>(op(), e);
        let mut tx = self.begin_write().await?;
        let rows = D::fetch(&mut tx, D::SQL.claim_fair, claim, &self.clock)
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
            let served = values![queue, Value::Texts(keys), Value::Now];
            D::execute(&mut tx, D::SQL.fair_served, served, &self.clock)
                .await
                .map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        Ok(in_turns(claimed))
    }
}

impl<D: Dialect> SqlStore<D> {
    /// Ages the available jobs of `queues`: one priority level up per `step` waited.
    pub(crate) async fn age(
        &self,
        queues: &[&str],
        step: std::time::Duration,
        limit: usize,
    ) -> Result<u64, Error> {
        let op = || format!("age the priorities of {queues:?}");
        let step = duration_millis(step).max(1);
        let age = values![
            Value::Texts(queues.to_vec()),
            step,
            count(limit),
            Value::Now
        ];
        self.execute(D::SQL.age, age, op).await
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
