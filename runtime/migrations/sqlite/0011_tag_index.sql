-- Listings by tag (`JobFilter::tag`) read this index rather than every job. SQLite cannot
-- index the members of a JSON array, so each job's tags are copied, by triggers, into a table
-- of their own.
CREATE TABLE errand_job_tags (
    tag    TEXT    NOT NULL,
    job_id INTEGER NOT NULL,
    PRIMARY KEY (tag, job_id)
) WITHOUT ROWID;

INSERT INTO errand_job_tags (tag, job_id)
    SELECT DISTINCT t.value, j.id FROM errand_jobs j, json_each(j.tags) t;

CREATE TRIGGER errand_job_tags_insert AFTER INSERT ON errand_jobs
    WHEN NEW.tags <> '[]'
BEGIN
    INSERT OR IGNORE INTO errand_job_tags (tag, job_id)
        SELECT value, NEW.id FROM json_each(NEW.tags);
END;

CREATE TRIGGER errand_job_tags_delete AFTER DELETE ON errand_jobs
    WHEN OLD.tags <> '[]'
BEGIN
    DELETE FROM errand_job_tags WHERE job_id = OLD.id;
END;
