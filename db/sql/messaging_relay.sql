-- Messaging schema, second step (applied as each service's V4).
--
-- The relay no longer holds row locks while the broker answers: it claims a
-- batch by setting a lease (claimed_until) in one statement, publishes, then
-- marks the rows published. A crashed relay's lease simply expires.
-- A row that keeps failing while its neighbours publish backs off on its own
-- (claimed_until in the future) and is parked after too many attempts
-- (parked_at), instead of throttling every batch.
ALTER TABLE outbox
    ADD COLUMN claimed_until TIMESTAMPTZ,
    ADD COLUMN parked_at     TIMESTAMPTZ;

DROP INDEX outbox_unpublished;
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL AND parked_at IS NULL;

-- A NOTIFY in every committing transaction serialises commits on the
-- server's notification queue lock. Writers now wake the relay of their own
-- process directly; NOTIFY on channel 'outbox' (shop_db::outbox::CHANNEL)
-- is only sent by writers outside the service (replay-dead-letters).
DROP TRIGGER outbox_inserted ON outbox;
DROP FUNCTION outbox_notify();
