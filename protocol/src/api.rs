//! The few HTTP API bodies the agent and the control plane both speak: enrollment, and
//! the error body every API error uses. With the `openapi` feature they derive
//! `utoipa::ToSchema` so the control plane's OpenAPI document describes them.
//!
//! ```
//! use hearth_protocol::api::ErrorBody;
//! let body: ErrorBody = serde_json::from_str(
//!     r#"{"error":{"code":"enrollment_token_used","message":"this enrollment token was already used"}}"#,
//! ).unwrap();
//! assert_eq!(body.error.code, "enrollment_token_used");
//! ```

use serde::{Deserialize, Serialize};

use time::OffsetDateTime;

use crate::ids::ApplianceId;

/// Where an appliance downloads an agent build: `GET {AGENT_ARTIFACTS_PATH}/{sha256}` on the
/// control plane's HTTPS listener, authenticated by the appliance's client certificate;
/// `Range: bytes=N-` resumes a download.
pub const AGENT_ARTIFACTS_PATH: &str = "/agent/v1/artifacts";
/// What the control plane has stored about the calling appliance ([`ApplianceSelf`]),
/// authenticated by its client certificate: the agent's update health gate reads it.
pub const AGENT_SELF_PATH: &str = "/agent/v1/self";

/// `POST /api/v1/enroll`: a one-time token and a certificate signing request made on the
/// appliance (the private key never leaves it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrollRequest {
    /// The one-time enrollment token (`hearth_et_…`); never printed (`Debug` redacts it).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub token: crate::Secret<String>,
    /// A PEM certificate signing request for the key the appliance generated (at most 16 KiB).
    pub csr_pem: String,
    /// The formats of sealed configuration secrets ([`crate::sealed`]) the agent can open
    /// with this key; absent (older agents) means none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sealed_formats: Vec<u32>,
}

/// The answer to a successful enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrollResponse {
    pub appliance_id: ApplianceId,
    /// The appliance's client certificate (CN = appliance id).
    pub certificate_pem: String,
    /// The CA certificates that sign appliance certificates and the broker's.
    pub ca_chain_pem: String,
    pub broker: BrokerAddress,
}

/// Where the appliance's MQTT connection goes (TLS, client certificate required).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BrokerAddress {
    pub host: String,
    pub port: u16,
}

/// Every API error: `{"error": {"code": "...", "message": "..."}}`. `code` is stable and
/// meant for programs; `message` is for people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// One error: a stable `code` for programs, a `message` for people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable, e.g. `unauthorized`, `not_found`, `invalid_body`, `invalid_params`.
    pub code: String,
    pub message: String,
    /// Machine-readable specifics, e.g. `{"param": "hostname", "rule": "not_local_domain"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

/// `GET /agent/v1/self`: what the control plane has stored about the calling appliance —
/// the agent version and time of its last stored heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApplianceSelf {
    pub appliance_id: ApplianceId,
    /// `online`, `offline`, `never_seen` or `revoked`.
    pub status: String,
    /// The agent version of the last stored heartbeat.
    pub agent_version: Option<String>,
    /// When the last heartbeat was stored.
    #[serde(with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub last_seen: Option<OffsetDateTime>,
}
