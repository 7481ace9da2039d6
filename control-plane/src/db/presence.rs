//! Writes of appliance state from MQTT: the ingest batch (latest heartbeat plus presence
//! transitions, one statement for the whole batch) and the offline sweep.
//!
//! What a heartbeat costs PostgreSQL (deploy/bench/ingest-batch.sh): its update is HOT (no
//! indexed column changes: migration 0015), and its jsonb metrics, whose parsing was about a
//! third of the statement's CPU, are sent only when due (at most every
//! `ingest.metrics_every_s` per appliance, see `ingest::batch::MetricsSchedule`);
//! `last_seen`, `heartbeat_seq` and `heartbeat_at` are written every time.
//!
//! The batch is one `UPDATE … FROM UNNEST(…)`: it reads the old presence in its SET
//! expressions instead of a separate `SELECT … FOR NO KEY UPDATE` of the rows first, which
//! locked each row with a WAL record of its own and fetched it twice (half the buffer hits,
//! a sixth less CPU per heartbeat in deploy/bench/ingest-batch.sh). Its rows are locked in
//! the order of the batch (ids sorted by the writer; the plan is a nested loop over the
//! array): should two replicas' batches still deadlock, one fails and is retried. The sweep
//! locks in id order and skips rows a batch holds (`SKIP LOCKED`) since a batch holding them
//! is about to prove them alive.

use hearth_protocol::{ApplianceId, BootId, Filesystem, Heartbeat, Memory, SessionId};
use serde::Serialize;
use sqlx::types::Json;
use sqlx::PgPool;
use time::OffsetDateTime;

use crate::model::Presence;

/// The latest heartbeat of one appliance within a batch.
#[derive(Debug, Clone)]
pub struct HeartbeatRow {
    pub agent_version: String,
    pub boot_id: BootId,
    pub seq: u64,
    /// The heartbeat's facts, when they are due to be written (`None`: keep the stored
    /// ones; see `ingest.metrics_every_s`).
    pub metrics: Option<Facts>,
    pub sent_at: OffsetDateTime,
}

/// A heartbeat's facts as `appliances.metrics` stores them. Plain values, so that holding
/// and copying one per heartbeat costs no allocation; the JSON is made only for those
/// written.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Facts {
    pub uptime_s: u64,
    pub load: [f64; 3],
    pub memory: Memory,
    pub root_fs: Filesystem,
    pub boot_id: BootId,
    pub seq: u64,
    pub utc_offset_s: Option<i32>,
}

impl From<&Heartbeat> for Facts {
    fn from(hb: &Heartbeat) -> Facts {
        Facts {
            uptime_s: hb.uptime_s,
            load: hb.load,
            memory: hb.memory,
            root_fs: hb.root_fs,
            boot_id: hb.boot_id,
            seq: hb.seq,
            utc_offset_s: hb.utc_offset_s,
        }
    }
}

/// The presence an appliance's messages in a batch add up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceChange {
    pub online: bool,
    /// The connection it belongs to (absent when inferred from a heartbeat).
    pub session: Option<SessionId>,
    /// `status_message` or `heartbeat`.
    pub reason: &'static str,
}

/// Everything one batch says about one appliance.
#[derive(Debug, Clone)]
pub struct ApplianceUpdate {
    pub id: ApplianceId,
    pub heartbeat: Option<HeartbeatRow>,
    pub presence: Option<PresenceChange>,
    /// A message in the batch proves the appliance was connected (refreshes `last_seen`).
    pub seen: bool,
}

/// What a batch write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Appliances found and updated (the rest are unknown ids: deleted, or never created).
    pub updated: u64,
    /// Presence transitions recorded.
    pub transitions: u64,
}

const WRITE_BATCH: &str = r#"
WITH ev AS (
    SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::int8[], $5::jsonb[], $6::timestamptz[],
                         $7::text[], $8::uuid[], $9::text[], $10::bool[])
        AS t(id, agent_version, boot_id, seq, metrics, sent_at, p_status, p_session, p_reason, seen)
),
upd AS (
    -- In SET, a.* is the row before the update (locked, and the newest committed version).
    -- A status applies if it is "online", or an "offline" to the connection that is current: a late last
    -- will of an older connection must not override a newer "online".
    UPDATE appliances a SET
        agent_version = COALESCE(ev.agent_version, a.agent_version),
        boot_id       = COALESCE(ev.boot_id, a.boot_id),
        heartbeat_seq = COALESCE(ev.seq, a.heartbeat_seq),
        metrics       = COALESCE(ev.metrics, a.metrics),
        metrics_at    = CASE WHEN ev.metrics IS NULL THEN a.metrics_at ELSE ev.sent_at END,
        heartbeat_at  = COALESCE(ev.sent_at, a.heartbeat_at),
        last_seen     = CASE WHEN ev.seen THEN now() ELSE a.last_seen END,
        status        = CASE WHEN COALESCE(ev.p_status = 'online'
             OR (ev.p_status = 'offline'
                 AND (a.session_id IS NULL OR ev.p_session IS NULL OR a.session_id = ev.p_session)), false) THEN ev.p_status ELSE a.status END,
        status_since  = CASE WHEN COALESCE(ev.p_status = 'online'
             OR (ev.p_status = 'offline'
                 AND (a.session_id IS NULL OR ev.p_session IS NULL OR a.session_id = ev.p_session)), false) AND ev.p_status IS DISTINCT FROM a.status
                             THEN now() ELSE a.status_since END,
        session_id    = CASE WHEN COALESCE(ev.p_status = 'online'
             OR (ev.p_status = 'offline'
                 AND (a.session_id IS NULL OR ev.p_session IS NULL OR a.session_id = ev.p_session)), false) AND ev.p_session IS NOT NULL
                             THEN ev.p_session ELSE a.session_id END
    FROM ev
    -- Revoked appliances and suspended tenants' appliances are refused: nothing of theirs is
    -- stored (the writer counts them with the unknown ids).
    WHERE a.id = ev.id AND a.revoked_at IS NULL
      AND EXISTS (SELECT 1 FROM tenants tn WHERE tn.id = a.tenant_id AND tn.status = 'active')
    -- A transition is what set status_since to this transaction's time (one presence
    -- statement per transaction, so nothing else did).
    RETURNING a.id, a.tenant_id, a.status AS new_status, ev.p_reason, a.status_since = now() AS changed
),
ins AS (
    INSERT INTO presence_events (tenant_id, appliance_id, status, reason)
    SELECT tenant_id, id, new_status, p_reason FROM upd
    WHERE changed AND new_status <> 'never_seen'
    RETURNING 1
)
SELECT (SELECT count(*) FROM upd), (SELECT count(*) FROM ins)
"#;

/// Writes a whole batch with one statement. `updates` must hold each appliance at most
/// once (the ingest coalesces per appliance).
pub async fn write_batch<'e>(
    db: impl sqlx::PgExecutor<'e>,
    updates: &[ApplianceUpdate],
) -> Result<BatchOutcome, sqlx::Error> {
    if updates.is_empty() {
        return Ok(BatchOutcome::default());
    }
    let n = updates.len();
    let mut ids = Vec::with_capacity(n);
    let mut versions = Vec::with_capacity(n);
    let mut boots = Vec::with_capacity(n);
    let mut seqs = Vec::with_capacity(n);
    let mut metrics = Vec::with_capacity(n);
    let mut sent_at = Vec::with_capacity(n);
    let mut p_status = Vec::with_capacity(n);
    let mut p_session = Vec::with_capacity(n);
    let mut p_reason = Vec::with_capacity(n);
    let mut seen = Vec::with_capacity(n);
    for u in updates {
        ids.push(*u.id.as_uuid());
        let hb = u.heartbeat.as_ref();
        versions.push(hb.map(|h| h.agent_version.clone()));
        boots.push(hb.map(|h| *h.boot_id.as_uuid()));
        seqs.push(hb.map(|h| i64::try_from(h.seq).unwrap_or(i64::MAX)));
        metrics.push(hb.and_then(|h| h.metrics.map(Json)));
        sent_at.push(hb.map(|h| h.sent_at));
        p_status.push(u.presence.map(|p| if p.online { Presence::Online } else { Presence::Offline }.as_str()));
        p_session.push(u.presence.and_then(|p| p.session).map(|s| *s.as_uuid()));
        p_reason.push(u.presence.map(|p| p.reason));
        seen.push(u.seen);
    }
    let (updated, transitions): (i64, i64) = sqlx::query_as(WRITE_BATCH)
        .bind(ids)
        .bind(versions)
        .bind(boots)
        .bind(seqs)
        .bind(metrics)
        .bind(sent_at)
        .bind(p_status)
        .bind(p_session)
        .bind(p_reason)
        .bind(seen)
        .fetch_one(db)
        .await?;
    Ok(BatchOutcome { updated: updated as u64, transitions: transitions as u64 })
}

/// Marks offline every online appliance not seen for `offline_after`; returns how many.
/// Idempotent and safe to run from every replica at once.
pub async fn sweep(pool: &PgPool, offline_after: std::time::Duration) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(
        r#"
WITH stale AS (
    SELECT id FROM appliances
    WHERE status = 'online' AND last_seen < now() - make_interval(secs => $1)
    ORDER BY id
    FOR UPDATE SKIP LOCKED
),
upd AS (
    UPDATE appliances a SET status = 'offline', status_since = now()
    FROM stale WHERE a.id = stale.id
    RETURNING a.id, a.tenant_id
)
INSERT INTO presence_events (tenant_id, appliance_id, status, reason)
SELECT tenant_id, id, 'offline', 'missed_heartbeats' FROM upd
"#,
    )
    .bind(offline_after.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}

/// One recorded presence transition.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct PresenceEvent {
    pub status: Presence,
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// An appliance's presence history, oldest first.
pub async fn history(
    conn: &mut sqlx::PgConnection,
    tenant: hearth_protocol::TenantId,
    id: ApplianceId,
    limit: i64,
) -> Result<Vec<PresenceEvent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT status, reason, at FROM (
             SELECT id, status, reason, at FROM presence_events
             WHERE tenant_id = $1 AND appliance_id = $2 ORDER BY id DESC LIMIT $3
         ) recent ORDER BY id",
    )
    .bind(tenant)
    .bind(id)
    .bind(limit)
    .fetch_all(conn)
    .await
}
