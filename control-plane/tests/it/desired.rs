//! Desired configuration through the API and the real broker with a scripted appliance:
//! validation, secrets sealed at rest and redacted, merge of defaults and overrides,
//! versions, push on change and on request, applied version and drift.

use std::time::Duration;

use hearth_protocol::*;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::support::mqtt;
use crate::support::*;

async fn put(cp: &ControlPlane, path: &str, key: &str, body: Value) -> (u16, Value) {
    let r = cp.http.put(format!("{}{path}", cp.url)).bearer_auth(key).json(&body).send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn secret_key() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode([42u8; 32])
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn configuration_is_versioned_sealed_pushed_and_reported(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let mut config = test_config(&pki, &broker);
    config.secrets.key = Some(hearth_control_plane::secret::Secret::new(secret_key()));
    let cp = ControlPlane::start(pool.clone(), config, &pki).await;
    let (t, key) = tenant(&pool, "acme").await;
    let (id, _) = appliance(&pool, t, "box").await;
    let path = format!("/api/v1/appliances/{id}/config");

    let (status, view) = cp.get(&path, &key).await;
    assert_eq!((status, view["desired_version"].as_i64(), view["drift"].as_bool()), (200, Some(0), Some(false)));

    // Refused: a rule of the catalog, an unknown section, a plain-text password.
    let (status, body) =
        put(&cp, &path, &key, json!({"document": {"dns": {"records": [{"hostname": "x.com", "ip": "1.1.1.1"}]}}}))
            .await;
    assert_eq!((status, body["error"]["details"]["path"].as_str()), (422, Some("dns.records[0].hostname")), "{body}");
    let (status, _) = put(&cp, &path, &key, json!({"document": {"firewall": {}}})).await;
    assert_eq!(status, 422);
    let (status, body) = put(
        &cp,
        &path,
        &key,
        json!({"document": {"mail": {"relay": {"host": "smtp.example.com", "password": "hunter2"}}}}),
    )
    .await;
    assert_eq!((status, body["error"]["details"]["rule"].as_str()), (422, Some("not_secret")), "{body}");

    // Tenant defaults plus overrides, with a secret.
    let (status, _) = put(
        &cp,
        "/api/v1/config/defaults",
        &key,
        json!({"document": {"agent": {"heartbeat_interval_s": 30}, "dns": {"forwarders": ["9.9.9.9"]}}}),
    )
    .await;
    assert_eq!(status, 200);
    let doc = json!({"dns": {"records": [{"hostname": "nas.home", "ip": "192.168.1.10"}]},
                     "mail": {"relay": {"host": "smtp.example.com", "username": "me", "password": {"$secret": "hunter2"}}}});
    let (status, view) = put(&cp, &path, &key, json!({ "document": doc })).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["desired"]["dns"]["forwarders"], json!(["9.9.9.9"]), "defaults merged in");
    assert_eq!(view["desired"]["mail"]["relay"]["password"], json!({"$secret": "[redacted]"}));
    assert!(view["drift"].as_bool().expect("drift"));
    let version = view["desired_version"].as_i64().expect("version");
    let stored: String = sqlx::query_scalar("SELECT overrides::text FROM appliance_config WHERE appliance_id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .expect("row");
    assert!(!stored.contains("hunter2") && stored.contains("$encrypted"), "sealed at rest: {stored}");

    // The appliance connects and asks: it gets the merged document with the secret in clear.
    let mut probe = mqtt::appliance_online(&pki, &broker, id).await;
    probe
        .publish(
            &Topic::new(id, UpChannel::ConfigRequest).to_string(),
            encode(&ConfigRequest { v: ProtocolVersion, applied_version: None }).expect("encode"),
        )
        .await;
    let down = Topic::new(id, DownChannel::Config).to_string();
    let bytes = probe.next_on(&down, Duration::from_secs(10)).await.expect("configuration arrives");
    let sent: ConfigDocument = decode(&bytes).expect("ConfigDocument");
    assert_eq!(sent.version as i64, version);
    assert_eq!(sent.document["mail"]["relay"]["password"], "hunter2");
    assert_eq!(sent.document["agent"]["heartbeat_interval_s"], 30);

    // A failed apply keeps the last good version and shows the failure.
    let report = |outcome, message: &str| ConfigApplied {
        v: ProtocolVersion,
        version: version as u64,
        outcome,
        message: Some(message.into()),
        at: time::OffsetDateTime::now_utc(),
    };
    let applied_topic = Topic::new(id, UpChannel::ConfigApplied).to_string();
    probe
        .publish(&applied_topic, encode(&report(Outcome::Failed, "dns : write records failed")).expect("encode"))
        .await;
    let view = eventually(Duration::from_secs(10), "failed apply visible", || async {
        let (_, v) = cp.get(&path, &key).await;
        (v["last_apply"]["outcome"] == "failed").then_some(v)
    })
    .await;
    assert_eq!((view["applied_version"].clone(), view["drift"].clone()), (Value::Null, json!(true)));
    assert_eq!(view["last_apply"]["message"], "dns : write records failed");
    probe.publish(&applied_topic, encode(&report(Outcome::Succeeded, "ok=5 changed=2")).expect("encode")).await;
    let view = eventually(Duration::from_secs(10), "applied", || async {
        let (_, v) = cp.get(&path, &key).await;
        (v["drift"] == false).then_some(v)
    })
    .await;
    assert_eq!(view["applied_version"].as_i64(), Some(version));

    // Keeping the secret by sending the redacted form back, changing something else: a
    // new version is pushed at once, secret intact.
    let mut doc2 = view["overrides"].clone();
    doc2["dns"]["records"] = json!([{"hostname": "nas.home", "ip": "192.168.1.11"}]);
    let (status, view2) = put(&cp, &path, &key, json!({ "document": doc2 })).await;
    assert_eq!(status, 200, "{view2}");
    let bytes = probe.next_on(&down, Duration::from_secs(10)).await.expect("new version pushed");
    let sent2: ConfigDocument = decode(&bytes).expect("ConfigDocument");
    assert_eq!(sent2.version, sent.version + 1);
    assert_eq!(sent2.document["mail"]["relay"]["password"], "hunter2");
    assert_eq!(sent2.document["dns"]["records"][0]["ip"], "192.168.1.11");
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn secrets_need_a_key(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let (t, key) = tenant(&pool, "acme").await;
    let (id, _) = appliance(&pool, t, "box").await;
    let (status, body) = put(
        &cp,
        &format!("/api/v1/appliances/{id}/config"),
        &key,
        json!({"document": {"mail": {"relay": {"host": "h.example.com", "password": {"$secret": "x"}}}}}),
    )
    .await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("secrets_unavailable")), "{body}");
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn a_version_that_cannot_be_sent_says_why(pool: PgPool) {
    // Secrets sealed with a key this control plane does not have (e.g. started without
    // `secrets.key` after a migration): the appliance cannot be given its configuration,
    // and the API must say so instead of showing drift without a reason.
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let (t, key) = tenant(&pool, "acme").await;
    let (id, _) = appliance(&pool, t, "box").await;
    let other_key = hearth_control_plane::domain::desired::secrets::SecretKey::from_base64(&secret_key()).expect("key");
    let sealed = hearth_control_plane::domain::desired::secrets::seal(
        &json!({"mail": {"relay": {"host": "smtp.example.com", "password": {"$secret": "hunter2"}}}}),
        &Value::Null,
        t,
        Some(&other_key),
        "",
    )
    .expect("seal");
    sqlx::query("INSERT INTO appliance_config (appliance_id, tenant_id, overrides) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(t)
        .bind(&sealed)
        .execute(&pool)
        .await
        .expect("row");

    let _probe = mqtt::appliance_online(&pki, &broker, id).await;
    let path = format!("/api/v1/appliances/{id}/config");
    let view = eventually(Duration::from_secs(15), "the failure is visible", || async {
        let (_, v) = cp.get(&path, &key).await;
        (v["last_apply"]["outcome"] == "failed").then_some(v)
    })
    .await;
    let message = view["last_apply"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("could not send") && message.contains("secrets.key"), "{message}");
    assert!(!message.contains("hunter2"));
    assert_eq!((view["drift"].as_bool(), view["applied_version"].clone()), (Some(true), Value::Null));
}

/// Connects as appliance `id` with a persistent session (as the agent does), subscribes to
/// its down topics, says it is online, waits until the API shows it online, then
/// disconnects cleanly: the broker keeps the session (and queues QoS 1 messages for it)
/// while the control plane still believes the appliance online, as when it drops off the
/// network between two heartbeats.
async fn leave_a_session_behind(
    cp: &ControlPlane,
    key: &str,
    pki: &Pki,
    broker: &Broker,
    id: ApplianceId,
    cert_key: (&str, &str),
) {
    let probe = mqtt::appliance_online_as(pki, broker, id, cert_key).await;
    wait_status(cp, key, id, "online").await;
    probe.client.disconnect().await.expect("disconnect");
    tokio::time::sleep(Duration::from_millis(300)).await;
}

async fn pushed(pool: &PgPool, id: ApplianceId) -> bool {
    sqlx::query_scalar::<_, bool>(
        "SELECT COALESCE(pushed_version = desired_version, false) FROM appliance_config WHERE appliance_id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
    .expect("query")
    .unwrap_or(false)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn secrets_pushed_to_offline_appliances_are_never_in_the_brokers_persistence(pool: PgPool) {
    // The shipped broker configuration with persistence on, as in production.
    let pki = Pki::new();
    let mut broker = Broker::start_with(&pki, true);
    let mut config = test_config(&pki, &broker);
    config.secrets.key = Some(hearth_control_plane::secret::Secret::new(secret_key()));
    // The appliances stay "online" for the control plane after they silently went away.
    config.presence.offline_after_s = 600.0;
    let cp = ControlPlane::start(pool.clone(), config, &pki).await;
    let (t, key) = tenant(&pool, "acme").await;
    const PLAIN: &str = "c0rrect-h0rse-battery-staple";

    // An agent of today (enrolled: it can open sealed values) and an appliance whose key
    // the control plane does not know (enrolled before sealing existed).
    let agent = Appliance::enroll(&cp, &pki, &pool, t, "sealed").await;
    let sealing_key: Option<Vec<u8>> = sqlx::query_scalar("SELECT sealing_key FROM appliances WHERE id = $1")
        .bind(agent.id)
        .fetch_one(&pool)
        .await
        .expect("row");
    assert_eq!(sealing_key.map(|k| k.len()), Some(65), "enrollment stores the key of the certificate");
    let agent_cert = std::fs::read_to_string(agent.state.path().join("cert.pem")).expect("cert");
    let agent_key = std::fs::read_to_string(agent.state.path().join("key.pem")).expect("key");
    leave_a_session_behind(&cp, &key, &pki, &broker, agent.id, (&agent_cert, &agent_key)).await;
    let (legacy, _) = appliance(&pool, t, "legacy").await;
    let (legacy_cert, legacy_key) = pki.appliance_cert(legacy);
    leave_a_session_behind(&cp, &key, &pki, &broker, legacy, (&legacy_cert, &legacy_key)).await;

    // A configuration with a secret for both, while they are away.
    let doc =
        json!({"mail": {"relay": {"host": "smtp.example.com", "username": "me", "password": {"$secret": PLAIN}}}});
    let (status, body) = put(&cp, "/api/v1/config/defaults", &key, json!({ "document": doc })).await;
    assert_eq!(status, 200, "{body}");
    eventually(Duration::from_secs(15), "both versions pushed", || async {
        (pushed(&pool, agent.id).await && pushed(&pool, legacy).await).then_some(())
    })
    .await;

    // The broker saves its state when it stops (SIGTERM).
    broker.stop();
    let saved = std::fs::read(broker.data.path().join("mosquitto.db")).expect("the broker saved its persistence file");
    assert!(
        contains(&saved, &agent.id.to_string()) && contains(&saved, &legacy.to_string()),
        "both sessions were saved"
    );
    assert!(contains(&saved, "$sealed"), "the agent's document is queued for it, sealed");
    assert!(!contains(&saved, PLAIN), "a secret is in clear in the broker's persistence file");

    // The agent comes back and applies the secret (opened in memory for the run).
    broker.start_again();
    let (stop, run) = agent.start();
    let view = eventually(Duration::from_secs(120), "the agent applied the configuration", || async {
        let (_, v) = cp.get(&format!("/api/v1/appliances/{}/config", agent.id), &key).await;
        (v["last_apply"]["outcome"] == "succeeded" && v["drift"] == false).then_some(v)
    })
    .await;
    assert!(view["applied_version"].as_i64().is_some());
    assert_eq!(agent.file("etc/postfix/sasl_passwd"), format!("[smtp.example.com]:587 me:{PLAIN}\n"));
    let stored = std::fs::read_to_string(agent.state.path().join("config/applied.json")).expect("applied.json");
    assert!(!stored.contains(PLAIN) && stored.contains("$sealed"), "the agent keeps the document sealed on disk");
    stop.cancel();
    let _ = run.await;

    // The appliance without a key lost its QoS 0 copy; it asks on connect and gets it then.
    let mut probe = mqtt::appliance_online(&pki, &broker, legacy).await;
    probe
        .publish(
            &Topic::new(legacy, UpChannel::ConfigRequest).to_string(),
            encode(&ConfigRequest { v: ProtocolVersion, applied_version: None }).expect("encode"),
        )
        .await;
    let bytes = probe
        .next_on(&Topic::new(legacy, DownChannel::Config).to_string(), Duration::from_secs(10))
        .await
        .expect("the configuration arrives when asked for");
    let sent: ConfigDocument = decode(&bytes).expect("ConfigDocument");
    assert_eq!(sent.document["mail"]["relay"]["password"], PLAIN);
}

/// A pushed version that is never answered is pushed again after a while; one answered
/// (applied, or reported failed) or pushed recently is not.
#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn a_push_never_answered_is_sent_again(pool: PgPool) {
    use hearth_control_plane::db::desired;

    let (tenant, _) = tenant(&pool, "repush").await;
    let mut ids = Vec::new();
    for name in ["lost", "applied", "failed", "recent"] {
        let (id, _) = appliance(&pool, tenant, name).await;
        sqlx::query("INSERT INTO appliance_config (appliance_id, tenant_id) VALUES ($1, $2)")
            .bind(id)
            .bind(tenant)
            .execute(&pool)
            .await
            .expect("config row");
        ids.push(id);
    }
    let (lost, applied, failed, recent) = (ids[0], ids[1], ids[2], ids[3]);
    let mut conn = pool.acquire().await.expect("conn");
    desired::mark_pushed(&mut conn, &ids.iter().map(|id| (*id, 1)).collect::<Vec<_>>()).await.expect("pushed");
    let report = |outcome| ConfigApplied {
        v: ProtocolVersion,
        version: 1,
        outcome,
        message: None,
        at: time::OffsetDateTime::now_utc(),
    };
    desired::applied(&mut conn, &[(applied, report(Outcome::Succeeded)), (failed, report(Outcome::Failed))])
        .await
        .expect("reports");
    sqlx::query("UPDATE appliance_config SET pushed_at = now() - interval '10 minutes' WHERE appliance_id <> $1")
        .bind(recent)
        .execute(&pool)
        .await
        .expect("backdate");

    let n = desired::repush_unanswered(&pool, Duration::from_secs(180)).await.expect("repush");
    assert_eq!(n, 1, "only the unanswered old push");
    for (id, still) in [(lost, false), (applied, true), (failed, true), (recent, true)] {
        assert_eq!(pushed(&pool, id).await, still, "{id}");
    }
    // Sent again, it waits for its answer once more.
    desired::mark_pushed(&mut conn, &[(lost, 1)]).await.expect("pushed again");
    assert_eq!(desired::repush_unanswered(&pool, Duration::from_secs(180)).await.expect("repush"), 0);
}

/// The dispatcher's claim runs every second: with nothing due it reads no appliance, however
/// many are online, and when configurations are due it claims only those of online,
/// unrevoked appliances of active tenants.
#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn the_configuration_claim_follows_what_is_due_not_the_fleet(pool: PgPool) {
    use hearth_control_plane::db::desired;

    let (active, _) = tenant(&pool, "claim-active").await;
    let (suspended, _) = tenant(&pool, "claim-suspended").await;
    sqlx::query(
        "INSERT INTO appliances (id, tenant_id, name) SELECT gen_random_uuid(), $1, 'box-' || g
         FROM generate_series(1, 3000) g",
    )
    .bind(active)
    .execute(&pool)
    .await
    .expect("fleet");
    // Statistics taken before the fleet came online, and none yet for `appliance_config`,
    // as after a bulk provisioning: the planner believes few appliances are online.
    sqlx::query("ANALYZE appliances, tenants").execute(&pool).await.expect("analyze");
    sqlx::query("UPDATE appliances SET status = 'online', status_since = now(), last_seen = now()")
        .execute(&pool)
        .await
        .expect("online");

    // Appliance rows read by `claim_pending` (counters of the current transaction).
    async fn appliances_read(conn: &mut sqlx::PgConnection) -> i64 {
        sqlx::query_scalar(
            "SELECT COALESCE(seq_tup_read, 0) + COALESCE(idx_tup_fetch, 0)
             FROM pg_stat_xact_user_tables WHERE relname = 'appliances'",
        )
        .fetch_one(conn)
        .await
        .expect("counters")
    }

    let mut tx = pool.begin().await.expect("tx");
    let before = appliances_read(&mut tx).await;
    let due = desired::claim_pending(&mut tx, 256).await.expect("claim");
    assert!(due.is_empty());
    assert_eq!(appliances_read(&mut tx).await - before, 0, "nothing due, yet appliances were read");
    tx.rollback().await.expect("rollback");

    // Due: one online appliance (claimed), and four that must wait.
    let online: ApplianceId = sqlx::query_scalar("SELECT id FROM appliances WHERE tenant_id = $1 AND name = 'box-7'")
        .bind(active)
        .fetch_one(&pool)
        .await
        .expect("online");
    let (offline, _) = appliance(&pool, active, "offline").await;
    let (revoked, _) = appliance(&pool, active, "revoked").await;
    let (elsewhere, _) = appliance(&pool, suspended, "suspended").await;
    sqlx::query("UPDATE appliances SET status = 'online', revoked_at = now() WHERE id = $1")
        .bind(revoked)
        .execute(&pool)
        .await
        .expect("revoke");
    sqlx::query("UPDATE appliances SET status = 'online' WHERE id = $1")
        .bind(elsewhere)
        .execute(&pool)
        .await
        .expect("on");
    sqlx::query("UPDATE tenants SET status = 'suspended' WHERE id = $1")
        .bind(suspended)
        .execute(&pool)
        .await
        .expect("s");
    let pushed_already =
        sqlx::query_scalar::<_, ApplianceId>("SELECT id FROM appliances WHERE tenant_id = $1 AND name = 'box-8'")
            .bind(active)
            .fetch_one(&pool)
            .await
            .expect("box-8");
    for (id, t, pushed) in [
        (online, active, None),
        (offline, active, None),
        (revoked, active, None),
        (elsewhere, suspended, None),
        (pushed_already, active, Some(1i64)),
    ] {
        sqlx::query("INSERT INTO appliance_config (appliance_id, tenant_id, pushed_version) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(t)
            .bind(pushed)
            .execute(&pool)
            .await
            .expect("config row");
    }
    let mut tx = pool.begin().await.expect("tx");
    let before = appliances_read(&mut tx).await;
    let due = desired::claim_pending(&mut tx, 256).await.expect("claim");
    assert_eq!(due.iter().map(|p| p.appliance_id).collect::<Vec<_>>(), vec![online]);
    // Each due configuration's appliance looked up by its id, and nothing more.
    let read = appliances_read(&mut tx).await - before;
    assert!(read <= 4, "{read} appliance rows read for 4 due configurations");
}
