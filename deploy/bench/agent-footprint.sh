#!/usr/bin/env bash
# The agent's footprint, next to `mosquitto_sub` holding one mutual-TLS connection to the
# same broker (the floor for "one MQTT client"):
#
#   deploy/bench/agent-footprint.sh                  full run (~7 min: 60 s idle, then 300 s
#                                                    of CPU measurement, then a task)
#   deploy/bench/agent-footprint.sh --smoke          seconds instead of minutes: checks the
#                                                    script runs and prints its JSON line
#   options: --idle-seconds N (60)  --cpu-seconds N (300)  --profile P (release-agent)
#            --agent-bin PATH (measure this hearth-agent build instead of building one)
#            --compare-bin PATH (run this other hearth-agent build as the second agent, in
#                                the same run, instead of MALLOC_ARENA_MAX=1: before/after)
#            --cp-bin PATH (use this hearth-control-plane build instead of building one)
#
# It builds hearth-agent with the size-optimised `release-agent` profile (and the control
# plane, debug, as plumbing), starts its own stack on free ports with its own database
# (hearth_footprint_bench): `pki init`, the broker configuration the project ships
# (`broker-config`, mutual TLS + ACL), `serve`; enrolls two appliances through the API and
# runs two agents: one as shipped, one with MALLOC_ARENA_MAX=1 (whether limiting glibc's
# malloc arenas is worth setting in the unit). Figures per client: binary size, start → CONNACK, RSS after the
# idle minute, CPU seconds per idle hour (from utime+stime over the CPU window, heartbeat
# every 30 s as shipped), and the peak RSS (VmHWM) after running one catalog task
# (dns.record.add in a sandbox root; the ansible-playbook child is not counted).
# Prints a human summary and, last, one JSON line.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
IDLE_S=60 CPU_S=300 PROFILE=release-agent SMOKE=false AGENT_BIN="" COMPARE_BIN="" CP_BIN=""
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) SMOKE=true IDLE_S=3 CPU_S=2; shift ;;
        --idle-seconds) IDLE_S=$2; shift 2 ;;
        --cpu-seconds) CPU_S=$2; shift 2 ;;
        --profile) PROFILE=$2; shift 2 ;;
        --agent-bin) AGENT_BIN=$(realpath "$2"); shift 2 ;;
        --compare-bin) COMPARE_BIN=$(realpath "$2"); shift 2 ;;
        --cp-bin) CP_BIN=$(realpath "$2"); shift 2 ;;
        -h|--help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;;
        *) echo "agent-footprint: unknown argument $1" >&2; exit 2 ;;
    esac
done
say() { printf '\033[1mfootprint:\033[0m %s\n' "$*" >&2; }

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
ADMIN_URL=$("$ROOT/deploy/services.sh")
if [ -z "$AGENT_BIN" ]; then
    say "building hearth-agent ($PROFILE)"
    (cd "$ROOT" && cargo build --locked --profile "$PROFILE" -p hearth-agent) >&2
    AGENT=$TARGET_DIR/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")/hearth-agent
else
    AGENT=$AGENT_BIN PROFILE="given: $AGENT_BIN"
fi
if [ -z "$CP_BIN" ]; then
    say "building hearth-control-plane (dev)"
    (cd "$ROOT" && cargo build --locked -p hearth-control-plane) >&2
    CP=$TARGET_DIR/debug/hearth-control-plane
else
    CP=$CP_BIN
fi

WORK=$(mktemp -d)
DB=hearth_footprint_bench
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
MQTT_PORT=$(free_port) MQTT_SERVICE_PORT=$(free_port) API_PORT=$(free_port)

psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
psql "$ADMIN_URL" -qc "CREATE DATABASE $DB" >/dev/null
export HEARTH_DATABASE__URL=${ADMIN_URL%/*}/$DB
export HEARTH_PKI__DIR=$WORK/pki HEARTH_HTTP__LISTEN=127.0.0.1:$API_PORT
export HEARTH_MQTT__HOST=localhost HEARTH_MQTT__PORT=$MQTT_SERVICE_PORT HEARTH_MQTT__PUBLIC_PORT=$MQTT_PORT
export HEARTH_MQTT__CLIENT_ID=hearth-cp-footprint
"$CP" pki init --dir "$WORK/pki" >/dev/null
CONF=$("$CP" broker-config --pki-dir "$WORK/pki" --data-dir "$WORK/broker" --port "$MQTT_PORT" \
    --service-port "$MQTT_SERVICE_PORT" --run-as "$(id -un)" | sed -n 's/^mosquitto_conf=//p')
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
"$MOSQUITTO" -c "$CONF" & PIDS+=($!)
"$CP" serve --migrate >"$WORK/control-plane.log" 2>&1 & PIDS+=($!)
API=https://localhost:$API_PORT
for _ in $(seq 1 150); do
    curl -fsS --cacert "$WORK/pki/ca.crt" "$API/readyz" >/dev/null 2>&1 && break
    sleep 0.2
done
curl -fsS --cacert "$WORK/pki/ca.crt" "$API/readyz" >/dev/null || { cat "$WORK/control-plane.log" >&2; exit 1; }

out=$("$CP" tenant create "Footprint bench")
TENANT_ID=$(sed -n 's/^tenant_id=//p' <<<"$out") TENANT_KEY=$(sed -n 's/^api_key=//p' <<<"$out")
# "sub" is mosquitto_sub's own identity: the broker binds a client's id to its certificate,
# so sharing an agent's certificate would make the two replace each other's connection.
for name in plain arena1 sub; do
    out=$("$CP" appliance create --tenant "$TENANT_ID" "$name")
    sed -n 's/^appliance_id=//p' <<<"$out" >"$WORK/$name.id"
    "$AGENT" enroll --server "$API" --token "$(sed -n 's/^enrollment_token=//p' <<<"$out")" \
        --ca-file "$WORK/pki/ca.crt" --state-dir "$WORK/$name" >/dev/null 2>&1
    mkdir -p "$WORK/$name-root"
    cat >"$WORK/$name.toml" <<TOML
state_dir = "$WORK/$name"
broker_host = "localhost"
broker_port = $MQTT_PORT
ansible_dir = "$ROOT/ansible"
hearth_root = "$WORK/$name-root"
manage_services = false
TOML
done

say "measuring (idle ${IDLE_S} s, CPU window ${CPU_S} s); broker on $MQTT_PORT, API on $API_PORT"
export AGENT MOSQUITTO WORK API TENANT_KEY IDLE_S CPU_S PROFILE SMOKE MQTT_PORT COMPARE_BIN
python3 - <<'PY'
import json, os, platform, re, subprocess, threading, time, shutil, urllib.request, ssl

W = os.environ["WORK"]; API = os.environ["API"]; KEY = os.environ["TENANT_KEY"]
IDLE, CPU = float(os.environ["IDLE_S"]), float(os.environ["CPU_S"])
TICK = os.sysconf("SC_CLK_TCK")
ctx = ssl.create_default_context(cafile=f"{W}/pki/ca.crt")

def status(pid):
    d = {}
    for line in open(f"/proc/{pid}/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
            d[k] = int(v.split()[0])
    return d

def breakdown(pid, binary):
    """Resident KiB: the binary's own (file-backed) pages, shared libraries', anonymous;
    and per mapped file and permission (what the code pages are)."""
    own = libs = 0; path = None; per = {}
    for line in open(f"/proc/{pid}/smaps"):
        f = line.split()
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            path = f[5] if len(f) > 5 else None; perms = f[1]
        elif f[0] == "Rss:" and path and path.startswith("/"):
            key = f"{os.path.basename(path)} {perms}"
            per[key] = per.get(key, 0) + int(f[1])
            if os.path.realpath(path) == os.path.realpath(binary): own += int(f[1])
            else: libs += int(f[1])
    return {"own_code_kib": own, "libs_kib": libs, "per_mapping": per}

def cpu_s(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK  # utime, stime

class Client:
    """A process whose output says when it got its CONNACK."""
    def __init__(self, name, cmd, pattern, env=None, stream="stderr"):
        self.name, self.connected = name, None
        self.t0 = time.monotonic()
        self.p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE if stream == "stdout" else subprocess.DEVNULL,
                                  stderr=subprocess.PIPE if stream == "stderr" else subprocess.DEVNULL, text=True)
        out = self.p.stderr if stream == "stderr" else self.p.stdout
        self.log = []
        def read():
            for line in out:
                if self.connected is None and re.search(pattern, line):
                    self.connected = time.monotonic() - self.t0
                if len(self.log) < 200:
                    self.log.append(line)
        threading.Thread(target=read, daemon=True).start()
    def wait_connected(self, timeout=30):
        end = time.monotonic() + timeout
        while self.connected is None:
            if self.p.poll() is not None or time.monotonic() > end:
                raise SystemExit(f"{self.name} did not connect:\n" + "".join(self.log[-20:]))
            time.sleep(0.002)

def api(method, path, body=None):
    req = urllib.request.Request(API + path, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req, context=ctx, timeout=10))

def run_task(appliance):
    task = api("POST", f"/api/v1/appliances/{appliance}/tasks",
               {"action": "dns.record.add", "params": {"hostname": "printer.home", "ip": "192.168.1.50"}})
    end = time.monotonic() + 120
    while time.monotonic() < end:
        t = api("GET", f"/api/v1/tasks/{task['id']}")
        if t["status"] in ("succeeded", "failed", "timed_out", "rejected"):
            return t["status"]
        time.sleep(0.1)
    return "unfinished"

agent = os.environ["AGENT"]
compare = os.environ.get("COMPARE_BIN") or None
base_env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
base_env["RUST_LOG"] = "info"
clients = []
second = ("agent_compare", compare, {}) if compare else ("agent_arena1", agent, {"MALLOC_ARENA_MAX": "1"})
for name, binary, extra in (("agent", agent, {}), second):
    cfg = "plain" if name == "agent" else "arena1"
    c = Client(name, [binary, "--config", f"{W}/{cfg}.toml", "run"], r"\bconnected\b", env={**base_env, **extra})
    c.binary = binary
    c.appliance = open(f"{W}/{cfg}.id").read().strip()
    c.wait_connected()
    clients.append(c)
sub_id = open(f"{W}/sub.id").read().strip()
sub_bin = shutil.which("mosquitto_sub")
sub = Client("mosquitto_sub", ["stdbuf", "-oL", sub_bin, "-d", "-h", "localhost", "-p", os.environ["MQTT_PORT"],
                               "--cafile", f"{W}/pki/ca.crt", "--cert", f"{W}/sub/cert.pem", "--key", f"{W}/sub/key.pem",
                               "-i", "footprint-sub", "-k", "30", "-t", f"hearth/v1/{sub_id}/down/#"],
             r"received CONNACK", stream="stdout")
sub.wait_connected()
clients.append(sub)

time.sleep(IDLE)
for c in clients:
    c.idle = status(c.p.pid); c.cpu0 = cpu_s(c.p.pid)
    c.idle.update(breakdown(c.p.pid, sub_bin if c is sub else c.binary))
time.sleep(CPU)
for c in clients:
    c.cpu_per_hour = (cpu_s(c.p.pid) - c.cpu0) / CPU * 3600
    c.total_cpu = cpu_s(c.p.pid)
for c in clients[:2]:
    c.task = run_task(c.appliance)
    time.sleep(1)
    c.after = status(c.p.pid)
sub.after = status(sub.p.pid); sub.task = None
for c in clients:
    if c.p.poll() is not None:
        raise SystemExit(f"{c.name} exited early:\n" + "".join(c.log[-20:]))
    c.p.terminate()
for c in clients:
    c.p.wait(timeout=30)

def libs(path):
    out = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
    found = re.findall(r"=>\s+(\S+)", out)
    return [l for l in found if not re.search(r"/lib(c|m|pthread|dl|rt|gcc_s)\.so", l)]
agent_size = os.path.getsize(agent)
sub_size = os.path.getsize(sub_bin)
sub_libs = libs(sub_bin)
sub_libs_size = sum(os.path.getsize(os.path.realpath(l)) for l in sub_libs)
agent_libs = libs(agent)
stripped = "not stripped" not in subprocess.run(["file", "-L", agent], capture_output=True, text=True).stdout \
    if shutil.which("file") else None

mib = lambda kb: round(kb / 1024, 2)
cpu_model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)
machine = f"{platform.system()} {platform.release()} {platform.machine()}, {os.cpu_count()} cores ({cpu_model}), {mem_gib} GiB"
print(f"machine: {machine}")
print(f"agent binary ({os.environ['PROFILE']}): {agent_size/1e6:.2f} MB ({'stripped' if stripped else 'stripped?'}; "
      f"shared libraries besides libc/libgcc: {len(agent_libs)})")
print(f"mosquitto_sub binary: {sub_size/1e6:.3f} MB, plus {len(sub_libs)} shared libraries "
      f"({', '.join(os.path.basename(l) for l in sub_libs)}) = {sub_libs_size/1e6:.2f} MB")
print(f"{'client':<16}{'start→CONNACK':>14}{'idle RSS':>10}{'anon':>9}{'threads':>8}{'CPU s/idle h':>13}{'peak RSS':>10}  task")
for c in clients:
    print(f"{c.name:<16}{c.connected*1000:>11.1f} ms{mib(c.idle['VmRSS']):>6.2f} MiB{mib(c.idle['RssAnon']):>5.2f} MiB"
          f"{c.idle['Threads']:>8}{c.cpu_per_hour:>13.2f}{mib(c.after['VmHWM']):>6.2f} MiB  {c.task or '-'}")
for c in clients:
    print(f"  {c.name}: idle RSS = {mib(c.idle['own_code_kib']):.2f} MiB its own code pages + "
          f"{mib(c.idle['libs_kib']):.2f} MiB shared libraries (libc, ld.so…) + {mib(c.idle['RssAnon']):.2f} MiB anonymous")
    top = sorted(c.idle["per_mapping"].items(), key=lambda kv: -kv[1])[:6]
    print("    file-backed by mapping: " + ", ".join(f"{k} {v} KiB" for k, v in top))
print(f"(idle = {IDLE:g} s after connecting; CPU over the next {CPU:g} s, scaled to an hour, "
      f"resolution one {1/TICK:.2f} s tick = {3600/TICK/CPU:.2f} s per hour; peak = VmHWM after one dns.record.add task)")
result = {"bench": "agent_footprint", "smoke": os.environ["SMOKE"] == "true", "machine": machine,
          "profile": os.environ["PROFILE"], "idle_s": IDLE, "cpu_window_s": CPU,
          "cpu_resolution_s_per_hour": round(3600 / TICK / CPU, 3),
          "agent_binary_bytes": agent_size, "mosquitto_sub_binary_bytes": sub_size,
          "mosquitto_sub_shared_libs_bytes": sub_libs_size}
if compare:
    result["compare_bin"] = compare; result["compare_binary_bytes"] = os.path.getsize(compare)
for c in clients:
    result[c.name] = {"connect_ms": round(c.connected * 1000, 1), "idle_rss_kib": c.idle["VmRSS"],
                      "idle_rss_anon_kib": c.idle["RssAnon"],
                      "idle_rss_own_code_kib": c.idle["own_code_kib"], "idle_rss_libs_kib": c.idle["libs_kib"], "threads": c.idle["Threads"],
                      "cpu_s_per_idle_hour": round(c.cpu_per_hour, 2), "peak_rss_kib": c.after["VmHWM"],
                      "task": c.task}
print(json.dumps(result, separators=(",", ":")))
PY
