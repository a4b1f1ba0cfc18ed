#!/usr/bin/env bash
# Checks the dashboards, the Prometheus config and the alert rules; see dashboards/README.md.
#
#   dashboards/check.sh
#       offline: the scripts' unit tests; dashboards up to date with their generator and well
#       formed; every metric name they and the rules use declared in crates/*/src, histograms
#       queried through their buckets; every declared metric, and no other, in the Observability
#       section of docs/ARCHITECTURE.md; promtool check config, check rules, test rules (every
#       alert fires and stays silent).
#   REALCHAT_METRICS_URLS=http://127.0.0.1:9180/metrics,... dashboards/check.sh
#       also: every metric name used is in the scrape of that running topology
#       (a URL may be written name=URL, e.g. delivery-3=http://127.0.0.1:9186/metrics).
#   REALCHAT_PROMETHEUS_CHECK=1 REALCHAT_METRICS_URLS=... dashboards/check.sh
#       also: a Prometheus of its own scrapes those targets with the repo's config and rules
#       (free port, temporary data, stopped at the end), every target is up, every rule evaluates
#       cleanly, and every dashboard query evaluates without error.
#
# promtool and prometheus come from Debian's `prometheus` package, unpacked (not installed, so no
# service is started) into ${REALCHAT_TOOLS_DIR:-~/.cache/realchat/tools} on first use; a
# promtool and prometheus already on the PATH are used when that directory has none.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools="${REALCHAT_TOOLS_DIR:-$HOME/.cache/realchat/tools}"

step() { printf '==>  %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*" >&2; exit 1; }

# Python 3 with PyYAML.
python=""
for candidate in python3 /usr/bin/python3; do
  if command -v "$candidate" >/dev/null && "$candidate" -c 'import yaml' 2>/dev/null; then
    python="$candidate"
    break
  fi
done
if [[ -z "$python" ]]; then
  step "installing python3-yaml"
  apt-get install -y -qq python3-yaml >/dev/null || { apt-get update -qq && apt-get install -y -qq python3-yaml >/dev/null; }
  python=/usr/bin/python3
fi

# promtool and prometheus.
install_prometheus() {
  step "unpacking Debian's prometheus package into $tools (first use)"
  local work deb
  work="$(mktemp -d)"
  chmod 755 "$work" # apt downloads as its own user
  if ! (cd "$work" && apt-get download -qq prometheus >/dev/null 2>&1); then
    apt-get update -qq
    (cd "$work" && apt-get download -qq prometheus >/dev/null 2>&1) || { rm -rf "$work"; fail "apt-get download prometheus failed"; }
  fi
  deb="$(ls "$work"/prometheus_*.deb)"
  local version
  version="$(dpkg-deb -f "$deb" Version)"
  dpkg-deb -x "$deb" "$work/unpacked"
  mkdir -p "$tools"
  rm -rf "$tools/prometheus-$version"
  mkdir -p "$work/dest/bin"
  cp "$work/unpacked/usr/bin/prometheus" "$work/unpacked/usr/bin/promtool" "$work/dest/bin/"
  mv "$work/dest" "$tools/prometheus-$version"
  rm -rf "$work"
}
find_prometheus() {
  local dir
  for dir in "$tools"/prometheus-*/bin; do
    if [[ -x "$dir/promtool" && -x "$dir/prometheus" ]]; then
      promtool="$dir/promtool" prometheus="$dir/prometheus"
      return 0
    fi
  done
  if command -v promtool >/dev/null && command -v prometheus >/dev/null; then
    promtool="$(command -v promtool)" prometheus="$(command -v prometheus)"
    return 0
  fi
  return 1
}
find_prometheus || { install_prometheus && find_prometheus; } || fail "no promtool/prometheus"

# Runs a command quietly; shows its output only when it fails.
quiet() {
  local out
  if ! out="$("$@" 2>&1)"; then
    printf '%s\n' "$out" >&2
    fail "$*"
  fi
}

cd "$here/scripts"
step "python unit tests of the metric-name extraction"
quiet "$python" -m unittest -q test_promql_names
echo "ok   $(grep -c '    def test_' test_promql_names.py) tests"

step "dashboards"
quiet "$python" build_dashboards.py --check
echo "ok   grafana/dashboards/*.json are what scripts/build_dashboards.py writes"
"$python" checks.py dashboards

step "metric names"
"$python" checks.py names

step "every metric in docs/ARCHITECTURE.md"
"$python" checks.py architecture

step "Prometheus config and rules ($("$promtool" --version 2>&1 | head -1))"
quiet "$promtool" check config "$here/prometheus/prometheus.yml"
echo "ok   promtool check config prometheus/prometheus.yml"
quiet "$promtool" check rules "$here"/prometheus/rules/*.yml
echo "ok   promtool check rules prometheus/rules/*.yml"
"$python" checks.py rule-tests
(cd "$here/prometheus/tests" && quiet "$promtool" test rules ./*.yml)
echo "ok   promtool test rules prometheus/tests/*.yml"

urls="${REALCHAT_METRICS_URLS:-}"
if [[ -z "$urls" ]]; then
  [[ "${REALCHAT_PROMETHEUS_CHECK:-}" != 1 ]] || fail "REALCHAT_PROMETHEUS_CHECK=1 needs REALCHAT_METRICS_URLS"
  echo "skip the running topology: set REALCHAT_METRICS_URLS (and REALCHAT_PROMETHEUS_CHECK=1) to check against one"
  exit 0
fi

step "metric names against the running topology"
"$python" checks.py scrape "$urls"

if [[ "${REALCHAT_PROMETHEUS_CHECK:-}" != 1 ]]; then
  echo "skip a real Prometheus: set REALCHAT_PROMETHEUS_CHECK=1"
  exit 0
fi

step "a real Prometheus against the running topology"
work="$(mktemp -d)"
prom_pid=""
cleanup() {
  if [[ -n "$prom_pid" ]]; then
    kill "$prom_pid" 2>/dev/null || true
    wait "$prom_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
"$python" checks.py render-config "$work" "$urls"
quiet "$promtool" check config "$work/prometheus.yml"
echo "ok   promtool check config on it"
port="$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$prometheus" \
  --config.file="$work/prometheus.yml" \
  --storage.tsdb.path="$work/data" \
  --web.listen-address="127.0.0.1:$port" \
  --log.level=warn \
  >"$work/prometheus.log" 2>&1 &
prom_pid=$!
for _ in $(seq 1 60); do
  if curl -fsS "http://127.0.0.1:$port/-/ready" >/dev/null 2>&1; then break; fi
  kill -0 "$prom_pid" 2>/dev/null || { cat "$work/prometheus.log" >&2; fail "prometheus exited"; }
  sleep 0.5
done
echo "     Prometheus $prom_pid on 127.0.0.1:$port"
"$python" checks.py evaluate "http://127.0.0.1:$port" || { tail -20 "$work/prometheus.log" >&2; exit 1; }
