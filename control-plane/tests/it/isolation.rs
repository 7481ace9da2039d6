//! Tenant isolation, twice: every tenant-scoped endpoint answers tenant B's credentials (its
//! API key, or its owner's sign-in for owner routes) about tenant A's ids exactly as about
//! ids that do not exist (404, no existence leak), and every
//! table with a `tenant_id` column has row-level security that hides A's rows from a
//! transaction of B — discovered from the catalog, so a new table cannot skip it.

use serde_json::json;
use sqlx::PgPool;

use crate::support::*;

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn tenant_b_cannot_reach_anything_of_tenant_a(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
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

    let missing_appliance = hearth_protocol::ApplianceId::new();
    let missing_task = hearth_protocol::TaskId::new();
    let (missing_user, missing_key) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    // Every route with an id in it, for A's id and for an id that does not exist, with the
    // credential of B that the route accepts.
    let routes = |appliance: String, task: String, user: String, key: String| {
        vec![
            ("GET", format!("/api/v1/appliances/{appliance}"), None, &key_b),
            ("GET", format!("/api/v1/appliances/{appliance}/tasks"), None, &key_b),
            (
                "POST",
                format!("/api/v1/appliances/{appliance}/tasks"),
                Some(json!({"action": "appliance.reboot"})),
                &key_b,
            ),
            ("GET", format!("/api/v1/appliances/{appliance}/config"), None, &key_b),
            ("PUT", format!("/api/v1/appliances/{appliance}/config"), Some(json!({"document": {}})), &key_b),
            ("GET", format!("/api/v1/tasks/{task}"), None, &key_b),
            ("POST", format!("/api/v1/tasks/{task}/cancel"), Some(json!({})), &key_b),
            ("DELETE", format!("/api/v1/users/{user}"), None, &owner_b),
            ("DELETE", format!("/api/v1/keys/{key}"), None, &owner_b),
        ]
    };
    let foreign = routes(box_a.to_string(), task_a.clone(), user_a.to_string(), key_a_id.clone());
    let absent = routes(
        missing_appliance.to_string(),
        missing_task.to_string(),
        missing_user.to_string(),
        missing_key.to_string(),
    );
    for ((method, path, body, cred), (_, absent_path, absent_body, _)) in foreign.into_iter().zip(absent) {
        let (status, got) = cp.call(method, &path, cred, body).await;
        let (absent_status, expected) = cp.call(method, &absent_path, cred, absent_body).await;
        assert_eq!((status, absent_status), (404, 404), "{method} {path}: {got}");
        assert_eq!(got, expected, "{method} {path}: indistinguishable from an id that does not exist");
    }
    // Lists never show A's things to B.
    for path in [
        "/api/v1/appliances",
        "/api/v1/inventory",
        "/api/v1/config/defaults",
        "/api/v1/users",
        "/api/v1/keys",
        "/api/v1/account",
    ] {
        let (status, body) = cp.call("GET", path, &key_b, None).await;
        assert_eq!(status, 200, "{path}");
        let text = body.to_string();
        for a_thing in [box_a.to_string(), "a-box".into(), a.to_string(), "owner@a.example".into(), key_a_id.clone()] {
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
