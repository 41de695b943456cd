-- Idempotency keys expire (RETENTION_IDEMPOTENCY_HOURS): the sweep finds
-- keyed credits and accounts by age through these indexes.
CREATE INDEX credits_keyed_created ON credits (created_at) WHERE idempotency_key IS NOT NULL;
CREATE INDEX accounts_keyed_created ON accounts (created_at) WHERE idempotency_key IS NOT NULL;
