#!/usr/bin/env bash
# Reconnect storm and connections under load, with simulated appliances (the agent's own
# connection, backoff and connection-timeout code, in hearth-fleet-sim).
#
# --mode restart (default): N appliances connected and configuration-synced, then the
# broker is stopped (SIGTERM), the tenant's configuration changes while it is down, and the
# broker starts again. Measures the time from the broker's restart until every appliance is
# back (status online and seen since the restart, in PostgreSQL) and config-synced (applied
# the new version), when 50/90/99/100% were connected again (simulator), the peak
# connection attempts per second (the jittered backoff must keep it bounded) and the
# attempts that gave up at the connection timeout.
#
# --mode load: --loaded appliances heartbeat at --rate messages/s in all (the broker busy
# with messages), then the other N − loaded connect at --ramp per second. Measures how many
# of them got in within --timeout, when 50/90/99/100% were connected (from their first
# start and from the ramp's end), attempts, timeouts, and the heartbeats the loaded part
# got written meanwhile.
#
#   deploy/bench/reconnect-storm.sh [--mode restart|load] [--appliances N] [--down S]
#       [--ramp C] [--timeout S] [--heartbeat-interval-s S] [--loaded N] [--rate R]
#       [--warmup S] [--policy current|legacy] [--mqtt-port P] [--api-port P]
#
# --policy legacy runs the simulator with the reconnect policy before the recovery cap and
# the adaptive connection timeout (5 s fixed timeout, backoff cap growing to 60 s at once),
# for before/after figures from one build. Prints a summary and one JSON line last. Its
# own database (hearth_bench_reconnect_storm) and ports; everything it starts is stopped
# on exit.
set -euo pipefail

APPLIANCES=10000
DOWN=5
RAMP=200
TIMEOUT=300
INTERVAL=30
MQTT_PORT=18884
API_PORT=18444
MODE=restart
POLICY=current
LOADED=""
RATE=20000
WARMUP=10
while [ $# -gt 0 ]; do
    case $1 in
        --appliances) APPLIANCES=$2; shift 2 ;;
        --down) DOWN=$2; shift 2 ;;
        --ramp) RAMP=$2; shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --heartbeat-interval-s) INTERVAL=$2; shift 2 ;;
        --mqtt-port) MQTT_PORT=$2; shift 2 ;;
        --api-port) API_PORT=$2; shift 2 ;;
        --mode) MODE=$2; shift 2 ;;
        --policy) POLICY=$2; shift 2 ;;
        --loaded) LOADED=$2; shift 2 ;;
        --rate) RATE=$2; shift 2 ;;
        --warmup) WARMUP=$2; shift 2 ;;
        -h | --help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case $MODE in restart | load) ;; *) echo "--mode is restart or load" >&2; exit 2 ;; esac
case $POLICY in
    current) POLICY_ARGS=() ;;
    legacy) POLICY_ARGS=(--connect-timeout-s 5 --connect-timeout-max-s 5 --backoff-recovery-max-ms 60000) ;;
    *) echo "--policy is current or legacy" >&2; exit 2 ;;
esac
LOADED=${LOADED:-$((APPLIANCES / 2))}
BENCH=reconnect-storm
# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

build
MACHINE=$(machine)
say "machine: $MACHINE"
setup_stack
start_broker
start_cp
bulk_create --tenants 1 --count "$APPLIANCES" --prefix storm
KEY=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tenants"][0]["api_key"])' "$BUNDLE")
say "provisioned $APPLIANCES appliances in ${PROVISION_S} s"

put_defaults() {
    curl -fsS --cacert "$PKI/ca.crt" -H "Authorization: Bearer $KEY" -H 'content-type: application/json' -X PUT \
        -d "{\"document\": {\"dns\": {\"forwarders\": [\"$1\"]}}}" "https://localhost:$API_PORT/api/v1/config/defaults" >/dev/null
}

# progress SINCE_MS → "online_since synced desired_version"
progress() {
    psql -qXAt -F' ' "$DB_URL" -c "
        SELECT count(*) FILTER (WHERE a.status = 'online' AND a.last_seen >= to_timestamp($1 / 1000.0)),
               count(*) FILTER (WHERE c.applied_version = c.desired_version),
               coalesce(max(c.desired_version), 0)
        FROM appliances a LEFT JOIN appliance_config c ON c.appliance_id = a.id"
}

now_ms() { date +%s%3N; }

# timeline_stats FILE SINCE_MS N → "PEAK ALL_S ATTEMPTS T50 T90 T99 TIMEOUTS ONLINE": from a
# simulator's once-a-second counters after SINCE_MS: peak connection attempts per second,
# seconds until all N / 50% / 90% / 99% were connected at once ("null": never), attempts
# and connection timeouts in all, connections up at the end.
timeline_stats() {
    python3 - "$@" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
t0, n = int(sys.argv[2]), int(sys.argv[3])
after = [r for r in rows if r["unix_ms"] >= t0 - 1000]
peak, prev = 0, None
reached = {1.0: None, 0.5: None, 0.9: None, 0.99: None}
for r in after:
    s = r["snapshot"]
    if prev is not None:
        peak = max(peak, s["connect_attempts"] - prev["connect_attempts"])
    for f in reached:
        if reached[f] is None and r["unix_ms"] > t0 and s["online"] >= f * n:
            reached[f] = round((r["unix_ms"] - t0) / 1000, 1)
    prev = s
def d(key):
    return after[-1]["snapshot"].get(key, 0) - after[0]["snapshot"].get(key, 0) if after else 0
fmt = lambda v: "null" if v is None else v
print(peak, fmt(reached[1.0]), d("connect_attempts"), fmt(reached[0.5]), fmt(reached[0.9]), fmt(reached[0.99]),
      d("connect_timeouts"), after[-1]["snapshot"]["online"] if after else 0)
PY
}

# last_online FILE → connections up in the simulator's newest timeline line (0: none yet).
last_online() {
    local line
    line=$(tail -n1 "$1" 2>/dev/null) || true
    python3 -c 'import json, sys
try:
    print(json.loads(sys.argv[1])["snapshot"]["online"])
except Exception:
    print(0)' "$line"
}

# wait_all SINCE_MS → "SYNCED_S ONLINE_S ONLINE SYNCED": seconds from SINCE_MS until every
# appliance is online (seen since SINCE_MS) and until every one is also config-synced ("null"
# for what did not happen within --timeout), and the counts at the end.
wait_all() {
    local since=$1 online=0 synced=0 version=0 online_s=null deadline=$((SECONDS + TIMEOUT))
    while [ "$SECONDS" -lt "$deadline" ]; do
        read -r online synced version < <(progress "$since") || true
        if [ "$online_s" = null ] && [ "${online:-0}" -ge "$APPLIANCES" ]; then
            online_s=$(awk -v a="$since" -v b="$(now_ms)" 'BEGIN {printf "%.1f", (b - a) / 1000}')
        fi
        if [ "$online_s" != null ] && [ "${synced:-0}" -ge "$APPLIANCES" ]; then
            echo "$(awk -v a="$since" -v b="$(now_ms)" 'BEGIN {printf "%.1f", (b - a) / 1000}') $online_s $online $synced"
            return 0
        fi
        sleep 0.5
    done
    echo "null $online_s ${online:-0} ${synced:-0}"
}

put_defaults 9.9.9.9

if [ "$MODE" = load ]; then
    NEW=$((APPLIANCES - LOADED))
    [ "$LOADED" -gt 0 ] && [ "$NEW" -gt 0 ] || die "--loaded must be between 1 and --appliances − 1"
    say "connecting $LOADED loaded appliances at $RAMP/s, $RATE heartbeats/s in all"
    apart "$BIN/hearth-fleet-sim" run --bundle "$BUNDLE" --host 127.0.0.1 --port "$MQTT_PORT" "${POLICY_ARGS[@]}" \
        --count "$LOADED" --rate "$RATE" --ramp "$RAMP" --timeline "$WORK/loaded.jsonl" --progress-every 10 \
        >"$WORK/loaded.json" 2>>"$WORK/sim.log" &
    LOADED_PID=$!
    EXTRA_PIDS+=("$LOADED_PID")
    t_loaded=$(now_ms)
    deadline=$((SECONDS + TIMEOUT))
    while [ "$(last_online "$WORK/loaded.jsonl")" -lt "$LOADED" ] && [ "$SECONDS" -lt "$deadline" ]; do sleep 1; done
    read -r _ loaded_s _ _ _ _ loaded_timeouts loaded_online < <(timeline_stats "$WORK/loaded.jsonl" "$t_loaded" "$LOADED")
    say "loaded part: $loaded_online of $LOADED connected (all after ${loaded_s} s); ${WARMUP} s of traffic before the newcomers"
    sleep "$WARMUP"
    load=$(load_avg)
    hb0=$(tail -n1 "$WORK/loaded.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["snapshot"]["heartbeats_written"])')
    say "connecting $NEW more appliances at $RAMP/s while the broker carries the traffic"
    b0=$(cpu_ticks "$BROKER_PID")
    apart "$BIN/hearth-fleet-sim" run --bundle "$BUNDLE" --host 127.0.0.1 --port "$MQTT_PORT" "${POLICY_ARGS[@]}" \
        --skip "$LOADED" --count "$NEW" --heartbeat-interval-s "$INTERVAL" --ramp "$RAMP" \
        --timeline "$WORK/new.jsonl" --progress-every 10 >"$WORK/new.json" 2>>"$WORK/sim.log" &
    NEW_PID=$!
    EXTRA_PIDS+=("$NEW_PID")
    t_new=$(now_ms)
    t_s=$SECONDS
    deadline=$((SECONDS + TIMEOUT))
    while [ "$(last_online "$WORK/new.jsonl")" -lt "$NEW" ] && [ "$SECONDS" -lt "$deadline" ]; do sleep 1; done
    sleep 1
    elapsed=$((SECONDS - t_s))
    b1=$(cpu_ticks "$BROKER_PID")
    hb1=$(tail -n1 "$WORK/loaded.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["snapshot"]["heartbeats_written"])')
    read -r peak all_s attempts t50 t90 t99 timeouts online < <(timeline_stats "$WORK/new.jsonl" "$t_new" "$NEW")
    ramp_s=$(awk -v n="$NEW" -v r="$RAMP" 'BEGIN {printf "%.1f", n / r}')
    after_ramp() { [ "$1" = null ] && echo null || awk -v a="$1" -v r="$ramp_s" 'BEGIN {v = a - r; printf "%.1f", v < 0 ? 0 : v}'; }
    hb_rate=$(awk -v a="$hb0" -v b="$hb1" -v s="$elapsed" 'BEGIN {printf "%.0f", (b - a) / s}')
    kill -TERM "$NEW_PID" "$LOADED_PID"
    wait "$NEW_PID" "$LOADED_PID" || true
    errors=$(json_get "$(tail -n1 "$WORK/new.json")" connection_errors)
    echo
    echo "Connections under load — $NEW appliances connecting at $RAMP/s while $LOADED send $RATE heartbeats/s, $PROFILE build, policy $POLICY"
    echo "machine: $MACHINE; load when the newcomers started: $load"
    echo "loaded part: all $LOADED connected after ${loaded_s} s ($loaded_timeouts connection timeouts); heartbeats written meanwhile: ${hb_rate}/s"
    echo "newcomers: $online of $NEW connected within ${TIMEOUT} s; 50% after ${t50} s, 90% ${t90} s, 99% ${t99} s, all ${all_s} s from the first start (the ramp takes ${ramp_s} s; all $(after_ramp "$all_s") s after it)"
    echo "attempts: $attempts, peak $peak per second, $timeouts gave up at the connection timeout, $errors connection errors; broker CPU $(pct "$b0" "$b1" "$elapsed")%"
    echo "{\"bench\":\"reconnect_storm\",\"mode\":\"load\",\"policy\":\"$POLICY\",\"appliances\":$APPLIANCES,\"loaded\":$LOADED,\"new\":$NEW,\"rate\":$RATE,\"ramp\":$RAMP,\"profile\":\"$PROFILE\",\"machine\":\"$MACHINE\",\"load1\":$load,\"loaded_all_connected_s\":$loaded_s,\"loaded_connect_timeouts\":$loaded_timeouts,\"heartbeats_written_per_s\":$hb_rate,\"new_connected\":$online,\"new_connected_ratio\":$(awk -v a="$online" -v b="$NEW" 'BEGIN {printf "%.3f", a / b}'),\"connected_50_s\":$t50,\"connected_90_s\":$t90,\"connected_99_s\":$t99,\"all_connected_s\":$all_s,\"all_connected_after_ramp_s\":$(after_ramp "$all_s"),\"connect_attempts\":$attempts,\"peak_connect_attempts_per_s\":$peak,\"connect_timeouts\":$timeouts,\"connection_errors\":$errors,\"broker_cpu_pct\":$(pct "$b0" "$b1" "$elapsed")}"
    exit 0
fi
say "connecting $APPLIANCES appliances at $RAMP/s"
apart "$BIN/hearth-fleet-sim" run --bundle "$BUNDLE" --host 127.0.0.1 --port "$MQTT_PORT" "${POLICY_ARGS[@]}" \
    --heartbeat-interval-s "$INTERVAL" --ramp "$RAMP" --timeline "$WORK/timeline.jsonl" --progress-every 10 \
    >"$WORK/sim.json" 2>>"$WORK/sim.log" &
SIM_PID=$!
EXTRA_PIDS+=("$SIM_PID")
t_start=$(now_ms)
read -r initial_s _ online synced < <(wait_all "$t_start")
[ "$initial_s" != null ] || die "after ${TIMEOUT} s only $online online and $synced config-synced of $APPLIANCES"
say "all $APPLIANCES online and config-synced ${initial_s} s after starting the simulator"
sleep 3

load=$(load_avg)
say "stopping the broker for ${DOWN} s; the tenant's configuration changes meanwhile"
stop_broker
put_defaults 1.1.1.1
sleep "$DOWN"
start_broker
t_restart=$(now_ms)
say "broker restarted"
b0=$(cpu_ticks "$BROKER_PID"); c0=$(cpu_ticks "$CP_PID"); s0=$(cpu_ticks "$SIM_PID"); p0=$(pg_ticks)
read -r back_s online_s online synced < <(wait_all "$t_restart")
elapsed=$(awk -v a="$t_restart" -v b="$(now_ms)" 'BEGIN {print (b - a) / 1000}')
b1=$(cpu_ticks "$BROKER_PID"); c1=$(cpu_ticks "$CP_PID"); s1=$(cpu_ticks "$SIM_PID"); p1=$(pg_ticks)
if [ "$back_s" = null ]; then
    say "NOT all back within ${TIMEOUT} s: all online after ${online_s} s; $online online since the restart, $synced config-synced of $APPLIANCES"
else
    say "all back online and config-synced ${back_s} s after the restart"
fi
sleep 2
kill -TERM "$SIM_PID"
wait "$SIM_PID"
SIM=$(tail -n1 "$WORK/sim.json")

read -r peak connected_s attempts t50 t90 t99 timeouts _ < <(timeline_stats "$WORK/timeline.jsonl" "$t_restart" "$APPLIANCES")
cpu() { pct "$1" "$2" "$elapsed"; }
echo
echo "Reconnect storm — $APPLIANCES appliances, broker down ${DOWN} s, $PROFILE build"
echo "machine: $MACHINE; load before the restart: $load"
echo "provisioning: ${PROVISION_S} s; initial connect + config sync: ${initial_s} s at $RAMP connections/s"
echo "after the restart: all connected (simulator) ${connected_s} s; all online (PostgreSQL) ${online_s} s; all online + config-synced ${back_s} s ($online online, $synced synced at the end)"
echo "connected again (simulator): 50% ${t50} s, 90% ${t90} s, 99% ${t99} s, all ${connected_s} s"
echo "connection attempts: $attempts in all, peak $peak per second, $timeouts gave up at the connection timeout (policy: $POLICY)"
echo "CPU while recovering: broker $(cpu "$b0" "$b1")%, control plane $(cpu "$c0" "$c1")%, PostgreSQL $(cpu "$p0" "$p1")%, simulator $(cpu "$s0" "$s1")%"
echo "{\"bench\":\"reconnect_storm\",\"mode\":\"restart\",\"appliances\":$APPLIANCES,\"down_s\":$DOWN,\"profile\":\"$PROFILE\",\"machine\":\"$MACHINE\",\"load1\":$load,\"provision_s\":$PROVISION_S,\"initial_sync_s\":$initial_s,\"all_connected_s\":$connected_s,\"all_online_s\":$online_s,\"all_online_synced_s\":$back_s,\"online_at_end\":$online,\"synced_at_end\":$synced,\"peak_connect_attempts_per_s\":$peak,\"connect_attempts\":$attempts,\"connect_timeouts\":$timeouts,\"policy\":\"$POLICY\",\"connected_50_s\":$t50,\"connected_90_s\":$t90,\"connected_99_s\":$t99,\"broker_cpu_pct\":$(cpu "$b0" "$b1"),\"cp_cpu_pct\":$(cpu "$c0" "$c1"),\"pg_cpu_pct\":$(cpu "$p0" "$p1"),\"sim_cpu_pct\":$(cpu "$s0" "$s1"),\"connection_errors\":$(json_get "$SIM" connection_errors)}"
