//! The writing side of the transactional outbox, the one place that knows
//! how an outbox row is written: [`enqueue_all`] adds events to the
//! `outbox` table in the caller's transaction, and [`insert_per_row`] is the
//! same INSERT for a caller that writes its business row and its event in
//! one statement (orders' create). Either way the business change and its
//! events commit together or not at all — no Kafka call on the request
//! path. After the commit the writer wakes its own process's relay
//! ([`RelayWake`]); the [`crate::relay`] publishes what was enqueued.

use crate::GenericClient;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

/// The `NOTIFY` channel relays LISTEN on. Writers inside a service wake their
/// own relay in-process ([`RelayWake`]); a writer outside the service (the
/// `dead-letters replay` command) sends `NOTIFY outbox` after its commit so
/// running relays publish at once instead of at their next poll.
pub const CHANNEL: &str = "outbox";

/// An event to publish.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub topic: String,
    /// The Kafka key (the text of a user or order id).
    pub key: Vec<u8>,
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
            key: key.to_string().into_bytes(),
            event_type: M::full_name(),
            payload: message.encode_to_vec(),
            traceparent,
        }
    }

    /// The values of [`insert_per_row`]'s parameters, in order.
    pub fn params(&self) -> [&(dyn ToSql + Sync); 6] {
        [
            &self.event_id,
            &self.topic,
            &self.key,
            &self.event_type,
            &self.payload,
            &self.traceparent,
        ]
    }
}

/// The column list, as a literal for `concat!`.
macro_rules! columns {
    () => {
        "event_id, topic, key, event_type, payload, traceparent, created_at"
    };
}

/// The columns every writer fills, in this order; `created_at` is the
/// insert's wall-clock time (`clock_timestamp()`), so the relay's publish
/// delay measures commit → publish.
pub const COLUMNS: &str = columns!();

/// The statement behind [`enqueue_all`]: one array per column.
const INSERT_ALL: &str = concat!(
    "INSERT INTO outbox (",
    columns!(),
    ")
     SELECT e.event_id, e.topic, e.key, e.event_type, e.payload, e.traceparent, clock_timestamp()
     FROM unnest($1::uuid[], $2::text[], $3::bytea[], $4::text[], $5::bytea[], $6::text[])
          AS e(event_id, topic, key, event_type, payload, traceparent)"
);

/// An outbox INSERT to embed in a caller's statement (a data-modifying
/// CTE): one event per row of `source`, from the six parameters
/// `$first..` that [`NewEvent::params`] fills.
pub fn insert_per_row(source: &str, first: usize) -> String {
    let p = |i: usize| format!("${}", first + i);
    format!(
        "INSERT INTO outbox ({COLUMNS})
         SELECT {}, {}, {}, {}, {}, {}, clock_timestamp() FROM {source}",
        p(0),
        p(1),
        p(2),
        p(3),
        p(4),
        p(5)
    )
}

/// Writes `events` in the caller's transaction, in order, with one
/// statement. `created_at` is the insert's wall-clock time, so
/// `published_at - created_at` measures commit → publish.
pub async fn enqueue_all(
    db: &impl GenericClient,
    events: &[NewEvent],
) -> Result<(), tokio_postgres::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    let topics: Vec<&str> = events.iter().map(|e| e.topic.as_str()).collect();
    let keys: Vec<&[u8]> = events.iter().map(|e| e.key.as_slice()).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let payloads: Vec<&[u8]> = events.iter().map(|e| e.payload.as_slice()).collect();
    let traces: Vec<&str> = events.iter().map(|e| e.traceparent.as_str()).collect();
    let statement = db.prepare_cached(INSERT_ALL).await?;
    db.execute(
        &statement,
        &[&ids, &topics, &keys, &types, &payloads, &traces],
    )
    .await?;
    Ok(())
}

/// Wakes the relay of this process after a commit that enqueued events.
/// Wake-ups coalesce: many wakes while the relay is busy make one more pass.
#[derive(Debug, Clone, Default)]
pub struct RelayWake(Arc<Notify>);

impl RelayWake {
    /// A wake-up channel with no relay yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Call after the commit: the relay makes one more pass soon.
    pub fn wake(&self) {
        self.0.notify_one();
    }

    /// Resolves at the next wake (or at once if one is pending).
    pub async fn woken(&self) {
        self.0.notified().await;
    }
}
