-- Cancellations and refunds, decided once in the ledger.
--
-- A cancellation that reaches the ledger before the order's payment was
-- decided claims the order's ledger row with the outcome VOIDED: the
-- PaymentRequested seen later (a slow relay, payments back after an
-- outage) finds the row taken and is refused with that decision, so an
-- expired or cancelled order is never charged.
ALTER TABLE payments DROP CONSTRAINT payments_outcome_check;
ALTER TABLE payments ADD CONSTRAINT payments_outcome_check
    CHECK (outcome IN ('PAID', 'INSUFFICIENT_FUNDS', 'ACCOUNT_NOT_FOUND', 'VOIDED'));

-- Money given back: at most one row per order, ever (PRIMARY KEY), so a
-- redelivered or replayed cancellation or refund never credits twice. Only
-- a PAID order has one. balance = sum(credits) - sum(PAID) + sum(refunds).
CREATE TABLE refunds (
    order_id         UUID        PRIMARY KEY REFERENCES payments (order_id),
    user_id          UUID        NOT NULL,
    amount           BIGINT      NOT NULL CHECK (amount > 0),
    -- CANCELLATION: an accepted cancel met a payment already taken;
    -- REFUND: a FINISHED order's refund.
    kind             TEXT        NOT NULL CHECK (kind IN ('CANCELLATION', 'REFUND')),
    request_event_id UUID        NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX refunds_user_id ON refunds (user_id);
