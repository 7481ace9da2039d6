#!/usr/bin/env bash
# Webhook offline storm: N simulated appliances connected and heartbeating, then the broker
# is stopped (SIGTERM) so every one goes offline at once: the control plane learns it from
# the last wills Mosquitto publishes as it shuts down (while the control plane's own
# connection lasts) and, for the rest, from the presence sweeper (missed heartbeats); each
# `appliance.offline` event goes to the tenant's endpoint subscribed to `appliance.*`. Once
# all N are offline in PostgreSQL the broker starts again (no heartbeat can arrive while it
# is down), so the fleet's reconnection, its `appliance.online` events and its heartbeats
# meet the deliveries still under way. Three modes, one after the other on the same stack:
#   a  no webhook endpoint (the events are still written and sequenced)
#   b  an endpoint to a fast receiver (lib/webhook-sink.py: 204 at once, threads)
#   c  an endpoint to a receiver that accepts connections and never answers (every
#      attempt times out after webhooks.timeout_ms, 10 s)
# Per mode: broker stop → all offline in PostgreSQL; for b, broker stop → every
# `appliance.offline` delivered (distinct webhook-ids counted by the receiver, which checks
# every signature with the endpoint's secret: bad signatures must be 0), deliveries per
# second, duplicates, order violations, event → arrival latency; heartbeat ingest over
# --window s from the broker's restart and over --steady s once the whole fleet is back
# (hearth_heartbeats_ingested_total per second against the simulator's heartbeats_written,
# the writer's batches from hearth_ingest_batch_seconds), with the ratios b/a and c/a;
# webhook attempts by outcome; CPU-seconds of the control plane and of PostgreSQL (its
# database's backends) from the stop to the window's end, for b per 1,000 deliveries, also
# net of mode a's; slow statements and other warnings in the control plane's log. After a
# mode its endpoint is disabled, then deleted (timed: the delete waits for a claim holding
# its deliveries).
#
#   deploy/bench/webhooks.sh [--appliances N] [--ramp C] [--heartbeat-interval-s S]
#                            [--offline-after-s S] [--settle S] [--window S] [--steady S]
#                            [--timeout S] [--analyze-every S] [--pg-setting NAME=VALUE]…
#                            [--mqtt-port P] [--api-port P] [--sink-port P]
#
# --offline-after-s sets presence.offline_after_s (default 30: three heartbeat intervals of
# the default 10 s, as the product's 90 s are for the agent's 30 s); the sweep runs every
# 10 s. --timeout bounds each wait (all offline, all delivered, all back online).
# Diagnoses, not product settings: --analyze-every runs ANALYZE on the database every S s
# (a stand-in for autovacuum where the server runs without it, as with
# HEARTH_BENCH_PG_SETTINGS=autovacuum=off; its setting is shown);
# --pg-setting sets a PostgreSQL setting on the control plane's connections, e.g.
# plan_cache_mode=force_custom_plan. Prints a summary and one JSON
# line last. Its own database (hearth_bench_webhooks) and ports (the receivers on
# --sink-port and the next one); everything it starts is stopped on exit.
set -euo pipefail

APPLIANCES=10000
RAMP=200
INTERVAL=10
OFFLINE_AFTER=30
SETTLE=10
WINDOW=60
STEADY=30
TIMEOUT=300
ANALYZE_EVERY=0
PG_SETTINGS=()
MQTT_PORT=18888
API_PORT=18448
SINK_PORT=18458
while [ $# -gt 0 ]; do
    case $1 in
        --appliances) APPLIANCES=$2; shift 2 ;;
        --ramp) RAMP=$2; shift 2 ;;
        --heartbeat-interval-s) INTERVAL=$2; shift 2 ;;
        --offline-after-s) OFFLINE_AFTER=$2; shift 2 ;;
        --settle) SETTLE=$2; shift 2 ;;
        --window) WINDOW=$2; shift 2 ;;
        --steady) STEADY=$2; shift 2 ;;
        --pg-setting) PG_SETTINGS+=("$2"); shift 2 ;;
        --analyze-every) ANALYZE_EVERY=$2; shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --mqtt-port) MQTT_PORT=$2; shift 2 ;;
        --api-port) API_PORT=$2; shift 2 ;;
        --sink-port) SINK_PORT=$2; shift 2 ;;
        -h | --help) sed -n '2,40p' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
BENCH=webhooks
# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"
SINK=$(cd "$(dirname "$0")/lib" && pwd)/webhook-sink.py

build
MACHINE=$(machine)
say "machine: $MACHINE"
LOAD_START=$(load_avg)
export HEARTH_WEBHOOKS__ALLOW_HTTP_LOOPBACK=true
export HEARTH_PRESENCE__OFFLINE_AFTER_S=$OFFLINE_AFTER
HEARTH_SECRETS__KEY=$(head -c 32 /dev/urandom | base64)
export HEARTH_SECRETS__KEY
setup_stack
AUTOVACUUM=$(psql -qXAt "$ADMIN_URL" -c "SHOW autovacuum" 2>/dev/null || echo unknown)
if [ "${#PG_SETTINGS[@]}" -gt 0 ]; then
    # A diagnosis, not a product setting: PostgreSQL settings on the control plane's
    # connections (sqlx's options[NAME]=VALUE URL parameters).
    q=""
    for kv in "${PG_SETTINGS[@]}"; do q+="${q:+&}options[${kv%%=*}]=${kv#*=}"; done
    export HEARTH_DATABASE__URL="$DB_URL?$q"
    say "control plane's PostgreSQL settings: ${PG_SETTINGS[*]}"
fi
start_broker
start_cp
if [ "$ANALYZE_EVERY" != 0 ]; then
    # A stand-in for autovacuum's ANALYZE where the server runs without it.
    say "ANALYZE of the database every ${ANALYZE_EVERY} s"
    while sleep "$ANALYZE_EVERY"; do psql -qX "$DB_URL" -c ANALYZE >/dev/null 2>>"$WORK/analyze.log" || true; done &
    EXTRA_PIDS+=("$!")
fi
bulk_create --tenants 1 --count "$APPLIANCES" --prefix hook
KEY=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tenants"][0]["api_key"])' "$BUNDLE")
say "provisioned $APPLIANCES appliances in ${PROVISION_S} s"

now_ms() { date +%s%3N; }
sql() { psql -qXAt -F' ' "$DB_URL" -c "$1"; }
api() { curl -sS --max-time 60 --cacert "$PKI/ca.crt" -H "Authorization: Bearer $KEY" -H 'content-type: application/json' "$@"; }
hz=$(getconf CLK_TCK)
cpu_s() { awk -v a="$1" -v b="$2" -v hz="$hz" 'BEGIN {printf "%.2f", (b - a) / hz}'; }
metrics_dump() { curl -fsS --cacert "$PKI/ca.crt" "https://localhost:$API_PORT/metrics" >"$1" || : >"$1"; }
# sink_get FILE KEY → a figure of a receiver's stats file ("types.appliance.offline.distinct").
sink_get() {
    python3 - "$1" "$2" <<'PY' 2>/dev/null || echo 0
import json, sys
try:
    v = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    print(0); sys.exit()
parts = sys.argv[2].split(".")
# type names contain a dot: types.<a>.<b>.<field…>
if parts[0] == "types":
    parts = ["types", parts[1] + "." + parts[2]] + parts[3:]
for p in parts:
    v = v.get(p) if isinstance(v, dict) else None
print("null" if v is None else v)
PY
}
# timeline_at MS → the simulator's heartbeats_written at its last row at or before MS: "unix_ms value"
timeline_at() {
    python3 - "$WORK/timeline.jsonl" "$1" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
before = [r for r in rows if r["unix_ms"] <= int(sys.argv[2])]
r = before[-1] if before else rows[0]
print(r["unix_ms"], r["snapshot"]["heartbeats_written"])
PY
}
online_since() { sql "SELECT count(*) FROM appliances WHERE status = 'online' AND last_seen >= to_timestamp($1 / 1000.0)"; }
offline_since() { sql "SELECT count(DISTINCT appliance_id) FROM presence_events WHERE status = 'offline' AND at >= to_timestamp($1 / 1000.0)"; }

# wait_online SINCE_MS → waits until every appliance is online and seen since SINCE_MS;
# prints the seconds it took (or null after --timeout).
wait_online() {
    local t0 n
    t0=$(now_ms)
    while :; do
        n=$(online_since "$1")
        if [ "$n" -ge "$APPLIANCES" ]; then
            awk -v a="$1" -v b="$(now_ms)" 'BEGIN {printf "%.1f\n", (b - a) / 1000}'
            return
        fi
        kill -0 "$SIM_PID" 2>/dev/null || die "the simulator exited (see $WORK/sim.log)"
        [ $(($(now_ms) - t0)) -lt $((TIMEOUT * 1000)) ] || { say "only $n of $APPLIANCES online after ${TIMEOUT} s"; echo null; return; }
        sleep 0.5
    done
}

say "connecting $APPLIANCES appliances at $RAMP/s (heartbeat every ${INTERVAL} s)"
SIM_START=$(now_ms)
"$BIN/hearth-fleet-sim" run --bundle "$BUNDLE" --host 127.0.0.1 --port "$MQTT_PORT" \
    --heartbeat-interval-s "$INTERVAL" --ramp "$RAMP" --timeline "$WORK/timeline.jsonl" --progress-every 10 \
    >"$WORK/sim.json" 2>>"$WORK/sim.log" &
SIM_PID=$!
EXTRA_PIDS+=("$SIM_PID")
limit=$(awk -v n="$APPLIANCES" -v r="$RAMP" 'BEGIN {printf "%d", n / r * 4 + 60}')
while :; do
    sleep 1
    n=$(online_since "$SIM_START")
    [ "$n" -ge "$APPLIANCES" ] && break
    kill -0 "$SIM_PID" 2>/dev/null || die "the simulator exited (see $WORK/sim.log)"
    [ $(($(now_ms) - SIM_START)) -le $((limit * 1000)) ] || die "only $n of $APPLIANCES online after $limit s; lower --ramp"
done
INITIAL_S=$(awk -v a="$SIM_START" -v b="$(now_ms)" 'BEGIN {printf "%.1f", (b - a) / 1000}')
say "all $APPLIANCES online after ${INITIAL_S} s"

SINK_PID=""
ENDPOINT=""
# start_sink MODE PORT STATS → the receiver in the background, its counters in the file
# STATS; an endpoint for it (its secret handed to the receiver in a file), ENDPOINT its id.
start_sink() {
    local mode=$1 port=$2 stats=$3 out code secret_file=$WORK/secret-$1
    port_free "$port" || die "port $port (a receiver) is already in use; pass --sink-port"
    out=$(api -X POST -w '\n%{http_code}' -d "{\"url\":\"http://127.0.0.1:$port/hook\",\"event_types\":[\"appliance.*\"],\"description\":\"bench $mode\"}" \
        "https://localhost:$API_PORT/api/v1/webhooks") || die "POST /api/v1/webhooks failed"
    code=$(tail -n1 <<<"$out")
    [ "$code" = 201 ] || die "POST /api/v1/webhooks answered $code: $(head -n -1 <<<"$out")"
    ENDPOINT=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["endpoint"]["id"])' "$(head -n -1 <<<"$out")")
    (umask 077; python3 -c 'import json,sys; print(json.loads(sys.argv[1])["secret"])' "$(head -n -1 <<<"$out")" >"$secret_file")
    python3 "$SINK" --mode "$mode" --port "$port" --stats-file "$stats" --secret-file "$secret_file" \
        2>>"$WORK/sink-$mode.log" &
    SINK_PID=$!
    EXTRA_PIDS+=("$SINK_PID")
    wait_port "$port" || die "the $mode receiver did not start (see $WORK/sink-$mode.log)"
}
# stop_sink → the endpoint disabled at once (its queue is no longer claimed), then deleted
# with one DELETE. That DELETE waits for any claim holding the endpoint's deliveries and may
# outlast the API's request timeout: then it is not sent again (each timed-out request keeps
# a pool connection until its statement ends) but the endpoint's row is watched until it is
# gone, for up to --timeout s. DELETE_CODE the answer, DELETE_S the seconds until the
# endpoint was gone (null: still there; it stays disabled and the next mode goes on); then
# the receiver stopped.
DELETE_S=null
DELETE_CODE=null
stop_sink() {
    local code t0 deadline
    if [ -n "$ENDPOINT" ]; then
        t0=$(now_ms); deadline=$((t0 + TIMEOUT * 1000))
        code=$(api -X PATCH -o /dev/null -w '%{http_code}' -d '{"enabled":false}' "https://localhost:$API_PORT/api/v1/webhooks/$ENDPOINT") || true
        [ "$code" = 200 ] || say "PATCH {\"enabled\":false} of endpoint $ENDPOINT answered $code"
        DELETE_CODE=$(api -X DELETE -o /dev/null -w '%{http_code}' "https://localhost:$API_PORT/api/v1/webhooks/$ENDPOINT") || true
        DELETE_CODE=$((10#${DELETE_CODE:-0})) # 0: no answer
        case $DELETE_CODE in
            204 | 404) ;;
            *)
                say "DELETE of endpoint $ENDPOINT answered $DELETE_CODE after $(( ($(now_ms) - t0) / 1000 )) s; watching for the endpoint to be gone"
                while [ "$(sql "SELECT count(*) FROM webhook_endpoints WHERE id = '$ENDPOINT'")" != 0 ]; do
                    if [ "$(now_ms)" -ge "$deadline" ]; then
                        say "endpoint $ENDPOINT still there ${TIMEOUT} s after the DELETE; it stays disabled"
                        break
                    fi
                    sleep 1
                done
                ;;
        esac
        [ "$(sql "SELECT count(*) FROM webhook_endpoints WHERE id = '$ENDPOINT'")" != 0 ] \
            || DELETE_S=$(awk -v a="$t0" -v b="$(now_ms)" 'BEGIN {printf "%.1f", (b - a) / 1000}')
        ENDPOINT=""
    fi
    if [ -n "$SINK_PID" ]; then
        kill -TERM "$SINK_PID" 2>/dev/null || true
        wait "$SINK_PID" 2>/dev/null || true
        SINK_PID=""
    fi
}

# metrics_figures BEFORE AFTER SECONDS → one JSON object: ingest and webhook figures between
# two /metrics dumps.
metrics_figures() {
    python3 - "$1" "$2" "$3" <<'PY'
import json, re, sys
def load(path):
    m = {}
    for line in open(path):
        if line.startswith("#") or not line.strip():
            continue
        k, _, v = line.rpartition(" ")
        try:
            m[k] = float(v)
        except ValueError:
            pass
    return m
a, b, secs = load(sys.argv[1]), load(sys.argv[2]), float(sys.argv[3])
d = lambda k: b.get(k, 0.0) - a.get(k, 0.0)
batches = d("hearth_ingest_batch_seconds_count")
buckets = sorted(((float(re.search(r'le="([^"]+)"', k).group(1).replace("+Inf", "inf")), d(k))
                  for k in b if k.startswith("hearth_ingest_batch_seconds_bucket")), key=lambda x: x[0])
def quantile(q):
    if batches <= 0:
        return None
    for le, n in buckets:
        if n >= q * batches:
            return None if le == float("inf") else le
    return None
out = {
    "heartbeats_stored": int(d("hearth_heartbeats_ingested_total")),
    "stored_per_s": round(d("hearth_heartbeats_ingested_total") / secs, 1) if secs > 0 else 0,
    "batches": int(batches),
    "batch_mean_ms": round(d("hearth_ingest_batch_seconds_sum") / batches * 1000, 2) if batches else None,
    "batch_p50_le_ms": (lambda v: None if v is None else round(v * 1000, 1))(quantile(0.5)),
    "batch_p99_le_ms": (lambda v: None if v is None else round(v * 1000, 1))(quantile(0.99)),
    "batch_mean_size": round(d("hearth_ingest_batch_size_sum") / batches, 1) if batches else None,
    "batch_errors": int(d("hearth_ingest_batch_errors_total")),
    "messages_dropped": int(d("hearth_ingest_messages_dropped_total")),
    "events_sequenced": int(d("hearth_events_sequenced_total")),
    "presence_transitions": int(d("hearth_presence_transitions_total")),
    "attempts": {m.group(1): int(d(k)) for k in b for m in [re.match(r'hearth_webhook_attempts_total\{outcome="([^"]+)"\}', k)] if m},
}
print(json.dumps(out, separators=(",", ":")))
PY
}

# sink_n FILE KEY → the figure as a number (0 when missing).
sink_n() { local v; v=$(sink_get "$1" "$2"); case $v in '' | null) echo 0 ;; *) echo "${v%.*}" ;; esac; }

# run_mode MODE → the mode's figures as one JSON object in $WORK/mode-MODE.json (not in a
# subshell: it stops and starts the broker and the receivers, whose pids cleanup needs).
run_mode() {
    local mode=$1 port t_stop t_off t_restart t_end off n deadline load c0 c1 c2 pd0 pd1 pd2 pb0 pb1 sk0 sk1 b0 b1
    local off_s back_s wa ta wb tb st="$WORK/sink-$mode.json" window_end
    DELETE_S=null DELETE_CODE=null
    case $mode in
        a) say "mode a: no webhook endpoint" ;;
        b) start_sink fast "$SINK_PORT" "$st"; say "mode b: endpoint $ENDPOINT → fast receiver on 127.0.0.1:$SINK_PORT" ;;
        c) start_sink blackhole "$((SINK_PORT + 1))" "$st"; say "mode c: endpoint $ENDPOINT → receiver that never answers on 127.0.0.1:$((SINK_PORT + 1))" ;;
    esac
    sleep "$SETTLE"
    n=$(online_since "$(($(now_ms) - OFFLINE_AFTER * 1000))")
    [ "$n" -ge "$APPLIANCES" ] || say "mode $mode: only $n of $APPLIANCES online before the storm"
    load=$(load_avg)
    metrics_dump "$WORK/m-$mode-0"
    c0=$(cpu_ticks "$CP_PID"); pd0=$(pg_sample db); pb0=$(pg_sample bg); b0=$(cpu_ticks "$SIM_PID")
    sk0=0; if [ -n "$SINK_PID" ]; then sk0=$(cpu_ticks "$SINK_PID"); fi
    say "mode $mode: stopping the broker (load $load)"
    t_stop=$(now_ms)
    stop_broker
    # Every appliance offline in PostgreSQL (the sweeper), then the broker back at once.
    deadline=$((t_stop + TIMEOUT * 1000))
    while :; do
        off=$(offline_since "$t_stop")
        [ "$off" -ge "$APPLIANCES" ] && break
        [ "$(now_ms)" -lt "$deadline" ] || die "mode $mode: only $off of $APPLIANCES offline ${TIMEOUT} s after the broker stopped"
        sleep 0.5
    done
    t_off=$(now_ms)
    c1=$(cpu_ticks "$CP_PID"); pd1=$(pg_sample db)
    start_broker
    t_restart=$(now_ms)
    off_s=$(awk -v a="$t_stop" -v b="$t_off" 'BEGIN {printf "%.1f", (b - a) / 1000}')
    say "mode $mode: all $APPLIANCES offline ${off_s} s after the stop; broker restarted; ingest window ${WINDOW} s"
    window_end=$((t_restart + WINDOW * 1000))
    # The window; meanwhile (b) watch for the last offline delivery.
    while [ "$(now_ms)" -lt "$window_end" ]; do
        sleep 0.5
        kill -0 "$CP_PID" 2>/dev/null || die "the control plane exited (see $WORK/control-plane.log)"
    done
    t_end=$(now_ms)
    metrics_dump "$WORK/m-$mode-1"
    c2=$(cpu_ticks "$CP_PID"); pd2=$(pg_sample db); pb1=$(pg_sample bg); b1=$(cpu_ticks "$SIM_PID")
    sk1=0; if [ -n "$SINK_PID" ]; then sk1=$(cpu_ticks "$SINK_PID"); fi
    read -r ta wa < <(timeline_at "$t_restart")
    read -r tb wb < <(timeline_at "$t_end")
    back_s=$(wait_online "$t_restart")
    # The steady window: the whole fleet back and heartbeating, deliveries maybe still going.
    local s0 s1 ts0 ws0 ts1 ws1
    s0=$(now_ms); metrics_dump "$WORK/m-$mode-s0"
    sleep "$STEADY"
    s1=$(now_ms); metrics_dump "$WORK/m-$mode-s1"
    read -r ts0 ws0 < <(timeline_at "$s0")
    read -r ts1 ws1 < <(timeline_at "$s1")
    if [ "$mode" = b ]; then
        while [ "$(sink_n "$st" types.appliance.offline.distinct)" -lt "$APPLIANCES" ]; do
            [ "$(now_ms)" -lt "$deadline" ] || { say "mode b: not every offline event delivered ${TIMEOUT} s after the stop"; break; }
            sleep 0.5
        done
        # The online events too, so that the delivery counts are complete.
        while [ "$(sink_n "$st" types.appliance.online.distinct)" -lt "$APPLIANCES" ]; do
            [ "$(now_ms)" -lt $((t_restart + TIMEOUT * 1000)) ] || { say "mode b: not every online event delivered ${TIMEOUT} s after the restart"; break; }
            sleep 0.5
        done
        sleep 1
    fi
    metrics_dump "$WORK/m-$mode-2"
    # From PostgreSQL: the offline events of this storm and their deliveries.
    local pg
    pg=$(sql "
        WITH ev AS (SELECT * FROM events WHERE type = 'appliance.offline' AND at >= to_timestamp($t_stop / 1000.0)),
             pe AS (SELECT * FROM presence_events WHERE status = 'offline' AND at >= to_timestamp($t_stop / 1000.0)),
             d AS (SELECT d.*, e.type, e.at AS event_at FROM webhook_deliveries d JOIN events e ON e.seq = d.event_seq
                   WHERE d.endpoint_id = NULLIF('$ENDPOINT', '')::uuid)
        SELECT json_build_object(
            'offline_events', (SELECT count(*) FROM ev),
            'offline_events_appliances', (SELECT count(DISTINCT appliance_id) FROM ev),
            'offline_reasons', (SELECT json_object_agg(reason, n) FROM (SELECT reason, count(*) AS n FROM pe GROUP BY reason) r),
            'offline_first_s', (SELECT round((extract(epoch FROM min(at)) * 1000 - $t_stop)::numeric / 1000, 2) FROM pe),
            'offline_last_s', (SELECT round((extract(epoch FROM max(at)) * 1000 - $t_stop)::numeric / 1000, 2) FROM pe),
            'offline_sweeps', (SELECT count(DISTINCT at) FROM pe),
            'offline_unsequenced', (SELECT count(*) FROM ev WHERE position IS NULL),
            'deliveries', (SELECT json_object_agg(k, n) FROM (SELECT type || ':' || state AS k, count(*) AS n FROM d GROUP BY 1) s),
            'delivery_attempts', (SELECT coalesce(sum(attempts), 0) FROM d),
            'deliveries_retried', (SELECT count(*) FROM d WHERE attempts > 1),
            'max_attempts', (SELECT coalesce(max(attempts), 0) FROM d),
            'offline_delivered_p50_s', (SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - event_at))::numeric, 2) FROM d WHERE type = 'appliance.offline' AND state = 'delivered'),
            'offline_delivered_p99_s', (SELECT round(percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - event_at))::numeric, 2) FROM d WHERE type = 'appliance.offline' AND state = 'delivered'),
            'offline_delivered_max_s', (SELECT round(max(extract(epoch FROM delivered_at - event_at))::numeric, 2) FROM d WHERE type = 'appliance.offline' AND state = 'delivered'),
            'last_errors', (SELECT json_agg(DISTINCT left(last_error, 120)) FROM d WHERE last_error IS NOT NULL))")
    if [ -n "$SINK_PID" ]; then sleep 0.5; fi
    stop_sink
    local sink="{}"
    [ -f "$st" ] && sink=$(cat "$st")
    local m_win m_all m_steady
    m_win=$(metrics_figures "$WORK/m-$mode-0" "$WORK/m-$mode-1" "$(awk -v a="$t_restart" -v b="$t_end" 'BEGIN {print (b - a) / 1000}')")
    m_steady=$(metrics_figures "$WORK/m-$mode-s0" "$WORK/m-$mode-s1" "$(awk -v a="$s0" -v b="$s1" 'BEGIN {print (b - a) / 1000}')")
    m_all=$(metrics_figures "$WORK/m-$mode-0" "$WORK/m-$mode-2" 1)
    MODE=$mode LOAD=$load T_STOP=$t_stop T_OFF=$t_off T_RESTART=$t_restart T_END=$t_end OFF_S=$off_s BACK_S=$back_s \
        OFFERED=$((wb - wa)) OFFERED_MS=$((tb - ta)) CP_DOWN=$(cpu_s "$c0" "$c1") CP_SPAN=$(cpu_s "$c0" "$c2") \
        PG_DOWN=$(cpu_s 0 "$(pg_delta "$pd0" "$pd1")") PG_SPAN=$(cpu_s 0 "$(pg_delta "$pd0" "$pd2")") \
        PG_BG_SPAN=$(cpu_s 0 "$(pg_delta "$pb0" "$pb1")") SIM_SPAN=$(cpu_s "$b0" "$b1") SINK_SPAN=$(cpu_s "$sk0" "$sk1") \
        M_WIN=$m_win M_ALL=$m_all M_STEADY=$m_steady S_OFFERED=$((ws1 - ws0)) S_OFFERED_MS=$((ts1 - ts0)) \
        S_SECS=$(awk -v a="$s0" -v b="$s1" 'BEGIN {printf "%.1f", (b - a) / 1000}') DELETE_S=$DELETE_S DELETE_CODE=$DELETE_CODE PG=$pg SINK_STATS=$sink N=$APPLIANCES python3 - >"$WORK/mode-$mode.json" <<'PY'
import json, os
e = os.environ
sink, pg, mw, ma = json.loads(e["SINK_STATS"]), json.loads(e["PG"]), json.loads(e["M_WIN"]), json.loads(e["M_ALL"])
n, t_stop, t_restart = int(e["N"]), int(e["T_STOP"]) / 1000, int(e["T_RESTART"]) / 1000
num = lambda k: None if e[k] == "null" else json.loads(e[k])
offered_s = int(e["OFFERED_MS"]) / 1000
mw["offered_per_s"] = round(int(e["OFFERED"]) / offered_s, 1) if offered_s > 0 else 0
mw["stored_over_offered"] = round(mw["stored_per_s"] / mw["offered_per_s"], 3) if mw["offered_per_s"] else None
ms = json.loads(e["M_STEADY"])
s_offered_s = int(e["S_OFFERED_MS"]) / 1000
ms["offered_per_s"] = round(int(e["S_OFFERED"]) / s_offered_s, 1) if s_offered_s > 0 else 0
ms["stored_over_offered"] = round(ms["stored_per_s"] / ms["offered_per_s"], 3) if ms["offered_per_s"] else None
ms["window_s"] = num("S_SECS")
r = {"mode": e["MODE"], "load1": num("LOAD"), "all_offline_s": num("OFF_S"), "back_online_s": num("BACK_S"),
     "window_s": round((int(e["T_END"]) - int(e["T_RESTART"])) / 1000, 1), "ingest": mw, "steady": ms,
     "endpoint_delete_s": num("DELETE_S"), "endpoint_delete_http": num("DELETE_CODE"),
     "attempts": ma["attempts"], "events_sequenced": ma["events_sequenced"], "pg": pg,
     "cpu_s": {"cp_down": num("CP_DOWN"), "pg_down": num("PG_DOWN"), "cp": num("CP_SPAN"), "pg": num("PG_SPAN"),
               "pg_bg": num("PG_BG_SPAN"), "sim": num("SIM_SPAN"), "sink": num("SINK_SPAN")},
     "cpu_span_s": round((int(e["T_END"]) - int(e["T_STOP"])) / 1000, 1)}
# Deliveries within the CPU span (broker stop → window end).
r["delivered_in_span"] = mw["attempts"].get("delivered", 0)
if sink:
    t = sink.get("types", {})
    off, on = t.get("appliance.offline", {}), t.get("appliance.online", {})
    r["receiver"] = {k: sink.get(k) for k in ("requests", "connections", "distinct", "duplicates", "bad_signatures",
                                              "missing_headers", "id_mismatch", "bad_body", "out_of_order")}
    r["receiver"]["offline"] = off.get("distinct", 0)
    r["receiver"]["online"] = on.get("distinct", 0)
    if off.get("distinct"):
        span = off["last_unix"] - off["first_unix"]
        r["offline_delivered"] = {
            "all": off["distinct"] >= n,
            "from_stop_s": round(off["last_unix"] - t_stop, 1),
            "first_from_stop_s": round(off["first_unix"] - t_stop, 1),
            "first_to_last_s": round(span, 1),
            "per_s": round(off["distinct"] / span, 1) if span > 0 else None,
            "peak_per_s": off.get("peak_per_s"),
            "latency_s": off.get("latency_s"),
        }
    if on.get("distinct"):
        span = on["last_unix"] - on["first_unix"]
        r["online_delivered"] = {"all": on["distinct"] >= n, "from_restart_s": round(on["last_unix"] - t_restart, 1),
                                 "per_s": round(on["distinct"] / span, 1) if span > 0 else None,
                                 "peak_per_s": on.get("peak_per_s"),
                                 "latency_s": on.get("latency_s")}
print(json.dumps(r, separators=(",", ":")))
PY
}

RESULTS=()
for mode in a b c; do
    run_mode "$mode"
    RESULTS+=("$(tail -n1 "$WORK/mode-$mode.json")")
    say "mode $mode: $(cat "$WORK/mode-$mode.json")"
done
LOAD_END=$(load_avg)
kill -TERM "$SIM_PID" 2>/dev/null || true
wait "$SIM_PID" 2>/dev/null || true
SIM=$(tail -n1 "$WORK/sim.json")
# The control plane's warnings and errors over the whole run, counted by message (its
# fields cut off); "MQTT connection lost" is expected while the broker is down.
sed -E 's/\x1b\[[0-9;]*m//g' "$WORK/control-plane.log" | grep -E '^[^ ]+ +(WARN|ERROR) ' \
    | sed -E 's/^[^ ]+ +//; s/ [a-z_.]+=.*//' | sort | uniq -c | sort -rn >"$WORK/cp-warnings.txt" || true
CP_LOG_LINES=$(awk '{n += $1} END {print n + 0}' "$WORK/cp-warnings.txt")
CP_LOG_UNEXPECTED=$(awk '!/MQTT connection lost/ {n += $1} END {print n + 0}' "$WORK/cp-warnings.txt")
CP_LOG_KINDS=$(head -n 8 "$WORK/cp-warnings.txt")
# sqlx's slow statements (over 1 s), by statement: how many, the longest.
SLOW_JSON=$(sed -E 's/\x1b\[[0-9;]*m//g' "$WORK/control-plane.log" | python3 -c '
import json, re, sys
out = {}
for line in sys.stdin:
    if "slow statement" not in line:
        continue
    m, t = re.search(r"summary=\"([^\"]*)\"", line), re.search(r" elapsed_secs=([0-9.]+)", line)
    if m and t:
        k = m.group(1).replace(" …", "").strip()
        o = out.setdefault(k, {"count": 0, "max_s": 0.0})
        o["count"] += 1
        o["max_s"] = max(o["max_s"], round(float(t.group(1)), 1))
print(json.dumps(out))')
PG_SETTINGS_S="${PG_SETTINGS[*]:-}"

export MACHINE PROFILE APPLIANCES INTERVAL OFFLINE_AFTER WINDOW PROVISION_S INITIAL_S LOAD_START LOAD_END CP_LOG_LINES \
    CP_LOG_UNEXPECTED CP_LOG_KINDS SIM SLOW_JSON PG_SETTINGS_S AUTOVACUUM ANALYZE_EVERY
RESULTS_JSON="[$(IFS=,; echo "${RESULTS[*]}")]" python3 - <<'PY'
import json, os
e = os.environ
modes = {m["mode"]: m for m in json.loads(e["RESULTS_JSON"])}
a, b, c = modes["a"], modes["b"], modes["c"]
def ratio(x, y):
    return round(x / y, 3) if (x is not None and y) else None
ing = lambda m, k: m["ingest"].get(k)
KEYS = ("stored_per_s", "stored_over_offered", "batch_mean_ms", "batch_p99_le_ms")
ratios = {f"{x}_over_a": {k: ratio(ing(modes[x], k), ing(a, k)) for k in KEYS} for x in ("b", "c")}
st = lambda m, k: m["steady"].get(k)
steady_ratios = {f"{x}_over_a": {k: ratio(st(modes[x], k), st(a, k)) for k in KEYS} for x in ("b", "c")}
dl = b.get("delivered_in_span") or 0
per_k = lambda v: round(v / dl * 1000, 2) if dl else None
# Net of mode a: a's CPU over the same span length (its CPU per second × b's span).
net = lambda k: (b["cpu_s"][k] - a["cpu_s"][k] / a["cpu_span_s"] * b["cpu_span_s"]) if a["cpu_span_s"] else None
cpu_per_1k = {"cp": per_k(b["cpu_s"]["cp"]), "pg": per_k(b["cpu_s"]["pg"]),
              "cp_net_of_a": per_k(net("cp")), "pg_net_of_a": per_k(net("pg"))}
n = int(e["APPLIANCES"])
print()
print(f"Webhook offline storm — {n} appliances (heartbeat every {e['INTERVAL']} s, offline after {e['OFFLINE_AFTER']} s), {e['PROFILE']} build")
print(f"machine: {e['MACHINE']}; load: start {e['LOAD_START']}, before each storm a {a['load1']} b {b['load1']} c {c['load1']}, end {e['LOAD_END']}")
print(f"provisioning {e['PROVISION_S']} s; all online {e['INITIAL_S']} s after starting the simulator")
print(f"PostgreSQL: autovacuum {e['AUTOVACUUM']}; ANALYZE by this script every {e['ANALYZE_EVERY']} s (0: never); "
      f"settings on the control plane's connections: {e['PG_SETTINGS_S'] or 'none'}")
for m in (a, b, c):
    pg = m["pg"]
    print(f"mode {m['mode']}: broker stop → all {n} offline in PostgreSQL {m['all_offline_s']} s "
          f"({pg['offline_events']} offline events, {pg['offline_sweeps']} sweep(s) at {pg['offline_first_s']}–{pg['offline_last_s']} s, reasons {pg['offline_reasons']}); "
          f"back online {m['back_online_s']} s after the restart")
    i = m["ingest"]
    print(f"  ingest over {m['window_s']} s from the restart: stored {i['stored_per_s']}/s of {i['offered_per_s']}/s offered "
          f"(ratio {i['stored_over_offered']}); {i['batches']} batches, mean {i['batch_mean_ms']} ms (p50 ≤ {i['batch_p50_le_ms']} ms, p99 ≤ {i['batch_p99_le_ms']} ms), "
          f"mean size {i['batch_mean_size']}; batch errors {i['batch_errors']}, dropped {i['messages_dropped']}")
    i = m["steady"]
    print(f"  ingest over {i['window_s']} s once all were back (steady): stored {i['stored_per_s']}/s of {i['offered_per_s']}/s offered "
          f"(ratio {i['stored_over_offered']}); {i['batches']} batches, mean {i['batch_mean_ms']} ms (p50 ≤ {i['batch_p50_le_ms']} ms, p99 ≤ {i['batch_p99_le_ms']} ms), "
          f"mean size {i['batch_mean_size']}; webhook attempts meanwhile {i['attempts'] or {}}")
    print(f"  webhook attempts (stop → end): {m['attempts'] or {}}; deliveries in PostgreSQL: {pg['deliveries'] or {}}; retried {pg['deliveries_retried']}, max attempts {pg['max_attempts']}")
    print(f"  CPU-s from the stop to the window's end ({m['cpu_span_s']} s): control plane {m['cpu_s']['cp']}, PostgreSQL {m['cpu_s']['pg']} "
          f"(background {m['cpu_s']['pg_bg']}), simulator {m['cpu_s']['sim']}, receiver {m['cpu_s']['sink']}")
    if "receiver" in m:
        r = m["receiver"]
        print(f"  receiver: {r['requests']} requests on {r['connections']} connections; distinct offline {r['offline']}, online {r['online']}; "
              f"duplicates {r['duplicates']}, bad signatures {r['bad_signatures']}, id mismatches {r['id_mismatch']}, out of order {r['out_of_order']}")
    if "offline_delivered" in m:
        d = m["offline_delivered"]
        print(f"  offline delivered: {'all' if d['all'] else 'NOT all'}; broker stop → last {d['from_stop_s']} s (first {d['first_from_stop_s']} s), "
              f"{d['per_s']} deliveries/s over {d['first_to_last_s']} s (peak {d['peak_per_s']} in one second); event → arrival {d['latency_s']}; "
              f"in PostgreSQL event → delivered p50 {m['pg']['offline_delivered_p50_s']} s p99 {m['pg']['offline_delivered_p99_s']} s max {m['pg']['offline_delivered_max_s']} s")
    if "online_delivered" in m:
        d = m["online_delivered"]
        print(f"  online delivered: {'all' if d['all'] else 'NOT all'}; restart → last {d['from_restart_s']} s, "
              f"{d['per_s']} deliveries/s from the first to the last (peak {d['peak_per_s']} in one second); event → arrival {d['latency_s']}")
    if m["pg"].get("last_errors"):
        print(f"  last errors: {m['pg']['last_errors'][:3]}")
print(f"ingest ratios, {a['window_s']} s from the restart: b/a {ratios['b_over_a']}; c/a {ratios['c_over_a']}")
print(f"ingest ratios, steady: b/a {steady_ratios['b_over_a']}; c/a {steady_ratios['c_over_a']}")
for m in (b, c):
    if m.get("endpoint_delete_s") is not None:
        print(f"mode {m['mode']}: disabling and deleting the endpoint took {m['endpoint_delete_s']} s (DELETE answered {m['endpoint_delete_http']})")
    elif m.get("endpoint_delete_http") is not None:
        print(f"mode {m['mode']}: the endpoint was NOT deleted (DELETE answered {m['endpoint_delete_http']}); left disabled")
print(f"CPU-s per 1,000 deliveries (mode b, {dl} delivered stop → window end): control plane {cpu_per_1k['cp']}, PostgreSQL {cpu_per_1k['pg']}; "
      f"net of mode a: control plane {cpu_per_1k['cp_net_of_a']}, PostgreSQL {cpu_per_1k['pg_net_of_a']}")
print(f"control plane log: {e['CP_LOG_LINES']} WARN/ERROR lines, {e['CP_LOG_UNEXPECTED']} of them other than \"MQTT connection lost\" (the broker down)")
for line in e["CP_LOG_KINDS"].splitlines():
    print("  " + line.strip())
for k, v in json.loads(e["SLOW_JSON"] or "{}").items():
    print(f"  slow statement {k!r}: {v['count']} times, longest {v['max_s']} s")
sim = json.loads(e["SIM"]) if e.get("SIM") else {}
print(json.dumps({
    "bench": "webhooks", "appliances": n, "profile": e["PROFILE"], "machine": e["MACHINE"],
    "heartbeat_interval_s": float(e["INTERVAL"]), "offline_after_s": float(e["OFFLINE_AFTER"]), "window_s": float(e["WINDOW"]),
    "provision_s": json.loads(e["PROVISION_S"]), "initial_online_s": json.loads(e["INITIAL_S"]),
    "load1_start": json.loads(e["LOAD_START"]), "load1_end": json.loads(e["LOAD_END"]),
    "offline_delivered_s": b.get("offline_delivered", {}).get("from_stop_s"),
    "offline_all_delivered": b.get("offline_delivered", {}).get("all", False),
    "deliveries_per_s": b.get("offline_delivered", {}).get("per_s"),
    "duplicates": b.get("receiver", {}).get("duplicates"), "bad_signatures": b.get("receiver", {}).get("bad_signatures"),
    "ingest_ratios": ratios, "steady_ingest_ratios": steady_ratios, "cpu_s_per_1k_deliveries": cpu_per_1k,
    "slow_statements": json.loads(e["SLOW_JSON"] or "{}"), "pg_settings": e["PG_SETTINGS_S"].split(),
    "autovacuum": e["AUTOVACUUM"], "analyze_every_s": float(e["ANALYZE_EVERY"]),
    "cp_log_warn_error_lines": int(e["CP_LOG_LINES"] or 0), "cp_log_unexpected_lines": int(e["CP_LOG_UNEXPECTED"] or 0), "sim_connection_errors": sim.get("connection_errors"),
    "modes": [a, b, c],
}, separators=(",", ":"), ensure_ascii=False))
PY
read -r bad offline < <(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])).get("receiver", {}); print(r.get("bad_signatures", 0), r.get("offline", 0))' "$WORK/mode-b.json")
[ "$bad" = 0 ] || die "mode b: $bad deliveries with a bad signature"
[ "$offline" -ge "$APPLIANCES" ] || die "mode b: only $offline of $APPLIANCES offline events delivered"
