#!/usr/bin/env bash
# The tenant API under load: GET /api/v1/appliances (first page, 100) and
# GET /api/v1/appliances/{id} with N appliances spread over K tenants, every request with a
# random tenant's API key (so every request authenticates and runs in its own tenant
# transaction under row-level security: SET LOCAL ROLE hearth_tenant), over HTTPS, driven by
# wrk (installed from Debian's packages if missing). Before the load, every appliance
# connects once through the fleet simulator, so rows carry presence and heartbeat facts.
# Per-tenant rate limiting is on (every request takes one from its tenant's bucket) with
# quotas high enough that wrk measures the API, not the limit: HEARTH_LIMITS__API_* below.
#
#   deploy/bench/api.sh [--appliances N] [--tenants K] [--duration S] [--connections C]
#                       [--threads T] [--rate R] [--mqtt-port P] [--api-port P]
#
# --rate R: each connection pauses between its requests (wrk's delay()) so that all of them
# together send about R requests/s (a little less: each request's own time adds to the
# pause): latency at a given load rather than at saturation. 0 (default): as fast as they go.
#
# Prints a summary and one JSON line last. Its own database (hearth_bench_api) and ports;
# everything it starts is stopped on exit.
set -euo pipefail

APPLIANCES=10000
TENANTS=100
DURATION=30
CONNECTIONS=32
THREADS=2
RATE=0
MQTT_PORT=18885
API_PORT=18445
while [ $# -gt 0 ]; do
    case $1 in
        --appliances) APPLIANCES=$2; shift 2 ;;
        --tenants) TENANTS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --connections) CONNECTIONS=$2; shift 2 ;;
        --threads) THREADS=$2; shift 2 ;;
        --rate) RATE=$2; shift 2 ;;
        --mqtt-port) MQTT_PORT=$2; shift 2 ;;
        --api-port) API_PORT=$2; shift 2 ;;
        -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
BENCH=api
# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

ensure_wrk

build
MACHINE=$(machine)
say "machine: $MACHINE"
setup_stack
start_broker
export HEARTH_LIMITS__API_PER_MINUTE=10000000 HEARTH_LIMITS__API_BURST=1000000
start_cp
bulk_create --tenants "$TENANTS" --count "$APPLIANCES" --prefix api
say "provisioned $APPLIANCES appliances over $TENANTS tenants in ${PROVISION_S} s"

# Every appliance connects and sends its first heartbeat, then leaves.
connect_s=$(awk -v n="$APPLIANCES" 'BEGIN {print n / 200 + 5}')
say "connecting every appliance once (${connect_s} s)"
"$BIN/hearth-fleet-sim" run --bundle "$BUNDLE" --host 127.0.0.1 --port "$MQTT_PORT" --ramp 200 \
    --heartbeat-interval-s 30 --duration "$connect_s" --progress-every 0 >"$WORK/sim.json" 2>>"$WORK/sim.log"
seen=$(psql -qXAt "$DB_URL" -c "SELECT count(*) FROM appliances WHERE metrics IS NOT NULL")
say "$seen of $APPLIANCES appliances have heartbeat facts stored"

# "key id" per appliance, for the Lua script.
python3 - "$BUNDLE" >"$WORK/targets.txt" <<'PY'
import json, sys
b = json.load(open(sys.argv[1]))
keys = {t["id"]: t["api_key"] for t in b["tenants"]}
for a in b["appliances"]:
    print(keys[a["tenant_id"]], a["id"])
PY

cat >"$WORK/bench.lua" <<LUA
-- Each request: a random appliance's tenant key; \`mode\` picks the list or the detail path.
local pause = $RATE > 0 and math.floor($CONNECTIONS * 1000 / $RATE) or 0
function delay() return pause end
LUA
cat >>"$WORK/bench.lua" <<'LUA'
local targets = {}
local mode
function init(args)
    mode = args[2]
    for line in io.lines(args[1]) do
        local key, id = line:match("^(%S+) (%S+)$")
        targets[#targets + 1] = { key = key, id = id }
    end
    math.randomseed(os.time() + math.floor(os.clock() * 1000000))
end
function request()
    local t = targets[math.random(#targets)]
    local path = mode == "detail" and ("/api/v1/appliances/" .. t.id) or "/api/v1/appliances"
    return wrk.format("GET", path, { ["Authorization"] = "Bearer " .. t.key })
end
LUA

# run_wrk MODE → the JSON object for it
run_wrk() {
    local mode=$1 out rps p50 p99 non2xx errors c0 c1 p0 p1 load
    load=$(load_avg)
    c0=$(cpu_ticks "$CP_PID"); p0=$(pg_ticks)
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$WORK/bench.lua" \
        "https://localhost:$API_PORT" -- "$WORK/targets.txt" "$mode")
    c1=$(cpu_ticks "$CP_PID"); p1=$(pg_ticks)
    echo "$out" >>"$WORK/wrk.log"
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' <<<"$out")
    errors=$(awk '/Socket errors:/ {s = 0; for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) s += $i; print s}' <<<"$out")
    say "$mode: $rps requests/s, p50 $p50, p99 $p99, non-2xx ${non2xx:-0}, socket errors ${errors:-0};" \
        "CPU: control plane $(pct "$c0" "$c1" "$DURATION")%, PostgreSQL $(pct "$p0" "$p1" "$DURATION")%; load $load"
    echo "{\"endpoint\":\"$mode\",\"rps\":${rps:-0},\"p50_ms\":$(wrk_ms "${p50:-0}"),\"p99_ms\":$(wrk_ms "${p99:-0}"),\"non_2xx\":${non2xx:-0},\"socket_errors\":${errors:-0},\"cp_cpu_pct\":$(pct "$c0" "$c1" "$DURATION"),\"pg_cpu_pct\":$(pct "$p0" "$p1" "$DURATION"),\"load1\":$load}"
}

say "GET /api/v1/appliances for ${DURATION} s ($CONNECTIONS connections, $THREADS threads)"
LIST=$(run_wrk list)
say "GET /api/v1/appliances/{id} for ${DURATION} s"
DETAIL=$(run_wrk detail)
rss=$(rss_mib "$CP_PID")

echo
echo "API benchmark — $APPLIANCES appliances over $TENANTS tenants, RLS on, rate limiting on (quotas above the load), $PROFILE build"
echo "machine: $MACHINE"
echo "list:   $LIST"
echo "detail: $DETAIL"
echo "control plane RSS after the load: $rss MiB"
echo "{\"bench\":\"api\",\"appliances\":$APPLIANCES,\"tenants\":$TENANTS,\"duration_s\":$DURATION,\"connections\":$CONNECTIONS,\"rate\":$RATE,\"profile\":\"$PROFILE\",\"machine\":\"$MACHINE\",\"rls\":true,\"rate_limiting\":true,\"provision_s\":$PROVISION_S,\"cp_rss_mib\":$rss,\"list\":$LIST,\"detail\":$DETAIL}"
