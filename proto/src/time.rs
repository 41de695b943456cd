//! Conversions between wall-clock times and protobuf timestamps.

use std::time::{SystemTime, UNIX_EPOCH};

/// A `SystemTime` as a protobuf `Timestamp`.
pub fn to_timestamp(time: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(time)
}

/// A protobuf `Timestamp` as a `SystemTime`; out-of-range values clamp to the epoch.
pub fn from_timestamp(ts: &prost_types::Timestamp) -> SystemTime {
    SystemTime::try_from(*ts).unwrap_or(UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn round_trips_with_nanosecond_precision() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(from_timestamp(&to_timestamp(t)), t);
    }
}
