#!/usr/bin/env bash
# Reconnect storm: N simulated appliances connected and configuration-synced, then the
# broker is stopped (SIGTERM), the tenant's configuration changes while it is down, and the
# broker starts again. Measures the time from the broker's restart until every appliance is
# back (status online and seen since the restart, in PostgreSQL) and config-synced (applied
# the new version), and the peak connection attempts per second (the agent's jittered
# backoff must keep it bounded).
#
#   deploy/bench/reconnect-storm.sh [--appliances N] [--down S] [--ramp C] [--timeout S]
#                                   [--heartbeat-interval-s S] [--mqtt-port P] [--api-port P]
#
# The simulator uses the agent's defaults for backoff (1 s initial, 60 s cap, full jitter)
# and keep-alive. Prints a summary and one JSON line last. Its own database
# (hearth_bench_reconnect_storm) and ports; everything it starts is stopped on exit.
set -euo pipefail

APPLIANCES=10000
DOWN=5
RAMP=200
TIMEOUT=300
INTERVAL=30
MQTT_PORT=18884
API_PORT=18444
while [ $# -gt 0 ]; do
    case $1 in
        --appliances) APPLIANCES=$2; shift 2 ;;
        --down) DOWN=$2; shift 2 ;;
        --ramp) RAMP=$2; shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --heartbeat-interval-s) INTERVAL=$2; shift 2 ;;
        --mqtt-port) MQTT_PORT=$2; shift 2 ;;
        --api-port) API_PORT=$2; shift 2 ;;
        -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
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
say "connecting $APPLIANCES appliances at $RAMP/s"
"$BIN/hearth-fleet-sim" run --bundle "$BUNDLE" --host 127.0.0.1 --port "$MQTT_PORT" \
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

# From the simulator's once-a-second counters after the restart: peak attempts per second,
# when every connection was up again, attempts in all.
read -r peak connected_s attempts < <(python3 - "$WORK/timeline.jsonl" "$t_restart" "$APPLIANCES" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
t0, n = int(sys.argv[2]), int(sys.argv[3])
after = [r for r in rows if r["unix_ms"] >= t0 - 1000]
peak, up, prev = 0, None, None
for r in after:
    s = r["snapshot"]
    if prev is not None:
        peak = max(peak, s["connect_attempts"] - prev["connect_attempts"])
    if up is None and r["unix_ms"] > t0 and s["online"] >= n:
        up = (r["unix_ms"] - t0) / 1000
    prev = s
first = after[0]["snapshot"]["connect_attempts"] if after else 0
last = after[-1]["snapshot"]["connect_attempts"] if after else 0
print(peak, "null" if up is None else round(up, 1), last - first)
PY
)
cpu() { pct "$1" "$2" "$elapsed"; }
echo
echo "Reconnect storm — $APPLIANCES appliances, broker down ${DOWN} s, $PROFILE build"
echo "machine: $MACHINE; load before the restart: $load"
echo "provisioning: ${PROVISION_S} s; initial connect + config sync: ${initial_s} s at $RAMP connections/s"
echo "after the restart: all connected (simulator) ${connected_s} s; all online (PostgreSQL) ${online_s} s; all online + config-synced ${back_s} s ($online online, $synced synced at the end)"
echo "connection attempts: $attempts in all, peak $peak per second"
echo "CPU while recovering: broker $(cpu "$b0" "$b1")%, control plane $(cpu "$c0" "$c1")%, PostgreSQL $(cpu "$p0" "$p1")%, simulator $(cpu "$s0" "$s1")%"
echo "{\"bench\":\"reconnect_storm\",\"appliances\":$APPLIANCES,\"down_s\":$DOWN,\"profile\":\"$PROFILE\",\"machine\":\"$MACHINE\",\"load1\":$load,\"provision_s\":$PROVISION_S,\"initial_sync_s\":$initial_s,\"all_connected_s\":$connected_s,\"all_online_s\":$online_s,\"all_online_synced_s\":$back_s,\"online_at_end\":$online,\"synced_at_end\":$synced,\"peak_connect_attempts_per_s\":$peak,\"connect_attempts\":$attempts,\"broker_cpu_pct\":$(cpu "$b0" "$b1"),\"cp_cpu_pct\":$(cpu "$c0" "$c1"),\"pg_cpu_pct\":$(cpu "$p0" "$p1"),\"sim_cpu_pct\":$(cpu "$s0" "$s1"),\"connection_errors\":$(json_get "$SIM" connection_errors)}"
