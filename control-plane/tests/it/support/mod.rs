//! Test harness: PKI, broker, control plane and MQTT probes.

#![allow(dead_code)]

pub mod agent;
pub mod broker;
pub mod mqtt;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hearth_control_plane::config::Config;
use hearth_control_plane::pki;
use hearth_control_plane::secret::Secret;
use hearth_control_plane::serve::{self, Running};
use hearth_protocol::{ApplianceId, TenantId};
use sqlx::PgPool;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

pub use agent::Appliance;
pub use broker::Broker;

/// A fleet PKI in a temporary directory.
pub struct Pki {
    pub dir: TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        pki::init(dir.path(), &pki::InitOptions::default()).expect("pki init");
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).expect("pki file")
    }

    /// A client certificate for appliance `id`, signed by this CA, with its key.
    pub fn appliance_cert(&self, id: ApplianceId) -> (String, String) {
        let ca = pki::CertificateAuthority::load(self.dir.path()).expect("ca");
        let key = rcgen::KeyPair::generate().expect("key");
        let csr = rcgen::CertificateParams::default().serialize_request(&key).expect("csr").pem().expect("pem");
        (ca.sign_appliance(&csr, id, time::Duration::days(1)).expect("sign").pem, key.serialize_pem())
    }
}

/// A running control plane (HTTPS API, MQTT ingest, sweeper) for one test.
pub struct ControlPlane {
    pub url: String,
    pub http: reqwest::Client,
    pub pool: PgPool,
    pub running: Option<Running>,
    pub shutdown: CancellationToken,
}

pub fn test_config(pki: &Pki, broker: &Broker) -> Config {
    let mut c = Config::default();
    c.database.url = Secret::new("postgres://unused".into());
    c.http.listen = ([127, 0, 0, 1], 0).into();
    c.mqtt.host = "127.0.0.1".into();
    c.mqtt.port = broker.service_port;
    c.mqtt.public_port = broker.port;
    c.mqtt.client_id = Some(format!("hearth-cp-test-{}", uuid::Uuid::new_v4()));
    c.pki.dir = pki.dir.path().to_owned();
    c.pki.crl_reload_command = Some(broker.reload_command());
    c.presence.offline_after_s = 2.0;
    c.presence.sweep_interval_s = 0.25;
    c.ingest.batch_wait_ms = 20;
    // Tests read each heartbeat's metrics (the shipped default writes them once a minute).
    c.ingest.metrics_every_s = 0;
    // Tests poll the API and publish as fast as they like; the rate-limit tests put a
    // tenant on a plan.
    c.limits.api_per_minute = 1_000_000;
    c.limits.api_burst = 100_000;
    c.limits.assistant_per_hour = 1_000_000;
    c.limits.assistant_burst = 100_000;
    c.limits.mqtt_per_minute = 1_000_000;
    c.limits.mqtt_burst = 100_000;
    c
}

impl ControlPlane {
    /// Starts `serve` on a service-role pool over the test's database, as production runs
    /// it (`pool`, the test's superuser pool, stays for the test's own checks).
    pub async fn start(pool: PgPool, config: Config, pki: &Pki) -> ControlPlane {
        let shutdown = CancellationToken::new();
        let service = hearth_control_plane::db::service_pool_like(&pool, 10);
        let running = serve::start(&config, service, shutdown.clone()).await.expect("control plane starts");
        let url = format!("https://127.0.0.1:{}", running.http_addr.port());
        ControlPlane { url, http: https_client(&pki.read(pki::files::CA_CERT)), pool, running: Some(running), shutdown }
    }

    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(r) = self.running.take() {
            tokio::time::timeout(Duration::from_secs(15), r.wait())
                .await
                .expect("stops in time")
                .expect("stops cleanly");
        }
    }

    pub async fn get(&self, path: &str, key: &str) -> (u16, serde_json::Value) {
        let r = self.http.get(format!("{}{path}", self.url)).bearer_auth(key).send().await.expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Any request with a bearer credential and an optional JSON body: status, headers, JSON.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        credential: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, format!("{}{path}", self.url)).bearer_auth(credential);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("request");
        let (status, headers) = (r.status().as_u16(), r.headers().clone());
        (status, headers, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// [`Self::request`] without the headers.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        credential: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let (status, _, body) = self.request(method, path, credential, body).await;
        (status, body)
    }

    pub async fn metrics(&self) -> String {
        self.http.get(format!("{}/metrics", self.url)).send().await.expect("metrics").text().await.expect("text")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// An HTTPS client trusting only the fleet CA.
pub fn https_client(ca_pem: &[u8]) -> reqwest::Client {
    let tls = hearth_protocol::tls::client_config(ca_pem).expect("tls");
    reqwest::Client::builder().use_preconfigured_tls(tls).timeout(Duration::from_secs(10)).build().expect("client")
}

/// A tenant and its API key.
pub async fn tenant(pool: &PgPool, name: &str) -> (TenantId, String) {
    let (t, key) = hearth_control_plane::db::tenants::create(pool, name).await.expect("tenant");
    (t.id, key.expose().clone())
}

/// An operator token with `role` (admin, support, viewer).
pub async fn operator(pool: &PgPool, role: &str) -> String {
    let mut conn = pool.acquire().await.expect("conn");
    let (_, token) = hearth_control_plane::db::operators::create(
        &mut conn,
        &format!("test-{role}"),
        role.parse().expect("role"),
        "test",
    )
    .await
    .expect("operator");
    token.expose().clone()
}

/// A plan with `quotas` (the plan API's fields besides `name`), made with the admin API,
/// and `tenant` put on it; the plan's id.
pub async fn put_on_plan(
    cp: &ControlPlane,
    admin: &str,
    tenant: TenantId,
    name: &str,
    quotas: serde_json::Value,
) -> String {
    let mut body = quotas;
    body["name"] = name.into();
    let (status, plan) = cp.call("POST", "/api/v1/admin/plans", admin, Some(body)).await;
    assert_eq!(status, 201, "{plan}");
    let id = plan["id"].as_str().expect("plan id").to_string();
    let (status, t) = cp
        .call("PATCH", &format!("/api/v1/admin/tenants/{tenant}"), admin, Some(serde_json::json!({"plan_id": id})))
        .await;
    assert_eq!(status, 200, "{t}");
    id
}

/// The password every test user gets.
pub const PASSWORD: &str = "correct horse battery staple";

/// A tenant user with [`PASSWORD`].
pub async fn user(pool: &PgPool, tenant: TenantId, email: &str, role: &str) -> hearth_protocol::UserId {
    let mut conn = pool.acquire().await.expect("conn");
    hearth_control_plane::db::users::create(&mut conn, tenant, email, PASSWORD, role.parse().expect("role"))
        .await
        .expect("user")
        .id
}

/// Signs in through the API; returns the session token.
pub async fn sign_in(cp: &ControlPlane, email: &str) -> String {
    let r = cp
        .http
        .post(format!("{}/api/v1/auth/login", cp.url))
        .json(&serde_json::json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status().as_u16(), 200, "sign-in of {email}");
    let body: serde_json::Value = r.json().await.expect("json");
    body["token"].as_str().expect("token").to_string()
}

/// A registered appliance and its enrollment token.
pub async fn appliance(pool: &PgPool, tenant: TenantId, name: &str) -> (ApplianceId, String) {
    let (id, token, _) =
        hearth_control_plane::db::enrollment::create_appliance(pool, tenant, name, time::Duration::hours(1))
            .await
            .expect("appliance");
    (id, token.expose().clone())
}

/// Polls `check` until it returns Some, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of one sample line of a Prometheus text exposition, e.g.
/// `hearth_mqtt_decode_errors_total{kind="heartbeat",reason="malformed"}`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
}

pub fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).expect("write");
    p
}

pub fn arc<T>(t: T) -> Arc<T> {
    Arc::new(t)
}

/// Polls the tenant API until the appliance has `status`; returns its detail.
pub async fn wait_status(cp: &ControlPlane, key: &str, id: ApplianceId, status: &str) -> serde_json::Value {
    eventually(Duration::from_secs(15), &format!("appliance {status}"), || async {
        let (_, body) = cp.get(&format!("/api/v1/appliances/{id}"), key).await;
        (body["status"] == status).then_some(body)
    })
    .await
}
