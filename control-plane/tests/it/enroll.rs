//! Enrollment over HTTPS: a token works once, expired/unknown tokens and bad CSRs get
//! clear 4xx errors, and the issued certificate names the appliance whatever the CSR asks.

use hearth_protocol::api::{EnrollRequest, EnrollResponse};
use serde_json::Value;
use sqlx::PgPool;

use crate::support::*;

fn csr(cn: &str) -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    params.serialize_request(&key).expect("csr").pem().expect("pem")
}

async fn post(cp: &ControlPlane, body: &impl serde::Serialize) -> (u16, Value) {
    let r = cp.http.post(format!("{}/api/v1/enroll", cp.url)).json(body).send().await.expect("request");
    (r.status().as_u16(), r.json().await.expect("json body"))
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn a_token_enrolls_once(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let (tenant, _) = tenant(&pool, "acme").await;
    let (id, token) = appliance(&pool, tenant, "living-room").await;

    // The CSR tries to claim the control plane's identity; the CN is ours to set.
    let (status, body) = post(
        &cp,
        &EnrollRequest { token: token.clone().into(), csr_pem: csr("hearth-control-plane"), sealed_formats: vec![] },
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let resp: EnrollResponse = serde_json::from_value(body).expect("EnrollResponse");
    assert_eq!(resp.appliance_id, id);
    assert_eq!((resp.broker.host.as_str(), resp.broker.port), ("127.0.0.1", broker.port));
    let der = hearth_protocol::tls::certificates("cert", resp.certificate_pem.as_bytes()).expect("pem").remove(0);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("x509");
    let cn = cert.subject().iter_common_name().next().and_then(|c| c.as_str().ok()).map(str::to_owned);
    assert_eq!(cn, Some(id.to_string()));
    assert_eq!(resp.ca_chain_pem.as_bytes(), pki.read("ca.crt").as_slice());

    let enrolled: Option<time::OffsetDateTime> = sqlx::query_scalar("SELECT enrolled_at FROM appliances WHERE id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .expect("row");
    assert!(enrolled.is_some());

    let (status, body) =
        post(&cp, &EnrollRequest { token: token.into(), csr_pem: csr("x"), sealed_formats: vec![] }).await;
    assert_eq!((status, code(&body)), (409, "enrollment_token_used"), "{body}");
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn bad_tokens_and_csrs_get_clear_errors(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let (tenant, _) = tenant(&pool, "acme").await;

    let (status, body) = post(
        &cp,
        &EnrollRequest { token: String::from("hearth_et_nope").into(), csr_pem: csr("x"), sealed_formats: vec![] },
    )
    .await;
    assert_eq!((status, code(&body)), (401, "enrollment_token_invalid"), "{body}");
    let (status, body) =
        post(&cp, &EnrollRequest { token: "x".repeat(5000).into(), csr_pem: csr("x"), sealed_formats: vec![] }).await;
    assert_eq!((status, code(&body)), (401, "enrollment_token_invalid"), "{body}");

    let (_, expired_token, _) =
        hearth_control_plane::db::enrollment::create_appliance(&pool, tenant, "old", time::Duration::seconds(-1))
            .await
            .expect("appliance");
    let (status, body) = post(
        &cp,
        &EnrollRequest { token: expired_token.expose().clone().into(), csr_pem: csr("x"), sealed_formats: vec![] },
    )
    .await;
    assert_eq!((status, code(&body)), (410, "enrollment_token_expired"), "{body}");

    // A refused CSR does not burn the token.
    let (_, token) = appliance(&pool, tenant, "kitchen").await;
    let (status, body) = post(
        &cp,
        &EnrollRequest {
            token: token.clone().into(),
            csr_pem: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n".into(),
            sealed_formats: vec![],
        },
    )
    .await;
    assert_eq!((status, code(&body)), (400, "invalid_csr"), "{body}");
    let (status, body) =
        post(&cp, &EnrollRequest { token: token.into(), csr_pem: csr("x"), sealed_formats: vec![] }).await;
    assert_eq!(status, 200, "{body}");

    // A body that is not an EnrollRequest gets the same JSON error shape.
    let r = cp
        .http
        .post(format!("{}/api/v1/enroll", cp.url))
        .header("content-type", "application/json")
        .body("{\"token\":1}")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.expect("json");
    assert_eq!(code(&body), "invalid_body", "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
}

async fn sealing_key(pool: &PgPool, id: hearth_protocol::ApplianceId) -> Option<Vec<u8>> {
    sqlx::query_scalar("SELECT sealing_key FROM appliances WHERE id = $1").bind(id).fetch_one(pool).await.expect("row")
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn enrollment_stores_the_key_secrets_are_sealed_to(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let (tenant, _) = tenant(&pool, "acme").await;

    // An agent that opens format 1: the public key of its CSR (= of its certificate).
    let (id, token) = appliance(&pool, tenant, "new-agent").await;
    let key = rcgen::KeyPair::generate().expect("key");
    let csr_pem = rcgen::CertificateParams::default().serialize_request(&key).expect("csr").pem().expect("pem");
    let (status, body) = post(&cp, &EnrollRequest { token: token.into(), csr_pem, sealed_formats: vec![1] }).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(sealing_key(&pool, id).await.as_deref(), Some(rcgen::PublicKeyData::der_bytes(&key)));
    let sealed = hearth_protocol::sealed::seal(
        &hearth_protocol::sealed::SealingKey::from_sec1_bytes(&sealing_key(&pool, id).await.expect("key"))
            .expect("P-256"),
        id,
        "p",
        "s3cret",
    )
    .expect("seal");
    let opening =
        hearth_protocol::sealed::OpeningKey::from_pkcs8_pem(&key.serialize_pem()).expect("the agent's key.pem");
    assert_eq!(hearth_protocol::sealed::open(&opening, id, "p", &sealed).expect("open").expose(), "s3cret");

    // An older agent (no sealed_formats) and an unknown format: no key, secrets go the
    // fallback way.
    let (old, token) = appliance(&pool, tenant, "old-agent").await;
    let body = serde_json::json!({"token": token, "csr_pem": csr("x")});
    let (status, _) = post(&cp, &body).await;
    assert_eq!(status, 200);
    assert_eq!(sealing_key(&pool, old).await, None);
    let (future, token) = appliance(&pool, tenant, "future-agent").await;
    let (status, _) =
        post(&cp, &EnrollRequest { token: token.into(), csr_pem: csr("x"), sealed_formats: vec![2] }).await;
    assert_eq!(status, 200);
    assert_eq!(sealing_key(&pool, future).await, None);

    // A key that is not P-256 cannot be sealed to, whatever the agent says.
    let (ed, token) = appliance(&pool, tenant, "ed25519").await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
    let csr_pem = rcgen::CertificateParams::default().serialize_request(&key).expect("csr").pem().expect("pem");
    let (status, body) = post(&cp, &EnrollRequest { token: token.into(), csr_pem, sealed_formats: vec![1] }).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(sealing_key(&pool, ed).await, None);
}
