//! Fixtures: an ansible directory with a small catalog and playbooks, a worker built on
//! it, and helpers to read what the worker put in the spool.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hearth_agent::desired::{AppliedStore, Desired};
use hearth_agent::runner::Runner;
use hearth_agent::spool::{Outbox, Spool};
use hearth_agent::tasks::ledger::Ledger;
use hearth_agent::tasks::Worker;
use hearth_protocol::catalog::{Catalog, Policy};
use hearth_protocol::{ApplianceId, ProtocolVersion, TaskDispatch, TaskId, Topic, UpChannel, UpMessage};
use serde_json::Value;
use tempfile::TempDir;
use time::OffsetDateTime;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/fixture");
const REAL_CALLBACK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../ansible/callback_plugins/hearth_events.py");

/// The tests that run the slow playbook take turns. Each fixture's slow playbook also sleeps
/// for its own odd duration ([`Fixture::slow_command`]), so no other process on the machine
/// (another test binary, another checkout's tests) can be mistaken for its leftover.
pub static SLOW: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Fails the test unless `ansible-playbook` can be run.
pub fn require_ansible() {
    let out = std::process::Command::new("ansible-playbook")
        .arg("--version")
        .output()
        .expect("ansible-playbook must be installed (apt-get install ansible-core)");
    assert!(out.status.success(), "ansible-playbook --version failed");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A temporary ansible directory (the fixture's playbooks with the real `hearth_events`
/// callback), a sandbox root and a state directory.
#[derive(Debug)]
pub struct Fixture {
    pub tmp: TempDir,
    pub ansible: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    pub appliance: ApplianceId,
    /// The exact command line of this fixture's slow playbook (`sleep 120.<unique>`).
    pub slow_command: String,
}

impl Fixture {
    pub fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let ansible = tmp.path().join("ansible");
        copy_dir(Path::new(FIXTURE), &ansible);
        std::fs::create_dir_all(ansible.join("callback_plugins")).unwrap();
        std::fs::copy(REAL_CALLBACK, ansible.join("callback_plugins/hearth_events.py"))
            .expect("the real callback plugin, ansible/callback_plugins/hearth_events.py");
        let local_tmp = tmp.path().join("ansible-tmp");
        std::fs::create_dir_all(&local_tmp).unwrap();
        std::fs::write(
            ansible.join("ansible.cfg"),
            format!(
                "[defaults]\nstdout_callback = hearth_events\ncallback_plugins = {}\n\
                 localhost_warning = False\nretry_files_enabled = False\nlocal_tmp = {}\n\
                 interpreter_python = auto_silent\n",
                ansible.join("callback_plugins").display(),
                local_tmp.display()
            ),
        )
        .unwrap();
        let root = tmp.path().join("root");
        let state = tmp.path().join("state");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&state).unwrap();
        let slow_command = format!("sleep 120.{:06}", rand::random::<u32>() % 1_000_000);
        let slow = ansible.join("playbooks/slow.yml");
        let playbook = std::fs::read_to_string(&slow).expect("fixture slow.yml");
        assert!(playbook.contains("sleep 120"), "the fixture's slow playbook runs `sleep 120`");
        std::fs::write(&slow, playbook.replace("sleep 120", &slow_command)).unwrap();
        Fixture { tmp, ansible, root, state, appliance: ApplianceId::new(), slow_command }
    }

    pub fn catalog(&self) -> Catalog {
        Catalog::from_json(&std::fs::read(self.ansible.join("catalog.json")).unwrap()).unwrap()
    }

    pub fn runner(&self) -> Runner {
        Runner {
            ansible_playbook: PathBuf::from("ansible-playbook"),
            ansible_dir: self.ansible.clone(),
            hearth_root: self.root.clone(),
            manage_services: false,
        }
    }

    /// A worker on this fixture's directories (a fresh one sees what an earlier one left,
    /// like a restarted agent).
    pub fn worker(&self) -> Worker {
        let catalog = self.catalog();
        let policy = Policy::with_local_domains(catalog.local_domains.clone());
        Worker {
            catalog,
            policy,
            runner: self.runner(),
            ledger: Ledger::open(&self.state.join("tasks")).unwrap(),
            outbox: Outbox::new(self.appliance, Spool::open(&self.state.join("spool"), 1 << 20).unwrap()),
            desired: Desired::load(AppliedStore::open(&self.state.join("config")).unwrap(), Duration::from_secs(30)),
            task_timeout: Duration::from_secs(600),
            updater: None,
        }
    }

    /// How many times `test.write` ran (lines in `out/runs.txt`).
    pub fn runs(&self) -> Vec<String> {
        std::fs::read_to_string(self.root.join("out/runs.txt"))
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }
}

pub fn dispatch(action: &str, params: Value, deadline_in: Duration) -> TaskDispatch {
    TaskDispatch {
        v: ProtocolVersion,
        task_id: TaskId::new(),
        action: action.into(),
        params: params.as_object().cloned().unwrap_or_default(),
        deadline: OffsetDateTime::now_utc() + deadline_in,
    }
}

/// Everything in the spool, decoded, oldest first.
pub fn spooled(outbox: &Outbox) -> Vec<UpMessage> {
    outbox
        .lock()
        .iter()
        .map(|e| {
            let topic: Topic = e.topic.parse().unwrap();
            let hearth_protocol::Channel::Up(channel) = topic.channel else {
                panic!("a down topic in the spool: {}", e.topic)
            };
            UpMessage::decode(channel, &e.payload).unwrap()
        })
        .collect()
}

/// Empties the spool (as if everything was acknowledged).
pub fn ack_all(outbox: &Outbox) {
    let mut spool = outbox.lock();
    let ids: Vec<u64> = spool.iter().map(|e| e.id).collect();
    for id in ids {
        spool.remove(id).unwrap();
    }
}

/// The channel a spooled message goes to (for topic checks).
pub fn channels(outbox: &Outbox) -> Vec<UpChannel> {
    outbox
        .lock()
        .iter()
        .map(|e| match e.topic.parse::<Topic>().unwrap().channel {
            hearth_protocol::Channel::Up(c) => c,
            other => panic!("{other:?}"),
        })
        .collect()
}
