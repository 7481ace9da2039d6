//! The OpenAPI document at `/api/openapi.json`: it is valid OpenAPI 3.1 (parsed by `oas3`,
//! every `$ref` resolves, operation ids are unique, path parameters are declared), it lists
//! exactly the routes the API serves, each of them is answered by its handler (never by the
//! fallback nor with a 405) with a documented status, content type and error code — without
//! credentials, with each credential it documents (a tenant API key, an owner's sign-in
//! session, an admin operator token) and, on the account and operator routes, with each
//! credential it does not — and `/docs` renders it without loading anything from the network.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use sqlx::PgPool;

use crate::support::*;

/// Every route the API serves. A route added to the router is added here too; a route whose
/// annotation is deleted disappears from the document and fails the test.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/api/openapi.json"),
    ("GET", "/docs"),
    ("POST", "/api/v1/enroll"),
    ("GET", "/api/v1/appliances"),
    ("GET", "/api/v1/appliances/{id}"),
    ("PUT", "/api/v1/appliances/{id}/labels"),
    ("POST", "/api/v1/appliances/{id}/tasks"),
    ("GET", "/api/v1/appliances/{id}/tasks"),
    ("GET", "/api/v1/tasks/{id}"),
    ("POST", "/api/v1/tasks/{id}/cancel"),
    ("GET", "/api/v1/appliances/{id}/config"),
    ("PUT", "/api/v1/appliances/{id}/config"),
    ("GET", "/api/v1/config/defaults"),
    ("PUT", "/api/v1/config/defaults"),
    ("GET", "/api/v1/inventory"),
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/logout"),
    ("POST", "/api/v1/auth/password"),
    ("GET", "/api/v1/account"),
    ("GET", "/api/v1/users"),
    ("POST", "/api/v1/users"),
    ("DELETE", "/api/v1/users/{id}"),
    ("GET", "/api/v1/keys"),
    ("POST", "/api/v1/keys"),
    ("DELETE", "/api/v1/keys/{id}"),
    ("GET", "/api/v1/admin/tenants"),
    ("POST", "/api/v1/admin/tenants"),
    ("GET", "/api/v1/admin/tenants/{id}"),
    ("PATCH", "/api/v1/admin/tenants/{id}"),
    ("DELETE", "/api/v1/admin/tenants/{id}"),
    ("GET", "/api/v1/admin/tenants/{id}/keys"),
    ("POST", "/api/v1/admin/tenants/{id}/keys"),
    ("DELETE", "/api/v1/admin/tenants/{id}/keys/{key}"),
    ("POST", "/api/v1/admin/tenants/{id}/users"),
    ("POST", "/api/v1/admin/tenants/{id}/appliances"),
    ("GET", "/api/v1/admin/plans"),
    ("POST", "/api/v1/admin/plans"),
    ("PATCH", "/api/v1/admin/plans/{id}"),
    ("GET", "/api/v1/admin/appliances"),
    ("GET", "/api/v1/admin/appliances/{id}"),
    ("POST", "/api/v1/admin/appliances/{id}/revoke"),
    ("POST", "/api/v1/admin/appliances/{id}/enrollment-token"),
    ("POST", "/api/v1/admin/appliances/{id}/tasks"),
    ("GET", "/api/v1/admin/fleet/summary"),
    ("GET", "/api/v1/admin/fleet/trend"),
    ("GET", "/api/v1/admin/fleet/ingest"),
    ("GET", "/api/v1/admin/appliances/{id}/config"),
    ("GET", "/api/v1/admin/tasks"),
    ("GET", "/api/v1/admin/tasks/{id}"),
    ("POST", "/api/v1/admin/tasks/{id}/cancel"),
    ("GET", "/api/v1/admin/catalog"),
    ("PUT", "/api/v1/admin/appliances/{id}/labels"),
    ("GET", "/api/v1/admin/pki/rotation"),
    ("POST", "/api/v1/admin/pki/rotation"),
    ("POST", "/api/v1/admin/pki/rotation/finish"),
    ("GET", "/api/v1/admin/operators"),
    ("POST", "/api/v1/admin/operators"),
    ("DELETE", "/api/v1/admin/operators/{id}"),
    ("GET", "/api/v1/admin/audit"),
    ("GET", "/api/v1/admin/audit.csv"),
    ("GET", "/api/v1/admin/operator-accounts"),
    ("POST", "/api/v1/admin/operator-accounts"),
    ("DELETE", "/api/v1/admin/operator-accounts/{id}"),
    ("POST", "/api/v1/console/login"),
    ("GET", "/api/v1/console/session"),
    ("POST", "/api/v1/console/logout"),
    ("POST", "/api/v1/console/password"),
    ("POST", "/api/v1/console/totp"),
    ("POST", "/api/v1/console/totp/confirm"),
    ("POST", "/api/v1/support/conversations"),
    ("GET", "/api/v1/support/conversations"),
    ("POST", "/api/v1/rollouts"),
    ("GET", "/api/v1/rollouts"),
    ("GET", "/api/v1/rollouts/{id}"),
    ("PATCH", "/api/v1/rollouts/{id}"),
    ("POST", "/api/v1/rollouts/{id}/{action}"),
    ("GET", "/api/v1/rollouts/{id}/executions"),
    ("GET", "/api/v1/rollouts/{id}/events"),
    ("GET", "/api/v1/admin/artifacts"),
    ("POST", "/api/v1/admin/rollouts"),
    ("GET", "/api/v1/admin/rollouts"),
    ("GET", "/api/v1/admin/rollouts/{id}"),
    ("PATCH", "/api/v1/admin/rollouts/{id}"),
    ("POST", "/api/v1/admin/rollouts/{id}/{action}"),
    ("GET", "/api/v1/admin/rollouts/{id}/executions"),
    ("GET", "/api/v1/admin/rollouts/{id}/events"),
    ("GET", "/api/v1/support/conversations/{id}"),
    ("POST", "/api/v1/support/conversations/{id}/messages"),
    ("POST", "/api/v1/support/conversations/{id}/proposals/{proposal_id}/confirm"),
    ("POST", "/api/v1/support/conversations/{id}/messages/{message_id}/confirm"),
    ("GET", "/api/v1/support/conversations/{id}/events"),
    ("GET", "/api/v1/support/settings"),
    ("PUT", "/api/v1/support/settings"),
    ("GET", "/support"),
    ("GET", "/support/chat.js"),
    ("GET", "/home"),
    ("GET", "/home/home.js"),
    ("GET", "/console"),
    ("GET", "/console/console.js"),
    ("GET", "/console/console.css"),
    ("GET", "/agent/v1/artifacts/{sha256}"),
    ("GET", "/agent/v1/self"),
    ("GET", "/api/v1/events"),
    ("GET", "/api/v1/alert-rules"),
    ("PUT", "/api/v1/alert-rules"),
    ("POST", "/api/v1/webhooks"),
    ("GET", "/api/v1/webhooks"),
    ("GET", "/api/v1/webhooks/{id}"),
    ("PATCH", "/api/v1/webhooks/{id}"),
    ("DELETE", "/api/v1/webhooks/{id}"),
    ("POST", "/api/v1/webhooks/{id}/rotate-secret"),
    ("GET", "/api/v1/webhooks/{id}/deliveries"),
    ("POST", "/api/v1/webhooks/{id}/deliveries/{delivery}/replay"),
    ("GET", "/api/v1/admin/events"),
    ("POST", "/api/v1/admin/webhooks"),
    ("GET", "/api/v1/admin/webhooks"),
    ("GET", "/api/v1/admin/webhooks/{id}"),
    ("PATCH", "/api/v1/admin/webhooks/{id}"),
    ("DELETE", "/api/v1/admin/webhooks/{id}"),
    ("POST", "/api/v1/admin/webhooks/{id}/rotate-secret"),
    ("GET", "/api/v1/admin/webhooks/{id}/deliveries"),
    ("POST", "/api/v1/admin/webhooks/{id}/deliveries/{delivery}/replay"),
];

/// The security schemes of the document.
const SCHEMES: &[&str] = &["tenant_key", "session_token", "operator_token"];

const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// What the router's fallback answers for a path it does not know.
fn fallback_body() -> Value {
    json!({"error": {"code": "not_found", "message": "route not found"}})
}

async fn start(pool: &PgPool) -> (ControlPlane, Pki, Broker) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    (cp, pki, broker)
}

async fn served_document(cp: &ControlPlane) -> (String, Value) {
    let r = cp.http.get(format!("{}/api/openapi.json", cp.url)).send().await.expect("request");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let text = r.text().await.expect("body");
    let doc: Value = serde_json::from_str(&text).expect("the document is JSON");
    (text, doc)
}

/// Every operation of the document as (METHOD, path, operation).
fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if METHODS.contains(&method.as_str()) {
                ops.push((method.to_uppercase(), path.clone(), op));
            }
        }
    }
    ops
}

/// Follows a `{"$ref": "#/…"}` inside the document.
fn deref<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => doc.pointer(r.strip_prefix('#').expect("local ref")).unwrap_or_else(|| panic!("unresolved {r}")),
        None => v,
    }
}

/// Every `$ref` anywhere in `v`.
fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                match (k.as_str(), child) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => refs(child, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| refs(i, out)),
        _ => {}
    }
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn the_document_is_valid_openapi_3_1(pool: PgPool) {
    let (cp, _pki, _broker) = start(&pool).await;
    let (text, doc) = served_document(&cp).await;

    // A typed OpenAPI 3.1 parser accepts it.
    let spec = oas3::from_json(&text).expect("oas3 parses the document");
    let version = spec.validate_version().expect("a supported OpenAPI version");
    assert_eq!((version.major, version.minor), (3, 1), "OpenAPI {version}");
    assert!(!spec.info.title.is_empty() && !spec.info.version.is_empty());

    // Every reference resolves inside the document.
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 20, "the document uses components: {}", all.len());
    for r in all {
        let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("{r} is not a local reference"));
        assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
    }

    let tags: BTreeSet<&str> =
        doc["tags"].as_array().expect("tags").iter().map(|t| t["name"].as_str().unwrap()).collect();
    let schemes = doc["components"]["securitySchemes"].as_object().expect("security schemes");
    for (name, prefix) in
        [("tenant_key", "hearth_tk_"), ("operator_token", "hearth_ot_"), ("session_token", "hearth_st_")]
    {
        let s = &schemes[name];
        assert_eq!((s["type"].as_str(), s["scheme"].as_str()), (Some("http"), Some("bearer")), "{name}");
        assert!(s["bearerFormat"].as_str().unwrap().starts_with(prefix), "{name}");
    }
    // Operators in the web console: a cookie.
    assert_eq!(
        (schemes["console_session"]["type"].as_str(), schemes["console_session"]["in"].as_str()),
        (Some("apiKey"), Some("cookie"))
    );
    assert_eq!(schemes["console_session"]["name"], "__Host-hearth_console");
    // Appliances authenticate with their client certificate (OpenAPI's mutual TLS scheme).
    assert_eq!(schemes["appliance_certificate"]["type"], "mutualTLS");

    let mut ids = BTreeSet::new();
    for (method, path, op) in operations(&doc) {
        let what = format!("{method} {path}");
        let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{what}: operationId"));
        assert!(ids.insert(id.to_owned()), "{what}: operationId {id} is not unique");
        assert!(op["summary"].as_str().is_some_and(|s| !s.is_empty()), "{what}: summary");
        let op_tags = op["tags"].as_array().unwrap_or_else(|| panic!("{what}: tags"));
        assert!(op_tags.iter().all(|t| tags.contains(t.as_str().unwrap())), "{what}: undeclared tag");
        // Path parameters: each `{name}` of the template is declared, required, and nothing else.
        let in_template: BTreeSet<&str> =
            path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect();
        let declared: BTreeSet<&str> = op["parameters"]
            .as_array()
            .map(|ps| ps.iter().map(|p| deref(&doc, p)).filter(|p| p["in"] == "path").collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .inspect(|p| assert_eq!(p["required"], true, "{what}: path parameter required"))
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(in_template, declared, "{what}: path parameters");
        // Security names a declared scheme; a secured route documents 401 and 500.
        let security = op["security"].as_array().cloned().unwrap_or_default();
        for req in &security {
            for name in req.as_object().unwrap().keys() {
                assert!(schemes.contains_key(name), "{what}: unknown security scheme {name}");
            }
        }
        let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{what}: responses"));
        if !security.is_empty() {
            assert!(responses.contains_key("401") && responses.contains_key("500"), "{what}: 401 and 500");
        }
        for (status, response) in responses {
            let response = deref(&doc, response);
            let description = response["description"].as_str().unwrap_or_default();
            assert!(!description.is_empty(), "{what} {status}: description");
            // Every error is the one error body, and its description names its codes.
            if status.starts_with('4') || status.starts_with('5') {
                if path == "/readyz" {
                    continue;
                }
                let schema = &response["content"]["application/json"]["schema"];
                assert_eq!(schema["$ref"], "#/components/schemas/ErrorBody", "{what} {status}: error body");
                assert!(description.starts_with('`'), "{what} {status}: lists its codes: {description}");
            }
        }
    }

    // Every stable code a handler can return is documented somewhere.
    for code in [
        "unauthorized",
        "not_found",
        "invalid_body",
        "invalid_path",
        "invalid_query",
        "invalid_params",
        "invalid_config",
        "secrets_unavailable",
        "task_not_cancellable",
        "invalid_csr",
        "enrollment_token_invalid",
        "enrollment_token_used",
        "enrollment_token_expired",
        "internal",
        "tenant_suspended",
        "wrong_credential",
        "owner_required",
        "user_required",
        "forbidden_for_role",
        "invalid_credentials",
        "too_many_failures",
        "tenant_required",
        "invalid_user",
        "unknown_plan",
        "email_taken",
        "last_owner",
        "plan_name_taken",
        "appliance_name_taken",
        "appliance_revoked",
        "message_too_long",
        "conversation_full",
        "proposal_not_pending",
        "too_many_streams",
        "rate_limited",
        "invalid_text",
        "payload_too_large",
        "unsupported_media_type",
        "rotation_in_progress",
        "rotation_not_started",
        "appliances_depend_on_retiring_ca",
        "pki_not_writable",
        "rollout_state",
        "rollout_started",
        "rollout_limit",
        "operator_only",
        "client_certificate_required",
        "range_not_satisfiable",
        "webhook_limit",
        "csrf_failed",
        "totp_required",
        "invalid_totp",
        "no_pending_totp",
        "secrets_key_required",
        "operator_name_taken",
        "invalid_password",
    ] {
        assert!(text.contains(&format!("`{code}`")), "error code {code} is not documented");
    }
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn every_documented_route_is_served_and_answers_as_documented(pool: PgPool) {
    let (cp, _pki, _broker) = start(&pool).await;
    let (tenant_id, key) = tenant(&pool, "docs").await;
    user(&pool, tenant_id, "owner@docs.example", "owner").await;
    let session = sign_in(&cp, "owner@docs.example").await;
    // Signing out ends a session: that route gets one of its own.
    let session_to_end = sign_in(&cp, "owner@docs.example").await;
    let operator_token = operator(&pool, "admin").await;
    let (_, doc) = served_document(&cp).await;

    // The document lists exactly the known routes.
    let documented: BTreeSet<(String, String)> = operations(&doc).into_iter().map(|(m, p, _)| (m, p)).collect();
    let known: BTreeSet<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert_eq!(documented, known, "documented routes vs the routes this test knows");

    let mut answered = BTreeMap::new();
    for (method, path, op) in operations(&doc) {
        // Every path parameter is a fresh id: nothing by that id exists.
        let concrete: Vec<String> = path
            .split('/')
            .map(|s| if s.starts_with('{') { uuid::Uuid::new_v4().to_string() } else { s.to_owned() })
            .collect();
        let url = format!("{}{}", cp.url, concrete.join("/"));
        let documented_schemes: BTreeSet<&str> = op["security"]
            .as_array()
            .map(|reqs| reqs.iter().flat_map(|r| r.as_object().unwrap().keys().map(String::as_str)).collect())
            .unwrap_or_default();
        let secured = !documented_schemes.is_empty();
        // Every secured route is also called with every credential it does not document,
        // which must be refused as documented.
        let cross_checked = secured;
        // Without credentials, then (on a secured route) with each credential.
        let mut credentials: Vec<(&str, Option<&str>)> = vec![("none", None)];
        if secured {
            for scheme in SCHEMES.iter().copied() {
                if documented_schemes.contains(scheme) || cross_checked {
                    let secret = match scheme {
                        "tenant_key" => key.as_str(),
                        "session_token" if path == "/api/v1/auth/logout" => session_to_end.as_str(),
                        "session_token" => session.as_str(),
                        _ => operator_token.as_str(),
                    };
                    credentials.push((scheme, Some(secret)));
                }
            }
        }
        for (credential, secret) in credentials {
            let mut req = cp.http.request(method.parse().unwrap(), &url);
            if let Some(s) = secret {
                req = req.bearer_auth(s);
            }
            if matches!(method.as_str(), "POST" | "PUT" | "PATCH") {
                req = req.json(&json!({}));
            }
            let r = req.send().await.expect("request");
            let status = r.status().as_u16();
            let content_type = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
            let text = r.text().await.expect("body");
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let what = format!("{method} {path} (credential: {credential}) → {status} {text:.200}");

            assert_ne!(status, 405, "{what}: method not routed");
            assert_ne!(body, fallback_body(), "{what}: answered by the router's fallback");
            let response = op["responses"]
                .get(status.to_string())
                .map(|r| deref(&doc, r))
                .unwrap_or_else(|| panic!("{what}: status {status} is not documented"));
            if secured && secret.is_none() {
                assert_eq!(status, 401, "{what}: a secured route refuses a request without credentials");
            }
            if documented_schemes.contains(credential) {
                assert!(status != 401 && status != 403, "{what}: the documented credential is accepted");
            } else if secret.is_some() {
                assert!(status >= 400, "{what}: a credential the route does not document is refused");
            }
            // The content type is the documented one; a response documented without content has none.
            let content_type = content_type.unwrap_or_default();
            let media = content_type.split(';').next().unwrap();
            let documented_media: Vec<&str> = response["content"]
                .as_object()
                .map(|c| c.keys().map(|k| k.split(';').next().unwrap()).collect())
                .unwrap_or_default();
            if documented_media.is_empty() {
                assert!(text.is_empty() && content_type.is_empty(), "{what}: documented without content");
            } else {
                assert!(
                    documented_media.contains(&media),
                    "{what}: content type {content_type} vs {documented_media:?}"
                );
            }
            // An error's code is one its documented response names.
            if status >= 400 && path != "/readyz" {
                let code = body["error"]["code"].as_str().unwrap_or_else(|| panic!("{what}: error body"));
                let description = response["description"].as_str().unwrap();
                assert!(description.contains(&format!("`{code}`")), "{what}: code {code} not in: {description}");
            }
            answered.insert(format!("{method} {path} {credential}"), status);
        }
    }
    // Spot checks that the requests reached the handlers they were meant for.
    assert_eq!(answered["GET /api/v1/appliances/{id} tenant_key"], 404);
    assert_eq!(answered["POST /api/v1/enroll none"], 400);
    assert_eq!(answered["GET /api/v1/inventory tenant_key"], 200);
    assert_eq!(answered["GET /healthz none"], 200);
    assert_eq!(answered["POST /api/v1/auth/login none"], 400);
    assert_eq!(answered["POST /api/v1/auth/logout session_token"], 204);
    assert_eq!(answered["GET /api/v1/account tenant_key"], 200);
    assert_eq!(answered["GET /api/v1/account session_token"], 200);
    assert_eq!(answered["GET /api/v1/account operator_token"], 403);
    assert_eq!(answered["GET /api/v1/users session_token"], 200);
    assert_eq!(answered["POST /api/v1/users tenant_key"], 403);
    assert_eq!(answered["DELETE /api/v1/users/{id} session_token"], 404);
    assert_eq!(answered["DELETE /api/v1/keys/{id} session_token"], 404);
    assert_eq!(answered["GET /api/v1/admin/tenants operator_token"], 200);
    assert_eq!(answered["GET /api/v1/admin/pki/rotation operator_token"], 200);
    // A rotation of the test's own PKI was started, then finished (no appliance depends on it).
    assert_eq!(answered["POST /api/v1/admin/pki/rotation operator_token"], 201);
    assert_eq!(answered["POST /api/v1/admin/pki/rotation/finish operator_token"], 200);
    assert_eq!(answered["GET /api/v1/admin/tenants tenant_key"], 401);
    assert_eq!(answered["GET /api/v1/admin/tenants session_token"], 401);
    assert_eq!(answered["GET /api/v1/admin/tenants/{id} operator_token"], 404);
    assert_eq!(answered["PATCH /api/v1/admin/plans/{id} operator_token"], 404);
    assert_eq!(answered["DELETE /api/v1/admin/tenants/{id}/keys/{key} operator_token"], 404);
    assert_eq!(answered["GET /api/v1/admin/fleet/summary operator_token"], 200);
    assert_eq!(answered["GET /api/v1/admin/audit operator_token"], 200);
    // The agent's routes take only an appliance's client certificate, never a bearer credential.
    assert_eq!(answered["GET /agent/v1/self none"], 401);
    assert_eq!(answered["GET /agent/v1/self tenant_key"], 401);
    assert_eq!(answered["GET /agent/v1/artifacts/{sha256} operator_token"], 401);

    // Refusals the empty bodies above do not reach, with a body the handler accepts.
    let refusals = [
        // An API key cannot change a password: only a signed-in user has one.
        ("POST", "/api/v1/auth/password", key.as_str(), json!({"current_password": "x", "new_password": "y"}), 403),
        (
            "POST",
            "/api/v1/auth/password",
            session.as_str(),
            json!({"current_password": "wrong", "new_password": "long enough password"}),
            401,
        ),
        (
            "POST",
            "/api/v1/auth/password",
            session.as_str(),
            json!({"current_password": PASSWORD, "new_password": "short"}),
            422,
        ),
        ("POST", "/api/v1/auth/login", "", json!({"email": "owner@docs.example", "password": "wrong"}), 401),
        (
            "POST",
            "/api/v1/users",
            session.as_str(),
            json!({"email": "owner@docs.example", "password": PASSWORD, "role": "member"}),
            409,
        ),
        ("POST", "/api/v1/keys", session.as_str(), json!({"name": ""}), 422),
        (
            "POST",
            "/api/v1/admin/tenants",
            operator_token.as_str(),
            json!({"name": "x", "plan_id": uuid::Uuid::new_v4()}),
            422,
        ),
    ];
    for (method, path, secret, body, expected) in refusals {
        let mut req = cp.http.request(method.parse().unwrap(), format!("{}{path}", cp.url)).json(&body);
        if !secret.is_empty() {
            req = req.bearer_auth(secret);
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let body: Value = r.json().await.expect("error body");
        let what = format!("{method} {path} {body}");
        assert_eq!(status, expected, "{what}");
        let (_, _, op) = operations(&doc).into_iter().find(|(m, p, _)| m == method && p == path).expect("documented");
        let response = deref(&doc, &op["responses"][status.to_string()]);
        let code = body["error"]["code"].as_str().unwrap_or_else(|| panic!("{what}: error body"));
        let description = response["description"].as_str().unwrap_or_else(|| panic!("{what}: {status} not documented"));
        assert!(description.contains(&format!("`{code}`")), "{what}: code {code} not in: {description}");
    }
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn the_docs_page_renders_the_document_without_the_network(pool: PgPool) {
    let (cp, _pki, _broker) = start(&pool).await;
    let r = cp.http.get(format!("{}/docs", cp.url)).send().await.expect("request");
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = r.text().await.expect("body");
    assert!(html.starts_with("<!doctype html>"), "{html:.100}");
    assert!(html.contains("fetch(SPEC_URL)") && html.contains(r#""/api/openapi.json""#), "loads the document");
    for external in ["http://", "https://", "<link", "<script src", "@import", "url("] {
        assert!(!html.contains(external), "the page loads nothing from elsewhere: found {external}");
    }
}

/// Routes go through `utoipa_axum::routes!`, which serves a handler only together with its
/// `#[utoipa::path]` description; a plain axum `.route(…)` would be served undocumented.
#[test]
fn no_route_bypasses_the_document() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    let mut stack = vec![dir];
    let mut files = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/http") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files += 1;
                let source = std::fs::read_to_string(&path).expect("source");
                for bypass in [".route(", ".route_service(", ".nest_service(", "axum::routing"] {
                    assert!(
                        !source.contains(bypass),
                        "{}: `{bypass}` serves a route outside the document",
                        path.display()
                    );
                }
            }
        }
    }
    assert!(files >= 8, "read {files} files");
}

/// Every state and role the control plane stores is an enum in the document, with exactly
/// the values the code and the database accept.
#[test]
fn the_document_lists_every_stored_state_as_an_enum() {
    use hearth_control_plane::model::*;
    let doc = serde_json::to_value(hearth_control_plane::http::openapi::document()).expect("document");
    let schemas = &doc["components"]["schemas"];
    let expect = |name: &str, values: Vec<&str>| {
        let listed: Vec<&str> = schemas[name]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("schema {name} is not an enum in the document: {}", schemas[name]))
            .iter()
            .map(|v| v.as_str().expect("a string value"))
            .collect();
        assert_eq!(listed, values, "{name}");
    };
    expect("TenantStatus", TenantStatus::ALL.iter().map(|v| v.as_str()).collect());
    expect("ApplianceStatus", ApplianceStatus::ALL.iter().map(|v| v.as_str()).collect());
    expect("FleetStatus", FleetStatus::ALL.iter().map(|v| v.as_str()).collect());
    expect("Presence", Presence::ALL.iter().map(|v| v.as_str()).collect());
    expect("TaskStatus", TaskStatus::ALL.iter().map(|v| v.as_str()).collect());
    expect("ProposalStatus", ProposalStatus::ALL.iter().map(|v| v.as_str()).collect());
    expect("MessageRole", MessageRole::ALL.iter().map(|v| v.as_str()).collect());
    expect("OperatorRole", OperatorRole::ALL.iter().map(|v| v.as_str()).collect());
    expect("UserRole", UserRole::ALL.iter().map(|v| v.as_str()).collect());
    expect("ActorKind", ActorKind::ALL.iter().map(|v| v.as_str()).collect());
}

/// The layers' arrows point one way: `http` → `domain` → `db` → `model`. Read from the
/// sources, so a shortcut is caught when it is written.
#[test]
fn the_layers_import_only_downwards() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut offences = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).expect("under src").to_string_lossy().replace('\\', "/");
            let source = std::fs::read_to_string(&path).expect("source");
            let forbidden: &[&str] = if rel.starts_with("domain/") {
                &["crate::http"]
            } else if rel.starts_with("db/") {
                &["crate::http", "crate::domain", "crate::assistant"]
            } else if rel == "model.rs" {
                &["crate::"]
            } else if rel.starts_with("assistant/") {
                &["crate::http", "crate::domain", "crate::db"]
            } else if rel.starts_with("http/") {
                // A handler module never reaches into a sibling handler module.
                &["super::super::account", "super::super::tasks", "super::super::support", "super::tenants"]
            } else {
                &[]
            };
            for f in forbidden {
                if source.lines().any(|l| !l.trim_start().starts_with("//") && l.contains(f)) {
                    offences.push(format!("{rel} uses {f}"));
                }
            }
        }
    }
    assert!(offences.is_empty(), "imports against the layering: {offences:#?}");
}
