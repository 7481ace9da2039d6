#!/bin/sh
# PostgreSQL's first start (docker-entrypoint-initdb.d): Hearth's roles and its database.
#   hearth          owns the tables; only the `migrate` service logs in as it
#   hearth_app      the control plane's login: NOINHERIT, owns nothing, reads nothing until it
#                   assumes hearth_service or hearth_tenant (docs/architecture.md)
#   hearth_service, hearth_tenant   the roles the row-level security policies name
set -eu
case "${1:-}" in -h | --help) sed -n '2,/^[^#]/{/^#/{s/^# \{0,1\}//;p}}' "$0"; exit 0 ;; esac
psql -v ON_ERROR_STOP=1 --username postgres --dbname postgres \
     -v pw="$HEARTH_DB_PASSWORD" -v app_pw="$HEARTH_DB_APP_PASSWORD" <<'SQL'
CREATE ROLE hearth_tenant NOLOGIN;
CREATE ROLE hearth_service NOLOGIN;
CREATE ROLE hearth LOGIN PASSWORD :'pw';
CREATE ROLE hearth_app LOGIN NOINHERIT PASSWORD :'app_pw';
GRANT hearth_tenant, hearth_service TO hearth;
GRANT hearth_tenant, hearth_service TO hearth_app;
CREATE DATABASE hearth OWNER hearth;
SQL
