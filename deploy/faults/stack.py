"""The pieces of a fault run, each startable and stoppable on its own: a private PostgreSQL
cluster (initdb + pg_ctl), a TCP proxy in front of it that can add latency, a Mosquitto
broker with mutual TLS, control-plane replicas on the shared subscription, real agents
(supervised like systemd's Restart=always, optionally in a network namespace of their own)
and the fleet simulator. Nothing here touches the machine's own PostgreSQL or Mosquitto.
"""

import glob
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request

ANSI = re.compile(r"\x1b\[[0-9;]*m")
DB_NAME = "hearth"
OWNER = "hearth"
APP = "hearth_app"


def log(msg):
    print(f"faults: {msg}", flush=True, file=__import__("sys").stderr)


def wait_port(port, host="127.0.0.1", timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def port_free(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


class Postgres:
    """A PostgreSQL cluster of our own, run as the `postgres` system user."""

    def __init__(self, work, port):
        self.dir = os.path.join(work, "pg")
        self.data = os.path.join(self.dir, "data")
        self.sock = os.path.join(self.dir, "sock")
        self.port = port
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not bins:
            raise SystemExit("PostgreSQL server binaries are missing (apt-get install postgresql)")
        self.bin = os.path.dirname(bins[-1])
        self.log = os.path.join(self.dir, "postgres.log")

    def _as_pg(self, *args, **kw):
        return subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, **kw)

    def init(self):
        os.makedirs(self.sock, exist_ok=True)
        shutil.chown(self.dir, "postgres", "postgres")
        shutil.chown(self.sock, "postgres", "postgres")
        self._as_pg(os.path.join(self.bin, "initdb"), "-D", self.data, "-A", "trust", "-U", "postgres",
                    stdout=subprocess.DEVNULL)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(f"port = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.sock}'\n"
                    "max_connections = 200\n")

    def start(self):
        self._as_pg(os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-l", self.log, "-w", "start",
                    stdout=subprocess.DEVNULL)

    def stop(self, mode="fast"):
        self._as_pg(os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", mode, "-w", "stop",
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def running(self):
        return os.path.exists(os.path.join(self.data, "postmaster.pid"))

    def url(self, user="postgres", password=None, port=None):
        auth = user if password is None else f"{user}:{password}"
        return f"postgres://{auth}@127.0.0.1:{port or self.port}/{DB_NAME if user != 'postgres' else 'postgres'}"

    def psql(self, sql, db=DB_NAME):
        """Runs SQL as the superuser; returns stdout (tuples only, `|`-separated)."""
        r = subprocess.run(["psql", "-qXAt", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port),
                            "-U", "postgres", "-d", db, "-c", sql], check=True, capture_output=True, text=True)
        return r.stdout.strip()

    def query_json(self, sql):
        out = self.psql(f"SELECT coalesce(json_agg(q), '[]') FROM ({sql}) q")
        return json.loads(out or "[]")

    def setup_roles(self):
        # As deploy/quickstart.sh: the owner migrates, the control plane logs in as hearth_app.
        for stmt in [
            f"CREATE ROLE {OWNER} LOGIN PASSWORD 'hearth-dev'",
            f"CREATE ROLE {APP} LOGIN NOINHERIT PASSWORD 'hearth-app-dev'",
            "CREATE ROLE hearth_tenant NOLOGIN",
            "CREATE ROLE hearth_service NOLOGIN",
            f"GRANT hearth_tenant, hearth_service TO {OWNER}",
            f"GRANT hearth_tenant, hearth_service TO {APP}",
            f"CREATE DATABASE {DB_NAME} OWNER {OWNER}",
        ]:
            self.psql(stmt, db="postgres")


class DelayProxy:
    """TCP proxy in front of PostgreSQL: every chunk the client sends waits `delay` seconds
    before it goes on (statement latency, as a slow disk or a far database gives)."""

    def __init__(self, listen_port, upstream_port, listen_host="127.0.0.1"):
        self.listen_port = listen_port
        self.upstream_port = upstream_port
        self.delay = 0.0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((listen_host, listen_port))
        self.sock.listen(256)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
                u.settimeout(None)
            except OSError:
                c.close()
                continue
            threading.Thread(target=self._pipe, args=(c, u, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(u, c, False), daemon=True).start()

    def _pipe(self, src, dst, delayed):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if delayed and self.delay > 0:
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


class Forwarder(DelayProxy):
    """Plain TCP forwarder from ADDRESS:PORT (a veth's host end) to the broker on loopback:
    the broker listens on 127.0.0.1 only, a namespaced agent reaches it through this. It
    never cuts anything itself (its delay stays 0): a partition is the veth going down."""

    def __init__(self, listen_host, listen_port, upstream_port):
        super().__init__(listen_port, upstream_port, listen_host=listen_host)


class Broker:
    def __init__(self, bin_dir, work, pki, port, service_port):
        self.dir = os.path.join(work, "broker")
        self.port, self.service_port = port, service_port
        out = subprocess.run([os.path.join(bin_dir, "hearth-control-plane"), "broker-config", "--pki-dir", pki,
                              "--data-dir", self.dir, "--port", str(port), "--service-port", str(service_port),
                              "--persistence"], check=True, capture_output=True, text=True).stdout
        self.conf = [line.split("=", 1)[1] for line in out.splitlines() if line.startswith("mosquitto_conf=")][0]
        self.proc = None

    def start(self):
        mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([mosquitto, "-c", self.conf], stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.dir, "stderr.log"), "a"))
        if not (wait_port(self.port) and wait_port(self.service_port)):
            raise RuntimeError("mosquitto did not start (see broker/mosquitto.log)")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.proc = None


class ControlPlane:
    """One replica: its own client id and HTTPS port, the shared subscription group."""

    def __init__(self, name, bin_dir, work, env, api_port, ca):
        self.name, self.bin_dir, self.api_port, self.ca = name, bin_dir, api_port, ca
        self.env = dict(env, HEARTH_MQTT__CLIENT_ID=f"hearth-faults-{name}",
                        HEARTH_HTTP__LISTEN=f"127.0.0.1:{api_port}")
        self.log = os.path.join(work, f"control-plane-{name}.log")
        self.proc = None
        self.exits = []  # (time, returncode) of exits the harness did not cause
        self.killed = False

    def start(self, wait_ready=True):
        self.killed = False
        self.proc = subprocess.Popen([os.path.join(self.bin_dir, "hearth-control-plane"), "serve"], env=self.env,
                                     stdout=open(self.log, "a"), stderr=subprocess.STDOUT)
        if wait_ready:
            deadline = time.time() + 60
            while time.time() < deadline:
                if self.ready():
                    return
                if self.proc.poll() is not None:
                    raise RuntimeError(f"control plane {self.name} exited (see {self.log})")
                time.sleep(0.2)
            raise RuntimeError(f"control plane {self.name} not ready")

    def kill9(self):
        self.killed = True
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.killed = True
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def ready(self):
        return self.status("/readyz") == 200

    def status(self, path):
        ctx = ssl.create_default_context(cafile=self.ca)
        try:
            with urllib.request.urlopen(f"https://localhost:{self.api_port}{path}", context=ctx, timeout=3) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except (OSError, ValueError):
            return None


class Agent:
    """A real hearth-agent with real ansible-playbook in a sandbox root, restarted when it
    exits (as systemd does: the whole process group is killed first, so a playbook child
    does not outlive its agent). `netns`: run inside that network namespace."""

    def __init__(self, index, bin_dir, work, root, config, netns=None, faketime=None):
        self.index = index
        self.dir = os.path.join(work, "agents", str(index))
        self.state = os.path.join(self.dir, "state")
        self.config = config
        self.bin_dir, self.root = bin_dir, root
        self.netns = netns
        self.faketime = faketime
        self.log = os.path.join(self.dir, "agent.log")
        self.proc = None
        self.stopping = False
        self.starts = 0
        self.thread = None
        self.appliance_id = None

    def write_config(self, broker_port, heartbeat_s, keep_alive_s, spool_max_bytes=None):
        sandbox = os.path.join(self.dir, "sandbox")
        os.makedirs(sandbox, exist_ok=True)
        lines = [f'state_dir = "{self.state}"', f"heartbeat_interval_s = {heartbeat_s}",
                 f"keep_alive_s = {keep_alive_s}", 'broker_host = "localhost"', f"broker_port = {broker_port}",
                 f'ansible_dir = "{os.path.join(self.root, "ansible")}"', f'hearth_root = "{sandbox}"',
                 "manage_services = false", "backoff_initial_ms = 500", "backoff_max_ms = 5000"]
        if spool_max_bytes:
            lines.append(f"spool_max_bytes = {spool_max_bytes}")
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")

    def _cmd(self):
        cmd = [os.path.join(self.bin_dir, "hearth-agent"), "run", "--config", self.config]
        if self.faketime:
            cmd = ["faketime", "-f", self.faketime] + cmd
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns] + cmd
        return cmd

    def start(self):
        self.stopping = False
        self.thread = threading.Thread(target=self._supervise, daemon=True)
        self.thread.start()

    def _supervise(self):
        while not self.stopping:
            self.starts += 1
            with open(self.log, "a") as out:
                out.write(f"--- harness: agent start #{self.starts} at {time.time():.3f}\n")
                out.flush()
                env = dict(os.environ, RUST_LOG="info")
                self.proc = subprocess.Popen(self._cmd(), stdout=out, stderr=subprocess.STDOUT, env=env,
                                             start_new_session=True)
                self.proc.wait()
            # The unit's whole group goes when the main process does (systemd's KillMode).
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if not self.stopping:
                time.sleep(2)

    def kill9(self):
        """kill -9 of the agent process alone (its playbook child is left to the restart)."""
        pid = self.agent_pid()
        if pid:
            os.kill(pid, signal.SIGKILL)
        return pid

    def agent_pid(self):
        """The hearth-agent process (under `ip netns exec`/`faketime` when those wrap it)."""
        if not self.proc:
            return None
        try:
            out = subprocess.run(["pgrep", "-g", str(self.proc.pid), "-x", "hearth-agent"], capture_output=True,
                                 text=True).stdout.split()
        except OSError:
            return None
        return int(out[0]) if out else None

    def stop(self):
        self.stopping = True
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        if self.thread:
            self.thread.join(timeout=20)

    def log_text(self):
        """The agent's log without terminal colours."""
        try:
            with open(self.log, errors="replace") as f:
                return ANSI.sub("", f.read())
        except OSError:
            return ""

    def ledger(self):
        """The agent's own task records: {task_id: record}."""
        out = {}
        for p in glob.glob(os.path.join(self.state, "tasks", "*.json")):
            try:
                with open(p) as f:
                    r = json.load(f)
                out[r["task_id"]] = r
            except (OSError, ValueError, KeyError):
                out[os.path.basename(p)] = {"state": "unreadable"}
        return out


class Netns:
    """A network namespace joined to the host by a veth pair: the namespaced side is
    10.201.N.2, the host side 10.201.N.1; `localhost` inside resolves to the host side (the
    broker certificate's name), where a forwarder reaches the broker."""

    def __init__(self, index):
        self.name = f"hfaults{index}"
        self.host_if = f"hfv{index}h"
        self.ns_if = f"hfv{index}n"
        self.host_ip = f"10.201.{index}.1"
        self.ns_ip = f"10.201.{index}.2"
        self.etc = f"/etc/netns/{self.name}"

    def sh(self, *args):
        subprocess.run(list(args), check=True)

    def create(self):
        self.destroy()
        self.sh("ip", "netns", "add", self.name)
        self.sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        self.sh("ip", "link", "set", self.ns_if, "netns", self.name)
        self.sh("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.host_if)
        self.sh("ip", "link", "set", self.host_if, "up")
        self.sh("ip", "netns", "exec", self.name, "ip", "addr", "add", f"{self.ns_ip}/24", "dev", self.ns_if)
        self.sh("ip", "netns", "exec", self.name, "ip", "link", "set", self.ns_if, "up")
        self.sh("ip", "netns", "exec", self.name, "ip", "link", "set", "lo", "up")
        os.makedirs(self.etc, exist_ok=True)
        with open(os.path.join(self.etc, "hosts"), "w") as f:
            f.write(f"{self.host_ip} localhost\n")

    def cut(self):
        """Both ends down: every packet is dropped, no RST, no FIN (a dead uplink)."""
        self.sh("ip", "netns", "exec", self.name, "ip", "link", "set", self.ns_if, "down")
        self.sh("ip", "link", "set", self.host_if, "down")

    def heal(self):
        self.sh("ip", "link", "set", self.host_if, "up")
        self.sh("ip", "netns", "exec", self.name, "ip", "link", "set", self.ns_if, "up")

    def destroy(self):
        subprocess.run(["ip", "netns", "del", self.name], stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "link", "del", self.host_if], stderr=subprocess.DEVNULL)
        shutil.rmtree(self.etc, ignore_errors=True)


class FleetSim:
    def __init__(self, bin_dir, work, bundle, port, heartbeat_s, keep_alive_s, ramp):
        self.cmd = [os.path.join(bin_dir, "hearth-fleet-sim"), "run", "--bundle", bundle, "--host", "127.0.0.1",
                    "--port", str(port), "--heartbeat-interval-s", str(heartbeat_s), "--keep-alive-s",
                    str(keep_alive_s), "--ramp", str(ramp), "--backoff-max-ms", "5000", "--progress-every", "0",
                    "--timeline", os.path.join(work, "sim-timeline.jsonl")]
        self.out = os.path.join(work, "sim.json")
        self.log = os.path.join(work, "sim.log")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(self.cmd, stdout=open(self.out, "a"), stderr=open(self.log, "a"))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
