//! The fleet simulator at small scale against a real TLS broker and the control plane:
//! appliances provisioned in bulk come online with their own certificates, heartbeat,
//! answer a dispatched task, apply a configuration, renew their certificates all at once,
//! and leave `offline`.

use std::sync::Arc;
use std::time::Duration;

use hearth_agent::renewal::CertificateFacts;
use hearth_agent::sim::{run_fleet, FleetOptions, Stats};
use hearth_control_plane::provision::{self, BulkOptions, Tenants};
use hearth_protocol::bundle::Bundle;
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::support::*;

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect("count")
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn simulated_appliances_come_online_answer_tasks_and_apply_configuration(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;

    let opts = BulkOptions {
        tenants: Tenants::New(2),
        count: 5,
        prefix: "sim".into(),
        cert_lifetime: time::Duration::days(1),
    };
    let made = provision::bulk_create(&pool, pki.dir.path(), &opts).await.expect("bulk create");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bundle.json");
    provision::write_bundle(&path, &made).expect("write bundle");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).expect("bundle").permissions().mode() & 0o777, 0o600, "holds private keys");

    // The simulator reads what bulk-create wrote.
    let bundle = Bundle::load(&path).expect("bundle loads");
    assert_eq!((bundle.tenants.len(), bundle.appliances.len()), (2, 5));
    assert_eq!(count(&pool, "SELECT count(*) FROM appliances WHERE enrolled_at IS NOT NULL").await, 5);
    let tenant = bundle.tenants[0].id;
    let key = bundle.tenants[0].api_key.as_ref().expect("a new tenant's API key").expose().clone();
    let mine: Vec<_> = bundle.appliances.iter().filter(|a| a.tenant_id == tenant).map(|a| a.id).collect();
    assert_eq!(mine.len(), 3, "spread round-robin over the tenants");

    let stats = Arc::new(Stats::default());
    let stop = CancellationToken::new();
    let fleet_opts = FleetOptions {
        host: "127.0.0.1".into(),
        port: broker.port,
        heartbeat_interval: Duration::from_secs(1),
        jitter: 0.1,
        ramp_per_s: 50.0,
        keep_alive: Duration::from_secs(30),
        backoff_initial: Duration::from_millis(200),
        backoff_max: Duration::from_secs(1),
        backoff_recovery_max: hearth_agent::backoff::RECOVERY_MAX,
        connect_timeout: hearth_agent::backoff::CONNECT_TIMEOUT_INITIAL,
        connect_timeout_max: hearth_agent::backoff::CONNECT_TIMEOUT_MAX,
        renew_after: Some(Duration::from_secs(4)),
        task_failure_share: 0.0,
    };
    let fleet = {
        let (stats, stop, bundle) = (stats.clone(), stop.clone(), bundle.clone());
        tokio::spawn(async move { run_fleet(&bundle.ca_pem, &bundle.appliances, &fleet_opts, stats, stop).await })
    };

    // Online, with heartbeats stored, each under its own identity (the broker's ACL lets a
    // certificate publish only on its own appliance's topics).
    eventually(Duration::from_secs(20), "5 appliances online with a heartbeat stored", || async {
        let n = count(&pool, "SELECT count(*) FROM appliances WHERE status = 'online' AND heartbeat_seq >= 2").await;
        (n == 5).then_some(())
    })
    .await;
    let body = wait_status(&cp, &key, mine[0], "online").await;
    assert_eq!(body["agent_version"], hearth_agent::VERSION);

    // A dispatched task is answered without running anything.
    let r = cp
        .http
        .post(format!("{}/api/v1/appliances/{}/tasks", cp.url, mine[0]))
        .bearer_auth(&key)
        .json(&json!({"action": "dns.record.add", "params": {"hostname": "printer.home", "ip": "192.168.1.50"}}))
        .send()
        .await
        .expect("post task");
    assert_eq!(r.status().as_u16(), 202);
    let task: serde_json::Value = r.json().await.expect("json");
    let task_id = task["id"].as_str().expect("id").to_string();
    let done = eventually(Duration::from_secs(20), "task succeeded", || async {
        let (_, t) = cp.get(&format!("/api/v1/tasks/{task_id}"), &key).await;
        (t["status"] == "succeeded").then_some(t)
    })
    .await;
    assert_eq!(done["events"][0]["kind"], "received", "{done:#}");

    // Tenant defaults reach every appliance of the tenant, which report them applied.
    let r = cp
        .http
        .put(format!("{}/api/v1/config/defaults", cp.url))
        .bearer_auth(&key)
        .json(&json!({"document": {"dns": {"forwarders": ["9.9.9.9"]}}}))
        .send()
        .await
        .expect("put defaults");
    assert_eq!(r.status().as_u16(), 200);
    eventually(Duration::from_secs(20), "configuration applied by the tenant's 3 appliances", || async {
        let n = count(&pool, "SELECT count(*) FROM appliance_config WHERE applied_version = desired_version").await;
        (n == 3).then_some(())
    })
    .await;

    // Every appliance renews its certificate (the renewal storm's path, in small) and is
    // connected with the new one; the old serial is no longer the current one.
    let before: Vec<String> =
        bundle.appliances.iter().map(|a| CertificateFacts::read(&a.cert_pem).expect("certificate").serial).collect();
    eventually(Duration::from_secs(30), "5 appliances on renewed certificates", || async {
        (stats.snapshot().renewed == 5).then_some(())
    })
    .await;
    let current: Vec<String> =
        sqlx::query_scalar("SELECT cert_serial FROM appliances").fetch_all(&pool).await.expect("serials");
    assert!(current.iter().all(|s| !before.contains(s)), "{current:?} vs {before:?}");
    assert_eq!(count(&pool, "SELECT count(*) FROM certificate_issues WHERE renewal_id IS NOT NULL").await, 5);
    eventually(Duration::from_secs(20), "5 appliances online on their new certificates", || async {
        let n = count(&pool, "SELECT count(*) FROM appliances WHERE status = 'online'").await;
        (n == 5).then_some(())
    })
    .await;

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(15), fleet).await.expect("leaves in time").expect("join").expect("fleet");
    let s = stats.snapshot();
    assert_eq!((s.started, s.online, s.tasks_succeeded, s.configs_applied), (5, 0, 1, 3), "{s:?}");
    assert!(s.heartbeats_written >= 10, "{s:?}");
    assert_eq!((s.renewals_issued, s.renewals_refused, s.renewals_failed), (5, 0, 0), "{s:?}");
    assert!(s.renewal_switch_max_ms < 5_000, "a switch is one quick reconnect: {s:?}");
    eventually(Duration::from_secs(10), "all offline after leaving", || async {
        (count(&pool, "SELECT count(*) FROM appliances WHERE status = 'offline'").await == 5).then_some(())
    })
    .await;
}
