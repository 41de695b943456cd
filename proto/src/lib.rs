//! Every contract of the shop in one crate: the generated gRPC services and
//! Kafka event payloads, the value rules they share (ids, amounts, keys), and
//! the machine-readable error codes carried on gRPC statuses.

pub mod error_code;
pub mod time;
pub mod values;

/// `shop.payments.v1`: accounts and credits.
pub mod payments {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("shop.payments.v1");
}

/// `shop.orders.v1`: orders and their status.
pub mod orders {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("shop.orders.v1");
}

/// `shop.events.v1`: Kafka event payloads.
pub mod events {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("shop.events.v1");
}

/// Encoded descriptors of every shop proto file, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("shop_descriptor");

/// The protobuf timestamp type used by every message.
pub use prost_types::Timestamp as TimestampType;
