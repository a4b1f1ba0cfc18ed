"""Compares what nix/module.nix produces (module-eval.nix, evaluated by check.sh) with the
settings each binary reads (`<binary> settings`, one JSON file per binary).

Usage: check-module.py <facts.json> <settings-dir>
Prints one line per check; exits 1 if any failed.
"""

import json
import re
import sys
from pathlib import Path

SERVICES = ["auth", "messaging", "profile", "delivery", "gateway"]
# Read by the binaries outside their options struct (runtime::telemetry), in case a settings
# file does not list it.
READ_OUTSIDE_OPTIONS = {"OTEL_EXPORTER_OTLP_ENDPOINT"}
LOCAL_DEPENDENCIES = ("postgresql.target", "apache-kafka.service", "redis-realchat.service")
ALLOWED_FAMILIES = {"AF_INET", "AF_INET6", "AF_UNIX"}
# Mutual TLS between the services: each file's variable, and the credential it is loaded as.
INTERNAL_TLS = {
    "REALCHAT_INTERNAL_TLS_CA_FILE": "internal-tls-ca",
    "REALCHAT_INTERNAL_TLS_CERT_FILE": "internal-tls-cert",
    "REALCHAT_INTERNAL_TLS_KEY_FILE": "internal-tls-key",
}
# Where each VM test machine keeps its copies of the internal TLS files (common.nix).
VM_INTERNAL_TLS = "/etc/realchat/internal-tls"
# The alert rules and the scrape configuration of the local topology, whose labels the
# dashboards and the rules rely on.
REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "dashboards" / "prometheus" / "rules"
PROMETHEUS_YML = REPO / "dashboards" / "prometheus" / "prometheus.yml"
# The cases whose configuration has services.realchat.prometheus enabled.
PROMETHEUS_CASES = ("prometheusDefaults", "prometheus", "prometheusSomeServices", "prometheusWithoutServer", "vmTopologyBackend")

failures: list[str] = []
passes = 0


def check(condition: bool, what: str) -> None:
    global passes
    if condition:
        passes += 1
    else:
        failures.append(what)
        print(f"  FAIL {what}")


def load_settings(directory: Path) -> dict[str, dict[str, dict[str, object]]]:
    """The settings of every service binary, by service and variable name."""
    settings = {}
    for service in SERVICES:
        path = directory / f"{service}.json"
        if not path.is_file():
            sys.exit(f"missing {path}: `{service} settings > {path.name}` makes it")
        document = json.loads(path.read_text())
        shape_ok = (
            isinstance(document, dict)
            and set(document) == {"binary", "settings"}
            and document["binary"] == service
            and isinstance(document["settings"], list)
            and all(
                isinstance(item, dict)
                and set(item) == {"name", "default", "secret", "help"}
                and isinstance(item["name"], str)
                and (item["default"] is None or isinstance(item["default"], str))
                and isinstance(item["secret"], bool)
                and isinstance(item["help"], str)
                for item in document["settings"]
            )
        )
        check(shape_ok, f"{path.name} has the shape of `{service} settings`")
        if not shape_ok:
            continue
        settings[service] = {item["name"]: item for item in document["settings"]}
    return settings


def typed(name: str) -> bool:
    """Variables the issue asks typed options for: addresses, database URL, brokers, Redis URL,
    endpoints, log format, OTLP endpoint, the internal TLS files."""
    return (
        name.endswith(("_ADDR", "_DATABASE_URL", "_ENDPOINT", "_ENDPOINTS"))
        or name in {"REALCHAT_KAFKA_BROKERS", "REALCHAT_REDIS_URL", "REALCHAT_LOG_FORMAT"}
        or name == "OTEL_EXPORTER_OTLP_ENDPOINT"
        or (name.startswith("REALCHAT_INTERNAL_TLS_") and name.endswith("_FILE"))
    )


def credential_names(config: dict[str, object]) -> list[str]:
    """The names of the credentials a unit loads (`LoadCredential=<name>:<file>`)."""
    entries = config.get("LoadCredential") or []
    assert isinstance(entries, list)
    return [str(entry).split(":", 1)[0] for entry in entries]


def repository_jobs() -> dict[str, str]:
    """Each job of dashboards/prometheus/prometheus.yml and its first target (comments left out)."""
    jobs: dict[str, str] = {}
    job = None
    for line in PROMETHEUS_YML.read_text().splitlines():
        line = line.split("#", 1)[0]
        match = re.match(r"\s*- job_name:\s*(\S+)\s*$", line)
        if match:
            job = match.group(1)
            continue
        match = re.search(r'targets:\s*\["([^"]+)"', line)
        if job is not None and job not in jobs and match:
            jobs[job] = match.group(1)
    return jobs


def scrape_jobs(case: dict) -> dict[str, dict]:
    """The scrape jobs a case gives Prometheus, by job name."""
    return {job["job_name"]: job for job in case["prometheus"]["scrapeConfigs"]}


def admin_address(unit: dict) -> str:
    """The admin listener a unit is told (`REALCHAT_<SERVICE>_ADMIN_ADDR`)."""
    [address] = [value for name, value in unit["environment"].items() if name.endswith("_ADMIN_ADDR")]
    return str(address)


def known(service: str, name: str, settings: dict[str, dict[str, dict[str, object]]]) -> bool:
    return name in settings[service] or name in READ_OUTSIDE_OPTIONS


def main() -> None:
    facts = json.loads(Path(sys.argv[1]).read_text())
    settings = load_settings(Path(sys.argv[2]))
    if failures:
        sys.exit(1)
    cases = facts["cases"]

    print("every variable a unit sets is one its binary reads")
    for case, data in cases.items():
        if data["failedAssertions"]:
            continue  # a configuration NixOS refuses to build
        for unit, facts_ in data["units"].items():
            service = unit.removeprefix("realchat-")
            for name in facts_["environment"]:
                check(known(service, name, settings), f"{case}: {unit} sets {name}, which `{service} settings` does not list")

    print("a unit nobody configured runs with the binary's defaults")
    defaults = cases["defaults"]["units"]
    for service in SERVICES:
        unit = defaults.get(f"realchat-{service}")
        check(unit is not None, f"defaults: realchat-{service} exists")
        if unit is None:
            continue
        for name, value in unit["environment"].items():
            if name in settings[service]:
                want = settings[service][name]["default"]
                check(value == want, f"defaults: realchat-{service} {name}={value!r}, the binary's default is {want!r}")
        check(unit["after"] == ["network-online.target"], f"defaults: realchat-{service} orders after nothing local: {unit['after']}")
    check(cases["defaults"]["firewall"] == [], "defaults: no port opened without openFirewall")

    print("typed options cover every address, URL, endpoint, the log format, OTLP and internal TLS")
    local = cases["local"]["units"]
    for service in SERVICES:
        environment = local[f"realchat-{service}"]["environment"]
        for name in settings[service]:
            if typed(name):
                check(name in environment, f"local: realchat-{service} has a typed option for {name}")
        for name, item in settings[service].items():
            if item["secret"] and name in environment:
                check(
                    re.search(r"://[^/@]*:[^/@]*@", environment[name]) is None,
                    f"local: realchat-{service} {name} carries no password into the store",
                )

    print("values, ports and the firewall")
    auth = local["realchat-auth"]["environment"]
    check(auth["REALCHAT_AUTH_GRPC_ADDR"] == "0.0.0.0:7051", "local: auth listens where told")
    check(auth["REALCHAT_KAFKA_BROKERS"] == "127.0.0.1:9092,10.0.0.2:9092", "local: brokers are comma-separated")
    check(auth["REALCHAT_AUTH_MIGRATE"] == "false", "local: boolean settings render as false/true")
    check(auth["REALCHAT_AUTH_ACCESS_TOKEN_TTL_SECS"] == "600", "local: integer settings render as decimals")
    check(auth["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4317", "local: OTLP endpoint")
    check(
        auth["REALCHAT_AUTH_DATABASE_URL"] == "postgres:///auth?host=/run/postgresql&user=realchat-auth",
        "local: createLocalDatabase connects over the socket as the unit's user",
    )
    check(
        auth["REALCHAT_AUTH_KEY_ENCRYPTION_KEY_FILE"] == "%d/key-encryption-key",
        "local: keyEncryptionKeyFile is read from the unit's credentials directory",
    )
    check(
        "key-encryption-key:/run/secrets/auth-kek" in local["realchat-auth"]["serviceConfig"].get("LoadCredential", []),
        "local: keyEncryptionKeyFile is loaded as a systemd credential, never copied into the store",
    )
    for service in SERVICES:
        unit = local[f"realchat-{service}"]
        for variable, credential in INTERNAL_TLS.items():
            check(
                unit["environment"].get(variable) == f"%d/{credential}",
                f"local: realchat-{service} reads {variable} from the unit's credentials directory",
            )
        want = [
            "internal-tls-ca:/run/secrets/internal-ca.pem",
            f"internal-tls-cert:/run/secrets/{service}.pem",
            f"internal-tls-key:/run/secrets/{service}.key",
        ]
        loaded = unit["serviceConfig"].get("LoadCredential", [])
        check(
            [entry for entry in loaded if entry.startswith("internal-tls-")] == want,
            f"local: realchat-{service} loads internalTls as systemd credentials: {loaded}",
        )
    check(
        local["realchat-messaging"]["environment"]["REALCHAT_MESSAGING_DATABASE_URL"]
        == "postgres:///chat_messages?host=/run/postgresql&user=realchat-messaging",
        "local: databaseName names the database in the URL",
    )
    gateway = local["realchat-gateway"]["environment"]
    check(gateway["REALCHAT_DELIVERY_ENDPOINTS"] == "ws://10.0.0.11:8081,ws://10.0.0.12:8081", "local: delivery endpoints are comma-separated")
    check(local["realchat-delivery"]["environment"]["REALCHAT_DELIVERY_ADDR"] == "[::]:8081", "local: IPv6 listen address")
    check(sorted(cases["local"]["firewall"]) == [443, 7051, 8081], f"local: openFirewall opens exactly the main ports: {cases['local']['firewall']}")

    print("ordering after local PostgreSQL, Kafka and Redis, which never stop a service")
    for service in SERVICES:
        unit = local[f"realchat-{service}"]
        wanted = []
        if service in ("auth", "messaging", "profile"):
            wanted.append("postgresql.target")
        if service != "gateway":
            wanted.append("apache-kafka.service")
        if service in ("delivery", "gateway"):
            wanted.append("redis-realchat.service")
        for dependency in LOCAL_DEPENDENCIES:
            expected = dependency in wanted
            check((dependency in unit["after"]) == expected, f"local: realchat-{service} after {dependency}: {expected}")
            check((dependency in unit["wants"]) == expected, f"local: realchat-{service} wants {dependency}: {expected}")
            for strong in ("requires", "bindsTo", "partOf"):
                check(dependency not in unit[strong], f"local: realchat-{service} {strong} {dependency} (would stop with it)")
        check("multi-user.target" in unit["wantedBy"], f"local: realchat-{service} starts at boot")

    print("hardening")
    for case in ("defaults", "local", "vmBackend", "vmDelivery"):
        for unit, data in cases[case]["units"].items():
            service = unit.removeprefix("realchat-")
            config = data["serviceConfig"]
            privileged = case == "local" and service == "gateway"
            check(config.get("ExecStart", "").endswith(f"/bin/{service}"), f"{case}: {unit} runs bin/{service}")
            check(config.get("DynamicUser") is True, f"{case}: {unit} DynamicUser")
            check(config.get("User") == unit, f"{case}: {unit} User={unit}")
            check(config.get("ProtectSystem") == "strict", f"{case}: {unit} ProtectSystem=strict")
            check(config.get("ProtectHome") is True, f"{case}: {unit} ProtectHome")
            check(config.get("NoNewPrivileges") is True, f"{case}: {unit} NoNewPrivileges")
            families = config.get("RestrictAddressFamilies")
            check(isinstance(families, list) and bool(families) and set(families) <= ALLOWED_FAMILIES, f"{case}: {unit} RestrictAddressFamilies={families}")
            check("@system-service" in (config.get("SystemCallFilter") or []), f"{case}: {unit} SystemCallFilter=@system-service")
            want_caps = ["CAP_NET_BIND_SERVICE"] if privileged else ""
            check(config.get("CapabilityBoundingSet") == want_caps, f"{case}: {unit} CapabilityBoundingSet={config.get('CapabilityBoundingSet')!r}")
            check(config.get("AmbientCapabilities") == want_caps, f"{case}: {unit} AmbientCapabilities={config.get('AmbientCapabilities')!r}")
            check(config.get("Restart") == "on-failure", f"{case}: {unit} Restart=on-failure")
            has_file = case == "local" and service == "auth"
            has_tls = case != "defaults"
            check(("EnvironmentFile" in config) == has_file, f"{case}: {unit} EnvironmentFile only when environmentFile is set")
            want_credentials = (["key-encryption-key"] if has_file else []) + (list(INTERNAL_TLS.values()) if has_tls else [])
            check(
                credential_names(config) == want_credentials,
                f"{case}: {unit} LoadCredential only for keyEncryptionKeyFile and internalTls: {config.get('LoadCredential')}",
            )
            check(
                any(name.endswith("_KEY_ENCRYPTION_KEY_FILE") for name in data["environment"]) == has_file,
                f"{case}: {unit} names a key-encryption key file only when keyEncryptionKeyFile is set",
            )
            check(
                all((name in data["environment"]) == has_tls for name in INTERNAL_TLS),
                f"{case}: {unit} names internal TLS files only when internalTls is set",
            )

    print("createLocalDatabase")
    postgresql = cases["local"]["postgresql"]
    check(postgresql["enable"] is True, "local: PostgreSQL enabled")
    check(sorted(postgresql["ensureDatabases"]) == ["auth", "chat_messages"], f"local: databases {postgresql['ensureDatabases']}")
    check(sorted(u["name"] for u in postgresql["ensureUsers"]) == ["realchat-auth", "realchat-messaging"], "local: one role per unit user")
    for database, role in (("auth", "realchat-auth"), ("chat_messages", "realchat-messaging")):
        check(f'ALTER DATABASE "{database}" OWNER TO "{role}"' in postgresql["setupScript"], f"local: {role} owns {database}")
    check(cases["defaults"]["postgresql"]["ensureDatabases"] == [], "defaults: no database without createLocalDatabase")

    print("Prometheus: one job per service of the host, labelled as the dashboards expect, and the repository's rules")
    rule_files = sorted(RULES.glob("*.yml"))
    check(bool(rule_files), f"{RULES} holds rule files")
    check(
        Path(facts["ruleFilesDirectory"]).resolve() == RULES.resolve(),
        f"the module reads the rules from {facts['ruleFilesDirectory']}, the repository's {RULES}",
    )
    for case in PROMETHEUS_CASES:
        prometheus = cases[case]["prometheus"]
        check(
            sorted(Path(path).resolve() for path in prometheus["ruleFiles"]) == [path.resolve() for path in rule_files],
            f"{case}: every rule file of dashboards/prometheus/rules, and only those: {prometheus['ruleFiles']}",
        )
        for job in prometheus["scrapeConfigs"]:
            if job["job_name"] in SERVICES:
                check(job["metrics_path"] == "/metrics", f"{case}: job {job['job_name']} scrapes /metrics")
                check(job.get("scheme") in (None, "http"), f"{case}: job {job['job_name']} scrapes over http")
                check(
                    isinstance(job["static_configs"], list) and len(job["static_configs"]) == 1,
                    f"{case}: job {job['job_name']} has one target group",
                )
    for case in ("defaults", "local", "vmBackend", "vmDelivery", "settingsConflict"):
        prometheus = cases[case]["prometheus"]
        check(
            prometheus["scrapeConfigs"] == [] and prometheus["ruleFiles"] == [] and prometheus["enable"] is False,
            f"{case}: without services.realchat.prometheus.enable, no job, no rule file, no Prometheus: {prometheus}",
        )

    # With nothing else set, the targets and job names of the repository's prometheus.yml.
    repository = repository_jobs()
    check(sorted(repository) == sorted(SERVICES), f"prometheus.yml has one job per service: {sorted(repository)}")
    jobs = scrape_jobs(cases["prometheusDefaults"])
    check(sorted(jobs) == sorted(SERVICES), f"prometheusDefaults: one job per service, named after it: {sorted(jobs)}")
    check(cases["prometheusDefaults"]["prometheus"]["enable"] is True, "prometheusDefaults: the operator's Prometheus stays on")
    for service in SERVICES:
        unit = cases["prometheusDefaults"]["units"][f"realchat-{service}"]
        want = [{"targets": [admin_address(unit)], "labels": {"instance": f"{service}-nixos"}}]
        check(jobs.get(service, {}).get("static_configs") == want, f"prometheusDefaults: job {service} scrapes its admin listener as {service}-nixos: {jobs.get(service)}")
        check(
            admin_address(unit) == repository.get(service),
            f"prometheusDefaults: job {service} has the target of prometheus.yml ({repository.get(service)})",
        )
        check(jobs.get(service, {}).get("scrape_interval") == "10s", f"prometheusDefaults: job {service} scrapes every 10 s, as prometheus.yml")

    # Addresses on every interface are scraped over loopback; the operator's instance label and
    # interval are used, and the operator's own jobs stay.
    jobs = scrape_jobs(cases["prometheus"])
    check(sorted(jobs) == sorted(SERVICES + ["node"]), f"prometheus: the services' jobs next to the operator's: {sorted(jobs)}")
    want_targets = {
        "gateway": ("127.0.0.1:9280", "gateway-chat1"),
        "delivery": ("[::1]:9184", "delivery-1"),
        "auth": ("10.0.0.1:9181", "auth-chat1"),
        "messaging": ("127.0.0.1:9182", "messaging-chat1"),
        "profile": ("127.0.0.1:9183", "profile-chat1"),
    }
    for service, (target, instance) in want_targets.items():
        want = [{"targets": [target], "labels": {"instance": instance}}]
        check(jobs.get(service, {}).get("static_configs") == want, f"prometheus: job {service} scrapes {target} as {instance}: {jobs.get(service)}")
        check(jobs.get(service, {}).get("scrape_interval") == "15s", f"prometheus: job {service} scrapes at scrapeInterval")
    units = cases["prometheus"]["units"]
    check(admin_address(units["realchat-gateway"]) == "0.0.0.0:9280", "prometheus: the gateway still listens on every address")
    check(admin_address(units["realchat-delivery"]) == "[::]:9184", "prometheus: delivery still listens on every IPv6 address")
    node = jobs.get("node", {})
    check(
        node.get("static_configs") == [{"targets": ["127.0.0.1:9100"], "labels": {}}] and node.get("scrape_interval") is None,
        f"prometheus: the operator's own job is left as it was: {node}",
    )

    jobs = scrape_jobs(cases["prometheusSomeServices"])
    check(sorted(jobs) == ["delivery", "gateway"], f"prometheusSomeServices: jobs only for the services of this host: {sorted(jobs)}")
    check(
        jobs.get("gateway", {}).get("static_configs") == [{"targets": ["127.0.0.1:9180"], "labels": {"instance": "gateway-edge"}}],
        "prometheusSomeServices: the instance label names the service and the host",
    )

    check(cases["prometheusWithoutServer"]["prometheus"]["enable"] is False, "prometheusWithoutServer: Prometheus is not turned on by the module")
    check(
        any("services.prometheus.enable" in warning for warning in cases["prometheusWithoutServer"]["warnings"]),
        f"prometheusWithoutServer: a warning says the jobs go unused: {cases['prometheusWithoutServer']['warnings']}",
    )
    for case, data in cases.items():
        if case != "prometheusWithoutServer":
            check(data["warnings"] == [], f"{case}: no warning: {data['warnings']}")

    # The topology test's backend: what topology.py expects of its Prometheus.
    backend_prometheus = cases["vmTopologyBackend"]["prometheus"]
    check(backend_prometheus["enable"] is True, "vmTopologyBackend: runs Prometheus")
    jobs = scrape_jobs(cases["vmTopologyBackend"])
    check(sorted(jobs) == ["auth", "gateway", "messaging", "profile"], f"vmTopologyBackend: a job per backend service: {sorted(jobs)}")
    for service, port in (("auth", 9181), ("gateway", 9180), ("messaging", 9182), ("profile", 9183)):
        want = [{"targets": [f"127.0.0.1:{port}"], "labels": {"instance": f"{service}-backend"}}]
        check(jobs.get(service, {}).get("static_configs") == want, f"vmTopologyBackend: job {service} scrapes 127.0.0.1:{port} as {service}-backend")

    print("option types refuse wrong values, and take right ones")
    for name, was_refused in facts["refused"].items():
        check(was_refused is True, f"refused: {name}")
    for name, was_accepted in facts["accepted"].items():
        check(was_accepted is True, f"accepted: {name}")

    print("assertions")
    for case, data in cases.items():
        messages = data["failedAssertions"]
        if case == "settingsConflict":
            check(any("REALCHAT_REDIS_URL" in m for m in messages), "settingsConflict: a typed variable in settings is refused")
            check(any("PATH" in m for m in messages), "settingsConflict: a non-REALCHAT variable in settings is refused")
            check(
                any("REALCHAT_AUTH_KEY_ENCRYPTION_KEY_FILE" in m for m in messages),
                "settingsConflict: the key-encryption key file goes through keyEncryptionKeyFile, not settings",
            )
            check(
                any("messaging.settings" in m and "REALCHAT_INTERNAL_TLS_KEY_FILE" in m for m in messages),
                "settingsConflict: the internal TLS files go through internalTls, not settings",
            )
            check(
                any("profile.settings" in m and re.search(r"\bREALCHAT_INTERNAL_TLS_KEY\b", m) for m in messages),
                "settingsConflict: an internal TLS key as PEM text stays out of settings (and the store)",
            )
        elif case == "databaseWithoutPostgres":
            check(any("createLocalDatabase" in m for m in messages), "databaseWithoutPostgres: refused")
        elif case == "internalTlsPartial":
            check(
                any("messaging.internalTls" in m and "keyFile" in m for m in messages),
                f"internalTlsPartial: a CA and a certificate without a key are refused: {messages}",
            )
        else:
            check(messages == [], f"{case}: no failed assertion: {messages}")

    print("the VM tests' machines")
    backend = cases["vmBackend"]["units"]
    check(sorted(backend) == ["realchat-auth", "realchat-gateway", "realchat-messaging", "realchat-profile"], f"backend runs {sorted(backend)}")
    check(
        backend["realchat-gateway"]["environment"]["REALCHAT_DELIVERY_ENDPOINTS"] == "ws://delivery1:8081,ws://delivery2:8081",
        "backend: the gateway knows both delivery replicas",
    )
    delivery = cases["vmDelivery"]["units"]["realchat-delivery"]["environment"]
    check(delivery["REALCHAT_DELIVERY_NODE_ID"] == "delivery1", "delivery1: its node id is its host name")
    check(delivery["REALCHAT_KAFKA_BROKERS"] == "backend:9092", "delivery1: brokers on the backend")
    vm_units = {**backend, **cases["vmDelivery"]["units"]}
    for unit, data in sorted(vm_units.items()):
        service = unit.removeprefix("realchat-")
        want = [
            f"internal-tls-ca:{VM_INTERNAL_TLS}/ca.pem",
            f"internal-tls-cert:{VM_INTERNAL_TLS}/{service}.pem",
            f"internal-tls-key:{VM_INTERNAL_TLS}/{service}.key",
        ]
        check(
            data["serviceConfig"].get("LoadCredential") == want,
            f"VM tests: {unit} calls and serves over mutual TLS with its own certificate, from outside the store",
        )
    # The machines copy their files out of the store (a mode other than `symlink`), the keys
    # readable by root alone.
    for case, services in (("vmBackend", ["auth", "profile", "messaging", "gateway"]), ("vmDelivery", ["delivery"])):
        etc = cases[case]["etc"]
        want_files = {"realchat/internal-tls/ca.pem": "0444"}
        for service in services:
            want_files[f"realchat/internal-tls/{service}.pem"] = "0444"
            want_files[f"realchat/internal-tls/{service}.key"] = "0400"
        got = {name: mode for name, mode in etc.items() if name.startswith("realchat/internal-tls/")}
        check(got == want_files, f"{case}: the internal TLS files are copies, the keys root's alone: {got}")

    total = passes + len(failures)
    if failures:
        print(f"module: {len(failures)} of {total} checks failed")
        sys.exit(1)
    print(f"module: all {total} checks passed")


if __name__ == "__main__":
    main()
