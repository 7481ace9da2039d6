//! The support chat API end to end: a signed-in customer asks, the assistant proposes, the
//! customer confirms, and the task runs on the real agent (real `ansible-playbook` in a
//! sandbox root) while the event stream shows its progress. Also: conversations are the
//! tenant's own, nothing the model says becomes a task unvetted, stale proposals cannot be
//! confirmed, a tenant may let low-risk tasks run at once, and the assistant's own rate
//! limit answers 429 saying so.

use std::time::Duration;

use hearth_control_plane::config::Config;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::assistant::{model_says, StandIn};
use crate::support::*;

/// The server-sent events of one stream, read as they come.
struct Events {
    response: reqwest::Response,
    buf: String,
}

impl Events {
    async fn open(cp: &ControlPlane, pki: &Pki, credential: &str, conversation: &str) -> Events {
        // No overall timeout: the stream stays open.
        let tls =
            hearth_protocol::tls::client_config(&pki.read(hearth_control_plane::pki::files::CA_CERT)).expect("tls");
        let client = reqwest::Client::builder().use_preconfigured_tls(tls).build().expect("client");
        let response = client
            .get(format!("{}/api/v1/support/conversations/{conversation}/events", cp.url))
            .bearer_auth(credential)
            .send()
            .await
            .expect("stream");
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Events { response, buf: String::new() }
    }

    /// The next event: (name, data).
    async fn next(&mut self) -> (String, Value) {
        loop {
            if let Some(i) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..i + 2).collect();
                let mut name = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return (name, serde_json::from_str(&data).expect("event data is JSON"));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(90), self.response.chunk())
                .await
                .expect("an event within 90 s")
                .expect("stream")
                .expect("the stream stays open");
            self.buf.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        }
    }

    /// Events until `until` matches one (included).
    async fn until(&mut self, mut until: impl FnMut(&str, &Value) -> bool) -> Vec<(String, Value)> {
        let mut seen = Vec::new();
        loop {
            let (name, data) = self.next().await;
            let stop = until(&name, &data);
            seen.push((name, data));
            if stop {
                return seen;
            }
        }
    }
}

async fn open(cp: &ControlPlane, credential: &str, appliance: Option<&str>) -> String {
    let body = appliance.map_or(json!({}), |a| json!({ "appliance_id": a }));
    let (status, c) = cp.call("POST", "/api/v1/support/conversations", credential, Some(body)).await;
    assert_eq!(status, 201, "{c}");
    c["id"].as_str().expect("id").to_string()
}

async fn say(cp: &ControlPlane, credential: &str, conversation: &str, text: &str) -> Value {
    let (status, r) = cp
        .call(
            "POST",
            &format!("/api/v1/support/conversations/{conversation}/messages"),
            credential,
            Some(json!({ "text": text })),
        )
        .await;
    assert_eq!(status, 201, "{r}");
    r
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn a_customer_asks_confirms_and_watches_the_task_run_on_the_agent(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let (t, _) = tenant(&pool, "acme").await;
    user(&pool, t, "ann@acme.example", "member").await;
    let session = sign_in(&cp, "ann@acme.example").await;
    let a = Appliance::enroll(&cp, &pki, &pool, t, "kitchen").await;
    let (_stop, _agent) = a.start();
    wait_status(&cp, &session, a.id, "online").await;

    let conversation = open(&cp, &session, Some(&a.id.to_string())).await;
    let mut events = Events::open(&cp, &pki, &session, &conversation).await;

    // A question gets an answer and no task.
    let r = say(&cp, &session, &conversation, "How do I open my shares from Windows?").await;
    assert_eq!(r["customer"]["seq"], 1);
    assert_eq!(r["assistant"]["seq"], 2);
    assert_eq!(r["assistant"]["backend"], "rules");
    assert!(r["assistant"]["proposal"].is_null(), "{r:#}");
    assert!(r["assistant"]["text"].as_str().unwrap().contains("\\\\"), "a Windows share path: {r:#}");

    // A request gets a proposal that waits for confirmation.
    let r = say(&cp, &session, &conversation, "please add a DNS record printer.home pointing to 192.168.1.50").await;
    let p = &r["assistant"]["proposal"];
    assert_eq!(p["action"], "dns.record.add", "{r:#}");
    assert_eq!(p["params"], json!({"hostname": "printer.home", "ip": "192.168.1.50"}));
    assert_eq!(p["appliance_id"], a.id.to_string());
    assert_eq!((p["status"].as_str(), p["needs_confirmation"].as_bool()), (Some("pending"), Some(true)));
    assert!(p["task_id"].is_null());
    let proposal = p["id"].as_str().unwrap().to_string();
    let (_, tasks) = cp.get(&format!("/api/v1/appliances/{}/tasks", a.id), &session).await;
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), 0, "nothing runs before the customer confirms");

    // The stream shows the four messages, the last with its proposal.
    let seen = events.until(|name, d| name == "message" && d["seq"] == 4).await;
    let seqs: Vec<i64> = seen.iter().filter(|(n, _)| n == "message").map(|(_, d)| d["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert_eq!(seen.last().unwrap().1["proposal"]["id"], proposal.as_str());

    // Confirm: the task is created (validated again) and runs on the real agent.
    let (status, headers, confirmed) = cp
        .request(
            "POST",
            &format!("/api/v1/support/conversations/{conversation}/proposals/{proposal}/confirm"),
            &session,
            None,
        )
        .await;
    assert_eq!(status, 202, "{confirmed}");
    assert_eq!(confirmed["status"], "confirmed");
    let task = confirmed["task_id"].as_str().expect("task id").to_string();
    assert_eq!(headers["location"], format!("/api/v1/tasks/{task}"));

    // The stream: the proposal confirmed, then the task's events and its end.
    let seen = events.until(|name, d| name == "task" && d["task"]["status"] == "succeeded").await;
    assert!(
        seen.iter().any(|(n, d)| n == "proposal" && d["status"] == "confirmed" && d["task_id"] == task.as_str()),
        "{seen:#?}"
    );
    let kinds: Vec<&str> = seen
        .iter()
        .filter(|(n, d)| n == "task_event" && d["task_id"] == task.as_str())
        .filter_map(|(_, d)| d["event"]["kind"].as_str())
        .collect();
    assert_eq!(kinds.first(), Some(&"received"), "{seen:#?}");
    assert!(kinds.contains(&"task_changed"), "{kinds:?}");
    assert!(a.file("etc/dnsmasq.d/hearth-records.conf").contains("host-record=printer.home,192.168.1.50"));

    // Once only.
    let (status, body) = cp
        .call(
            "POST",
            &format!("/api/v1/support/conversations/{conversation}/proposals/{proposal}/confirm"),
            &session,
            None,
        )
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("proposal_not_pending")));

    // The audit trail: the customer confirmed, the assistant created the task on their behalf.
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT action, actor_kind, actor_name FROM audit_log WHERE tenant_id = $1 AND action IN
         ('support.proposal.confirm', 'task.create') ORDER BY id",
    )
    .bind(t)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            ("task.create".into(), "assistant".into(), Some("tenant_user:ann@acme.example".into())),
            ("support.proposal.confirm".into(), "tenant_user".into(), Some("ann@acme.example".into())),
        ]
    );

    // Everything is stored: the conversation reads back with its messages and proposal.
    let (status, c) = cp.get(&format!("/api/v1/support/conversations/{conversation}"), &session).await;
    assert_eq!(status, 200);
    assert_eq!(c["messages"].as_array().unwrap().len(), 4);
    assert_eq!(c["messages"][3]["proposal"]["task_id"], task.as_str());
    let (_, list) = cp.get("/api/v1/support/conversations", &session).await;
    assert_eq!(list["conversations"][0]["id"], conversation.as_str());
    assert_eq!(list["conversations"][0]["started_by"], "tenant_user:ann@acme.example");

    // A stream resumed after message 3 replays only message 4, then the proposal's task.
    let client = https_client(&pki.read(hearth_control_plane::pki::files::CA_CERT));
    let r = client
        .get(format!("{}/api/v1/support/conversations/{conversation}/events", cp.url))
        .bearer_auth(&session)
        .header("Last-Event-ID", "3")
        .send()
        .await
        .unwrap();
    let mut resumed = Events { response: r, buf: String::new() };
    let seen = resumed.until(|name, d| name == "task" && d["task"]["status"] == "succeeded").await;
    let seqs: Vec<i64> = seen.iter().filter(|(n, _)| n == "message").map(|(_, d)| d["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [4]);
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn conversations_are_the_tenants_own(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let (a, key_a) = tenant(&pool, "a").await;
    let (_, key_b) = tenant(&pool, "b").await;
    let (box_a, _) = appliance(&pool, a, "kitchen").await;
    let conversation = open(&cp, &key_a, Some(&box_a.to_string())).await;
    let r = say(&cp, &key_a, &conversation, "add a DNS record nas.home for 192.168.1.20").await;
    let proposal = r["assistant"]["proposal"]["id"].as_str().expect("a proposal").to_string();

    // B opening a chat about A's appliance, or touching A's conversation: the same 404 as
    // an id that does not exist.
    let missing = uuid::Uuid::now_v7();
    let (status, body) =
        cp.call("POST", "/api/v1/support/conversations", &key_b, Some(json!({"appliance_id": box_a}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));
    for id in [conversation.clone(), missing.to_string()] {
        for (method, path, body) in [
            ("GET", format!("/api/v1/support/conversations/{id}"), None),
            ("POST", format!("/api/v1/support/conversations/{id}/messages"), Some(json!({"text": "hello"}))),
            ("POST", format!("/api/v1/support/conversations/{id}/proposals/{proposal}/confirm"), None),
            ("GET", format!("/api/v1/support/conversations/{id}/events"), None),
        ] {
            let (status, body) = cp.call(method, &path, &key_b, body).await;
            assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{method} {path}");
        }
    }
    let (_, list) = cp.get("/api/v1/support/conversations", &key_b).await;
    assert_eq!(list["conversations"], json!([]));

    // A's request naming B's… no: a foreign appliance id in A's own words is refused.
    let (b, _) = tenant(&pool, "c").await;
    let (box_c, _) = appliance(&pool, b, "other").await;
    let r = say(&cp, &key_a, &conversation, &format!("restart the dns service on appliance {box_c}")).await;
    assert!(r["assistant"]["proposal"].is_null(), "{r:#}");

    // Bad input: clear errors, nothing stored.
    let path = format!("/api/v1/support/conversations/{conversation}/messages");
    let (status, body) = cp.call("POST", &path, &key_a, Some(json!({"text": "  "}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_body")));
    let (status, body) = cp.call("POST", &path, &key_a, Some(json!({"text": "x".repeat(4001)}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("message_too_long")));
    let (status, body) = cp.call("POST", &path, &key_a, Some(json!({"text": "hi", "role": "assistant"}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_body")));
    let (_, c) = cp.get(&format!("/api/v1/support/conversations/{conversation}"), &key_a).await;
    assert_eq!(c["messages"].as_array().unwrap().len(), 4);
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn the_models_words_never_become_an_unvetted_task(pool: PgPool) {
    let (stand_in, addr) = StandIn::start().await;
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let mut config: Config = test_config(&pki, &broker);
    config.assistant.ollama_url = Some(format!("http://{addr}"));
    config.assistant.timeout_ms = 2000;
    let cp = ControlPlane::start(pool.clone(), config, &pki).await;
    let (a, key) = tenant(&pool, "a").await;
    let (b, _) = tenant(&pool, "b").await;
    let (box_a, _) = appliance(&pool, a, "kitchen").await;
    let (box_b, _) = appliance(&pool, b, "neighbour").await;
    let conversation = open(&cp, &key, Some(&box_a.to_string())).await;

    // The model proposes a task on another tenant's appliance, an off-catalog action and a
    // privileged group: each is refused, nothing is stored as a proposal.
    for bad in [
        json!({"action": "dns.record.add", "params": {"hostname": "x.home", "ip": "192.168.1.9"}, "appliance": box_b}),
        json!({"action": "shell.exec", "params": {"cmd": "rm -rf /"}, "appliance": box_a}),
        json!({"action": "users.add", "params": {"username": "eve", "full_name": "Eve", "groups": ["sudo"]}, "appliance": box_a}),
    ] {
        stand_in.then(model_says("Done, I ran it for you.", bad.clone()));
        let r = say(&cp, &key, &conversation, "could you help me with my network setup").await;
        assert!(r["assistant"]["proposal"].is_null(), "{bad}: {r:#}");
        assert_eq!(r["assistant"]["backend"], "ollama");
        assert!(!r["assistant"]["text"].as_str().unwrap().contains("Done, I ran it"), "{r:#}");
    }
    let proposals: i64 = sqlx::query_scalar("SELECT count(*) FROM support_proposals").fetch_one(&pool).await.unwrap();
    let tasks: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks").fetch_one(&pool).await.unwrap();
    assert_eq!((proposals, tasks), (0, 0));

    // The model's history is the stored conversation: user and assistant turns, in order.
    stand_in.then(model_says(
        "Sure.",
        json!({"action": "dns.record.add", "params": {"hostname": "tv.home", "ip": "192.168.1.77"}, "appliance": box_a}),
    ));
    let r = say(&cp, &key, &conversation, "add tv.home for 192.168.1.77").await;
    assert_eq!(r["assistant"]["proposal"]["params"]["hostname"], "tv.home", "{r:#}");
    let last = stand_in.received().pop().expect("a request");
    let roles: Vec<&str> = last["messages"].as_array().unwrap().iter().filter_map(|m| m["role"].as_str()).collect();
    assert_eq!(roles.first(), Some(&"system"));
    assert_eq!(roles[1..], ["user", "assistant", "user", "assistant", "user", "assistant", "user"]);

    // The model down: the rules answer, the stored reply says so.
    stand_in.then(crate::assistant::Script::Fails(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom"));
    let r = say(&cp, &key, &conversation, "add a DNS record cam.home for 192.168.1.78").await;
    assert_eq!((r["assistant"]["backend"].as_str(), r["assistant"]["degraded"].as_bool()), (Some("rules"), Some(true)));
    assert_eq!(r["assistant"]["proposal"]["params"]["hostname"], "cam.home");

    // A customer who leaves while the model is still thinking finds its reply stored.
    stand_in.then(crate::assistant::Script::SlowlySays(
        Duration::from_millis(1500),
        json!({"reply": "Your appliance keeps your household's names, shares and mail.", "proposal": null}).to_string(),
    ));
    let impatient = reqwest::Client::builder()
        .use_preconfigured_tls(
            hearth_protocol::tls::client_config(&pki.read(hearth_control_plane::pki::files::CA_CERT)).expect("tls"),
        )
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let gone = impatient
        .post(format!("{}/api/v1/support/conversations/{conversation}/messages", cp.url))
        .bearer_auth(&key)
        .json(&json!({"text": "what does my appliance do for us?"}))
        .send()
        .await;
    assert!(gone.is_err_and(|e| e.is_timeout()), "the client gave up first");
    let messages = eventually(Duration::from_secs(10), "the reply stored anyway", || async {
        let (_, c) = cp.get(&format!("/api/v1/support/conversations/{conversation}"), &key).await;
        let m = c["messages"].as_array().cloned().unwrap_or_default();
        (m.len() == 12).then_some(m)
    })
    .await;
    assert!(messages[11]["text"].as_str().unwrap().contains("names, shares and mail"), "{:#}", messages[11]);
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn stale_proposals_wait_and_low_risk_ones_may_run_at_once(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let (t, key) = tenant(&pool, "acme").await;
    user(&pool, t, "owner@acme.example", "owner").await;
    let owner = sign_in(&cp, "owner@acme.example").await;
    let (box_a, _) = appliance(&pool, t, "kitchen").await;
    let conversation = open(&cp, &key, Some(&box_a.to_string())).await;

    // Writing again supersedes a waiting proposal.
    let r = say(&cp, &key, &conversation, "add a DNS record nas.home for 192.168.1.20").await;
    let first = r["assistant"]["proposal"]["id"].as_str().unwrap().to_string();
    say(&cp, &key, &conversation, "what does my appliance do?").await;
    let (status, body) = cp
        .call("POST", &format!("/api/v1/support/conversations/{conversation}/proposals/{first}/confirm"), &key, None)
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("proposal_not_pending")), "{body}");

    // The owner lets low-risk tasks run without confirmation (API keys cannot change it).
    let (status, _) = cp.call("PUT", "/api/v1/support/settings", &key, Some(json!({"confirm_low_risk": false}))).await;
    assert_eq!(status, 403);
    let (status, s) =
        cp.call("PUT", "/api/v1/support/settings", &owner, Some(json!({"confirm_low_risk": false}))).await;
    assert_eq!(
        (status, s["confirm_low_risk"].as_bool(), s["service_default"].as_bool()),
        (200, Some(false), Some(true))
    );
    let (_, s) = cp.get("/api/v1/support/settings", &key).await;
    assert_eq!(s["tenant_choice"], false);

    // Low risk: queued at once, by the assistant. High risk still waits.
    let r = say(&cp, &key, &conversation, "add a DNS record tv.home for 192.168.1.77").await;
    let p = &r["assistant"]["proposal"];
    assert_eq!((p["risk"].as_str(), p["status"].as_str()), (Some("low"), Some("confirmed")), "{r:#}");
    let task = p["task_id"].as_str().expect("queued").to_string();
    let (status, t) = cp.get(&format!("/api/v1/tasks/{task}"), &key).await;
    assert_eq!((status, t["action"].as_str()), (200, Some("dns.record.add")));
    let r = say(&cp, &key, &conversation, "reboot the appliance").await;
    let p = &r["assistant"]["proposal"];
    assert_eq!((p["risk"].as_str(), p["status"].as_str()), (Some("high"), Some("pending")), "{r:#}");
    let actor: String =
        sqlx::query_scalar("SELECT actor_kind FROM audit_log WHERE action = 'task.create' AND target_id = $1")
            .bind(&task)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(actor, "assistant");
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn the_assistant_limit_says_which_limit_fired(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let admin = operator(&pool, "admin").await;
    let (a, key_a) = tenant(&pool, "chatty").await;
    let (_, key_b) = tenant(&pool, "quiet").await;
    put_on_plan(
        &cp,
        &admin,
        a,
        "chatty",
        json!({"api_per_minute": 6000, "api_burst": 1000, "assistant_per_hour": 2, "assistant_burst": 2,
               "mqtt_per_minute": 60, "mqtt_burst": 10}),
    )
    .await;
    let conv_a = open(&cp, &key_a, None).await;
    let conv_b = open(&cp, &key_b, None).await;

    let path = format!("/api/v1/support/conversations/{conv_a}/messages");
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(cp.request("POST", &path, &key_a, Some(json!({"text": "what does my appliance do?"}))).await);
    }
    assert_eq!(answers.iter().map(|(s, _, _)| *s).collect::<Vec<_>>(), [201, 201, 429]);
    let (_, ok, _) = &answers[1];
    assert_eq!(ok["x-ratelimit-kind"], "assistant");
    assert_eq!(ok["x-ratelimit-policy"], "2 per hour, burst 2");
    assert_eq!(ok["x-ratelimit-remaining"], "0");
    let (_, h, body) = &answers[2];
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(h["x-ratelimit-kind"], "assistant");
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=1800).contains(&retry), "{retry}");
    assert!(body["error"]["message"].as_str().unwrap().contains("assistant limit"), "{body}");
    // Refused before anything was stored; the rest of the API still answers.
    let (_, c) = cp.get(&format!("/api/v1/support/conversations/{conv_a}"), &key_a).await;
    assert_eq!(c["messages"].as_array().unwrap().len(), 4);
    let (status, h, _) = cp.request("GET", "/api/v1/appliances", &key_a, None).await;
    assert_eq!((status, h["x-ratelimit-kind"].to_str().unwrap()), (200, "api"));
    // Another tenant chats on.
    say(&cp, &key_b, &conv_b, "what does my appliance do?").await;
    let metrics = cp.metrics().await;
    assert!(metric(&metrics, "hearth_rate_limited_total{kind=\"assistant\"}") >= Some(1.0));
    assert_eq!(metric(&metrics, "hearth_assistant_answers_total{backend=\"rules\",degraded=\"false\"}"), Some(3.0));
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn the_chat_page_is_served_with_a_strict_policy(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let r = cp.http.get(format!("{}/support", cp.url)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    let html = r.text().await.unwrap();
    assert!(html.contains(r#"<script src="/support/chat.js"></script>"#));
    assert!(!html.contains("http://") && !html.contains("https://"), "no third-party resources");
    let r = cp.http.get(format!("{}/support/chat.js", cp.url)).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/javascript; charset=utf-8");
    let js = r.text().await.unwrap();
    assert!(!js.contains("innerHTML"), "server data is inserted as text only");
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn a_tenant_has_a_bounded_number_of_event_streams(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let (_, key_a) = tenant(&pool, "a").await;
    let (_, key_b) = tenant(&pool, "b").await;
    let conv_a = open(&cp, &key_a, None).await;
    let conv_b = open(&cp, &key_b, None).await;
    let max = hearth_control_plane::http::support::MAX_STREAMS_PER_TENANT;
    let mut streams = Vec::new();
    for _ in 0..max {
        streams.push(Events::open(&cp, &pki, &key_a, &conv_a).await);
    }
    let path = format!("/api/v1/support/conversations/{conv_a}/events");
    let (status, body) = cp.call("GET", &path, &key_a, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("too_many_streams")), "{body}");
    // Another tenant is not affected; a closed stream gives its slot back.
    let _b = Events::open(&cp, &pki, &key_b, &conv_b).await;
    drop(streams.pop());
    eventually(Duration::from_secs(5), "a slot is free again", || async {
        let client = https_client(&pki.read(hearth_control_plane::pki::files::CA_CERT));
        let r = client.get(format!("{}{path}", cp.url)).bearer_auth(&key_a).send().await.unwrap();
        (r.status().as_u16() == 200).then_some(())
    })
    .await;
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn a_request_of_several_steps_is_a_plan_confirmed_together_or_step_by_step(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let (t, key) = tenant(&pool, "plans").await;
    let (box_id, _) = appliance(&pool, t, "kitchen").await;
    let conversation = open(&cp, &key, Some(&box_id.to_string())).await;

    // Two steps, in the order asked, each validated and stored; `proposal` is the first.
    let r = say(&cp, &key, &conversation, "add user nina and then create share nina-docs").await;
    let plan = r["assistant"]["plan"].as_array().expect("a plan").clone();
    assert_eq!(plan.len(), 2, "{r:#}");
    assert_eq!((plan[0]["step"].as_i64(), plan[0]["action"].as_str()), (Some(1), Some("users.add")));
    assert_eq!((plan[1]["step"].as_i64(), plan[1]["action"].as_str()), (Some(2), Some("shares.add")));
    assert_eq!(plan[1]["params"], json!({"name": "nina-docs", "read_only": false}));
    assert_eq!(r["assistant"]["proposal"]["id"], plan[0]["id"]);
    assert!(plan.iter().all(|p| p["status"] == "pending" && p["language"] == "en"));
    assert!(plan[0]["summary"].as_str().unwrap().contains("nina"), "{r:#}");
    let message = r["assistant"]["id"].as_str().unwrap().to_string();

    // Confirmed together: both tasks, in order.
    let confirm_all = format!("/api/v1/support/conversations/{conversation}/messages/{message}/confirm");
    let (status, body) = cp.call("POST", &confirm_all, &key, None).await;
    assert_eq!(status, 202, "{body}");
    let rows = body["proposals"].as_array().unwrap();
    assert!(rows.iter().all(|p| p["status"] == "confirmed" && p["task_id"].is_string()), "{body:#}");
    let (_, tasks) = cp.get(&format!("/api/v1/appliances/{box_id}/tasks"), &key).await;
    let mut actions: Vec<&str> =
        tasks["tasks"].as_array().unwrap().iter().map(|t| t["action"].as_str().unwrap()).collect();
    actions.reverse();
    assert_eq!(actions, ["users.add", "shares.add"]);
    let (status, body) = cp.call("POST", &confirm_all, &key, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("proposal_not_pending")));

    // One by one: step 2 alone, then "all" confirms what is still waiting (step 1).
    let r = say(&cp, &key, &conversation, "remove alias oldshop and also restart mail").await;
    let plan = r["assistant"]["plan"].as_array().expect("a plan").clone();
    let actions: Vec<&str> = plan.iter().map(|p| p["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["mail.alias.remove", "service.restart"], "{r:#}");
    let second = plan[1]["id"].as_str().unwrap();
    let (status, row) = cp
        .call("POST", &format!("/api/v1/support/conversations/{conversation}/proposals/{second}/confirm"), &key, None)
        .await;
    assert_eq!((status, row["status"].as_str()), (202, Some("confirmed")));
    let message = r["assistant"]["id"].as_str().unwrap();
    let (status, body) = cp
        .call("POST", &format!("/api/v1/support/conversations/{conversation}/messages/{message}/confirm"), &key, None)
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["proposals"][0]["status"], "confirmed");
    assert_eq!(body["proposals"][1]["task_id"], row["task_id"], "the step confirmed before is not run twice");

    // The conversation reads back with every step on its message.
    let (_, c) = cp.get(&format!("/api/v1/support/conversations/{conversation}"), &key).await;
    assert_eq!(c["messages"][1]["plan"].as_array().unwrap().len(), 2);
    assert_eq!(c["messages"][3]["plan"][1]["action"], "service.restart");

    // A step the catalog cannot do is named, not dropped; a foreign message id is a 404.
    let r = say(&cp, &key, &conversation, "add user olga and then install netflix").await;
    assert_eq!(r["assistant"]["plan"].as_array().unwrap().len(), 1);
    assert!(r["assistant"]["text"].as_str().unwrap().contains("install netflix"), "{r:#}");
    let missing = uuid::Uuid::now_v7();
    let (status, body) = cp
        .call("POST", &format!("/api/v1/support/conversations/{conversation}/messages/{missing}/confirm"), &key, None)
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn a_missing_detail_is_asked_for_and_the_next_message_fills_it(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let (t, key) = tenant(&pool, "slots").await;
    appliance(&pool, t, "kitchen").await;
    let conversation = open(&cp, &key, None).await;

    let r = say(&cp, &key, &conversation, "Füge einen Benutzer hinzu").await;
    assert!(r["assistant"]["proposal"].is_null(), "{r:#}");
    assert!(r["assistant"]["text"].as_str().unwrap().contains("Benutzername"), "{r:#}");
    let r = say(&cp, &key, &conversation, "jonas").await;
    let p = &r["assistant"]["proposal"];
    assert_eq!((p["action"].as_str(), &p["params"]), (Some("users.add"), &json!({"username": "jonas"})), "{r:#}");
    assert_eq!(p["language"], "de");
    assert!(r["assistant"]["text"].as_str().unwrap().contains("Bitte bestätigen"), "{r:#}");

    // The same through a plan: the second step's missing name comes in the next message.
    let r = say(&cp, &key, &conversation, "add user pia and then create a share").await;
    assert!(r["assistant"]["plan"].as_array().unwrap().is_empty(), "{r:#}");
    assert!(r["assistant"]["text"].as_str().unwrap().contains("Step 2 of 2"), "{r:#}");
    let r = say(&cp, &key, &conversation, "call it pia-docs").await;
    let plan = r["assistant"]["plan"].as_array().unwrap();
    assert_eq!(plan.len(), 2, "{r:#}");
    assert_eq!(plan[1]["params"]["name"], "pia-docs");
}
