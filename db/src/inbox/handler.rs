//! The contract between the inbox and a service: the events it consumes
//! ([`InboxEvent`]) and how it applies them ([`Handler`]).

use crate::outbox::NewEvent;
use crate::{DbError, Transaction};
use std::future::Future;
use uuid::Uuid;

/// Where a consumed message came from.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The W3C traceparent of this message's processing: its `apply`
    /// span's when traces are on (a child of the message's own header), else
    /// a child id of the header's trace. Events written in response carry it.
    pub traceparent: Option<String>,
}

/// One decoded event with where it came from.
#[derive(Debug, Clone)]
pub struct Inbound<E> {
    pub event: E,
    pub delivery: Delivery,
}

/// Why a handler did not apply a batch.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Worth retrying as is (any database failure: down, deadlock, statement
    /// or lock timeout, …): retried in place, never parked.
    #[error("transient: {0}")]
    Transient(String),
    /// The event itself is invalid and will fail again: parked in
    /// `dead_letters` after the configured attempts.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl From<DbError> for HandleError {
    fn from(e: DbError) -> Self {
        Self::Transient(e.to_string())
    }
}

crate::from_db_errors!(HandleError);

/// What an inbox consumes from its topic: one protobuf message, or several
/// told apart by each record's `event-type` header (the message's full
/// name, set by [`NewEvent::encode`]).
pub trait InboxEvent: Sized + Send + Sync + 'static {
    /// Decodes one record; an error makes it permanently invalid.
    fn decode(event_type: Option<&str>, payload: &[u8]) -> Result<Self, String>;

    /// The event's unique id, used for deduplication.
    fn event_id(&self) -> Option<Uuid>;

    /// The order the event is about, an attribute of its `apply` span.
    fn order_id(&self) -> Option<&str> {
        None
    }
}

/// Decodes `payload` as `M` if `event_type` names `M` (or is absent):
/// `Ok(None)` when it names another message.
pub fn decode_as<M: prost::Message + prost::Name + Default>(
    event_type: Option<&str>,
    payload: &[u8],
) -> Result<Option<M>, String> {
    let name = M::full_name();
    if event_type.is_some_and(|t| t != name) {
        return Ok(None);
    }
    M::decode(payload)
        .map(Some)
        .map_err(|e| format!("undecodable {name}: {e}"))
}

/// Applies the events of one topic inside the inbox transaction.
pub trait Handler: Send + Sync + 'static {
    /// What this handler consumes.
    type Event: InboxEvent;

    /// Applies `events` — new ones only, in partition order — inside `tx`
    /// and returns the events to publish in response (the inbox writes them
    /// to the outbox in the same transaction). The caller commits `tx`.
    fn handle(
        &self,
        tx: &Transaction<'_>,
        events: Vec<Inbound<Self::Event>>,
    ) -> impl Future<Output = Result<Vec<NewEvent>, HandleError>> + Send;
}
