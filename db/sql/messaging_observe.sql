-- Messaging schema, fourth step (applied as each service's V8).
--
-- The gauges (db/src/observe.rs) count the dead letters waiting for a replay
-- every 5 s on every replica; no index matched them (V6's
-- dead_letters_replayed_at holds the replayed ones, for the sweep). This one
-- holds only the rows counted.
CREATE INDEX dead_letters_pending ON dead_letters (id) WHERE replayed_at IS NULL;
