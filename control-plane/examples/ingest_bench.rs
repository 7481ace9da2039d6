//! Measures the heartbeat batch write: N appliances, heartbeats written in batches of B
//! with the same statement the ingest uses, R rounds. Besides the time it reports what does
//! not depend on the machine's speed or load: the CPU-seconds PostgreSQL's backend spent per
//! 1,000 heartbeats (utime + stime of the backend process, from /proc: the server must run
//! on this machine), the WAL bytes written per heartbeat, and the share of the updates that
//! were HOT (no index touched). Prints the figures and one JSON line.
//!
//! ```sh
//! deploy/bench/ingest-batch.sh --appliances 10000 --batch 500 --rounds 10 [--metrics-every K]
//! ```
//!
//! `--metrics-every K`: each appliance's heartbeats carry their metrics (jsonb) once every K
//! rounds, as the ingest writer sends them when K heartbeats come per
//! `ingest.metrics_every_s` (default 2: the shipped 30 s heartbeat and 60 s metrics; 1: every
//! heartbeat, the worst case; 60: one heartbeat a second). Builds from before the schedule
//! existed ignore it and send them every time.
//!
//! Needs DATABASE_URL pointing at a PostgreSQL superuser; creates and drops its own
//! database.

use std::time::Instant;

use hearth_control_plane::db::{self, presence};
use hearth_protocol::{ApplianceId, BootId, Filesystem, Memory, TenantId};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let appliances = arg("--appliances", 10_000);
    let batch = arg("--batch", 500).max(1);
    let rounds = arg("--rounds", 10).max(1);
    let metrics_every = arg("--metrics-every", 2).max(1);
    let admin =
        std::env::var("DATABASE_URL").map_err(|_| anyhow::anyhow!("set DATABASE_URL to a PostgreSQL superuser URL"))?;

    let name = format!("hearth_bench_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(&admin).await?;
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await?;
    let url = match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => anyhow::bail!("DATABASE_URL has no database part"),
    };
    let result = run(&url, appliances, batch, rounds, metrics_every).await;
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)")).execute(&mut conn).await?;
    result
}

async fn run(url: &str, appliances: usize, batch: usize, rounds: usize, metrics_every: usize) -> anyhow::Result<()> {
    let pool = PgPoolOptions::new().max_connections(2).connect(url).await?;
    db::migrate(&pool).await?;
    let tenant = TenantId::new();
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, 'bench')").bind(tenant).execute(&pool).await?;
    let ids: Vec<ApplianceId> = (0..appliances).map(|_| ApplianceId::new()).collect();
    let names: Vec<String> = (0..appliances).map(|i| format!("box-{i}")).collect();
    let uuids: Vec<uuid::Uuid> = ids.iter().map(|i| *i.as_uuid()).collect();
    sqlx::query("INSERT INTO appliances (id, tenant_id, name) SELECT id, $2, name FROM UNNEST($1::uuid[], $3::text[]) AS t(id, name)")
        .bind(&uuids)
        .bind(tenant)
        .bind(&names)
        .execute(&pool)
        .await?;

    // One connection for the heartbeat rounds, so one backend process does all the work.
    let mut writer = pool.acquire().await?;
    let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *writer).await?;
    let before = PgCost::read(&mut writer, backend).await?;

    let boot = BootId::new();
    let mut timings = Vec::new();
    let started = Instant::now();
    for round in 1..=rounds {
        for chunk in ids.chunks(batch) {
            let updates: Vec<_> = chunk
                .iter()
                .map(|id| presence::ApplianceUpdate {
                    id: *id,
                    heartbeat: Some(presence::HeartbeatRow {
                        agent_version: "0.1.0".into(),
                        boot_id: boot,
                        seq: round as u64,
                        metrics: (round % metrics_every == 1 % metrics_every).then_some(presence::Facts {
                            uptime_s: round as u64,
                            load: [0.1, 0.2, 0.3],
                            memory: Memory { total_bytes: 2 << 30, available_bytes: 1 << 30 },
                            root_fs: Filesystem { total_bytes: 32 << 30, available_bytes: 20 << 30 },
                            boot_id: boot,
                            seq: round as u64,
                            utc_offset_s: None,
                        }),
                        sent_at: time::OffsetDateTime::now_utc(),
                    }),
                    presence: Some(presence::PresenceChange { online: true, session: None, reason: "heartbeat" }),
                    seen: true,
                })
                .collect();
            let t = Instant::now();
            let out = presence::write_batch(&mut *writer, &updates).await?;
            timings.push(t.elapsed().as_secs_f64() * 1000.0);
            anyhow::ensure!(out.updated as usize == chunk.len(), "batch updated {} of {}", out.updated, chunk.len());
        }
    }
    let total = started.elapsed().as_secs_f64();
    let after = PgCost::read(&mut writer, backend).await?;
    drop(writer);
    timings.sort_by(f64::total_cmp);
    let rows = appliances * rounds;
    let cpu_per_1000 = (after.cpu_s - before.cpu_s) / rows as f64 * 1000.0;
    let wal_per_hb = (after.wal_bytes - before.wal_bytes) as f64 / rows as f64;
    let upd = after.updates - before.updates;
    let hot_share = if upd > 0 { (after.hot_updates - before.hot_updates) as f64 / upd as f64 } else { 0.0 };
    let (p50, p99, max) = (percentile(&timings, 0.5), percentile(&timings, 0.99), timings[timings.len() - 1]);
    println!(
        "appliances {appliances}, batch {batch}, rounds {rounds}, metrics every {metrics_every} rounds: {} batches",
        timings.len()
    );
    println!("batch write: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms");
    println!(
        "throughput: {:.0} heartbeats/s written ({rows} in {total:.2} s, one statement per batch)",
        rows as f64 / total
    );
    println!(
        "PostgreSQL: {cpu_per_1000:.4} CPU-s per 1,000 heartbeats (backend {backend}), {wal_per_hb:.0} WAL bytes per heartbeat, {:.1} % of {upd} updates HOT",
        hot_share * 100.0
    );
    println!(
        "{{\"bench\":\"ingest_batch\",\"appliances\":{appliances},\"batch\":{batch},\"rounds\":{rounds},\"metrics_every\":{metrics_every},\"batches\":{},\"p50_ms\":{p50:.3},\"p99_ms\":{p99:.3},\"max_ms\":{max:.3},\"heartbeats_per_s\":{:.0},\"pg_cpu_s_per_1000\":{cpu_per_1000:.5},\"wal_bytes_per_heartbeat\":{wal_per_hb:.0},\"hot_update_share\":{hot_share:.3},\"load1\":{}}}",
        timings.len(),
        rows as f64 / total,
        load1()
    );

    // Task events: one task per appliance (up to 1000), events stored with the ingest's
    // statement in batches of `batch` (each event once; a resend is a no-op).
    let tasks: Vec<(ApplianceId, hearth_protocol::TaskId)> =
        ids.iter().take(1000).map(|a| (*a, hearth_protocol::TaskId::new())).collect();
    for (a, t) in &tasks {
        sqlx::query("INSERT INTO tasks (id, tenant_id, appliance_id, action, params, status, deadline) VALUES ($1, $2, $3, 'dns.record.add', '{}', 'running', now() + interval '1 hour')")
            .bind(t).bind(tenant).bind(a).execute(&pool).await?;
    }
    let per_task = 20u64;
    let mut events = Vec::new();
    for seq in 1..=per_task {
        for (a, t) in &tasks {
            events.push((
                *a,
                hearth_protocol::TaskEvent {
                    v: hearth_protocol::ProtocolVersion,
                    task_id: *t,
                    seq,
                    kind: hearth_protocol::TaskEventKind::TaskOk,
                    task: Some("dns : add printer.home → 192.168.1.50".into()),
                    message: "ok".into(),
                    at: time::OffsetDateTime::now_utc(),
                },
            ));
        }
    }
    let started = Instant::now();
    let mut stored = 0;
    for chunk in events.chunks(batch) {
        let mut conn = pool.acquire().await?;
        stored += hearth_control_plane::db::tasks::store_events(&mut conn, chunk).await?;
    }
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(stored as usize == events.len(), "stored {stored} of {}", events.len());
    println!(
        "task events: {} stored in {secs:.2} s = {:.0} events/s (batches of {batch})",
        events.len(),
        events.len() as f64 / secs
    );
    println!(
        "{{\"bench\":\"task_events\",\"events\":{},\"batch\":{batch},\"events_per_s\":{:.0}}}",
        events.len(),
        events.len() as f64 / secs
    );
    Ok(())
}

/// What PostgreSQL spent so far: the backend's CPU, the WAL position, the appliances table's
/// update counters (flushed to the statistics first).
struct PgCost {
    cpu_s: f64,
    wal_bytes: i64,
    updates: i64,
    hot_updates: i64,
}

impl PgCost {
    async fn read(conn: &mut sqlx::PgConnection, backend: i32) -> anyhow::Result<PgCost> {
        sqlx::query("SELECT pg_stat_force_next_flush()").execute(&mut *conn).await?;
        let (wal_bytes,): (i64,) =
            sqlx::query_as("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8").fetch_one(&mut *conn).await?;
        let (updates, hot_updates): (i64, i64) =
            sqlx::query_as("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'appliances'")
                .fetch_one(&mut *conn)
                .await?;
        Ok(PgCost { cpu_s: process_cpu_s(backend)?, wal_bytes, updates, hot_updates })
    }
}

/// utime + stime of a process, in seconds (fields 14 and 15 of /proc/PID/stat, in clock ticks
/// of 1/100 s on Linux).
fn process_cpu_s(pid: i32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| {
        anyhow::anyhow!("reading /proc/{pid}/stat: {e} (PostgreSQL must run on this machine to measure its CPU)")
    })?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // After ")": field 3 is index 0, so utime (14) is 11 and stime (15) is 12.
    Ok((ticks(11) + ticks(12)) / 100.0)
}

fn load1() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "null".into())
}
