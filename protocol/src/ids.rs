//! Newtype ids. Each wraps a UUID, prints and parses as the canonical hyphenated form,
//! serialises transparently, (feature `sqlx`) maps to PostgreSQL's `uuid`, and (feature
//! `openapi`) is described as a `uuid`-formatted string in the HTTP API's OpenAPI document.
//!
//! ```
//! use hearth_protocol::{ApplianceId, TenantId};
//! let id: ApplianceId = "0190b6a4-5f5e-7c41-9a7d-2f3e4b5c6d7e".parse().unwrap();
//! assert_eq!(id.to_string(), "0190b6a4-5f5e-7c41-9a7d-2f3e4b5c6d7e");
//! assert!("not-an-id".parse::<TenantId>().is_err());
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A string that is not a valid id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {input:?} is not a UUID")]
pub struct IdParseError {
    pub kind: &'static str,
    pub input: String,
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        #[cfg_attr(feature = "sqlx", derive(sqlx::Type), sqlx(transparent))]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub struct $name(Uuid);

        impl $name {
            /// A new, time-ordered (UUIDv7) id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0.hyphenated())
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            /// Only the canonical lower-case hyphenated form is accepted, so that an id has
            /// exactly one spelling (it is also a topic level and a certificate CN).
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let err = || IdParseError { kind: $kind, input: s.chars().take(64).collect() };
                let uuid = Uuid::try_parse(s).map_err(|_| err())?;
                if uuid.hyphenated().to_string() != s {
                    return Err(err());
                }
                Ok(Self(uuid))
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }
    };
}

uuid_id!(
    /// A customer of the service; every customer-owned row carries one.
    TenantId,
    "tenant id"
);
uuid_id!(
    /// One appliance. Also its certificate's CN and its MQTT username.
    ApplianceId,
    "appliance id"
);
uuid_id!(
    /// One catalog task sent to an appliance.
    TaskId,
    "task id"
);
uuid_id!(
    /// One boot of an appliance (the kernel's `boot_id`); heartbeat sequence numbers
    /// restart with each boot.
    BootId,
    "boot id"
);
uuid_id!(
    /// One MQTT connection of an agent. The online status and the last will carry it, so
    /// a late "offline" from an old connection cannot override a newer "online".
    SessionId,
    "session id"
);

// The control plane's own entities, named in its HTTP API. Each has its own type so that a
// path with two ids (a conversation and one of its proposals) cannot be passed in the wrong
// order.
uuid_id!(
    /// A support conversation between a customer and the assistant.
    ConversationId,
    "conversation id"
);
uuid_id!(
    /// One message of a support conversation.
    MessageId,
    "message id"
);
uuid_id!(
    /// One certificate renewal an agent asked for. Asking again with the same id (after a
    /// restart or a lost answer) gets the same certificate.
    RenewalId,
    "renewal id"
);

uuid_id!(
    /// A task the support assistant proposed, waiting for the customer's confirmation.
    ProposalId,
    "proposal id"
);
uuid_id!(
    /// A signed-in user of a tenant (owner or member).
    UserId,
    "user id"
);
uuid_id!(
    /// A tenant's API key (the id, never the key).
    ApiKeyId,
    "API key id"
);
uuid_id!(
    /// An operator token of the service's staff (the id, never the token).
    OperatorId,
    "operator id"
);
uuid_id!(
    /// A plan: the quotas a tenant is sold.
    PlanId,
    "plan id"
);
uuid_id!(
    /// A fleet rollout: one change to many appliances, in waves.
    RolloutId,
    "rollout id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_canonical_spellings() {
        let canonical = "0190b6a4-5f5e-7c41-9a7d-2f3e4b5c6d7e";
        assert!(canonical.parse::<ApplianceId>().is_ok());
        for bad in [
            "0190B6A4-5F5E-7C41-9A7D-2F3E4B5C6D7E",
            "0190b6a45f5e7c419a7d2f3e4b5c6d7e",
            "{0190b6a4-5f5e-7c41-9a7d-2f3e4b5c6d7e}",
            "+",
            "#",
            "",
        ] {
            let err = bad.parse::<ApplianceId>().unwrap_err();
            assert_eq!(err.kind, "appliance id", "{bad}");
        }
    }

    #[test]
    fn serde_is_transparent() {
        let id = TenantId::new();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<TenantId>(&json).unwrap(), id);
    }
}
