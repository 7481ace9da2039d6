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
