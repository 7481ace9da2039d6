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
        metrics: serde_json::json!({ "uptime_s": seq }),
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
