//! The operators' API, operator roles, tenant users' sign-in, suspension,
//! revocation through the broker's CRL, tenant deletion, the audit trail, and the login
//! role that reads nothing on its own.

use std::time::Duration;

use hearth_control_plane::pki::files;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::support::mqtt::{connect, options};
use crate::support::*;

async fn stack(pool: &PgPool) -> (Pki, Broker, ControlPlane) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    (pki, broker, cp)
}

fn audit_actions(body: &Value) -> Vec<String> {
    body["entries"].as_array().expect("entries").iter().map(|e| e["action"].as_str().unwrap().to_string()).collect()
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn first_day_flow_with_roles_and_audit(pool: PgPool) {
    let (_pki, _broker, cp) = stack(&pool).await;
    let admin = operator(&pool, "admin").await;
    let support = operator(&pool, "support").await;
    let viewer = operator(&pool, "viewer").await;

    // Plan → tenant on it → API key → appliance.
    let (status, plan) = cp
        .call(
            "POST",
            "/api/v1/admin/plans",
            &admin,
            Some(json!({"name": "family", "api_per_minute": 120, "api_burst": 20, "assistant_per_hour": 30,
                         "assistant_burst": 3, "mqtt_per_minute": 60, "mqtt_burst": 10})),
        )
        .await;
    assert_eq!(status, 201, "{plan}");
    let (status, again) = cp
        .call(
            "POST",
            "/api/v1/admin/plans",
            &admin,
            Some(json!({"name": "family", "api_per_minute": 1,
            "api_burst": 1, "assistant_per_hour": 1, "assistant_burst": 1, "mqtt_per_minute": 1, "mqtt_burst": 1})),
        )
        .await;
    assert_eq!((status, again["error"]["code"].as_str()), (409, Some("plan_name_taken")));
    let (status, headers, created_tenant) = cp
        .request("POST", "/api/v1/admin/tenants", &admin, Some(json!({"name": "The Smiths", "plan_id": plan["id"]})))
        .await;
    assert_eq!(status, 201, "{created_tenant}");
    let request_id = headers["x-request-id"].to_str().unwrap().to_string();
    let t = created_tenant["id"].as_str().unwrap().to_string();
    let (status, key) =
        cp.call("POST", &format!("/api/v1/admin/tenants/{t}/keys"), &admin, Some(json!({"name": "hub"}))).await;
    assert_eq!(status, 201, "{key}");
    let api_key = key["key"].as_str().unwrap().to_string();
    assert!(api_key.starts_with("hearth_tk_") && api_key.starts_with(key["prefix"].as_str().unwrap()));
    let (status, reg) =
        cp.call("POST", &format!("/api/v1/admin/tenants/{t}/appliances"), &admin, Some(json!({"name": "hall"}))).await;
    assert_eq!(status, 201, "{reg}");
    assert!(reg["enrollment_token"].as_str().unwrap().starts_with("hearth_et_"));
    let appliance = reg["appliance_id"].as_str().unwrap().to_string();

    // The customer sees its plan's quotas and its appliance.
    let (status, account) = cp.call("GET", "/api/v1/account", &api_key, None).await;
    assert_eq!((status, account["plan"].as_str()), (200, Some("family")), "{account}");
    assert_eq!(account["quotas"]["api_per_minute"], 120);
    let (status, list) = cp.call("GET", "/api/v1/appliances", &api_key, None).await;
    assert_eq!((status, list["appliances"][0]["id"].as_str()), (200, Some(appliance.as_str())));

    // A plan change shows at once (no restart).
    let plan_id = plan["id"].as_str().unwrap();
    let (status, _) =
        cp.call("PATCH", &format!("/api/v1/admin/plans/{plan_id}"), &admin, Some(json!({"api_per_minute": 240}))).await;
    assert_eq!(status, 200);
    let (_, account) = cp.call("GET", "/api/v1/account", &api_key, None).await;
    assert_eq!(account["quotas"]["api_per_minute"], 240);

    // Roles: the viewer reads, support reads and acts for the customer, neither manages.
    for op in [&viewer, &support, &admin] {
        let (status, page) = cp.call("GET", "/api/v1/admin/tenants?q=smith", op, None).await;
        assert_eq!((status, page["tenants"].as_array().map(Vec::len)), (200, Some(1)), "{page}");
    }
    let task = json!({"action": "dns.record.add", "params": {"hostname": "tv.home", "ip": "192.168.1.9"}});
    let (status, body) =
        cp.call("POST", &format!("/api/v1/admin/appliances/{appliance}/tasks"), &viewer, Some(task.clone())).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden_for_role")));
    let (status, created) =
        cp.call("POST", &format!("/api/v1/admin/appliances/{appliance}/tasks"), &support, Some(task)).await;
    assert_eq!(status, 202, "{created}");
    for (method, path, body) in [
        ("POST", format!("/api/v1/admin/tenants/{t}/keys"), Some(json!({"name": "x"}))),
        ("DELETE", format!("/api/v1/admin/tenants/{t}"), None),
        ("POST", "/api/v1/admin/operators".to_string(), Some(json!({"name": "x", "role": "admin"}))),
        ("POST", format!("/api/v1/admin/appliances/{appliance}/revoke"), None),
    ] {
        let (status, got) = cp.call(method, &path, &support, body).await;
        assert_eq!((status, got["error"]["code"].as_str()), (403, Some("forbidden_for_role")), "{method} {path}");
    }
    // The customer sees the support task like its own.
    let (status, tasks) = cp.call("GET", &format!("/api/v1/appliances/{appliance}/tasks"), &api_key, None).await;
    assert_eq!((status, tasks["tasks"][0]["id"].clone()), (200, created["id"].clone()));
    // Customer credentials do not open the admin API, and operator tokens not the tenant API.
    assert_eq!(cp.call("GET", "/api/v1/admin/tenants", &api_key, None).await.0, 401);
    let (status, body) = cp.call("GET", "/api/v1/appliances", &admin, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("wrong_credential")));

    // Fleet view across tenants and its filters.
    tenant(&pool, "The Joneses").await;
    let (status, fleet) = cp.call("GET", &format!("/api/v1/admin/appliances?tenant={t}"), &viewer, None).await;
    assert_eq!((status, fleet["appliances"].as_array().map(Vec::len)), (200, Some(1)), "{fleet}");
    let (_, fleet) = cp.call("GET", "/api/v1/admin/appliances?status=online", &viewer, None).await;
    assert_eq!(fleet["appliances"].as_array().map(Vec::len), Some(0));
    let (_, fleet) = cp.call("GET", "/api/v1/admin/appliances?status=never_seen", &viewer, None).await;
    assert_eq!(fleet["appliances"].as_array().map(Vec::len), Some(1));
    let (status, summary) = cp.call("GET", "/api/v1/admin/fleet/summary", &viewer, None).await;
    assert_eq!(
        (status, summary["never_seen"].as_i64(), summary["tenants"].as_array().map(Vec::len)),
        (200, Some(1), Some(2))
    );
    let (status, detail) = cp.call("GET", &format!("/api/v1/admin/appliances/{appliance}"), &viewer, None).await;
    assert_eq!((status, detail["tenant_id"].as_str()), (200, Some(t.as_str())));
    assert_eq!(detail["tasks"].as_array().map(Vec::len), Some(1));

    // Revoking the key: refused from then on.
    let key_id = key["id"].as_str().unwrap();
    let (status, _) = cp.call("DELETE", &format!("/api/v1/admin/tenants/{t}/keys/{key_id}"), &admin, None).await;
    assert_eq!(status, 200);
    assert_eq!(cp.call("GET", "/api/v1/appliances", &api_key, None).await.0, 401);

    // The audit trail: who, what, request id, before/after.
    let (status, trail) = cp.call("GET", &format!("/api/v1/admin/audit?tenant={t}"), &viewer, None).await;
    assert_eq!(status, 200);
    let actions = audit_actions(&trail);
    for expected in ["tenant.create", "api_key.issue", "appliance.create", "task.create", "api_key.revoke"] {
        assert!(actions.contains(&expected.to_string()), "{expected} in {actions:?}");
    }
    let (_, by_request) = cp.call("GET", &format!("/api/v1/admin/audit?request_id={request_id}"), &viewer, None).await;
    let entry = &by_request["entries"][0];
    assert_eq!((entry["action"].as_str(), entry["actor_kind"].as_str()), (Some("tenant.create"), Some("operator")));
    assert_eq!(entry["actor_name"], "test-admin");
    assert_eq!(entry["after"]["name"], "The Smiths");
    let (_, support_trail) = cp.call("GET", "/api/v1/admin/audit?action=task.", &viewer, None).await;
    assert_eq!(support_trail["entries"][0]["actor_name"], "test-support");
    // The trail cannot be rewritten, even by the service role.
    let err = sqlx::query("DELETE FROM audit_log").execute(&pool).await.expect_err("append-only");
    assert!(err.to_string().contains("append-only"), "{err}");
    let (_, plan_trail) = cp.call("GET", "/api/v1/admin/audit?action=plan.update", &viewer, None).await;
    assert_eq!(plan_trail["entries"][0]["before"]["api_per_minute"], 120);
    assert_eq!(plan_trail["entries"][0]["after"]["api_per_minute"], 240);
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn tenant_users_sign_in_are_locked_out_and_owners_manage_the_account(pool: PgPool) {
    let (_pki, _broker, cp) = stack(&pool).await;
    let admin = operator(&pool, "admin").await;
    let (t, api_key) = tenant(&pool, "The Parks").await;
    let (status, owner) = cp
        .call(
            "POST",
            &format!("/api/v1/admin/tenants/{t}/users"),
            &admin,
            Some(json!({"email": "Ann@Parks.example", "password": PASSWORD, "role": "owner"})),
        )
        .await;
    assert_eq!(status, 201, "{owner}");
    let (status, weak) = cp
        .call(
            "POST",
            &format!("/api/v1/admin/tenants/{t}/users"),
            &admin,
            Some(json!({"email": "x@parks.example", "password": "short", "role": "member"})),
        )
        .await;
    assert_eq!((status, weak["error"]["code"].as_str()), (422, Some("invalid_user")));

    // Sign-in is case-insensitive on the address; the token works like an API key.
    let session = sign_in(&cp, "ann@parks.example").await;
    assert!(session.starts_with("hearth_st_"));
    assert_eq!(cp.call("GET", "/api/v1/appliances", &session, None).await.0, 200);

    // Owners add members and keys; members and API keys cannot.
    let (status, member) = cp
        .call(
            "POST",
            "/api/v1/users",
            &session,
            Some(json!({"email": "bo@parks.example", "password": PASSWORD, "role": "member"})),
        )
        .await;
    assert_eq!(status, 201, "{member}");
    let (status, dup) = cp
        .call(
            "POST",
            "/api/v1/users",
            &session,
            Some(json!({"email": "BO@parks.example", "password": PASSWORD, "role": "member"})),
        )
        .await;
    assert_eq!((status, dup["error"]["code"].as_str()), (409, Some("email_taken")));
    let member_session = sign_in(&cp, "bo@parks.example").await;
    for cred in [&member_session, &api_key] {
        let (status, body) = cp.call("POST", "/api/v1/keys", cred, Some(json!({"name": "sneaky"}))).await;
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("owner_required")));
    }
    let (status, key) = cp.call("POST", "/api/v1/keys", &session, Some(json!({"name": "tablet"}))).await;
    assert_eq!(status, 201, "{key}");
    assert_eq!(cp.call("GET", "/api/v1/account", key["key"].as_str().unwrap(), None).await.0, 200);
    // The last owner cannot be removed.
    let owner_id = owner["id"].as_str().unwrap();
    let (status, body) = cp.call("DELETE", &format!("/api/v1/users/{owner_id}"), &session, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("last_owner")));

    // Five wrong passwords from one source: that source waits, even with the right password
    // (other sources do not: see credentials::a_stranger_cannot_lock_the_owner_out).
    let login = |password: &'static str| {
        let cp = &cp;
        async move {
            let r = cp
                .http
                .post(format!("{}/api/v1/auth/login", cp.url))
                .json(&json!({"email": "bo@parks.example", "password": password}))
                .send()
                .await
                .expect("login");
            let (status, retry) = (r.status().as_u16(), r.headers().get("retry-after").cloned());
            let body: Value = r.json().await.unwrap_or(Value::Null);
            (status, retry, body)
        }
    };
    for _ in 0..4 {
        let (status, _, body) = login("wrong password!!").await;
        assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_credentials")));
    }
    let (status, _, body) = login("wrong password!!").await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_credentials")), "{body}");
    let (status, retry, body) = login(PASSWORD).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("too_many_failures")), "{body}");
    assert!(retry.is_some_and(|v| v.to_str().unwrap().parse::<u64>().unwrap() > 0));
    // An unknown address looks like a wrong password.
    let r = cp
        .http
        .post(format!("{}/api/v1/auth/login", cp.url))
        .json(&json!({"email": "nobody@parks.example", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // Password change ends the sessions; sign-out ends one.
    let (status, _) = cp
        .call(
            "POST",
            "/api/v1/auth/password",
            &session,
            Some(json!({"current_password": PASSWORD, "new_password": "an even longer new password"})),
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(cp.call("GET", "/api/v1/account", &session, None).await.0, 401);
    let (status, _) = cp.call("POST", "/api/v1/auth/logout", &member_session, None).await;
    assert_eq!(status, 204);
    assert_eq!(cp.call("GET", "/api/v1/account", &member_session, None).await.0, 401);

    // Suspension: keys and sign-ins refused until reactivated.
    let (status, _) =
        cp.call("PATCH", &format!("/api/v1/admin/tenants/{t}"), &admin, Some(json!({"status": "suspended"}))).await;
    assert_eq!(status, 200);
    let (status, body) = cp.call("GET", "/api/v1/appliances", &api_key, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("tenant_suspended")));
    let (status, _) =
        cp.call("PATCH", &format!("/api/v1/admin/tenants/{t}"), &admin, Some(json!({"status": "active"}))).await;
    assert_eq!(status, 200);
    assert_eq!(cp.call("GET", "/api/v1/appliances", &api_key, None).await.0, 200);
    let (_, trail) = cp.call("GET", &format!("/api/v1/admin/audit?tenant={t}"), &admin, None).await;
    let actions = audit_actions(&trail);
    for expected in
        ["user.create", "auth.login", "api_key.issue", "user.password_change", "tenant.suspend", "tenant.reactivate"]
    {
        assert!(actions.contains(&expected.to_string()), "{expected} in {actions:?}");
    }
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn a_revoked_appliance_is_refused_by_the_broker_and_a_deleted_tenant_takes_its_appliances(pool: PgPool) {
    let (pki, broker, cp) = stack(&pool).await;
    let admin = operator(&pool, "admin").await;
    let (t, key) = tenant(&pool, "The Lees").await;
    let revoked = Appliance::enroll(&cp, &pki, &pool, t, "old-box").await;
    let kept = Appliance::enroll(&cp, &pki, &pool, t, "new-box").await;
    let (stop_revoked, _) = revoked.start();
    wait_status(&cp, &key, revoked.id, "online").await;

    let (status, body) =
        cp.call("POST", &format!("/api/v1/admin/appliances/{}/revoke", revoked.id), &admin, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["revoked_at"].is_string());
    // Its connection is dropped and its reconnects fail the TLS handshake.
    wait_status(&cp, &key, revoked.id, "offline").await;
    let ca = pki.read(files::CA_CERT);
    let creds = |a: &Appliance| {
        (
            std::fs::read(a.state.path().join("cert.pem")).expect("cert"),
            std::fs::read(a.state.path().join("key.pem")).expect("key"),
        )
    };
    let (cert, k) = creds(&revoked);
    let refused = connect(options(&broker, &revoked.id.to_string(), &ca, Some((&cert, &k)))).await;
    assert!(refused.is_err(), "a revoked certificate still connects");
    let (cert, k) = creds(&kept);
    connect(options(&broker, &kept.id.to_string(), &ca, Some((&cert, &k)))).await.expect("others still connect");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, detail) = cp.call("GET", &format!("/api/v1/appliances/{}", revoked.id), &key, None).await;
    assert_eq!(detail["status"], "offline", "the revoked agent never came back: {detail}");
    // No tasks for it.
    let (status, body) = cp
        .call(
            "POST",
            &format!("/api/v1/appliances/{}/tasks", revoked.id),
            &key,
            Some(json!({"action": "appliance.reboot"})),
        )
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("appliance_revoked")));
    stop_revoked.cancel();

    // Deleting the tenant revokes the rest and deletes everything of it but the trail.
    let (status, body) = cp.call("DELETE", &format!("/api/v1/admin/tenants/{t}"), &admin, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["revoked_appliances"].as_array().map(Vec::len), Some(2));
    let refused = connect(options(&broker, &kept.id.to_string(), &ca, Some((&cert, &k)))).await;
    assert!(refused.is_err(), "a deleted tenant's appliance still connects");
    assert_eq!(cp.call("GET", "/api/v1/appliances", &key, None).await.0, 401);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM appliances WHERE tenant_id = $1")
        .bind(t)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    let revocations: i64 = sqlx::query_scalar("SELECT count(*) FROM certificate_revocations WHERE tenant_id = $1")
        .bind(t)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(revocations, 2);
    let (_, trail) =
        cp.call("GET", &format!("/api/v1/admin/audit?tenant={t}&action=tenant.delete"), &admin, None).await;
    assert_eq!(trail["entries"].as_array().map(Vec::len), Some(1));
}

/// The application's login role, set up as docs/architecture.md says (NOINHERIT, member of
/// the two roles, owning nothing), reads nothing until it assumes a role.
#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn the_login_role_reads_nothing_until_it_assumes_a_role(pool: PgPool) {
    let (a, _) = tenant(&pool, "tenant-a").await;
    let (b, _) = tenant(&pool, "tenant-b").await;
    appliance(&pool, a, "a-box").await;
    appliance(&pool, b, "b-box").await;
    let role = format!("hearth_app_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE ROLE {role} LOGIN NOINHERIT")).execute(&pool).await.unwrap();
    sqlx::query(&format!("GRANT hearth_service, hearth_tenant TO {role}")).execute(&pool).await.unwrap();
    let opts = (*pool.connect_options()).clone().username(&role);

    let result = async {
        // Plain connection as the login role: no table is readable.
        let raw = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect_with(opts.clone()).await.unwrap();
        for table in ["appliances", "tenants", "tasks", "audit_log", "api_keys"] {
            let err = sqlx::query(&format!("SELECT count(*) FROM {table}")).execute(&raw).await.expect_err(table);
            assert!(err.to_string().contains("permission denied"), "{table}: {err}");
        }
        let (superuser, bypass): (bool, bool) =
            sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
                .fetch_one(&raw)
                .await
                .unwrap();
        assert!(!superuser && !bypass);
        raw.close().await;

        // The service pool (what `serve` uses) works; a tenant transaction sees one tenant.
        let service = hearth_control_plane::db::service_pool_like(
            &sqlx::postgres::PgPoolOptions::new().max_connections(1).connect_lazy_with(opts.clone()),
            2,
        );
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM appliances").fetch_one(&service).await.unwrap();
        assert_eq!(n, 2);
        let mut tx = hearth_control_plane::db::tenant_tx(&service, b).await.unwrap();
        let names: Vec<String> = sqlx::query_scalar("SELECT name FROM appliances").fetch_all(&mut *tx).await.unwrap();
        assert_eq!(names, ["b-box"]);
        tx.rollback().await.unwrap();
        service.close().await;
    }
    .await;
    let _ = sqlx::query(&format!("DROP OWNED BY {role}")).execute(&pool).await;
    let _ = sqlx::query(&format!("DROP ROLE {role}")).execute(&pool).await;
    result
}
