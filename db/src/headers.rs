//! The Kafka headers every event carries, named once: `event-id`,
//! `event-type` (the payload's full protobuf name) and `traceparent` (W3C
//! trace context, so one order's request and result can be correlated across
//! services and logs). The relay writes them, the inbox and dead letters read
//! them.

use rdkafka::Message;
use rdkafka::message::Headers;
use uuid::Uuid;

/// The event's unique id (also inside the payload).
pub const EVENT_ID: &str = "event-id";
/// The payload's full protobuf type name, e.g. `shop.events.v1.PaymentRequested`.
pub const EVENT_TYPE: &str = "event-type";
/// W3C trace context: `00-<trace id>-<span id>-<flags>`; every published
/// message carries exactly one.
pub const TRACEPARENT: &str = "traceparent";

/// A UTF-8 header value by name.
pub fn get(message: &impl Message, name: &str) -> Option<String> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_owned)
}

/// The `traceparent` of `span` when traces are on, so the event's publish
/// and processing join its trace; otherwise a fresh one (logs still tie the
/// event's hops together by its trace id).
pub fn of_span(span: &tracing::Span) -> String {
    shop_runtime::traces::traceparent_of(span).unwrap_or_else(new_root)
}

/// [`of_span`] of the current span.
pub fn of_current_span() -> String {
    of_span(&tracing::Span::current())
}

/// The `traceparent` of an event written in response to a message: the
/// context of the message's processing (`inbox::Delivery::traceparent`),
/// or a fresh one if the message had none.
pub fn continued(processing: Option<&str>) -> String {
    processing.map_or_else(new_root, str::to_owned)
}

/// A fresh trace for a new `traceparent`: `00-<trace id>-<span id>-01`.
pub fn new_root() -> String {
    let trace = Uuid::new_v4().simple().to_string();
    format!("00-{trace}-{}-01", span_id())
}

/// A child span of `parent` in the same trace, or a new root if `parent` is malformed.
pub fn child_of(parent: Option<&str>) -> String {
    match parent.and_then(trace_id) {
        Some(trace) => format!("00-{trace}-{}-01", span_id()),
        None => new_root(),
    }
}

/// The trace id part of a well-formed traceparent.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (version == "00" && hex(trace, 32) && hex(span, 16) && hex(flags, 2) && parts.next().is_none())
        .then_some(trace)
}

fn span_id() -> String {
    Uuid::new_v4().simple().to_string()[..16].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_keeps_the_trace_id() {
        let root = new_root();
        let child = child_of(Some(&root));
        assert_eq!(trace_id(&root), trace_id(&child));
        assert_ne!(root, child);
    }

    #[test]
    fn malformed_parent_starts_a_new_trace() {
        assert!(trace_id(&child_of(Some("garbage"))).is_some());
        assert!(trace_id("01-abc-def-00").is_none());
    }
}
