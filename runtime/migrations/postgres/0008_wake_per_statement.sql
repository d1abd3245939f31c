-- Jobs that errand's statements insert wake idle workers from the statement itself, once per
-- queue, through `errand_wake`: the trigger that fired for every inserted row took a quarter of
-- a bulk insert's time. PostgreSQL still delivers the notification when (and only if) the
-- inserting transaction commits. Updates that make a job available keep the row trigger.
CREATE FUNCTION errand_wake(queues text[]) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    -- The schema of the table the statement wrote, whatever the session's search_path.
    channel text := 'errand_' || (SELECT n.nspname FROM pg_class c
                                  JOIN pg_namespace n ON n.oid = c.relnamespace
                                  WHERE c.oid = 'errand_jobs'::regclass);
    queue text;
    woken integer := 0;
BEGIN
    FOR queue IN SELECT DISTINCT q FROM unnest(queues) AS q WHERE q IS NOT NULL LOOP
        PERFORM pg_notify(channel, queue);
        woken := woken + 1;
    END LOOP;
    RETURN woken;
END
$$;

DROP TRIGGER errand_jobs_available ON errand_jobs;

CREATE TRIGGER errand_jobs_available
    AFTER UPDATE OF state ON errand_jobs
    FOR EACH ROW WHEN (NEW.state = 'available')
    EXECUTE FUNCTION errand_notify_available();
