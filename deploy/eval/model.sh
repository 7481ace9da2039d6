#!/usr/bin/env bash
# Scores an LLM as the support assistant's model on the project's evaluation sets, with the
# same scoring as the rules backend (deploy/eval/score_intents.py), so the figures compare:
# runs `hearth-control-plane intents --backend ollama` over each set against an Ollama
# server (or the local SmolLM2-135M server, deploy/llm/ollama-shim.py) and prints, per set,
# the figures twice:
#   - as deployed: every answer as the customer gets it; where the model gave no usable
#     answer (unreachable, too slow, not the expected JSON) the rules answered instead;
#   - model alone: those fallback answers count as failures of the model.
# Then a final JSON line with both, per set, and the model's answer latencies.
#
#   deploy/eval/model.sh [--ollama-url URL] [--model NAME] [--local] [--timeout-ms MS]
#                        [--release] [SET.jsonl ...]
#
#   --ollama-url URL   the Ollama server (default http://127.0.0.1:11434)
#   --model NAME       the model on it (default llama3.2:3b); it must be pulled there
#   --local            start deploy/llm/ollama-shim.py with SmolLM2-135M on a free port and
#                      score it (virtualenv from deploy/llm/venv.sh); ignores --ollama-url
#                      and --model
#   --timeout-ms MS    the assistant's timeout per answer (default 15000, the service's)
#   --release          build optimised (the engine's own time is then negligible)
#   SET.jsonl          labelled sets (lines {"id", "text", "expect": {...}}); default: every
#                      deploy/eval/*.jsonl and ../shared/data/support-requests.dev.jsonl
#
# Exits 2 on bad arguments or when the server or the model is not there; otherwise 0
# (the figures are for comparing models, not a gate).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
url=http://127.0.0.1:11434
model=llama3.2:3b
timeout_ms=15000
local_shim=0
profile=debug
build=()
sets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --ollama-url|--model|--timeout-ms)
            [ $# -ge 2 ] || { echo "error: $1 needs a value" >&2; exit 2; }
            case "$1" in
                --ollama-url) url=$2 ;;
                --model) model=$2 ;;
                --timeout-ms) timeout_ms=$2 ;;
            esac
            shift 2 ;;
        --local) local_shim=1; shift ;;
        --release) profile=release; build+=(--release); shift ;;
        -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) sets+=("$1"); shift ;;
    esac
done
[[ "$timeout_ms" =~ ^[0-9]+$ ]] || { echo "error: --timeout-ms must be a number of milliseconds" >&2; exit 2; }
if [ ${#sets[@]} -eq 0 ]; then
    sets=("$repo"/deploy/eval/*.jsonl)
    [ -f "$repo/../shared/data/support-requests.dev.jsonl" ] && sets+=("$repo/../shared/data/support-requests.dev.jsonl")
fi
for s in "${sets[@]}"; do
    [ -f "$s" ] || { echo "error: evaluation set $s not found" >&2; exit 2; }
done
command -v python3 >/dev/null || { echo "error: python3 is needed to score" >&2; exit 2; }

work=$(mktemp -d)
shim_pid=
cleanup() {
    [ -n "$shim_pid" ] && kill "$shim_pid" 2>/dev/null && wait "$shim_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

if [ "$local_shim" = 1 ]; then
    python=$("$repo/deploy/llm/venv.sh")
    model=smollm2:135m
    echo "model.sh: starting the local model server (SmolLM2-135M on llama.cpp)" >&2
    "$python" "$repo/deploy/llm/ollama-shim.py" --port 0 --name "$model" >"$work/shim.out" 2>"$work/shim.log" &
    shim_pid=$!
    for _ in $(seq 1 600); do
        grep -q '^PORT ' "$work/shim.out" 2>/dev/null && break
        kill -0 "$shim_pid" 2>/dev/null || { cat "$work/shim.log" >&2; echo "error: the model server did not start" >&2; exit 2; }
        sleep 0.2
    done
    grep -q '^PORT ' "$work/shim.out" || { echo "error: the model server did not start in 120 s" >&2; exit 2; }
    url=http://127.0.0.1:$(sed -n 's/^PORT //p' "$work/shim.out")
fi

# The model must be there: a fallback on every line would score the rules, not the model.
tags=$(curl -fsS --max-time 10 "$url/api/tags") || { echo "error: no Ollama server answers at $url" >&2; exit 2; }
if ! MODEL=$model python3 -c '
import json, os, sys
m = os.environ["MODEL"]
names = [x.get("name") for x in json.load(sys.stdin).get("models", [])]
sys.exit(0 if m in names or (":" not in m and m + ":latest" in names) else 1)' <<<"$tags"; then
    echo "error: the model $model is not on $url (pull it: ollama pull $model)" >&2
    exit 2
fi

cd "$repo"
cargo build --quiet --locked -p hearth-control-plane --bin hearth-control-plane "${build[@]}"
bin="${CARGO_TARGET_DIR:-$repo/target}/$profile/hearth-control-plane"

results=()
for set in "${sets[@]}"; do
    name=$(basename "$set" .jsonl)
    echo
    echo "== $name: $model at $url"
    "$bin" intents --backend ollama --ollama-url "$url" --model "$model" --timeout-ms "$timeout_ms" \
        <"$set" >"$work/$name.out" || echo "warning: hearth-control-plane intents exited with an error (its error lines score as wrong)" >&2
    # Model alone: a fallback answer is the model's failure, scored like a missing answer.
    python3 - "$work/$name.out" >"$work/$name.alone" <<'PY'
import json, sys
for line in open(sys.argv[1], encoding="utf-8"):
    if not line.strip():
        continue
    o = json.loads(line)
    if o.get("degraded"):
        o = {"id": o.get("id"), "error": "the model gave no usable answer (the rules' fallback is not credited)"}
    print(json.dumps(o))
PY
    echo "-- as deployed (the rules answer where the model failed)"
    python3 deploy/eval/score_intents.py --catalog ansible/catalog.json "$set" "$work/$name.out" >"$work/$name.deployed.txt" || true
    sed -n '1,/^$/p' "$work/$name.deployed.txt" | grep -v '^$' || true
    echo "-- model alone (fallback answers count as failures)"
    python3 deploy/eval/score_intents.py --catalog ansible/catalog.json "$set" "$work/$name.alone" >"$work/$name.alone.txt" || true
    grep -E '^(lines|action accuracy|full accuracy|  tasks|questions|adversarial)' "$work/$name.alone.txt" || true
    # The model's own answers' latencies (not the guard's refusals nor the fallbacks).
    latency=$(python3 - "$work/$name.out" <<'PY'
import json, sys
ms = sorted(o["elapsed_us"] / 1000 for o in map(json.loads, filter(str.strip, open(sys.argv[1])))
            if o.get("backend") == "ollama")
pick = lambda p: round(ms[max(0, -(-p * len(ms) // 100) - 1)], 1) if ms else None
print(json.dumps({"model_answers": len(ms), "model_latency_ms_p50": pick(50), "model_latency_ms_p90": pick(90),
                  "model_latency_ms_max": ms[-1] if ms else None}))
PY
)
    echo "-- the model's own answers: $latency"
    results+=("$(python3 - "$name" "$work/$name.deployed.txt" "$work/$name.alone.txt" "$latency" <<'PY'
import json, sys
name, deployed, alone, latency = sys.argv[1:5]
last = lambda f: json.loads([l for l in open(f) if l.startswith("{")][-1])
print(json.dumps({"set": name, "as_deployed": last(deployed), "model_alone": last(alone), **json.loads(latency)}))
PY
)")
done
echo
printf '%s\n' "${results[@]}" | MODEL=$model URL=$url TIMEOUT=$timeout_ms python3 -c '
import json, os, sys
sets = [json.loads(l) for l in sys.stdin if l.strip()]
print(json.dumps({"model": os.environ["MODEL"], "ollama_url": os.environ["URL"], "timeout_ms": int(os.environ["TIMEOUT"]),
                  "sets": sets}, sort_keys=True))'
