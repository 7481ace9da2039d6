//! Every message kind decodes from its committed golden vector and re-encodes to the same
//! JSON value.

use std::path::PathBuf;

use hearth_protocol::codec::{decode, encode, Payload};
use hearth_protocol::*;
use serde_json::Value;

fn golden(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/golden").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn round_trip<T: Payload + std::fmt::Debug>(name: &str) -> T {
    let bytes = golden(name);
    let decoded: T = decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    let reencoded = encode(&decoded).expect("encode");
    let a: Value = serde_json::from_slice(&bytes).expect("golden is JSON");
    let b: Value = serde_json::from_slice(&reencoded).expect("encoded is JSON");
    assert_eq!(a, b, "{name} does not re-encode to the same JSON");
    decoded
}

#[test]
fn heartbeat() {
    let hb: Heartbeat = round_trip("heartbeat.json");
    assert_eq!(hb.seq, 42);
    assert_eq!(hb.load, [0.15, 0.1, 0.05]);
    assert_eq!(hb.memory.total_bytes, 2_147_483_648);
}

#[test]
fn status() {
    let on: Status = round_trip("status-online.json");
    let off: Status = round_trip("status-offline.json");
    assert_eq!(on.state, PresenceState::Online);
    assert_eq!(off.state, PresenceState::Offline);
    assert_eq!(on.session, off.session);
}

#[test]
fn config_messages() {
    let req: ConfigRequest = round_trip("config-request.json");
    assert_eq!(req.applied_version, Some(6));
    let doc: ConfigDocument = round_trip("config-document.json");
    assert_eq!(doc.version, 7);
    let applied: ConfigApplied = round_trip("config-applied.json");
    assert_eq!(applied.outcome, Outcome::Succeeded);
}

#[test]
fn task_messages() {
    let d: TaskDispatch = round_trip("task-dispatch.json");
    assert_eq!(d.action, "users.add");
    let e: TaskEvent = round_trip("task-event.json");
    assert_eq!((e.seq, e.kind), (3, TaskEventKind::TaskChanged));
    assert_eq!(e.task.as_deref(), Some("dns : add the record"));
    let r: TaskResult = round_trip("task-result.json");
    assert_eq!(r.task_id, d.task_id);
    assert_eq!(r.stats.map(|s| s.changed), Some(1));
    assert_eq!(r.events, 7);
}

#[test]
fn certificate_messages() {
    let req: CertificateRequest = round_trip("certificate-request.json");
    assert!(req.csr_pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    let issued: CertificateRenewal = round_trip("certificate-renewal.json");
    assert_eq!(issued.renewal, req.renewal);
    let RenewalOutcome::Issued { certificate_pem, not_after, .. } = issued.outcome else { panic!("{issued:?}") };
    assert!(certificate_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(not_after.year(), 2027);
    let refused: CertificateRenewal = round_trip("certificate-renewal-refused.json");
    assert!(matches!(refused.outcome, RenewalOutcome::Refused { ref code, .. } if code == "same_key"));
    let notice: RenewalNotice = round_trip("renewal-notice.json");
    assert_eq!((notice.reason, notice.within_s), (RenewalReason::CaRotation, 300));
    // A reason added later is still a notice to renew.
    let later: RenewalNotice = decode(br#"{"v":1,"reason":"key_compromise","within_s":60}"#).expect("decode");
    assert_eq!(later.reason, RenewalReason::Unknown);
}

#[test]
fn receipt() {
    let r: Receipt = round_trip("receipt.json");
    assert_eq!((r.events.len(), r.results.len(), r.config_applied.as_slice()), (2, 1, &[7][..]));
}

#[test]
fn every_golden_file_is_checked() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/golden");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("golden dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let checked = [
        "certificate-renewal-refused.json",
        "certificate-renewal.json",
        "certificate-request.json",
        "config-applied.json",
        "config-document.json",
        "config-request.json",
        "heartbeat.json",
        "receipt.json",
        "renewal-notice.json",
        "sealed-v1.json",
        "status-offline.json",
        "status-online.json",
        "task-dispatch.json",
        "task-event.json",
        "task-result.json",
    ];
    assert_eq!(names, checked, "a golden vector was added without a test, or removed");
}

#[test]
fn up_message_dispatches_on_channel_and_checks_task_ids() {
    let hb = UpMessage::decode(UpChannel::Heartbeat, &golden("heartbeat.json")).expect("heartbeat");
    assert_eq!(hb.kind(), "heartbeat");
    // A heartbeat body on the status channel is refused, not misread.
    let err = UpMessage::decode(UpChannel::Status, &golden("heartbeat.json")).unwrap_err();
    assert_eq!(err.reason(), "malformed");

    let event = golden("task-event.json");
    let right: TaskId = "0193a0c2-2222-7abc-8def-0123456789ab".parse().expect("id");
    assert!(UpMessage::decode(UpChannel::TaskEvent(right), &event).is_ok());
    let err = UpMessage::decode(UpChannel::TaskEvent(TaskId::new()), &event).unwrap_err();
    assert!(matches!(err, DecodeError::TaskMismatch { .. }), "{err}");
}

#[test]
fn bad_inputs_get_clear_errors() {
    let mut hb: Value = serde_json::from_slice(&golden("heartbeat.json")).expect("json");

    hb["v"] = 2.into();
    let err = decode::<Heartbeat>(&serde_json::to_vec(&hb).expect("json")).unwrap_err();
    assert!(err.to_string().contains("unsupported protocol version 2"), "{err}");

    hb["v"] = 1.into();
    hb["memory"]["available_bytes"] = (u64::MAX).into();
    let err = decode::<Heartbeat>(&serde_json::to_vec(&hb).expect("json")).unwrap_err();
    assert_eq!(err.reason(), "invalid");
    assert!(err.to_string().contains("memory.available_bytes"), "{err}");

    let err = decode::<Heartbeat>(&vec![b' '; 5000]).unwrap_err();
    assert!(matches!(err, DecodeError::TooLarge { len: 5000, max: 4096, .. }), "{err}");

    let err = decode::<Status>(br#"{"v":1,"state":"online"}"#).unwrap_err();
    assert!(err.to_string().contains("missing field `session`"), "{err}");

    // Unknown enum values map to Unknown instead of failing: newer agents stay readable.
    let s: Status = decode(
        br#"{"v":1,"state":"sleeping","session":"0193a0c2-1111-7abc-8def-0123456789ab","at":"2026-11-22T12:00:00Z"}"#,
    )
    .expect("unknown state tolerated");
    assert_eq!(s.state, PresenceState::Unknown);
}

/// The sealed-value test vector (made with another implementation of the same format):
/// sealing with its fixed ephemeral key and nonce gives its bytes, and its key opens it.
#[test]
fn sealed_value_format_1() {
    use hearth_protocol::sealed::{self, OpeningKey};
    let vector: Value = serde_json::from_slice(&golden("sealed-v1.json")).expect("JSON");
    let hex = |name: &str| -> Vec<u8> {
        let s = vector[name].as_str().expect(name);
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
    };
    let key = OpeningKey::from_bytes(&hex("recipient_private_hex")).expect("key");
    let appliance: ApplianceId = vector["appliance"].as_str().expect("appliance").parse().expect("id");
    let path = vector["path"].as_str().expect("path");
    let plain = vector["plaintext"].as_str().expect("plaintext");
    let nonce: [u8; 12] = hex("nonce_hex").try_into().expect("12 bytes");
    let sealed = sealed::seal_with(&key.sealing_key(), appliance, path, plain, &hex("ephemeral_private_hex"), nonce)
        .expect("seal");
    assert_eq!(sealed, vector["sealed"]);
    assert_eq!(sealed::open(&key, appliance, path, &vector["sealed"]).expect("open").expose(), plain);
    use base64::Engine;
    assert_eq!(
        base64::engine::general_purpose::STANDARD.encode(key.sealing_key().to_sec1_bytes()),
        vector["recipient_public"].as_str().expect("public")
    );
}
