-- SQLite has no notifications (its workers poll): this migration keeps the two stores'
-- versions in step with PostgreSQL's, whose inserts now wake workers once per statement.
SELECT 1;
