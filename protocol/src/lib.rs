//! Hearth's wire protocol, shared by `hearth-agent` and `hearth-control-plane`.
//!
//! Nothing outside this crate builds a topic string or a payload's JSON:
//!
//! - [`topic`]: the topic scheme as types — build a [`Topic`] from an appliance id and a
//!   [`Channel`], parse one back, and the [`TopicFilter`]s both sides subscribe with.
//! - [`ids`]: newtype ids ([`TenantId`], [`ApplianceId`], [`TaskId`], …) so a string of the
//!   wrong kind cannot be passed where another is expected.
//! - [`message`]: every payload that travels over MQTT, as serde types carrying the schema
//!   version field `v`.
//! - [`codec`]: strict, size-limited encoding and decoding; bad input is a [`DecodeError`],
//!   never a panic.
//! - [`catalog`]: the action catalog (`ansible/catalog.json`) and its one validator.
//! - [`api`]: the HTTP bodies both sides speak (enrollment, the error body).
//! - [`sealed`]: configuration secrets sealed to one appliance's key (ECDH P-256,
//!   HKDF-SHA256, AES-256-GCM), so the broker never holds them in clear.
//! - [`secret`]: [`Secret`], a value whose `Debug` and `Display` print `[redacted]`.
//! - [`bundle`]: the fleet simulator's bundle file (identities made in bulk), written by the
//!   control plane and read by `hearth-fleet-sim`.
//! - `tls` (feature `tls`): the TLS profile both sides use (rustls with the ring provider,
//!   mutual TLS on MQTT).
//!
//! Golden JSON examples of every message live in `testdata/golden/` and are checked by the
//! test suite, so another implementation can be verified against the same bytes.

pub mod api;
pub mod artifact;
pub mod bundle;
pub mod catalog;
pub mod codec;
pub mod ids;
pub mod message;
pub mod sealed;
pub mod secret;
#[cfg(feature = "tls")]
pub mod tls;
pub mod topic;

pub use codec::{decode, encode, DecodeError, EncodeError, Payload, UpMessage};
pub use ids::{
    ApiKeyId, ApplianceId, BootId, ConversationId, IdParseError, MessageId, OperatorId, PlanId, ProposalId, RenewalId,
    RolloutId, SessionId, TaskId, TenantId, UserId,
};
pub use message::*;
pub use secret::Secret;
pub use topic::{Channel, DownChannel, Topic, TopicError, TopicFilter, UpChannel};

/// The major version of the wire protocol. It appears in every topic (`hearth/v1/…`) and
/// in every payload (`"v": 1`). Additive changes (new optional fields, new enum variants
/// that old readers map to `Unknown`) keep the version; anything else bumps it.
pub const PROTOCOL_VERSION: u32 = 1;
