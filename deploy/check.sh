#!/usr/bin/env bash
# Validates the deployment files without a container engine or a cluster:
#
#   deploy/check.sh                                   everything below except /metrics
#   deploy/check.sh --metrics-url URL --cacert FILE   also `promtool check metrics` on a
#                                                     running control plane's /metrics
#   deploy/check.sh --metrics-file FILE               … or on a saved exposition
#   deploy/check.sh --no-deb                          skip building the .deb (and the unit
#                                                     check that runs against its contents)
#
# Checks: every script in deploy/ answers --help; the compose files parse as the Compose specification and hang together (setup
# renders the broker configuration mosquitto runs, HEARTH_* settings exist in
# control-plane/src/config.rs); the Dockerfiles' stages and COPY sources exist; every
# kustomize overlay builds and passes the Kubernetes schemas (kubernetes-validate --strict;
# custom resources get structural checks); the EMQX ACL says what deploy/mosquitto/acl.in
# and service-acl.in say, and EMQX binds the client id to the certificate on its public
# listener and trusts only the service CA on its internal one, as mosquitto.conf.in does; the Prometheus configuration and alert rules pass promtool; the Grafana dashboard
# parses and uses only metrics the control plane exports (or the two announced ones); the
# Debian package builds with the release-agent profile and holds the binary, the unit, the
# default configuration and the ansible/ content; the packaged unit passes
# `systemd-analyze verify` against the packaged binary; the packaged agent.toml loads.
#
# Installs what is missing (apt-get, pip, cargo install) and is quick when nothing is.
# Ends with "N passed, N failed"; exits non-zero if anything failed.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEPLOY=$ROOT/deploy
METRICS_URL="" CACERT="" METRICS_FILE="" BUILD_DEB=1
while [ $# -gt 0 ]; do
    case "$1" in
        --metrics-url) METRICS_URL=$2; shift 2 ;;
        --cacert) CACERT=$2; shift 2 ;;
        --metrics-file) METRICS_FILE=$2; shift 2 ;;
        --no-deb) BUILD_DEB=0; shift ;;
        -h|--help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;;
        *) echo "check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

PASSED=0 FAILED=0
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
say() { printf '\033[1mcheck:\033[0m %s\n' "$*" >&2; }
ok() { PASSED=$((PASSED + 1)); printf 'ok: %s\n' "$*"; }
fail() { FAILED=$((FAILED + 1)); printf 'FAIL: %s\n' "$*"; }
# check NAME COMMAND…: runs the command, output kept in $WORK/log and shown on failure.
check() {
    local name=$1; shift
    if "$@" >"$WORK/log" 2>&1; then ok "$name"; else fail "$name"; sed 's/^/    /' "$WORK/log" | tail -40; fi
}

# ---- tools ------------------------------------------------------------------------------
APT_UPDATED=0
apt_install() { # apt_install PACKAGE…
    [ "$(id -u)" = 0 ] || { echo "need root to install $*" >&2; return 1; }
    if [ $APT_UPDATED = 0 ]; then apt-get update -qq >&2 && APT_UPDATED=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}
PY=$(command -v python3 || true)
[ -n "$PY" ] || apt_install python3 python3-pip && PY=$(command -v python3)
PIP_PKGS=(kubernetes-validate compose-spec PyYAML pyhocon)
if ! "$PY" -c 'import kubernetes_validate, compose_spec, yaml, pyhocon' 2>/dev/null; then
    say "installing ${PIP_PKGS[*]} (pip)"
    "$PY" -m pip install -q --disable-pip-version-check "${PIP_PKGS[@]}" >&2 \
        || "$PY" -m pip install -q --disable-pip-version-check --break-system-packages "${PIP_PKGS[@]}" >&2
fi
command -v promtool >/dev/null || { say "installing promtool (Debian's prometheus)"; apt_install prometheus; }
command -v systemd-analyze >/dev/null || { say "installing systemd-analyze"; apt_install systemd; }
command -v dpkg-deb >/dev/null || apt_install dpkg
# kustomize: kubectl's built-in (kustomize v5). Debian's kubernetes-client (1.20) bundles
# kustomize v2, which cannot build these overlays, so it is no fallback.
KUSTOMIZE=()
if command -v kustomize >/dev/null; then KUSTOMIZE=(kustomize build)
elif command -v kubectl >/dev/null && kubectl kustomize --help >/dev/null 2>&1; then KUSTOMIZE=(kubectl kustomize)
fi
if [ $BUILD_DEB = 1 ] && ! cargo deb --version >/dev/null 2>&1; then
    say "installing cargo-deb (cargo install, a few minutes once)"
    cargo install cargo-deb --locked >&2
fi

# ---- compose ----------------------------------------------------------------------------
check_compose() {
    "$PY" - "$ROOT" <<'PY'
import re, sys, pathlib, yaml, compose_spec
root = pathlib.Path(sys.argv[1]); d = root / "deploy/compose"
problems = []
for f in ["compose.yaml", "compose.gpu.yaml"]:
    try:
        compose_spec.PyCompose.from_yaml((d / f).read_text())
    except Exception as e:
        problems.append(f"{f}: not a valid Compose file: {e}")
base = yaml.safe_load((d / "compose.yaml").read_text())
svc = base["services"]
for name in ["postgres", "setup", "mosquitto", "control-plane", "ollama"]:
    if name not in svc:
        problems.append(f"compose.yaml: service {name} missing")
# Files the services mount or build from exist.
for name, s in svc.items():
    for v in s.get("volumes", []):
        src = v.split(":")[0]
        if src.startswith("."):
            if not (d / src).exists():
                problems.append(f"{name}: mounts {src}, which does not exist")
    b = s.get("build")
    if b:
        df = (d / b["context"] / b["dockerfile"]).resolve()
        if not df.exists():
            problems.append(f"{name}: Dockerfile {df} missing")
        elif b.get("target") and not re.search(rf"(?im)^FROM\s+\S+\s+AS\s+{re.escape(b['target'])}\s*$", df.read_text()):
            problems.append(f"{name}: build target {b['target']} is not a stage of {df.name}")
# The broker runs the configuration `setup` renders with `broker-config`.
setup = (d / "setup.sh").read_text()
conf = svc["mosquitto"]["command"][-1]
m = re.search(r"broker-config .*--data-dir \"?\$BROKER\"?", setup.replace("\\\n", " "))
broker_dir = re.search(r"^BROKER=(\S+)", setup, re.M).group(1)
if not m or conf != f"{broker_dir}/mosquitto.conf":
    problems.append(f"mosquitto runs {conf}, not the file setup.sh renders with broker-config into {broker_dir}")
deps = svc["control-plane"].get("depends_on", {})
if deps.get("setup", {}).get("condition") != "service_completed_successfully":
    problems.append("control-plane must wait for setup to complete")
print("\n".join(problems)); sys.exit(1 if problems else 0)
PY
}

# HEARTH_<SECTION>__<KEY> names in the deployment files must be settings of
# control-plane/src/config.rs, and in a section the environment loader reads.
check_settings() {
    "$PY" - "$ROOT" <<'PY'
import re, sys, pathlib, yaml
root = pathlib.Path(sys.argv[1])
src = (root / "control-plane/src/config.rs").read_text()
# Section structs may live in their feature's module (e.g. assistant/config.rs).
everything = "\n".join(p.read_text() for p in (root / "control-plane/src").rglob("*.rs"))
structs = {m.group(1): set(re.findall(r"pub (\w+):", m.group(2)))
           for m in re.finditer(r"pub struct (\w+) \{(.*?)\n\}", everything, re.S)}
sections = {f: t for f, t in re.findall(r"pub (\w+): (?:[\w:]+::)?(\w+Config),", re.search(r"pub struct Config \{(.*?)\n\}", src, re.S).group(1))}
# Config::load_from reads every section of Config from the environment (its section list is
# derived from Config itself); an explicit list, if one comes back, narrows that.
listed = re.search(r"let sections = \[(.*?)\];", src)
env_sections = set(s.rstrip(".").lower() for s in re.findall(r'"([A-Z]+)\."', listed.group(1))) if listed else set(sections)
names = {}
files = [root / "deploy/compose/compose.yaml", root / "deploy/k8s/base/control-plane/configmap.yaml",
         root / "deploy/k8s/base/control-plane/deployment.yaml", root / "deploy/k8s/base/control-plane/migrate-job.yaml"]
for f in files:
    for n in re.findall(r"\b(HEARTH_[A-Z]+__[A-Z_]+)\b", f.read_text()):
        names.setdefault(n, f.relative_to(root))
problems = []
for n, f in sorted(names.items()):
    sec, key = n[len("HEARTH_"):].lower().split("__", 1)
    if sec not in sections:
        problems.append(f"{f}: {n}: no section `{sec}` in control-plane/src/config.rs")
    elif key not in structs.get(sections[sec], set()):
        problems.append(f"{f}: {n}: no setting `{sec}.{key}` in control-plane/src/config.rs")
    elif sec not in env_sections:
        problems.append(f"{f}: {n}: section `{sec}` is not read from the environment (Config::load_from)")
print(f"{len(names)} settings checked"); print("\n".join(problems)); sys.exit(1 if problems else 0)
PY
}

check_dockerfiles() {
    "$PY" - "$ROOT" <<'PY'
import re, sys, pathlib, glob
root = pathlib.Path(sys.argv[1]); problems = []
for df in sorted((root / "deploy/docker").glob("*.Dockerfile")):
    text = df.read_text().replace("\\\n", " ")
    stages = re.findall(r"(?im)^FROM\s+\S+(?:\s+AS\s+(\S+))?", text)
    if len(stages) < 2:
        problems.append(f"{df.name}: not multi-stage")
    for line in re.findall(r"(?im)^COPY\s+(.*)$", text):
        args = line.split()
        if any(a.startswith("--from") for a in args):
            continue
        for s in [a for a in args if not a.startswith("--")][:-1]:
            if not glob.glob(str(root / s)):
                problems.append(f"{df.name}: COPY {s}: not in the repository")
    if not (df.parent / (df.name + ".dockerignore")).exists():
        problems.append(f"{df.name}: no {df.name}.dockerignore (the build context would include target/)")
print("\n".join(problems)); sys.exit(1 if problems else 0)
PY
}

# ---- kubernetes -------------------------------------------------------------------------
check_overlay() { # check_overlay DIR
    "${KUSTOMIZE[@]}" "$1" >"$WORK/rendered.yaml" || return 1
    "$PY" -m kubernetes_validate --strict --quiet "$WORK/rendered.yaml" || return 1
    # Custom resources (no schema offline): the fields Hearth relies on.
    "$PY" - "$WORK/rendered.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
problems = []; kinds = {}
for d in docs:
    kinds.setdefault(d["kind"], []).append(d)
    if d["kind"] == "Cluster":
        s = d["spec"]
        if d["apiVersion"] != "postgresql.cnpg.io/v1": problems.append("Cluster: not CloudNativePG v1")
        if not isinstance(s.get("instances"), int) or s["instances"] < 1: problems.append("Cluster: instances")
        if s.get("bootstrap", {}).get("initdb", {}).get("database") != "hearth": problems.append("Cluster: database hearth")
        if "hearth_tenant" not in [r["name"] for r in s.get("managed", {}).get("roles", [])]: problems.append("Cluster: role hearth_tenant")
    if d["kind"] == "PodMonitor":
        for e in d["spec"]["podMetricsEndpoints"]:
            if not {"port", "path"} <= set(e): problems.append(f"PodMonitor {d['metadata']['name']}: port/path")
for need in ["Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Job", "ConfigMap", "StatefulSet", "Ingress", "Cluster"]:
    if need not in kinds: problems.append(f"no {need}")
cp = [d for d in kinds.get("Deployment", []) if d["metadata"]["name"] == "hearth-control-plane"][0]
c = cp["spec"]["template"]["spec"]["containers"][0]
if c["readinessProbe"]["httpGet"]["path"] != "/readyz" or c["livenessProbe"]["httpGet"]["path"] != "/healthz":
    problems.append("control plane probes must be /readyz (readiness) and /healthz (liveness)")
ing = kinds["Ingress"][0]["metadata"]["annotations"]
if ing.get("nginx.ingress.kubernetes.io/upstream-hash-by") != "$http_authorization":
    problems.append("the API ingress must hash tenants by their Authorization header")
job = kinds["Job"][0]["spec"]["template"]["spec"]["containers"][0]
if job.get("args") != ["migrate"]: problems.append("the migrations Job must run `migrate`")
print("\n".join(problems)); sys.exit(1 if problems else 0)
PY
}

check_emqx_acl() { # the EMQX ACL grants what deploy/mosquitto/acl.in and service-acl.in grant, nothing more
    "$PY" - "$ROOT" <<'PY'
import re, sys, pathlib
root = pathlib.Path(sys.argv[1])
mosq = set()
user = None
lines = (root / "deploy/mosquitto/acl.in").read_text().splitlines()
lines += (root / "deploy/mosquitto/service-acl.in").read_text().splitlines()
for line in lines:
    line = line.strip()
    if not line or line.startswith("#"): continue
    w = line.split()
    if w[0] == "user": user = w[1].replace("@CONTROL_PLANE_CN@", "hearth-control-plane")
    elif w[0] == "pattern": mosq.add(("all", w[1], w[2].replace("%u", "${username}")))
    elif w[0] == "topic": mosq.add((user, w[1], w[2]))
emqx = set()
for who, action, topics in re.findall(r'\{allow,\s*(all|\{user,\s*"[^"]+"\}),\s*(\w+),\s*\[([^\]]*)\]\}', (root / "deploy/k8s/base/emqx/acl.conf").read_text()):
    who = "all" if who == "all" else re.search(r'"([^"]+)"', who).group(1)
    for t in re.findall(r'"([^"]+)"', topics):
        t = re.sub(r"^\$share/[^/]+/", "", t)
        emqx.add((who, {"publish": "write", "subscribe": "read"}[action], t))
if mosq != emqx:
    print("mosquitto acl.in:", sorted(mosq)); print("emqx acl.conf:  ", sorted(emqx)); sys.exit(1)
print(f"{len(mosq)} rules agree")
PY
}

check_emqx_conf() { # emqx.conf parses and enforces what mosquitto.conf.in enforces
    "$PY" - "$ROOT" <<'PY'
import re, sys, pathlib
from pyhocon import ConfigFactory
root = pathlib.Path(sys.argv[1])
c = ConfigFactory.parse_file(str(root / "deploy/k8s/base/emqx/emqx.conf"))
conf_in = (root / "deploy/mosquitto/mosquitto.conf.in").read_text()
mosq = dict(l.split(None, 1) for l in conf_in.splitlines() if l and not l.startswith("#") and " " in l)
# Mosquitto's listeners: the public one binds the client id to the certificate, the internal
# one trusts the service CA only.
public_in, internal_in = conf_in.split("listener @SERVICE_PORT@")
ssl = c.get("listeners.ssl.default")
internal = c.get("listeners.ssl.internal")
zone = lambda l, key: c.get(f"zones.{l.get('zone', 'default')}.mqtt.{key}", c.get(f"mqtt.{key}"))
want = {
    "mosquitto.conf.in: client id = certificate CN on the public listener":
        "\nuse_username_as_clientid true" in public_in.split("listener @PORT@")[1],
    "mosquitto.conf.in: the internal listener trusts only the service CA":
        "cafile @SERVICE_CA_CERT@" in internal_in and "@CA_CERT@" not in internal_in,
    "TLS listener on 8883": ssl.get("bind").endswith(":8883"),
    "client certificate required (verify_peer, fail_if_no_peer_cert)":
        all(l.get("ssl_options.verify") == "verify_peer" and l.get("ssl_options.fail_if_no_peer_cert") is True
            for l in (ssl, internal)),
    "certificate CN as username": all(zone(l, "peer_cert_as_username") == "cn" for l in (ssl, internal)),
    "certificate CN as client id on 8883": zone(ssl, "peer_cert_as_clientid") == "cn",
    "fleet CA on 8883": ssl.get("ssl_options.cacertfile").endswith("/ca.crt"),
    "internal listener on 8884 with the service CA only": internal.get("bind").endswith(":8884")
        and internal.get("ssl_options.cacertfile").endswith("/service-ca.crt"),
    "no plain TCP or WebSocket listener": all(c.get(f"listeners.{l}.default.enable") is False for l in ("tcp", "ws", "wss")),
    "no password authentication": c.get("authentication") == [],
    "file ACL, deny when no rule matches": c.get("authorization.no_match") == "deny"
        and c.get("authorization.sources")[0]["path"].endswith("/acl.conf"),
    f"max_packet_size {mosq['max_packet_size']}": str(c.get("mqtt.max_packet_size")) == mosq["max_packet_size"],
    f"max_inflight {mosq['max_inflight_messages']}": str(c.get("mqtt.max_inflight")) == mosq["max_inflight_messages"],
    f"max_mqueue_len {mosq['max_queued_messages']}": str(c.get("mqtt.max_mqueue_len")) == mosq["max_queued_messages"],
    "QoS 0 never queued for offline sessions (queue_qos0_messages false)":
        mosq.get("queue_qos0_messages") == "false" and c.get("mqtt.mqueue_store_qos0") is False,
}
bad = [k for k, v in want.items() if not v]
print("\n".join(f"emqx.conf: not {k}" for k in bad)); sys.exit(1 if bad else 0)
PY
}

# ---- observability ----------------------------------------------------------------------
# Metric names the control plane registers.
KNOWN_METRICS=$WORK/known-metrics
grep -o '"hearth_[a-z0-9_]*"' "$ROOT/control-plane/src/metrics.rs" | tr -d '"' | sort -u >"$KNOWN_METRICS"

check_metric_names() { # check_metric_names FILE…: every hearth_* name is known
    local bad=0 name base
    for name in $(grep -oh 'hearth_[a-z0-9_]*' "$@" | sort -u); do
        base=${name%_bucket}; base=${base%_sum}; base=${base%_count}
        grep -qx "$name" "$KNOWN_METRICS" || grep -qx "$base" "$KNOWN_METRICS" || { echo "unknown metric $name"; bad=1; }
    done
    return $bad
}

check_dashboard() {
    local f=$DEPLOY/observability/grafana-dashboard.json
    "$PY" - "$f" >"$WORK/exprs" <<'PY' || return 1
import json, sys
d = json.load(open(sys.argv[1]))
assert d["panels"], "no panels"
exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
assert exprs, "no queries"
print("\n".join(exprs))
PY
    check_metric_names "$WORK/exprs"
}

check_prometheus() {
    cp "$DEPLOY/observability/prometheus.yml" "$DEPLOY/observability/hearth-alerts.yml" "$WORK/"
    promtool check config "$WORK/prometheus.yml" && check_metric_names "$WORK/hearth-alerts.yml"
}

check_metrics() {
    local f=$METRICS_FILE
    if [ -n "$METRICS_URL" ]; then
        f=$WORK/metrics.txt
        curl -fsS ${CACERT:+--cacert "$CACERT"} "$METRICS_URL" -o "$f" || return 1
    fi
    grep -q '^hearth_' "$f" || { echo "no hearth_ metrics in $f"; return 1; }
    promtool check metrics <"$f"
}

# ---- Debian package and systemd unit ------------------------------------------------------
DEB=""
build_deb() {
    local started=$SECONDS out
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
    out=$(cd "$ROOT" && cargo deb -p hearth-agent --profile release-agent -- --locked) || return 1
    DEB=$(tail -1 <<<"$out")
    [ -f "$DEB" ] || { echo "cargo deb printed no package path"; return 1; }
    echo "built $DEB in $((SECONDS - started)) s"
}

check_deb_contents() {
    dpkg-deb -c "$DEB" | awk '{print $NF}' >"$WORK/contents"
    local missing=0 want
    for want in ./usr/bin/hearth-agent 'lib/systemd/system/hearth-agent.service' ./etc/hearth/agent.toml \
        ./usr/share/hearth/ansible/catalog.json ./usr/share/hearth/ansible/ansible.cfg \
        ./usr/share/hearth/ansible/site.yml ./usr/share/hearth/ansible/inventory/localhost.yml \
        ./usr/share/hearth/ansible/callback_plugins/hearth_events.py; do
        grep -q -- "$want\$" "$WORK/contents" || { echo "missing $want"; missing=1; }
    done
    # Every playbook the catalog names is packaged.
    for want in $("$PY" -c 'import json,sys; print("\n".join(a["playbook"] for a in json.load(open(sys.argv[1]))["actions"]))' \
            "$ROOT/ansible/catalog.json"); do
        grep -q -- "usr/share/hearth/ansible/$want\$" "$WORK/contents" || { echo "missing playbook $want"; missing=1; }
    done
    dpkg-deb -f "$DEB" Depends | grep -q ansible || { echo "Depends lacks ansible"; missing=1; }
    dpkg-deb -e "$DEB" "$WORK/control"
    grep -qx /etc/hearth/agent.toml "$WORK/control/conffiles" || { echo "agent.toml is not a conffile"; missing=1; }
    [ $missing = 0 ] && echo "$(wc -l <"$WORK/contents") entries, $(du -k "$DEB" | cut -f1) KiB"
    return $missing
}

check_unit() { # the packaged unit, against the packaged binary
    rm -rf "$WORK/root" && dpkg-deb -x "$DEB" "$WORK/root"
    local unit exec; unit=$(find "$WORK/root" -name hearth-agent.service | head -1)
    [ -n "$unit" ] || { echo "no unit in the package"; return 1; }
    exec=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$unit")
    [ -x "$WORK/root$exec" ] || { echo "ExecStart=$exec is not in the package"; return 1; }
    # Verified where it is installed to, but with ExecStart pointing into the unpacked
    # package (systemd-analyze checks that the binary exists).
    mkdir -p "$WORK/unit" && sed "s|^ExecStart=$exec|ExecStart=$WORK/root$exec|" "$unit" >"$WORK/unit/hearth-agent.service"
    # systemd-analyze prints warnings but exits 0 for some problems: treat any output as failure.
    systemd-analyze verify --man=no "$WORK/unit/hearth-agent.service" >"$WORK/verify" 2>&1; local rc=$?
    cat "$WORK/verify"
    [ $rc = 0 ] && [ ! -s "$WORK/verify" ]
}

check_packaged_config() { # the default agent.toml loads with the packaged agent
    local out
    out=$(HEARTH_AGENT_STATE_DIR="$WORK/not-enrolled" "$WORK/root/usr/bin/hearth-agent" \
        --config "$WORK/root/etc/hearth/agent.toml" run 2>&1) && { echo "the agent ran without an enrollment"; return 1; }
    echo "$out"
    # A configuration error names the file; a good configuration gets as far as the
    # missing enrollment.
    ! grep -q 'agent.toml' <<<"$out" && grep -qi 'enroll' <<<"$out"
}

# Every script in deploy/ answers --help with its usage and does nothing else. A script
# without a --help case is not run (it might start something): that alone fails the check.
check_help() {
    local f out bad=0
    while IFS= read -r f; do
        if ! grep -q -- '--help' "$f"; then
            echo "${f#"$ROOT"/}: no --help case"; bad=1; continue
        fi
        if ! out=$(timeout 20 "$(head -n1 "$f" | grep -q '^#!/bin/sh' && echo sh || echo bash)" "$f" --help 2>&1) \
            || [ -z "$out" ]; then
            echo "${f#"$ROOT"/}: --help failed or printed nothing: ${out:0:300}"; bad=1
        fi
    done < <(find "$DEPLOY" -name '*.sh' -not -path '*/node_modules/*' | sort)
    return $bad
}

# ---- run --------------------------------------------------------------------------------
cd "$ROOT"
check "shell: every script in deploy/ answers --help" check_help
check "compose: compose.yaml and compose.gpu.yaml are valid Compose files and consistent" check_compose
check "settings: HEARTH_* names in compose and k8s are control plane settings" check_settings
check "docker: multi-stage Dockerfiles, COPY sources exist" check_dockerfiles
check "shell: deploy scripts parse" bash -n "$DEPLOY/check.sh" "$DEPLOY/compose/setup.sh" "$DEPLOY/compose/initdb.sh" \
    "$DEPLOY/bench/agent-footprint.sh"
if [ ${#KUSTOMIZE[@]} = 0 ]; then
    fail "kustomize: neither kustomize nor kubectl (with kustomize) is installed"
else
    for dir in "$DEPLOY/k8s/base" "$DEPLOY"/k8s/overlays/*/; do
        check "k8s: ${dir#"$ROOT"/} builds and validates (kubernetes-validate --strict)" check_overlay "$dir"
    done
fi
check "k8s: EMQX ACL grants what deploy/mosquitto/acl.in and service-acl.in grant" check_emqx_acl
check "k8s: emqx.conf parses (HOCON) and enforces what mosquitto.conf.in does" check_emqx_conf
check "observability: Grafana dashboard parses, uses only exported metric names" check_dashboard
check "observability: promtool check config (scrape config, alert rules)" check_prometheus
if [ -n "$METRICS_URL" ] || [ -n "$METRICS_FILE" ]; then
    check "metrics: promtool check metrics ${METRICS_URL:-$METRICS_FILE}" check_metrics
else
    say "no --metrics-url/--metrics-file: /metrics not checked"
fi
if [ $BUILD_DEB = 1 ]; then
    if build_deb >"$WORK/deb.log" 2>&1; then
        ok "deb: cargo deb -p hearth-agent --profile release-agent ($(tail -1 "$WORK/deb.log"))"
        check "deb: holds the binary, the unit, agent.toml (conffile), ansible/ with every catalog playbook" check_deb_contents
        check "systemd: systemd-analyze verify of the packaged unit" check_unit
        check "deb: the packaged agent.toml loads" check_packaged_config
    else
        fail "deb: cargo deb -p hearth-agent"; tail -40 "$WORK/deb.log" | sed 's/^/    /'
    fi
fi
echo "$PASSED passed, $FAILED failed"
[ $FAILED = 0 ]
