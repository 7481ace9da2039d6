//! The tenant API: authentication, isolation (in the handlers and by row-level security),
//! paging, JSON errors, health and metrics.

use std::time::Duration;

use hearth_control_plane::db;
use serde_json::Value;
use sqlx::PgPool;

use crate::support::*;

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn a_tenant_sees_only_its_own_appliances(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let (a, key_a) = tenant(&pool, "tenant-a").await;
    let (b, key_b) = tenant(&pool, "tenant-b").await;
    let (a1, _) = appliance(&pool, a, "a-one").await;
    let (b1, _) = appliance(&pool, b, "b-one").await;

    let (status, body) = cp.get("/api/v1/appliances", &key_a).await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<&str> =
        body["appliances"].as_array().expect("list").iter().map(|x| x["id"].as_str().expect("id")).collect();
    assert_eq!(ids, [a1.to_string()]);
    assert_eq!(body["appliances"][0]["status"], "never_seen");

    let (status, body) = cp.get(&format!("/api/v1/appliances/{a1}"), &key_a).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "a-one");

    // Tenant B's key cannot tell A's appliance from one that does not exist.
    let (status, body) = cp.get(&format!("/api/v1/appliances/{a1}"), &key_b).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");
    let (status, _) = cp.get(&format!("/api/v1/appliances/{b1}"), &key_b).await;
    assert_eq!(status, 200);

    for key in ["", "hearth_tk_forged", key_a.trim_end_matches(|_| true)] {
        let (status, body) = cp.get("/api/v1/appliances", key).await;
        assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")), "{key:?}: {body}");
    }
    let (status, body) = cp.get("/api/v1/appliances/not-a-uuid", &key_a).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_path")), "{body}");
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn row_level_security_is_a_second_wall(pool: PgPool) {
    let (a, _) = tenant(&pool, "tenant-a").await;
    let (b, _) = tenant(&pool, "tenant-b").await;
    appliance(&pool, a, "a-one").await;
    appliance(&pool, b, "b-one").await;
    appliance(&pool, b, "b-two").await;

    // Queries that forget the tenant filter still see only the transaction's tenant.
    let mut tx = db::tenant_tx(&pool, a).await.expect("tx");
    let names: Vec<String> =
        sqlx::query_scalar("SELECT name FROM appliances ORDER BY name").fetch_all(&mut *tx).await.expect("select");
    assert_eq!(names, ["a-one"]);
    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants").fetch_one(&mut *tx).await.expect("count");
    assert_eq!(tenants, 1);
    // Secret columns are not readable at all from a tenant transaction (owners list their
    // keys by prefix, never by hash).
    let err = sqlx::query("SELECT key_hash FROM api_keys")
        .execute(&mut *tx)
        .await
        .expect_err("api_keys.key_hash not granted");
    assert!(err.to_string().contains("permission denied"), "{err}");
    drop(tx);

    let mut tx = db::tenant_tx(&pool, b).await.expect("tx");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM appliances").fetch_one(&mut *tx).await.expect("count");
    assert_eq!(n, 2);
    let err = sqlx::query("UPDATE appliances SET name = 'stolen'").execute(&mut *tx).await.expect_err("read only");
    assert!(err.to_string().contains("permission denied"), "{err}");
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn listing_pages_through_every_appliance(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let (t, key) = tenant(&pool, "big").await;
    let mut expected = Vec::new();
    for i in 0..5 {
        expected.push(appliance(&pool, t, &format!("box-{i}")).await.0.to_string());
    }
    let mut seen = Vec::new();
    let mut path = "/api/v1/appliances?limit=2".to_string();
    loop {
        let (status, body) = cp.get(&path, &key).await;
        assert_eq!(status, 200, "{body}");
        let page = body["appliances"].as_array().expect("list");
        assert!(page.len() <= 2);
        seen.extend(page.iter().map(|a| a["id"].as_str().expect("id").to_string()));
        match body["next_after"].as_str() {
            Some(after) => path = format!("/api/v1/appliances?limit=2&after={after}"),
            None => break,
        }
    }
    assert_eq!(seen, expected);
    for bad in ["limit=0", "limit=1001", "limit=x", "after=nope", "colour=blue"] {
        let (status, body) = cp.get(&format!("/api/v1/appliances?{bad}"), &key).await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_query")), "{bad}: {body}");
    }
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn health_readiness_and_metrics(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let (t, key) = tenant(&pool, "acme").await;
    let (id, _) = appliance(&pool, t, "box").await;

    let r = cp.http.get(format!("{}/healthz", cp.url)).send().await.expect("healthz");
    assert_eq!(r.status().as_u16(), 200);
    let ready = || async {
        let r = cp.http.get(format!("{}/readyz", cp.url)).send().await.ok()?;
        let status = r.status().as_u16();
        let body: Value = r.json().await.ok()?;
        Some((status, body))
    };
    let (_, body) = eventually(Duration::from_secs(10), "ready once the broker connection is up", || async {
        ready().await.filter(|(s, _)| *s == 200)
    })
    .await;
    // No LLM configured: the assistant is rules-only by choice, not in reduced mode.
    assert_eq!(
        (body["assistant"]["mode"].as_str(), body["assistant"]["model_loaded"].as_bool()),
        (Some("rules_only"), None)
    );

    cp.get(&format!("/api/v1/appliances/{id}"), &key).await;
    let (status, body) = cp.get("/no/such/route", &key).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));
    let text = cp.metrics().await;
    assert_eq!(
        metric(&text, r#"hearth_http_requests_total{method="GET",route="/api/v1/appliances/{id}",status="200"}"#),
        Some(1.0),
        "{text}"
    );
    assert!(text.contains(r#"route="unmatched""#));
    assert!(!text.contains(&id.to_string()), "metrics must not be labelled by raw ids");
    assert_eq!(metric(&text, "hearth_mqtt_connected"), Some(1.0));
    assert_eq!(metric(&text, "hearth_assistant_reduced_mode"), Some(0.0));

    // The broker goes away: not ready, and the body says which dependency is missing.
    drop(broker);
    let (_, body) = eventually(Duration::from_secs(15), "not ready without the broker", || async {
        ready().await.filter(|(s, _)| *s == 503)
    })
    .await;
    assert_eq!((body["database"].as_str(), body["broker"].as_str()), (Some("ok"), Some("unavailable")), "{body}");
}
