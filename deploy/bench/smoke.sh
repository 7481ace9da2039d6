#!/usr/bin/env bash
# Keeps the benchmark scripts working: runs every deploy/bench/*.sh (but this one) at tiny
# scale and checks each printed a final JSON line. Checks that they run, never their
# figures. Uses a debug build (HEARTH_BENCH_PROFILE=dev) unless told otherwise.
# console.sh measures the quickstart's own console, so it runs only while a quickstart is
# up (CI runs it in its quickstart stage).
#
#   deploy/bench/smoke.sh
set -euo pipefail
case "${1:-}" in -h | --help) sed -n '2,/^[^#]/{/^#/{s/^# \{0,1\}//;p}}' "$0"; exit 0 ;; esac
cd "$(dirname "$0")"
export HEARTH_BENCH_PROFILE=${HEARTH_BENCH_PROFILE:-dev}

# Tiny arguments per script; a new script must be added here (an unknown one fails).
args_for() {
    case $1 in
        ingest-batch.sh) echo "--appliances 50 --batch 10 --rounds 2" ;;
        ingest.sh) echo "--appliances 20 --rates 20 --window 3 --settle 1 --ramp 100" ;;
        reconnect-storm.sh) echo "--appliances 20 --down 1 --ramp 100 --timeout 60 --heartbeat-interval-s 2" ;;
        api.sh) echo "--appliances 20 --tenants 4 --duration 2 --connections 4 --threads 1" ;;
        agent-footprint.sh) echo "--smoke" ;;
        agent-update.sh) echo "--smoke" ;;
        renewal-storm.sh) echo "--appliances 20 --ramp 100 --settle 2 --timeout 60 --heartbeat-interval-s 2" ;;
        rollout.sh) echo "--appliances 20 --ramp 100 --settle 2 --baseline 2 --timeout 60 --heartbeat-interval-s 2 --failure-share 1.0 --min-finished 2" ;;
        chat.sh) echo "--tenants 4 --conversations 40 --duration 2 --seq-duration 1 --connections 4 --threads 1" ;;
        console.sh) echo "--appliances 50 --tenants 2 --runs 1" ;;
        webhooks.sh) echo "--appliances 20 --ramp 100 --heartbeat-interval-s 2 --offline-after-s 6 --settle 2 --window 5 --steady 3 --timeout 60" ;;
        *) return 1 ;;
    esac
}

# Whether the quickstart's API answers (console.sh adds to its database and loads its pages).
quickstart_up() {
    [ -f ../../.hearth/dev.env ] || return 1
    (
        # shellcheck disable=SC1091
        . ../../.hearth/dev.env
        curl -fsS --max-time 5 --cacert "$HEARTH_CA_CERT" "$HEARTH_API_URL/healthz" >/dev/null 2>&1
    )
}

failed=0
passed=0
for script in *.sh; do
    [ "$script" = smoke.sh ] && continue
    if ! args=$(args_for "$script"); then
        echo "smoke: $script has no tiny-scale arguments in smoke.sh" >&2
        failed=$((failed + 1))
        continue
    fi
    if [ "$script" = console.sh ] && ! quickstart_up; then
        # It measures the quickstart's own console; CI runs it in its quickstart stage.
        echo "smoke: $script needs a running quickstart (deploy/quickstart.sh): not run here" >&2
        continue
    fi
    start=$SECONDS
    echo "smoke: $script $args" >&2
    # shellcheck disable=SC2086
    if out=$(bash "./$script" $args); then
        last=$(tail -n1 <<<"$out")
        if python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert isinstance(d, dict) and d' "$last" 2>/dev/null; then
            echo "smoke: $script ok in $((SECONDS - start)) s: $last" >&2
            passed=$((passed + 1))
            continue
        fi
        echo "smoke: $script did not end with a JSON line; its output:" >&2
        echo "$out" >&2
    else
        echo "smoke: $script failed; its output:" >&2
        echo "$out" >&2
    fi
    failed=$((failed + 1))
done
echo "smoke: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
