#!/usr/bin/env bash
# The support chat API under load: POST /api/v1/support/conversations/{id}/messages with the
# rules backend answering (no LLM configured: deterministic, well under a millisecond), over
# HTTPS, driven by wrk (installed from Debian's packages if missing). K tenants, one
# appliance each (provisioned in bulk, never connected); C conversations opened up front
# through the API (POST /api/v1/support/conversations, about the tenant's appliance, with
# its API key), spread round-robin over the tenants. Every wrk thread takes its own share of
# the conversations and walks them round-robin, so they fill evenly (a conversation holds
# 200 messages: 98 posts at most here; more answer 409 conversation_full, counted apart).
# Each request is, at random, a question (a knowledge article), a task request (a
# dns.record.add proposal, stored) or small talk. Each post is two tenant transactions (the
# customer's message with the context the assistant reads; then the reply and its proposal).
# Two runs: one connection, one thread (the latency of one customer: the rules path through
# the API) for --seq-duration seconds, then --connections over --threads for --duration.
# The API and assistant quotas are set far above the load (HEARTH_LIMITS__* below) so wrk
# measures the chat, not the limits.
#
#   deploy/bench/chat.sh [--tenants K] [--conversations C] [--duration S] [--seq-duration S]
#                        [--connections N] [--threads T] [--mqtt-port P] [--api-port P]
#
# Prints a summary to stderr and one JSON line last on stdout. Its own database
# (hearth_bench_chat) and ports; everything it starts is stopped on exit.
set -euo pipefail

TENANTS=50
CONVERSATIONS=1000
DURATION=20
SEQ_DURATION=10
CONNECTIONS=16
THREADS=2
MQTT_PORT=18886
API_PORT=18446
while [ $# -gt 0 ]; do
    case $1 in
        --tenants) TENANTS=$2; shift 2 ;;
        --conversations) CONVERSATIONS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --seq-duration) SEQ_DURATION=$2; shift 2 ;;
        --connections) CONNECTIONS=$2; shift 2 ;;
        --threads) THREADS=$2; shift 2 ;;
        --mqtt-port) MQTT_PORT=$2; shift 2 ;;
        --api-port) API_PORT=$2; shift 2 ;;
        -h | --help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ "$CONVERSATIONS" -ge "$THREADS" ] || { echo "--conversations must be at least --threads" >&2; exit 2; }
BENCH=chat
# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

ensure_wrk

build
MACHINE=$(machine)
say "machine: $MACHINE"
setup_stack
start_broker
export HEARTH_LIMITS__API_PER_MINUTE=10000000 HEARTH_LIMITS__API_BURST=1000000
export HEARTH_LIMITS__ASSISTANT_PER_HOUR=100000000 HEARTH_LIMITS__ASSISTANT_BURST=1000000
# The rules backend only, and proposals that wait for confirmation (the default), whatever
# the caller's environment says.
unset HEARTH_ASSISTANT__OLLAMA_URL HEARTH_ASSISTANT__CONFIRM_LOW_RISK
start_cp
# The binary in a shared target directory may be another branch's: it must serve the chat.
page=$(curl -sS -o /dev/null -w '%{http_code}' --cacert "$PKI/ca.crt" "https://localhost:$API_PORT/support")
[ "$page" = 200 ] || die "GET /support answered $page: this build has no support chat (rebuild and run again)"
bulk_create --tenants "$TENANTS" --count "$TENANTS" --prefix chat
say "provisioned $TENANTS tenants with one appliance each in ${PROVISION_S} s"

# Conversations through the API, one keep-alive HTTPS connection: "key conversation" lines.
t0=$(date +%s.%N)
python3 - "$BUNDLE" "$CONVERSATIONS" "$API_PORT" "$PKI/ca.crt" >"$WORK/targets.txt" <<'PY' || die "opening the conversations failed"
import http.client, json, ssl, sys
bundle, count, port, ca = json.load(open(sys.argv[1])), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
keys = [(t["api_key"], next(a["id"] for a in bundle["appliances"] if a["tenant_id"] == t["id"])) for t in bundle["tenants"]]
conn = http.client.HTTPSConnection("localhost", port, context=ssl.create_default_context(cafile=ca))
for i in range(count):
    key, appliance = keys[i % len(keys)]
    conn.request("POST", "/api/v1/support/conversations", json.dumps({"appliance_id": appliance}),
                 {"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    r = conn.getresponse()
    body = r.read()
    if r.status != 201:
        sys.exit(f"POST /api/v1/support/conversations answered {r.status}: {body[:300]!r}")
    print(key, json.loads(body)["id"])
PY
OPEN_S=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b - a}')
say "opened $CONVERSATIONS conversations through the API in $OPEN_S s (room for $((CONVERSATIONS * 98)) posts)"

cat >"$WORK/bench.lua" <<'LUA'
-- Each wrk thread walks its own share of the conversations (line i goes to thread
-- i % threads) round-robin; the message is one of three at random. Statuses are counted
-- per thread and summed in done().
local texts = {
    '{"text":"how do I open my shares from windows?"}',
    '{"text":"add a DNS record printer.home for 192.168.1.50"}',
    '{"text":"hello, thanks for the help!"}',
}
local threads = {}
local counter = 1
function setup(thread)
    thread:set("id", counter)
    counter = counter + 1
    table.insert(threads, thread)
end
local targets = {}
local n = 0
function init(args)
    local nthreads = tonumber(args[2])
    local i = 0
    for line in io.lines(args[1]) do
        if i % nthreads == id - 1 then
            local key, conv = line:match("^(%S+) (%S+)$")
            targets[#targets + 1] = { path = "/api/v1/support/conversations/" .. conv .. "/messages",
                                      headers = { ["Authorization"] = "Bearer " .. key,
                                                  ["Content-Type"] = "application/json" } }
        end
        i = i + 1
    end
    math.randomseed(os.time() + id * 7919 + math.floor(os.clock() * 1000000))
    s201, s409, s429, other = 0, 0, 0, 0
end
function request()
    local t = targets[n % #targets + 1]
    n = n + 1
    return wrk.format("POST", t.path, t.headers, texts[math.random(#texts)])
end
function response(status, headers, body)
    if status == 201 then s201 = s201 + 1
    elseif status == 409 then s409 = s409 + 1
    elseif status == 429 then s429 = s429 + 1
    else other = other + 1 end
end
function done(summary, latency, requests)
    local a, b, c, d = 0, 0, 0, 0
    for _, t in ipairs(threads) do
        a = a + t:get("s201"); b = b + t:get("s409"); c = c + t:get("s429"); d = d + t:get("other")
    end
    io.write(string.format("statuses: 201=%d 409=%d 429=%d other=%d\n", a, b, c, d))
end
LUA

# The mean time the assistant itself took per answer since the last call (ms), from the
# control plane's histogram: the rules, not the API around them.
A_SUM=0 A_COUNT=0
assistant_ms() {
    local sum count
    sum=$(cp_metric 'hearth_assistant_request_duration_seconds_sum{backend="rules"}')
    count=$(cp_metric 'hearth_assistant_request_duration_seconds_count{backend="rules"}')
    awk -v s0="$A_SUM" -v s1="$sum" -v c0="$A_COUNT" -v c1="$count" \
        'BEGIN {printf "%.3f", (c1 > c0) ? (s1 - s0) / (c1 - c0) * 1000 : 0}'
    A_SUM=$sum A_COUNT=$count
}

# run_wrk NAME THREADS CONNECTIONS SECONDS → the JSON object for it
run_wrk() {
    local name=$1 t=$2 c=$3 d=$4 out rps p50 p90 p99 max non2xx errors s201 s409 s429 other c0 c1 p0 p1 load rules
    load=$(load_avg)
    assistant_ms >/dev/null
    c0=$(cpu_ticks "$CP_PID"); p0=$(pg_ticks)
    out=$(wrk -t"$t" -c"$c" -d"${d}s" --latency -s "$WORK/bench.lua" \
        "https://localhost:$API_PORT" -- "$WORK/targets.txt" "$t")
    c1=$(cpu_ticks "$CP_PID"); p1=$(pg_ticks)
    rules=$(assistant_ms)
    echo "$out" >>"$WORK/wrk.log"
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p90=$(awk '$1 == "90%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    max=$(awk '$1 == "Latency" && NF >= 4 {print $4; exit}' <<<"$out")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' <<<"$out")
    errors=$(awk '/Socket errors:/ {s = 0; for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) s += $i; print s}' <<<"$out")
    read -r s201 s409 s429 other < <(sed -n 's/^statuses: 201=\([0-9]*\) 409=\([0-9]*\) 429=\([0-9]*\) other=\([0-9]*\)$/\1 \2 \3 \4/p' <<<"$out")
    say "$name: $rps requests/s, p50 $p50, p90 $p90, p99 $p99, max $max; 201: ${s201:-?}, non-2xx ${non2xx:-0}" \
        "(409 ${s409:-?}, 429 ${s429:-?}, other ${other:-?}), socket errors ${errors:-0};" \
        "assistant ${rules} ms per answer; CPU: control plane $(pct "$c0" "$c1" "$d")%, PostgreSQL $(pct "$p0" "$p1" "$d")%; load $load"
    echo "{\"run\":\"$name\",\"threads\":$t,\"connections\":$c,\"duration_s\":$d,\"rps\":${rps:-0},\"p50_ms\":$(wrk_ms "${p50:-0}"),\"p90_ms\":$(wrk_ms "${p90:-0}"),\"p99_ms\":$(wrk_ms "${p99:-0}"),\"max_ms\":$(wrk_ms "${max:-0}"),\"created_201\":${s201:-0},\"non_2xx\":${non2xx:-0},\"conflict_409\":${s409:-0},\"rate_limited_429\":${s429:-0},\"other_status\":${other:-0},\"socket_errors\":${errors:-0},\"assistant_ms\":$rules,\"cp_cpu_pct\":$(pct "$c0" "$c1" "$d"),\"pg_cpu_pct\":$(pct "$p0" "$p1" "$d"),\"load1\":$load}"
}

SEQ=null
if [ "$SEQ_DURATION" -gt 0 ]; then
    say "one customer: 1 connection, 1 thread, ${SEQ_DURATION} s"
    SEQ=$(run_wrk sequential 1 1 "$SEQ_DURATION")
fi
say "load: $CONNECTIONS connections, $THREADS threads, ${DURATION} s"
LOAD=$(run_wrk concurrent "$THREADS" "$CONNECTIONS" "$DURATION")
rss=$(rss_mib "$CP_PID")

# What PostgreSQL holds afterwards: the sanity check (each 201 stored two messages, a third
# of them with a proposal) and how full the fullest conversation got. A few more posts than
# wrk counted are stored: those in flight when it stopped. `unanswered` should be 0: the
# reply is stored even when the client has gone (it is counted just after the load, so a
# post still being answered at that instant shows there).
read -r messages replies unanswered proposals pending fullest < <(psql -qXAt -F' ' "$DB_URL" -c "
    SELECT (SELECT count(*) FROM support_messages),
           (SELECT count(*) FROM support_messages WHERE role = 'assistant'),
           (SELECT count(*) FILTER (WHERE role = 'customer') - count(*) FILTER (WHERE role = 'assistant')
              FROM support_messages),
           (SELECT count(*) FROM support_proposals),
           (SELECT count(*) FROM support_proposals WHERE status = 'pending'),
           (SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM support_messages GROUP BY conversation_id) m)")
say "stored: $messages messages ($replies replies, $unanswered customer messages unanswered), $proposals proposals ($pending still pending);" \
    "fullest conversation $fullest of 200 messages; control plane RSS $rss MiB"
conflicts=$(json_get "$LOAD" conflict_409)
[ "$SEQ" = null ] || conflicts=$((conflicts + $(json_get "$SEQ" conflict_409)))
[ "$conflicts" -eq 0 ] || say "warning: $conflicts posts found their conversation full (409): pass more --conversations"

echo >&2
echo "Support chat benchmark — $TENANTS tenants, $CONVERSATIONS conversations, rules backend, RLS on, rate limiting on (quotas above the load), $PROFILE build" >&2
echo "machine: $MACHINE" >&2
echo "sequential: $SEQ" >&2
echo "concurrent: $LOAD" >&2
echo "{\"bench\":\"chat\",\"tenants\":$TENANTS,\"conversations\":$CONVERSATIONS,\"profile\":\"$PROFILE\",\"machine\":\"$MACHINE\",\"backend\":\"rules\",\"rls\":true,\"rate_limiting\":true,\"provision_s\":$PROVISION_S,\"open_conversations_s\":$OPEN_S,\"cp_rss_mib\":$rss,\"messages\":$messages,\"replies\":$replies,\"unanswered\":$unanswered,\"proposals\":$proposals,\"fullest_conversation\":$fullest,\"sequential\":$SEQ,\"concurrent\":$LOAD}"
