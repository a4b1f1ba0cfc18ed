#!/usr/bin/env python3
"""docker-compose.yml, the Dockerfile and the Prometheus config against the code.

Run by compose/check.sh (with PyYAML installed):

    check_compose.py REPO_ROOT SETTINGS_DIR

SETTINGS_DIR holds `<binary>.json` for every service, as `<binary> settings` prints it
(`cargo xtask settings DIR` writes them). The local topology is read from
crates/xtask/src/topology.rs (its SERVICES table), the toolchain from rust-toolchain.toml and the
version from Cargo.toml, so none of them is written down twice.

What it checks, per service of the topology (auth, profile, messaging, delivery, gateway):
  - the environment the container gets (`environment` plus its `env_file`s) names only settings
    the binary reads, and gives every setting whose default points at this machine's loopback;
  - a setting the binary marks secret comes from an env_file, never inline in the compose file;
  - the listen and admin addresses are 0.0.0.0 on the topology's ports; every upstream the
    topology wires (`REALCHAT_<UPSTREAM>_ENDPOINT`, or `_ENDPOINTS` for delivery) points at that
    compose service on its port with its scheme, and the binary reads exactly those endpoints;
    Kafka, Redis and PostgreSQL settings point at the compose services (the database URL at the
    service's own database, with a role of its own);
  - `depends_on` is exactly its upstreams plus the infrastructure it uses, each with
    `condition: service_healthy`, and each of those has a health check;
  - its health check is `<binary> healthcheck` and it is built from the Dockerfile target of its
    name, which listens on the same ports, exposes them and runs the same health check;
  - published ports: the gateway's port, delivery's (for /v1/ws) and every admin port, on 127.0.0.1
    at the topology's numbers, so what works against `cargo xtask up` works against compose;
  - restart policies, named volumes for the data, the observability profile: Prometheus scraping
    exactly every service's admin port (job = service, instance = xtask's component name, as the
    dashboards expect) and Grafana mounting dashboards/ with the compose Prometheus as data source;
  - the Dockerfile's Rust version is rust-toolchain.toml's, its VERSION is Cargo.toml's, the
    runtime user is not root, and .dockerignore keeps target/ and .realchat/ out.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml

BINARIES = ["auth", "messaging", "profile", "delivery", "gateway"]
LOOPBACK = re.compile(r"(127\.0\.0\.1|localhost|\[::1\])")
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")
INFRA = {"kafka": "REALCHAT_KAFKA_BROKERS", "redis": "REALCHAT_REDIS_URL"}
BIN_DIR = "/usr/local/bin"


class Report:
    """Collects what passed and what failed, and prints both."""

    def __init__(self) -> None:
        self.failures = 0

    def check(self, what: str, problems: list[str]) -> None:
        if problems:
            self.failures += len(problems)
            print(f"FAILED: {what}")
            for problem in problems:
                print(f"  - {problem}")
        else:
            print(f"ok: {what}")


@dataclass(frozen=True)
class Spec:
    """One row of xtask's SERVICES table."""

    name: str
    env: str
    listen_var: str
    scheme: str
    port: int
    admin_port: int
    database: bool
    redis: bool
    upstreams: tuple[str, ...]
    # None for `Replicas::One`, else (first, stride, callers_see_all).
    replicas: tuple[int, int, bool] | None

    def first_port(self) -> int:
        """Port of the only instance, or of replica 1 (the one compose runs)."""
        return self.port + (self.replicas[0] if self.replicas else 0)

    def first_admin_port(self) -> int:
        return self.admin_port + (self.replicas[0] if self.replicas else 0)

    def endpoint_var(self) -> str:
        """How callers are told where it is: every replica, or only the first."""
        if self.replicas and self.replicas[2]:
            return f"REALCHAT_{self.env}_ENDPOINTS"
        return f"REALCHAT_{self.env}_ENDPOINT"


def read_topology(path: Path) -> dict[str, Spec]:
    """Parses the SERVICES table of crates/xtask/src/topology.rs; fails loudly on a shape it does
    not know rather than checking against half a table."""
    text = path.read_text()
    table = re.search(r"pub\(crate\) const SERVICES: &\[ServiceSpec\] = &\[(.*?)\n\];", text, re.S)
    if not table:
        raise SystemExit(f"{path}: no SERVICES table found")
    specs: dict[str, Spec] = {}
    for block in re.findall(r"ServiceSpec \{(.*?)\n    \},", table.group(1), re.S):
        body = re.sub(r"//[^\n]*", "", block)

        def field(name: str, pattern: str) -> str:
            found = re.search(rf"\b{name}:\s*{pattern}", body, re.S)
            if not found:
                raise SystemExit(f"{path}: a ServiceSpec without a readable `{name}`:\n{block}")
            return found.group(1)

        replicas_text = field("replicas", r"(Replicas::One|Replicas::Many\s*\{.*?\})")
        replicas = None
        if replicas_text != "Replicas::One":
            many = re.search(
                r"first:\s*(\d+),\s*stride:\s*(\d+),\s*callers_see_all:\s*(true|false)", replicas_text
            )
            if not many:
                raise SystemExit(f"{path}: cannot read {replicas_text}")
            replicas = (int(many.group(1)), int(many.group(2)), many.group(3) == "true")
        spec = Spec(
            name=field("name", r'"([^"]+)"'),
            env=field("env", r'"([^"]+)"'),
            listen_var=field("listen_var", r'"([^"]+)"'),
            scheme=field("scheme", r'"([^"]+)"'),
            port=int(field("port", r"(\d+)")),
            admin_port=int(field("admin_port", r"(\d+)")),
            database=field("database", r"(true|false)") == "true",
            redis=field("redis", r"(true|false)") == "true",
            upstreams=tuple(re.findall(r'"([^"]+)"', field("upstreams", r"&\[(.*?)\]"))),
            replicas=replicas,
        )
        specs[spec.name] = spec
    if sorted(specs) != sorted(BINARIES):
        raise SystemExit(f"{path}: expected the services {BINARIES}, found {sorted(specs)}")
    return specs


def resolve(value: str) -> str:
    """A compose value with `${VAR:-default}` replaced by its default (the checks look at what
    compose runs with nothing set on the host)."""
    return INTERPOLATION.sub(lambda m: m.group(2) or "", value)


def read_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise SystemExit(f"{path}: not NAME=value: {line!r}")
        env[name.strip()] = value.strip()
    return env


def env_files(root: Path, service: dict) -> list[Path]:
    files = service.get("env_file") or []
    if isinstance(files, str):
        files = [files]
    return [root / resolve(f if isinstance(f, str) else f["path"]) for f in files]


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def host_port(address: str) -> tuple[str, int] | None:
    host, _, port = address.rpartition(":")
    return (host, int(port)) if port.isdigit() else None


def dockerfile_stages(text: str) -> dict[str, list[str]]:
    """Instructions (continuation lines joined, comments dropped) per named stage."""
    joined = re.sub(r"\\\n", " ", "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#")))
    stages: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in joined.splitlines():
        line = line.strip()
        if not line:
            continue
        start = re.match(r"FROM\s+\S+(?:\s+AS\s+(\S+))?", line, re.I)
        if start:
            current = stages.setdefault(start.group(1) or f"stage{len(stages)}", [])
        if current is not None:
            current.append(line)
    return stages


def main() -> int:
    root = Path(sys.argv[1]).resolve()
    settings_dir = Path(sys.argv[2])
    report = Report()

    specs = read_topology(root / "crates/xtask/src/topology.rs")
    settings = {
        b: {s["name"]: s for s in json.loads((settings_dir / f"{b}.json").read_text())["settings"]}
        for b in BINARIES
    }
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())
    services: dict[str, dict] = compose.get("services") or {}
    named_volumes = set((compose.get("volumes") or {}).keys())

    # The broker's address for the compose network: its advertised INTERNAL listener.
    kafka_env = environment(services.get("kafka", {}))
    advertised = dict(
        (item.split("://", 1) + [""])[:2] for item in kafka_env.get("KAFKA_ADVERTISED_LISTENERS", "").split(",") if item
    )
    kafka_internal = advertised.get(kafka_env.get("KAFKA_INTER_BROKER_LISTENER_NAME", "INTERNAL"), "")

    report.check(
        "every service of the topology, and the infrastructure, is a compose service",
        [f"no compose service `{name}`" for name in [*BINARIES, "postgres", "redis", "kafka"] if name not in services],
    )

    for name, spec in specs.items():
        service = services.get(name)
        if service is None:
            continue
        reads = settings[name]
        inline = environment(service)
        from_files: dict[str, str] = {}
        file_problems: list[str] = []
        for path in env_files(root, service):
            if not path.is_file():
                file_problems.append(f"env_file {path.relative_to(root)} does not exist")
                continue
            for key, value in read_env_file(path).items():
                if key in inline:
                    file_problems.append(f"{key} is both inline and in {path.name}")
                from_files[key] = value
        env = {**{k: resolve(v) for k, v in inline.items()}, **from_files}

        problems = list(file_problems)
        problems += [f"{var} is set but `{name} settings` does not list it" for var in env if var not in reads]
        problems += [
            f"{var} defaults to {s['default']!r} (this machine's loopback) and is not set"
            for var, s in reads.items()
            if s["default"] and LOOPBACK.search(s["default"]) and var not in env
        ]
        problems += [
            f"{var} is marked secret but given inline in docker-compose.yml (use its env_file)"
            for var in inline
            if var in reads and reads[var]["secret"]
        ]
        problems += [
            f"{var} still points at loopback: {value!r}" for var, value in env.items() if LOOPBACK.search(value)
        ]
        report.check(f"{name}: its environment is what `{name} settings` reads, secrets from env_file", problems)

        # Addresses and wiring, as `cargo xtask up` runs replica 1 of each service.
        problems = []
        admin_var = f"REALCHAT_{spec.env}_ADMIN_ADDR"
        for var, port in [(spec.listen_var, spec.first_port()), (admin_var, spec.first_admin_port())]:
            if env.get(var) != f"0.0.0.0:{port}":
                problems.append(f"{var} is {env.get(var)!r}, expected '0.0.0.0:{port}' (topology port)")
        if spec.replicas and spec.replicas[2]:
            node = f"REALCHAT_{spec.env}_NODE_ID"
            if env.get(node) != f"{name}-1":
                problems.append(f"{node} is {env.get(node)!r}, expected '{name}-1' as the topology names replica 1")
        endpoint_vars = {v for v in reads if re.fullmatch(r"REALCHAT_[A-Z]+_ENDPOINTS?", v)}
        wired = {specs[u].endpoint_var() for u in spec.upstreams}
        if endpoint_vars != wired:
            problems.append(
                f"the binary reads endpoints {sorted(endpoint_vars)} but the topology wires {sorted(wired)}"
            )
        for upstream in spec.upstreams:
            up = specs[upstream]
            want = f"{up.scheme}://{upstream}:{up.first_port()}"
            if env.get(up.endpoint_var()) != want:
                problems.append(f"{up.endpoint_var()} is {env.get(up.endpoint_var())!r}, expected {want!r}")
        uses = set()
        if "REALCHAT_KAFKA_BROKERS" in reads:
            uses.add("kafka")
            if env.get("REALCHAT_KAFKA_BROKERS") != kafka_internal:
                problems.append(
                    f"REALCHAT_KAFKA_BROKERS is {env.get('REALCHAT_KAFKA_BROKERS')!r}, "
                    f"expected the broker's internal listener {kafka_internal!r}"
                )
        if spec.redis:
            uses.add("redis")
            if urlsplit(env.get("REALCHAT_REDIS_URL", "")).hostname != "redis":
                problems.append(f"REALCHAT_REDIS_URL ({env.get('REALCHAT_REDIS_URL', 'unset')!r}) is not the `redis` service")
        elif "REALCHAT_REDIS_URL" in env:
            problems.append("REALCHAT_REDIS_URL is set, but the topology gives this service no Redis")
        db_var = f"REALCHAT_{spec.env}_DATABASE_URL"
        if spec.database:
            uses.add("postgres")
            url = urlsplit(env.get(db_var, ""))
            if url.hostname != "postgres" or url.path != f"/{name}" or url.username != name:
                problems.append(f"{db_var} must be postgres://{name}:<password>@postgres:5432/{name} (its own role and database)")
            postgres_files = {p.name for p in env_files(root, services.get("postgres", {}))}
            if not any(p.name in postgres_files for p in env_files(root, service) if db_var in read_env_file(p)):
                problems.append(f"the postgres service does not get the env_file with {db_var} (its init script creates the role)")
        elif db_var in env:
            problems.append(f"{db_var} is set, but the topology gives this service no database")
        report.check(f"{name}: listens on the topology's ports, wired to {', '.join(spec.upstreams) or 'no other service'}", problems)

        # Start order and health.
        problems = []
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            problems.append("depends_on is a list: every dependency needs `condition: service_healthy`")
            depends = {d: {} for d in depends}
        want_deps = set(spec.upstreams) | uses
        if set(depends) != want_deps:
            problems.append(f"depends_on {sorted(depends)}, expected {sorted(want_deps)} (upstreams and infrastructure)")
        for dep, how in depends.items():
            if (how or {}).get("condition") != "service_healthy":
                problems.append(f"depends_on {dep} without condition: service_healthy")
            if not (services.get(dep) or {}).get("healthcheck", {}).get("test"):
                problems.append(f"{dep} has no health check, so service_healthy would never hold")
        test = (service.get("healthcheck") or {}).get("test")
        if test != ["CMD", f"{BIN_DIR}/{name}", "healthcheck"]:
            problems.append(f"healthcheck test is {test!r}, expected ['CMD', '{BIN_DIR}/{name}', 'healthcheck']")
        if service.get("restart") not in ("unless-stopped", "always", "on-failure"):
            problems.append(f"restart is {service.get('restart')!r}")
        build = service.get("build") or {}
        if not isinstance(build, dict) or build.get("target") != name or build.get("context") not in (".", "./"):
            problems.append(f"build must be context `.` with target `{name}`, got {build!r}")
        elif build.get("dockerfile", "Dockerfile") != "Dockerfile":
            problems.append(f"build.dockerfile is {build.get('dockerfile')!r}")
        report.check(f"{name}: depends on {', '.join(sorted(want_deps))} being healthy; `{name} healthcheck`; built from target {name}", problems)

    # Published ports: what `cargo xtask up` serves to clients on 127.0.0.1.
    problems = []
    published = {
        "gateway": specs["gateway"].first_port(),
        "delivery": specs["delivery"].first_port(),
    }
    for name, port in published.items():
        ports = [str(p) for p in (services.get(name) or {}).get("ports") or []]
        if f"127.0.0.1:{port}:{port}" not in ports:
            problems.append(f"{name} must publish 127.0.0.1:{port}:{port} (topology port), has {ports}")
    for name in BINARIES:
        port = specs[name].first_admin_port()
        ports = [str(p) for p in (services.get(name) or {}).get("ports") or []]
        if f"127.0.0.1:{port}:{port}" not in ports:
            problems.append(f"{name} must publish its admin port 127.0.0.1:{port}:{port}, has {ports}")
    for name, service in services.items():
        for p in service.get("ports") or []:
            if not str(p).startswith("127.0.0.1:"):
                problems.append(f"{name} publishes {p} on every interface; bind 127.0.0.1")
    report.check("published on 127.0.0.1 at the topology's ports: gateway, delivery (for /v1/ws), every admin port; nothing on public interfaces", problems)

    # Infrastructure: health checks, data on named volumes, the broker's listeners.
    problems = []
    for name, path in [("postgres", "/var/lib/postgresql"), ("redis", "/data"), ("kafka", "/var/lib/kafka/data")]:
        service = services.get(name) or {}
        if not (service.get("healthcheck") or {}).get("test"):
            problems.append(f"{name} has no health check")
        if service.get("restart") not in ("unless-stopped", "always"):
            problems.append(f"{name}: restart is {service.get('restart')!r}")
        mounts = [str(v) for v in service.get("volumes") or []]
        if not any(m.split(":")[0] in named_volumes and m.split(":")[1] == path for m in mounts):
            problems.append(f"{name} does not keep {path} on a named volume")
    if not kafka_internal.startswith("kafka:"):
        problems.append(f"the broker's internal advertised listener is {kafka_internal!r}, expected kafka:<port>")
    if "controller" not in kafka_env.get("KAFKA_PROCESS_ROLES", "") or "ZOOKEEPER" in " ".join(kafka_env):
        problems.append("the broker must run in KRaft mode (process roles broker,controller; no ZooKeeper)")
    if not str((services.get("kafka") or {}).get("image", "")).startswith("apache/kafka:"):
        problems.append("the broker must be the official apache/kafka image")
    if str(kafka_env.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "")).lower() != "false":
        problems.append("KAFKA_AUTO_CREATE_TOPICS_ENABLE must be false (topics come from the services)")
    for name in BINARIES:
        reads = settings[name]
        create = reads.get("REALCHAT_KAFKA_CREATE_TOPICS")
        if create and environment(services.get(name, {})).get("REALCHAT_KAFKA_CREATE_TOPICS", create["default"]) != "true":
            problems.append(f"{name} does not create the topics, and nothing else does")
    init = root / "compose/postgres/init-databases.sh"
    mounts = [str(v) for v in (services.get("postgres") or {}).get("volumes") or []]
    if not init.is_file() or not any(m.startswith("./compose/postgres/init-databases.sh:/docker-entrypoint-initdb.d/") for m in mounts):
        problems.append("postgres must mount compose/postgres/init-databases.sh into /docker-entrypoint-initdb.d/")
    report.check("postgres, redis and kafka (KRaft) healthy, on named volumes; topics created by the services", problems)

    # Observability: Prometheus and Grafana in their profile; Prometheus scrapes every admin port
    # with the job and instance labels the dashboards select on; Grafana mounts dashboards/.
    problems = []
    observability = ["prometheus", "grafana"]
    for name in observability:
        if (services.get(name) or {}).get("profiles") != ["observability"]:
            problems.append(f"{name} profiles are {(services.get(name) or {}).get('profiles')!r}, expected ['observability']")
    config = yaml.safe_load((root / "compose/prometheus/prometheus.yml").read_text())
    scraped = {
        (job.get("job_name"), target, (sc.get("labels") or {}).get("instance"))
        for job in config.get("scrape_configs", [])
        for sc in job.get("static_configs", [])
        for target in sc.get("targets", [])
    }
    # Component names as xtask gives them: `<name>` for one instance, `<name>-1` for replica 1.
    want = {
        (n, f"{n}:{specs[n].first_admin_port()}", f"{n}-1" if specs[n].replicas else n) for n in BINARIES
    }
    if scraped != want:
        problems.append(f"scrape targets (job, target, instance) {sorted(scraped)}, expected {sorted(want)}")
    grafana = services.get("grafana") or {}
    for mount in grafana.get("volumes") or []:
        source = str(mount).split(":")[0]
        if source.startswith(".") and not (root / source).exists():
            problems.append(f"grafana mounts {source}, which does not exist")
    if not any(str(m).startswith("./dashboards/grafana/dashboards:") for m in grafana.get("volumes") or []):
        problems.append("grafana does not mount the dashboards of dashboards/grafana/dashboards")
    if ((grafana.get("depends_on") or {}).get("prometheus") or {}).get("condition") != "service_healthy":
        problems.append("grafana does not wait for a healthy prometheus")
    datasource = yaml.safe_load((root / "compose/grafana/datasource.yml").read_text())
    urls = [d.get("url") for d in datasource.get("datasources", [])]
    if urls != ["http://prometheus:9090"]:
        problems.append(f"grafana's data source is {urls}, expected the compose Prometheus http://prometheus:9090")
    others = [n for n, s in services.items() if s.get("profiles") and n not in observability]
    if others:
        problems.append(f"services outside the default set: {others}")
    report.check("Prometheus and Grafana (profile observability): every admin port, labelled as the dashboards expect", problems)

    # The Dockerfile's service stages and build settings.
    problems = []
    dockerfile = (root / "Dockerfile").read_text()
    stages = dockerfile_stages(dockerfile)
    toolchain = tomllib.loads((root / "rust-toolchain.toml").read_text())["toolchain"]["channel"]
    version = tomllib.loads((root / "Cargo.toml").read_text())["workspace"]["package"]["version"]
    if not re.search(rf"^ARG RUST_VERSION={re.escape(toolchain)}$", dockerfile, re.M):
        problems.append(f"ARG RUST_VERSION must be rust-toolchain.toml's {toolchain}")
    if not re.search(r"^COPY rust-toolchain\.toml", dockerfile, re.M):
        problems.append("the build stage must copy rust-toolchain.toml (the toolchain comes from it)")
    if not re.search(rf"^ARG VERSION={re.escape(version)}$", dockerfile, re.M):
        problems.append(f"ARG VERSION must be Cargo.toml's {version}")
    for label in ["source", "revision", "version"]:
        if f"org.opencontainers.image.{label}=" not in dockerfile:
            problems.append(f"no org.opencontainers.image.{label} label")
    runtime = stages.get("runtime", [])
    users = [l.split()[1] for l in runtime if l.upper().startswith("USER ")]
    if not users or users[-1].split(":")[0] in ("0", "root"):
        problems.append(f"the runtime stage runs as {users[-1] if users else 'root'}")
    if "cargo chef cook" not in dockerfile:
        problems.append("dependencies are not cooked in a layer of their own (cargo chef cook)")
    for name in BINARIES:
        spec = specs[name]
        stage = stages.get(name)
        if stage is None:
            problems.append(f"no stage `FROM runtime AS {name}`")
            continue
        text = "\n".join(stage)
        if not stage[0].split()[1] == "runtime":
            problems.append(f"stage {name} is not built on `runtime`")
        exposed = {int(p.split("/")[0]) for l in stage if l.upper().startswith("EXPOSE ") for p in l.split()[1:]}
        if exposed != {spec.first_port(), spec.first_admin_port()}:
            problems.append(f"stage {name} exposes {sorted(exposed)}, expected {[spec.first_port(), spec.first_admin_port()]}")
        for var, port in [(spec.listen_var, spec.first_port()), (f"REALCHAT_{spec.env}_ADMIN_ADDR", spec.first_admin_port())]:
            if f"{var}=0.0.0.0:{port}" not in text:
                problems.append(f"stage {name} does not set {var}=0.0.0.0:{port}")
        if f'CMD ["{BIN_DIR}/{name}", "healthcheck"]' not in text or "HEALTHCHECK" not in text:
            problems.append(f"stage {name} has no HEALTHCHECK running `{BIN_DIR}/{name} healthcheck`")
        if f'ENTRYPOINT ["{BIN_DIR}/{name}"]' not in text:
            problems.append(f"stage {name} does not run {BIN_DIR}/{name}")
    ignore = {l.strip().rstrip("/") for l in (root / ".dockerignore").read_text().splitlines()}
    for path in ["target", ".realchat", ".git"]:
        if path not in ignore:
            problems.append(f".dockerignore does not keep {path}/ out of the build context")
    report.check("Dockerfile: toolchain, version, labels, non-root runtime, one stage per service on its ports", problems)

    print()
    if report.failures:
        print(f"check_compose.py: {report.failures} problem(s)")
        return 1
    print("check_compose.py: docker-compose.yml, the Dockerfile and Prometheus agree with the topology and the settings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
