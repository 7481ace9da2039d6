//! Tasks and configuration end to end with the real agent running real `ansible-playbook`
//! against a sandbox root: the catalog's playbooks change files under the sandbox, never
//! the host.

use std::path::Path;
use std::time::Duration;

use hearth_protocol::*;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::support::mqtt;
use crate::support::*;

async fn create_task(cp: &ControlPlane, key: &str, id: ApplianceId, body: Value) -> String {
    let r = cp
        .http
        .post(format!("{}/api/v1/appliances/{id}/tasks", cp.url))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 202);
    let v: Value = r.json().await.expect("json");
    v["id"].as_str().expect("id").to_string()
}

async fn finished(cp: &ControlPlane, key: &str, task: &str, timeout: Duration) -> Value {
    eventually(timeout, "task finished", || async {
        let (_, t) = cp.get(&format!("/api/v1/tasks/{task}"), key).await;
        matches!(t["status"].as_str(), Some("succeeded" | "failed" | "rejected" | "timed_out")).then_some(t)
    })
    .await
}

fn seqs(task: &Value) -> Vec<i64> {
    task["events"].as_array().expect("events").iter().map(|e| e["seq"].as_i64().expect("seq")).collect()
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn a_task_queued_while_offline_runs_with_real_ansible_after_connect(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let (t, key) = tenant(&pool, "acme").await;
    let a = Appliance::enroll(&cp, &pki, &pool, t, "box").await;

    // Created while the appliance is offline: it waits.
    let task = create_task(
        &cp,
        &key,
        a.id,
        json!({"action": "dns.record.add", "params": {"hostname": "printer.home", "ip": "192.168.1.50"}}),
    )
    .await;
    let (_stop, _agent) = a.start();
    let done = finished(&cp, &key, &task, Duration::from_secs(90)).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert!(a.file("etc/dnsmasq.d/hearth-records.conf").contains("host-record=printer.home,192.168.1.50"));
    let kinds: Vec<&str> =
        done["events"].as_array().expect("events").iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"received"), "{kinds:?}");
    assert!(kinds.contains(&"task_changed"), "{kinds:?}");
    let s = seqs(&done);
    assert_eq!(s, (1..=s.len() as i64).collect::<Vec<_>>(), "events 1..n, none lost, none twice");
    assert!(done["stats"]["changed"].as_u64() >= Some(1), "{done:#}");
    assert!(
        !Path::new("/etc/dnsmasq.d/hearth-records.conf").exists()
            || !std::fs::read_to_string("/etc/dnsmasq.d/hearth-records.conf")
                .unwrap_or_default()
                .contains("printer.home"),
        "the host is untouched"
    );

    // Every catalog action runs in the sandbox (the demo's promise), with its example
    // parameters, in an order where each remove has something to remove.
    let order = [
        "users.add",
        "users.reset_password",
        "users.remove",
        "shares.add",
        "shares.remove",
        "dns.record.add",
        "dns.record.remove",
        "dns.forwarders.set",
        "mail.alias.add",
        "mail.alias.remove",
        "pki.cert.issue",
        "service.restart",
        "appliance.reboot",
    ];
    let catalog = hearth_protocol::catalog::Catalog::embedded();
    let mut all: Vec<&str> = catalog.actions.iter().map(|a| a.id.as_str()).collect();
    all.sort();
    let mut ordered = order.to_vec();
    ordered.sort();
    assert_eq!(all, ordered, "every catalog action is exercised");
    for id in order {
        let action = catalog.action(id).expect("action");
        let task = create_task(&cp, &key, a.id, json!({"action": id, "params": action.example_params})).await;
        let done = finished(&cp, &key, &task, Duration::from_secs(90)).await;
        assert_eq!(done["status"], "succeeded", "{id}: {done:#}");
    }
    assert!(a.file("var/lib/hearth/reboot-requested").len() < 4096, "the reboot stayed in the sandbox");
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn the_agent_refuses_what_its_catalog_does_not_allow_and_runs_a_duplicate_once(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let (t, key) = tenant(&pool, "acme").await;
    let a = Appliance::enroll(&cp, &pki, &pool, t, "box").await;
    let (_stop, _agent) = a.start();
    wait_status(&cp, &key, a.id, "online").await;

    // A compromised control plane sends what the API would never accept, straight to the
    // appliance's topic with the control plane's own identity.
    let cp_probe =
        mqtt::connect(mqtt::control_plane_options(&pki, &broker, "rogue-control-plane")).await.expect("connect");
    let send = |action: &str, params: Value| {
        let task_id = TaskId::new();
        let msg = TaskDispatch {
            v: ProtocolVersion,
            task_id,
            action: action.into(),
            params: params.as_object().cloned().unwrap_or_default(),
            deadline: time::OffsetDateTime::now_utc() + time::Duration::minutes(5),
        };
        (task_id, encode(&msg).expect("encode"))
    };
    let topic = Topic::new(a.id, DownChannel::Task).to_string();
    for (action, params) in
        [("shell.exec", json!({"cmd": "id"})), ("users.add", json!({"username": "mallory", "groups": ["sudo"]}))]
    {
        let (task_id, bytes) = send(action, params.clone());
        sqlx::query("INSERT INTO tasks (id, tenant_id, appliance_id, action, params, status, deadline) VALUES ($1, $2, $3, $4, $5, 'dispatched', now() + interval '5 minutes')")
            .bind(task_id).bind(t).bind(a.id).bind(action).bind(&params).execute(&pool).await.expect("row");
        cp_probe.publish(&topic, bytes).await;
        let done = finished(&cp, &key, &task_id.to_string(), Duration::from_secs(30)).await;
        assert_eq!(done["status"], "rejected", "{action}: {done:#}");
        assert!(done["message"].as_str().is_some_and(|m| !m.is_empty()), "the reason is given");
    }
    assert!(!a.file("etc/passwd").contains("mallory"));

    // The same dispatch delivered twice runs once (service.restart appends a line per run).
    let (task_id, bytes) = send("service.restart", json!({"service": "dns"}));
    sqlx::query("INSERT INTO tasks (id, tenant_id, appliance_id, action, params, status, deadline) VALUES ($1, $2, $3, 'service.restart', '{\"service\":\"dns\"}', 'dispatched', now() + interval '5 minutes')")
        .bind(task_id).bind(t).bind(a.id).execute(&pool).await.expect("row");
    cp_probe.publish(&topic, bytes.clone()).await;
    cp_probe.publish(&topic, bytes).await;
    let done = finished(&cp, &key, &task_id.to_string(), Duration::from_secs(60)).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(a.file("var/lib/hearth/restarts.log").lines().count(), 1, "ran once");
    let s = seqs(&cp.get(&format!("/api/v1/tasks/{task_id}"), &key).await.1);
    assert_eq!(s, (1..=s.len() as i64).collect::<Vec<_>>());
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn events_survive_a_broker_restart_mid_task(pool: PgPool) {
    let pki = Pki::new();
    let mut broker = Broker::start_with(&pki, true);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let (t, key) = tenant(&pool, "acme").await;
    let a = Appliance::enroll(&cp, &pki, &pool, t, "box").await;
    let (_stop, _agent) = a.start();
    wait_status(&cp, &key, a.id, "online").await;

    let task = create_task(
        &cp,
        &key,
        a.id,
        json!({"action": "pki.cert.issue", "params": {"common_name": "nas.home", "alt_names": ["files.home"]}}),
    )
    .await;
    eventually(Duration::from_secs(30), "task running", || async {
        let (_, t) = cp.get(&format!("/api/v1/tasks/{task}"), &key).await;
        (t["status"] == "running").then_some(())
    })
    .await;
    broker.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.start_again();

    let done = finished(&cp, &key, &task, Duration::from_secs(90)).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    // Events resent after the restart may arrive after the result: wait for the whole log.
    let done = eventually(Duration::from_secs(60), "complete log", || async {
        let (_, t) = cp.get(&format!("/api/v1/tasks/{task}"), &key).await;
        (t["log_complete"] == true).then_some(t)
    })
    .await;
    let s = seqs(&done);
    assert!(s.len() >= 4, "{s:?}");
    assert_eq!(done["events_expected"].as_i64(), Some(s.len() as i64));
    assert_eq!(s, (1..=s.len() as i64).collect::<Vec<_>>(), "none lost, none duplicated");
    assert!(a.file("etc/hearth/pki/certs/nas.home.crt").contains("BEGIN CERTIFICATE"));
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn a_configuration_change_converges_and_drift_clears(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let (t, key) = tenant(&pool, "acme").await;
    let a = Appliance::enroll(&cp, &pki, &pool, t, "box").await;
    let (_stop, _agent) = a.start();
    let path = format!("/api/v1/appliances/{}/config", a.id);
    let doc = json!({"document": {"agent": {"heartbeat_interval_s": 2},
                                  "dns": {"records": [{"hostname": "nas.home", "ip": "192.168.1.10"}], "forwarders": ["9.9.9.9"]},
                                  "shares": [{"name": "photos", "users": ["alice"]}],
                                  "users": [{"username": "alice", "full_name": "Alice"}],
                                  "mail": {"aliases": [{"alias": "family", "destination": "alice"}]}}});
    let r = cp.http.put(format!("{}{path}", cp.url)).bearer_auth(&key).json(&doc).send().await.expect("put");
    assert_eq!(r.status().as_u16(), 200);
    let view: Value = r.json().await.expect("json");
    let version = view["desired_version"].as_i64().expect("version");
    assert_eq!(view["drift"], true, "drift until the appliance applies it");

    let view = eventually(Duration::from_secs(120), "configuration applied", || async {
        let (_, v) = cp.get(&path, &key).await;
        (v["applied_version"].as_i64() == Some(version)).then_some(v)
    })
    .await;
    assert_eq!(view["drift"], false, "{view:#}");
    assert_eq!(view["last_apply"]["outcome"], "succeeded");
    assert!(a.file("etc/dnsmasq.d/hearth-records.conf").contains("host-record=nas.home,192.168.1.10"));
    assert!(a.file("etc/dnsmasq.d/hearth-forwarders.conf").contains("server=9.9.9.9"));
    assert!(a.file("etc/passwd").contains("alice:"));
    assert!(a.file("etc/aliases").contains("family"));
}
