#!/usr/bin/env bash
# Makes sure what Hearth needs on a development or CI machine is installed and running:
# PostgreSQL (running, with a superuser reachable over TCP), the Mosquitto binary (tests
# and the quickstart start their own TLS instances) and ansible-core (the agent runs the
# catalog's playbooks; tests run them for real in sandbox roots). Installs missing Debian
# packages with apt-get. Progress goes to stderr; the last line on stdout is a PostgreSQL
# superuser URL, e.g.
#
#   ADMIN_URL=$(deploy/services.sh)
set -euo pipefail
case "${1:-}" in -h | --help) sed -n '2,/^[^#]/{/^#/{s/^# \{0,1\}//;p}}' "$0"; exit 0 ;; esac

log() { echo "services: $*" >&2; }

need_pkgs=()
command -v psql >/dev/null 2>&1 || need_pkgs+=(postgresql-client)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_pkgs+=(postgresql)
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null 2>&1 || need_pkgs+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need_pkgs+=(mosquitto-clients)
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
command -v ansible-playbook >/dev/null 2>&1 || need_pkgs+=(ansible-core)
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
command -v useradd >/dev/null 2>&1 || need_pkgs+=(passwd)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    log "installing ${need_pkgs[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq >&2
    $SUDO apt-get install -y -qq "${need_pkgs[@]}" >&2
fi

PGHOST=127.0.0.1
PGPORT=${PGPORT:-5432}
if ! pg_isready -q -h "$PGHOST" -p "$PGPORT"; then
    log "starting PostgreSQL"
    version=$(ls /usr/lib/postgresql | sort -V | tail -n1)
    if ! ls /etc/postgresql/"$version"/main >/dev/null 2>&1; then
        pg_createcluster "$version" main >&2
    fi
    pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 \
        || service postgresql start >&2
    for _ in $(seq 1 60); do
        pg_isready -q -h "$PGHOST" -p "$PGPORT" && break
        sleep 0.5
    done
    pg_isready -h "$PGHOST" -p "$PGPORT" >&2 || { log "PostgreSQL did not start"; exit 1; }
fi

# A superuser URL: the machine's trust-authenticated postgres role if that works, else a
# password role created through the local socket as the postgres OS user.
if [ -n "${HEARTH_ADMIN_DATABASE_URL:-}" ] && psql "$HEARTH_ADMIN_DATABASE_URL" -qtAc 'SELECT 1' >/dev/null 2>&1; then
    echo "$HEARTH_ADMIN_DATABASE_URL"
    exit 0
fi
for url in "postgres://postgres@$PGHOST:$PGPORT/postgres" "postgres://root@$PGHOST:$PGPORT/postgres"; do
    if [ "$(psql "$url" -qtAc 'SELECT rolsuper FROM pg_roles WHERE rolname = current_user' 2>/dev/null)" = "t" ]; then
        echo "$url"
        exit 0
    fi
done
log "creating the hearth_admin superuser for development and tests"
runuser -u postgres -- psql -qtA -v ON_ERROR_STOP=1 >&2 <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'hearth_admin') THEN
    CREATE ROLE hearth_admin LOGIN SUPERUSER PASSWORD 'hearth_admin';
  END IF;
END $$;
SQL
echo "postgres://hearth_admin:hearth_admin@$PGHOST:$PGPORT/postgres"
