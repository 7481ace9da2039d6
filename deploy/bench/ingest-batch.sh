#!/usr/bin/env bash
# The heartbeat batch write against a real PostgreSQL (see control-plane/examples/ingest_bench.rs).
#   deploy/bench/ingest-batch.sh [--appliances N] [--batch B] [--rounds R]
set -euo pipefail
case "${1:-}" in -h | --help) sed -n '2,/^[^#]/{/^#/{s/^# \{0,1\}//;p}}' "$0"; exit 0 ;; esac
cd "$(dirname "$0")/../.."
DATABASE_URL=$(deploy/services.sh)
export DATABASE_URL
cargo run --quiet --profile "${HEARTH_BENCH_PROFILE:-release}" --locked -p hearth-control-plane --example ingest_bench -- "$@"
