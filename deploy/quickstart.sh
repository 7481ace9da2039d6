#!/usr/bin/env bash
# Hearth on one machine, from a clean clone:
#
#   deploy/quickstart.sh         install what is missing, build, start everything, enroll a
#                                demo appliance, wait until the API shows it online
#   deploy/quickstart.sh down    stop everything it started
#   deploy/quickstart.sh status  what is running
#
# Everything lives in .hearth/ (git-ignored): the PKI, the broker's files, logs, pid files,
# the demo agent's state, the demo appliance's sandbox root (.hearth/sandbox: the catalog's
# playbooks change files there, never on this machine) and dev.env (source it to talk to
# the stack with curl and mosquitto_sub). Ports: HEARTH_API_PORT (8443), HEARTH_MQTT_PORT (8883,
# the broker's public listener, for appliances) and HEARTH_MQTT_SERVICE_PORT (8884, its
# internal listener on loopback, for the control plane only).
# HEARTH_DB_NAME (hearth) names the database, for a second stack beside the first.
# HEARTH_BUILD_PROFILE=dev builds a debug build instead of release (faster to compile).
# The support assistant's LLM: when an `ollama` binary is installed, its server is started
# (unless one answers on OLLAMA_HOST already) and pulls HEARTH_ASSISTANT__MODEL
# (llama3.2:3b) before the control plane starts; without Ollama the rules answer. A
# HEARTH_ASSISTANT__OLLAMA_URL set by the caller is used as it is. /readyz says whether the
# model is loaded.
set -euo pipefail
case "${1:-}" in -h | --help) sed -n '2,/^[^#]/{/^#/{s/^# \{0,1\}//;p}}' "$0"; exit 0 ;; esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=$ROOT/.hearth
RUN=$STATE/run
LOGS=$STATE/logs
API_PORT=${HEARTH_API_PORT:-8443}
MQTT_PORT=${HEARTH_MQTT_PORT:-8883}
MQTT_SERVICE_PORT=${HEARTH_MQTT_SERVICE_PORT:-8884}
PROFILE=${HEARTH_BUILD_PROFILE:-release}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
DB_NAME=${HEARTH_DB_NAME:-hearth}
# The tables' owner runs the migrations; the control plane logs in as APP_USER, which owns
# nothing and reads nothing until it assumes hearth_service or hearth_tenant (see
# docs/architecture.md, "Database and tenancy").
DB_USER=hearth
DB_PASSWORD=hearth-dev
APP_USER=hearth_app
APP_PASSWORD=hearth-app-dev

say() { printf '\033[1mquickstart:\033[0m %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_pidfile() {
    local name=$1 file=$2
    if pid_alive "$file"; then
        local pid; pid=$(cat "$file")
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
        say "stopped $name (pid $pid)"
    fi
    rm -f "$file"
}

down() {
    stop_pidfile "agent" "$RUN/agent.pid"
    stop_pidfile "control plane" "$RUN/control-plane.pid"
    stop_pidfile "broker" "$STATE/broker/mosquitto.pid"
    stop_pidfile "Ollama" "$RUN/ollama.pid"
}

# The assistant's model, pulled when Ollama is installed (see the header).
start_ollama() {
    local model=${HEARTH_ASSISTANT__MODEL:-llama3.2:3b}
    if [ -n "${HEARTH_ASSISTANT__OLLAMA_URL:-}" ]; then
        say "the support assistant uses $HEARTH_ASSISTANT__OLLAMA_URL (model $model)"
        return 0
    fi
    if ! command -v ollama >/dev/null 2>&1; then
        say "Ollama is not installed: the support assistant answers with its rules (install Ollama for the LLM)"
        return 0
    fi
    export OLLAMA_HOST=${OLLAMA_HOST:-127.0.0.1:11434}
    if ! ollama list >/dev/null 2>&1; then
        say "starting Ollama on $OLLAMA_HOST"
        nohup ollama serve >"$LOGS/ollama.log" 2>&1 &
        echo $! >"$RUN/ollama.pid"
        for _ in $(seq 1 100); do ollama list >/dev/null 2>&1 && break; sleep 0.2; done
    fi
    say "pulling the support assistant's model $model (the first time: a few GB; log in .hearth/logs/ollama-pull.log)"
    if ! ollama pull "$model" >"$LOGS/ollama-pull.log" 2>&1; then
        say "warning: could not pull $model: the assistant runs in reduced mode (rules only) until it is there"
    fi
    local url=$OLLAMA_HOST
    case "$url" in http://*) ;; *) url=http://$url ;; esac
    export HEARTH_ASSISTANT__OLLAMA_URL=$url HEARTH_ASSISTANT__MODEL=$model
}

status() {
    for p in "agent:$RUN/agent.pid" "control plane:$RUN/control-plane.pid" "broker:$STATE/broker/mosquitto.pid" \
        "Ollama:$RUN/ollama.pid"; do
        if pid_alive "${p#*:}"; then say "${p%%:*}: running (pid $(cat "${p#*:}"))"; else say "${p%%:*}: stopped"; fi
    done
}

wait_port() {
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

api() { # api PATH → body; fails on HTTP errors
    curl -fsS --cacert "$STATE/pki/ca.crt" -H "Authorization: Bearer $TENANT_KEY" "https://localhost:$API_PORT$1"
}

up() {
    local started=$SECONDS
    mkdir -p "$RUN" "$LOGS"
    command -v cargo >/dev/null || die "cargo is not installed (https://rustup.rs)"

    say "checking PostgreSQL and Mosquitto"
    local admin_url; admin_url=$("$ROOT/deploy/services.sh")

    say "building ($PROFILE)"
    (cd "$ROOT" && cargo build --locked --profile "$PROFILE" -p hearth-control-plane -p hearth-agent) >&2

    down  # a previous run's processes, if any

    say "database $DB_NAME"
    psql "$admin_url" -qtA -v ON_ERROR_STOP=1 >/dev/null <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER') THEN
    CREATE ROLE $DB_USER LOGIN PASSWORD '$DB_PASSWORD';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$APP_USER') THEN
    CREATE ROLE $APP_USER LOGIN NOINHERIT PASSWORD '$APP_PASSWORD';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'hearth_tenant') THEN
    CREATE ROLE hearth_tenant NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'hearth_service') THEN
    CREATE ROLE hearth_service NOLOGIN;
  END IF;
END \$\$;
GRANT hearth_tenant, hearth_service TO $DB_USER;
GRANT hearth_tenant, hearth_service TO $APP_USER;
SQL
    if [ "$(psql "$admin_url" -qtAc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" != 1 ]; then
        psql "$admin_url" -qc "CREATE DATABASE $DB_NAME OWNER $DB_USER" >/dev/null
    fi
    local owner_url="postgres://$DB_USER:$DB_PASSWORD@127.0.0.1:5432/$DB_NAME"
    export HEARTH_DATABASE__URL="postgres://$APP_USER:$APP_PASSWORD@127.0.0.1:5432/$DB_NAME"
    export HEARTH_PKI__DIR=$STATE/pki
    # A revocation rewrites the CRL; Mosquitto reads it again on SIGHUP.
    export HEARTH_PKI__CRL_RELOAD_COMMAND="kill -HUP \$(cat '$STATE/broker/mosquitto.pid')"
    export HEARTH_HTTP__LISTEN=127.0.0.1:$API_PORT
    # The control plane connects to the internal listener; appliances are told the public one.
    export HEARTH_MQTT__HOST=localhost
    export HEARTH_MQTT__PORT=$MQTT_SERVICE_PORT
    export HEARTH_MQTT__PUBLIC_PORT=$MQTT_PORT
    if [ ! -f "$STATE/secrets.key" ]; then
        (umask 077; head -c 32 /dev/urandom | base64 >"$STATE/secrets.key")
    fi
    HEARTH_SECRETS__KEY=$(cat "$STATE/secrets.key")
    export HEARTH_SECRETS__KEY
    HEARTH_DATABASE__URL=$owner_url "$BIN/hearth-control-plane" migrate
    # A development key for signing agent builds (a real fleet keeps its key offline):
    # the control plane accepts uploads it signed, and the demo agent trusts it.
    if [ ! -f "$STATE/signing/release.pub" ]; then
        (umask 077; mkdir -p "$STATE/signing")
        "$BIN/hearth-control-plane" artifact keygen --out "$STATE/signing/release" >/dev/null
    fi
    HEARTH_ARTIFACTS__PUBLIC_KEYS="[\"$(cat "$STATE/signing/release.pub")\"]"
    export HEARTH_ARTIFACTS__PUBLIC_KEYS

    if [ ! -f "$STATE/pki/ca.key" ]; then
        say "creating the development PKI in .hearth/pki"
        "$BIN/hearth-control-plane" pki init --dir "$STATE/pki" >/dev/null
    fi
    [ -f "$STATE/pki/service-ca.crt" ] \
        || die ".hearth/pki predates the service CA; run deploy/quickstart.sh down, remove .hearth/ and start again"

    say "starting Mosquitto (mutual TLS, client id = certificate CN) on port $MQTT_PORT, internal $MQTT_SERVICE_PORT"
    local conf; conf=$("$BIN/hearth-control-plane" broker-config --pki-dir "$STATE/pki" --data-dir "$STATE/broker" \
        --port "$MQTT_PORT" --service-port "$MQTT_SERVICE_PORT" --run-as "$(id -un)" --persistence \
        | sed -n 's/^mosquitto_conf=//p')
    local mosquitto; mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
    "$mosquitto" -d -c "$conf"
    wait_port "$MQTT_PORT" && wait_port "$MQTT_SERVICE_PORT" \
        || die "Mosquitto did not start; see $STATE/broker/mosquitto.log"

    start_ollama

    say "starting the control plane on https://localhost:$API_PORT"
    nohup "$BIN/hearth-control-plane" serve >"$LOGS/control-plane.log" 2>&1 &
    echo $! >"$RUN/control-plane.pid"
    for _ in $(seq 1 100); do
        curl -fsS --cacert "$STATE/pki/ca.crt" "https://localhost:$API_PORT/readyz" >/dev/null 2>&1 && break
        pid_alive "$RUN/control-plane.pid" || die "the control plane exited; see $LOGS/control-plane.log"
        sleep 0.2
    done
    curl -fsS --cacert "$STATE/pki/ca.crt" "https://localhost:$API_PORT/readyz" >/dev/null \
        || die "the control plane is not ready; see $LOGS/control-plane.log"

    # The admin operator token, the demo tenant and appliance are made once and reused while
    # their credentials still work.
    TENANT_KEY=""
    OPERATOR_TOKEN=""
    DEMO_EMAIL=""
    DEMO_PASSWORD=""
    CONSOLE_ADMIN_NAME="" CONSOLE_ADMIN_PASSWORD="" CONSOLE_VIEWER_NAME="" CONSOLE_VIEWER_PASSWORD=""
    [ -f "$STATE/demo.env" ] && . "$STATE/demo.env"
    if [ -z "$OPERATOR_TOKEN" ] || ! curl -fsS --cacert "$STATE/pki/ca.crt" -H "Authorization: Bearer $OPERATOR_TOKEN" \
            "https://localhost:$API_PORT/api/v1/admin/fleet/summary" >/dev/null 2>&1; then
        say "creating an admin operator token"
        OPERATOR_TOKEN=$("$BIN/hearth-control-plane" operator create --role admin quickstart-admin \
            | sed -n 's/^operator_token=//p')
    fi
    if [ -z "$TENANT_KEY" ] || ! api "/api/v1/appliances/${APPLIANCE_ID:-none}" 2>/dev/null | grep -q '"revoked_at":null'; then
        say "creating the demo tenant and enrolling a demo appliance"
        local out; out=$("$BIN/hearth-control-plane" tenant create "Demo household")
        TENANT_ID=$(sed -n 's/^tenant_id=//p' <<<"$out")
        TENANT_KEY=$(sed -n 's/^api_key=//p' <<<"$out")
        out=$("$BIN/hearth-control-plane" appliance create --tenant "$TENANT_ID" "demo-appliance")
        APPLIANCE_ID=$(sed -n 's/^appliance_id=//p' <<<"$out")
        local token; token=$(sed -n 's/^enrollment_token=//p' <<<"$out")
        rm -rf "$STATE/agent"
        "$BIN/hearth-agent" enroll --server "https://localhost:$API_PORT" --token "$token" \
            --ca-file "$STATE/pki/ca.crt" --state-dir "$STATE/agent" >&2
        DEMO_EMAIL=""
    fi
    # The demo household's owner signs in on the support chat page (/support).
    if [ -z "${DEMO_EMAIL:-}" ] || ! curl -fsS --cacert "$STATE/pki/ca.crt" -H 'Content-Type: application/json' \
            -d "{\"email\": \"$DEMO_EMAIL\", \"password\": \"$DEMO_PASSWORD\"}" \
            "https://localhost:$API_PORT/api/v1/auth/login" >/dev/null 2>&1; then
        say "creating the demo household's owner account (for the support chat page)"
        DEMO_EMAIL="owner-${TENANT_ID:0:8}@demo.hearth.example"
        DEMO_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
        printf '%s\n' "$DEMO_PASSWORD" \
            | "$BIN/hearth-control-plane" user create --tenant "$TENANT_ID" --email "$DEMO_EMAIL" >/dev/null
    fi
    # Operators sign in to the web console (/console) with accounts: an admin and a viewer.
    console_account() { # role, name var, password var
        local name=${!2:-} password=${!3:-}
        if [ -z "$name" ] || ! curl -fsS --cacert "$STATE/pki/ca.crt" -H 'Content-Type: application/json' \
                -d "{\"name\": \"$name\", \"password\": \"$password\"}" \
                "https://localhost:$API_PORT/api/v1/console/login" >/dev/null 2>&1; then
            say "creating the console's $1 account"
            name="console-$1-$(head -c 3 /dev/urandom | od -An -tx1 | tr -d ' \n')"
            password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
            printf '%s\n' "$password" \
                | "$BIN/hearth-control-plane" operator account create "$name" --role "$1" --password-stdin >/dev/null
        fi
        printf -v "$2" '%s' "$name"
        printf -v "$3" '%s' "$password"
    }
    console_account admin CONSOLE_ADMIN_NAME CONSOLE_ADMIN_PASSWORD
    console_account viewer CONSOLE_VIEWER_NAME CONSOLE_VIEWER_PASSWORD
    (umask 077; printf '%s=%s\n' TENANT_ID "$TENANT_ID" TENANT_KEY "$TENANT_KEY" APPLIANCE_ID "$APPLIANCE_ID" \
        OPERATOR_TOKEN "$OPERATOR_TOKEN" DEMO_EMAIL "$DEMO_EMAIL" DEMO_PASSWORD "$DEMO_PASSWORD" \
        CONSOLE_ADMIN_NAME "$CONSOLE_ADMIN_NAME" CONSOLE_ADMIN_PASSWORD "$CONSOLE_ADMIN_PASSWORD" \
        CONSOLE_VIEWER_NAME "$CONSOLE_VIEWER_NAME" CONSOLE_VIEWER_PASSWORD "$CONSOLE_VIEWER_PASSWORD" \
        >"$STATE/demo.env")

    mkdir -p "$STATE/sandbox"
    cat >"$STATE/agent.toml" <<TOML
state_dir = "$STATE/agent"
heartbeat_interval_s = 10
# This run's broker (a reused enrollment may have recorded another port).
broker_host = "localhost"
broker_port = $MQTT_PORT
# The demo appliance runs the repository's playbooks against a sandbox root.
ansible_dir = "$ROOT/ansible"
hearth_root = "$STATE/sandbox"
manage_services = false
# Agent updates signed with the development key (.hearth/signing).
update_public_keys = ["$(cat "$STATE/signing/release.pub")"]
TOML
    say "starting the demo agent"
    local agent_started; agent_started=$(date -u +%Y-%m-%dT%H:%M:%S)
    # Started again when it fails, as systemd's Restart=on-failure does for the packaged
    # agent: an agent update restarts into the new version, and a new version that fails
    # is started again until the previous one comes back (docs/architecture.md).
    nohup bash -c 'trap '\''kill -TERM "$child" 2>/dev/null; wait "$child"; exit 0'\'' TERM INT
        while :; do
            "$0" run --config "$1" & child=$!
            wait "$child" && exit 0
            echo "--- the agent exited ($?); starting it again in 2 s"
            sleep 2
        done' "$BIN/hearth-agent" "$STATE/agent.toml" >"$LOGS/agent.log" 2>&1 &
    echo $! >"$RUN/agent.pid"

    (umask 077; cat >"$STATE/dev.env" <<ENV
# Written by deploy/quickstart.sh. Source it: . .hearth/dev.env
export HEARTH_API_URL=https://localhost:$API_PORT
# The binaries this run built (\$HEARTH_BIN/hearth-control-plane, \$HEARTH_BIN/hearth-agent).
export HEARTH_BIN=$BIN
export HEARTH_TENANT_ID=$TENANT_ID
export HEARTH_TENANT_KEY=$TENANT_KEY
export HEARTH_OPERATOR_TOKEN=$OPERATOR_TOKEN
# The tables' owner: for psql and the operator CLI (export HEARTH_DATABASE__URL=\$HEARTH_DATABASE_URL).
export HEARTH_DATABASE_URL=$owner_url
export HEARTH_MQTT_HOST=localhost
# The broker's public listener (appliances; the client id is the certificate's CN, so a
# client with the demo appliance's certificate replaces the demo agent's connection).
export HEARTH_MQTT_PORT=$MQTT_PORT
# Its internal listener (loopback), which only the control plane's certificate reaches.
export HEARTH_MQTT_SERVICE_PORT=$MQTT_SERVICE_PORT
export HEARTH_CA_CERT=$STATE/pki/ca.crt
export HEARTH_CONTROL_PLANE_CERT=$STATE/pki/control-plane.crt
export HEARTH_CONTROL_PLANE_KEY=$STATE/pki/control-plane.key
export HEARTH_DEMO_APPLIANCE_ID=$APPLIANCE_ID
export HEARTH_DEMO_CERT=$STATE/agent/cert.pem
export HEARTH_DEMO_KEY=$STATE/agent/key.pem
# The support chat page and the demo household owner's sign-in.
export HEARTH_CHAT_URL=https://localhost:$API_PORT/support
export HEARTH_DEMO_EMAIL=$DEMO_EMAIL
export HEARTH_DEMO_PASSWORD=$DEMO_PASSWORD
# The operators' web console and its two accounts (an admin, and a viewer who changes nothing).
export HEARTH_CONSOLE_URL=https://localhost:$API_PORT/console
export HEARTH_CONSOLE_ADMIN_NAME=$CONSOLE_ADMIN_NAME
export HEARTH_CONSOLE_ADMIN_PASSWORD=$CONSOLE_ADMIN_PASSWORD
export HEARTH_CONSOLE_VIEWER_NAME=$CONSOLE_VIEWER_NAME
export HEARTH_CONSOLE_VIEWER_PASSWORD=$CONSOLE_VIEWER_PASSWORD
ENV
)

    say "waiting for the demo appliance to come online"
    local body="" seen=""
    for _ in $(seq 1 150); do
        body=$(api "/api/v1/appliances/$APPLIANCE_ID" 2>/dev/null || true)
        # Online with a heartbeat from the agent just started (not an earlier run's state).
        seen=$(sed -n 's/.*"metrics_at":"\([^"]*\)".*/\1/p' <<<"$body")
        grep -q '"status":"online"' <<<"$body" && [[ "${seen:0:19}" > "$agent_started" || "${seen:0:19}" == "$agent_started" ]] && break
        pid_alive "$RUN/agent.pid" || die "the agent exited; see $LOGS/agent.log"
        sleep 0.2
    done
    grep -q '"status":"online"' <<<"$body" && [[ "${seen:0:19}" > "$agent_started" || "${seen:0:19}" == "$agent_started" ]] \
        || die "the demo appliance did not come online; see $LOGS/"
    say "demo appliance $APPLIANCE_ID is online ($((SECONDS - started)) s)"

    cat <<NEXT

Hearth is running. Logs in .hearth/logs/, broker log in .hearth/broker/mosquitto.log.

Support chat: https://localhost:$API_PORT/support (the certificate is the development CA's,
.hearth/pki/ca.crt) — sign in as $DEMO_EMAIL with the password in .hearth/dev.env
(HEARTH_DEMO_PASSWORD).

  . .hearth/dev.env
  curl --cacert \$HEARTH_CA_CERT -H "Authorization: Bearer \$HEARTH_TENANT_KEY" \$HEARTH_API_URL/api/v1/appliances
  curl --cacert \$HEARTH_CA_CERT \$HEARTH_API_URL/metrics | grep ^hearth_
  # run a catalog task on the demo appliance (in its sandbox, .hearth/sandbox) and follow it
  TASK=\$(curl -s --cacert \$HEARTH_CA_CERT -H "Authorization: Bearer \$HEARTH_TENANT_KEY" -H 'Content-Type: application/json' \\
      -d '{"action": "dns.record.add", "params": {"hostname": "printer.home", "ip": "192.168.1.50"}}' \\
      \$HEARTH_API_URL/api/v1/appliances/\$HEARTH_DEMO_APPLIANCE_ID/tasks | sed 's/.*"id":"\\([^"]*\\)".*/\\1/')
  curl --cacert \$HEARTH_CA_CERT -H "Authorization: Bearer \$HEARTH_TENANT_KEY" \$HEARTH_API_URL/api/v1/tasks/\$TASK
  # watch what the demo appliance sends, with the control plane's identity on the internal listener
  mosquitto_sub --cafile \$HEARTH_CA_CERT --cert \$HEARTH_CONTROL_PLANE_CERT --key \$HEARTH_CONTROL_PLANE_KEY \\
      -h \$HEARTH_MQTT_HOST -p \$HEARTH_MQTT_SERVICE_PORT -t "hearth/v1/\$HEARTH_DEMO_APPLIANCE_ID/up/#" -v

Stop everything with: deploy/quickstart.sh down
NEXT
}

case "${1:-up}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) die "usage: deploy/quickstart.sh [up|down|status]" ;;
esac
