//! The spool: append before sending, removal on acknowledgement, resend order, the bound
//! and what survives a restart.

use hearth_agent::spool::{AckTracker, Class, Outbox, Spool};
use hearth_protocol::{
    ApplianceId, ConfigApplied, Outcome, ProtocolVersion, TaskEvent, TaskEventKind, TaskId, TaskResult, Topic,
    UpChannel,
};
use time::OffsetDateTime;

fn event(task: TaskId, seq: u64, kind: TaskEventKind, message: &str) -> TaskEvent {
    TaskEvent {
        v: ProtocolVersion,
        task_id: task,
        seq,
        kind,
        task: None,
        message: message.into(),
        at: OffsetDateTime::now_utc(),
    }
}

fn result(task: TaskId) -> TaskResult {
    TaskResult {
        v: ProtocolVersion,
        task_id: task,
        outcome: Outcome::Succeeded,
        message: Some("ok=1".into()),
        stats: None,
        events: 0,
        at: OffsetDateTime::now_utc(),
    }
}

#[test]
fn typed_appends_land_on_their_topics_and_survive_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    let me = ApplianceId::new();
    let task = TaskId::new();
    let outbox = Outbox::new(me, Spool::open(&dir, 1 << 20).unwrap());
    outbox.task_event(&event(task, 1, TaskEventKind::Received, "accepted")).unwrap();
    outbox.task_result(&result(task)).unwrap();
    outbox
        .config_applied(&ConfigApplied {
            v: ProtocolVersion,
            version: 3,
            outcome: Outcome::Succeeded,
            message: None,
            at: OffsetDateTime::now_utc(),
        })
        .unwrap();
    let before: Vec<(String, Class, Vec<u8>)> =
        outbox.lock().iter().map(|e| (e.topic.clone(), e.class, e.payload.clone())).collect();
    assert_eq!(
        before.iter().map(|b| b.0.clone()).collect::<Vec<_>>(),
        [
            Topic::new(me, UpChannel::TaskEvent(task)).to_string(),
            Topic::new(me, UpChannel::TaskResult(task)).to_string(),
            Topic::new(me, UpChannel::ConfigApplied).to_string(),
        ]
    );
    assert_eq!(before.iter().map(|b| b.1).collect::<Vec<_>>(), [Class::Event, Class::Result, Class::Result]);
    drop(outbox);

    // A stale temporary file from an append cut short is cleaned up, not sent.
    std::fs::write(dir.join(".00000000000000000009.json.tmp-1-1"), b"half").unwrap();
    // A corrupt entry is removed, not sent.
    std::fs::write(dir.join("00000000000000000008.json"), b"{not json").unwrap();
    let spool = Spool::open(&dir, 1 << 20).unwrap();
    let after: Vec<(String, Class, Vec<u8>)> =
        spool.iter().map(|e| (e.topic.clone(), e.class, e.payload.clone())).collect();
    assert_eq!(after, before, "everything survives, in order");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 3);
}

#[test]
fn removed_only_when_acknowledged_and_resent_oldest_first() {
    let tmp = tempfile::tempdir().unwrap();
    let t = Topic::new(ApplianceId::new(), UpChannel::ConfigApplied);
    let mut spool = Spool::open(tmp.path(), 1 << 20).unwrap();
    let ids: Vec<u64> =
        (0..5).map(|i| spool.append(&t, Class::Result, format!("{{\"n\":{i}}}").into_bytes()).unwrap()).collect();

    // First connection: the event loop owner sends the oldest three (the status goes
    // first), rumqttc numbers them, the broker acknowledges the second only.
    let mut tracker = AckTracker::default();
    tracker.queued(None);
    for id in &ids[..3] {
        tracker.queued(Some(*id));
    }
    for pkid in 1..=4 {
        tracker.on_outgoing_publish(pkid);
    }
    let acked = tracker.on_puback(3).unwrap();
    assert_eq!(acked, ids[1]);
    spool.remove(acked).unwrap();

    // The connection drops: nothing is on its way any more; the resend is everything left,
    // oldest first.
    tracker.reset();
    let resend: Vec<u64> = spool.iter().filter(|e| !tracker.is_queued(e.id)).map(|e| e.id).collect();
    assert_eq!(resend, [ids[0], ids[2], ids[3], ids[4]]);

    // A late acknowledgement from the old connection confirms nothing.
    assert_eq!(tracker.on_puback(2), None);
    assert_eq!(spool.len(), 4);
}

#[test]
fn the_bound_drops_output_first_then_events_never_results() {
    let tmp = tempfile::tempdir().unwrap();
    let me = ApplianceId::new();
    let task = TaskId::new();
    let max = 64 * 1024;
    let outbox = Outbox::new(me, Spool::open(tmp.path(), max).unwrap());
    let text = "x".repeat(1900);
    let mut seq = 0;
    let mut next = |kind| {
        seq += 1;
        event(task, seq, kind, &text)
    };
    // Interleave: a result, an event and an output, many times: far more than fits.
    for _ in 0..40 {
        outbox.task_result(&result(task)).unwrap();
        outbox.task_event(&next(TaskEventKind::TaskOk)).unwrap();
        outbox.task_event(&next(TaskEventKind::Output)).unwrap();
    }
    let spool = outbox.lock();
    assert!(spool.bytes() <= max, "{} > {max}", spool.bytes());
    let classes: Vec<Class> = spool.iter().map(|e| e.class).collect();
    let count = |c| classes.iter().filter(|x| **x == c).count();
    assert_eq!(count(Class::Result), 40, "results are never dropped");
    assert!(count(Class::Event) > 0, "events go only after every output");
    assert!(count(Class::Output) <= 1, "outputs go first: {classes:?}");
    // What is left of the events is the newest.
    let seqs: Vec<u64> = spool
        .iter()
        .filter(|e| e.class == Class::Event)
        .map(|e| serde_json::from_slice::<serde_json::Value>(&e.payload).unwrap()["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(*seqs.last().unwrap(), 79, "the newest event is kept");
    assert_eq!(spool.dropped() as usize, 80 - count(Class::Event) - count(Class::Output));
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), spool.len(), "dropped entries are gone from disk too");
    drop(spool);

    // Results alone may exceed the bound: they are kept.
    let tmp = tempfile::tempdir().unwrap();
    let outbox = Outbox::new(me, Spool::open(tmp.path(), max).unwrap());
    let big = TaskResult { message: Some("y".repeat(8000)), ..result(task) };
    for _ in 0..10 {
        outbox.task_result(&big).unwrap();
    }
    assert_eq!(outbox.lock().len(), 10);
    assert!(outbox.lock().bytes() > max);
}
