//! Per-tenant API rate limits: a tenant hammering the API gets 429s that say which limit
//! fired and when to come back, while another tenant's requests all succeed; a plan change
//! applies without a restart.

use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;

use crate::support::*;

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn a_hammering_tenant_is_throttled_and_another_is_not(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let mut config = test_config(&pki, &broker);
    config.limits.refresh_s = 1;
    let cp = ControlPlane::start(pool.clone(), config, &pki).await;
    let admin = operator(&pool, "admin").await;
    let (status, plan) = cp
        .call(
            "POST",
            "/api/v1/admin/plans",
            &admin,
            Some(json!({"name": "tiny", "api_per_minute": 60, "api_burst": 5, "assistant_per_hour": 10,
                         "assistant_burst": 1, "mqtt_per_minute": 60, "mqtt_burst": 10})),
        )
        .await;
    assert_eq!(status, 201, "{plan}");
    let (a, key_a) = tenant(&pool, "hammer").await;
    let (_, key_b) = tenant(&pool, "quiet").await;
    let (status, _) =
        cp.call("PATCH", &format!("/api/v1/admin/tenants/{a}"), &admin, Some(json!({"plan_id": plan["id"]}))).await;
    assert_eq!(status, 200);

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

    // A bigger plan applies within limits.refresh_s, without a restart.
    let plan_id = plan["id"].as_str().unwrap();
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
}
