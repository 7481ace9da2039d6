#!/usr/bin/env bash
# The heartbeat batch write against a real PostgreSQL (see control-plane/examples/ingest_bench.rs).
#   deploy/bench/ingest-batch.sh [--appliances N] [--batch B] [--rounds R]
set -euo pipefail
cd "$(dirname "$0")/../.."
DATABASE_URL=$(deploy/services.sh)
export DATABASE_URL
cargo run --quiet --profile "${HEARTH_BENCH_PROFILE:-release}" --locked -p hearth-control-plane --example ingest_bench -- "$@"
