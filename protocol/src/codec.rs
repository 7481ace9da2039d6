//! Strict, size-limited encoding and decoding.
//!
//! Every payload type has a size limit ([`Payload::MAX_BYTES`]) and semantic checks
//! ([`Payload::validate`]). Decoding checks the size before parsing, parses, then
//! validates; any failure is a [`DecodeError`] whose [`reason`](DecodeError::reason) is a
//! stable label for metrics. Nothing here panics on any input.
//!
//! ```
//! use hearth_protocol::{decode, Heartbeat, DecodeError};
//! let err = decode::<Heartbeat>(b"{\"v\":2}").unwrap_err();
//! assert_eq!(err.reason(), "malformed");
//! assert!(err.to_string().contains("unsupported protocol version 2"));
//! ```

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::message::*;
use crate::topic::UpChannel;

/// The largest payload anything in Hearth sends; the broker is configured with the same
/// `message_size_limit`.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// Longest free-text field (messages, versions) we accept in an up payload.
pub const MAX_TEXT_LEN: usize = 8 * 1024;

/// A message type with its wire limits.
pub trait Payload: Serialize + DeserializeOwned {
    /// Human name used in errors and metric labels.
    const KIND: &'static str;
    /// Largest encoded size accepted.
    const MAX_BYTES: usize;
    /// Checks serde cannot express. Returns a description of the first problem.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Why a payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{kind} payload is {len} bytes, more than the limit of {max}")]
    TooLarge { kind: &'static str, len: usize, max: usize },
    #[error("{kind} payload is not valid: {detail}")]
    Malformed { kind: &'static str, detail: String },
    #[error("{kind} payload is out of range: {detail}")]
    Invalid { kind: &'static str, detail: String },
    #[error("{kind} payload names task {payload} but arrived on the topic of task {topic}")]
    TaskMismatch { kind: &'static str, topic: crate::TaskId, payload: crate::TaskId },
}

impl DecodeError {
    /// A stable, low-cardinality label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::Malformed { .. } => "malformed",
            DecodeError::Invalid { .. } | DecodeError::TaskMismatch { .. } => "invalid",
        }
    }
}

/// An outgoing payload that breaks its own limits (a bug on the sending side).
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("{kind} payload would be {len} bytes, more than the limit of {max}")]
    TooLarge { kind: &'static str, len: usize, max: usize },
    #[error("{kind} payload is out of range: {detail}")]
    Invalid { kind: &'static str, detail: String },
    #[error("payload cannot be serialised: {0}")]
    Json(#[from] serde_json::Error),
}

/// Parses and validates one payload.
pub fn decode<T: Payload>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() > T::MAX_BYTES {
        return Err(DecodeError::TooLarge { kind: T::KIND, len: bytes.len(), max: T::MAX_BYTES });
    }
    let value: T =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed { kind: T::KIND, detail: e.to_string() })?;
    value.validate().map_err(|detail| DecodeError::Invalid { kind: T::KIND, detail })?;
    Ok(value)
}

/// Serialises one payload, refusing one that would break its own limits.
pub fn encode<T: Payload>(value: &T) -> Result<Vec<u8>, EncodeError> {
    value.validate().map_err(|detail| EncodeError::Invalid { kind: T::KIND, detail })?;
    let bytes = serde_json::to_vec(value)?;
    if bytes.len() > T::MAX_BYTES {
        return Err(EncodeError::TooLarge { kind: T::KIND, len: bytes.len(), max: T::MAX_BYTES });
    }
    Ok(bytes)
}

/// Anything an appliance publishes, decoded according to the channel it arrived on.
#[derive(Debug, Clone, PartialEq)]
pub enum UpMessage {
    Heartbeat(Heartbeat),
    Status(Status),
    ConfigRequest(ConfigRequest),
    ConfigApplied(ConfigApplied),
    CertRequest(CertificateRequest),
    TaskEvent(TaskEvent),
    TaskResult(TaskResult),
}

impl UpMessage {
    /// Decodes a payload received on `channel`. For task channels the task id in the
    /// payload must match the one in the topic.
    pub fn decode(channel: UpChannel, bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(match channel {
            UpChannel::Heartbeat => UpMessage::Heartbeat(decode(bytes)?),
            UpChannel::Status => UpMessage::Status(decode(bytes)?),
            UpChannel::ConfigRequest => UpMessage::ConfigRequest(decode(bytes)?),
            UpChannel::ConfigApplied => UpMessage::ConfigApplied(decode(bytes)?),
            UpChannel::CertRequest => UpMessage::CertRequest(decode(bytes)?),
            UpChannel::TaskEvent(topic) => {
                let e: TaskEvent = decode(bytes)?;
                same_task(TaskEvent::KIND, topic, e.task_id)?;
                UpMessage::TaskEvent(e)
            }
            UpChannel::TaskResult(topic) => {
                let r: TaskResult = decode(bytes)?;
                same_task(TaskResult::KIND, topic, r.task_id)?;
                UpMessage::TaskResult(r)
            }
        })
    }

    /// The payload's kind, as used in errors and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            UpMessage::Heartbeat(_) => Heartbeat::KIND,
            UpMessage::Status(_) => Status::KIND,
            UpMessage::ConfigRequest(_) => ConfigRequest::KIND,
            UpMessage::ConfigApplied(_) => ConfigApplied::KIND,
            UpMessage::CertRequest(_) => CertificateRequest::KIND,
            UpMessage::TaskEvent(_) => TaskEvent::KIND,
            UpMessage::TaskResult(_) => TaskResult::KIND,
        }
    }
}

impl UpChannel {
    /// The [`Payload::KIND`] of what travels on this channel (for errors and metrics, even
    /// when the payload could not be decoded).
    pub fn payload_kind(&self) -> &'static str {
        match self {
            UpChannel::Heartbeat => Heartbeat::KIND,
            UpChannel::Status => Status::KIND,
            UpChannel::ConfigRequest => ConfigRequest::KIND,
            UpChannel::ConfigApplied => ConfigApplied::KIND,
            UpChannel::CertRequest => CertificateRequest::KIND,
            UpChannel::TaskEvent(_) => TaskEvent::KIND,
            UpChannel::TaskResult(_) => TaskResult::KIND,
        }
    }
}

fn same_task(kind: &'static str, topic: crate::TaskId, payload: crate::TaskId) -> Result<(), DecodeError> {
    if topic == payload {
        Ok(())
    } else {
        Err(DecodeError::TaskMismatch { kind, topic, payload })
    }
}

fn text(field: &str, s: &str, max: usize) -> Result<(), String> {
    if s.len() > max {
        Err(format!("{field} is {} bytes, more than {max}", s.len()))
    } else {
        Ok(())
    }
}

fn opt_text(field: &str, s: &Option<String>, max: usize) -> Result<(), String> {
    s.as_deref().map_or(Ok(()), |s| text(field, s, max))
}

impl Payload for Heartbeat {
    const KIND: &'static str = "heartbeat";
    const MAX_BYTES: usize = 4 * 1024;
    fn validate(&self) -> Result<(), String> {
        text("agent_version", &self.agent_version, 64)?;
        if self.seq == 0 {
            return Err("seq starts at 1".into());
        }
        if let Some(l) = self.load.iter().find(|l| !l.is_finite() || **l < 0.0) {
            return Err(format!("load average {l} is not a finite non-negative number"));
        }
        if self.memory.available_bytes > self.memory.total_bytes {
            return Err("memory.available_bytes exceeds memory.total_bytes".into());
        }
        if self.root_fs.available_bytes > self.root_fs.total_bytes {
            return Err("root_fs.available_bytes exceeds root_fs.total_bytes".into());
        }
        Ok(())
    }
}

impl Payload for Status {
    const KIND: &'static str = "status";
    const MAX_BYTES: usize = 1024;
}

impl Payload for ConfigRequest {
    const KIND: &'static str = "config_request";
    const MAX_BYTES: usize = 1024;
}

impl Payload for ConfigDocument {
    const KIND: &'static str = "config_document";
    const MAX_BYTES: usize = MAX_PAYLOAD_BYTES;
}

impl Payload for ConfigApplied {
    const KIND: &'static str = "config_applied";
    const MAX_BYTES: usize = 16 * 1024;
    fn validate(&self) -> Result<(), String> {
        opt_text("message", &self.message, MAX_TEXT_LEN)
    }
}

impl Payload for TaskDispatch {
    const KIND: &'static str = "task_dispatch";
    const MAX_BYTES: usize = 64 * 1024;
    fn validate(&self) -> Result<(), String> {
        text("action", &self.action, 64)
    }
}

impl Payload for TaskEvent {
    const KIND: &'static str = "task_event";
    const MAX_BYTES: usize = 16 * 1024;
    fn validate(&self) -> Result<(), String> {
        text("message", &self.message, MAX_TEXT_LEN)
    }
}

impl Payload for TaskResult {
    const KIND: &'static str = "task_result";
    const MAX_BYTES: usize = 16 * 1024;
    fn validate(&self) -> Result<(), String> {
        opt_text("message", &self.message, MAX_TEXT_LEN)
    }
}

impl Payload for Receipt {
    const KIND: &'static str = "receipt";
    const MAX_BYTES: usize = 64 * 1024;
}

impl Payload for CertificateRequest {
    const KIND: &'static str = "certificate_request";
    const MAX_BYTES: usize = 16 * 1024;
    fn validate(&self) -> Result<(), String> {
        text("csr_pem", &self.csr_pem, 8 * 1024)?;
        text("current_serial", &self.current_serial, 64)
    }
}

impl Payload for RenewalNotice {
    const KIND: &'static str = "renewal_notice";
    const MAX_BYTES: usize = 1024;
}

impl Payload for CertificateRenewal {
    const KIND: &'static str = "certificate_renewal";
    // The certificate and every CA of a rotation's overlap.
    const MAX_BYTES: usize = 32 * 1024;
}
