//! Value rules every layer agrees on: parsed once at the edge into newtypes,
//! so code behind the edge never sees an invalid id, amount or key.

use std::fmt;
use uuid::Uuid;

/// Largest amount of one operation, in minor units (10^12).
pub const MAX_AMOUNT: i64 = 1_000_000_000_000;
/// Longest idempotency key, in characters (printable ASCII, so also bytes).
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;
/// Longest order description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1_000;
/// Page size of an order list when the client names none.
pub const DEFAULT_PAGE: u32 = 20;
/// Largest page size of an order list.
pub const MAX_PAGE: u32 = 100;

/// Why a raw value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("{field} must be a UUID, got {value:?}")]
    NotAUuid { field: &'static str, value: String },
    #[error("amount must be between 1 and {MAX_AMOUNT} minor units, got {0}")]
    AmountOutOfRange(i64),
    #[error("idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters")]
    BadIdempotencyKey,
    #[error("description must be at most {MAX_DESCRIPTION_CHARS} characters, got {0}")]
    DescriptionTooLong(usize),
    #[error("{0} must not contain control characters")]
    ControlCharacter(&'static str),
    #[error("limit must be between 1 and {MAX_PAGE}, got {0}")]
    PageSizeOutOfRange(u32),
}

macro_rules! uuid_id {
    ($name:ident, $field:literal, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            /// Parses the text form; `field` names the input in the error.
            pub fn parse(raw: &str) -> Result<Self, ValueError> {
                Uuid::parse_str(raw)
                    .map(Self)
                    .map_err(|_| ValueError::NotAUuid {
                        field: $field,
                        value: raw.chars().take(64).collect(),
                    })
            }

            /// The underlying UUID.
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    UserId,
    "user_id",
    "The id of a user (and of their account)."
);
uuid_id!(
    OrderId,
    "order_id",
    "The id of an order, assigned by the orders service."
);

impl OrderId {
    /// A fresh, time-ordered order id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for OrderId {
    fn default() -> Self {
        Self::new()
    }
}

/// A money amount of one operation in minor units: `1..=MAX_AMOUNT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Amount(i64);

impl Amount {
    /// The minor units.
    pub const fn get(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for Amount {
    type Error = ValueError;

    fn try_from(raw: i64) -> Result<Self, Self::Error> {
        if (1..=MAX_AMOUNT).contains(&raw) {
            Ok(Self(raw))
        } else {
            Err(ValueError::AmountOutOfRange(raw))
        }
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A client-chosen key that makes a write safe to retry: 1 to
/// `MAX_IDEMPOTENCY_KEY_CHARS` printable ASCII characters (space to `~`),
/// compared byte for byte. ASCII only, so a key means the same in an HTTP
/// header and over gRPC, and two keys never differ by Unicode
/// normalisation alone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// `None` for an empty string (proto3's "absent"), else a checked key.
    pub fn parse_optional(raw: &str) -> Result<Option<Self>, ValueError> {
        if raw.is_empty() {
            return Ok(None);
        }
        if raw.len() > MAX_IDEMPOTENCY_KEY_CHARS || !raw.bytes().all(|b| (0x20..=0x7e).contains(&b))
        {
            return Err(ValueError::BadIdempotencyKey);
        }
        Ok(Some(Self(raw.to_owned())))
    }

    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An order's free-text description: at most `MAX_DESCRIPTION_CHARS`
/// characters (not bytes), no control characters (NUL, line breaks, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description(String);

impl Description {
    /// Checks the length in characters (not bytes) and refuses control characters.
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let chars = raw.chars().count();
        if chars > MAX_DESCRIPTION_CHARS {
            return Err(ValueError::DescriptionTooLong(chars));
        }
        if raw.chars().any(char::is_control) {
            return Err(ValueError::ControlCharacter("description"));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How many orders one page of a list holds: 1 to [`MAX_PAGE`],
/// [`DEFAULT_PAGE`] when the client names none. The one rule for REST's
/// `limit` and gRPC's `ListOrdersRequest.limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize(u32);

impl PageSize {
    /// A size the client may have named (`None`: the default).
    pub fn parse(raw: Option<u32>) -> Result<Self, ValueError> {
        match raw {
            None => Ok(Self(DEFAULT_PAGE)),
            Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(Self(n)),
            Some(n) => Err(ValueError::PageSizeOutOfRange(n)),
        }
    }

    /// The proto field, where 0 is proto3's "not set".
    pub fn from_proto(raw: u32) -> Result<Self, ValueError> {
        Self::parse((raw != 0).then_some(raw))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amount_accepts_exactly_one_to_max() {
        assert!(Amount::try_from(1).is_ok());
        assert!(Amount::try_from(MAX_AMOUNT).is_ok());
        for bad in [0, -1, MAX_AMOUNT + 1, i64::MIN, i64::MAX] {
            assert_eq!(
                Amount::try_from(bad),
                Err(ValueError::AmountOutOfRange(bad))
            );
        }
    }

    #[test]
    fn ids_parse_uuids_only() {
        let id = UserId::parse("1b4e28ba-2fa1-11d2-883f-0016d3cca427");
        assert!(id.is_ok());
        assert!(matches!(
            UserId::parse("nope"),
            Err(ValueError::NotAUuid {
                field: "user_id",
                ..
            })
        ));
        assert!(matches!(
            OrderId::parse(""),
            Err(ValueError::NotAUuid {
                field: "order_id",
                ..
            })
        ));
    }

    #[test]
    fn idempotency_key_empty_is_absent_and_long_is_refused() {
        assert_eq!(IdempotencyKey::parse_optional(""), Ok(None));
        assert!(IdempotencyKey::parse_optional(&"k".repeat(255)).is_ok());
        assert_eq!(
            IdempotencyKey::parse_optional(&"k".repeat(256)),
            Err(ValueError::BadIdempotencyKey)
        );
    }

    #[test]
    fn control_characters_and_non_ascii_keys_are_refused() {
        for bad in [
            "a\u{0}b",
            "line\nbreak",
            "tab\there",
            "bell\u{7}",
            "c1\u{85}",
        ] {
            assert_eq!(
                Description::parse(bad),
                Err(ValueError::ControlCharacter("description")),
                "{bad:?}"
            );
            assert_eq!(
                IdempotencyKey::parse_optional(bad),
                Err(ValueError::BadIdempotencyKey)
            );
        }
        assert!(Description::parse("café – 2 × ☕").is_ok());
        assert_eq!(
            IdempotencyKey::parse_optional("café"),
            Err(ValueError::BadIdempotencyKey)
        );
        assert!(IdempotencyKey::parse_optional("order 42/retry-1 ~ok").is_ok());
    }

    #[test]
    fn description_counts_characters_not_bytes() {
        assert!(Description::parse(&"é".repeat(1000)).is_ok());
        assert_eq!(
            Description::parse(&"a".repeat(1001)),
            Err(ValueError::DescriptionTooLong(1001))
        );
    }
}
