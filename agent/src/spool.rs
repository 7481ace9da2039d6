//! The on-disk spool of everything the agent must deliver at least once: task events, task
//! results and configuration reports.
//!
//! A message is appended to the spool (one file per message in `<state_dir>/spool/`, named
//! by a monotonically increasing number, written to a temporary file, flushed and renamed)
//! before it is handed to the MQTT client, and removed only when the broker acknowledges it
//! (QoS 1 PUBACK). After a reconnect or an agent restart everything still in the spool is
//! sent again, oldest first; receivers de-duplicate (task events on `(task_id, seq)`).
//!
//! The spool is bounded by `spool_max_bytes`. When an append takes it over the bound, the
//! oldest `output` events go first, then the oldest other events; results (task results and
//! configuration reports) are never dropped. Drops are logged and counted.
//!
//! [`Outbox`] is the handle producers use (typed appends plus a wake-up for the event loop
//! owner); [`AckTracker`] maps the packet ids rumqttc assigns to spool entries so a PUBACK
//! removes the right file.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use hearth_protocol::{
    decode, encode, ApplianceId, ConfigApplied, EncodeError, Receipt, TaskEvent, TaskEventKind, TaskId, TaskResult,
    Topic, UpChannel,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tracing::{debug, warn};

use crate::state::{create_dir, sync_dir, write_atomic, StateError};

/// Mode of spool files (they may name users, hosts and failure messages).
pub const FILE_MODE: u32 = 0o600;

/// What kind of message a spool entry is; decides what is dropped first when full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// A task event of kind `output` (free text the run printed): dropped first.
    Output,
    /// Any other task event: dropped when no output events are left.
    Event,
    /// A task result or a configuration report: never dropped.
    Result,
}

/// A spool that cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool: {0}")]
    State(#[from] StateError),
    #[error("spool: {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("spool: cannot encode a message: {0}")]
    Encode(#[from] EncodeError),
    #[error("spool: a payload is not UTF-8 JSON")]
    NotUtf8,
}

/// One file's content.
#[derive(Serialize, Deserialize)]
struct SpoolFile {
    topic: String,
    class: Class,
    payload: String,
}

/// One spooled message.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its place in the spool: larger is newer.
    pub id: u64,
    /// A topic built by [`Topic`].
    pub topic: String,
    pub class: Class,
    /// The encoded payload.
    pub payload: Vec<u8>,
    /// Bytes it occupies on disk.
    pub size: u64,
    /// What a control plane receipt names it by.
    pub key: Option<ReceiptKey>,
}

/// How a [`Receipt`] names a spooled message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReceiptKey {
    Event(TaskId, u64),
    Result(TaskId),
    Config(u64),
}

impl ReceiptKey {
    /// The key of an up message, from its topic and payload.
    pub fn of(topic: &str, payload: &[u8]) -> Option<ReceiptKey> {
        let Ok(Topic { channel: hearth_protocol::Channel::Up(channel), .. }) = topic.parse::<Topic>() else {
            return None;
        };
        match channel {
            UpChannel::TaskEvent(_) => decode::<TaskEvent>(payload).ok().map(|e| ReceiptKey::Event(e.task_id, e.seq)),
            UpChannel::TaskResult(_) => decode::<TaskResult>(payload).ok().map(|r| ReceiptKey::Result(r.task_id)),
            UpChannel::ConfigApplied => decode::<ConfigApplied>(payload).ok().map(|r| ReceiptKey::Config(r.version)),
            _ => None,
        }
    }

    /// Every key a receipt names.
    pub fn all_in(receipt: &Receipt) -> HashSet<ReceiptKey> {
        let events = receipt.events.iter().map(|e| ReceiptKey::Event(e.task_id, e.seq));
        let results = receipt.results.iter().map(|t| ReceiptKey::Result(*t));
        let configs = receipt.config_applied.iter().map(|v| ReceiptKey::Config(*v));
        events.chain(results).chain(configs).collect()
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("id", &self.id)
            .field("topic", &self.topic)
            .field("class", &self.class)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// The spool directory and its in-memory index.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    entries: BTreeMap<u64, Entry>,
    next_id: u64,
    bytes: u64,
    dropped: u64,
}

fn file_name(id: u64) -> String {
    format!("{id:020}.json")
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io { path: path.to_path_buf(), source }
}

impl Spool {
    /// Opens (creating, mode 0700) the spool in `dir`. Leftover temporary files are removed;
    /// files that cannot be parsed are logged and removed (they can never be sent).
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, SpoolError> {
        create_dir(dir)?;
        let mut spool =
            Spool { dir: dir.to_path_buf(), max_bytes, entries: BTreeMap::new(), next_id: 1, bytes: 0, dropped: 0 };
        for item in fs::read_dir(dir).map_err(io_err(dir))? {
            let item = item.map_err(io_err(dir))?;
            let path = item.path();
            let name = item.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                // A temporary file from an append that did not finish.
                let _ = fs::remove_file(&path);
                continue;
            }
            let Some(id) = name.strip_suffix(".json").and_then(|n| n.parse::<u64>().ok()) else {
                warn!(file = %path.display(), "ignoring a file in the spool directory that is not a spool entry");
                continue;
            };
            match Self::read_entry(id, &path) {
                Ok(entry) => {
                    spool.next_id = spool.next_id.max(id.saturating_add(1));
                    spool.bytes += entry.size;
                    spool.entries.insert(id, entry);
                }
                Err(problem) => {
                    warn!(file = %path.display(), problem, "removing an unreadable spool entry");
                    let _ = fs::remove_file(&path);
                }
            }
        }
        spool.enforce_bound();
        Ok(spool)
    }

    fn read_entry(id: u64, path: &Path) -> Result<Entry, String> {
        let bytes = fs::read(path).map_err(|e| e.to_string())?;
        let file: SpoolFile = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        match file.topic.parse::<Topic>() {
            Ok(Topic { channel: hearth_protocol::Channel::Up(_), .. }) => {}
            _ => return Err("not an up topic".into()),
        }
        let key = ReceiptKey::of(&file.topic, file.payload.as_bytes());
        Ok(Entry {
            id,
            topic: file.topic,
            class: file.class,
            payload: file.payload.into_bytes(),
            size: bytes.len() as u64,
            key,
        })
    }

    /// Appends one message (durably: on disk before this returns) and applies the bound.
    /// Returns the new entry's id.
    pub fn append(&mut self, topic: &Topic, class: Class, payload: Vec<u8>) -> Result<u64, SpoolError> {
        let id = self.next_id;
        let file = SpoolFile {
            topic: topic.to_string(),
            class,
            payload: String::from_utf8(payload).map_err(|_| SpoolError::NotUtf8)?,
        };
        let bytes = serde_json::to_vec(&file).map_err(EncodeError::Json)?;
        write_atomic(&self.dir.join(file_name(id)), &bytes, FILE_MODE)?;
        sync_dir(&self.dir)?;
        self.next_id += 1;
        self.bytes += bytes.len() as u64;
        let key = ReceiptKey::of(&file.topic, file.payload.as_bytes());
        self.entries.insert(
            id,
            Entry { id, topic: file.topic, class, payload: file.payload.into_bytes(), size: bytes.len() as u64, key },
        );
        self.enforce_bound();
        Ok(id)
    }

    /// Removes every message `receipt` names (the control plane has stored them); returns
    /// their ids.
    pub fn remove_receipted(&mut self, receipt: &Receipt) -> Result<Vec<u64>, SpoolError> {
        let keys = ReceiptKey::all_in(receipt);
        let ids: Vec<u64> =
            self.entries.values().filter(|e| e.key.is_some_and(|k| keys.contains(&k))).map(|e| e.id).collect();
        for id in &ids {
            self.remove(*id)?;
        }
        Ok(ids)
    }

    /// Removes a delivered message. Removing one that is gone already is not an error.
    pub fn remove(&mut self, id: u64) -> Result<(), SpoolError> {
        let Some(entry) = self.entries.remove(&id) else {
            return Ok(());
        };
        self.bytes = self.bytes.saturating_sub(entry.size);
        let path = self.dir.join(file_name(id));
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Drops the oldest droppable entries until the spool fits its bound.
    fn enforce_bound(&mut self) {
        for class in [Class::Output, Class::Event] {
            while self.bytes > self.max_bytes {
                let Some(id) = self.entries.values().find(|e| e.class == class).map(|e| e.id) else {
                    break;
                };
                if let Err(e) = self.remove(id) {
                    warn!(error = %e, "cannot remove a spool entry while making room");
                    // It is gone from the index; its file will be re-read on restart.
                }
                self.dropped += 1;
                warn!(
                    id,
                    ?class,
                    dropped_total = self.dropped,
                    max_bytes = self.max_bytes,
                    "spool full: dropped the oldest message of its class"
                );
            }
        }
        if self.bytes > self.max_bytes {
            debug!(
                bytes = self.bytes,
                max_bytes = self.max_bytes,
                "spool over its bound with results only; results are never dropped"
            );
        }
    }

    /// The entries, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    pub fn get(&self, id: u64) -> Option<&Entry> {
        self.entries.get(&id)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Messages dropped to respect the bound since the spool was opened.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The producers' handle: typed appends to the shared spool, and a wake-up for the event
/// loop owner, who sends.
#[derive(Debug, Clone)]
pub struct Outbox {
    appliance: ApplianceId,
    spool: Arc<Mutex<Spool>>,
    wake: Arc<Notify>,
}

impl Outbox {
    pub fn new(appliance: ApplianceId, spool: Spool) -> Self {
        Self { appliance, spool: Arc::new(Mutex::new(spool)), wake: Arc::new(Notify::new()) }
    }

    /// The spool, locked. Hold it briefly: the event loop owner locks it too.
    pub fn lock(&self) -> MutexGuard<'_, Spool> {
        // A panic while holding the lock cannot leave the index inconsistent with the disk
        // in a way that matters (the disk is the truth on restart), so carry on.
        self.spool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves when something was appended since the last call.
    pub async fn appended(&self) {
        self.wake.notified().await
    }

    fn push(&self, channel: UpChannel, class: Class, payload: Vec<u8>) -> Result<u64, SpoolError> {
        let topic = Topic::new(self.appliance, channel);
        let id = self.lock().append(&topic, class, payload)?;
        self.wake.notify_one();
        Ok(id)
    }

    pub fn task_event(&self, event: &TaskEvent) -> Result<u64, SpoolError> {
        let class = if event.kind == TaskEventKind::Output { Class::Output } else { Class::Event };
        self.push(UpChannel::TaskEvent(event.task_id), class, encode(event)?)
    }

    pub fn task_result(&self, result: &TaskResult) -> Result<u64, SpoolError> {
        self.push(UpChannel::TaskResult(result.task_id), Class::Result, encode(result)?)
    }

    pub fn config_applied(&self, report: &ConfigApplied) -> Result<u64, SpoolError> {
        self.push(UpChannel::ConfigApplied, Class::Result, encode(report)?)
    }
}

/// Maps the QoS 1 publishes the event loop owner queued to the packet ids rumqttc gives
/// them, so that a PUBACK names the spool entry it confirms, and tracks entries the broker
/// has acknowledged while they wait for the control plane's [`Receipt`].
///
/// A PUBACK frees a place in the send window but does not remove the entry: only a receipt
/// does (the broker can acknowledge a message and still lose it, e.g. across a restart
/// before any control plane resubscribed). An entry without a receipt after the receipt
/// timeout is sent again.
///
/// rumqttc assigns packet ids as it takes requests off its channel, in order, and reports
/// each as `Outgoing::Publish(pkid)`. Every QoS 1 publish is queued by the event loop owner,
/// which records a tag for it here (a spool id, or `None` for other messages such as the
/// status); QoS 0 publishes report pkid 0 and are ignored. When a connection is lost the
/// owner drops rumqttc's queued publishes and calls [`reset`](Self::reset): the spool is
/// resent in full on the next connection.
#[derive(Debug, Default)]
pub struct AckTracker {
    /// Queued publishes not yet given a packet id, in order.
    tags: VecDeque<Option<u64>>,
    /// Packet id → spool id, for spool entries sent and not yet acknowledged.
    by_pkid: HashMap<u16, u64>,
    /// Spool ids queued on this connection and not yet acknowledged.
    queued: BTreeSet<u64>,
    /// Spool ids the broker acknowledged, waiting for a receipt since then.
    awaiting: HashMap<u64, tokio::time::Instant>,
}

impl AckTracker {
    /// A QoS 1 publish was handed to the client (`spool_id` if it came from the spool).
    pub fn queued(&mut self, spool_id: Option<u64>) {
        if let Some(id) = spool_id {
            self.queued.insert(id);
        }
        self.tags.push_back(spool_id);
    }

    /// rumqttc reports it put a publish with `pkid` on the wire.
    pub fn on_outgoing_publish(&mut self, pkid: u16) {
        if pkid == 0 {
            return; // QoS 0
        }
        match self.tags.pop_front() {
            Some(Some(id)) => {
                self.by_pkid.insert(pkid, id);
            }
            Some(None) => {}
            None => debug!(pkid, "an outgoing publish the agent did not queue"),
        }
    }

    /// The broker acknowledged `pkid`; returns the spool entry it confirms, if any.
    pub fn on_puback(&mut self, pkid: u16) -> Option<u64> {
        let id = self.by_pkid.remove(&pkid)?;
        self.queued.remove(&id);
        self.awaiting.insert(id, tokio::time::Instant::now());
        Some(id)
    }

    /// The control plane confirmed these entries; they are gone from the spool.
    pub fn receipted(&mut self, ids: &[u64]) {
        for id in ids {
            self.awaiting.remove(id);
            self.queued.remove(id);
        }
    }

    /// Forgets acknowledged entries whose receipt is overdue, so they are sent again.
    /// Returns how many.
    pub fn expire(&mut self, timeout: std::time::Duration) -> usize {
        let before = self.awaiting.len();
        self.awaiting.retain(|_, since| since.elapsed() < timeout);
        before - self.awaiting.len()
    }

    /// Whether `id` is on its way on this connection or waiting for its receipt.
    pub fn is_queued(&self, id: u64) -> bool {
        self.queued.contains(&id) || self.awaiting.contains_key(&id)
    }

    /// Spool entries queued and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.queued.len()
    }

    /// The connection is gone: nothing is on its way any more.
    pub fn reset(&mut self) {
        self.tags.clear();
        self.by_pkid.clear();
        self.queued.clear();
        self.awaiting.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic() -> Topic {
        Topic::new(ApplianceId::new(), UpChannel::TaskEvent(hearth_protocol::TaskId::new()))
    }

    #[test]
    fn tracker_maps_pkids_in_order_and_ignores_others() {
        let mut t = AckTracker::default();
        t.queued(None); // status
        t.queued(Some(7));
        t.queued(Some(8));
        assert_eq!(t.in_flight(), 2);
        t.on_outgoing_publish(0); // a heartbeat (QoS 0)
        t.on_outgoing_publish(1);
        t.on_outgoing_publish(2);
        t.on_outgoing_publish(3);
        assert_eq!(t.on_puback(1), None);
        assert_eq!(t.on_puback(3), Some(8));
        // Acknowledged by the broker: out of the window, but not sent again while it waits
        // for its receipt.
        assert_eq!(t.in_flight(), 1);
        assert!(t.is_queued(7) && t.is_queued(8));
        assert_eq!(t.on_puback(2), Some(7));
        assert_eq!(t.on_puback(2), None);
        t.receipted(&[8]);
        assert!(t.is_queued(7) && !t.is_queued(8));
        t.queued(Some(9));
        t.reset();
        assert_eq!(t.in_flight(), 0);
        assert!(!t.is_queued(7), "after a reconnect everything is sent again");
        t.on_outgoing_publish(4);
        assert_eq!(t.on_puback(4), None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_overdue_receipt_sends_the_entry_again() {
        let mut t = AckTracker::default();
        t.queued(Some(1));
        t.on_outgoing_publish(1);
        assert_eq!(t.on_puback(1), Some(1));
        tokio::time::advance(std::time::Duration::from_secs(5)).await;
        assert_eq!(t.expire(std::time::Duration::from_secs(10)), 0);
        assert!(t.is_queued(1));
        tokio::time::advance(std::time::Duration::from_secs(6)).await;
        assert_eq!(t.expire(std::time::Duration::from_secs(10)), 1);
        assert!(!t.is_queued(1));
    }

    #[test]
    fn receipts_remove_exactly_what_they_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        let appliance = ApplianceId::new();
        let task = hearth_protocol::TaskId::new();
        let event = |seq| TaskEvent {
            v: hearth_protocol::ProtocolVersion,
            task_id: task,
            seq,
            kind: TaskEventKind::TaskOk,
            task: None,
            message: "m".into(),
            at: time::OffsetDateTime::now_utc(),
        };
        for seq in 1..=3 {
            spool
                .append(&Topic::new(appliance, UpChannel::TaskEvent(task)), Class::Event, encode(&event(seq)).unwrap())
                .unwrap();
        }
        let receipt = Receipt {
            events: vec![
                hearth_protocol::EventRef { task_id: task, seq: 1 },
                hearth_protocol::EventRef { task_id: task, seq: 3 },
            ],
            ..Default::default()
        };
        assert_eq!(spool.remove_receipted(&receipt).unwrap().len(), 2);
        let left: Vec<_> = spool.iter().map(|e| e.key).collect();
        assert_eq!(left, [Some(ReceiptKey::Event(task, 2))]);
        // Survives a reopen with its key.
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(spool.iter().next().and_then(|e| e.key), Some(ReceiptKey::Event(task, 2)));
    }

    #[test]
    fn append_remove_and_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let t = topic();
        let mut s = Spool::open(tmp.path(), 1 << 20).unwrap();
        let a = s.append(&t, Class::Event, b"{\"a\":1}".to_vec()).unwrap();
        let b = s.append(&t, Class::Result, b"{\"b\":2}".to_vec()).unwrap();
        assert!(a < b);
        assert_eq!(s.len(), 2);
        s.remove(a).unwrap();
        s.remove(a).unwrap();
        drop(s);
        let mut s = Spool::open(tmp.path(), 1 << 20).unwrap();
        let ids: Vec<u64> = s.iter().map(|e| e.id).collect();
        assert_eq!(ids, [b]);
        assert_eq!(s.get(b).unwrap().payload, b"{\"b\":2}");
        let c = s.append(&t, Class::Event, b"{}".to_vec()).unwrap();
        assert!(c > b, "ids keep growing after a restart");
    }
}
