//! The writing side of the transactional outbox: [`enqueue`] adds an event
//! to the `outbox` table in the caller's transaction, so the business change
//! and the event commit together or not at all — no Kafka call on the
//! request path. The [`crate::relay`] publishes what was enqueued.

use crate::GenericClient;
use uuid::Uuid;

/// The `NOTIFY` channel that wakes relays when a transaction that wrote to
/// the outbox commits. It must match `pg_notify('outbox', …)` in the
/// `outbox_notify` trigger of `db/sql/messaging.sql` (a test checks).
pub const CHANNEL: &str = "outbox";

/// An event to publish.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub topic: String,
    pub key: String,
    pub event_type: String,
    pub payload: Vec<u8>,
    pub traceparent: String,
}

impl NewEvent {
    /// The protobuf encoding of `message`, typed by its full proto name.
    pub fn encode<M: prost::Message + prost::Name>(
        event_id: Uuid,
        topic: &str,
        key: impl ToString,
        message: &M,
        traceparent: String,
    ) -> Self {
        Self {
            event_id,
            topic: topic.to_owned(),
            key: key.to_string(),
            event_type: M::full_name(),
            payload: message.encode_to_vec(),
            traceparent,
        }
    }
}

/// Writes `event` in the caller's transaction; relays wake when it commits.
pub async fn enqueue(
    db: &impl GenericClient,
    event: &NewEvent,
) -> Result<(), tokio_postgres::Error> {
    db.execute(
        "INSERT INTO outbox (event_id, topic, key, event_type, payload, traceparent)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &event.event_id,
            &event.topic,
            &event.key.as_bytes(),
            &event.event_type,
            &event.payload,
            &event.traceparent,
        ],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_channel_is_the_one_the_trigger_notifies() {
        let sql = include_str!("../sql/messaging.sql");
        assert!(sql.contains(&format!("pg_notify('{}'", super::CHANNEL)));
    }
}
