//! A real Mosquitto per test, on free ports, running the configuration shipped in
//! `deploy/mosquitto/` as rendered by `broker_config::render`: `port` is the public
//! listener (appliances), `service_port` the internal one (the control plane).

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hearth_control_plane::broker_config::{render, BrokerConfig};
use tempfile::TempDir;

use super::Pki;

pub struct Broker {
    pub port: u16,
    pub service_port: u16,
    child: Child,
    conf: std::path::PathBuf,
    pub data: TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

impl Broker {
    /// Starts Mosquitto; fails the test (never skips) if it is not installed or cannot start.
    pub fn start(pki: &Pki) -> Broker {
        Self::start_with(pki, false)
    }

    /// With `persistence`, sessions and queued QoS 1 messages survive [`Broker::restart`].
    pub fn start_with(pki: &Pki, persistence: bool) -> Broker {
        let data = tempfile::tempdir().expect("tempdir");
        let (port, service_port) = (free_port(), free_port());
        let conf = render(&BrokerConfig {
            pki_dir: pki.dir.path().to_owned(),
            data_dir: data.path().to_owned(),
            bind: "127.0.0.1".into(),
            port,
            service_bind: "127.0.0.1".into(),
            service_port,
            run_as: hearth_control_plane::broker_config::current_user(),
            persistence,
            crl_file: None,
        })
        .expect("render broker config");
        let child = spawn(&conf);
        let mut broker = Broker { port, service_port, child, conf, data };
        broker.wait_ready();
        broker
    }

    /// Stops the broker as an operator would (SIGTERM: it saves its state).
    pub fn stop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }

    /// Starts it again after [`Broker::stop`], same port and files.
    pub fn start_again(&mut self) {
        self.child = spawn(&self.conf);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("mosquitto exited with {status}; log:\n{}", self.log());
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && TcpStream::connect(("127.0.0.1", self.service_port)).is_ok()
            {
                return;
            }
            if Instant::now() > deadline {
                panic!("mosquitto did not listen on {} within 10 s; log:\n{}", self.port, self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What `pki.crl_reload_command` runs for this broker: SIGHUP, as for a packaged one.
    pub fn reload_command(&self) -> String {
        format!("kill -HUP {}", self.child.id())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(conf: &std::path::Path) -> Child {
    Command::new(mosquitto_bin())
        .arg("-c")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto must be installed (apt-get install mosquitto); .ci/run installs it")
}

fn mosquitto_bin() -> String {
    std::env::var("HEARTH_TEST_MOSQUITTO").unwrap_or_else(|_| {
        for p in ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"] {
            if std::path::Path::new(p).exists() {
                return p.to_string();
            }
        }
        "mosquitto".to_string()
    })
}
