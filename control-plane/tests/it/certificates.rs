//! Certificate renewal with the real agent, the real broker (mutual TLS, the shipped
//! configuration, its CRL) and certificates that live 90 seconds: the agent renews by
//! itself and still connects after its first certificate expired; a renewed pair the broker
//! refuses is rolled back and the old one keeps working; a control plane that is away when
//! the agent asks answers the same request later with one certificate, not two.

use std::path::Path;
use std::time::Duration;

use hearth_agent::renewal::CertificateFacts;
use hearth_protocol::ApplianceId;
use sqlx::PgPool;

use crate::support::agent::Appliance;
use crate::support::*;

/// Short enough that a test sees the first certificate expire.
const LIFETIME_S: f64 = 90.0;

fn renewing_config(pki: &Pki, broker: &Broker) -> hearth_control_plane::config::Config {
    let mut config = test_config(pki, broker);
    config.pki.appliance_cert_days = LIFETIME_S / 86_400.0;
    config.pki.renewal_min_interval_s = 1.0;
    config
}

fn certificate_in_use(state: &Path) -> CertificateFacts {
    CertificateFacts::read(&std::fs::read_to_string(state.join("cert.pem")).expect("cert.pem")).expect("parses")
}

async fn issued(pool: &PgPool, id: ApplianceId) -> Vec<(String, bool)> {
    sqlx::query_as(
        "SELECT serial, renewal_id IS NOT NULL FROM certificate_issues WHERE appliance_id = $1 ORDER BY issued_at, serial",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .expect("issues")
}

async fn last_seen(pool: &PgPool, id: ApplianceId) -> Option<time::OffsetDateTime> {
    sqlx::query_scalar("SELECT last_seen FROM appliances WHERE id = $1").bind(id).fetch_one(pool).await.expect("row")
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn the_agent_renews_by_itself_and_connects_after_its_first_certificate_expired(pool: PgPool) {
    let pki = Pki::new();
    let mut broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), renewing_config(&pki, &broker), &pki).await;
    let (tenant, key) = tenant(&pool, "renewing").await;
    let appliance = Appliance::enroll(&cp, &pki, &pool, tenant, "box").await;
    let first = certificate_in_use(appliance.state.path());
    let lifetime = first.not_after - first.not_before;
    assert!(lifetime <= time::Duration::seconds(100), "{lifetime}");
    let (stop, agent) = appliance.start_with(|c| c.renew_at_percent = 50);
    wait_status(&cp, &key, appliance.id, "online").await;

    // Renewed by itself at about half its lifetime, switched to after a real reconnect.
    let renewed = eventually(Duration::from_secs(80), "a renewed certificate in use", || async {
        let now = certificate_in_use(appliance.state.path());
        (now.serial != first.serial && !appliance.state.path().join("renewal").exists()).then_some(now)
    })
    .await;
    assert!(renewed.not_after > first.not_after);
    let db_serial: String = sqlx::query_scalar("SELECT cert_serial FROM appliances WHERE id = $1")
        .bind(appliance.id)
        .fetch_one(&pool)
        .await
        .unwrap();
    let history = issued(&pool, appliance.id).await;
    assert!(history.iter().any(|(s, renewal)| *s == renewed.serial && *renewal), "{history:?}");
    assert!(history.iter().any(|(s, renewal)| *s == first.serial && !*renewal), "enrollment recorded: {history:?}");
    assert!(
        db_serial == renewed.serial || history.iter().any(|(s, _)| *s == db_serial),
        "the appliance's certificate is one of its own"
    );

    // Past the first certificate's expiry, a broker restart forces a new TLS handshake:
    // the agent is back with a certificate that is valid now.
    let until_expiry = first.not_after - time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    if until_expiry.is_positive() {
        tokio::time::sleep(until_expiry.unsigned_abs()).await;
    }
    broker.stop();
    broker.start_again();
    let restarted = time::OffsetDateTime::now_utc();
    eventually(Duration::from_secs(30), "a heartbeat after the restart", || async {
        last_seen(&pool, appliance.id).await.filter(|t| *t > restarted)
    })
    .await;
    let in_use = certificate_in_use(appliance.state.path());
    assert!(in_use.not_after > time::OffsetDateTime::now_utc(), "connected with a valid certificate");
    assert_ne!(in_use.serial, first.serial);

    // Seen by the tenant, the operators and /metrics (counted every minute).
    let (_, detail) = cp.get(&format!("/api/v1/appliances/{}", appliance.id), &key).await;
    let serial = detail["cert_serial"].as_str().expect("cert_serial").to_owned();
    assert!(issued(&pool, appliance.id).await.iter().any(|(s, _)| *s == serial), "{detail}");
    assert!(detail["cert_not_after"].is_string(), "{detail}");
    let admin = operator(&pool, "admin").await;
    let (_, summary) = cp.get("/api/v1/admin/fleet/summary", &admin).await;
    assert_eq!(summary["certificates_expiring"], 1, "90-second certificates are always expiring: {summary}");
    let metrics = cp.metrics().await;
    assert_eq!(metric(&metrics, r#"hearth_appliance_certificates_expiring{within="1d"}"#), Some(1.0));
    assert!(metric(&metrics, r#"hearth_certificate_renewals_total{outcome="issued"}"#).unwrap_or(0.0) >= 1.0);
    let audited: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'certificate.renewed' AND target_id = $1")
            .bind(appliance.id.to_string())
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(audited >= 1);
    stop.cancel();
    agent.await.unwrap().expect("the agent stops cleanly");
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn a_renewed_pair_the_broker_refuses_is_rolled_back(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), renewing_config(&pki, &broker), &pki).await;
    let (tenant, key) = tenant(&pool, "refused").await;
    let appliance = Appliance::enroll(&cp, &pki, &pool, tenant, "box").await;
    let first = certificate_in_use(appliance.state.path());

    // Every renewed certificate is revoked as it is recorded, and an older unused one
    // makes the renewal publish the CRL (superseding it) before it answers: the broker
    // knows the new certificate is revoked before the agent tries it.
    sqlx::query(
        "INSERT INTO certificate_issues (serial, appliance_id, tenant_id, renewal_id, public_key_sha256, certificate_pem,
                                         not_after, issued_at)
         VALUES ('0badc0de', $1, $2, gen_random_uuid(), '\\x00', 'unused', now() + interval '1 hour',
                 now() - interval '1 hour')",
    )
    .bind(appliance.id)
    .bind(tenant)
    .execute(&pool)
    .await
    .unwrap();

    sqlx::query(
        "CREATE FUNCTION revoke_renewed() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
             IF NEW.renewal_id IS NOT NULL THEN
                 INSERT INTO certificate_revocations (serial, appliance_id, tenant_id, reason)
                 VALUES (NEW.serial, NEW.appliance_id, NEW.tenant_id, 'test');
             END IF;
             RETURN NEW;
         END $$",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("CREATE TRIGGER revoke_renewed AFTER INSERT ON certificate_issues FOR EACH ROW EXECUTE FUNCTION revoke_renewed()")
        .execute(&pool)
        .await
        .unwrap();
    let (stop, agent) = appliance.start_with(|c| c.renew_at_percent = 10);
    // Asked, answered, tried, refused by the broker, and rolled back.
    eventually(Duration::from_secs(60), "a renewal issued (and revoked)", || async {
        issued(&pool, appliance.id).await.iter().any(|(s, r)| *r && s != "0badc0de").then_some(())
    })
    .await;
    let tried = time::OffsetDateTime::now_utc();
    eventually(Duration::from_secs(30), "back online with the old pair", || async {
        let back = last_seen(&pool, appliance.id).await.is_some_and(|t| t > tried + time::Duration::seconds(2));
        (back && !appliance.state.path().join("renewal").exists()).then_some(())
    })
    .await;
    assert_eq!(certificate_in_use(appliance.state.path()).serial, first.serial, "the old pair is still the one");
    wait_status(&cp, &key, appliance.id, "online").await;
    let revoked: Vec<String> = sqlx::query_scalar("SELECT serial FROM certificate_revocations WHERE appliance_id = $1")
        .bind(appliance.id)
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(revoked.contains(&"0badc0de".to_string()), "the unused one was superseded: {revoked:?}");
    assert!(!revoked.contains(&first.serial), "the pair in use is never revoked by a renewal");
    stop.cancel();
    agent.await.unwrap().expect("the agent stops cleanly");
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn refusals_change_nothing_and_say_why(pool: PgPool) {
    use hearth_protocol::{decode, encode, CertificateRenewal, CertificateRequest, DownChannel, ProtocolVersion};
    use hearth_protocol::{RenewalId, RenewalOutcome, Topic, UpChannel};

    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let mut config = renewing_config(&pki, &broker);
    config.pki.renewal_min_interval_s = 3600.0;
    let cp = ControlPlane::start(pool.clone(), config, &pki).await;
    let (tenant, _) = tenant(&pool, "refusals").await;
    let (id, _) = appliance(&pool, tenant, "box").await;
    let mut probe = crate::support::mqtt::appliance_online(&pki, &broker, id).await;
    let down = Topic::new(id, DownChannel::Cert).to_string();
    let up = Topic::new(id, UpChannel::CertRequest).to_string();
    let ask = |csr_pem: String, renewal: RenewalId| {
        encode(&CertificateRequest { v: ProtocolVersion, renewal, csr_pem, current_serial: "00".into() }).unwrap()
    };
    let csr = |key: &rcgen::KeyPair| rcgen::CertificateParams::default().serialize_request(key).unwrap().pem().unwrap();
    async fn answer(probe: &mut crate::support::mqtt::Probe, down: &str) -> CertificateRenewal {
        decode(&probe.next_on(down, Duration::from_secs(10)).await.expect("an answer")).expect("decodes")
    }
    let code = |a: &CertificateRenewal| match &a.outcome {
        RenewalOutcome::Refused { code, .. } => code.clone(),
        other => panic!("{other:?}"),
    };

    // Not a CSR.
    probe.publish(&up, ask("garbage".into(), RenewalId::new())).await;
    assert_eq!(code(&answer(&mut probe, &down).await), "invalid_csr");

    // A good one: issued; the same request again: the same certificate.
    let key = rcgen::KeyPair::generate().unwrap();
    let renewal = RenewalId::new();
    let request = csr(&key);
    probe.publish(&up, ask(request.clone(), renewal)).await;
    let first = answer(&mut probe, &down).await;
    let RenewalOutcome::Issued { serial, .. } = &first.outcome else { panic!("{first:?}") };
    probe.publish(&up, ask(request.clone(), renewal)).await;
    let again = answer(&mut probe, &down).await;
    assert_eq!(again.outcome, first.outcome, "asking twice gives the same certificate");
    // The same id for another request (another key): refused.
    probe.publish(&up, ask(csr(&rcgen::KeyPair::generate().unwrap()), renewal)).await;
    assert_eq!(code(&answer(&mut probe, &down).await), "invalid_csr");

    // The same key under a new id: refused (and within the minimum interval anyway).
    probe.publish(&up, ask(csr(&key), RenewalId::new())).await;
    assert_eq!(code(&answer(&mut probe, &down).await), "too_frequent");
    sqlx::query("UPDATE certificate_issues SET issued_at = now() - interval '2 hours' WHERE serial = $1")
        .bind(serial)
        .execute(&pool)
        .await
        .unwrap();
    probe.publish(&up, ask(csr(&key), RenewalId::new())).await;
    assert_eq!(code(&answer(&mut probe, &down).await), "same_key");

    // Revoked: refused, nothing issued.
    let before = issued(&pool, id).await.len();
    sqlx::query("UPDATE appliances SET revoked_at = now() WHERE id = $1").bind(id).execute(&pool).await.unwrap();
    probe.publish(&up, ask(csr(&rcgen::KeyPair::generate().unwrap()), RenewalId::new())).await;
    assert_eq!(code(&answer(&mut probe, &down).await), "revoked");
    assert_eq!(issued(&pool, id).await.len(), before, "a refusal issues nothing");

    let metrics = cp.metrics().await;
    for (outcome, n) in [
        ("invalid_csr", 2.0),
        ("issued", 1.0),
        ("reissued", 1.0),
        ("too_frequent", 1.0),
        ("same_key", 1.0),
        ("revoked", 1.0),
    ] {
        let series = format!(r#"hearth_certificate_renewals_total{{outcome="{outcome}"}}"#);
        assert_eq!(metric(&metrics, &series), Some(n), "{series}");
    }
}

/// The way back for an appliance whose certificate expired while it was offline: an
/// operator's new token for the same appliance, `enroll --force` on the box.
#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn an_operator_token_brings_an_appliance_back_under_its_own_id(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let (tenant, key) = tenant(&pool, "returning").await;
    let appliance = Appliance::enroll(&cp, &pki, &pool, tenant, "box").await;
    let first = certificate_in_use(appliance.state.path());
    let admin = operator(&pool, "admin").await;
    let path = format!("/api/v1/admin/appliances/{}/enrollment-token", appliance.id);

    let (status, stale) = cp.call("POST", &path, &admin, Some(serde_json::json!({}))).await;
    assert_eq!(status, 201, "{stale}");
    let (status, fresh) = cp.call("POST", &path, &admin, Some(serde_json::json!({"ttl_hours": 2}))).await;
    assert_eq!(status, 201, "{fresh}");
    assert_eq!(fresh["appliance_id"], appliance.id.to_string());
    let enroll = |token: &serde_json::Value| hearth_agent::EnrollOptions {
        server: cp.url.clone(),
        token: token.as_str().expect("token").to_owned().into(),
        ca_file: Some(pki.path(hearth_control_plane::pki::files::CA_CERT)),
        state_dir: appliance.state.path().to_owned(),
        force: true,
    };
    // A newer token makes the earlier one worthless.
    let err = hearth_agent::enroll(enroll(&stale["enrollment_token"])).await.unwrap_err();
    assert!(err.to_string().contains("enrollment_token_invalid"), "{err}");
    let state = hearth_agent::enroll(enroll(&fresh["enrollment_token"])).await.expect("enrolls again");
    assert_eq!(state.appliance_id, appliance.id, "the same appliance, so its tenant and configuration stay");
    let second = certificate_in_use(appliance.state.path());
    assert_ne!(second.serial, first.serial);

    // The certificate it held before is revoked; the new one works.
    let revoked: Vec<String> = sqlx::query_scalar("SELECT serial FROM certificate_revocations WHERE appliance_id = $1")
        .bind(appliance.id)
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(revoked, vec![first.serial.clone()]);
    let (stop, agent) = appliance.start();
    let detail = wait_status(&cp, &key, appliance.id, "online").await;
    assert_eq!(detail["cert_serial"], second.serial.as_str());
    let audited: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'appliance.reenroll' AND target_id = $1")
            .bind(appliance.id.to_string())
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(audited, 2);
    stop.cancel();
    agent.await.unwrap().expect("the agent stops cleanly");

    // Never for a revoked appliance; a clear 404 for an unknown one.
    let (status, _) = cp.call("POST", &format!("/api/v1/admin/appliances/{}/revoke", appliance.id), &admin, None).await;
    assert_eq!(status, 200);
    let (status, body) = cp.call("POST", &path, &admin, Some(serde_json::json!({}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("appliance_revoked")), "{body}");
    let unknown = format!("/api/v1/admin/appliances/{}/enrollment-token", ApplianceId::new());
    let (status, _) = cp.call("POST", &unknown, &admin, Some(serde_json::json!({}))).await;
    assert_eq!(status, 404);
}

/// A renewal asked while the control plane is away, then a broker restart and an agent
/// restart halfway: the request waits on disk and the same one is asked again, so exactly
/// one certificate is issued for it and the agent switches to it.
#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn a_renewal_survives_an_outage_and_a_restart_halfway(pool: PgPool) {
    let pki = Pki::new();
    let mut broker = Broker::start(&pki);
    let mut cp = ControlPlane::start(pool.clone(), renewing_config(&pki, &broker), &pki).await;
    let (tenant, key) = tenant(&pool, "outage").await;
    let appliance = Appliance::enroll(&cp, &pki, &pool, tenant, "box").await;
    let first = certificate_in_use(appliance.state.path());
    cp.stop().await;

    // Nobody answers: the request waits in renewal/ on the appliance.
    let (stop, agent) = appliance.start_with(|c| c.renew_at_percent = 10);
    let request = appliance.state.path().join("renewal/request.toml");
    let asked = eventually(Duration::from_secs(30), "a renewal request on disk", || async {
        std::fs::read_to_string(&request).ok()
    })
    .await;
    stop.cancel();
    agent.await.unwrap().expect("the agent stops cleanly");
    broker.stop();
    broker.start_again();
    // (The configuration names the restarted broker's process for CRL reloads.)
    let cp = ControlPlane::start(pool.clone(), renewing_config(&pki, &broker), &pki).await;
    // (A request sent before the control plane has subscribed again is lost with the broker's
    // restart, and asked again after two minutes: wait for it here to keep the test short.)
    eventually(Duration::from_secs(15), "the control plane on the broker", || async {
        let r = cp.http.get(format!("{}/readyz", cp.url)).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // After the restart the same request goes out again and is answered once.
    let (stop, agent) = appliance.start_with(|c| c.renew_at_percent = 10);
    // (Renewing at 10 % of the lifetime, it asks again at once and is told `too_frequent`.)
    let renewed = eventually(Duration::from_secs(60), "the renewed certificate in use", || async {
        let now = certificate_in_use(appliance.state.path());
        (now.serial != first.serial).then_some(now)
    })
    .await;
    let renewal_id = asked.lines().find_map(|l| l.strip_prefix("renewal = ")).expect("renewal id").trim_matches('"');
    let renewals: Vec<(String, String)> = sqlx::query_as(
        "SELECT serial, renewal_id::text FROM certificate_issues WHERE appliance_id = $1 AND renewal_id IS NOT NULL",
    )
    .bind(appliance.id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        renewals.contains(&(renewed.serial.clone(), renewal_id.to_owned())),
        "the request asked before the outage is the one answered: {renewals:?}"
    );
    assert_eq!(
        renewals.iter().filter(|(_, r)| r == renewal_id).count(),
        1,
        "one certificate for one request: {renewals:?}"
    );
    wait_status(&cp, &key, appliance.id, "online").await;
    stop.cancel();
    agent.await.unwrap().expect("the agent stops cleanly");
}

/// The CA an appliance's certificate is from, as the control plane recorded it, and
/// whether that is the certificate the agent has in use.
async fn on_ca(pool: &PgPool, appliance: &Appliance) -> (Option<String>, bool) {
    let (serial, issuer): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT cert_serial, cert_issuer_sha256 FROM appliances WHERE id = $1")
            .bind(appliance.id)
            .fetch_one(pool)
            .await
            .expect("row");
    let in_use = certificate_in_use(appliance.state.path()).serial;
    (issuer, serial.as_deref() == Some(in_use.as_str()) && !appliance.state.path().join("renewal").exists())
}

/// A fleet CA rotation with two real agents: asked to renew, both move to the new CA (each
/// switching with one clean reconnect, never reported offline); finishing is refused while
/// an enrolled appliance that never came online still depends on the old CA, and forced it
/// cuts that one off; the broker then serves a certificate from the new CA, both agents
/// come back after a broker restart, and the old CA's certificates are refused.
#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn a_ca_rotation_moves_two_agents_to_the_new_ca(pool: PgPool) {
    use hearth_control_plane::pki::files;

    let pki = Pki::new();
    let mut broker = Broker::start(&pki);
    let mut config = test_config(&pki, &broker);
    config.pki.renewal_min_interval_s = 1.0;
    // Asked at once (the spread over a window is the agent's unit test).
    config.pki.rotation_renew_within_s = 0;
    let mut cp = ControlPlane::start(pool.clone(), config, &pki).await;
    let (tenant, key) = tenant(&pool, "rotating").await;
    let a = Appliance::enroll(&cp, &pki, &pool, tenant, "a").await;
    let b = Appliance::enroll(&cp, &pki, &pool, tenant, "b").await;
    let idle = Appliance::enroll(&cp, &pki, &pool, tenant, "idle").await;
    let old_ca = pki.read(files::CA_CERT);
    let (stop_a, agent_a) = a.start();
    let (stop_b, agent_b) = b.start();
    wait_status(&cp, &key, a.id, "online").await;
    wait_status(&cp, &key, b.id, "online").await;
    let (first_a, first_b) = (certificate_in_use(a.state.path()), certificate_in_use(b.state.path()));
    let admin = operator(&pool, "admin").await;

    let (status, before) = cp.get("/api/v1/admin/pki/rotation", &admin).await;
    assert_eq!(status, 200, "{before}");
    assert_eq!(before["rotating"], false);
    let (status, started) = cp.call("POST", "/api/v1/admin/pki/rotation", &admin, None).await;
    assert_eq!(status, 201, "{started}");
    assert_eq!(started["rotating"], true);
    assert_eq!(started["retiring_ca"]["sha256"], before["signing_ca"]["sha256"]);
    assert_eq!(started["appliances_on_other_ca"], 3, "{started}");
    let new_ca = started["signing_ca"]["sha256"].as_str().expect("sha256").to_owned();
    let (status, again) = cp.call("POST", "/api/v1/admin/pki/rotation", &admin, None).await;
    assert_eq!((status, again["error"]["code"].as_str()), (409, Some("rotation_in_progress")), "{again}");

    // Both are asked, renew under the new CA and switch to it.
    for appliance in [&a, &b] {
        eventually(Duration::from_secs(60), "the agent on the new CA", || async {
            let (issuer, switched) = on_ca(&pool, appliance).await;
            (issuer.as_deref() == Some(new_ca.as_str()) && switched).then_some(())
        })
        .await;
        let chain = std::fs::read(appliance.state.path().join("ca.pem")).expect("ca.pem");
        let trusted = hearth_protocol::tls::certificates("chain", &chain).expect("PEM").len();
        assert_eq!(trusted, 2, "the agent trusts both CAs during the overlap");
    }
    assert_ne!(certificate_in_use(a.state.path()).serial, first_a.serial);
    assert_ne!(certificate_in_use(b.state.path()).serial, first_b.serial);
    let (_, progress) = cp.get("/api/v1/admin/pki/rotation", &admin).await;
    assert_eq!(
        (progress["appliances_on_signing_ca"].as_i64(), progress["appliances_on_other_ca"].as_i64()),
        (Some(2), Some(1)),
        "{progress}"
    );

    // The one that never came online holds the end…
    let finish = "/api/v1/admin/pki/rotation/finish";
    let (status, refused) = cp.call("POST", finish, &admin, Some(serde_json::json!({}))).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (409, Some("appliances_depend_on_retiring_ca")),
        "{refused}"
    );
    assert_eq!(refused["error"]["details"]["count"], 1);
    assert_eq!(refused["error"]["details"]["appliances"][0]["id"], idle.id.to_string());
    // …until forced: it is cut off, and named.
    let (status, done) = cp.call("POST", finish, &admin, Some(serde_json::json!({"force": true}))).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["cut_off"], 1);
    assert_eq!(done["cut_off_appliances"][0]["id"], idle.id.to_string());
    assert_eq!(done["retired_ca"], before["signing_ca"]["sha256"]);
    assert_ne!(pki.read(files::CA_CERT), old_ca);

    // Within one PKI watch, the API serves its certificate from the new CA.
    cp.http = https_client(&pki.read(files::CA_CERT));
    eventually(Duration::from_secs(30), "the API on a certificate from the new CA", || async {
        cp.http.get(format!("{}/healthz", cp.url)).send().await.ok().map(|_| ())
    })
    .await;

    // Neither agent was ever reported offline: each switch was one clean reconnect.
    let offline: i64 =
        sqlx::query_scalar("SELECT count(*) FROM presence_events WHERE appliance_id = ANY($1) AND status = 'offline'")
            .bind(vec![*a.id.as_uuid(), *b.id.as_uuid()])
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(offline, 0, "no agent was offline during the rotation");

    // A new handshake with the broker (its certificate now from the new CA): both agents,
    // and the control plane's own connection, are back.
    broker.stop();
    broker.start_again();
    let restarted = time::OffsetDateTime::now_utc();
    for appliance in [&a, &b] {
        eventually(Duration::from_secs(30), "a heartbeat after the restart", || async {
            last_seen(&pool, appliance.id).await.filter(|t| *t > restarted)
        })
        .await;
    }
    // A client trusting only the new CA accepts the broker; an old-CA certificate is refused.
    let (cert, key_pem) = pki.appliance_cert(ApplianceId::new());
    let opts = crate::support::mqtt::options(
        &broker,
        "probe",
        &pki.read(files::CA_CERT),
        Some((cert.as_bytes(), key_pem.as_bytes())),
    );
    crate::support::mqtt::connect(opts).await.expect("the broker's certificate is from the new CA");
    let idle_cert = std::fs::read(idle.state.path().join("cert.pem")).unwrap();
    let idle_key = std::fs::read(idle.state.path().join("key.pem")).unwrap();
    let opts = crate::support::mqtt::options(
        &broker,
        &idle.id.to_string(),
        &pki.read(files::CA_CERT),
        Some((&idle_cert, &idle_key)),
    );
    assert!(crate::support::mqtt::connect(opts).await.is_err(), "a certificate of the retired CA is refused");

    let actions: Vec<String> = sqlx::query_scalar("SELECT action FROM audit_log WHERE action LIKE 'pki.%' ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(actions, ["pki.rotation_started", "pki.rotation_finished"]);
    stop_a.cancel();
    stop_b.cancel();
    agent_a.await.unwrap().expect("the agent stops cleanly");
    agent_b.await.unwrap().expect("the agent stops cleanly");
    cp.stop().await;
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn the_crl_drops_certificates_a_day_past_their_expiry(pool: PgPool) {
    let (t, _) = tenant(&pool, "crl").await;
    let (id, _) = appliance(&pool, t, "box").await;
    // Revoked certificates: expired two days ago, expired an hour ago, valid, and one with
    // no recorded certificate (issued before certificates were recorded).
    for (serial, not_after) in [("0a", "2 days"), ("0b", "1 hour"), ("0c", "-30 days")] {
        sqlx::query(
            "INSERT INTO certificate_issues (serial, appliance_id, tenant_id, public_key_sha256, certificate_pem, not_after)
             VALUES ($1, $2, $3, $4, 'pem', now() - $5::interval)",
        )
        .bind(serial)
        .bind(id)
        .bind(t)
        .bind(serial.as_bytes())
        .bind(not_after)
        .execute(&pool)
        .await
        .expect("issue");
    }
    for serial in ["0a", "0b", "0c", "0d"] {
        sqlx::query(
            "INSERT INTO certificate_revocations (serial, appliance_id, tenant_id, reason) VALUES ($1, $2, $3, 'test')",
        )
        .bind(serial)
        .bind(id)
        .bind(t)
        .execute(&pool)
        .await
        .expect("revocation");
    }
    let mut tx = pool.begin().await.expect("tx");
    let (_, _, listed) = hearth_control_plane::db::revocations::next_crl(&mut tx).await.expect("crl");
    let mut serials: Vec<&str> = listed.iter().map(|r| r.serial_hex.as_str()).collect();
    serials.sort();
    assert_eq!(serials, ["0b", "0c", "0d"]);
}
