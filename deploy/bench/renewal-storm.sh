#!/usr/bin/env bash
# Renewal storm: N simulated appliances connected, then every one asks for a new certificate
# at the same moment (all due at once — the worst case for a fleet enrolled together, or a
# CA rotation with no spreading window). Each renews by the agent's protocol: a new key and
# CSR on up/cert/request over its mutual-TLS connection, the answer on down/cert, one clean
# disconnect and a reconnect with the new pair.
#
# Measures the time from the storm's start until every appliance is connected with its new
# certificate, the peak signatures per second (PostgreSQL's certificate_issues), the
# control plane's and PostgreSQL's CPU per renewal, the longest switch (answer → CONNACK
# with the new pair), requests asked again, and whether anything went offline (connection
# errors in the simulator, offline presence events in PostgreSQL).
#
#   deploy/bench/renewal-storm.sh [--appliances N] [--ramp C] [--settle S] [--timeout S]
#                                 [--heartbeat-interval-s S] [--mqtt-port P] [--api-port P]
#
# Prints a summary and one JSON line last. Its own database (hearth_bench_renewal_storm)
# and ports; everything it starts is stopped on exit.
set -euo pipefail

APPLIANCES=10000
RAMP=200
SETTLE=15
TIMEOUT=600
INTERVAL=30
MQTT_PORT=18885
API_PORT=18445
while [ $# -gt 0 ]; do
    case $1 in
        --appliances) APPLIANCES=$2; shift 2 ;;
        --ramp) RAMP=$2; shift 2 ;;
        --settle) SETTLE=$2; shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --heartbeat-interval-s) INTERVAL=$2; shift 2 ;;
        --mqtt-port) MQTT_PORT=$2; shift 2 ;;
        --api-port) API_PORT=$2; shift 2 ;;
        -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
BENCH=renewal-storm
# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

build
MACHINE=$(machine)
say "machine: $MACHINE"
setup_stack
start_broker
start_cp
bulk_create --tenants 1 --count "$APPLIANCES" --prefix renew
say "provisioned $APPLIANCES appliances in ${PROVISION_S} s"

# The storm starts once the whole fleet has connected (the ramp) and settled, and not
# before the control plane's shortest renewal interval (pki.renewal_min_interval_s, 60 s by
# default) has passed since bulk-create signed the first certificates.
RENEW_AFTER=$(awk -v n="$APPLIANCES" -v r="$RAMP" -v s="$SETTLE" 'BEGIN {t = n / r + s; printf "%.0f", t < 65 ? 65 : t}')
say "connecting $APPLIANCES appliances at $RAMP/s; every one renews ${RENEW_AFTER} s after the start"
"$BIN/hearth-fleet-sim" run --bundle "$BUNDLE" --host 127.0.0.1 --port "$MQTT_PORT" \
    --heartbeat-interval-s "$INTERVAL" --ramp "$RAMP" --renew-after-s "$RENEW_AFTER" \
    --timeline "$WORK/timeline.jsonl" --progress-every 10 >"$WORK/sim.json" 2>>"$WORK/sim.log" &
SIM_PID=$!
EXTRA_PIDS+=("$SIM_PID")
t_sim=$SECONDS

# Counters of the latest timeline row: "online connection_errors renewals_asked renewed".
latest() {
    tail -n1 "$WORK/timeline.jsonl" 2>/dev/null | python3 -c '
import json, sys
line = sys.stdin.read().strip()
s = json.loads(line)["snapshot"] if line else {}
print(*(s.get(k, 0) for k in ("online", "connection_errors", "renewals_asked", "renewed")))'
}

# Wait for the fleet, then sample CPU just before the storm.
while :; do
    read -r online _ _ _ < <(latest)
    [ "${online:-0}" -ge "$APPLIANCES" ] && break
    [ $((SECONDS - t_sim)) -lt "$RENEW_AFTER" ] || die "only ${online:-0} of $APPLIANCES online when the storm was due; lower --ramp or raise --settle"
    kill -0 "$SIM_PID" 2>/dev/null || die "the simulator exited (see $WORK/sim.log)"
    sleep 1
done
say "all $APPLIANCES online after $((SECONDS - t_sim)) s"
while [ $((SECONDS - t_sim)) -lt $((RENEW_AFTER - 2)) ]; do sleep 0.5; done
load=$(load_avg)
b0=$(cpu_ticks "$BROKER_PID"); c0=$(cpu_ticks "$CP_PID"); s0=$(cpu_ticks "$SIM_PID"); p0=$(pg_ticks)
t0=$SECONDS
offline0=$(psql -qXAt "$DB_URL" -c "SELECT count(*) FROM presence_events WHERE status = 'offline'")

deadline=$((t_sim + RENEW_AFTER + TIMEOUT))
while :; do
    read -r _ _ _ renewed < <(latest)
    [ "${renewed:-0}" -ge "$APPLIANCES" ] && break
    [ "$SECONDS" -lt "$deadline" ] || break
    kill -0 "$SIM_PID" 2>/dev/null || die "the simulator exited (see $WORK/sim.log)"
    sleep 1
done
elapsed=$((SECONDS - t0))
b1=$(cpu_ticks "$BROKER_PID"); c1=$(cpu_ticks "$CP_PID"); s1=$(cpu_ticks "$SIM_PID"); p1=$(pg_ticks)
sleep 3
offline1=$(psql -qXAt "$DB_URL" -c "SELECT count(*) FROM presence_events WHERE status = 'offline'")
kill -TERM "$SIM_PID"
wait "$SIM_PID" || true
SIM=$(tail -n1 "$WORK/sim.json")

# From PostgreSQL: renewals signed, the peak per second, appliances whose current
# certificate is a renewed one.
read -r issued peak_sig on_new < <(psql -qXAt -F' ' "$DB_URL" -c "
    WITH r AS (SELECT * FROM certificate_issues WHERE renewal_id IS NOT NULL)
    SELECT (SELECT count(*) FROM r),
           coalesce((SELECT max(n) FROM (SELECT count(*) AS n FROM r GROUP BY date_trunc('second', issued_at)) s), 0),
           (SELECT count(*) FROM appliances a JOIN r ON r.appliance_id = a.id AND r.serial = a.cert_serial)")

# From the simulator's once-a-second counters: when the storm started (first request) and
# ended (every appliance renewed), peak issued per second as the appliances saw it,
# connection errors during the storm.
read -r storm_s peak_seen errors_in_storm < <(python3 - "$WORK/timeline.jsonl" "$APPLIANCES" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
n = int(sys.argv[2])
start = next((r for r in rows if r["snapshot"]["renewals_asked"] > 0), None)
end = next((r for r in rows if r["snapshot"]["renewed"] >= n), None)
peak, prev = 0, None
for r in rows:
    s = r["snapshot"]
    if prev is not None:
        peak = max(peak, s["renewals_issued"] - prev["renewals_issued"])
    prev = s
storm = "null" if start is None or end is None else round((end["unix_ms"] - start["unix_ms"]) / 1000, 1)
last = end or rows[-1]
errors = 0 if start is None else last["snapshot"]["connection_errors"] - start["snapshot"]["connection_errors"]
print(storm, peak, errors)
PY
)
hz=$(getconf CLK_TCK)
per_k() { awk -v a="$1" -v b="$2" -v hz="$hz" -v n="$APPLIANCES" 'BEGIN {printf "%.2f", (b - a) / hz / n * 1000}'; }
cpu() { pct "$1" "$2" "$elapsed"; }
renewed=$(json_get "$SIM" renewed)
asked=$(json_get "$SIM" renewals_asked)
echo
echo "Renewal storm — $APPLIANCES appliances due at once, $PROFILE build"
echo "machine: $MACHINE; load before the storm: $load"
echo "renewed (connected with the new certificate): $renewed of $APPLIANCES in ${storm_s} s; on a renewed certificate in PostgreSQL: $on_new"
echo "signatures: $issued, peak $peak_sig per second (PostgreSQL), $peak_seen per second answered (simulator); requests $asked (asked again: $((asked - APPLIANCES)))"
echo "longest switch (answer to CONNACK with the new pair): $(json_get "$SIM" renewal_switch_max_ms) ms; connection errors during the storm: $errors_in_storm; offline presence events: $((offline1 - offline0)); refused: $(json_get "$SIM" renewals_refused); failed: $(json_get "$SIM" renewals_failed)"
echo "CPU-seconds per 1,000 renewals: control plane $(per_k "$c0" "$c1"), PostgreSQL $(per_k "$p0" "$p1"), broker $(per_k "$b0" "$b1"), simulator $(per_k "$s0" "$s1")"
echo "CPU over the storm (${elapsed} s): control plane $(cpu "$c0" "$c1")%, PostgreSQL $(cpu "$p0" "$p1")%, broker $(cpu "$b0" "$b1")%, simulator $(cpu "$s0" "$s1")%"
echo "{\"bench\":\"renewal_storm\",\"appliances\":$APPLIANCES,\"profile\":\"$PROFILE\",\"machine\":\"$MACHINE\",\"load1\":$load,\"renewed\":$renewed,\"on_new_certificate\":$on_new,\"storm_s\":$storm_s,\"signatures\":$issued,\"peak_signatures_per_s\":$peak_sig,\"peak_answers_per_s\":$peak_seen,\"requests\":$asked,\"switch_max_ms\":$(json_get "$SIM" renewal_switch_max_ms),\"connection_errors\":$errors_in_storm,\"offline_events\":$((offline1 - offline0)),\"refused\":$(json_get "$SIM" renewals_refused),\"failed\":$(json_get "$SIM" renewals_failed),\"cp_cpu_s_per_1k\":$(per_k "$c0" "$c1"),\"pg_cpu_s_per_1k\":$(per_k "$p0" "$p1"),\"broker_cpu_s_per_1k\":$(per_k "$b0" "$b1"),\"sim_cpu_s_per_1k\":$(per_k "$s0" "$s1"),\"cp_cpu_pct\":$(cpu "$c0" "$c1"),\"pg_cpu_pct\":$(cpu "$p0" "$p1")}"
[ "$renewed" -ge "$APPLIANCES" ] || die "only $renewed of $APPLIANCES renewed within ${TIMEOUT} s"
