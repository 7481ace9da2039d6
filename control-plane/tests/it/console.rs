//! What the operator console reads and does beyond the older admin routes: tasks across
//! tenants (filters, paging, detail, cancel, roles, audit), the catalog with its parameter
//! schemas, an appliance's configuration, the fleet's trend and ingest health, the audit
//! trail as CSV; and the console's and home page's own files with their security headers.

use std::time::Duration;

use serde_json::{json, Value};
use sqlx::PgPool;

use crate::support::*;

async fn stack(pool: &PgPool) -> (Pki, Broker, ControlPlane) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    (pki, broker, cp)
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn tasks_across_tenants_are_listed_read_and_cancelled_by_role(pool: PgPool) {
    let (_pki, _broker, cp) = stack(&pool).await;
    let admin = operator(&pool, "admin").await;
    let support = operator(&pool, "support").await;
    let viewer = operator(&pool, "viewer").await;
    let (a, _) = tenant(&pool, "Alpha").await;
    let (b, _) = tenant(&pool, "Beta").await;
    let (hall, _) = appliance(&pool, a, "hall").await;
    let (den, _) = appliance(&pool, b, "den").await;

    let mut ids = Vec::new();
    for (app, action, params) in [
        (hall, "dns.record.add", json!({"hostname": "nas.home", "ip": "192.168.1.20"})),
        (hall, "users.add", json!({"username": "ann"})),
        (den, "dns.record.remove", json!({"hostname": "nas.home"})),
    ] {
        let (status, h, body) = cp
            .request(
                "POST",
                &format!("/api/v1/admin/appliances/{app}/tasks"),
                &admin,
                Some(json!({"action": action, "params": params})),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        assert!(h["location"].to_str().unwrap().starts_with("/api/v1/tasks/"));
        ids.push(body["id"].as_str().unwrap().to_string());
    }

    // All, newest first, with the names an operator reads.
    let (status, all) = cp.get("/api/v1/admin/tasks", &viewer).await;
    assert_eq!(status, 200, "{all}");
    let listed: Vec<&str> = all["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(listed, vec![ids[2].as_str(), ids[1].as_str(), ids[0].as_str()]);
    assert_eq!(all["tasks"][0]["tenant_name"], "Beta");
    assert_eq!(all["tasks"][0]["appliance_name"], "den");
    assert_eq!(all["tasks"][0]["status"], "queued");
    assert!(all.get("next_before").is_none());

    // Filters: tenant, appliance, action prefix, status; paging.
    let (_, by_tenant) = cp.get(&format!("/api/v1/admin/tasks?tenant={a}"), &viewer).await;
    assert_eq!(by_tenant["tasks"].as_array().unwrap().len(), 2);
    let (_, by_app) = cp.get(&format!("/api/v1/admin/tasks?appliance={den}"), &viewer).await;
    assert_eq!(by_app["tasks"][0]["id"].as_str(), Some(ids[2].as_str()));
    let (_, by_action) = cp.get("/api/v1/admin/tasks?action=dns.", &viewer).await;
    assert_eq!(by_action["tasks"].as_array().unwrap().len(), 2);
    let (_, done) = cp.get("/api/v1/admin/tasks?status=succeeded", &viewer).await;
    assert_eq!(done["tasks"].as_array().unwrap().len(), 0);
    let (_, page1) = cp.get("/api/v1/admin/tasks?limit=2", &viewer).await;
    assert_eq!(page1["tasks"].as_array().unwrap().len(), 2);
    let before = page1["next_before"].as_str().expect("a next page").to_string();
    let (_, page2) = cp.get(&format!("/api/v1/admin/tasks?limit=2&before={before}"), &viewer).await;
    assert_eq!(page2["tasks"][0]["id"].as_str(), Some(ids[0].as_str()));
    assert!(page2.get("next_before").is_none());
    let (status, bad) = cp.get("/api/v1/admin/tasks?status=done", &viewer).await;
    assert_eq!((status, bad["error"]["code"].as_str()), (400, Some("invalid_query")), "{bad}");

    // One task with its (empty) log and its tenant.
    let (status, one) = cp.get(&format!("/api/v1/admin/tasks/{}", ids[0]), &viewer).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(
        (one["tenant_id"].as_str(), one["action"].as_str()),
        (Some(a.to_string().as_str()), Some("dns.record.add"))
    );
    assert_eq!(one["events"], json!([]));
    let (status, missing) = cp.get(&format!("/api/v1/admin/tasks/{}", uuid::Uuid::now_v7()), &viewer).await;
    assert_eq!((status, missing["error"]["code"].as_str()), (404, Some("not_found")));

    // A viewer cannot cancel; support can (for the customer), and it is audited.
    let cancel = format!("/api/v1/admin/tasks/{}/cancel", ids[1]);
    let (status, refused) = cp.call("POST", &cancel, &viewer, None).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (403, Some("forbidden_for_role")), "{refused}");
    let (status, cancelled) = cp.call("POST", &cancel, &support, None).await;
    assert_eq!((status, cancelled["status"].as_str()), (200, Some("cancelled")), "{cancelled}");
    let (status, again) = cp.call("POST", &cancel, &support, None).await;
    assert_eq!((status, again["error"]["code"].as_str()), (409, Some("task_not_cancellable")));
    let (_, audit) = cp.get(&format!("/api/v1/admin/audit?action=task.cancel&tenant={a}"), &viewer).await;
    assert_eq!(audit["entries"][0]["target_id"].as_str(), Some(ids[1].as_str()), "{audit}");
    assert_eq!(audit["entries"][0]["actor_kind"], "operator");

    // Tenants see none of this: the routes are operators' only.
    let (_, key) = tenant(&pool, "Gamma").await;
    let (status, _) = cp.get("/api/v1/admin/tasks", &key).await;
    assert_eq!(status, 401);
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn catalog_config_trend_and_ingest_for_the_console(pool: PgPool) {
    // The appliance exists before the control plane starts: it samples the counts at once.
    let (a, key) = tenant(&pool, "Alpha").await;
    let (hall, _) = appliance(&pool, a, "hall").await;
    let (_pki, _broker, cp) = stack(&pool).await;
    let viewer = operator(&pool, "viewer").await;

    // The catalog: every action with its schema; a task from an example is accepted, and the
    // validator's refusal names the field the form shows it on.
    let (status, catalog) = cp.get("/api/v1/admin/catalog", &viewer).await;
    assert_eq!(status, 200, "{catalog}");
    let actions = catalog["actions"].as_array().unwrap();
    let dns = actions.iter().find(|x| x["id"] == "dns.record.add").expect("dns.record.add");
    assert_eq!(dns["params"]["type"], "object");
    assert!(dns["params"]["properties"]["hostname"].is_object());
    assert_eq!(dns["risk"], "low");
    let admin = operator(&pool, "admin").await;
    let (status, bad) = cp
        .call(
            "POST",
            &format!("/api/v1/admin/appliances/{hall}/tasks"),
            &admin,
            Some(json!({"action": "dns.record.add", "params": {"hostname": "nas.home", "ip": "not-an-ip"}})),
        )
        .await;
    assert_eq!((status, bad["error"]["details"]["param"].as_str()), (422, Some("ip")), "{bad}");
    let (status, _) = cp
        .call(
            "POST",
            &format!("/api/v1/admin/appliances/{hall}/tasks"),
            &admin,
            Some(json!({"action": "dns.record.add", "params": dns["example_params"]})),
        )
        .await;
    assert_eq!(status, 202);

    // Desired vs applied configuration, as the customer's own route shows it.
    let (status, own) = cp.get(&format!("/api/v1/appliances/{hall}/config"), &key).await;
    assert_eq!(status, 200);
    let (status, cfg) = cp.get(&format!("/api/v1/admin/appliances/{hall}/config"), &viewer).await;
    assert_eq!((status, &cfg), (200, &own));
    let (status, _) = cp.get(&format!("/api/v1/admin/appliances/{}/config", uuid::Uuid::now_v7()), &viewer).await;
    assert_eq!(status, 404);

    // The trend: the control plane samples at start and then every minute.
    let trend = eventually(Duration::from_secs(10), "a trend sample", || async {
        let (status, t) = cp.get("/api/v1/admin/fleet/trend?hours=1", &viewer).await;
        assert_eq!(status, 200, "{t}");
        (!t["points"].as_array().unwrap().is_empty()).then_some(t)
    })
    .await;
    let last = trend["points"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["never_seen"].as_i64(), last["online"].as_i64()), (Some(1), Some(0)), "{trend}");
    let (_, mine) = cp.get(&format!("/api/v1/admin/fleet/trend?tenant={a}"), &viewer).await;
    assert_eq!(mine["points"].as_array().unwrap().last().unwrap()["never_seen"], 1);
    // A second sample in the same minute changes nothing.
    let n = hearth_control_plane::db::appliances::sample_counts(&pool, time::Duration::days(7)).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM fleet_samples").fetch_one(&pool).await.unwrap();
    assert!(n <= 1 && (1..=2).contains(&rows), "{n} {rows}");
    let (status, bad) = cp.get("/api/v1/admin/fleet/trend?hours=0", &viewer).await;
    assert_eq!((status, bad["error"]["details"]["param"].as_str()), (422, Some("hours")), "{bad}");

    // Ingest health: counters and the newest heartbeat's age (none online yet).
    let (status, ingest) = cp.get("/api/v1/admin/fleet/ingest", &viewer).await;
    assert_eq!(status, 200, "{ingest}");
    assert!(ingest["heartbeats_ingested"].is_u64() && ingest["newest_heartbeat_age_s"].is_null(), "{ingest}");
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn the_audit_trail_exports_as_csv_with_the_same_filters(pool: PgPool) {
    let (_pki, _broker, cp) = stack(&pool).await;
    let admin = operator(&pool, "admin").await;
    let viewer = operator(&pool, "viewer").await;
    let mut tenants = Vec::new();
    for name in ["=HYPERLINK(\"http://x\")", "Plain, with \"quotes\""] {
        let (status, t) = cp.call("POST", "/api/v1/admin/tenants", &admin, Some(json!({"name": name}))).await;
        assert_eq!(status, 201, "{t}");
        tenants.push(t["id"].as_str().unwrap().to_string());
    }
    let (status, _) = cp
        .call("PATCH", &format!("/api/v1/admin/tenants/{}", tenants[1]), &admin, Some(json!({"status": "suspended"})))
        .await;
    assert_eq!(status, 200);

    let csv = |q: String| {
        let (url, http) = (format!("{}/api/v1/admin/audit.csv{q}", cp.url), cp.http.clone());
        let viewer = viewer.clone();
        async move {
            let r = http.get(url).bearer_auth(viewer).send().await.unwrap();
            let (status, headers) = (r.status().as_u16(), r.headers().clone());
            (status, headers, r.text().await.unwrap())
        }
    };
    let (status, headers, all) = csv(String::new()).await;
    assert_eq!(status, 200, "{all}");
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/csv"));
    assert!(headers["content-disposition"].to_str().unwrap().contains("hearth-audit.csv"));
    let lines: Vec<&str> = all.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert!(lines[0].starts_with("id,at,tenant_id,actor_kind,"), "{all}");
    assert_eq!(lines.len(), 4, "{all}");
    assert!(lines[1].contains(",operator,") && lines[1].contains(",tenant.suspend,"), "{all}");
    // JSON cells are quoted with doubled quotes.
    assert!(all.contains(r#",""name"":""Plain, with \""quotes\"""","#), "{all}");

    let (_, _, filtered) = csv(format!("?tenant={}&action=tenant.create", tenants[0])).await;
    assert_eq!(filtered.split("\r\n").filter(|l| !l.is_empty()).count(), 2, "{filtered}");
    let (_, _, none) = csv("?since=2999-01-01T00:00:00Z".into()).await;
    assert_eq!(none.split("\r\n").filter(|l| !l.is_empty()).count(), 1);
    let (status, _, bad) = csv("?actor_kind=robot".into()).await;
    assert_eq!(status, 400, "{bad}");
    let (status, _) = cp.get("/api/v1/admin/audit.csv", "hearth_ot_wrong").await;
    assert_eq!(status, 401);
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn console_and_home_pages_are_served_with_a_strict_policy(pool: PgPool) {
    let (_pki, _broker, cp) = stack(&pool).await;
    for (path, kind) in [
        ("/console", "text/html"),
        ("/console/console.js", "text/javascript"),
        ("/console/console.css", "text/css"),
        ("/home", "text/html"),
        ("/home/home.js", "text/javascript"),
    ] {
        let r = cp.http.get(format!("{}{path}", cp.url)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        let h = r.headers().clone();
        assert!(h["content-type"].to_str().unwrap().starts_with(kind), "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        let body = r.text().await.unwrap();
        if kind == "text/html" {
            let csp = h["content-security-policy"].to_str().unwrap();
            assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
            assert!(!csp.contains("unsafe-inline"), "{csp}");
            // No inline script or style, nothing from another origin.
            assert!(!body.contains("<script>") && !body.contains("style=") && !body.contains("<style"), "{path}");
            assert!(!body.contains("http://") && !body.contains("https://"), "{path}");
        }
    }
    let (status, _): (u16, Value) = cp.get("/console/nope.js", "").await;
    assert_eq!(status, 404);
}
