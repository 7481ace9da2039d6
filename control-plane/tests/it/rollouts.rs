//! Fleet rollouts against the real stack: PostgreSQL, a TLS broker, the control plane (one
//! or two replicas) and simulated appliances that answer tasks (some told to fail) and
//! apply configuration. Waves open only past their gates, an abort stops new executions,
//! pause/resume/cancel hold, an offline appliance runs its execution when it returns, a
//! restart continues where it stopped, two replicas send each execution once, and tenants
//! see and target only their own.

use std::sync::Arc;
use std::time::Duration;

use hearth_agent::sim::{run_fleet, FleetOptions, Stats};
use hearth_control_plane::provision::{self, BulkOptions, Tenants};
use hearth_protocol::bundle::{Bundle, BundleAppliance};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::support::*;

const TASK: &str = "dns.record.add";

fn task_payload() -> Value {
    json!({"task": {"action": TASK, "params": {"hostname": "printer.home", "ip": "192.168.1.50"}}})
}

async fn bundle(pool: &PgPool, pki: &Pki, tenants: Tenants, count: usize) -> Bundle {
    let opts = BulkOptions { tenants, count, prefix: "ro".into(), cert_lifetime: time::Duration::days(1) };
    provision::bulk_create(pool, pki.dir.path(), &opts).await.expect("bulk create")
}

/// Simulated appliances running until the token is cancelled.
struct Sim {
    stats: Arc<Stats>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Sim {
    fn start(broker: &Broker, ca_pem: &str, appliances: Vec<BundleAppliance>, failure_share: f64) -> Sim {
        let stats = Arc::new(Stats::default());
        let stop = CancellationToken::new();
        let opts = FleetOptions {
            host: "127.0.0.1".into(),
            port: broker.port,
            heartbeat_interval: Duration::from_secs(1),
            jitter: 0.1,
            ramp_per_s: 100.0,
            keep_alive: Duration::from_secs(30),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(1),
            backoff_recovery_max: hearth_agent::backoff::RECOVERY_MAX,
            connect_timeout: hearth_agent::backoff::CONNECT_TIMEOUT_INITIAL,
            connect_timeout_max: hearth_agent::backoff::CONNECT_TIMEOUT_MAX,
            renew_after: None,
            task_failure_share: failure_share,
        };
        let (s, t, ca) = (stats.clone(), stop.clone(), ca_pem.to_string());
        let task = tokio::spawn(async move {
            run_fleet(&ca, &appliances, &opts, s, t).await.expect("fleet runs");
        });
        Sim { stats, stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(15), self.task).await;
    }
}

async fn online(pool: &PgPool, n: i64) {
    eventually(Duration::from_secs(30), &format!("{n} appliances online"), || async {
        let k: i64 = sqlx::query_scalar("SELECT count(*) FROM appliances WHERE status = 'online'")
            .fetch_one(pool)
            .await
            .expect("count");
        (k == n).then_some(())
    })
    .await;
}

async fn tasks_of(pool: &PgPool, rollout: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM tasks WHERE rollout_id = $1::uuid")
        .bind(rollout)
        .fetch_one(pool)
        .await
        .expect("count")
}

/// Polls the rollout until `check` holds; returns it.
async fn rollout_until(cp: &ControlPlane, path: &str, key: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(Duration::from_secs(40), what, || async {
        let (status, r) = cp.get(path, key).await;
        assert_eq!(status, 200, "{r}");
        check(&r).then_some(r)
    })
    .await
}

async fn create(cp: &ControlPlane, path: &str, key: &str, body: Value) -> Value {
    let (status, r) = cp.call("POST", path, key, Some(body)).await;
    assert_eq!(status, 201, "{r}");
    r
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn waves_open_only_past_their_gates_and_approvals(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let admin = operator(&pool, "admin").await;
    let b = bundle(&pool, &pki, Tenants::New(2), 10).await;
    let sim = Sim::start(&broker, &b.ca_pem, b.appliances.clone(), 0.0);
    online(&pool, 10).await;
    // The agent versions a selector picks from, counted across the fleet.
    let summary = eventually(Duration::from_secs(20), "every agent version reported", || async {
        let (_, s) = cp.get("/api/v1/admin/fleet/summary", &admin).await;
        (s["agent_versions"] == json!([{"version": hearth_agent::VERSION, "appliances": 10}])).then_some(s)
    })
    .await;
    assert_eq!(summary["online"], 10);

    let r = create(
        &cp,
        "/api/v1/admin/rollouts",
        &admin,
        json!({"name": "printer record", "payload": task_payload(),
               "policy": {"waves": {"percent": [10, 50, 100]}, "gate": {"approval": true}}}),
    )
    .await;
    assert_eq!(r["state"], "scheduled");
    let id = r["id"].as_str().expect("id").to_string();
    let path = format!("/api/v1/admin/rollouts/{id}");

    // Wave 0 (1 appliance) runs, then the rollout waits: nothing of wave 1 starts.
    let r = rollout_until(&cp, &path, &admin, "wave 0 done, waiting for approval", |r| {
        r["state"] == "waiting_for_approval"
    })
    .await;
    assert_eq!(r["wave_sizes"], json!([1, 5, 10]), "{r:#}");
    assert_eq!((r["progress"]["succeeded"].as_i64(), r["waves_open"].as_i64()), (Some(1), Some(1)), "{r:#}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(tasks_of(&pool, &id).await, 1, "only the first wave ran before the approval");

    // The payload of a started rollout does not change; its name does.
    let other = json!({"task": {"action": TASK, "params": {"hostname": "nas.home", "ip": "192.168.1.51"}}});
    let (status, e) = cp.call("PATCH", &path, &admin, Some(json!({"payload": other}))).await;
    assert_eq!((status, e["error"]["code"].as_str()), (409, Some("rollout_started")), "{e}");
    let (status, e) = cp.call("PATCH", &path, &admin, Some(json!({"name": "printer record v1"}))).await;
    assert_eq!((status, e["name"].as_str()), (200, Some("printer record v1")), "{e}");

    // Each approval opens one wave.
    let (status, r) = cp.call("POST", &format!("{path}/approve"), &admin, None).await;
    assert_eq!((status, r["state"].as_str(), r["waves_open"].as_i64()), (200, Some("running"), Some(2)), "{r}");
    let r = rollout_until(&cp, &path, &admin, "wave 1 done", |r| {
        r["state"] == "waiting_for_approval" && r["progress"]["succeeded"] == 5
    })
    .await;
    assert_eq!(r["progress"]["waves"][1]["succeeded"], 4, "{r:#}");
    assert_eq!(tasks_of(&pool, &id).await, 5);
    let (status, _) = cp.call("POST", &format!("{path}/approve"), &admin, None).await;
    assert_eq!(status, 200);
    let r = rollout_until(&cp, &path, &admin, "rollout succeeded", |r| r["state"] == "succeeded").await;
    assert_eq!(r["progress"]["succeeded"], 10, "{r:#}");
    assert_eq!(tasks_of(&pool, &id).await, 10);
    let (status, e) = cp.call("POST", &format!("{path}/approve"), &admin, None).await;
    assert_eq!((status, e["error"]["code"].as_str()), (409, Some("rollout_state")), "{e}");

    // Every transition is in the audit trail.
    let actions: Vec<String> = sqlx::query_scalar("SELECT action FROM audit_log WHERE target_id = $1 ORDER BY id")
        .bind(&id)
        .fetch_all(&pool)
        .await
        .expect("audit");
    for a in ["rollout.create", "rollout.start", "rollout.waiting_for_approval", "rollout.approve", "rollout.succeeded"]
    {
        assert!(actions.iter().any(|x| x == a), "{a} in {actions:?}");
    }
    // The executions are tasks: the appliance's own task list shows them.
    let (status, page) = cp.get(&format!("{path}/executions?state=succeeded"), &admin).await;
    assert_eq!(status, 200);
    assert_eq!(page["executions"].as_array().map(Vec::len), Some(10), "{page}");
    assert_eq!(sim.stats.snapshot().tasks_succeeded, 10, "each appliance ran it once");
    sim.stop().await;
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn an_abort_on_the_failure_rate_stops_new_executions(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let admin = operator(&pool, "admin").await;
    let b = bundle(&pool, &pki, Tenants::New(1), 20).await;
    // Every appliance fails the change (a bad change fails everywhere).
    let sim = Sim::start(&broker, &b.ca_pem, b.appliances.clone(), 1.0);
    online(&pool, 20).await;

    let r = create(
        &cp,
        "/api/v1/admin/rollouts",
        &admin,
        json!({"name": "bad change", "payload": task_payload(),
               "policy": {"waves": {"percent": [25, 100]}, "abort": {"failure_percent": 10, "min_finished": 3}}}),
    )
    .await;
    let id = r["id"].as_str().expect("id").to_string();
    let path = format!("/api/v1/admin/rollouts/{id}");
    let r = rollout_until(&cp, &path, &admin, "aborted", |r| r["state"] == "aborted").await;
    assert!(r["reason"].as_str().is_some_and(|s| s.contains("above the abort threshold of 10 %")), "{r:#}");
    // The first wave (5) went out; the other 15 never started.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(tasks_of(&pool, &id).await, 5);
    let r = cp.get(&path, &admin).await.1;
    assert_eq!(r["progress"]["cancelled"], 15, "{r:#}");
    assert_eq!(r["progress"]["failed"], 5, "{r:#}");
    assert_eq!(sim.stats.snapshot().tasks_failed, 5);
    let metrics = cp.metrics().await;
    assert_eq!(metric(&metrics, r#"hearth_rollouts_finished_total{state="aborted"}"#), Some(1.0), "{metrics}");
    assert_eq!(metric(&metrics, "hearth_rollout_executions_started_total"), Some(5.0));
    // An aborted rollout cannot be resumed.
    let (status, e) = cp.call("POST", &format!("{path}/resume"), &admin, None).await;
    assert_eq!((status, e["error"]["code"].as_str()), (409, Some("rollout_state")), "{e}");

    // Retries: without an abort, each failing appliance gets 1 + 2 attempts, spaced.
    let two: Vec<_> = b.appliances.iter().take(2).map(|a| a.id).collect();
    let r = create(
        &cp,
        "/api/v1/admin/rollouts",
        &admin,
        json!({"name": "retried", "payload": task_payload(), "selector": {"appliances": two},
               "policy": {"waves": {"percent": [100]}, "abort": null, "retries": {"max": 2, "backoff_s": 1}}}),
    )
    .await;
    let id = r["id"].as_str().expect("id").to_string();
    let r = rollout_until(&cp, &format!("/api/v1/admin/rollouts/{id}"), &admin, "retried to the end", |r| {
        r["state"] == "succeeded"
    })
    .await;
    assert_eq!(r["progress"]["failed"], 2, "{r:#}");
    assert_eq!(r["reason"], "2 of 2 executions did not succeed", "{r:#}");
    assert_eq!(tasks_of(&pool, &id).await, 6, "3 attempts each");
    let (_, page) = cp.get(&format!("/api/v1/admin/rollouts/{id}/executions"), &admin).await;
    assert!(page["executions"].as_array().expect("list").iter().all(|e| e["attempts"] == 3), "{page}");
    sim.stop().await;
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn pause_resume_cancel_and_an_offline_appliance_that_returns(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let admin = operator(&pool, "admin").await;
    let b = bundle(&pool, &pki, Tenants::New(1), 6).await;
    let (late, early) = b.appliances.split_last().expect("6");
    let sim = Sim::start(&broker, &b.ca_pem, early.to_vec(), 0.0);
    online(&pool, 5).await;

    let r = create(
        &cp,
        "/api/v1/admin/rollouts",
        &admin,
        json!({"name": "paused at once", "payload": task_payload(), "policy": {"waves": {"percent": [100]}}}),
    )
    .await;
    let id = r["id"].as_str().expect("id").to_string();
    let path = format!("/api/v1/admin/rollouts/{id}");
    let (status, r) = cp.call("POST", &format!("{path}/pause"), &admin, None).await;
    assert_eq!((status, r["state"].as_str()), (200, Some("paused")), "{r}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(tasks_of(&pool, &id).await, 0, "a paused rollout starts nothing");

    let (status, _) = cp.call("POST", &format!("{path}/resume"), &admin, None).await;
    assert_eq!(status, 200);
    // Paused mid-way: what was sent finishes and is counted, nothing new starts.
    rollout_until(&cp, &path, &admin, "some started", |r| r["progress"]["pending"].as_i64() < Some(6)).await;
    let (status, _) = cp.call("POST", &format!("{path}/pause"), &admin, None).await;
    assert_eq!(status, 200);
    let sent = tasks_of(&pool, &id).await;
    let r = rollout_until(&cp, &path, &admin, "what was sent is over", |r| {
        r["progress"]["in_progress"] == 0 && r["progress"]["succeeded"] == sent
    })
    .await;
    assert_eq!(r["state"], "paused", "{r:#}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(tasks_of(&pool, &id).await, sent, "a paused rollout starts nothing new");
    let (status, _) = cp.call("POST", &format!("{path}/resume"), &admin, None).await;
    assert_eq!(status, 200);
    // The offline appliance waits, pending, and is reported; the rollout is not over.
    let r = rollout_until(&cp, &path, &admin, "5 succeeded, 1 waiting offline", |r| {
        r["progress"]["succeeded"] == 5 && r["progress"]["pending_offline"] == 1
    })
    .await;
    assert_eq!(r["state"], "running", "{r:#}");
    let (_, page) = cp.get(&format!("{path}/executions?state=pending"), &admin).await;
    assert_eq!(page["executions"][0]["appliance_id"], json!(late.id), "{page}");
    assert_eq!(page["executions"][0]["online"], false, "{page}");

    // It comes back and picks up its execution.
    let late_sim = Sim::start(&broker, &b.ca_pem, vec![late.clone()], 0.0);
    let r = rollout_until(&cp, &path, &admin, "all 6 succeeded", |r| r["state"] == "succeeded").await;
    assert_eq!(r["progress"]["succeeded"], 6, "{r:#}");
    late_sim.stop().await;
    eventually(Duration::from_secs(20), "the late appliance offline again", || async {
        let s: String = sqlx::query_scalar("SELECT status FROM appliances WHERE id = $1")
            .bind(late.id)
            .fetch_one(&pool)
            .await
            .expect("status");
        (s == "offline").then_some(())
    })
    .await;

    // Cancelling stops what has not reached an appliance, for good.
    let r = create(
        &cp,
        "/api/v1/admin/rollouts",
        &admin,
        json!({"name": "cancelled", "payload": task_payload(), "selector": {"appliances": [late.id]}}),
    )
    .await;
    let id = r["id"].as_str().expect("id").to_string();
    let path = format!("/api/v1/admin/rollouts/{id}");
    rollout_until(&cp, &path, &admin, "started, waiting for the offline appliance", |r| {
        r["state"] == "running" && r["progress"]["pending_offline"] == 1
    })
    .await;
    let (status, r) = cp.call("POST", &format!("{path}/cancel"), &admin, None).await;
    assert_eq!((status, r["state"].as_str(), r["progress"]["cancelled"].as_i64()), (200, Some("cancelled"), Some(1)));
    let (status, e) = cp.call("POST", &format!("{path}/resume"), &admin, None).await;
    assert_eq!((status, e["error"]["code"].as_str()), (409, Some("rollout_state")), "{e}");
    let late_sim = Sim::start(&broker, &b.ca_pem, vec![late.clone()], 0.0);
    online(&pool, 6).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(tasks_of(&pool, &id).await, 0, "a cancelled rollout sends nothing when the appliance returns");
    assert_eq!(cp.get(&path, &admin).await.1["state"], "cancelled");
    late_sim.stop().await;
    sim.stop().await;
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn two_replicas_send_each_execution_once_and_a_restart_continues(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    // Each replica has its own MQTT client id and keeps it across a restart (its broker
    // session holds what arrived for it meanwhile).
    let (config_one, config_two) = (test_config(&pki, &broker), test_config(&pki, &broker));
    let mut one = ControlPlane::start(pool.clone(), config_one.clone(), &pki).await;
    let mut two = ControlPlane::start(pool.clone(), config_two.clone(), &pki).await;
    let admin = operator(&pool, "admin").await;
    let b = bundle(&pool, &pki, Tenants::New(3), 24).await;
    let sim = Sim::start(&broker, &b.ca_pem, b.appliances.clone(), 0.0);
    online(&pool, 24).await;

    // 120 a minute: 2 per round, so the rollout is still running when the replicas stop.
    let r = create(
        &one,
        "/api/v1/admin/rollouts",
        &admin,
        json!({"name": "slow", "payload": task_payload(),
               "policy": {"waves": {"percent": [25, 50, 100]}, "max_per_minute": 120}}),
    )
    .await;
    let id = r["id"].as_str().expect("id").to_string();
    let path = format!("/api/v1/admin/rollouts/{id}");
    rollout_until(&two, &path, &admin, "some executions done", |r| {
        r["progress"]["succeeded"].as_i64().is_some_and(|n| n >= 4)
    })
    .await;
    one.stop().await;
    two.stop().await;
    let state: String = sqlx::query_scalar("SELECT state FROM rollouts").fetch_one(&pool).await.expect("state");
    assert_eq!(state, "running", "stopped mid-rollout");
    let done: i64 = sqlx::query_scalar("SELECT count(*) FROM rollout_executions WHERE state = 'succeeded'")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert!(done < 24, "stopped before the end ({done} done)");

    // Restarted, the replicas continue from what is stored.
    let one = ControlPlane::start(pool.clone(), config_one, &pki).await;
    let _two = ControlPlane::start(pool.clone(), config_two, &pki).await;
    let r = rollout_until(&one, &path, &admin, "finished after the restart", |r| r["state"] == "succeeded").await;
    assert_eq!(r["progress"]["succeeded"], 24, "{r:#}");
    let most: i64 = sqlx::query_scalar(
        "SELECT max(n) FROM (SELECT count(*) AS n FROM tasks WHERE rollout_id = $1::uuid GROUP BY appliance_id) x",
    )
    .bind(&id)
    .fetch_one(&pool)
    .await
    .expect("max");
    assert_eq!((tasks_of(&pool, &id).await, most), (24, 1), "one task per appliance");
    assert_eq!(sim.stats.snapshot().tasks_succeeded, 24, "no appliance got its task twice");
    // The rate held across two replicas: 24 executions at 120 a minute (2 a round) are
    // spread over about 11 s (a second replica's rounds may add up to a third).
    let span: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM max(started_at) - min(started_at))::float8 FROM rollout_executions",
    )
    .fetch_one(&pool)
    .await
    .expect("span");
    assert!(span >= 7.0, "24 starts spread over {span:.1} s at 2 per second");
    sim.stop().await;
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn a_tenant_rolls_out_configuration_to_its_own_appliances_only(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let admin = operator(&pool, "admin").await;
    let b = bundle(&pool, &pki, Tenants::New(2), 6).await;
    let (mine, theirs) = (&b.tenants[0], &b.tenants[1]);
    let key = mine.api_key.as_ref().expect("key").expose().clone();
    let other_key = theirs.api_key.as_ref().expect("key").expose().clone();
    let my_appliances: Vec<_> = b.appliances.iter().filter(|a| a.tenant_id == mine.id).map(|a| a.id).collect();
    let foreign = b.appliances.iter().find(|a| a.tenant_id == theirs.id).expect("theirs").id;
    let sim = Sim::start(&broker, &b.ca_pem, b.appliances.clone(), 0.0);
    online(&pool, 6).await;

    // An appliance's own override stays above the rollout's overlay.
    let (status, _) = cp
        .call(
            "PUT",
            &format!("/api/v1/appliances/{}/config", my_appliances[0]),
            &key,
            Some(json!({"document": {"dns": {"forwarders": ["1.1.1.1"]}}})),
        )
        .await;
    assert_eq!(status, 200);

    // Targeting anything but its own is refused, naming the field; nothing is stored.
    let overlay = json!({"config": {"dns": {"forwarders": ["9.9.9.9"]}, "agent": {"heartbeat_interval_s": 30}}});
    for (selector, param) in [
        (json!({"appliances": [foreign]}), "selector.appliances"),
        (json!({"tenants": [theirs.id]}), "selector.tenants"),
        (json!({"labels": {"ring": "nowhere"}}), "selector"),
    ] {
        let (status, e) = cp
            .call(
                "POST",
                "/api/v1/rollouts",
                &key,
                Some(json!({"name": "x", "payload": overlay, "selector": selector})),
            )
            .await;
        assert_eq!((status, e["error"]["details"]["param"].as_str()), (422, Some(param)), "{e}");
    }
    let (status, e) = cp
        .call(
            "POST",
            "/api/v1/rollouts",
            &key,
            Some(json!({"name": "x", "payload": {"config": {"mail": {"relay": {"password": {"$secret": "p"}}}}}})),
        )
        .await;
    assert_eq!((status, e["error"]["details"]["param"].as_str()), (422, Some("payload.config")), "{e}");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM rollouts").fetch_one(&pool).await.expect("count");
    assert_eq!(stored, 0, "refused rollouts are not stored");

    let r = create(&cp, "/api/v1/rollouts", &key, json!({"name": "quad9", "payload": overlay})).await;
    assert_eq!(r["tenant_id"], json!(mine.id));
    let id = r["id"].as_str().expect("id").to_string();
    let path = format!("/api/v1/rollouts/{id}");
    let r = rollout_until(&cp, &path, &key, "configuration applied", |r| r["state"] == "succeeded").await;
    assert_eq!(r["progress"]["succeeded"], my_appliances.len() as i64, "{r:#}");
    let (_, c) = cp.get(&format!("/api/v1/appliances/{}/config", my_appliances[1]), &key).await;
    assert_eq!(c["desired"]["dns"]["forwarders"], json!(["9.9.9.9"]), "{c:#}");
    assert_eq!(c["drift"], false, "{c:#}");
    let (_, c) = cp.get(&format!("/api/v1/appliances/{}/config", my_appliances[0]), &key).await;
    assert_eq!(c["desired"]["dns"]["forwarders"], json!(["1.1.1.1"]), "the override wins: {c:#}");
    let (_, c) = cp.get(&format!("/api/v1/appliances/{foreign}/config"), &other_key).await;
    assert_eq!(c["desired"]["dns"], Value::Null, "the other tenant's appliances are untouched: {c:#}");

    // The other tenant neither sees nor steers it; operators see it.
    let (status, _) = cp.get(&path, &other_key).await;
    assert_eq!(status, 404);
    let (status, _) = cp.call("POST", &format!("{path}/cancel"), &other_key, None).await;
    assert_eq!(status, 404);
    let (_, page) = cp.get("/api/v1/rollouts", &other_key).await;
    assert_eq!(page["rollouts"], json!([]), "{page}");
    let (status, r) = cp.get(&format!("/api/v1/admin/rollouts/{id}"), &admin).await;
    assert_eq!((status, r["tenant_id"].clone()), (200, json!(mine.id)));

    // The plan bounds active rollouts.
    put_on_plan(
        &cp,
        &admin,
        mine.id,
        "one-rollout",
        json!({"api_per_minute": 100000, "api_burst": 10000, "assistant_per_hour": 100, "assistant_burst": 3,
               "mqtt_per_minute": 6000, "mqtt_burst": 1000, "rollouts_active": 1}),
    )
    .await;
    let later = json!({"name": "later", "payload": task_payload(), "start_at": "2999-01-01T00:00:00Z"});
    let r = create(&cp, "/api/v1/rollouts", &key, later.clone()).await;
    let (status, e) = cp.call("POST", "/api/v1/rollouts", &key, Some(later.clone())).await;
    assert_eq!((status, e["error"]["code"].as_str()), (409, Some("rollout_limit")), "{e}");
    // …and tells the tenant, once an hour however often it is hit.
    cp.call("POST", "/api/v1/rollouts", &key, Some(later.clone())).await;
    let told = eventually(Duration::from_secs(5), "quota.exhausted", || async {
        let (_, page) = cp.get("/api/v1/events?type=quota.exhausted", &key).await;
        page["events"].as_array().filter(|e| !e.is_empty()).cloned()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, page) = cp.get("/api/v1/events?type=quota.exhausted", &key).await;
    assert_eq!(page["events"].as_array().map(Vec::len), Some(1), "{page}");
    assert_eq!(told[0]["data"]["quota"], "rollouts_active");
    // The tenant changes and steers its own: before the start, even the payload.
    let path = format!("/api/v1/rollouts/{}", r["id"].as_str().expect("id"));
    let other = json!({"task": {"action": TASK, "params": {"hostname": "nas.home", "ip": "192.168.1.51"}}});
    let (status, r) = cp.call("PATCH", &path, &key, Some(json!({"name": "later, renamed", "payload": other}))).await;
    assert_eq!((status, r["payload"]["task"]["params"]["hostname"].as_str()), (200, Some("nas.home")), "{r}");
    let (status, r) = cp.call("POST", &format!("{path}/pause"), &key, None).await;
    assert_eq!((status, r["state"].as_str()), (200, Some("paused")), "{r}");
    let (status, r) = cp.call("POST", &format!("{path}/cancel"), &key, None).await;
    assert_eq!((status, r["state"].as_str()), (200, Some("cancelled")), "{r}");
    create(&cp, "/api/v1/rollouts", &key, later).await;
    sim.stop().await;
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn invalid_rollouts_are_refused_naming_the_field(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let admin = operator(&pool, "admin").await;
    bundle(&pool, &pki, Tenants::New(1), 2).await;
    let with = |policy: Value| json!({"name": "x", "payload": task_payload(), "policy": policy});
    let cases = [
        (with(json!({"waves": {"percent": [50, 10, 100]}})), "policy.waves"),
        (with(json!({"waves": {"percent": [10, 50]}})), "policy.waves"),
        (with(json!({"abort": {"failure_percent": 150}})), "policy.abort.failure_percent"),
        (with(json!({"gate": {"finished_percent": -5}})), "policy.gate.finished_percent"),
        (with(json!({"window": {"start_hour": 4, "end_hour": 4}})), "policy.window"),
        (json!({"name": "x", "payload": task_payload(), "selector": {"labels": {"ring": "none"}}}), "selector"),
        (json!({"name": "x", "payload": task_payload(), "selector": {"statuses": ["revoked"]}}), "selector.statuses"),
        (json!({"name": " ", "payload": task_payload()}), "name"),
    ];
    for (body, param) in cases {
        let (status, e) = cp.call("POST", "/api/v1/admin/rollouts", &admin, Some(body.clone())).await;
        assert_eq!((status, e["error"]["details"]["param"].as_str()), (422, Some(param)), "{body} → {e}");
    }
    let bad_task = json!({"name": "x", "payload": {"task": {"action": TASK, "params": {"hostname": "printer.home"}}}});
    let (status, e) = cp.call("POST", "/api/v1/admin/rollouts", &admin, Some(bad_task)).await;
    assert_eq!((status, e["error"]["code"].as_str()), (422, Some("invalid_params")), "{e}");
    let both = json!({"name": "x", "payload": {"task": {"action": TASK}, "config": {}}});
    let (status, e) = cp.call("POST", "/api/v1/admin/rollouts", &admin, Some(both)).await;
    assert_eq!((status, e["error"]["code"].as_str()), (400, Some("invalid_body")), "one payload, not two: {e}");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM rollouts").fetch_one(&pool).await.expect("count");
    assert_eq!(stored, 0);
    // A viewer reads but does not create.
    let viewer = operator(&pool, "viewer").await;
    let (status, _) = cp.call("POST", "/api/v1/admin/rollouts", &viewer, Some(with(json!({})))).await;
    assert_eq!(status, 403);
    let (status, _) = cp.get("/api/v1/admin/rollouts", &viewer).await;
    assert_eq!(status, 200);
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn a_dynamic_rollout_takes_later_matches_and_a_window_holds_starts(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let admin = operator(&pool, "admin").await;
    let b = bundle(&pool, &pki, Tenants::New(1), 3).await;
    let sim = Sim::start(&broker, &b.ca_pem, b.appliances.clone(), 0.0);
    online(&pool, 3).await;
    let label = |id: hearth_protocol::ApplianceId| {
        let (cp, admin) = (&cp, &admin);
        async move {
            let (status, body) = cp
                .call(
                    "PUT",
                    &format!("/api/v1/admin/appliances/{id}/labels"),
                    admin,
                    Some(json!({"labels": {"fleet/ring": "canary"}})),
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }
    };
    label(b.appliances[0].id).await;
    label(b.appliances[1].id).await;

    // Dynamic: the two canaries run it, and the rollout stays open for more.
    let r = create(
        &cp,
        "/api/v1/admin/rollouts",
        &admin,
        json!({"name": "continuous", "dynamic": true, "payload": task_payload(),
               "selector": {"labels": {"fleet/ring": "canary"}}, "policy": {"waves": {"percent": [100]}}}),
    )
    .await;
    let id = r["id"].as_str().expect("id").to_string();
    let path = format!("/api/v1/admin/rollouts/{id}");
    rollout_until(&cp, &path, &admin, "the two canaries done", |r| r["progress"]["succeeded"] == 2).await;
    // A third appliance labelled later joins and runs it once.
    label(b.appliances[2].id).await;
    let r = rollout_until(&cp, &path, &admin, "the late canary done", |r| r["progress"]["succeeded"] == 3).await;
    assert_eq!((r["state"].as_str(), r["wave_sizes"].clone()), (Some("running"), json!([3])), "{r:#}");
    assert_eq!(tasks_of(&pool, &id).await, 3);
    let (status, r) = cp.call("POST", &format!("{path}/cancel"), &admin, None).await;
    assert_eq!((status, r["state"].as_str()), (200, Some("cancelled")));

    // A window that is not open now holds every start, online or not…
    let hour: i32 = sqlx::query_scalar("SELECT extract(hour FROM now() AT TIME ZONE 'UTC')::int")
        .fetch_one(&pool)
        .await
        .expect("hour");
    let closed = json!({"start_hour": (hour + 2) % 24, "end_hour": (hour + 3) % 24});
    let r = create(
        &cp,
        "/api/v1/admin/rollouts",
        &admin,
        json!({"name": "at night", "payload": task_payload(), "policy": {"waves": {"percent": [100]}, "window": closed}}),
    )
    .await;
    let id = r["id"].as_str().expect("id").to_string();
    let path = format!("/api/v1/admin/rollouts/{id}");
    rollout_until(&cp, &path, &admin, "started, all pending", |r| {
        r["state"] == "running" && r["progress"]["pending"] == 3
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(tasks_of(&pool, &id).await, 0, "outside the window nothing starts");
    // …until the policy's window opens now (a policy changes while the rollout runs).
    let open = json!({"waves": {"percent": [100]}, "window": {"start_hour": hour, "end_hour": (hour + 2) % 24}});
    let (status, r) = cp.call("PATCH", &path, &admin, Some(json!({"policy": open}))).await;
    assert_eq!(status, 200, "{r}");
    // The progress stream follows it to the end.
    let events = cp
        .http
        .get(format!("{}{path}/events", cp.url))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("stream")
        .text()
        .await
        .expect("the stream ends when the rollout does");
    assert!(events.contains("event: progress"), "{events}");
    assert!(events.contains(r#""state":"succeeded""#), "{events}");
    assert!(events.trim_end().ends_with(r#"data: {"reason":"finished"}"#), "{events}");
    assert_eq!(tasks_of(&pool, &id).await, 3);
    sim.stop().await;
}
