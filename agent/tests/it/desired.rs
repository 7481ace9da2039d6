//! Desired configuration with the real `ansible-playbook`: apply, store, report, ignore old
//! versions, keep the last good document on failure, restore it after a restart.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use hearth_protocol::{ConfigApplied, ConfigDocument, Outcome, ProtocolVersion, UpMessage};
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::support::{ack_all, require_ansible, spooled, Fixture};

fn doc(version: u64, document: Value) -> ConfigDocument {
    ConfigDocument { v: ProtocolVersion, version, document: document.as_object().cloned().unwrap_or_default() }
}

fn reports(fx_outbox: &hearth_agent::spool::Outbox) -> Vec<ConfigApplied> {
    spooled(fx_outbox)
        .into_iter()
        .map(|m| match m {
            UpMessage::ConfigApplied(c) => c,
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn apply_store_report_and_keep_the_last_good_document() {
    require_ansible();
    let fx = Fixture::new();
    let mut w = fx.worker();
    let cancel = CancellationToken::new();
    let deadline = || Instant::now() + Duration::from_secs(120);
    let heartbeat = w.desired.heartbeat_interval();
    let applied_version = w.desired.applied_version_watch();
    assert_eq!(*heartbeat.borrow(), Duration::from_secs(30));

    // Version 2 applies: the playbook sees the document, the agent section takes effect.
    let v2 = json!({"agent": {"heartbeat_interval_s": 5}, "dns": {"forwarders": ["9.9.9.9"]}, "pw": "s3cret"});
    let report = w.desired.handle(doc(2, v2.clone()), &w.runner, deadline(), &cancel, &w.outbox).await.unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded, "{:?}", report.message);
    assert_eq!(report.version, 2);
    assert!(report.message.as_deref().unwrap().starts_with("ok=1 changed=1"), "{report:?}");
    let written: Value = serde_json::from_str(&std::fs::read_to_string(fx.root.join("config.json")).unwrap()).unwrap();
    assert_eq!(written, v2);
    assert_eq!(*heartbeat.borrow(), Duration::from_secs(5));
    assert_eq!(*applied_version.borrow(), Some(2));
    let applied = fx.state.join("config/applied.json");
    let mode = std::fs::metadata(&applied).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(reports(&w.outbox), std::slice::from_ref(&report));
    ack_all(&w.outbox);

    // The same version again is reported again, an older one is ignored; nothing runs.
    std::fs::remove_file(fx.root.join("config.json")).unwrap();
    let again = w.desired.handle(doc(2, v2.clone()), &w.runner, deadline(), &cancel, &w.outbox).await.unwrap();
    assert_eq!((again.version, again.outcome), (2, Outcome::Succeeded));
    assert_eq!(again.message, report.message);
    assert!(w.desired.handle(doc(1, json!({})), &w.runner, deadline(), &cancel, &w.outbox).await.is_none());
    assert!(!fx.root.join("config.json").exists(), "nothing ran");
    assert_eq!(reports(&w.outbox), [again]);
    ack_all(&w.outbox);

    // Version 3 fails: reported, version 2 stays applied, its agent section too.
    let failed = w
        .desired
        .handle(
            doc(3, json!({"agent": {"heartbeat_interval_s": 9}, "fail": true})),
            &w.runner,
            deadline(),
            &cancel,
            &w.outbox,
        )
        .await
        .unwrap();
    assert_eq!((failed.version, failed.outcome), (3, Outcome::Failed));
    assert!(failed.message.as_deref().unwrap().contains("the document asks to fail"), "{failed:?}");
    assert_eq!(*heartbeat.borrow(), Duration::from_secs(5));
    assert_eq!(*applied_version.borrow(), Some(2));
    assert_eq!(w.desired.applied().map(|a| a.version), Some(2));

    // A restarted agent starts from version 2 and its agent section.
    let restarted = fx.worker();
    assert_eq!(restarted.desired.applied_version(), Some(2));
    assert_eq!(*restarted.desired.heartbeat_interval().borrow(), Duration::from_secs(5));
    assert_eq!(restarted.desired.applied().map(|a| Value::Object(a.document.expose().clone())), Some(v2));
}

#[tokio::test]
async fn a_missing_site_playbook_fails_the_apply() {
    require_ansible();
    let fx = Fixture::new();
    std::fs::remove_file(fx.ansible.join("site.yml")).unwrap();
    let mut w = fx.worker();
    let report = w
        .desired
        .handle(
            doc(1, json!({"agent": {"heartbeat_interval_s": 3}})),
            &w.runner,
            Instant::now() + Duration::from_secs(120),
            &CancellationToken::new(),
            &w.outbox,
        )
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Failed);
    assert_eq!(w.desired.applied_version(), None);
    assert_eq!(*w.desired.heartbeat_interval().borrow(), Duration::from_secs(30), "the agent section is rolled back");
    assert!(!fx.state.join("config/applied.json").exists());
}

#[tokio::test]
async fn sealed_secrets_are_opened_for_the_run_and_stay_sealed_on_disk() {
    use hearth_agent::desired::{AppliedStore, Desired};
    use hearth_protocol::sealed::{seal, OpeningKey};
    require_ansible();
    let fx = Fixture::new();
    let key = OpeningKey::generate();
    let mut w = fx.worker();
    w.desired = Desired::load(AppliedStore::open(&fx.state.join("config")).unwrap(), Duration::from_secs(30))
        .with_opening_key(fx.appliance, key.clone());
    let cancel = CancellationToken::new();
    let deadline = || Instant::now() + Duration::from_secs(120);
    let sealed = |path: &str, plain: &str| seal(&key.sealing_key(), fx.appliance, path, plain).unwrap();

    let v1 = json!({"mail": {"relay": {"host": "smtp.example.com", "username": "me",
                                       "password": sealed("mail.relay.password", "s3cret-pw")}}});
    let report = w.desired.handle(doc(1, v1.clone()), &w.runner, deadline(), &cancel, &w.outbox).await.unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded, "{:?}", report.message);
    // The playbook got the secret in clear…
    let written: Value = serde_json::from_str(&std::fs::read_to_string(fx.root.join("config.json")).unwrap()).unwrap();
    assert_eq!(written["mail"]["relay"]["password"], "s3cret-pw");
    // …the agent's own record keeps it sealed.
    let stored = std::fs::read_to_string(fx.state.join("config/applied.json")).unwrap();
    assert!(!stored.contains("s3cret-pw") && stored.contains("$sealed"), "{stored}");
    ack_all(&w.outbox);

    // Sealed to another appliance's key, or moved to another field: refused, nothing runs,
    // the message names the place and never a value.
    std::fs::remove_file(fx.root.join("config.json")).unwrap();
    let other = seal(&OpeningKey::generate().sealing_key(), fx.appliance, "mail.relay.password", "other-pw").unwrap();
    let v2 = json!({"mail": {"relay": {"host": "smtp.example.com", "username": "me", "password": other}}});
    let failed = w.desired.handle(doc(2, v2), &w.runner, deadline(), &cancel, &w.outbox).await.unwrap();
    assert_eq!(failed.outcome, Outcome::Failed);
    assert_eq!(failed.message.as_deref(), Some("mail.relay.password: a sealed value cannot be opened"));
    let moved = json!({"users": [{"username": "alice", "password": sealed("mail.relay.password", "s3cret-pw")}]});
    let failed = w.desired.handle(doc(3, moved), &w.runner, deadline(), &cancel, &w.outbox).await.unwrap();
    assert_eq!(failed.message.as_deref(), Some("users[0].password: a sealed value cannot be opened"));
    assert!(!fx.root.join("config.json").exists(), "nothing ran");
    assert_eq!(w.desired.applied_version(), Some(1));

    // An agent without its key cannot apply it either.
    let mut keyless = fx.worker();
    let failed =
        keyless.desired.handle(doc(4, v1), &keyless.runner, deadline(), &cancel, &keyless.outbox).await.unwrap();
    assert_eq!(failed.outcome, Outcome::Failed);
    assert!(failed.message.as_deref().unwrap().contains("no key to open them"), "{failed:?}");
}
