#!/usr/bin/env bash
# Agent self-update on a small fleet of REAL agent processes: how long a rollout takes
# from its creation until every agent has committed the new version, and how long a build
# that cannot start takes to be rolled back.
#
#   deploy/bench/agent-update.sh [--appliances N] [--heartbeat-interval-s S] [--waves LIST]
#                                [--rollout-interval-ms MS] [--health-window-s S]
#                                [--timeout S] [--profile P] [--mqtt-port P] [--api-port P]
#   deploy/bench/agent-update.sh --smoke      2 appliances, heartbeat every 2 s, debug
#                                             build: checks the script runs
#
# This workspace's agent is built twice, stamped HEARTH_AGENT_VERSION=1.0.0 (A) and 1.1.0
# (B), in a target directory of its own (<target>/agent-update-bench), profile `release`
# (`--profile dev`: a debug build without debug info, stripped, as the tests build it).
# Its own stack on free ports with its own database (hearth_bench_agent_update): `pki
# init`, the shipped broker configuration (`broker-config`), `serve`; a signing key
# (`artifact keygen`) the control plane (artifacts.public_keys) and every agent
# (update_public_keys) trust; B signed as 1.1.0 and uploaded, /usr/bin/false signed as
# 2.0.0 and uploaded. N appliances enrolled, each with its own copy of A as its installed
# binary and its own agent.toml, each under a restart loop (the quickstart's: started again
# 2 s after it fails, like the unit's Restart=on-failure — the update relies on it).
#
#   update    once all N report 1.0.0: `rollout create --update-to 1.1.0 --waves LIST`
#             (default one wave, 100). Creation → succeeded; per execution started_at →
#             finished_at; from the task events (agent clock, same machine): start →
#             received, received → downloaded, downloaded → switched, switched → committed;
#             bytes served (hearth_artifact_bytes_served_total) per agent against the build's
#             size; every agent on 1.1.0, `current = "a"` in update/update.toml, running
#             update/slots/a/hearth-agent.
#   rollback  `rollout create --update-to 2.0.0` (one wave, no abort): a build that exits at
#             once. Creation → every execution failed with update_step rolled_back, and →
#             every agent seen back on 1.1.0 (a heartbeat of 1.1.0 stored after its
#             rolled_back event, slot a running again); per agent switched → rolled_back,
#             i.e. the restart loop's 2 s delay × 3 starts plus the starts themselves.
#
# Every wait is bounded by --timeout (300 s) and prints the agents' logs when it runs out.
# Prints a summary and, last, one JSON line. Everything it starts is stopped on exit;
# HEARTH_BENCH_KEEP=1 keeps its work directory.
set -euo pipefail

APPLIANCES=5
INTERVAL=10
WAVES=100
ROLLOUT_INTERVAL_MS=1000
WINDOW_S=300
TIMEOUT=300
SMOKE=false
PROFILE_ARG=""
MQTT_PORT=""
API_PORT=""
while [ $# -gt 0 ]; do
    case $1 in
        --appliances) APPLIANCES=$2; shift 2 ;;
        --heartbeat-interval-s) INTERVAL=$2; shift 2 ;;
        --waves) WAVES=$2; shift 2 ;;
        --rollout-interval-ms) ROLLOUT_INTERVAL_MS=$2; shift 2 ;;
        --health-window-s) WINDOW_S=$2; shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --profile) PROFILE_ARG=$2; shift 2 ;;
        --mqtt-port) MQTT_PORT=$2; shift 2 ;;
        --api-port) API_PORT=$2; shift 2 ;;
        --smoke) SMOKE=true APPLIANCES=2 INTERVAL=2 TIMEOUT=180; shift ;;
        -h | --help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;;
        *) echo "agent-update: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ -n "$PROFILE_ARG" ]; then
    HEARTH_BENCH_PROFILE=$PROFILE_ARG
elif [ "$SMOKE" = true ]; then
    HEARTH_BENCH_PROFILE=dev
fi
export HEARTH_BENCH_PROFILE=${HEARTH_BENCH_PROFILE:-release}
[ "$APPLIANCES" -ge 1 ] 2>/dev/null || { echo "agent-update: --appliances must be at least 1" >&2; exit 2; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
MQTT_PORT=${MQTT_PORT:-$(free_port)}
API_PORT=${API_PORT:-$(free_port)}
MQTT_SERVICE_PORT=$(free_port)
BENCH=agent-update
# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

A=1.0.0 B=1.1.0 BAD=2.0.0
ARCH=$(uname -m)
BUILDS=$WORK/builds
AGENT_TARGET=$TARGET_DIR/agent-update-bench
AGENT_OUT=$AGENT_TARGET/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
WRAPPERS=()
IDS=()

sql() { psql -qXAt -F' ' "$DB_URL" -c "$1"; }
now_ms() { date +%s%3N; }
secs_since() { awk -v a="$1" -v b="$(now_ms)" 'BEGIN {printf "%.1f", (b - a) / 1000}'; }

# The agents' logs and update states, then exit with an error.
fail() {
    say "error: $*"
    local i
    for i in $(seq 1 "$APPLIANCES"); do
        [ -d "$WORK/agents/$i" ] || continue
        echo "--- agent $i (${IDS[$i]:-?}): update/update.toml" >&2
        cat "$WORK/agents/$i/state/update/update.toml" >&2 2>/dev/null || echo "(none)" >&2
        echo "--- agent $i: last lines of its log" >&2
        tail -n 40 "$WORK/agent-$i.log" >&2 2>/dev/null || true
    done
    exit 1
}

# ---- Builds: the control plane, and the agent stamped A and B (copied out after each
# build: the second overwrites the first in place).
t0=$SECONDS
say "building hearth-control-plane ($PROFILE)"
(cd "$ROOT" && cargo build --quiet --locked --profile "$PROFILE" -p hearth-control-plane --bin hearth-control-plane) >&2
CP_BUILD_S=$((SECONDS - t0))
build_agent() {
    local version=$1 t=$SECONDS
    say "building hearth-agent stamped $version ($PROFILE, $AGENT_TARGET)"
    (
        cd "$ROOT"
        export HEARTH_AGENT_VERSION=$version
        if [ "$PROFILE" = dev ]; then export CARGO_PROFILE_DEV_DEBUG=0 CARGO_PROFILE_DEV_STRIP=true; fi
        cargo build --quiet --locked --profile "$PROFILE" -p hearth-agent --bin hearth-agent --target-dir "$AGENT_TARGET"
    ) >&2
    mkdir -p "$BUILDS/$version"
    cp "$AGENT_OUT/hearth-agent" "$BUILDS/$version/hearth-agent"
    say "agent $version built in $((SECONDS - t)) s: $(stat -c %s "$BUILDS/$version/hearth-agent") bytes"
    echo $((SECONDS - t))
}
BUILD_A_S=$(build_agent "$A")
BUILD_B_S=$(build_agent "$B")
SIZE_B=$(stat -c %s "$BUILDS/$B/hearth-agent")
mkdir -p "$BUILDS/$BAD"
cp /usr/bin/false "$BUILDS/$BAD/hearth-agent"
SIZE_BAD=$(stat -c %s "$BUILDS/$BAD/hearth-agent")

MACHINE=$(machine)
say "machine: $MACHINE"
LOAD_START=$(load_avg)

# ---- The stack, the signing key, the uploads.
export HEARTH_TASKS__ROLLOUT_INTERVAL_MS=$ROLLOUT_INTERVAL_MS
export HEARTH_ARTIFACTS__MAX_BYTES=$((256 << 20))
setup_stack
mkdir -p "$WORK/signing"
"$BIN/hearth-control-plane" artifact keygen --out "$WORK/signing/release" >/dev/null
PUB=$(tr -d '\n' <"$WORK/signing/release.pub")
export HEARTH_ARTIFACTS__PUBLIC_KEYS="[\"$PUB\"]"
for v in "$B" "$BAD"; do
    "$BIN/hearth-control-plane" artifact sign --key "$WORK/signing/release.key" --agent-version "$v" --arch "$ARCH" \
        "$BUILDS/$v/hearth-agent" >/dev/null 2>>"$WORK/control-plane.log" || die "artifact sign $v failed"
    "$BIN/hearth-control-plane" artifact upload "$BUILDS/$v/hearth-agent" >/dev/null 2>>"$WORK/control-plane.log" \
        || die "artifact upload $v failed (see $WORK/control-plane.log)"
done
start_broker
start_cp
API=https://localhost:$API_PORT

# ---- N appliances, each with its own copy of build A, under a restart loop.
out=$("$BIN/hearth-control-plane" tenant create "Agent update bench" 2>>"$WORK/control-plane.log")
TENANT_ID=$(sed -n 's/^tenant_id=//p' <<<"$out")
[ -n "$TENANT_ID" ] || die "tenant create failed"
say "enrolling $APPLIANCES appliances (heartbeat every ${INTERVAL} s); broker on $MQTT_PORT, API on $API_PORT"
for i in $(seq 1 "$APPLIANCES"); do
    d=$WORK/agents/$i
    mkdir -p "$d/bin" "$d/root"
    out=$("$BIN/hearth-control-plane" appliance create --tenant "$TENANT_ID" "update-bench-$i" 2>>"$WORK/control-plane.log")
    IDS[i]=$(sed -n 's/^appliance_id=//p' <<<"$out")
    "$BUILDS/$A/hearth-agent" enroll --server "$API" --token "$(sed -n 's/^enrollment_token=//p' <<<"$out")" \
        --ca-file "$PKI/ca.crt" --state-dir "$d/state" >>"$WORK/agent-$i.log" 2>&1 || fail "agent $i could not enroll"
    cp "$BUILDS/$A/hearth-agent" "$d/bin/hearth-agent"
    cat >"$d/agent.toml" <<TOML
state_dir = "$d/state"
heartbeat_interval_s = $INTERVAL
broker_host = "localhost"
broker_port = $MQTT_PORT
ansible_dir = "$ROOT/ansible"
hearth_root = "$d/root"
manage_services = false
update_public_keys = ["$PUB"]
update_health_window_s = $WINDOW_S
update_max_bytes = $((256 << 20))
TOML
done

enroll_ms=$(now_ms)
for i in $(seq 1 "$APPLIANCES"); do
    d=$WORK/agents/$i
    # The quickstart's restart loop (systemd's Restart=on-failure), without the stack's
    # own HEARTH_ settings in the agent's environment.
    (
        for v in $(compgen -e | grep '^HEARTH_'); do unset "$v"; done
        export RUST_LOG=info
        exec bash -c 'trap '\''kill -TERM "$child" 2>/dev/null; wait "$child"; exit 0'\'' TERM INT
            while :; do
                "$0" run --config "$1" & child=$!
                wait "$child" && exit 0
                echo "--- the agent exited ($?); starting it again in 2 s"
                sleep 2
            done' "$d/bin/hearth-agent" "$d/agent.toml"
    ) >>"$WORK/agent-$i.log" 2>&1 &
    WRAPPERS[i]=$!
    EXTRA_PIDS+=("$!")
done

# wait_until WHAT SQL-COUNT: until the query counts all N (or --timeout).
wait_until() {
    local what=$1 query=$2 deadline=$((SECONDS + TIMEOUT)) n
    while :; do
        n=$(sql "$query")
        [ "$n" -ge "$APPLIANCES" ] && return 0
        local i
        for i in $(seq 1 "$APPLIANCES"); do
            kill -0 "${WRAPPERS[$i]}" 2>/dev/null || fail "agent $i's restart loop ended"
        done
        [ "$SECONDS" -lt "$deadline" ] || fail "$what: $n of $APPLIANCES after ${TIMEOUT} s"
        sleep 0.5
    done
}
id_list=$(printf "'%s'," "${IDS[@]}")
id_list=${id_list%,}
wait_until "online on $A" "SELECT count(*) FROM appliances WHERE id IN ($id_list) AND status = 'online' AND agent_version = '$A'"
ONLINE_S=$(secs_since "$enroll_ms")
say "all $APPLIANCES online on $A after ${ONLINE_S} s"

# create VERSION NAME [ARGS…] → the new rollout's id
create() {
    local version=$1 name=$2 out
    shift 2
    out=$("$BIN/hearth-control-plane" rollout create "$name" --update-to "$version" "$@" 2>>"$WORK/control-plane.log") \
        || fail "rollout create $name failed: $(tail -n 3 "$WORK/control-plane.log")"
    sed -n 's/^id=//p' <<<"$out"
}

# wait_final ID → its state once final (`rollout show`), or fails after --timeout.
wait_final() {
    local state deadline=$((SECONDS + TIMEOUT))
    while :; do
        state=$("$BIN/hearth-control-plane" rollout show "$1" 2>>"$WORK/control-plane.log" \
            | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])') || state=unknown
        case $state in succeeded | aborted | cancelled) echo "$state"; return 0 ;; esac
        [ "$SECONDS" -lt "$deadline" ] || fail "rollout $1 is still $state after ${TIMEOUT} s"
        sleep 1
    done
}

# figures ID → one JSON object: the rollout, and each execution with its task's events
# (seconds after the rollout's creation) and its last update step.
figures() {
    sql "
    WITH r AS (SELECT * FROM rollouts WHERE id = '$1'),
         x AS (
           SELECT e.appliance_id, e.state, e.wave, e.message,
                  extract(epoch FROM e.started_at - r.created_at)::float8 AS start_s,
                  extract(epoch FROM e.finished_at - r.created_at)::float8 AS finish_s,
                  (SELECT json_object_agg(te.kind, extract(epoch FROM te.at - r.created_at)::float8)
                   FROM task_events te WHERE te.task_id = e.task_id) AS events,
                  (SELECT te.kind FROM task_events te
                   WHERE te.task_id = e.task_id
                     AND te.kind IN ('received', 'downloaded', 'switched', 'committed', 'rolled_back')
                   ORDER BY te.seq DESC LIMIT 1) AS update_step
           FROM rollout_executions e, r WHERE e.rollout_id = r.id)
    SELECT json_build_object(
        'state', r.state, 'reason', r.reason, 'wave_sizes', r.wave_sizes,
        'done_s', extract(epoch FROM r.finished_at - r.created_at)::float8,
        'executions', (SELECT coalesce(json_agg(x ORDER BY x.start_s), '[]') FROM x))
    FROM r"
}

# agents_json → each agent: its appliance id, version stored, update.toml's current slot,
# the binary its process runs, how often the restart loop started it again.
agents_json() {
    local i pid exe
    for i in $(seq 1 "$APPLIANCES"); do
        pid=$(pgrep -P "${WRAPPERS[$i]}" -x hearth-agent | head -n1 || true)
        exe=$([ -n "$pid" ] && readlink "/proc/$pid/exe" 2>/dev/null || true)
        printf '%s\t%s\t%s\t%s\t%s\n' "$i" "${IDS[$i]}" \
            "$(sql "SELECT coalesce(agent_version, '') FROM appliances WHERE id = '${IDS[$i]}'")" \
            "${exe#"$WORK/agents/$i/"}" "$(grep -c '^--- the agent exited' "$WORK/agent-$i.log" || true)"
    done | python3 -c '
import json, re, sys
work = sys.argv[1]
out = []
for line in sys.stdin:
    i, aid, version, exe, restarts = line.rstrip("\n").split("\t")
    try:
        toml = open(f"{work}/agents/{i}/state/update/update.toml").read()
    except OSError:
        toml = ""
    m = re.search(r"^current = \"(\w+)\"", toml, re.M)
    out.append({"agent": int(i), "appliance_id": aid, "version": version or None,
                "current": m.group(1) if m else "installed", "trial": "[trial]" in toml,
                "running": exe or None, "restarts": int(restarts or 0)})
print(json.dumps(out))' "$WORK"
}

# ---- The update: A → B.
bytes0=$(cp_metric hearth_artifact_bytes_served_total)
LOAD_UPDATE=$(load_avg)
say "rollout of $B in waves $WAVES"
R1=$(create "$B" "agent $B" --waves "$WAVES")
[ -n "$R1" ] || fail "no rollout id"
STATE1=$(wait_final "$R1")
# Every agent's version stored, and its update state settled (committed, reported).
wait_until "on $B" "SELECT count(*) FROM appliances WHERE id IN ($id_list) AND agent_version = '$B'"
bytes1=$(cp_metric hearth_artifact_bytes_served_total)
F1=$(figures "$R1")
AG1=$(agents_json)
say "rollout of $B: $STATE1"

# ---- The rollback: B → a build that exits at start → B again.
LOAD_CRASH=$(load_avg)
say "rollout of $BAD (/usr/bin/false): every agent must roll back to $B"
R2=$(create "$BAD" "agent $BAD (exits at start)" --policy '{"waves":{"percent":[100]},"abort":null}')
[ -n "$R2" ] || fail "no rollout id"
created2=$(sql "SELECT (extract(epoch FROM created_at) * 1000)::bigint FROM rollouts WHERE id = '$R2'")
# Back on B: the rollback reported, a heartbeat of B stored after it.
back_query="SELECT count(*) FROM appliances a JOIN rollout_executions e ON e.appliance_id = a.id AND e.rollout_id = '$R2'
    WHERE a.agent_version = '$B' AND a.last_seen > (SELECT max(at) FROM task_events WHERE task_id = e.task_id AND kind = 'rolled_back')"
wait_until "back on $B after the rollback" "$back_query"
BACK_S=$(awk -v a="$created2" -v b="$(now_ms)" 'BEGIN {printf "%.1f", (b - a) / 1000}')
STATE2=$(wait_final "$R2")
bytes2=$(cp_metric hearth_artifact_bytes_served_total)
F2=$(figures "$R2")
AG2=$(agents_json)
LOAD_END=$(load_avg)
say "rollout of $BAD: $STATE2; every agent back on $B ${BACK_S} s after its creation (seen by polling every 0.5 s)"

export F1 F2 AG1 AG2 MACHINE PROFILE SMOKE APPLIANCES INTERVAL WAVES ROLLOUT_INTERVAL_MS WINDOW_S SIZE_B SIZE_BAD \
    bytes0 bytes1 bytes2 LOAD_START LOAD_UPDATE LOAD_CRASH LOAD_END ONLINE_S BACK_S STATE1 STATE2 \
    CP_BUILD_S BUILD_A_S BUILD_B_S A B BAD
python3 <<'PY'
import json, os, statistics
e = os.environ
f1, f2 = json.loads(e["F1"]), json.loads(e["F2"])
ag1, ag2 = json.loads(e["AG1"]), json.loads(e["AG2"])
n = int(e["APPLIANCES"])
A, B, BAD = e["A"], e["B"], e["BAD"]

def stats(values):
    v = [x for x in values if x is not None]
    if not v:
        return None
    return {"min": round(min(v), 2), "median": round(statistics.median(v), 2), "max": round(max(v), 2), "n": len(v)}

def gap(x, a, b):
    ev = x.get("events") or {}
    if a == "start":
        first = x.get("start_s")
    else:
        first = ev.get(a)
    last = x.get("finish_s") if b == "finish" else ev.get(b)
    return None if first is None or last is None else last - first

def fmt(s, unit=" s"):
    return "—" if s is None else f"{s['min']:.2f} / {s['median']:.2f} / {s['max']:.2f}{unit}"

x1 = f1["executions"]
served1 = int(float(e["bytes1"])) - int(float(e["bytes0"]))
served2 = int(float(e["bytes2"])) - int(float(e["bytes1"]))
size_b, size_bad = int(e["SIZE_B"]), int(e["SIZE_BAD"])
per_agent = served1 / n
update = {
    "state": f1["state"], "reason": f1["reason"], "wave_sizes": f1["wave_sizes"], "done_s": round(f1["done_s"] or 0, 2),
    "succeeded": sum(1 for x in x1 if x["state"] == "succeeded"),
    "committed": sum(1 for x in x1 if x["update_step"] == "committed"),
    "exec_s": stats(gap(x, "start", "finish") for x in x1),
    "start_to_received_s": stats(gap(x, "start", "received") for x in x1),
    "received_to_downloaded_s": stats(gap(x, "received", "downloaded") for x in x1),
    "downloaded_to_switched_s": stats(gap(x, "downloaded", "switched") for x in x1),
    "switched_to_committed_s": stats(gap(x, "switched", "committed") for x in x1),
    "committed_to_finished_s": stats(gap(x, "committed", "finish") for x in x1),
    "build_bytes": size_b, "bytes_served": served1, "bytes_per_agent": round(per_agent),
    "bytes_per_agent_ratio": round(per_agent / size_b, 3),
    "agents_on_version": sum(1 for a in ag1 if a["version"] == B),
    "agents_current_a": sum(1 for a in ag1 if a["current"] == "a" and not a["trial"]),
    "agents_running_slot_a": sum(1 for a in ag1 if (a["running"] or "").endswith("update/slots/a/hearth-agent")),
    "restarts": sum(a["restarts"] for a in ag1),
    "message": x1[0]["message"] if x1 else None,
    "load1": float(e["LOAD_UPDATE"]),
}
x2 = f2["executions"]
finished2 = [x["finish_s"] for x in x2 if x["finish_s"] is not None]
rollback = {
    "state": f2["state"], "reason": f2["reason"], "done_s": round(f2["done_s"] or 0, 2),
    "failed_rolled_back": sum(1 for x in x2 if x["state"] == "failed" and x["update_step"] == "rolled_back"),
    "all_failed_s": round(max(finished2), 2) if len(finished2) == n else None,
    "all_back_on_previous_s": float(e["BACK_S"]),
    "exec_s": stats(gap(x, "start", "finish") for x in x2),
    "switched_to_rolled_back_s": stats(gap(x, "switched", "rolled_back") for x in x2),
    "build_bytes": size_bad, "bytes_served": served2,
    "agents_on_version": sum(1 for a in ag2 if a["version"] == B),
    "agents_current_a": sum(1 for a in ag2 if a["current"] == "a" and not a["trial"]),
    "agents_running_slot_a": sum(1 for a in ag2 if (a["running"] or "").endswith("update/slots/a/hearth-agent")),
    "restarts": sum(a["restarts"] for a in ag2) - update["restarts"],
    "message": x2[0]["message"] if x2 else None,
    "load1": float(e["LOAD_CRASH"]),
}

print()
print(f"Agent self-update — {n} real agents ({e['PROFILE']} builds), heartbeat every {e['INTERVAL']} s, "
      f"advancer every {e['ROLLOUT_INTERVAL_MS']} ms, health window {e['WINDOW_S']} s")
print(f"machine: {e['MACHINE']}; load: start {e['LOAD_START']}, update {e['LOAD_UPDATE']}, rollback {e['LOAD_CRASH']}, end {e['LOAD_END']}")
print(f"builds: control plane {e['CP_BUILD_S']} s, agent {A} {e['BUILD_A_S']} s, agent {B} {e['BUILD_B_S']} s (incremental); "
      f"all {n} online on {A} {e['ONLINE_S']} s after their start")
print(f"update {A} → {B}, waves {e['WAVES']} (sizes {f1['wave_sizes']}): {f1['state']}, {update['succeeded']} of {len(x1)} succeeded "
      f"({update['committed']} committed); creation → succeeded {update['done_s']:.2f} s")
print(f"  per execution, min / median / max: started → finished {fmt(update['exec_s'])}")
print(f"    started → received {fmt(update['start_to_received_s'])}; received → downloaded {fmt(update['received_to_downloaded_s'])}; "
      f"downloaded → switched {fmt(update['downloaded_to_switched_s'])}")
print(f"    switched → committed {fmt(update['switched_to_committed_s'])}; committed → execution finished {fmt(update['committed_to_finished_s'])}")
print(f"  bytes served {served1:,} = {per_agent:,.0f} per agent for a build of {size_b:,} bytes (ratio {update['bytes_per_agent_ratio']})")
print(f"  agents: {update['agents_on_version']} of {n} on {B}, {update['agents_current_a']} with current = \"a\", "
      f"{update['agents_running_slot_a']} running update/slots/a/hearth-agent; restarts by the loop: {update['restarts']}")
print(f"  e.g. {update['message']}")
print(f"rollback of {BAD} (/usr/bin/false, {size_bad:,} bytes, one wave, no abort): {f2['state']} ({f2['reason']}); "
      f"{rollback['failed_rolled_back']} of {len(x2)} failed with update_step rolled_back")
print(f"  creation → every execution failed {rollback['all_failed_s']} s, → every agent back on {B} {rollback['all_back_on_previous_s']} s, "
      f"→ rollout final {rollback['done_s']:.2f} s")
print(f"  per agent, min / median / max: switched → rolled_back {fmt(rollback['switched_to_rolled_back_s'])}; "
      f"started → finished {fmt(rollback['exec_s'])}")
print(f"  agents: {rollback['agents_on_version']} of {n} on {B}, {rollback['agents_current_a']} with current = \"a\", "
      f"{rollback['agents_running_slot_a']} running slot a; restarts by the loop: {rollback['restarts']} ({rollback['restarts'] / max(n, 1):g} per agent)")
print(f"  e.g. {rollback['message']}")
print(json.dumps({
    "bench": "agent_update", "smoke": e["SMOKE"] == "true", "profile": e["PROFILE"], "machine": e["MACHINE"],
    "appliances": n, "heartbeat_interval_s": int(e["INTERVAL"]), "rollout_interval_ms": int(e["ROLLOUT_INTERVAL_MS"]),
    "health_window_s": int(e["WINDOW_S"]), "waves": [float(w) for w in e["WAVES"].split(",")],
    "build_s": {"control_plane": int(e["CP_BUILD_S"]), "agent_a": int(e["BUILD_A_S"]), "agent_b": int(e["BUILD_B_S"])},
    "online_s": float(e["ONLINE_S"]), "load1_start": float(e["LOAD_START"]), "load1_end": float(e["LOAD_END"]),
    "update": update, "rollback": rollback,
}, separators=(",", ":"), ensure_ascii=False))
PY

# What must hold, checked after the figures are printed.
python3 - <<'PY' || fail "the outcome is not the expected one (see above)"
import json, os
e = os.environ
n = int(e["APPLIANCES"])
f1, f2 = json.loads(e["F1"]), json.loads(e["F2"])
ag1, ag2 = json.loads(e["AG1"]), json.loads(e["AG2"])
ok = True
def check(cond, what):
    global ok
    if not cond:
        print(f"agent-update: not as expected: {what}")
        ok = False
check(f1["state"] == "succeeded" and all(x["state"] == "succeeded" and x["update_step"] == "committed" for x in f1["executions"]),
      "every execution of the update succeeded with update_step committed")
check(len(f1["executions"]) == n, "one execution per appliance in the update")
for ag, when in ((ag1, "after the update"), (ag2, "after the rollback")):
    check(all(a["version"] == e["B"] and a["current"] == "a" and not a["trial"] for a in ag),
          f"every agent on {e['B']} with current = \"a\" {when}")
    check(all((a["running"] or "").endswith("update/slots/a/hearth-agent") for a in ag), f"every agent running slot a {when}")
check(all(x["state"] == "failed" and x["update_step"] == "rolled_back" for x in f2["executions"]) and len(f2["executions"]) == n,
      "every execution of the broken build failed with update_step rolled_back")
raise SystemExit(0 if ok else 1)
PY
