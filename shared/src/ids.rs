//! Identifiers that can only be built through `parse`, so an invalid one never travels further.
//!
//! The limits come from where the ids end up: SQS `MessageGroupId` and `MessageDeduplicationId`
//! take at most 128 characters, and Stripe ids are ASCII letters, digits and underscores.

use std::fmt;

/// Longest id accepted anywhere (SQS FIFO group and deduplication ids allow 128 characters).
pub const MAX_ID_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    #[error("{kind} is {len} characters long; at most {max} are allowed", max = MAX_ID_LEN)]
    TooLong { kind: &'static str, len: usize },
    #[error("{kind} must start with `{prefix}`")]
    WrongPrefix {
        kind: &'static str,
        prefix: &'static str,
    },
    #[error("{kind} may contain only ASCII letters, digits and underscores")]
    InvalidCharacter { kind: &'static str },
    #[error("account id may contain only ASCII letters, digits and `_ - . :`")]
    InvalidAccountCharacter,
    #[error("{kind} may contain only printable characters")]
    Unprintable { kind: &'static str },
    #[error("reservation id must be `rsv_` and 32 lowercase hex digits")]
    InvalidReservation,
}

fn check(kind: &'static str, prefix: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.len() > MAX_ID_LEN {
        return Err(IdError::TooLong {
            kind,
            len: value.len(),
        });
    }
    if !value.starts_with(prefix) || value.len() == prefix.len() {
        return Err(IdError::WrongPrefix { kind, prefix });
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(IdError::InvalidCharacter { kind });
    }
    Ok(())
}

/// An id type whose only constructor is `parse`, which runs `$check` on the value.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: &str) -> Result<Self, IdError> {
                let check: fn(&str) -> Result<(), IdError> = $check;
                check(value)?;
                Ok(Self(value.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(value: &str) -> Result<Self, IdError> {
                Self::parse(value)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A Stripe event id (`evt_...`).
    StripeEventId,
    |v| check("event id", "evt_", v)
);

id_type!(
    /// Any Stripe object id (`cus_...`, `sub_...`, `in_...`): the prefix names the object type.
    StripeObjectId,
    |v| check("object id", "", v)
);

/// The app's own id for a customer account (`acct_1`, `team-42`, a UUID).
///
/// 1 to 128 characters of ASCII letters, digits and `_ - . :`; never `#`, which separates the
/// parts of a storage key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(String);

impl AccountId {
    pub fn parse(value: &str) -> Result<Self, IdError> {
        const KIND: &str = "account id";
        if value.is_empty() {
            return Err(IdError::Empty { kind: KIND });
        }
        if value.len() > MAX_ID_LEN {
            return Err(IdError::TooLong {
                kind: KIND,
                len: value.len(),
            });
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
        {
            return Err(IdError::InvalidAccountCharacter);
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for AccountId {
    type Error = IdError;
    fn try_from(value: &str) -> Result<Self, IdError> {
        Self::parse(value)
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// 1 to 128 printable characters (no control characters), counted in characters.
fn check_printable(kind: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    let len = value.chars().count();
    if len > MAX_ID_LEN {
        return Err(IdError::TooLong { kind, len });
    }
    if value.chars().any(char::is_control) {
        return Err(IdError::Unprintable { kind });
    }
    Ok(())
}

id_type!(
    /// The app's id for one model call: what makes a `track` (or a `reserve`) happen once.
    RequestId,
    |v| check_printable("request_id", v)
);

id_type!(
    /// A model name as the app sends it (`gpt-4o`); the rate card prices it.
    ModelName,
    |v| check_printable("model", v)
);

/// A hold's id: derived from the account and the reserving request, so a repeated `reserve`
/// names the same hold. `rsv_` and 32 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReservationId(String);

impl ReservationId {
    pub fn parse(value: &str) -> Result<Self, IdError> {
        let hex = value
            .strip_prefix("rsv_")
            .ok_or(IdError::InvalidReservation)?;
        if hex.len() != 32
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(IdError::InvalidReservation);
        }
        Ok(Self(value.to_owned()))
    }

    /// The hold that `request` on `account` creates.
    pub fn for_request(account: &AccountId, request: &RequestId) -> Self {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(account.as_str().as_bytes());
        h.update([0]);
        h.update(request.as_str().as_bytes());
        Self(format!("rsv_{}", hex::encode(&h.finalize()[..16])))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReservationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_stripe_shaped_ids() {
        assert_eq!(
            StripeEventId::parse("evt_1NG8Du2eZvKYlo2CUI79vXWy")
                .unwrap()
                .as_str(),
            "evt_1NG8Du2eZvKYlo2CUI79vXWy"
        );
        assert!(StripeObjectId::parse("cus_NffrFeUfNV2Hib").is_ok());
        assert!(StripeObjectId::parse("cs_test_a1b2c3").is_ok());
    }

    #[test]
    fn rejects_bad_ids_with_a_reason() {
        assert_eq!(
            StripeEventId::parse(""),
            Err(IdError::Empty { kind: "event id" })
        );
        assert_eq!(
            StripeEventId::parse("evt_"),
            Err(IdError::WrongPrefix {
                kind: "event id",
                prefix: "evt_"
            })
        );
        assert_eq!(
            StripeEventId::parse("cus_123"),
            Err(IdError::WrongPrefix {
                kind: "event id",
                prefix: "evt_"
            })
        );
        assert_eq!(
            StripeEventId::parse("evt_1 OR 1=1"),
            Err(IdError::InvalidCharacter { kind: "event id" })
        );
        let long = format!("evt_{}", "a".repeat(MAX_ID_LEN));
        assert!(matches!(
            StripeEventId::parse(&long),
            Err(IdError::TooLong { .. })
        ));
    }

    #[test]
    fn account_ids() {
        assert!(AccountId::parse("acct_1").is_ok());
        assert!(AccountId::parse("team-42.eu:prod").is_ok());
        assert_eq!(
            AccountId::parse("a#b"),
            Err(IdError::InvalidAccountCharacter)
        );
        assert_eq!(
            AccountId::parse(""),
            Err(IdError::Empty { kind: "account id" })
        );
        assert!(AccountId::parse(&"a".repeat(129)).is_err());
    }

    #[test]
    fn request_and_reservation_ids() {
        assert!(RequestId::parse("req 1/é").is_ok());
        assert_eq!(
            RequestId::parse("a\nb"),
            Err(IdError::Unprintable { kind: "request_id" })
        );
        assert_eq!(
            RequestId::parse(&"é".repeat(128)).map(|r| r.as_str().chars().count()),
            Ok(128)
        );
        assert!(matches!(
            RequestId::parse(&"a".repeat(129)),
            Err(IdError::TooLong { .. })
        ));
        let account = AccountId::parse("acct_1").unwrap();
        let r = ReservationId::for_request(&account, &RequestId::parse("req_1").unwrap());
        assert_eq!(ReservationId::parse(r.as_str()), Ok(r.clone()));
        assert_ne!(
            r,
            ReservationId::for_request(&account, &RequestId::parse("req_2").unwrap())
        );
        assert_eq!(
            ReservationId::parse("rsv_XYZ"),
            Err(IdError::InvalidReservation)
        );
    }

    proptest! {
        #[test]
        fn a_parsed_id_is_always_safe_for_sqs(s in ".{0,200}") {
            if let Ok(id) = StripeObjectId::parse(&s) {
                prop_assert!(!id.as_str().is_empty() && id.as_str().len() <= MAX_ID_LEN);
                prop_assert!(id.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
            }
        }
    }
}
