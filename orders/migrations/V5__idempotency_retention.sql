-- Idempotency keys expire (RETENTION_IDEMPOTENCY_HOURS): the sweep finds
-- keyed orders by age through this index.
CREATE INDEX orders_keyed_created ON orders (created_at) WHERE idempotency_key IS NOT NULL;
