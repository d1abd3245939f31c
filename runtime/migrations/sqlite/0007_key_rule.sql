-- SQLite has no stored functions: its store writes the rule of unique keys (PostgreSQL's
-- `errand_key_after`) into each statement from one macro, `key_after!`. This migration keeps
-- the two stores' versions in step.
SELECT 1;
