//! Ingest: the batch statement's presence rules, the sweeper, bad payloads through the
//! real broker, and that heartbeats are written in batches.

use std::time::Duration;

use hearth_control_plane::db::presence::{self, ApplianceUpdate, HeartbeatRow, PresenceChange};
use hearth_protocol::*;
use sqlx::PgPool;

use crate::support::*;

fn hb_row(seq: u64) -> HeartbeatRow {
    HeartbeatRow {
        agent_version: "9.9.9".into(),
        boot_id: BootId::new(),
        seq,
        metrics: Some(presence::Facts {
            uptime_s: seq,
            load: [0.5, 0.25, 0.0],
            memory: Memory { total_bytes: 1000, available_bytes: 400 },
            root_fs: Filesystem { total_bytes: 2000, available_bytes: 1000 },
            boot_id: BootId::new(),
            seq,
            utc_offset_s: None,
        }),
        sent_at: time::OffsetDateTime::now_utc(),
    }
}

pub(crate) fn heartbeat_payload(seq: u64) -> Vec<u8> {
    encode(&Heartbeat {
        v: ProtocolVersion,
        sent_at: time::OffsetDateTime::now_utc(),
        boot_id: BootId::new(),
        seq,
        agent_version: "test".into(),
        uptime_s: 5,
        load: [0.5, 0.25, 0.0],
        memory: Memory { total_bytes: 1000, available_bytes: 400 },
        root_fs: Filesystem { total_bytes: 2000, available_bytes: 1000 },
        utc_offset_s: None,
    })
    .expect("encode")
}

async fn state(pool: &PgPool, id: ApplianceId) -> (String, Option<uuid::Uuid>, Option<i64>) {
    sqlx::query_as("SELECT status, session_id, heartbeat_seq FROM appliances WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("row")
}

async fn events(pool: &PgPool, id: ApplianceId) -> Vec<(String, String)> {
    sqlx::query_as("SELECT status, reason FROM presence_events WHERE appliance_id = $1 ORDER BY id")
        .bind(id)
        .fetch_all(pool)
        .await
        .expect("events")
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn batch_statement_applies_presence_rules(pool: PgPool) {
    let (t, _) = tenant(&pool, "acme").await;
    let (a, _) = appliance(&pool, t, "a").await;
    let (b, _) = appliance(&pool, t, "b").await;
    let s1 = SessionId::new();
    let s2 = SessionId::new();
    let online = |s| Some(PresenceChange { online: true, session: Some(s), reason: "status_message" });
    let offline = |s| Some(PresenceChange { online: false, session: Some(s), reason: "status_message" });
    let upd = |id, heartbeat, presence, seen| ApplianceUpdate { id, heartbeat, presence, seen };

    // First contact: a heartbeat for a, an online status for b, and an id nobody knows.
    let out = presence::write_batch(
        &pool,
        &[
            upd(a, Some(hb_row(1)), Some(PresenceChange { online: true, session: None, reason: "heartbeat" }), true),
            upd(b, None, online(s1), true),
            upd(ApplianceId::new(), Some(hb_row(1)), None, true),
        ],
    )
    .await
    .expect("batch");
    assert_eq!((out.updated, out.transitions), (2, 2));
    assert_eq!(state(&pool, a).await, ("online".into(), None, Some(1)));
    assert_eq!(state(&pool, b).await.0, "online");

    // Staying online records no new transition.
    let out = presence::write_batch(&pool, &[upd(b, Some(hb_row(2)), online(s1), true)]).await.expect("batch");
    assert_eq!(out.transitions, 0);

    // A heartbeat without metrics (not due) keeps the stored ones and their time; the
    // heartbeat itself (sequence, time, last_seen) is written.
    type Facts = (Option<serde_json::Value>, Option<time::OffsetDateTime>, Option<time::OffsetDateTime>, Option<i64>);
    let facts = |id| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, Facts>(
                "SELECT metrics, metrics_at, heartbeat_at, heartbeat_seq FROM appliances WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .expect("row")
        }
    };
    let (metrics, metrics_at, heartbeat_at, _) = facts(b).await;
    let stored = metrics.as_ref().expect("metrics stored");
    assert_eq!((stored["uptime_s"].as_u64(), stored["seq"].as_u64()), (Some(2), Some(2)));
    assert_eq!(stored["memory"]["available_bytes"], 400);
    assert_eq!(metrics_at, heartbeat_at);
    let at =
        time::OffsetDateTime::from_unix_timestamp(time::OffsetDateTime::now_utc().unix_timestamp() + 5).expect("time");
    let later = HeartbeatRow { metrics: None, sent_at: at, ..hb_row(3) };
    presence::write_batch(&pool, &[upd(b, Some(later.clone()), None, true)]).await.expect("batch");
    let (metrics_now, metrics_at_now, heartbeat_at_now, seq) = facts(b).await;
    assert_eq!((metrics_now, metrics_at_now), (metrics, metrics_at), "metrics kept");
    assert_eq!((heartbeat_at_now, seq), (Some(later.sent_at), Some(3)), "the heartbeat written");

    // b reconnected (session s2); the late last will of s1 must not take it offline.
    presence::write_batch(&pool, &[upd(b, None, online(s2), true)]).await.expect("batch");
    presence::write_batch(&pool, &[upd(b, None, offline(s1), false)]).await.expect("batch");
    assert_eq!(state(&pool, b).await.0, "online");
    // The current session's offline does.
    let out = presence::write_batch(&pool, &[upd(b, None, offline(s2), false)]).await.expect("batch");
    assert_eq!(out.transitions, 1);
    assert_eq!(state(&pool, b).await.0, "offline");
    assert_eq!(
        events(&pool, b).await,
        [("online".to_string(), "status_message".to_string()), ("offline".into(), "status_message".into())]
    );
    assert_eq!(events(&pool, a).await, [("online".to_string(), "heartbeat".to_string())]);

    // The sweeper: a's last_seen is old → offline once, idempotently.
    sqlx::query("UPDATE appliances SET last_seen = now() - interval '1 hour' WHERE id = $1")
        .bind(a)
        .execute(&pool)
        .await
        .expect("age");
    assert_eq!(presence::sweep(&pool, Duration::from_secs(60)).await.expect("sweep"), 1);
    assert_eq!(presence::sweep(&pool, Duration::from_secs(60)).await.expect("sweep"), 0);
    assert_eq!(state(&pool, a).await.0, "offline");
    assert_eq!(events(&pool, a).await.last().map(|e| e.1.as_str()), Some("missed_heartbeats"));
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn replicas_sweeping_at_once_record_each_transition_once(pool: PgPool) {
    let (t, _) = tenant(&pool, "acme").await;
    let mut ids = Vec::new();
    for i in 0..50 {
        ids.push(appliance(&pool, t, &format!("box-{i}")).await.0);
    }
    let updates: Vec<_> = ids
        .iter()
        .map(|id| ApplianceUpdate {
            id: *id,
            heartbeat: Some(hb_row(1)),
            presence: Some(PresenceChange { online: true, session: None, reason: "heartbeat" }),
            seen: true,
        })
        .collect();
    presence::write_batch(&pool, &updates).await.expect("batch");
    sqlx::query("UPDATE appliances SET last_seen = now() - interval '1 hour'").execute(&pool).await.expect("age");

    // Four "replicas" sweep concurrently, each on its own connection.
    let sweeps: Vec<_> = (0..4)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { presence::sweep(&pool, Duration::from_secs(60)).await })
        })
        .collect();
    let mut total = 0;
    for s in sweeps {
        total += s.await.expect("join").expect("sweep");
    }
    assert_eq!(total, 50, "every appliance swept exactly once across replicas");
    let offline: i64 = sqlx::query_scalar("SELECT count(*) FROM presence_events WHERE status = 'offline'")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(offline, 50);
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn bad_payloads_are_counted_and_dropped_and_ingest_goes_on(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let (t, key) = tenant(&pool, "acme").await;
    let (id, _) = appliance(&pool, t, "box").await;
    eventually(Duration::from_secs(10), "control plane connected", || async {
        (metric(&cp.metrics().await, "hearth_mqtt_connected") == Some(1.0)).then_some(())
    })
    .await;

    let (cert, key_pem) = pki.appliance_cert(id);
    let probe = mqtt::connect(mqtt::options(
        &broker,
        &id.to_string(),
        &pki.read("ca.crt"),
        Some((cert.as_bytes(), key_pem.as_bytes())),
    ))
    .await
    .expect("appliance connects");
    let hb_topic = Topic::new(id, UpChannel::Heartbeat).to_string();
    probe.publish(&hb_topic, b"{not json".to_vec()).await;
    probe.publish(&hb_topic, vec![b' '; 5000]).await;
    probe.publish(&hb_topic, br#"{"v":2}"#.to_vec()).await;
    probe.publish(&format!("hearth/v1/{id}/up/nonsense"), b"{}".to_vec()).await;
    probe.publish(&hb_topic, heartbeat_payload(1)).await;

    let text = eventually(Duration::from_secs(10), "decode errors counted", || async {
        let text = cp.metrics().await;
        // The bad topic is published after the malformed payloads: wait for both.
        (metric(&text, r#"hearth_mqtt_decode_errors_total{kind="heartbeat",reason="malformed"}"#) == Some(2.0)
            && metric(&text, r#"hearth_mqtt_decode_errors_total{kind="topic",reason="bad_topic"}"#).is_some())
        .then_some(text)
    })
    .await;
    assert_eq!(metric(&text, r#"hearth_mqtt_decode_errors_total{kind="heartbeat",reason="too_large"}"#), Some(1.0));
    assert_eq!(metric(&text, r#"hearth_mqtt_decode_errors_total{kind="topic",reason="bad_topic"}"#), Some(1.0));

    // The valid heartbeat after the garbage still lands.
    let body = eventually(Duration::from_secs(10), "heartbeat visible", || async {
        let (_, body) = cp.get(&format!("/api/v1/appliances/{id}"), &key).await;
        (body["status"] == "online").then_some(body)
    })
    .await;
    assert_eq!(body["metrics"]["memory"]["available_bytes"], 400);
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn heartbeats_are_written_in_batches(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let mut config = test_config(&pki, &broker);
    config.ingest.batch_wait_ms = 200;
    let cp = ControlPlane::start(pool.clone(), config, &pki).await;
    let (t, _) = tenant(&pool, "acme").await;
    eventually(Duration::from_secs(10), "control plane connected", || async {
        (metric(&cp.metrics().await, "hearth_mqtt_connected") == Some(1.0)).then_some(())
    })
    .await;

    const APPLIANCES: u64 = 5;
    const EACH: u64 = 40;
    let mut probes = Vec::new();
    for i in 0..APPLIANCES {
        let (id, _) = appliance(&pool, t, &format!("box-{i}")).await;
        let (cert, key) = pki.appliance_cert(id);
        let probe = mqtt::connect(mqtt::options(
            &broker,
            &id.to_string(),
            &pki.read("ca.crt"),
            Some((cert.as_bytes(), key.as_bytes())),
        ))
        .await
        .expect("connect");
        probes.push((id, probe));
    }
    for seq in 1..=EACH {
        for (id, probe) in &probes {
            probe.publish(&Topic::new(*id, UpChannel::Heartbeat).to_string(), heartbeat_payload(seq)).await;
        }
    }
    let text = eventually(Duration::from_secs(15), "every heartbeat ingested", || async {
        let text = cp.metrics().await;
        (metric(&text, "hearth_heartbeats_ingested_total") == Some((APPLIANCES * EACH) as f64)).then_some(text)
    })
    .await;
    let batches = metric(&text, "hearth_ingest_batch_seconds_count").expect("batch count");
    assert!(batches < (APPLIANCES * EACH) as f64 / 4.0, "{batches} batches for {} heartbeats", APPLIANCES * EACH);
    for (id, _) in &probes {
        assert_eq!(state(&pool, *id).await.2, Some(EACH as i64), "latest heartbeat wins");
    }
}

fn task_event(task: TaskId, seq: u64) -> Vec<u8> {
    encode(&TaskEvent {
        v: ProtocolVersion,
        task_id: task,
        seq,
        kind: TaskEventKind::TaskOk,
        task: Some(format!("step {seq}")),
        message: format!("line {seq}"),
        at: time::OffsetDateTime::now_utc(),
    })
    .expect("encode")
}

/// Past the database's wall (here the writer is held up by a lock on the appliances table,
/// as a saturated PostgreSQL would): heartbeats coalesce to the newest of each appliance
/// instead of queueing, the ones replaced are counted as superseded (not lost), task events
/// are never shed, and once the database answers the newest heartbeat of every appliance is
/// stored at once, in a batch or two rather than a backlog worked through; no appliance is
/// marked offline for heartbeats that sat waiting.
#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn overload_coalesces_heartbeats_to_the_newest_and_never_sheds_task_events(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let mut config = test_config(&pki, &broker);
    config.presence.offline_after_s = 4.0;
    let cp = ControlPlane::start(pool.clone(), config, &pki).await;
    let (t, _) = tenant(&pool, "acme").await;
    eventually(Duration::from_secs(10), "control plane connected", || async {
        (metric(&cp.metrics().await, "hearth_mqtt_connected") == Some(1.0)).then_some(())
    })
    .await;

    const APPLIANCES: u64 = 5;
    const EACH: u64 = 200;
    // Few enough kept messages to stay within the broker's 20 unacknowledged QoS 1 messages
    // in flight to the control plane while the database is held.
    const EVENT_EVERY: u64 = 100;
    let mut probes = Vec::new();
    for i in 0..APPLIANCES {
        let (id, _) = appliance(&pool, t, &format!("box-{i}")).await;
        let task = TaskId::new();
        sqlx::query("INSERT INTO tasks (id, tenant_id, appliance_id, action, params, status, deadline) VALUES ($1, $2, $3, 'appliance.reboot', '{}', 'dispatched', now() + interval '5 minutes')")
            .bind(task).bind(t).bind(id).execute(&pool).await.expect("task");
        let (cert, key) = pki.appliance_cert(id);
        let probe = mqtt::connect(mqtt::options(
            &broker,
            &id.to_string(),
            &pki.read("ca.crt"),
            Some((cert.as_bytes(), key.as_bytes())),
        ))
        .await
        .expect("connect");
        probe.publish(&Topic::new(id, UpChannel::Heartbeat).to_string(), heartbeat_payload(1)).await;
        probes.push((id, task, probe));
    }
    for (id, _, _) in &probes {
        eventually(Duration::from_secs(10), "first heartbeat stored", || async {
            (state(&pool, *id).await == ("online".into(), None, Some(1))).then_some(())
        })
        .await;
    }
    let batches_before = metric(&cp.metrics().await, "hearth_ingest_batch_seconds_count").unwrap_or(0.0);

    // The database stops taking updates of appliances (reads still work).
    let mut stall = pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE appliances IN SHARE MODE").execute(&mut *stall).await.expect("lock");
    for seq in 2..=EACH + 1 {
        for (id, task, probe) in &probes {
            probe.publish(&Topic::new(*id, UpChannel::Heartbeat).to_string(), heartbeat_payload(seq)).await;
            if seq % EVENT_EVERY == 0 {
                probe
                    .publish(
                        &Topic::new(*id, UpChannel::TaskEvent(*task)).to_string(),
                        task_event(*task, seq / EVENT_EVERY),
                    )
                    .await;
            }
        }
    }
    // Every message reaches the control plane while the database is held (the broker hands
    // over QoS 1 messages only while they are acknowledged: the superseded heartbeats are,
    // at once, so nothing waits for the commit but one heartbeat per appliance).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (id, _, _) in &probes {
        assert_eq!(state(&pool, *id).await.2, Some(1), "nothing written while the database is held");
    }
    stall.rollback().await.expect("release");
    let released = std::time::Instant::now();
    for (id, _, _) in &probes {
        eventually(Duration::from_secs(10), "the newest heartbeat stored", || async {
            (state(&pool, *id).await.2 == Some(EACH as i64 + 1)).then_some(())
        })
        .await;
    }
    let delay = released.elapsed();
    assert!(delay < Duration::from_secs(2), "the newest heartbeats took {delay:?} after the database came back");

    let total = APPLIANCES * (EACH + 1);
    let text = eventually(Duration::from_secs(10), "every heartbeat accounted for", || async {
        let text = cp.metrics().await;
        (metric(&text, "hearth_heartbeats_ingested_total") == Some(total as f64)).then_some(text)
    })
    .await;
    let superseded = metric(&text, "hearth_heartbeats_superseded_total").unwrap_or(0.0) as u64;
    // At most the batch held up by the lock and the one after it wrote a heartbeat of each.
    assert!(superseded >= APPLIANCES * (EACH - 2), "{superseded} of {total} superseded");
    assert!(superseded < total, "the newest ones were written");
    assert_eq!(metric(&text, "hearth_ingest_messages_dropped_total").unwrap_or(0.0), 0.0);
    let batches = metric(&text, "hearth_ingest_batch_seconds_count").unwrap_or(0.0) - batches_before;
    assert!(batches <= 4.0, "{batches} batches after the stall: a backlog was worked through");

    // Task events are never shed.
    for (id, task, _) in &probes {
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM task_events WHERE task_id = $1")
            .bind(task)
            .fetch_one(&pool)
            .await
            .expect("count");
        assert_eq!(stored as u64, EACH / EVENT_EVERY, "every task event of {id} stored");
    }
    // And presence stayed right: online, never swept for missed heartbeats.
    for (id, _, _) in &probes {
        assert_eq!(state(&pool, *id).await.0, "online");
        assert_eq!(events(&pool, *id).await, vec![("online".to_string(), "heartbeat".to_string())]);
    }
}

/// The control plane warns at start-up when autovacuum, which the heartbeat-updated
/// appliances table depends on, is off for the server or for that table.
#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn autovacuum_turned_off_is_warned_about(pool: PgPool) {
    let server_on: bool =
        sqlx::query_scalar("SELECT current_setting('autovacuum')::bool").fetch_one(&pool).await.unwrap();
    let warnings = hearth_control_plane::db::server_warnings(&pool).await.unwrap();
    assert_eq!(warnings.len(), usize::from(!server_on), "{warnings:?}");
    assert_eq!(warnings.iter().any(|w| w.contains("`autovacuum = off`")), !server_on, "{warnings:?}");

    sqlx::query("ALTER TABLE appliances SET (autovacuum_enabled = false)").execute(&pool).await.unwrap();
    let warnings = hearth_control_plane::db::server_warnings(&pool).await.unwrap();
    assert_eq!(warnings.len(), 1 + usize::from(!server_on), "{warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("RESET (autovacuum_enabled)")), "{warnings:?}");

    // Spelled as PostgreSQL also accepts it.
    sqlx::query("ALTER TABLE appliances SET (autovacuum_enabled = off)").execute(&pool).await.unwrap();
    let warnings = hearth_control_plane::db::server_warnings(&pool).await.unwrap();
    assert!(warnings.iter().any(|w| w.contains("RESET (autovacuum_enabled)")), "{warnings:?}");

    sqlx::query("ALTER TABLE appliances SET (autovacuum_enabled = on)").execute(&pool).await.unwrap();
    let warnings = hearth_control_plane::db::server_warnings(&pool).await.unwrap();
    assert!(!warnings.iter().any(|w| w.contains("autovacuum_enabled")), "{warnings:?}");

    sqlx::query("ALTER TABLE appliances RESET (autovacuum_enabled)").execute(&pool).await.unwrap();
    let warnings = hearth_control_plane::db::server_warnings(&pool).await.unwrap();
    assert!(!warnings.iter().any(|w| w.contains("autovacuum_enabled")), "{warnings:?}");
}
