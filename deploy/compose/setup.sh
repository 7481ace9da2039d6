#!/bin/sh
# One-shot setup before the broker and the control plane start (run by compose's `setup`
# service with the control plane's tools image). Idempotent: the PKI and the secrets key are
# made once and kept; the broker configuration is rendered again on every start.
set -eu
case "${1:-}" in -h | --help) sed -n '2,/^[^#]/{/^#/{s/^# \{0,1\}//;p}}' "$0"; exit 0 ;; esac
PKI=/hearth/pki
BROKER=/hearth/broker
CP=/hearth/control-plane
CRL=/hearth/crl
MOSQUITTO_UID=1883      # eclipse-mosquitto's `mosquitto` user
CONTROL_PLANE_UID=65532 # distroless `nonroot`

if [ ! -f "$PKI/ca.key" ]; then
    hearth-control-plane pki init --dir "$PKI" \
        --broker-name "$HEARTH_PUBLIC_MQTT_HOST" --broker-name mosquitto --broker-name localhost \
        --api-name "$HEARTH_PUBLIC_API_HOST" --api-name control-plane --api-name localhost
fi
hearth-control-plane broker-config --pki-dir "$PKI" --data-dir "$BROKER" \
    --bind 0.0.0.0 --port 8883 --service-bind 0.0.0.0 --service-port 8884 \
    --run-as mosquitto --persistence --crl-file "$CRL/crl.pem"

if [ ! -f "$CP/control-plane.toml" ]; then
    umask 077
    printf '# Written once by deploy/compose/setup.sh.\n[secrets]\nkey = "%s"\n' \
        "$(openssl rand -base64 32)" >"$CP/control-plane.toml"
fi

# Mosquitto reads its certificate and key after dropping to its user; the control plane
# (non-root) reads the CA key (it signs appliance certificates), its MQTT identity and the
# API certificate.
chown "$MOSQUITTO_UID:$MOSQUITTO_UID" "$BROKER" "$BROKER"/* "$PKI/broker.crt" "$PKI/broker.key"
chown "$CONTROL_PLANE_UID:$CONTROL_PLANE_UID" "$CP" "$CP/control-plane.toml" \
    "$PKI/ca.key" "$PKI/api.crt" "$PKI/api.key" "$PKI/control-plane.crt" "$PKI/control-plane.key"
chmod 0755 "$PKI"
# The control plane rewrites the CRL on every revocation; Mosquitto reads it.
chown "$CONTROL_PLANE_UID:$CONTROL_PLANE_UID" "$CRL" "$CRL/crl.pem"
chmod 0755 "$CRL"
chmod 0644 "$CRL/crl.pem"
chmod 0644 "$PKI/ca.crt"
echo "setup: PKI in $PKI, broker configuration in $BROKER/mosquitto.conf"
