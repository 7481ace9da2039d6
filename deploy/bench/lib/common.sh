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
# PostgreSQL: a server of the benchmark's own by default (initdb with PostgreSQL's stock
# settings, on PG_PORT, default MQTT_PORT + 20), so that a figure depends neither on how a
# shared server is configured (the one a CI machine provides may run without autovacuum,
# which no deployment does: the appliances table then bloats under heartbeats and the ingest
# wall moves from run to run) nor on what else that server is doing, and PostgreSQL's CPU is
# the benchmark's alone. HEARTH_BENCH_PG_SETTINGS="name=value …" adds settings to it (a
# diagnosis: "autovacuum=off", "shared_preload_libraries=pg_stat_statements").
# HEARTH_BENCH_PG_CPU=CORES caps that server's CPU (a cgroup CPU quota, e.g. 0.25 of a core;
# needs root): a database server smaller than the rest of the stack, to put the wall in the
# database and offer twice it on a box that could not offer twice its own wall.
# HEARTH_BENCH_ADMIN_URL=postgres://…/postgres uses that server instead.

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
PG_PORT=${PG_PORT:-$((MQTT_PORT + 20))}
DB_NAME=hearth_bench_${BENCH//-/_}
ADMIN_URL=${HEARTH_BENCH_ADMIN_URL:-postgres://postgres@127.0.0.1:$PG_PORT/postgres}
DB_URL=${ADMIN_URL%/*}/$DB_NAME
WORK=$(mktemp -d "/tmp/hearth-bench-$BENCH.XXXXXX")
PG_DIR=""
PG_PID=""
PG_DESC=""
PG_CGROUP=""
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

for p in "$MQTT_PORT" "$MQTT_SERVICE_PORT" "$API_PORT" "$PG_PORT"; do
    case $p in 8443 | 8883 | 8884) die "ports 8443, 8883 and 8884 belong to the quickstart; pick others" ;; esac
done

cleanup() {
    local rc=$?
    set +e
    for pid in "${EXTRA_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    [ -n "$CP_PID" ] && kill -TERM "$CP_PID" 2>/dev/null && wait "$CP_PID" 2>/dev/null
    [ -n "$BROKER_PID" ] && kill -TERM "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null
    for pid in "${EXTRA_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    [ -n "${HEARTH_BENCH_KEEP:-}" ] || [ -n "$PG_DIR" ] \
        || psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null 2>&1
    stop_postgres
    if [ "$rc" -ne 0 ] && [ -d "$WORK" ]; then
        say "exit $rc; last lines of the logs:"
        for f in "$WORK"/*.log "$BROKER_DIR"/mosquitto.log; do
            [ -f "$f" ] && { echo "--- $f" >&2; tail -n 15 "$f" >&2; }
        done
    fi
    if [ -n "${HEARTH_BENCH_KEEP:-}" ]; then
        say "kept $WORK and the database $DB_NAME"
        [ -n "$PG_DIR" ] && say "the database server's data is in $PG_DIR; start it again with: $(pg_ctl_cmd) -D $PG_DIR/data start"
    else
        rm -rf "$WORK"
        [ -n "$PG_DIR" ] && rm -rf "$PG_DIR"
    fi
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

# PostgreSQL's own programs (the newest installed), run as the postgres user when this
# runs as root (PostgreSQL refuses to run as root).
pg_bin() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$d" ] && [ -x "$d/initdb" ] && { echo "$d"; return; }
    d=$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")
    [ -x "$d/initdb" ] && echo "$d"
}
as_pg_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pg_ctl_cmd() { echo "$(if [ "$(id -u)" = 0 ]; then echo "runuser -u postgres -- "; fi)$(pg_bin)/pg_ctl"; }

# The benchmark's own PostgreSQL server (see the top of this file).
start_postgres() {
    [ -n "${HEARTH_BENCH_ADMIN_URL:-}" ] && return 0
    local bin kv
    bin=$(pg_bin) || true
    [ -n "$bin" ] || die "PostgreSQL's initdb is missing (deploy/services.sh installs PostgreSQL); or set HEARTH_BENCH_ADMIN_URL"
    port_free "$PG_PORT" || die "port $PG_PORT is already in use; pass another MQTT port, set PG_PORT, or HEARTH_BENCH_ADMIN_URL"
    PG_DIR=$(mktemp -d "/tmp/hearth-bench-$BENCH-pg.XXXXXX")
    [ "$(id -u)" = 0 ] && chown postgres "$PG_DIR"
    as_pg_owner "$bin/initdb" -D "$PG_DIR/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$WORK/initdb.log" 2>&1 \
        || die "initdb failed (see $WORK/initdb.log)"
    {
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $PG_PORT"
        echo "unix_socket_directories = '$PG_DIR'"
        for kv in ${HEARTH_BENCH_PG_SETTINGS:-}; do echo "${kv%%=*} = '${kv#*=}'"; done
    } | as_pg_owner tee -a "$PG_DIR/data/postgresql.conf" >/dev/null
    [ -n "${HEARTH_BENCH_PG_SETTINGS:-}" ] && say "PostgreSQL settings added: ${HEARTH_BENCH_PG_SETTINGS}"
    # In a session of its own, like every component (see apart).
    as_pg_owner setsid "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/postgres.log" -w -t 60 start >/dev/null \
        || die "PostgreSQL did not start (see $PG_DIR/postgres.log)"
    PG_PID=$(head -n 1 "$PG_DIR/data/postmaster.pid")
    [ -n "${HEARTH_BENCH_PG_CPU:-}" ] && cap_postgres "$HEARTH_BENCH_PG_CPU"
    return 0
}

# Puts the server (its processes now, and the backends it forks later) in a cgroup of its
# own with a CPU quota of $1 cores, per 100 ms period (cgroup v1's cpu controller, or v2's).
cap_postgres() {
    local quota pid
    quota=$(awk -v c="$1" 'BEGIN {if (c + 0 <= 0) exit 1; printf "%d", c * 100000}') \
        || die "HEARTH_BENCH_PG_CPU=$1: give the cores as a number above 0 (e.g. 0.25)"
    if [ -w /sys/fs/cgroup/cpu/cgroup.procs ]; then
        PG_CGROUP=/sys/fs/cgroup/cpu/hearth-bench-pg-$PG_PORT
        mkdir -p "$PG_CGROUP" && echo 100000 >"$PG_CGROUP/cpu.cfs_period_us" && echo "$quota" >"$PG_CGROUP/cpu.cfs_quota_us" \
            || die "HEARTH_BENCH_PG_CPU: cannot set a CPU quota in $PG_CGROUP"
    elif grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null; then
        PG_CGROUP=/sys/fs/cgroup/hearth-bench-pg-$PG_PORT
        mkdir -p "$PG_CGROUP" && echo "$quota 100000" >"$PG_CGROUP/cpu.max" \
            || die "HEARTH_BENCH_PG_CPU: cannot set a CPU quota in $PG_CGROUP"
    else
        die "HEARTH_BENCH_PG_CPU needs a writable cgroup CPU controller (run as root)"
    fi
    echo "$PG_PID" >"$PG_CGROUP/cgroup.procs" || die "HEARTH_BENCH_PG_CPU: cannot move PostgreSQL into $PG_CGROUP"
    # Its children now (one may have just ended); those it forks later start in the cgroup.
    for pid in $(pgrep -P "$PG_PID"); do echo "$pid" >"$PG_CGROUP/cgroup.procs" 2>/dev/null || true; done
    say "PostgreSQL capped at $1 of a core ($PG_CGROUP)"
}

# Takes one of the server's processes out of the cap (a measuring backend, which must not
# wait for the quota it measures).
uncap_pg_process() {
    [ -n "$PG_CGROUP" ] || return 0
    echo "$1" >"$(dirname "$PG_CGROUP")/cgroup.procs"
}

stop_postgres() {
    [ -n "$PG_DIR" ] && [ -n "$PG_PID" ] || return 0
    as_pg_owner "$(pg_bin)/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1
    PG_PID=""
    if [ -n "$PG_CGROUP" ]; then rmdir "$PG_CGROUP" 2>/dev/null || true; PG_CGROUP=""; fi
}

# A fresh database, the PKI and the broker's configuration.
setup_stack() {
    command -v psql >/dev/null || die "psql is missing (deploy/services.sh installs it)"
    start_postgres
    psql -qX "$ADMIN_URL" -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" -c "CREATE DATABASE $DB_NAME" >/dev/null \
        || die "cannot create the database $DB_NAME at $ADMIN_URL"
    # What the figures were measured against (for the summary and the JSON line).
    PG_DESC="$([ -n "$PG_DIR" ] && echo "own server" || echo "shared server"), PostgreSQL $(psql -qXAt "$ADMIN_URL" \
        -c "SELECT split_part(current_setting('server_version'), ' ', 1) || ', autovacuum ' || current_setting('autovacuum')")${HEARTH_BENCH_PG_SETTINGS:+, added: $HEARTH_BENCH_PG_SETTINGS}${PG_CGROUP:+, CPU capped at $HEARTH_BENCH_PG_CPU of a core}"
    say "database: $PG_DESC"
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
# The PostgreSQL server's processes: the benchmark's own server's, or with
# HEARTH_BENCH_ADMIN_URL every one here (that server is shared with whatever else runs here).
pg_pids() {
    if [ -n "$PG_PID" ]; then echo "$PG_PID $(pgrep -P "$PG_PID")"; else pgrep -x postgres; fi
}
# CPU ticks of all of them. On the benchmark's own server this also counts the processes
# that have ended (the postmaster reaps every backend and worker, so their CPU is in its
# cutime + cstime): a delta of two samples is then the server's whole CPU in between, an
# autovacuum worker or a psql backend that ended inside it included. On a shared server
# (HEARTH_BENCH_ADMIN_URL) it counts live processes only.
pg_ticks() {
    local t=0 pid
    for pid in $(pg_pids); do t=$((t + $(cpu_ticks "$pid"))); done
    if [ -n "$PG_PID" ]; then t=$((t + $(awk '{print $16 + $17}' "/proc/$PG_PID/stat" 2>/dev/null || echo 0))); fi
    echo "$t"
}
# "pid ticks" lines of the backends serving this benchmark's database (db: the control
# plane's pool and autovacuum workers on it; psql's short-lived ones are gone by the next
# sample) or of the server's background processes (bg: checkpointer, WAL writer…). Unlike
# pg_ticks, pg_sample sees live processes only: a backend or autovacuum worker that ends
# between two samples is not counted. pg_delta BEFORE AFTER:
# the ticks between two such samples (a process that exited in between is not counted; one
# that started is counted whole).
pg_sample() {
    local pid cmd
    for pid in $(pg_pids); do
        cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || continue
        case $cmd in
            *" $DB_NAME "*) [ "$1" = db ] || continue ;;
            *"("* | *"[local]"*) continue ;;
            *) [ "$1" = bg ] || continue ;;
        esac
        echo "$pid $(cpu_ticks "$pid")"
    done
}
pg_delta() { awk 'NR == FNR {a[$1] = $2; next} {s += $2 - (($1 in a) ? a[$1] : 0)} END {print s + 0}' <(echo "$1") <(echo "$2"); }
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
