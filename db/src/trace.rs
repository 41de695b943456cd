//! W3C `traceparent` values carried on every event, so one order's request
//! and result can be correlated across services and logs.

use uuid::Uuid;

/// A fresh trace: `00-<trace id>-<span id>-01`.
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
