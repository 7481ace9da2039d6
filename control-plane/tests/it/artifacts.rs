//! Signed agent builds: the CLI makes a key and signs a real executable offline; the
//! control plane stores a build only when one of its trusted keys signed it and the bytes
//! match the signed manifest (size, SHA-256, ELF architecture), within its size limit.

use std::process::Command;

use hearth_control_plane::config::ArtifactsConfig;
use hearth_control_plane::db::audit::{Actor, Recorder};
use hearth_control_plane::domain::artifacts::{self, UploadError};
use hearth_protocol::artifact::{self as art, Arch, ArtifactError, Manifest, SignedManifest};
use sqlx::PgPool;

use crate::support::*;

const CLI: &str = env!("CARGO_BIN_EXE_hearth-control-plane");

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(CLI).args(args).output().expect("the CLI runs")
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn only_builds_signed_by_a_trusted_key_and_matching_their_manifest_are_stored(pool: PgPool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = dir.path().join("release");
    let out = cli(&["artifact", "keygen", "--out", prefix.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    use std::os::unix::fs::PermissionsExt;
    let secret = dir.path().join("release.key");
    assert_eq!(std::fs::metadata(&secret).expect("key").permissions().mode() & 0o777, 0o600);
    let again = cli(&["artifact", "keygen", "--out", prefix.to_str().expect("utf-8")]);
    assert!(!again.status.success(), "an existing key is never overwritten");

    // A real (small) executable of this machine's architecture stands in for an agent build.
    let arch = Arch::this().expect("a supported architecture");
    let build = dir.path().join("hearth-agent");
    std::fs::copy("/usr/bin/true", &build).expect("copy");
    let bytes = std::fs::read(&build).expect("read");
    let (b, k) = (build.to_str().expect("utf-8"), secret.to_str().expect("utf-8"));
    let out = cli(&["artifact", "sign", "--key", k, "--agent-version", "0.9.0", "--arch", arch.as_str(), b]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let other = if arch == Arch::X86_64 { "aarch64" } else { "x86_64" };
    let wrong = cli(&["artifact", "sign", "--key", k, "--agent-version", "0.9.0", "--arch", other, b]);
    assert!(!wrong.status.success(), "the CLI does not sign a build for another architecture");
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("not"), "{}", String::from_utf8_lossy(&wrong.stderr));
    let signed: SignedManifest =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("hearth-agent.sig.json")).expect("sig"))
            .expect("a signed manifest");

    let public = std::fs::read_to_string(dir.path().join("release.pub")).expect("pub");
    let cfg = ArtifactsConfig { public_keys: vec![public.trim().to_string()], max_bytes: 64 << 20 };
    let actor = Actor::cli();
    let audit = Recorder::new(&actor, None);

    // Refused: no trusted key configured, another key, an unsigned manifest, tampered,
    // truncated, too large, the wrong architecture under a valid signature.
    let no_keys = ArtifactsConfig { public_keys: vec![], ..cfg.clone() };
    assert!(matches!(artifacts::upload(&pool, &no_keys, &bytes, &signed, audit).await, Err(UploadError::NoKeys)));
    let stranger = art::SigningKey::from_bytes(&[42; 32]);
    let by_stranger = art::sign(&stranger, signed.manifest.clone());
    let refused = |r: Result<_, UploadError>| match r {
        Err(UploadError::Refused(e)) => e,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert!(matches!(
        refused(artifacts::upload(&pool, &cfg, &bytes, &by_stranger, audit).await),
        ArtifactError::UnknownKey(_)
    ));
    let mut unsigned = signed.clone();
    unsigned.signature = String::new();
    assert_eq!(refused(artifacts::upload(&pool, &cfg, &bytes, &unsigned, audit).await), ArtifactError::BadSignature);
    let mut tampered = bytes.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0xff;
    assert!(matches!(
        refused(artifacts::upload(&pool, &cfg, &tampered, &signed, audit).await),
        ArtifactError::DigestMismatch { .. }
    ));
    assert!(matches!(
        refused(artifacts::upload(&pool, &cfg, &bytes[..bytes.len() - 1], &signed, audit).await),
        ArtifactError::SizeMismatch { .. }
    ));
    let small = ArtifactsConfig { max_bytes: 1024, ..cfg.clone() };
    assert!(matches!(
        artifacts::upload(&pool, &small, &bytes, &signed, audit).await,
        Err(UploadError::TooLarge { .. })
    ));
    let key = art::signing_key(&std::fs::read_to_string(&secret).expect("key")).expect("key");
    let other_arch = if arch == Arch::X86_64 { Arch::Aarch64 } else { Arch::X86_64 };
    let mislabelled = art::sign(&key, Manifest::of(&bytes, "0.9.0", other_arch).expect("manifest"));
    assert!(matches!(
        refused(artifacts::upload(&pool, &cfg, &bytes, &mislabelled, audit).await),
        ArtifactError::WrongArch { .. }
    ));
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM agent_artifacts").fetch_one(&pool).await.expect("n");
    assert_eq!(stored, 0, "nothing refused is stored");

    // Accepted, once; the same build again changes nothing; another build cannot take its
    // version.
    let a = artifacts::upload(&pool, &cfg, &bytes, &signed, audit).await.expect("stored");
    assert_eq!(
        (a.sha256.as_str(), a.version.as_str(), a.size),
        (signed.manifest.sha256.as_str(), "0.9.0", bytes.len() as i64)
    );
    let again = artifacts::upload(&pool, &cfg, &bytes, &signed, audit).await.expect("idempotent");
    assert_eq!(again.created_at, a.created_at);
    let mut other_build = bytes.clone();
    other_build.extend_from_slice(b"another build");
    let other_signed = art::sign(&key, Manifest::of(&other_build, "0.9.0", arch).expect("manifest"));
    assert!(matches!(
        artifacts::upload(&pool, &cfg, &other_build, &other_signed, audit).await,
        Err(UploadError::VersionTaken { .. })
    ));
    let ranged = hearth_control_plane::db::artifacts::read_range(&pool, &a.sha256, 10, 100).await.expect("read");
    assert_eq!(ranged.as_deref(), Some(&bytes[10..110]), "a byte range reads back exactly");

    // Operators list it with its signed manifest, which verifies with the operator's key.
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let viewer = operator(&pool, "viewer").await;
    let (status, list) = cp.get("/api/v1/admin/artifacts", &viewer).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let listed: SignedManifest = serde_json::from_str(list[0]["signature"].as_str().expect("manifest")).expect("json");
    art::verify(&listed, &[key.verifying_key()]).expect("the listed manifest verifies");
    let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'artifact.upload'")
        .fetch_one(&pool)
        .await
        .expect("audit");
    assert_eq!(audited, 1);
}

// ---------------------------------------------------------------------------------------
// Delivery: appliances download builds, and read what is stored about them, over HTTPS
// with their own client certificate.

use std::time::Duration;

use hearth_control_plane::pki::files;
use hearth_protocol::api::{ApplianceSelf, AGENT_ARTIFACTS_PATH, AGENT_SELF_PATH};
use hearth_protocol::{ApplianceId, Topic, UpChannel};
use serde_json::Value;

/// An HTTPS client presenting `cert`/`key`, trusting the CAs in `ca`. Each client is a new
/// TLS configuration: no connection or session of another client is reused.
fn appliance_client(ca: &[u8], (cert, key): &(String, String)) -> reqwest::Client {
    let tls = hearth_protocol::tls::mtls_client_config(ca, cert.as_bytes(), key.as_bytes()).expect("tls");
    reqwest::Client::builder().use_preconfigured_tls(tls).timeout(Duration::from_secs(10)).build().expect("client")
}

/// A signed build of `len` bytes (an ELF header for this machine, then filler), stored.
async fn stored_build(pool: &PgPool, len: usize) -> (String, Vec<u8>) {
    let arch = Arch::this().expect("a supported architecture");
    let bytes = art::tests_support::elf(arch, len);
    let key = art::SigningKey::from_bytes(&[7; 32]);
    let signed = art::sign(&key, Manifest::of(&bytes, "1.2.3", arch).expect("manifest"));
    let cfg =
        ArtifactsConfig { public_keys: vec![art::encode_key(key.verifying_key().as_bytes())], max_bytes: 64 << 20 };
    let actor = Actor::cli();
    let stored = artifacts::upload(pool, &cfg, &bytes, &signed, Recorder::new(&actor, None)).await.expect("stored");
    (stored.sha256, bytes)
}

/// Status, headers and body bytes of a GET, with extra headers.
async fn get(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut req = client.get(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let r = req.send().await.expect("request");
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, headers, r.bytes().await.expect("body").to_vec())
}

/// Status and error code of a GET that is refused.
async fn refused(client: &reqwest::Client, url: &str) -> (u16, String) {
    let (status, _, body) = get(client, url, &[]).await;
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, body["error"]["code"].as_str().unwrap_or_default().to_owned())
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("header {name}"))
}

/// A build larger than two chunks is downloaded whole, resumed from an offset in its second
/// chunk and read in a bounded part, with the headers a resumable download needs; a range
/// past its end is `416`; every byte sent is counted; the request needs an appliance's
/// client certificate, and the id must be a SHA-256 of a stored build.
#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn an_appliance_downloads_a_build_with_its_certificate_and_resumes_it(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let (t, api_key) = tenant(&pool, "acme").await;
    let (id, _) = appliance(&pool, t, "box").await;
    let ca = pki.read(files::CA_CERT);
    let client = appliance_client(&ca, &pki.appliance_cert(id));
    let size = 2 * 1024 * 1024 + 12_345;
    let (sha256, bytes) = stored_build(&pool, size).await;
    let url = format!("{}{AGENT_ARTIFACTS_PATH}/{sha256}", cp.url);

    let (status, headers, body) = get(&client, &url, &[]).await;
    assert_eq!(status, 200);
    assert!(body == bytes, "the whole build, byte for byte ({} of {} bytes)", body.len(), bytes.len());
    assert_eq!(header(&headers, "content-type"), "application/octet-stream");
    assert_eq!(header(&headers, "content-length"), size.to_string());
    assert_eq!(header(&headers, "etag"), format!("\"{sha256}\""));
    assert_eq!(header(&headers, "accept-ranges"), "bytes");
    assert!(headers.get("content-range").is_none());

    // Resumed inside the second chunk: the rest.
    let from = 1024 * 1024 + 777;
    let (status, headers, body) = get(&client, &url, &[("range", &format!("bytes={from}-"))]).await;
    assert_eq!(status, 206);
    assert!(body == bytes[from..], "the tail from {from} ({} bytes)", body.len());
    assert_eq!(header(&headers, "content-range"), format!("bytes {from}-{}/{size}", size - 1));
    assert_eq!(header(&headers, "content-length"), (size - from).to_string());
    assert_eq!(header(&headers, "etag"), format!("\"{sha256}\""));
    assert_eq!(header(&headers, "content-type"), "application/octet-stream");
    // A bounded part.
    let (status, headers, body) = get(&client, &url, &[("range", "bytes=100-199")]).await;
    assert_eq!((status, body.as_slice()), (206, &bytes[100..200]));
    assert_eq!(header(&headers, "content-range"), format!("bytes 100-199/{size}"));
    assert_eq!(header(&headers, "content-length"), "100");
    // Past the end.
    let (status, headers, body) = get(&client, &url, &[("range", &format!("bytes={size}-"))]).await;
    let body: Value = serde_json::from_slice(&body).expect("an error body");
    assert_eq!((status, body["error"]["code"].as_str()), (416, Some("range_not_satisfiable")), "{body}");
    assert_eq!(header(&headers, "content-range"), format!("bytes */{size}"));

    // Every byte sent, and nothing for the refusal.
    let served = size + (size - from) + 100;
    assert_eq!(metric(&cp.metrics().await, "hearth_artifact_bytes_served_total"), Some(served as f64));

    // Unknown and malformed ids.
    let unknown = format!("{}{AGENT_ARTIFACTS_PATH}/{}", cp.url, "0".repeat(64));
    assert_eq!(refused(&client, &unknown).await, (404, "not_found".to_owned()));
    for bad in [sha256.to_uppercase(), sha256[..63].to_owned(), format!("{}g", &sha256[..63]), "latest".into()] {
        let url = format!("{}{AGENT_ARTIFACTS_PATH}/{bad}", cp.url);
        assert_eq!(refused(&client, &url).await, (400, "invalid_path".to_owned()), "{bad}");
    }

    // Without a client certificate (a bearer credential is no substitute), nothing.
    assert_eq!(refused(&cp.http, &url).await, (401, "client_certificate_required".to_owned()));
    let r = cp.http.get(&url).bearer_auth(&api_key).send().await.expect("request");
    let body: Value = r.json().await.expect("error body");
    assert_eq!(body["error"]["code"], "client_certificate_required", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("client certificate"), "{body}");
    // The other routes still work without one: the certificate is asked for, not required.
    assert_eq!(cp.get("/api/v1/appliances", &api_key).await.0, 200);
    // A certificate from another CA fails the handshake.
    let stranger = Pki::new();
    let foreign = appliance_client(&ca, &stranger.appliance_cert(id));
    assert!(foreign.get(&url).send().await.is_err(), "a foreign CA's certificate is refused in the handshake");
    assert_eq!(
        metric(&cp.metrics().await, "hearth_artifact_bytes_served_total"),
        Some(served as f64),
        "nothing was sent to the refused requests"
    );
}

/// `/agent/v1/self` shows the calling appliance what was stored from its heartbeats (and
/// only its own row); a revoked appliance, a revoked certificate, an appliance that does
/// not exist and a certificate whose CN is not an appliance id are refused on both routes.
#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn an_appliance_reads_what_is_stored_about_it_until_it_is_revoked(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let (t, _) = tenant(&pool, "acme").await;
    let (a, _) = appliance(&pool, t, "a").await;
    let (b, _) = appliance(&pool, t, "b").await;
    let ca = pki.read(files::CA_CERT);
    let (cert_a, cert_b) = (pki.appliance_cert(a), pki.appliance_cert(b));
    let (client_a, client_b) = (appliance_client(&ca, &cert_a), appliance_client(&ca, &cert_b));
    let (sha256, _) = stored_build(&pool, 4096).await;
    let self_url = format!("{}{AGENT_SELF_PATH}", cp.url);
    let build_url = format!("{}{AGENT_ARTIFACTS_PATH}/{sha256}", cp.url);

    let read_self = |client: &reqwest::Client| {
        let (client, url) = (client.clone(), self_url.clone());
        async move {
            let r = client.get(&url).send().await.expect("request");
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["content-type"], "application/json");
            r.json::<ApplianceSelf>().await.expect("an ApplianceSelf")
        }
    };
    let before = read_self(&client_a).await;
    assert_eq!(
        (before.appliance_id, before.status.as_str(), before.agent_version, before.last_seen),
        (a, "never_seen", None, None)
    );

    // A real heartbeat through the broker, with the same certificate.
    eventually(Duration::from_secs(10), "control plane connected", || async {
        (metric(&cp.metrics().await, "hearth_mqtt_connected") == Some(1.0)).then_some(())
    })
    .await;
    let probe =
        mqtt::connect(mqtt::options(&broker, &a.to_string(), &ca, Some((cert_a.0.as_bytes(), cert_a.1.as_bytes()))))
            .await
            .expect("connect");
    let sent = time::OffsetDateTime::now_utc();
    probe.publish(&Topic::new(a, UpChannel::Heartbeat).to_string(), crate::ingest::heartbeat_payload(1)).await;
    let after = eventually(Duration::from_secs(15), "the heartbeat stored", || async {
        let s = read_self(&client_a).await;
        s.last_seen.is_some().then_some(s)
    })
    .await;
    assert_eq!(
        (after.appliance_id, after.status.as_str(), after.agent_version.as_deref()),
        (a, "online", Some("test"))
    );
    let last_seen = after.last_seen.expect("last seen");
    assert!((last_seen - sent).abs() < time::Duration::seconds(30), "{last_seen} vs {sent}");
    // B sees its own row, not A's.
    let of_b = read_self(&client_b).await;
    assert_eq!((of_b.appliance_id, of_b.status.as_str(), of_b.agent_version), (b, "never_seen", None));

    // Refusals, on both routes.
    let both = |client: reqwest::Client| {
        let (self_url, build_url) = (self_url.clone(), build_url.clone());
        async move { (refused(&client, &self_url).await, refused(&client, &build_url).await) }
    };
    let forbidden = ((403, "appliance_revoked".to_owned()), (403, "appliance_revoked".to_owned()));
    let unauthorized =
        ((401, "client_certificate_required".to_owned()), (401, "client_certificate_required".to_owned()));
    assert_eq!(both(reqwest::Client::clone(&cp.http)).await, unauthorized, "no certificate");
    assert_eq!(both(appliance_client(&ca, &pki.appliance_cert(ApplianceId::new()))).await, forbidden, "unknown");
    let admin = operator(&pool, "admin").await;
    let (status, revoked) = cp.call("POST", &format!("/api/v1/admin/appliances/{a}/revoke"), &admin, None).await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(both(client_a.clone()).await, forbidden, "revoked appliance");
    // B's certificate on the revocation list (B itself not revoked).
    let der = hearth_protocol::tls::certificates("b", cert_b.0.as_bytes()).expect("pem").remove(0);
    let parsed = hearth_control_plane::http::client_cert::ClientCertificate::parse(&der).expect("parsed");
    assert_eq!(parsed.appliance_id, Some(b));
    sqlx::query(
        "INSERT INTO certificate_revocations (serial, appliance_id, tenant_id, reason) VALUES ($1, $2, $3, 'test')",
    )
    .bind(&parsed.serial_hex)
    .bind(b)
    .bind(t)
    .execute(&pool)
    .await
    .expect("revocation");
    assert_eq!(both(client_b).await, forbidden, "revoked certificate");
    // A client certificate of the fleet CA whose CN is not an appliance id.
    let not_an_appliance = {
        let pem = |name: &str| String::from_utf8(pki.read(name)).expect("PEM");
        let ca_key = rcgen::KeyPair::from_pem(&pem(files::CA_KEY)).expect("CA key");
        let issuer = rcgen::Issuer::from_ca_cert_pem(&pem(files::CA_CERT), ca_key).expect("issuer");
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(rcgen::DnType::CommonName, "printer");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        (params.signed_by(&key, &issuer).expect("signed").pem(), key.serialize_pem())
    };
    assert_eq!(both(appliance_client(&ca, &not_an_appliance)).await, unauthorized, "CN not an appliance id");
}

/// Behind a TLS-terminating proxy (`http.tls = false`) the routes say they need the
/// control plane's own HTTPS listener.
#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn without_tls_the_agent_routes_ask_for_the_https_listener(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let mut config = test_config(&pki, &broker);
    config.http.tls = false;
    let cp = ControlPlane::start(pool.clone(), config, &pki).await;
    let base = cp.url.replace("https://", "http://");
    let (sha256, _) = stored_build(&pool, 4096).await;
    for path in [AGENT_SELF_PATH.to_owned(), format!("{AGENT_ARTIFACTS_PATH}/{sha256}")] {
        let r = cp.http.get(format!("{base}{path}")).send().await.expect("request");
        assert_eq!(r.status(), 401, "{path}");
        let body: Value = r.json().await.expect("error body");
        assert_eq!(body["error"]["code"], "client_certificate_required", "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("HTTPS listener"), "{body}");
    }
    let r = cp.http.get(format!("{base}/healthz")).send().await.expect("request");
    assert_eq!(r.status(), 200);
}

/// During a CA rotation the HTTPS listener accepts the certificates of both CAs (the new
/// one's from the PKI watch's next round, without a restart); once the rotation is
/// finished, only the new CA's.
#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn the_https_listener_follows_a_ca_rotation(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let (t, _) = tenant(&pool, "acme").await;
    let (id, _) = appliance(&pool, t, "box").await;
    let old_cert = pki.appliance_cert(id);
    let old_ca = pki.read(files::CA_CERT);
    let admin = operator(&pool, "admin").await;
    let (status, started) = cp.call("POST", "/api/v1/admin/pki/rotation", &admin, None).await;
    assert_eq!(status, 201, "{started}");
    let new_cert = pki.appliance_cert(id);
    let new_ca = pki.read(files::CA_CERT);
    assert_ne!(old_ca, new_ca, "the rotation made a new CA");
    // The client trusts both CAs throughout, so the API's own certificate (reissued from the
    // new CA when the rotation finishes) never decides a handshake: only the client's does.
    let trusted = [old_ca, new_ca].concat();
    let self_url = format!("{}{AGENT_SELF_PATH}", cp.url);
    let status_with = |cert: &(String, String)| {
        // A new client each time: a kept-alive connection would skip the handshake.
        let client = appliance_client(&trusted, cert);
        let url = self_url.clone();
        async move { client.get(&url).send().await.map(|r| r.status().as_u16()).ok() }
    };
    eventually(Duration::from_secs(30), "the new CA's certificate accepted", || async {
        (status_with(&new_cert).await == Some(200)).then_some(())
    })
    .await;
    assert_eq!(status_with(&old_cert).await, Some(200), "the retiring CA's certificate still works");

    let (status, finished) =
        cp.call("POST", "/api/v1/admin/pki/rotation/finish", &admin, Some(serde_json::json!({}))).await;
    assert_eq!(status, 200, "{finished}");
    eventually(Duration::from_secs(30), "the retired CA's certificate refused", || async {
        status_with(&old_cert).await.is_none().then_some(())
    })
    .await;
    assert_eq!(status_with(&new_cert).await, Some(200), "the new CA's certificate works");
}
