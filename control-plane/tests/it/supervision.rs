//! `serve` as a supervised whole: a part that dies takes the process down (so it is
//! restarted) instead of leaving a replica half alive, and a request that runs too long is
//! stopped with the JSON timeout error, its transaction rolled back.

use std::time::{Duration, Instant};

use hearth_control_plane::serve::ServeError;
use sqlx::PgPool;

use crate::support::*;

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn a_killed_part_stops_the_whole_process(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let mut cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let (_, key) = tenant(&pool, "tenant-a").await;
    let (status, _) = cp.get("/api/v1/appliances", &key).await;
    assert_eq!(status, 200);

    let running = cp.running.take().expect("running");
    let parts = running.parts();
    for expected in ["MQTT consumer", "ingest writer", "dispatcher", "presence sweeper", "HTTPS server"] {
        assert!(parts.contains(&expected), "{expected} is a supervised part: {parts:?}");
    }
    assert!(!running.kill_part("no such part"));
    assert!(running.kill_part("MQTT consumer"));

    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(20), running.wait()).await.expect("serve stops by itself");
    match result {
        Err(ServeError::PartStopped { part, reason }) => {
            assert_eq!(part, "MQTT consumer");
            assert!(reason.contains("aborted"), "{reason}");
        }
        other => panic!("expected the consumer to be named as the part that stopped, got {other:?}"),
    }
    assert!(cp.shutdown.is_cancelled(), "the other parts were told to stop");
    assert!(started.elapsed() < Duration::from_secs(15), "stopped within the shutdown timeout");
    // The HTTP listener is gone with it.
    let refused = cp.http.get(format!("{}/healthz", cp.url)).timeout(Duration::from_secs(3)).send().await;
    assert!(refused.is_err(), "the API no longer answers: {refused:?}");
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn a_request_slower_than_the_timeout_gets_the_json_timeout_error(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let mut config = test_config(&pki, &broker);
    config.http.request_timeout_ms = 700;
    config.assistant.timeout_ms = 200;
    let mut cp = ControlPlane::start(pool.clone(), config, &pki).await;
    let (tenant_id, key) = tenant(&pool, "tenant-a").await;
    appliance(&pool, tenant_id, "kitchen").await;
    let (status, _) = cp.get("/api/v1/appliances", &key).await;
    assert_eq!(status, 200);

    // Another session holds the appliances table: the list cannot finish in time.
    let mut blocker = pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE appliances IN ACCESS EXCLUSIVE MODE").execute(&mut *blocker).await.expect("lock");
    let started = Instant::now();
    let (status, body) = cp.get("/api/v1/appliances", &key).await;
    let took = started.elapsed();
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("timeout")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("700ms"), "{body}");
    assert!(took >= Duration::from_millis(650) && took < Duration::from_secs(5), "answered after {took:?}");
    blocker.rollback().await.expect("rollback");

    // Nothing was left holding a connection or a lock: the same request now succeeds.
    let (status, body) = cp.get("/api/v1/appliances", &key).await;
    assert_eq!(status, 200, "{body}");
    let metrics = cp.http.get(format!("{}/metrics", cp.url)).send().await.expect("metrics").text().await.expect("text");
    assert!(
        metrics.lines().any(|l| l.starts_with("hearth_http_requests_total")
            && l.contains("route=\"/api/v1/appliances\"")
            && l.contains("status=\"503\"")),
        "the timeout is counted under its route"
    );
    cp.stop().await;
}
