#!/usr/bin/env bash
# The checks of the Nix files that run without Nix's binary cache or a copy of nixpkgs:
#
#   1. every .nix file parses (nix-instantiate --parse);
#   2. nixpkgs-fmt --check and deadnix --fail;
#   3. flake.lock is a well-formed version 7 lock of the flake's inputs;
#   4. the NixOS module (nix/module.nix), evaluated with nixpkgs' lib and declarations of the
#      NixOS options it sets, produces units whose environment is what each binary reads
#      (REALCHAT_SETTINGS_DIR: `<binary> settings` JSON per service), with the right ports,
#      ordering and hardening, gives Prometheus a job per service with the dashboards' labels and
#      the rules of dashboards/prometheus/rules, and refuses wrong values;
#   5. each VM test script type-checks (mypy) against a stub of the NixOS test driver's API and
#      passes pyflakes, as nixpkgs checks them before a VM boots.
#
# Tools are installed on first use into ${REALCHAT_TOOLS_DIR:-$HOME/.cache/realchat/tools}.
# Environment:
#   REALCHAT_SETTINGS_DIR  directory with auth.json, messaging.json, profile.json,
#                          delivery.json, gateway.json (default: generated from the binaries in
#                          target/debug or target/release, if they are built)
#   REALCHAT_NIXPKGS_LIB   nixpkgs' lib as a tarball (default: ../shared/nix/nixpkgs-lib.tar.gz
#                          next to the repository)
#   REALCHAT_TOOLS_DIR     where the tools live
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
tools="${REALCHAT_TOOLS_DIR:-$HOME/.cache/realchat/tools}"
nixpkgs_lib_tarball="${REALCHAT_NIXPKGS_LIB:-$repo/../shared/nix/nixpkgs-lib.tar.gz}"

nixpkgs_fmt_version=1.3.0
deadnix_version=1.3.1
mypy_version=2.4.1
pyflakes_version=4.1.0

services=(auth messaging profile delivery gateway)

say() { printf '%s\n' "$*"; }
step() { printf '\n== %s\n' "$*"; }
die() { printf 'check.sh: %s\n' "$*" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# --- tools -----------------------------------------------------------------------------------

ensure_nix() {
  command -v nix-instantiate >/dev/null && return
  say "installing nix-bin (Debian) for nix-instantiate"
  local sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nix-bin >/dev/null; then
    "${sudo[@]}" apt-get update -q >/dev/null
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nix-bin >/dev/null
  fi
  command -v nix-instantiate >/dev/null || die "nix-instantiate is missing after installing nix-bin"
}

# cargo_tool <crate> <version>: prints the binary's path, installing it on first use.
cargo_tool() {
  local crate="$1" version="$2" root="$tools/$1-$2"
  if [ ! -x "$root/bin/$crate" ]; then
    say "installing $crate $version (cargo install, a few minutes once)" >&2
    cargo install --quiet --locked --root "$root" "$crate" --version "$version" >&2
  fi
  printf '%s\n' "$root/bin/$crate"
}

ensure_python_tools() {
  local venv="$tools/python-mypy-$mypy_version-pyflakes-$pyflakes_version"
  if [ ! -x "$venv/bin/mypy" ] || [ ! -x "$venv/bin/pyflakes" ]; then
    say "installing mypy $mypy_version and pyflakes $pyflakes_version into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
      "mypy==$mypy_version" "pyflakes==$pyflakes_version" >&2
  fi
  printf '%s\n' "$venv"
}

# nixpkgs' lib, unpacked once per tarball content.
ensure_nixpkgs_lib() {
  [ -f "$nixpkgs_lib_tarball" ] || die "nixpkgs' lib not found at $nixpkgs_lib_tarball (set REALCHAT_NIXPKGS_LIB)"
  local sum dir
  sum="$(sha256sum "$nixpkgs_lib_tarball" | cut -c1-16)"
  dir="$tools/nixpkgs-lib-$sum"
  if [ ! -f "$dir/nixpkgs-lib/lib/default.nix" ]; then
    rm -rf "$dir" && mkdir -p "$dir"
    tar xzf "$nixpkgs_lib_tarball" -C "$dir"
    [ -f "$dir/nixpkgs-lib/lib/default.nix" ] || die "$nixpkgs_lib_tarball holds no nixpkgs-lib/lib"
  fi
  printf '%s\n' "$dir/nixpkgs-lib/lib"
}

mkdir -p "$tools"
ensure_nix
nixpkgs_fmt="$(cargo_tool nixpkgs-fmt "$nixpkgs_fmt_version")"
deadnix="$(cargo_tool deadnix "$deadnix_version")"
venv="$(ensure_python_tools)"
nixpkgs_lib="$(ensure_nixpkgs_lib)"

cd "$repo"
mapfile -t nix_files < <(
  { [ -f flake.nix ] && printf '%s\n' flake.nix; find nix nixos-tests -name '*.nix' -type f; } | sort
)
[ "${#nix_files[@]}" -gt 0 ] || die "no .nix files found"

# --- 1. syntax -------------------------------------------------------------------------------

step "syntax: nix-instantiate --parse ($(nix-instantiate --version))"
for file in "${nix_files[@]}"; do
  nix-instantiate --parse "$file" >/dev/null || die "$file does not parse"
  say "  ok $file"
done

# --- 2. format and lint ----------------------------------------------------------------------

step "format: nixpkgs-fmt $nixpkgs_fmt_version --check"
"$nixpkgs_fmt" --check "${nix_files[@]}" || die "nixpkgs-fmt would change the files above (run nixpkgs-fmt on them)"
say "  ok ${#nix_files[@]} files"

step "lint: deadnix $deadnix_version --fail"
"$deadnix" --fail "${nix_files[@]}" || die "deadnix found unused bindings"
say "  ok ${#nix_files[@]} files"

# --- 3. flake.lock ---------------------------------------------------------------------------

step "flake.lock: version 7, every node of the flake's inputs well-formed"
python3 - flake.nix flake.lock <<'PY'
import json, re, sys
flake, lock_path = open(sys.argv[1]).read(), sys.argv[2]
lock = json.load(open(lock_path))
errors = []
if lock.get("version") != 7:
    errors.append(f"version is {lock.get('version')}, not 7")
nodes, root = lock.get("nodes", {}), lock.get("root")
if root not in nodes:
    errors.append("the root node is missing")
inputs = set(re.findall(r"^\s{4}([a-z][a-z0-9-]*)(?:\.url\s*=|\s*=\s*\{)", flake, re.M))
locked_inputs = set(nodes.get(root, {}).get("inputs", {}))
for name in locked_inputs - inputs:
    errors.append(f"the lock has an input the flake does not declare: {name}")
for name in sorted(inputs - locked_inputs):
    print(f"  note: input {name} is not locked yet; `nix flake lock` adds it on a machine with Nix")
for name, node in nodes.items():
    if name == root:
        continue
    for target in node.get("inputs", {}).values():
        path = target if isinstance(target, list) else [target]
        if isinstance(target, str) and target not in nodes:
            errors.append(f"{name} points at a missing node {target}")
        if isinstance(target, list) and path and path[0] not in locked_inputs | inputs:
            errors.append(f"{name} follows an unknown input {path}")
    locked, original = node.get("locked", {}), node.get("original", {})
    if locked.get("type") != "github" or original.get("type") != "github":
        errors.append(f"{name}: expected github inputs")
        continue
    if not re.fullmatch(r"[0-9a-f]{40}", locked.get("rev", "")):
        errors.append(f"{name}: rev is not a full commit hash")
    if not re.fullmatch(r"sha256-[A-Za-z0-9+/]{43}=", locked.get("narHash", "")):
        errors.append(f"{name}: narHash is not an SRI sha256")
    if not isinstance(locked.get("lastModified"), int):
        errors.append(f"{name}: lastModified is not a timestamp")
    if (locked.get("owner"), locked.get("repo")) != (original.get("owner"), original.get("repo")):
        errors.append(f"{name}: locked and original name different repositories")
    print(f"  ok {name}: {locked.get('owner')}/{locked.get('repo')} {locked.get('rev', '')[:12]}")
if errors:
    sys.exit("\n".join(f"flake.lock: {e}" for e in errors))
PY

# --- 4. the NixOS module ---------------------------------------------------------------------

step "module: nix/module.nix evaluated with nixpkgs' lib ($nixpkgs_lib_tarball)"
settings_dir="${REALCHAT_SETTINGS_DIR:-}"
if [ -z "$settings_dir" ]; then
  # Without a directory from the caller, ask the binaries already built here.
  for profile in debug release; do
    target="${CARGO_TARGET_DIR:-$repo/target}/$profile"
    if [ -x "$target/gateway" ]; then
      settings_dir="$work/settings"
      mkdir -p "$settings_dir"
      for service in "${services[@]}"; do
        "$target/$service" settings >"$settings_dir/$service.json" ||
          die "$target/$service settings failed"
      done
      say "  settings from the binaries in $target"
      break
    fi
  done
fi
[ -n "$settings_dir" ] || die "set REALCHAT_SETTINGS_DIR to a directory of '<binary> settings' JSON files (or build the workspace)"
say "  settings: $settings_dir"
nix-instantiate --eval --strict --json nixos-tests/module-eval.nix \
  --arg lib "import $nixpkgs_lib" >"$work/facts.json" ||
  die "evaluating the module failed"
python3 nixos-tests/check-module.py "$work/facts.json" "$settings_dir" | sed 's/^/  /'
[ "${PIPESTATUS[0]}" = 0 ] || die "the module does not match what the binaries read"

# --- 5. VM test scripts ----------------------------------------------------------------------

step "VM test scripts: mypy $mypy_version against the test driver stub, pyflakes $pyflakes_version"
python3 -c 'import json, sys; [print(t, " ".join(n)) for t, n in json.load(open(sys.argv[1]))["vmTestNodes"].items()]' \
  "$work/facts.json" >"$work/tests"
# The driver's globals, for pyflakes (Driver.test_symbols).
driver_globals="start_all,test_script,machines_qemu,machines_nspawn,vlans,driver,log,os,create_machine,subtest,run_tests,join_all,retry,serial_stdout_off,serial_stdout_on,polling_condition,BaseMachine,t,debug"

typecheck() { # typecheck <script> <output> <machine>...
  local script="$1" out="$2"
  shift 2
  {
    cat nixos-tests/stubs/prepend.py
    for machine in "$@"; do printf '%s: QemuMachine\n' "$machine"; done
    cat "$script"
  } >"$out"
  MYPYPATH="$repo/nixos-tests/stubs" "$venv/bin/mypy" --no-implicit-optional --disallow-untyped-defs \
    --strict-equality --warn-unreachable --no-error-summary --no-incremental --cache-dir=/dev/null "$out"
}

while read -r test machines; do
  script="nixos-tests/$test.py"
  [ -f "$script" ] || die "$script is missing"
  grep -q "builtins.readFile ./$test.py" "nixos-tests/$test.nix" ||
    die "nixos-tests/$test.nix does not read its script from $test.py"
  # shellcheck disable=SC2086 # one word per machine
  typecheck "$script" "$work/$test.py" $machines || die "$script does not type-check against the driver's API"
  PYFLAKES_BUILTINS="${machines// /,},$driver_globals" "$venv/bin/pyflakes" "$script" ||
    die "pyflakes found problems in $script"
  say "  ok $script (machines: $machines)"
done <"$work/tests"

# The stub must be strict enough to catch a misspelt method and a wrong argument.
printf 'start_all()\nbackend.wait_for_unitt("x.service")\n' >"$work/misspelt.py"
printf 'start_all()\nbackend.succeed("true", timeout="soon")\n' >"$work/wrong-argument.py"
for probe in misspelt wrong-argument; do
  if typecheck "$work/$probe.py" "$work/$probe-typed.py" backend >/dev/null 2>&1; then
    die "the driver stub accepts a $probe call; it is not checking anything"
  fi
done
say "  ok the stub refuses a misspelt method and a wrong argument"

step "all checks passed"
say "Needs a machine with Nix: building the packages and images, the cargo checks, booting the VM tests."
