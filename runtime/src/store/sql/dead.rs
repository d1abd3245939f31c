//! The dead set: retrying, counting what a retry refuses, and deleting dead jobs picked by a
//! `DeadQuery`; and the delivery of each death to the death handlers, claimed for a window so
//! that a handler whose worker crashed is called again.

use super::{count, named, op_error, Dialect, SqlRow, SqlStore, Value};
use super::{Both, Named};
use crate::error::Error;
use crate::info::{duration_millis, JobInfo};
use crate::job::JobId;
use crate::store::DeadQuery;
use std::time::Duration;

/// The filter's five, then `now`: retries the dead jobs it picks, but those whose death
/// was acted on (`death_settled!`).
pub(super) static RETRY_DEAD: Named = Named::new(Both {
    // A job unique until executed takes its key back, and is retried only while no other job
    // holds that key (otherwise it would run beside its duplicate); of several dead jobs with
    // one key, a bulk retry takes the oldest.
    postgres: concat!(
        "UPDATE errand_jobs
        SET state = 'available', attempt = 0, run_at = errand_now_ms(), finished_at = NULL,
            lease_until = NULL, death_pending = false, death_until = NULL, death_deliveries = 0,
            cancel_requested = false,
            unique_key = CASE WHEN unique_strategy IN ('until_executing', 'until_executed')
                              THEN idempotency_key ELSE unique_key END
        WHERE ",
        pg_dead_filter!(),
        "
          AND NOT (COALESCE(unique_strategy, '') IN ('until_executing', 'until_executed') AND (
              EXISTS (SELECT 1 FROM errand_jobs held
                      WHERE held.kind = errand_jobs.kind AND held.unique_key = errand_jobs.idempotency_key)
              OR ($id::bigint IS NULL AND EXISTS (
                  SELECT 1 FROM errand_jobs twin
                  WHERE twin.kind = errand_jobs.kind AND twin.idempotency_key = errand_jobs.idempotency_key
                    AND twin.state = 'dead' AND twin.id < errand_jobs.id))))
          AND NOT (",
        death_settled!(),
        ")"
    ),
    // As PostgreSQL's: the key comes back only while no other job holds it.
    sqlite: concat!(
        "UPDATE errand_jobs
        SET state = 'available', attempt = 0, run_at = $now, finished_at = NULL, lease_until = NULL,
            death_pending = 0, death_until = NULL, death_deliveries = 0, cancel_requested = 0,
            unique_key = CASE WHEN unique_strategy IN ('until_executing', 'until_executed')
                              THEN idempotency_key ELSE unique_key END
        WHERE ",
        lite_dead_filter!(),
        "
          AND NOT (COALESCE(unique_strategy, '') IN ('until_executing', 'until_executed') AND (
              EXISTS (SELECT 1 FROM errand_jobs held
                      WHERE held.kind = errand_jobs.kind AND held.unique_key = errand_jobs.idempotency_key)
              OR ($id IS NULL AND EXISTS (
                  SELECT 1 FROM errand_jobs twin
                  WHERE twin.kind = errand_jobs.kind AND twin.idempotency_key = errand_jobs.idempotency_key
                    AND twin.state = 'dead' AND twin.id < errand_jobs.id))))
          AND NOT (",
        death_settled!(),
        ")"
    ),
});

/// The filter's five: how many of the dead jobs it picks a retry refuses, their death
/// having been acted on.
pub(super) static REFUSED_DEAD: Named = Named::new(Both {
    postgres: concat!(
        "SELECT count(*) FROM errand_jobs WHERE ",
        pg_dead_filter!(),
        " AND ",
        death_settled!()
    ),
    sqlite: concat!(
        "SELECT count(*) FROM errand_jobs WHERE ",
        lite_dead_filter!(),
        " AND ",
        death_settled!()
    ),
});

/// The filter's five.
pub(super) static DELETE_DEAD: Named = Named::new(Both {
    postgres: concat!("DELETE FROM errand_jobs WHERE ", pg_dead_filter!()),
    sqlite: concat!("DELETE FROM errand_jobs WHERE ", lite_dead_filter!()),
});

/// `limit, lease, now`: leases pending deaths; returns `id, deliveries`.
pub(super) static CLAIM_DEATHS: Named = Named::new(Both {
    postgres: "UPDATE errand_jobs
        SET death_until = errand_now_ms() + $window, death_deliveries = death_deliveries + 1
        WHERE id IN (SELECT id FROM errand_jobs
                     WHERE death_pending AND (death_until IS NULL OR death_until < errand_now_ms())
                     ORDER BY id LIMIT $limit FOR UPDATE SKIP LOCKED)
        RETURNING id, death_deliveries::bigint",
    sqlite: "UPDATE errand_jobs SET death_until = $now + $window, death_deliveries = death_deliveries + 1
        WHERE id IN (SELECT id FROM errand_jobs
                     WHERE death_pending = 1 AND (death_until IS NULL OR death_until < $now)
                     ORDER BY id LIMIT $limit)
        RETURNING id, death_deliveries",
});

/// `id`.
pub(super) static DEATH_DELIVERED: Named = Named::new(Both {
    postgres: "UPDATE errand_jobs SET death_pending = false, death_until = NULL WHERE id = $id",
    sqlite: "UPDATE errand_jobs SET death_pending = 0, death_until = NULL WHERE id = $id",
});

impl<D: Dialect> SqlStore<D> {
    pub(crate) async fn claim_deaths(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<(JobInfo, u32)>, Error> {
        let op = named("claim deaths for their handlers");
        let claim = params![limit: count(limit), window: duration_millis(lease), now: Value::Wall];
        let rows = self.rows(&CLAIM_DEATHS, claim, op).await?;
        let mut deaths = Vec::with_capacity(rows.len());
        for row in rows {
            let (id, deliveries) = {
                let read = |column| row.int(column).map_err(|e| op_error::<D>(op(), e));
                (read(0)?, read(1)?)
            };
            if let Some(job) = self.job(JobId::new(id)).await? {
                deaths.push((job, u32::try_from(deliveries).unwrap_or(u32::MAX)));
            }
        }
        Ok(deaths)
    }

    pub(crate) async fn death_delivered(&self, id: JobId) -> Result<(), Error> {
        let op = || format!("mark the death of job {id} delivered");
        self.run(&DEATH_DELIVERED, params![id: id.get()], op)
            .await?;
        Ok(())
    }

    pub(crate) async fn retry_dead(&self, filter: &DeadQuery) -> Result<u64, Error> {
        let mut retry = dead_values(filter);
        retry.push(("now", Value::Now));
        self.run(&RETRY_DEAD, retry, named("retry dead jobs")).await
    }

    pub(crate) async fn refused_dead(&self, filter: &DeadQuery) -> Result<u64, Error> {
        let op = named("count the dead jobs a retry refuses");
        let rows = self.rows(&REFUSED_DEAD, dead_values(filter), op).await?;
        let count = match rows.first() {
            Some(row) => row.int(0).map_err(|e| op_error::<D>(op(), e))?,
            None => 0,
        };
        Ok(u64::try_from(count).unwrap_or(0))
    }

    pub(crate) async fn delete_dead(&self, filter: &DeadQuery) -> Result<u64, Error> {
        let delete = dead_values(filter);
        self.run(&DELETE_DEAD, delete, named("delete dead jobs"))
            .await
    }
}

/// The dead-set filter's five parameters.
pub(crate) fn dead_values(filter: &DeadQuery) -> Vec<(&'static str, Value<'_>)> {
    params![
        id: filter.id.map(JobId::get),
        kind: filter.kind.as_deref(),
        queue: filter.queue.as_deref(),
        after: filter.after_ms,
        before: filter.before_ms,
    ]
}
