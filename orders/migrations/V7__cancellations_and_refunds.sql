-- Orders a customer can take back. The life of an order:
--   NEW -> FINISHED | CANCELLED                   (the payment's result)
--   NEW -> CANCELLING -> CANCELLED                (a cancel, or the expiry)
--   FINISHED -> REFUNDING -> REFUNDED             (a refund)
-- CANCELLED and REFUNDED never change; FINISHED -> REFUNDING is the only
-- change of a final status. cancel_reason is set exactly while the order
-- is CANCELLING or CANCELLED.
ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check
    CHECK (status IN ('NEW', 'FINISHED', 'CANCELLED', 'CANCELLING', 'REFUNDING', 'REFUNDED'));
ALTER TABLE orders DROP CONSTRAINT orders_cancel_reason_check;
ALTER TABLE orders ADD CONSTRAINT orders_cancel_reason_check
    CHECK (cancel_reason IN ('INSUFFICIENT_FUNDS', 'ACCOUNT_NOT_FOUND', 'CANCELLED_BY_USER', 'EXPIRED'));
ALTER TABLE orders DROP CONSTRAINT orders_check;
ALTER TABLE orders ADD CONSTRAINT orders_cancel_reason_when_cancelled
    CHECK ((status IN ('CANCELLING', 'CANCELLED')) = (cancel_reason IS NOT NULL));

-- The expiry sweep finds unpaid orders by age.
CREATE INDEX orders_new_created ON orders (created_at) WHERE status = 'NEW';
