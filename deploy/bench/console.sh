#!/usr/bin/env bash
# The operator console's fleet overview with a large fleet: adds N appliances (default
# 10,000) in T tenants to the running quickstart's database (one INSERT … generate_series:
# 70 % online, 20 % offline, 10 % never seen, three agent versions, a few certificates near
# expiry), then, R times each: the overview's four API calls (fleet summary, trend, ingest,
# and the first page of tenants) timed with curl, and the page itself in headless Chromium
# (signed in as the quickstart's console admin; a full load from about:blank: from
# navigation to the counts and the tenant table shown, the session check included). Removes what it added on exit.
#
#   deploy/bench/console.sh [--appliances N] [--tenants T] [--runs R]
#
# Needs a running quickstart (deploy/quickstart.sh; .hearth/dev.env), psql, node and
# chromium (deploy/e2e/run.sh installs them). Prints a summary to stderr and one JSON line
# last on stdout.
set -euo pipefail
APPLIANCES=10000
TENANTS=20
RUNS=5
while [ $# -gt 0 ]; do
    case $1 in
        --appliances) APPLIANCES=$2; shift 2 ;;
        --tenants) TENANTS=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
say() { echo "console bench: $*" >&2; }
[ -f "$ROOT/.hearth/dev.env" ] || { say "no running quickstart: run deploy/quickstart.sh first"; exit 1; }
# shellcheck disable=SC1091
. "$ROOT/.hearth/dev.env"
[ -n "${HEARTH_CONSOLE_ADMIN_NAME:-}" ] || { say ".hearth/dev.env has no console admin: run deploy/quickstart.sh again"; exit 1; }
[ -d "$ROOT/deploy/e2e/node_modules/playwright-core" ] || (cd "$ROOT/deploy/e2e" && npm ci --no-audit --no-fund >&2)
PREFIX="bench-console-$$-"

cleanup() {
    psql -q "$HEARTH_DATABASE_URL" -c "DELETE FROM tenants WHERE name LIKE '$PREFIX%'" >/dev/null 2>&1 || true
}
trap cleanup EXIT

say "adding $APPLIANCES appliances in $TENANTS tenants"
psql -q -v ON_ERROR_STOP=1 "$HEARTH_DATABASE_URL" >/dev/null <<SQL
INSERT INTO tenants (id, name) SELECT gen_random_uuid(), '$PREFIX' || g FROM generate_series(1, $TENANTS) g;
WITH t AS (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM tenants WHERE name LIKE '$PREFIX%')
INSERT INTO appliances (id, tenant_id, name, enrolled_at, status, status_since, last_seen, agent_version,
                        cert_serial, cert_not_after)
SELECT gen_random_uuid(), t.id, 'bench-' || g,
       now() - interval '1 day',
       CASE WHEN g % 10 < 7 THEN 'online' WHEN g % 10 < 9 THEN 'offline' ELSE 'never_seen' END,
       CASE WHEN g % 10 < 9 THEN now() - interval '1 hour' END,
       CASE WHEN g % 10 < 7 THEN now() WHEN g % 10 < 9 THEN now() - interval '1 hour' END,
       CASE WHEN g % 10 < 9 THEN '0.1.' || (g % 3) END,
       md5(g::text), now() + CASE WHEN g % 100 = 0 THEN interval '3 days' ELSE interval '60 days' END
FROM generate_series(1, $APPLIANCES) g JOIN t ON t.n = g % $TENANTS;
ANALYZE appliances;
SQL
TOTAL=$(psql -At "$HEARTH_DATABASE_URL" -c "SELECT count(*) FROM appliances")
say "the fleet now has $TOTAL appliances"

# The overview's API calls, with the operator token: from the TLS handshake's end to the
# last byte (curl opens a new connection each time; the browser keeps one).
api_ms() {
    curl -s -o /dev/null -w '%{time_appconnect} %{time_total}\n' --cacert "$HEARTH_CA_CERT" \
        -H "Authorization: Bearer $HEARTH_OPERATOR_TOKEN" "$HEARTH_API_URL$1" | awk '{printf "%.1f", ($2 - $1) * 1000}'
}
declare -A SERIES
for _ in $(seq "$RUNS"); do
    for route in /api/v1/admin/fleet/summary "/api/v1/admin/fleet/trend?hours=6" /api/v1/admin/fleet/ingest \
        "/api/v1/admin/tenants?limit=100"; do
        SERIES[$route]="${SERIES[$route]:-} $(api_ms "$route")"
    done
done
api_json=""
for route in "${!SERIES[@]}"; do
    read -r min med max < <(tr ' ' '\n' <<<"${SERIES[$route]}" | grep -v '^$' | sort -n |
        awk '{a[NR]=$1} END {print a[1], a[int((NR+1)/2)], a[NR]}')
    say "$(printf '%-36s min %6s ms  median %6s ms  max %6s ms' "$route" "$min" "$med" "$max")"
    api_json="$api_json\"$route\": {\"min_ms\": $min, \"median_ms\": $med, \"max_ms\": $max}, "
done

# The page in Chromium.
PAGE=$(cd "$ROOT" && CHROMIUM=$(command -v chromium) RUNS=$RUNS node --input-type=module <<'JS'
import { chromium } from "./deploy/e2e/node_modules/playwright-core/index.mjs";
const url = process.env.HEARTH_API_URL;
const b = await chromium.launch({ executablePath: process.env.CHROMIUM, args: ["--no-sandbox", "--disable-gpu"] });
const p = await (await b.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1200, height: 900 } })).newPage();
await p.goto(`${url}/console`);
await p.fill("#name", process.env.HEARTH_CONSOLE_ADMIN_NAME);
await p.fill("#password", process.env.HEARTH_CONSOLE_ADMIN_PASSWORD);
await p.click("#signin-button");
await p.waitForSelector("#nav:not(.hidden)");
const ms = [];
for (let i = 0; i < Number(process.env.RUNS); i++) {
  await p.goto("about:blank");
  const t0 = Date.now();
  await p.goto(`${url}/console#/`);
  await p.locator(".stat .n").first().waitFor();
  await p.locator("#view table").first().waitFor();
  ms.push(Date.now() - t0);
}
const rows = await p.locator("#view table").first().locator("tbody tr").count();
await b.close();
ms.sort((a, b) => a - b);
console.log(JSON.stringify({ min: ms[0], median: ms[Math.floor((ms.length - 1) / 2)], max: ms[ms.length - 1], tenant_rows: rows }));
JS
)
say "page load (navigation to counts and tenant table shown): $PAGE"
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
echo "{\"bench\": \"console\", \"appliances\": $TOTAL, \"tenants_added\": $TENANTS, \"runs\": $RUNS, \"api\": {${api_json%, }}, \"page_ms\": $PAGE, \"loadavg\": \"$LOAD\", \"cores\": $(nproc)}"
