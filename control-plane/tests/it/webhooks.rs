//! Events and webhooks against a real receiver that checks every signature with the
//! Standard Webhooks reference library (the `standardwebhooks` package from PyPI, in
//! `webhook_receiver.py`), not with Hearth's code: delivery in order, the event cursor,
//! retries after 500, disabling after persistent failure and on 410, replay, secret
//! rotation, refusal of private addresses, no duplicates across two replicas, nothing lost
//! across a restart, and the alert rules.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hearth_control_plane::config::Config;
use hearth_control_plane::domain::events::payloads;
use hearth_protocol::{ApplianceId, TenantId};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::support::*;

/// The receiver: a Python process on a free loopback port.
struct Receiver {
    child: Child,
    port: u16,
    http: reqwest::Client,
}

impl Receiver {
    fn start() -> Receiver {
        // deploy/test.sh makes a virtualenv with the pinned package and names its python.
        let python = std::env::var("HEARTH_WEBHOOK_PYTHON").unwrap_or_else(|_| "python3".into());
        let check = Command::new(&python).args(["-c", "import standardwebhooks"]).status().expect("python");
        assert!(
            check.success(),
            "{python} cannot import standardwebhooks: run the tests with deploy/test.sh, or \
             `pip install standardwebhooks==1.3.0` and set HEARTH_WEBHOOK_PYTHON"
        );
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/webhook_receiver.py");
        let mut child =
            Command::new(&python).arg(script).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("receiver");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("receiver's port");
        let port = line.trim().strip_prefix("PORT ").and_then(|p| p.parse().ok()).expect("PORT n");
        // Plain HTTP to the receiver; reqwest still wants a TLS configuration (no default
        // crypto provider is installed in this workspace).
        let tls =
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("tls")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
        let http = reqwest::Client::builder().use_preconfigured_tls(tls).build().expect("client");
        Receiver { child, port, http }
    }

    fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    async fn post(&self, path: &str, body: Value) {
        let r = self.http.post(format!("http://127.0.0.1:{}{path}", self.port)).json(&body).send().await.expect("rx");
        assert!(r.status().is_success());
    }

    async fn secrets(&self, name: &str, secrets: &[&str]) {
        self.post(&format!("/_secrets/{name}"), json!(secrets)).await;
    }

    async fn mode(&self, name: &str, mode: Value) {
        self.post(&format!("/_mode/{name}"), mode).await;
    }

    async fn log(&self, name: &str) -> Vec<Value> {
        let all: Vec<Value> = self
            .http
            .get(format!("http://127.0.0.1:{}/_log", self.port))
            .send()
            .await
            .expect("log")
            .json()
            .await
            .expect("json");
        all.into_iter().filter(|e| e["endpoint"] == name).collect()
    }

    /// Waits until `name` received at least `n` deliveries; returns them.
    async fn wait(&self, name: &str, n: usize, timeout: Duration) -> Vec<Value> {
        eventually(timeout, &format!("{n} deliveries to {name}"), || async {
            let log = self.log(name).await;
            (log.len() >= n).then_some(log)
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(pki: &Pki, broker: &Broker) -> Config {
    let mut c = test_config(pki, broker);
    use base64::Engine;
    c.secrets.key =
        Some(hearth_control_plane::secret::Secret::new(base64::engine::general_purpose::STANDARD.encode([7u8; 32])));
    // The receiver is plain HTTP on loopback, as in development.
    c.webhooks.allow_http_loopback = true;
    c
}

struct Stack {
    pki: Pki,
    broker: Broker,
    cp: ControlPlane,
    admin: String,
    tenant: TenantId,
    key: String,
}

impl Stack {
    async fn start(pool: &PgPool, tweak: impl FnOnce(&mut Config)) -> Stack {
        let pki = Pki::new();
        let broker = Broker::start(&pki);
        let mut c = config(&pki, &broker);
        tweak(&mut c);
        let cp = ControlPlane::start(pool.clone(), c, &pki).await;
        let admin = operator(pool, "admin").await;
        let (tenant, key) = tenant(pool, "household").await;
        Stack { pki, broker, cp, admin, tenant, key }
    }

    /// Registers a tenant endpoint; returns its id and secret.
    async fn endpoint(&self, url: &str, types: Value) -> (String, String) {
        let (status, body) =
            self.cp.call("POST", "/api/v1/webhooks", &self.key, Some(json!({"url": url, "event_types": types}))).await;
        assert_eq!(status, 201, "{body}");
        let secret = body["secret"].as_str().expect("secret").to_string();
        (body["endpoint"]["id"].as_str().expect("id").to_string(), secret)
    }

    /// Queues a task on `appliance` and cancels it: one `task.cancelled` event.
    async fn cancelled_task(&self, cp: &ControlPlane, appliance: ApplianceId) -> String {
        let path = format!("/api/v1/appliances/{appliance}/tasks");
        let (status, task) = cp.call("POST", &path, &self.key, Some(json!({"action": "appliance.reboot"}))).await;
        assert_eq!(status, 202, "{task}");
        let id = task["id"].as_str().expect("task id").to_string();
        let (status, body) = cp.call("POST", &format!("/api/v1/tasks/{id}/cancel"), &self.key, None).await;
        assert_eq!(status, 200, "{body}");
        id
    }

    async fn events(&self, query: &str) -> Value {
        let (status, body) = self.cp.get(&format!("/api/v1/events{query}"), &self.key).await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn events_are_delivered_signed_in_order_and_read_with_a_cursor(pool: PgPool) {
    let s = Stack::start(&pool, |_| {}).await;
    let rx = Receiver::start();
    let (endpoint, secret) = s.endpoint(&rx.url("tickets"), json!(["task.*"])).await;
    assert!(secret.starts_with("whsec_"));
    rx.secrets("tickets", &[&secret]).await;
    // The secret is shown once: never in a list, a read or the audit trail.
    let (_, list) = s.cp.get("/api/v1/webhooks", &s.key).await;
    let (_, audit) = s.cp.get("/api/v1/admin/audit", &s.admin).await;
    assert!(!list.to_string().contains(&secret[6..]) && !audit.to_string().contains(&secret[6..]));
    assert_eq!(list[0]["id"], endpoint.as_str());

    let (appliance, _) = appliance(&pool, s.tenant, "kitchen").await;
    let mut tasks = Vec::new();
    for _ in 0..5 {
        tasks.push(s.cancelled_task(&s.cp, appliance).await);
    }
    let got = rx.wait("tickets", 5, Duration::from_secs(20)).await;
    // Signed (the reference library verifies them), typed, in the order they happened.
    for (d, task) in got.iter().zip(&tasks) {
        assert_eq!(d["verified_by"], json!([0]), "{d}");
        assert_eq!(d["payload"]["type"], "task.cancelled");
        assert_eq!(d["payload"]["data"]["task_id"], task.as_str(), "in order");
        assert_eq!(d["payload"]["appliance_id"], appliance.to_string());
        assert_eq!(d["payload"]["tenant_id"], s.tenant.to_string());
        assert_eq!(d["webhook_id"], d["payload"]["id"]);
    }

    // The same events through the API, with a cursor.
    let page = s.events("?after=0").await;
    let events = page["events"].as_array().expect("events");
    assert_eq!(events.len(), 5, "{page}");
    let ids: Vec<&Value> = events.iter().map(|e| &e["id"]).collect();
    let delivered: Vec<&Value> = got.iter().map(|d| &d["payload"]["id"]).collect();
    assert_eq!(ids, delivered);
    let next = page["next"].as_i64().expect("next");
    assert_eq!(next, events[4]["position"].as_i64().unwrap());
    let page2 = s.events(&format!("?after={}&limit=2", events[1]["position"])).await;
    assert_eq!(page2["events"].as_array().unwrap().len(), 2);
    assert_eq!(page2["events"][0]["id"], events[2]["id"]);
    let empty = s.events(&format!("?after={next}")).await;
    assert_eq!((empty["events"].as_array().unwrap().len(), empty["next"].as_i64()), (0, Some(next)));
    assert_eq!(s.events("?type=task.*").await["events"].as_array().unwrap().len(), 5);
    assert_eq!(s.events("?type=appliance.offline").await["events"].as_array().unwrap().len(), 0);
    let (status, body) = s.cp.get("/api/v1/events?type=task.exploded", &s.key).await;
    assert_eq!((status, body["error"]["details"]["param"].as_str()), (422, Some("type")), "{body}");
    for e in events {
        payloads::check(e["type"].as_str().unwrap(), &e["data"]).expect("the data reads into its type");
    }

    // Another tenant sees none of it; operators see it fleet-wide and by tenant.
    let (_, other_key) = tenant(&pool, "neighbour").await;
    let (_, theirs) = s.cp.get("/api/v1/events", &other_key).await;
    assert_eq!(theirs["events"], json!([]));
    let (status, _) = s.cp.get(&format!("/api/v1/webhooks/{endpoint}"), &other_key).await;
    assert_eq!(status, 404);
    let (_, fleet) = s.cp.get(&format!("/api/v1/admin/events?tenant_id={}", s.tenant), &s.admin).await;
    assert_eq!(fleet["events"].as_array().unwrap().len(), 5);

    // The delivery log.
    let (_, log) = s.cp.get(&format!("/api/v1/webhooks/{endpoint}/deliveries"), &s.key).await;
    let log = log["deliveries"].as_array().expect("deliveries");
    assert_eq!(log.len(), 5);
    for d in log {
        assert_eq!(
            (d["state"].as_str(), d["attempts"].as_i64(), d["last_status"].as_i64()),
            (Some("delivered"), Some(1), Some(200))
        );
        assert!(d["last_latency_ms"].as_i64().is_some() && d["next_attempt_at"].is_null());
    }

    // The OpenAPI document describes every event type's delivery.
    let doc: Value =
        s.cp.http.get(format!("{}/api/openapi.json", s.cp.url)).send().await.unwrap().json().await.unwrap();
    for t in hearth_control_plane::domain::events::TYPES {
        let schema = &doc["webhooks"][t]["post"]["requestBody"]["content"]["application/json"]["schema"];
        let data = schema["allOf"][1]["properties"]["data"]["$ref"].as_str().expect(t);
        assert!(doc.pointer(data.trim_start_matches('#')).is_some(), "{t}: {data}");
    }
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn failing_receivers_are_retried_disabled_and_their_owner_told_and_replays_resume(pool: PgPool) {
    // The whole schedule (about a day) shrunk to about 9 s.
    let s = Stack::start(&pool, |c| c.webhooks.retry_scale = 0.0001).await;
    let rx = Receiver::start();
    let (flaky, flaky_secret) = s.endpoint(&rx.url("flaky"), json!(["task.cancelled"])).await;
    let (dead, dead_secret) = s.endpoint(&rx.url("dead"), json!(["task.*"])).await;
    let (gone, _) = s.endpoint(&rx.url("gone"), json!(["*"])).await;
    let (_, watch_secret) = s.endpoint(&rx.url("watch"), json!(["webhook.*"])).await;
    rx.secrets("flaky", &[&flaky_secret]).await;
    rx.secrets("dead", &[&dead_secret]).await;
    rx.secrets("watch", &[&watch_secret]).await;
    rx.mode("flaky", json!({"mode": "ok", "fail_first": 2})).await;
    rx.mode("dead", json!({"mode": "fail"})).await;
    rx.mode("gone", json!({"mode": "gone"})).await;

    let (appliance, _) = appliance(&pool, s.tenant, "kitchen").await;
    s.cancelled_task(&s.cp, appliance).await;

    // 500, 500, then 200: delivered on the third attempt, the same webhook-id each time.
    let got = rx.wait("flaky", 3, Duration::from_secs(20)).await;
    assert!(got.iter().all(|d| d["webhook_id"] == got[0]["webhook_id"] && d["verified_by"] == json!([0])));
    let delivered = |id: String| {
        let cp = &s.cp;
        let key = &s.key;
        async move {
            let (_, log) = cp.get(&format!("/api/v1/webhooks/{id}/deliveries"), key).await;
            log["deliveries"][0].clone()
        }
    };
    let d = eventually(Duration::from_secs(10), "flaky delivered", || async {
        let d = delivered(flaky.clone()).await;
        (d["state"] == "delivered").then_some(d)
    })
    .await;
    assert_eq!(d["attempts"], 3);

    // 410 disables at once; 500 forever disables after the last attempt of the schedule.
    let endpoint = |id: String| {
        let cp = &s.cp;
        let key = &s.key;
        async move { cp.get(&format!("/api/v1/webhooks/{id}"), key).await.1 }
    };
    let e = eventually(Duration::from_secs(10), "gone disabled", || async {
        let e = endpoint(gone.clone()).await;
        (e["enabled"] == false).then_some(e)
    })
    .await;
    assert!(e["disabled_reason"].as_str().unwrap().contains("410"), "{e}");
    assert_eq!(rx.log("gone").await.len(), 1, "no retry after 410");
    let e = eventually(Duration::from_secs(40), "dead disabled", || async {
        let e = endpoint(dead.clone()).await;
        (e["enabled"] == false).then_some(e)
    })
    .await;
    assert!(e["disabled_reason"].as_str().unwrap().contains("11 attempts"), "{e}");
    assert_eq!(rx.log("dead").await.len(), 11);
    let d = delivered(dead.clone()).await;
    assert_eq!((d["state"].as_str(), d["last_status"].as_i64()), (Some("failed"), Some(500)), "{d}");
    assert!(d["last_error"].as_str().unwrap().contains("receiver failure on purpose"), "{d}");

    // The owner is told on its other endpoint, and in the event log.
    let told = rx.wait("watch", 2, Duration::from_secs(10)).await;
    let mut disabled: Vec<&str> = told.iter().map(|d| d["payload"]["data"]["endpoint_id"].as_str().unwrap()).collect();
    disabled.sort();
    let mut expected = vec![dead.as_str(), gone.as_str()];
    expected.sort();
    assert_eq!(disabled, expected);
    assert!(told.iter().all(|d| d["payload"]["type"] == "webhook.endpoint_disabled" && d["verified_by"] == json!([0])));

    // Fixed receiver: re-enable, replay the failed delivery; it arrives with the same id.
    rx.mode("dead", json!({"mode": "ok"})).await;
    let (status, body) =
        s.cp.call("PATCH", &format!("/api/v1/webhooks/{dead}"), &s.key, Some(json!({"enabled": true}))).await;
    assert_eq!((status, &body["enabled"], &body["disabled_reason"]), (200, &json!(true), &Value::Null), "{body}");
    let (status, _) =
        s.cp.call("POST", &format!("/api/v1/webhooks/{dead}/deliveries/{}/replay", d["id"]), &s.key, None).await;
    assert_eq!(status, 202);
    let got = rx.wait("dead", 12, Duration::from_secs(10)).await;
    assert_eq!(got[11]["webhook_id"], got[0]["webhook_id"]);
    let (status, _) =
        s.cp.call("POST", &format!("/api/v1/webhooks/{dead}/deliveries/999999/replay"), &s.key, None).await;
    assert_eq!(status, 404);

    let metrics = s.cp.metrics().await;
    for (outcome, at_least) in [("retried", 12.0), ("failed", 1.0), ("gone", 1.0), ("delivered", 3.0)] {
        let n = metric(&metrics, &format!("hearth_webhook_attempts_total{{outcome=\"{outcome}\"}}")).unwrap_or(0.0);
        assert!(n >= at_least, "{outcome}: {n}");
    }
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn a_rotated_secret_signs_beside_the_previous_one_for_the_overlap(pool: PgPool) {
    let s = Stack::start(&pool, |_| {}).await;
    let rx = Receiver::start();
    let (id, old) = s.endpoint(&rx.url("r"), json!(["task.*"])).await;
    let (appliance, _) = appliance(&pool, s.tenant, "kitchen").await;

    let (status, rotated) =
        s.cp.call("POST", &format!("/api/v1/webhooks/{id}/rotate-secret"), &s.key, Some(json!({}))).await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    let (_, e) = s.cp.get(&format!("/api/v1/webhooks/{id}"), &s.key).await;
    assert!(e["previous_secret_until"].is_string(), "{e}");
    rx.secrets("r", &[&old, &new]).await;
    s.cancelled_task(&s.cp, appliance).await;
    let got = rx.wait("r", 1, Duration::from_secs(20)).await;
    // Two signatures; each secret verifies on its own (the receiver may switch any time).
    assert_eq!(got[0]["signatures"].as_array().unwrap().len(), 2, "{}", got[0]);
    assert_eq!(got[0]["verified_by"], json!([0, 1]));

    // A rotation without overlap: only the newest secret signs.
    let (_, rotated) =
        s.cp.call("POST", &format!("/api/v1/webhooks/{id}/rotate-secret"), &s.key, Some(json!({"overlap_hours": 0})))
            .await;
    let newest = rotated["secret"].as_str().unwrap().to_string();
    rx.secrets("r", &[&new, &newest]).await;
    s.cancelled_task(&s.cp, appliance).await;
    let got = rx.wait("r", 2, Duration::from_secs(20)).await;
    assert_eq!(got[1]["signatures"].as_array().unwrap().len(), 1);
    assert_eq!(got[1]["verified_by"], json!([1]));
    let (status, body) = s
        .cp
        .call("POST", &format!("/api/v1/webhooks/{id}/rotate-secret"), &s.key, Some(json!({"overlap_hours": 1000})))
        .await;
    assert_eq!((status, body["error"]["details"]["param"].as_str()), (422, Some("overlap_hours")));
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn private_addresses_plain_http_unknown_types_and_the_plan_limit_are_refused(pool: PgPool) {
    let s = Stack::start(&pool, |c| {
        c.webhooks.allow_http_loopback = false;
        c.webhooks.retry_scale = 0.0001;
    })
    .await;
    let refused = |url: &'static str, types: Value, param: &'static str| {
        let s = &s;
        async move {
            let (status, body) =
                s.cp.call("POST", "/api/v1/webhooks", &s.key, Some(json!({"url": url, "event_types": types}))).await;
            assert_eq!(status, 422, "{url}: {body}");
            assert_eq!(body["error"]["details"]["param"], param, "{url}: {body}");
        }
    };
    refused("http://hooks.example.com/x", json!(["*"]), "url").await;
    refused("http://127.0.0.1:9/x", json!(["*"]), "url").await;
    refused("https://10.0.0.1/x", json!(["*"]), "url").await;
    refused("https://169.254.169.254/latest/meta-data", json!(["*"]), "url").await;
    refused("https://[::ffff:192.168.1.1]/x", json!(["*"]), "url").await;
    refused("https://[fd00::1]/x", json!(["*"]), "url").await;
    refused("https://hooks.example.com/x", json!(["task.exploded"]), "event_types").await;
    refused("https://hooks.example.com/x", json!([]), "event_types").await;

    // A name is checked when it is resolved, before each attempt: `localhost` is loopback.
    let _plan = put_on_plan(
        &s.cp,
        &s.admin,
        s.tenant,
        "one-hook",
        json!({
        "api_per_minute": 100000, "api_burst": 10000, "assistant_per_hour": 10, "assistant_burst": 5,
        "mqtt_per_minute": 600, "mqtt_burst": 100, "webhook_endpoints": 1}),
    )
    .await;
    let rx = Receiver::start();
    let (id, _) = s.endpoint(&format!("https://localhost:{}/x", rx.port), json!(["task.*"])).await;
    let (appliance, _) = appliance(&pool, s.tenant, "kitchen").await;
    s.cancelled_task(&s.cp, appliance).await;
    let d = eventually(Duration::from_secs(20), "an attempt refused", || async {
        let (_, log) = s.cp.get(&format!("/api/v1/webhooks/{id}/deliveries"), &s.key).await;
        let d = log["deliveries"][0].clone();
        d["last_error"].is_string().then_some(d)
    })
    .await;
    assert!(d["last_error"].as_str().unwrap().contains("no public address"), "{d}");
    assert_eq!(rx.log("x").await.len(), 0, "nothing reached the loopback receiver");

    // The plan allows one endpoint: the second is refused, and the tenant is told.
    let (status, body) =
        s.cp.call(
            "POST",
            "/api/v1/webhooks",
            &s.key,
            Some(json!({"url": "https://hooks.example.com/2", "event_types": ["*"]})),
        )
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("webhook_limit")), "{body}");
    assert_eq!(body["error"]["details"]["param"], "webhook_endpoints");
    let page = eventually(Duration::from_secs(5), "quota.exhausted", || async {
        let page = s.events("?type=quota.*").await;
        (!page["events"].as_array().unwrap().is_empty()).then_some(page)
    })
    .await;
    assert_eq!(page["events"][0]["data"]["quota"], "webhook_endpoints");
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn two_replicas_deliver_each_event_once_and_a_restart_loses_nothing(pool: PgPool) {
    let s = Stack::start(&pool, |_| {}).await;
    let mut second = ControlPlane::start(pool.clone(), config(&s.pki, &s.broker), &s.pki).await;
    let rx = Receiver::start();
    let (_, secret) = s.endpoint(&rx.url("both"), json!(["task.*"])).await;
    rx.secrets("both", &[&secret]).await;
    let mut appliances = Vec::new();
    for i in 0..4 {
        appliances.push(appliance(&pool, s.tenant, &format!("a{i}")).await.0);
    }
    for i in 0..40 {
        let cp = if i % 2 == 0 { &s.cp } else { &second };
        s.cancelled_task(cp, appliances[i % 4]).await;
    }
    let got = rx.wait("both", 40, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got_later = rx.log("both").await;
    let mut ids: Vec<&str> = got_later.iter().map(|d| d["webhook_id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!((ids.len(), got_later.len()), (40, 40), "each event once, from either replica");
    assert!(got.iter().all(|d| d["verified_by"] == json!([0])));
    // Per appliance, in the order the events happened.
    for a in &appliances {
        let positions: Vec<i64> = got_later
            .iter()
            .filter(|d| d["payload"]["appliance_id"] == a.to_string())
            .map(|d| d["payload"]["position"].as_i64().unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{a}: {positions:?}");
    }

    // Events written just before both replicas stop are delivered by the next one to start.
    for i in 0..20 {
        s.cancelled_task(&second, appliances[i % 4]).await;
    }
    let mut first = s.cp;
    first.stop().await;
    second.stop().await;
    let third = ControlPlane::start(pool.clone(), config(&s.pki, &s.broker), &s.pki).await;
    rx.wait("both", 60, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let all = rx.log("both").await;
    let mut ids: Vec<&str> = all.iter().map(|d| d["webhook_id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!((ids.len(), all.len()), (60, 60), "nothing lost, nothing twice across the restart");
    drop(third);
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn alert_rules_raise_once_per_outage_resolve_and_stay_quiet_for_blips(pool: PgPool) {
    let s = Stack::start(&pool, |_| {}).await;
    let rx = Receiver::start();
    let (_, secret) = s.endpoint(&rx.url("pager"), json!(["alert.*"])).await;
    rx.secrets("pager", &[&secret]).await;
    let (status, rules) = s.cp.get("/api/v1/alert-rules", &s.key).await;
    assert_eq!((status, rules), (200, json!({"offline_minutes": 10, "drift_minutes": 30, "task_failed": true})));
    let (status, body) =
        s.cp.call(
            "PUT",
            "/api/v1/alert-rules",
            &s.key,
            Some(json!({"offline_minutes": 0, "drift_minutes": 5, "task_failed": true})),
        )
        .await;
    assert_eq!((status, body["error"]["details"]["param"].as_str()), (422, Some("offline_minutes")));
    let (status, _) =
        s.cp.call(
            "PUT",
            "/api/v1/alert-rules",
            &s.key,
            Some(json!({"offline_minutes": 5, "drift_minutes": 5, "task_failed": true})),
        )
        .await;
    assert_eq!(status, 200);

    let (a, _) = appliance(&pool, s.tenant, "kitchen").await;
    let sweep = || async {
        hearth_control_plane::db::events::sweep_alerts(&pool, 10, 30, time::Duration::days(7)).await.expect("sweep")
    };
    let set = |sql: &'static str| {
        let pool = &pool;
        async move {
            sqlx::query(sql).bind(a).execute(pool).await.expect("set");
        }
    };
    // A blip (2 minutes offline) gives no alert; a 20-minute outage gives one, once.
    set("UPDATE appliances SET status = 'offline', status_since = now() - interval '2 minutes' WHERE id = $1").await;
    sweep().await;
    set("UPDATE appliances SET status_since = now() - interval '20 minutes' WHERE id = $1").await;
    sweep().await;
    sweep().await;
    // Back online: resolved; off again for a minute: nothing new.
    // (last_seen ahead, so the presence sweeper leaves the appliance online meanwhile)
    set("UPDATE appliances SET status = 'online', status_since = now(), last_seen = now() + interval '1 hour' WHERE id = $1").await;
    sweep().await;
    set("UPDATE appliances SET status = 'offline', status_since = now() - interval '1 minute' WHERE id = $1").await;
    sweep().await;

    // Configuration that has not converged for 10 minutes on an online appliance.
    set("UPDATE appliances SET status = 'online', status_since = now(), last_seen = now() + interval '1 hour' WHERE id = $1").await;
    sqlx::query(
        "INSERT INTO appliance_config (appliance_id, tenant_id, desired_version, applied_version, drift_since)
         VALUES ($1, $2, 3, 2, now() - interval '10 minutes')",
    )
    .bind(a)
    .bind(s.tenant)
    .execute(&pool)
    .await
    .expect("config");
    sweep().await;

    // A failed task (as the ingest records one): task.failed, and alert.task_failed while
    // the rule is on.
    let path = format!("/api/v1/appliances/{a}/tasks");
    let (_, t) = s.cp.call("POST", &path, &s.key, Some(json!({"action": "appliance.reboot"}))).await;
    sqlx::query("UPDATE tasks SET status = 'failed', message = 'boom', finished_at = now() WHERE id = $1")
        .bind(uuid::Uuid::parse_str(t["id"].as_str().unwrap()).unwrap())
        .execute(&pool)
        .await
        .expect("fail");

    let got = rx.wait("pager", 4, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let got_later = rx.log("pager").await;
    let kinds: Vec<&str> = got_later.iter().map(|d| d["payload"]["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["alert.appliance_offline", "alert.resolved", "alert.config_drift", "alert.task_failed"]);
    assert!(got.iter().all(|d| d["verified_by"] == json!([0])));
    assert_eq!(got_later[1]["payload"]["data"]["alert"], "alert.appliance_offline");
    assert_eq!(got_later[3]["payload"]["data"]["message"], "boom");

    // Suspending the tenant is an event too; every stored event reads into its type.
    let (status, _) = s
        .cp
        .call("PATCH", &format!("/api/v1/admin/tenants/{}", s.tenant), &s.admin, Some(json!({"status": "suspended"})))
        .await;
    assert_eq!(status, 200);
    let page = eventually(Duration::from_secs(5), "tenant.suspended", || async {
        let (_, page) = s.cp.get(&format!("/api/v1/admin/events?tenant_id={}", s.tenant), &s.admin).await;
        page["events"].as_array().unwrap().iter().any(|e| e["type"] == "tenant.suspended").then_some(page)
    })
    .await;
    for e in page["events"].as_array().unwrap() {
        payloads::check(e["type"].as_str().unwrap(), &e["data"]).unwrap_or_else(|err| panic!("{e}: {err}"));
    }
}

/// The cursor's promise: an event that commits after a later-inserted one still gets a
/// position after every position a reader may already have seen.
#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn an_event_committed_late_is_numbered_after_what_readers_have_seen(pool: PgPool) {
    use hearth_control_plane::db::events::{self as store, NewEvent};
    let (tenant, _) = tenant(&pool, "household").await;
    let event =
        |n: i32| NewEvent { kind: "quota.exhausted", tenant: Some(tenant), appliance: None, data: json!({"n": n}) };
    // The first event's transaction is still open when the second commits.
    let mut slow = pool.begin().await.expect("tx");
    store::record(&mut slow, &event(1)).await.expect("first");
    let mut fast = pool.begin().await.expect("tx");
    store::record(&mut fast, &event(2)).await.expect("second");
    fast.commit().await.expect("commit");
    assert_eq!(store::sequence(&pool, 100).await.expect("sequence"), 1, "only the committed one");
    let seen = store::list(&mut pool.acquire().await.unwrap(), &Default::default(), 100).await.expect("list");
    assert_eq!(seen.len(), 1);
    let cursor = seen[0].position;
    slow.commit().await.expect("commit");
    store::sequence(&pool, 100).await.expect("sequence");
    let filter = store::Filter { after: cursor, ..Default::default() };
    let after = store::list(&mut pool.acquire().await.unwrap(), &filter, 100).await.expect("list");
    assert_eq!(after.len(), 1, "the late event is after the reader's cursor");
    assert_eq!(after[0].data["n"], 1);
}
