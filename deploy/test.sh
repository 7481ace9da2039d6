#!/usr/bin/env bash
# Runs Hearth's whole test suite against real services: provisions PostgreSQL, Mosquitto
# and ansible-core (deploy/services.sh), checks every playbook (syntax, a real run of each
# catalog action in a sandbox root, idempotency: ansible/tests/run.sh), then
# `cargo test --workspace`. Every database test gets its own fresh database; broker tests
# start their own Mosquitto with mutual TLS; task tests run the real agent and real
# ansible-playbook against sandbox roots. Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

DATABASE_URL=$(deploy/services.sh)
export DATABASE_URL
echo "test.sh: PostgreSQL at ${DATABASE_URL##*@}; Mosquitto $(mosquitto -h 2>/dev/null | head -n1 | awk '{print $3}')" >&2

ansible/tests/run.sh

cargo test --workspace --locked "$@"
