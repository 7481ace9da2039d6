#!/usr/bin/env bash
# Scores the support assistant on labelled support requests: builds hearth-control-plane,
# runs `hearth-control-plane intents` over the file and scores its answers with
# score_intents.py (accuracy of action and parameters, questions answered without a task,
# adversarial requests refused, per-request latency; a final JSON line).
#
#   deploy/eval/intents.sh [--release] [--backend rules|ollama] [--ollama-url URL] [--model NAME]
#                          [--timeout-ms MS] [--min-full-accuracy F] [--min-adversarial-refused F]
#                          [LABELLED.jsonl]
#
# LABELLED defaults to ../shared/data/support-requests.dev.jsonl next to the repository.
# --release builds optimised (use it for latency figures; the debug build is slower).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
labelled="$repo/../shared/data/support-requests.dev.jsonl"
profile=debug
build=()
run=()
score=()
while [ $# -gt 0 ]; do
    case "$1" in
        --release) profile=release; build+=(--release); shift ;;
        --backend|--ollama-url|--model|--timeout-ms)
            [ $# -ge 2 ] || { echo "error: $1 needs a value" >&2; exit 2; }
            run+=("$1" "$2"); shift 2 ;;
        --min-full-accuracy|--min-adversarial-refused)
            [ $# -ge 2 ] || { echo "error: $1 needs a value" >&2; exit 2; }
            score+=("$1" "$2"); shift 2 ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) labelled=$1; shift ;;
    esac
done
if [ ! -f "$labelled" ]; then
    echo "error: labelled file $labelled not found; give its path as the last argument" >&2
    exit 2
fi
command -v python3 >/dev/null || { echo "error: python3 is needed to score" >&2; exit 2; }

cd "$repo"
cargo build --quiet --locked -p hearth-control-plane --bin hearth-control-plane "${build[@]}"
bin="${CARGO_TARGET_DIR:-$repo/target}/$profile/hearth-control-plane"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
status=0
"$bin" intents "${run[@]}" < "$labelled" > "$out" || status=$?
if [ "$status" -ne 0 ]; then
    echo "warning: hearth-control-plane intents exited with status $status (lines with errors are scored as wrong)" >&2
fi
python3 deploy/eval/score_intents.py --catalog ansible/catalog.json "${score[@]}" "$labelled" "$out"
