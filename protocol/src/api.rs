//! The few HTTP API bodies the agent and the control plane both speak: enrollment, and
//! the error body every API error uses.
//!
//! ```
//! use hearth_protocol::api::ErrorBody;
//! let body: ErrorBody = serde_json::from_str(
//!     r#"{"error":{"code":"enrollment_token_used","message":"this enrollment token was already used"}}"#,
//! ).unwrap();
//! assert_eq!(body.error.code, "enrollment_token_used");
//! ```

use serde::{Deserialize, Serialize};

use crate::ids::ApplianceId;

/// `POST /api/v1/enroll`: a one-time token and a certificate signing request made on the
/// appliance (the private key never leaves it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub token: String,
    pub csr_pem: String,
}

/// The answer to a successful enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
pub struct BrokerAddress {
    pub host: String,
    pub port: u16,
}

/// Every API error: `{"error": {"code": "...", "message": "..."}}`. `code` is stable and
/// meant for programs; `message` is for people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    /// Machine-readable specifics, e.g. `{"param": "hostname", "rule": "not_local_domain"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}
