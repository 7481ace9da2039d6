#!/usr/bin/env bash
# Browser tests of the control plane's pages, against the running quickstart
# (deploy/quickstart.sh) and its real demo agent, in headless Chromium: the support chat,
# then the operator console and the customers' home page (deploy/e2e/console.mjs, its
# screenshots in target/e2e/console-*.png).
#
#   deploy/e2e/run.sh [screenshot.png]     (default: target/e2e/support-chat.png)
#
# Installs Debian's chromium and the pinned playwright-core (npm ci) when missing.
set -euo pipefail
case "${1:-}" in -h | --help) sed -n '2,/^[^#]/{/^#/{s/^# \{0,1\}//;p}}' "$0"; exit 0 ;; esac
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SHOT=${1:-$ROOT/target/e2e/support-chat.png}

die() { echo "e2e: $*" >&2; exit 1; }

[ -f "$ROOT/.hearth/dev.env" ] || die "no running quickstart: run deploy/quickstart.sh first"
# shellcheck disable=SC1091
. "$ROOT/.hearth/dev.env"
[ -n "${HEARTH_DEMO_EMAIL:-}" ] || die ".hearth/dev.env has no demo account: run deploy/quickstart.sh again"

if ! command -v chromium >/dev/null 2>&1; then
    echo "e2e: installing chromium" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq >&2
    $SUDO apt-get install -y -qq chromium >&2
fi
command -v node >/dev/null 2>&1 || die "node is not installed (apt-get install nodejs npm)"
if [ ! -d "$HERE/node_modules/playwright-core" ]; then
    (cd "$HERE" && npm ci --no-audit --no-fund >&2)
fi

CHROMIUM=$(command -v chromium) node "$HERE/chat.mjs" "$HEARTH_API_URL" "$HEARTH_DEMO_EMAIL" "$HEARTH_DEMO_PASSWORD" "$SHOT"
[ -n "${HEARTH_CONSOLE_ADMIN_NAME:-}" ] || die ".hearth/dev.env has no console accounts: run deploy/quickstart.sh again"
CHROMIUM=$(command -v chromium) node "$HERE/console.mjs" "$HEARTH_API_URL" "$ROOT/target/e2e"
