//! The JSON shapes of the REST API and their conversion from the gRPC
//! messages, in one place. The bounds written in the schema attributes are
//! checked against `shop_proto::values` by a test in [`crate::openapi`].

use serde::{Deserialize, Serialize};
use shop_proto::orders as opb;
use shop_proto::payments as ppb;
use std::time::SystemTime;
use utoipa::{IntoParams, ToSchema};

/// A user's account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "user_id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "balance": 5000,
    "created_at": "2026-11-22T11:44:56.738593Z", "updated_at": "2026-11-22T11:44:56.760705Z"
}))]
pub struct Account {
    /// The owner's id (UUID).
    #[schema(format = Uuid)]
    pub user_id: String,
    /// Balance in minor units (cents); never negative.
    #[schema(minimum = 0)]
    pub balance: i64,
    /// When the account was opened (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When the balance last changed (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// Where an order is. `NEW` until paid (`FINISHED`) or declined
/// (`CANCELLED`); a cancel moves a `NEW` order to `CANCELLING`, then
/// `CANCELLED`; a refund moves a `FINISHED` order to `REFUNDING`, then
/// `REFUNDED`. The final statuses are `FINISHED`, `CANCELLED` and
/// `REFUNDED`; `FINISHED` → `REFUNDING` is the only change of a final status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    New,
    Finished,
    Cancelled,
    Cancelling,
    Refunding,
    Refunded,
}

/// Why an order was (or is being) cancelled: the payment was declined
/// (`INSUFFICIENT_FUNDS`, `ACCOUNT_NOT_FOUND`), the customer cancelled it
/// (`CANCELLED_BY_USER`), or it was still unpaid after the payment timeout
/// (`EXPIRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CancelReason {
    InsufficientFunds,
    AccountNotFound,
    CancelledByUser,
    Expired,
}

/// An order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "order_id": "01a20313-52c7-766a-a3c1-a455e1fec196", "user_id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
    "amount": 2500, "description": "coffee beans", "status": "FINISHED", "cancel_reason": null,
    "created_at": "2026-11-22T11:45:27.751315Z", "updated_at": "2026-11-22T11:45:27.836164Z"
}))]
pub struct Order {
    /// Server-assigned id (UUID).
    #[schema(format = Uuid)]
    pub order_id: String,
    /// The buyer (UUID).
    #[schema(format = Uuid)]
    pub user_id: String,
    /// Price in minor units.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub amount: i64,
    /// Free text.
    pub description: String,
    /// Current status.
    pub status: OrderStatus,
    /// Set only when `status` is `CANCELLING` or `CANCELLED`.
    pub cancel_reason: Option<CancelReason>,
    /// When the order was created (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When the status last changed (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// One page of a user's orders, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderPage {
    /// The orders of this page.
    pub items: Vec<Order>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Body of `POST /api/v1/accounts`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"user_id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427"}))]
pub struct CreateAccount {
    /// The user's id (UUID); if given, it must be the token's user.
    #[serde(default)]
    #[schema(format = Uuid)]
    pub user_id: Option<String>,
}

/// Body of `POST /api/v1/accounts/{user_id}/top-up`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"amount": 5000}))]
pub struct TopUp {
    /// Amount to credit in minor units: an integer from 1 to 10^12.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    #[serde(deserialize_with = "minor_units")]
    pub amount: i64,
}

/// Body of `POST /api/v1/orders`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"user_id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "amount": 2500, "description": "coffee beans"}))]
pub struct CreateOrder {
    /// The buyer (UUID); if given, it must be the token's user.
    #[serde(default)]
    #[schema(format = Uuid)]
    pub user_id: Option<String>,
    /// Price in minor units: an integer from 1 to 10^12.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    #[serde(deserialize_with = "minor_units")]
    pub amount: i64,
    /// Free text, at most 1,000 characters, no control characters.
    #[serde(default)]
    #[schema(max_length = 1000, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub description: String,
}

/// Query of `GET /api/v1/orders`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListOrders {
    /// Whose orders (UUID); if given, it must be the token's user.
    #[param(format = Uuid)]
    pub user_id: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page (an order id).
    #[param(format = Uuid)]
    pub cursor: Option<String>,
}

/// Query of `GET /api/v1/orders/{order_id}/events`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// A live-status token for this order, when no Authorization header can be sent.
    pub access_token: Option<String>,
}

/// A token that opens one order's live status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StreamToken {
    /// Pass as `access_token` to the order's events.
    pub token: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// Body of `POST /api/v1/dev/tokens` (development mode only).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevTokenRequest {
    /// The user the token speaks for (UUID).
    pub user_id: String,
}

/// A bearer token, as an OAuth 2 token endpoint answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessToken {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u64,
}

/// One Server-Sent Event of `GET /api/v1/orders/{order_id}/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"event": "order", "data": "{\"order_id\":\"01a20313-52c7-766a-a3c1-a455e1fec196\",\"status\":\"FINISHED\"}"}))]
pub struct OrderEvent {
    /// `order`: `data` is the order (an `Order` as JSON) after a change;
    /// `error`: `data` is a `Problem` as JSON, and the stream ends.
    #[schema(pattern = "^(order|error)$")]
    pub event: String,
    /// The order or the problem, as JSON text.
    pub data: String,
}

/// Liveness / readiness answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`, `ready` or `not ready`.
    pub status: String,
    /// Whether the orders service answers its health check (readiness only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orders: Option<bool>,
    /// Whether the payments service answers its health check (readiness only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payments: Option<bool>,
}

/// An amount as JSON gives it: an integer, also when written `203.0` or
/// `2.03e2` (JSON Schema counts those as integers too); anything with a
/// fraction, or beyond 64 bits, is refused. The range is checked later by
/// `Amount`.
fn minor_units<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    struct MinorUnits;

    impl serde::de::Visitor<'_> for MinorUnits {
        type Value = i64;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an integer number of minor units")
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom("amount is out of range"))
        }

        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<i64, E> {
            // ±2^63 is exactly representable; anything in (-2^63, 2^63) fits.
            let limit = 9_223_372_036_854_775_808.0;
            if v.fract() == 0.0 && v > -limit && v < limit {
                #[allow(clippy::cast_possible_truncation)]
                Ok(v as i64)
            } else {
                Err(E::custom("amount must be a whole number of minor units"))
            }
        }
    }

    deserializer.deserialize_any(MinorUnits)
}

fn rfc3339(ts: Option<&shop_proto::TimestampType>) -> String {
    let time = ts.map_or(SystemTime::UNIX_EPOCH, shop_proto::time::from_timestamp);
    humantime::format_rfc3339_micros(time).to_string()
}

impl From<ppb::Account> for Account {
    fn from(a: ppb::Account) -> Self {
        Self {
            created_at: rfc3339(a.created_at.as_ref()),
            updated_at: rfc3339(a.updated_at.as_ref()),
            user_id: a.user_id,
            balance: a.balance,
        }
    }
}

impl From<opb::Order> for Order {
    fn from(o: opb::Order) -> Self {
        let status = match o.status() {
            opb::OrderStatus::Finished => OrderStatus::Finished,
            opb::OrderStatus::Cancelled => OrderStatus::Cancelled,
            opb::OrderStatus::Cancelling => OrderStatus::Cancelling,
            opb::OrderStatus::Refunding => OrderStatus::Refunding,
            opb::OrderStatus::Refunded => OrderStatus::Refunded,
            opb::OrderStatus::New | opb::OrderStatus::Unspecified => OrderStatus::New,
        };
        let cancel_reason = match o.cancel_reason() {
            opb::CancelReason::InsufficientFunds => Some(CancelReason::InsufficientFunds),
            opb::CancelReason::AccountNotFound => Some(CancelReason::AccountNotFound),
            opb::CancelReason::CancelledByUser => Some(CancelReason::CancelledByUser),
            opb::CancelReason::Expired => Some(CancelReason::Expired),
            opb::CancelReason::Unspecified => None,
        };
        Self {
            created_at: rfc3339(o.created_at.as_ref()),
            updated_at: rfc3339(o.updated_at.as_ref()),
            order_id: o.order_id,
            user_id: o.user_id,
            amount: o.amount,
            description: o.description,
            status,
            cancel_reason,
        }
    }
}

impl Order {
    /// FINISHED, CANCELLED and REFUNDED: where a payment, a cancel or a
    /// refund ends (a FINISHED order may still be refunded).
    pub fn is_final(&self) -> bool {
        matches!(
            self.status,
            OrderStatus::Finished | OrderStatus::Cancelled | OrderStatus::Refunded
        )
    }
}
