-- Messaging schema, third step (applied as each service's V6): indexes that
-- let the retention sweep find old rows without scanning whole tables.
CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL;
CREATE INDEX inbox_processed_at ON inbox (processed_at);
CREATE INDEX dead_letters_replayed_at ON dead_letters (replayed_at) WHERE replayed_at IS NOT NULL;
-- Operations: parked outbox rows are counted often (shop_outbox_parked).
CREATE INDEX outbox_parked ON outbox (id) WHERE parked_at IS NOT NULL;
