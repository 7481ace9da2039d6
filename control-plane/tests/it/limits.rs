//! Rate limits. Per tenant on the API: a tenant hammering the API gets 429s that say which
//! limit fired and when to come back, while another tenant's requests all succeed, and its
//! key on health, metrics or the docs is never refused; a plan
//! change applies without a restart. Per appliance on the MQTT ingest: a flooding
//! appliance's excess heartbeats are counted and dropped before they reach the writer,
//! while another appliance's heartbeat is stored at once; a long task takes nothing from
//! the allowance, and the `offline` after it (the agent's own or its last will) is never
//! dropped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hearth_protocol::{ApplianceId, Topic, UpChannel};
use serde_json::json;
use sqlx::PgPool;

use crate::ingest::heartbeat_payload;
use crate::support::*;

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn a_hammering_tenant_is_throttled_and_another_is_not(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let mut config = test_config(&pki, &broker);
    config.limits.refresh_s = 1;
    let cp = ControlPlane::start(pool.clone(), config, &pki).await;
    let admin = operator(&pool, "admin").await;
    let (a, key_a) = tenant(&pool, "hammer").await;
    let (_, key_b) = tenant(&pool, "quiet").await;
    let plan_id = put_on_plan(
        &cp,
        &admin,
        a,
        "tiny",
        json!({"api_per_minute": 60, "api_burst": 5, "assistant_per_hour": 10, "assistant_burst": 1,
               "mqtt_per_minute": 60, "mqtt_burst": 10}),
    )
    .await;

    // A and B at the same time: A's bucket of 5 empties, B (default quotas) is untouched.
    let hammer = async {
        let mut out = Vec::new();
        for _ in 0..12 {
            out.push(cp.request("GET", "/api/v1/appliances", &key_a, None).await);
        }
        out
    };
    let quiet = async {
        let mut out = Vec::new();
        for _ in 0..20 {
            out.push(cp.request("GET", "/api/v1/appliances", &key_b, None).await.0);
        }
        out
    };
    let (a_results, b_statuses) = tokio::join!(hammer, quiet);
    assert!(b_statuses.iter().all(|s| *s == 200), "the other tenant is never throttled: {b_statuses:?}");
    let header = |h: &reqwest::header::HeaderMap, name: &str| h[name].to_str().unwrap().to_string();
    for (i, (status, headers, body)) in a_results.iter().take(5).enumerate() {
        assert_eq!(*status, 200, "request {i}: {body}");
        assert_eq!(header(headers, "x-ratelimit-kind"), "api");
        assert_eq!(header(headers, "x-ratelimit-policy"), "60 per minute, burst 5");
        assert_eq!(header(headers, "x-ratelimit-remaining"), (4 - i).to_string());
    }
    let refused: Vec<_> = a_results.iter().skip(5).filter(|(s, _, _)| *s == 429).collect();
    assert!(
        refused.len() >= 5,
        "most of the rest are refused: {:?}",
        a_results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    for (_, headers, body) in &refused {
        assert_eq!(body["error"]["code"], "rate_limited", "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("api limit"), "{body}");
        assert_eq!(header(headers, "x-ratelimit-kind"), "api");
        assert_eq!(header(headers, "x-ratelimit-remaining"), "0");
        let retry: u64 = header(headers, "retry-after").parse().unwrap();
        assert!((1..=2).contains(&retry), "{retry}");
        assert!(headers.contains_key("x-request-id"));
    }
    let metrics = cp.metrics().await;
    let counted = metric(&metrics, r#"hearth_rate_limited_total{kind="api"}"#).unwrap_or(0.0);
    assert!(counted >= refused.len() as f64, "{counted} counted, {} refused", refused.len());

    // With its bucket empty, A's key on an operation no customer credential opens (health,
    // metrics, the document) is neither counted nor refused: the limit covers exactly the
    // operations whose documentation promises its 429.
    for path in ["/healthz", "/metrics", "/api/openapi.json", "/docs"] {
        let (status, headers, _) = cp.request("GET", path, &key_a, None).await;
        assert_eq!(status, 200, "{path}");
        assert!(!headers.contains_key("x-ratelimit-kind"), "{path} is not limited");
    }

    // A bigger plan applies within limits.refresh_s, without a restart.
    let (status, _) = cp
        .call(
            "PATCH",
            &format!("/api/v1/admin/plans/{plan_id}"),
            &admin,
            Some(json!({"api_per_minute": 600, "api_burst": 50})),
        )
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, headers, _) = cp.request("GET", "/api/v1/appliances", &key_a, None).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-ratelimit-policy"), "600 per minute, burst 50");
    // The account shows the quotas that apply.
    let (_, account) = cp.call("GET", "/api/v1/account", &key_a, None).await;
    assert_eq!(
        (account["quotas"]["api_per_minute"].as_i64(), account["quotas"]["api_burst"].as_i64()),
        (Some(600), Some(50))
    );
    // The tenant was told once, not once per refusal (quota.exhausted).
    let told = eventually(Duration::from_secs(5), "quota.exhausted", || async {
        let (_, page) = cp.call("GET", "/api/v1/events?type=quota.exhausted", &key_a, None).await;
        page["events"].as_array().filter(|e| !e.is_empty()).cloned()
    })
    .await;
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(
        (told[0]["data"]["quota"].as_str(), told[0]["data"]["limit"].as_i64()),
        (Some("api_per_minute"), Some(60))
    );
}

async fn heartbeat_seq(pool: &PgPool, id: ApplianceId) -> (String, Option<i64>) {
    sqlx::query_as("SELECT status, heartbeat_seq FROM appliances WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("appliance row")
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn a_flooding_appliance_is_throttled_and_another_is_not(pool: PgPool) {
    const BURST: u64 = 5;
    const MIN_FLOOD: u64 = 1000;
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let mut config = test_config(&pki, &broker);
    config.limits.refresh_s = 1;
    // Everyone else (B) keeps test_config's generous MQTT defaults.
    let cp = ControlPlane::start(pool.clone(), config, &pki).await;
    let (ta, _) = tenant(&pool, "flooder").await;
    let (tb, _) = tenant(&pool, "neighbour").await;
    let (a, _) = appliance(&pool, ta, "a").await;
    let (b, _) = appliance(&pool, tb, "b").await;

    // A's tenant goes on a plan with a small MQTT quota while the control plane runs: the
    // ingest's rates are read again every limits.refresh_s, no restart.
    let admin = operator(&pool, "admin").await;
    put_on_plan(
        &cp,
        &admin,
        ta,
        "chatty",
        json!({"api_per_minute": 600, "api_burst": 100, "assistant_per_hour": 10, "assistant_burst": 1,
               "mqtt_per_minute": 60, "mqtt_burst": BURST}),
    )
    .await;

    eventually(Duration::from_secs(10), "control plane connected", || async {
        (metric(&cp.metrics().await, "hearth_mqtt_connected") == Some(1.0)).then_some(())
    })
    .await;
    let connect = |id: ApplianceId| {
        let (cert, key) = pki.appliance_cert(id);
        let opts =
            mqtt::options(&broker, &id.to_string(), &pki.read("ca.crt"), Some((cert.as_bytes(), key.as_bytes())));
        async move { mqtt::connect(opts).await.expect("appliance connects") }
    };
    let (probe_a, probe_b) = (connect(a).await, connect(b).await);
    let (topic_a, topic_b) =
        (Topic::new(a, UpChannel::Heartbeat).to_string(), Topic::new(b, UpChannel::Heartbeat).to_string());
    // Two refresh periods: the plan is in the ingest's rates by now.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // A floods heartbeats (QoS 1, as fast as the broker takes them) until at least MIN_FLOOD
    // are out and B's one heartbeat, published in the middle of the flood, is stored.
    let sent = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let flood = async {
        let mut seq = 0;
        while seq < MIN_FLOOD || !stop.load(Ordering::Relaxed) {
            seq += 1;
            probe_a.publish(&topic_a, heartbeat_payload(seq)).await;
            sent.store(seq, Ordering::Relaxed);
        }
        seq
    };
    let neighbour = async {
        while sent.load(Ordering::Relaxed) < MIN_FLOOD / 3 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let published = Instant::now();
        let sent_before = sent.load(Ordering::Relaxed);
        probe_b.publish(&topic_b, heartbeat_payload(7)).await;
        eventually(Duration::from_secs(10), "B's heartbeat stored", || async {
            (heartbeat_seq(&pool, b).await == ("online".into(), Some(7))).then_some(())
        })
        .await;
        let latency = published.elapsed();
        let sent_meanwhile = sent.load(Ordering::Relaxed) - sent_before;
        stop.store(true, Ordering::Relaxed);
        (latency, sent_meanwhile)
    };
    let (flooded, (latency, sent_meanwhile)) = tokio::join!(flood, neighbour);
    assert!(sent_meanwhile > 0, "A went on flooding while B's heartbeat was on its way");
    assert!(latency < Duration::from_secs(2), "B's heartbeat took {latency:?} to be stored while A flooded");

    // Every one of A's heartbeats is either ingested or counted as throttled (B's one is
    // ingested too).
    let (dropped, ingested) = eventually(Duration::from_secs(20), "the flood consumed", || async {
        let text = cp.metrics().await;
        let dropped = metric(&text, r#"hearth_rate_limited_total{kind="mqtt"}"#).unwrap_or(0.0) as u64;
        let ingested = metric(&text, "hearth_heartbeats_ingested_total").unwrap_or(0.0) as u64;
        (dropped + ingested == flooded + 1).then_some((dropped, ingested))
    })
    .await;
    let window = started.elapsed();
    // What reached PostgreSQL of A: the bucket of 5, plus one a second (60 per minute) while
    // the flood was being consumed, and nothing more.
    let allowed = ingested - 1;
    let most = BURST + window.as_secs() + 1;
    assert!(
        (BURST..=most).contains(&allowed),
        "{allowed} of A's {flooded} heartbeats were written in {window:?} (at most {most}), {dropped} dropped"
    );
    assert!(dropped >= flooded - most, "{dropped} of {flooded} dropped");

    // A is online from the heartbeats that got through; the first five always do, so the
    // latest stored is one of them or later.
    let (status, seq) = heartbeat_seq(&pool, a).await;
    assert_eq!(status, "online");
    let seq = seq.expect("a heartbeat stored") as u64;
    assert!((BURST..=flooded).contains(&seq), "{seq}");

    // Throttling is not counted per appliance or tenant.
    let text = cp.metrics().await;
    assert!(
        text.lines().filter(|l| l.starts_with("hearth_rate_limited_total")).all(|l| !l.contains(&a.to_string())),
        "{text}"
    );
}

/// Polls the database (the API's own limit, 120 a minute on the README's plan, is not what
/// this measures) until the appliance is `status`; returns how long that took.
async fn time_to_status(pool: &PgPool, id: ApplianceId, status: &str, timeout: Duration) -> Duration {
    let started = Instant::now();
    eventually(timeout, &format!("appliance {status}"), || async {
        (heartbeat_seq(pool, id).await.0 == status).then_some(())
    })
    .await;
    started.elapsed()
}

/// The README's example plan (`family`): 60 MQTT messages a minute, a burst of 10.
const README_PLAN: &str = r#"{"api_per_minute": 120, "api_burst": 20, "assistant_per_hour": 30,
    "assistant_burst": 3, "mqtt_per_minute": 60, "mqtt_burst": 10}"#;

/// Runs `users.add` (the catalog's longest playbook) on the real agent and returns the
/// finished task (polled in the database, then read once through the API).
async fn long_task(cp: &ControlPlane, pool: &PgPool, key: &str, id: ApplianceId, username: &str) -> serde_json::Value {
    let (status, task) = cp
        .call(
            "POST",
            &format!("/api/v1/appliances/{id}/tasks"),
            key,
            Some(json!({"action": "users.add",
                        "params": {"username": username, "full_name": "Emma Example", "groups": ["family", "media"]}})),
        )
        .await;
    assert_eq!(status, 202, "{task}");
    let task_id = task["id"].as_str().expect("id").to_string();
    eventually(Duration::from_secs(90), "the task finished", || async {
        let (status,): (String,) = sqlx::query_as("SELECT status::text FROM tasks WHERE id = $1::uuid")
            .bind(&task_id)
            .fetch_one(pool)
            .await
            .expect("task row");
        matches!(status.as_str(), "succeeded" | "failed" | "rejected" | "timed_out").then_some(())
    })
    .await;
    let (status, done) = cp.get(&format!("/api/v1/tasks/{task_id}"), key).await;
    assert_eq!(status, 200, "{done}");
    done
}

/// Task events used to take from the appliance's MQTT allowance, and status messages were
/// dropped over it: after a 30-event task on the README's example plan the agent's
/// `offline` was thrown away and the appliance stayed "online" until the sweeper noticed.
/// Here the sweeper waits 90 s (the default), so only the status message — the agent's
/// own `offline` on a clean stop, the broker's last will on a crash — can make the
/// appliance offline within seconds; and the task's events take nothing from the allowance.
#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn after_a_long_task_on_a_small_plan_a_stopped_agent_is_offline_at_once(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let mut config = test_config(&pki, &broker);
    config.limits.refresh_s = 1;
    config.presence.offline_after_s = 90.0;
    config.presence.sweep_interval_s = 1.0;
    let cp = ControlPlane::start(pool.clone(), config, &pki).await;
    let admin = operator(&pool, "admin").await;
    let (t, key) = tenant(&pool, "The Smiths").await;
    put_on_plan(&cp, &admin, t, "family", serde_json::from_str(README_PLAN).unwrap()).await;
    let agent = Appliance::enroll(&cp, &pki, &pool, t, "hall").await;
    // The plan is in the ingest's rates after two refresh periods.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // A clean stop after the task: the agent's own `offline`. Heartbeats every second use
    // the whole allowance (60 a minute) on their own.
    let (stop, running) = agent.start();
    time_to_status(&pool, agent.id, "online", Duration::from_secs(15)).await;
    let done = long_task(&cp, &pool, &key, agent.id, "emma").await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let events = done["events"].as_array().expect("events").len();
    assert!(events >= 30, "a long task: {events} events");
    // The task's events took nothing from the allowance: no heartbeat was dropped either.
    let throttled = metric(&cp.metrics().await, r#"hearth_rate_limited_total{kind="mqtt"}"#).unwrap_or(0.0);
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(15), running)
        .await
        .expect("the agent stops in time")
        .expect("joined")
        .expect("the agent stops cleanly");
    let took = time_to_status(&pool, agent.id, "offline", Duration::from_secs(30)).await;
    eprintln!("a {events}-event task, then a clean stop: offline after {took:?}");
    assert!(took < Duration::from_secs(5), "offline {took:?} after a clean stop (the sweeper would take 90 s)");
    let (status, detail) = cp.get(&format!("/api/v1/appliances/{}", agent.id), &key).await;
    assert_eq!(status, 200, "{detail}");
    let history = detail["presence_history"].as_array().expect("presence history");
    let last = history.last().expect("a transition");
    assert_eq!(
        (last["status"].as_str(), last["reason"].as_str()),
        (Some("offline"), Some("status_message")),
        "{detail:#}"
    );

    // A crash after the task: the broker's last will. The agent's task is dropped without
    // a word, so its connection just closes.
    let (_stop, running) = agent.start();
    time_to_status(&pool, agent.id, "online", Duration::from_secs(15)).await;
    let done = long_task(&cp, &pool, &key, agent.id, "oscar").await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    running.abort();
    let _ = running.await;
    let took = time_to_status(&pool, agent.id, "offline", Duration::from_secs(30)).await;
    eprintln!("a long task, then a crash: offline after {took:?} (the last will)");
    assert!(took < Duration::from_secs(5), "offline {took:?} after a crash (the sweeper would take 90 s)");
    assert_eq!(throttled, 0.0, "a heartbeat a second and a long task fit the plan: nothing was dropped");
}
