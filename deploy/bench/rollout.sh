#!/usr/bin/env bash
# Fleet rollout: N simulated appliances connected and heartbeating, then one operator
# rollout of a catalog task (dns.record.add) to all of them in waves of 1/10/50/100 %
# (gate: the open wave all finished; abort: above --failure-percent of at least
# --min-finished finished), started at most --max-per-minute.
#   run A  no appliance fails: the time from creation to `succeeded`; executions started
#          per second (rollout_executions.started_at) and tasks dispatched per second
#          (tasks.dispatched_at), overall and the peak second, against the configured
#          rate; CPU-seconds of the control plane and PostgreSQL over the rollout and per
#          1,000 executions, also net of the heartbeats' share (CPU per second over
#          --baseline s of heartbeats alone before and after, the mean); heartbeats stored
#          (hearth_heartbeats_ingested_total) against offered (heartbeats_written).
#   run B  the simulator restarted with --failure-share of the appliances failing every
#          task (the same bundle): the rollout must abort inside its first wave; its state
#          and reason, the time to abort, executions and tasks started (about the first
#          wave), started after the abort (none), cancelled.
#
#   deploy/bench/rollout.sh [--appliances N] [--ramp C] [--settle S] [--baseline S]
#                           [--timeout S] [--heartbeat-interval-s S] [--max-per-minute M]
#                           [--failure-share F] [--failure-percent P] [--min-finished K]
#                           [--mqtt-port P] [--api-port P]
#
# Each run waits until every appliance is online in PostgreSQL, then --settle seconds;
# --timeout bounds each rollout. Times come from the rollout's created_at and finished_at
# (its state is polled with psql once a second). PostgreSQL's CPU is its database's
# backends (the server's background processes apart). Prints a summary and one JSON line
# last. Own database (hearth_bench_rollout) and ports; all it starts is stopped on exit.
set -euo pipefail

APPLIANCES=10000
RAMP=200
SETTLE=10
BASELINE=30
TIMEOUT=600
INTERVAL=30
MAX_PER_MINUTE=6000
FAILURE_SHARE=0.2
FAILURE_PERCENT=5
MIN_FINISHED=20
MQTT_PORT=18887
API_PORT=18447
while [ $# -gt 0 ]; do
    case $1 in
        --appliances) APPLIANCES=$2; shift 2 ;;
        --ramp) RAMP=$2; shift 2 ;;
        --settle) SETTLE=$2; shift 2 ;;
        --baseline) BASELINE=$2; shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --heartbeat-interval-s) INTERVAL=$2; shift 2 ;;
        --max-per-minute) MAX_PER_MINUTE=$2; shift 2 ;;
        --failure-share) FAILURE_SHARE=$2; shift 2 ;;
        --failure-percent) FAILURE_PERCENT=$2; shift 2 ;;
        --min-finished) MIN_FINISHED=$2; shift 2 ;;
        --mqtt-port) MQTT_PORT=$2; shift 2 ;;
        --api-port) API_PORT=$2; shift 2 ;;
        -h | --help) sed -n '2,27p' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
BENCH=rollout
# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

build
MACHINE=$(machine)
say "machine: $MACHINE"
LOAD_START=$(load_avg)
setup_stack
start_broker
start_cp
bulk_create --tenants 1 --count "$APPLIANCES" --prefix rollout
say "provisioned $APPLIANCES appliances in ${PROVISION_S} s"
TOKEN=$("$BIN/hearth-control-plane" operator create --role admin bench-rollout 2>>"$WORK/control-plane.log" \
    | sed -n 's/^operator_token=//p')
[ -n "$TOKEN" ] || die "could not create an operator token (see $WORK/control-plane.log)"

now_ms() { date +%s%3N; }
sql() { psql -qXAt -F' ' "$DB_URL" -c "$1"; }

# sim_start [FLAGS…] → the simulator in the background (SIM_PID, its counters once a
# second in $WORK/timeline.jsonl), then waits until every appliance is connected, online in
# PostgreSQL and seen since the start, and --settle seconds more.
sim_start() {
    : >"$WORK/timeline.jsonl"
    local since online limit t0=$SECONDS
    since=$(now_ms)
    "$BIN/hearth-fleet-sim" run --bundle "$BUNDLE" --host 127.0.0.1 --port "$MQTT_PORT" \
        --heartbeat-interval-s "$INTERVAL" --ramp "$RAMP" --timeline "$WORK/timeline.jsonl" --progress-every 10 \
        "$@" >"$WORK/sim.json" 2>>"$WORK/sim.log" &
    SIM_PID=$!
    EXTRA_PIDS+=("$SIM_PID")
    limit=$(awk -v n="$APPLIANCES" -v r="$RAMP" 'BEGIN {printf "%d", n / r * 4 + 60}')
    while :; do
        sleep 1
        online=$(sql "SELECT count(*) FROM appliances WHERE status = 'online' AND last_seen >= to_timestamp($since / 1000.0)")
        [ "$online" -ge "$APPLIANCES" ] && break
        kill -0 "$SIM_PID" 2>/dev/null || die "the simulator exited (see $WORK/sim.log)"
        [ $((SECONDS - t0)) -le "$limit" ] || die "only $online of $APPLIANCES online after $limit s; lower --ramp"
    done
    say "all $APPLIANCES online after $((SECONDS - t0)) s; settling ${SETTLE} s"
    sleep "$SETTLE"
}

sim_stop() {
    kill -TERM "$SIM_PID" 2>/dev/null || true
    wait "$SIM_PID" || true
    SIM=$(tail -n1 "$WORK/sim.json")
}

# timeline_at MS KEY → "unix_ms value" of the simulator's last timeline row at or before MS.
timeline_at() {
    python3 - "$WORK/timeline.jsonl" "$1" "$2" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
t, key = int(sys.argv[2]), sys.argv[3]
before = [r for r in rows if r["unix_ms"] <= t]
r = before[-1] if before else rows[0]
print(r["unix_ms"], r["snapshot"][key])
PY
}

POLICY="{\"waves\":{\"percent\":[1,10,50,100]},\"gate\":{\"finished_percent\":100},\"abort\":{\"failure_percent\":$FAILURE_PERCENT,\"min_finished\":$MIN_FINISHED},\"max_per_minute\":$MAX_PER_MINUTE}"

# create NAME → the new rollout's id
create() {
    local body out code
    body="{\"name\":\"$1\",\"payload\":{\"task\":{\"action\":\"dns.record.add\",\"params\":{\"hostname\":\"printer.home\",\"ip\":\"192.168.1.50\"}}},\"policy\":$POLICY}"
    out=$(curl -sS --cacert "$PKI/ca.crt" -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
        -X POST -d "$body" -w '\n%{http_code}' "https://localhost:$API_PORT/api/v1/admin/rollouts") \
        || die "POST /api/v1/admin/rollouts failed"
    code=$(tail -n1 <<<"$out")
    [ "$code" = 201 ] || die "POST /api/v1/admin/rollouts answered $code: $(head -n -1 <<<"$out")"
    json_get "$(head -n -1 <<<"$out")" id
}

get_rollout() {
    curl -fsS --cacert "$PKI/ca.crt" -H "Authorization: Bearer $TOKEN" "https://localhost:$API_PORT/api/v1/admin/rollouts/$1"
}

# wait_done ID → its state once it is no longer scheduled, running or waiting (or --timeout)
wait_done() {
    local state deadline=$((SECONDS + TIMEOUT))
    while :; do
        state=$(sql "SELECT state FROM rollouts WHERE id = '$1'")
        case $state in succeeded | aborted | cancelled) break ;; esac
        [ "$SECONDS" -lt "$deadline" ] || break
        kill -0 "$SIM_PID" 2>/dev/null || die "the simulator exited (see $WORK/sim.log)"
        sleep 1
    done
    echo "$state"
}

# figures ID → one JSON object from PostgreSQL: times relative to the rollout's creation,
# executions and tasks by how far they got, starts and dispatches per second, per wave.
figures() {
    sql "
    WITH r AS (SELECT * FROM rollouts WHERE id = '$1'),
         e AS (SELECT * FROM rollout_executions WHERE rollout_id = '$1'),
         t AS (SELECT * FROM tasks WHERE rollout_id = '$1'),
         es AS (SELECT count(*) AS n FROM e WHERE started_at IS NOT NULL GROUP BY date_trunc('second', started_at)),
         ts AS (SELECT count(*) AS n FROM t WHERE dispatched_at IS NOT NULL GROUP BY date_trunc('second', dispatched_at)),
         -- The advancer's rounds that started executions (one transaction each: one started_at).
         rs AS (SELECT count(*) AS n, extract(epoch FROM started_at - lag(started_at) OVER (ORDER BY started_at)) AS gap
                FROM e WHERE started_at IS NOT NULL GROUP BY started_at),
         w AS (SELECT wave, count(*) AS size, count(started_at) AS started,
                      round(extract(epoch FROM min(e.started_at) - (SELECT created_at FROM r))::numeric, 2) AS first_start_s,
                      round(extract(epoch FROM max(e.started_at) - (SELECT created_at FROM r))::numeric, 2) AS last_start_s,
                      round(extract(epoch FROM max(e.finished_at) - (SELECT created_at FROM r))::numeric, 2) AS last_finish_s
               FROM e GROUP BY wave ORDER BY wave)
    SELECT json_build_object(
        'state', (SELECT state FROM r),
        'reason', (SELECT reason FROM r),
        'wave_sizes', (SELECT wave_sizes FROM r),
        'waves_open', (SELECT waves_open FROM r),
        'done_s', (SELECT round(extract(epoch FROM finished_at - created_at)::numeric, 2) FROM r),
        'executions', (SELECT count(*) FROM e),
        'started', (SELECT count(*) FROM e WHERE started_at IS NOT NULL),
        'started_after_end', (SELECT count(*) FROM e, r WHERE e.started_at > r.finished_at),
        'succeeded', (SELECT count(*) FROM e WHERE state = 'succeeded'),
        'failed', (SELECT count(*) FROM e WHERE state IN ('failed', 'rejected', 'timed_out')),
        'in_progress', (SELECT count(*) FROM e WHERE state = 'in_progress'),
        'pending', (SELECT count(*) FROM e WHERE state = 'pending'),
        'cancelled', (SELECT count(*) FROM e WHERE state = 'cancelled'),
        'tasks', (SELECT count(*) FROM t),
        'tasks_dispatched', (SELECT count(*) FROM t WHERE dispatched_at IS NOT NULL),
        'tasks_dispatched_after_end', (SELECT count(*) FROM t, r WHERE t.dispatched_at > r.finished_at),
        'tasks_cancelled', (SELECT count(*) FROM t WHERE status = 'cancelled'),
        'first_start_s', (SELECT round(extract(epoch FROM min(started_at) - (SELECT created_at FROM r))::numeric, 2) FROM e),
        'last_start_s', (SELECT round(extract(epoch FROM max(started_at) - (SELECT created_at FROM r))::numeric, 2) FROM e),
        'last_dispatch_s', (SELECT round(extract(epoch FROM max(dispatched_at) - (SELECT created_at FROM r))::numeric, 2) FROM t),
        'peak_started_per_s', (SELECT coalesce(max(n), 0) FROM es),
        'peak_dispatched_per_s', (SELECT coalesce(max(n), 0) FROM ts),
        'start_rounds', (SELECT count(*) FROM rs),
        'max_per_round', (SELECT coalesce(max(n), 0) FROM rs),
        'round_gap_median_s', (SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY gap)::numeric, 2) FROM rs),
        'round_gaps_over_1_5_s', (SELECT count(*) FROM rs WHERE gap > 1.5),
        'waves', (SELECT coalesce(json_agg(w), '[]') FROM w))"
}

hz=$(getconf CLK_TCK)
cpu_s() { awk -v a="$1" -v b="$2" -v hz="$hz" 'BEGIN {printf "%.2f", (b - a) / hz}'; }
per_k() { awk -v a="$1" -v b="$2" -v hz="$hz" -v n="$3" 'BEGIN {printf "%.2f", (n > 0 ? (b - a) / hz / n * 1000 : 0)}'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN {printf "%.1f", (s + 0 > 0 ? n / s : 0)}'; }
offline_events() { sql "SELECT count(*) FROM presence_events WHERE status = 'offline'"; }

# baseline → "CP PG": CPU-seconds per second of the control plane and of PostgreSQL (its
# database's backends) over --baseline seconds of heartbeats alone.
baseline() {
    local c0 c1 pd0 pd1 t0 t1
    c0=$(cpu_ticks "$CP_PID"); pd0=$(pg_sample db); t0=$(now_ms)
    sleep "$BASELINE"
    c1=$(cpu_ticks "$CP_PID"); pd1=$(pg_sample db); t1=$(now_ms)
    awk -v c="$(cpu_s "$c0" "$c1")" -v p="$(cpu_s 0 "$(pg_delta "$pd0" "$pd1")")" -v a="$t0" -v b="$t1" \
        'BEGIN {s = (b - a) / 1000; printf "%.4f %.4f\n", c / s, p / s}'
}

# ---- Run A: nobody fails.
say "run A: connecting $APPLIANCES appliances at $RAMP/s (heartbeat every ${INTERVAL} s)"
sim_start
say "run A: ${BASELINE} s of heartbeats alone (the CPU baseline, before)"
read -r BASE_CP_BEFORE BASE_PG_BEFORE < <(baseline)
LOAD_A=$(load_avg)
off0=$(offline_events)
i0=$(cp_metric hearth_heartbeats_ingested_total)
rl0=$(cp_metric 'hearth_rate_limited_total{kind="mqtt"}')
c0=$(cpu_ticks "$CP_PID"); pd0=$(pg_sample db); pb0=$(pg_sample bg); b0=$(cpu_ticks "$BROKER_PID"); s0=$(cpu_ticks "$SIM_PID")
a_ms=$(now_ms)
RA=$(create bench-a)
say "run A: rollout $RA created; waiting for it to finish (at most ${TIMEOUT} s)"
state_a=$(wait_done "$RA")
b_ms=$(now_ms)
c1=$(cpu_ticks "$CP_PID"); pd1=$(pg_sample db); pb1=$(pg_sample bg); b1=$(cpu_ticks "$BROKER_PID"); s1=$(cpu_ticks "$SIM_PID")
p0=0; p1=$(pg_delta "$pd0" "$pd1"); pg_bg=$(pg_delta "$pb0" "$pb1")
i1=$(cp_metric hearth_heartbeats_ingested_total)
rl1=$(cp_metric 'hearth_rate_limited_total{kind="mqtt"}')
off1=$(offline_events)
window_s=$(awk -v a="$a_ms" -v b="$b_ms" 'BEGIN {printf "%.1f", (b - a) / 1000}')
read -r ta wa < <(timeline_at "$a_ms" heartbeats_written)
read -r tb wb < <(timeline_at "$b_ms" heartbeats_written)
read -r _ ea < <(timeline_at "$a_ms" connection_errors)
read -r _ eb < <(timeline_at "$b_ms" connection_errors)
offered=$((wb - wa))
# Stored over the same stretch of the simulator's timeline as offered (its rows are up to a
# second older than the samples): the counter is read at the sample times, so the ratio is
# stored per second over offered per second.
offered_per_s=$(awk -v n="$offered" -v a="$ta" -v b="$tb" 'BEGIN {printf "%.1f", (b > a ? n * 1000 / (b - a) : 0)}')
stored=$(awk -v a="$i0" -v b="$i1" 'BEGIN {printf "%d", b - a}')
stored_per_s=$(awk -v n="$stored" -v a="$a_ms" -v b="$b_ms" 'BEGIN {printf "%.1f", n * 1000 / (b - a)}')
hb_ratio=$(awk -v s="$stored_per_s" -v o="$offered_per_s" 'BEGIN {printf "%.3f", (o > 0 ? s / o : 0)}')
say "run A: ${BASELINE} s of heartbeats alone (the CPU baseline, after)"
read -r BASE_CP_AFTER BASE_PG_AFTER < <(baseline)
BASE_CP=$(awk -v a="$BASE_CP_BEFORE" -v b="$BASE_CP_AFTER" 'BEGIN {printf "%.4f", (a + b) / 2}')
BASE_PG=$(awk -v a="$BASE_PG_BEFORE" -v b="$BASE_PG_AFTER" 'BEGIN {printf "%.4f", (a + b) / 2}')
if [ "$state_a" != succeeded ]; then
    say "run A: the rollout is $state_a after ${TIMEOUT} s; cancelling it"
    curl -fsS --cacert "$PKI/ca.crt" -H "Authorization: Bearer $TOKEN" -X POST \
        "https://localhost:$API_PORT/api/v1/admin/rollouts/$RA/cancel" >/dev/null || true
fi
FA=$(figures "$RA")
get_rollout "$RA" >"$WORK/rollout-a.json" || true
started_a=$(json_get "$FA" started)
configured=$(awk -v m="$MAX_PER_MINUTE" 'BEGIN {printf "%.1f", m / 60}')
exec_rate=$(rate "$started_a" "$(json_get "$FA" last_start_s)")
disp_rate=$(rate "$(json_get "$FA" tasks_dispatched)" "$(json_get "$FA" last_dispatch_s)")
exec_ratio=$(awk -v a="$exec_rate" -v c="$configured" 'BEGIN {printf "%.2f", a / c}')
peak_ratio=$(awk -v a="$(json_get "$FA" peak_started_per_s)" -v c="$configured" 'BEGIN {printf "%.2f", a / c}')
disp_ratio=$(awk -v a="$disp_rate" -v c="$configured" 'BEGIN {printf "%.2f", a / c}')
say "run A: $state_a; $(json_get "$FA" succeeded) succeeded in $(json_get "$FA" done_s) s; $exec_rate started/s (configured $configured)"
sim_stop
SIM_A=$SIM

# ---- Run B: a share of the appliances fails every task.
say "run B: restarting the simulator with --task-failure-share $FAILURE_SHARE"
sim_start --task-failure-share "$FAILURE_SHARE"
LOAD_B=$(load_avg)
RB=$(create bench-b)
say "run B: rollout $RB created; waiting for it to abort (at most ${TIMEOUT} s)"
state_b=$(wait_done "$RB")
if [ "$state_b" != aborted ] && [ "$state_b" != succeeded ]; then
    curl -fsS --cacert "$PKI/ca.crt" -H "Authorization: Bearer $TOKEN" -X POST \
        "https://localhost:$API_PORT/api/v1/admin/rollouts/$RB/cancel" >/dev/null || true
fi
sleep 3 # anything started or dispatched after the abort would show by now
FB=$(figures "$RB")
get_rollout "$RB" >"$WORK/rollout-b.json" || true
sim_stop
SIM_B=$SIM
LOAD_END=$(load_avg)

# Net of the heartbeats' share: the baseline's CPU per second over the rollout's window.
net_k() { awk -v t="$1" -v r="$2" -v w="$window_s" -v n="$started_a" 'BEGIN {printf "%.2f", (n > 0 ? (t - r * w) / n * 1000 : 0)}'; }
CP_NET_K=$(net_k "$(cpu_s "$c0" "$c1")" "$BASE_CP")
PG_NET_K=$(net_k "$(cpu_s "$p0" "$p1")" "$BASE_PG")
first_wave_b=$(python3 -c 'import json,sys; s=json.loads(sys.argv[1])["wave_sizes"]; print(s[0] if s else 0)' "$FB")
waves_a=$(python3 -c '
import json, sys
for w in json.loads(sys.argv[1])["waves"]:
    print("  wave %d: %d executions, started %s–%s s, last finished %s s after creation"
          % (w["wave"] + 1, w["size"], w["first_start_s"], w["last_start_s"], w["last_finish_s"]))' "$FA")

echo
echo "Fleet rollout — $APPLIANCES appliances (heartbeat every ${INTERVAL} s), waves 1/10/50/100 %, max $MAX_PER_MINUTE per minute, $PROFILE build"
echo "machine: $MACHINE; load: start $LOAD_START, run A $LOAD_A, run B $LOAD_B, end $LOAD_END"
echo "run A (nobody fails): $state_a; $(json_get "$FA" succeeded) of $(json_get "$FA" executions) succeeded, $(json_get "$FA" failed) failed; creation → done $(json_get "$FA" done_s) s (waves $(json_get "$FA" wave_sizes))"
echo "$waves_a"
echo "  executions started: $exec_rate/s from creation to the last start (peak $(json_get "$FA" peak_started_per_s) in one second) against $configured/s configured: ratio $exec_ratio (peak $peak_ratio)"
echo "  rounds that started executions: $(json_get "$FA" start_rounds) (at most $(json_get "$FA" max_per_round) each; median gap $(json_get "$FA" round_gap_median_s) s, $(json_get "$FA" round_gaps_over_1_5_s) gaps above 1.5 s, the waves' gates included)"
echo "  tasks dispatched: $disp_rate/s from creation to the last dispatch (peak $(json_get "$FA" peak_dispatched_per_s) in one second): ratio $disp_ratio"
echo "  CPU-seconds over the rollout (${window_s} s): control plane $(cpu_s "$c0" "$c1"), PostgreSQL $(cpu_s "$p0" "$p1") (its background processes $(cpu_s 0 "$pg_bg")), broker $(cpu_s "$b0" "$b1"), simulator $(cpu_s "$s0" "$s1"); per 1,000 executions: control plane $(per_k "$c0" "$c1" "$started_a"), PostgreSQL $(per_k "$p0" "$p1" "$started_a")"
echo "  heartbeats alone (${BASELINE} s before and after), CPU-s per second: control plane $BASE_CP_BEFORE / $BASE_CP_AFTER, PostgreSQL $BASE_PG_BEFORE / $BASE_PG_AFTER; per 1,000 executions net of their mean: control plane $CP_NET_K, PostgreSQL $PG_NET_K"
echo "  heartbeats over the rollout: stored $stored_per_s/s of $offered_per_s/s offered (ratio $hb_ratio); MQTT messages rate-limited: $((${rl1%.*} - ${rl0%.*})); offline presence events: $((off1 - off0)); connection errors: $((eb - ea))"
echo "run B ($FAILURE_SHARE of the appliances fail every task; abort above ${FAILURE_PERCENT} % of at least $MIN_FINISHED finished): $state_b after $(json_get "$FB" done_s) s"
echo "  reason: $(json_get "$FB" reason)"
echo "  first wave $first_wave_b; executions started $(json_get "$FB" started) (after the abort: $(json_get "$FB" started_after_end)), tasks created $(json_get "$FB" tasks) (dispatched $(json_get "$FB" tasks_dispatched), after the abort: $(json_get "$FB" tasks_dispatched_after_end)); succeeded $(json_get "$FB" succeeded), failed $(json_get "$FB" failed), cancelled $(json_get "$FB" cancelled)"

export FA FB SIM_A SIM_B MACHINE PROFILE APPLIANCES INTERVAL MAX_PER_MINUTE FAILURE_SHARE FAILURE_PERCENT MIN_FINISHED \
    LOAD_START LOAD_A LOAD_B LOAD_END PROVISION_S window_s configured exec_rate exec_ratio peak_ratio disp_rate disp_ratio \
    offered_per_s stored_per_s hb_ratio first_wave_b
CP_S=$(cpu_s "$c0" "$c1") PG_S=$(cpu_s "$p0" "$p1") PG_BG_S=$(cpu_s 0 "$pg_bg") BROKER_S=$(cpu_s "$b0" "$b1") SIM_S=$(cpu_s "$s0" "$s1")
CP_K=$(per_k "$c0" "$c1" "$started_a") PG_K=$(per_k "$p0" "$p1" "$started_a")
RATE_LIMITED=$((${rl1%.*} - ${rl0%.*})) OFFLINE=$((off1 - off0)) CONN_ERRORS=$((eb - ea))
export BASELINE BASE_CP_BEFORE BASE_CP_AFTER BASE_PG_BEFORE BASE_PG_AFTER CP_NET_K PG_NET_K CP_S PG_S PG_BG_S BROKER_S SIM_S CP_K PG_K RATE_LIMITED OFFLINE CONN_ERRORS
python3 <<'PY'
import json, os
e = os.environ
fa, fb = json.loads(e["FA"]), json.loads(e["FB"])
num = lambda k: json.loads(e[k])
a = {k: fa[k] for k in ("state", "reason", "wave_sizes", "done_s", "executions", "started", "succeeded", "failed",
                        "tasks_dispatched", "peak_started_per_s", "peak_dispatched_per_s", "start_rounds",
                        "max_per_round", "round_gap_median_s", "round_gaps_over_1_5_s", "waves")}
a.update(started_per_s=num("exec_rate"), started_ratio=num("exec_ratio"), peak_started_ratio=num("peak_ratio"),
         dispatched_per_s=num("disp_rate"), dispatched_ratio=num("disp_ratio"), window_s=num("window_s"),
         cp_cpu_s=num("CP_S"), pg_cpu_s=num("PG_S"), pg_bg_cpu_s=num("PG_BG_S"), broker_cpu_s=num("BROKER_S"), sim_cpu_s=num("SIM_S"),
         cp_cpu_s_per_1k=num("CP_K"), pg_cpu_s_per_1k=num("PG_K"),
         baseline_cp_cpu_s_per_s=[num("BASE_CP_BEFORE"), num("BASE_CP_AFTER")],
         baseline_pg_cpu_s_per_s=[num("BASE_PG_BEFORE"), num("BASE_PG_AFTER")],
         cp_cpu_s_per_1k_net=num("CP_NET_K"), pg_cpu_s_per_1k_net=num("PG_NET_K"),
         heartbeats_offered_per_s=num("offered_per_s"), heartbeats_stored_per_s=num("stored_per_s"),
         heartbeats_ratio=num("hb_ratio"), mqtt_rate_limited=num("RATE_LIMITED"), offline_events=num("OFFLINE"),
         connection_errors=num("CONN_ERRORS"), load1=num("LOAD_A"))
b = {k: fb[k] for k in ("state", "reason", "wave_sizes", "done_s", "executions", "started", "started_after_end",
                        "succeeded", "failed", "in_progress", "pending", "cancelled", "tasks", "tasks_dispatched",
                        "tasks_dispatched_after_end", "tasks_cancelled")}
b.update(first_wave=num("first_wave_b"), failure_share=num("FAILURE_SHARE"), load1=num("LOAD_B"))
print(json.dumps({
    "bench": "rollout", "appliances": num("APPLIANCES"), "profile": e["PROFILE"], "machine": e["MACHINE"],
    "heartbeat_interval_s": num("INTERVAL"), "baseline_s": num("BASELINE"), "max_per_minute": num("MAX_PER_MINUTE"), "configured_per_s": num("configured"),
    "abort": {"failure_percent": num("FAILURE_PERCENT"), "min_finished": num("MIN_FINISHED")},
    "provision_s": num("PROVISION_S"), "load1_start": num("LOAD_START"), "load1_end": num("LOAD_END"),
    "run_a": a, "run_b": b,
}, separators=(",", ":"), ensure_ascii=False))
PY
[ "$state_a" = succeeded ] || die "run A: the rollout ended $state_a, not succeeded"
[ "$state_b" = aborted ] || die "run B: the rollout ended $state_b, not aborted"
