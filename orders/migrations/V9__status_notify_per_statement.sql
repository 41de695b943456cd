-- Status changes are announced once per statement, not once per row.
--
-- V1's trigger ran pg_notify for every row whose status changed: a results
-- batch of 500 orders queued 500 notifications inside its commit, and every
-- watcher on every replica woke for each. This one fires once per UPDATE
-- statement and sends the changed ids in chunks of at most 200 (a NOTIFY
-- payload holds under 8000 bytes; 200 ids and commas are 7,399), on the
-- channel 'order_statuses' (orders::persistence::STATUS_CHANNEL). Replicas
-- still on V1's code listen on 'order_status', which no longer fires: their
-- watchers fall back to the periodic re-read until they are replaced.
DROP TRIGGER order_status_changed ON orders;
DROP FUNCTION notify_order_status();

CREATE FUNCTION notify_order_statuses() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ids text;
BEGIN
    FOR ids IN
        SELECT string_agg(id::text, ',')
        FROM (
            SELECT changed.id, (row_number() OVER () - 1) / 200 AS chunk
            FROM new_orders changed JOIN old_orders was USING (id)
            WHERE was.status IS DISTINCT FROM changed.status
        ) numbered
        GROUP BY chunk
    LOOP
        PERFORM pg_notify('order_statuses', ids);
    END LOOP;
    RETURN NULL;
END;
$$;

-- A trigger with transition tables cannot name columns (UPDATE OF status):
-- the function compares the old and new status itself.
CREATE TRIGGER order_statuses_changed AFTER UPDATE ON orders
    REFERENCING OLD TABLE AS old_orders NEW TABLE AS new_orders
    FOR EACH STATEMENT EXECUTE FUNCTION notify_order_statuses();
