#!/usr/bin/env bash
# Creates one database per service and one role per service that owns it, on the first start of
# the postgres container (the image runs /docker-entrypoint-initdb.d/ on an empty data volume only).
#
# The roles and passwords come from the same URLs the services connect with
# (REALCHAT_<SERVICE>_DATABASE_URL, from compose/secrets/<service>.env), so the two cannot differ.
# Each role owns its database and nothing else: database per service, as in docs/ARCHITECTURE.md.
set -euo pipefail

for service in auth messaging profile; do
    var="REALCHAT_${service^^}_DATABASE_URL"
    url="${!var:?$var is not set: the postgres service needs compose/secrets/$service.env}"
    # postgres://<role>:<password>@<host>:<port>/<database>
    rest="${url#*://}"
    credentials="${rest%%@*}"
    role="${credentials%%:*}"
    password="${credentials#*:}"
    database="${rest##*/}"
    database="${database%%\?*}"
    echo "realchat: database $database owned by role $role"
    psql --no-psqlrc -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
        -v role="$role" -v password="$password" -v database="$database" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
CREATE DATABASE :"database" OWNER :"role";
REVOKE ALL ON DATABASE :"database" FROM PUBLIC;
SQL
done
