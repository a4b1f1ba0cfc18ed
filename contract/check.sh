#!/usr/bin/env bash
# The API contract against a running gateway: Schemathesis (PyPI) reads /v1/openapi.json and
# sends generated requests to every operation (examples, coverage of each schema's edges, random
# fuzzing, and stateful sequences that follow the document's links), as a user with a token of
# its own. It fails on any 5xx, on any status, header, content type or body the document does
# not describe, on an operation that answers without its token, and on a resource that is still
# there after it was deleted (or not there after it was created).
#
# Not checked: whether the server refuses every request the schemas rule out and takes every one
# they allow (Schemathesis' positive/negative data checks). The schemas state the main rules
# (lengths, ranges, patterns); some rules cannot be said in JSON Schema (a display name that is
# not only spaces, a direct conversation of exactly two known users), and the property tests in
# crates/gateway/tests/api/bodies.rs hold every refusal to the documented error shape instead.
# /v1/ws is a WebSocket upgrade, which OpenAPI cannot describe; crates/delivery/tests covers it.
#
# Usage: contract/check.sh [BASE_URL]   (default http://127.0.0.1:8080, a `cargo xtask up`)
# REALCHAT_CONTRACT_SECONDS (default 60) bounds the fuzzing and stateful phases.
# Schemathesis is installed on first use into "${REALCHAT_TOOLS_DIR:-$HOME/.cache/realchat/tools}".
set -euo pipefail

base="${1:-http://127.0.0.1:8080}"
seconds="${REALCHAT_CONTRACT_SECONDS:-60}"
tools="${REALCHAT_TOOLS_DIR:-$HOME/.cache/realchat/tools}"
SCHEMATHESIS="schemathesis==4.32.5"

python=python3
command -v "$python" >/dev/null || { echo "contract/check.sh: python3 is needed" >&2; exit 1; }
if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "installing python3-venv"
    apt-get install -y -qq python3-venv >/dev/null
  else
    echo "contract/check.sh: python3 lacks venv/ensurepip (install python3-venv)" >&2
    exit 1
  fi
fi

dir="$tools/contract-schemathesis"
if [[ ! -x "$dir/bin/schemathesis" || "$(cat "$dir/.installed" 2>/dev/null)" != "$SCHEMATHESIS" ]]; then
  echo "installing $SCHEMATHESIS into $dir"
  rm -rf "$dir"
  mkdir -p "$(dirname "$dir")"
  "$python" -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "$SCHEMATHESIS"
  echo "$SCHEMATHESIS" >"$dir/.installed"
fi

# A user of the check's own, and its access token (15 minutes: far longer than the run).
token=$("$dir/bin/python" - "$base" <<'PY'
import json, sys, uuid, urllib.request

base = sys.argv[1]

def post(path, body):
    request = urllib.request.Request(
        base + path, json.dumps(body).encode(), {"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)

credentials = {"username": "contract_" + uuid.uuid4().hex[:12], "password": "contract check password"}
post("/v1/auth/register", credentials)
print(post("/v1/auth/login", credentials)["access_token"])
PY
)

echo "== Schemathesis against $base/v1/openapi.json (fuzzing and stateful: ${seconds} s)"
# One worker: the coverage phase's generator is not safe to run on two threads. Under the
# per-user limit of the gateway's defaults (50/s), so the limit does not hide the logic behind.
exec "$dir/bin/schemathesis" run "$base/v1/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks all \
  --exclude-checks positive_data_acceptance,negative_data_rejection \
  --exclude-path /v1/ws \
  --workers 1 \
  --rate-limit 2400/m \
  --max-time "$seconds" \
  --no-color
