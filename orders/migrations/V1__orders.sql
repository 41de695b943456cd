-- Orders and their status. A final status (FINISHED, CANCELLED) never
-- changes: the result consumer only updates rows still NEW.
CREATE TABLE orders (
    id              UUID        PRIMARY KEY, -- UUIDv7: ordering by id is ordering by creation
    user_id         UUID        NOT NULL,
    amount          BIGINT      NOT NULL CHECK (amount > 0),
    description     TEXT        NOT NULL,
    status          TEXT        NOT NULL DEFAULT 'NEW'
                                CHECK (status IN ('NEW', 'FINISHED', 'CANCELLED')),
    cancel_reason   TEXT        CHECK (cancel_reason IN ('INSUFFICIENT_FUNDS', 'ACCOUNT_NOT_FOUND')),
    idempotency_key TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (user_id, idempotency_key),
    CHECK ((status = 'CANCELLED') = (cancel_reason IS NOT NULL))
);

-- The user's orders, newest first (keyset pagination on id).
CREATE INDEX orders_user_newest ON orders (user_id, id DESC);

-- Every status change is announced to watchers on every replica.
CREATE FUNCTION notify_order_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('order_status', NEW.id::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER order_status_changed AFTER UPDATE OF status ON orders
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION notify_order_status();
