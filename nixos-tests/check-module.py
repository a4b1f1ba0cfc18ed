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
