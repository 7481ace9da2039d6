//! The agent updates itself, against the real stack: PostgreSQL, a TLS broker, the control
//! plane, and real agent binaries — this workspace's agent built in the test setup twice,
//! stamped 1.0.0 and 1.1.0 (`HEARTH_AGENT_VERSION`), each run as a process under a
//! supervisor that restarts it when it fails, as systemd's `Restart=on-failure` does. The
//! control plane delivers the signed build over HTTPS to the appliance's client
//! certificate; the agent checks it with its own keys, switches, and commits after its
//! health gate — or rolls back by itself, and the execution says why.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hearth_control_plane::config::{ArtifactsConfig, Config};
use hearth_control_plane::db::audit::{Actor, Recorder};
use hearth_control_plane::domain::artifacts;
use hearth_protocol::artifact::{self as art, Arch, Manifest, SigningKey};
use hearth_protocol::{ApplianceId, TenantId};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::support::agent::Appliance;
use crate::support::*;

const A: &str = "1.0.0";
const B: &str = "1.1.0";

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

fn public_key() -> String {
    art::encode_key(signing_key().verifying_key().as_bytes())
}

/// The build directory of the test binary (`<target>/debug/deps/it-…` → `<target>`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    exe.ancestors().nth(3).expect("target directory").to_path_buf()
}

/// This workspace's agent built stamped A and B, without debug info (a build an appliance
/// would get, and small enough to move quickly). Built once per test run, in a target
/// directory of its own so the test's own build is never touched.
fn builds() -> &'static (PathBuf, PathBuf) {
    static BUILDS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILDS.get_or_init(|| {
        let target = target_dir().join("agent-update-builds");
        let build = |version: &str| {
            let started = Instant::now();
            let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["build", "--locked", "-p", "hearth-agent", "--bin", "hearth-agent", "--target-dir"])
                .arg(&target)
                .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
                .env("HEARTH_AGENT_VERSION", version)
                .env("CARGO_PROFILE_DEV_DEBUG", "0")
                .env("CARGO_PROFILE_DEV_STRIP", "true")
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building the agent stamped {version} failed");
            let out = target.join(format!("stamped-{version}"));
            std::fs::create_dir_all(&out).expect("dir");
            let path = out.join("hearth-agent");
            std::fs::copy(target.join("debug/hearth-agent"), &path).expect("copy the build");
            eprintln!("agent stamped {version} built in {:.0?}", started.elapsed());
            path
        };
        (build(A), build(B))
    })
}

/// Signs `bytes` as `version` with the test key and stores it as an operator's upload.
async fn upload(pool: &PgPool, version: &str, bytes: &[u8]) -> art::SignedManifest {
    let arch = Arch::this().expect("a supported architecture");
    let signed = art::sign(&signing_key(), Manifest::of(bytes, version, arch).expect("manifest"));
    let cfg = ArtifactsConfig { public_keys: vec![public_key()], max_bytes: 256 << 20 };
    let actor = Actor::cli();
    artifacts::upload(pool, &cfg, bytes, &signed, Recorder::new(&actor, None)).await.expect("stored");
    signed
}

fn config(pki: &Pki, broker: &Broker) -> Config {
    let mut c = test_config(pki, broker);
    c.artifacts.public_keys = vec![public_key()];
    c.artifacts.max_bytes = 256 << 20;
    c.tasks.rollout_interval_ms = 200;
    c
}

/// A control plane with its broker, an operator token and one customer.
struct Stack {
    pki: Pki,
    _broker: Broker,
    cp: ControlPlane,
    admin: String,
    tenant: TenantId,
    key: String,
}

impl Stack {
    async fn start(pool: &PgPool) -> Stack {
        builds();
        let pki = Pki::new();
        let broker = Broker::start(&pki);
        let cp = ControlPlane::start(pool.clone(), config(&pki, &broker), &pki).await;
        let admin = operator(pool, "admin").await;
        let (tenant, key) = tenant(pool, "household").await;
        Stack { pki, _broker: broker, cp, admin, tenant, key }
    }

    /// An appliance running build A, once it reports A.
    async fn device(&self, pool: &PgPool, name: &str, window_s: u64) -> Device {
        let d = Device::start(&self.cp, &self.pki, pool, self.tenant, name, window_s).await;
        running_version(pool, &d, A).await;
        d
    }
}

/// Spawns, retrying "Text file busy": a binary just copied by this test process can be held
/// open for writing for a moment by a child another test thread forked meanwhile.
fn spawn_retrying_busy(
    mut spawn: impl FnMut() -> std::io::Result<std::process::Child>,
) -> std::io::Result<std::process::Child> {
    for _ in 0..50 {
        match spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(Duration::from_millis(100))
            }
            other => return other,
        }
    }
    spawn()
}

/// One appliance running the installed binary (a copy of build A) under a supervisor that
/// starts it again whenever it fails, like systemd's `Restart=on-failure`.
struct Device {
    id: ApplianceId,
    appliance: Appliance,
    dir: tempfile::TempDir,
    stop: Arc<AtomicBool>,
    pid: Arc<Mutex<Option<u32>>>,
    supervisor: Option<std::thread::JoinHandle<()>>,
}

impl Device {
    async fn start(cp: &ControlPlane, pki: &Pki, pool: &PgPool, tenant: TenantId, name: &str, window_s: u64) -> Device {
        let appliance = Appliance::enroll(cp, pki, pool, tenant, name).await;
        let dir = tempfile::tempdir().expect("dir");
        std::fs::create_dir_all(dir.path().join("bin")).expect("bin");
        let installed = dir.path().join("bin/hearth-agent");
        std::fs::copy(&builds().0, &installed).expect("install build A");
        let ansible = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ansible");
        let config = format!(
            "state_dir = {:?}\nheartbeat_interval_s = 1\nbackoff_initial_ms = 200\nbackoff_max_ms = 1000\n\
             ansible_dir = {:?}\nhearth_root = {:?}\nmanage_services = false\n\
             update_public_keys = [{:?}]\nupdate_health_window_s = {window_s}\n",
            appliance.state.path(),
            ansible,
            appliance.sandbox.path(),
            public_key(),
        );
        std::fs::write(dir.path().join("agent.toml"), config).expect("config");
        let mut b = Device {
            id: appliance.id,
            appliance,
            dir,
            stop: Arc::new(AtomicBool::new(false)),
            pid: Arc::new(Mutex::new(None)),
            supervisor: None,
        };
        b.supervise();
        b
    }

    fn supervise(&mut self) {
        let (stop, pid) = (self.stop.clone(), self.pid.clone());
        let installed = self.dir.path().join("bin/hearth-agent");
        let config = self.dir.path().join("agent.toml");
        let log = self.log_path();
        self.supervisor = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log");
                let mut child = spawn_retrying_busy(|| {
                    Command::new(&installed)
                        .args(["run", "--config"])
                        .arg(&config)
                        .env("RUST_LOG", "info")
                        .stdin(Stdio::null())
                        .stdout(out.try_clone().expect("log"))
                        .stderr(out.try_clone().expect("log"))
                        .spawn()
                })
                .expect("start the agent");
                *pid.lock().unwrap() = Some(child.id());
                let status = child.wait().expect("wait");
                *pid.lock().unwrap() = None;
                let mut out = std::fs::OpenOptions::new().append(true).open(&log).expect("log");
                let _ = writeln!(out, "--- supervisor: the agent exited with {status}");
                if status.success() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        }));
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn update_state(&self) -> String {
        std::fs::read_to_string(self.appliance.state.path().join("update/update.toml")).unwrap_or_default()
    }

    /// The binary the agent process runs now.
    fn running_binary(&self) -> Option<PathBuf> {
        let pid = (*self.pid.lock().unwrap())?;
        std::fs::read_link(format!("/proc/{pid}/exe")).ok()
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(pid) = *self.pid.lock().unwrap() {
            let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
        if let Some(t) = self.supervisor.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn agent_version(pool: &PgPool, id: ApplianceId) -> Option<String> {
    sqlx::query_scalar("SELECT agent_version FROM appliances WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("appliance")
}

async fn running_version(pool: &PgPool, b: &Device, version: &str) {
    eventually(Duration::from_secs(60), &format!("{} reports {version}", b.id), || async {
        (agent_version(pool, b.id).await.as_deref() == Some(version)).then_some(())
    })
    .await;
}

async fn rollout(cp: &ControlPlane, admin: &str, body: Value) -> String {
    let (status, r) = cp.call("POST", "/api/v1/admin/rollouts", admin, Some(body)).await;
    assert_eq!(status, 201, "{r}");
    r["id"].as_str().expect("id").to_string()
}

/// Polls the rollout until it is final; returns it and its executions.
async fn finished(cp: &ControlPlane, admin: &str, id: &str, boxes: &[&Device]) -> (Value, Vec<Value>) {
    let path = format!("/api/v1/admin/rollouts/{id}");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (status, r) = cp.get(&path, admin).await;
        assert_eq!(status, 200, "{r}");
        if ["succeeded", "aborted", "cancelled"].contains(&r["state"].as_str().unwrap_or_default()) {
            let (_, page) = cp.get(&format!("{path}/executions"), admin).await;
            return (r, page["executions"].as_array().cloned().unwrap_or_default());
        }
        if Instant::now() > deadline {
            let logs: Vec<String> =
                boxes.iter().map(|b| format!("{}:\n{}\n{}", b.id, b.update_state(), b.log())).collect();
            panic!("rollout {id} did not finish: {r:#}\n{}", logs.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn execution(executions: &[Value], id: ApplianceId) -> &Value {
    executions.iter().find(|e| e["appliance_id"] == id.to_string()).expect("the appliance's execution")
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn an_update_rolls_out_in_waves_commits_and_keeps_tasks(pool: PgPool) {
    let (_, build_b) = builds();
    let s = Stack::start(&pool).await;
    let (cp, admin, key) = (&s.cp, s.admin.as_str(), s.key.as_str());
    let mut boxes = Vec::new();
    for n in 0..3 {
        boxes.push(s.device(&pool, &format!("box-{n}"), 60).await);
    }
    // A task before the update: its record stays on the appliance across the update.
    let before = create_task(cp, key, boxes[0].id, "printer.home").await;
    task_succeeds(cp, key, &before).await;

    let bytes = std::fs::read(build_b).expect("build B");
    upload(&pool, B, &bytes).await;
    // A tenant cannot roll out an agent update, not even to its own appliances.
    let body = json!({"name": "agent 1.1.0", "payload": {"agent_update": {"version": B}},
                      "policy": {"waves": {"count": [1, 3]}}});
    let (status, e) = cp.call("POST", "/api/v1/rollouts", key, Some(body.clone())).await;
    assert_eq!((status, e["error"]["code"].as_str()), (403, Some("operator_only")), "{e}");
    // A version nobody uploaded is refused up front.
    let (status, e) = cp
        .call(
            "POST",
            "/api/v1/admin/rollouts",
            admin,
            Some(json!({"name": "x", "payload": {"agent_update": {"version": "9.9.9"}}})),
        )
        .await;
    assert_eq!((status, e["error"]["details"]["param"].as_str()), (422, Some("payload.agent_update.version")), "{e}");

    let started = Instant::now();
    let id = rollout(cp, admin, body).await;
    let refs: Vec<&Device> = boxes.iter().collect();
    let (r, executions) = finished(cp, admin, &id, &refs).await;
    let took = started.elapsed();
    assert_eq!(r["state"], "succeeded", "{r:#}");
    assert_eq!(r["progress"]["succeeded"], 3, "{r:#}");
    assert_eq!(r["wave_sizes"], json!([1, 3]), "{r:#}");
    eprintln!("3 agents updated from {A} to {B} in two waves in {took:.1?}");
    for b in &boxes {
        let e = execution(&executions, b.id);
        assert_eq!((e["state"].as_str(), e["update_step"].as_str()), (Some("succeeded"), Some("committed")), "{e:#}");
        assert!(
            e["message"].as_str().unwrap_or_default().contains(&format!("version {B} committed (was {A})")),
            "{e:#}"
        );
        running_version(&pool, b, B).await;
        let binary = b.running_binary().expect("running");
        assert!(binary.ends_with("update/slots/a/hearth-agent"), "{}", binary.display());
        assert!(b.update_state().contains("current = \"a\""), "{}", b.update_state());
    }
    // The whole story is in the task's log: received, downloaded, switched, committed.
    let task = executions[0]["task_id"].as_str().expect("task id");
    let (_, events) = cp.get(&format!("/api/v1/tasks/{task}"), key).await;
    let kinds: Vec<&str> =
        events["events"].as_array().expect("events").iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(kinds, ["received", "downloaded", "switched", "committed"], "{events:#}");
    // The fleet counts versions.
    let (_, summary) = cp.get("/api/v1/admin/fleet/summary", admin).await;
    assert_eq!(summary["agent_versions"], json!([{"version": B, "appliances": 3}]), "{summary:#}");

    // The task done before the update is still on record, and the new version runs tasks.
    assert!(boxes[0].appliance.state.path().join(format!("tasks/{before}.json")).exists(), "ledger kept");
    let after = create_task(cp, key, boxes[0].id, "nas.home").await;
    task_succeeds(cp, key, &after).await;
    // Same version again: nothing to do.
    let again = rollout(cp, admin, json!({"name": "again", "payload": {"agent_update": {"version": B}}})).await;
    let (r, executions) = finished(cp, admin, &again, &refs).await;
    assert_eq!(r["state"], "succeeded", "{r:#}");
    assert!(executions[0]["message"].as_str().unwrap_or_default().contains("already running"), "{executions:#?}");

    // A package upgraded by hand: the installed binary is replaced (here by build A again)
    // and the service started anew; that binary runs, not the updated slot.
    let d = &mut boxes[0];
    d.stop();
    let installed = d.dir.path().join("bin/hearth-agent");
    std::fs::remove_file(&installed).expect("remove");
    std::fs::copy(&builds().0, &installed).expect("reinstall build A");
    d.stop.store(false, Ordering::SeqCst);
    d.supervise();
    running_version(&pool, d, A).await;
    assert_eq!(d.running_binary().as_deref(), Some(installed.as_path()));
    assert!(d.update_state().contains("current = \"installed\""), "{}", d.update_state());
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn a_build_that_exits_at_start_ends_in_the_old_version(pool: PgPool) {
    let s = Stack::start(&pool).await;
    let (cp, admin) = (&s.cp, s.admin.as_str());
    let b = s.device(&pool, "box", 60).await;
    // A signed build that exits at once, whatever it is asked: a crash loop.
    upload(&pool, "2.0.0", &std::fs::read("/usr/bin/false").expect("/usr/bin/false")).await;
    let id = rollout(cp, admin, json!({"name": "broken", "payload": {"agent_update": {"version": "2.0.0"}}})).await;
    let (r, executions) = finished(cp, admin, &id, &[&b]).await;
    let e = execution(&executions, b.id);
    assert_eq!((e["state"].as_str(), e["update_step"].as_str()), (Some("failed"), Some("rolled_back")), "{r:#}\n{e:#}");
    let message = e["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(&format!("rolled back to version {A}: version 2.0.0 was started 3 times")),
        "{message}"
    );
    running_version(&pool, &b, A).await;
    assert_eq!(b.running_binary().as_deref(), Some(b.dir.path().join("bin/hearth-agent").as_path()));
    assert!(b.update_state().contains("current = \"installed\""), "{}", b.update_state());
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn a_version_that_cannot_reach_the_broker_is_rolled_back_after_its_window(pool: PgPool) {
    let (_, build_b) = builds();
    let s = Stack::start(&pool).await;
    let (cp, admin) = (&s.cp, s.admin.as_str());
    let b = s.device(&pool, "box", 10).await;
    upload(&pool, B, &std::fs::read(build_b).expect("build B")).await;

    // The configuration the new version starts with points at a port nobody listens on;
    // once it runs, the old configuration comes back for the version that comes back.
    let config_path = b.dir.path().join("agent.toml");
    let good = std::fs::read_to_string(&config_path).expect("config");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    std::fs::write(&config_path, format!("{good}broker_port = {closed}\n")).expect("config");
    let id = rollout(cp, admin, json!({"name": "cut off", "payload": {"agent_update": {"version": B}}})).await;
    eventually(Duration::from_secs(60), "the new version running", || async {
        b.running_binary().filter(|p| p.ends_with("update/slots/a/hearth-agent")).map(|_| ())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::fs::write(&config_path, &good).expect("config");

    let (r, executions) = finished(cp, admin, &id, &[&b]).await;
    let e = execution(&executions, b.id);
    assert_eq!((e["state"].as_str(), e["update_step"].as_str()), (Some("failed"), Some("rolled_back")), "{r:#}\n{e:#}");
    let message = e["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!(
            "version {B} did not pass its health gate within 10 s: still waiting for a connection to the broker"
        )),
        "{message}"
    );
    running_version(&pool, &b, A).await;
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn the_agent_refuses_what_its_own_keys_do_not_vouch_for(pool: PgPool) {
    let (_, build_b) = builds();
    let s = Stack::start(&pool).await;
    let (cp, admin) = (&s.cp, s.admin.as_str());
    let b = s.device(&pool, "box", 60).await;
    let bytes = std::fs::read(build_b).expect("build B");
    let signed = upload(&pool, B, &bytes).await;

    // A control plane made to serve other bytes under the signed manifest.
    sqlx::query("UPDATE agent_artifacts SET data = set_byte(data, 1000, get_byte(data, 1000) # 255) WHERE sha256 = $1")
        .bind(&signed.manifest.sha256)
        .execute(&pool)
        .await
        .expect("tamper");
    let id = rollout(cp, admin, json!({"name": "tampered", "payload": {"agent_update": {"version": B}}})).await;
    let (_, executions) = finished(cp, admin, &id, &[&b]).await;
    let e = execution(&executions, b.id);
    assert_eq!(e["state"], "rejected", "{e:#}");
    let message = e["message"].as_str().unwrap_or_default();
    assert!(message.contains("refused") && message.contains("SHA-256"), "{message}");

    // A control plane made to send a build signed by a key the agent does not trust.
    let stranger = SigningKey::from_bytes(&[9; 32]);
    let forged = art::sign(&stranger, signed.manifest.clone());
    sqlx::query("UPDATE agent_artifacts SET signature = $2 WHERE sha256 = $1")
        .bind(&signed.manifest.sha256)
        .bind(serde_json::to_string(&forged).expect("json"))
        .execute(&pool)
        .await
        .expect("forge");
    let id = rollout(cp, admin, json!({"name": "forged", "payload": {"agent_update": {"version": B}}})).await;
    let (_, executions) = finished(cp, admin, &id, &[&b]).await;
    let e = execution(&executions, b.id);
    assert_eq!(e["state"], "rejected", "{e:#}");
    assert!(e["message"].as_str().unwrap_or_default().contains("not one of the trusted keys"), "{e:#}");

    // An older version without the rollout allowing a downgrade.
    upload(&pool, "0.9.0", &std::fs::read("/usr/bin/true").expect("/usr/bin/true")).await;
    let id = rollout(cp, admin, json!({"name": "older", "payload": {"agent_update": {"version": "0.9.0"}}})).await;
    let (_, executions) = finished(cp, admin, &id, &[&b]).await;
    let e = execution(&executions, b.id);
    assert_eq!(e["state"], "rejected", "{e:#}");
    assert!(e["message"].as_str().unwrap_or_default().contains("a downgrade must be allowed"), "{e:#}");

    // Nothing was installed; the agent runs version A from the installed binary.
    assert_eq!(agent_version(&pool, b.id).await.as_deref(), Some(A));
    assert_eq!(b.running_binary().as_deref(), Some(b.dir.path().join("bin/hearth-agent").as_path()));
    assert!(!b.appliance.state.path().join("update/slots").exists());
}

/// A catalog task for the appliance; returns its id.
async fn create_task(cp: &ControlPlane, key: &str, appliance: ApplianceId, host: &str) -> String {
    let body = json!({"action": "dns.record.add", "params": {"hostname": host, "ip": "192.168.1.50"}});
    let (status, t) = cp.call("POST", &format!("/api/v1/appliances/{appliance}/tasks"), key, Some(body)).await;
    assert_eq!(status, 202, "{t}");
    t["id"].as_str().expect("id").to_string()
}

async fn task_succeeds(cp: &ControlPlane, key: &str, id: &str) {
    eventually(Duration::from_secs(60), &format!("task {id} succeeded"), || async {
        let (_, t) = cp.get(&format!("/api/v1/tasks/{id}"), key).await;
        assert_ne!(t["status"], "failed", "{t:#}");
        (t["status"] == "succeeded").then_some(())
    })
    .await;
}
