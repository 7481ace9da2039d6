//! The ingest writer: collects messages for up to `batch_wait_ms` or `batch_max` messages,
//! coalesces them per appliance, and writes the batch with one statement.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_protocol::{ApplianceId, Heartbeat, PresenceState, Status};
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::config::IngestConfig;
use crate::db::presence::{self, ApplianceUpdate, HeartbeatRow, PresenceChange};
use crate::metrics::Metrics;

/// A decoded message the writer persists.
#[derive(Debug, Clone)]
pub enum Ingested {
    Heartbeat(ApplianceId, Heartbeat),
    Status(ApplianceId, Status),
}

/// What a batch of messages adds up to, per appliance, in arrival order.
#[derive(Debug, Default)]
pub struct Coalescer {
    updates: HashMap<ApplianceId, ApplianceUpdate>,
    messages: usize,
    heartbeats: u64,
}

impl Coalescer {
    pub fn push(&mut self, msg: Ingested) {
        self.messages += 1;
        let id = match &msg {
            Ingested::Heartbeat(id, _) | Ingested::Status(id, _) => *id,
        };
        let u = self.updates.entry(id).or_insert_with(|| ApplianceUpdate {
            id,
            heartbeat: None,
            presence: None,
            seen: false,
        });
        match msg {
            Ingested::Heartbeat(_, hb) => {
                self.heartbeats += 1;
                u.seen = true;
                // A heartbeat proves the appliance online; keep an "online" we already have
                // from a status message, since it names the connection.
                if !matches!(u.presence, Some(PresenceChange { online: true, .. })) {
                    u.presence = Some(PresenceChange {
                        online: true,
                        session: None,
                        reason: "heartbeat",
                    });
                }
                u.heartbeat = Some(HeartbeatRow {
                    agent_version: hb.agent_version.clone(),
                    boot_id: hb.boot_id,
                    seq: hb.seq,
                    sent_at: hb.sent_at,
                    metrics: serde_json::json!({
                        "uptime_s": hb.uptime_s,
                        "load": hb.load,
                        "memory": hb.memory,
                        "root_fs": hb.root_fs,
                        "boot_id": hb.boot_id,
                        "seq": hb.seq,
                    }),
                });
            }
            Ingested::Status(_, st) => match st.state {
                PresenceState::Online => {
                    u.seen = true;
                    u.presence = Some(PresenceChange {
                        online: true,
                        session: Some(st.session),
                        reason: "status_message",
                    });
                }
                PresenceState::Offline => {
                    u.presence = Some(PresenceChange {
                        online: false,
                        session: Some(st.session),
                        reason: "status_message",
                    });
                }
                PresenceState::Unknown => {}
            },
        }
    }

    pub fn messages(&self) -> usize {
        self.messages
    }

    /// The batch, one entry per appliance, in id order.
    pub fn into_updates(self) -> (Vec<ApplianceUpdate>, u64) {
        let mut v: Vec<_> = self.updates.into_values().collect();
        v.sort_by_key(|u| u.id);
        (v, self.heartbeats)
    }
}

const RETRIES: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(500),
    Duration::from_secs(2),
];

/// Runs until every sender is dropped and the channel is drained.
pub async fn run_writer(
    mut rx: mpsc::Receiver<Ingested>,
    pool: PgPool,
    metrics: Arc<Metrics>,
    cfg: IngestConfig,
) {
    let wait = Duration::from_millis(cfg.batch_wait_ms);
    while let Some(first) = rx.recv().await {
        let mut batch = Coalescer::default();
        batch.push(first);
        let deadline = tokio::time::Instant::now() + wait;
        while batch.messages() < cfg.batch_max {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(m) => batch.push(m),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        flush(&pool, &metrics, batch).await;
    }
    tracing::debug!("ingest writer drained");
}

async fn flush(pool: &PgPool, metrics: &Metrics, batch: Coalescer) {
    let messages = batch.messages();
    let (updates, heartbeats) = batch.into_updates();
    let mut attempt = 0;
    loop {
        let started = Instant::now();
        match presence::write_batch(pool, &updates).await {
            Ok(outcome) => {
                metrics
                    .ingest_batch_seconds
                    .observe(started.elapsed().as_secs_f64());
                metrics.ingest_batch_size.observe(updates.len() as f64);
                metrics.heartbeats_ingested.inc_by(heartbeats);
                metrics.presence_transitions.inc_by(outcome.transitions);
                let unknown = (updates.len() as u64).saturating_sub(outcome.updated);
                if unknown > 0 {
                    metrics.ingest_unknown_appliances.inc_by(unknown);
                    tracing::debug!(unknown, "batch named appliances that do not exist");
                }
                return;
            }
            Err(e) => {
                metrics.ingest_batch_errors.inc();
                let Some(delay) = RETRIES.get(attempt) else {
                    // Only latest state is lost: the next heartbeat or the sweeper corrects it.
                    metrics.ingest_messages_dropped.inc_by(messages as u64);
                    tracing::error!(error = %e, messages, "ingest batch failed after retries; dropped");
                    return;
                };
                tracing::warn!(error = %e, attempt, "ingest batch failed; retrying");
                tokio::time::sleep(*delay).await;
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_protocol::{BootId, Filesystem, Memory, ProtocolVersion, SessionId};

    fn hb(seq: u64) -> Heartbeat {
        Heartbeat {
            v: ProtocolVersion,
            sent_at: time::OffsetDateTime::now_utc(),
            boot_id: BootId::new(),
            seq,
            agent_version: "0.1.0".into(),
            uptime_s: 1,
            load: [0.0; 3],
            memory: Memory {
                total_bytes: 2,
                available_bytes: 1,
            },
            root_fs: Filesystem {
                total_bytes: 2,
                available_bytes: 1,
            },
        }
    }

    fn status(state: PresenceState, session: SessionId) -> Status {
        Status {
            v: ProtocolVersion,
            state,
            session,
            at: time::OffsetDateTime::now_utc(),
        }
    }

    #[test]
    fn coalesces_per_appliance_last_word_wins() {
        let (a, b) = (ApplianceId::new(), ApplianceId::new());
        let s = SessionId::new();
        let mut c = Coalescer::default();
        c.push(Ingested::Status(a, status(PresenceState::Online, s)));
        c.push(Ingested::Heartbeat(a, hb(1)));
        c.push(Ingested::Heartbeat(a, hb(2)));
        c.push(Ingested::Heartbeat(b, hb(7)));
        c.push(Ingested::Status(b, status(PresenceState::Offline, s)));
        assert_eq!(c.messages(), 5);
        let (updates, heartbeats) = c.into_updates();
        assert_eq!(heartbeats, 3);
        assert_eq!(updates.len(), 2);
        let ua = updates.iter().find(|u| u.id == a).unwrap();
        assert_eq!(ua.heartbeat.as_ref().unwrap().seq, 2);
        // The heartbeat did not erase the session named by the status message.
        assert_eq!(
            ua.presence,
            Some(PresenceChange {
                online: true,
                session: Some(s),
                reason: "status_message"
            })
        );
        let ub = updates.iter().find(|u| u.id == b).unwrap();
        assert_eq!(ub.presence.map(|p| p.online), Some(false));
        assert!(ub.seen);
        assert!(
            updates.windows(2).all(|w| w[0].id < w[1].id),
            "sorted by id for lock order"
        );
    }
}
