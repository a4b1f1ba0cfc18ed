#!/usr/bin/env python3
"""The checks behind dashboards/check.sh (see there and dashboards/README.md).

    checks.py dashboards                    dashboard JSON and provisioning files are well formed
    checks.py names                         every metric name used is one the services declare, and
                                            a histogram is queried through its buckets
    checks.py architecture                  docs/ARCHITECTURE.md lists every declared metric, and no other
    checks.py rule-tests                    every alert has a test that fires and one that stays silent
    checks.py scrape URL[,URL...]           ... and is in the scrape of a running topology
    checks.py render-config OUT URL[,...]   Prometheus config for those targets, rules included
    checks.py evaluate PROMETHEUS_URL       every query and rule evaluates there without error

A URL may be written `name=URL` (`delivery-3=http://127.0.0.1:9186/metrics`) to give the target's
instance name; its job is the name without the `-<n>` suffix. Without a name, a URL whose address
is in prometheus.yml takes its labels from there, and one on a default admin port of the local
topology (delivery-i on 9183+i, messaging-i on 9182+100*(i-1)) is named by it.
"""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from promql_names import (
    aggregations,
    histogram_quantile_arguments,
    label_values_query,
    metric_names,
    selectors,
    substitute_grafana_variables,
)

ROOT = Path(__file__).resolve().parent.parent  # dashboards/
REPO = ROOT.parent
DASHBOARDS = ROOT / "grafana" / "dashboards"
PROVISIONING = ROOT / "grafana" / "provisioning"
PROMETHEUS = ROOT / "prometheus"
ON_EVENT = ROOT / "metrics-recorded-on-event.txt"
ARCHITECTURE = REPO / "docs" / "ARCHITECTURE.md"
ARCHITECTURE_SECTION = "## Observability"

# Series Prometheus makes itself: never in a service's scrape.
SYNTHETIC = frozenset(
    {
        "up",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
        "ALERTS",
        "ALERTS_FOR_STATE",
    }
)
SUFFIXES = ("_sum", "_count", "_bucket")


class CheckFailed(Exception):
    pass


@dataclass
class Query:
    where: str  # e.g. "grafana/dashboards/overview.json panel 7 'Messages' A"
    expr: str
    kind: str  # "panel", "variable" or "rule"


def say(message: str) -> None:
    print(message, flush=True)


# Collecting queries.


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def rule_files() -> list[Path]:
    return sorted((PROMETHEUS / "rules").glob("*.yml"))


def _panels(panels: list[dict]):
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _variable_query(variable: dict) -> str:
    query = variable.get("query", "")
    return query.get("query", "") if isinstance(query, dict) else str(query)


def collect_queries() -> list[Query]:
    queries: list[Query] = []
    for path in dashboard_files():
        board = json.loads(path.read_text())
        rel = path.relative_to(ROOT)
        for variable in board.get("templating", {}).get("list", []):
            if variable.get("type") == "query":
                inner = label_values_query(_variable_query(variable))
                if inner:
                    queries.append(Query(f"{rel} variable ${variable['name']}", inner, "variable"))
        for panel in _panels(board.get("panels", [])):
            for target in panel.get("targets", []):
                where = f"{rel} panel {panel.get('id')} {panel.get('title')!r} {target.get('refId')}"
                queries.append(Query(where, target.get("expr", ""), "panel"))
    for path in rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                name = rule.get("alert") or rule.get("record")
                queries.append(Query(f"{path.relative_to(ROOT)} {name}", rule["expr"], "rule"))
    return queries


def names_used(queries: list[Query]) -> dict[str, list[str]]:
    used: dict[str, list[str]] = {}
    for query in queries:
        for name in metric_names(query.expr):
            used.setdefault(name, []).append(query.where)
    return dict(sorted(used.items()))


# dashboards


def check_dashboards() -> None:
    problems: list[str] = []
    uids: dict[str, str] = {}
    titles: dict[str, str] = {}
    panels_seen = queries_seen = 0
    files = dashboard_files()
    if not files:
        raise CheckFailed(f"no dashboards in {DASHBOARDS.relative_to(ROOT)}")
    for path in files:
        rel = path.relative_to(ROOT)
        try:
            board = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            problems.append(f"{rel}: not JSON: {error}")
            continue
        for key in ("uid", "title", "schemaVersion", "panels"):
            if key not in board:
                problems.append(f"{rel}: no {key}")
        uid, title = board.get("uid", ""), board.get("title", "")
        if uid in uids:
            problems.append(f"{rel}: uid {uid!r} also in {uids[uid]}")
        uids[uid] = str(rel)
        if title in titles:
            problems.append(f"{rel}: title {title!r} also in {titles[title]}")
        titles[title] = str(rel)
        if not isinstance(board.get("schemaVersion"), int) or board["schemaVersion"] < 36:
            problems.append(f"{rel}: schemaVersion {board.get('schemaVersion')!r} is older than Grafana 9")

        variables = {v.get("name"): v for v in board.get("templating", {}).get("list", [])}
        ds_var = variables.get("datasource")
        if not ds_var or ds_var.get("type") != "datasource" or ds_var.get("query") != "prometheus":
            problems.append(f"{rel}: no `datasource` variable of type datasource for prometheus")
        if "instance" not in variables:
            problems.append(f"{rel}: no `instance` variable")
        for name, variable in variables.items():
            if variable.get("type") == "query":
                if variable.get("datasource", {}).get("uid") != "${datasource}":
                    problems.append(f"{rel}: variable ${name} does not use ${{datasource}}")
                if not label_values_query(_variable_query(variable)):
                    problems.append(f"{rel}: variable ${name} has no label_values(<expr>, <label>) query")

        ids: set[int] = set()
        for panel in _panels(board.get("panels", [])):
            pid = panel.get("id")
            what = f"{rel} panel {pid} {panel.get('title')!r}"
            if pid is None or pid in ids:
                problems.append(f"{what}: missing or duplicate id")
            ids.add(pid)
            if "gridPos" not in panel:
                problems.append(f"{what}: no gridPos")
            if panel.get("type") == "row":
                continue
            panels_seen += 1
            if panel.get("datasource") != {"type": "prometheus", "uid": "${datasource}"}:
                problems.append(f"{what}: datasource is not the ${{datasource}} variable")
            targets = panel.get("targets") or []
            if not targets:
                problems.append(f"{what}: no query")
            ref_ids = [t.get("refId") for t in targets]
            if len(set(ref_ids)) != len(ref_ids) or None in ref_ids:
                problems.append(f"{what}: missing or duplicate refId")
            for target in targets:
                queries_seen += 1
                expr = target.get("expr", "")
                if not expr.strip():
                    problems.append(f"{what}: empty query {target.get('refId')}")
                if target.get("datasource", panel.get("datasource")) != panel.get("datasource"):
                    problems.append(f"{what}: query {target.get('refId')} has another datasource")
                try:
                    if not metric_names(expr):
                        problems.append(f"{what}: query {target.get('refId')} selects no metric")
                except ValueError as error:
                    problems.append(f"{what}: {error}")

    for path in sorted(PROVISIONING.rglob("*.yml")):
        try:
            doc = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            problems.append(f"{path.relative_to(ROOT)}: not YAML: {error}")
            continue
        if not isinstance(doc, dict) or doc.get("apiVersion") != 1:
            problems.append(f"{path.relative_to(ROOT)}: not a Grafana provisioning file (apiVersion 1)")

    if problems:
        raise CheckFailed("dashboards:\n  " + "\n  ".join(problems))
    say(f"ok   {len(files)} dashboards, {panels_seen} panels, {queries_seen} queries: JSON, unique uids and ids, "
        "every panel on ${datasource} with a query")


# names


# A string constant: `pub const SENDS: &str = "messaging_sends_total";` (any visibility).
_CONST = re.compile(
    r'(?:pub(?:\([^)]*\))?\s+)?const\s+([A-Z][A-Z0-9_]*)\s*:\s*&(?:\'static\s+)?str\s*=\s*"([^"]*)"\s*;'
)
# The name given to a metric macro of the `metrics` crate: a constant (maybe through a path) or a
# literal. `describe_histogram!(X, ...)`, `metrics::counter!(metrics::SENDS, "a" => b)`.
_MACRO = re.compile(
    r'\b(describe_)?(counter|gauge|histogram)!\s*\(\s*'
    r'(?:(?:[A-Za-z_][A-Za-z0-9_]*::)*([A-Z][A-Z0-9_]*)|"([A-Za-z_:][A-Za-z0-9_:]*)")\s*[,)]'
)
_METRIC_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


@dataclass
class Declared:
    path: str  # where the name is declared, e.g. crates/outbox/src/metrics.rs
    kind: str  # counter, gauge or histogram (what the code records), "" when it records none


def rust_sources() -> list[Path]:
    return sorted(p for p in REPO.glob("crates/*/src/**/*.rs") if p.is_file())


def declared_metrics() -> dict[str, Declared]:
    """Every metric name the services declare: the string constants of crates/*/src/**/*.rs given to
    a metric macro of the `metrics` crate (counter!, gauge!, histogram! and their describe_), every
    constant of a `metrics.rs`, and names given to those macros as literals; with the kind of
    metric the code records under each."""
    constants: dict[str, list[tuple[str, str]]] = {}  # identifier -> [(value, path)]
    in_metrics_rs: set[tuple[str, str]] = set()
    uses: dict[str, set[str]] = {}  # identifier or literal name -> kinds
    literals: dict[str, str] = {}
    for path in rust_sources():
        text = path.read_text()
        rel = str(path.relative_to(REPO))
        for ident, value in _CONST.findall(text):
            constants.setdefault(ident, []).append((value, rel))
            if path.name == "metrics.rs":
                in_metrics_rs.add((ident, value))
        for match in _MACRO.finditer(text):
            kind, ident, literal = match.group(2), match.group(3), match.group(4)
            key = ident or literal
            uses.setdefault(key, set()).add(kind)
            if literal:
                literals.setdefault(literal, rel)
    declared: dict[str, Declared] = {}
    for ident, values in constants.items():
        for value, rel in values:
            if not _METRIC_NAME.fullmatch(value):
                continue
            if ident in uses or (ident, value) in in_metrics_rs:
                kinds = uses.get(ident, set())
                declared[value] = Declared(rel, "/".join(sorted(kinds)))
    for literal, rel in literals.items():
        declared.setdefault(literal, Declared(rel, "/".join(sorted(uses[literal]))))
    return dict(sorted(declared.items()))


def declared_names() -> dict[str, str]:
    """Metric names declared in the code (see declared_metrics), and where."""
    return {name: d.path for name, d in declared_metrics().items()}


def base_name(name: str, known: set[str] | dict[str, str]) -> str | None:
    if name in known:
        return name
    for suffix in SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in known:
            return name[: -len(suffix)]
    return None


def on_event_names() -> dict[str, str]:
    listed: dict[str, str] = {}
    for line in ON_EVENT.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, why = line.partition(" ")
            listed[name] = why.strip()
    return listed


def histogram_problems(queries: list[Query], declared: dict[str, Declared]) -> list[str]:
    """A histogram is queried through its series: `_bucket` (in histogram_quantile, aggregated
    by `le`), `_sum` and `_count`; never by its bare name, and never with a `quantile` matcher
    (a summary's label, which a histogram does not have)."""
    histograms = {name for name, d in declared.items() if d.kind == "histogram"}
    problems: list[str] = []
    for query in queries:
        for sel in selectors(query.expr):
            family = base_name(sel.name, histograms)
            if family is None:
                continue
            if "quantile" in sel.labels:
                problems.append(f"{query.where}: a quantile matcher on {sel.name}, but {family} is a histogram, "
                                f"not a summary: use histogram_quantile(φ, sum by (le) (rate({family}_bucket[...])))")
            elif sel.name == family:
                problems.append(f"{query.where}: {sel.name} is a histogram: select {sel.name}_bucket "
                                "(in histogram_quantile), _sum or _count")
        for argument in histogram_quantile_arguments(query.expr):
            names = metric_names(argument)
            if not names or any(not n.endswith("_bucket") for n in names):
                problems.append(f"{query.where}: histogram_quantile over {' '.join(sorted(names)) or 'nothing'}, "
                                "not over _bucket series")
            if not _keeps_le(argument):
                problems.append(f"{query.where}: histogram_quantile over an aggregation that drops `le`: "
                                "write sum by (le, ...)")
    return problems


def _keeps_le(argument: str) -> bool:
    """Whether every aggregation in a histogram_quantile argument keeps the `le` label (there is at
    least one: the buckets of all series, replicas included, are summed)."""
    found = aggregations(argument)
    return bool(found) and all(a.keeps("le") for a in found)


def check_names() -> dict[str, list[str]]:
    queries = collect_queries()
    used = names_used(queries)
    declared_all = declared_metrics()
    declared = {name: d.path for name, d in declared_all.items()}
    if not declared:
        raise CheckFailed("found no metric names declared in crates/*/src")
    unknown = [n for n in used if n not in SYNTHETIC and base_name(n, declared) is None]
    listed = on_event_names()
    stale = [n for n in listed if n not in declared]
    problems = [f"{n}: used by {', '.join(used[n][:3])}, declared nowhere in crates/*/src" for n in unknown]
    problems += [f"{ON_EVENT.name}: {n} is declared nowhere in crates/*/src" for n in stale]
    problems += histogram_problems(queries, declared_all)
    if problems:
        raise CheckFailed("metric names:\n  " + "\n  ".join(problems))
    histograms = sorted(n for n, d in declared_all.items() if d.kind == "histogram")
    say(f"ok   {len(queries)} queries ({sum(q.kind == 'rule' for q in queries)} alert rules) use "
        f"{len(used)} metric names, each declared in crates/*/src or made by Prometheus; the "
        f"{len(histograms)} histograms only through _bucket (histogram_quantile by le), _sum and _count:")
    say("       " + " ".join(used))
    return used


# architecture


def architecture_rows() -> tuple[dict[str, list[str]], list[str]]:
    """The metric rows of docs/ARCHITECTURE.md's Observability section: a table row whose first
    cell is one metric name in backticks, mapped to its cells; and the names listed twice."""
    lines = ARCHITECTURE.read_text().splitlines()
    try:
        start = lines.index(ARCHITECTURE_SECTION)
    except ValueError as error:
        raise CheckFailed(f"{ARCHITECTURE.relative_to(REPO)} has no {ARCHITECTURE_SECTION!r} section") from error
    rows: dict[str, list[str]] = {}
    twice: list[str] = []
    for line in lines[start + 1 :]:
        if line.startswith("## "):
            break
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`([A-Za-z_:][A-Za-z0-9_:]*)`", cells[0])
        if match:
            if match.group(1) in rows:
                twice.append(match.group(1))
            rows[match.group(1)] = cells[1:]
    return rows, twice


def check_architecture() -> None:
    declared = declared_metrics()
    rows, twice = architecture_rows()
    where = f"{ARCHITECTURE.relative_to(REPO)} {ARCHITECTURE_SECTION!r}"
    problems = [f"{n} ({d.path}) has no row in {where}" for n, d in declared.items() if n not in rows]
    problems += [f"{where} lists {n}, which no code in crates/*/src declares" for n in rows if n not in declared]
    problems += [f"{where} lists {n} twice" for n in twice]
    for name, cells in rows.items():
        kind = declared.get(name, Declared("", "")).kind
        if kind and (not cells or not cells[0].startswith(kind)):
            problems.append(f"{where}: {name} is a {kind} in the code, the table says {cells[0] if cells else 'nothing'!r}")
    if problems:
        raise CheckFailed("metrics in the architecture document:\n  " + "\n  ".join(problems))
    say(f"ok   {where} has a row for each of the {len(declared)} metrics declared in crates/*/src, "
        "of the kind the code records, and no other")


# rule-tests


def check_rule_tests() -> None:
    alerts = {
        rule["alert"]: path.name
        for path in rule_files()
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    fires: set[str] = set()
    silent: set[str] = set()
    files = sorted((PROMETHEUS / "tests").glob("*.yml"))
    for path in files:
        for test in yaml.safe_load(path.read_text()).get("tests", []):
            for case in test.get("alert_rule_test", []):
                (fires if case.get("exp_alerts") else silent).add(case["alertname"])
    problems = [f"{a} ({alerts[a]}): no test case where it fires" for a in alerts if a not in fires]
    problems += [f"{a} ({alerts[a]}): no test case where it stays silent" for a in alerts if a not in silent]
    problems += [f"tests name {a}, which no rule defines" for a in sorted((fires | silent) - set(alerts))]
    if problems:
        raise CheckFailed("alert rule tests:\n  " + "\n  ".join(problems))
    say(f"ok   each of the {len(alerts)} alerts has a test case that fires and one that stays silent "
        f"({len(files)} test files): {' '.join(sorted(alerts))}")


# scrape


@dataclass
class Target:
    url: str
    job: str
    instance: str


def parse_targets(spec: str) -> list[Target]:
    by_address: dict[str, tuple[str, str]] = {}
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    for scrape in config.get("scrape_configs", []):
        for static in scrape.get("static_configs", []):
            labels = static.get("labels", {})
            for address in static.get("targets", []):
                by_address[address] = (labels.get("job", scrape["job_name"]), labels.get("instance", address))
    targets = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, sep, url = item.partition("=")
        if not sep or "://" in name:
            name, url = "", item
        address = urllib.parse.urlsplit(url).netloc
        if name:
            targets.append(Target(url, re.sub(r"-\d+$", "", name), name))
        elif address in by_address:
            targets.append(Target(url, *by_address[address]))
        else:
            inferred = _by_default_port(address)
            if not inferred:
                raise CheckFailed(f"cannot tell which service {url} is: write it as <name>={url} (e.g. delivery-3={url})")
            targets.append(Target(url, *inferred))
    if not targets:
        raise CheckFailed("no metrics URLs given")
    return targets


def _by_default_port(address: str) -> tuple[str, str] | None:
    try:
        port = int(address.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None
    fixed = {9180: "gateway", 9181: "auth", 9183: "profile"}
    if port in fixed:
        return fixed[port], fixed[port]
    if port >= 9182 and (port - 9182) % 100 == 0:
        return "messaging", f"messaging-{(port - 9182) // 100 + 1}"
    if 9184 <= port < 9282:
        return "delivery", f"delivery-{port - 9183}"
    return None


def scrape(url: str) -> tuple[dict[str, str], set[str]]:
    """Metric families with their TYPE, and every sample name, from one /metrics."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError) as error:
        raise CheckFailed(f"cannot scrape {url}: {error}") from error
    types: dict[str, str] = {}
    samples: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) >= 4:
                types[parts[2]] = parts[3]
        elif line and not line.startswith("#"):
            match = re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line)
            if match:
                samples.add(match.group(0))
    return types, samples


def check_scrape(spec: str) -> None:
    used = names_used(collect_queries())
    targets = parse_targets(spec)
    types: dict[str, str] = {}
    samples: set[str] = set()
    for target in targets:
        t, s = scrape(target.url)
        say(f"     scraped {target.instance} ({target.job}) {target.url}: {len(s)} series names")
        types.update(t)
        samples |= s
    listed = on_event_names()
    problems, waiting = [], []
    for name, where in used.items():
        if name in SYNTHETIC:
            continue
        if name not in samples:
            family = base_name(name, listed)
            if family is not None:
                waiting.append(name)
            else:
                problems.append(f"{name}: not in the scrape; used by {', '.join(where[:3])}")
            continue
        if types.get(name) == "histogram":
            problems.append(f"{name} is a histogram: select {name}_bucket, _sum or _count")
    # Quantile matchers only make sense on summaries: catches a switch to histograms.
    for query in collect_queries():
        for sel in selectors(query.expr):
            if "quantile" in sel.labels and sel.name in types and types[sel.name] != "summary":
                problems.append(f"{query.where}: {sel.name} is a {types[sel.name]}, not a summary: it has no quantile label")
    if problems:
        raise CheckFailed("metric names against the scrape:\n  " + "\n  ".join(sorted(set(problems))))
    found = len([n for n in used if n not in SYNTHETIC]) - len(waiting)
    say(f"ok   {found} metric names used are in the scrape of {len(targets)} targets")
    if waiting:
        say(f"     not recorded yet, as nothing they count has happened ({ON_EVENT.name}): {' '.join(waiting)}")


# render-config


def render_config(out_dir: str, spec: str, interval: str = "5s") -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    config["global"] = {**config.get("global", {}), "scrape_interval": interval, "evaluation_interval": interval}
    config["rule_files"] = [str((PROMETHEUS / f).resolve()) for f in config.get("rule_files", [])]
    groups: dict[tuple[str, str, str], list[Target]] = {}
    for target in parse_targets(spec):
        parts = urllib.parse.urlsplit(target.url)
        groups.setdefault((target.job, parts.scheme, parts.path or "/metrics"), []).append(target)
    scrape_configs = []
    seen: dict[str, int] = {}
    for (job, scheme, path), targets in groups.items():
        seen[job] = seen.get(job, 0) + 1
        scrape_configs.append(
            {
                "job_name": job if seen[job] == 1 else f"{job}-{seen[job]}",
                "scheme": scheme,
                "metrics_path": path,
                "static_configs": [
                    {
                        "targets": [urllib.parse.urlsplit(t.url).netloc],
                        "labels": {"job": t.job, "instance": t.instance},
                    }
                    for t in targets
                ],
            }
        )
    config["scrape_configs"] = scrape_configs
    (out / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    say(f"     rendered {out / 'prometheus.yml'} with {sum(len(t) for t in groups.values())} targets")


# evaluate


def api(base: str, path: str, **params: str) -> dict:
    url = f"{base}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        body = error.read().decode(errors="replace")
        try:
            return json.loads(body)
        except json.JSONDecodeError:
            return {"status": "error", "error": f"HTTP {error.code}: {body[:200]}"}


def wait_for(what: str, timeout: float, probe) -> object:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        ok, last = probe()
        if ok:
            return last
        time.sleep(1)
    raise CheckFailed(f"timed out after {timeout:.0f} s waiting for {what}: {last}")


def evaluate(base: str) -> None:
    def targets_up():
        active = api(base, "/api/v1/targets").get("data", {}).get("activeTargets", [])
        down = [f"{t['labels'].get('instance')}: {t.get('health')} {t.get('lastError', '')}".strip() for t in active if t.get("health") != "up"]
        return bool(active) and not down, down or active

    active = wait_for("every target to be up", 60, targets_up)
    say(f"ok   Prometheus: all {len(active)} targets up: " + " ".join(sorted(t["labels"]["instance"] for t in active)))

    def rules_evaluated():
        groups = api(base, "/api/v1/rules").get("data", {}).get("groups", [])
        rules = [r for g in groups for r in g["rules"]]
        pending = [r["name"] for r in rules if r.get("lastEvaluation", "").startswith("0001-")]
        return bool(rules) and not pending, rules or "no rules loaded"

    # Two scrapes at least, so that rate() has two samples to work with.
    time.sleep(11)
    rules = wait_for("every rule to be evaluated", 60, rules_evaluated)
    broken = [f"{r['name']}: {r.get('lastError')}" for r in rules if r.get("health") != "ok"]
    if broken:
        raise CheckFailed("alert rules failing in Prometheus:\n  " + "\n  ".join(broken))
    firing = sorted({f"{a['labels'].get('alertname')}{{{','.join(f'{k}={v}' for k, v in sorted(a['labels'].items()) if k not in ('alertname', 'severity'))}}}"
                     for r in rules for a in r.get("alerts", []) if a.get("state") == "firing"})
    say(f"ok   Prometheus: {len(rules)} alert rules loaded and evaluated, health ok")
    if firing:
        say("     firing now on this topology: " + "; ".join(firing))

    now = time.time()
    failures, empty, count = [], [], 0
    for query in collect_queries():
        expr = substitute_grafana_variables(query.expr)
        count += 1
        result = api(base, "/api/v1/query", query=expr, time=f"{now:.3f}")
        if result.get("status") != "success":
            failures.append(f"{query.where}: {result.get('error')}\n    {expr}")
            continue
        if query.kind == "panel":
            ranged = api(base, "/api/v1/query_range", query=expr, start=f"{now - 60:.3f}", end=f"{now:.3f}", step="5")
            if ranged.get("status") != "success":
                failures.append(f"{query.where} (range): {ranged.get('error')}\n    {expr}")
                continue
        if not result.get("data", {}).get("result"):
            empty.append(query.where)
    if failures:
        raise CheckFailed("queries that Prometheus refused:\n  " + "\n  ".join(failures))
    say(f"ok   Prometheus: {count} dashboard queries, variable queries and alert expressions evaluate without error "
        f"({count - len(empty)} with data now)")
    if empty:
        say(f"     {len(empty)} without data now (nothing they count happened, or an alert condition that is false): "
            + "; ".join(e.replace("grafana/dashboards/", "").replace("prometheus/rules/", "") for e in empty))


def main(argv: list[str]) -> int:
    commands = {
        "dashboards": (0, lambda: check_dashboards()),
        "names": (0, lambda: check_names()),
        "architecture": (0, lambda: check_architecture()),
        "rule-tests": (0, lambda: check_rule_tests()),
        "scrape": (1, lambda: check_scrape(argv[2])),
        "render-config": (2, lambda: render_config(argv[2], argv[3])),
        "evaluate": (1, lambda: evaluate(argv[2].rstrip("/"))),
    }
    if len(argv) < 2 or argv[1] not in commands or len(argv) - 2 != commands[argv[1]][0]:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        commands[argv[1]][1]()
    except CheckFailed as error:
        print(f"FAIL {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
