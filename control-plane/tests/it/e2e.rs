//! End to end with the real agent: enroll over HTTPS → connect over mutual TLS →
//! heartbeats visible through the tenant API → offline by last will, by clean shutdown,
//! and by the sweeper when heartbeats stop.

use std::time::Duration;

use hearth_control_plane::pki::files;
use hearth_protocol::{Topic, UpChannel};
use serde_json::Value;
use sqlx::PgPool;

use crate::support::*;

fn last_reason(body: &Value) -> Option<&str> {
    body["presence_history"].as_array()?.last()?["reason"].as_str()
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn heartbeat_to_api_then_offline_by_last_will(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let (tenant_id, key) = tenant(&pool, "acme").await;
    let a = Appliance::enroll(&cp, &pki, &pool, tenant_id, "living-room").await;
    let id = a.id;
    let (_stop, agent) = a.start();

    let body = eventually(Duration::from_secs(15), "online with metrics", || async {
        let (_, body) = cp.get(&format!("/api/v1/appliances/{id}"), &key).await;
        (body["status"] == "online" && body["metrics"]["memory"]["total_bytes"].as_u64() > Some(0)).then_some(body)
    })
    .await;
    assert_eq!(body["agent_version"], hearth_agent::VERSION);
    assert!(body["metrics"]["uptime_s"].as_u64().is_some(), "{body}");
    assert!(body["metrics"]["root_fs"]["total_bytes"].as_u64() > Some(0), "{body}");
    assert!(body["last_seen"].is_string());
    let (_, list) = cp.get("/api/v1/appliances", &key).await;
    assert_eq!(list["appliances"][0]["status"], "online");

    // Heartbeats keep coming: the sequence number advances.
    let seq = body["metrics"]["seq"].as_u64().expect("seq");
    eventually(Duration::from_secs(10), "a later heartbeat", || async {
        let (_, b) = cp.get(&format!("/api/v1/appliances/{id}"), &key).await;
        (b["metrics"]["seq"].as_u64() > Some(seq)).then_some(())
    })
    .await;

    // Kill the agent without a goodbye: the broker publishes its last will.
    agent.abort();
    let _ = agent.await;
    let body = wait_status(&cp, &key, id, "offline").await;
    assert_eq!(last_reason(&body), Some("status_message"), "{body}");
    let text = cp.metrics().await;
    assert_eq!(metric(&text, "hearth_presence_sweeper_offline_total"), Some(0.0), "the last will, not the sweeper");
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn clean_shutdown_reports_offline_and_reconnect_comes_back(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let (tenant_id, key) = tenant(&pool, "acme").await;
    let a = Appliance::enroll(&cp, &pki, &pool, tenant_id, "study").await;
    let id = a.id;
    let (stop, agent) = a.start();
    wait_status(&cp, &key, id, "online").await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), agent)
        .await
        .expect("agent stops in time")
        .expect("join")
        .expect("clean exit");
    let body = wait_status(&cp, &key, id, "offline").await;
    assert_eq!(last_reason(&body), Some("status_message"));

    let (_stop, _agent) = a.start();
    let body = wait_status(&cp, &key, id, "online").await;
    let history: Vec<&str> = body["presence_history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|e| e["status"].as_str().expect("status"))
        .collect();
    assert_eq!(history, ["online", "offline", "online"]);
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn missed_heartbeats_mark_offline_by_the_sweeper(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let (tenant_id, key) = tenant(&pool, "acme").await;
    let (id, _) = appliance(&pool, tenant_id, "garage").await;

    // An appliance that heartbeats once, then stays connected and silent (no last will
    // will ever come): only the sweeper can notice.
    let (cert, key_pem) = pki.appliance_cert(id);
    let probe = mqtt::connect(mqtt::options(
        &broker,
        &id.to_string(),
        &pki.read(files::CA_CERT),
        Some((cert.as_bytes(), key_pem.as_bytes())),
    ))
    .await
    .expect("connect");
    let hb = hearth_protocol::Heartbeat {
        v: hearth_protocol::ProtocolVersion,
        sent_at: time::OffsetDateTime::now_utc(),
        boot_id: hearth_protocol::BootId::new(),
        seq: 1,
        agent_version: "silent".into(),
        uptime_s: 1,
        load: [0.0; 3],
        memory: hearth_protocol::Memory { total_bytes: 1, available_bytes: 1 },
        root_fs: hearth_protocol::Filesystem { total_bytes: 1, available_bytes: 1 },
        utc_offset_s: None,
    };
    probe
        .publish(&Topic::new(id, UpChannel::Heartbeat).to_string(), hearth_protocol::encode(&hb).expect("encode"))
        .await;
    wait_status(&cp, &key, id, "online").await;

    let body = wait_status(&cp, &key, id, "offline").await;
    assert_eq!(last_reason(&body), Some("missed_heartbeats"), "{body}");
    let text = cp.metrics().await;
    assert_eq!(metric(&text, "hearth_presence_sweeper_offline_total"), Some(1.0));
    drop(probe);
}
