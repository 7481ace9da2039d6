#!/usr/bin/env bash
# Tests of the Hearth Ansible content, run against throw-away sandboxes (hearth_root is a
# mktemp directory, hearth_manage_services false): nothing on the host is changed.
#
#   ansible/tests/run.sh          # from anywhere; needs ansible-playbook, python3, openssl
#
# Prints one line per check and ends with "N passed, M failed"; exits 1 if any failed.
set -euo pipefail

ANSIBLE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ANSIBLE_CONFIG="$ANSIBLE_DIR/ansible.cfg"
# The agent runs ansible-playbook from an arbitrary directory: so do we.
cd /

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# Checks print "ok   …" / "FAIL …" lines; independent groups of checks run in parallel
# (each in its own sandbox, output buffered in $WORK/logs) and are printed in order.
pass() { printf 'ok   %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*"; }
# check DESCRIPTION COMMAND...: one check, passes when the command succeeds.
check() {
    local what="$1"; shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}

# --- helpers -------------------------------------------------------------------------------

# events.py FILE: validates the callback output (only JSON lines; playbook_start first,
# known events, stats last) and prints the stats as "ok changed failed skipped unreachable".
cat >"$WORK/events.py" <<'PY'
import json, sys
EVENTS = {"playbook_start", "task_start", "ok", "changed", "skipped", "failed", "unreachable", "stats"}
lines = open(sys.argv[1], encoding="utf-8").read().splitlines()
if not lines:
    sys.exit("no output on stdout")
events = []
for n, line in enumerate(lines, 1):
    try:
        ev = json.loads(line)
    except ValueError:
        sys.exit("stdout line %d is not JSON: %r" % (n, line[:200]))
    if not isinstance(ev, dict) or ev.get("event") not in EVENTS:
        sys.exit("stdout line %d is not a known event: %r" % (n, line[:200]))
    if ev["event"] in ("ok", "changed", "skipped", "failed", "unreachable"):
        if not isinstance(ev.get("task"), str) or not isinstance(ev.get("msg"), str) or len(ev["msg"]) > 2000:
            sys.exit("stdout line %d: result events need task and msg (<= 2000 chars): %r" % (n, line[:200]))
    if ev["event"] == "task_start" and not isinstance(ev.get("task"), str):
        sys.exit("stdout line %d: task_start without task" % n)
    events.append(ev)
if events[0]["event"] != "playbook_start":
    sys.exit("the first event is not playbook_start")
stats = events[-1]
if stats["event"] != "stats":
    sys.exit("the last event is not stats")
if [e for e in events[:-1] if e["event"] == "stats"]:
    sys.exit("more than one stats event")
keys = ["ok", "changed", "failed", "skipped", "unreachable"]
if not all(isinstance(stats.get(k), int) for k in keys):
    sys.exit("stats event lacks counters: %r" % stats)
print(" ".join(str(stats[k]) for k in keys))
PY

# run NAME PLAYBOOK VARS_JSON: runs a playbook; leaves NAME.{out,err,rc} in $WORK.
run() {
    local name="$1" playbook="$2" vars="$3" rc=0
    printf '%s\n' "$vars" >"$WORK/$name.vars.json"
    ansible-playbook "$ANSIBLE_DIR/$playbook" -e @"$WORK/$name.vars.json" \
        >"$WORK/$name.out" 2>"$WORK/$name.err" || rc=$?
    echo "$rc" >"$WORK/$name.rc"
}
rc_of() { cat "$WORK/$1.rc"; }
# stats NAME: "ok changed failed skipped unreachable", or fails if the output is malformed.
stats() { python3 "$WORK/events.py" "$WORK/$1.out"; }
show() { # diagnostics for a failed check
    echo "---- $1: rc=$(rc_of "$1") stdout (tail):"; tail -n 5 "$WORK/$1.out" || true
    echo "---- stderr (tail):"; tail -n 5 "$WORK/$1.err" || true
}

# succeeded NAME [MAX_CHANGED]: exit 0, well-formed events, failed=0 (and changed<=MAX).
succeeded() {
    local name="$1" max_changed="${2:-}" s
    if [[ "$(rc_of "$name")" != 0 ]]; then show "$name"; return 1; fi
    if ! s="$(stats "$name")"; then show "$name"; return 1; fi
    read -r _ok changed failed _skipped unreachable <<<"$s"
    if [[ "$failed" != 0 || "$unreachable" != 0 ]]; then show "$name"; return 1; fi
    if [[ -n "$max_changed" && "$changed" -gt "$max_changed" ]]; then
        echo "---- $name: changed=$changed, expected at most $max_changed"
        grep '"event":"changed"' "$WORK/$name.out" | head -n 5 || true
        return 1
    fi
}
# changed_something NAME: the run reported changed >= 1.
changed_something() {
    local s
    s="$(stats "$1")" || return 1
    read -r _ok changed _failed _skipped _unreachable <<<"$s"
    [[ "$changed" -ge 1 ]]
}
# failed_run NAME: non-zero exit, well-formed events, a "failed" event and failed>=1.
failed_run() {
    local name="$1" s
    if [[ "$(rc_of "$name")" == 0 ]]; then show "$name"; return 1; fi
    if ! s="$(stats "$name")"; then show "$name"; return 1; fi
    read -r _ok _changed failed _skipped _unreachable <<<"$s"
    [[ "$failed" -ge 1 ]] && grep -q '"event":"failed"' "$WORK/$1.out"
}
vars_for() { # vars_for SANDBOX PARAMS_JSON
    printf '{"params": %s, "hearth_root": "%s", "hearth_manage_services": false}' "$2" "$1"
}
mode_of() { stat -c '%a' "$1"; }

# What the playbooks would touch on a real appliance: must be the same after the tests.
HOST_FILES=(/etc/passwd /etc/group /etc/shadow /etc/gshadow /etc/aliases /etc/dnsmasq.d /etc/samba
            /etc/postfix /etc/hearth /srv/shares /var/lib/hearth)
host_snapshot() {
    local f
    for f in "${HOST_FILES[@]}"; do
        if [[ -e "$f" ]]; then find "$f" -xdev -exec stat -c '%n %s %Y %a' {} + 2>/dev/null | sort; else echo "absent $f"; fi
    done | sha256sum
}
HOST_BEFORE="$(host_snapshot)"

# --- (a) syntax ----------------------------------------------------------------------------

mapfile -t PLAYBOOKS < <(cd "$ANSIBLE_DIR" && ls playbooks/*.yml site.yml)
section_syntax() {
    local pb
    # One ansible-playbook for all (start-up is the slow part); one by one only to name a culprit.
    if (cd "$ANSIBLE_DIR" && ansible-playbook --syntax-check "${PLAYBOOKS[@]}" >/dev/null 2>"$WORK/syntax.err"); then
        for pb in "${PLAYBOOKS[@]}"; do pass "syntax: $pb"; done
    else
        for pb in "${PLAYBOOKS[@]}"; do
            check "syntax: $pb" ansible-playbook --syntax-check "$ANSIBLE_DIR/$pb" >/dev/null
        done
    fi
}

# Every catalog action has its playbook, and every playbook belongs to an action.
CATALOG="$WORK/catalog.tsv"
python3 - "$ANSIBLE_DIR/catalog.json" >"$CATALOG" <<'PY'
import json, sys
for a in json.load(open(sys.argv[1]))["actions"]:
    print("\t".join([a["id"], a["playbook"], json.dumps(a["example_params"])]))
PY
catalog_playbooks_match() {
    diff <(cut -f2 "$CATALOG" | sort) <(printf '%s\n' "${PLAYBOOKS[@]}" | grep -v '^site.yml$' | sort)
}

declare -A EXAMPLE
while IFS=$'\t' read -r id _pb params; do EXAMPLE[$id]="$params"; done <"$CATALOG"

# --- (b) every catalog action, twice, in its own sandbox -----------------------------------

# Removals (and a password reset) need something to act on: run the matching action first.
declare -A PREREQ=(
    [users.remove]=users.add
    [users.reset_password]=users.add
    [shares.remove]=shares.add
    [dns.record.remove]=dns.record.add
    [mail.alias.remove]=mail.alias.add
)
# Actions, not states: every run changes something (documented in README.md).
declare -A INHERENTLY_CHANGED=([service.restart]=1 [users.reset_password]=1)

playbook_of() { awk -F'\t' -v id="$1" '$1 == id { print $2 }' "$CATALOG"; }

section_action() {
    local id="$1" playbook="$2" params="$3" sb tag pre pwfile pw conf pki
    sb="$(mktemp -d "$WORK/sandbox.XXXXXX")"
    tag="${id//./_}"
    if [[ -n "${PREREQ[$id]:-}" ]]; then
        pre="${PREREQ[$id]}"
        run "$tag.pre" "$(playbook_of "$pre")" "$(vars_for "$sb" "${EXAMPLE[$pre]}")"
        check "$id: prerequisite $pre succeeds" succeeded "$tag.pre"
    fi
    run "$tag.1" "$playbook" "$(vars_for "$sb" "$params")"
    check "$id: first run succeeds with well-formed events" succeeded "$tag.1"
    # In a fresh sandbox (or right after the matching add) there is always work to do.
    check "$id: first run changes something" changed_something "$tag.1"
    if [[ "$id" == users.reset_password ]]; then
        cp "$sb/var/lib/hearth/outputs/alice.password" "$WORK/$tag.first-password" || true
    fi
    run "$tag.2" "$playbook" "$(vars_for "$sb" "$params")"
    if [[ -n "${INHERENTLY_CHANGED[$id]:-}" ]]; then
        check "$id: second run succeeds (changes by nature)" succeeded "$tag.2"
    else
        check "$id: second run changes nothing" succeeded "$tag.2" 0
    fi

    case "$id" in
    users.add)
        check "$id: alice in the sandbox's etc/passwd" grep -q '^alice:x:[0-9]*:[0-9]*:Alice Example:' "$sb/etc/passwd"
        check "$id: alice in the sandbox's group family" grep -Eq '^family:x:[0-9]+:(.*,)?alice(,|$)' "$sb/etc/group"
        check "$id: alice NOT in the host's /etc/passwd" bash -c '! grep -q "^alice:" /etc/passwd'
        ;;
    users.remove)
        check "$id: alice gone from the sandbox's etc/passwd" bash -c "! grep -q '^alice:' '$sb/etc/passwd'"
        check "$id: alice gone from the sandbox's etc/shadow" bash -c "! grep -q '^alice:' '$sb/etc/shadow'"
        ;;
    users.reset_password)
        pwfile="$sb/var/lib/hearth/outputs/alice.password"
        check "$id: temporary password file is mode 600" test "$(mode_of "$pwfile")" = 600
        check "$id: temporary password is 16 letters/digits" grep -Eqx '[A-Za-z0-9]{16}' "$pwfile"
        pw="$(cat "$pwfile")"
        check "$id: each reset sets a new password" bash -c "! cmp -s '$pwfile' '$WORK/$tag.first-password'"
        check "$id: temporary passwords never printed" bash -c \
            "! grep -q -e '$pw' -e \"\$(cat '$WORK/$tag.first-password')\" '$WORK/$tag.1.out' '$WORK/$tag.1.err' '$WORK/$tag.2.out' '$WORK/$tag.2.err'"
        # shellcheck disable=SC2016 # a literal $6$ in the pattern
        check "$id: shadow holds a SHA-512 hash, change forced (lastchg 0)" \
            grep -Eq '^alice:\$6\$[^:]+:0:' "$sb/etc/shadow"
        check "$id: output says where the password is" grep -q 'temporary password written to the appliance' "$WORK/$tag.2.out"
        ;;
    shares.add)
        conf="$sb/etc/samba/smb.conf.d/photos.conf"
        check "$id: [photos] section written" grep -qx '\[photos\]' "$conf"
        check "$id: path, read only, valid users" bash -c "grep -q 'path = /srv/shares/photos' '$conf' && grep -q 'read only = no' '$conf' && grep -q 'valid users = alice' '$conf'"
        check "$id: srv/shares/photos created in the sandbox" test -d "$sb/srv/shares/photos"
        ;;
    shares.remove)
        check "$id: photos.conf removed" test ! -e "$sb/etc/samba/smb.conf.d/photos.conf"
        check "$id: the shared files stay" test -d "$sb/srv/shares/photos"
        ;;
    dns.record.add)
        check "$id: host-record line written" grep -qx 'host-record=printer.home,192.168.1.50' "$sb/etc/dnsmasq.d/hearth-records.conf"
        run "$tag.3" "$playbook" "$(vars_for "$sb" '{"hostname": "Printer.home", "ip": "192.168.1.51"}')"
        check "$id: a new address replaces the record (no duplicate)" bash -c \
            "[[ \$(grep -c '^host-record=printer.home,' '$sb/etc/dnsmasq.d/hearth-records.conf') == 1 ]] && grep -qx 'host-record=printer.home,192.168.1.51' '$sb/etc/dnsmasq.d/hearth-records.conf'"
        ;;
    dns.record.remove)
        check "$id: record gone" bash -c "! grep -q '^host-record=printer.home,' '$sb/etc/dnsmasq.d/hearth-records.conf'"
        ;;
    dns.forwarders.set)
        check "$id: exactly the given servers, in order" bash -c \
            "[[ \"\$(grep -v '^#' '$sb/etc/dnsmasq.d/hearth-forwarders.conf')\" == \$'server=9.9.9.9\nserver=1.1.1.1' ]]"
        ;;
    mail.alias.add)
        check "$id: 'family: alice' in etc/aliases" grep -qx 'family: alice' "$sb/etc/aliases"
        ;;
    mail.alias.remove)
        check "$id: alias gone" bash -c "! grep -q '^family' '$sb/etc/aliases'"
        ;;
    pki.cert.issue)
        pki="$sb/etc/hearth/pki"
        check "$id: certificate verifies against the local CA" bash -c \
            "openssl verify -CAfile '$pki/ca.crt' '$pki/certs/nas.home.crt' >/dev/null"
        check "$id: SANs are nas.home and files.home" bash -c \
            "openssl x509 -in '$pki/certs/nas.home.crt' -noout -ext subjectAltName | grep -q 'DNS:nas.home, DNS:files.home'"
        check "$id: keys are mode 600" bash -c "[[ \$(stat -c %a '$pki/ca.key') == 600 && \$(stat -c %a '$pki/certs/nas.home.key') == 600 ]]"
        run "$tag.3" "$playbook" "$(vars_for "$sb" '{"common_name": "nas.home", "alt_names": ["files.home", "backup.home"]}')"
        check "$id: changed names re-issue the certificate" bash -c \
            "openssl x509 -in '$pki/certs/nas.home.crt' -noout -ext subjectAltName | grep -q 'DNS:backup.home'"
        ;;
    service.restart)
        check "$id: both requests recorded in restarts.log" bash -c \
            "[[ \$(grep -c ' restart dnsmasq$' '$sb/var/lib/hearth/restarts.log') == 2 ]]"
        ;;
    appliance.reboot)
        check "$id: reboot request recorded" test -f "$sb/var/lib/hearth/reboot-requested"
        ;;
    esac
}

# --- (c) site.yml ------------------------------------------------------------------------

RELAY_SECRET='s3cret-Relay-Pa55'
SITE_CONFIG='{
  "agent": {"heartbeat_interval_s": 30},
  "users": [
    {"username": "alice", "full_name": "Alice Example", "groups": ["family"]},
    {"username": "bob", "groups": ["family", "media"]}
  ],
  "shares": [
    {"name": "photos", "users": ["alice", "bob"]},
    {"name": "archive", "read_only": true}
  ],
  "dns": {
    "records": [{"hostname": "nas.home", "ip": "192.168.1.10"}, {"hostname": "printer.lan", "ip": "fd00::50"}],
    "forwarders": ["9.9.9.9"]
  },
  "mail": {
    "aliases": [{"alias": "family", "destination": "alice"}, {"alias": "postmaster", "destination": "bob@example.com"}],
    "relay": {"host": "smtp.example.com", "port": 587, "username": "appliance@example.com", "password": "'"$RELAY_SECRET"'"}
  }
}'
site_vars() { printf '{"config": %s, "hearth_root": "%s", "hearth_manage_services": false}' "$2" "$1"; }

section_site() {
    local sb
    sb="$(mktemp -d "$WORK/sandbox.XXXXXX")"
    run site.1 site.yml "$(site_vars "$sb" "$SITE_CONFIG")"
    check "site.yml: full document converges" succeeded site.1
    run site.2 site.yml "$(site_vars "$sb" "$SITE_CONFIG")"
    check "site.yml: second run changes nothing" succeeded site.2 0
    check "site.yml: users alice and bob, bob in media" bash -c \
        "grep -q '^alice:' '$sb/etc/passwd' && grep -q '^bob:' '$sb/etc/passwd' && grep -Eq '^media:x:[0-9]+:bob$' '$sb/etc/group'"
    check "site.yml: shares photos (alice bob) and archive (read-only)" bash -c \
        "grep -q 'valid users = alice bob' '$sb/etc/samba/smb.conf.d/photos.conf' && grep -q 'read only = yes' '$sb/etc/samba/smb.conf.d/archive.conf'"
    check "site.yml: DNS records and forwarders" bash -c \
        "grep -qx 'host-record=printer.lan,fd00::50' '$sb/etc/dnsmasq.d/hearth-records.conf' && grep -qx 'server=9.9.9.9' '$sb/etc/dnsmasq.d/hearth-forwarders.conf'"
    check "site.yml: aliases" bash -c \
        "grep -qx 'family: alice' '$sb/etc/aliases' && grep -qx 'postmaster: bob@example.com' '$sb/etc/aliases'"
    check "site.yml: relayhost set, SASL enabled" bash -c \
        "grep -qx 'relayhost = \[smtp.example.com\]:587' '$sb/etc/postfix/main.cf' && grep -qx 'smtp_sasl_auth_enable = yes' '$sb/etc/postfix/main.cf'"
    check "site.yml: sasl_passwd is mode 600 and holds the credentials" bash -c \
        "[[ \$(stat -c %a '$sb/etc/postfix/sasl_passwd') == 600 ]] && grep -qx '\[smtp.example.com\]:587 appliance@example.com:$RELAY_SECRET' '$sb/etc/postfix/sasl_passwd'"
    check "site.yml: the relay password is never printed" bash -c \
        "! grep -q -- '$RELAY_SECRET' '$WORK/site.1.out' '$WORK/site.1.err' '$WORK/site.2.out' '$WORK/site.2.err'"

    sb="$(mktemp -d "$WORK/sandbox.XXXXXX")"
    run site.empty site.yml "$(site_vars "$sb" '{}')"
    check "site.yml: empty document succeeds without changes" succeeded site.empty 0
    check "site.yml: empty document writes nothing" test -z "$(ls -A "$sb")"
}

# --- (d) failures are reported ----------------------------------------------------------

section_negative() {
    local sb
    sb="$(mktemp -d "$WORK/sandbox.XXXXXX")"
    run neg.alias "$(playbook_of mail.alias.add)" "$(vars_for "$sb" '{"alias": "family", "destination": "/tmp/nope/file"}')"
    check "negative: alias to a file path fails with a failed event" failed_run neg.alias
    check "negative: the bad alias was not written" test ! -e "$sb/etc/aliases"

    run neg.site site.yml "$(site_vars "$sb" '{"dns": {"records": [{"hostname": "nas.home"}]}}')"
    check "negative: site.yml with a record without ip fails" failed_run neg.site

    run neg.group "$(playbook_of users.add)" "$(vars_for "$sb" '{"username": "mallory", "groups": ["sudo"]}')"
    check "negative: users.add refuses a privileged group" failed_run neg.group

    run neg.root "$(playbook_of users.remove)" "$(vars_for "$sb" '{"username": "root"}')"
    check "negative: users.remove refuses a system account" failed_run neg.root
    check "negative: root still in the sandbox's etc/passwd" grep -q '^root:' "$sb/etc/passwd"

    run neg.reset "$(playbook_of users.reset_password)" "$(vars_for "$sb" '{"username": "nobody_here"}')"
    check "negative: resetting a missing user's password fails" failed_run neg.reset
}

# --- (e) the fleet inventory script against a local HTTPS stub ---------------------------

section_inventory() {
    local INV="$ANSIBLE_DIR/inventory/hearth.py" tls="$WORK/tls" port inv_env stub_pid
mkdir -p "$tls"
if openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
        -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
        -keyout "$tls/key.pem" -out "$tls/cert.pem" >/dev/null 2>&1; then
    cat >"$WORK/stub.py" <<'PY'
import http.server, json, ssl, sys
BODY = {"hearth": {"hosts": ["kitchen-nas"]},
        "_meta": {"hostvars": {"kitchen-nas": {"hearth_id": "0b7d", "status": "online"}}}}
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path == "/api/v1/inventory" and self.headers.get("Authorization") == "Bearer test-key"
        body = json.dumps(BODY if ok else {"error": "unauthorized"}).encode()
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
srv = http.server.HTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
PY
    python3 "$WORK/stub.py" "$tls/cert.pem" "$tls/key.pem" >"$WORK/stub.port" &
    stub_pid=$!
    # shellcheck disable=SC2064 # expand now: the section runs in its own subshell
    trap "kill $stub_pid 2>/dev/null || true" EXIT
    for _ in $(seq 50); do [[ -s "$WORK/stub.port" ]] && break; sleep 0.1; done
    port="$(cat "$WORK/stub.port")"
    inv_env=(HEARTH_API_URL="https://127.0.0.1:$port" HEARTH_TENANT_KEY=test-key HEARTH_CA_CERT="$tls/cert.pem")
    check "inventory: --list prints the API's JSON" bash -c \
        "env ${inv_env[*]} '$INV' --list | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d[\"hearth\"][\"hosts\"] == [\"kitchen-nas\"]'"
    check "inventory: --host prints {}" bash -c "[[ \$(env ${inv_env[*]} '$INV' --host kitchen-nas) == '{}' ]]"
    check "inventory: ansible-inventory reads it" bash -c \
        "env ${inv_env[*]} ansible-inventory -i '$INV' --list 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d[\"_meta\"][\"hostvars\"][\"kitchen-nas\"][\"status\"] == \"online\"'"
    check "inventory: a refused key is an error (exit 1, message on stderr)" bash -c \
        "! env HEARTH_API_URL=https://127.0.0.1:$port HEARTH_TENANT_KEY=wrong HEARTH_CA_CERT='$tls/cert.pem' '$INV' --list >'$WORK/inv.out' 2>'$WORK/inv.err' && [[ ! -s '$WORK/inv.out' ]] && grep -q 401 '$WORK/inv.err'"
    check "inventory: missing environment is an error" bash -c \
        "! env -u HEARTH_API_URL -u HEARTH_TENANT_KEY -u HEARTH_CA_CERT '$INV' --list 2>'$WORK/inv.err' && grep -q HEARTH_API_URL '$WORK/inv.err'"
    kill "$stub_pid" 2>/dev/null || true
    wait "$stub_pid" 2>/dev/null || true
    trap - EXIT
else
    fail "inventory: could not create a test certificate with openssl"
fi
}

# --- running the sections ------------------------------------------------------------------

JOBS="${HEARTH_TEST_JOBS:-$(( $(nproc) + 1 ))}"
mkdir -p "$WORK/logs"
LOGS=()
job() { # job NAME FUNCTION ARGS...: runs a section in the background, output to its log
    local name="$1"; shift
    while (( $(jobs -rp | wc -l) >= JOBS )); do wait -n || true; done
    LOGS+=("$WORK/logs/$name.log")
    ( "$@" ) >"$WORK/logs/$name.log" 2>&1 &
}

START=$SECONDS
check "catalog: one playbook per action, no others" catalog_playbooks_match >"$WORK/logs/0-catalog.log"
LOGS+=("$WORK/logs/0-catalog.log")
# The slowest sections first.
job site section_site
while IFS=$'\t' read -r id playbook params; do
    if [[ "$id" == users.* ]]; then job "$id" section_action "$id" "$playbook" "$params"; fi
done <"$CATALOG"
job negative section_negative
while IFS=$'\t' read -r id playbook params; do
    if [[ "$id" != users.* ]]; then job "$id" section_action "$id" "$playbook" "$params"; fi
done <"$CATALOG"
job syntax section_syntax
job inventory section_inventory
wait

check "host: no file a playbook manages changed outside the sandboxes" \
    test "$(host_snapshot)" = "$HOST_BEFORE" >"$WORK/logs/z-host.log"
LOGS+=("$WORK/logs/z-host.log")

cat "${LOGS[@]}"
PASSED="$(cat "${LOGS[@]}" | grep -c '^ok   ' || true)"
FAILED="$(cat "${LOGS[@]}" | grep -c '^FAIL ' || true)"
echo "($((SECONDS - START)) s, $JOBS parallel jobs)"
echo "$PASSED passed, $FAILED failed"
[[ "$FAILED" == 0 ]]
