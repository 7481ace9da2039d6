# Shared by the benchmark scripts in deploy/bench/ (sourced, not run): build, a private
# stack (own database, own PKI, own TLS Mosquitto and control plane on the script's own
# ports) and cleanup of everything started, on any exit.
#
# Expects before sourcing: BENCH (a short name), MQTT_PORT, API_PORT. The broker's internal
# listener (the control plane's) is on MQTT_SERVICE_PORT, default MQTT_PORT + 10.
# HEARTH_BENCH_PROFILE=dev uses a debug build (faster to compile; the smoke test uses it);
# the default is release, which is what figures must come from.
# HEARTH_BENCH_KEEP=1 keeps the work directory (logs, PKI) and the database on exit.
# HEARTH_BENCH_BIN_DIR=DIR runs the hearth-control-plane and hearth-fleet-sim already in DIR
# and builds nothing: a before/after pair from two builds kept side by side (copy
# target/release/hearth-* away, change the code, build again, run both).

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    # Run, not sourced: say what it is (also for --help) and do nothing else.
    sed -n '1,/^[^#]/{/^#/{s/^# \{0,1\}//;p}}' "$0"
    case "${1:-}" in -h | --help) exit 0 ;; *) exit 2 ;; esac
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
PROFILE=${HEARTH_BENCH_PROFILE:-release}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${HEARTH_BENCH_BIN_DIR:-$TARGET_DIR/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")}
MQTT_SERVICE_PORT=${MQTT_SERVICE_PORT:-$((MQTT_PORT + 10))}
DB_NAME=hearth_bench_${BENCH//-/_}
ADMIN_URL=${HEARTH_BENCH_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DB_URL=${ADMIN_URL%/*}/$DB_NAME
WORK=$(mktemp -d "/tmp/hearth-bench-$BENCH.XXXXXX")
PKI=$WORK/pki
BROKER_DIR=$WORK/broker
BROKER_PID=""
CP_PID=""
EXTRA_PIDS=()

say() { printf '%s: %s\n' "$BENCH" "$*" >&2; }

# Runs a component in a session of its own, in place (run it in the background: `apart cmd &`,
# and $! is the component's pid). In production each of them is a service in a cgroup of its
# own; on a kernel with autogroup scheduling (Debian's default) all the processes of one
# session share one CPU share, so without this the broker, the control plane and the
# simulator together would get as much CPU as each PostgreSQL backend alone (each backend
# is a session of its own) once the cores are busy.
apart() { exec setsid "$@"; }
die() { say "error: $*"; exit 1; }

for p in "$MQTT_PORT" "$MQTT_SERVICE_PORT" "$API_PORT"; do
    case $p in 8443 | 8883 | 8884) die "ports 8443, 8883 and 8884 belong to the quickstart; pick others" ;; esac
done

cleanup() {
    local rc=$?
    set +e
    for pid in "${EXTRA_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    [ -n "$CP_PID" ] && kill -TERM "$CP_PID" 2>/dev/null && wait "$CP_PID" 2>/dev/null
    [ -n "$BROKER_PID" ] && kill -TERM "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null
    for pid in "${EXTRA_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    [ -n "${HEARTH_BENCH_KEEP:-}" ] \
        || psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null 2>&1
    if [ "$rc" -ne 0 ] && [ -d "$WORK" ]; then
        say "exit $rc; last lines of the logs:"
        for f in "$WORK"/*.log "$BROKER_DIR"/mosquitto.log; do
            [ -f "$f" ] && { echo "--- $f" >&2; tail -n 15 "$f" >&2; }
        done
    fi
    [ -n "${HEARTH_BENCH_KEEP:-}" ] && say "kept $WORK and the database $DB_NAME" || rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

build() {
    local t0=$SECONDS
    if [ -n "${HEARTH_BENCH_BIN_DIR:-}" ]; then
        [ -x "$BIN/hearth-control-plane" ] && [ -x "$BIN/hearth-fleet-sim" ] \
            || die "HEARTH_BENCH_BIN_DIR=$BIN: no hearth-control-plane and hearth-fleet-sim there"
        say "using the builds in $BIN (HEARTH_BENCH_BIN_DIR)"
        return
    fi
    say "building hearth-control-plane and hearth-fleet-sim ($PROFILE)"
    (cd "$ROOT" && cargo build --quiet --locked --profile "$PROFILE" -p hearth-control-plane -p hearth-agent --bins) >&2
    say "build took $((SECONDS - t0)) s"
}

# One line that says what this ran on.
machine() {
    local cpu mem
    cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
    mem=$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
    echo "$(nproc) cores ($cpu), $mem, $(uname -r), load at start:$(cut -d' ' -f1-3 /proc/loadavg)"
}

load_avg() { cut -d' ' -f1 /proc/loadavg; }

wait_port() {
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

# A fresh database, the PKI and the broker's configuration.
setup_stack() {
    command -v psql >/dev/null || die "psql is missing (deploy/services.sh installs it)"
    psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" -c "CREATE DATABASE $DB_NAME" >/dev/null \
        || die "cannot create the database $DB_NAME at $ADMIN_URL"
    "$BIN/hearth-control-plane" pki init --dir "$PKI" >/dev/null
    "$BIN/hearth-control-plane" broker-config --pki-dir "$PKI" --data-dir "$BROKER_DIR" --port "$MQTT_PORT" \
        --service-port "$MQTT_SERVICE_PORT" >/dev/null
    export HEARTH_DATABASE__URL=$DB_URL
    export HEARTH_PKI__DIR=$PKI
    export HEARTH_MQTT__HOST=127.0.0.1
    export HEARTH_MQTT__PORT=$MQTT_SERVICE_PORT
    export HEARTH_MQTT__PUBLIC_PORT=$MQTT_PORT
    export HEARTH_MQTT__CLIENT_ID=hearth-bench-$BENCH
    export HEARTH_HTTP__LISTEN=127.0.0.1:$API_PORT
    "$BIN/hearth-control-plane" migrate 2>>"$WORK/control-plane.log"
}

# Whether nothing listens on 127.0.0.1:PORT (a benchmark must not measure someone else's
# server that happens to be there).
port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Mosquitto with the shipped configuration and as many file descriptors as allowed.
start_broker() {
    local mosquitto=/usr/sbin/mosquitto
    [ -x "$mosquitto" ] || mosquitto=$(command -v mosquitto) || die "mosquitto is not installed"
    port_free "$MQTT_PORT" || die "port $MQTT_PORT is already in use (another broker?); pass --mqtt-port"
    port_free "$MQTT_SERVICE_PORT" || die "port $MQTT_SERVICE_PORT (the internal listener) is already in use"
    (ulimit -n "$(ulimit -Hn)"; apart "$mosquitto" -c "$BROKER_DIR/mosquitto.conf") &
    BROKER_PID=$!
    wait_port "$MQTT_PORT" && wait_port "$MQTT_SERVICE_PORT" || die "mosquitto did not start (see $BROKER_DIR/mosquitto.log)"
}

stop_broker() {
    [ -n "$BROKER_PID" ] || return 0
    kill -TERM "$BROKER_PID" 2>/dev/null
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=""
}

start_cp() {
    port_free "$API_PORT" || die "port $API_PORT is already in use; pass --api-port"
    apart "$BIN/hearth-control-plane" serve >>"$WORK/control-plane.log" 2>&1 &
    CP_PID=$!
    for _ in $(seq 1 200); do
        if curl -fsS --cacert "$PKI/ca.crt" "https://localhost:$API_PORT/readyz" >/dev/null 2>&1; then return 0; fi
        kill -0 "$CP_PID" 2>/dev/null || die "the control plane exited (see $WORK/control-plane.log)"
        sleep 0.1
    done
    die "the control plane did not become ready"
}

stop_cp() {
    [ -n "$CP_PID" ] || return 0
    kill -TERM "$CP_PID" 2>/dev/null
    wait "$CP_PID" 2>/dev/null || true
    CP_PID=""
}

# One sample of a metric of the running control plane.
cp_metric() {
    curl -fsS --cacert "$PKI/ca.crt" "https://localhost:$API_PORT/metrics" \
        | awk -v m="$1" '$1 == m {print $2; found=1} END {if (!found) print 0}'
}

# CPU time (user + system) of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# Of every PostgreSQL server process (the server is shared with whatever else runs here).
pg_ticks() {
    local t=0 pid
    for pid in $(pgrep -x postgres); do t=$((t + $(cpu_ticks "$pid"))); done
    echo "$t"
}
rss_mib() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status" 2>/dev/null || echo 0; }
# Percent of one core over `secs` seconds between two tick samples.
# wrk (Debian's package), installed when missing.
ensure_wrk() {
    command -v wrk >/dev/null && return
    say "installing wrk"
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >&2 \
        || { $sudo apt-get update -qq >&2 && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >&2; }
}

# wrk_ms 1.23ms|456.00us|1.50s → milliseconds, two decimals.
wrk_ms() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; printf "%.2f", n }'; }

pct() { awk -v a="$1" -v b="$2" -v s="$3" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.0f", (b - a) / hz / s * 100}'; }

# Appliances provisioned in bulk: bulk_create ARGS… → BUNDLE, PROVISION_S
bulk_create() {
    BUNDLE=$WORK/bundle.json
    local out
    out=$("$BIN/hearth-control-plane" appliance bulk-create --out "$BUNDLE" "$@" 2>>"$WORK/control-plane.log") \
        || die "bulk-create failed (see $WORK/control-plane.log)"
    PROVISION_S=$(sed -n 's/^seconds=//p' <<<"$out")
}

# The value of KEY in a JSON line (numbers and strings; null for missing).
json_get() { python3 -c 'import json,sys; v=json.loads(sys.argv[1]).get(sys.argv[2]); print("null" if v is None else v)' "$1" "$2"; }
