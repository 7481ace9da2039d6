#!/usr/bin/env bash
# Runs Hearth's whole test suite against real services: provisions PostgreSQL and
# Mosquitto (deploy/services.sh), then `cargo test --workspace`. Every database test gets
# its own fresh database; broker tests start their own Mosquitto with mutual TLS.
# Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

DATABASE_URL=$(deploy/services.sh)
export DATABASE_URL
echo "test.sh: PostgreSQL at ${DATABASE_URL##*@}; Mosquitto $(mosquitto -h 2>/dev/null | head -n1 | awk '{print $3}')" >&2

cargo test --workspace --locked "$@"
