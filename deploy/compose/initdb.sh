#!/bin/sh
# PostgreSQL's first start (docker-entrypoint-initdb.d): Hearth's login role (not a
# superuser), the role tenant-scoped queries assume, and the database.
set -eu
psql -v ON_ERROR_STOP=1 --username postgres --dbname postgres \
     -v pw="$HEARTH_DB_PASSWORD" <<'SQL'
CREATE ROLE hearth_tenant NOLOGIN;
CREATE ROLE hearth LOGIN PASSWORD :'pw';
GRANT hearth_tenant TO hearth;
CREATE DATABASE hearth OWNER hearth;
SQL
