-- The payments ledger: one row per order, ever. The decision (outcome) is
-- made once, in the transaction that inserts the row, and never changes, so
-- a redelivered request repeats the first decision and never debits twice,
-- even if inbox rows are cleaned up. (V2 is the shared messaging schema.)
CREATE TABLE payments (
    order_id         UUID        PRIMARY KEY,
    user_id          UUID        NOT NULL,
    amount           BIGINT      NOT NULL CHECK (amount > 0),
    outcome          TEXT        CHECK (outcome IN ('PAID', 'INSUFFICIENT_FUNDS', 'ACCOUNT_NOT_FOUND')),
    request_event_id UUID        NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX payments_user_id ON payments (user_id);
