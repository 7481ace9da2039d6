//! The topic scheme: `hearth/v1/{appliance}/{up|down}/{channel}`.
//!
//! A [`Topic`] is built from an [`ApplianceId`] and a [`Channel`] and parsed back from a
//! string; nothing else in Hearth formats topic strings.
//!
//! ```
//! use hearth_protocol::{ApplianceId, Channel, Topic, TopicFilter, UpChannel, DownChannel, TaskId};
//! let a: ApplianceId = "0190b6a4-5f5e-7c41-9a7d-2f3e4b5c6d7e".parse().unwrap();
//!
//! let t = Topic::new(a, UpChannel::Heartbeat);
//! assert_eq!(t.to_string(), "hearth/v1/0190b6a4-5f5e-7c41-9a7d-2f3e4b5c6d7e/up/heartbeat");
//! assert_eq!(t.to_string().parse::<Topic>().unwrap(), t);
//!
//! let task: TaskId = "0190b6a4-0000-7000-8000-000000000001".parse().unwrap();
//! assert_eq!(
//!     Topic::new(a, UpChannel::TaskEvent(task)).to_string(),
//!     "hearth/v1/0190b6a4-5f5e-7c41-9a7d-2f3e4b5c6d7e/up/task/0190b6a4-0000-7000-8000-000000000001/event",
//! );
//! assert_eq!(
//!     Topic::new(a, DownChannel::Config).to_string(),
//!     "hearth/v1/0190b6a4-5f5e-7c41-9a7d-2f3e4b5c6d7e/down/config",
//! );
//!
//! assert_eq!(TopicFilter::AllUp.to_string(), "hearth/v1/+/up/#");
//! assert_eq!(TopicFilter::AllUp.shared("hearth-cp"), "$share/hearth-cp/hearth/v1/+/up/#");
//! assert_eq!(
//!     TopicFilter::Down(a).to_string(),
//!     "hearth/v1/0190b6a4-5f5e-7c41-9a7d-2f3e4b5c6d7e/down/#",
//! );
//! ```

use std::fmt;
use std::str::FromStr;

use crate::ids::{ApplianceId, TaskId};

/// The fixed first two levels of every Hearth topic.
pub const ROOT: &str = "hearth/v1";

/// A message's direction and kind, relative to the appliance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Appliance → control plane.
    Up(UpChannel),
    /// Control plane → appliance.
    Down(DownChannel),
}

/// What an appliance publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpChannel {
    /// Periodic facts (QoS 0).
    Heartbeat,
    /// Online/offline, retained; the broker publishes the last will here (QoS 1).
    Status,
    /// "Send me my desired configuration" (QoS 1).
    ConfigRequest,
    /// The configuration version the appliance applied and how that went (QoS 1).
    ConfigApplied,
    /// A renewal of the appliance's certificate (QoS 1).
    CertRequest,
    /// One step of a running task (QoS 1).
    TaskEvent(TaskId),
    /// A task's final outcome (QoS 1).
    TaskResult(TaskId),
}

/// What the control plane publishes to one appliance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DownChannel {
    /// The desired configuration document, or a notice that it changed.
    Config,
    /// A catalog task to run.
    Task,
    /// A renewed certificate.
    Cert,
    /// "Renew your certificate now" (a CA rotation), not an answer to a request.
    CertRenew,
    /// What the control plane has stored of this appliance's task events, results and
    /// configuration reports (the agent keeps them spooled until then).
    Receipt,
}

impl From<UpChannel> for Channel {
    fn from(c: UpChannel) -> Self {
        Channel::Up(c)
    }
}

impl From<DownChannel> for Channel {
    fn from(c: DownChannel) -> Self {
        Channel::Down(c)
    }
}

/// One concrete topic: an appliance and a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Topic {
    pub appliance: ApplianceId,
    pub channel: Channel,
}

impl Topic {
    pub fn new(appliance: ApplianceId, channel: impl Into<Channel>) -> Self {
        Self { appliance, channel: channel.into() }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{ROOT}/{}/", self.appliance)?;
        match self.channel {
            Channel::Up(c) => match c {
                UpChannel::Heartbeat => f.write_str("up/heartbeat"),
                UpChannel::Status => f.write_str("up/status"),
                UpChannel::ConfigRequest => f.write_str("up/config/request"),
                UpChannel::ConfigApplied => f.write_str("up/config/applied"),
                UpChannel::CertRequest => f.write_str("up/cert/request"),
                UpChannel::TaskEvent(id) => write!(f, "up/task/{id}/event"),
                UpChannel::TaskResult(id) => write!(f, "up/task/{id}/result"),
            },
            Channel::Down(c) => match c {
                DownChannel::Config => f.write_str("down/config"),
                DownChannel::Task => f.write_str("down/task"),
                DownChannel::Cert => f.write_str("down/cert"),
                DownChannel::CertRenew => f.write_str("down/cert/renew"),
                DownChannel::Receipt => f.write_str("down/receipt"),
            },
        }
    }
}

/// A topic string that is not part of Hearth's scheme.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic does not start with {ROOT}/")]
    WrongRoot,
    #[error("topic has an invalid appliance id level")]
    BadAppliance,
    #[error("topic has an invalid task id level")]
    BadTask,
    #[error("topic names no known channel")]
    UnknownChannel,
    #[error("topic is longer than {max} bytes")]
    TooLong { max: usize },
}

/// No Hearth topic is longer than this; anything longer is rejected before it is split.
pub const MAX_TOPIC_LEN: usize = 160;

impl FromStr for Topic {
    type Err = TopicError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_TOPIC_LEN {
            return Err(TopicError::TooLong { max: MAX_TOPIC_LEN });
        }
        let rest = s.strip_prefix(ROOT).and_then(|r| r.strip_prefix('/')).ok_or(TopicError::WrongRoot)?;
        let (appliance, rest) = rest.split_once('/').ok_or(TopicError::UnknownChannel)?;
        let appliance: ApplianceId = appliance.parse().map_err(|_| TopicError::BadAppliance)?;
        let levels: Vec<&str> = rest.split('/').collect();
        let task = |s: &str| s.parse::<TaskId>().map_err(|_| TopicError::BadTask);
        let channel = match levels.as_slice() {
            ["up", "heartbeat"] => UpChannel::Heartbeat.into(),
            ["up", "status"] => UpChannel::Status.into(),
            ["up", "config", "request"] => UpChannel::ConfigRequest.into(),
            ["up", "config", "applied"] => UpChannel::ConfigApplied.into(),
            ["up", "cert", "request"] => UpChannel::CertRequest.into(),
            ["up", "task", id, "event"] => UpChannel::TaskEvent(task(id)?).into(),
            ["up", "task", id, "result"] => UpChannel::TaskResult(task(id)?).into(),
            ["down", "config"] => DownChannel::Config.into(),
            ["down", "task"] => DownChannel::Task.into(),
            ["down", "cert"] => DownChannel::Cert.into(),
            ["down", "cert", "renew"] => DownChannel::CertRenew.into(),
            ["down", "receipt"] => DownChannel::Receipt.into(),
            _ => return Err(TopicError::UnknownChannel),
        };
        Ok(Topic { appliance, channel })
    }
}

/// The subscriptions Hearth uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicFilter {
    /// Everything every appliance publishes (the control plane).
    AllUp,
    /// Everything sent down to one appliance (that appliance's agent).
    Down(ApplianceId),
}

impl TopicFilter {
    /// The same filter as an MQTT shared subscription, so that several control plane
    /// replicas in `group` split the messages between them.
    pub fn shared(&self, group: &str) -> String {
        format!("$share/{group}/{self}")
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopicFilter::AllUp => write!(f, "{ROOT}/+/up/#"),
            TopicFilter::Down(a) => write!(f, "{ROOT}/{a}/down/#"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_channel_round_trips() {
        let a = ApplianceId::new();
        let t = TaskId::new();
        let channels: Vec<Channel> = vec![
            UpChannel::Heartbeat.into(),
            UpChannel::Status.into(),
            UpChannel::ConfigRequest.into(),
            UpChannel::ConfigApplied.into(),
            UpChannel::CertRequest.into(),
            UpChannel::TaskEvent(t).into(),
            UpChannel::TaskResult(t).into(),
            DownChannel::Config.into(),
            DownChannel::Task.into(),
            DownChannel::Cert.into(),
            DownChannel::CertRenew.into(),
            DownChannel::Receipt.into(),
        ];
        for c in channels {
            let topic = Topic::new(a, c);
            let s = topic.to_string();
            assert!(s.len() <= MAX_TOPIC_LEN, "{s}");
            assert_eq!(s.parse::<Topic>(), Ok(topic), "{s}");
        }
    }

    #[test]
    fn rejects_foreign_and_malformed_topics() {
        let a = ApplianceId::new();
        assert_eq!("other/v1/x/up/heartbeat".parse::<Topic>(), Err(TopicError::WrongRoot));
        assert_eq!("hearth/v2/x/up/heartbeat".parse::<Topic>(), Err(TopicError::WrongRoot));
        assert_eq!("hearth/v1/+/up/heartbeat".parse::<Topic>(), Err(TopicError::BadAppliance));
        assert_eq!(format!("hearth/v1/{a}/up/heartbeat/extra").parse::<Topic>(), Err(TopicError::UnknownChannel));
        assert_eq!(format!("hearth/v1/{a}/up/task/nope/event").parse::<Topic>(), Err(TopicError::BadTask));
        assert_eq!(format!("hearth/v1/{a}").parse::<Topic>(), Err(TopicError::UnknownChannel));
        assert!(matches!("x".repeat(500).parse::<Topic>(), Err(TopicError::TooLong { .. })));
    }
}
