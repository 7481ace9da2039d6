//! The task worker with the real `ansible-playbook`: events and results, the ledger
//! (each task id runs once, also across a restart), rejections, deadlines and shutdown.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hearth_agent::runner::SHUTDOWN_MESSAGE;
use hearth_agent::tasks::ledger::{Ledger, Record, TaskState, RESTARTED_MESSAGE};
use hearth_agent::tasks::Job;
use hearth_protocol::{Outcome, TaskEventKind, UpChannel, UpMessage};
use serde_json::json;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::support::{ack_all, channels, dispatch, require_ansible, spooled, Fixture, SLOW};

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_task_runs_with_events_and_a_result() {
    require_ansible();
    let fx = Fixture::new();
    let worker = fx.worker();
    let d = dispatch("test.write", json!({"name": "first"}), MINUTE);
    let result = worker.task(d.clone(), &CancellationToken::new()).await.expect("a catalog task ends with a result");
    assert_eq!(result.outcome, Outcome::Succeeded, "{:?}", result.message);
    let stats = result.stats.expect("the play recap");
    assert_eq!((stats.ok, stats.changed, stats.failed), (3, 2, 0));
    assert_eq!(result.message.as_deref(), Some("ok=3 changed=2 failed=0 skipped=0 unreachable=0"));
    assert_eq!(fx.runs(), ["first False"], "params and hearth_manage_services reach the playbook");

    let messages = spooled(&worker.outbox);
    let events: Vec<_> = messages
        .iter()
        .filter_map(|m| match m {
            UpMessage::TaskEvent(e) => Some(e.clone()),
            _ => None,
        })
        .collect();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
    assert!(events.iter().all(|e| e.task_id == d.task_id));
    let kinds: Vec<TaskEventKind> = events.iter().map(|e| e.kind).filter(|k| *k != TaskEventKind::Output).collect();
    use TaskEventKind::*;
    assert_eq!(kinds, [Received, Started, TaskStarted, TaskChanged, TaskStarted, TaskChanged, TaskStarted, TaskOk]);
    let ok = events.iter().rfind(|e| e.kind == TaskOk).unwrap();
    assert_eq!(ok.task.as_deref(), Some("say something on stdout"));
    assert_eq!(ok.message, "wrote first");
    assert_eq!(messages.last(), Some(&UpMessage::TaskResult(result.clone())), "the result comes last");
    assert_eq!(channels(&worker.outbox).last(), Some(&UpChannel::TaskResult(d.task_id)));

    let record = worker.ledger.get(d.task_id).unwrap().unwrap();
    assert_eq!(record.state, TaskState::Done);
    assert!(record.reported);
    assert_eq!(record.dispatch, None, "parameters are not kept once done");
    assert_eq!(record.result, Some(result));
}

#[tokio::test]
async fn a_redelivered_task_runs_once_and_gets_its_stored_result() {
    require_ansible();
    let fx = Fixture::new();
    let worker = fx.worker();
    let d = dispatch("test.write", json!({"name": "once"}), MINUTE);
    assert!(worker.ledger.record_received(&d).unwrap());
    let first = worker.task(d.clone(), &CancellationToken::new()).await.expect("a catalog task ends with a result");
    assert_eq!(first.outcome, Outcome::Succeeded);
    ack_all(&worker.outbox);

    // Delivered again to this agent, and again after a restart.
    assert!(!worker.ledger.record_received(&d).unwrap());
    let again = worker.task(d.clone(), &CancellationToken::new()).await.expect("a catalog task ends with a result");
    let restarted = fx.worker();
    assert!(restarted.recover().unwrap().is_empty());
    let after_restart =
        restarted.task(d.clone(), &CancellationToken::new()).await.expect("a catalog task ends with a result");
    assert_eq!(again, first);
    assert_eq!(after_restart, first);
    assert_eq!(fx.runs(), ["once False"], "the playbook ran once");
    // What is on disk now (both agents' appends).
    assert_eq!(
        spooled(&fx.worker().outbox),
        [UpMessage::TaskResult(first.clone()), UpMessage::TaskResult(first)],
        "only the stored result is sent again, no events"
    );
}

#[tokio::test]
async fn a_task_running_when_the_agent_died_is_failed_not_rerun() {
    require_ansible();
    let fx = Fixture::new();
    let d = dispatch("test.write", json!({"name": "crash"}), MINUTE);
    let queued = dispatch("test.write", json!({"name": "queued"}), MINUTE);
    {
        let ledger = Ledger::open(&fx.state.join("tasks")).unwrap();
        ledger.record_received(&queued).unwrap();
        ledger
            .put(&Record {
                task_id: d.task_id,
                state: TaskState::Running,
                action: d.action.clone(),
                received_at: OffsetDateTime::now_utc(),
                dispatch: None,
                result: None,
                reported: false,
            })
            .unwrap();
    }
    let worker = fx.worker();
    let recovered = worker.recover().unwrap();
    assert_eq!(recovered, std::slice::from_ref(&queued), "a task received but never started is run");
    let messages = spooled(&worker.outbox);
    let [UpMessage::TaskResult(failed)] = messages.as_slice() else { panic!("one result expected: {messages:?}") };
    assert_eq!(failed.task_id, d.task_id);
    assert_eq!(failed.outcome, Outcome::Failed);
    assert_eq!(failed.message.as_deref(), Some(RESTARTED_MESSAGE));

    // Redelivered afterwards: answered from the ledger, not run.
    let again = worker.task(d.clone(), &CancellationToken::new()).await.expect("a catalog task ends with a result");
    assert_eq!(&again, failed);
    assert!(fx.runs().is_empty());

    // The recovered task runs through the worker's queue.
    let (_tx, rx) = tokio::sync::mpsc::channel(1);
    let cancel = CancellationToken::new();
    let run = tokio::spawn(fx.worker().run(recovered.into_iter().map(Job::Task).collect(), rx, cancel.clone()));
    let deadline = Instant::now() + MINUTE;
    while fx.runs().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(fx.runs(), ["queued False"]);
    cancel.cancel();
    run.await.unwrap();
}

/// An `ansible-playbook` that only records that it was started.
fn tripwire(fx: &Fixture) -> (PathBuf, PathBuf) {
    let marker = fx.tmp.path().join("spawned");
    let script = fx.tmp.path().join("fake-ansible-playbook");
    std::fs::write(&script, format!("#!/bin/sh\ntouch {}\n", marker.display())).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, marker)
}

#[tokio::test]
async fn off_catalog_and_bad_parameters_are_rejected_without_running_anything() {
    let fx = Fixture::new();
    let (script, marker) = tripwire(&fx);
    let mut worker = fx.worker();
    worker.runner.ansible_playbook = script;
    let cancel = CancellationToken::new();

    let off = worker
        .task(dispatch("users.add", json!({"username": "alice"}), MINUTE), &cancel)
        .await
        .expect("a catalog task ends with a result");
    assert_eq!(off.outcome, Outcome::Rejected);
    assert_eq!(off.message.as_deref(), Some("\"users.add\" is not an action in the catalog"));

    let bad = worker
        .task(dispatch("test.write", json!({"name": "../etc"}), MINUTE), &cancel)
        .await
        .expect("a catalog task ends with a result");
    assert_eq!(bad.outcome, Outcome::Rejected);
    assert!(bad.message.as_deref().unwrap().starts_with("name \"../etc\" is not a valid share name"), "{bad:?}");

    let extra = worker
        .task(dispatch("test.fail", json!({"now": true}), MINUTE), &cancel)
        .await
        .expect("a catalog task ends with a result");
    assert_eq!(extra.outcome, Outcome::Rejected);

    let late = worker
        .task(dispatch("test.write", json!({"name": "late"}), Duration::ZERO), &cancel)
        .await
        .expect("a catalog task ends with a result");
    assert_eq!(late.outcome, Outcome::TimedOut);

    assert!(!marker.exists(), "nothing was spawned");
    assert!(spooled(&worker.outbox).iter().all(|m| matches!(m, UpMessage::TaskResult(_))), "results only, no events");
}

#[tokio::test]
async fn a_failing_playbook_is_failed_with_the_task_and_message() {
    require_ansible();
    let fx = Fixture::new();
    let worker = fx.worker();
    let result = worker
        .task(dispatch("test.fail", json!({}), MINUTE), &CancellationToken::new())
        .await
        .expect("a catalog task ends with a result");
    assert_eq!(result.outcome, Outcome::Failed);
    let message = result.message.unwrap();
    assert!(
        message.starts_with("task \"break\" failed: deliberate failure; ansible-playbook exited with status 2"),
        "{message}"
    );
    assert_eq!(result.stats.map(|s| (s.ok, s.failed)), Some((1, 1)));
    assert!(spooled(&worker.outbox).iter().any(|m| matches!(
        m,
        UpMessage::TaskEvent(e) if e.kind == TaskEventKind::TaskFailed && e.task.as_deref() == Some("break")
    )));
}

#[tokio::test]
async fn a_missing_ansible_playbook_fails_the_task() {
    let fx = Fixture::new();
    let mut worker = fx.worker();
    worker.runner.ansible_playbook = fx.tmp.path().join("no-such-ansible-playbook");
    let result = worker
        .task(dispatch("test.write", json!({"name": "x"}), MINUTE), &CancellationToken::new())
        .await
        .expect("a catalog task ends with a result");
    assert_eq!(result.outcome, Outcome::Failed);
    assert!(result.message.unwrap().starts_with("cannot start "));
}

#[tokio::test]
async fn the_deadline_stops_the_playbook() {
    require_ansible();
    let _turn = SLOW.lock().await;
    let fx = Fixture::new();
    let worker = fx.worker();
    let started = Instant::now();
    let result = worker
        .task(dispatch("test.slow", json!({}), Duration::from_secs(6)), &CancellationToken::new())
        .await
        .expect("a catalog task ends with a result");
    assert_eq!(result.outcome, Outcome::TimedOut, "{:?}", result.message);
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    assert!(no_sleep_left(&fx), "the playbook's processes were stopped");
}

#[tokio::test]
async fn the_task_timeout_caps_a_generous_deadline() {
    require_ansible();
    let _turn = SLOW.lock().await;
    let fx = Fixture::new();
    let mut worker = fx.worker();
    worker.task_timeout = Duration::from_secs(6);
    let result = worker
        .task(dispatch("test.slow", json!({}), MINUTE * 60), &CancellationToken::new())
        .await
        .expect("a catalog task ends with a result");
    assert_eq!(result.outcome, Outcome::TimedOut);
}

#[tokio::test]
async fn shutdown_kills_the_playbook_and_reports_it_failed() {
    require_ansible();
    let _turn = SLOW.lock().await;
    let fx = Fixture::new();
    let worker = fx.worker();
    let cancel = CancellationToken::new();
    let d = dispatch("test.slow", json!({}), MINUTE);
    let stop = cancel.clone();
    let outbox = worker.outbox.clone();
    tokio::spawn(async move {
        // Once the sleep is running.
        loop {
            let started = spooled(&outbox)
                .iter()
                .any(|m| matches!(m, UpMessage::TaskEvent(e) if e.kind == TaskEventKind::TaskStarted));
            if started {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.cancel();
    });
    let started = Instant::now();
    let result = worker.task(d.clone(), &cancel).await.expect("a catalog task ends with a result");
    assert_eq!(result.outcome, Outcome::Failed);
    assert_eq!(result.message.as_deref(), Some(SHUTDOWN_MESSAGE));
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(no_sleep_left(&fx));
    let record = worker.ledger.get(d.task_id).unwrap().unwrap();
    assert_eq!((record.state, record.reported), (TaskState::Done, true));
    assert!(matches!(
        spooled(&worker.outbox).last(),
        Some(UpMessage::TaskResult(r)) if r.message.as_deref() == Some(SHUTDOWN_MESSAGE)
    ));
}

/// Whether no `sleep` of this fixture's slow playbook is left running (after a moment).
fn no_sleep_left(fx: &Fixture) -> bool {
    let pattern = format!("^{}$", fx.slow_command.replace('.', "\\."));
    for _ in 0..50 {
        let out = std::process::Command::new("pgrep").args(["-f", &pattern]).output().expect("pgrep");
        if !out.status.success() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The agent ↔ `ansible/` contract with the shipped catalog and playbooks: a real action in
/// a sandbox root, without services.
#[tokio::test]
async fn a_shipped_catalog_action_runs_in_a_sandbox() {
    require_ansible();
    let fx = Fixture::new();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ansible");
    let mut worker = fx.worker();
    worker.catalog = hearth_agent::run::load_catalog(&shipped.join("catalog.json")).unwrap();
    worker.runner.ansible_dir = shipped;
    let result = worker
        .task(
            dispatch("dns.record.add", json!({"hostname": "printer.home", "ip": "192.168.1.50"}), MINUTE),
            &CancellationToken::new(),
        )
        .await
        .expect("a catalog task ends with a result");
    assert_eq!(result.outcome, Outcome::Succeeded, "{:?}", result.message);
    let records = std::fs::read_to_string(fx.root.join("etc/dnsmasq.d/hearth-records.conf")).unwrap();
    assert!(records.contains("host-record=printer.home,192.168.1.50"), "{records}");
}
