//! Tenant isolation, twice: every tenant-scoped endpoint answers tenant B's credentials (its
//! API key, or its owner's sign-in for owner routes) about tenant A's ids exactly as about
//! ids that do not exist (404, no existence leak), and every
//! table with a `tenant_id` column has row-level security that hides A's rows from a
//! transaction of B — discovered from the catalog, so a new table cannot skip it.
//!
//! The endpoints are not listed by hand: every customer operation with an id in its path
//! is read from the served OpenAPI document, so a new route is tried as soon as it exists
//! (and the test fails until it knows what kind of id the route takes).

use std::collections::BTreeMap;

use serde_json::{json, Value};
use sqlx::PgPool;

use crate::support::*;

/// A body that passes validation for the customer operations that take one, so the
/// answer is decided by the id (a route missing here gets `{}`, and fails loudly if that
/// is refused before the id is looked at).
fn body_for(method: &str, template: &str) -> Option<Value> {
    match (method, template) {
        ("GET" | "DELETE", _) => None,
        ("POST", "/api/v1/appliances/{id}/tasks") => Some(json!({"action": "appliance.reboot"})),
        ("PUT", "/api/v1/appliances/{id}/config") => Some(json!({"document": {}})),
        ("PUT", "/api/v1/appliances/{id}/labels") => Some(json!({"labels": {"room": "hall"}})),
        ("PATCH", "/api/v1/rollouts/{id}") => Some(json!({"name": "renamed"})),
        ("POST", "/api/v1/support/conversations/{id}/messages") => Some(json!({"text": "hello"})),
        _ => Some(json!({})),
    }
}

/// The kind of entity a path parameter names: the collection it follows, or its own name.
fn kind_of(template: &str, param: &str) -> String {
    if param != "id" {
        return param.trim_end_matches("_id").to_string();
    }
    let before = &template[..template.find("/{id}").expect("an {id} parameter")];
    before.rsplit('/').next().expect("a collection").to_string()
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn tenant_b_cannot_reach_anything_of_tenant_a(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let mut config = test_config(&pki, &broker);
    config.secrets.key = Some(hearth_control_plane::secret::Secret::new(base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        [3u8; 32],
    )));
    let cp = ControlPlane::start(pool.clone(), config, &pki).await;
    let (a, key_a) = tenant(&pool, "tenant-a").await;
    let (b, key_b) = tenant(&pool, "tenant-b").await;
    let (box_a, _) = appliance(&pool, a, "a-box").await;
    let user_a = user(&pool, a, "owner@a.example", "owner").await;
    user(&pool, b, "owner@b.example", "owner").await;
    let owner_b = sign_in(&cp, "owner@b.example").await;
    let (_, keys) = cp.call("GET", "/api/v1/keys", &key_a, None).await;
    let key_a_id = keys["keys"][0]["id"].as_str().expect("key id").to_string();
    let (_, task) = cp
        .call(
            "POST",
            &format!("/api/v1/appliances/{box_a}/tasks"),
            &key_a,
            Some(json!({"action": "dns.record.add", "params": {"hostname": "a.home", "ip": "10.0.0.1"}})),
        )
        .await;
    let task_a = task["id"].as_str().expect("task id").to_string();
    let (status, _) =
        cp.call("PUT", &format!("/api/v1/appliances/{box_a}/config"), &key_a, Some(json!({"document": {}}))).await;
    assert_eq!(status, 200);
    let (status, conversation) =
        cp.call("POST", "/api/v1/support/conversations", &key_a, Some(json!({"appliance_id": box_a}))).await;
    assert_eq!(status, 201, "{conversation}");
    let conversation_a = conversation["id"].as_str().expect("conversation id").to_string();
    let (status, exchange) = cp
        .call(
            "POST",
            &format!("/api/v1/support/conversations/{conversation_a}/messages"),
            &key_a,
            Some(json!({"text": "add a DNS record printer.home pointing to 192.168.1.50"})),
        )
        .await;
    assert_eq!(status, 201, "{exchange}");
    let proposal_a = exchange["assistant"]["proposal"]["id"].as_str().expect("a proposal").to_string();
    let message_a = exchange["assistant"]["id"].as_str().expect("the answer's id").to_string();
    let (status, rollout) = cp
        .call(
            "POST",
            "/api/v1/rollouts",
            &key_a,
            Some(json!({"name": "a-rollout", "payload": {"task": {"action": "appliance.reboot"}},
                        "start_at": "2999-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(status, 201, "{rollout}");
    let rollout_a = rollout["id"].as_str().expect("rollout id").to_string();
    let (status, hook) = cp
        .call(
            "POST",
            "/api/v1/webhooks",
            &key_a,
            Some(json!({"url": "https://hooks.example.com/a", "event_types": ["*"], "description": "a-hook"})),
        )
        .await;
    assert_eq!(status, 201, "{hook}");
    let webhook_a = hook["endpoint"]["id"].as_str().expect("webhook id").to_string();

    // A's id of each kind, and an id of that kind that does not exist.
    let ids: BTreeMap<&str, (String, String)> = [
        ("appliances", (box_a.to_string(), hearth_protocol::ApplianceId::new().to_string())),
        ("tasks", (task_a.clone(), hearth_protocol::TaskId::new().to_string())),
        ("users", (user_a.to_string(), hearth_protocol::UserId::new().to_string())),
        ("keys", (key_a_id.clone(), hearth_protocol::ApiKeyId::new().to_string())),
        ("conversations", (conversation_a.clone(), hearth_protocol::ConversationId::new().to_string())),
        ("proposal", (proposal_a.clone(), hearth_protocol::ProposalId::new().to_string())),
        ("message", (message_a.clone(), hearth_protocol::MessageId::new().to_string())),
        ("rollouts", (rollout_a.clone(), hearth_protocol::RolloutId::new().to_string())),
        ("webhooks", (webhook_a.clone(), uuid::Uuid::new_v4().to_string())),
        // A's webhook with any delivery id answers as a webhook that does not exist.
        ("delivery", ("1".to_string(), "1".to_string())),
        // A verb, not an id: the same for both.
        ("action", ("pause".to_string(), "pause".to_string())),
    ]
    .into_iter()
    .collect();

    // Every customer operation with an id in its path, from the served document.
    let doc: Value =
        cp.http.get(format!("{}/api/openapi.json", cp.url)).send().await.expect("doc").json().await.expect("json");
    let mut tried = Vec::new();
    for (template, item) in doc["paths"].as_object().expect("paths") {
        if !template.contains('{') || template.starts_with("/api/v1/admin/") {
            continue;
        }
        for (method, op) in item.as_object().expect("path item") {
            let schemes: Vec<&str> = op["security"]
                .as_array()
                .map(|reqs| {
                    reqs.iter().filter_map(|r| r.as_object()).flat_map(|r| r.keys()).map(String::as_str).collect()
                })
                .unwrap_or_default();
            if !schemes.iter().any(|s| *s == "tenant_key" || *s == "session_token") {
                continue;
            }
            let method = method.to_uppercase();
            let cred = if schemes.contains(&"tenant_key") { &key_b } else { &owner_b };
            let (mut foreign, mut absent) = (template.clone(), template.clone());
            for param in template.split('{').skip(1).map(|p| &p[..p.find('}').expect("closing brace")]) {
                let kind = kind_of(template, param);
                let (a_id, missing) = ids.get(kind.as_str()).unwrap_or_else(|| {
                    panic!("{method} {template}: the test does not know ids of kind {kind:?}; add one")
                });
                foreign = foreign.replace(&format!("{{{param}}}"), a_id);
                absent = absent.replace(&format!("{{{param}}}"), missing);
            }
            let body = body_for(&method, template);
            let (status, got) = cp.call(&method, &foreign, cred, body.clone()).await;
            let (absent_status, expected) = cp.call(&method, &absent, cred, body).await;
            assert_eq!((status, absent_status), (404, 404), "{method} {template} with A's ids: {got}");
            assert_eq!(got, expected, "{method} {template}: indistinguishable from an id that does not exist");
            tried.push(format!("{method} {template}"));
        }
    }
    assert!(tried.len() >= 11, "every customer route with an id was tried: {tried:?}");
    // Lists never show A's things to B.
    for path in [
        "/api/v1/appliances",
        "/api/v1/inventory",
        "/api/v1/config/defaults",
        "/api/v1/users",
        "/api/v1/keys",
        "/api/v1/account",
        "/api/v1/support/conversations",
        "/api/v1/rollouts",
        "/api/v1/webhooks",
        "/api/v1/events",
        "/api/v1/alert-rules",
    ] {
        let (status, body) = cp.call("GET", path, &key_b, None).await;
        assert_eq!(status, 200, "{path}");
        let text = body.to_string();
        for a_thing in [
            box_a.to_string(),
            "a-box".into(),
            a.to_string(),
            "owner@a.example".into(),
            key_a_id.clone(),
            conversation_a.clone(),
            rollout_a.clone(),
            webhook_a.clone(),
            "a-hook".into(),
        ] {
            assert!(!text.contains(&a_thing), "{path} shows {a_thing}: {text}");
        }
    }
    assert_ne!(a, b);
    // A's own view still works: the 404s above are not a broken route.
    let (status, body) = cp.call("GET", &format!("/api/v1/tasks/{task_a}"), &key_a, None).await;
    assert_eq!((status, body["id"].as_str()), (200, Some(task_a.as_str())));
    let owner_a = sign_in(&cp, "owner@a.example").await;
    let (status, _) = cp.call("DELETE", &format!("/api/v1/keys/{key_a_id}"), &owner_a, None).await;
    assert_eq!(status, 200, "A's owner revokes A's key");
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn every_tenant_table_hides_other_tenants_rows(pool: PgPool) {
    let (a, _) = tenant(&pool, "tenant-a").await;
    let (b, _) = tenant(&pool, "tenant-b").await;
    let (box_a, _) = appliance(&pool, a, "a-box").await;
    appliance(&pool, b, "b-box").await;
    // A row of A in every tenant table.
    sqlx::query("INSERT INTO tasks (id, tenant_id, appliance_id, action, params, deadline) VALUES ($1, $2, $3, 'appliance.reboot', '{}', now() + interval '1 hour')")
        .bind(hearth_protocol::TaskId::new()).bind(a).bind(box_a).execute(&pool).await.expect("task");
    sqlx::query("INSERT INTO task_events (task_id, seq, tenant_id, kind, message, at) SELECT id, 1, tenant_id, 'received', 'x', now() FROM tasks")
        .execute(&pool).await.expect("event");
    sqlx::query(
        "INSERT INTO presence_events (tenant_id, appliance_id, status, reason) VALUES ($1, $2, 'online', 'heartbeat')",
    )
    .bind(a)
    .bind(box_a)
    .execute(&pool)
    .await
    .expect("presence");
    sqlx::query("INSERT INTO tenant_config (tenant_id) VALUES ($1)").bind(a).execute(&pool).await.expect("defaults");
    sqlx::query("INSERT INTO appliance_config (appliance_id, tenant_id) VALUES ($1, $2)")
        .bind(box_a)
        .bind(a)
        .execute(&pool)
        .await
        .expect("config");
    let mut conn = pool.acquire().await.expect("conn");
    let user = hearth_control_plane::db::users::create(
        &mut conn,
        a,
        "owner@a.example",
        "a long enough password",
        hearth_control_plane::model::UserRole::Owner,
    )
    .await
    .expect("user");
    drop(conn);
    sqlx::query("INSERT INTO user_sessions (token_hash, user_id, tenant_id, expires_at) VALUES ('\\x00', $1, $2, now() + interval '1 hour')")
        .bind(user.id)
        .bind(a)
        .execute(&pool)
        .await
        .expect("session");
    sqlx::query("INSERT INTO audit_log (tenant_id, actor_kind, action, target_kind) VALUES ($1, 'cli', 'tenant.create', 'tenant')")
        .bind(a)
        .execute(&pool)
        .await
        .expect("audit");
    sqlx::query(
        "INSERT INTO certificate_revocations (serial, appliance_id, tenant_id, reason) VALUES ('01', $1, $2, 'test')",
    )
    .bind(box_a)
    .bind(a)
    .execute(&pool)
    .await
    .expect("revocation");
    sqlx::query(
        "INSERT INTO certificate_issues (serial, appliance_id, tenant_id, public_key_sha256, certificate_pem, not_after)
         VALUES ('02', $1, $2, '\\x00', 'a certificate', now() + interval '1 day')",
    )
    .bind(box_a)
    .bind(a)
    .execute(&pool)
    .await
    .expect("certificate");
    sqlx::query(
        "WITH c AS (INSERT INTO support_conversations (id, tenant_id, appliance_id, started_by)
                    VALUES (gen_random_uuid(), $1, $2, 'test') RETURNING id),
              m AS (INSERT INTO support_messages (id, conversation_id, tenant_id, seq, role, body)
                    SELECT gen_random_uuid(), id, $1, 1, 'assistant', 'hello' FROM c RETURNING id, conversation_id)
         INSERT INTO support_proposals (id, tenant_id, conversation_id, message_id, appliance_id, action, params, risk,
                                        needs_confirmation)
         SELECT gen_random_uuid(), $1, conversation_id, id, $2, 'appliance.reboot', '{}', 'high', true FROM m",
    )
    .bind(a)
    .bind(box_a)
    .execute(&pool)
    .await
    .expect("support chat rows");
    sqlx::query(
        "WITH r AS (INSERT INTO rollouts (id, tenant_id, name, selector, payload, policy, created_by)
                    VALUES (gen_random_uuid(), $1, 'r', '{}', '{}', '{}', 'test') RETURNING id)
         INSERT INTO rollout_executions (rollout_id, appliance_id, tenant_id, ordinal, wave)
         SELECT id, $2, $1, 1, 0 FROM r",
    )
    .bind(a)
    .bind(box_a)
    .execute(&pool)
    .await
    .expect("rollout rows");

    sqlx::query(
        "WITH ep AS (INSERT INTO webhook_endpoints (id, tenant_id, url, event_types, secret_enc, created_by)
                     VALUES (gen_random_uuid(), $1, 'https://hooks.example.com/a', '{*}', 'x', 'test') RETURNING id),
              d AS (INSERT INTO webhook_deliveries (endpoint_id, event_seq, tenant_id, position)
                    SELECT ep.id, e.seq, $1, 1 FROM ep, events e WHERE e.tenant_id = $1 LIMIT 1 RETURNING 1),
              r AS (INSERT INTO alert_rules (tenant_id, offline_minutes, drift_minutes, task_failed)
                    VALUES ($1, 10, 30, true) RETURNING 1),
              q AS (INSERT INTO quota_notices (tenant_id, quota) VALUES ($1, 'webhook_endpoints') RETURNING 1),
              s AS (INSERT INTO fleet_samples (at, tenant_id, online, offline, never_seen, revoked)
                    VALUES (now(), $1, 1, 0, 0, 0) RETURNING 1)
         INSERT INTO alerts (appliance_id, kind, tenant_id) SELECT $2, 'appliance_offline', $1
         FROM d, r, q, s",
    )
    .bind(a)
    .bind(box_a)
    .execute(&pool)
    .await
    .expect("events and webhook rows");

    let tables: Vec<(String, bool)> = sqlx::query_as(
        "SELECT c.relname::text, c.relrowsecurity FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind = 'r'
           AND (EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = c.oid AND attname = 'tenant_id' AND NOT attisdropped)
                OR c.relname = 'tenants')
         ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .expect("tables");
    assert!(tables.len() >= 9, "{tables:?}");
    // Every table is closed by RLS and opened to the service role by one explicit policy.
    let unguarded: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname <> '_sqlx_migrations'
           AND (NOT c.relrowsecurity
                OR NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = 'service_access'))",
    )
    .fetch_all(&pool)
    .await
    .expect("policies");
    assert!(unguarded.is_empty(), "tables without RLS or a service_access policy: {unguarded:?}");
    for (table, rls) in &tables {
        assert!(rls, "{table} holds tenant rows but has no row-level security");
        let column = if table == "tenants" { "id" } else { "tenant_id" };
        let seen_by_admin: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE {column} = $1"))
            .bind(a)
            .fetch_one(&pool)
            .await
            .expect("count");
        assert!(seen_by_admin >= 1, "{table}: the test put a row of A there");
        let mut tx = hearth_control_plane::db::tenant_tx(&pool, b).await.expect("tx");
        // No filter at all: only RLS stands between B and A's rows.
        match sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM {table} WHERE {column} = $1"))
            .bind(a)
            .fetch_one(&mut *tx)
            .await
        {
            Ok(n) => assert_eq!(n, 0, "{table}: tenant B sees tenant A's rows"),
            // Tables a tenant request may not read at all (enrollment tokens).
            Err(e) => assert!(e.to_string().contains("permission denied"), "{table}: {e}"),
        }
    }
}
