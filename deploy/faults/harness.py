"""Hearth's fault-injection suite (see deploy/faults/run.sh --help and RELIABILITY.md).

One run: a private PostgreSQL, a TLS broker, two control-plane replicas on the shared
subscription, real agents and the fleet simulator; load throughout (heartbeats, tasks,
configuration changes, support-chat posts, reads); then each scenario in turn: inject one
fault, heal it, wait for recovery, check the invariants from PostgreSQL and the agents' own
records. Prints a table and one JSON line last; exits 1 if any invariant failed.
"""

import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stack import (APP, OWNER, Agent, Broker, ControlPlane, DelayProxy, FleetSim, Forwarder, Netns,  # noqa: E402
                   Postgres, log, port_free)

FINAL = ("succeeded", "failed", "timed_out", "rejected", "cancelled")
RUNNING_RE = re.compile(r"running task task=([0-9a-f-]{36})")


class Api:
    """The load generator's HTTP client: round robin over the replicas, and like an ingress
    that retries a request the upstream never accepted (connection refused) on the next
    one. Every request is recorded (time, status or error, latency)."""

    def __init__(self, ports, ca, key):
        self.ports = ports
        self.ctx = ssl.create_default_context(cafile=ca)
        self.key = key
        self.rr = 0
        self.lock = threading.Lock()
        self.records = []  # (t_start, ok, latency_s, status, kind)

    def _once(self, port, method, path, body):
        conn = http.client.HTTPSConnection("localhost", port, context=self.ctx, timeout=35)
        try:
            headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
            conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
            r = conn.getresponse()
            data = r.read()
            return r.status, data
        finally:
            conn.close()

    def call(self, method, path, body=None, kind="read"):
        with self.lock:
            self.rr += 1
            order = self.ports[self.rr % len(self.ports):] + self.ports[:self.rr % len(self.ports)]
        t0 = time.time()
        status, data = None, b""
        for port in order:
            try:
                status, data = self._once(port, method, path, body)
                break
            except ConnectionRefusedError:
                continue  # never reached a replica: the ingress tries the next one
            except OSError as e:
                status, data = None, str(e).encode()
                break
        dt = time.time() - t0
        ok = status is not None and status < 500 and status != 429
        with self.lock:
            self.records.append((t0, ok, dt, status, kind))
        try:
            return status, json.loads(data) if data else None
        except ValueError:
            return status, None


class Load(threading.Thread):
    """Tasks on simulated and real appliances, configuration changes, chat posts, reads."""

    def __init__(self, api, sim_ids, agent_ids, rates):
        super().__init__(daemon=True)
        self.api, self.sim_ids, self.agent_ids, self.rates = api, sim_ids, agent_ids, rates
        self.stop_flag = threading.Event()
        self.tasks = []  # (created_t, task_id, appliance_id)
        self.tasks_lock = threading.Lock()
        self.n = 0
        self.paused_agents = set()  # real agents a scenario drives itself
        self.conversation = None

    def task(self, appliance, kind="task"):
        self.n += 1
        n = self.n
        body = {"action": "dns.record.add",
                "params": {"hostname": f"f{n}.home", "ip": f"192.168.{(n // 250) % 250 + 1}.{n % 250 + 1}"}}
        status, resp = self.api.call("POST", f"/api/v1/appliances/{appliance}/tasks", body, kind=kind)
        if status == 202 and resp and "id" in resp:
            with self.tasks_lock:
                self.tasks.append((time.time(), resp["id"], appliance))
            return resp["id"]
        return None

    def config(self, appliance):
        self.n += 1
        doc = {"document": {"dns": {"forwarders": [f"9.9.{(self.n // 250) % 250}.{self.n % 250 + 1}"]}}}
        self.api.call("PUT", f"/api/v1/appliances/{appliance}/config", doc, kind="config")

    def chat(self, appliance):
        if self.conversation is None:
            status, resp = self.api.call("POST", "/api/v1/support/conversations", {"appliance_id": appliance},
                                         kind="chat")
            if status == 201 and resp:
                self.conversation = resp["id"]
            return
        status, _ = self.api.call("POST", f"/api/v1/support/conversations/{self.conversation}/messages",
                                  {"text": "please add a DNS record nas.home for 192.168.1.20"}, kind="chat")
        if status == 409:  # the conversation is full: a new one
            self.conversation = None

    def run(self):
        due = {k: time.time() for k in self.rates}
        while not self.stop_flag.is_set():
            now = time.time()
            for k, every in self.rates.items():
                if now < due[k]:
                    continue
                due[k] = now + every
                try:
                    if k == "sim_task":
                        self.task(random.choice(self.sim_ids))
                    elif k == "agent_task":
                        free = [a for a in self.agent_ids if a not in self.paused_agents]
                        if free:
                            self.task(random.choice(free))
                    elif k == "sim_config":
                        self.config(random.choice(self.sim_ids))
                    elif k == "agent_config":
                        free = [a for a in self.agent_ids if a not in self.paused_agents]
                        if free:
                            self.config(random.choice(free))
                    elif k == "chat":
                        self.chat(random.choice(self.sim_ids))
                    elif k == "read":
                        self.api.call("GET", f"/api/v1/appliances/{random.choice(self.sim_ids)}")
                except Exception as e:  # the load goes on whatever one request did
                    log(f"load: {k}: {e}")
            time.sleep(0.05)

    def tasks_between(self, t0, t1):
        with self.tasks_lock:
            return [(t, i, a) for (t, i, a) in self.tasks if t0 <= t < t1]


def percentile(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class Run:
    def __init__(self, args):
        self.a = args
        self.root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
        profile = os.environ.get("HEARTH_BUILD_PROFILE", "dev")
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(self.root, "target"))
        self.bin = os.path.join(target, "debug" if profile == "dev" else profile)
        self.work = tempfile.mkdtemp(prefix="hearth-faults.")
        os.chmod(self.work, 0o755)
        b = args.port_base
        self.ports = dict(pg=b, pgproxy=b + 1, mqtt=b + 2, mqtt_svc=b + 3, api_a=b + 4, api_b=b + 5, fwd=b + 10)
        for name, p in self.ports.items():
            if not port_free(p):
                raise SystemExit(f"port {p} ({name}) is in use; pass --port-base")
        self.results = []
        self.netns = []
        self.mounts = []
        self.agents = []
        self.cps = []
        self.broker = None
        self.sim = None
        self.pg = None
        self.load = None

    # ---- the stack

    def cli(self, *args, env=None, stdin=None):
        r = subprocess.run([os.path.join(self.bin, "hearth-control-plane"), *args], env=env or self.env,
                           capture_output=True, text=True, input=stdin)
        if r.returncode != 0:
            raise RuntimeError(f"hearth-control-plane {' '.join(args)}: {r.stderr.strip()[-500:]}")
        return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)

    def up(self):
        a = self.a
        t0 = time.time()
        log(f"work directory {self.work}")
        self.pg = Postgres(self.work, self.ports["pg"])
        self.pg.init()
        self.pg.start()
        self.pg.setup_roles()
        self.proxy = DelayProxy(self.ports["pgproxy"], self.ports["pg"])
        pki = os.path.join(self.work, "pki")
        owner_url = f"postgres://{OWNER}:hearth-dev@127.0.0.1:{self.ports['pg']}/hearth"
        self.env = dict(os.environ, HEARTH_PKI__DIR=pki, HEARTH_MQTT__HOST="localhost",
                        HEARTH_MQTT__PORT=str(self.ports["mqtt_svc"]), HEARTH_MQTT__PUBLIC_PORT=str(self.ports["mqtt"]),
                        HEARTH_DATABASE__URL=f"postgres://{APP}:hearth-app-dev@127.0.0.1:{self.ports['pgproxy']}/hearth",
                        HEARTH_PRESENCE__OFFLINE_AFTER_S=str(a.offline_after),
                        HEARTH_PRESENCE__SWEEP_INTERVAL_S=str(a.sweep),
                        HEARTH_LIMITS__API_PER_MINUTE="100000", HEARTH_LIMITS__API_BURST="10000",
                        HEARTH_LIMITS__ASSISTANT_PER_HOUR="100000", HEARTH_LIMITS__ASSISTANT_BURST="10000",
                        HEARTH_LIMITS__MQTT_PER_MINUTE="100000", HEARTH_LIMITS__MQTT_BURST="10000",
                        HEARTH_SECRETS__KEY=__import__("base64").b64encode(os.urandom(32)).decode(),
                        RUST_LOG="info")
        self.env.pop("HEARTH_ASSISTANT__OLLAMA_URL", None)
        self.cli("migrate", env=dict(self.env, HEARTH_DATABASE__URL=owner_url))
        self.cli("pki", "init", "--dir", pki)
        self.ca = os.path.join(pki, "ca.crt")
        self.broker = Broker(self.bin, self.work, pki, self.ports["mqtt"], self.ports["mqtt_svc"])
        self.broker.start()
        for name, port in (("a", self.ports["api_a"]), ("b", self.ports["api_b"])):
            cp = ControlPlane(name, self.bin, self.work, self.env, port, self.ca)
            cp.start()
            self.cps.append(cp)
        # The fleet: one tenant, simulated appliances from a bundle, real agents enrolled.
        bundle = os.path.join(self.work, "bundle.json")
        self.cli("appliance", "bulk-create", "--out", bundle, "--tenants", "1", "--count", str(a.appliances),
                 "--prefix", "faults")
        with open(bundle) as f:
            b = json.load(f)
        self.tenant = b["tenants"][0]["id"]
        key = b["tenants"][0]["api_key"]
        self.sim_ids = [x["id"] for x in b["appliances"]]
        for i in range(a.agents):
            out = self.cli("appliance", "create", "--tenant", self.tenant, f"faults-agent-{i}")
            netns = None
            port = self.ports["mqtt"]
            if i == 0:  # the one a partition cuts off
                ns = Netns(self.ports["pg"] % 200 + 1)
                ns.create()
                self.netns.append(ns)
                Forwarder(ns.host_ip, self.ports["fwd"], self.ports["mqtt"])
                netns, port = ns.name, self.ports["fwd"]
            agent = Agent(i, self.bin, self.work, self.root, os.path.join(self.work, "agents", str(i), "agent.toml"),
                          netns=netns)
            os.makedirs(agent.dir, exist_ok=True)
            subprocess.run([os.path.join(self.bin, "hearth-agent"), "enroll", "--server",
                            f"https://localhost:{self.ports['api_a']}", "--token", out["enrollment_token"],
                            "--ca-file", self.ca, "--state-dir", agent.state], check=True, capture_output=True)
            agent.appliance_id = out["appliance_id"]
            if i == a.agents - 1:  # its spool on a small file system of its own (disk-full)
                agent.spool_mount = os.path.join(agent.state, "spool")
                os.makedirs(agent.spool_mount, exist_ok=True)
                subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(a.spool_fs_kib)}k", "tmpfs",
                                agent.spool_mount], check=True)
                self.mounts.append(agent.spool_mount)
            agent.write_config(port, a.heartbeat, a.keep_alive)
            agent.start()
            self.agents.append(agent)
        self.sim = FleetSim(self.bin, self.work, bundle, self.ports["mqtt"], a.heartbeat, a.keep_alive, a.ramp)
        self.sim.start()
        self.all_ids = self.sim_ids + [ag.appliance_id for ag in self.agents]
        n = len(self.all_ids)
        deadline = time.time() + 120 + n / a.ramp
        while time.time() < deadline:
            online = int(self.pg.psql("SELECT count(*) FROM appliances WHERE status = 'online'"))
            if online >= n:
                break
            time.sleep(1)
        else:
            raise RuntimeError(f"only {online} of {n} appliances came online")
        self.api = Api([self.ports["api_a"], self.ports["api_b"]], self.ca, key)
        rates = dict(sim_task=1 / a.task_rate, agent_task=a.agent_task_every, sim_config=a.config_every,
                     agent_config=a.agent_config_every, chat=a.chat_every, read=1 / a.read_rate)
        self.load = Load(self.api, self.sim_ids, [ag.appliance_id for ag in self.agents], rates)
        self.load.start()
        log(f"stack up in {time.time() - t0:.0f} s: {n} appliances ({a.agents} real agents) online, load running")

    def down(self):
        if self.load:
            self.load.stop_flag.set()
        for ag in self.agents:
            ag.stop()
        if self.sim:
            self.sim.stop()
        for cp in self.cps:
            cp.stop()
        if self.broker:
            self.broker.stop()
        for ns in self.netns:
            ns.destroy()
        for m in self.mounts:
            subprocess.run(["umount", "-l", m], stderr=subprocess.DEVNULL)
        if self.pg and self.pg.running():
            try:
                self.pg.stop("immediate")
            except subprocess.CalledProcessError:
                pass
        if self.a.keep:
            log(f"kept {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    # ---- waiting and checking

    def open_tasks(self, ids):
        if not ids:
            return []
        rows = self.pg.query_json(
            "SELECT id, status FROM tasks WHERE id = ANY('{%s}'::uuid[]) AND status NOT IN ('%s')"
            % (",".join(ids), "','".join(FINAL)))
        return rows

    def recover(self, ids, t_heal, timeout):
        """Waits until every task in `ids` is final, every appliance online, configuration
        converged and both replicas ready; returns the seconds each took after `t_heal`."""
        done = {}
        # Configuration changes go on during recovery: converged means every appliance
        # applied at least what was desired when the fault was healed.
        want = {r["appliance_id"]: r["desired_version"] for r in self.pg.query_json(
            "SELECT appliance_id, desired_version FROM appliance_config")}
        deadline = time.time() + timeout
        while time.time() < deadline:
            now = time.time() - t_heal
            if "tasks" not in done and not self.open_tasks(ids):
                done["tasks"] = now
            if "presence" not in done:
                off = int(self.pg.psql("SELECT count(*) FROM appliances WHERE status <> 'online'"))
                if off == 0:
                    done["presence"] = now
            if "config" not in done:
                applied = {r["appliance_id"]: r["applied_version"] or 0 for r in self.pg.query_json(
                    "SELECT appliance_id, applied_version FROM appliance_config")}
                if all(applied.get(k, 0) >= v for k, v in want.items()):
                    done["config"] = now
            if "ready" not in done and all(cp.ready() for cp in self.cps):
                done["ready"] = now
            if len(done) == 4:
                break
            time.sleep(0.5)
        return done

    def check(self, name, ids, t_inject, t_heal, t_end, expected_offline, expected_failed, expected_incomplete):
        """The invariants over the scenario's tasks and window; returns (figures, failures)."""
        failures = []
        idlist = ",".join(ids) or "00000000-0000-0000-0000-000000000000"
        rows = self.pg.query_json(f"""
            SELECT t.id, t.appliance_id, t.status, t.message, t.events_expected,
                   (SELECT count(*) FROM task_events e WHERE e.task_id = t.id) AS events,
                   (SELECT coalesce(max(seq), 0) FROM task_events e WHERE e.task_id = t.id) AS max_seq
            FROM tasks t WHERE t.id = ANY('{{{idlist}}}'::uuid[])""")
        by_id = {r["id"]: r for r in rows}
        lost = [i for i in ids if i not in by_id or by_id[i]["status"] not in FINAL]
        timed_out = [r["id"] for r in rows if r["status"] == "timed_out"]
        # A result stored with its events: at least as many as it announced (log_complete;
        # a task the agent finished after a restart announces 0, though its `received` event
        # went out before), seq 1..n with no gap; the primary key (task, seq) stores each once.
        incomplete = [r["id"] for r in rows if r["status"] in ("succeeded", "failed")
                      and (r["events_expected"] is None or r["events"] < r["events_expected"]
                           or r["max_seq"] != r["events"])]
        if lost:
            failures.append(f"{len(lost)} tasks not final: {lost[:3]}")
        if timed_out:
            failures.append(f"{len(timed_out)} tasks timed out: {timed_out[:3]}")
        failed = [r for r in rows if r["status"] in ("failed", "rejected") and r["id"] not in expected_failed]
        if failed:
            failures.append(f"{len(failed)} tasks failed: " + "; ".join(f"{r['id']}: {r['message']}" for r in failed[:3]))
        unexpected = [i for i in incomplete if i not in expected_incomplete]
        if unexpected:
            failures.append(f"{len(unexpected)} results without all their events: {unexpected[:3]}")
        # The agents' own records: each task at most one `running task`, and a done record.
        ran_twice = []
        unrecorded = []
        real = {ag.appliance_id: ag for ag in self.agents}
        runs = {}
        for ag in self.agents:
            for tid in RUNNING_RE.findall(ag.log_text()):
                runs[tid] = runs.get(tid, 0) + 1
        ledgers = {ag.appliance_id: ag.ledger() for ag in self.agents}
        for r in rows:
            if r["appliance_id"] in real and r["status"] in ("succeeded", "failed"):
                if runs.get(r["id"], 0) > 1:
                    ran_twice.append(r["id"])
                rec = ledgers[r["appliance_id"]].get(r["id"])
                if not rec or rec.get("state") != "done":
                    unrecorded.append(r["id"])
        if ran_twice:
            failures.append(f"{len(ran_twice)} tasks ran twice on an appliance: {ran_twice[:3]}")
        if unrecorded:
            failures.append(f"{len(unrecorded)} finished tasks without a done record on the agent: {unrecorded[:3]}")
        # Presence: offline transitions in the window only for appliances the fault cut off.
        ev = self.pg.query_json(f"""
            SELECT appliance_id, status, reason FROM presence_events
            WHERE at >= to_timestamp({t_inject}) AND at <= to_timestamp({t_end})""")
        offline = {e["appliance_id"] for e in ev if e["status"] == "offline"}
        phantom = sorted(offline - set(expected_offline)) if expected_offline != "all" else []
        if phantom:
            failures.append(f"{len(phantom)} phantom offline transitions (appliances never cut off): {phantom[:3]}")
        # Nothing exited that the harness did not stop.
        for cp in self.cps:
            if not cp.killed and not cp.alive():
                failures.append(f"control plane {cp.name} exited on its own")
        # The API during the fault.
        recs = [r for r in self.api.records if t_inject <= r[0] <= t_heal]
        errors = sum(1 for r in recs if not r[1])
        lat = [r[2] for r in recs]
        figures = dict(tasks=len(ids), agent_tasks=sum(1 for r in rows if r["appliance_id"] in real),
                       lost=len(lost), ran_twice=len(ran_twice), timed_out=len(timed_out),
                       incomplete=len(incomplete), failed=len(failed), offline_transitions=len(offline), phantom=len(phantom),
                       api_requests=len(recs), api_errors=errors,
                       api_error_pct=round(100 * errors / len(recs), 2) if recs else None,
                       api_p99_ms=round(1000 * percentile(lat, 99)) if lat else None)
        return figures, failures

    # ---- scenarios

    def scenario(self, name, injected, inject, heal, expected_offline=(), agent_task_ids=None, extra=None):
        a = self.a
        log(f"{name}: {injected}")
        t_start = time.time()
        time.sleep(a.before)
        t_inject = time.time()
        ctx = inject() or {}
        t_heal_start = time.time()
        heal(ctx)
        t_heal = time.time()
        ids = list(dict.fromkeys([i for (_, i, _) in self.load.tasks_between(t_start, t_heal)]
                                 + list(ctx.get("task_ids", []))))
        done = self.recover(ids, t_heal, a.recover_timeout)
        time.sleep(a.settle)  # flapping after recovery counts too
        t_end = time.time()
        figures, failures = self.check(name, ids, t_inject, t_heal, t_end,
                                       "all" if expected_offline == "all" else set(expected_offline),
                                       set(ctx.get("expected_failed", [])),
                                       set(ctx.get("expected_incomplete", [])))
        for k in ("tasks", "presence", "config", "ready"):
            if k not in done:
                failures.append(f"{k} did not recover within {a.recover_timeout} s")
        # A heartbeat interval plus a sweep, plus the reconnect backoff's ceiling (5 s here)
        # where the fault dropped connections.
        bound = a.heartbeat + a.sweep + (5 if expected_offline else 0)
        if "presence" in done and done["presence"] > bound:
            failures.append(f"presence right only {done['presence']:.1f} s after healing (bound {bound:g} s)")
        figures.update(fault_s=round(t_heal - t_inject, 1), heal_s=round(t_heal - t_heal_start, 1),
                       recovery_s=round(max(done.values()), 1) if len(done) == 4 else None,
                       recovered={k: round(v, 1) for k, v in done.items()}, presence_bound_s=bound)
        if extra:
            f2 = extra(ctx, figures)
            failures += f2
        self.results.append(dict(scenario=name, injected=injected, ok=not failures, failures=failures, **figures))
        log(f"{name}: {'ok' if not failures else 'FAILED: ' + '; '.join(failures)} {json.dumps(figures)}")

    def s_replica_kill(self):
        a = self.a

        def inject():
            self.cps[0].kill9()
            time.sleep(a.fault)

        def heal(_):
            self.cps[0].start()
        self.scenario("replica-kill", f"kill -9 of replica a under load, {a.fault:g} s, started again",
                      inject, heal)

    def s_replicas_kill_both(self):
        a = self.a

        def inject():
            for cp in self.cps:
                cp.kill9()
            time.sleep(a.fault)

        def heal(_):
            for cp in self.cps:
                cp.start()
        self.scenario("replicas-kill-both", f"kill -9 of both replicas, {a.fault:g} s, both started again",
                      inject, heal)

    def _pg_outage(self, seconds):
        def inject():
            self.pg.stop("immediate")
            unready, exited = self._watch(seconds)
            return dict(unready=unready, exited=exited)

        def heal(_):
            self.pg.start()

        def extra(ctx, figures):
            figures["readyz_unready"] = ctx["unready"]
            f = []
            if not all(ctx["unready"].values()):
                f.append(f"/readyz stayed ready without PostgreSQL: {ctx['unready']}")
            if ctx["exited"]:
                f.append(f"control plane exited during the outage: {ctx['exited']}")
            return f
        return inject, heal, extra

    def _watch(self, seconds):
        """For `seconds`: whether each replica reported unready on /readyz, and any exit."""
        unready = {cp.name: False for cp in self.cps}
        exited = []
        end = time.time() + seconds
        while time.time() < end:
            for cp in self.cps:
                if not cp.alive():
                    exited.append(cp.name)
                elif cp.status("/readyz") not in (200, None):
                    unready[cp.name] = True
            time.sleep(0.5)
        return unready, sorted(set(exited))

    def s_pg_restart(self):
        inject, heal, extra = self._pg_outage(2)
        self.scenario("pg-restart", "PostgreSQL stopped (immediate, a crash) and started again at once",
                      inject, heal, extra=extra)

    def s_pg_outage(self):
        inject, heal, extra = self._pg_outage(self.a.pg_outage)
        self.scenario("pg-outage", f"PostgreSQL down {self.a.pg_outage:g} s (immediate stop)", inject, heal,
                      extra=extra)

    def s_broker_restart(self):
        def inject():
            self.broker.stop()
            time.sleep(2)

        def heal(_):
            self.broker.start()
        self.scenario("broker-restart", "Mosquitto stopped under load and started again after 2 s", inject, heal,
                      expected_offline="all")

    def _agent_task_running(self, ag, timeout=60):
        """Creates a task on the agent and waits until its playbook runs; the task id."""
        tid = self.load.task(ag.appliance_id, kind="task")
        if not tid:
            raise RuntimeError("could not create the scenario's task")
        deadline = time.time() + timeout
        while time.time() < deadline:
            if f"running task task={tid}" in ag.log_text():
                return tid
            time.sleep(0.1)
        raise RuntimeError(f"task {tid} did not start on agent {ag.index}")

    def s_agent_kill(self):
        ag = self.agents[-1]

        def inject():
            self.load.paused_agents.add(ag.appliance_id)
            time.sleep(1)
            tid = self._agent_task_running(ag)
            time.sleep(0.5)  # ansible-playbook is under way
            pid = ag.kill9()
            return dict(task_ids=[tid], tid=tid, pid=pid, t_kill=time.time(), expected_failed=[tid])

        def heal(ctx):
            # The supervisor starts it again (systemd's Restart=); wait for that result.
            deadline = time.time() + 60
            while time.time() < deadline:
                r = self.pg.psql(f"SELECT status FROM tasks WHERE id = '{ctx['tid']}'")
                if r in FINAL:
                    break
                time.sleep(0.2)
            ctx["final_s"] = round(time.time() - ctx["t_kill"], 1)
            self.load.paused_agents.discard(ag.appliance_id)

        def extra(ctx, figures):
            status, message = self.pg.psql(f"SELECT status || '|' || coalesce(message, '') FROM tasks "
                                           f"WHERE id = '{ctx['tid']}'").split("|", 1)
            figures.update(killed_task_status=status, killed_task_message=message,
                           killed_task_final_s=ctx["final_s"])
            if status != "failed" or "restarted" not in message:
                return [f"the killed task ended {status} ({message!r}), not failed with the restart reason"]
            return []
        self.scenario("agent-kill", "kill -9 of a real agent mid-playbook (restarted as systemd would)", inject,
                      heal, expected_offline=[ag.appliance_id], extra=extra)

    def s_partition(self):
        ag = self.agents[0]
        ns = self.netns[0]
        a = self.a

        def inject():
            self.load.paused_agents.add(ag.appliance_id)
            time.sleep(1)
            tid = self._agent_task_running(ag)
            ns.cut()
            ids = [tid]
            # Work queued for it while it is away.
            end = time.time() + a.partition
            k = 0
            while time.time() < end:
                if k < 3:
                    t = self.load.task(ag.appliance_id)
                    if t:
                        ids.append(t)
                    self.load.config(ag.appliance_id)
                    k += 1
                time.sleep(min(5, max(0.1, end - time.time())))
            status = self.pg.psql(f"SELECT status FROM appliances WHERE id = '{ag.appliance_id}'")
            return dict(task_ids=ids, status_during=status)

        def heal(ctx):
            ns.heal()
            self.load.paused_agents.discard(ag.appliance_id)

        def extra(ctx, figures):
            figures["status_at_end_of_partition"] = ctx["status_during"]
            if a.partition > a.offline_after + 2 * a.sweep and ctx["status_during"] != "offline":
                return [f"the partitioned appliance was {ctx['status_during']} at the end of the partition"]
            return []
        self.scenario("partition", f"a real agent's network cut (veth down) for {a.partition:g} s mid-task",
                      inject, heal, expected_offline=[ag.appliance_id], extra=extra)

    def s_slow_pg(self):
        a = self.a

        def inject():
            self.proxy.delay = a.pg_delay / 1000
            time.sleep(a.fault)

        def heal(_):
            self.proxy.delay = 0.0

        def extra(ctx, figures):
            rss = {}
            for cp in self.cps:
                try:
                    with open(f"/proc/{cp.proc.pid}/status") as f:
                        rss[cp.name] = int(next(l for l in f if l.startswith("VmHWM")).split()[1]) // 1024
                except (OSError, StopIteration):
                    pass
            figures["cp_peak_rss_mib"] = rss
            return []
        self.scenario("slow-pg", f"{a.pg_delay:g} ms added to every client-to-PostgreSQL packet for {a.fault:g} s",
                      inject, heal, extra=extra)

    def _restart_agent(self, ag, faketime):
        """Restarts the agent process (the supervisor starts it again) with another clock."""
        # Not in the middle of a task: a stopping agent fails its running playbook ("agent
        # shutting down"), which is its design, not this scenario's subject.
        deadline = time.time() + 180
        while time.time() < deadline and self.pg.psql(
                f"SELECT count(*) FROM tasks WHERE appliance_id = '{ag.appliance_id}' "
                "AND status IN ('queued', 'dispatched', 'running')") != "0":
            time.sleep(0.5)
        ag.faketime = faketime
        pid = ag.agent_pid()
        if pid:
            os.kill(pid, signal.SIGTERM)
        deadline = time.time() + 30
        while time.time() < deadline:
            p = ag.agent_pid()
            if p and p != pid:
                return
            time.sleep(0.2)
        raise RuntimeError(f"agent {ag.index} did not start again")

    def _clock(self, name, offset):
        ag = self.agents[-1]
        a = self.a

        def inject():
            self.load.paused_agents.add(ag.appliance_id)
            self._restart_agent(ag, offset)
            t0 = time.time()
            ids = []
            # Two tasks and a configuration change (each a real playbook run) while skewed.
            for _ in range(2):
                t = self.load.task(ag.appliance_id)
                if t:
                    ids.append(t)
            self.load.config(ag.appliance_id)
            time.sleep(max(0.0, t0 + a.fault + 10 - time.time()))
            status = self.pg.psql(f"SELECT status || '|' || coalesce(extract(epoch FROM now() - last_seen)::int, -1) "
                                  f"FROM appliances WHERE id = '{ag.appliance_id}'")
            return dict(task_ids=ids, during=status)

        def heal(ctx):
            self._restart_agent(ag, None)
            self.load.paused_agents.discard(ag.appliance_id)

        def extra(ctx, figures):
            status, age = ctx["during"].split("|")
            figures.update(status_during=status, last_seen_age_s=int(age))
            f = []
            if status != "online":
                f.append(f"the appliance with its clock {offset} was {status} during the fault")
            return f
        self.scenario(name, f"a real agent's clock {offset} (libfaketime), tasks and a configuration change",
                      inject, heal, expected_offline=[ag.appliance_id], extra=extra)

    def s_clock_ahead(self):
        self._clock("clock-ahead", "+10m")

    def s_clock_behind(self):
        self._clock("clock-behind", "-10m")

    def s_disk_full(self):
        ag = self.agents[-1]
        a = self.a
        filler = os.path.join(ag.spool_mount, "filler")

        def inject():
            self.load.paused_agents.add(ag.appliance_id)
            time.sleep(1)
            # The spool's file system full (a filler file up to ENOSPC).
            subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], stderr=subprocess.DEVNULL)
            ids = []
            for _ in range(2):
                t = self.load.task(ag.appliance_id)
                if t:
                    ids.append(t)
            self.load.config(ag.appliance_id)
            time.sleep(a.fault + 10)
            rss = 0
            pid = ag.agent_pid()
            if pid:
                with open(f"/proc/{pid}/status") as f:
                    rss = int(next(l for l in f if l.startswith("VmRSS")).split()[1]) // 1024
            # Events that cannot be spooled are dropped and logged (the agent's bounded
            # behaviour); their tasks' logs may stay incomplete, which is reported, not failed.
            return dict(task_ids=ids, alive=pid is not None, rss_mib=rss, starts=ag.starts, expected_incomplete=ids)

        def heal(ctx):
            os.remove(filler)
            self.load.paused_agents.discard(ag.appliance_id)

        def extra(ctx, figures):
            figures.update(agent_rss_mib_during=ctx["rss_mib"], agent_restarts_during=ag.starts - 1)
            bad = []
            for tid, rec in ag.ledger().items():
                if rec.get("state") == "unreadable":
                    bad.append(tid)
            if bad:
                return [f"unreadable ledger records after the disk was full: {bad[:3]}"]
            return []
        self.scenario("disk-full", f"a real agent's spool file system (tmpfs, {a.spool_fs_kib:g} KiB) full for "
                      f"{a.fault + 10:g} s while it runs tasks and a configuration change", inject, heal,
                      expected_offline=[ag.appliance_id], extra=extra)

    SCENARIOS = ["replica-kill", "replicas-kill-both", "pg-restart", "pg-outage", "broker-restart", "agent-kill",
                 "partition", "slow-pg",
                 "disk-full", "clock-ahead", "clock-behind"]

    def run(self, names):
        for n in names:
            getattr(self, "s_" + n.replace("-", "_"))()

    def report(self):
        cols = ["scenario", "injected", "tasks", "lost", "ran_twice", "incomplete", "phantom", "recovery_s",
                "api_error_pct", "api_p99_ms", "ok"]
        print()
        print("| fault | injected | tasks | lost | ran twice | logs incomplete | phantom transitions | recovery s "
              "| API errors % | API p99 ms | invariants |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in self.results:
            vals = [r.get(c) for c in cols]
            vals[-1] = "ok" if r["ok"] else "FAILED: " + "; ".join(r["failures"])
            print("| " + " | ".join("—" if v is None else str(v) for v in vals) + " |")
        print()
        a = self.a
        summary = dict(suite="faults", scale="small" if a.small else "full", appliances=a.appliances,
                       agents=a.agents, load=os.getloadavg()[0], ok=all(r["ok"] for r in self.results),
                       scenarios=self.results)
        print(json.dumps(summary))
        return summary["ok"]


def main():
    p = argparse.ArgumentParser(prog="deploy/faults/run.sh", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true", help="CI scale: few appliances, short faults (minutes in all)")
    p.add_argument("--scenario", action="append", choices=Run.SCENARIOS,
                   help="run only this scenario (repeatable; default: all)")
    p.add_argument("--port-base", type=int, default=20100, help="first of the ports used (about 12)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, data)")
    for name, full, small, h in [
        ("appliances", 300, 30, "simulated appliances"),
        ("agents", 3, 2, "real agents (the first in a network namespace)"),
        ("heartbeat", 5, 3, "heartbeat interval, s"),
        ("keep-alive", 10, 6, "MQTT keep-alive, s"),
        ("offline-after", 20, 10, "presence.offline_after_s"),
        ("sweep", 2, 2, "presence.sweep_interval_s"),
        ("ramp", 100, 100, "simulated connections per second"),
        ("task-rate", 5, 2, "tasks per second on simulated appliances"),
        ("agent-task-every", 20, 20, "seconds between tasks on real agents (each a real playbook run)"),
        ("config-every", 2, 2, "seconds between configuration changes (simulated)"),
        ("agent-config-every", 60, 60, "seconds between configuration changes (real agents)"),
        ("chat-every", 5, 5, "seconds between support-chat posts"),
        ("read-rate", 10, 5, "reads per second"),
        ("before", 5, 3, "seconds of load before each fault"),
        ("fault", 30, 8, "seconds a replica stays dead / PostgreSQL stays slow"),
        ("pg-outage", 60, 15, "seconds of the PostgreSQL outage"),
        ("partition", 600, 60, "seconds of the partition"),
        ("pg-delay", 200, 100, "milliseconds added per packet in slow-pg"),
        ("spool-fs-kib", 512, 512, "size of the disk-full agent's spool file system, KiB"),
        ("settle", 10, 4, "seconds after recovery in which a flap still counts"),
        ("recover-timeout", 300, 180, "seconds to wait for recovery"),
    ]:
        p.add_argument("--" + name, type=float, default=None, help=f"{h} (full {full}, --small {small})")
        p.set_defaults(**{"_" + name.replace("-", "_"): (full, small)})
    a = p.parse_args()
    for k in list(vars(a)):
        if k.startswith("_"):
            full, small = getattr(a, k)
            if getattr(a, k[1:]) is None:
                setattr(a, k[1:], small if a.small else full)
    for k in ("appliances", "agents"):
        setattr(a, k, int(getattr(a, k)))
    if os.geteuid() != 0:
        raise SystemExit("the suite needs root (network namespaces, runuser postgres)")
    run = Run(a)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ok = False
    try:
        run.up()
        run.run(a.scenario or Run.SCENARIOS)
        ok = run.report()
    finally:
        run.down()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
