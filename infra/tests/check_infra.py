#!/usr/bin/env python3
"""Structure and settings checks of the Terraform tree under infra/.

Run by infra/check.sh (with python-hcl2 installed):

    check_infra.py INFRA_DIR                 check everything; exit 1 on any failure
    check_infra.py --tables MODULE_DIR       print the README's Inputs and Outputs tables

What it checks:
  - every module (modules/network, postgres, kafka, redis, services) and example (examples/complete)
    exists and has versions.tf, variables.tf, outputs.tf and README.md;
  - every variable has a type and a non-empty description, every output a description;
  - versions.tf pins Terraform and every provider the module uses (a source and a version with an
    upper bound), and only the example configures providers;
  - each README has an Inputs table naming exactly the module's variables and an Outputs table
    naming exactly its outputs;
  - the settings of every container that runs a RealChat binary (modules/services/settings.tf)
    against what that binary reads, from the JSON it prints with `<binary> settings`, one file per
    binary in REALCHAT_SETTINGS_DIR: each name must be read by the binary, a secret setting must
    come from `secrets` and never from `environment`, and a service must be given every setting
    whose default only works on one machine (a loopback address); the task definitions must be
    built from settings.tf, the only file that names REALCHAT_* variables.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import hcl2

MODULES = ["network", "postgres", "kafka", "redis", "services"]
EXAMPLES = ["complete"]
REQUIRED_FILES = ["versions.tf", "variables.tf", "outputs.tf", "README.md"]
BINARIES = ["auth", "messaging", "profile", "delivery", "gateway"]
# Resource types that need no provider: Terraform's own.
BUILTIN_PREFIXES = {"terraform"}
LOOPBACK = re.compile(r"(127\.0\.0\.1|localhost|\[::1\])")
# A setting given somewhere: an HCL key (`REALCHAT_X = ...`) or a quoted name (`name = "REALCHAT_X"`);
# prose that mentions a setting is fine.
SETTING_GIVEN = re.compile(r'(?m)^\s*((?:REALCHAT|OTEL)_[A-Z0-9_]+)\s*=|"((?:REALCHAT|OTEL)_[A-Z0-9_]+)"')
UPPER_BOUND = re.compile(r"(~>|<|^\s*=?\s*v?\d+\.\d+\.\d+\s*$)")


class Report:
    """Collects what passed and what failed, and prints both."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def check(self, what: str, problems: list[str]) -> None:
        if problems:
            self.failures.extend(problems)
            print(f"FAILED: {what}")
            for problem in problems:
                print(f"  - {problem}")
        else:
            print(f"ok: {what}")


def unquote(value):
    """python-hcl2 keeps the quotes of string literals and block labels; drop them."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return value[1:-1].replace('\\"', '"')
    return value


def is_literal(value) -> bool:
    """Whether an attribute value is a literal string without interpolation."""
    return isinstance(value, str) and value.startswith('"') and "${" not in value


def load(path: Path) -> dict:
    with path.open() as handle:
        return hcl2.load(handle)


def tf_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.tf"))


def blocks(directory: Path, kind: str) -> list[tuple[Path, str, dict]]:
    """Every `kind "name" {...}` block (variable, output) of a module: (file, name, body)."""
    found = []
    for path in tf_files(directory):
        for entry in load(path).get(kind, []):
            for name, body in entry.items():
                if not name.startswith("__"):
                    found.append((path, unquote(name), body))
    return found


def typed_blocks(directory: Path, kind: str) -> list[tuple[Path, str, str]]:
    """Every resource or data block: (file, type, name)."""
    found = []
    for path in tf_files(directory):
        for entry in load(path).get(kind, []):
            for rtype, named in entry.items():
                if rtype.startswith("__"):
                    continue
                for name in named:
                    if not name.startswith("__"):
                        found.append((path, unquote(rtype), unquote(name)))
    return found


# --- layout, variables, outputs, providers ------------------------------------------------------------


def module_dirs(infra: Path) -> list[Path]:
    return [infra / "modules" / name for name in MODULES] + [infra / "examples" / name for name in EXAMPLES]


def check_layout(infra: Path, report: Report) -> None:
    problems = []
    for directory in module_dirs(infra):
        if not directory.is_dir():
            problems.append(f"{directory.relative_to(infra)} is missing")
            continue
        for required in REQUIRED_FILES:
            if not (directory / required).is_file():
                problems.append(f"{directory.relative_to(infra)} lacks {required}")
    # A module someone adds later must follow the same layout.
    for parent in ("modules", "examples"):
        for directory in sorted((infra / parent).glob("*")):
            if directory.is_dir() and directory not in module_dirs(infra):
                for required in REQUIRED_FILES:
                    if not (directory / required).is_file():
                        problems.append(f"{directory.relative_to(infra)} lacks {required}")
    report.check("every module and example has versions.tf, variables.tf, outputs.tf and README.md", problems)


def check_variables_and_outputs(infra: Path, report: Report) -> None:
    problems = []
    count = 0
    for directory in module_dirs(infra):
        where = directory.relative_to(infra)
        for path, name, body in blocks(directory, "variable"):
            count += 1
            if "type" not in body:
                problems.append(f"{where}: variable {name} ({path.name}) has no type")
            description = unquote(body.get("description", ""))
            if not isinstance(description, str) or not description.strip():
                problems.append(f"{where}: variable {name} ({path.name}) has no description")
            if path.name != "variables.tf":
                problems.append(f"{where}: variable {name} is declared in {path.name}, not variables.tf")
        for path, name, body in blocks(directory, "output"):
            description = unquote(body.get("description", ""))
            if not isinstance(description, str) or not description.strip():
                problems.append(f"{where}: output {name} ({path.name}) has no description")
            if path.name != "outputs.tf":
                problems.append(f"{where}: output {name} is declared in {path.name}, not outputs.tf")
    report.check(f"all {count} variables have a type and a description; every output has a description", problems)


def check_providers(infra: Path, report: Report) -> None:
    problems = []
    for directory in module_dirs(infra):
        where = directory.relative_to(infra)
        versions = directory / "versions.tf"
        if not versions.is_file():
            continue
        terraform = (load(versions).get("terraform") or [{}])[0]
        if not unquote(terraform.get("required_version", "")):
            problems.append(f"{where}: versions.tf does not pin required_version")
        declared = {}
        for entry in terraform.get("required_providers", []):
            for name, spec in entry.items():
                if not name.startswith("__"):
                    declared[name] = spec
        for name, spec in declared.items():
            source = unquote(spec.get("source", "")) if isinstance(spec, dict) else ""
            version = unquote(spec.get("version", "")) if isinstance(spec, dict) else ""
            if not re.fullmatch(r"[a-z0-9-]+/[a-z0-9-]+", source or ""):
                problems.append(f"{where}: provider {name} has no source")
            if not version:
                problems.append(f"{where}: provider {name} is not pinned (no version)")
            elif not UPPER_BOUND.search(version):
                problems.append(f"{where}: provider {name} version {version!r} has no upper bound (use ~> or <)")
        used = {rtype.split("_", 1)[0] for kind in ("resource", "data") for _, rtype, _ in typed_blocks(directory, kind)}
        for provider in sorted(used - BUILTIN_PREFIXES - set(declared)):
            problems.append(f"{where}: uses {provider}_* resources without declaring {provider} in required_providers")
        is_module = directory.parent.name == "modules"
        if is_module:
            for path in tf_files(directory):
                if load(path).get("provider"):
                    problems.append(f"{where}: {path.name} configures a provider; only the root module may")
    report.check("versions.tf pins Terraform and every provider each module uses, with an upper bound", problems)


# --- README tables ------------------------------------------------------------------------------------


def plain(value):
    """A default value without python-hcl2's quotes, at any depth."""
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {unquote(key): plain(item) for key, item in value.items() if not str(key).startswith("__")}
    return unquote(value)


def short(value, limit: int = 60) -> str:
    value = plain(value) if isinstance(value, (list, dict)) else value
    if isinstance(value, str):
        value = unquote(value)
        if value.startswith("${") and value.endswith("}"):
            value = value[2:-1]
            text = value
        else:
            text = json.dumps(value)
    else:
        text = json.dumps(value, default=str)
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else "see variables.tf"


def type_text(value) -> str:
    value = unquote(value)
    if isinstance(value, str) and value.startswith("${") and value.endswith("}"):
        value = value[2:-1]
    text = re.sub(r"\s+", " ", str(value))
    return text if len(text) <= 60 else text[:57] + "..."


def tables(directory: Path) -> str:
    lines = ["## Inputs", "", "| name | type | default | description |", "|---|---|---|---|"]
    for _, name, body in sorted(blocks(directory, "variable"), key=lambda b: ("default" in b[2], b[1])):
        default = short(body["default"]) if "default" in body else "required"
        description = unquote(body.get("description", "")).replace("|", "\\|")
        lines.append(f"| `{name}` | `{type_text(body.get('type', ''))}` | {default if default == 'required' else '`' + default + '`'} | {description} |")
    lines += ["", "## Outputs", "", "| name | description |", "|---|---|"]
    for _, name, body in sorted(blocks(directory, "output"), key=lambda b: b[1]):
        description = unquote(body.get("description", "")).replace("|", "\\|")
        lines.append(f"| `{name}` | {description} |")
    return "\n".join(lines) + "\n"


def table_names(readme: str, heading: str) -> set[str]:
    """Names in the first column of the table under `## heading`."""
    section = re.search(rf"^## {heading}\s*$(.*?)(?=^## |\Z)", readme, re.M | re.S)
    if not section:
        return set()
    return set(re.findall(r"^\|\s*`([A-Za-z0-9_]+)`\s*\|", section.group(1), re.M))


def check_readmes(infra: Path, report: Report) -> None:
    problems = []
    for directory in module_dirs(infra):
        where = directory.relative_to(infra)
        readme_path = directory / "README.md"
        if not readme_path.is_file():
            continue
        readme = readme_path.read_text()
        for heading, kind in (("Inputs", "variable"), ("Outputs", "output")):
            declared = {name for _, name, _ in blocks(directory, kind)}
            listed = table_names(readme, heading)
            if not listed and declared:
                problems.append(f"{where}/README.md has no `## {heading}` table")
                continue
            for name in sorted(declared - listed):
                problems.append(f"{where}/README.md: {kind} {name} is missing from the {heading} table")
            for name in sorted(listed - declared):
                problems.append(f"{where}/README.md: the {heading} table lists {name}, which is not a {kind}")
    report.check("every README has Inputs and Outputs tables naming exactly the module's variables and outputs", problems)


# --- settings against the binaries ---------------------------------------------------------------------


def load_binary_settings(settings_dir: Path, problems: list[str]) -> dict[str, dict[str, dict]]:
    """{binary: {name: {"default": ..., "secret": bool, "help": str}}} from `<binary> settings` output."""
    read = {}
    for binary in BINARIES:
        path = settings_dir / f"{binary}.json"
        if not path.is_file():
            problems.append(f"{path} is missing (the output of `{binary} settings`)")
            continue
        try:
            document = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            problems.append(f"{path}: not JSON ({error})")
            continue
        if not isinstance(document, dict) or document.get("binary") != binary or not isinstance(document.get("settings"), list):
            problems.append(f'{path}: expected {{"binary": "{binary}", "settings": [...]}}')
            continue
        settings = {}
        for setting in document["settings"]:
            if (
                not isinstance(setting, dict)
                or not isinstance(setting.get("name"), str)
                or not (setting.get("default") is None or isinstance(setting.get("default"), str))
                or not isinstance(setting.get("secret"), bool)
                or not isinstance(setting.get("help"), str)
            ):
                problems.append(f"{path}: a setting is not {{name: str, default: str|null, secret: bool, help: str}}: {setting!r}")
                continue
            if setting["name"] in settings:
                problems.append(f"{path}: {setting['name']} is listed twice")
            settings[setting["name"]] = setting
        if not settings:
            problems.append(f"{path}: lists no settings")
        read[binary] = settings
    return read


def containers(infra: Path, problems: list[str]) -> dict[str, dict]:
    """The `settings` local of the services module: {container: {binary, role, environment, secrets}}."""
    path = infra / "modules" / "services" / "settings.tf"
    if not path.is_file():
        problems.append(f"{path.relative_to(infra)} is missing")
        return {}
    settings = None
    for entry in load(path).get("locals", []):
        if "settings" in entry:
            settings = entry["settings"]
    if not isinstance(settings, dict):
        problems.append(f"{path.relative_to(infra)} has no `settings` local")
        return {}
    result = {}
    for name, spec in settings.items():
        name = unquote(name)
        if not isinstance(spec, dict):
            problems.append(f"settings.tf: {name} is not an object")
            continue
        entry = {
            "binary": unquote(spec.get("binary")),
            "role": unquote(spec.get("role")),
            "environment": {unquote(k): v for k, v in (spec.get("environment") or {}).items() if not k.startswith("__")},
            "secrets": {unquote(k): v for k, v in (spec.get("secrets") or {}).items() if not k.startswith("__")},
        }
        if entry["binary"] not in BINARIES:
            problems.append(f"settings.tf: {name} runs {entry['binary']!r}, not one of {', '.join(BINARIES)}")
        if entry["role"] not in ("service", "migrate"):
            problems.append(f"settings.tf: {name} has role {entry['role']!r}, not service or migrate")
        result[name] = entry
    return result


def check_settings(infra: Path, settings_dir: str | None, report: Report) -> None:
    problems: list[str] = []
    if not settings_dir:
        report.check(
            "task definitions set exactly what the binaries read",
            ["REALCHAT_SETTINGS_DIR is not set: point it at a directory holding <binary>.json, the output of "
             "`<binary> settings` for " + ", ".join(BINARIES) + " (cargo xtask test does this)"],
        )
        return
    read = load_binary_settings(Path(settings_dir), problems)
    given = containers(infra, problems)
    if problems:
        report.check("task definitions set exactly what the binaries read", problems)
        return

    for binary in BINARIES:
        if not any(spec["binary"] == binary and spec["role"] == "service" for spec in given.values()):
            problems.append(f"settings.tf runs no {binary} service")

    checked = 0
    for name, spec in sorted(given.items()):
        reads = read[spec["binary"]]
        environment, secrets = spec["environment"], spec["secrets"]
        for variable in sorted(set(environment) | set(secrets)):
            checked += 1
            if variable not in reads:
                problems.append(f"{name}: sets {variable}, which `{spec['binary']} settings` does not list")
        for variable in sorted(set(environment) & set(secrets)):
            problems.append(f"{name}: {variable} is in both environment and secrets")
        for variable in sorted(environment):
            if reads.get(variable, {}).get("secret"):
                problems.append(f"{name}: {variable} is secret but set in plain environment; take it from secrets")
        for variable, value in sorted(secrets.items()):
            if is_literal(value) and not unquote(value).startswith("arn:"):
                problems.append(f"{name}: secrets[{variable}] is the literal {value}, not a Secrets Manager ARN")
        if spec["role"] == "service":
            for variable, setting in sorted(reads.items()):
                default = setting.get("default")
                if default is not None and LOOPBACK.search(default) and variable not in environment and variable not in secrets:
                    problems.append(f"{name}: does not set {variable}, whose default ({'<secret>' if setting['secret'] else default}) only works on one machine")

    # The task definitions must be built from settings.tf, and nothing else may name a setting.
    services_dir = infra / "modules" / "services"
    for file_name in ("main.tf", "bootstrap.tf"):
        text = (services_dir / file_name).read_text()
        for part in ("environment", "secrets"):
            if not re.search(rf"local\.settings\[name\]\.{part}", text):
                problems.append(f"modules/services/{file_name}: container {part} are not built from local.settings")
    for path in sorted(infra.rglob("*")):
        if not path.is_file() or path.suffix not in (".tf", ".tftpl", ".sh", ".hcl", ".tfvars", ".example"):
            continue
        if path == services_dir / "settings.tf" or "tests" in path.relative_to(infra).parts or path.name == "check.sh":
            continue
        for match in sorted({key or quoted for key, quoted in SETTING_GIVEN.findall(path.read_text())}):
            problems.append(f"{path.relative_to(infra)} sets {match}; settings belong in modules/services/settings.tf")

    report.check(
        f"{checked} settings of {len(given)} containers are read by their binaries, secrets come from Secrets Manager, "
        "and no service keeps a loopback default",
        problems,
    )


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[1] == "--tables":
        sys.stdout.write(tables(Path(argv[2])))
        return 0
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    infra = Path(argv[1]).resolve()
    report = Report()
    check_layout(infra, report)
    check_variables_and_outputs(infra, report)
    check_providers(infra, report)
    check_readmes(infra, report)
    check_settings(infra, os.environ.get("REALCHAT_SETTINGS_DIR"), report)
    if report.failures:
        print(f"{len(report.failures)} problems")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
