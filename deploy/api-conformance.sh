#!/usr/bin/env bash
# The API against its own OpenAPI document, with schemathesis (a third-party fuzzer): every
# operation with a customer's API key, and every read-only operation with an operator token,
# checked for `not_a_server_error`, `status_code_conformance` and
# `response_schema_conformance`. Exits non-zero on any finding.
#
# Runs against a running control plane (the quickstart's: `. .hearth/dev.env` first, or set
# HEARTH_API_URL, HEARTH_CA_CERT and HEARTH_OPERATOR_TOKEN). It makes its own tenant on a
# plan whose quotas the run cannot exhaust (so the fuzzer reaches the handlers instead of the
# rate limit), with one appliance, and a key for it; the demo household is not touched.
#
#   deploy/api-conformance.sh [--max-examples N]     (default 10; CI uses the default)
set -euo pipefail
cd "$(dirname "$0")/.."

MAX_EXAMPLES=10
while [ $# -gt 0 ]; do
    case "$1" in
        --max-examples) MAX_EXAMPLES="$2"; shift 2 ;;
        -h | --help) sed -n '2,/^[^#]/{/^#/{s/^# \{0,1\}//;p}}' "$0"; exit 0 ;;
        *) echo "api-conformance.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
: "${HEARTH_API_URL:?set HEARTH_API_URL (. .hearth/dev.env)}"
: "${HEARTH_CA_CERT:?set HEARTH_CA_CERT (. .hearth/dev.env)}"
: "${HEARTH_OPERATOR_TOKEN:?set HEARTH_OPERATOR_TOKEN (. .hearth/dev.env)}"

SCHEMATHESIS_VERSION=4.32.5
VENV=target/schemathesis
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    python3 -m venv "$VENV" >&2 || { apt-get install -y -qq python3-venv >&2 && python3 -m venv "$VENV" >&2; }
    "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" >&2
fi

api() { # METHOD PATH [BODY] → the response body; fails on a non-2xx answer
    curl -fsS --cacert "$HEARTH_CA_CERT" -X "$1" -H "Authorization: Bearer $HEARTH_OPERATOR_TOKEN" \
        -H 'Content-Type: application/json' ${3:+-d "$3"} "$HEARTH_API_URL$2"
}
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

run_id=$(date +%s)-$$
plan=$(api POST /api/v1/admin/plans "{\"name\":\"conformance-$run_id\",\"api_per_minute\":100000,\"api_burst\":100000,
    \"assistant_per_hour\":100000,\"assistant_burst\":10000,\"mqtt_per_minute\":600,\"mqtt_burst\":100}" | field "['id']")
tenant=$(api POST /api/v1/admin/tenants "{\"name\":\"conformance-$run_id\",\"plan_id\":\"$plan\"}" | field "['id']")
key=$(api POST "/api/v1/admin/tenants/$tenant/keys" '{"name":"conformance"}' | field "['key']")
api POST "/api/v1/admin/tenants/$tenant/appliances" '{"name":"conformance"}' >/dev/null

st() { # LABEL CREDENTIAL [schemathesis options…]
    local label=$1 credential=$2
    shift 2
    echo "api-conformance.sh: $label" >&2
    "$VENV/bin/schemathesis" run "$HEARTH_API_URL/api/openapi.json" \
        --tls-verify "$HEARTH_CA_CERT" -H "Authorization: Bearer $credential" \
        --checks not_a_server_error,status_code_conformance,response_schema_conformance \
        --max-examples "$MAX_EXAMPLES" --workers 1 --seed 1 --no-color "$@"
}
status=0
st "every operation with a customer's API key" "$key" || status=1
st "every read-only operation with an operator token" "$HEARTH_OPERATOR_TOKEN" --include-method GET || status=1

api DELETE "/api/v1/admin/tenants/$tenant" >/dev/null || true
if [ $status -ne 0 ]; then
    echo "api-conformance.sh: schemathesis found operations that do not answer as documented (above)" >&2
fi
exit $status
