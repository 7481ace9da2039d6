#!/usr/bin/env bash
# Hearth's fault-injection suite: a private PostgreSQL cluster, a TLS Mosquitto, two
# control-plane replicas on the shared subscription, real agents (real ansible-playbook in
# sandbox roots, the first in a network namespace of its own) and the fleet simulator,
# under load; each scenario injects one fault, heals it and checks the invariants (every
# task final, none run twice on an appliance, results and events stored exactly once,
# presence right after healing with no phantom transitions, configuration converged, the
# API's errors and p99 during the fault). Prints a table and one JSON line last; exits 1 if
# an invariant failed. Never touches the machine's own PostgreSQL or Mosquitto.
#
#   deploy/faults/run.sh --small                 CI scale (a few minutes)
#   deploy/faults/run.sh                         full scale (hundreds of appliances, 60 s
#                                                PostgreSQL outage, 10 min partition)
#   deploy/faults/run.sh --small --scenario pg-outage [--scenario …]
#   deploy/faults/run.sh --help                  every option
#
# Needs root (network namespaces; PostgreSQL runs as the postgres user), Debian's
# postgresql server packages, mosquitto, ansible-playbook and python3. Builds debug
# binaries unless HEARTH_BUILD_PROFILE says otherwise; CARGO_TARGET_DIR is honoured.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
case "${1:-}" in
    -h | --help)
        sed -n '2,/^[^#]/{/^#/{s/^# \{0,1\}//;p}}' "$0"
        exec python3 "$ROOT/deploy/faults/harness.py" --help
        ;;
esac
# libfaketime for the clock scenarios (Debian's package), installed when missing, as the
# benchmarks install wrk.
if ! command -v faketime >/dev/null; then
    echo "faults: installing faketime" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >&2 \
        || { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >&2; }
fi
PROFILE=${HEARTH_BUILD_PROFILE:-dev}
export HEARTH_BUILD_PROFILE=$PROFILE
(cd "$ROOT" && cargo build --quiet --locked --profile "$PROFILE" -p hearth-control-plane -p hearth-agent --bins) >&2
exec python3 "$ROOT/deploy/faults/harness.py" "$@"
