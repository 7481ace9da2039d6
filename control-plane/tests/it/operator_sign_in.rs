//! Operators' sign-in to the web console: accounts with argon2id passwords and optional
//! TOTP, a session in an HttpOnly, Secure, SameSite=Strict `__Host-` cookie, a CSRF token
//! required on every change made with the cookie, roles as for tokens, lockout as for
//! customers, disabled accounts and signed-out sessions refused at once, all audited.

use hearth_control_plane::config::Config;
use reqwest::header::{HeaderMap, COOKIE, SET_COOKIE};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::support::*;

async fn stack(pool: &PgPool, configure: impl FnOnce(&mut Config)) -> (Pki, Broker, ControlPlane) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let mut config = test_config(&pki, &broker);
    configure(&mut config);
    let cp = ControlPlane::start(pool.clone(), config, &pki).await;
    (pki, broker, cp)
}

fn with_secrets_key(c: &mut Config) {
    use base64::Engine;
    c.secrets.key =
        Some(hearth_control_plane::secret::Secret::new(base64::engine::general_purpose::STANDARD.encode([7u8; 32])));
}

/// An answer: status, headers, JSON body.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

async fn send(r: reqwest::RequestBuilder) -> Answer {
    let r = r.send().await.expect("request");
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    Answer { status, headers, body: r.json().await.unwrap_or(Value::Null) }
}

/// A console session as a browser holds it: the cookie, and the CSRF token the page keeps.
struct Browser {
    cookie: String,
    csrf: String,
}

impl Browser {
    /// A request with the cookie (and, if `csrf`, the CSRF header), no bearer credential.
    fn request(&self, cp: &ControlPlane, method: &str, path: &str, csrf: Option<&str>) -> reqwest::RequestBuilder {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut r = cp.http.request(method, format!("{}{path}", cp.url)).header(COOKIE, &self.cookie);
        if let Some(t) = csrf {
            r = r.header("x-csrf-token", t);
        }
        r
    }
}

async fn login(cp: &ControlPlane, body: Value) -> Answer {
    send(cp.http.post(format!("{}/api/v1/console/login", cp.url)).json(&body)).await
}

/// Signs in and checks the cookie's attributes.
async fn sign_in(cp: &ControlPlane, name: &str, password: &str, totp: Option<String>) -> Browser {
    let a = login(cp, json!({ "name": name, "password": password, "totp": totp })).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let set = a.headers.get(SET_COOKIE).expect("a cookie").to_str().unwrap().to_string();
    let (pair, attributes) = set.split_once(';').expect("attributes");
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(attributes.split(';').any(|a| a.trim() == attr), "{attr} in {set}");
    }
    let (cookie_name, secret) = pair.split_once('=').unwrap();
    assert_eq!(cookie_name, "__Host-hearth_console");
    assert!(secret.starts_with("hearth_oc_"), "{secret}");
    assert!(!a.body.to_string().contains(secret), "the session secret stays in the cookie");
    assert_eq!(a.body["operator"]["name"], name);
    let csrf = a.body["csrf_token"].as_str().expect("a CSRF token").to_string();
    assert_ne!(csrf, secret);
    Browser { cookie: pair.to_string(), csrf }
}

/// Creates an account through the admin API with `token`; returns its id and password.
async fn account(cp: &ControlPlane, token: &str, name: &str, role: &str) -> (String, String) {
    let (status, _, body) =
        cp.request("POST", "/api/v1/admin/operator-accounts", token, Some(json!({"name": name, "role": role}))).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["role"], role);
    let password = body["password"].as_str().expect("a chosen password, shown once").to_string();
    (body["id"].as_str().unwrap().to_string(), password)
}

async fn tenant_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM tenants").fetch_one(pool).await.unwrap()
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn a_console_session_is_a_strict_cookie_and_changes_need_its_csrf_token(pool: PgPool) {
    let (_pki, _broker, cp) = stack(&pool, |_| {}).await;
    let token = operator(&pool, "admin").await;

    // Accounts: chosen passwords are shown once and never listed; rules answer 422/409.
    let (_, password) = account(&cp, &token, "ops lead", "admin").await;
    let (_, viewer_password) = account(&cp, &token, "night watch", "viewer").await;
    let (status, _, body) = cp
        .request(
            "POST",
            "/api/v1/admin/operator-accounts",
            &token,
            Some(json!({"name": "short", "role": "admin", "password": "2short"})),
        )
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid_password")), "{body}");
    let (status, _, body) = cp
        .request("POST", "/api/v1/admin/operator-accounts", &token, Some(json!({"name": "ops lead", "role": "viewer"})))
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("operator_name_taken")), "{body}");
    let (status, listed) = cp.get("/api/v1/admin/operator-accounts", &token).await;
    assert_eq!(status, 200);
    assert_eq!(listed["accounts"].as_array().unwrap().len(), 2);
    assert!(!listed.to_string().contains(&password) && !listed.to_string().contains("password_hash"));

    // A wrong password and an unknown name answer alike, and set no cookie.
    for body in
        [json!({"name": "ops lead", "password": "not the password"}), json!({"name": "nobody", "password": "x"})]
    {
        let a = login(&cp, body).await;
        assert_eq!((a.status, a.code()), (401, "invalid_credentials"), "{}", a.body);
        assert!(a.headers.get(SET_COOKIE).is_none());
    }

    let admin = sign_in(&cp, "ops lead", &password, None).await;
    // The cookie reads like an operator token…
    let a = send(admin.request(&cp, "GET", "/api/v1/admin/fleet/summary", None)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = send(admin.request(&cp, "GET", "/api/v1/console/session", None)).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        (a.body["operator"]["role"].as_str(), a.body["csrf_token"].as_str()),
        (Some("admin"), Some(&*admin.csrf))
    );
    // …but changes nothing without the session's CSRF token, and nothing is stored.
    let before = tenant_count(&pool).await;
    for csrf in [None, Some("forged"), Some(&admin.csrf[1..])] {
        let a = send(admin.request(&cp, "POST", "/api/v1/admin/tenants", csrf).json(&json!({"name": "Forged"}))).await;
        assert_eq!((a.status, a.code()), (403, "csrf_failed"), "{csrf:?}: {}", a.body);
    }
    assert_eq!(tenant_count(&pool).await, before);
    let a = send(admin.request(&cp, "POST", "/api/v1/admin/tenants", Some(&admin.csrf)).json(&json!({"name": "Real"})))
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let tenant_id = a.body["id"].as_str().unwrap().to_string();
    // The audit trail names the account.
    let actor: String =
        sqlx::query_scalar("SELECT actor_name FROM audit_log WHERE action = 'tenant.create' AND target_id = $1")
            .bind(&tenant_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(actor, "ops lead");
    // Another session's token is no good for this one.
    let other = sign_in(&cp, "ops lead", &password, None).await;
    assert_ne!(other.csrf, admin.csrf);
    let a =
        send(admin.request(&cp, "POST", "/api/v1/admin/tenants", Some(&other.csrf)).json(&json!({"name": "X"}))).await;
    assert_eq!(a.code(), "csrf_failed");
    // The cookie is an operator's, not a customer's.
    let a = send(admin.request(&cp, "GET", "/api/v1/appliances", None)).await;
    assert_eq!((a.status, a.code()), (403, "wrong_credential"));

    // A viewer reads, and is refused every change even with the right CSRF token.
    let viewer = sign_in(&cp, "night watch", &viewer_password, None).await;
    assert_eq!(send(viewer.request(&cp, "GET", "/api/v1/admin/tenants", None)).await.status, 200);
    let a = send(
        viewer
            .request(&cp, "PATCH", &format!("/api/v1/admin/tenants/{tenant_id}"), Some(&viewer.csrf))
            .json(&json!({"status": "suspended"})),
    )
    .await;
    assert_eq!((a.status, a.code()), (403, "forbidden_for_role"), "{}", a.body);

    // Signing out needs the token too, ends the session and clears the cookie.
    let a = send(admin.request(&cp, "POST", "/api/v1/console/logout", None)).await;
    assert_eq!(a.code(), "csrf_failed");
    let a = send(admin.request(&cp, "POST", "/api/v1/console/logout", Some(&admin.csrf))).await;
    assert_eq!(a.status, 204);
    let cleared = a.headers.get(SET_COOKIE).unwrap().to_str().unwrap();
    assert!(cleared.starts_with("__Host-hearth_console=;") && cleared.contains("Max-Age=0"), "{cleared}");
    let a = send(admin.request(&cp, "GET", "/api/v1/console/session", None)).await;
    assert_eq!((a.status, a.code()), (401, "unauthorized"));
    assert_eq!(send(admin.request(&cp, "GET", "/api/v1/admin/tenants", None)).await.status, 401);
    // An operator token is not a console session.
    assert_eq!(cp.get("/api/v1/console/session", &token).await.0, 401);

    // A disabled account's sessions end at once and it cannot sign in again.
    let (status, listed) = cp.get("/api/v1/admin/operator-accounts", &token).await;
    assert_eq!(status, 200);
    let watch = listed["accounts"].as_array().unwrap().iter().find(|a| a["name"] == "night watch").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _, body) =
        cp.request("DELETE", &format!("/api/v1/admin/operator-accounts/{watch}"), &token, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["disabled_at"].is_string());
    assert_eq!(send(viewer.request(&cp, "GET", "/api/v1/admin/tenants", None)).await.status, 401);
    let a = login(&cp, json!({"name": "night watch", "password": viewer_password})).await;
    assert_eq!(a.code(), "invalid_credentials");

    let actions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM audit_log WHERE action LIKE 'operator%' ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    for want in ["operator_account.create", "operator.login", "operator_account.disable"] {
        assert!(actions.iter().any(|a| a == want), "{want} in {actions:?}");
    }
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn totp_is_asked_for_once_confirmed_and_each_code_works_once(pool: PgPool) {
    use hearth_control_plane::totp;
    let (_pki, _broker, cp) = stack(&pool, with_secrets_key).await;
    let token = operator(&pool, "admin").await;
    let (_, password) = account(&cp, &token, "second factor", "support").await;
    let session = sign_in(&cp, "second factor", &password, None).await;

    let a = send(session.request(&cp, "POST", "/api/v1/console/totp", Some(&session.csrf))).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let key = totp::from_base32(a.body["secret"].as_str().unwrap()).unwrap();
    assert!(a.body["otpauth_uri"].as_str().unwrap().starts_with("otpauth://totp/Hearth:second%20factor?secret="));
    let stored: String = sqlx::query_scalar("SELECT totp_sealed FROM operator_accounts WHERE name = 'second factor'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(!stored.contains(a.body["secret"].as_str().unwrap()), "the key is sealed at rest");
    // Not asked for until confirmed.
    sign_in(&cp, "second factor", &password, None).await;

    let now = || time::OffsetDateTime::now_utc().unix_timestamp();
    let code_at = |step: i64| format!("{:06}", totp::code_at(&key, step));
    let wrong = format!("{:06}", (totp::code_at(&key, totp::step_of(now())) + 1) % 1_000_000);
    let confirm = |code: String| {
        send(
            session
                .request(&cp, "POST", "/api/v1/console/totp/confirm", Some(&session.csrf))
                .json(&json!({"code": code})),
        )
    };
    let a = confirm(wrong.clone()).await;
    assert_eq!((a.status, a.code()), (401, "invalid_totp"), "{}", a.body);
    let confirmed_step = totp::step_of(now());
    assert_eq!(confirm(code_at(confirmed_step)).await.status, 204);

    let a = login(&cp, json!({"name": "second factor", "password": password})).await;
    assert_eq!((a.status, a.code()), (401, "totp_required"));
    // The code that confirmed is used up; a wrong one fails.
    for code in [code_at(confirmed_step), wrong] {
        let a = login(&cp, json!({"name": "second factor", "password": password, "totp": code})).await;
        assert_eq!((a.status, a.code()), (401, "invalid_totp"), "{}", a.body);
    }
    // The next step's code (within the window) works, once.
    let next = code_at(totp::step_of(now()).max(confirmed_step) + 1);
    let s = sign_in(&cp, "second factor", &password, Some(next.clone())).await;
    assert_eq!(send(s.request(&cp, "GET", "/api/v1/console/session", None)).await.body["operator"]["role"], "support");
    let a = login(&cp, json!({"name": "second factor", "password": password, "totp": next})).await;
    assert_eq!(a.code(), "invalid_totp");
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn failed_console_sign_ins_lock_the_name_out_from_that_source(pool: PgPool) {
    let (_pki, _broker, cp) = stack(&pool, |c| c.auth.account_failures_per_minute = 1).await;
    let token = operator(&pool, "admin").await;
    let (_, password) = account(&cp, &token, "target", "admin").await;
    let max = Config::default().auth.max_failed_logins;
    for _ in 0..max {
        let a = login(&cp, json!({"name": "target", "password": "guess guess guess"})).await;
        assert_eq!(a.code(), "invalid_credentials");
    }
    // Locked: even the right password is not checked now.
    let a = login(&cp, json!({"name": "target", "password": password})).await;
    assert_eq!((a.status, a.code()), (429, "too_many_failures"), "{}", a.body);
    assert!(a.headers.get("retry-after").is_some());
    // A customer's sign-in buckets are not the operator's.
    let a = send(
        cp.http
            .post(format!("{}/api/v1/auth/login", cp.url))
            .json(&json!({"email": "target@example.com", "password": "whatever it is"})),
    )
    .await;
    assert_eq!(a.code(), "invalid_credentials");
}
