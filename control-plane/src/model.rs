//! The control plane's vocabulary: every state and role it stores, as a type.
//!
//! Each enum is stored as `text` in PostgreSQL (a `CHECK` in the migrations lists the same
//! values), serialised as the same snake_case word in the API, and described as an enum in
//! the OpenAPI document, so a client sees the allowed values. `FromStr` accepts exactly those
//! words and its error lists them. This module sits below every other: `http` → `domain` →
//! `db` → `model`.
//!
//! ```
//! use hearth_control_plane::model::TaskStatus;
//! assert_eq!("timed_out".parse::<TaskStatus>().unwrap(), TaskStatus::TimedOut);
//! assert_eq!(TaskStatus::TimedOut.to_string(), "timed_out");
//! assert!(TaskStatus::Succeeded.is_final() && !TaskStatus::Running.is_final());
//! let err = "done".parse::<TaskStatus>().unwrap_err();
//! assert!(err.to_string().contains("queued, dispatched, running"));
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A word that is not one of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not one of {allowed}")]
pub struct UnknownValue {
    pub input: String,
    /// The allowed values, comma-separated.
    pub allowed: String,
}

macro_rules! stored_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
        #[sqlx(type_name = "text")]
        // Each word is also its variant's name in snake_case: the OpenAPI derive does not see
        // the per-variant renames through this macro, and takes the words from here.
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] #[sqlx(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| UnknownValue {
                    input: s.chars().take(64).collect(),
                    allowed: $name::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", "),
                })
            }
        }
    };
}

stored_enum!(
    /// A customer account's state: a suspended tenant's keys, sign-ins and appliances are refused.
    TenantStatus {
        Active = "active",
        Suspended = "suspended",
    }
);

stored_enum!(
    /// An appliance's presence as stored (revocation is a separate fact, `revoked_at`).
    ApplianceStatus {
        /// Registered, never connected.
        NeverSeen = "never_seen",
        Online = "online",
        Offline = "offline",
    }
);

stored_enum!(
    /// An appliance as the fleet views count and filter it: a revoked appliance is only
    /// `revoked`, whatever its last presence.
    FleetStatus {
        NeverSeen = "never_seen",
        Online = "online",
        Offline = "offline",
        Revoked = "revoked",
    }
);

stored_enum!(
    /// One online/offline transition in an appliance's presence history.
    Presence {
        Online = "online",
        Offline = "offline",
    }
);

stored_enum!(
    /// A catalog task's life: `queued` → `dispatched` (sent) → `running` (first event) →
    /// one of the final states.
    TaskStatus {
        Queued = "queued",
        Dispatched = "dispatched",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        /// Not finished before its deadline (or the agent's own timeout).
        TimedOut = "timed_out",
        /// Cancelled before it was sent.
        Cancelled = "cancelled",
        /// The agent refused it (its own catalog check).
        Rejected = "rejected",
    }
);

impl TaskStatus {
    /// The states a task can still leave.
    pub const UNFINISHED: &'static [TaskStatus] = &[TaskStatus::Queued, TaskStatus::Dispatched, TaskStatus::Running];

    /// Whether the task is over.
    pub fn is_final(self) -> bool {
        !Self::UNFINISHED.contains(&self)
    }

    /// The final state a result's outcome ends a task in.
    pub fn from_outcome(outcome: hearth_protocol::Outcome) -> TaskStatus {
        use hearth_protocol::Outcome;
        match outcome {
            Outcome::Succeeded => TaskStatus::Succeeded,
            Outcome::Failed | Outcome::Unknown => TaskStatus::Failed,
            Outcome::TimedOut => TaskStatus::TimedOut,
            Outcome::Rejected => TaskStatus::Rejected,
        }
    }
}

stored_enum!(
    /// A fleet rollout's life: `scheduled` (before its start time) → `running` ⇄ `paused`,
    /// `waiting_for_approval` between waves when the gate asks for it, and one of the final
    /// states.
    RolloutState {
        Scheduled = "scheduled",
        Running = "running",
        /// Stopped by an operator or the tenant: nothing new starts; what runs finishes.
        Paused = "paused",
        /// A wave passed its gate and the next one waits for an approval.
        WaitingForApproval = "waiting_for_approval",
        /// Every execution finished (failures below the abort threshold included).
        Succeeded = "succeeded",
        /// Stopped by its abort criteria (the reason says which); what had not started was cancelled.
        Aborted = "aborted",
        /// Cancelled by an operator or the tenant; stays cancelled.
        Cancelled = "cancelled",
    }
);

impl RolloutState {
    /// The states a rollout can still leave.
    pub const ACTIVE: &'static [RolloutState] =
        &[RolloutState::Scheduled, RolloutState::Running, RolloutState::Paused, RolloutState::WaitingForApproval];

    pub fn is_final(self) -> bool {
        !Self::ACTIVE.contains(&self)
    }
}

stored_enum!(
    /// One appliance's part in a rollout.
    ExecutionState {
        /// Not started: its wave is not open yet, the appliance is offline, outside its
        /// window, or waiting to retry.
        Pending = "pending",
        /// Sent (its task, or its configuration version) and not finished.
        InProgress = "in_progress",
        Succeeded = "succeeded",
        Failed = "failed",
        /// The agent refused it (its own catalog check).
        Rejected = "rejected",
        /// Not finished within the execution timeout.
        TimedOut = "timed_out",
        /// Never started: the rollout was cancelled or aborted first.
        Cancelled = "cancelled",
    }
);

stored_enum!(
    /// A task the assistant proposed.
    ProposalStatus {
        /// Waiting for the customer's confirmation.
        Pending = "pending",
        /// Confirmed (or run without confirmation): its task was created.
        Confirmed = "confirmed",
        /// The customer wrote again before confirming it.
        Superseded = "superseded",
    }
);

stored_enum!(
    /// Who wrote a message of a support conversation.
    MessageRole {
        Customer = "customer",
        Assistant = "assistant",
    }
);

stored_enum!(
    /// What an operator may do: `admin` everything; `support` read everything and create
    /// tasks on a customer's behalf; `viewer` read only.
    OperatorRole {
        Admin = "admin",
        Support = "support",
        Viewer = "viewer",
    }
);

stored_enum!(
    /// A tenant user's role: `owner` manages the account's members and API keys; `member`
    /// uses the API.
    UserRole {
        Owner = "owner",
        Member = "member",
    }
);

stored_enum!(
    /// Who made a change, as the audit trail records it.
    ActorKind {
        /// An operator token (`hearth_ot_…`).
        Operator = "operator",
        /// A tenant's API key.
        TenantKey = "tenant_key",
        /// A signed-in tenant user.
        TenantUser = "tenant_user",
        /// The support assistant, on a customer's confirmation.
        Assistant = "assistant",
        /// The operator CLI.
        Cli = "cli",
        /// The control plane itself (the dispatcher, the sweeper).
        System = "system",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_through_serde_and_fromstr() {
        for s in TaskStatus::ALL {
            let json = serde_json::to_value(s).unwrap();
            assert_eq!(json, serde_json::Value::String(s.as_str().into()));
            assert_eq!(serde_json::from_value::<TaskStatus>(json).unwrap(), *s);
            assert_eq!(s.as_str().parse::<TaskStatus>().unwrap(), *s);
        }
        assert!("Active".parse::<TenantStatus>().is_err());
        assert_eq!("never_seen".parse::<FleetStatus>().unwrap(), FleetStatus::NeverSeen);
    }

    #[test]
    fn the_openapi_schema_lists_the_stored_words() {
        use utoipa::PartialSchema;
        let schema = serde_json::to_value(ActorKind::schema()).unwrap();
        assert_eq!(schema["enum"], serde_json::json!(ActorKind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>()));
        let schema = serde_json::to_value(TaskStatus::schema()).unwrap();
        assert_eq!(schema["enum"], serde_json::json!(TaskStatus::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>()));
    }

    #[test]
    fn unfinished_and_final_partition_the_states() {
        let finals: Vec<_> = TaskStatus::ALL.iter().filter(|s| s.is_final()).collect();
        assert_eq!(finals.len() + TaskStatus::UNFINISHED.len(), TaskStatus::ALL.len());
    }
}
