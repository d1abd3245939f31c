-- Listings by tag (`JobFilter::tag`) read this table's index in id order rather than every
-- job: each job's tags are copied into it by a trigger when the job is inserted (tags never
-- change), and leave with the job.
CREATE TABLE errand_job_tags (
    tag    text   NOT NULL,
    job_id bigint NOT NULL REFERENCES errand_jobs (id) ON DELETE CASCADE,
    PRIMARY KEY (tag, job_id)
);
CREATE INDEX errand_job_tags_job ON errand_job_tags (job_id);

INSERT INTO errand_job_tags (tag, job_id)
    SELECT DISTINCT t, id FROM errand_jobs, unnest(tags) AS t;

CREATE FUNCTION errand_copy_tags() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO errand_job_tags (tag, job_id)
        SELECT DISTINCT t, NEW.id FROM unnest(NEW.tags) AS t
        ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;

CREATE TRIGGER errand_jobs_tags AFTER INSERT ON errand_jobs
    FOR EACH ROW WHEN (cardinality(NEW.tags) > 0) EXECUTE FUNCTION errand_copy_tags();
