#!/usr/bin/env bash
# End-to-end heartbeat ingest: N simulated appliances (hearth-fleet-sim, each its own
# certificate and mutual-TLS connection) → Mosquitto → the control plane → PostgreSQL.
#
#   deploy/bench/ingest.sh [--appliances N] [--rates R1,R2,…] [--window S] [--ramp C]
#                          [--settle S] [--sample N] [--mixed] [--api-connections C]
#                          [--api-rate R] [--mqtt-port P] [--api-port P]
#
# Rates above the fleet size mean sub-second heartbeat intervals (40000 over 10,000
# appliances: one every 250 ms each); the per-appliance MQTT limit is raised above them.
# Connections ramp at --ramp per second (200: faster, Mosquitto cannot finish the TLS
# handshakes within the clients' 5 s connection timeout on a 2-core box); each phase measures
# only once every appliance is connected and --settle seconds (default 10) have passed: the
# connection ramp (a presence transition and a configuration push per appliance) leaves a
# backlog that the first seconds drain, and the window is for the steady state.
# For each offered rate (heartbeats/s over the fleet) two phases with the same traffic:
#   ceiling  the control plane stopped; `hearth-fleet-sim count`, a subscriber that only
#            counts, reads every up message: what the broker (and this box) can deliver.
#   ingest   the control plane consuming: heartbeats stored per second (its
#            hearth_heartbeats_ingested_total over the window: written, or superseded by a
#            newer one of the same appliance that was), of them superseded
#            (hearth_heartbeats_superseded_total: coalesced away under load, not a loss),
#            heartbeats lost (written by the simulator − ingested, over the whole run),
#            appliances marked offline for missed heartbeats (a false offline: the fleet is
#            connected throughout), latency of the newest heartbeat per appliance, CPU of
#            the control plane, the broker, PostgreSQL and the simulator (the saturated
#            component is the one nearest a whole core, or both cores together), and the
#            control plane's RSS.
# --mixed: during each ingest window, wrk sends GET /api/v1/appliances (the tenant's first
# page, 100 rows, with its API key: authentication, rate limit, row-level security) to the
# same control plane, --api-connections at once, each paced to --api-rate requests/s over
# all (wrk's delay(); 0: as fast as they go), and its requests/s, p50 and p99 are reported
# beside the ingest's.
# Latency: a psql session polls --sample appliances (default 250) every 100 ms and records,
# for each new `heartbeat_at` (the newest heartbeat's own `sent_at`, stamped by the
# simulator when it hands the heartbeat to its MQTT client), clock_timestamp() −
# heartbeat_at. It is an upper bound: a heartbeat is seen up to one poll (100 ms) after it
# became visible. Its backend's CPU is measurement, so it is left out of PostgreSQL's (and
# out of the cap of HEARTH_BENCH_PG_CPU, lib/common.sh) and reported on its own.
# "Sustained" = p99 ≤ 1 s and nothing lost (superseded heartbeats are not lost). Prints a
# summary and one JSON line last.
# Its own database (hearth_bench_ingest) and ports; everything it starts is stopped on exit.
set -euo pipefail

APPLIANCES=10000
RATES=1000,5000,10000
WINDOW=20
RAMP=200
MQTT_PORT=18883
API_PORT=18443
MIXED=false
API_CONNECTIONS=8
API_RATE=1000
SAMPLE=250
SETTLE=10
while [ $# -gt 0 ]; do
    case $1 in
        --appliances) APPLIANCES=$2; shift 2 ;;
        --rates) RATES=$2; shift 2 ;;
        --window) WINDOW=$2; shift 2 ;;
        --ramp) RAMP=$2; shift 2 ;;
        --sample) SAMPLE=$2; shift 2 ;;
        --settle) SETTLE=$2; shift 2 ;;
        --mixed) MIXED=true; shift ;;
        --api-connections) API_CONNECTIONS=$2; shift 2 ;;
        --api-rate) API_RATE=$2; shift 2 ;;
        --mqtt-port) MQTT_PORT=$2; shift 2 ;;
        --api-port) API_PORT=$2; shift 2 ;;
        -h | --help) sed -n '2,/^[^#]/{/^#/{s/^# \{0,1\}//;p}}' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
BENCH=ingest
# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

$MIXED && ensure_wrk
build
MACHINE=$(machine)
say "machine: $MACHINE"
setup_stack
# Sub-second heartbeats are above an appliance's default MQTT allowance; the API's quota is
# above wrk's load (every request still takes a token).
export HEARTH_LIMITS__MQTT_PER_MINUTE=10000000 HEARTH_LIMITS__MQTT_BURST=1000000
export HEARTH_LIMITS__API_PER_MINUTE=10000000 HEARTH_LIMITS__API_BURST=1000000
start_broker
bulk_create --tenants 1 --count "$APPLIANCES" --prefix bench
say "provisioned $APPLIANCES appliances in ${PROVISION_S} s"

psql -qX "$DB_URL" >/dev/null <<SQL
CREATE UNLOGGED TABLE bench_sample (id uuid PRIMARY KEY);
INSERT INTO bench_sample SELECT id FROM appliances ORDER BY random() LIMIT $SAMPLE;
CREATE UNLOGGED TABLE bench_seen (id uuid PRIMARY KEY, heartbeat_at timestamptz);
CREATE UNLOGGED TABLE bench_latency (ms float8);
SQL

if $MIXED; then
    API_KEY=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tenants"][0]["api_key"])' "$BUNDLE")
    cat >"$WORK/list.lua" <<LUA
-- The tenant's first page of appliances, paced: each connection waits so that all of them
-- together send about --api-rate requests/s (plus each request's own time: a little less).
local pause = ${API_RATE} > 0 and math.floor(${API_CONNECTIONS} * 1000 / ${API_RATE}) or 0
function request()
    return wrk.format("GET", "/api/v1/appliances", { ["Authorization"] = "Bearer ${API_KEY}" })
end
function delay() return pause end
LUA
fi

# sim RATE → runs the simulator in the background until stopped (SIM_PID, its final line in
# $WORK/sim.json, its once-a-second counters in $WORK/timeline.jsonl), then waits until every
# appliance is connected and --settle seconds more (steady state: what the connection ramp
# left queued is drained).
sim() {
    : >"$WORK/timeline.jsonl"
    apart "$BIN/hearth-fleet-sim" run --bundle "$BUNDLE" --host 127.0.0.1 --port "$MQTT_PORT" \
        --rate "$1" --ramp "$RAMP" --timeline "$WORK/timeline.jsonl" --progress-every 10 \
        >"$WORK/sim.json" 2>>"$WORK/sim.log" &
    SIM_PID=$!
    EXTRA_PIDS+=("$SIM_PID")
    local t0=$SECONDS limit online
    limit=$(awk -v n="$APPLIANCES" -v r="$RAMP" 'BEGIN {printf "%d", n / r * 4 + 60}')
    while :; do
        sleep 1
        online=$(tail -n1 "$WORK/timeline.jsonl" | python3 -c 'import json,sys; l=sys.stdin.read().strip(); print(json.loads(l)["snapshot"]["online"] if l else 0)')
        [ "$online" -ge "$APPLIANCES" ] && break
        [ $((SECONDS - t0)) -gt "$limit" ] && die "only $online of $APPLIANCES appliances connected after $limit s"
    done
    CONNECT_S=$((SECONDS - t0))
    sleep "$SETTLE"
}

stop_sim() {
    kill -TERM "$SIM_PID"
    wait "$SIM_PID"
    SIM=$(tail -n1 "$WORK/sim.json")
}

now_ms() { date +%s%3N; }

# Heartbeats per second the simulator wrote between two wall-clock times (ms).
written_rate() {
    python3 - "$WORK/timeline.jsonl" "$1" "$2" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
a, b = int(sys.argv[2]), int(sys.argv[3])
inside = [r for r in rows if a <= r["unix_ms"] <= b]
if len(inside) < 2:
    print(0); sys.exit()
f, l = inside[0], inside[-1]
print(round((l["snapshot"]["heartbeats_written"] - f["snapshot"]["heartbeats_written"]) * 1000 / (l["unix_ms"] - f["unix_ms"]), 1))
PY
}

RESULTS=()
IFS=, read -ra rate_list <<<"$RATES"
for RATE in "${rate_list[@]}"; do
    say "rate $RATE/s: ceiling phase (control plane stopped): connecting at $RAMP/s, then a ${WINDOW} s window"
    sim "$RATE"
    apart "$BIN/hearth-fleet-sim" count --pki-dir "$PKI" --host 127.0.0.1 --port "$MQTT_SERVICE_PORT" \
        --skip 1 --window "$WINDOW" >"$WORK/count.json" 2>>"$WORK/count.log" &
    COUNT_PID=$!
    EXTRA_PIDS+=("$COUNT_PID")
    sleep 2
    a=$(now_ms); b0=$(cpu_ticks "$BROKER_PID"); s0=$(cpu_ticks "$SIM_PID")
    wait "$COUNT_PID"
    b=$(now_ms); b1=$(cpu_ticks "$BROKER_PID"); s1=$(cpu_ticks "$SIM_PID")
    secs=$(awk -v a="$a" -v b="$b" 'BEGIN {print (b - a) / 1000}')
    stop_sim
    COUNT=$(tail -n1 "$WORK/count.json")
    ceiling=$(awk -v v="$(json_get "$COUNT" heartbeats_per_s)" 'BEGIN {printf "%.1f", v}')
    ceiling_offered=$(written_rate "$a" "$b")
    ceiling_broker_cpu=$(pct "$b0" "$b1" "$secs")
    ceiling_sim_cpu=$(pct "$s0" "$s1" "$secs")
    say "rate $RATE/s: counter received $ceiling/s of $ceiling_offered/s written (broker ${ceiling_broker_cpu}% CPU, simulator ${ceiling_sim_cpu}%; all connected after ${CONNECT_S} s)"

    say "rate $RATE/s: ingest phase (control plane consuming)"
    start_cp
    psql -qX "$DB_URL" -c "TRUNCATE bench_seen, bench_latency" >/dev/null
    sim "$RATE"
    since=$(psql -qXAt "$DB_URL" -c "SELECT now()")
    rm -f "$WORK/sampler.pid"
    psql -qX "$DB_URL" -v since="$since" -v pidfile="$WORK/sampler.pid" >/dev/null 2>>"$WORK/sampler.log" <<'SQL' &
\pset tuples_only on
\o :pidfile
SELECT pg_backend_pid();
\o
WITH cur AS (
    SELECT a.id, a.heartbeat_at FROM appliances a JOIN bench_sample s USING (id)
    WHERE a.heartbeat_at >= :'since'::timestamptz
), new AS (
    SELECT c.id, c.heartbeat_at FROM cur c LEFT JOIN bench_seen s USING (id)
    WHERE s.heartbeat_at IS DISTINCT FROM c.heartbeat_at
), up AS (
    INSERT INTO bench_seen SELECT id, heartbeat_at FROM new
    ON CONFLICT (id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at
)
INSERT INTO bench_latency SELECT extract(epoch FROM clock_timestamp() - heartbeat_at) * 1000 FROM new
\watch 0.1
SQL
    SAMPLER_PID=$!
    EXTRA_PIDS+=("$SAMPLER_PID")
    # The sampler's own backend is measurement, not ingest: its CPU is left out of
    # PostgreSQL's (and reported on its own).
    for _ in $(seq 1 100); do [ -s "$WORK/sampler.pid" ] && break; sleep 0.05; done
    SAMPLER_BACKEND=$(tr -dc '0-9' <"$WORK/sampler.pid" 2>/dev/null || true)
    [ -n "$SAMPLER_BACKEND" ] || die "the latency sampler did not start (see $WORK/sampler.log)"
    uncap_pg_process "$SAMPLER_BACKEND"
    i0=$(cp_metric hearth_heartbeats_ingested_total)
    a=$(now_ms); c0=$(cpu_ticks "$CP_PID"); b0=$(cpu_ticks "$BROKER_PID"); p0=$(pg_ticks); s0=$(cpu_ticks "$SIM_PID")
    q0=$(cpu_ticks "$SAMPLER_BACKEND")
    load=$(load_avg)
    if $MIXED; then
        apart wrk -t1 -c"$API_CONNECTIONS" -d"${WINDOW}s" --latency -s "$WORK/list.lua" "https://localhost:$API_PORT" \
            >"$WORK/wrk.out" 2>&1 &
        WRK_PID=$!
        EXTRA_PIDS+=("$WRK_PID")
    fi
    s_0=$(cp_metric hearth_heartbeats_superseded_total)
    sleep "$WINDOW"
    s_1=$(cp_metric hearth_heartbeats_superseded_total)
    i1=$(cp_metric hearth_heartbeats_ingested_total)
    b=$(now_ms); c1=$(cpu_ticks "$CP_PID"); b1=$(cpu_ticks "$BROKER_PID"); p1=$(pg_ticks); s1=$(cpu_ticks "$SIM_PID")
    q1=$(cpu_ticks "$SAMPLER_BACKEND")
    secs=$(awk -v a="$a" -v b="$b" 'BEGIN {print (b - a) / 1000}')
    rss=$(rss_mib "$CP_PID")
    kill -TERM "$SAMPLER_PID" 2>/dev/null; wait "$SAMPLER_PID" 2>/dev/null || true
    stop_sim
    sleep 2 # let the last batch land
    stored_total=$(cp_metric hearth_heartbeats_ingested_total)
    superseded_total=$(cp_metric hearth_heartbeats_superseded_total)
    false_offline=$(psql -qXAt "$DB_URL" -c "SELECT count(*) FROM presence_events WHERE reason = 'missed_heartbeats' AND at >= '$since'")
    api=null
    if $MIXED; then
        wait "$WRK_PID" || true
        out=$(cat "$WORK/wrk.out"); cat "$WORK/wrk.out" >>"$WORK/wrk.log"
        api_rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
        api_p50=$(wrk_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
        api_p99=$(wrk_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
        api_non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' <<<"$out")
        api="{\"endpoint\":\"list\",\"connections\":$API_CONNECTIONS,\"target_rps\":$API_RATE,\"rps\":${api_rps:-0},\"p50_ms\":$api_p50,\"p99_ms\":$api_p99,\"non_2xx\":${api_non2xx:-0}}"
        say "rate $RATE/s: API list alongside: ${api_rps:-0} requests/s, p50 $api_p50 ms, p99 $api_p99 ms, non-2xx ${api_non2xx:-0}"
    fi
    stop_cp
    written=$(json_get "$SIM" heartbeats_written)
    offered=$(written_rate "$a" "$b")
    stored=$(awk -v a="$i0" -v b="$i1" -v s="$secs" 'BEGIN {printf "%.1f", (b - a) / s}')
    superseded=$(awk -v a="$s_0" -v b="$s_1" -v s="$secs" 'BEGIN {printf "%.1f", (b - a) / s}')
    rows=$(awk -v t="$stored" -v u="$superseded" 'BEGIN {printf "%.1f", t - u}')
    lost=$(awk -v w="$written" -v s="$stored_total" 'BEGIN {printf "%d", w - s}')
    read -r p50 p99 samples < <(psql -qXAt -F' ' "$DB_URL" -c \
        "SELECT round(coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), 0)::numeric, 1),
                round(coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), 0)::numeric, 1), count(*)
         FROM bench_latency")
    cp_cpu=$(pct "$c0" "$c1" "$secs"); br_cpu=$(pct "$b0" "$b1" "$secs")
    pg_cpu=$(pct "$((p0 + q1))" "$((p1 + q0))" "$secs"); sim_cpu=$(pct "$s0" "$s1" "$secs")
    sampler_cpu=$(pct "$q0" "$q1" "$secs")
    ratio=$(awk -v s="$stored" -v c="$ceiling" 'BEGIN {printf "%.2f", (c > 0) ? s / c : 0}')
    sustained=$(awk -v p="$p99" -v l="$lost" -v n="$samples" -v f="$false_offline" 'BEGIN {print (n > 0 && p <= 1000 && l <= 0 && f == 0) ? "true" : "false"}')
    say "rate $RATE/s: stored $stored/s of $offered/s written ($superseded/s of them superseded, $rows rows/s written);" \
        "ceiling $ceiling/s (ratio $ratio); lost $lost of $written (superseded $superseded_total); false offline $false_offline;" \
        "latency p50 ${p50} ms p99 ${p99} ms ($samples samples); CPU: control plane ${cp_cpu}%, broker ${br_cpu}%," \
        "PostgreSQL ${pg_cpu}% (and ${sampler_cpu}% for the latency sampler), simulator ${sim_cpu}%; control plane RSS ${rss} MiB; load $load"
    RESULTS+=("{\"rate\":$RATE,\"offered_per_s\":$offered,\"ceiling_per_s\":$ceiling,\"stored_per_s\":$stored,\"ratio\":$ratio,\"superseded_per_s\":$superseded,\"rows_per_s\":$rows,\"written\":$written,\"lost\":$lost,\"superseded\":$superseded_total,\"false_offline\":$false_offline,\"p50_ms\":$p50,\"p99_ms\":$p99,\"latency_samples\":$samples,\"cp_cpu_pct\":$cp_cpu,\"broker_cpu_pct\":$br_cpu,\"pg_cpu_pct\":$pg_cpu,\"sampler_pg_cpu_pct\":$sampler_cpu,\"sim_cpu_pct\":$sim_cpu,\"ceiling_broker_cpu_pct\":$ceiling_broker_cpu,\"cp_rss_mib\":$rss,\"all_connected_s\":$CONNECT_S,\"load1\":$load,\"sustained\":$sustained,\"api\":$api}")
done

best=0
for r in "${RESULTS[@]}"; do
    if [ "$(json_get "$r" sustained)" = True ]; then
        rate=$(json_get "$r" rate)
        [ "$rate" -gt "$best" ] && best=$rate
    fi
done
echo
echo "Ingest benchmark — $APPLIANCES appliances over mTLS, window ${WINDOW} s per rate, $PROFILE build"
echo "machine: $MACHINE"
printf '%-8s %-10s %-10s %-10s %-6s %-7s %-9s %-9s %-6s %-6s %-6s %-6s %-8s\n' \
    rate offered/s ceiling/s stored/s ratio lost p50_ms p99_ms cp% mqtt% pg% sim% cp_MiB
for r in "${RESULTS[@]}"; do
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("%-8s %-10s %-10s %-10s %-6s %-7s %-9s %-9s %-6s %-6s %-6s %-6s %-8s" % tuple(r[k] for k in ["rate","offered_per_s","ceiling_per_s","stored_per_s","ratio","lost","p50_ms","p99_ms","cp_cpu_pct","broker_cpu_pct","pg_cpu_pct","sim_cpu_pct","cp_rss_mib"]))' "$r"
done
$MIXED && for r in "${RESULTS[@]}"; do python3 -c 'import json,sys; r=json.loads(sys.argv[1]); a=r["api"]; print("rate %s: API list %s requests/s (target %s), p50 %s ms, p99 %s ms, non-2xx %s" % (r["rate"], a["rps"], a["target_rps"], a["p50_ms"], a["p99_ms"], a["non_2xx"]))' "$r"; done
echo "highest sustained rate (p99 ≤ 1 s, nothing lost but superseded, no false offline): $best/s; provisioning $APPLIANCES appliances took ${PROVISION_S} s"
echo "{\"bench\":\"ingest\",\"appliances\":$APPLIANCES,\"window_s\":$WINDOW,\"sample\":$SAMPLE,\"settle_s\":$SETTLE,\"pg\":\"$PG_DESC\",\"mixed\":$MIXED,\"profile\":\"$PROFILE\",\"machine\":\"$MACHINE\",\"provision_s\":$PROVISION_S,\"best_sustained_rate\":$best,\"rates\":[$(IFS=,; echo "${RESULTS[*]}")]}"
