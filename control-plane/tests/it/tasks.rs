//! Tasks through the API, the dispatcher and the real broker, with a scripted appliance:
//! validation, queueing while offline, dispatch exactly once across replicas, events stored
//! once, results, cancel and timeouts.

use std::time::Duration;

use hearth_protocol::*;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::support::mqtt;
use crate::support::*;

async fn post(cp: &ControlPlane, path: &str, key: &str, body: Value) -> (u16, Value) {
    let r = cp.http.post(format!("{}{path}", cp.url)).bearer_auth(key).json(&body).send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn event(task: TaskId, seq: u64, kind: TaskEventKind) -> Vec<u8> {
    encode(&TaskEvent {
        v: ProtocolVersion,
        task_id: task,
        seq,
        kind,
        task: Some(format!("step {seq}")),
        message: format!("line {seq}"),
        at: time::OffsetDateTime::now_utc(),
    })
    .expect("encode")
}

async fn task(cp: &ControlPlane, key: &str, id: &str) -> Value {
    cp.get(&format!("/api/v1/tasks/{id}"), key).await.1
}

async fn wait_task(cp: &ControlPlane, key: &str, id: &str, status: &str) -> Value {
    eventually(Duration::from_secs(15), &format!("task {status}"), || async {
        let t = task(cp, key, id).await;
        (t["status"] == status).then_some(t)
    })
    .await
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn tasks_are_validated_before_anything_is_stored(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let (a, key_a) = tenant(&pool, "a").await;
    let (_, key_b) = tenant(&pool, "b").await;
    let (box_a, _) = appliance(&pool, a, "box").await;
    let path = format!("/api/v1/appliances/{box_a}/tasks");

    let (status, body) = post(
        &cp,
        &path,
        &key_a,
        json!({"action": "dns.record.add", "params": {"hostname": "evil.com", "ip": "1.2.3.4"}}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_params");
    assert_eq!(body["error"]["details"], json!({"param": "hostname", "rule": "not_local_domain"}));
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("evil.com"));

    let (status, body) = post(&cp, &path, &key_a, json!({"action": "shell.exec", "params": {"cmd": "id"}})).await;
    assert_eq!((status, body["error"]["details"]["rule"].as_str()), (422, Some("unknown_action")), "{body}");
    let (status, body) =
        post(&cp, &path, &key_a, json!({"action": "users.add", "params": {"username": "eve", "groups": ["sudo"]}}))
            .await;
    assert_eq!(body["error"]["details"], json!({"param": "groups[0]", "rule": "privileged_group"}), "{status} {body}");
    let (status, _) =
        post(&cp, &path, &key_a, json!({"action": "users.add", "params": {"username": "eve"}, "deadline_s": 0})).await;
    assert_eq!(status, 400);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks").fetch_one(&pool).await.expect("count");
    assert_eq!(stored, 0, "nothing stored for refused tasks");

    // Another tenant cannot create, see or cancel tasks of this appliance.
    let (status, _) = post(&cp, &path, &key_b, json!({"action": "appliance.reboot"})).await;
    assert_eq!(status, 404);
    let (status, body) = post(&cp, &path, &key_a, json!({"action": "appliance.reboot"})).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().expect("id").to_string();
    assert_eq!(cp.get(&format!("/api/v1/tasks/{id}"), &key_b).await.0, 404);
    assert_eq!(post(&cp, &format!("/api/v1/tasks/{id}/cancel"), &key_b, json!({})).await.0, 404);
    let (_, list) = cp.get(&path, &key_a).await;
    assert_eq!(list["tasks"][0]["id"], id.as_str());
    assert_eq!(list["tasks"][0]["status"], "queued", "the appliance was never online");

    // Cancel while queued; then it cannot be cancelled again.
    let (status, body) = post(&cp, &format!("/api/v1/tasks/{id}/cancel"), &key_a, json!({})).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("cancelled")), "{body}");
    let (status, body) = post(&cp, &format!("/api/v1/tasks/{id}/cancel"), &key_a, json!({})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("task_not_cancellable")), "{body}");
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn a_queued_task_goes_out_once_when_the_appliance_connects_and_its_log_is_stored_once(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    // Two replicas on one database and one broker: the task must still go out once.
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let cp2 = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let (t, key) = tenant(&pool, "acme").await;
    let (id, _) = appliance(&pool, t, "box").await;

    let (status, body) = post(
        &cp,
        &format!("/api/v1/appliances/{id}/tasks"),
        &key,
        json!({"action": "dns.record.add", "params": {"hostname": "printer.home", "ip": "192.168.1.50"}}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let task_id: TaskId = body["id"].as_str().expect("id").parse().expect("task id");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(task(&cp, &key, &task_id.to_string()).await["status"], "queued", "offline: it waits");

    let mut probe = mqtt::appliance_online(&pki, &broker, id).await;
    let down = Topic::new(id, DownChannel::Task).to_string();
    let bytes = probe.next_on(&down, Duration::from_secs(10)).await.expect("the task arrives");
    let dispatch: TaskDispatch = decode(&bytes).expect("a TaskDispatch");
    assert_eq!((dispatch.task_id, dispatch.action.as_str()), (task_id, "dns.record.add"));
    assert_eq!(dispatch.params["hostname"], "printer.home");
    wait_task(&cp, &key, &task_id.to_string(), "dispatched").await;
    let again = probe.drain(Duration::from_millis(2500)).await;
    assert!(again.iter().all(|(t, _)| t != &down), "sent once across two replicas: {again:?}");

    // Events (one resent), more than the broker's in-flight window so acknowledgements
    // must flow, then the result.
    let events_topic = Topic::new(id, UpChannel::TaskEvent(task_id)).to_string();
    probe.publish(&events_topic, event(task_id, 1, TaskEventKind::Received)).await;
    let running = wait_task(&cp, &key, &task_id.to_string(), "running").await;
    assert!(running["started_at"].is_string());
    for seq in 2..=40 {
        probe.publish(&events_topic, event(task_id, seq, TaskEventKind::TaskOk)).await;
    }
    probe.publish(&events_topic, event(task_id, 7, TaskEventKind::TaskOk)).await;
    // An event for this task from another appliance's topic is refused by the broker; one
    // naming a task of another appliance on this appliance's topic is ignored.
    let foreign = TaskId::new();
    probe
        .publish(&Topic::new(id, UpChannel::TaskEvent(foreign)).to_string(), event(foreign, 1, TaskEventKind::Received))
        .await;
    let result = TaskResult {
        v: ProtocolVersion,
        task_id,
        outcome: Outcome::Succeeded,
        message: Some("ok=3 changed=1".into()),
        stats: Some(PlayStats { ok: 3, changed: 1, ..Default::default() }),
        events: 40,
        at: time::OffsetDateTime::now_utc(),
    };
    probe.publish(&Topic::new(id, UpChannel::TaskResult(task_id)).to_string(), encode(&result).expect("encode")).await;

    let done = wait_task(&cp2, &key, &task_id.to_string(), "succeeded").await;
    assert_eq!(done["stats"]["changed"], 1);
    assert_eq!((done["events_expected"].as_i64(), done["log_complete"].as_bool()), (Some(40), Some(true)));
    assert_eq!(done["message"], "ok=3 changed=1");
    let seqs: Vec<i64> =
        done["events"].as_array().expect("events").iter().map(|e| e["seq"].as_i64().expect("seq")).collect();
    assert_eq!(seqs, (1..=40).collect::<Vec<_>>(), "every event once, in order");
    assert_eq!(done["events"][0]["kind"], "received");
    assert_eq!(done["events"][1]["task"], "step 2");
    let stray: i64 = sqlx::query_scalar("SELECT count(*) FROM task_events WHERE task_id = $1")
        .bind(foreign)
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(stray, 0);

    // A late result does not reopen a finished task.
    let late = TaskResult { outcome: Outcome::Failed, message: Some("late".into()), ..result };
    probe.publish(&Topic::new(id, UpChannel::TaskResult(task_id)).to_string(), encode(&late).expect("encode")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(task(&cp, &key, &task_id.to_string()).await["status"], "succeeded");
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn unfinished_tasks_time_out(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let (t, key) = tenant(&pool, "acme").await;
    let (id, _) = appliance(&pool, t, "box").await;
    let (_, body) = post(
        &cp,
        &format!("/api/v1/appliances/{id}/tasks"),
        &key,
        json!({"action": "service.restart", "params": {"service": "dns"}, "deadline_s": 1}),
    )
    .await;
    let task_id = body["id"].as_str().expect("id").to_string();
    let t = wait_task(&cp, &key, &task_id, "timed_out").await;
    assert!(t["message"].as_str().unwrap_or_default().contains("deadline"));
    let text = cp.metrics().await;
    assert_eq!(metric(&text, "hearth_tasks_timed_out_total"), Some(1.0));
}

#[sqlx::test(migrator = "hearth_control_plane::db::MIGRATOR")]
async fn inventory_lists_the_tenants_appliances(pool: PgPool) {
    let pki = Pki::new();
    let broker = Broker::start(&pki);
    let cp = ControlPlane::start(pool.clone(), test_config(&pki, &broker), &pki).await;
    let (t, key) = tenant(&pool, "acme").await;
    let (other, _) = tenant(&pool, "other").await;
    let (a, _) = appliance(&pool, t, "living-room").await;
    appliance(&pool, t, "garage").await;
    appliance(&pool, other, "not-mine").await;
    let (status, inv) = cp.get("/api/v1/inventory", &key).await;
    assert_eq!(status, 200);
    let mut hosts: Vec<&str> =
        inv["hearth"]["hosts"].as_array().expect("hosts").iter().filter_map(Value::as_str).collect();
    hosts.sort();
    assert_eq!(hosts, ["garage", "living-room"]);
    assert_eq!(inv["_meta"]["hostvars"]["living-room"]["hearth_appliance_id"], a.to_string());
    assert_eq!(inv["_meta"]["hostvars"]["living-room"]["hearth_status"], "never_seen");
}
