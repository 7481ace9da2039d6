//! Every payload that travels over MQTT.
//!
//! Each carries `"v": 1` ([`ProtocolVersion`]); decoding any other version fails with a
//! clear error. Unknown fields are ignored and unknown enum values map to an `Unknown`
//! variant, so a newer agent can talk to an older control plane within one major version.
//! Timestamps are RFC 3339 in UTC.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;

use crate::ids::{BootId, RenewalId, SessionId, TaskId};
use crate::PROTOCOL_VERSION;

/// The schema version field `v`. It serialises as [`PROTOCOL_VERSION`] and refuses to
/// deserialise from anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProtocolVersion;

impl Serialize for ProtocolVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(PROTOCOL_VERSION)
    }
}

impl<'de> Deserialize<'de> for ProtocolVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u64::deserialize(d)?;
        if v == u64::from(PROTOCOL_VERSION) {
            Ok(ProtocolVersion)
        } else {
            Err(serde::de::Error::custom(format_args!(
                "unsupported protocol version {v} (this side speaks {PROTOCOL_VERSION})"
            )))
        }
    }
}

/// `up/heartbeat`: the appliance's facts, sent every heartbeat interval (QoS 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub v: ProtocolVersion,
    #[serde(with = "time::serde::rfc3339")]
    pub sent_at: OffsetDateTime,
    /// The kernel's boot id.
    pub boot_id: BootId,
    /// 1, 2, 3, … counted by the running agent: it restarts at 1 when the appliance
    /// reboots (new `boot_id`) or the agent restarts. Gaps within one run mean lost
    /// heartbeats.
    pub seq: u64,
    pub agent_version: String,
    pub uptime_s: u64,
    /// 1, 5 and 15 minute load averages.
    pub load: [f64; 3],
    pub memory: Memory,
    pub root_fs: Filesystem,
    /// The appliance's UTC offset now, in seconds east of UTC, from its time zone (absent:
    /// unknown, taken as UTC). A rollout's maintenance window is in the appliance's local
    /// hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utc_offset_s: Option<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    pub total_bytes: u64,
    pub available_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filesystem {
    pub total_bytes: u64,
    pub available_bytes: u64,
}

/// `up/status` (retained, QoS 1): published "online" by the agent on connect, "offline" by
/// the agent on a clean shutdown and by the broker (last will) on an unclean drop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub v: ProtocolVersion,
    pub state: PresenceState,
    /// The connection this status belongs to.
    pub session: SessionId,
    /// When the agent composed it. For a last will that is connect time, so receivers
    /// use their own receive time for presence history.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceState {
    Online,
    Offline,
    #[serde(other)]
    Unknown,
}

/// `up/config/request` (QoS 1): "send me my desired configuration".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigRequest {
    pub v: ProtocolVersion,
    /// The version the appliance last applied, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_version: Option<u64>,
}

/// `down/config` (QoS 1): the desired configuration document for one appliance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigDocument {
    pub v: ProtocolVersion,
    /// Monotonic per appliance.
    pub version: u64,
    /// The merged document; its schema belongs to the configuration feature.
    pub document: serde_json::Map<String, serde_json::Value>,
}

/// `up/config/applied` (QoS 1): which version the appliance applied and how that went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigApplied {
    pub v: ProtocolVersion,
    pub version: u64,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// How a configuration apply or a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed,
    /// Did not finish before its deadline.
    TimedOut,
    /// The agent refused it (unknown action, parameters outside the catalog's schema).
    Rejected,
    #[serde(other)]
    Unknown,
}

/// `down/task` (QoS 1): one catalog action to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDispatch {
    pub v: ProtocolVersion,
    pub task_id: TaskId,
    /// A catalog action id such as `users.add`.
    pub action: String,
    pub params: serde_json::Map<String, serde_json::Value>,
    #[serde(with = "time::serde::rfc3339")]
    pub deadline: OffsetDateTime,
}

/// `up/task/{id}/event` (QoS 1): one step of a running task, like a line of a CI log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEvent {
    pub v: ProtocolVersion,
    pub task_id: TaskId,
    /// 1, 2, 3, … per task; receivers de-duplicate on (task_id, seq).
    pub seq: u64,
    pub kind: TaskEventKind,
    /// The Ansible task the event is about (`role : task name`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    pub message: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskEventKind {
    /// The agent accepted the task (it passed the agent's own catalog check).
    Received,
    /// `ansible-playbook` started.
    Started,
    /// An Ansible task started.
    TaskStarted,
    /// An Ansible task finished without changing anything.
    TaskOk,
    /// An Ansible task changed something.
    TaskChanged,
    /// An Ansible task was skipped.
    TaskSkipped,
    /// An Ansible task failed.
    TaskFailed,
    /// Anything else the run printed.
    Output,
    /// Agent update: the build was downloaded and its signature, digest and architecture
    /// checked by the agent.
    Downloaded,
    /// Agent update: the build is installed beside the running one and the agent restarts
    /// into it (the health window starts).
    Switched,
    /// Agent update: the new version passed its health gate and is kept.
    Committed,
    /// Agent update: the previous version came back (the message says why).
    RolledBack,
    #[serde(other)]
    Unknown,
}

/// `up/task/{id}/result` (QoS 1): a task's final outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub v: ProtocolVersion,
    pub task_id: TaskId,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Ansible's play recap, when a playbook ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<PlayStats>,
    /// How many events (seq 1..=events) the agent sent before this result, so the receiver
    /// knows when its log is complete (events can arrive after the result when resent).
    #[serde(default)]
    pub events: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// Ansible's per-run counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayStats {
    pub ok: u32,
    pub changed: u32,
    pub failed: u32,
    pub skipped: u32,
    pub unreachable: u32,
}

/// `up/cert/request` (QoS 1): "sign this key for me", sent over the connection the current
/// certificate authenticated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRequest {
    pub v: ProtocolVersion,
    /// The same id for every retry of one renewal.
    pub renewal: RenewalId,
    /// A PKCS#10 request for the new key (its subject is ignored).
    pub csr_pem: String,
    /// The serial (hex) of the certificate the agent is connected with.
    pub current_serial: String,
}

/// `down/cert` (QoS 1): the answer to a [`CertificateRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRenewal {
    pub v: ProtocolVersion,
    pub renewal: RenewalId,
    #[serde(flatten)]
    pub outcome: RenewalOutcome,
}

/// A signed certificate, or why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RenewalOutcome {
    Issued {
        certificate_pem: String,
        /// Every CA the broker trusts for appliances (more than one during a CA rotation).
        ca_chain_pem: String,
        /// Hex.
        serial: String,
        #[serde(with = "time::serde::rfc3339")]
        not_after: OffsetDateTime,
    },
    Refused {
        /// Stable: `revoked`, `tenant_suspended`, `invalid_csr`, `same_key`,
        /// `too_frequent`, `unavailable`.
        code: String,
        message: String,
    },
    #[serde(other)]
    Unknown,
}

/// `down/cert/renew` (QoS 1): the control plane asks the appliance to renew its certificate
/// now rather than when it is due, through the usual [`CertificateRequest`]. Sent while the
/// fleet CA is being rotated to every connected appliance whose certificate is from the
/// retiring CA; the answer to that renewal carries the new CA bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewalNotice {
    pub v: ProtocolVersion,
    pub reason: RenewalReason,
    /// Start the renewal within this many seconds, at a time of the appliance's own
    /// choosing, so a fleet told at once does not ask at once.
    pub within_s: u32,
}

/// Why a [`RenewalNotice`] was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RenewalReason {
    /// The fleet CA is being replaced; the current certificate's CA will stop being trusted.
    CaRotation,
    /// A reason this agent does not know: it renews all the same.
    #[serde(other)]
    Unknown,
}

/// `down/receipt` (QoS 1): what the control plane has durably stored of what this appliance
/// sent (including what it stored earlier or ignored as not the appliance's). The agent
/// keeps task events, task results and configuration reports spooled until a receipt names
/// them, and sends them again after a reconnect or when no receipt came in time — a broker
/// PUBACK alone is not proof of delivery (a broker restart can drop messages for a shared
/// subscription nobody has resubscribed to yet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub v: ProtocolVersion,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<TaskId>,
    /// Configuration reports stored, by version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_applied: Vec<u64>,
}

/// One task event: its task and sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EventRef {
    pub task_id: TaskId,
    pub seq: u64,
}
