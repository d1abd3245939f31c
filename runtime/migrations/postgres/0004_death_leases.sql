-- Death handlers are called at least once: a worker that takes a death leases it until
-- `death_until`; `death_pending` is cleared only once a handler succeeded. Past the lease, any
-- worker takes it again. `death_deliveries` counts the calls, so a handler that keeps failing is
-- given up on.
ALTER TABLE errand_jobs ADD COLUMN death_until BIGINT;
ALTER TABLE errand_jobs ADD COLUMN death_deliveries INTEGER NOT NULL DEFAULT 0;
