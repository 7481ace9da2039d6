//! Bad credentials: failed API keys and sign-ins are limited per source, per credential and
//! per address before any lookup or hashing; a stranger cannot lock a customer out; an
//! address is unique per tenant, so another tenant's address is no oracle. Sources other
//! than 127.0.0.1 are simulated with `X-Forwarded-For` from a trusted proxy (the test
//! client itself), which is exactly what a deployment behind a load balancer sees.

use hearth_control_plane::config::Config;
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

/// The control plane trusts the test client as its proxy. Buckets drain at one failure a
/// minute, so a slow test run cannot sneak in an extra try and the counts are exact.
fn behind_proxy(c: &mut Config) {
    c.auth.trusted_proxies = vec!["127.0.0.1".into()];
    slow_drain(c);
}

fn slow_drain(c: &mut Config) {
    c.auth.source_failures_per_minute = 1;
    c.auth.account_failures_per_minute = 1;
}

struct Answer {
    status: u16,
    retry_after: Option<u64>,
    body: Value,
}

impl Answer {
    fn code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }
}

async fn answer(r: reqwest::RequestBuilder) -> Answer {
    let r = r.send().await.expect("request");
    let status = r.status().as_u16();
    let retry_after = r.headers().get("retry-after").map(|v| v.to_str().unwrap().parse().expect("seconds"));
    Answer { status, retry_after, body: r.json().await.unwrap_or(Value::Null) }
}

/// `GET /api/v1/appliances` with `key`, from `source` (an `X-Forwarded-For`).
async fn list_with(cp: &ControlPlane, key: &str, source: &str) -> Answer {
    answer(cp.http.get(format!("{}/api/v1/appliances", cp.url)).bearer_auth(key).header("x-forwarded-for", source))
        .await
}

/// A sign-in from `source`.
async fn login(cp: &ControlPlane, source: &str, body: Value) -> Answer {
    answer(cp.http.post(format!("{}/api/v1/auth/login", cp.url)).header("x-forwarded-for", source).json(&body)).await
}

/// The value of one sample of `/metrics` (0 when absent).
async fn metric(cp: &ControlPlane, sample: &str) -> u64 {
    let text = cp.metrics().await;
    text.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0, |v| v.trim().parse().expect("a number"))
}

fn random_key(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn bad_api_keys_from_one_source_get_429_before_any_lookup(pool: PgPool) {
    let (_pki, _broker, cp) = stack(&pool, behind_proxy).await;
    let burst = Config::default().auth.source_failures_burst;
    let (_, good_key) = tenant(&pool, "The Parks").await;

    // Every wrong key is a different one: only the source's bucket fills.
    let mut answers = Vec::new();
    for _ in 0..burst + 10 {
        answers.push(list_with(&cp, &random_key("hearth_tk_"), "203.0.113.7").await);
    }
    for a in &answers[..burst as usize] {
        assert_eq!((a.status, a.code()), (401, Some("unauthorized")), "{}", a.body);
    }
    for a in &answers[burst as usize..] {
        assert_eq!((a.status, a.code()), (429, Some("too_many_failures")), "{}", a.body);
        let wait = a.retry_after.expect("Retry-After");
        assert!((1..=60).contains(&wait), "one more try within a minute at 1 per minute: {wait}");
    }
    // Refused before the lookup: PostgreSQL saw exactly the burst.
    assert_eq!(metric(&cp, r#"hearth_credential_lookups_total{kind="api_key"}"#).await, u64::from(burst));
    assert_eq!(metric(&cp, r#"hearth_credential_refusals_total{scope="source"}"#).await, 10);
    // The refused source is refused even with a good key; another source is not.
    assert_eq!(list_with(&cp, &good_key, "203.0.113.7").await.status, 429);
    assert_eq!(list_with(&cp, &good_key, "198.51.100.2").await.status, 200);

    // Operator tokens and sessions count as well (the same source bucket).
    for prefix in ["hearth_ot_", "hearth_st_", "garbage"] {
        let a = list_with(&cp, &random_key(prefix), "203.0.113.7").await;
        assert_eq!((a.status, a.code()), (429, Some("too_many_failures")));
    }

    // One wrong (say revoked) key sent again and again, from ever new sources: its own
    // bucket fills after a few tries, whatever the source.
    let stale = random_key("hearth_tk_");
    let per_credential = Config::default().auth.credential_failures_burst;
    for i in 0..per_credential {
        assert_eq!(list_with(&cp, &stale, &format!("192.0.2.{}", i + 1)).await.status, 401);
    }
    let a = list_with(&cp, &stale, "192.0.2.200").await;
    assert_eq!((a.status, a.code()), (429, Some("too_many_failures")), "{}", a.body);
    assert!(a.retry_after.is_some());
    assert_eq!(metric(&cp, r#"hearth_credential_refusals_total{scope="credential"}"#).await, 1);
    // …and it never blocks a different, good key from the same place.
    assert_eq!(list_with(&cp, &good_key, "192.0.2.200").await.status, 200);
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn forwarded_for_is_honoured_only_from_trusted_peers(pool: PgPool) {
    // No trusted proxy: the peer (127.0.0.1) is the source whatever the header says.
    let (_pki, _broker, cp) = stack(&pool, slow_drain).await;
    let burst = Config::default().auth.source_failures_burst;
    for i in 0..burst {
        let a = list_with(&cp, &random_key("hearth_tk_"), &format!("203.0.113.{}", i + 1)).await;
        assert_eq!(a.status, 401);
    }
    let a = list_with(&cp, &random_key("hearth_tk_"), "198.51.100.99").await;
    assert_eq!((a.status, a.code()), (429, Some("too_many_failures")), "a made-up header changes nothing");
    let a = login(&cp, "198.51.100.98", json!({"email": "x@example.com", "password": PASSWORD})).await;
    assert_eq!((a.status, a.code()), (429, Some("too_many_failures")), "sign-in shares the source's bucket");
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn sign_ins_for_unknown_addresses_get_429_and_cost_what_known_ones_do(pool: PgPool) {
    let burst = 10;
    let (_pki, _broker, cp) = stack(&pool, |c| {
        behind_proxy(c);
        c.auth.source_failures_burst = burst;
    })
    .await;
    let (t, _) = tenant(&pool, "The Parks").await;
    user(&pool, t, "ann@parks.example", "owner").await;
    let verifications = || metric(&cp, "hearth_password_verifications_total");

    // Structural: an unknown address and a wrong password each cost one argon2
    // verification (the unknown one against a dummy hash); so does the right password.
    let before = verifications().await;
    let a = login(&cp, "198.51.100.1", json!({"email": "nobody@parks.example", "password": PASSWORD})).await;
    assert_eq!((a.status, a.code()), (401, Some("invalid_credentials")));
    assert_eq!(verifications().await, before + 1, "unknown address");
    let b = login(&cp, "198.51.100.1", json!({"email": "ann@parks.example", "password": "wrong password!!"})).await;
    assert_eq!((b.status, b.code()), (401, Some("invalid_credentials")));
    assert_eq!(a.body["error"]["message"], b.body["error"]["message"], "the same answer");
    assert_eq!(verifications().await, before + 2, "wrong password");
    assert_eq!(
        login(&cp, "198.51.100.1", json!({"email": "ann@parks.example", "password": PASSWORD})).await.status,
        200
    );
    assert_eq!(verifications().await, before + 3, "right password");

    // Sign-ins for unknown addresses from one source: the burst is checked, the rest is
    // refused before any hashing.
    let before = verifications().await;
    let mut statuses = Vec::new();
    for i in 0..burst + 20 {
        let a =
            login(&cp, "203.0.113.50", json!({"email": format!("guess{i}@parks.example"), "password": PASSWORD})).await;
        if a.status == 429 {
            assert_eq!(a.code(), Some("too_many_failures"));
            assert!(a.retry_after.is_some_and(|s| s >= 1));
        }
        statuses.push(a.status);
    }
    assert!(statuses[..burst as usize].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[burst as usize..].iter().all(|s| *s == 429), "{statuses:?}");
    assert_eq!(verifications().await, before + u64::from(burst), "no argon2 work once refused");
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn a_stranger_cannot_lock_the_owner_out(pool: PgPool) {
    let (_pki, _broker, cp) = stack(&pool, |c| {
        behind_proxy(c);
        c.auth.account_failures_burst = 12;
        c.auth.account_failures_per_minute = 2;
    })
    .await;
    let (t, _) = tenant(&pool, "The Parks").await;
    user(&pool, t, "ann@parks.example", "owner").await;
    let max = Config::default().auth.max_failed_logins;
    let wrong = json!({"email": "ann@parks.example", "password": "wrong password!!"});
    let right = json!({"email": "Ann@Parks.example", "password": PASSWORD});
    const OWNER: &str = "198.51.100.10";
    assert_eq!(login(&cp, OWNER, right.clone()).await.status, 200, "the owner's usual source");

    // A stranger fails `max_failed_logins` times: that source, and only that source, waits.
    for _ in 0..max {
        assert_eq!(login(&cp, "203.0.113.1", wrong.clone()).await.status, 401);
    }
    let a = login(&cp, "203.0.113.1", right.clone()).await;
    assert_eq!((a.status, a.code()), (429, Some("too_many_failures")), "even with the right password");
    let lockout = Config::default().auth.lockout_s;
    assert_eq!(a.retry_after, Some(lockout / u64::from(max)), "one more try every lockout_s / max_failed_logins");
    assert_eq!(login(&cp, OWNER, right.clone()).await.status, 200, "the owner is not locked out");

    // Strangers from many sources fill the address's all-sources bucket (12 here, draining
    // at 2 a minute): a new source is then slowed with a short wait, not locked for long…
    for s in 2..=3 {
        for _ in 0..max {
            login(&cp, &format!("203.0.113.{s}"), wrong.clone()).await;
        }
    }
    let a = login(&cp, "203.0.113.4", right.clone()).await;
    assert_eq!((a.status, a.code()), (429, Some("too_many_failures")), "{}", a.body);
    let wait = a.retry_after.expect("Retry-After");
    assert!(wait <= 30, "one more try within 30 s at 2 per minute: {wait}");
    assert!(metric(&cp, r#"hearth_credential_refusals_total{scope="account"}"#).await >= 1);
    // …and the owner, from a source that signed in before, still gets in.
    let a = login(&cp, OWNER, right.clone()).await;
    assert_eq!(a.status, 200, "{}", a.body);
    // The owner's own wrong passwords lock only the owner's source, briefly.
    for _ in 0..max {
        assert_eq!(login(&cp, OWNER, wrong.clone()).await.status, 401);
    }
    assert_eq!(login(&cp, OWNER, right).await.status, 429);
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn an_address_of_another_tenant_is_no_oracle_and_signs_in_per_tenant(pool: PgPool) {
    let (_pki, _broker, cp) = stack(&pool, behind_proxy).await;
    let (parks, _) = tenant(&pool, "The Parks").await;
    let (lees, _) = tenant(&pool, "The Lees").await;
    user(&pool, parks, "ann@example.com", "owner").await;
    user(&pool, lees, "lee@example.com", "owner").await;
    let lee = sign_in(&cp, "lee@example.com").await;

    // The Lees add a member whose address the Parks use: it just works, no 409.
    let add = |email: &str, password: &str| json!({"email": email, "password": password, "role": "member"});
    let (status, member) = cp.call("POST", "/api/v1/users", &lee, Some(add("ANN@example.com", PASSWORD))).await;
    assert_eq!(status, 201, "{member}");
    assert_eq!(member["tenant_id"], lees.to_string());
    // Twice in one tenant is still the tenant's own conflict.
    let (status, dup) = cp.call("POST", "/api/v1/users", &lee, Some(add("ann@EXAMPLE.com", PASSWORD))).await;
    assert_eq!((status, dup["error"]["code"].as_str()), (409, Some("email_taken")), "{dup}");
    // An operator adding the address to a third tenant gets no 409 either.
    let admin = operator(&pool, "admin").await;
    let (third, _) = tenant(&pool, "The Third").await;
    let (status, body) = cp
        .call(
            "POST",
            &format!("/api/v1/admin/tenants/{third}/users"),
            &admin,
            Some(json!({"email": "ann@example.com", "password": "another long password", "role": "owner"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    // The same password in two tenants: the caller must choose, and learns only those two.
    let a = login(&cp, "198.51.100.1", json!({"email": "ann@example.com", "password": PASSWORD})).await;
    assert_eq!((a.status, a.code()), (422, Some("tenant_required")), "{}", a.body);
    let mut offered: Vec<String> = a.body["error"]["details"]["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .map(|t| t["tenant_id"].as_str().unwrap().to_string())
        .collect();
    offered.sort();
    let mut expected = vec![parks.to_string(), lees.to_string()];
    expected.sort();
    assert_eq!(offered, expected, "not the third tenant, whose password differs");
    for t in [parks, lees] {
        let a =
            login(&cp, "198.51.100.1", json!({"email": "ann@example.com", "password": PASSWORD, "tenant_id": t})).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.body["user"]["tenant_id"], t.to_string());
    }
    // A password that matches in one tenant only signs in there, no choice needed.
    let a = login(&cp, "198.51.100.1", json!({"email": "ann@example.com", "password": "another long password"})).await;
    assert_eq!((a.status, a.body["user"]["tenant_id"].as_str()), (200, Some(third.to_string().as_str())));
    // A wrong password says nothing about how many tenants know the address; nor does a
    // tenant that does not.
    let a = login(&cp, "198.51.100.1", json!({"email": "ann@example.com", "password": "wrong password!!"})).await;
    assert_eq!((a.status, a.code()), (401, Some("invalid_credentials")));
    let a =
        login(&cp, "198.51.100.1", json!({"email": "lee@example.com", "password": PASSWORD, "tenant_id": parks})).await;
    assert_eq!((a.status, a.code()), (401, Some("invalid_credentials")));
}
